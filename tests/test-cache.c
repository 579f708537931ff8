/* s3chunk: unit tests of the write-back cache over a fault-injecting store.
 *
 * Every read is checked against a shadow copy of the disk, and after each
 * scenario a fresh cache over the same store must read back the shadow:
 * that is what "in the store" means.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "unit.h"

#define CHUNK (64 * 1024)
#define NCHUNKS 64
#define SIZE ((uint64_t) CHUNK * NCHUNKS)

static char *dir;
static struct objstore *inner, *os;   /* os wraps inner with faults */
static struct cs_volume *vol;
static struct cache *cache;
static uint8_t shadow[SIZE], buf[SIZE];

static uint64_t rng = 88172645463325252ull;
static uint64_t
rnd (void)
{
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return rng;
}

static unsigned readahead = 4;

static void
start (uint64_t cache_size, unsigned workers, double delay)
{
  struct cs_volume_params vp = { .size = SIZE, .chunk_size = CHUNK,
                                 .level = 1 };
  struct cache_params cp = { .cache_size = cache_size, .workers = workers,
                             .upload_delay = delay, .readahead = readahead };

  CHECK_EQ (objstore_dir_open (dir, true, &inner), 0);
  CHECK_EQ (objstore_fault_wrap (inner, &os), 0);
  CHECK_EQ (cs_volume_open (os, &vp, &vol), 0);
  CHECK_EQ (cs_map_load (vol), 0);
  CHECK_EQ (cache_open (vol, &cp, &cache), 0);
  CHECK_EQ (cache_start (cache), 0);
}

static int
stop (void)
{
  int r = cache_close (cache);
  cs_volume_close (vol);
  objstore_close (os);
  return r;
}

/* stop, with the store's request counters once every worker ended. */
static int
stop_stats (struct objstore_stats *st)
{
  int r = cache_close (cache);
  objstore_get_stats (inner, st);
  cs_volume_close (vol);
  objstore_close (os);
  return r;
}

/* A fresh cache over the same store must read exactly the shadow. */
static void
verify_store (const char *what)
{
  int r1, r2;

  start (16 << 20, 2, 0);
  r1 = cache_pread (cache, buf, SIZE, 0);
  r2 = memcmp (buf, shadow, SIZE);
  if (r1 != 0 || r2 != 0)
    fprintf (stderr, "verify_store after %s: read %d, differs %d\n",
             what, r1, r2 != 0);
  CHECK_EQ (r1, 0);
  CHECK_EQ (r2, 0);
  CHECK_EQ (stop (), 0);
}

/* After a test that left data unstored (the failed state drops it): put
 * the shadow back in step with the store for the tests that follow.
 */
static void
resync_shadow (void)
{
  start (16 << 20, 2, 0);
  CHECK_EQ (cache_pread (cache, shadow, SIZE, 0), 0);
  CHECK_EQ (stop (), 0);
}

static void
write_shadow (uint64_t off, uint32_t len, bool fua)
{
  for (uint32_t i = 0; i < len; ++i)
    shadow[off + i] = rnd ();
  CHECK_EQ (cache_pwrite (cache, shadow + off, len, off, fua), 0);
}

static void
random_ops (unsigned n)
{
  for (unsigned i = 0; i < n; ++i) {
    uint64_t off = rnd () % SIZE;
    uint32_t len = 1 + rnd () % (3 * CHUNK);

    if (off + len > SIZE)
      len = SIZE - off;
    switch (rnd () % 8) {
    case 0:
      memset (shadow + off, 0, len);
      CHECK_EQ (cache_zero (cache, len, off, rnd () % 2, false), 0);
      break;
    case 1:
      CHECK_EQ (cache_flush (cache), 0);
      break;
    case 2: case 3: case 4:
      CHECK_EQ (cache_pread (cache, buf, len, off), 0);
      CHECK (memcmp (buf, shadow + off, len) == 0);
      break;
    default:
      write_shadow (off, len, rnd () % 4 == 0);
    }
  }
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
}

/* Random I/O, with a cache so small that chunks are evicted and writers
 * wait for uploads; then flush and read back through a new cache.
 */
static void
test_random (void)
{
  memset (shadow, 0, SIZE);
  start (16 << 20, 4, 0.01);
  random_ops (3000);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);
  verify_store ("random I/O");

  /* Closing without a flush stores everything too. */
  start (16 << 20, 3, 10);
  random_ops (500);
  CHECK_EQ (stop (), 0);
  verify_store ("close");
}

/* Reading a chunk never written costs no request. */
static void
test_no_get_for_holes (void)
{
  struct objstore_stats s0, s1;

  start (16 << 20, 2, 0);
  objstore_get_stats (inner, &s0);
  memset (shadow + 3 * CHUNK, 0, CHUNK);
  CHECK_EQ (cache_zero (cache, CHUNK, 3 * CHUNK, false, false), 0);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (cache_pread (cache, buf, CHUNK, 3 * CHUNK), 0);
  CHECK (cs_is_zero (buf, CHUNK));
  objstore_get_stats (inner, &s1);
  CHECK_EQ (s1.gets - s0.gets, 0);
  CHECK_EQ (stop (), 0);
}

struct flusher {
  pthread_t t;
  volatile int done;
  int r;
};

