/* s3chunk tests: a filesystem workload that records what fsync promised,
 * for the crash tests (tests/test-crash-*.sh).
 *
 *   fsync-workload --dir DIR --journal FILE --seed N [--duration SECS]
 *                  [--max-size BYTES]
 *   fsync-workload --dir DIR --journal FILE --verify
 *
 * Run mode does, until killed or --duration passed, operations on files in
 * DIR (on the volume under test) and appends one line to the journal FILE
 * (outside the volume) after each operation's fsync returned:
 *
 *   new file   DIR/dNN/fN, random size (mostly small, some MiB), written in
 *              random pieces, fsync(file), fsync(directory), then
 *              "F NAME GEN SIZE SHA256"
 *   replace    an existing file, atomically: write DIR/tmp-GEN, fsync,
 *              rename over NAME, fsync(directory); "P NAME GEN SIZE
 *              SHA256" (pending) before the rename, "F NAME GEN SIZE SHA256" after
 *   delete     "U NAME" (pending) before unlink + fsync(directory), "D NAME"
 *              after
 *   append     a record to DIR/log, fdatasync, "A TOTAL SHA256": the first
 *              TOTAL bytes of DIR/log are durable
 *
 * The content of a file is a function of (seed, GEN) and of the offset, so
 * the verifier needs no copy of it.  The journal's first line is
 * "fsync-workload 1 SEED"; a later run continues the same journal (new
 * names and generations after the largest ones in it).
 *
 * Verify mode checks, byte for byte, that every file the journal says was
 * made durable is there with exactly that content (or, for the one
 * operation that was pending when the machine "crashed", the state before
 * or after it), that deleted files are gone, and that DIR/log starts with
 * the last durable TOTAL bytes; then it appends lines settling each
 * pending operation to what it found, so the next run starts clean.
 *
 * Exit status: 0 good; 1 a check failed (each failure named on stderr) or
 * an I/O error in verify mode; 2 usage.  In run mode an I/O error (the
 * device went away under the filesystem) ends the run with status 3.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define NDIRS 16
#define LOG_NAME "log"
#define MAX_NAMES (1 << 20)

static const char *dir, *journal_path;
static uint64_t seed;
static bool seed_given, verify_mode;
static double duration = 3600;
static uint64_t max_size = 4 << 20;
static int journal_fd = -1;

/* What the journal says about one name. */
struct name_state {
  bool known;
  bool present;                 /* committed: exists with gen/size */
  uint64_t gen, size;
  char sha[65];
  int pending;                  /* 0, 'P' (replace by pgen) or 'U' */
  uint64_t pgen, psize;
  char psha[65];
};

static struct name_state *names;        /* indexed by file number */
static uint64_t max_num, max_gen;
static uint64_t log_total;              /* durable bytes of DIR/log */
static uint64_t log_size;               /* bytes appended so far */

static void
die (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "fsync-workload: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  exit (1);
}

/* In run mode an I/O error means the device went away: exit 3. */
static void
io_fail (const char *what, const char *path)
{
  fprintf (stderr, "fsync-workload: %s %s: %m\n", what, path);
  exit (3);
}

