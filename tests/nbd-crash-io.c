/* s3chunk tests: block-level crash consistency.  Writes blocks from several
 * connections with flushes in between, keeps what the server acknowledged,
 * and after the server was killed (kill -9) and restarted checks that
 *
 *   - every block holds what the last write acknowledged before the last
 *     completed flush (or FUA write) put there, or what a later write put
 *     there: flushed data is never lost, and
 *   - every block holds one of the values ever written there, or zeroes:
 *     never garbage, never a mix inside one block.
 *
 * Blocks are BLOCK (4096) bytes.  The disk area is cut into stripes of
 * STRIPE blocks, owned in turn by the threads (thread t owns stripes t,
 * t + T, t + 2T, ...), so each block has exactly one writer and its writes
 * are totally ordered, while neighbouring stripes of one chunk are written
 * by different connections at the same time (the cache's read-modify-write
 * of a chunk must keep both).  A write covers 1 to STRIPE blocks of one
 * stripe; some are FUA; some are zero requests (the block then reads as
 * zeroes).  The content of block b written with generation g starts with
 * (magic, b, g) and goes on with bytes drawn from (seed, b, g): a block
 * read back names the write that put it there.
 *
 * Ordering.  One atomic counter orders events: a write takes a ticket when
 * its reply arrives, a flush takes one before it is sent.  With multi-conn
 * (required), a flush covers every write whose reply arrived before it was
 * sent, on any connection.  So after the run, block b's writes w1..wk (in
 * order) have a durable index d: the last wi that is a completed FUA write
 * or whose reply ticket is below the send ticket of the last flush whose
 * reply arrived.  After the crash b must hold wd (the old content when
 * d = 0) or one of w(d+1)..wk (written, unacknowledged or in flight).
 *
 * Rounds.  --state FILE keeps everything between runs: if it exists, the
 * disk is checked first against it (the candidates and the history of
 * every block); what each block really holds becomes its base for this
 * run.  Then the threads write until the connections fail (the server was
 * killed) or --duration seconds passed, and the new state is written back.
 * --verify-only checks and exits.
 *
 * Exit status: 0 good; 1 a block lost flushed data or holds garbage, or an
 * error other than the server going away; 2 usage.
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
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define BLOCK 4096
#define STRIPE 4                /* blocks: 16 KiB, 4 stripes per 64K chunk */
#define MAX_THREADS 64
#define MAGIC UINT64_C (0x4b4f4c4248534352)     /* "RCSHBLOK" */
#define ZERO_GEN UINT64_MAX     /* "this write made the block zeroes" */
#define NOT_DONE UINT64_MAX     /* a write whose reply never came */

struct write_rec {
  uint64_t gen;                 /* content generation, ZERO_GEN for zeroes */
  uint64_t done;                /* reply ticket, NOT_DONE */
  bool fua;
};

struct block {
  /* Base: what the block held when this run started, as candidates (after
   * a verified round there is exactly one; before the first round, 0).
   */
  uint64_t base;
  struct write_rec *w;
  size_t nw, cap;
  /* Every generation this block ever held or was written with (for the
   * "never garbage" check across rounds), ZERO_GEN not included.
   */
  uint64_t *ever;
  size_t never, ever_cap;
  /* Candidates loaded from the state file. */
  uint64_t *cand;
  size_t ncand, cand_cap;
};

static const char *socket_path, *state_path, *ready_path;
static uint64_t seed, area_off, area_len = 64 << 20;
static bool seed_given, verify_only;
static unsigned nthreads = 4;
static double duration = 30;

static uint64_t nblocks;
static struct block *blocks;
static atomic_uint_fast64_t ticket = 1;
static atomic_uint_fast64_t next_gen = 1;
static uint64_t last_flush_sent;        /* of the last completed flush */
static pthread_mutex_t flush_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stop;
static atomic_uint_fast64_t n_writes, n_zeroes, n_fua, n_flushes, n_failed;
static double t_start;

