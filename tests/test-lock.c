/* s3chunk: unit tests of the one-mounter lock (chunkstore/lock.c) on the
 * directory store: take, refuse, take over a stale lock (judged by the
 * store's clock, which a wrapper below moves forward), force, racing
 * takers, fencing when a renewal finds someone else's object or when
 * renewals keep failing, ambiguous renewals settled by reading back, the
 * probe against a store that ignores conditions, release and break.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lock.h"
#include "objstore.h"
#include "unit.h"

/* ------------------------------------------------------------------------
 * A test store on top of another: it moves the store's clock ("date") by
 * skew seconds, and can make the next put_if time out AFTER it reached the
 * inner store (the fault wrapper can only fail before).
 */
struct clockstore {
  struct objstore os;
  struct objstore *inner;
  atomic_int skew;
  atomic_int timeout_after_put_if;
};

static int
cl_get (struct objstore *os, const char *key, size_t max_len,
        struct cs_buf *out, struct objstore_info *info)
{
  struct clockstore *c = (struct clockstore *) os;
  int r = objstore_get (c->inner, key, max_len, out, info);

  if (r == 0 && info)
    info->date += c->skew;
  return r;
}

static int
cl_put (struct objstore *os, const char *key, const void *data, size_t len,
        struct objstore_info *info)
{
  struct clockstore *c = (struct clockstore *) os;
  return objstore_put (c->inner, key, data, len, info);
}

static int
cl_put_if (struct objstore *os, const char *key, const void *data,
           size_t len, const char *if_match, struct objstore_info *info)
{
  struct clockstore *c = (struct clockstore *) os;
  int r = objstore_put_if (c->inner, key, data, len, if_match, info);
  int one = 1;

  if (atomic_compare_exchange_strong (&c->timeout_after_put_if, &one, 0))
    return -ETIMEDOUT;
  return r;
}

static int
cl_del (struct objstore *os, const char *key)
{
  return objstore_del (((struct clockstore *) os)->inner, key);
}

static int
cl_del_many (struct objstore *os, const char *const *keys, size_t n)
{
  return objstore_del_many (((struct clockstore *) os)->inner, keys, n);
}

static int
cl_list (struct objstore *os, const char *prefix, objstore_list_fn fn,
         void *opaque)
{
  return objstore_list (((struct clockstore *) os)->inner, prefix, fn, opaque);
}

static void
cl_close (struct objstore *os)
{
  objstore_close (((struct clockstore *) os)->inner);
  free (os);
}

static unsigned
cl_caps (struct objstore *os)
{
  return objstore_caps (((struct clockstore *) os)->inner);
}

static const struct objstore_ops cl_ops = {
  .name = "clock", .caps = cl_caps,
  .get = cl_get, .put = cl_put, .put_if = cl_put_if,
  .del = cl_del, .del_many = cl_del_many, .list = cl_list, .close = cl_close,
};

static struct clockstore *
clock_wrap (struct objstore *inner)
{
  struct clockstore *c = calloc (1, sizeof *c);

  if (c == NULL)
    exit (1);
  c->os.ops = &cl_ops;
  c->inner = inner;
  return c;
}

/* dir store -> fault wrapper -> clock wrapper: fault and clock both kept. */
static char *dir;
static struct objstore *dirstore, *faults;
static struct clockstore *clk;
static struct objstore *os;

static void
open_stores (void)
{
  dir = unit_tmpdir ();
  CHECK_EQ (objstore_dir_open (dir, false, &dirstore), 0);
  CHECK_EQ (objstore_fault_wrap (dirstore, &faults), 0);
  clk = clock_wrap (faults);
  os = &clk->os;
}

static void
close_stores (void)
{
  objstore_close (os);
  unit_rmdir (dir);
}

/* Fence callbacks: count them and keep the last reason. */
static atomic_int fences;
static char fence_why[1024];
static pthread_mutex_t fence_lock = PTHREAD_MUTEX_INITIALIZER;

static void
on_fence (void *opaque, const char *why)
{
  pthread_mutex_lock (&fence_lock);
  snprintf (fence_why, sizeof fence_why, "%s", why);
  pthread_mutex_unlock (&fence_lock);
  atomic_fetch_add (&fences, 1);
  if (opaque)
    atomic_fetch_add ((atomic_int *) opaque, 1);
}

static bool
fenced_because (const char *s)
{
  bool r;

  pthread_mutex_lock (&fence_lock);
  r = strstr (fence_why, s) != NULL;
  pthread_mutex_unlock (&fence_lock);
  return r;
}

static const struct lock_params params = { .lease = 10, .version = "test" };