static void *
flush_thread (void *arg)
{
  struct flusher *f = arg;
  f->r = cache_flush (cache);
  __atomic_store_n (&f->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void *
read_chunk2_thread (void *arg)
{
  struct flusher *f = arg;
  f->r = cache_pread (cache, buf, CHUNK, 2 * CHUNK);
  return NULL;
}

static void
wait_stalled (unsigned n)
{
  for (int i = 0; i < 5000 && objstore_fault_stalled (os) < n; ++i)
    usleep (1000);
  CHECK (objstore_fault_stalled (os) >= n);
}

/* A flush issued while the chunk's upload is in flight (stalled) must wait
 * for it, and an upload that carried an older version does not count.
 */
static void
test_flush_waits_for_inflight (void)
{
  struct flusher f = { 0 };

  start (16 << 20, 2, 0);
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_STALL, 0, 0, 1);
  write_shadow (5 * CHUNK, CHUNK, false);       /* whole chunk: uploads now */
  wait_stalled (1);
  /* Written again while its upload (of version 1) is stuck. */
  write_shadow (5 * CHUNK + 100, 200, false);
  pthread_create (&f.t, NULL, flush_thread, &f);
  usleep (200 * 1000);
  CHECK_EQ (__atomic_load_n (&f.done, __ATOMIC_ACQUIRE), 0);
  objstore_fault_release (os);
  pthread_join (f.t, NULL);
  CHECK_EQ (f.r, 0);
  /* The flush returned: the second write must be in the store now,
   * not only the version that was in flight.
   */
  CHECK_EQ (stop (), 0);
  verify_store ("flush during stalled upload");
}

/* A stalled upload never blocks reads and writes of other chunks. */
static void
test_stall_does_not_block_others (void)
{
  start (16 << 20, 2, 0);
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_STALL, 0, 0, 1);
  write_shadow (7 * CHUNK, CHUNK, false);
  wait_stalled (1);
  write_shadow (9 * CHUNK + 10, 1000, false);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  objstore_fault_release (os);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);
  verify_store ("stall");
}

/* Uploads that fail: flush reports EIO, the data stays in the cache, and
 * once the store works again a flush succeeds and everything is stored.
 */
static void
test_flush_reports_failure (void)
{
  struct cache_stats st;

  start (16 << 20, 2, 0);
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_FAIL, -EIO, 0, UINT32_MAX);
  write_shadow (11 * CHUNK + 3, 3 * CHUNK, false);
  CHECK_EQ (cache_flush (cache), -EIO);
  CHECK_EQ (cache_flush (cache), -EIO);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  cache_get_stats (cache, &st);
  CHECK (st.upload_failures >= 2 && st.dirty_bytes > 0);
  /* Uploads still in flight were started under the fault and fail; a
   * flush that counted on them would rightly fail too.  Let them end.
   */
  for (int i = 0; i < 5000; ++i) {
    cache_get_stats (cache, &st);
    if (st.uploading == 0)
      break;
    usleep (1000);
  }
  CHECK_EQ (st.uploading, 0);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  CHECK_EQ (cache_flush (cache), 0);
  cache_get_stats (cache, &st);
  CHECK_EQ (st.dirty_bytes, 0);
  CHECK_EQ (stop (), 0);
  verify_store ("failing uploads");
}

/* A FUA write is in the store when it returns. */
static void
test_fua (void)
{
  struct cs_buf b = CS_BUF_INIT;
  char key[32];

  start (16 << 20, 2, 3600);
  write_shadow (13 * CHUNK + 5, 10, true);
  cs_chunk_key (13, key, sizeof key);
  CHECK_EQ (objstore_get (inner, key, 1 << 20, &b, NULL), 0);
  /* Zero with FUA of a whole chunk deletes its object before returning. */
  memset (shadow + 13 * CHUNK, 0, CHUNK);
  CHECK_EQ (cache_zero (cache, CHUNK, 13 * CHUNK, true, false), 0);
  CHECK_EQ (objstore_get (inner, key, 1 << 20, &b, NULL), -ENOENT);
  cs_buf_free (&b);
  CHECK_EQ (stop (), 0);
  verify_store ("fua");
}

/* Trim of whole chunks deletes their objects; of parts, writes zeroes. */
static void
test_zero_deletes (void)
{
  struct cs_buf b = CS_BUF_INIT;
  char key[32];

  start (16 << 20, 2, 0);
  write_shadow (20 * CHUNK, 4 * CHUNK, false);
  CHECK_EQ (cache_flush (cache), 0);
  memset (shadow + 20 * CHUNK + 100, 0, 3 * CHUNK);
  CHECK_EQ (cache_zero (cache, 3 * CHUNK, 20 * CHUNK + 100, false, false), 0);
  CHECK_EQ (cache_flush (cache), 0);
  cs_chunk_key (21, key, sizeof key);
  CHECK_EQ (objstore_get (inner, key, 1 << 20, &b, NULL), -ENOENT);
  cs_chunk_key (20, key, sizeof key);
  CHECK_EQ (objstore_get (inner, key, 1 << 20, &b, NULL), 0);
  uint64_t len;
  CHECK (!cache_allocated (cache, 21 * CHUNK, 2 * CHUNK, &len));
  CHECK_EQ (len, 2 * CHUNK);
  CHECK (cache_allocated (cache, 20 * CHUNK, 10 * CHUNK, &len));
  CHECK_EQ (len, CHUNK);
  cs_buf_free (&b);
  CHECK_EQ (stop (), 0);
  verify_store ("zero");
}

/* Sequential reads fetch ahead; the prefetched chunks are hits later, and
 * a read spanning several chunks gets them all right.
 */
static void
test_readahead (void)
{
  struct cache_stats st;

  start (16 << 20, 2, 0);
  write_shadow (0, 16 * CHUNK, false);
  CHECK_EQ (stop (), 0);

  start (16 << 20, 2, 0);
  CHECK_EQ (cache_pread (cache, buf, 100, 0), 0);
  CHECK_EQ (cache_pread (cache, buf + 100, CHUNK, 100), 0);
  CHECK (memcmp (buf, shadow, CHUNK + 100) == 0);
  for (int i = 0; i < 2000; ++i) {
    cache_get_stats (cache, &st);
    if (st.loads >= 6)
      break;
    usleep (1000);
  }
  CHECK (st.loads >= 6);                /* chunks 0, 1 and 4 ahead */
  CHECK_EQ (cache_pread (cache, buf, 5 * CHUNK, CHUNK), 0);
  CHECK (memcmp (buf, shadow + CHUNK, 5 * CHUNK) == 0);
  cache_get_stats (cache, &st);
  CHECK (st.hits >= 3);
  CHECK_EQ (stop (), 0);
}

