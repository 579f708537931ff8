/* s3chunk tests: random parallel I/O against an NBD server, every read
 * checked against a shadow copy of the disk held in memory.
 *
 * The working area is split into one private region per thread plus one
 * shared region (the last one).  A thread is the only writer of its own
 * region, so the shadow of that region is exact whatever the interleaving;
 * region boundaries are deliberately not chunk-aligned, so neighbouring
 * threads write different bytes of the same chunk at the same time (the
 * cache's read-modify-write must keep both).  Operations on the shared
 * region are serialised by a mutex, and a read there is preceded by a flush
 * if another connection wrote since the last flush: with multi-conn, a
 * flush on any connection makes every completed write visible on all of
 * them, which is exactly what the NBD spec promises and no more.
 *
 * Requests: reads, writes (random, compressible, zero and one-byte data,
 * sometimes FUA), zero and trim (with and without FUA, fast-zero), flushes
 * and block status (an extent reported as zero must be zero in the shadow).
 * Sizes run from 1 byte to a few chunks, at unaligned offsets, chunk-aligned
 * offsets and just before chunk boundaries.
 *
 * The shadow can be saved (--shadow-out) and loaded (--shadow-in) so a later
 * run, after nbdkit restarted, verifies what the store kept.  Trimmed bytes
 * are expected to read as zeroes, as nbdkit-s3chunk-plugin(1) documents.
 *
 * Exit status: 0 when every check passed, 1 on a mismatch or an NBD error
 * (with a message naming the offset, the length and the first differing
 * byte), 2 on bad usage.
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "params.h"

#define MAX_CONNECTIONS 64      /* the shared region tracks them in a mask */
#define MAX_THREADS 256
#define VERIFY_PIECE (4 * 1024 * 1024)
#define HISTORY 32              /* last operations kept per thread */

enum op_type { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_STATUS,
               OP__MAX };
static const char *op_name[] = { "read", "write", "zero", "trim", "flush",
                                 "block-status" };

struct history_entry {
  enum op_type type;
  uint64_t offset, len;
  uint32_t flags;
  bool shared;
};

struct thread {
  unsigned idx;
  pthread_t tid;
  struct nbd_handle *h;
  unsigned conn;
  uint64_t lo, hi;              /* private region [lo, hi) */
  uint64_t rng;
  unsigned char *buf;           /* request buffer, max_len bytes */
  uint64_t ops_done[OP__MAX];
  uint64_t bytes_read, bytes_written;
  struct history_entry hist[HISTORY];
  unsigned nhist;
};

/* Configuration. */
static const char *socket_path;
static uint64_t expect_size;
static uint64_t seed;
static bool seed_given;
static unsigned nthreads = 4, nconns;
static uint64_t ops_per_thread = 2000;
static uint64_t area_off, area_len;
static bool area_len_given;
static const char *shadow_in, *shadow_out;
static bool verify_only, no_flush;
static uint64_t chunk;

/* State. */
static uint64_t disk_size;
static unsigned char *shadow;
static struct nbd_handle *handles[MAX_CONNECTIONS];
static bool have_status;
static uint64_t max_len;
static uint64_t shared_lo, shared_hi;
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t shared_dirty;   /* connections that wrote since a flush */
static atomic_bool failed;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: nbd-random-io --socket SOCK [options]\n"
"  --socket SOCK        NBD server on this Unix socket (required)\n"
"  --size N             fail unless the disk has this size\n"
"  --seed N             random seed (default: from the clock; printed)\n"
"  --threads N          client threads (default 4)\n"
"  --connections N      NBD connections shared by the threads (default:\n"
"                       one per thread, at most %d)\n"
"  --ops N              operations per thread (default 2000)\n"
"  --offset N --length N  only touch this area (default: the whole disk);\n"
"                       the rest must keep the content of --shadow-in\n"
"                       (zeroes without it)\n"
"  --chunk-size N       chunk size to aim at (default: the server's\n"
"                       preferred block size)\n"
"  --shadow-in FILE     expected content at the start (a shorter file means\n"
"                       zeroes after its end); the disk is checked first\n"
"  --shadow-out FILE    save the expected content at the end\n"
"  --verify-only        only compare the disk with --shadow-in (or zeroes)\n"
"  --no-flush           do not flush at the end (nor in between, except\n"
"                       the flushes the shared region needs)\n"
"Sizes take K, M, G suffixes (powers of 1024).\n",
           MAX_CONNECTIONS);
}