static uint64_t
mix (uint64_t z)
{
  z += UINT64_C (0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t
rnd (uint64_t *s)
{
  return mix ((*s)++ ^ seed);
}

/* Content: 8 bytes per word, a function of (seed, key, word offset).  Some
 * keys give text-like content that compresses, the others random bytes.
 */
static void
fill (uint8_t *p, uint64_t key, uint64_t off, size_t len)
{
  uint64_t k = mix (seed ^ mix (key));
  bool text = (k & 3) == 0;
  size_t i = 0;

  while (i < len) {
    uint64_t w = (off + i) / 8, v = text ? mix (k ^ (w / 16)) : mix (k ^ w);
    unsigned b = (off + i) % 8;
    uint8_t byte = v >> (8 * b);
    if (text)
      byte = "abcdefgh ijklmnopqrstuvwxyz\n0123"[(byte + b) & 31];
    p[i++] = byte;
  }
}

static void
sha256_hex (const uint8_t *data, size_t len, char out[65])
{
  unsigned char md[32];
  unsigned n = 0;

  if (!EVP_Digest (data, len, md, &n, EVP_sha256 (), NULL) || n != 32)
    die ("EVP_Digest failed");
  for (unsigned i = 0; i < 32; ++i)
    sprintf (out + 2 * i, "%02x", md[i]);
}

static void
name_path (char *buf, size_t n, uint64_t num)
{
  snprintf (buf, n, "%s/d%02u/f%" PRIu64, dir, (unsigned) (num % NDIRS), num);
}

static struct name_state *
name (uint64_t num)
{
  if (num >= MAX_NAMES)
    die ("journal: file number %" PRIu64 " too large", num);
  if (num > max_num || !names[num].known)
    names[num].known = true;
  if (num > max_num)
    max_num = num;
  return &names[num];
}

static void
journal (const char *fmt, ...)
{
  char line[256];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  /* One write() a line, O_APPEND: a killed workload leaves whole lines. */
  if (write (journal_fd, line, n) != n)
    die ("write %s: %m", journal_path);
}

static uint64_t
parse_num (const char *s)
{
  /* NAME is dNN/fN */
  const char *f = strrchr (s, 'f');
  if (f == NULL)
    die ("journal: bad name %s", s);
  return strtoull (f + 1, NULL, 10);
}

static void
load_journal (void)
{
  FILE *fp = fopen (journal_path, "r");
  char line[512], nm[64], sha[80];
  uint64_t s, gen, size, lineno = 1;

  if (fp == NULL) {
    if (errno != ENOENT)
      die ("%s: %m", journal_path);
    if (verify_mode)
      die ("%s: no journal", journal_path);
    if (!seed_given)
      seed = (uint64_t) time (NULL) ^ getpid ();
    journal_fd = open (journal_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (journal_fd == -1)
      die ("%s: %m", journal_path);
    journal ("fsync-workload 1 %" PRIu64 "\n", seed);
    return;
  }
  if (fgets (line, sizeof line, fp) == NULL ||
      sscanf (line, "fsync-workload 1 %" SCNu64, &s) != 1)
    die ("%s: not a journal", journal_path);
  if (seed_given && s != seed)
    die ("%s: seed %" PRIu64 ", not %" PRIu64, journal_path, s, seed);
  seed = s;
  while (fgets (line, sizeof line, fp) != NULL) {
    struct name_state *st;
    lineno++;
    if (line[0] == '\0' || line[strlen (line) - 1] != '\n')
      die ("%s:%" PRIu64 ": a partial line", journal_path, lineno);
    switch (line[0]) {
    case 'F':
      if (sscanf (line, "F %63s %" SCNu64 " %" SCNu64 " %79s",
                  nm, &gen, &size, sha) != 4 || strlen (sha) != 64)
        goto bad;
      st = name (parse_num (nm));
      st->present = true;
      st->gen = gen;
      st->size = size;
      memcpy (st->sha, sha, 65);
      st->pending = 0;
      if (gen > max_gen)
        max_gen = gen;
      break;
    case 'P':
      if (sscanf (line, "P %63s %" SCNu64 " %" SCNu64 " %79s",
                  nm, &gen, &size, sha) != 4 || strlen (sha) != 64)
        goto bad;
      st = name (parse_num (nm));
      st->pending = 'P';
      st->pgen = gen;
      st->psize = size;
      memcpy (st->psha, sha, 65);
      if (gen > max_gen)
        max_gen = gen;
      break;
    case 'U':
      if (sscanf (line, "U %63s", nm) != 1)
        goto bad;
      name (parse_num (nm))->pending = 'U';
      break;
    case 'D':
      if (sscanf (line, "D %63s", nm) != 1)
        goto bad;
      st = name (parse_num (nm));
      st->present = false;
      st->pending = 0;
      break;
    case 'A':
      if (sscanf (line, "A %" SCNu64 " %79s", &size, sha) != 2)
        goto bad;
      log_total = log_size = size;
      break;
    default:
      goto bad;
    }
  }
  fclose (fp);
  journal_fd = open (journal_path, O_WRONLY | O_APPEND);
  if (journal_fd == -1)
    die ("%s: %m", journal_path);
  return;
 bad:
  die ("%s:%" PRIu64 ": bad line: %s", journal_path, lineno, line);
}

/* ------------------------------------------------------------------ run */

static void
write_all (int fd, const uint8_t *p, size_t len, const char *path)
{
  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r <= 0)
      io_fail ("write", path);
    p += r;
    len -= r;
  }
}

static void
fsync_path (const char *path)
{
  int fd = open (path, O_RDONLY | O_DIRECTORY);

  if (fd == -1)
    io_fail ("open", path);
  if (fsync (fd) == -1)
    io_fail ("fsync", path);
  close (fd);
}

static uint64_t
pick_size (uint64_t *r)
{
  unsigned k = rnd (r) % 10;

  if (k < 6)
    return rnd (r) % (16 * 1024 + 1);
  if (k < 9)
    return rnd (r) % (256 * 1024 + 1);
  return rnd (r) % (max_size + 1);
}

/* Write a file of content (gen) and size at path, fsync it.  sha out. */
static void
make_file (const char *path, uint64_t gen, uint64_t size, uint64_t *r,
           char sha[65])
{
  uint8_t *buf = malloc (size ? size : 1);
  uint64_t off = 0;
  int fd;

  if (buf == NULL)
    die ("out of memory");
  fill (buf, gen, 0, size);
  sha256_hex (buf, size, sha);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd == -1)
    io_fail ("create", path);
  while (off < size) {
    uint64_t n = 1 + rnd (r) % (256 * 1024);
    if (n > size - off)
      n = size - off;
    write_all (fd, buf + off, n, path);
    off += n;
  }
  if (fsync (fd) == -1)
    io_fail ("fsync", path);
  if (close (fd) == -1)
    io_fail ("close", path);
  free (buf);
}