/* ------------------------------------------------------------ read-ahead
 * What was queued or fetched ahead is seen through cache_has_chunk and
 * the read-ahead counters (set synchronously by the read that queues), and
 * GETs through the directory store's request counters: no timing.
 */

static void make_absent (uint64_t idx);

/* Give chunks first..first+n-1 new random bytes, in the store. */
static void
store_chunks (uint64_t first, uint64_t n)
{
  start (16 << 20, 2, 0);
  write_shadow (first * CHUNK, n * CHUNK, false);
  CHECK_EQ (stop (), 0);
}

/* Read len bytes at off of chunk idx and check them against the shadow. */
static void
read_piece (uint64_t idx, uint32_t off, uint32_t len)
{
  CHECK_EQ (cache_pread (cache, buf, len, idx * CHUNK + off), 0);
  CHECK (memcmp (buf, shadow + idx * CHUNK + off, len) == 0);
}

static void
read_chunk (uint64_t idx)
{
  read_piece (idx, 0, CHUNK);
}

/* Two sequential readers interleaved, with metadata-like small reads
 * elsewhere in between (what ext4 does, or two files read at once): both
 * streams get read-ahead.  A single "last chunk read" breaks on this.
 */
static void
test_ra_two_streams (void)
{
  struct cache_stats st;

  store_chunks (0, NCHUNKS);
  readahead = 8;
  start (16 << 20, 4, 0);               /* cap: 2 per worker = 8 */
  for (uint64_t i = 0; i < 3; ++i) {
    read_chunk (i);
    read_piece (60, 4096 * i, 4096);
    read_chunk (32 + i);
    read_piece (50 - 2 * i, 8192, 512);
  }
  /* Sequential since their second chunk: window 4, then 5. */
  CHECK (cache_has_chunk (cache, 2 + 5));
  CHECK (cache_has_chunk (cache, 34 + 5));
  cache_get_stats (cache, &st);
  CHECK_EQ (st.readahead, 2 * 6);       /* 2..7 and 34..39 */
  CHECK_EQ (stop (), 0);
  readahead = 4;
}

/* The window starts small and grows with every chunk the stream moves
 * on, up to the cap, and never past the end of the volume.
 */
static void
test_ra_window_grows (void)
{
  struct objstore_stats s0, s1;
  struct cache_stats st;
  uint64_t i;

  readahead = 32;
  start (16 << 20, 16, 0);              /* cap: readahead = 32 */
  objstore_get_stats (inner, &s0);
  read_chunk (0);
  read_chunk (1);
  CHECK (cache_has_chunk (cache, 1 + 4));
  CHECK (!cache_has_chunk (cache, 1 + 5));
  for (i = 2; i <= 13; ++i)
    read_chunk (i);
  /* 4 + 12 chunks moved. */
  CHECK (cache_has_chunk (cache, 13 + 16));
  CHECK (!cache_has_chunk (cache, 13 + 17));
  cache_get_stats (cache, &st);
  CHECK_EQ (st.readahead, 13 + 16 - 1);
  for (; i <= 29; ++i)
    read_chunk (i);
  /* 4 + 28 = 32: the cap. */
  CHECK (cache_has_chunk (cache, 29 + 32));
  CHECK (!cache_has_chunk (cache, 29 + 33));
  read_chunk (30);
  CHECK (cache_has_chunk (cache, 30 + 32));
  CHECK (!cache_has_chunk (cache, 30 + 33));
  for (; i < NCHUNKS; ++i)
    read_chunk (i);
  cache_get_stats (cache, &st);
  CHECK_EQ (st.readahead, NCHUNKS - 2);
  CHECK_EQ (stop_stats (&s1), 0);
  /* Every chunk was fetched once, nothing beyond the end. */
  CHECK (s1.gets - s0.gets <= NCHUNKS);
  readahead = 4;
}

/* Random small reads, some of them twice in one chunk (metadata), after a
 * sequential stream: the stream is pushed out of the table and nothing
 * random gets read-ahead.
 */
static void
test_ra_random (void)
{
  struct cache_stats st0, st1;
  uint64_t recent[24] = { 0 };
  unsigned nrecent = 0;

  readahead = 8;
  start (16 << 20, 4, 0);
  for (uint64_t i = 0; i < 6; ++i)
    read_chunk (i);
  cache_get_stats (cache, &st0);
  CHECK (st0.readahead > 0);
  for (unsigned n = 0; n < 60; ++n) {
    uint64_t r;
    bool near;

    /* Far from the stream, and never the chunk right after a recent one
     * (that would be a sequential read).
     */
    do {
      r = 16 + rnd () % (NCHUNKS - 16);
      near = false;
      for (unsigned k = 0; k < nrecent && k < 24; ++k)
        near |= r == recent[k] + 1;
    } while (near);
    recent[nrecent++ % 24] = r;
    read_piece (r, rnd () % (CHUNK - 4096), 4096);
    if (n % 2)
      read_piece (r, rnd () % (CHUNK - 512), 512);
  }
  /* The old stream is gone: going on with it starts afresh. */
  read_chunk (6);
  cache_get_stats (cache, &st1);
  CHECK_EQ (st1.readahead, st0.readahead);
  CHECK_EQ (stop (), 0);
  readahead = 4;
}

/* A stream pushed out of the table takes its queued read-ahead with it:
 * no GET for chunks nobody reads any more, and their buffers come back.
 */