static void
die (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbd-crash-io: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t
mix (uint64_t z)
{
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t
rnd (uint64_t *s)
{
  return mix (*s += UINT64_C (0x9e3779b97f4a7c15));
}

/* The content of block b at generation g. */
static void
fill_block (uint8_t *p, uint64_t b, uint64_t g)
{
  uint64_t s = mix (seed ^ mix (b * 0x100000001b3 ^ mix (g)));
  uint64_t hdr[3] = { MAGIC, b, g };
  size_t i;

  for (i = 0; i < BLOCK; i += 8) {
    uint64_t v = rnd (&s);
    memcpy (p + i, &v, 8);
  }
  memcpy (p, hdr, sizeof hdr);
}

static void
push (uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
  size_t i;

  for (i = 0; i < *n; ++i)
    if ((*a)[i] == v)
      return;
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 4;
    *a = realloc (*a, *cap * sizeof **a);
    if (*a == NULL)
      die ("out of memory");
  }
  (*a)[(*n)++] = v;
}

static bool
has (const uint64_t *a, size_t n, uint64_t v)
{
  for (size_t i = 0; i < n; ++i)
    if (a[i] == v)
      return true;
  return false;
}

static struct nbd_handle *
connect_one (void)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL || nbd_connect_unix (h, socket_path) == -1)
    die ("connect %s: %s", socket_path, nbd_get_error ());
  return h;
}

/* ------------------------------------------------------------ state file
 * Text, one line a block that has a history:
 *   B NCAND C1 .. Cn NEVER E1 .. Em
 * generations in decimal, ZERO_GEN as "z".  First line: "nbd-crash-io 1
 * SEED AREA_OFF AREA_LEN NEXT_GEN".
 */
static void
put_gen (FILE *fp, uint64_t g)
{
  if (g == ZERO_GEN)
    fputs (" z", fp);
  else
    fprintf (fp, " %" PRIu64, g);
}

static uint64_t
get_gen (FILE *fp)
{
  char w[32];

  if (fscanf (fp, "%31s", w) != 1)
    die ("%s: truncated", state_path);
  if (strcmp (w, "z") == 0)
    return ZERO_GEN;
  return strtoull (w, NULL, 10);
}

static void
load_state (void)
{
  FILE *fp = fopen (state_path, "r");
  uint64_t s, off, len, ng, b, n, i;

  if (fp == NULL) {
    if (errno == ENOENT)
      return;
    die ("%s: %m", state_path);
  }
  if (fscanf (fp, "nbd-crash-io 1 %" SCNu64 " %" SCNu64 " %" SCNu64
              " %" SCNu64, &s, &off, &len, &ng) != 4)
    die ("%s: not a state file", state_path);
  if (seed_given && s != seed)
    die ("%s: made with seed %" PRIu64 ", not %" PRIu64, state_path, s, seed);
  seed = s;
  seed_given = true;
  if (off != area_off || len != area_len)
    die ("%s: made for another area", state_path);
  next_gen = ng;
  while (fscanf (fp, "%" SCNu64, &b) == 1) {
    struct block *k;
    if (b >= nblocks)
      die ("%s: block %" PRIu64 " out of range", state_path, b);
    k = &blocks[b];
    if (fscanf (fp, "%" SCNu64, &n) != 1)
      die ("%s: truncated", state_path);
    for (i = 0; i < n; ++i)
      push (&k->cand, &k->ncand, &k->cand_cap, get_gen (fp));
    if (fscanf (fp, "%" SCNu64, &n) != 1)
      die ("%s: truncated", state_path);
    for (i = 0; i < n; ++i)
      push (&k->ever, &k->never, &k->ever_cap, get_gen (fp));
  }
  if (!feof (fp))
    die ("%s: garbage in the state file", state_path);
  fclose (fp);
}

