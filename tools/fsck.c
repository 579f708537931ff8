/* s3chunk fsck: list the store, then read and decode every chunk object
 * in parallel (one codec context and buffers per thread), and report what
 * is wrong.  It only reports: it never writes, deletes or moves anything,
 * so it is safe to run at any time (a running nbdkit may make it report
 * objects that changed while it looked, which it says).
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

#include "codec.h"
#include "params.h"
#include "progress.h"
#include "s3chunk.h"

#define EXIT_CLEAN 0
#define EXIT_PROBLEMS 1
#define EXIT_COULD_NOT 2

/* A few reads at a time on a local disk; more on S3, where each read
 * mostly waits for the network.
 */
#define DEFAULT_THREADS_DIR 4
#define DEFAULT_THREADS_S3 16
#define MAX_THREADS 64

const char fsck_usage[] =
  "Usage: s3chunk fsck [--threads=N] [--quiet] STORE-PARAMETER...\n"
  "\n"
  "Read and decode every chunk object of the volume and check it (magic,\n"
  "volume id, chunk index, lengths, checksums), and report corrupt objects,\n"
  "chunk objects beyond the end of the volume, objects that are not\n"
  "s3chunk's, and leftovers of interrupted writes (lock-probe-* objects;\n"
  "with dir=, *.tmp-* files).  fsck only reports: it changes nothing.\n"
  "An encrypted volume needs its key (key=+FILE or --key=+FILE) for every\n"
  "object to be authenticated; without it only the headers are checked.\n"
  "A progress bar (rate, time left) is shown on a terminal; otherwise a\n"
  "line every 10 s ($S3CHUNK_PROGRESS_INTERVAL).\n"
  "\n"
  "Exit status: 0 clean, 1 problems found, 2 could not check (or not all\n"
  "objects could be read).\n"
  "\n"
  "Options:\n"
  "  -j, --threads=N  Objects read and checked at once (default 4 with dir=,\n"
  "                   16 with bucket=).\n"
  "  -q, --quiet      No progress, only problems and the summary.\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

enum problem_kind {
  P_CORRUPT,            /* failed a check */
  P_UNREADABLE,         /* the store could not give it (not a problem of
                           the volume, but the check is incomplete) */
  P_NKINDS
};

struct problem {
  char key[32];
  enum problem_kind kind;
  char *why;
};

struct job {
  struct cs_volume *v;
  const struct scan *s;
  size_t next;                  /* atomic: next index into s->chunks */
  uint64_t done, bytes, vanished; /* atomic */
  uint64_t nproblems;           /* atomic, for the progress line */
  pthread_mutex_t mu;           /* protects problems */
  struct problem *problems;
  size_t np, pcap;
  int fatal;                    /* atomic: -errno, stop (out of memory) */
};

/* The decoder's messages are "read KEY: WHAT: ADVICE" where the advice
 * suggests running fsck: keep WHAT.
 */
static char *
shorten (const char *key, const char *msg)
{
  const char *advice = ": object in the store is damaged";
  char *s, *a;
  size_t klen = strlen (key);

  if (strncmp (msg, "read ", 5) == 0 && strncmp (msg + 5, key, klen) == 0 &&
      msg[5 + klen] == ':' && msg[6 + klen] == ' ')
    msg += 7 + klen;
  s = strdup (msg[0] ? msg : "failed its checks");
  if (s && (a = strstr (s, advice)) != NULL)
    *a = '\0';
  return s;
}

static void
add_problem (struct job *j, const char *key, enum problem_kind kind,
             const char *msg)
{
  pthread_mutex_lock (&j->mu);
  if (j->np == j->pcap) {
    size_t cap = j->pcap ? 2 * j->pcap : 16;
    struct problem *p = realloc (j->problems, cap * sizeof *p);
    if (p == NULL) {
      __atomic_store_n (&j->fatal, -ENOMEM, __ATOMIC_RELAXED);
      pthread_mutex_unlock (&j->mu);
      return;
    }
    j->problems = p;
    j->pcap = cap;
  }
  snprintf (j->problems[j->np].key, sizeof j->problems[j->np].key, "%s", key);
  j->problems[j->np].kind = kind;
  j->problems[j->np].why = shorten (key, msg);
  j->np++;
  pthread_mutex_unlock (&j->mu);
  __atomic_add_fetch (&j->nproblems, 1, __ATOMIC_RELAXED);
}