static void
test_ra_dropped_stream_cancels (void)
{
  struct cache_stats st;
  char key[32];

  readahead = 8;
  start (16 << 20, 1, 0);               /* cap: 2 per worker = 2 */
  cs_chunk_key (2, key, sizeof key);
  objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL, 0, 0, 1);
  objstore_fault_only_key (os, key);
  read_chunk (0);
  read_chunk (1);                       /* queues 2 and 3 */
  wait_stalled (1);                     /* the worker is stuck on 2 */
  CHECK (cache_has_chunk (cache, 3));
  for (uint64_t i = 0; i < 20; ++i)
    read_piece (20 + 2 * i, 100, 100);
  CHECK (!cache_has_chunk (cache, 3));
  cache_get_stats (cache, &st);
  CHECK_EQ (st.ra_cancelled, 1);
  objstore_fault_release (os);
  read_chunk (2);
  read_chunk (3);
  CHECK_EQ (stop (), 0);
  readahead = 4;
}

/* Read-ahead skips chunks the map says are holes (no GET) and goes on
 * after them, up to the end of the volume and no further.
 */
static void
test_ra_holes_and_end (void)
{
  struct objstore_stats s0, s1;

  readahead = 8;
  start (16 << 20, 4, 0);
  make_absent (60);
  make_absent (61);
  CHECK_EQ (stop (), 0);

  start (16 << 20, 4, 0);
  objstore_get_stats (inner, &s0);
  for (uint64_t i = 54; i <= 57; ++i)
    read_chunk (i);                     /* at 57: window 6, to 63 */
  CHECK (cache_has_chunk (cache, 59));
  CHECK (!cache_has_chunk (cache, 60) && !cache_has_chunk (cache, 61));
  CHECK (cache_has_chunk (cache, 62) && cache_has_chunk (cache, 63));
  CHECK_EQ (cache_pread (cache, buf, 10 * CHUNK, 54 * CHUNK), 0);
  CHECK (memcmp (buf, shadow + 54 * CHUNK, 10 * CHUNK) == 0);
  CHECK_EQ (stop_stats (&s1), 0);
  CHECK (s1.gets - s0.gets <= 8);       /* 54..59, 62, 63 */
  readahead = 4;
}

/* Under memory pressure (a tiny cache full of dirty and in-flight chunks
 * whose uploads hang) sequential reads still return the right bytes and
 * read-ahead evicts nothing dirty: every write reaches the store.
 */
static void
test_ra_pressure_keeps_dirty (void)
{
  struct cache_stats st0, st1;

  readahead = 8;
  start (1, 2, 3600);                   /* 6 chunks */
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_STALL, 0, 0, UINT32_MAX);
  write_shadow (20 * CHUNK, CHUNK, false);      /* whole: uploads, hangs */
  write_shadow (21 * CHUNK + 9, 100, false);    /* dirty, waits */
  write_shadow (22 * CHUNK + 7, 100, false);
  wait_stalled (1);
  cache_get_stats (cache, &st0);
  for (uint64_t i = 0; i < 16; ++i)
    read_chunk (i);
  for (uint64_t i = 20; i < 23; ++i)
    read_chunk (i);
  cache_get_stats (cache, &st1);
  CHECK_EQ (st1.dirty_bytes, st0.dirty_bytes);
  CHECK (st1.mem_bytes <= 6 * CHUNK);
  objstore_fault_release (os);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  objstore_fault_release (os);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);
  verify_store ("read-ahead under memory pressure");
  readahead = 4;
}

/* A reader thread for the test below. */
struct reader {
  pthread_t t;
  uint64_t off;
  uint32_t len;
  uint8_t *out;
  volatile int done;
  int r;
};