/* The candidates of block k after this run (see the comment at the top). */
static void
candidates (struct block *k, uint64_t **out, size_t *n)
{
  size_t d = 0, i, cap = 0;     /* d: 1 + index of the durable write */

  *out = NULL;
  *n = 0;
  for (i = 0; i < k->nw; ++i)
    if (k->w[i].done != NOT_DONE &&
        (k->w[i].fua || k->w[i].done < last_flush_sent))
      d = i + 1;
  if (d == 0)
    push (out, n, &cap, k->base);
  for (i = d ? d - 1 : 0; i < k->nw; ++i)
    push (out, n, &cap, k->w[i].gen);
}

static void
save_state (void)
{
  char tmp[4096];
  FILE *fp;
  uint64_t b;
  size_t i;

  snprintf (tmp, sizeof tmp, "%s.tmp", state_path);
  fp = fopen (tmp, "w");
  if (fp == NULL)
    die ("%s: %m", tmp);
  fprintf (fp, "nbd-crash-io 1 %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
           "\n", seed, area_off, area_len, (uint64_t) next_gen);
  for (b = 0; b < nblocks; ++b) {
    struct block *k = &blocks[b];
    uint64_t *c;
    size_t nc;

    if (k->nw == 0 && k->base == 0 && k->never == 0)
      continue;
    candidates (k, &c, &nc);
    for (i = 0; i < k->nw; ++i)
      if (k->w[i].gen != ZERO_GEN)
        push (&k->ever, &k->never, &k->ever_cap, k->w[i].gen);
    fprintf (fp, "%" PRIu64 " %zu", b, nc);
    for (i = 0; i < nc; ++i)
      put_gen (fp, c[i]);
    fprintf (fp, " %zu", k->never);
    for (i = 0; i < k->never; ++i)
      put_gen (fp, k->ever[i]);
    fputc ('\n', fp);
    free (c);
  }
  if (fclose (fp) != 0 || rename (tmp, state_path) != 0)
    die ("%s: %m", state_path);
}

/* ---------------------------------------------------------------- verify */

static const char *
gen_str (uint64_t g, char *buf, size_t n)
{
  if (g == ZERO_GEN || g == 0)
    snprintf (buf, n, "zeroes");
  else
    snprintf (buf, n, "gen %" PRIu64, g);
  return buf;
}

/* Check the disk against the loaded state; set every block's base to what
 * it holds.  Returns the number of bad blocks.
 */