static void *
worker (void *arg)
{
  struct job *j = arg;
  struct cs_volume *v = j->v;
  struct codec_ctx *ctx = codec_ctx_new ();
  struct cs_buf obj = CS_BUF_INIT;
  void *plain = malloc (v->chunk_size);
  char msg[2048];

  if (ctx == NULL || plain == NULL) {
    __atomic_store_n (&j->fatal, -ENOMEM, __ATOMIC_RELAXED);
    goto out;
  }
  tool_capture (msg, sizeof msg);
  for (;;) {
    size_t i = __atomic_fetch_add (&j->next, 1, __ATOMIC_RELAXED);
    uint64_t idx;
    char key[32];
    int r;

    if (i >= j->s->nchunks || __atomic_load_n (&j->fatal, __ATOMIC_RELAXED))
      break;
    idx = j->s->chunks[i];
    cs_chunk_key (idx, key, sizeof key);
    msg[0] = '\0';
    r = objstore_get (v->os, key, codec_bound (v->chunk_size), &obj, NULL);
    if (r == -ENOENT)
      __atomic_add_fetch (&j->vanished, 1, __ATOMIC_RELAXED);
    else if (r == -EFBIG)
      add_problem (j, key, P_CORRUPT, "larger than any chunk object can be");
    else if (r < 0)
      add_problem (j, key, P_UNREADABLE, msg[0] ? msg : strerror (-r));
    else if (v->crypt && v->crypt->keys == NULL) {
      /* No key: only what is readable without it. */
      struct codec_header hdr;
      __atomic_add_fetch (&j->bytes, obj.len, __ATOMIC_RELAXED);
      if (codec_peek_header (obj.data, obj.len, &hdr) < 0)
        add_problem (j, key, P_CORRUPT, "not a chunk object (bad magic or "
                     "header checksum)");
      else if (hdr.format_version != CODEC_FORMAT_SEALED ||
               memcmp (hdr.volume_id, v->volume_id, CODEC_VOLUME_ID_SIZE) ||
               hdr.index != idx || hdr.plain_len != v->chunk_size ||
               hdr.stored_len != obj.len - CODEC_HEADER_SIZE ||
               hdr.stored_len < CODEC_SEAL_OVERHEAD)
        add_problem (j, key, P_CORRUPT, "header does not match the "
                     "volume (format version, volume id, index or lengths)");
    }
    else {
      __atomic_add_fetch (&j->bytes, obj.len, __ATOMIC_RELAXED);
      r = codec_decode (ctx, crypt_codec_key (v->crypt), v->volume_id, idx,
                        key, obj.data, obj.len,
                        plain, v->chunk_size);
      if (r < 0)
        add_problem (j, key, P_CORRUPT, msg);
    }
    __atomic_add_fetch (&j->done, 1, __ATOMIC_RELAXED);
  }
  tool_capture (NULL, 0);
 out:
  free (plain);
  cs_buf_free (&obj);
  codec_ctx_free (ctx);
  return NULL;
}

static int
cmp_problem (const void *a, const void *b)
{
  const struct problem *x = a, *y = b;
  return strcmp (x->key, y->key);
}

