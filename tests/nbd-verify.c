/* s3chunk tests: a tiny scripted NBD client for the shell tests.
 *
 *   nbd-verify --socket SOCK COMMAND...
 *
 * The commands run in order on one connection; the first failure stops
 * with exit status 1 and a message naming the offset, the length and, for
 * data, the first differing byte.  Data is a pattern computed from a seed
 * and the absolute offset, so any part of a write can be checked later,
 * after a restart, without keeping a copy.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#include "params.h"

#define PIECE (4 * 1024 * 1024)

static const char usage_text[] =
"usage: nbd-verify --socket SOCK COMMAND...\n"
"Commands, run in order (sizes take K, M, G suffixes):\n"
"  --size N                        the disk must have N bytes\n"
"  --fua                           the next write, zero or trim uses FUA\n"
"  --write-pattern OFF LEN SEED    write the pattern of SEED\n"
"  --expect-pattern OFF LEN SEED   the range must hold that pattern\n"
"  --zero OFF LEN                  zero the range\n"
"  --trim OFF LEN                  trim the range\n"
"  --flush                         flush\n"
"  --sleep SECS                    keep the connection open, idle, SECS s\n"
"  --expect-zero OFF LEN           the range must read as zeroes\n"
"  --expect-either OFF LEN A B CHUNK  each CHUNK-aligned piece of the range\n"
"                                  holds all of pattern A or all of B (a\n"
"                                  crash keeps a chunk old or new, never a mix)\n"
"  --expect-hole OFF LEN           block status: hole and zero throughout\n"
"  --expect-data OFF LEN           block status: allocated throughout\n"
"  --write-file FILE OFF           write FILE's content at OFF\n"
"  --compare FILE                  the disk must start with FILE's content\n"
"  --save FILE OFF LEN             save the range to FILE\n";

static struct nbd_handle *h;
static uint64_t disk_size;

static void
fail (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbd-verify: FAILED: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  exit (1);
}

static void
nbd_fail (const char *what, uint64_t offset, uint64_t len)
{
  fail ("%s offset %" PRIu64 " length %" PRIu64 ": %s", what, offset, len,
        nbd_get_error ());
}

static uint64_t
num (const char *s)
{
  uint64_t v;

  if (params_parse_size (s, &v) < 0) {
    fprintf (stderr, "nbd-verify: %s: expected a number with an optional "
             "K, M, G or T suffix\n", s);
    exit (2);
  }
  return v;
}

/* The pattern: 8 bytes of splitmix64 per 8-byte word of the disk. */
static uint8_t
pattern_byte (uint64_t seed, uint64_t offset)
{
  uint64_t z = seed * UINT64_C (0x9e3779b97f4a7c15) + (offset >> 3) + 1;
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  z ^= z >> 31;
  return z >> (8 * (offset & 7));
}

static void
fill_pattern (uint8_t *buf, uint64_t offset, uint64_t len, uint64_t seed)
{
  uint64_t i;

  for (i = 0; i < len; ++i)
    buf[i] = pattern_byte (seed, offset + i);
}

static void
check_range (uint64_t offset, uint64_t len)
{
  if (offset > disk_size || len > disk_size - offset)
    fail ("range offset %" PRIu64 " length %" PRIu64 " is beyond the end of "
          "the disk (%" PRIu64 " bytes)", offset, len, disk_size);
}

/* Compare got with exp: report the first difference and fail. */
static void
compare (const char *what, const uint8_t *got, const uint8_t *exp,
         uint64_t offset, uint64_t len, uint64_t range_off, uint64_t range_len)
{
  uint64_t i, n = 0;

  if (memcmp (got, exp, len) == 0)
    return;
  for (i = 0; got[i] == exp[i]; ++i)
    ;
  {
    uint64_t first = i;
    for (; i < len; ++i)
      n += got[i] != exp[i];
    fail ("%s offset %" PRIu64 " length %" PRIu64 ": first differing byte "
          "at offset %" PRIu64 ": expected 0x%02x, got 0x%02x (%" PRIu64
          " byte(s) differ in [%" PRIu64 ", %" PRIu64 "))",
          what, range_off, range_len, offset + first, exp[first], got[first],
          n, offset, offset + len);
  }
}