static void *
reader_thread (void *arg)
{
  struct reader *rd = arg;

  rd->r = cache_pread (cache, rd->out, rd->len, rd->off);
  __atomic_store_n (&rd->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* A reader that needs a chunk queued for a worker while every read slot
 * is busy must not take it off the queue to wait for a slot: a worker
 * that comes free fetches it, and the reader goes on while the slot's own
 * fetch still hangs.  Workers start late so that the chunk is still
 * queued when the reader comes.
 */
static void
test_queued_fetch_not_held_for_a_slot (void)
{
  struct cs_volume_params vp = { .size = SIZE, .chunk_size = CHUNK,
                                 .level = 1 };
  struct cache_params cp = { .cache_size = 16 << 20, .workers = 2,
                             .upload_delay = 0, .readahead = 8 };
  static uint8_t out_a[CHUNK], out_b[2 * CHUNK], out_c[CHUNK];
  struct reader a = { .off = 40 * CHUNK, .len = CHUNK, .out = out_a };
  struct reader b = { .off = 10 * CHUNK, .len = 2 * CHUNK, .out = out_b };
  struct reader c = { .off = 11 * CHUNK, .len = CHUNK, .out = out_c };
  char key[32];
  int i;

  CHECK_EQ (objstore_dir_open (dir, true, &inner), 0);
  CHECK_EQ (objstore_fault_wrap (inner, &os), 0);
  CHECK_EQ (cs_volume_open (os, &vp, &vol), 0);
  CHECK_EQ (cs_map_load (vol), 0);
  CHECK_EQ (cache_open (vol, &cp, &cache), 0);   /* 2 workers: 1 slot */
  cs_chunk_key (40, key, sizeof key);
  objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL, 0, 0, 1);
  objstore_fault_only_key (os, key);
  pthread_create (&a.t, NULL, reader_thread, &a);  /* holds the slot */
  wait_stalled (1);
  /* Chunk 11 is queued for a worker; b waits for the slot for 10. */
  pthread_create (&b.t, NULL, reader_thread, &b);
  for (i = 0; i < 5000 && !cache_has_chunk (cache, 11); ++i)
    usleep (1000);
  CHECK (cache_has_chunk (cache, 11));
  pthread_create (&c.t, NULL, reader_thread, &c);
  usleep (100 * 1000);                  /* c reaches chunk 11 */
  CHECK_EQ (cache_start (cache), 0);
  for (i = 0; i < 5000 && !__atomic_load_n (&c.done, __ATOMIC_ACQUIRE); ++i)
    usleep (1000);
  CHECK (__atomic_load_n (&c.done, __ATOMIC_ACQUIRE));
  CHECK_EQ (objstore_fault_stalled (os), 1);    /* a's fetch still hangs */
  objstore_fault_release (os);
  pthread_join (a.t, NULL);
  pthread_join (b.t, NULL);
  pthread_join (c.t, NULL);
  CHECK_EQ (a.r, 0);
  CHECK_EQ (b.r, 0);
  CHECK_EQ (c.r, 0);
  CHECK (memcmp (out_a, shadow + 40 * CHUNK, CHUNK) == 0);
  CHECK (memcmp (out_b, shadow + 10 * CHUNK, 2 * CHUNK) == 0);
  CHECK (memcmp (out_c, shadow + 11 * CHUNK, CHUNK) == 0);
  CHECK_EQ (stop (), 0);
}

/* Queued read-ahead does not go before uploads that are due: with one
 * worker, a due upload goes first even though a fetch was queued earlier,
 * so a flush returns while that fetch then hangs.  The worker starts late
 * so that both are waiting for it at once.
 */
static void
test_readahead_does_not_starve_uploads (void)
{
  struct cs_volume_params vp = { .size = SIZE, .chunk_size = CHUNK,
                                 .level = 1 };
  struct cache_params cp = { .cache_size = 16 << 20, .workers = 1,
                             .upload_delay = 0, .readahead = 8 };
  struct flusher f = { 0 };
  char key[32];
  int i;

  CHECK_EQ (objstore_dir_open (dir, true, &inner), 0);
  CHECK_EQ (objstore_fault_wrap (inner, &os), 0);
  CHECK_EQ (cs_volume_open (os, &vp, &vol), 0);
  CHECK_EQ (cs_map_load (vol), 0);
  CHECK_EQ (cache_open (vol, &cp, &cache), 0);
  cs_chunk_key (2, key, sizeof key);
  objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL, 0, 0, 1);
  objstore_fault_only_key (os, key);
  read_chunk (0);                       /* through the read slot */
  read_chunk (1);                       /* queues 2 and 3 */
  CHECK (cache_has_chunk (cache, 2));
  write_shadow (20 * CHUNK, CHUNK, false);      /* due at once */
  pthread_create (&f.t, NULL, flush_thread, &f);
  CHECK_EQ (cache_start (cache), 0);
  for (i = 0; i < 5000 && !__atomic_load_n (&f.done, __ATOMIC_ACQUIRE); ++i)
    usleep (1000);
  CHECK (__atomic_load_n (&f.done, __ATOMIC_ACQUIRE));
  objstore_fault_release (os);
  pthread_join (f.t, NULL);
  CHECK_EQ (f.r, 0);
  read_chunk (2);
  read_chunk (3);
  CHECK_EQ (stop (), 0);
  verify_store ("read-ahead and uploads");
}

/* A partial zero of a never-stored chunk, then a zero of everything (what
 * mkfs's discard does), with uploads delayed so both meet in the cache.
 */
static void
test_zero_twice (void)
{
  start (16 << 20, 2, 3600);
  memset (shadow + 40 * CHUNK, 0, SIZE - 40 * CHUNK);
  CHECK_EQ (cache_zero (cache, 4096, 40 * CHUNK, false, false), 0);
  CHECK_EQ (cache_zero (cache, SIZE - 40 * CHUNK, 40 * CHUNK, false, false), 0);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);
  verify_store ("zero twice");
}

/* A damaged object gives EIO on the reads that touch it, never wrong
 * bytes; the other chunks stay readable.
 */
static void
test_corrupt_reads (void)
{
  readahead = 0;                /* the faults must hit the reads below */
  start (16 << 20, 2, 0);
  objstore_fault_set (os, FAULT_OP_GET, FAULT_CORRUPT, 0, 0, 1);
  unit_errors_logged = 0;
  CHECK_EQ (cache_pread (cache, buf, 100, 20 * CHUNK), -EIO);
  CHECK (unit_logged ("chunks/0000000000000014"));
  objstore_fault_set (os, FAULT_OP_GET, FAULT_TRUNCATE, 0, 0, 1);
  CHECK_EQ (cache_pread (cache, buf, 100, 20 * CHUNK), -EIO);
  CHECK (unit_logged ("chunks/0000000000000014"));
  /* A partial write of it cannot read-modify-write: it fails too. */
  objstore_fault_set (os, FAULT_OP_GET, FAULT_CORRUPT, 0, 0, 1);
  CHECK_EQ (cache_pwrite (cache, "x", 1, 20 * CHUNK, false), -EIO);
  /* The store object is fine; the next read succeeds. */
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  CHECK_EQ (stop (), 0);
  readahead = 4;
}

/* A read-ahead that fails is retried by the reader that needs the chunk:
 * one bad answer to a prefetch is not an error for anyone.
 */
