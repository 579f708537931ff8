/* s3chunk: the S3 object store (objstore-s3.c) against a live S3 server,
 * driven through objstore.h: the operations and their error contract,
 * conditional puts racing between threads, listings of more than one page,
 * batched deletes, prefixes that keep volumes apart, and the counters.
 * Through tests/s3-fault-proxy and tests/s3-stub-server: the write fence
 * (refused, aborted under way, held bodies never completed), the sibling,
 * ambiguous outcomes, listings that repeat their continuation token, the
 * request timeout as an idle limit.
 *
 * Configured from the environment (tests/test-s3-store.sh starts a Ceph
 * RADOS Gateway, the proxy and the stub, and sets them):
 *   S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_BUCKET [S3_REGION]
 *   [S3_PROXY_URL] [S3_STUB_URL]
 * Exits 77 (skip) when one of the first four is missing; the tests that
 * need the proxy or the stub are skipped without them.  Everything is
 * written under a prefix unique to this run, which is emptied at the end.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fence.h"
#include "objstore.h"
#include "unit.h"

#define MANY 1100               /* keys for the listing: more than a page */
#define PUT_THREADS 16
#define RACERS 8

static const char *endpoint, *access_key, *secret_key, *bucket, *region;
static const char *proxy_url, *stub_url;
static double stalls_end;       /* when the requests the proxy stalls are
                                   forwarded: they land after the test */
static char run_prefix[128];    /* unique to this run: "objstore-s3-PID-T" */

static struct objstore *
open_store_at (const char *url, const char *prefix, unsigned connections,
               double retry_time, double request_timeout)
{
  struct objstore_s3_params p = {
    .bucket = bucket, .prefix = prefix, .endpoint = url,
    .region = region, .access_key = access_key, .secret_key = secret_key,
    .path_style = -1, .connections = connections, .retry_time = retry_time,
    .request_timeout = request_timeout,
  };
  struct objstore *os = NULL;
  int r = objstore_s3_open (&p, &os);

  if (r < 0) {
    fprintf (stderr, "objstore_s3_open (%s, prefix %s): %s: %s\n", url,
             prefix, strerror (-r), unit_last_log);
    exit (1);
  }
  return os;
}

static struct objstore *
open_store (const char *prefix)
{
  return open_store_at (endpoint, prefix, 32, 20, 20);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A fence whose deadline is `secs` from now on CLOCK_BOOTTIME. */
static void
fence_in (struct cs_fence *f, double secs)
{
  cs_fence_set (f, cs_boottime_ns () + (int64_t) (secs * 1e9));
}

/* ---------------------------------------------- the proxy and the stub */

static size_t
keep_body (char *data, size_t size, size_t n, void *opaque)
{
  struct cs_buf *b = opaque;

  return cs_buf_append (b, data, size * n) == 0 ? size * n : 0;
}

/* GET base + path (a control request); the body goes to out, if any.
 * Returns the HTTP status, or -1.
 */
static long
control (const char *base, const char *path, struct cs_buf *out)
{
  CURL *h = curl_easy_init ();
  struct cs_buf ignored = CS_BUF_INIT;
  char url[512];
  long status = -1;

  snprintf (url, sizeof url, "%s%s", base, path);
  if (out)
    out->len = 0;
  curl_easy_setopt (h, CURLOPT_URL, url);
  curl_easy_setopt (h, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, keep_body);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, out ? out : &ignored);
  if (curl_easy_perform (h) == CURLE_OK)
    curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup (h);
  cs_buf_free (&ignored);
  return status;
}

static void
proxy_rule (const char *query)
{
  char path[400];

  snprintf (path, sizeof path, "/__fault?%s", query);
  if (control (proxy_url, path, NULL) != 200) {
    fprintf (stderr, "proxy rule %s refused\n", query);
    exit (1);
  }
}

/* One counter of the proxy's or the stub's "key value" statistics. */
static long
stat_of (const char *base, const char *path, const char *key)
{
  struct cs_buf b = CS_BUF_INIT;
  long v = 0;
  size_t n = strlen (key);

  if (control (base, path, &b) == 200 && cs_buf_append (&b, "", 1) == 0) {
    for (const char *l = (const char *) b.data; l && *l;
         l = strchr (l, '\n') ? strchr (l, '\n') + 1 : NULL)
      if (strncmp (l, key, n) == 0 && l[n] == ' ')
        v = atol (l + n + 1);
  }
  cs_buf_free (&b);
  return v;
}

static long
proxy_stat (const char *key)
{
  return stat_of (proxy_url, "/__stats?format=text", key);
}

static long
stub_stat (const char *key)
{
  return stat_of (stub_url, "/__stats", key);
}

static uint64_t
fenced_count (struct objstore *os)
{
  struct objstore_stats s;

  objstore_get_stats (os, &s);
  return s.fenced;
}

/* ------------------------------------------------------------ listing */

struct listing {
  char **keys;
  uint64_t *sizes;
  size_t n, cap;
  int stop_after;               /* > 0: return 42 after this many keys */
};

static int
collect (void *opaque, const char *key, uint64_t size)
{
  struct listing *l = opaque;

  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 64;
    l->keys = realloc (l->keys, l->cap * sizeof *l->keys);
    l->sizes = realloc (l->sizes, l->cap * sizeof *l->sizes);
    if (l->keys == NULL || l->sizes == NULL)
      abort ();
  }
  l->keys[l->n] = strdup (key);
  l->sizes[l->n] = size;
  l->n++;
  if (l->stop_after > 0 && l->n == (size_t) l->stop_after)
    return 42;
  return 0;
}