/* Read the range piecewise; gen fills the expected bytes of each piece. */
static void
expect (const char *what, uint64_t offset, uint64_t len,
        void (*gen) (uint8_t *, uint64_t, uint64_t, void *), void *opaque)
{
  uint8_t *got = malloc (PIECE), *exp = malloc (PIECE);
  uint64_t o = offset, left = len, n;

  if (got == NULL || exp == NULL)
    fail ("out of memory");
  check_range (offset, len);
  while (left > 0) {
    n = left < PIECE ? left : PIECE;
    if (nbd_pread (h, got, n, o, 0) == -1)
      nbd_fail ("read", o, n);
    gen (exp, o, n, opaque);
    compare (what, got, exp, o, n, offset, len);
    o += n;
    left -= n;
  }
  free (got);
  free (exp);
}

static void
gen_pattern (uint8_t *buf, uint64_t offset, uint64_t len, void *opaque)
{
  fill_pattern (buf, offset, len, *(uint64_t *) opaque);
}

static void
gen_zero (uint8_t *buf, uint64_t offset, uint64_t len, void *opaque)
{
  memset (buf, 0, len);
}

struct file_src { FILE *fp; uint64_t base; };

static void
gen_file (uint8_t *buf, uint64_t offset, uint64_t len, void *opaque)
{
  struct file_src *f = opaque;

  if (fseeko (f->fp, offset - f->base, SEEK_SET) == -1 ||
      fread (buf, len, 1, f->fp) != 1)
    fail ("reading the comparison file: %m");
}

/* Block status: every extent overlapping the range must (hole) or must not
 * (data) be a hole.
 */
struct extent_check {
  bool want_hole;
  uint64_t lo, hi, covered;
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct extent_check *ec = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i];
    uint32_t flags = entries[i + 1];
    bool hole = (flags & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) ==
      (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);

    if (offset < ec->hi && offset + len > ec->lo && hole != ec->want_hole)
      fail ("expect-%s offset %" PRIu64 " length %" PRIu64 ": the extent "
            "at offset %" PRIu64 " length %" PRIu64 " is reported as %s "
            "(flags 0x%x)", ec->want_hole ? "hole" : "data", ec->lo,
            ec->hi - ec->lo, offset, len,
            flags == 0 ? "data" :
            hole ? "a hole" :
            flags & LIBNBD_STATE_ZERO ? "zero but allocated" : "hole only",
            flags);
    ec->covered += len;
    offset += len;
  }
  return 0;
}

static void
expect_extents (bool want_hole, uint64_t offset, uint64_t len)
{
  struct extent_check ec = { .want_hole = want_hole, .lo = offset,
                             .hi = offset + len };
  uint64_t o = offset;

  check_range (offset, len);
  if (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
    fail ("the server does not offer base:allocation (block status)");
  while (o < offset + len) {
    uint64_t n = offset + len - o;
    if (n > 1024 * 1024 * 1024)
      n = 1024 * 1024 * 1024;
    ec.covered = 0;
    if (nbd_block_status (h, n, o,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = &ec },
                          0) == -1)
      nbd_fail ("block status", o, n);
    if (ec.covered == 0)
      fail ("block status at offset %" PRIu64 " returned no extent", o);
    o += ec.covered;
  }
}

static void
write_buf (const char *what, const uint8_t *buf, uint64_t offset,
           uint64_t len, uint32_t flags)
{
  uint64_t n;

  while (len > 0) {
    n = len < PIECE ? len : PIECE;
    if (nbd_pwrite (h, buf, n, offset, flags) == -1)
      nbd_fail (what, offset, n);
    buf += n;
    offset += n;
    len -= n;
  }
}

/* Requests larger than a piece are split (the server's maximum). */
static void
zero_or_trim (bool trim, uint64_t offset, uint64_t len, uint32_t flags)
{
  uint64_t n;

  check_range (offset, len);
  while (len > 0) {
    n = len < 64 * 1024 * 1024 ? len : 64 * 1024 * 1024;
    if ((trim ? nbd_trim (h, n, offset, flags)
         : nbd_zero (h, n, offset, flags)) == -1)
      nbd_fail (trim ? "trim" : "zero", offset, n);
    offset += n;
    len -= n;
  }
}

static FILE *
open_file (const char *file, const char *mode, uint64_t *size)
{
  FILE *fp = fopen (file, mode);
  struct stat st;

  if (fp == NULL || fstat (fileno (fp), &st) == -1)
    fail ("%s: %m", file);
  if (size)
    *size = st.st_size;
  return fp;
}