static uint64_t
verify (struct nbd_handle *h)
{
  const size_t piece = 1 << 20;
  uint8_t *buf = malloc (piece), expect[BLOCK];
  static const uint8_t zero[BLOCK];
  uint64_t b, bad = 0, checked = 0, zeroes = 0, newer = 0;
  size_t i;

  if (buf == NULL)
    die ("out of memory");
  for (b = 0; b < nblocks; b += piece / BLOCK) {
    uint64_t n = nblocks - b < piece / BLOCK ? nblocks - b : piece / BLOCK;
    if (nbd_pread (h, buf, n * BLOCK, area_off + b * BLOCK, 0) == -1)
      die ("read at %" PRIu64 ": %s", area_off + b * BLOCK,
           nbd_get_error ());
    for (i = 0; i < n; ++i) {
      struct block *k = &blocks[b + i];
      const uint8_t *p = buf + i * BLOCK;
      uint64_t hdr[3], found;
      char s1[64];
      bool is_zero = memcmp (p, zero, BLOCK) == 0;

      memcpy (hdr, p, sizeof hdr);
      if (is_zero)
        found = 0;
      else if (hdr[0] == MAGIC && hdr[1] == b + i) {
        found = hdr[2];
        fill_block (expect, b + i, found);
        if (memcmp (p, expect, BLOCK) != 0) {
          fprintf (stderr, "nbd-crash-io: FAIL: block %" PRIu64
                   " (offset %" PRIu64 ") names gen %" PRIu64
                   " but its content differs from that write: garbage or a"
                   " torn block\n", b + i, area_off + (b + i) * BLOCK, found);
          bad++;
          k->base = found;
          continue;
        }
      }
      else {
        fprintf (stderr, "nbd-crash-io: FAIL: block %" PRIu64 " (offset %"
                 PRIu64 ") holds garbage: neither zeroes nor any write to it"
                 " (first bytes %016" PRIx64 " %016" PRIx64 ")\n",
                 b + i, area_off + (b + i) * BLOCK, hdr[0], hdr[1]);
        bad++;
        continue;
      }
      checked++;
      if (k->ncand == 0)        /* never written: must be zeroes */
        push (&k->cand, &k->ncand, &k->cand_cap, 0);
      /* Zero content matches a zero write and the initial zeroes. */
      if (found == 0
          ? !(has (k->cand, k->ncand, 0) || has (k->cand, k->ncand, ZERO_GEN))
          : !has (k->cand, k->ncand, found)) {
        bool ever = found == 0 || has (k->ever, k->never, found);
        fprintf (stderr, "nbd-crash-io: FAIL: block %" PRIu64 " (offset %"
                 PRIu64 ") holds %s, %s; it must hold one of:",
                 b + i, area_off + (b + i) * BLOCK, gen_str (found, s1, sizeof s1),
                 ever ? "an older write: FLUSHED DATA WAS LOST"
                      : "which was never written there: garbage");
        for (size_t j = 0; j < k->ncand; ++j)
          fprintf (stderr, " %s", gen_str (k->cand[j], s1, sizeof s1));
        fprintf (stderr, "\n");
        bad++;
      }
      else if (k->ncand > 1 && found != k->cand[0] &&
               !(found == 0 && k->cand[0] == ZERO_GEN))
        newer++;
      if (found == 0)
        zeroes++;
      k->base = found;
      free (k->cand);
      k->cand = NULL;
      k->ncand = k->cand_cap = 0;
    }
  }
  free (buf);
  printf ("nbd-crash-io: verified %" PRIu64 " blocks: %" PRIu64 " bad, %"
          PRIu64 " zero, %" PRIu64 " hold a write newer than the last"
          " durable one\n", nblocks, bad, zeroes, newer);
  (void) checked;
  return bad;
}

/* ------------------------------------------------------------------ run */

struct thread {
  unsigned idx;
  pthread_t tid;
  struct nbd_handle *h;
  uint64_t rng;
  uint8_t buf[STRIPE * BLOCK];
};

static void
add_write (struct block *k, uint64_t gen, bool fua)
{
  if (k->nw == k->cap) {
    k->cap = k->cap ? k->cap * 2 : 4;
    k->w = realloc (k->w, k->cap * sizeof *k->w);
    if (k->w == NULL)
      die ("out of memory");
  }
  k->w[k->nw++] = (struct write_rec) { .gen = gen, .done = NOT_DONE,
                                       .fua = fua };
}

static void
went_away (struct thread *t, const char *what)
{
  /* The server was killed: expected.  Anything else is a failure too,
   * but then the verify of the next round says more.
   */
  if (!stop)
    printf ("nbd-crash-io: thread %u: %s failed after %.2f s: %s\n",
            t->idx, what, now () - t_start, nbd_get_error ());
  n_failed++;
  stop = true;
}