static bool
exists (const char *key)
{
  struct cs_buf b = CS_BUF_INIT;
  int r = objstore_get (os, key, 1 << 20, &b, NULL);

  cs_buf_free (&b);
  return r == 0;
}

/* A lock object that holds the volume (not none, not a released one). */
static bool
held (void)
{
  struct lock_holder h;
  int64_t age;
  bool fresh;

  return lock_read (os, &h, &age, &fresh) == 0;
}

static void
put_foreign_lock (const char *owner)
{
  struct lock_holder h = {
    .host = "elsewhere", .pid = 4242, .taken_at = 1, .renewed_at = 2,
    .lease = 10, .sequence = 7, .version = "other",
  };
  char text[1024];
  int n;

  snprintf (h.owner, sizeof h.owner, "%s", owner);
  n = lock_format (&h, text, sizeof text);
  CHECK (n > 0);
  CHECK_EQ (objstore_put (os, LOCK_KEY, text, n, NULL), 0);
}

/* Make the lock object's last-modified time secs in the past. */
static void
age_lock (int secs)
{
  char path[4096];
  struct timespec ts[2];

  snprintf (path, sizeof path, "%s/%s", dir, LOCK_KEY);
  clock_gettime (CLOCK_REALTIME, &ts[0]);
  ts[0].tv_sec -= secs;
  ts[1] = ts[0];
  CHECK_EQ (utimensat (AT_FDCWD, path, ts, 0), 0);
}

/* ---------------------------------------------------------------- tests */

static void
test_format (void)
{
  struct lock_holder h = {
    .owner = "0123456789abcdef0123456789abcdef", .host = "host-1.example",
    .pid = 123, .taken_at = 1700000000, .renewed_at = 1700000020,
    .lease = 60, .sequence = 5, .version = "0.1.0",
  }, g;
  char text[1024], bad[1200];
  const char *p;
  int n;

  n = lock_format (&h, text, sizeof text);
  CHECK (n > 0);
  CHECK_EQ (lock_parse (text, n, &g), 0);
  CHECK (memcmp (&h, &g, sizeof h) == 0);

  /* Strict: every damage is refused. */
  CHECK_EQ (lock_parse (text, n - 1, &g), -EIO);           /* no newline */
  CHECK_EQ (lock_parse ("", 0, &g), -EIO);
  CHECK_EQ (lock_parse ("s3chunk lock\n", 13, &g), -EIO);  /* no fields */
  CHECK_EQ (lock_parse (text, n / 2, &g), -EIO);
  CHECK_EQ (lock_parse ("garbage\n", 8, &g), -EIO);
  snprintf (bad, sizeof bad, "%sextra=1\n", text);
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);     /* unknown */
  snprintf (bad, sizeof bad, "%slease=60\n", text);
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);     /* duplicate */
  snprintf (bad, sizeof bad, "%s", text);
  memcpy (strstr (bad, "host=") + 5, "ho\033t", 4);
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);     /* control char */
  snprintf (bad, sizeof bad, "%s", text);
  *strstr (bad, "owner=") = 'O';
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);
  snprintf (bad, sizeof bad, "%s", text);
  p = strstr (bad, "lease=60");
  memcpy ((char *) p, "lease=00", 8);
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);     /* lease 0 */
  snprintf (bad, sizeof bad, "%s", text);
  memcpy (strstr (bad, "format-version=1"), "format-version=2", 16);
  CHECK_EQ (lock_parse (bad, strlen (bad), &g), -EIO);
  CHECK (unit_logged ("format version 2"));
  /* A NUL inside. */
  memcpy (bad, text, n);
  bad[20] = '\0';
  CHECK_EQ (lock_parse (bad, n, &g), -EIO);
}

static void
test_take_refuse_release (void)
{
  struct lock *a = NULL, *b = NULL;
  struct lock_holder h;
  int64_t age;
  bool fresh;

  open_stores ();
  CHECK_EQ (lock_read (os, &h, &age, &fresh), -ENOENT);
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK (a != NULL);
  CHECK_EQ (lock_read (os, &h, &age, &fresh), 0);
  CHECK (fresh);
  CHECK (age >= 0 && age <= 1);
  CHECK_EQ (h.pid, getpid ());
  CHECK_EQ (h.lease, 10);
  CHECK (strcmp (h.version, "test") == 0);

  /* A second taker is refused with one line naming the holder. */
  unit_last_log[0] = '\0';
  CHECK_EQ (lock_acquire (os, &params, &b), -EBUSY);
  CHECK (unit_logged ("in use"));
  CHECK (unit_logged (h.host));
  CHECK (unit_logged ("force-unlock=true"));
  CHECK (unit_logged ("s3chunk unlock"));
  CHECK (unit_logged ("last renewed"));
  CHECK (strchr (unit_last_log, '\n') == NULL);

  /* Renewal keeps it and bumps the sequence. */
  CHECK_EQ (lock_renew (a), 0);
  {
    struct lock_holder h2;
    CHECK_EQ (lock_read (os, &h2, &age, &fresh), 0);
    CHECK_EQ (h2.sequence, h.sequence + 1);
    CHECK (strcmp (h2.owner, h.owner) == 0);
  }
  CHECK (!lock_fenced (a, NULL, 0));

  /* Release marks it released, and a new taker gets it at once. */
  CHECK_EQ (lock_release (a), 0);
  CHECK (!held ());
  CHECK_EQ (lock_acquire (os, &params, &b), 0);
  CHECK_EQ (lock_release (b), 0);
  close_stores ();
}