static void
die (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbd-random-io: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  exit (1);
}

static uint64_t
parse_size (const char *opt, const char *s)
{
  uint64_t v;

  if (params_parse_size (s, &v) < 0) {
    fprintf (stderr, "nbd-random-io: %s %s: expected a number with an "
             "optional K, M, G or T suffix\n", opt, s);
    exit (2);
  }
  return v;
}

/* splitmix64: small, fast, good enough, and reproducible from the seed. */
static uint64_t
rnd (uint64_t *state)
{
  uint64_t z = (*state += UINT64_C (0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t
rnd_below (uint64_t *state, uint64_t n)
{
  return n ? rnd (state) % n : 0;
}

static void
remember (struct thread *t, enum op_type type, uint64_t offset, uint64_t len,
          uint32_t flags, bool shared)
{
  struct history_entry *e = &t->hist[t->nhist++ % HISTORY];

  e->type = type;
  e->offset = offset;
  e->len = len;
  e->flags = flags;
  e->shared = shared;
}

/* Print the thread's last operations: what led to a failure. */
static void
print_history (const struct thread *t)
{
  unsigned n = t->nhist < HISTORY ? t->nhist : HISTORY;
  unsigned i;

  fprintf (stderr, "nbd-random-io: thread %u's last %u operations "
           "(oldest first):\n", t->idx, n);
  for (i = t->nhist - n; i < t->nhist; ++i) {
    const struct history_entry *e = &t->hist[i % HISTORY];
    fprintf (stderr, "  #%u %s offset %" PRIu64 " length %" PRIu64
             "%s%s%s\n", i, op_name[e->type], e->offset, e->len,
             e->flags & LIBNBD_CMD_FLAG_FUA ? " FUA" : "",
             e->flags & LIBNBD_CMD_FLAG_FAST_ZERO ? " FAST_ZERO" : "",
             e->shared ? " (shared region)" : "");
  }
}

static void
fail_nbd (struct thread *t, const char *what, uint64_t offset, uint64_t len)
{
  pthread_mutex_lock (&report_mu);
  fprintf (stderr, "nbd-random-io: FAILED: %s offset %" PRIu64 " length %"
           PRIu64 ": %s (errno %d)\n", what, offset, len, nbd_get_error (),
           nbd_get_errno ());
  if (t)
    print_history (t);
  pthread_mutex_unlock (&report_mu);
  failed = true;
}

/* Compare got[0..len) read at offset with the shadow.  Returns false, with a
 * report, on a difference.
 */
static bool
check_data (struct thread *t, const char *what, const unsigned char *got,
            uint64_t offset, uint64_t len)
{
  const unsigned char *exp = shadow + offset;
  uint64_t i, first, ndiff = 0, last = 0;

  if (memcmp (got, exp, len) == 0)
    return true;
  for (i = 0; i < len && got[i] == exp[i]; ++i)
    ;
  first = i;
  for (; i < len; ++i)
    if (got[i] != exp[i]) {
      ndiff++;
      last = i;
    }

  pthread_mutex_lock (&report_mu);
  fprintf (stderr,
           "nbd-random-io: MISMATCH in %s: offset %" PRIu64 " length %" PRIu64
           "\n"
           "  first differing byte at offset %" PRIu64 " (chunk %" PRIu64
           " + %" PRIu64 "): expected 0x%02x, got 0x%02x\n"
           "  %" PRIu64 " byte(s) differ, the last at offset %" PRIu64 "\n"
           "  seed %" PRIu64 " (rerun with --seed %" PRIu64 ")\n",
           what, offset, len, offset + first, (offset + first) / chunk,
           (offset + first) % chunk, exp[first], got[first], ndiff,
           offset + last, seed, seed);
  fprintf (stderr, "  expected:");
  for (i = first; i < len && i < first + 16; ++i)
    fprintf (stderr, " %02x", exp[i]);
  fprintf (stderr, "\n  got:     ");
  for (i = first; i < len && i < first + 16; ++i)
    fprintf (stderr, " %02x", got[i]);
  fprintf (stderr, "\n");
  if (t)
    print_history (t);
  pthread_mutex_unlock (&report_mu);
  failed = true;
  return false;
}

/* Block status: every extent flagged zero must be zeroes in the shadow,
 * within [lo, hi) (the bytes this thread knows).
 */
struct status_check {
  struct thread *t;
  uint64_t lo, hi;
  bool bad;
  uint64_t covered;             /* bytes of the answer, to check progress */
};

static int
status_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct status_check *sc = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i], a, b, j;
    uint32_t flags = entries[i + 1];

    sc->covered += len;
    if (flags & LIBNBD_STATE_ZERO) {
      a = offset > sc->lo ? offset : sc->lo;
      b = offset + len < sc->hi ? offset + len : sc->hi;
      for (j = a; j < b; ++j)
        if (shadow[j] != 0) {
          pthread_mutex_lock (&report_mu);
          fprintf (stderr,
                   "nbd-random-io: MISMATCH in block status: extent at "
                   "offset %" PRIu64 " length %" PRIu64 " is reported "
                   "%s%s, but offset %" PRIu64 " (chunk %" PRIu64 ") holds "
                   "0x%02x; seed %" PRIu64 "\n",
                   offset, len, flags & LIBNBD_STATE_HOLE ? "hole," : "",
                   "zero", j, j / chunk, shadow[j], seed);
          if (sc->t)
            print_history (sc->t);
          pthread_mutex_unlock (&report_mu);
          sc->bad = true;
          failed = true;
          break;
        }
    }
    offset += len;
  }
  return 0;
}

