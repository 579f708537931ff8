/* s3chunk: the write-back chunk cache.
 *
 * One mutex (c->lock) protects every field below; it is never held across
 * a store request (rule 3 of ARCHITECTURE.md).  Memory copies of chunk data
 * happen under it; they are short next to a network round trip.
 *
 * Entry states.  An entry describes one chunk that is in memory or being
 * moved; a chunk with no entry is whatever the store holds (zeroes when the
 * allocation map says it has no object).
 *
 *   LOADING    !valid, loading.  One thread fetches the object into
 *              e->loadbuf; everyone else who needs the chunk pins the
 *              entry and waits on c->cond.  If the fetch fails, load_err is
 *              set and the waiters return it; the next access starts a new
 *              fetch.  A fetch may be queued (fetch_queued, on the fetch
 *              list, pinned by the queue) for a worker: read-ahead, and the
 *              other chunks of a read that spans several.  A reader that
 *              needs a queued chunk takes it off the queue and fetches it
 *              itself rather than wait behind uploads, unless every read
 *              slot is busy: then it leaves it queued and waits until a
 *              worker takes it or a slot comes free.
 *   CLEAN      valid, version == persisted, !uploading.  On the LRU list;
 *              the only state that may be evicted (and only with pins 0).
 *   DIRTY      valid, version > persisted, !uploading.  On the dirty list,
 *              waiting for a worker.
 *   UPLOADING  valid, version > persisted, uploading.  Still on the dirty
 *              list.  The worker copied the data (or noted "zero") under
 *              the lock and stores that copy; writes keep landing in
 *              e->data and bump e->version, so after the upload the entry
 *              is CLEAN only if nothing was written meanwhile.
 *
 *   "valid" content is e->data (chunk_size bytes) or, when e->zero is set,
 *   all zeroes with e->data == NULL.  A CLEAN zero entry has no reason to
 *   stay (the map says there is no object) and is dropped.
 *
 * Versions (the flush barrier, rule 1).  Every write, zero or trim of a
 * chunk bumps e->version; an upload carries the version it copied and, on
 * success, raises e->persisted to it.  A flush records (entry, version) for
 * every entry with version > persisted, pins them, and waits until each has
 * persisted >= the recorded version.  An upload already in flight when the
 * flush began counts only if it carried that version.  An upload of the
 * entry that fails after the flush began makes the flush return -EIO; the
 * entry stays DIRTY and is retried with backoff.
 *
 * At most one upload of a chunk is in flight (rule 2): a worker only picks
 * an entry that is not uploading.
 *
 * Memory.  Chunk buffers are recycled through a free list (c->pool) and
 * never given back to the allocator until close, so steady state makes no
 * malloc, page fault or page zeroing, and the process holds what the cache
 * counts.  c->mem counts chunk buffers (pooled, entries' data and buffers being
 * loaded).  A thread that needs a new buffer evicts CLEAN entries or waits
 * until uploads make some CLEAN: writers wait instead of growing memory.
 * Workers own one private copy buffer and one encode buffer each.
 *
 * Readers fetch through read slots: a fixed number of (codec context,
 * object buffer, chunk buffer) triples made at open and counted inside
 * cache-size, so memory does not grow with the number of client threads.
 * A reader that finds no chunk buffer without waiting for uploads (the
 * cache is full of dirty data, e.g. while the store refuses writes) reads
 * the chunk into its slot's own buffer and copies out, creating no entry:
 * reads never wait behind uploads and keep working while writes fail.
 *
 * Read-ahead.  A small table (c->streams) follows up to RA_STREAMS
 * sequential readers independently, like the kernel's per-file state: each
 * stream has the furthest chunk it read (pos), how far its fetches are
 * queued (until) and a window.  A read continues the stream whose range
 * it falls in (see ra_find); otherwise it starts a new stream in place of
 * the least recently read one, whose queued fetches that no worker has
 * started are cancelled.  A stream becomes sequential when a read moves it
 * on to a later chunk: its window starts at RA_INIT chunks and grows by
 * every chunk it moves, so it doubles with each window consumed, up to
 * ra_cap (readahead=, two per worker, half the chunk memory shared among
 * sequential streams); it halves when no buffer could be had.  Random
 * reads never continue a stream, so they push the sequential ones out of
 * the table and get no read-ahead.  Read-ahead queues fetches for chunks
 * inside the volume that the map says are stored, with buffers from the
 * pool or from evicting CLEAN entries, never by waiting (queue_fetch).
 * Queued fetches go first in a worker, but while uploads are due at most
 * half of the workers fetch.
 *
 * Failed state (rule 6).  cache_fail makes every later write, zero and
 * flush fail and stops workers from starting uploads; reads still work.
 * An upload refused or aborted by the lock's write fence (-ENOLCK) enters
 * the failed state at once.  No entry is made valid for a write once the
 * cache has failed (a recycled buffer would hold another chunk's bytes),
 * and a flush or FUA write that finds the cache failed returns -EIO even
 * if its own chunks were persisted: the lock may be lost, so nothing is
 * promised any more.
 *
 * What the map says (rule 8) is kept by the chunk store: a chunk is
 * "maybe present" from the moment its PUT is sent until a delete of it is
 * confirmed, so a zero or trim after an upload with an unknown outcome
 * always sends the delete.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "cache.h"
#include "cleanup.h"
#include "log.h"

/* Most keys DeleteObjects takes in one request. */
#define DELETE_BATCH 1000

/* Backoff between retries of a failed upload, seconds. */
#define RETRY_MIN 0.5
#define RETRY_MAX 30.0

/* cache_close retries the final flush this many times. */
#define CLOSE_FLUSH_TRIES 3

/* Read-ahead streams tracked at once (see "Read-ahead" above). */
#define RA_STREAMS 16

/* The window of a stream just found sequential, in chunks. */
#define RA_INIT 4

struct ra_stream {
  uint64_t pos;                 /* the furthest chunk the stream read */
  uint64_t until;               /* fetches queued up to here, >= pos */
  unsigned window;              /* chunks kept queued beyond pos; 0: not
                                   (yet) sequential */
  uint64_t age;                 /* c->ra_clock when last read */
  bool live;
};

struct entry {
  uint64_t idx;
  uint8_t *data;                /* chunk_size bytes, or NULL */
  bool valid, zero, loading, uploading, urgent;
  bool on_lru, on_dirty, fetch_queued;
  bool prefetched;              /* the fetch was queued, not asked for */
  uint8_t *loadbuf;             /* LOADING: the counted buffer being filled */
  int load_err;
  unsigned pins;
  unsigned fails;               /* failed uploads since the last success */
  uint64_t written;             /* bytes written since the last upload
                                   began: a chunk written full goes now */
  uint64_t fail_gen;            /* bumped on every failed upload */
  uint64_t version, persisted;
  double dirty_since, retry_at;
  struct entry *hnext;
  TAILQ_ENTRY (entry) lru;
  TAILQ_ENTRY (entry) dirty;
  TAILQ_ENTRY (entry) fetch;
};