static void
test_stale_takeover_and_fence (void)
{
  struct lock *a = NULL, *b = NULL, *c = NULL;
  atomic_int a_fenced = 0;
  char why[512];

  open_stores ();
  atomic_store (&fences, 0);
  CHECK_EQ (lock_acquire (os, &params, &a), 0);

  /* Within the lease by the store's clock: refused. */
  clk->skew = 10;
  CHECK_EQ (lock_acquire (os, &params, &b), -EBUSY);
  /* More than the lease by the store's clock: stale, taken over. */
  clk->skew = 12;
  unit_last_log[0] = '\0';
  CHECK_EQ (lock_acquire (os, &params, &b), 0);
  CHECK (unit_logged ("took over the stale lock"));
  clk->skew = 0;

  /* a's next renewal (the one lock_start does first) finds b's object:
   * fenced, the callback called once.
   */
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), -ENOLCK);
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK (fenced_because ("took the volume over"));
  CHECK (lock_fenced (a, why, sizeof why));
  CHECK (strstr (why, "took the volume over") != NULL);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK_EQ (atomic_load (&a_fenced), 1);

  /* a's release must not delete b's lock. */
  CHECK_EQ (lock_release (a), 0);
  CHECK (exists (LOCK_KEY));
  CHECK_EQ (lock_renew (b), 0);

  /* force takes a fresh lock over at once, with a warning. */
  unit_last_log[0] = '\0';
  {
    struct lock_params fp = params;
    fp.force = true;
    CHECK_EQ (lock_acquire (os, &fp, &c), 0);
    CHECK (unit_logged ("FRESH"));
  }
  CHECK_EQ (lock_renew (b), -ENOLCK);
  CHECK (lock_fenced (b, NULL, 0));
  CHECK_EQ (lock_release (b), 0);
  CHECK (exists (LOCK_KEY));
  CHECK_EQ (lock_release (c), 0);
  CHECK (!held ());
  close_stores ();
}

/* Racing takers: all start at a barrier; exactly one may win. */
#define RACERS 8
static pthread_barrier_t barrier;
static atomic_int wins, busy;
static struct lock *winners[RACERS];
static bool race_force;

static void *
racer (void *arg)
{
  struct lock *l = NULL;
  struct lock_params p = params;
  int r;

  p.force = race_force;
  pthread_barrier_wait (&barrier);
  r = lock_acquire (os, &p, &l);
  if (r == 0) {
    winners[atomic_fetch_add (&wins, 1)] = l;
  }
  else if (r == -EBUSY)
    atomic_fetch_add (&busy, 1);
  else
    fprintf (stderr, "racer: unexpected %d\n", r);
  return NULL;
}

static void
race (void)
{
  pthread_t t[RACERS];
  int i;

  atomic_store (&wins, 0);
  atomic_store (&busy, 0);
  memset (winners, 0, sizeof winners);
  pthread_barrier_init (&barrier, NULL, RACERS);
  for (i = 0; i < RACERS; ++i)
    pthread_create (&t[i], NULL, racer, NULL);
  for (i = 0; i < RACERS; ++i)
    pthread_join (t[i], NULL);
  pthread_barrier_destroy (&barrier);
}