static void *
run_thread (void *arg)
{
  struct thread *t = arg;
  uint64_t nstripes = nblocks / STRIPE;
  uint64_t mine = (nstripes + nthreads - 1 - t->idx) / nthreads;

  while (!stop && now () - t_start < duration) {
    unsigned r = rnd (&t->rng) % 100;

    if (r < 6) {                /* flush */
      uint64_t sent = atomic_fetch_add (&ticket, 1);
      if (nbd_flush (t->h, 0) == -1) {
        went_away (t, "flush");
        break;
      }
      pthread_mutex_lock (&flush_mu);
      if (sent > last_flush_sent)
        last_flush_sent = sent;
      pthread_mutex_unlock (&flush_mu);
      n_flushes++;
      continue;
    }

    /* A write, zero or trim inside one of my stripes. */
    uint64_t stripe = t->idx + nthreads * (rnd (&t->rng) % mine);
    unsigned first = rnd (&t->rng) % STRIPE;
    unsigned count = 1 + rnd (&t->rng) % (STRIPE - first);
    uint64_t b0 = stripe * STRIPE + first;
    bool zero = r < 14, fua = rnd (&t->rng) % 8 == 0;
    uint64_t gen = atomic_fetch_add (&next_gen, 1);
    uint32_t flags = fua ? LIBNBD_CMD_FLAG_FUA : 0;
    unsigned i;
    int rc;

    for (i = 0; i < count; ++i) {
      add_write (&blocks[b0 + i], zero ? ZERO_GEN : gen, fua);
      if (!zero)
        fill_block (t->buf + i * BLOCK, b0 + i, gen);
    }
    if (zero)
      rc = nbd_zero (t->h, count * BLOCK, area_off + b0 * BLOCK, flags);
    else
      rc = nbd_pwrite (t->h, t->buf, count * BLOCK, area_off + b0 * BLOCK,
                       flags);
    if (rc == -1) {
      went_away (t, zero ? "zero" : "write");
      break;
    }
    uint64_t done = atomic_fetch_add (&ticket, 1);
    for (i = 0; i < count; ++i)
      blocks[b0 + i].w[blocks[b0 + i].nw - 1].done = done;
    if (zero)
      n_zeroes++;
    else
      n_writes++;
    if (fua)
      n_fua++;
  }
  return NULL;
}

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: nbd-crash-io --socket SOCK --state FILE [options]\n"
"  --seed N          content seed (default: the state file's, else the clock)\n"
"  --threads N       writer threads, one connection each (default 4)\n"
"  --offset N        start of the area (default 0)\n"
"  --length N        bytes of the area, a multiple of %d (default 64M)\n"
"  --duration SECS   stop writing after this long (default 30)\n"
"  --verify-only     check the disk against the state file and exit\n"
"  --ready-file FILE create FILE when the writers start (after the check)\n",
           STRIPE * BLOCK);
}

static uint64_t
parse_size (const char *s)
{
  char *end;
  uint64_t v = strtoull (s, &end, 0);

  switch (*end) {
  case 'K': case 'k': v <<= 10; end++; break;
  case 'M': case 'm': v <<= 20; end++; break;
  case 'G': case 'g': v <<= 30; end++; break;
  }
  if (*end || end == s) {
    usage (stderr);
    exit (2);
  }
  return v;
}