TAILQ_HEAD (entry_list, entry);

struct worker {
  struct cache *c;
  pthread_t thread;
  bool started;
  uint8_t *copy;                /* private snapshot of the chunk */
  struct cs_buf enc;            /* encoded object */
  struct codec_ctx *ctx;
};

struct cache {
  struct cs_volume *v;
  struct cache_params p;
  uint32_t chunk_size;

  pthread_mutex_t lock;
  pthread_cond_t cond;          /* any entry changed state */
  pthread_cond_t work;          /* workers: something may be ready */

  struct entry **table;
  size_t buckets, nentries;
  struct entry_list lru_list, dirty_list, fetch_list;
  struct ra_stream streams[RA_STREAMS];
  uint64_t ra_clock;            /* bumped on every read: stream LRU age */
  unsigned fetching;            /* workers running a queued fetch now */
  uint64_t mem, limit, dirty_bytes;
  uint8_t *pool;                /* free chunk buffers, linked through
                                   their first bytes */
  unsigned flushers;            /* flushes waiting: upload without delay */
  unsigned mem_waiters;         /* threads waiting for a buffer */
  uint64_t upload_ok;           /* uploads and deletes that succeeded */
  bool stop, failed;

  struct worker *workers;
  unsigned nworkers;

  struct read_slot *slots;      /* all of them, nslots */
  struct read_slot *free_slots; /* linked through next */
  unsigned nslots;
  struct cache_stats st;
};

/* A reader's private fetch state (see the top comment). */
struct read_slot {
  struct codec_ctx *ctx;
  struct cs_buf scratch;        /* the object, codec_bound bytes */
  uint8_t *plain;               /* chunk_size bytes, for uncached reads */
  struct read_slot *next;
};

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Take a read slot, waiting (lock dropped) for another reader's fetch to
 * end if none is free.
 */
static struct read_slot *
slot_get (struct cache *c)
{
  struct read_slot *s;

  while ((s = c->free_slots) == NULL)
    pthread_cond_wait (&c->cond, &c->lock);
  c->free_slots = s->next;
  return s;
}

static void
slot_put (struct cache *c, struct read_slot *s)
{
  s->next = c->free_slots;
  c->free_slots = s;
  pthread_cond_broadcast (&c->cond);
}

/* --------------------------------------------------------------- checks */

static struct entry *lookup (struct cache *c, uint64_t idx);

#ifdef CACHE_DEBUG_CHECKS
static void
check_invariants (struct cache *c)
{
  uint64_t mem = 0, dirty = 0;
  size_t n = 0, i;
  struct entry *e;

  for (i = 0; i < c->buckets; ++i)
    for (e = c->table[i]; e; e = e->hnext) {
      n++;
      if (e->data)
        mem += c->chunk_size;
      assert (!(e->zero && e->data));
      assert (!e->loading || !e->valid);
      assert (!e->uploading || e->version > e->persisted);
      assert (e->on_dirty == (e->version > e->persisted));
      assert (!e->on_dirty || e->valid);
      assert (e->on_lru == (e->valid && !e->on_dirty && !e->uploading));
      if (e->on_dirty && e->data)
        dirty += c->chunk_size;
    }
  assert (n == c->nentries);
  assert (mem <= c->mem);       /* c->mem also counts buffers being loaded */
  assert (dirty == c->dirty_bytes);
  TAILQ_FOREACH (e, &c->fetch_list, fetch) {
    assert (e->fetch_queued && e->loading && !e->valid && e->loadbuf);
    assert (e->pins > 0 && !e->on_dirty && lookup (c, e->idx) == e);
  }
  assert (c->fetching <= c->nworkers);
  for (i = 0; i < RA_STREAMS; ++i) {
    const struct ra_stream *s = &c->streams[i];
    if (!s->live)
      continue;
    assert (s->pos < cs_volume_nchunks (c->v));
    assert (s->until < cs_volume_nchunks (c->v));
    assert (s->until >= s->pos);
    assert (s->window <= c->p.readahead);
  }
}
#define CHECK(c) check_invariants (c)
#else
#define CHECK(c) do { } while (0)
#endif

static void free_buffer (struct cache *c, uint8_t *buf);
static void wake_mem_waiters (struct cache *c);

/* ---------------------------------------------------------------- table */

static size_t
hash (struct cache *c, uint64_t idx)
{
  return (idx * UINT64_C (0x9E3779B97F4A7C15)) >> 20 & (c->buckets - 1);
}

static struct entry *
lookup (struct cache *c, uint64_t idx)
{
  struct entry *e;

  for (e = c->table[hash (c, idx)]; e; e = e->hnext)
    if (e->idx == idx)
      return e;
  return NULL;
}

static void
table_grow (struct cache *c)
{
  size_t nb = c->buckets * 2, i;
  struct entry **t = calloc (nb, sizeof *t), *e, *next;

  if (t == NULL)
    return;                     /* longer chains: slower, still correct */
  for (i = 0; i < c->buckets; ++i)
    for (e = c->table[i]; e; e = next) {
      next = e->hnext;
      size_t h = (e->idx * UINT64_C (0x9E3779B97F4A7C15)) >> 20 & (nb - 1);
      e->hnext = t[h];
      t[h] = e;
    }
  free (c->table);
  c->table = t;
  c->buckets = nb;
}

static struct entry *
entry_new (struct cache *c, uint64_t idx)
{
  struct entry *e = calloc (1, sizeof *e);
  size_t h;

  if (e == NULL)
    return NULL;
  if (c->nentries >= c->buckets)
    table_grow (c);
  e->idx = idx;
  h = hash (c, idx);
  e->hnext = c->table[h];
  c->table[h] = e;
  c->nentries++;
  return e;
}

static void
entry_free (struct cache *c, struct entry *e)
{
  struct entry **pp;

  assert (e->pins == 0 && !e->loading && !e->uploading && !e->on_dirty);
  for (pp = &c->table[hash (c, e->idx)]; *pp != e; pp = &(*pp)->hnext)
    ;
  *pp = e->hnext;
  c->nentries--;
  if (e->on_lru)
    TAILQ_REMOVE (&c->lru_list, e, lru);
  free_buffer (c, e->data);
  free (e);
}

/* Threads wait in alloc_buffer for a buffer to come free or an entry to
 * become evictable: tell them whenever either happens, or they may wait
 * for a wake-up that no upload or fetch will ever send.
 */
static void
wake_mem_waiters (struct cache *c)
{
  if (c->mem_waiters > 0)
    pthread_cond_broadcast (&c->cond);
}

