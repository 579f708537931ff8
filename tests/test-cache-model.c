/* s3chunk: a model-based stress test of the write-back cache.
 *
 * In the shape of libnbd's tests/synch-parallel.c: several threads, each
 * owning a disjoint region of the disk (so one shadow copy of the disk is
 * exact), issue random writes, zeroes, trims, flushes and reads, and every
 * read is compared byte for byte with the shadow.  A controller thread
 * injects store faults meanwhile (failed, stalled and "landed but timed
 * out" PUTs and DELETEs), and in some rounds fences the cache
 * (cache_fail) at a random moment.  Checked:
 *
 *  1. every read equals the shadow, even while uploads and flushes fail;
 *  2. a flush or FUA write that returned 0 put in the store everything
 *     acknowledged before it: the chunk objects, read directly through a
 *     second, read-only volume on the same directory, equal the shadow for
 *     every chunk not touched since the flush began;
 *  3. with the faults cleared cache_close returns 0, and the store then
 *     holds exactly the shadow;
 *  4. after cache_fail every write, zero and flush fails with -EIO and
 *     changes nothing, reads still equal the shadow, and after close each
 *     chunk in the store is one of the states it had since its last
 *     state known to be stored (never garbage, never another chunk's).
 * A write or zero that fails must leave each chunk it touches either as it
 * was or as asked (the cache changes a chunk under its lock, one chunk at
 * a time): never anything else.
 *
 * seed=N is printed first; S3CHUNK_SEED=N replays one seed, "random" picks
 * one.  S3CHUNK_MODEL_ROUNDS and S3CHUNK_MODEL_OPS (per thread per round)
 * scale the run for a soak.  Replay is approximate: the seed fixes every
 * random choice (operations, faults, the fence point), not how the threads
 * interleave, so a failure may need a few runs of its seed to show again.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cache.h"
#include "unit.h"

/* With fast=true cache_zero may return -EOPNOTSUPP when zeroing would
 * need a read from the store, having changed nothing.
 */
#define model_zero(c, n, o, fua, fast) \
  cache_zero ((c), (n), (o), (fua), (fast))

#define CHUNK (64 * 1024)               /* the smallest chunk size */
#define NCHUNKS 64
#define SIZE ((uint64_t) CHUNK * NCHUNKS)
#define NTHREADS 4
#define REGION_CHUNKS (NCHUNKS / NTHREADS)
#define REGION ((uint64_t) CHUNK * REGION_CHUNKS)
#define WORKERS 3
/* The cache keeps 2 chunks per worker + 2 at least (cache_open); a few
 * more than that, far less than a thread's region, so that chunks are
 * evicted and writers wait for uploads all the time.
 */
#define CACHE_CHUNKS (2 * WORKERS + 2 + 4)
#define MAX_OP (3 * CHUNK)              /* longest request */

/* Default seeds, each run for the default rounds. */
static const uint64_t default_seeds[] = { 1, 2, 5, 11 };

static char *dir;
static struct objstore *os;             /* the fault wrapper, owns its inner */
static struct cs_volume *vol;
static struct cache *cache;

/* The checker's own view of the store: not through the fault wrapper. */
static struct objstore *check_os;
static struct cs_volume *check_vol;
static struct codec_ctx *check_ctx;
static struct cs_buf check_scratch = CS_BUF_INIT;
static uint8_t check_buf[CHUNK];
static pthread_mutex_t check_lock = PTHREAD_MUTEX_INITIALIZER;

static uint8_t shadow[SIZE];

/* Per chunk, under its region's lock.  gen is odd while an operation on
 * the chunk is under way (its outcome not yet in the shadow); hist holds
 * the hashes of the contents the chunk had since the last one known to be
 * in the store (hist[0]), any of which a crash may leave there.
 */
struct chunk_model {
  uint64_t gen;
  uint64_t *hist;
  size_t nhist, cap;
};
static struct chunk_model chunks[NCHUNKS];
static pthread_mutex_t region_lock[NTHREADS];

static uint64_t seed;
static unsigned round_no;
static unsigned ops_per_thread;
static unsigned watchdog_limit;         /* seconds a round may take */
static unsigned ops_done;               /* atomic */
static bool fenced;                     /* atomic: cache_fail has returned */
static bool threads_done;               /* atomic */