static void
test_failed_readahead (void)
{
  struct cs_buf b = CS_BUF_INIT;
  char key[32];

  start (16 << 20, 1, 0);
  /* Chunk 2 must be stored for a read-ahead to fetch it. */
  cs_chunk_key (2, key, sizeof key);
  if (objstore_get (inner, key, 1 << 20, &b, NULL) == -ENOENT)
    write_shadow (2 * CHUNK, 10, true);
  cs_buf_free (&b);
  /* GETs: chunk 0, chunk 1 (the reader's), then the read-ahead of 2. */
  objstore_fault_set (os, FAULT_OP_GET, FAULT_STALL_FAIL, -EIO, 0, 1);
  objstore_fault_only_key (os, key);       /* chunk 2: only the read-ahead */
  CHECK_EQ (cache_pread (cache, buf, 10, 0), 0);
  CHECK_EQ (cache_pread (cache, buf, 10, CHUNK), 0);      /* sequential */
  wait_stalled (1);
  /* Chunk 2 is being fetched ahead; this reader waits for that fetch,
   * which fails; it must fetch again itself instead of failing.
   */
  struct flusher f = { 0 };
  struct cache_stats st;
  cache_get_stats (cache, &st);
  CHECK_EQ (st.read_waits, 0);
  pthread_create (&f.t, NULL, read_chunk2_thread, &f);
  /* Release only once the reader waits for the stalled fetch (a wait is
   * counted as it begins): a reader scheduled late on a loaded machine
   * would otherwise find the fetch already failed and not wait at all.
   */
  for (int i = 0; i < 10000; ++i) {
    cache_get_stats (cache, &st);
    if (st.read_waits > 0)
      break;
    usleep (1000);
  }
  usleep (100 * 1000);
  objstore_fault_release (os);
  pthread_join (f.t, NULL);
  CHECK_EQ (f.r, 0);
  CHECK (memcmp (buf, shadow + 2 * CHUNK, CHUNK) == 0);
  /* The wait is counted, with its time (the status line reports both). */
  cache_get_stats (cache, &st);
  CHECK_EQ (st.read_waits, 1);
  CHECK (st.read_wait > 0);
  CHECK_EQ (stop (), 0);
}

/* The failed state: writes and flushes fail, nothing more is uploaded,
 * not even at close.
 */
static void
test_failed_state (void)
{
  struct cs_buf before = CS_BUF_INIT, after = CS_BUF_INIT;
  struct objstore *check;
  char key[32];
  int r0, r1;

  cs_chunk_key (30, key, sizeof key);
  start (16 << 20, 2, 3600);
  r0 = objstore_get (inner, key, 1 << 20, &before, NULL);
  write_shadow (30 * CHUNK + 1, 10, false);
  cache_fail (cache, "test");
  CHECK (cache_failed (cache));
  CHECK_EQ (cache_pwrite (cache, "y", 1, 0, false), -EIO);
  CHECK_EQ (cache_zero (cache, 1, 0, false, false), -EIO);
  CHECK_EQ (cache_flush (cache), -EIO);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  CHECK_EQ (stop (), -EIO);                   /* the dirty chunk is lost */
  CHECK_EQ (objstore_dir_open (dir, false, &check), 0);
  r1 = objstore_get (check, key, 1 << 20, &after, NULL);
  CHECK_EQ (r1, r0);
  CHECK (before.len == after.len &&
         memcmp (before.data, after.data, before.len) == 0);
  objstore_close (check);
  cs_buf_free (&before);
  cs_buf_free (&after);
  resync_shadow ();
}

/* Writers in threads, a flusher in another: each flush covers what was
 * written before it, while writes go on.
 */
struct writer {
  pthread_t t;
  unsigned id;
  int errors;
};
static volatile int writers_stop;

static void *
writer_thread (void *arg)
{
  struct writer *w = arg;
  uint64_t base = (uint64_t) w->id * (SIZE / 4);
  uint64_t seed = w->id + 1;

  while (!__atomic_load_n (&writers_stop, __ATOMIC_ACQUIRE)) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t off = base + (seed >> 20) % (SIZE / 4 - 5000);
    uint32_t len = 1 + (seed >> 8) % 5000;
    for (uint32_t i = 0; i < len; ++i)
      shadow[off + i] = seed >> (i % 56);
    if (cache_pwrite (cache, shadow + off, len, off, false) != 0)
      w->errors++;
  }
  return NULL;
}

static void
test_concurrent (void)
{
  struct writer w[4];

  start (16 << 20, 3, 0.005);
  writers_stop = 0;
  for (unsigned i = 0; i < 4; ++i) {
    w[i].id = i;
    w[i].errors = 0;
    pthread_create (&w[i].t, NULL, writer_thread, &w[i]);
  }
  for (int i = 0; i < 20; ++i) {
    CHECK_EQ (cache_flush (cache), 0);
    usleep (10000);
  }
  __atomic_store_n (&writers_stop, 1, __ATOMIC_RELEASE);
  for (unsigned i = 0; i < 4; ++i) {
    pthread_join (w[i].t, NULL);
    CHECK_EQ (w[i].errors, 0);
  }
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  CHECK_EQ (stop (), 0);
  verify_store ("concurrent writers");
}

/* Back-pressure: with uploads stalled, a writer filling the cache waits
 * instead of growing memory; released, it finishes.
 */
struct bulk {
  pthread_t t;
  volatile int done;
  int r;
};