/* Drop a pin; an entry nobody needs that holds nothing is freed. */
static void
unpin (struct cache *c, struct entry *e)
{
  assert (e->pins > 0);
  e->pins--;
  if (e->pins == 0 && !e->loading && !e->uploading && !e->on_dirty &&
      (!e->valid || (e->zero && !e->data)))
    entry_free (c, e);
  else if (e->pins == 0 && e->on_lru)
    wake_mem_waiters (c);
}

/* ---------------------------------------------------------- state moves */

/* After any change to e: put it on the right list. */
static void
settle (struct cache *c, struct entry *e)
{
  bool dirty = e->version > e->persisted;
  bool lru = e->valid && !dirty && !e->uploading;

  if (dirty && !e->on_dirty) {
    TAILQ_INSERT_TAIL (&c->dirty_list, e, dirty);
    e->on_dirty = true;
    e->dirty_since = now ();
    if (e->data)
      c->dirty_bytes += c->chunk_size;
  }
  else if (!dirty && e->on_dirty) {
    TAILQ_REMOVE (&c->dirty_list, e, dirty);
    e->on_dirty = false;
    e->urgent = false;
    if (e->data)
      c->dirty_bytes -= c->chunk_size;
  }
  if (lru && !e->on_lru) {
    TAILQ_INSERT_TAIL (&c->lru_list, e, lru);
    e->on_lru = true;
    if (e->pins == 0)
      wake_mem_waiters (c);
  }
  else if (!lru && e->on_lru) {
    TAILQ_REMOVE (&c->lru_list, e, lru);
    e->on_lru = false;
  }
}

/* Set or clear e->data, keeping dirty_bytes in step. */
static void
set_data (struct cache *c, struct entry *e, uint8_t *data)
{
  if (e->on_dirty && data && !e->data)
    c->dirty_bytes += c->chunk_size;
  else if (e->on_dirty && !data && e->data)
    c->dirty_bytes -= c->chunk_size;
  if (e->data && e->data != data)
    free_buffer (c, e->data);
  e->data = data;
}

/* A write, zero or trim changed e: bump its version and queue it. */
static void
mark_dirty (struct cache *c, struct entry *e, bool urgent)
{
  bool was_dirty = e->on_dirty;

  e->version++;
  settle (c, e);
  /* Workers sleep until the oldest dirty entry is due: wake one only if
   * this entry must go now, or if it is the first (nothing was due).
   */
  if (urgent && !e->urgent) {
    e->urgent = true;
    pthread_cond_signal (&c->work);
  }
  else if (!was_dirty && TAILQ_FIRST (&c->dirty_list) == e)
    pthread_cond_signal (&c->work);
}

/* Give a chunk buffer back to the pool (it stays counted in c->mem). */
static void
free_buffer (struct cache *c, uint8_t *buf)
{
  if (buf) {
    memcpy (buf, &c->pool, sizeof c->pool);
    c->pool = buf;
    wake_mem_waiters (c);
  }
}

/* A buffer from the pool, or a new one if the limit allows; NULL if
 * neither.  The content is whatever was there before.
 */
static uint8_t *
take_buffer (struct cache *c)
{
  uint8_t *buf = c->pool;

  if (buf) {
    memcpy (&c->pool, buf, sizeof c->pool);
    return buf;
  }
  if (c->mem + c->chunk_size > c->limit)
    return NULL;
  buf = malloc (c->chunk_size);
  if (buf)
    c->mem += c->chunk_size;
  return buf;
}

/* The least recently used CLEAN entry nobody holds, or NULL. */
static struct entry *
evictable (struct cache *c)
{
  struct entry *e;

  TAILQ_FOREACH (e, &c->lru_list, lru)
    if (e->pins == 0)
      return e;
  return NULL;
}

/* Get a chunk buffer (not zeroed), counted in c->mem.  Evicts CLEAN
 * entries; if none can go, waits for uploads (back-pressure).  May drop
 * the lock: when *waited is set on return the caller must look its entry
 * up again.
 *
 * A waiter gives up with -EIO when an upload fails (the store's own retry
 * budget is spent) and none has succeeded since it began to wait: the
 * store is down, and like a flush the request fails instead of hanging
 * until it is back.  Data already written stays dirty and is retried.
 */
static int
alloc_buffer (struct cache *c, uint8_t **out, bool *waited, bool nowait)
{
  struct entry *e;
  double t0 = 0;
  uint64_t ok0 = 0, fail0 = 0;

  *waited = false;
  while ((*out = take_buffer (c)) == NULL) {
    if (c->mem + c->chunk_size <= c->limit)
      return -ENOMEM;                   /* malloc failed */
    if ((e = evictable (c)) != NULL) {
      entry_free (c, e);
      continue;
    }
    if (nowait)
      return -EAGAIN;
    if (c->failed)
      return -EIO;
    if (!*waited) {
      t0 = now ();
      *waited = true;
      ok0 = c->upload_ok;
      fail0 = c->st.upload_failures;
    }
    else if (c->st.upload_failures != fail0 && c->upload_ok == ok0) {
      c->st.pressure_wait += now () - t0;
      cs_error ("the cache is full of dirty chunks that cannot be uploaded "
                "(see the errors above): this request fails; the data "
                "written before it stays in memory and is retried until "
                "the store is back");
      return -EIO;
    }
    c->mem_waiters++;
    pthread_cond_broadcast (&c->work);
    pthread_cond_wait (&c->cond, &c->lock);
    c->mem_waiters--;
  }
  if (*waited)
    c->st.pressure_wait += now () - t0;
  return 0;
}

/* Bytes of chunk idx that are inside the volume. */
static uint32_t
chunk_bytes (struct cache *c, uint64_t idx)
{
  uint64_t start = idx << c->v->chunk_shift;
  uint64_t size = cs_volume_size (c->v);       /* grows while we run */

  if (size - start < c->chunk_size)
    return size - start;
  return c->chunk_size;
}

/* Fetch chunk e (LOADING, its buffer in e->loadbuf, pinned by us) from
 * the store.  Called with the lock held; drops it for the request.
 */
static int
do_load (struct cache *c, struct entry *e, struct codec_ctx *ctx,
         struct cs_buf *scratch)
{
  uint8_t *buf = e->loadbuf;
  int r;

  pthread_mutex_unlock (&c->lock);
  r = cs_chunk_read (c->v, ctx, e->idx, buf, scratch);
  pthread_mutex_lock (&c->lock);
  e->loading = false;
  e->loadbuf = NULL;
  c->st.loads++;
  if (r == 0) {
    e->valid = true;
    if (cs_is_zero (buf, c->chunk_size)) {
      e->zero = true;
      free_buffer (c, buf);
    }
    else
      set_data (c, e, buf);
    settle (c, e);
  }
  else {
    e->load_err = r;
    free_buffer (c, buf);
  }
  pthread_cond_broadcast (&c->cond);
  return r;
}