static uint64_t
next_rand (uint64_t *s)
{
  /* splitmix64: any seed, even 0, gives a good stream. */
  uint64_t z = (*s += UINT64_C (0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C (0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------ log and failures */

/* The operations, each with the chunks it touched (first > last: none).
 * The first failure prints the last few, and the earlier ones that
 * touched the chunk it is about.
 */
#define LOG_LINES 8192
#define LOG_TAIL 40
static struct oplog_line {
  char text[120];
  uint64_t first, last;
} oplog[LOG_LINES];
static uint64_t oplog_n;
static pthread_mutex_t oplog_lock = PTHREAD_MUTEX_INITIALIZER;

static void __attribute__ ((format (printf, 3, 4)))
oplog_chunks (uint64_t first, uint64_t last, const char *fmt, ...)
{
  struct oplog_line *l;
  va_list ap;

  pthread_mutex_lock (&oplog_lock);
  l = &oplog[oplog_n % LOG_LINES];
  va_start (ap, fmt);
  vsnprintf (l->text, sizeof l->text, fmt, ap);
  va_end (ap);
  l->first = first;
  l->last = last;
  oplog_n++;
  pthread_mutex_unlock (&oplog_lock);
}
#define oplog_add(...) oplog_chunks (1, 0, __VA_ARGS__)

static unsigned failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
/* One wrong chunk fails many later checks: each chunk is reported once
 * a round (all are counted).
 */
static bool reported[NCHUNKS];
static unsigned printed, dumps, round_failures;

/* A failure about chunk k (or none: UINT64_MAX). */
static void __attribute__ ((format (printf, 2, 3)))
model_fail_chunk (uint64_t k, const char *fmt, ...)
{
  va_list ap;
  uint64_t i, from, n = 0;

  pthread_mutex_lock (&fail_lock);
  failures++;
  if (k != UINT64_MAX && reported[k]) {
    pthread_mutex_unlock (&fail_lock);
    return;
  }
  if (k != UINT64_MAX)
    reported[k] = true;
  round_failures++;
  if (++printed <= 30) {
    fprintf (stderr, "FAIL seed=%" PRIu64 " round=%u: ", seed, round_no);
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fprintf (stderr, "\n");
  }
  /* The log with the first failure of a round, for the first few. */
  if (round_failures == 1 && ++dumps <= 4) {
    pthread_mutex_lock (&oplog_lock);
    from = oplog_n > LOG_LINES ? oplog_n - LOG_LINES : 0;
    if (k != UINT64_MAX) {
      fprintf (stderr, "operations on chunk %" PRIu64 " (oldest first):\n",
               k);
      for (i = oplog_n; i > from && n < LOG_TAIL; --i)
        if (oplog[(i - 1) % LOG_LINES].first <= k &&
            k <= oplog[(i - 1) % LOG_LINES].last)
          n++;
      for (; i < oplog_n; ++i)
        if (oplog[i % LOG_LINES].first <= k &&
            k <= oplog[i % LOG_LINES].last)
          fprintf (stderr, "  %6" PRIu64 " %s\n", i, oplog[i % LOG_LINES].text);
    }
    fprintf (stderr, "last operations (oldest first):\n");
    for (i = oplog_n - from > LOG_TAIL ? oplog_n - LOG_TAIL : from;
         i < oplog_n; ++i)
      fprintf (stderr, "  %6" PRIu64 " %s\n", i, oplog[i % LOG_LINES].text);
    pthread_mutex_unlock (&oplog_lock);
  }
  pthread_mutex_unlock (&fail_lock);
}
#define model_fail(...) model_fail_chunk (UINT64_MAX, __VA_ARGS__)

/* The injected faults log an error each: keep them out of the output
 * unless asked (UNIT_VERBOSE=1), but in the operation log.
 */
static void
model_log (enum cs_log_level level, const char *msg)
{
  if (level <= CS_LOG_WARN)
    oplog_add ("log: %.100s", msg);
  if (getenv ("UNIT_VERBOSE"))
    fprintf (stderr, "  log: %s\n", msg);
}

/* ------------------------------------------------------------- the model */

static uint64_t
chunk_hash (uint64_t k, const uint8_t *data)
{
  return XXH64 (data, CHUNK, k);
}

/* Under the region lock: chunk k's shadow changed. */
static void
hist_add (uint64_t k)
{
  struct chunk_model *m = &chunks[k];

  if (m->nhist == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 16;
    m->hist = realloc (m->hist, m->cap * sizeof *m->hist);
    if (m->hist == NULL) {
      perror ("realloc");
      exit (EXIT_FAILURE);
    }
  }
  m->hist[m->nhist++] = chunk_hash (k, shadow + k * CHUNK);
}

/* Under the region lock: the shadow of chunk k is known to be stored. */
static void
hist_reset (uint64_t k)
{
  chunks[k].nhist = 0;
  hist_add (k);
}

/* What a wrong chunk content looks like, for the failure message (the
 * other regions' shadows are read without their locks: a hint only).
 */
static const char *
describe (uint64_t k, const uint8_t *data)
{
  static __thread char s[96];
  uint64_t h = chunk_hash (k, data);

  if (cs_is_zero (data, CHUNK))
    return "all zeroes";
  for (size_t i = 0; i < chunks[k].nhist; ++i)
    if (chunks[k].hist[i] == h) {
      snprintf (s, sizeof s, "its state %zu of %zu since last stored", i,
                chunks[k].nhist);
      return s;
    }
  for (uint64_t j = 0; j < NCHUNKS; ++j)
    if (j != k && memcmp (data, shadow + j * CHUNK, CHUNK) == 0) {
      snprintf (s, sizeof s, "chunk %" PRIu64 "'s bytes", j);
      return s;
    }
  return "unknown bytes";
}

static unsigned
region_of (uint64_t k)
{
  return k / REGION_CHUNKS;
}

/* Mark chunks first..last (all in one region) busy or settled. */
static void
gen_bump (uint64_t first, uint64_t last)
{
  pthread_mutex_lock (&region_lock[region_of (first)]);
  for (uint64_t k = first; k <= last; ++k)
    chunks[k].gen++;
  pthread_mutex_unlock (&region_lock[region_of (first)]);
}

static void
gens_snapshot (uint64_t *g)
{
  for (unsigned t = 0; t < NTHREADS; ++t) {
    pthread_mutex_lock (&region_lock[t]);
    for (uint64_t k = t * REGION_CHUNKS; k < (t + 1) * REGION_CHUNKS; ++k)
      g[k] = chunks[k].gen;
    pthread_mutex_unlock (&region_lock[t]);
  }
}

/* Rules 2 and 3: after `what` returned 0, every chunk of first..last not
 * touched since g[] was taken (before the call) must be in the store as
 * the shadow has it.  Those chunks' histories restart from there.
 */
static void
check_store (const char *what, const uint64_t *g, uint64_t first,
             uint64_t last, bool final)
{
  int r;

  pthread_mutex_lock (&check_lock);
  r = cs_map_load (check_vol);
  if (r < 0)
    model_fail ("%s: listing the store failed: %d", what, r);
  for (uint64_t k = first; r == 0 && k <= last; ++k) {
    unsigned t = region_of (k);
    int r2;

    pthread_mutex_lock (&region_lock[t]);
    if ((g[k] & 1) == 0 && chunks[k].gen == g[k]) {
      r2 = cs_chunk_read (check_vol, check_ctx, k, check_buf,
                          &check_scratch);
      if (r2 < 0)
        model_fail ("%s: reading chunk %" PRIu64 " from the store: %d",
                    what, k, r2);
      else if (memcmp (check_buf, shadow + k * CHUNK, CHUNK) != 0) {
        model_fail_chunk (k, "%s returned 0, but the store's chunk %" PRIu64
                          " (%s) is not what was acknowledged before it "
                          "(%s)", what, k, describe (k, check_buf),
                          cs_is_zero (shadow + k * CHUNK, CHUNK) ?
                          "should be zeroes" : "data differs");
        /* At the end of a round, go on from what is there: the next
         * rounds then report only new failures.
         */
        if (final) {
          memcpy (shadow + k * CHUNK, check_buf, CHUNK);
          hist_reset (k);
        }
      }
      else
        hist_reset (k);
    }
    pthread_mutex_unlock (&region_lock[t]);
  }
  pthread_mutex_unlock (&check_lock);
}

/* Rule 4: after a fenced round, each chunk in the store is one of the
 * states in its history.  Then the shadow takes what the store holds.
 */
static void
check_store_fenced (void)
{
  int r;

  r = cs_map_load (check_vol);
  if (r < 0)
    model_fail ("fenced: listing the store failed: %d", r);
  for (uint64_t k = 0; r == 0 && k < NCHUNKS; ++k) {
    struct chunk_model *m = &chunks[k];
    uint64_t h;
    size_t i;
    int r2;

    r2 = cs_chunk_read (check_vol, check_ctx, k, check_buf, &check_scratch);
    if (r2 < 0) {
      model_fail ("fenced: reading chunk %" PRIu64 ": %d", k, r2);
      continue;
    }
    h = chunk_hash (k, check_buf);
    for (i = 0; i < m->nhist && m->hist[i] != h; ++i)
      ;
    if (i == m->nhist)
      model_fail_chunk (k, "fenced: chunk %" PRIu64 " in the store is none "
                        "of the %zu states it had since it was last known "
                        "stored (%s)", k, m->nhist, describe (k, check_buf));
    memcpy (shadow + k * CHUNK, check_buf, CHUNK);
    hist_reset (k);
  }
}

/* --------------------------------------------------------------- threads */

struct thread {
  pthread_t t;
  unsigned id;
  uint64_t rng;
  uint64_t seq[2];                      /* next offsets of two sequential
                                           readers, interleaved */
  uint8_t wbuf[MAX_OP], rbuf[MAX_OP];
  uint64_t g[NCHUNKS];
  unsigned reads, read_eio, writes, write_err, flushes, flush_ok;
};

static uint64_t
rnd (struct thread *th, uint64_t n)
{
  return next_rand (&th->rng) % n;
}

static void
fill_random (struct thread *th, uint8_t *p, uint32_t len)
{
  uint64_t x;
  uint32_t i;

  /* Runs of zero bytes too: a write can turn a chunk all-zero. */
  if (rnd (th, 8) == 0) {
    memset (p, 0, len);
    return;
  }
  for (i = 0; i + 8 <= len; i += 8) {
    x = next_rand (&th->rng);
    memcpy (p + i, &x, 8);
  }
  x = next_rand (&th->rng);
  memcpy (p + i, &x, len - i);
}

/* A random range inside the thread's region. */
static void
pick_range (struct thread *th, uint64_t *off, uint32_t *len)
{
  uint64_t base = (uint64_t) th->id * REGION;
  uint64_t o;
  uint32_t n;

  switch (rnd (th, 4)) {
  case 0:                               /* small, inside one chunk */
    n = 1 + rnd (th, 4096);
    o = rnd (th, REGION_CHUNKS) * CHUNK + rnd (th, CHUNK - n + 1);
    break;
  case 1:                               /* whole chunks */
    n = (1 + rnd (th, 3)) * CHUNK;
    o = rnd (th, REGION_CHUNKS - n / CHUNK + 1) * CHUNK;
    break;
  default:                              /* anywhere, often spanning */
    n = 1 + rnd (th, MAX_OP);
    o = rnd (th, REGION - n + 1);
    break;
  }
  *off = base + o;
  *len = n;
}

/* The piece [off, off+n) of one chunk as the store has it, once the
 * uploads under way have ended.
 */
static int
read_store_piece (uint64_t off, uint32_t n, uint8_t *out)
{
  struct cache_stats st;
  int r;

  for (int i = 0; i < 5000; ++i) {
    cache_get_stats (cache, &st);
    if (st.uploading == 0)
      break;
    usleep (1000);
  }
  pthread_mutex_lock (&check_lock);
  r = cs_map_load (check_vol);
  if (r == 0)
    r = cs_chunk_read (check_vol, check_ctx, off / CHUNK, check_buf,
                       &check_scratch);
  if (r == 0)
    memcpy (out, check_buf + off % CHUNK, n);
  pthread_mutex_unlock (&check_lock);
  return r;
}

/* Read the piece [off, off+n) of one chunk through the cache, retrying
 * while the store is failing: a read that needs a buffer in a cache full
 * of dirty chunks fails with -EIO then.  A failed cache stays full for
 * good; its -EIO means the chunk is not in memory (a chunk a write changed
 * is dirty, or was uploaded), so the store's copy is what the cache holds.
 */
static int
read_back (struct thread *th, uint64_t off, uint32_t n)
{
  int r = 0;

  for (int i = 0; i < 5000; ++i) {
    r = cache_pread (cache, th->rbuf, n, off);
    if (r == 0 || r != -EIO)
      break;
    if (cache_failed (cache)) {
      r = read_store_piece (off, n, th->rbuf);
      break;
    }
    usleep (2000);
  }
  if (r < 0)
    model_fail ("t%u: read back %" PRIu64 "+%" PRIu32 " failed: %d",
                th->id, off, n, r);
  return r;
}

/* After write/zero op `what` on [off, off+len) with new content `data`
 * (NULL: zeroes) failed, or when it must have changed nothing
 * (must_be_old): each chunk's piece holds the old or the new bytes.  The
 * shadow takes what is there.  Called with chunks marked busy.
 */
static void
resolve (struct thread *th, const char *what, uint64_t off, uint32_t len,
         const uint8_t *data, bool must_be_old)
{
  uint64_t end = off + len;

  while (off < end) {
    uint64_t k = off / CHUNK;
    uint32_t n = (k + 1) * CHUNK - off < end - off
      ? (k + 1) * CHUNK - off : end - off;
    bool old, new;

    if (read_back (th, off, n) == 0) {
      old = memcmp (th->rbuf, shadow + off, n) == 0;
      new = data ? memcmp (th->rbuf, data, n) == 0
        : cs_is_zero (th->rbuf, n);
      if (!old && !new)
        model_fail_chunk (k, "t%u: after %s %" PRIu64 "+%" PRIu32 " failed, "
                    "chunk %" PRIu64 " holds neither its old bytes nor the "
                    "new ones (%s)%s", th->id, what, off, n, k,
                    n == CHUNK ? describe (k, th->rbuf) : "a part",
                    cache_failed (cache) ? " (the cache is failed)" : "");
      else if (must_be_old && !old)
        model_fail_chunk (k, "t%u: %s %" PRIu64 "+%" PRIu32 " after "
                    "cache_fail changed chunk %" PRIu64, th->id, what, off, n, k);
      /* Garbage is reported, not adopted: the store still has the old
       * bytes, and later reads show whether the cache keeps the garbage.
       */
      if (!old && new) {
        pthread_mutex_lock (&region_lock[th->id]);
        memcpy (shadow + off, th->rbuf, n);
        hist_add (k);
        pthread_mutex_unlock (&region_lock[th->id]);
      }
    }
    if (data)
      data += n;
    off += n;
  }
}

/* The operation succeeded: the shadow takes the new content. */
static void
apply (struct thread *th, uint64_t off, uint32_t len, const uint8_t *data)
{
  uint64_t first = off / CHUNK, last = (off + len - 1) / CHUNK;

  pthread_mutex_lock (&region_lock[th->id]);
  if (data)
    memcpy (shadow + off, data, len);
  else
    memset (shadow + off, 0, len);
  for (uint64_t k = first; k <= last; ++k)
    hist_add (k);
  pthread_mutex_unlock (&region_lock[th->id]);
}

static void
do_write (struct thread *th, bool zero)
{
  uint64_t off, first, last;
  uint32_t len;
  bool fua = rnd (th, 8) == 0;
  bool fast = zero && rnd (th, 4) == 0;
  bool strict = __atomic_load_n (&fenced, __ATOMIC_ACQUIRE);
  const char *what = zero ? (fast ? "fast zero" : "zero") : "write";
  int r;

  pick_range (th, &off, &len);
  first = off / CHUNK;
  last = (off + len - 1) / CHUNK;
  if (!zero)
    fill_random (th, th->wbuf, len);
  gen_bump (first, last);
  if (zero)
    r = model_zero (cache, len, off, fua, fast);
  else
    r = cache_pwrite (cache, th->wbuf, len, off, fua);
  oplog_chunks (first, last, "t%u %s%s %" PRIu64 "+%" PRIu32 " (chunks %" PRIu64 "-%" PRIu64
             ")%s -> %d", th->id, what, fua ? "+fua" : "", off, len, first,
             last, strict ? " [fenced]" : "", r);
  th->writes++;
  if (strict) {
    /* Rule 4: after cache_fail nothing is accepted. */
    if (r != -EIO && !(fast && r == -EOPNOTSUPP))
      model_fail ("t%u: %s %" PRIu64 "+%" PRIu32 " after cache_fail "
                  "returned %d, not -EIO", th->id, what, off, len, r);
    resolve (th, what, off, len, zero ? NULL : th->wbuf, r != 0);
  }
  else if (r == 0) {
    apply (th, off, len, zero ? NULL : th->wbuf);
  }
  else if (fast && r == -EOPNOTSUPP) {
    resolve (th, what, off, len, NULL, true);
  }
  else {
    /* The store is failing (back-pressure), or a FUA upload failed, or
     * the cache was failed while the request was under way.
     */
    th->write_err++;
    if (r != -EIO)
      model_fail ("t%u: %s %" PRIu64 "+%" PRIu32 " returned %d", th->id,
                  what, off, len, r);
    resolve (th, what, off, len, zero ? NULL : th->wbuf, false);
  }
  gen_bump (first, last);
  if (r == 0 && fua) {
    for (uint64_t k = first; k <= last; ++k)
      th->g[k] = chunks[k].gen;         /* ours: nobody else changes it */
    check_store (zero ? "FUA zero" : "FUA write", th->g, first, last,
                 false);
  }
}

static void
do_flush (struct thread *th)
{
  bool strict = __atomic_load_n (&fenced, __ATOMIC_ACQUIRE);
  int r;

  gens_snapshot (th->g);
  r = cache_flush (cache);
  oplog_chunks (0, NCHUNKS - 1, "t%u flush%s -> %d", th->id, strict ? " [fenced]" : "", r);
  th->flushes++;
  if (strict && r != -EIO)
    model_fail ("t%u: flush after cache_fail returned %d, not -EIO",
                th->id, r);
  else if (r != 0 && r != -EIO)
    model_fail ("t%u: flush returned %d", th->id, r);
  if (r == 0) {
    th->flush_ok++;
    check_store ("flush", th->g, 0, NCHUNKS - 1, false);
  }
}

static void
do_read (struct thread *th)
{
  uint64_t off, base = (uint64_t) th->id * REGION;
  uint32_t len;
  int r;

  if (rnd (th, 3) == 0) {
    /* Sequential: two readers per region, one from its start and one
     * from its middle, interleaved with each other and with the random
     * requests: the cache follows each of them and reads ahead.
     */
    unsigned k = rnd (th, 2);
    uint64_t from = base + k * (REGION / 2);

    len = CHUNK / 4 + rnd (th, 2 * CHUNK);
    if (th->seq[k] < from || th->seq[k] + len > base + REGION)
      th->seq[k] = from;
    off = th->seq[k];
    th->seq[k] += len;
  }
  else
    pick_range (th, &off, &len);
  r = cache_pread (cache, th->rbuf, len, off);
  oplog_chunks (off / CHUNK, (off + len - 1) / CHUNK,
                "t%u read %" PRIu64 "+%" PRIu32 " -> %d", th->id, off, len, r);
  th->reads++;
  if (r == -EIO) {
    /* Allowed: the cache is full of dirty chunks that cannot be uploaded
     * now and this read needs a buffer.  Never wrong bytes.
     */
    th->read_eio++;
    return;
  }
  if (r != 0) {
    model_fail ("t%u: read %" PRIu64 "+%" PRIu32 " returned %d", th->id,
                off, len, r);
    return;
  }
  if (memcmp (th->rbuf, shadow + off, len) != 0) {
    uint32_t i;
    for (i = 0; th->rbuf[i] == shadow[off + i]; ++i)
      ;
    model_fail_chunk ((off + i) / CHUNK, "t%u: read %" PRIu64 "+%" PRIu32
                " differs from the shadow "
                "at %" PRIu64 " (chunk %" PRIu64 ")%s", th->id, off, len,
                off + i, (off + i) / CHUNK,
                cache_failed (cache) ? " (the cache is failed)" : "");
  }
}

static void *
client_thread (void *arg)
{
  struct thread *th = arg;

  for (unsigned i = 0; i < ops_per_thread; ++i) {
    switch (rnd (th, 20)) {
    case 0: case 1:
      do_flush (th);
      break;
    case 2: case 3: case 4: case 5:
      do_write (th, true);
      break;
    case 6: case 7: case 8: case 9: case 10: case 11:
      do_write (th, false);
      break;
    default:
      do_read (th);
    }
    __atomic_add_fetch (&ops_done, 1, __ATOMIC_RELEASE);
  }
  return NULL;
}

/* ------------------------------------------------------------ controller */

struct controller {
  pthread_t t;
  uint64_t rng;
  bool fence_round;
  unsigned fence_at;                    /* ops done before the fence */
  unsigned faults;
};

static void
msleep (unsigned ms)
{
  usleep (ms * 1000);
}

static uint64_t
crnd (struct controller *ct, uint64_t n)
{
  return next_rand (&ct->rng) % n;
}

/* Fence the cache as the lock code does when the lease may be lost.
 * Sometimes with uploads (or fetches) stalled first, so that writers and
 * readers are waiting inside the cache when it happens, and the stalled
 * requests finish after it.
 */
static void
fence (struct controller *ct)
{
  unsigned how = crnd (ct, 4);

  if (how == 1 || how == 3) {
    objstore_fault_set (os, FAULT_OP_PUT | FAULT_OP_DEL, FAULT_STALL, 0, 0,
                        UINT32_MAX);
    msleep (10 + crnd (ct, 40));
    oplog_chunks (0, NCHUNKS - 1, "ctl: release stalled uploads (%u), then cache_fail",
               objstore_fault_stalled (os));
    objstore_fault_release (os);
    if (crnd (ct, 2))
      msleep (crnd (ct, 3));
  }
  else if (how == 2) {
    objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL, 0, 0, UINT32_MAX);
    msleep (10 + crnd (ct, 40));
    oplog_chunks (0, NCHUNKS - 1, "ctl: cache_fail with %u fetches stalled",
               objstore_fault_stalled (os));
  }
  else
    oplog_chunks (0, NCHUNKS - 1, "ctl: cache_fail");
  cache_fail (cache, "test: fence");
  __atomic_store_n (&fenced, true, __ATOMIC_RELEASE);
  objstore_fault_release (os);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
}

static void *
controller_thread (void *arg)
{
  struct controller *ct = arg;

  while (!__atomic_load_n (&threads_done, __ATOMIC_ACQUIRE)) {
    unsigned ms = 1 + crnd (ct, 20);
    uint32_t n;

    if (ct->fence_round && !__atomic_load_n (&fenced, __ATOMIC_ACQUIRE) &&
        __atomic_load_n (&ops_done, __ATOMIC_ACQUIRE) >= ct->fence_at) {
      fence (ct);
      continue;
    }
    if (__atomic_load_n (&fenced, __ATOMIC_ACQUIRE)) {
      msleep (5);
      continue;
    }
    msleep (crnd (ct, 30));
    ct->faults++;
    switch (crnd (ct, 7)) {
    case 0:
      /* Failed uploads: retried later; flushes may fail meanwhile. */
      n = 1 + crnd (ct, 6);
      oplog_chunks (0, NCHUNKS - 1, "ctl: FAIL the next %" PRIu32 " put/del, %ums", n, ms);
      objstore_fault_set (os, FAULT_OP_PUT | FAULT_OP_DEL, FAULT_FAIL, -EIO,
                          crnd (ct, 3), n);
      msleep (ms);
      break;
    case 1:
      n = 1 + crnd (ct, 4);
      oplog_chunks (0, NCHUNKS - 1, "ctl: STALL the next %" PRIu32 " put/del, %ums", n, ms);
      objstore_fault_set (os, FAULT_OP_PUT | FAULT_OP_DEL, FAULT_STALL, 0,
                          crnd (ct, 3), n);
      msleep (ms);
      objstore_fault_release (os);
      break;
    case 2: case 4:
      /* The PUT lands and its answer is lost: the outcome is unknown. */
      n = 1 + crnd (ct, 4);
      oplog_chunks (0, NCHUNKS - 1, "ctl: LAND_TIMEOUT the next %" PRIu32 " put, %ums", n, ms);
      objstore_fault_set (os, FAULT_OP_PUT, FAULT_LAND_TIMEOUT, 0,
                          crnd (ct, 3), n);
      msleep (ms);
      break;
    case 3:
      n = 1 + crnd (ct, 3);
      oplog_chunks (0, NCHUNKS - 1, "ctl: LAND_TIMEOUT the next %" PRIu32 " del, %ums", n, ms);
      objstore_fault_set (os, FAULT_OP_DEL, FAULT_LAND_TIMEOUT, 0,
                          crnd (ct, 3), n);
      msleep (ms);
      break;
    case 5:
      /* Slow GETs: readers and read-ahead fetches wait for each other. */
      n = 1 + crnd (ct, 4);
      oplog_chunks (0, NCHUNKS - 1, "ctl: STALL the next %" PRIu32 " get, %ums", n, ms);
      objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL, 0, crnd (ct, 3), n);
      msleep (ms);
      objstore_fault_release (os);
      break;
    default:
      ct->faults--;
      break;
    }
    objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
    objstore_fault_release (os);
  }
  objstore_fault_release (os);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  return NULL;
}

/* ---------------------------------------------------------------- rounds */

/* A round that hangs (threads waiting in the cache for something that
 * never comes) fails with the seed and the log, and aborts for a core,
 * rather than waiting for make check's 20-minute timeout.
 */
static bool round_over;                 /* atomic */

static void *
watchdog_thread (void *arg)
{
  unsigned limit = *(unsigned *) arg;

  for (unsigned i = 0; i < limit * 10; ++i) {
    if (__atomic_load_n (&round_over, __ATOMIC_ACQUIRE))
      return NULL;
    msleep (100);
  }
  model_fail ("the round did not end in %u s: threads are stuck in the "
              "cache (a hang; attach a debugger or see the core)", limit);
  fflush (stderr);
  abort ();
}

static void
open_cache (void)
{
  struct cs_volume_params vp = { .size = SIZE, .chunk_size = CHUNK,
                                 .level = 1 };
  struct cache_params cp = {
    .cache_size = WORKERS * (CHUNK + codec_bound (CHUNK)) +
                  (uint64_t) CACHE_CHUNKS * CHUNK,
    .workers = WORKERS,
    .upload_delay = 0.002,
    .readahead = 4,
  };
  struct objstore *inner;

  CHECK_EQ (objstore_dir_open (dir, true, &inner), 0);
  CHECK_EQ (objstore_fault_wrap (inner, &os), 0);
  CHECK_EQ (cs_volume_open (os, &vp, &vol), 0);
  CHECK_EQ (cs_map_load (vol), 0);
  CHECK_EQ (cache_open (vol, &cp, &cache), 0);
  CHECK_EQ (cache_start (cache), 0);
}

static void
run_round (uint64_t *rng)
{
  static struct thread th[NTHREADS];
  struct controller ct = { 0 };
  struct cache_stats st;
  unsigned reads = 0, read_eio = 0, writes = 0, write_err = 0;
  unsigned flushes = 0, flush_ok = 0;
  uint64_t g[NCHUNKS];
  pthread_t watchdog;
  double t0 = now ();
  int r;

  ct.rng = next_rand (rng);
  ct.fence_round = next_rand (rng) % 2 == 0;
  ct.fence_at = ops_per_thread * NTHREADS / 4 +
    next_rand (rng) % (ops_per_thread * NTHREADS / 2 + 1);
  __atomic_store_n (&ops_done, 0, __ATOMIC_RELEASE);
  __atomic_store_n (&fenced, false, __ATOMIC_RELEASE);
  __atomic_store_n (&threads_done, false, __ATOMIC_RELEASE);
  memset (reported, 0, sizeof reported);
  round_failures = 0;
  oplog_chunks (0, NCHUNKS - 1, "round %u%s", round_no, ct.fence_round ? " (fenced)" : "");

  __atomic_store_n (&round_over, false, __ATOMIC_RELEASE);
  pthread_create (&watchdog, NULL, watchdog_thread, &watchdog_limit);
  open_cache ();
  for (unsigned i = 0; i < NTHREADS; ++i) {
    th[i].id = i;
    th[i].rng = next_rand (rng);
    th[i].seq[0] = th[i].seq[1] = 0;
    th[i].reads = th[i].read_eio = th[i].writes = th[i].write_err = 0;
    th[i].flushes = th[i].flush_ok = 0;
    pthread_create (&th[i].t, NULL, client_thread, &th[i]);
  }
  pthread_create (&ct.t, NULL, controller_thread, &ct);
  for (unsigned i = 0; i < NTHREADS; ++i) {
    pthread_join (th[i].t, NULL);
    reads += th[i].reads;
    read_eio += th[i].read_eio;
    writes += th[i].writes;
    write_err += th[i].write_err;
    flushes += th[i].flushes;
    flush_ok += th[i].flush_ok;
  }
  __atomic_store_n (&threads_done, true, __ATOMIC_RELEASE);
  pthread_join (ct.t, NULL);
  cache_get_stats (cache, &st);

  /* Faults are cleared: everything written must reach the store. */
  r = cache_close (cache);
  if (!ct.fence_round && r != 0)
    model_fail ("cache_close with the faults cleared returned %d", r);
  cs_volume_close (vol);
  objstore_close (os);
  __atomic_store_n (&round_over, true, __ATOMIC_RELEASE);
  pthread_join (watchdog, NULL);
  if (ct.fence_round)
    check_store_fenced ();
  else {
    gens_snapshot (g);
    check_store ("cache_close", g, 0, NCHUNKS - 1, true);
  }
  printf ("round %u%s: %u reads (%u EIO), %u writes/zeroes (%u failed), "
          "%u flushes (%u ok), %u faults, %" PRIu64 " uploads (%" PRIu64
          " failed), pressure wait %.2fs, %.2fs\n", round_no,
          ct.fence_round ? " fenced" : "", reads, read_eio, writes,
          write_err, flushes, flush_ok, ct.faults, st.uploads,
          st.upload_failures, st.pressure_wait, now () - t0);
  fflush (stdout);
}

static unsigned
env_unsigned (const char *name, unsigned def)
{
  const char *s = getenv (name);

  return s && *s ? (unsigned) strtoul (s, NULL, 0) : def;
}

static void
run_seed (uint64_t s, unsigned rounds)
{
  uint64_t rng = s;

  seed = s;
  printf ("seed=%" PRIu64 " (replay: S3CHUNK_SEED=%" PRIu64 ")\n", s, s);
  fflush (stdout);
  /* Each seed starts from an empty volume. */
  unit_rmdir (dir);
  dir = unit_tmpdir ();
  memset (shadow, 0, SIZE);
  for (uint64_t k = 0; k < NCHUNKS; ++k)
    hist_reset (k);
  open_cache ();                        /* creates the volume */
  CHECK_EQ (cache_close (cache), 0);
  cs_volume_close (vol);
  objstore_close (os);
  CHECK_EQ (objstore_dir_open (dir, false, &check_os), 0);
  CHECK_EQ (cs_volume_open (check_os,
                            &(struct cs_volume_params) { .level = -1,
                                                         .readonly = true },
                            &check_vol), 0);
  for (round_no = 0; round_no < rounds; ++round_no)
    run_round (&rng);
  cs_volume_close (check_vol);
  objstore_close (check_os);
}

int
main (void)
{
  const char *s = getenv ("S3CHUNK_SEED");
  unsigned rounds;

  cs_log_set (model_log);
  /* Under valgrind everything is 20-50 times slower. */
  ops_per_thread = env_unsigned ("S3CHUNK_MODEL_OPS",
                                 getenv ("S3CHUNK_VALGRIND") ? 60 : 300);
  /* A round takes about half a second (30 s under valgrind); the
   * upload backoff after failures can add up to RETRY_MAX (30 s).
   */
  watchdog_limit = env_unsigned ("S3CHUNK_MODEL_WATCHDOG",
                                 getenv ("S3CHUNK_VALGRIND") ? 600 : 120);
  rounds = env_unsigned ("S3CHUNK_MODEL_ROUNDS",
                         getenv ("S3CHUNK_VALGRIND") ? 2 : 3);
  for (unsigned t = 0; t < NTHREADS; ++t)
    pthread_mutex_init (&region_lock[t], NULL);
  check_ctx = codec_ctx_new ();
  CHECK (check_ctx != NULL);
  dir = unit_tmpdir ();

  if (s && strcmp (s, "random") == 0) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    run_seed ((uint64_t) ts.tv_sec * 1000003 ^ ts.tv_nsec ^ getpid (),
              rounds);
  }
  else if (s && *s)
    run_seed (strtoull (s, NULL, 0), rounds);
  else
    for (size_t i = 0; i < sizeof default_seeds / sizeof *default_seeds; ++i)
      run_seed (default_seeds[i], rounds);

  CHECK_EQ (failures, 0);
  for (uint64_t k = 0; k < NCHUNKS; ++k)
    free (chunks[k].hist);
  cs_buf_free (&check_scratch);
  codec_ctx_free (check_ctx);
  unit_rmdir (dir);
  return unit_done ("test-cache-model");
}