/* A random committed, present file number, or 0 if none. */
static uint64_t
pick_existing (uint64_t *r)
{
  for (int tries = 0; tries < 20 && max_num > 0; ++tries) {
    uint64_t n = 1 + rnd (r) % max_num;
    if (names[n].known && names[n].present && !names[n].pending)
      return n;
  }
  return 0;
}

static void
run (void)
{
  struct timespec ts;
  double t0;
  uint64_t r = mix (seed ^ max_gen ^ (max_num << 20));
  char path[4096], tmp[4096], d[4096], sha[65];
  uint64_t ops = 0, bytes = 0;
  int fd;
  unsigned i;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  t0 = ts.tv_sec + ts.tv_nsec / 1e9;
  if (mkdir (dir, 0755) == -1 && errno != EEXIST)
    io_fail ("mkdir", dir);
  for (i = 0; i < NDIRS; ++i) {
    snprintf (d, sizeof d, "%s/d%02u", dir, i);
    if (mkdir (d, 0755) == -1 && errno != EEXIST)
      io_fail ("mkdir", d);
  }
  fsync_path (dir);
  snprintf (path, sizeof path, "%s/%s", dir, LOG_NAME);
  /* What is beyond the durable part of the log was not promised: cut it. */
  fd = open (path, O_WRONLY | O_CREAT, 0644);
  if (fd == -1 || ftruncate (fd, log_total) == -1 || fsync (fd) == -1)
    io_fail ("open/truncate/fsync", path);
  close (fd);
  log_size = log_total;
  printf ("fsync-workload: seed %" PRIu64 ", starting at file %" PRIu64
          ", gen %" PRIu64 ", log %" PRIu64 " bytes\n",
          seed, max_num + 1, max_gen + 1, log_total);
  fflush (stdout);

  for (;;) {
    unsigned k = rnd (&r) % 100;
    uint64_t gen = ++max_gen, size, n;
    struct name_state *st;

    clock_gettime (CLOCK_MONOTONIC, &ts);
    if (ts.tv_sec + ts.tv_nsec / 1e9 - t0 > duration)
      break;
    ops++;
    if (k < 12 && (n = pick_existing (&r)) != 0) {          /* replace */
      st = &names[n];
      size = pick_size (&r);
      name_path (path, sizeof path, n);
      snprintf (tmp, sizeof tmp, "%s/d%02u/tmp-%" PRIu64, dir,
                (unsigned) (n % NDIRS), gen);
      make_file (tmp, gen, size, &r, sha);
      journal ("P d%02u/f%" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n",
               (unsigned) (n % NDIRS), n, gen, size, sha);
      if (rename (tmp, path) == -1)
        io_fail ("rename", tmp);
      snprintf (d, sizeof d, "%s/d%02u", dir, (unsigned) (n % NDIRS));
      fsync_path (d);
      journal ("F d%02u/f%" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n",
               (unsigned) (n % NDIRS), n, gen, size, sha);
      st->present = true;
      st->gen = gen;
      st->size = size;
      memcpy (st->sha, sha, 65);
      bytes += size;
    }
    else if (k < 17 && (n = pick_existing (&r)) != 0) {     /* delete */
      name_path (path, sizeof path, n);
      journal ("U d%02u/f%" PRIu64 "\n", (unsigned) (n % NDIRS), n);
      if (unlink (path) == -1)
        io_fail ("unlink", path);
      snprintf (d, sizeof d, "%s/d%02u", dir, (unsigned) (n % NDIRS));
      fsync_path (d);
      journal ("D d%02u/f%" PRIu64 "\n", (unsigned) (n % NDIRS), n);
      names[n].present = false;
    }
    else if (k < 32) {                                      /* append */
      uint64_t len = 1 + rnd (&r) % 20000;
      uint8_t *buf = malloc (log_size + len);
      if (buf == NULL)
        die ("out of memory");
      fill (buf, UINT64_MAX, 0, log_size + len);
      snprintf (path, sizeof path, "%s/%s", dir, LOG_NAME);
      fd = open (path, O_WRONLY | O_APPEND);
      if (fd == -1)
        io_fail ("open", path);
      write_all (fd, buf + log_size, len, path);
      if (fdatasync (fd) == -1)
        io_fail ("fdatasync", path);
      close (fd);
      log_size += len;
      sha256_hex (buf, log_size, sha);
      journal ("A %" PRIu64 " %s\n", log_size, sha);
      free (buf);
      bytes += len;
    }
    else {                                                  /* new file */
      n = ++max_num;
      if (n >= MAX_NAMES)
        break;
      st = name (n);
      size = pick_size (&r);
      name_path (path, sizeof path, n);
      make_file (path, gen, size, &r, sha);
      snprintf (d, sizeof d, "%s/d%02u", dir, (unsigned) (n % NDIRS));
      fsync_path (d);
      journal ("F d%02u/f%" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n",
               (unsigned) (n % NDIRS), n, gen, size, sha);
      st->present = true;
      st->gen = gen;
      st->size = size;
      memcpy (st->sha, sha, 65);
      bytes += size;
    }
    if (ops % 100 == 0) {
      printf ("fsync-workload: %" PRIu64 " operations, %" PRIu64 " bytes\n",
              ops, bytes);
      fflush (stdout);
    }
  }
  printf ("fsync-workload: done: %" PRIu64 " operations, %" PRIu64
          " bytes\n", ops, bytes);
}