/* Fetch in this thread, through a read slot. */
static int
load_here (struct cache *c, struct entry *e)
{
  struct read_slot *s = slot_get (c);
  int r;

  r = do_load (c, e, s->ctx, &s->scratch);
  slot_put (c, s);
  return r;
}

/* A read of n bytes at off of chunk idx, which has no entry, when no
 * buffer can be had without waiting for uploads: fetch it into a slot's
 * own buffer and copy out, leaving the cache as it is.  Called with the
 * lock held; drops it for the request.
 */
static int
read_uncached (struct cache *c, uint64_t idx, uint32_t off, uint32_t n,
               uint8_t *out)
{
  struct read_slot *s = slot_get (c);
  int r;

  c->st.misses++;
  pthread_mutex_unlock (&c->lock);
  r = cs_chunk_read (c->v, s->ctx, idx, s->plain, &s->scratch);
  if (r == 0)
    memcpy (out, s->plain + off, n);
  pthread_mutex_lock (&c->lock);
  c->st.loads++;
  slot_put (c, s);
  return r;
}

static void
begin_load (struct entry *e, uint8_t *buf)
{
  e->prefetched = false;
  e->loading = true;
  e->load_err = 0;
  e->loadbuf = buf;
}

/* What queue_fetch did. */
enum queued { Q_QUEUED, Q_SKIPPED, Q_NOBUF };

/* Queue a fetch of chunk idx for a worker, if it is inside the volume,
 * stored (a hole costs no GET), not cached and not being fetched.  The
 * buffer comes from the pool or from evicting a CLEAN entry, never by
 * waiting: read-ahead never blocks a reader or a writer and never evicts
 * dirty or in-flight data.  Q_NOBUF when no buffer could be had.
 */
static enum queued
queue_fetch (struct cache *c, uint64_t idx)
{
  struct entry *e;
  uint8_t *buf;

  if (idx >= cs_volume_nchunks (c->v) || !cs_map_test (c->v, idx))
    return Q_SKIPPED;
  e = lookup (c, idx);
  if (e && (e->valid || e->loading))
    return Q_SKIPPED;
  buf = take_buffer (c);
  if (buf == NULL && (e = evictable (c)) != NULL) {
    entry_free (c, e);
    buf = take_buffer (c);
  }
  if (buf == NULL)
    return Q_NOBUF;
  e = lookup (c, idx);
  if (e == NULL && (e = entry_new (c, idx)) == NULL) {
    free_buffer (c, buf);
    return Q_NOBUF;
  }
  begin_load (e, buf);
  e->pins++;                            /* the queue's */
  e->fetch_queued = true;
  e->prefetched = true;
  TAILQ_INSERT_TAIL (&c->fetch_list, e, fetch);
  pthread_cond_signal (&c->work);
  return Q_QUEUED;
}

/* Take a queued fetch off the queue; the queue's pin becomes the caller's. */
static void
dequeue_fetch (struct cache *c, struct entry *e)
{
  TAILQ_REMOVE (&c->fetch_list, e, fetch);
  e->fetch_queued = false;
}

/* Forget the queued (not started) read-ahead of chunks from..to: a stream
 * that was dropped no longer needs them, and their buffers go back.
 */
static void
cancel_fetches (struct cache *c, uint64_t from, uint64_t to)
{
  uint64_t i;

  for (i = from; i <= to && i < cs_volume_nchunks (c->v); ++i) {
    struct entry *e = lookup (c, i);

    if (e == NULL || !e->fetch_queued || !e->prefetched)
      continue;
    dequeue_fetch (c, e);
    e->loading = false;
    free_buffer (c, e->loadbuf);
    e->loadbuf = NULL;
    e->load_err = 0;
    c->st.ra_cancelled++;
    pthread_cond_broadcast (&c->cond);  /* a reader may wait for it */
    unpin (c, e);
  }
}

/* The largest window one stream may have now: the user's readahead=, two
 * chunks per worker (more could not be in flight at once and would only
 * wait in memory), and half of the cache's chunk memory shared among the
 * sequential streams, so read-ahead leaves room for writes and for the
 * chunks being read.
 */
static unsigned
ra_cap (struct cache *c)
{
  uint64_t cap = c->p.readahead, mem;
  unsigned i, seq = 0;

  for (i = 0; i < RA_STREAMS; ++i)
    seq += c->streams[i].live && c->streams[i].window > 0;
  if (cap > 2ull * c->nworkers)
    cap = 2ull * c->nworkers;
  mem = (c->limit >> c->v->chunk_shift) / 2 / (seq ? seq : 1);
  if (cap > mem)
    cap = mem;
  return cap > 0 || c->p.readahead == 0 ? cap : 1;
}

/* The stream a read of chunks first..last continues, or NULL.  A stream
 * that is not yet sequential is continued by a read of its last chunk or
 * the next one; a sequential one by a read anywhere from window chunks
 * behind its position (requests of one reader that arrive out of order)
 * up to one past what is queued (a reader that skips ahead inside the
 * window).
 */
static struct ra_stream *
ra_find (struct cache *c, uint64_t first)
{
  unsigned i;

  for (i = 0; i < RA_STREAMS; ++i) {
    struct ra_stream *s = &c->streams[i];
    uint64_t lo, hi;

    if (!s->live)
      continue;
    lo = s->pos > s->window ? s->pos - s->window : 0;
    hi = (s->until > s->pos ? s->until : s->pos) + 1;
    if (first >= lo && first <= hi)
      return s;
  }
  return NULL;
}

/* Drop a stream, and the read-ahead it queued that has not started. */
static void
ra_drop (struct cache *c, struct ra_stream *s)
{
  if (s->until > s->pos)
    cancel_fetches (c, s->pos + 1, s->until);
  s->live = false;
}

/* A new stream at chunk last, in a free slot or the least recently read. */
static void
ra_new (struct cache *c, uint64_t last)
{
  struct ra_stream *s = NULL;
  unsigned i;

  for (i = 0; i < RA_STREAMS; ++i) {
    struct ra_stream *t = &c->streams[i];
    if (!t->live) {
      s = t;
      break;
    }
    if (s == NULL || t->age < s->age)
      s = t;
  }
  if (s->live)
    ra_drop (c, s);
  s->live = true;
  s->pos = s->until = last;
  s->window = 0;
  s->age = c->ra_clock;
}

/* Streams that now overlap s (two starts of one reader whose first
 * requests arrived out of order) become s.
 */