static void
test_races (void)
{
  struct lock *a = NULL;

  open_stores ();
  /* Nobody holds it. */
  race ();
  CHECK_EQ (atomic_load (&wins), 1);
  CHECK_EQ (atomic_load (&busy), RACERS - 1);
  CHECK_EQ (lock_release (winners[0]), 0);

  /* A stale lock: all see it stale, one takeover wins, and the losers do
   * not take over the winner's fresh lock.  (Age the object itself: a
   * skewed store clock would make the winner's lock look stale too.)
   */
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  age_lock (100);
  race ();
  CHECK_EQ (atomic_load (&wins), 1);
  CHECK_EQ (atomic_load (&busy), RACERS - 1);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK_EQ (lock_release (a), 0);
  CHECK_EQ (lock_release (winners[0]), 0);

  /* A fresh lock and force=true everywhere: those that lose a takeover
   * race refuse; one that comes later may force the winner out in turn
   * (that is what force means), but in the end exactly one still holds
   * the lock and every other is fenced at its next renewal.
   */
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  race_force = true;
  race ();
  race_force = false;
  {
    int i, n = atomic_load (&wins), held = 0;

    CHECK (n >= 1);
    CHECK_EQ (n + atomic_load (&busy), RACERS);
    for (i = 0; i < n; ++i)
      held += lock_renew (winners[i]) == 0;
    CHECK_EQ (held, 1);
    for (i = 0; i < n; ++i)
      CHECK_EQ (lock_release (winners[i]), 0);
  }
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK_EQ (lock_release (a), 0);
  CHECK (!held ());
  close_stores ();
}

static void
test_renewal_detects_foreign (void)
{
  struct lock *a = NULL;

  open_stores ();
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  /* Someone rewrites the object behind our back. */
  put_foreign_lock ("ffffffffffffffffffffffffffffffff");
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK (lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_release (a), 0);
  CHECK (exists (LOCK_KEY));            /* not ours: kept */
  CHECK_EQ (objstore_del (os, LOCK_KEY), 0);

  /* Someone deletes it (s3chunk unlock): fenced too. */
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK_EQ (objstore_del (os, LOCK_KEY), 0);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK (lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_release (a), 0);

  /* Something that is not a lock at all: fenced. */
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK_EQ (objstore_put (os, LOCK_KEY, "junk\n", 5, NULL), 0);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK (lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_release (a), 0);
  /* ... and a new taker refuses it while it is fresh. */
  CHECK_EQ (lock_acquire (os, &params, &a), -EBUSY);
  CHECK (unit_logged ("unreadable"));
  CHECK_EQ (objstore_del (os, LOCK_KEY), 0);
  close_stores ();
}

static void
test_ambiguous_renewal (void)
{
  struct lock *a = NULL;
  struct lock_holder h;
  int64_t age;
  bool fresh;

  open_stores ();
  CHECK_EQ (lock_acquire (os, &params, &a), 0);

  /* The write landed but the answer was lost: adopted, not fenced. */
  clk->timeout_after_put_if = 1;
  CHECK_EQ (lock_renew (a), 0);
  CHECK (!lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_renew (a), 0);         /* with the adopted etag */

  /* The write never arrived: our older object is there; not fenced, the
   * next renewal works.
   */
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_FAIL, -ETIMEDOUT, 0, 1);
  CHECK_EQ (lock_renew (a), -EAGAIN);
  CHECK (!lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_renew (a), 0);
  CHECK_EQ (lock_read (os, &h, &age, &fresh), 0);

  /* A timeout and the re-read fails too: nothing known, try again. */
  objstore_fault_set (faults, FAULT_OP_PUT_IF | FAULT_OP_GET, FAULT_FAIL,
                      -ETIMEDOUT, 0, 2);
  CHECK_EQ (lock_renew (a), -ETIMEDOUT);
  CHECK (!lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_renew (a), 0);

  /* A timeout, and someone else's object is there: fenced. */
  put_foreign_lock ("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_FAIL, -ETIMEDOUT, 0, 1);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK (lock_fenced (a, NULL, 0));
  CHECK_EQ (lock_release (a), 0);
  CHECK_EQ (objstore_del (os, LOCK_KEY), 0);

  /* An ambiguous create at acquire that landed: ours. */
  clk->timeout_after_put_if = 1;
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK_EQ (lock_renew (a), 0);
  CHECK_EQ (lock_release (a), 0);
  close_stores ();
}

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
test_threads (void)
{
  struct lock_params p = { .lease = 3, .version = "test" };
  struct lock *a = NULL;
  struct lock_holder h0, h1;
  atomic_int a_fenced = 0;
  int64_t age;
  bool fresh;
  double t0, t;

  open_stores ();
  CHECK_EQ (lock_acquire (os, &p, &a), 0);
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), 0);
  CHECK_EQ (lock_read (os, &h0, &age, &fresh), 0);
  CHECK_EQ (h0.pid, getpid ());
  /* lease 3: renewed every second. */
  sleep (3);
  CHECK_EQ (lock_read (os, &h1, &age, &fresh), 0);
  CHECK (h1.sequence >= h0.sequence + 2);
  CHECK (fresh);
  CHECK_EQ (atomic_load (&a_fenced), 0);

  /* Renewals now fail: the watchdog fences lease - lease/3 = 2 s after
   * the last successful renewal was sent, i.e. within about 1-2 s from
   * now, before the lease (3 s) could run out.
   */
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_FAIL, -EIO, 0,
                      UINT32_MAX);
  t0 = now_s ();
  while (atomic_load (&a_fenced) == 0 && now_s () - t0 < 10)
    usleep (20000);
  t = now_s () - t0;
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK (t <= 2.2);
  CHECK (fenced_because ("no renewal"));
  objstore_fault_set (faults, 0, FAULT_NONE, 0, 0, 0);
  /* Our object is still there and ours: release releases it. */
  CHECK_EQ (lock_release (a), 0);
  CHECK (!held ());

  /* A renewal that hangs (a stalled request) does not delay the fence. */
  atomic_store (&a_fenced, 0);
  CHECK_EQ (lock_acquire (os, &p, &a), 0);
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), 0);
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_STALL, 0, 0, UINT32_MAX);
  t0 = now_s ();
  while (atomic_load (&a_fenced) == 0 && now_s () - t0 < 10)
    usleep (20000);
  t = now_s () - t0;
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK (t <= 2.2);
  CHECK (objstore_fault_stalled (faults) >= 1);
  objstore_fault_release (faults);
  CHECK_EQ (lock_release (a), 0);

  /* A takeover behind a running holder's back is noticed within one
   * renewal period.
   */
  atomic_store (&a_fenced, 0);
  CHECK_EQ (lock_acquire (os, &p, &a), 0);
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), 0);
  put_foreign_lock ("dddddddddddddddddddddddddddddddd");
  t0 = now_s ();
  while (atomic_load (&a_fenced) == 0 && now_s () - t0 < 10)
    usleep (20000);
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK (now_s () - t0 <= 1.5);
  CHECK (fenced_because ("took the volume over"));
  CHECK_EQ (lock_release (a), 0);
  CHECK (exists (LOCK_KEY));
  close_stores ();
}