/* --------------------------------------------------------------- verify */

static unsigned failures;

static void
bad (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "fsync-workload: FAIL: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  failures++;
}

/* Read path whole.  Returns its size, or -1 if it does not exist; an I/O
 * error is a failure.
 */
static int64_t
slurp (const char *path, uint8_t **out)
{
  struct stat sb;
  uint8_t *buf;
  int fd = open (path, O_RDONLY);
  uint64_t off = 0;

  *out = NULL;
  if (fd == -1) {
    if (errno == ENOENT)
      return -1;
    die ("open %s: %m", path);
  }
  if (fstat (fd, &sb) == -1)
    die ("fstat %s: %m", path);
  buf = malloc (sb.st_size ? sb.st_size : 1);
  if (buf == NULL)
    die ("out of memory");
  while (off < (uint64_t) sb.st_size) {
    ssize_t r = read (fd, buf + off, sb.st_size - off);
    if (r < 0)
      die ("read %s at %" PRIu64 ": %m", path, off);
    if (r == 0)
      break;
    off += r;
  }
  close (fd);
  *out = buf;
  return off;
}

/* Does (data, len) hold generation gen of the given size exactly?  On a
 * mismatch, describe it in why.
 */
static bool
holds (const uint8_t *data, int64_t len, uint64_t gen, uint64_t size,
       char *why, size_t whylen)
{
  uint8_t expect[4096];
  uint64_t off;

  if (len < 0) {
    snprintf (why, whylen, "missing");
    return false;
  }
  for (off = 0; off < (uint64_t) len && off < size; off += sizeof expect) {
    size_t n = size - off < sizeof expect ? size - off : sizeof expect;
    if (n > (uint64_t) len - off)
      n = len - off;
    fill (expect, gen, off, n);
    if (memcmp (data + off, expect, n) != 0) {
      size_t i = 0;
      while (data[off + i] == expect[i])
        i++;
      snprintf (why, whylen, "differs from gen %" PRIu64 " at byte %" PRIu64
                " (0x%02x, expected 0x%02x)%s", gen, off + i,
                data[off + i], expect[i],
                data[off + i] == 0 ? ": zeroes where data was promised" : "");
      return false;
    }
  }
  if ((uint64_t) len != size) {
    snprintf (why, whylen, "%" PRId64 " bytes, gen %" PRIu64 " has %" PRIu64,
              len, gen, size);
    return false;
  }
  return true;
}