static void
ra_merge (struct cache *c, struct ra_stream *s)
{
  uint64_t lo = s->pos > s->window ? s->pos - s->window : 0;
  uint64_t hi = s->until + 1;
  unsigned i;

  for (i = 0; i < RA_STREAMS; ++i) {
    struct ra_stream *t = &c->streams[i];

    if (t == s || !t->live || t->pos < lo || t->pos > hi)
      continue;
    if (t->window > s->window)
      s->window = t->window;
    if (t->pos > s->pos)
      s->pos = t->pos;
    if (t->until > s->until)
      s->until = t->until;
    t->live = false;
  }
}

/* Before a read of chunks first..last: fetch the others in parallel, and
 * keep each sequential stream's window of chunks queued ahead of it.
 */
static void
prefetch (struct cache *c, uint64_t first, uint64_t last)
{
  struct ra_stream *s;
  uint64_t i, to;
  unsigned cap;

  for (i = first + 1; i <= last; ++i)
    queue_fetch (c, i);
  if (c->p.readahead == 0)
    return;
  c->ra_clock++;
  s = ra_find (c, first);
  if (s == NULL) {
    ra_new (c, last);
    return;
  }
  s->age = c->ra_clock;
  if (last <= s->pos)
    return;                     /* behind or at its position: no news */
  /* The stream moved on: sequential (again), and the window grows by as
   * much as it moved, so it doubles each time the reader consumes a whole
   * window, up to the cap.
   */
  cap = ra_cap (c);
  if (s->window == 0)
    s->window = RA_INIT;
  else
    s->window += last - s->pos;
  if (s->window > cap)
    s->window = cap;
  s->pos = last;
  if (s->until < s->pos)
    s->until = s->pos;
  ra_merge (c, s);
  to = s->pos + s->window;
  if (to >= cs_volume_nchunks (c->v))
    to = cs_volume_nchunks (c->v) - 1;
  for (i = s->until + 1; i <= to; ++i) {
    enum queued q = queue_fetch (c, i);

    if (q == Q_NOBUF) {
      /* The cache is full of data that cannot be evicted: ask less. */
      s->window = s->window / 2 > 0 ? s->window / 2 : 1;
      break;
    }
    if (q == Q_QUEUED)
      c->st.readahead++;
    s->until = i;
  }
}

/* Make chunk idx present and valid in the cache, for a read or a write of
 * [off, off+len) of it.  need_data: the caller will modify bytes, so a zero
 * entry gets a buffer.  On success returns the entry pinned.  *entry is NULL
 * (and 0 returned) only for a read of a chunk the map says has no object.
 */
static int
get_entry (struct cache *c, uint64_t idx, bool for_write, bool need_data,
           bool whole, struct entry **entry)
{
  uint8_t *buf = NULL;
  struct entry *e;
  bool waited;
  int r;

 again:
  /* No write makes an entry valid, or changes one, once the cache has
   * failed; every path below that drops the lock comes back here.
   */
  if (for_write && c->failed) {
    free_buffer (c, buf);
    return -EIO;
  }
  e = lookup (c, idx);
  if (e && e->fetch_queued && c->free_slots == NULL) {
    /* Queued for a worker, and every read slot is busy: taking it off
     * the queue now would leave it to wait for a slot while a worker
     * might be free to fetch it.  Wait until a worker takes it or a slot
     * comes free, whichever is first.
     */
    double t0 = for_write ? 0 : now ();

    if (!for_write)
      c->st.read_waits++;       /* counted as it begins (tests look) */
    e->pins++;
    while (e->fetch_queued && c->free_slots == NULL)
      pthread_cond_wait (&c->cond, &c->lock);
    unpin (c, e);
    if (!for_write)
      c->st.read_wait += now () - t0;
    goto again;
  }
  if (e && e->fetch_queued) {
    /* Queued for a worker: fetch it now rather than wait in line. */
    dequeue_fetch (c, e);
    if (!for_write)
      c->st.misses++;
    r = load_here (c, e);
    unpin (c, e);
    if (r < 0) {
      free_buffer (c, buf);
      return r;
    }
    goto again;
  }
  if (e && e->loading) {
    bool prefetched = e->prefetched;
    double t0 = for_write ? 0 : now ();

    if (!for_write)
      c->st.read_waits++;
    e->pins++;
    while (e->loading)
      pthread_cond_wait (&c->cond, &c->lock);
    if (!for_write)
      c->st.read_wait += now () - t0;
    /* A failed read-ahead was nobody's request: fetch it again ourselves
     * and report only what our own request gets.
     */
    r = e->valid || prefetched ? 0 : e->load_err;
    unpin (c, e);
    if (r < 0) {
      free_buffer (c, buf);
      return r;
    }
    goto again;
  }
  if (e && e->valid && !(need_data && e->zero)) {
    free_buffer (c, buf);
    if (!for_write) {
      c->st.hits++;
      if (e->on_lru) {              /* most recently used goes last */
        TAILQ_REMOVE (&c->lru_list, e, lru);
        TAILQ_INSERT_TAIL (&c->lru_list, e, lru);
      }
    }
    e->pins++;
    *entry = e;
    return 0;
  }
  if (!for_write && !e && !cs_map_test (c->v, idx)) {
    c->st.zero_reads++;
    free_buffer (c, buf);
    *entry = NULL;
    return 0;
  }

  /* From here we need a buffer: the chunk's content, or space to load it.
   * A reader never waits for uploads to make room: -EAGAIN tells it to
   * read around the cache (read_uncached).
   */
  if (buf == NULL) {
    r = alloc_buffer (c, &buf, &waited, !for_write);
    if (r == -EAGAIN && e == NULL) {
      *entry = NULL;
      return -EAGAIN;
    }
    if (r == -EAGAIN)                 /* an entry to load: wait after all */
      r = alloc_buffer (c, &buf, &waited, false);
    if (r < 0)
      return r;
    if (waited)
      goto again;
  }
  if (e == NULL) {
    e = entry_new (c, idx);
    if (e == NULL) {
      free_buffer (c, buf);
      return -ENOMEM;
    }
  }
  e->pins++;
  if (e->valid) {                       /* a zero entry about to be written */
    assert (e->zero && need_data);
    memset (buf, 0, c->chunk_size);
    e->zero = false;
    set_data (c, e, buf);
  }
  else if (whole || !cs_map_test (c->v, idx)) {
    /* Overwritten entirely, or never stored: no need to read it.  Bytes
     * a whole write leaves are beyond the end of the volume: zero.
     */
    if (!whole || chunk_bytes (c, idx) < c->chunk_size)
      memset (buf, 0, c->chunk_size);
    e->valid = true;
    set_data (c, e, buf);
    settle (c, e);
  }
  else {
    if (!for_write)
      c->st.misses++;
    begin_load (e, buf);
    r = load_here (c, e);
    if (r < 0) {
      unpin (c, e);
      return r;
    }
    if (need_data && e->zero) {
      unpin (c, e);
      buf = NULL;
      goto again;
    }
  }
  *entry = e;
  return 0;
}