static void
listing_free (struct listing *l)
{
  for (size_t i = 0; i < l->n; ++i)
    free (l->keys[i]);
  free (l->keys);
  free (l->sizes);
  memset (l, 0, sizeof *l);
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* List prefix into l (sorted); returns list's result. */
static int
list_sorted (struct objstore *os, const char *prefix, struct listing *l)
{
  int r = objstore_list (os, prefix, collect, l);
  /* Sort keys alone: sizes are only checked where they are all equal. */
  qsort (l->keys, l->n, sizeof *l->keys, cmp_str);
  return r;
}

static bool
listing_has (const struct listing *l, const char *key)
{
  for (size_t i = 0; i < l->n; ++i)
    if (strcmp (l->keys[i], key) == 0)
      return true;
  return false;
}

/* Delete everything under prefix of os (list, then delete-many). */
static int
empty_store (struct objstore *os)
{
  struct listing l = { 0 };
  int r = objstore_list (os, "", collect, &l);

  if (r == 0 && l.n > 0)
    r = objstore_del_many (os, (const char *const *) l.keys, l.n);
  listing_free (&l);
  return r;
}

/* ---------------------------------------------------- parallel puts */

static struct objstore *many_os;
static unsigned many_failed;

static void
many_key (char *buf, size_t size, unsigned i)
{
  snprintf (buf, size, "many/k%05u", i);
}

static void *
many_putter (void *arg)
{
  unsigned t = (unsigned) (uintptr_t) arg;
  char key[64], body[64];

  for (unsigned i = t; i < MANY; i += PUT_THREADS) {
    many_key (key, sizeof key, i);
    snprintf (body, sizeof body, "object %05u", i);    /* 12 bytes */
    if (objstore_put (many_os, key, body, strlen (body), NULL) < 0)
      __atomic_add_fetch (&many_failed, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

/* ------------------------------------------------------------- racing */

static struct objstore *race_os;
static const char *race_key;
static char race_etag[128];     /* "": create-if-absent, else replace */
static int race_wins, race_eexist, race_timedout, race_other;
static char race_winner_body[32];
static pthread_mutex_t race_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t race_barrier;

static void *
racer (void *arg)
{
  long id = (long) arg;
  char body[32];
  int r;

  snprintf (body, sizeof body, "racer %ld of %s", id,
            race_etag[0] ? "replace" : "create");
  pthread_barrier_wait (&race_barrier);
  r = objstore_put_if (race_os, race_key, body, strlen (body),
                       race_etag[0] ? race_etag : NULL, NULL);
  pthread_mutex_lock (&race_lock);
  if (r == 0) {
    race_wins++;
    snprintf (race_winner_body, sizeof race_winner_body, "%s", body);
  }
  else if (r == -EEXIST)
    race_eexist++;
  else if (r == -ETIMEDOUT)
    race_timedout++;
  else {
    race_other++;
    fprintf (stderr, "racer %ld: unexpected %s\n", id, strerror (-r));
  }
  pthread_mutex_unlock (&race_lock);
  return NULL;
}

static void
race (struct objstore *os, const char *key, const char *if_match)
{
  pthread_t t[RACERS];

  race_os = os;
  race_key = key;
  snprintf (race_etag, sizeof race_etag, "%s", if_match ? if_match : "");
  race_wins = race_eexist = race_timedout = race_other = 0;
  race_winner_body[0] = '\0';
  pthread_barrier_init (&race_barrier, NULL, RACERS);
  for (long i = 0; i < RACERS; ++i)
    pthread_create (&t[i], NULL, racer, (void *) i);
  for (int i = 0; i < RACERS; ++i)
    pthread_join (t[i], NULL);
  pthread_barrier_destroy (&race_barrier);
}

/* -------------------------------------------------------------- tests */

static bool
body_is (const struct cs_buf *b, const void *data, size_t len)
{
  return b->len == len && (len == 0 || memcmp (b->data, data, len) == 0);
}

static void
test_get_put (struct objstore *os)
{
  struct cs_buf b = CS_BUF_INIT;
  struct objstore_info pi, gi, pi2, gi2;
  size_t big_len = 3 * 1024 * 1024 + 17;
  unsigned char *big = malloc (big_len);
  int64_t now = time (NULL);

  printf ("get / put / overwrite / info\n");
  for (size_t i = 0; i < big_len; ++i)
    big[i] = (unsigned char) (i * 2654435761u >> 13);

  CHECK_EQ (objstore_get (os, "superblock", 1 << 20, &b, &gi), -ENOENT);
  CHECK_EQ (b.len, 0);

  memset (&pi, 0, sizeof pi);
  CHECK_EQ (objstore_put (os, "superblock", "hello, s3", 9, &pi), 0);
  CHECK (pi.etag[0] != '\0');
  CHECK (strchr (pi.etag, '"') == NULL);        /* etags come without quotes */
  CHECK_EQ (pi.size, 9);
  CHECK (pi.date > 0 && pi.mtime > 0);
  /* The gateway runs on this machine: its clock is ours. */
  CHECK (pi.date >= now - 300 && pi.date <= now + 300);

  memset (&gi, 0, sizeof gi);
  CHECK_EQ (objstore_get (os, "superblock", 1 << 20, &b, &gi), 0);
  CHECK (body_is (&b, "hello, s3", 9));
  CHECK (strcmp (gi.etag, pi.etag) == 0);
  CHECK_EQ (gi.size, 9);
  CHECK (gi.mtime > 0 && gi.date > 0);
  CHECK (gi.mtime >= now - 300 && gi.mtime <= now + 300);
  CHECK (gi.date >= gi.mtime);
  /* info may be NULL. */
  CHECK_EQ (objstore_get (os, "superblock", 1 << 20, &b, NULL), 0);

  /* max_len: exactly the size is fine, one less is -EFBIG. */
  CHECK_EQ (objstore_get (os, "superblock", 9, &b, NULL), 0);
  CHECK_EQ (objstore_get (os, "superblock", 8, &b, NULL), -EFBIG);
  CHECK_EQ (objstore_get (os, "superblock", 0, &b, NULL), -EFBIG);

  /* Overwrite with a bigger object: new content, new etag. */
  memset (&pi2, 0, sizeof pi2);
  CHECK_EQ (objstore_put (os, "superblock", big, big_len, &pi2), 0);
  CHECK (pi2.etag[0] != '\0' && strcmp (pi2.etag, pi.etag) != 0);
  CHECK_EQ (pi2.size, big_len);
  memset (&gi2, 0, sizeof gi2);
  CHECK_EQ (objstore_get (os, "superblock", big_len, &b, &gi2), 0);
  CHECK (body_is (&b, big, big_len));
  CHECK (strcmp (gi2.etag, pi2.etag) == 0);
  CHECK_EQ (gi2.size, big_len);
  CHECK_EQ (objstore_get (os, "superblock", big_len - 1, &b, NULL), -EFBIG);
  CHECK_EQ (objstore_get (os, "superblock", 1024, &b, NULL), -EFBIG);

  /* An empty object, and keys with every allowed character. */
  CHECK_EQ (objstore_put (os, "empty", "", 0, NULL), 0);
  CHECK_EQ (objstore_get (os, "empty", 1024, &b, &gi), 0);
  CHECK_EQ (b.len, 0);
  CHECK_EQ (gi.size, 0);
  CHECK_EQ (objstore_put (os, "dir/sub.d/File-1_x.v2", "odd", 3, NULL), 0);
  CHECK_EQ (objstore_get (os, "dir/sub.d/File-1_x.v2", 1024, &b, NULL), 0);
  CHECK (body_is (&b, "odd", 3));
  CHECK_EQ (objstore_get (os, "dir/sub.d", 1024, &b, NULL), -ENOENT);
  CHECK_EQ (objstore_get (os, "dir", 1024, &b, NULL), -ENOENT);

  /* Delete; a missing key deletes fine. */
  CHECK_EQ (objstore_del (os, "dir/sub.d/File-1_x.v2"), 0);
  CHECK_EQ (objstore_get (os, "dir/sub.d/File-1_x.v2", 1024, &b, NULL),
            -ENOENT);
  CHECK_EQ (objstore_del (os, "dir/sub.d/File-1_x.v2"), 0);
  CHECK_EQ (objstore_del (os, "never-written"), 0);

  free (big);
  cs_buf_free (&b);
}

static void
test_put_if (struct objstore *os)
{
  struct cs_buf b = CS_BUF_INIT;
  struct objstore_info i1, i2, gi;

  printf ("conditional puts\n");
  /* Create-if-absent: once. */
  memset (&i1, 0, sizeof i1);
  CHECK_EQ (objstore_put_if (os, "lock", "one", 3, NULL, &i1), 0);
  CHECK (i1.etag[0] != '\0');
  CHECK_EQ (objstore_put_if (os, "lock", "two", 3, NULL, &i2), -EEXIST);
  CHECK_EQ (objstore_get (os, "lock", 1024, &b, &gi), 0);
  CHECK (body_is (&b, "one", 3));
  CHECK (strcmp (gi.etag, i1.etag) == 0);

  /* Replace-if-unchanged: a wrong etag fails, the right one works once. */
  CHECK_EQ (objstore_put_if (os, "lock", "bad", 3,
                             "0123456789abcdef0123456789abcdef", NULL),
            -EEXIST);
  CHECK_EQ (objstore_put_if (os, "lock", "bad", 3, "wrong", NULL), -EEXIST);
  memset (&i2, 0, sizeof i2);
  CHECK_EQ (objstore_put_if (os, "lock", "three", 5, i1.etag, &i2), 0);
  CHECK (i2.etag[0] != '\0' && strcmp (i2.etag, i1.etag) != 0);
  CHECK_EQ (objstore_put_if (os, "lock", "four", 4, i1.etag, NULL), -EEXIST);
  CHECK_EQ (objstore_get (os, "lock", 1024, &b, &gi), 0);
  CHECK (body_is (&b, "three", 5));
  CHECK (strcmp (gi.etag, i2.etag) == 0);
  /* The etag of a get works as well as the one of the put. */
  CHECK_EQ (objstore_put_if (os, "lock", "five", 4, gi.etag, &i1), 0);
  CHECK_EQ (objstore_get (os, "lock", 1024, &b, NULL), 0);
  CHECK (body_is (&b, "five", 4));

  /* Replace of a missing key fails its condition. */
  CHECK_EQ (objstore_put_if (os, "nolock", "x", 1, i1.etag, NULL), -EEXIST);
  CHECK_EQ (objstore_get (os, "nolock", 1024, &b, NULL), -ENOENT);

  /* After a delete, create-if-absent works again. */
  CHECK_EQ (objstore_del (os, "lock"), 0);
  CHECK_EQ (objstore_put_if (os, "lock", "six", 3, NULL, NULL), 0);
  CHECK_EQ (objstore_put_if (os, "lock", "seven", 5, NULL, NULL), -EEXIST);
  CHECK_EQ (objstore_del (os, "lock"), 0);

  /* Racing creators: exactly one wins, the rest get -EEXIST. */
  for (int round = 0; round < 3; ++round) {
    char key[32];
    snprintf (key, sizeof key, "race-%d", round);
    race (os, key, NULL);
    CHECK_EQ (race_wins, 1);
    CHECK_EQ (race_eexist, RACERS - 1);
    CHECK_EQ (race_timedout, 0);
    CHECK_EQ (race_other, 0);
    CHECK_EQ (objstore_get (os, key, 1024, &b, &gi), 0);
    CHECK (body_is (&b, race_winner_body, strlen (race_winner_body)));

    /* Racing replacers with the same etag: exactly one wins.  radosgw
     * answers some losers 500 (its guard failed with ECANCELED), which
     * the store must treat as "maybe it landed": a retry then fails its
     * condition and the loser gets -ETIMEDOUT (unknown outcome, re-read)
     * rather than -EEXIST.  Either is correct; a second winner is not.
     */
    race (os, key, gi.etag);
    printf ("  replace race %d: %d won, %d -EEXIST, %d -ETIMEDOUT\n", round,
            race_wins, race_eexist, race_timedout);
    CHECK_EQ (race_wins, 1);
    CHECK_EQ (race_eexist + race_timedout, RACERS - 1);
    CHECK_EQ (race_other, 0);
    CHECK_EQ (objstore_get (os, key, 1024, &b, NULL), 0);
    CHECK (body_is (&b, race_winner_body, strlen (race_winner_body)));
  }
  cs_buf_free (&b);
}

static void
test_list_many (struct objstore *os)
{
  pthread_t t[PUT_THREADS];
  struct listing l = { 0 };
  char key[64];
  const char **del;
  bool all_match = true;
  struct timespec t0, t1;

  printf ("%u objects: list (several pages), delete-many (batches)\n", MANY);
  clock_gettime (CLOCK_MONOTONIC, &t0);
  many_os = os;
  many_failed = 0;
  for (unsigned i = 0; i < PUT_THREADS; ++i)
    pthread_create (&t[i], NULL, many_putter, (void *) (uintptr_t) i);
  for (unsigned i = 0; i < PUT_THREADS; ++i)
    pthread_join (t[i], NULL);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  printf ("  %u puts in %.1f s\n", MANY,
          (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  CHECK_EQ (many_failed, 0);

  /* Exactly the keys, without the store prefix, with their sizes. */
  CHECK_EQ (list_sorted (os, "many/", &l), 0);
  CHECK_EQ (l.n, MANY);
  for (unsigned i = 0; i < MANY && i < l.n; ++i) {
    many_key (key, sizeof key, i);
    if (strcmp (l.keys[i], key) != 0 || l.sizes[i] != 12) {
      if (all_match)
        fprintf (stderr, "listing #%u: got %s (%" PRIu64 " bytes), "
                 "expected %s (12 bytes)\n", i, l.keys[i], l.sizes[i], key);
      all_match = false;
    }
  }
  CHECK (all_match);
  listing_free (&l);

  /* A narrower prefix. */
  CHECK_EQ (list_sorted (os, "many/k0100", &l), 0);
  CHECK_EQ (l.n, 10);
  CHECK (l.n > 0 && strcmp (l.keys[0], "many/k01000") == 0);
  listing_free (&l);
  CHECK_EQ (list_sorted (os, "many/nothing", &l), 0);
  CHECK_EQ (l.n, 0);
  listing_free (&l);

  /* The whole store: the many keys and the others, nothing twice. */
  CHECK_EQ (list_sorted (os, "", &l), 0);
  CHECK (l.n > MANY);
  for (size_t i = 1; i < l.n; ++i)
    if (strcmp (l.keys[i - 1], l.keys[i]) == 0) {
      fprintf (stderr, "key listed twice: %s\n", l.keys[i]);
      CHECK (!"a key listed twice");
      break;
    }
  CHECK (listing_has (&l, "superblock"));
  CHECK (listing_has (&l, "many/k01099"));
  listing_free (&l);

  /* A non-zero return from the callback stops the listing, also on a
   * later page.
   */
  l.stop_after = 1050;
  CHECK_EQ (objstore_list (os, "many/", collect, &l), 42);
  CHECK_EQ (l.n, 1050);
  listing_free (&l);

  /* Delete-many: all of them plus some that do not exist (more than one
   * batch of 1000).
   */
  del = calloc (MANY + 5, sizeof *del);
  for (unsigned i = 0; i < MANY + 5; ++i) {
    many_key (key, sizeof key, i);
    del[i] = strdup (key);
  }
  clock_gettime (CLOCK_MONOTONIC, &t0);
  CHECK_EQ (objstore_del_many (os, del, MANY + 5), 0);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  printf ("  delete-many of %u keys in %.1f s\n", MANY + 5,
          (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  CHECK_EQ (list_sorted (os, "many/", &l), 0);
  CHECK_EQ (l.n, 0);
  if (l.n)
    fprintf (stderr, "after delete-many: %zu left, first %s\n", l.n,
             l.keys[0]);
  listing_free (&l);
  /* Again: every key is missing now, which is fine. */
  CHECK_EQ (objstore_del_many (os, del, MANY + 5), 0);
  for (unsigned i = 0; i < MANY + 5; ++i)
    free ((char *) del[i]);
  free (del);
}

static void
test_prefixes (void)
{
  char pa[192], pb[192], pa_messy[192];
  struct objstore *a, *b, *a2;
  struct cs_buf buf = CS_BUF_INIT;
  struct listing l = { 0 };

  printf ("prefixes keep stores apart\n");
  snprintf (pa, sizeof pa, "%s/vol-a", run_prefix);
  snprintf (pb, sizeof pb, "%s/vol-a2", run_prefix); /* pa is a prefix of pb */
  snprintf (pa_messy, sizeof pa_messy, "/%s//vol-a/", run_prefix);
  a = open_store (pa);
  b = open_store (pb);
  a2 = open_store (pa_messy);

  CHECK_EQ (objstore_put (a, "superblock", "AAAA", 4, NULL), 0);
  CHECK_EQ (objstore_put (a, "chunks/0000000000000001", "A1", 2, NULL), 0);
  CHECK_EQ (objstore_get (b, "superblock", 1024, &buf, NULL), -ENOENT);
  CHECK_EQ (objstore_put (b, "superblock", "BBBBBB", 6, NULL), 0);
  CHECK_EQ (objstore_put_if (b, "chunks/0000000000000001", "B1", 2, NULL,
                             NULL), 0);
  CHECK_EQ (objstore_get (a, "superblock", 1024, &buf, NULL), 0);
  CHECK (body_is (&buf, "AAAA", 4));
  CHECK_EQ (objstore_get (b, "superblock", 1024, &buf, NULL), 0);
  CHECK (body_is (&buf, "BBBBBB", 6));

  /* Each lists only its own keys, without its prefix. */
  CHECK_EQ (list_sorted (a, "", &l), 0);
  CHECK_EQ (l.n, 2);
  CHECK (l.n == 2 && strcmp (l.keys[0], "chunks/0000000000000001") == 0 &&
         strcmp (l.keys[1], "superblock") == 0);
  listing_free (&l);
  CHECK_EQ (list_sorted (b, "", &l), 0);
  CHECK_EQ (l.n, 2);
  listing_free (&l);

  /* "/P//vol-a/" is the same store as "P/vol-a". */
  CHECK_EQ (objstore_get (a2, "superblock", 1024, &buf, NULL), 0);
  CHECK (body_is (&buf, "AAAA", 4));
  CHECK_EQ (list_sorted (a2, "", &l), 0);
  CHECK_EQ (l.n, 2);
  listing_free (&l);

  /* Deleting in one leaves the other alone. */
  CHECK_EQ (empty_store (a), 0);
  CHECK_EQ (list_sorted (a, "", &l), 0);
  CHECK_EQ (l.n, 0);
  listing_free (&l);
  CHECK_EQ (objstore_get (b, "chunks/0000000000000001", 1024, &buf, NULL), 0);
  CHECK (body_is (&buf, "B1", 2));
  CHECK_EQ (empty_store (b), 0);

  objstore_close (a);
  objstore_close (b);
  objstore_close (a2);
  cs_buf_free (&buf);
}

static void
test_open_errors (void)
{
  struct objstore_s3_params p = {
    .bucket = bucket, .prefix = run_prefix, .endpoint = endpoint,
    .region = region, .access_key = access_key, .secret_key = "wrong-secret",
    .path_style = -1, .retry_time = 2, .request_timeout = 5,
  };
  struct objstore *os = NULL;

  printf ("startup check\n");
  CHECK (objstore_s3_open (&p, &os) < 0 && os == NULL);
  CHECK (unit_logged ("secret key"));
  CHECK (strstr (unit_last_log, "wrong-secret") == NULL);
  p.secret_key = secret_key;
  p.bucket = "no-such-bucket-s3chunk";
  CHECK (objstore_s3_open (&p, &os) < 0 && os == NULL);
  CHECK (unit_logged ("does not exist"));
  p.bucket = bucket;
  p.access_key = "NOSUCHACCESSKEY";
  CHECK (objstore_s3_open (&p, &os) < 0 && os == NULL);
  CHECK (unit_logged ("NOSUCHACCESSKEY") && unit_logged ("unknown"));
}

/* ------------------------------------------------------------- fence */

/* A closed fence: no mutating request leaves, reads go on. */
static void
test_fence_closed (void)
{
  char prefix[192];
  struct objstore *os;
  struct cs_fence f;
  struct cs_buf b = CS_BUF_INIT;
  struct listing l = { 0 };
  const char *keys[] = { "a", "b" };
  uint64_t fenced0;

  printf ("a closed fence: nothing mutating is sent, reads work\n");
  snprintf (prefix, sizeof prefix, "%s/fence-closed", run_prefix);
  os = open_store_at (proxy_url, prefix, 4, 20, 20);
  CHECK_EQ (objstore_put (os, "a", "before", 6, NULL), 0);
  cs_fence_init (&f, CS_FENCE_NONE);
  objstore_set_fence (os, &f);
  CHECK_EQ (objstore_put (os, "b", "open", 4, NULL), 0);
  cs_fence_close (&f);

  fenced0 = fenced_count (os);
  control (proxy_url, "/__stats?reset=1", NULL);
  CHECK_EQ (objstore_put (os, "a", "after", 5, NULL), -ENOLCK);
  CHECK_EQ (objstore_put_if (os, "c", "after", 5, NULL, NULL), -ENOLCK);
  CHECK_EQ (objstore_del (os, "a"), -ENOLCK);
  CHECK_EQ (objstore_del_many (os, keys, 2), -ENOLCK);
  CHECK_EQ (fenced_count (os) - fenced0, 4);
  CHECK_EQ (proxy_stat ("requests"), 0);

  /* Reads keep working after a fence. */
  CHECK_EQ (objstore_get (os, "a", 1024, &b, NULL), 0);
  CHECK (body_is (&b, "before", 6));
  CHECK_EQ (list_sorted (os, "", &l), 0);
  CHECK_EQ (l.n, 2);
  listing_free (&l);
  CHECK_EQ (proxy_stat ("method:GET"), 2);
  CHECK_EQ (proxy_stat ("method:PUT") + proxy_stat ("method:DELETE") +
            proxy_stat ("method:POST"), 0);

  objstore_set_fence (os, NULL);
  CHECK_EQ (empty_store (os), 0);
  objstore_close (os);
  cs_buf_free (&b);
}

/* The deadline passes while a request is being retried: the next attempt
 * is not sent.  (Before the variant checked its fence, the put went on
 * retrying for its whole budget.)
 */
static void
test_fence_retries (void)
{
  char prefix[192];
  struct objstore *os;
  struct cs_fence f;
  uint64_t fenced0;
  double t0, t;
  long puts, dels;
  int r;

  printf ("the deadline passes between retries: no more attempts\n");
  snprintf (prefix, sizeof prefix, "%s/fence-retry", run_prefix);
  os = open_store_at (proxy_url, prefix, 4, 20, 20);
  cs_fence_init (&f, CS_FENCE_NONE);
  objstore_set_fence (os, &f);
  fenced0 = fenced_count (os);

  proxy_rule ("mode=503&method=PUT,DELETE");
  fence_in (&f, 1.0);
  t0 = now ();
  r = objstore_put (os, "k", "data", 4, NULL);
  t = now () - t0;
  printf ("  put: %s after %.2f s\n", strerror (-r), t);
  CHECK_EQ (r, -ENOLCK);
  CHECK (t < 3);
  puts = proxy_stat ("method:PUT");
  CHECK (puts >= 1);

  fence_in (&f, 1.0);
  t0 = now ();
  r = objstore_del (os, "k");
  t = now () - t0;
  printf ("  delete: %s after %.2f s\n", strerror (-r), t);
  CHECK_EQ (r, -ENOLCK);
  CHECK (t < 3);
  dels = proxy_stat ("method:DELETE");
  CHECK (dels >= 1);
  CHECK (fenced_count (os) - fenced0 >= 2);

  /* Nothing more goes out afterwards. */
  sleep (1);
  CHECK_EQ (proxy_stat ("method:PUT"), puts);
  CHECK_EQ (proxy_stat ("method:DELETE"), dels);
  proxy_rule ("mode=none");
  objstore_set_fence (os, NULL);
  CHECK_EQ (empty_store (os), 0);
  objstore_close (os);
}

struct bg_put {
  struct objstore *os;
  const char *key;
  const void *data;
  size_t len;
  bool conditional;
  int r;
  double done;                  /* now () when it returned */
};

static void *
bg_put_thread (void *arg)
{
  struct bg_put *p = arg;

  p->r = p->conditional ?
    objstore_put_if (p->os, p->key, p->data, p->len, NULL, NULL) :
    objstore_put (p->os, p->key, p->data, p->len, NULL);
  p->done = now ();
  return NULL;
}

/* A PUT held by the proxy (stall: it has the whole request and waits
 * before it forwards it) when the deadline passes, or when the fence is
 * closed: aborted at once, -ENOLCK.  The proxy had the complete request,
 * so it still forwards it when its stall ends: "may have landed", as
 * -ENOLCK says.  test_fence_hold shows a body that never completes.
 */
static void
test_fence_stall (void)
{
  char prefix[192];
  struct objstore *os;
  struct cs_fence f;
  struct bg_put bg;
  pthread_t t;
  uint64_t fenced0;
  double t0, el;
  int r;

  printf ("a PUT stalled by the proxy is aborted by the fence\n");
  snprintf (prefix, sizeof prefix, "%s/fence-stall", run_prefix);
  os = open_store_at (proxy_url, prefix, 4, 20, 20);
  cs_fence_init (&f, CS_FENCE_NONE);
  objstore_set_fence (os, &f);
  fenced0 = fenced_count (os);
  /* The dialect probe goes before the lock, and so before any fence. */
  CHECK_EQ (objstore_detect (os), 0);

  proxy_rule ("mode=stall&delay=8&method=PUT");
  stalls_end = now () + 8 + 10;
  fence_in (&f, 1.0);
  t0 = now ();
  r = objstore_put (os, "stalled", "data", 4, NULL);
  el = now () - t0;
  printf ("  deadline in 1 s: %s after %.2f s (the stall is 8 s)\n",
          strerror (-r), el);
  CHECK_EQ (r, -ENOLCK);
  CHECK (el >= 0.9 && el < 2);
  CHECK_EQ (fenced_count (os) - fenced0, 1);
  CHECK (unit_logged ("aborted under way"));

  /* Closed while under way, with no deadline: the progress callback. */
  cs_fence_set (&f, CS_FENCE_NONE);
  memset (&bg, 0, sizeof bg);
  bg = (struct bg_put) { .os = os, .key = "stalled-2", .data = "x", .len = 1,
                         .conditional = true };
  pthread_create (&t, NULL, bg_put_thread, &bg);
  sleep (1);
  t0 = now ();
  cs_fence_close (&f);
  pthread_join (t, NULL);
  el = bg.done - t0;
  printf ("  fence closed under way: %s %.3f s later\n", strerror (-bg.r),
          el);
  CHECK_EQ (bg.r, -ENOLCK);
  CHECK (el < 0.5);
  CHECK_EQ (fenced_count (os) - fenced0, 2);

  proxy_rule ("mode=none");
  objstore_close (os);
}

/* The stub stops reading a large body for 5 s: when the deadline passes
 * in between, the request is aborted (RST) before its last bytes were
 * handed out, so the server never acts on it, even once it reads again.
 */
static void
test_fence_hold (void)
{
  char prefix[192];
  struct objstore *os, *direct;
  struct cs_fence f;
  struct cs_buf b = CS_BUF_INIT;
  size_t big_len = 32 << 20;
  char *big = malloc (big_len);
  long incomplete0, forwarded0;
  double t0, el;
  int r;

  printf ("a held body is never completed after the deadline\n");
  memset (big, 'N', big_len);
  snprintf (prefix, sizeof prefix, "%s/fence-hold", run_prefix);
  os = open_store_at (stub_url, prefix, 4, 20, 20);
  direct = open_store (prefix);
  CHECK_EQ (objstore_put (direct, "hold/obj", "old", 3, NULL), 0);
  cs_fence_init (&f, CS_FENCE_NONE);
  objstore_set_fence (os, &f);
  incomplete0 = stub_stat ("incomplete");
  forwarded0 = stub_stat ("forwarded");

  fence_in (&f, 1.0);
  t0 = now ();
  r = objstore_put (os, "hold/obj", big, big_len, NULL);
  el = now () - t0;
  printf ("  %s after %.2f s (the stub holds the body for 5 s)\n",
          strerror (-r), el);
  CHECK_EQ (r, -ENOLCK);
  CHECK (el < 2.5);
  CHECK (unit_logged ("did not land"));

  /* The stub reads again after 5 s: an incomplete body, not forwarded. */
  sleep (6);
  CHECK_EQ (stub_stat ("incomplete") - incomplete0, 1);
  CHECK_EQ (stub_stat ("forwarded") - forwarded0, 0);
  CHECK_EQ (objstore_get (direct, "hold/obj", big_len, &b, NULL), 0);
  CHECK (body_is (&b, "old", 3));

  objstore_close (os);
  CHECK_EQ (empty_store (direct), 0);
  objstore_close (direct);
  cs_buf_free (&b);
  free (big);
}

/* ----------------------------------------------------------- sibling */

/* Every handle of the store is stuck in a stalled PUT: the sibling (its
 * own connection, no fence) still answers at once, and either can be
 * closed first.
 */
static void
test_sibling (void)
{
  char prefix[192];
  struct objstore *os, *sib = NULL, *sib2 = NULL;
  struct objstore_info info;
  struct cs_fence f;
  struct cs_buf b = CS_BUF_INIT;
  struct bg_put bg[2];
  pthread_t t[2];
  double t0, el;

  printf ("the sibling answers while every handle of the store is busy\n");
  snprintf (prefix, sizeof prefix, "%s/sibling", run_prefix);
  os = open_store_at (proxy_url, prefix, 2, 20, 20);
  CHECK_EQ (objstore_sibling (os, &sib), 0);
  CHECK (sib != NULL);
  if (sib == NULL) {
    objstore_close (os);
    return;
  }
  /* No fence on the sibling, whatever the store's. */
  cs_fence_init (&f, CS_FENCE_NONE);
  objstore_set_fence (os, &f);

  proxy_rule ("mode=stall&delay=6&method=PUT&path=/stalled/");
  stalls_end = now () + 6 + 10;
  for (int i = 0; i < 2; ++i) {
    bg[i] = (struct bg_put) { .os = os, .key = i ? "stalled/1" : "stalled/0",
                              .data = "data", .len = 4 };
    pthread_create (&t[i], NULL, bg_put_thread, &bg[i]);
  }
  sleep (1);
  cs_fence_close (&f);          /* fences os, not the sibling */
  t0 = now ();
  /* A renewal: a get, then a conditional put. */
  CHECK_EQ (objstore_put_if (sib, "lock", "v1", 2, NULL, &info), 0);
  CHECK_EQ (objstore_get (sib, "lock", 1024, &b, &info), 0);
  CHECK (body_is (&b, "v1", 2));
  CHECK_EQ (objstore_put_if (sib, "lock", "v2", 2, info.etag, &info), 0);
  el = now () - t0;
  printf ("  three requests of the sibling in %.2f s\n", el);
  CHECK (el < 2);
  for (int i = 0; i < 2; ++i) {
    pthread_join (t[i], NULL);
    CHECK_EQ (bg[i].r, -ENOLCK);
  }
  proxy_rule ("mode=none");

  /* Independent: a sibling of the sibling; close the original first. */
  CHECK_EQ (objstore_sibling (sib, &sib2), 0);
  objstore_close (os);
  CHECK_EQ (objstore_get (sib, "lock", 1024, &b, NULL), 0);
  CHECK (body_is (&b, "v2", 2));
  objstore_close (sib);
  if (sib2) {
    CHECK_EQ (objstore_get (sib2, "lock", 1024, &b, NULL), 0);
    CHECK_EQ (empty_store (sib2), 0);
    objstore_close (sib2);
  }
  cs_buf_free (&b);
}

/* --------------------------------------------------------- ambiguity */

/* The first attempt of a PUT is forwarded (it lands) but its answer is
 * dropped; every retry gets 503 until the budget is spent.  A 503 says
 * nothing about the first attempt: the outcome is unknown, -ETIMEDOUT,
 * not -EIO.  The proxy holds one rule at a time: the drop rule is
 * replaced by the 503 one as soon as the proxy has decided to drop (it
 * counts the fault when the request arrives, before it reads the 8 MiB
 * body and forwards it, so well before any retry).
 */
static void
test_ambiguous_put (void)
{
  char prefix[192];
  struct objstore *os, *direct;
  struct cs_buf b = CS_BUF_INIT;
  size_t big_len = 8 << 20;
  char *big = malloc (big_len);
  struct bg_put bg;
  pthread_t t;
  double t0;
  long drops0 = proxy_stat ("fault:drop"), e503_0 = proxy_stat ("fault:503");

  printf ("a dropped answer, then 503s: the outcome is unknown\n");
  memset (big, 'A', big_len);
  snprintf (prefix, sizeof prefix, "%s/ambiguous", run_prefix);
  os = open_store_at (proxy_url, prefix, 4, 3, 20);
  direct = open_store (prefix);

  proxy_rule ("mode=drop&count=1&method=PUT&path=/ambig/");
  bg = (struct bg_put) { .os = os, .key = "ambig/obj", .data = big,
                         .len = big_len };
  pthread_create (&t, NULL, bg_put_thread, &bg);
  t0 = now ();
  while (proxy_stat ("fault:drop") == drops0 && now () - t0 < 10)
    ;
  proxy_rule ("mode=503&method=PUT&path=/ambig/");
  pthread_join (t, NULL);
  printf ("  put: %s after %.1f s, %ld 503s\n", strerror (-bg.r),
          bg.done - t0, proxy_stat ("fault:503") - e503_0);
  CHECK_EQ (bg.r, -ETIMEDOUT);
  CHECK (proxy_stat ("fault:503") - e503_0 >= 1);
  CHECK (unit_logged ("outcome unknown") && unit_logged ("ambig/obj") &&
         unit_logged ("HTTP 503"));
  proxy_rule ("mode=none");

  /* And it did land. */
  CHECK_EQ (objstore_get (direct, "ambig/obj", big_len, &b, NULL), 0);
  CHECK (body_is (&b, big, big_len));

  objstore_close (os);
  CHECK_EQ (empty_store (direct), 0);
  objstore_close (direct);
  cs_buf_free (&b);
  free (big);
}

/* ----------------------------------------------------------- listing */

/* A server that answers a truncated page with a token seen before, or
 * with none: list fails with -EIO instead of looping for ever (the alarm
 * ends the test if it does loop).
 */
static void
test_list_loops (void)
{
  static const char *const prefixes[] = {
    "loop-token/", "cycle-token/", "no-token/",
  };
  char prefix[192];
  struct objstore *os;
  struct listing l = { 0 };
  long pages0;

  printf ("listings that repeat their continuation token fail\n");
  snprintf (prefix, sizeof prefix, "%s/list-loop", run_prefix);
  os = open_store_at (stub_url, prefix, 2, 5, 10);
  alarm (60);
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; ++i) {
    pages0 = stub_stat ("list_pages");
    CHECK_EQ (objstore_list (os, prefixes[i], collect, &l), -EIO);
    printf ("  %s: %ld pages, %zu keys; %s\n", prefixes[i],
            stub_stat ("list_pages") - pages0, l.n, unit_last_log);
    CHECK (unit_logged (stub_url) && unit_logged (prefixes[i]));
    CHECK (stub_stat ("list_pages") - pages0 <= 3);
    listing_free (&l);
  }
  alarm (0);
  objstore_close (os);
}

/* ------------------------------------------------------ idle timeout */

/* request_timeout is an idle limit: an answer the stub trickles for 4 s
 * (64 bytes every 0.25 s) gets through a 1 s request timeout; a silent
 * one is aborted after about 1 s.
 */
static void
test_idle_timeout (void)
{
  char prefix[192];
  struct objstore *os;
  struct cs_buf b = CS_BUF_INIT;
  double t0, el;
  int r;

  printf ("request timeout: slow answers finish, silent ones do not\n");
  snprintf (prefix, sizeof prefix, "%s/idle", run_prefix);
  os = open_store_at (stub_url, prefix, 2, -1, 1);

  t0 = now ();
  r = objstore_get (os, "trickle/obj", 1 << 20, &b, NULL);
  el = now () - t0;
  printf ("  trickled answer: %s, %zu bytes in %.2f s\n",
          r == 0 ? "ok" : strerror (-r), b.len, el);
  CHECK_EQ (r, 0);
  CHECK_EQ (b.len, 16 * 64);
  CHECK (el > 3.5);

  t0 = now ();
  r = objstore_get (os, "silent/obj", 1 << 20, &b, NULL);
  el = now () - t0;
  printf ("  silent answer: %s after %.2f s\n", strerror (-r), el);
  CHECK_EQ (r, -ETIMEDOUT);
  CHECK (el > 0.9 && el < 2.5);
  CHECK (unit_logged ("no byte moved"));

  objstore_close (os);
  cs_buf_free (&b);
}

int
main (void)
{
  struct objstore *os;
  struct objstore_stats s0, s1;
  struct cs_buf b = CS_BUF_INIT;
  struct listing l = { 0 };
  char prefix[192];

  endpoint = getenv ("S3_ENDPOINT");
  access_key = getenv ("S3_ACCESS_KEY");
  secret_key = getenv ("S3_SECRET_KEY");
  bucket = getenv ("S3_BUCKET");
  region = getenv ("S3_REGION");
  proxy_url = getenv ("S3_PROXY_URL");
  stub_url = getenv ("S3_STUB_URL");
  if (!endpoint || !*endpoint || !access_key || !secret_key || !bucket) {
    printf ("test-objstore-s3: SKIP: set S3_ENDPOINT, S3_ACCESS_KEY, "
            "S3_SECRET_KEY and S3_BUCKET (tests/test-s3-store.sh does)\n");
    return 77;
  }
  unit_init ();
  snprintf (run_prefix, sizeof run_prefix, "objstore-s3-%ld-%ld",
            (long) getpid (), (long) time (NULL));
  snprintf (prefix, sizeof prefix, "%s/main", run_prefix);
  os = open_store (prefix);
  objstore_get_stats (os, &s0);
  CHECK_EQ (s0.gets + s0.puts + s0.put_ifs + s0.dels + s0.lists, 0);

  test_get_put (os);
  test_put_if (os);

  objstore_get_stats (os, &s1);
  CHECK (s1.gets > s0.gets && s1.puts > s0.puts && s1.put_ifs > s0.put_ifs);
  CHECK (s1.dels > s0.dels && s1.bytes_up > 3 * 1024 * 1024);
  CHECK (s1.bytes_down > 3 * 1024 * 1024);
  /* -ENOENT, -EEXIST and -EFBIG... only -EFBIG is an error. */
  CHECK (s1.errors >= 4);
  s0 = s1;

  test_list_many (os);
  objstore_get_stats (os, &s1);
  CHECK_EQ (s1.puts - s0.puts, MANY);
  CHECK_EQ (s1.del_keys - s0.del_keys, 2 * (MANY + 5));
  CHECK_EQ (s1.dels - s0.dels, 2);
  CHECK (s1.lists - s0.lists >= 6);
  CHECK_EQ (s1.errors, s0.errors);

  test_prefixes ();
  test_open_errors ();

  if (proxy_url && *proxy_url) {
    test_fence_closed ();
    test_fence_retries ();
    test_fence_stall ();
    test_sibling ();
    test_ambiguous_put ();
  }
  else
    printf ("SKIP: the tests through the fault proxy (set S3_PROXY_URL)\n");
  if (stub_url && *stub_url) {
    test_fence_hold ();
    test_list_loops ();
    test_idle_timeout ();
  }
  else
    printf ("SKIP: the tests through the stub (set S3_STUB_URL)\n");

  /* Leave nothing behind, also what the proxy forwarded late. */
  if (stalls_end > now ()) {
    printf ("waiting %.0f s for the stalled requests to land\n",
            stalls_end - now ());
    while (now () < stalls_end)
      usleep (100000);
  }
  {
    struct objstore *all = open_store (run_prefix);

    CHECK_EQ (empty_store (all), 0);
    objstore_close (all);
  }
  CHECK_EQ (empty_store (os), 0);
  CHECK_EQ (list_sorted (os, "", &l), 0);
  CHECK_EQ (l.n, 0);
  listing_free (&l);
  CHECK_EQ (objstore_get (os, "superblock", 1024, &b, NULL), -ENOENT);
  cs_buf_free (&b);
  objstore_close (os);
  return unit_done ("test-objstore-s3");
}
