/* s3chunk tests: requests at and beyond the edges of the disk, as the NBD
 * protocol answers them.  libnbd's strict mode is turned off, so requests
 * a careful client would refuse to send reach the server, and the server's
 * own answer is checked:
 *
 *   - reads, trims, cache and block status beyond the end, straddling the
 *     end, or whose offset + length overflows: EINVAL;
 *   - writes and write-zeroes beyond the end: ENOSPC (the protocol's
 *     SHOULD; EINVAL accepted), and a refused write straddling the end
 *     changes nothing;
 *   - zero-length requests: success or EINVAL (ENOSPC for writes), never a
 *     hang or a dropped connection;
 *   - after every refused request the connection still works;
 *   - the last byte, the last (partial) chunk and requests of the largest
 *     size nbdkit takes (64 MiB, bigger than the cache) work.
 *
 *   nbd-edges --socket SOCK
 *
 * Exit status: 0 all good, 1 a check failed (each one named), 2 usage.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define BIG (64 * 1024 * 1024)

static struct nbd_handle *h;
static int64_t size;
static unsigned failures, checks;

static void
fail (const char *what, const char *why)
{
  fprintf (stderr, "nbd-edges: FAIL: %s: %s\n", what, why);
  failures++;
}

static const char *
errname (int e)
{
  switch (e) {
  case 0: return "success";
  case EINVAL: return "EINVAL";
  case ENOSPC: return "ENOSPC";
  case EIO: return "EIO";
  case ENOMEM: return "ENOMEM";
  case EOVERFLOW: return "EOVERFLOW";
  case EPERM: return "EPERM";
  case ENOTSUP: return "ENOTSUP";
  case ESHUTDOWN: return "ESHUTDOWN";
  case ENOTCONN: return "ENOTCONN";
  default: return strerror (e);
  }
}

/* The request must still leave a working connection. */
static void
still_works (const char *what)
{
  char buf[512];

  if (nbd_aio_is_ready (h) != 1 || nbd_pread (h, buf, sizeof buf, 0, 0) == -1)
    fail (what, "the connection does not work after it");
}

/* rc/errno of a request against the accepted answers (0 = success). */
static void
expect (const char *what, int rc, const int *ok, size_t nok)
{
  int e = rc == -1 ? nbd_get_errno () : 0;
  char why[512];
  size_t i;

  checks++;
  if (rc == -1 && e == 0)
    e = -1;
  for (i = 0; i < nok; ++i)
    if (ok[i] == e) {
      printf ("ok: %s: %s\n", what, errname (e));
      still_works (what);
      return;
    }
  snprintf (why, sizeof why, "answered %s%s%s", errname (e),
            rc == -1 ? ": " : "", rc == -1 ? nbd_get_error () : "");
  fail (what, why);
  still_works (what);
}

#define EXPECT(what, rc, ...)                                           \
  do {                                                                  \
    static const int ok_[] = { __VA_ARGS__ };                           \
    expect ((what), (rc), ok_, sizeof ok_ / sizeof ok_[0]);             \
  } while (0)

static int
extent_cb (void *data, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  return 0;
}

static int
block_status (uint64_t count, uint64_t offset)
{
  return nbd_block_status (h, count, offset,
                           (nbd_extent_callback) { .callback = extent_cb }, 0);
}

static void
fill (uint8_t *p, size_t n, unsigned seed)
{
  uint64_t s = seed * UINT64_C (0x9e3779b97f4a7c15) + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    p[i] = s;
  }
}

static void
read_expect (const char *what, uint64_t offset, const uint8_t *want, size_t n)
{
  uint8_t *got = malloc (n);
  char why[256];

  checks++;
  if (got == NULL) {
    fail (what, "out of memory");
    return;
  }
  if (nbd_pread (h, got, n, offset, 0) == -1)
    fail (what, nbd_get_error ());
  else if (memcmp (got, want, n) != 0) {
    size_t i = 0;
    while (got[i] == want[i])
      i++;
    snprintf (why, sizeof why, "byte %zu of %zu differs (0x%02x, expected "
              "0x%02x)", i, n, got[i], want[i]);
    fail (what, why);
  }
  else
    printf ("ok: %s: %zu bytes read back\n", what, n);
  free (got);
}

