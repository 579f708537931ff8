/* s3chunk: unit tests of the local-directory object store: the operations
 * and their error contract (objstore.h), conditions between threads, and
 * that temporary files never show.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "objstore.h"
#include "unit.h"

static int
count_key (void *opaque, const char *key, uint64_t size)
{
  unsigned *n = opaque;
  (*n)++;
  return 0;
}

static unsigned
count (struct objstore *os, const char *prefix)
{
  unsigned n = 0;
  CHECK_EQ (objstore_list (os, prefix, count_key, &n), 0);
  return n;
}

#define RACERS 8
static struct objstore *race_os;
static int race_wins;
static pthread_mutex_t race_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t race_barrier;
static char race_etag[128];
static int race_round;

static void *
racer (void *arg)
{
  long id = (long) arg;
  char body[32];
  int r;

  /* Unique per round: an unchanged body keeps its etag. */
  snprintf (body, sizeof body, "race %d racer %ld", race_round, id);
  pthread_barrier_wait (&race_barrier);
  r = race_etag[0]
    ? objstore_put_if (race_os, "race", body, strlen (body), race_etag, NULL)
    : objstore_put_if (race_os, "race", body, strlen (body), NULL, NULL);
  if (r == 0) {
    pthread_mutex_lock (&race_lock);
    race_wins++;
    pthread_mutex_unlock (&race_lock);
  }
  else if (r != -EEXIST)
    fprintf (stderr, "racer %ld: unexpected %d\n", id, r);
  return NULL;
}

static void
race (void)
{
  pthread_t t[RACERS];

  race_wins = 0;
  race_round++;
  pthread_barrier_init (&race_barrier, NULL, RACERS);
  for (long i = 0; i < RACERS; ++i)
    pthread_create (&t[i], NULL, racer, (void *) i);
  for (int i = 0; i < RACERS; ++i)
    pthread_join (t[i], NULL);
  pthread_barrier_destroy (&race_barrier);
}

int
main (void)
{
  char *dir = unit_tmpdir (), path[4096];
  struct objstore *os;
  struct objstore_info info, info2;
  struct cs_buf b = CS_BUF_INIT;
  const char *keys[3] = { "chunks/a", "chunks/b", "chunks/missing" };
  struct stat st;

  unit_init ();
  snprintf (path, sizeof path, "%s/missing", dir);
  CHECK_EQ (objstore_dir_open (path, false, &os), -ENOENT);
  CHECK (unit_logged ("dir= parameter"));
  snprintf (path, sizeof path, "%s/vol", dir);
  CHECK_EQ (objstore_dir_open (path, true, &os), 0);

  /* get / put / overwrite */
  CHECK_EQ (objstore_get (os, "superblock", 1024, &b, NULL), -ENOENT);
  CHECK_EQ (objstore_put (os, "superblock", "hello", 5, &info), 0);
  CHECK (info.etag[0] != '\0' && info.size == 5);
  CHECK_EQ (objstore_get (os, "superblock", 1024, &b, &info2), 0);
  CHECK (b.len == 5 && memcmp (b.data, "hello", 5) == 0);
  CHECK (strcmp (info.etag, info2.etag) == 0);
  CHECK (info2.mtime > 0 && info2.date >= info2.mtime);
  CHECK_EQ (objstore_get (os, "superblock", 4, &b, NULL), -EFBIG);
  CHECK_EQ (objstore_put (os, "superblock", "world!", 6, &info2), 0);
  CHECK (strcmp (info.etag, info2.etag) != 0);
  CHECK_EQ (objstore_get (os, "superblock", 1024, &b, NULL), 0);
  CHECK (b.len == 6 && memcmp (b.data, "world!", 6) == 0);
  CHECK_EQ (objstore_put (os, "empty", "", 0, NULL), 0);
  CHECK_EQ (objstore_get (os, "empty", 1024, &b, NULL), 0);
  CHECK_EQ (b.len, 0);

  /* Keys that could escape the directory are refused. */
  CHECK_EQ (objstore_put (os, "../x", "x", 1, NULL), -EINVAL);
  CHECK_EQ (objstore_put (os, "/etc/x", "x", 1, NULL), -EINVAL);
  CHECK_EQ (objstore_put (os, "a b", "x", 1, NULL), -EINVAL);

  /* Conditional puts. */
  CHECK_EQ (objstore_put_if (os, "lock", "one", 3, NULL, &info), 0);
  CHECK_EQ (objstore_put_if (os, "lock", "two", 3, NULL, NULL), -EEXIST);
  CHECK_EQ (objstore_put_if (os, "lock", "two", 3, "wrong", NULL), -EEXIST);
  CHECK_EQ (objstore_put_if (os, "lock", "two", 3, info.etag, &info2), 0);
  CHECK_EQ (objstore_put_if (os, "lock", "six", 3, info.etag, NULL), -EEXIST);
  CHECK_EQ (objstore_get (os, "lock", 1024, &b, NULL), 0);
  CHECK (b.len == 3 && memcmp (b.data, "two", 3) == 0);
  CHECK_EQ (objstore_put_if (os, "nolock", "x", 1, info2.etag, NULL), -EEXIST);

  /* Racing creators and racing replacers: exactly one wins each time. */
  race_os = os;
  race_etag[0] = '\0';
  race ();
  CHECK_EQ (race_wins, 1);
  CHECK_EQ (objstore_get (os, "race", 1024, &b, &info), 0);
  snprintf (race_etag, sizeof race_etag, "%s", info.etag);
  race ();
  CHECK_EQ (race_wins, 1);

  /* Subdirectories, listing with a prefix, batched delete. */
  CHECK_EQ (objstore_put (os, "chunks/a", "A", 1, NULL), 0);
  CHECK_EQ (objstore_put (os, "chunks/b", "BB", 2, NULL), 0);
  CHECK_EQ (count (os, "chunks/"), 2);
  CHECK_EQ (count (os, ""), 6);           /* superblock empty lock race a b */
  /* A stray temporary file is never listed. */
  snprintf (path, sizeof path, "%s/vol/chunks/a.tmp-1234", dir);
  fclose (fopen (path, "w"));
  CHECK_EQ (count (os, "chunks/"), 2);
  CHECK_EQ (objstore_del_many (os, keys, 3), 0);
  CHECK_EQ (count (os, "chunks/"), 0);
  CHECK_EQ (objstore_del (os, "chunks/a"), 0);          /* missing: fine */
  CHECK_EQ (objstore_get (os, "chunks/b", 1024, &b, NULL), -ENOENT);
  snprintf (path, sizeof path, "%s/vol/chunks/b", dir);
  CHECK (stat (path, &st) < 0 && errno == ENOENT);

  /* Counters. */
  struct objstore_stats s;
  objstore_get_stats (os, &s);
  CHECK (s.gets >= 8 && s.puts >= 5 && s.del_keys >= 4 && s.lists >= 4);

  cs_buf_free (&b);
  objstore_close (os);
  unit_rmdir (dir);
  return unit_done ("test-objstore-dir");
}