static bool
check_status (struct thread *t, struct nbd_handle *h, uint64_t offset,
              uint64_t len, uint64_t lo, uint64_t hi)
{
  struct status_check sc = { .t = t, .lo = lo, .hi = hi };

  if (nbd_block_status (h, len, offset,
                        (nbd_extent_callback) { .callback = status_cb,
                                                .user_data = &sc }, 0) == -1) {
    fail_nbd (t, "block status", offset, len);
    return false;
  }
  if (sc.covered == 0) {
    fprintf (stderr, "nbd-random-io: block status at offset %" PRIu64
             " returned no extent\n", offset);
    failed = true;
    return false;
  }
  return !sc.bad;
}

/* Fill buf with data of a random kind: incompressible, compressible text,
 * zeroes or one repeated byte (the cache and the codec treat them apart).
 */
static void
fill (uint64_t *rng, unsigned char *buf, uint64_t len)
{
  uint64_t kind = rnd_below (rng, 10), i, v;
  static const char words[] = "the quick brown fox jumps over the lazy "
    "s3chunk log line 2024-01-01T00:00:00Z INFO request ok\n";

  if (kind < 5) {
    for (i = 0; i + 8 <= len; i += 8) {
      v = rnd (rng);
      memcpy (buf + i, &v, 8);
    }
    for (; i < len; ++i)
      buf[i] = rnd (rng);
  }
  else if (kind < 8) {
    uint64_t start = rnd_below (rng, sizeof words - 1);
    for (i = 0; i < len; ++i)
      buf[i] = words[(start + i) % (sizeof words - 1)];
    if (len)
      buf[rnd_below (rng, len)] ^= 0x20;
  }
  else if (kind < 9)
    memset (buf, 0, len);
  else
    memset (buf, 1 + rnd_below (rng, 255), len);
}