int
cmd_fsck (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "threads", required_argument, NULL, 'j' },
    { "quiet", no_argument, NULL, 'q' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct job j = { .mu = PTHREAD_MUTEX_INITIALIZER };
  pthread_t tids[MAX_THREADS];
  unsigned threads = 0, nt = 0, k;
  struct cs_volume *v = NULL;
  struct scan s = { 0 };
  struct lock_holder h;
  int64_t age;
  bool fresh = false, quiet = false, lock_bad = false;
  char id[33], b1[32], b2[32], desc[512], d[32], lock_why[1024] = "";
  size_t i, counts[P_NKINDS] = { 0 };
  uint64_t found = 0;
  struct timespec t0, t1;
  int c, r, status;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS "j:q", longopts,
                           NULL)) != -1) {
    uint64_t u;
    switch (c) {
    case 'j':
      if (params_parse_uint (optarg, 1, MAX_THREADS, &u) < 0) {
        tool_error ("--threads=%s: expected a number from 1 to %d",
                    optarg, MAX_THREADS);
        return EXIT_COULD_NOT;
      }
      threads = u;
      break;
    case 'q': quiet = true; break;
    TOOL_COMMON_CASES (fsck_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, NULL, NULL) < 0)
    return EXIT_COULD_NOT;
  if (threads == 0)
    threads = tool_sp.dir ? DEFAULT_THREADS_DIR : DEFAULT_THREADS_S3;
  tool_key_optional = true;     /* without it, headers only (said below) */
  if (tool_open_store (false, threads) < 0 || tool_open_volume (&v) < 0)
    return EXIT_COULD_NOT;
  if (v->crypt && v->crypt->keys == NULL)
    tool_error ("warning: the volume is encrypted and no key was given: "
                "only object headers can be checked, not their content "
                "nor the superblock's MAC; give --key=+FILE to "
                "authenticate every object");
  clock_gettime (CLOCK_MONOTONIC, &t0);

  tool_volume_id (v, id);
  progress_printf (stdout, "fsck %s: volume %s, %s, chunk size %s\n",
                   tool_store_desc, id,
                   params_format_size (v->size, b1, sizeof b1),
                   params_format_size (v->chunk_size, b2, sizeof b2));

  tool_capture (lock_why, sizeof lock_why);
  r = lock_read (tool_os, &h, &age, &fresh);
  tool_capture (NULL, 0);
  if (r == 0 && fresh) {
    lock_describe (&h, age, desc, sizeof desc);
    tool_error ("warning: the volume is in use (locked by %s): objects "
                "written while fsck reads may be reported; check a "
                "stopped volume for a reliable answer", desc);
  }
  else if (r == -EIO)
    lock_bad = true;
  else if (r < 0 && r != -ENOENT) {
    tool_error ("%s", lock_why);
    status = EXIT_COULD_NOT;
    goto out;
  }

  if (scan_store (tool_os, v->nchunks, tool_sp.dir, &s) < 0) {
    status = EXIT_COULD_NOT;
    goto out;
  }
  if (!s.superblock) {
    tool_error ("the listing does not show the %s object that was just "
                "read: is the store listing consistent?", CS_SUPERBLOCK_KEY);
    status = EXIT_COULD_NOT;
    goto out;
  }

  /* Read and decode the chunk objects. */
  j.v = v;
  j.s = &s;
  if (threads > s.nchunks)
    threads = s.nchunks ? s.nchunks : 1;
  progress_start ("fsck", "objects", s.nchunks, s.chunk_bytes, quiet);
  for (k = 0; k < threads; ++k) {
    r = pthread_create (&tids[k], NULL, worker, &j);
    if (r != 0) {
      tool_error ("pthread_create: %s", strerror (r));
      __atomic_store_n (&j.fatal, -r, __ATOMIC_RELAXED);
      break;
    }
    nt++;
  }
  for (;;) {
    uint64_t done = __atomic_load_n (&j.done, __ATOMIC_RELAXED);
    progress_update (done, __atomic_load_n (&j.bytes, __ATOMIC_RELAXED),
                     __atomic_load_n (&j.nproblems, __ATOMIC_RELAXED) +
                     s.nother + lock_bad);
    if (done >= s.nchunks || nt == 0 ||
        __atomic_load_n (&j.fatal, __ATOMIC_RELAXED))
      break;
    usleep (50000);
  }
  for (k = 0; k < nt; ++k)
    pthread_join (tids[k], NULL);
  progress_end ();
  if (j.fatal) {
    tool_error ("%s", strerror (-j.fatal));
    status = EXIT_COULD_NOT;
    goto out;
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);

  /* The report: every problem, one line each, in key order. */
  if (j.np > 1)
    qsort (j.problems, j.np, sizeof *j.problems, cmp_problem);
  for (i = 0; i < j.np; ++i) {
    printf ("%s %s: %s\n",
            j.problems[i].kind == P_CORRUPT ? "corrupt" : "unreadable",
            j.problems[i].key, j.problems[i].why ? j.problems[i].why : "");
    counts[j.problems[i].kind]++;
  }
  for (i = 0; i < s.nother; ++i) {
    const struct scan_other *o = &s.other[i];
    uint64_t idx = 0;

    switch (o->kind) {
    case SCAN_BEYOND:
      cs_chunk_key_parse (o->key, &idx);
      printf ("beyond-end %s: chunk %" PRIu64 ", but the volume has %" PRIu64
              " chunks (never read)\n", o->key, idx, v->nchunks);
      break;
    case SCAN_PROBE:
      printf ("stray %s: left by an interrupted lock check\n", o->key);
      break;
    case SCAN_TEMP:
      printf ("stray %s: temporary file of an unfinished write\n", o->key);
      break;
    case SCAN_FOREIGN:
      printf ("foreign %s: not an object s3chunk writes (%" PRIu64
              " bytes)\n", o->key, o->size);
      break;
    default:
      break;
    }
  }
  if (lock_bad)
    printf ("corrupt %s: not a valid lock object: %s\n", LOCK_KEY,
            lock_why[0] ? lock_why : "?");

  found = counts[P_CORRUPT] + s.nother + lock_bad;
  printf ("fsck: %zu chunk object%s (%s stored) checked in %s: ",
          s.nchunks, s.nchunks == 1 ? "" : "s",
          params_format_size (j.bytes, b1, sizeof b1),
          progress_format_duration ((t1.tv_sec - t0.tv_sec) +
                                    (t1.tv_nsec - t0.tv_nsec) / 1e9,
                                    d, sizeof d));
  if (found == 0 && counts[P_UNREADABLE] == 0)
    printf ("clean");
  else {
    const char *sep = "";
    if (counts[P_CORRUPT] + lock_bad) {
      printf ("%s%zu corrupt", sep, counts[P_CORRUPT] + lock_bad);
      sep = ", ";
    }
    if (counts[P_UNREADABLE]) {
      printf ("%s%zu unreadable", sep, counts[P_UNREADABLE]);
      sep = ", ";
    }
    if (s.count[SCAN_BEYOND]) {
      printf ("%s%zu beyond the end", sep, s.count[SCAN_BEYOND]);
      sep = ", ";
    }
    if (s.count[SCAN_FOREIGN]) {
      printf ("%s%zu foreign", sep, s.count[SCAN_FOREIGN]);
      sep = ", ";
    }
    if (s.count[SCAN_PROBE] + s.count[SCAN_TEMP])
      printf ("%s%zu stray", sep, s.count[SCAN_PROBE] + s.count[SCAN_TEMP]);
  }
  if (j.vanished)
    printf (" (%" PRIu64 " object%s deleted while checking)", j.vanished,
            j.vanished == 1 ? "" : "s");
  printf ("\n");
  if (found || counts[P_UNREADABLE]) {
    printf ("fsck changed nothing.");
    if (counts[P_CORRUPT])
      printf (" A corrupt chunk reads as an I/O error: restore its object "
              "from a backup, or delete it so that the chunk reads as "
              "zeroes, then fsck the filesystem.");
    if (s.count[SCAN_BEYOND] + s.count[SCAN_PROBE] + s.count[SCAN_TEMP])
      printf (" Stray and beyond-the-end objects are never read: delete "
              "them while no nbdkit serves the volume.");
    if (s.count[SCAN_FOREIGN])
      printf (" Foreign objects do not belong in the volume's %s.",
              tool_sp.dir ? "directory" : "prefix");
    if (counts[P_UNREADABLE])
      printf (" Unreadable objects were not checked: run fsck again.");
    printf ("\n");
  }
  status = found ? EXIT_PROBLEMS
    : counts[P_UNREADABLE] ? EXIT_COULD_NOT : EXIT_CLEAN;

 out:
  for (i = 0; i < j.np; ++i)
    free (j.problems[i].why);
  free (j.problems);
  scan_free (&s);
  cs_volume_close (v);
  fflush (stdout);
  return status;
}