int
main (int argc, char *argv[])
{
  enum { OPT_SEED = 256, OPT_THREADS, OPT_OFFSET, OPT_LENGTH, OPT_DURATION,
         OPT_VERIFY_ONLY, OPT_SOCKET, OPT_STATE, OPT_READY };
  static const struct option opts[] = {
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "state", required_argument, NULL, OPT_STATE },
    { "seed", required_argument, NULL, OPT_SEED },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "offset", required_argument, NULL, OPT_OFFSET },
    { "length", required_argument, NULL, OPT_LENGTH },
    { "duration", required_argument, NULL, OPT_DURATION },
    { "verify-only", no_argument, NULL, OPT_VERIFY_ONLY },
    { "ready-file", required_argument, NULL, OPT_READY },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct thread *threads;
  struct nbd_handle *h;
  int c;
  unsigned i;
  uint64_t bad, total_w = 0, durable = 0;

  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_SOCKET: socket_path = optarg; break;
    case OPT_STATE: state_path = optarg; break;
    case OPT_SEED: seed = strtoull (optarg, NULL, 0); seed_given = true; break;
    case OPT_THREADS: nthreads = atoi (optarg); break;
    case OPT_OFFSET: area_off = parse_size (optarg); break;
    case OPT_LENGTH: area_len = parse_size (optarg); break;
    case OPT_DURATION: duration = atof (optarg); break;
    case OPT_VERIFY_ONLY: verify_only = true; break;
    case OPT_READY: ready_path = optarg; break;
    case 'h': usage (stdout); exit (0);
    default: usage (stderr); exit (2);
    }
  }
  if (!socket_path || !state_path || optind != argc || nthreads < 1 ||
      nthreads > MAX_THREADS || area_len == 0 ||
      area_len % (STRIPE * BLOCK) || area_off % BLOCK ||
      area_len / (STRIPE * BLOCK) < nthreads) {
    usage (stderr);
    exit (2);
  }
  nblocks = area_len / BLOCK;
  blocks = calloc (nblocks, sizeof *blocks);
  if (blocks == NULL)
    die ("out of memory");
  load_state ();
  if (!seed_given)
    seed = (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32);
  printf ("nbd-crash-io: seed %" PRIu64 ", %u threads, area %" PRIu64
          "+%" PRIu64 "\n", seed, nthreads, area_off, area_len);

  h = connect_one ();
  if (nbd_get_size (h) < (int64_t) (area_off + area_len))
    die ("the disk is smaller than the area");
  if (nbd_can_multi_conn (h) != 1)
    die ("the server does not offer multi-conn: this test needs it");
  if (nbd_can_flush (h) != 1 || nbd_can_fua (h) != 1)
    die ("the server does not offer flush and FUA");
  bad = verify (h);
  nbd_close (h);
  if (bad) {
    printf ("nbd-crash-io: FAIL: %" PRIu64 " bad block(s)\n", bad);
    exit (1);
  }
  if (verify_only)
    exit (0);

  threads = calloc (nthreads, sizeof *threads);
  if (threads == NULL)
    die ("out of memory");
  for (i = 0; i < nthreads; ++i) {
    threads[i].idx = i;
    threads[i].rng = mix (seed + next_gen) ^ mix (i + 1);
    threads[i].h = connect_one ();
  }
  t_start = now ();
  for (i = 0; i < nthreads; ++i)
    if (pthread_create (&threads[i].tid, NULL, run_thread, &threads[i]))
      die ("pthread_create failed");
  if (ready_path) {
    FILE *fp = fopen (ready_path, "w");
    if (fp == NULL || fclose (fp) != 0)
      die ("%s: %m", ready_path);
  }
  for (i = 0; i < nthreads; ++i) {
    pthread_join (threads[i].tid, NULL);
    nbd_close (threads[i].h);
  }
  for (uint64_t b = 0; b < nblocks; ++b)
    for (size_t j = 0; j < blocks[b].nw; ++j) {
      total_w++;
      if (blocks[b].w[j].done != NOT_DONE &&
          (blocks[b].w[j].fua || blocks[b].w[j].done < last_flush_sent))
        durable++;
    }
  printf ("nbd-crash-io: %.2f s: %" PRIuFAST64 " writes (%" PRIuFAST64
          " FUA), %" PRIuFAST64 " zeroes, %" PRIuFAST64 " flushes, %"
          PRIuFAST64 " failed requests; %" PRIu64 " of %" PRIu64
          " block writes acknowledged as durable\n", now () - t_start,
          (uint_fast64_t) n_writes, (uint_fast64_t) n_fua,
          (uint_fast64_t) n_zeroes, (uint_fast64_t) n_flushes,
          (uint_fast64_t) n_failed, durable, total_w);
  save_state ();
  free (threads);
  for (uint64_t b = 0; b < nblocks; ++b) {
    free (blocks[b].w);
    free (blocks[b].ever);
    free (blocks[b].cand);
  }
  free (blocks);
  return 0;
}