/* Pick a request in [lo, hi): sizes from 1 byte to a few chunks, at
 * unaligned offsets, chunk-aligned offsets and across chunk boundaries.
 */
static void
pick (uint64_t *rng, uint64_t lo, uint64_t hi, uint64_t *offset,
      uint64_t *len)
{
  uint64_t r = rnd_below (rng, 100), off, l, c;

  if (r < 25)
    l = 1 + rnd_below (rng, 512);
  else if (r < 50)
    l = 1 + rnd_below (rng, chunk);
  else if (r < 70)
    l = chunk * (1 + rnd_below (rng, 3));
  else
    l = 1 + rnd_below (rng, 3 * chunk + chunk / 2);

  off = lo + rnd_below (rng, hi - lo);
  r = rnd_below (rng, 4);
  if (r == 2) {                 /* chunk-aligned */
    c = (off + chunk - 1) / chunk * chunk;
    if (c < hi)
      off = c;
  }
  else if (r == 3) {            /* just before a chunk boundary */
    c = (off + chunk - 1) / chunk * chunk;
    if (c > lo + 4096 && c < hi)
      off = c - 1 - rnd_below (rng, 4096);
  }
  if (l > max_len)
    l = max_len;
  if (off + l > hi)
    l = hi - off;
  *offset = off;
  *len = l;
}

static bool
do_read (struct thread *t, uint64_t offset, uint64_t len, const char *what)
{
  if (nbd_pread (t->h, t->buf, len, offset, 0) == -1) {
    fail_nbd (t, "read", offset, len);
    return false;
  }
  t->bytes_read += len;
  return check_data (t, what, t->buf, offset, len);
}

/* One operation on [lo, hi).  Called with shared_mu held for the shared
 * region.  Returns false on failure.
 */
static bool
one_op (struct thread *t, bool shared)
{
  uint64_t lo = shared ? shared_lo : t->lo;
  uint64_t hi = shared ? shared_hi : t->hi;
  uint64_t offset, len, r;
  uint32_t flags = 0;
  enum op_type type;

  if (lo >= hi)
    return true;
  pick (&t->rng, lo, hi, &offset, &len);
  r = rnd_below (&t->rng, 100);
  if (r < 36) type = OP_READ;
  else if (r < 72) type = OP_WRITE;
  else if (r < 82) type = OP_ZERO;
  else if (r < 92) type = OP_TRIM;
  else if (r < 95) type = no_flush ? OP_READ : OP_FLUSH;
  else type = have_status ? OP_STATUS : OP_READ;
  if ((type == OP_WRITE || type == OP_ZERO || type == OP_TRIM) &&
      !no_flush && rnd_below (&t->rng, 4) == 0)
    flags |= LIBNBD_CMD_FLAG_FUA;
  if (type == OP_ZERO && rnd_below (&t->rng, 4) == 0)
    flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
  if (type == OP_FLUSH)
    offset = len = 0;
  remember (t, type, offset, len, flags, shared);
  t->ops_done[type]++;

  switch (type) {
  case OP_READ:
    if (shared && (shared_dirty & ~(UINT64_C (1) << t->conn))) {
      /* Another connection wrote here: the spec promises its data only
       * after a flush (multi-conn: on any connection).
       */
      remember (t, OP_FLUSH, 0, 0, 0, true);
      if (nbd_flush (t->h, 0) == -1) {
        fail_nbd (t, "flush", 0, 0);
        return false;
      }
      shared_dirty = 0;
    }
    return do_read (t, offset, len, shared ? "read (shared region)" : "read");

  case OP_WRITE:
    fill (&t->rng, t->buf, len);
    if (nbd_pwrite (t->h, t->buf, len, offset, flags) == -1) {
      fail_nbd (t, "write", offset, len);
      return false;
    }
    memcpy (shadow + offset, t->buf, len);
    t->bytes_written += len;
    break;

  case OP_ZERO:
    if (nbd_zero (t->h, len, offset, flags) == -1 &&
        !((flags & LIBNBD_CMD_FLAG_FAST_ZERO) && nbd_get_errno () == ENOTSUP &&
          nbd_zero (t->h, len, offset,
                    flags & ~LIBNBD_CMD_FLAG_FAST_ZERO) != -1)) {
      /* A fast zero may be refused with ENOTSUP (the NBD protocol): then
       * a client zeroes the slow way, as done here.
       */
      fail_nbd (t, "zero", offset, len);
      return false;
    }
    memset (shadow + offset, 0, len);
    break;

  case OP_TRIM:
    if (nbd_trim (t->h, len, offset, flags) == -1) {
      fail_nbd (t, "trim", offset, len);
      return false;
    }
    memset (shadow + offset, 0, len);
    break;

  case OP_FLUSH:
    if (nbd_flush (t->h, 0) == -1) {
      fail_nbd (t, "flush", 0, 0);
      return false;
    }
    if (shared)
      shared_dirty = 0;
    return true;

  case OP_STATUS:
    return check_status (t, t->h, offset, len, lo, hi);

  case OP__MAX:
    abort ();
  }

  if (shared)
    shared_dirty |= UINT64_C (1) << t->conn;
  /* Now and then read back what was just written: the freshly dirty chunk
   * is the interesting case for the cache.
   */
  if (rnd_below (&t->rng, 8) == 0 && !shared) {
    remember (t, OP_READ, offset, len, 0, false);
    return do_read (t, offset, len,
                    type == OP_WRITE ? "read after write"
                    : type == OP_ZERO ? "read after zero" : "read after trim");
  }
  return true;
}