int
main (int argc, char *argv[])
{
  static uint8_t buf[65536], tail[4096];
  uint8_t *big;
  uint64_t end;

  if (argc != 3 || strcmp (argv[1], "--socket") != 0) {
    fprintf (stderr, "usage: nbd-edges --socket SOCK\n");
    exit (2);
  }
  h = nbd_create ();
  if (h == NULL ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_unix (h, argv[2]) == -1) {
    fprintf (stderr, "nbd-edges: connect: %s\n", nbd_get_error ());
    exit (1);
  }
  /* Send what a strict client would refuse to: the server must answer. */
  if (nbd_set_strict_mode (h, 0) == -1) {
    fprintf (stderr, "nbd-edges: nbd_set_strict_mode: %s\n", nbd_get_error ());
    exit (1);
  }
  size = nbd_get_size (h);
  if (size < 2 * 65536 || size % 512) {
    fprintf (stderr, "nbd-edges: the disk must be a multiple of 512 bytes and "
             "at least 128 KiB\n");
    exit (2);
  }
  if (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "nbd-edges: the server has no base:allocation\n");
    exit (1);
  }
  end = size;
  printf ("nbd-edges: disk of %" PRIu64 " bytes\n", end);

  /* Known content in the last 4 KiB, to see that refused writes do not
   * touch it.
   */
  fill (tail, sizeof tail, 1);
  if (nbd_pwrite (h, tail, sizeof tail, end - sizeof tail, 0) == -1 ||
      nbd_flush (h, 0) == -1) {
    fprintf (stderr, "nbd-edges: write the tail: %s\n", nbd_get_error ());
    exit (1);
  }

  /* Beyond and straddling the end. */
  EXPECT ("read 1 byte at the end", nbd_pread (h, buf, 1, end, 0), EINVAL);
  EXPECT ("read 1024 bytes straddling the end",
          nbd_pread (h, buf, 1024, end - 512, 0), EINVAL);
  EXPECT ("read 512 bytes 1 MiB beyond the end",
          nbd_pread (h, buf, 512, end + 1048576, 0), EINVAL);
  EXPECT ("read whose offset + length overflows",
          nbd_pread (h, buf, 4096, UINT64_MAX - 1000, 0), EINVAL);
  EXPECT ("read at offset 2^63", nbd_pread (h, buf, 512, UINT64_C (1) << 63, 0),
          EINVAL);
  fill (buf, sizeof buf, 2);
  EXPECT ("write 512 bytes at the end", nbd_pwrite (h, buf, 512, end, 0),
          ENOSPC, EINVAL);
  EXPECT ("write 4096 bytes straddling the end",
          nbd_pwrite (h, buf, 4096, end - 2048, 0), ENOSPC, EINVAL);
  EXPECT ("FUA write straddling the end",
          nbd_pwrite (h, buf, 4096, end - 512, LIBNBD_CMD_FLAG_FUA),
          ENOSPC, EINVAL);
  EXPECT ("write whose offset + length overflows",
          nbd_pwrite (h, buf, 4096, UINT64_MAX - 1000, 0), ENOSPC, EINVAL);
  EXPECT ("write-zeroes straddling the end",
          nbd_zero (h, 8192, end - 4096, 0), ENOSPC, EINVAL);
  EXPECT ("fast write-zeroes beyond the end",
          nbd_zero (h, 4096, end, LIBNBD_CMD_FLAG_FAST_ZERO), ENOSPC, EINVAL);
  EXPECT ("trim straddling the end", nbd_trim (h, 8192, end - 4096, 0),
          EINVAL);
  EXPECT ("trim beyond the end", nbd_trim (h, 4096, end + 4096, 0), EINVAL);
  EXPECT ("cache straddling the end", nbd_cache (h, 8192, end - 4096, 0),
          EINVAL);
  EXPECT ("block status beyond the end", block_status (4096, end), EINVAL);
  EXPECT ("block status straddling the end", block_status (8192, end - 4096),
          EINVAL);
  if (nbd_flush (h, 0) == -1)
    fail ("flush after the refused requests", nbd_get_error ());
  read_expect ("the last 4 KiB are untouched by the refused requests",
               end - sizeof tail, tail, sizeof tail);

  /* Zero-length requests: a no-op or EINVAL (ENOSPC for writes). */
  EXPECT ("zero-length read at 0", nbd_pread (h, buf, 0, 0, 0), 0, EINVAL);
  EXPECT ("zero-length read at the end", nbd_pread (h, buf, 0, end, 0),
          0, EINVAL);
  EXPECT ("zero-length read beyond the end",
          nbd_pread (h, buf, 0, end + 512, 0), 0, EINVAL);
  EXPECT ("zero-length write", nbd_pwrite (h, buf, 0, 4096, 0),
          0, EINVAL, ENOSPC);
  EXPECT ("zero-length FUA write at the end",
          nbd_pwrite (h, buf, 0, end, LIBNBD_CMD_FLAG_FUA), 0, EINVAL, ENOSPC);
  EXPECT ("zero-length write-zeroes", nbd_zero (h, 0, 4096, 0),
          0, EINVAL, ENOSPC);
  EXPECT ("zero-length trim", nbd_trim (h, 0, 4096, 0), 0, EINVAL);
  EXPECT ("zero-length cache", nbd_cache (h, 0, 4096, 0), 0, EINVAL);
  EXPECT ("zero-length block status", block_status (0, 4096), 0, EINVAL);
  read_expect ("the last 4 KiB are still untouched", end - sizeof tail, tail,
               sizeof tail);

  /* At the edge, inside the disk: these work. */
  fill (buf, 1, 3);
  EXPECT ("write the last byte", nbd_pwrite (h, buf, 1, end - 1, 0), 0);
  memcpy (tail + sizeof tail - 1, buf, 1);
  read_expect ("read the last byte", end - 1, buf, 1);
  fill (buf, 3000, 4);
  EXPECT ("FUA write of the last 3000 bytes",
          nbd_pwrite (h, buf, 3000, end - 3000, LIBNBD_CMD_FLAG_FUA), 0);
  memcpy (tail + sizeof tail - 3000, buf, 3000);
  read_expect ("read the last 4 KiB", end - sizeof tail, tail, sizeof tail);
  EXPECT ("trim the last 1000 bytes", nbd_trim (h, 1000, end - 1000, 0), 0);
  EXPECT ("write-zeroes of the last 24 bytes",
          nbd_zero (h, 24, end - 1024, 0), 0);
  memset (tail + sizeof tail - 1000, 0, 1000);
  memset (tail + sizeof tail - 1024, 0, 24);
  read_expect ("trimmed and zeroed tail reads as zeroes", end - sizeof tail,
               tail, sizeof tail);
  EXPECT ("block status of the last 4 KiB", block_status (4096, end - 4096), 0);
  EXPECT ("cache of the last 4 KiB", nbd_cache (h, 4096, end - 4096, 0), 0);

  /* The largest request nbdkit takes, bigger than a 16M cache. */
  if (end >= BIG + 65536 && (big = malloc (BIG)) != NULL) {
    fill (big, BIG, 5);
    EXPECT ("write of 64 MiB at an unaligned offset",
            nbd_pwrite (h, big, BIG, 4097, 0), 0);
    read_expect ("read of 64 MiB at an unaligned offset", 4097, big, BIG);
    EXPECT ("write-zeroes of 64 MiB",
            nbd_zero (h, BIG, 4097, 0), 0);
    memset (big, 0, BIG);
    read_expect ("64 MiB of zeroes", 4097, big, BIG);
    free (big);
  }

  if (nbd_flush (h, 0) == -1)
    fail ("final flush", nbd_get_error ());
  if (nbd_shutdown (h, 0) == -1)
    fail ("shutdown", nbd_get_error ());
  nbd_close (h);
  printf ("nbd-edges: %u checks, %u failed\n", checks, failures);
  return failures ? 1 : 0;
}