#define NEED(n)                                                         \
  do {                                                                  \
    if (i + (n) >= argc) {                                              \
      fprintf (stderr, "nbd-verify: %s needs %d argument(s)\n%s",       \
               cmd, (n), usage_text);                                   \
      exit (2);                                                         \
    }                                                                   \
  } while (0)

int
main (int argc, char *argv[])
{
  const char *socket_path = NULL;
  uint32_t flags = 0;
  int i;

  setvbuf (stdout, NULL, _IOLBF, 0);
  if (argc >= 2 && strcmp (argv[1], "--help") == 0) {
    fputs (usage_text, stdout);
    exit (0);
  }
  if (argc < 3 || strcmp (argv[1], "--socket") != 0) {
    fputs (usage_text, stderr);
    exit (2);
  }
  socket_path = argv[2];

  h = nbd_create ();
  if (h == NULL ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_unix (h, socket_path) == -1)
    fail ("connect to %s: %s", socket_path, nbd_get_error ());
  disk_size = nbd_get_size (h);
  if ((int64_t) disk_size == -1)
    fail ("get size: %s", nbd_get_error ());

  for (i = 3; i < argc; ++i) {
    const char *cmd = argv[i];

    if (strcmp (cmd, "--size") == 0) {
      uint64_t want;
      NEED (1);
      want = num (argv[++i]);
      if (disk_size != want)
        fail ("the disk has %" PRIu64 " bytes, expected %" PRIu64,
              disk_size, want);
      printf ("nbd-verify: size is %" PRIu64 ": ok\n", disk_size);
    }
    else if (strcmp (cmd, "--fua") == 0) {
      flags = LIBNBD_CMD_FLAG_FUA;
      continue;                 /* keep the flag for the next command */
    }
    else if (strcmp (cmd, "--write-pattern") == 0) {
      uint64_t off, len, seed;
      uint8_t *buf;
      NEED (3);
      off = num (argv[++i]);
      len = num (argv[++i]);
      seed = num (argv[++i]);
      check_range (off, len);
      buf = malloc (len ? len : 1);
      if (buf == NULL)
        fail ("out of memory");
      fill_pattern (buf, off, len, seed);
      write_buf ("write", buf, off, len, flags);
      free (buf);
      printf ("nbd-verify: wrote pattern %" PRIu64 " at offset %" PRIu64
              " length %" PRIu64 "%s\n", seed, off, len,
              flags ? " (FUA)" : "");
    }
    else if (strcmp (cmd, "--expect-pattern") == 0) {
      uint64_t off, len, seed;
      NEED (3);
      off = num (argv[++i]);
      len = num (argv[++i]);
      seed = num (argv[++i]);
      expect ("expect-pattern", off, len, gen_pattern, &seed);
      printf ("nbd-verify: offset %" PRIu64 " length %" PRIu64 " holds "
              "pattern %" PRIu64 ": ok\n", off, len, seed);
    }
    else if (strcmp (cmd, "--zero") == 0 || strcmp (cmd, "--trim") == 0) {
      uint64_t off, len;
      bool trim = cmd[2] == 't';
      NEED (2);
      off = num (argv[++i]);
      len = num (argv[++i]);
      zero_or_trim (trim, off, len, flags);
      printf ("nbd-verify: %s offset %" PRIu64 " length %" PRIu64 "%s\n",
              trim ? "trimmed" : "zeroed", off, len, flags ? " (FUA)" : "");
    }
    else if (strcmp (cmd, "--sleep") == 0) {
      NEED (1);
      sleep (num (argv[++i]));
    }
    else if (strcmp (cmd, "--flush") == 0) {
      if (nbd_flush (h, 0) == -1)
        nbd_fail ("flush", 0, 0);
      printf ("nbd-verify: flushed\n");
    }
    else if (strcmp (cmd, "--expect-zero") == 0) {
      uint64_t off, len;
      NEED (2);
      off = num (argv[++i]);
      len = num (argv[++i]);
      expect ("expect-zero", off, len, gen_zero, NULL);
      printf ("nbd-verify: offset %" PRIu64 " length %" PRIu64 " reads as "
              "zeroes: ok\n", off, len);
    }
    else if (strcmp (cmd, "--expect-either") == 0) {
      uint64_t off, len, a, b, csize, o, n, na = 0, nb = 0;
      uint8_t *got, *exp;
      NEED (5);
      off = num (argv[++i]);
      len = num (argv[++i]);
      a = num (argv[++i]);
      b = num (argv[++i]);
      csize = num (argv[++i]);
      check_range (off, len);
      if (csize == 0)
        fail ("--expect-either: CHUNK must not be 0");
      got = malloc (csize);
      exp = malloc (csize);
      if (got == NULL || exp == NULL)
        fail ("out of memory");
      for (o = off; o < off + len; o += n) {
        n = csize - o % csize;
        if (n > off + len - o)
          n = off + len - o;
        if (nbd_pread (h, got, n, o, 0) == -1)
          nbd_fail ("read", o, n);
        fill_pattern (exp, o, n, a);
        if (memcmp (got, exp, n) == 0) {
          na++;
          continue;
        }
        fill_pattern (exp, o, n, b);
        if (memcmp (got, exp, n) == 0) {
          nb++;
          continue;
        }
        /* Neither: report against the newer pattern. */
        compare ("expect-either (neither pattern: a torn chunk)", got, exp,
                 o, n, off, len);
      }
      free (got);
      free (exp);
      printf ("nbd-verify: offset %" PRIu64 " length %" PRIu64 ": %" PRIu64
              " piece(s) hold pattern %" PRIu64 ", %" PRIu64 " pattern %"
              PRIu64 ": ok\n", off, len, na, a, nb, b);
    }
    else if (strcmp (cmd, "--expect-hole") == 0 ||
             strcmp (cmd, "--expect-data") == 0) {
      uint64_t off, len;
      bool hole = cmd[9] == 'h';
      NEED (2);
      off = num (argv[++i]);
      len = num (argv[++i]);
      expect_extents (hole, off, len);
      printf ("nbd-verify: offset %" PRIu64 " length %" PRIu64 " is %s in "
              "block status: ok\n", off, len, hole ? "a hole" : "data");
    }
    else if (strcmp (cmd, "--write-file") == 0) {
      uint64_t off, size;
      FILE *fp;
      uint8_t *buf;
      NEED (2);
      fp = open_file (argv[i + 1], "rb", &size);
      off = num (argv[i + 2]);
      check_range (off, size);
      buf = malloc (size ? size : 1);
      if (buf == NULL)
        fail ("out of memory");
      if (size && fread (buf, size, 1, fp) != 1)
        fail ("%s: short read", argv[i + 1]);
      fclose (fp);
      write_buf ("write", buf, off, size, flags);
      free (buf);
      printf ("nbd-verify: wrote %s at offset %" PRIu64 " (%" PRIu64
              " bytes)%s\n", argv[i + 1], off, size, flags ? " (FUA)" : "");
      i += 2;
    }
    else if (strcmp (cmd, "--compare") == 0) {
      struct file_src f = { .base = 0 };
      uint64_t size;
      NEED (1);
      f.fp = open_file (argv[++i], "rb", &size);
      expect ("compare", 0, size, gen_file, &f);
      fclose (f.fp);
      printf ("nbd-verify: the disk starts with %s (%" PRIu64 " bytes): "
              "ok\n", argv[i], size);
    }
    else if (strcmp (cmd, "--save") == 0) {
      uint64_t off, len, n;
      FILE *fp;
      uint8_t *buf = malloc (PIECE);
      NEED (3);
      fp = open_file (argv[i + 1], "wb", NULL);
      off = num (argv[i + 2]);
      len = num (argv[i + 3]);
      check_range (off, len);
      if (buf == NULL)
        fail ("out of memory");
      while (len > 0) {
        n = len < PIECE ? len : PIECE;
        if (nbd_pread (h, buf, n, off, 0) == -1)
          nbd_fail ("read", off, n);
        if (fwrite (buf, n, 1, fp) != 1)
          fail ("%s: write: %m", argv[i + 1]);
        off += n;
        len -= n;
      }
      if (fclose (fp) != 0)
        fail ("%s: close: %m", argv[i + 1]);
      free (buf);
      printf ("nbd-verify: saved to %s\n", argv[i + 1]);
      i += 3;
    }
    else {
      fprintf (stderr, "nbd-verify: unknown command %s\n%s", cmd, usage_text);
      exit (2);
    }
    flags = 0;
  }

  if (nbd_shutdown (h, 0) == -1)
    fail ("shutdown: %s", nbd_get_error ());
  nbd_close (h);
  return 0;
}