static void *
thread_main (void *arg)
{
  struct thread *t = arg;
  uint64_t i;

  for (i = 0; i < ops_per_thread && !failed; ++i) {
    if (shared_hi > shared_lo && rnd_below (&t->rng, 100) < 15) {
      bool ok;
      pthread_mutex_lock (&shared_mu);
      ok = one_op (t, true);
      pthread_mutex_unlock (&shared_mu);
      if (!ok)
        break;
    }
    else if (!one_op (t, false))
      break;
  }
  return NULL;
}

/* Read [offset, offset+len) in pieces and compare with the shadow. */
static bool
verify_range (struct nbd_handle *h, uint64_t offset, uint64_t len,
              const char *what)
{
  unsigned char *buf = malloc (VERIFY_PIECE);
  uint64_t n;
  bool ok = true;

  if (buf == NULL)
    die ("out of memory");
  while (len > 0 && ok) {
    n = len < VERIFY_PIECE ? len : VERIFY_PIECE;
    if (nbd_pread (h, buf, n, offset, 0) == -1) {
      fail_nbd (NULL, what, offset, n);
      ok = false;
      break;
    }
    ok = check_data (NULL, what, buf, offset, n);
    offset += n;
    len -= n;
  }
  free (buf);
  return ok;
}

/* Block status over the whole disk, now quiescent: the shadow is exact. */
static bool
verify_status_all (struct nbd_handle *h)
{
  uint64_t offset = 0, step = 1024 * 1024 * 1024;

  while (offset < disk_size) {
    uint64_t n = disk_size - offset < step ? disk_size - offset : step;
    struct status_check sc = { .lo = 0, .hi = disk_size };

    if (nbd_block_status (h, n, offset,
                          (nbd_extent_callback) { .callback = status_cb,
                                                  .user_data = &sc },
                          0) == -1) {
      fail_nbd (NULL, "block status", offset, n);
      return false;
    }
    if (sc.bad)
      return false;
    if (sc.covered == 0) {
      fprintf (stderr, "nbd-random-io: block status at offset %" PRIu64
               " returned no extent\n", offset);
      return false;
    }
    offset += sc.covered;
  }
  return true;
}