static void *
bulk_thread (void *arg)
{
  struct bulk *b = arg;

  for (uint64_t c = 0; c < NCHUNKS && b->r == 0; ++c) {
    memset (shadow + c * CHUNK, (int) c + 1, CHUNK);
    b->r = cache_pwrite (cache, shadow + c * CHUNK, CHUNK, c * CHUNK, false);
  }
  __atomic_store_n (&b->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void
test_back_pressure (void)
{
  struct bulk b = { 0 };
  struct cache_stats st;

  /* The cache rounds tiny limits up to 2 chunks per worker (+1): 6. */
  start (1, 2, 0);
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_STALL, 0, 0, UINT32_MAX);
  pthread_create (&b.t, NULL, bulk_thread, &b);
  usleep (300 * 1000);
  CHECK_EQ (__atomic_load_n (&b.done, __ATOMIC_ACQUIRE), 0);
  cache_get_stats (cache, &st);
  CHECK (st.mem_bytes <= 6 * CHUNK);
  objstore_fault_release (os);
  pthread_join (b.t, NULL);
  CHECK_EQ (b.r, 0);
  cache_get_stats (cache, &st);
  CHECK (st.pressure_wait > 0.1);
  CHECK (st.mem_bytes <= 6 * CHUNK);
  CHECK_EQ (stop (), 0);
  verify_store ("back-pressure");
}

/* The store is down and the cache is full of dirty chunks: a writer that
 * needs memory gets EIO instead of hanging, nothing acknowledged is lost,
 * and once the store is back everything written is stored.
 */
static void
test_back_pressure_store_down (void)
{
  static uint8_t chunk[CHUNK];
  unsigned i;
  int r = 0;

  start (1, 2, 0);                      /* 6 chunks, as above */
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_FAIL, -EIO, 0, UINT32_MAX);
  for (i = 0; i < 32; ++i) {
    for (uint32_t j = 0; j < CHUNK; ++j)
      chunk[j] = rnd ();
    r = cache_pwrite (cache, chunk, CHUNK, (uint64_t) i * CHUNK, false);
    if (r < 0)
      break;
    memcpy (shadow + (uint64_t) i * CHUNK, chunk, CHUNK);
  }
  CHECK_EQ (r, -EIO);
  CHECK (i >= 4 && i < 32);
  CHECK_EQ (cache_flush (cache), -EIO);
  /* Reads of what was acknowledged still work, from memory. */
  CHECK_EQ (cache_pread (cache, buf, (uint64_t) i * CHUNK, 0), 0);
  CHECK (memcmp (buf, shadow, (uint64_t) i * CHUNK) == 0);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  /* A flush may still see an upload started under the fault fail. */
  for (int k = 0; k < 3 && (r = cache_flush (cache)) != 0; ++k)
    ;
  CHECK_EQ (r, 0);
  write_shadow ((uint64_t) i * CHUNK, 3 * CHUNK, false);  /* flows again */
  CHECK_EQ (stop (), 0);
  verify_store ("back-pressure with the store down");
}


/* Make chunk idx have no object (zeroed and flushed). */
static void
make_absent (uint64_t idx)
{
  memset (shadow + idx * CHUNK, 0, CHUNK);
  CHECK_EQ (cache_zero (cache, CHUNK, idx * CHUNK, false, false), 0);
  CHECK_EQ (cache_flush (cache), 0);
}

/* Rule 8: a PUT that landed although its answer was lost, then a trim of
 * the chunk, must delete the object; otherwise a restart lists it again
 * and the trimmed chunk reads its old bytes.  Chunk 50 has no object
 * before, so the map says "absent" until the PUT is sent.
 */
static void
test_ambiguous_put_then_trim (void)
{
  char key[32];

  cs_chunk_key (50, key, sizeof key);
  start (16 << 20, 2, 0);
  make_absent (50);
  CHECK_EQ (stop (), 0);
  start (16 << 20, 2, 0);
  CHECK (!cs_map_test (vol, 50));
  /* Every upload of the chunk lands but answers -ETIMEDOUT: the outcome
   * is never known (one rule, so no race with the cache's retries).
   */
  objstore_fault_set (os, FAULT_OP_PUT, FAULT_LAND_TIMEOUT, 0, 0,
                      UINT32_MAX);
  objstore_fault_only_key (os, key);
  write_shadow (50 * CHUNK, CHUNK, false);
  CHECK_EQ (cache_flush (cache), -EIO);
  CHECK (objstore_fault_count (os) >= 1);
  memset (shadow + 50 * CHUNK, 0, CHUNK);
  CHECK_EQ (cache_zero (cache, CHUNK, 50 * CHUNK, false, false), 0);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  {
    int r = 0;
    for (int k = 0; k < 3 && (r = cache_flush (cache)) != 0; ++k)
      ;
    CHECK_EQ (r, 0);
  }
  CHECK_EQ (stop (), 0);
  verify_store ("an ambiguous put, then a trim");
}

/* Fill the cache with dirty chunks whose uploads fail, so that no buffer
 * can be had (writers then fail with EIO).  Returns how many were written.
 */
static unsigned
jam_cache (void)
{
  static uint8_t chunk[CHUNK];
  unsigned i;
  int r = 0;

  objstore_fault_set (os, FAULT_OP_PUT, FAULT_FAIL, -EIO, 0, UINT32_MAX);
  for (i = 0; i < 32; ++i) {
    for (uint32_t j = 0; j < CHUNK; ++j)
      chunk[j] = rnd ();
    r = cache_pwrite (cache, chunk, CHUNK, (uint64_t) i * CHUNK, false);
    if (r < 0)
      break;
    memcpy (shadow + (uint64_t) i * CHUNK, chunk, CHUNK);
  }
  CHECK_EQ (r, -EIO);
  return i;
}

/* Reads keep working when the cache is full of dirty data that cannot
 * be uploaded: a stored chunk that is not cached is read around the
 * cache instead of failing with EIO (or waiting for uploads).
 */
static void
test_read_when_jammed (void)
{
  unsigned n;

  /* Chunks 40..47 get objects first. */
  start (16 << 20, 2, 0);
  write_shadow (40 * CHUNK, 8 * CHUNK, false);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);

  start (1, 2, 0);
  n = jam_cache ();
  CHECK (n < 40);
  CHECK_EQ (cache_pread (cache, buf, 8 * CHUNK, 40 * CHUNK), 0);
  CHECK (memcmp (buf, shadow + 40 * CHUNK, 8 * CHUNK) == 0);
  CHECK_EQ (cache_pread (cache, buf, 100, 44 * CHUNK + 7), 0);
  CHECK (memcmp (buf, shadow + 44 * CHUNK + 7, 100) == 0);
  /* ... and in the failed state too. */
  cache_fail (cache, "test");
  CHECK_EQ (cache_pread (cache, buf, 3 * CHUNK, 41 * CHUNK + 5), 0);
  CHECK (memcmp (buf, shadow + 41 * CHUNK + 5, 3 * CHUNK) == 0);
  CHECK_EQ (cache_pread (cache, buf, (uint64_t) n * CHUNK, 0), 0);
  CHECK (memcmp (buf, shadow, (uint64_t) n * CHUNK) == 0);
  objstore_fault_set (os, 0, FAULT_NONE, 0, 0, 0);
  CHECK_EQ (stop (), -EIO);               /* the failed state drops them */
  resync_shadow ();
}