static int
count_key (void *opaque, const char *key, uint64_t size)
{
  (*(unsigned *) opaque)++;
  return 0;
}

static unsigned
count_prefix (const char *prefix)
{
  unsigned n = 0;

  CHECK_EQ (objstore_list (os, prefix, count_key, &n), 0);
  return n;
}

static void
test_probe (void)
{
  open_stores ();
  CHECK_EQ (lock_probe (os), 0);
  CHECK_EQ (count_prefix (LOCK_PROBE_PREFIX), 0);

  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_IGNORE_CONDITIONS, 0, 0,
                      UINT32_MAX);
  unit_last_log[0] = '\0';
  CHECK_EQ (lock_probe (os), -ENOTSUP);
  CHECK (unit_logged ("does not enforce conditional writes"));
  CHECK (unit_logged ("lock=none"));
  CHECK_EQ (count_prefix (LOCK_PROBE_PREFIX), 0);

  /* A store that fails outright: the error, not a verdict. */
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_FAIL, -EACCES, 0, 1);
  CHECK_EQ (lock_probe (os), -EACCES);
  objstore_fault_set (faults, 0, FAULT_NONE, 0, 0, 0);
  CHECK_EQ (count_prefix (LOCK_PROBE_PREFIX), 0);
  close_stores ();
}

static void
test_break (void)
{
  struct lock *a = NULL;

  open_stores ();
  CHECK_EQ (lock_break (os, false), 0);         /* nothing to break */
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK_EQ (lock_break (os, false), -EBUSY);
  CHECK (exists (LOCK_KEY));
  clk->skew = 30;
  CHECK_EQ (lock_break (os, false), 0);         /* stale */
  clk->skew = 0;
  CHECK (!held ());
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK_EQ (lock_release (a), 0);

  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK_EQ (lock_break (os, true), 0);          /* forced */
  CHECK (!held ());
  CHECK_EQ (lock_release (a), 0);
  close_stores ();
}


/* The write fence: the deadline follows each renewal (sent + lease -
 * lease/3), a data store that carries it refuses writes past it, and the
 * fence closes when the lock is lost: a write stalled in the store and let
 * go afterwards is refused by the store under it, never sent late.
 */
struct stalled_put {
  pthread_t t;
  struct objstore *os;
  int r;
};

static void *
stalled_put_thread (void *arg)
{
  struct stalled_put *sp = arg;

  sp->r = objstore_put (sp->os, "chunks/0000000000000001", "late", 4, NULL);
  return NULL;
}