static void
load_shadow (const char *file)
{
  FILE *fp = fopen (file, "rb");
  struct stat st;

  if (fp == NULL || fstat (fileno (fp), &st) == -1)
    die ("%s: %m", file);
  if ((uint64_t) st.st_size > disk_size)
    die ("%s: %" PRIu64 " bytes, larger than the disk (%" PRIu64 " bytes)",
         file, (uint64_t) st.st_size, disk_size);
  if (st.st_size > 0 && fread (shadow, st.st_size, 1, fp) != 1)
    die ("%s: short read", file);
  fclose (fp);
  printf ("nbd-random-io: expected content: %s (%" PRIu64 " bytes)%s\n",
          file, (uint64_t) st.st_size,
          (uint64_t) st.st_size < disk_size ? ", zeroes after it" : "");
}

static void
save_shadow (const char *file)
{
  FILE *fp = fopen (file, "wb");

  if (fp == NULL)
    die ("%s: %m", file);
  if (fwrite (shadow, disk_size, 1, fp) != 1 || fclose (fp) != 0)
    die ("%s: write failed: %m", file);
  printf ("nbd-random-io: expected content saved to %s\n", file);
}

static struct nbd_handle *
connect_one (void)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL)
    die ("nbd_create: %s", nbd_get_error ());
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_unix (h, socket_path) == -1)
    die ("connect to %s: %s", socket_path, nbd_get_error ());
  return h;
}