/* ---------------------------------------------------------------- waits */

struct target {
  struct entry *e;
  uint64_t version, fail_gen;
};

/* Wait until every target is persisted at its version.  Called and
 * returns with the lock held; unpins the targets.
 */
static int
wait_targets (struct cache *c, struct target *t, size_t n)
{
  size_t i, done;
  int r = 0;

  if (n == 0)
    return 0;
  c->flushers++;
  pthread_cond_broadcast (&c->work);
  for (;;) {
    /* Failed first: once the lock may be lost nothing is promised, even
     * for chunks whose upload ended before the fence.
     */
    if (c->failed) {
      r = -EIO;
      break;
    }
    done = 0;
    for (i = 0; i < n; ++i) {
      if (t[i].e->persisted >= t[i].version)
        done++;
      else if (t[i].e->fail_gen != t[i].fail_gen)
        r = -EIO;
    }
    if (done == n || r < 0)
      break;
    pthread_cond_wait (&c->cond, &c->lock);
  }
  c->flushers--;
  for (i = 0; i < n; ++i)
    unpin (c, t[i].e);
  return r;
}

static void
add_target (struct entry *e, struct target *t, size_t *n)
{
  e->pins++;
  e->urgent = true;
  e->retry_at = 0;                    /* a flush retries failures at once */
  t[*n].e = e;
  t[*n].version = e->version;
  t[*n].fail_gen = e->fail_gen;
  (*n)++;
}

int
cache_flush (struct cache *c)
{
  CLEANUP_FREE struct target *t = NULL;
  struct entry *e;
  size_t n = 0, max;
  int r;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  c->st.flushes++;
  if (c->failed)
    return -EIO;
  max = 0;
  TAILQ_FOREACH (e, &c->dirty_list, dirty)
    max++;
  if (max == 0)
    return 0;
  t = malloc (max * sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  TAILQ_FOREACH (e, &c->dirty_list, dirty)
    add_target (e, t, &n);
  r = wait_targets (c, t, n);
  if (r < 0 && !c->failed)
    cs_error ("flush: %zu dirty chunk(s) could not be written to the store "
              "(see the errors above); they stay in memory and are retried",
              n);
  return r;
}

/* ------------------------------------------------------------ client I/O */

int
cache_pread (struct cache *c, void *buf, uint32_t count, uint64_t offset)
{
  uint8_t *out = buf;
  int r = 0;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  c->st.reads++;
  c->st.bytes_read += count;
  if (count > 0)
    prefetch (c, offset >> c->v->chunk_shift,
              (offset + count - 1) >> c->v->chunk_shift);
  while (count > 0) {
    uint64_t idx = offset >> c->v->chunk_shift;
    uint32_t off = offset & (c->chunk_size - 1);
    uint32_t n = c->chunk_size - off < count ? c->chunk_size - off : count;
    struct entry *e;

    r = get_entry (c, idx, false, false, false, &e);
    if (r == -EAGAIN) {
      r = read_uncached (c, idx, off, n, out);
      if (r < 0)
        return r;
      goto next;
    }
    if (r < 0)
      return r;
    if (e == NULL || e->zero)
      memset (out, 0, n);
    else
      memcpy (out, e->data + off, n);
    if (e)
      unpin (c, e);
  next:
    out += n;
    offset += n;
    count -= n;
  }
  CHECK (c);
  return 0;
}

/* Would zeroing [offset, offset+count) need a chunk fetched from the
 * store (a part of a chunk that has an object and is not cached)?
 */
static bool
zero_needs_read (struct cache *c, uint32_t count, uint64_t offset)
{
  while (count > 0) {
    uint64_t idx = offset >> c->v->chunk_shift;
    uint32_t off = offset & (c->chunk_size - 1);
    uint32_t n = c->chunk_size - off < count ? c->chunk_size - off : count;
    bool whole = off == 0 && n >= chunk_bytes (c, idx);
    struct entry *e = lookup (c, idx);

    if (!whole && cs_map_test (c->v, idx) && !(e && e->valid))
      return true;
    offset += n;
    count -= n;
  }
  return false;
}

/* Write buf (or zeroes, when buf is NULL) at offset.  Whole chunks that are
 * zeroed become zero entries (their object is deleted on upload).
 */
static int
write_range (struct cache *c, const uint8_t *buf, uint32_t count,
             uint64_t offset, bool fua)
{
  CLEANUP_FREE struct target *t = NULL;
  size_t nt = 0;
  int r = 0;

  if (fua) {
    t = malloc (((count >> c->v->chunk_shift) + 2) * sizeof *t);
    if (t == NULL)
      return -ENOMEM;
  }
  while (count > 0) {
    uint64_t idx = offset >> c->v->chunk_shift;
    uint32_t off = offset & (c->chunk_size - 1);
    uint32_t n = c->chunk_size - off < count ? c->chunk_size - off : count;
    bool whole = off == 0 && n >= chunk_bytes (c, idx);
    struct entry *e;

    /* Checked for every chunk: a load or a wait for memory in the one
     * before dropped the lock, and the cache may have failed meanwhile.
     */
    if (c->failed) {
      r = -EIO;
      break;
    }
    if (buf == NULL && !whole) {
      /* Part of a chunk that is known to be zeroes already: nothing to
       * do, and no buffer to take.
       */
      e = lookup (c, idx);
      if (e == NULL && !cs_map_test (c->v, idx))
        goto next;
      if (e && e->valid && e->zero) {
        if (fua && e->on_dirty)
          add_target (e, t, &nt);     /* its delete is still to come */
        goto next;
      }
    }
    if (buf == NULL && whole) {
      e = lookup (c, idx);
      if (e && e->loading) {
        /* Let the fetch finish; then the entry is an ordinary one. */
        r = get_entry (c, idx, true, false, true, &e);
        if (r < 0)
          break;
        unpin (c, e);
        e = lookup (c, idx);
      }
      if (e == NULL && !cs_map_test (c->v, idx))
        goto next;              /* already no object, nothing cached */
      if (e == NULL && (e = entry_new (c, idx)) == NULL)
        return -ENOMEM;
      e->valid = true;
      e->zero = true;
      e->load_err = 0;
      set_data (c, e, NULL);
      mark_dirty (c, e, true);
    }
    else {
      r = get_entry (c, idx, true, true, whole, &e);
      if (r < 0)
        break;
      if (c->failed) {          /* it may have waited for memory */
        unpin (c, e);
        r = -EIO;
        break;
      }
      if (buf)
        memcpy (e->data + off, buf, n);
      else
        memset (e->data + off, 0, n);
      /* A chunk written full (a sequential writer went through it) will
       * not be written again soon: upload now instead of after the delay.
       * Counting bytes rather than tracking coverage can call a chunk full
       * early after overlapping rewrites; that costs one extra upload.
       */
      e->written += n;
      mark_dirty (c, e, e->written >= chunk_bytes (c, idx));
      unpin (c, e);
    }
    if (fua)
      add_target (e, t, &nt);
  next:
    if (buf)
      buf += n;
    offset += n;
    count -= n;
  }
  CHECK (c);
  if (fua) {
    int r2 = wait_targets (c, t, nt);
    if (r == 0)
      r = r2;
  }
  return r;
}

int
cache_pwrite (struct cache *c, const void *buf, uint32_t count,
              uint64_t offset, bool fua)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  c->st.writes++;
  c->st.bytes_written += count;
  if (c->failed)
    return -EIO;
  return write_range (c, buf, count, offset, fua);
}