static void
test_fence (void)
{
  struct lock_params p = { .lease = 3, .version = "test" };
  struct objstore *data_dir, *data;
  struct stalled_put sp = { 0 };
  struct cs_buf b = CS_BUF_INIT;
  atomic_int a_fenced = 0;
  struct lock *a = NULL;
  int64_t d0, left;

  open_stores ();
  CHECK_EQ (objstore_dir_open (dir, false, &data_dir), 0);
  CHECK_EQ (objstore_fault_wrap (data_dir, &data), 0);

  CHECK_EQ (lock_acquire (os, &p, &a), 0);
  objstore_set_fence (data, lock_fence (a));
  left = cs_fence_left (lock_fence (a));
  CHECK (left > 1000000000LL && left <= 2000000000LL);  /* 2 s, less what passed since it was sent */
  CHECK_EQ (objstore_put (data, "chunks/0000000000000001", "ok", 2, NULL), 0);
  d0 = cs_fence_deadline (lock_fence (a));
  usleep (100 * 1000);
  CHECK_EQ (lock_renew (a), 0);
  CHECK (cs_fence_deadline (lock_fence (a)) > d0);      /* moved on */

  /* A data write stalls in the fault layer; then renewals fail and the
   * watchdog fences.  Let go after that, the write is refused below.
   */
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), 0);
  objstore_fault_set (data, FAULT_OP_PUT, FAULT_STALL, 0, 0, 1);
  sp.os = data;
  pthread_create (&sp.t, NULL, stalled_put_thread, &sp);
  for (int i = 0; i < 5000 && objstore_fault_stalled (data) < 1; ++i)
    usleep (1000);
  CHECK_EQ (objstore_fault_stalled (data), 1);
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_FAIL, -EIO, 0,
                      UINT32_MAX);
  for (int i = 0; i < 500 && atomic_load (&a_fenced) == 0; ++i)
    usleep (10000);
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK_EQ (cs_fence_deadline (lock_fence (a)), 0);    /* closed */
  objstore_fault_release (data);
  pthread_join (sp.t, NULL);
  CHECK_EQ (sp.r, -ENOLCK);
  CHECK_EQ (objstore_get (data, "chunks/0000000000000001", 100, &b, NULL), 0);
  CHECK (b.len == 2 && memcmp (b.data, "ok", 2) == 0);
  CHECK_EQ (objstore_put (data, "chunks/0000000000000001", "x", 1, NULL),
            -ENOLCK);
  CHECK_EQ (objstore_del (data, "chunks/0000000000000001"), -ENOLCK);
  /* Reads are never fenced. */
  CHECK_EQ (objstore_get (data, "chunks/0000000000000001", 100, &b, NULL), 0);
  objstore_fault_set (faults, 0, FAULT_NONE, 0, 0, 0);
  CHECK_EQ (lock_release (a), 0);
  cs_buf_free (&b);
  objstore_close (data);
  close_stores ();
}

/* A suspend longer than the lease: CLOCK_BOOTTIME jumps, CLOCK_MONOTONIC
 * does not.  The holder must know at once that its lease ran out: data
 * writes are refused before the watchdog even runs, and it fences.
 */
static void
test_suspend (void)
{
  struct lock_params p = { .lease = 3, .version = "test" };
  struct objstore *data;
  atomic_int a_fenced = 0;
  struct lock *a = NULL;
  static int64_t offset;

  open_stores ();
  CHECK_EQ (objstore_dir_open (dir, false, &data), 0);
  CHECK_EQ (lock_acquire (os, &p, &a), 0);
  objstore_set_fence (data, lock_fence (a));
  CHECK_EQ (lock_start (a, on_fence, &a_fenced), 0);
  CHECK_EQ (objstore_put (data, "chunks/0000000000000002", "a", 1, NULL), 0);

  /* While "suspended" the store cannot be reached (a renewal would
   * otherwise succeed at once on resume and hide the jump).
   */
  objstore_fault_set (faults, FAULT_OP_ALL, FAULT_FAIL, -EIO, 0, UINT32_MAX);
  __atomic_store_n (&offset, 10LL * 1000000000, __ATOMIC_RELEASE);
  cs_boottime_set_offset (&offset);
  CHECK_EQ (objstore_put (data, "chunks/0000000000000002", "b", 1, NULL),
            -ENOLCK);
  for (int i = 0; i < 100 && atomic_load (&a_fenced) == 0; ++i)
    usleep (10000);
  CHECK_EQ (atomic_load (&a_fenced), 1);
  CHECK (fenced_because ("no renewal"));
  objstore_fault_set (faults, 0, FAULT_NONE, 0, 0, 0);
  CHECK_EQ (lock_release (a), 0);
  cs_boottime_set_offset (NULL);
  objstore_close (data);
  close_stores ();
}