/* A whole-chunk writer waiting for memory when the cache fails must not
 * leave a recycled buffer (another chunk's bytes) as the chunk's content.
 * The window is a race (an upload frees a buffer, cache_fail comes before
 * the writer runs), so go round several times.
 */
struct chunk_writer {
  pthread_t t;
  uint64_t idx;
  int r;
};

static void *
chunk_writer_thread (void *arg)
{
  struct chunk_writer *w = arg;
  static uint8_t data[CHUNK];

  memset (data, 0xab, CHUNK);
  w->r = cache_pwrite (cache, data, CHUNK, w->idx * CHUNK, false);
  return NULL;
}

static void
test_failed_writer_leaves_no_garbage (void)
{
  for (int round = 0; round < 12; ++round) {
    struct chunk_writer w = { .idx = 60 };
    unsigned i;

    start (1, 1, 0);
    /* Fill memory with dirty chunks whose uploads hang. */
    objstore_fault_set (os, FAULT_OP_PUT, FAULT_STALL, 0, 0, UINT32_MAX);
    for (i = 0; i < 4; ++i)
      write_shadow ((uint64_t) (10 + i) * CHUNK, CHUNK, false);
    wait_stalled (1);
    pthread_create (&w.t, NULL, chunk_writer_thread, &w);
    usleep (50 * 1000 + round * 5000);
    /* An upload ends (a CLEAN, evictable entry), and the lock is lost. */
    objstore_fault_release (os);
    cache_fail (cache, "test");
    pthread_join (w.t, NULL);
    if (w.r == 0)
      memset (shadow + 60 * CHUNK, 0xab, CHUNK);   /* written before */
    CHECK_EQ (cache_pread (cache, buf, CHUNK, 60 * CHUNK), 0);
    CHECK (memcmp (buf, shadow + 60 * CHUNK, CHUNK) == 0);
    stop ();
    resync_shadow ();
  }
}

/* Fast zero is refused (nothing changed) only when it would need a fetch:
 * part of a stored chunk that is not cached.
 */
static void
test_fast_zero (void)
{
  start (16 << 20, 2, 0);
  write_shadow (20 * CHUNK, 2 * CHUNK, false);
  make_absent (30);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);

  start (16 << 20, 2, 0);
  CHECK_EQ (cache_zero (cache, 100, 20 * CHUNK + 5, false, true),
            -EOPNOTSUPP);
  CHECK_EQ (cache_zero (cache, 2 * CHUNK, 20 * CHUNK + 5, false, true),
            -EOPNOTSUPP);
  /* Whole chunks, never-stored chunks: fast. */
  memset (shadow + 21 * CHUNK, 0, CHUNK);
  CHECK_EQ (cache_zero (cache, CHUNK, 21 * CHUNK, false, true), 0);
  memset (shadow + 30 * CHUNK + 9, 0, 1000);
  CHECK_EQ (cache_zero (cache, 1000, 30 * CHUNK + 9, false, true), 0);
  /* Once cached, a partial zero is a memset. */
  CHECK_EQ (cache_pread (cache, buf, 1, 20 * CHUNK), 0);
  memset (shadow + 20 * CHUNK + 5, 0, 100);
  CHECK_EQ (cache_zero (cache, 100, 20 * CHUNK + 5, false, true), 0);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  CHECK_EQ (cache_flush (cache), 0);
  CHECK_EQ (stop (), 0);
  verify_store ("fast zero");
}

/* An upload the store refuses because the lock's write deadline passed
 * (-ENOLCK) puts the cache in the failed state at once: the flush fails,
 * no retry goes on for ever, reads work.
 */
static void
test_fenced_upload_fails_cache (void)
{
  struct cs_fence fence;

  /* upload-delay 3600: the partial write below stays dirty until the
   * flush, which comes after the fence closed (with no delay a worker
   * could store it first, and the flush rightly succeeds).
   */
  start (16 << 20, 2, 3600);
  cs_fence_init (&fence, CS_FENCE_NONE);
  objstore_set_fence (os, &fence);
  write_shadow (33 * CHUNK, 10, false);
  cs_fence_close (&fence);
  CHECK_EQ (cache_flush (cache), -EIO);
  CHECK (cache_failed (cache));
  CHECK_EQ (cache_pwrite (cache, "x", 1, 0, false), -EIO);
  CHECK_EQ (cache_pread (cache, buf, SIZE, 0), 0);
  CHECK (memcmp (buf, shadow, SIZE) == 0);
  CHECK_EQ (stop (), -EIO);
  resync_shadow ();
}

int
main (void)
{
  unit_init ();
  dir = unit_tmpdir ();
  test_random ();
  test_no_get_for_holes ();
  test_flush_waits_for_inflight ();
  test_stall_does_not_block_others ();
  test_flush_reports_failure ();
  test_fua ();
  test_zero_deletes ();
  test_zero_twice ();
  test_readahead ();
  test_ra_two_streams ();
  test_ra_window_grows ();
  test_ra_random ();
  test_ra_dropped_stream_cancels ();
  test_ra_holes_and_end ();
  test_ra_pressure_keeps_dirty ();
  test_queued_fetch_not_held_for_a_slot ();
  test_readahead_does_not_starve_uploads ();
  test_corrupt_reads ();
  test_failed_readahead ();
  test_failed_state ();
  test_concurrent ();
  test_back_pressure ();
  test_back_pressure_store_down ();
  test_ambiguous_put_then_trim ();
  test_read_when_jammed ();
  test_failed_writer_leaves_no_garbage ();
  test_fast_zero ();
  test_fenced_upload_fails_cache ();
  unit_rmdir (dir);
  return unit_done ("test-cache");
}