int
main (int argc, char *argv[])
{
  enum { OPT_SOCKET = 256, OPT_SIZE, OPT_SEED, OPT_THREADS, OPT_CONNS,
         OPT_OPS, OPT_OFFSET, OPT_LENGTH, OPT_CHUNK, OPT_IN, OPT_OUT,
         OPT_VERIFY, OPT_NOFLUSH, OPT_HELP };
  static const struct option longopts[] = {
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "size", required_argument, NULL, OPT_SIZE },
    { "seed", required_argument, NULL, OPT_SEED },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "connections", required_argument, NULL, OPT_CONNS },
    { "ops", required_argument, NULL, OPT_OPS },
    { "offset", required_argument, NULL, OPT_OFFSET },
    { "length", required_argument, NULL, OPT_LENGTH },
    { "chunk-size", required_argument, NULL, OPT_CHUNK },
    { "shadow-in", required_argument, NULL, OPT_IN },
    { "shadow-out", required_argument, NULL, OPT_OUT },
    { "verify-only", no_argument, NULL, OPT_VERIFY },
    { "no-flush", no_argument, NULL, OPT_NOFLUSH },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 }
  };
  struct thread *threads;
  uint64_t per, totals[OP__MAX] = { 0 }, bytes_r = 0, bytes_w = 0;
  unsigned i, j;
  int c, err;
  time_t t0 = time (NULL);
  bool ok;

  setvbuf (stdout, NULL, _IOLBF, 0);
  while ((c = getopt_long (argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_SOCKET: socket_path = optarg; break;
    case OPT_SIZE: expect_size = parse_size ("--size", optarg); break;
    case OPT_SEED:
      seed = parse_size ("--seed", optarg);
      seed_given = true;
      break;
    case OPT_THREADS: nthreads = parse_size ("--threads", optarg); break;
    case OPT_CONNS: nconns = parse_size ("--connections", optarg); break;
    case OPT_OPS: ops_per_thread = parse_size ("--ops", optarg); break;
    case OPT_OFFSET: area_off = parse_size ("--offset", optarg); break;
    case OPT_LENGTH:
      area_len = parse_size ("--length", optarg);
      area_len_given = true;
      break;
    case OPT_CHUNK: chunk = parse_size ("--chunk-size", optarg); break;
    case OPT_IN: shadow_in = optarg; break;
    case OPT_OUT: shadow_out = optarg; break;
    case OPT_VERIFY: verify_only = true; break;
    case OPT_NOFLUSH: no_flush = true; break;
    case OPT_HELP: usage (stdout); exit (0);
    default: usage (stderr); exit (2);
    }
  }
  if (optind != argc || socket_path == NULL) {
    usage (stderr);
    exit (2);
  }
  if (nthreads < 1 || nthreads > MAX_THREADS) {
    fprintf (stderr, "nbd-random-io: --threads: 1 to %d\n", MAX_THREADS);
    exit (2);
  }
  if (nconns == 0)
    nconns = verify_only ? 1
      : nthreads < MAX_CONNECTIONS ? nthreads : MAX_CONNECTIONS;
  if (nconns > MAX_CONNECTIONS || nconns > nthreads) {
    fprintf (stderr, "nbd-random-io: --connections: 1 to --threads "
             "(at most %d)\n", MAX_CONNECTIONS);
    exit (2);
  }
  if (!seed_given)
    seed = (uint64_t) time (NULL) * 1000003 + getpid ();

  for (i = 0; i < nconns; ++i)
    handles[i] = connect_one ();
  disk_size = nbd_get_size (handles[0]);
  if ((int64_t) disk_size == -1)
    die ("get size: %s", nbd_get_error ());
  if (expect_size && disk_size != expect_size)
    die ("MISMATCH: the disk has %" PRIu64 " bytes, expected %" PRIu64,
         disk_size, expect_size);
  if (chunk == 0) {
    int64_t pref = nbd_get_block_size (handles[0], LIBNBD_SIZE_PREFERRED);
    chunk = pref > 0 ? (uint64_t) pref : 64 * 1024;
  }
  have_status = nbd_can_meta_context (handles[0],
                                      LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (!area_len_given)
    area_len = area_off < disk_size ? disk_size - area_off : 0;
  if (area_off + area_len > disk_size || area_len == 0)
    die ("--offset %" PRIu64 " --length %" PRIu64 ": not inside the disk "
         "(%" PRIu64 " bytes)", area_off, area_len, disk_size);
  max_len = 4 * chunk;
  if (max_len > 32 * 1024 * 1024)
    max_len = 32 * 1024 * 1024;

  shadow = calloc (1, disk_size);
  if (shadow == NULL)
    die ("cannot allocate a shadow of %" PRIu64 " bytes", disk_size);
  if (shadow_in)
    load_shadow (shadow_in);

  if (verify_only)
    printf ("nbd-random-io: disk %" PRIu64 " bytes, chunk %" PRIu64 "%s\n",
            disk_size, chunk, have_status ? "" : ", no block status");
  else
    printf ("nbd-random-io: seed %" PRIu64 ", disk %" PRIu64 " bytes, chunk %"
            PRIu64 ", area [%" PRIu64 ", %" PRIu64 "), %u thread(s) on %u "
            "connection(s), %" PRIu64 " ops each%s%s\n",
            seed, disk_size, chunk, area_off, area_off + area_len, nthreads,
            nconns, ops_per_thread, no_flush ? ", no final flush" : "",
            have_status ? "" : ", no block status");

  /* Whatever the disk holds now must be what we expect. */
  printf ("nbd-random-io: checking the whole disk against %s\n",
          shadow_in ? shadow_in : "zeroes");
  if (!verify_range (handles[0], 0, disk_size, "initial verify") ||
      (have_status && !verify_status_all (handles[0])))
    exit (1);
  if (verify_only) {
    /* Leave cleanly (NBD_CMD_DISC): nbdkit 1.32 leaks a little memory
     * when a client just drops the connection, which valgrind and ASan
     * runs would report.
     */
    for (i = 0; i < nconns; ++i) {
      nbd_shutdown (handles[i], 0);
      nbd_close (handles[i]);
    }
    free (shadow);
    printf ("nbd-random-io: OK: disk matches\n");
    exit (0);
  }

  /* Regions: nthreads private ones and a shared one, an eighth of the area,
   * at the end.  Boundaries are pushed off chunk alignment on purpose.
   */
  threads = calloc (nthreads, sizeof *threads);
  if (threads == NULL)
    die ("out of memory");
  {
    uint64_t rng = seed, shared_len = area_len / 8;
    uint64_t priv = area_len - shared_len, b;

    per = priv / nthreads;
    for (i = 0; i < nthreads; ++i) {
      struct thread *t = &threads[i];
      t->idx = i;
      t->conn = i % nconns;
      t->h = handles[t->conn];
      t->rng = seed ^ (UINT64_C (0x5851f42d4c957f2d) * (i + 1));
      b = area_off + i * per;
      if (i > 0 && per > 2000)
        b += 1 + rnd_below (&rng, 997);
      t->lo = b;
      t->buf = malloc (max_len);
      if (t->buf == NULL)
        die ("out of memory");
    }
    for (i = 0; i + 1 < nthreads; ++i)
      threads[i].hi = threads[i + 1].lo;
    b = area_off + priv;
    if (per > 2000 && shared_len > 2000)
      b += 1 + rnd_below (&rng, 997);
    threads[nthreads - 1].hi = b;
    shared_lo = b;
    shared_hi = area_off + area_len;
  }
  for (i = 0; i < nthreads; ++i)
    printf ("nbd-random-io: thread %u: connection %u, region [%" PRIu64
            ", %" PRIu64 ")\n", i, threads[i].conn, threads[i].lo,
            threads[i].hi);
  printf ("nbd-random-io: shared region [%" PRIu64 ", %" PRIu64 ")\n",
          shared_lo, shared_hi);
  fflush (stdout);

  for (i = 0; i < nthreads; ++i) {
    err = pthread_create (&threads[i].tid, NULL, thread_main, &threads[i]);
    if (err)
      die ("pthread_create: %s", strerror (err));
  }
  for (i = 0; i < nthreads; ++i)
    pthread_join (threads[i].tid, NULL);

  for (i = 0; i < nthreads; ++i) {
    for (j = 0; j < OP__MAX; ++j)
      totals[j] += threads[i].ops_done[j];
    bytes_r += threads[i].bytes_read;
    bytes_w += threads[i].bytes_written;
  }
  printf ("nbd-random-io: %" PRIu64 " reads (%" PRIu64 " bytes), %" PRIu64
          " writes (%" PRIu64 " bytes), %" PRIu64 " zeroes, %" PRIu64
          " trims, %" PRIu64 " flushes, %" PRIu64 " block status, in %ld s\n",
          totals[OP_READ], bytes_r, totals[OP_WRITE], bytes_w,
          totals[OP_ZERO], totals[OP_TRIM], totals[OP_FLUSH],
          totals[OP_STATUS], (long) (time (NULL) - t0));
  if (failed) {
    fprintf (stderr, "nbd-random-io: FAILED (seed %" PRIu64 ")\n", seed);
    exit (1);
  }

  if (!no_flush) {
    printf ("nbd-random-io: final flush\n");
    for (i = 0; i < nconns; ++i)
      if (nbd_flush (handles[i], 0) == -1) {
        fail_nbd (NULL, "final flush", 0, 0);
        exit (1);
      }
  }

  /* Without the final flush, reading other connections' writes is beyond
   * what the spec promises, but this server has one cache for all of them.
   */
  printf ("nbd-random-io: checking the whole disk and its extents\n");
  ok = verify_range (handles[0], 0, disk_size, "final verify") &&
    (!have_status || verify_status_all (handles[0]));
  if (shadow_out)
    save_shadow (shadow_out);
  for (i = 0; i < nconns; ++i) {
    if (nbd_shutdown (handles[i], 0) == -1)
      fprintf (stderr, "nbd-random-io: shutdown: %s\n", nbd_get_error ());
    nbd_close (handles[i]);
  }
  for (i = 0; i < nthreads; ++i)
    free (threads[i].buf);
  free (threads);
  free (shadow);
  if (!ok) {
    fprintf (stderr, "nbd-random-io: FAILED (seed %" PRIu64 ")\n", seed);
    exit (1);
  }
  printf ("nbd-random-io: OK\n");
  return 0;
}