int
cache_zero (struct cache *c, uint32_t count, uint64_t offset, bool fua,
            bool fast)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  c->st.zeroes++;
  if (c->failed)
    return -EIO;
  if (fast && zero_needs_read (c, count, offset))
    return -EOPNOTSUPP;
  return write_range (c, NULL, count, offset, fua);
}

bool
cache_allocated (struct cache *c, uint64_t offset, uint64_t count,
                 uint64_t *len)
{
  uint64_t idx = offset >> c->v->chunk_shift, done = 0;
  bool first = true, alloc = false;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  while (done < count) {
    struct entry *e = lookup (c, idx);
    bool a = e && e->valid ? !e->zero : cs_map_test (c->v, idx);
    uint64_t n = ((idx + 1) << c->v->chunk_shift) - (offset + done);

    if (first)
      alloc = a;
    else if (a != alloc)
      break;
    first = false;
    done += n;
    idx++;
  }
  *len = done < count ? done : count;
  return alloc;
}

/* --------------------------------------------------------------- workers */

/* Pick the next entry to upload, or NULL.  *wake is set to when the
 * earliest waiting entry becomes due.
 */
static struct entry *
pick (struct cache *c, double t, double *wake)
{
  bool hurry = c->flushers > 0 || c->mem_waiters > 0 || c->stop ||
    c->dirty_bytes * 2 >= c->limit;
  struct entry *e;

  *wake = t + 3600;
  TAILQ_FOREACH (e, &c->dirty_list, dirty) {
    double due;

    if (e->uploading)
      continue;
    if (e->retry_at > t) {
      if (e->retry_at < *wake)
        *wake = e->retry_at;
      continue;
    }
    if (hurry || e->urgent)
      return e;
    due = e->dirty_since + c->p.upload_delay;
    if (due <= t)
      return e;
    if (due < *wake)
      *wake = due;
  }
  return NULL;
}

static void fail_locked (struct cache *c, const char *reason);

static void
upload_done (struct cache *c, struct entry *e, uint64_t version, int r)
{
  e->uploading = false;
  if (r == -ENOLCK)
    fail_locked (c, "an upload was refused or aborted: the write deadline "
                 "of the volume lock passed");
  if (r == 0) {
    if (version > e->persisted)
      e->persisted = version;
    c->upload_ok++;
    e->fails = 0;
    e->retry_at = 0;
    if (e->version == e->persisted)
      e->urgent = false;
  }
  else {
    double delay = RETRY_MIN * (1u << (e->fails < 6 ? e->fails : 6));

    e->fails++;
    e->fail_gen++;
    e->retry_at = now () + (delay < RETRY_MAX ? delay : RETRY_MAX);
    c->st.upload_failures++;
  }
  settle (c, e);
  unpin (c, e);
}

/* Upload zero entries: one batched delete for up to DELETE_BATCH of them. */
static void
upload_zeroes (struct cache *c, struct entry *first, double t)
{
  struct entry *batch[DELETE_BATCH], *e;
  uint64_t idx[DELETE_BATCH], ver[DELETE_BATCH];
  size_t n = 0, i;
  int r;

  for (e = first; e && n < DELETE_BATCH; e = TAILQ_NEXT (e, dirty)) {
    if (!e->zero || e->uploading || e->retry_at > t)
      continue;
    e->uploading = true;
    e->urgent = false;
    e->pins++;
    batch[n] = e;
    idx[n] = e->idx;
    ver[n] = e->version;
    n++;
  }
  pthread_mutex_unlock (&c->lock);
  r = cs_chunk_delete_many (c->v, idx, n);
  pthread_mutex_lock (&c->lock);
  c->st.deletes += n;
  for (i = 0; i < n; ++i)
    upload_done (c, batch[i], ver[i], r);
}

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  struct cache *c = w->c;

  pthread_mutex_lock (&c->lock);
  while (!c->stop || !TAILQ_EMPTY (&c->dirty_list)) {
    struct entry *e, *up;
    double t = now (), wake;
    uint64_t version;
    int r;

    /* Queued fetches first (a reader is waiting for them, or soon will),
     * but while uploads are due at most half of the workers fetch, so
     * read-ahead never starves uploads: writers waiting for memory and
     * flushes depend on them.
     */
    e = TAILQ_FIRST (&c->fetch_list);
    up = NULL;
    if (e && c->fetching >= c->nworkers / 2 && !c->failed)
      up = pick (c, t, &wake);
    if (e && up == NULL) {
      dequeue_fetch (c, e);
      c->fetching++;
      do_load (c, e, w->ctx, &w->enc);
      c->fetching--;
      unpin (c, e);
      continue;
    }
    e = up ? up : c->failed ? NULL : pick (c, t, &wake);
    if (e == NULL) {
      struct timespec ts;

      if (c->stop && (c->failed || c->flushers == 0))
        break;                  /* close gave up, or nothing can go */
      if (c->failed)
        wake = t + 3600;
      wake += 0.001;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_sec += (time_t) (wake - t);
      ts.tv_nsec += (long) ((wake - t - (time_t) (wake - t)) * 1e9);
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait (&c->work, &c->lock, &ts);
      continue;
    }
    if (e->zero) {
      upload_zeroes (c, e, t);
      pthread_cond_broadcast (&c->cond);
      continue;
    }

    /* Copy under the lock, store without it (rule 3). */
    e->uploading = true;
    e->pins++;
    e->written = 0;
    e->urgent = false;          /* flushes hurry on their own (flushers) */
    version = e->version;
    memcpy (w->copy, e->data, c->chunk_size);
    pthread_mutex_unlock (&c->lock);
    r = cs_chunk_write (c->v, w->ctx, e->idx, w->copy, &w->enc);
    pthread_mutex_lock (&c->lock);
    c->st.uploads++;
    if (r == 0)
      c->st.bytes_plain_up += c->chunk_size;
    upload_done (c, e, version, r);
    CHECK (c);
    pthread_cond_broadcast (&c->cond);
  }
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

/* ------------------------------------------------------------ lifecycle */