static void
verify (void)
{
  char path[4096], why[256], why2[256], sha[65];
  uint64_t n, checked = 0, gone = 0, settled = 0;
  bool was_pending;
  uint8_t *data;
  int64_t len;

  for (n = 1; n <= max_num; ++n) {
    struct name_state *st = &names[n];
    if (!st->known)
      continue;
    name_path (path, sizeof path, n);
    len = slurp (path, &data);
    was_pending = st->pending != 0;
    if (st->pending == 'P') {
      st->pending = 0;
      settled++;
      if (holds (data, len, st->pgen, st->psize, why2, sizeof why2)) {
        /* The pending replacement went through. */
        st->gen = st->pgen;
        st->size = st->psize;
        memcpy (st->sha, st->psha, 65);
        st->present = true;
      }
      /* else it must still be the committed content, checked below */
    }
    else if (st->pending == 'U') {
      st->pending = 0;
      settled++;
      if (len < 0)
        st->present = false;    /* the pending delete went through */
    }
    /* Journal the state found, so the next run starts settled. */
    if (!was_pending)
      ;
    else if (st->present)
      journal ("F d%02u/f%" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n",
               (unsigned) (n % NDIRS), n, st->gen, st->size, st->sha);
    else
      journal ("D d%02u/f%" PRIu64 "\n", (unsigned) (n % NDIRS), n);
    if (!st->present) {
      if (len >= 0)
        bad ("%s: deleted (and the directory fsynced) but it is back, %"
             PRId64 " bytes", path, len);
      else
        gone++;
      free (data);
      continue;
    }
    if (!holds (data, len, st->gen, st->size, why, sizeof why))
      bad ("%s: %s (journal: gen %" PRIu64 ", %" PRIu64 " bytes, sha256 %s)",
           path, why, st->gen, st->size, st->sha);
    else {
      sha256_hex (data, len, sha);
      if (strcmp (sha, st->sha) != 0)
        bad ("%s: sha256 %s, journal %s", path, sha, st->sha);
      checked++;
    }
    free (data);
  }

  snprintf (path, sizeof path, "%s/%s", dir, LOG_NAME);
  len = slurp (path, &data);
  if (log_total > 0) {
    uint8_t *expect = malloc (log_total);
    if (expect == NULL)
      die ("out of memory");
    fill (expect, UINT64_MAX, 0, log_total);
    if (len < (int64_t) log_total)
      bad ("%s: %" PRId64 " bytes, but %" PRIu64 " were fdatasync'ed",
           path, len, log_total);
    else if (memcmp (data, expect, log_total) != 0) {
      uint64_t i = 0;
      while (data[i] == expect[i])
        i++;
      bad ("%s: byte %" PRIu64 " differs (0x%02x, expected 0x%02x) in the "
           "fdatasync'ed part of %" PRIu64 " bytes", path, i, data[i],
           expect[i], log_total);
    }
    free (expect);
  }
  free (data);
  printf ("fsync-workload: verified %" PRIu64 " files byte for byte, %"
          PRIu64 " deleted ones gone, log %" PRIu64 " bytes; %" PRIu64
          " pending operation(s) settled; %u failure(s)\n",
          checked, gone, log_total, settled, failures);
}

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: fsync-workload --dir DIR --journal FILE [--seed N] [--duration SECS]\n"
"                      [--max-size BYTES]\n"
"       fsync-workload --dir DIR --journal FILE --verify\n");
}

int
main (int argc, char *argv[])
{
  enum { OPT_DIR = 256, OPT_JOURNAL, OPT_SEED, OPT_DURATION, OPT_MAX_SIZE,
         OPT_VERIFY };
  static const struct option opts[] = {
    { "dir", required_argument, NULL, OPT_DIR },
    { "journal", required_argument, NULL, OPT_JOURNAL },
    { "seed", required_argument, NULL, OPT_SEED },
    { "duration", required_argument, NULL, OPT_DURATION },
    { "max-size", required_argument, NULL, OPT_MAX_SIZE },
    { "verify", no_argument, NULL, OPT_VERIFY },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  int c;
  uint64_t n;

  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_DIR: dir = optarg; break;
    case OPT_JOURNAL: journal_path = optarg; break;
    case OPT_SEED: seed = strtoull (optarg, NULL, 0); seed_given = true; break;
    case OPT_DURATION: duration = atof (optarg); break;
    case OPT_MAX_SIZE: max_size = strtoull (optarg, NULL, 0); break;
    case OPT_VERIFY: verify_mode = true; break;
    case 'h': usage (stdout); exit (0);
    default: usage (stderr); exit (2);
    }
  }
  if (!dir || !journal_path || optind != argc || max_size == 0) {
    usage (stderr);
    exit (2);
  }
  names = calloc (MAX_NAMES, sizeof *names);
  if (names == NULL)
    die ("out of memory");
  load_journal ();
  if (verify_mode) {
    verify ();
    return failures ? 1 : 0;
  }
  for (n = 1; n <= max_num; ++n)
    if (names[n].known && names[n].pending)
      die ("%s: pending operations: run --verify first", journal_path);
  run ();
  return 0;
}