/* Release never removes a lock that a taker took over meanwhile: here the
 * release's write to the store is held until a stale takeover happened.
 * (A delete after a read, as releases did, deletes the taker's lock.)
 */
struct releaser {
  pthread_t t;
  struct lock *l;
  int r;
};

static void *
release_thread (void *arg)
{
  struct releaser *rl = arg;

  rl->r = lock_release (rl->l);
  return NULL;
}

static void
test_release_race (void)
{
  struct releaser rl = { 0 };
  struct lock_holder h, hb;
  struct lock *b = NULL;
  int64_t age;
  bool fresh;

  open_stores ();
  CHECK_EQ (lock_acquire (os, &params, &rl.l), 0);
  objstore_fault_set (faults, FAULT_OP_PUT_IF | FAULT_OP_DEL, FAULT_STALL, 0,
                      0, 1);
  pthread_create (&rl.t, NULL, release_thread, &rl);
  for (int i = 0; i < 5000 && objstore_fault_stalled (faults) < 1; ++i)
    usleep (1000);
  CHECK_EQ (objstore_fault_stalled (faults), 1);
  /* The releaser is frozen past its lease: B takes the stale lock. */
  clk->skew = 30;
  CHECK_EQ (lock_acquire (os, &params, &b), 0);
  clk->skew = 0;
  CHECK_EQ (lock_read (os, &hb, &age, &fresh), 0);
  objstore_fault_release (faults);
  pthread_join (rl.t, NULL);
  CHECK_EQ (rl.r, 0);
  CHECK_EQ (lock_read (os, &h, &age, &fresh), 0);
  CHECK (strcmp (h.owner, hb.owner) == 0);
  CHECK (fresh);
  CHECK_EQ (lock_renew (b), 0);
  CHECK_EQ (lock_release (b), 0);
  /* A released lock is taken at once, without waiting for a lease. */
  CHECK_EQ (lock_acquire (os, &params, &b), 0);
  CHECK_EQ (lock_release (b), 0);
  close_stores ();
}


/* ------------------------------------------------------------------------
 * The epoch lock: the same store with create-only writes alone (the fault
 * wrapper refuses compare-and-swap, as OSS answers NotImplemented).
 */
static void
open_epoch_stores (void)
{
  open_stores ();
  objstore_fault_set_caps (faults, OBJSTORE_CAP_CREATE);
}

static int
count_epoch_keys (const char *prefix)
{
  struct cs_buf b = CS_BUF_INIT;
  char path[4096];
  int n = 0;

  (void) b;
  snprintf (path, sizeof path, "ls %s/lock.d 2>/dev/null | grep -c '%s'",
            dir, prefix);
  FILE *fp = popen (path, "r");
  if (fp) {
    if (fscanf (fp, "%d", &n) != 1)
      n = 0;
    pclose (fp);
  }
  return n;
}

static void
test_epoch_take_refuse_release (void)
{
  struct lock *a = NULL, *b = NULL;
  struct lock_holder h;
  int64_t age;
  bool fresh;
  double t0;

  open_epoch_stores ();
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  CHECK (!exists (LOCK_KEY));           /* no compare-and-swap object */
  CHECK (exists ("lock.d/00000000000000000001"));
  CHECK_EQ (lock_read (os, &h, &age, &fresh), 0);
  CHECK (fresh);
  CHECK_EQ (lock_acquire (os, &params, &b), -EBUSY);
  CHECK (unit_logged ("the volume is in use: locked by host"));
  for (int i = 0; i < 4; ++i)
    CHECK_EQ (lock_renew (a), 0);
  /* Own heartbeats but the last two are deleted. */
  CHECK_EQ (count_epoch_keys ("hb-"), 2);
  CHECK_EQ (lock_release (a), 0);
  CHECK_EQ (lock_read (os, &h, &age, &fresh), -ENOENT);
  CHECK (h.released);
  /* Released: taken at once, no wait. */
  t0 = now_s ();
  CHECK_EQ (lock_acquire (os, &params, &b), 0);
  CHECK (now_s () - t0 < 1);
  CHECK (exists ("lock.d/00000000000000000002"));
  /* Cleanup: epoch 1's heartbeats and marker are gone, its claim kept. */
  CHECK (exists ("lock.d/00000000000000000001"));
  CHECK (!exists ("lock.d/00000000000000000001.released"));
  CHECK_EQ (count_epoch_keys ("00000000000000000001.hb-"), 0);
  CHECK_EQ (lock_release (b), 0);
  close_stores ();
}