int
cache_open (struct cs_volume *v, const struct cache_params *p,
            struct cache **out)
{
  struct cache *c = calloc (1, sizeof *c);
  pthread_condattr_t attr;
  unsigned i;

  if (c == NULL)
    return -ENOMEM;
  c->v = v;
  c->p = *p;
  c->chunk_size = v->chunk_size;
  /* cache-size= covers the chunk buffers and each worker's own two
   * (a private copy and an encode buffer).  The cache needs room for two
   * chunks per worker and two more, or nothing can move: with a small
   * cache-size and large chunks, use fewer workers rather than more memory.
   */
  /* Read slots likewise (one per two workers, at least one): their
   * buffers were per client thread before, outside any bound.
   */
  {
    uint64_t per_worker = c->chunk_size + codec_bound (c->chunk_size);
    uint64_t per_slot = per_worker;
    unsigned w = p->workers ? p->workers : 1;

#define RESERVED(w) ((w) * per_worker + ((w) + 1) / 2 * per_slot)
    while (w > 1 && RESERVED (w) + (2ull * w + 2) * c->chunk_size >
           p->cache_size)
      w--;
    if (w < p->workers)
      cs_info ("cache: %u upload workers fit in cache-size=%" PRIu64
               " with %" PRIu32 "-byte chunks (asked for %u)",
               w, p->cache_size, c->chunk_size, p->workers);
    c->p.workers = w;
    c->nslots = (w + 1) / 2;
    c->limit = p->cache_size > RESERVED (w)
      ? p->cache_size - RESERVED (w) : 0;
    if (c->limit < (2ull * w + 2) * c->chunk_size)
      c->limit = (2ull * w + 2) * c->chunk_size;
#undef RESERVED
  }
  pthread_mutex_init (&c->lock, NULL);
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&c->work, &attr);
  pthread_condattr_destroy (&attr);
  pthread_cond_init (&c->cond, NULL);
  TAILQ_INIT (&c->lru_list);
  TAILQ_INIT (&c->dirty_list);
  TAILQ_INIT (&c->fetch_list);
  c->buckets = 1024;
  c->table = calloc (c->buckets, sizeof *c->table);
  c->nworkers = c->p.workers;
  c->workers = calloc (c->nworkers, sizeof *c->workers);
  c->slots = calloc (c->nslots, sizeof *c->slots);
  if (c->table == NULL || c->workers == NULL || c->slots == NULL)
    goto nomem;
  for (i = 0; i < c->nslots; ++i) {
    struct read_slot *s = &c->slots[i];
    s->ctx = codec_ctx_new ();
    s->plain = malloc (c->chunk_size);
    if (s->ctx == NULL || s->plain == NULL ||
        cs_buf_reserve (&s->scratch, codec_bound (c->chunk_size)) < 0)
      goto nomem;
    s->next = c->free_slots;
    c->free_slots = s;
  }
  for (i = 0; i < c->nworkers; ++i) {
    struct worker *w = &c->workers[i];
    w->c = c;
    w->copy = malloc (c->chunk_size);
    w->ctx = codec_ctx_new ();
    if (w->copy == NULL || w->ctx == NULL ||
        cs_buf_reserve (&w->enc, codec_bound (c->chunk_size)) < 0)
      goto nomem;
  }
  *out = c;
  return 0;
 nomem:
  cache_close (c);
  return -ENOMEM;
}

int
cache_start (struct cache *c)
{
  unsigned i;
  int r;

  for (i = 0; i < c->nworkers; ++i) {
    r = pthread_create (&c->workers[i].thread, NULL, worker_main,
                        &c->workers[i]);
    if (r != 0) {
      cs_error ("start upload thread: %s", strerror (r));
      return -r;
    }
    c->workers[i].started = true;
  }
  return 0;
}

void
cache_fail (struct cache *c, const char *reason)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  fail_locked (c, reason);
}

static void
fail_locked (struct cache *c, const char *reason)
{
  if (!c->failed)
    cs_error ("volume is now read-only, every write and flush fails until "
              "restart: %s", reason);
  c->failed = true;
  pthread_cond_broadcast (&c->cond);
  pthread_cond_broadcast (&c->work);
}

bool
cache_failed (struct cache *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  return c->failed;
}

bool
cache_has_chunk (struct cache *c, uint64_t idx)
{
  struct entry *e;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  e = lookup (c, idx);
  return e && (e->valid || e->loading);
}

void
cache_get_stats (struct cache *c, struct cache_stats *out)
{
  struct entry *e;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->lock);
  *out = c->st;
  out->dirty_bytes = c->dirty_bytes;
  out->mem_bytes = c->mem;
  out->uploading = 0;
  TAILQ_FOREACH (e, &c->dirty_list, dirty)
    out->uploading += e->uploading;
}

int
cache_close (struct cache *c)
{
  struct entry *e;
  size_t lost = 0, i;
  int r = 0, tries;
  bool started = false;

  if (c == NULL)
    return 0;
  for (i = 0; c->workers && i < c->nworkers; ++i)
    started |= c->workers[i].started;

  if (started) {
    for (tries = 0; tries < CLOSE_FLUSH_TRIES; ++tries) {
      r = cache_flush (c);
      if (r == 0 || cache_failed (c))
        break;
    }
    pthread_mutex_lock (&c->lock);
    c->stop = true;
    pthread_cond_broadcast (&c->work);
    pthread_mutex_unlock (&c->lock);
    for (i = 0; i < c->nworkers; ++i)
      if (c->workers[i].started)
        pthread_join (c->workers[i].thread, NULL);
  }

  TAILQ_FOREACH (e, &c->dirty_list, dirty)
    lost++;
  if (lost) {
    cs_error ("close: %zu chunk(s) written by the client could not be "
              "stored and are lost", lost);
    r = -EIO;
  }
  for (i = 0; c->table && i < c->buckets; ++i)
    while ((e = c->table[i]) != NULL) {
      c->table[i] = e->hnext;
      free (e->data);
      free (e->loadbuf);              /* a queued fetch nobody ran */
      free (e);
    }
  while (c->pool) {
    uint8_t *b = c->pool;
    memcpy (&c->pool, b, sizeof c->pool);
    free (b);
  }
  for (i = 0; c->workers && i < c->nworkers; ++i) {
    free (c->workers[i].copy);
    cs_buf_free (&c->workers[i].enc);
    codec_ctx_free (c->workers[i].ctx);
  }
  for (i = 0; c->slots && i < c->nslots; ++i) {
    codec_ctx_free (c->slots[i].ctx);
    cs_buf_free (&c->slots[i].scratch);
    free (c->slots[i].plain);
  }
  free (c->slots);
  free (c->workers);
  free (c->table);
  pthread_mutex_destroy (&c->lock);
  pthread_cond_destroy (&c->cond);
  pthread_cond_destroy (&c->work);
  free (c);
  return r;
}