static void
test_epoch_stale_takeover_and_frozen_holder (void)
{
  struct lock *a = NULL, *b = NULL;

  open_epoch_stores ();
  CHECK_EQ (lock_acquire (os, &params, &a), 0);
  atomic_store (&fences, 0);
  CHECK_EQ (lock_start (a, on_fence, NULL), 0);
  lock_stop (a);                        /* A freezes (no renewals) */
  /* A's next heartbeat is frozen on its way to the store. */
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_STALL, 0, 0, 1);
  {
    pthread_t t;
    struct renewer_arg { struct lock *l; int r; } ra = { a, 1 };
    void *(*fn) (void *) = NULL;
    (void) fn;
    /* A renewal in a thread: stalls in the heartbeat create. */
    extern void *epoch_renew_thread (void *);
    pthread_create (&t, NULL, epoch_renew_thread, &ra);
    for (int i = 0; i < 5000 && objstore_fault_stalled (faults) < 1; ++i)
      usleep (1000);
    CHECK_EQ (objstore_fault_stalled (faults), 1);
    /* By the store's clock A is long stale: B takes over, and its wait
     * (a whole lease by the store's clock) passes at once here.
     */
    clk->skew = 30;
    CHECK_EQ (lock_acquire (os, &params, &b), 0);
    CHECK (unit_logged ("took over the stale lock of host"));
    CHECK (exists ("lock.d/00000000000000000002"));
    /* A thaws: its heartbeat lands, then its check sees epoch 2. */
    objstore_fault_release (faults);
    pthread_join (t, NULL);
    CHECK_EQ (ra.r, -ENOLCK);
  }
  clk->skew = 0;
  CHECK (lock_fenced (a, NULL, 0));
  CHECK_EQ (atomic_load (&fences), 1);
  CHECK (fenced_because ("another instance took the volume over"));
  CHECK (cs_fence_left (lock_fence (a)) <= 0);
  CHECK_EQ (lock_renew (b), 0);
  CHECK (cs_fence_left (lock_fence (b)) > 0);
  CHECK_EQ (lock_release (a), 0);       /* a marker of epoch 1: harmless */
  CHECK_EQ (lock_renew (b), 0);
  CHECK_EQ (lock_release (b), 0);
  close_stores ();
}

static void
test_epoch_races (void)
{
  struct lock *a = NULL;

  open_epoch_stores ();
  race ();
  CHECK_EQ (atomic_load (&wins), 1);
  CHECK_EQ (atomic_load (&busy), RACERS - 1);
  CHECK_EQ (lock_release (winners[0]), 0);
  /* Racing takers of a stale epoch: exactly one creates the next claim.
   * Stale by real time, not by a skewed store clock: a skew makes the
   * winner's new epoch look stale too, and a slow racer then takes that
   * one over in turn (it happened under load).  A holder with a 1 s lease
   * is stale after 3 s, and the takers' wait (its lease + 1 s) is short.
   */
  {
    const struct lock_params p1 = { .lease = 1, .version = "test" };
    CHECK_EQ (lock_acquire (os, &p1, &a), 0);
  }
  sleep (3);
  race ();
  CHECK_EQ (atomic_load (&wins), 1);
  CHECK_EQ (atomic_load (&busy), RACERS - 1);
  CHECK_EQ (lock_renew (a), -ENOLCK);
  CHECK_EQ (lock_renew (winners[0]), 0);
  CHECK_EQ (lock_release (a), 0);
  CHECK_EQ (lock_release (winners[0]), 0);
  close_stores ();
}

static void
test_epoch_probe (void)
{
  open_epoch_stores ();
  CHECK_EQ (lock_probe (os), 0);        /* create-only is enough */
  objstore_fault_set (faults, FAULT_OP_PUT_IF, FAULT_IGNORE_CONDITIONS, 0,
                      0, UINT32_MAX);
  CHECK_EQ (lock_probe (os), -ENOTSUP);
  close_stores ();
}

void *epoch_renew_thread (void *arg);

void *
epoch_renew_thread (void *arg)
{
  struct { struct lock *l; int r; } *ra = arg;

  ra->r = lock_renew (ra->l);
  return NULL;
}

int
main (void)
{
  unit_init ();
  test_format ();
  test_take_refuse_release ();
  test_stale_takeover_and_fence ();
  test_races ();
  test_renewal_detects_foreign ();
  test_ambiguous_renewal ();
  test_probe ();
  test_break ();
  test_threads ();
  test_fence ();
  test_suspend ();
  test_release_race ();
  test_epoch_take_refuse_release ();
  test_epoch_stale_takeover_and_frozen_holder ();
  test_epoch_races ();
  test_epoch_probe ();
  return unit_done ("test-lock");
}
