/* bench/fsync-bench: COUNT appends of BYTES each to FILE, each followed by
 * fsync(2); times every fsync with CLOCK_MONOTONIC.
 *
 *   fsync-bench [-r] [-z] [-s SEED] FILE [COUNT [BYTES [LATENCY-FILE]]]
 *                                                       (500, 4096)
 *
 *   -r  overwrite instead of append: each write goes to a random offset,
 *       a multiple of BYTES, inside FILE as it is (which must exist and
 *       hold at least BYTES); the file does not grow
 *   -z  incompressible content (a xorshift generator, SEED) instead of
 *       log text
 *
 * Prints one line of "key=value" pairs for the benchmark script:
 *   count= seconds= fsyncs_per_s= p50_ms= p90_ms= p99_ms= max_ms= mean_ms=
 * seconds covers write+fsync of all appends; the percentiles are of the fsync
 * calls alone.  With LATENCY-FILE, every fsync's latency (ms) one a line. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"

static uint64_t rng = 88172645463325252ULL;

static uint64_t
next_rand (void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int
main (int argc, char **argv)
{
  int overwrite = 0, random_data = 0, opt;
  while ((opt = getopt (argc, argv, "rzs:")) != -1) {
    switch (opt) {
    case 'r': overwrite = 1; break;
    case 'z': random_data = 1; break;
    case 's': rng ^= strtoull (optarg, NULL, 0) * 0x9E3779B97F4A7C15ULL; break;
    default: goto usage;
    }
  }
  argc -= optind - 1;
  argv += optind - 1;
  if (argc < 2 || argc > 5) {
  usage:
    fprintf (stderr, "usage: fsync-bench [-r] [-z] [-s SEED] FILE [COUNT [BYTES [LATENCY-FILE]]]\n");
    return 2;
  }
  const char *file = argv[1];
  size_t count = argc > 2 ? strtoul (argv[2], NULL, 0) : 500;
  size_t bytes = argc > 3 ? strtoul (argv[3], NULL, 0) : 4096;
  if (count == 0 || bytes == 0) {
    fprintf (stderr, "fsync-bench: COUNT and BYTES must be positive\n");
    return 2;
  }
  char *buf = malloc (bytes);
  double *lat = malloc (count * sizeof *lat);
  if (!buf || !lat) {
    perror ("malloc");
    return 1;
  }
  int fd = open (file, overwrite ? O_WRONLY | O_CLOEXEC
                  : O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    fprintf (stderr, "fsync-bench: %s: %s\n", file, strerror (errno));
    return 1;
  }
  off_t slots = 0;
  if (overwrite) {
    off_t end = lseek (fd, 0, SEEK_END);
    slots = end < 0 ? 0 : end / (off_t) bytes;
    if (slots < 1) {
      fprintf (stderr, "fsync-bench: -r: %s holds less than %zu bytes\n", file, bytes);
      return 1;
    }
  }
  double t0 = now ();
  for (size_t i = 0; i < count; ++i) {
    /* A log record: recognisable text, different every time. */
    int n = snprintf (buf, bytes, "append %zu of %zu\n", i + 1, count);
    for (size_t j = n > 0 ? (size_t) n : 0; j < bytes; ++j)
      buf[j] = (j % 64 == 63) ? '\n' : (char) ('a' + (i + j) % 26);
    if (random_data)
      for (size_t j = 0; j < bytes; ++j)
        buf[j] = (char) (next_rand () >> 56);
    off_t at = overwrite ? (off_t) (next_rand () % (uint64_t) slots) * (off_t) bytes : 0;
    for (size_t off = 0; off < bytes;) {
      ssize_t w = overwrite ? pwrite (fd, buf + off, bytes - off, at + (off_t) off)
                            : write (fd, buf + off, bytes - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        fprintf (stderr, "fsync-bench: write %s: %s\n", file, strerror (errno));
        return 1;
      }
      off += (size_t) w;
    }
    double a = now ();
    if (fsync (fd) != 0) {
      fprintf (stderr, "fsync-bench: fsync %s: %s\n", file, strerror (errno));
      return 1;
    }
    lat[i] = (now () - a) * 1000.0;
  }
  double secs = now () - t0;
  if (close (fd) != 0) {
    fprintf (stderr, "fsync-bench: close %s: %s\n", file, strerror (errno));
    return 1;
  }
  if (argc > 4) {
    FILE *f = fopen (argv[4], "w");
    if (!f) {
      fprintf (stderr, "fsync-bench: %s: %s\n", argv[4], strerror (errno));
      return 1;
    }
    for (size_t i = 0; i < count; ++i)
      fprintf (f, "%.3f\n", lat[i]);
    if (fclose (f) != 0) {
      perror ("fsync-bench: latency file");
      return 1;
    }
  }
  double sum = 0;
  for (size_t i = 0; i < count; ++i)
    sum += lat[i];
  qsort (lat, count, sizeof *lat, cmp);
  printf ("count=%zu seconds=%.3f fsyncs_per_s=%.1f p50_ms=%.2f p90_ms=%.2f "
          "p99_ms=%.2f max_ms=%.2f mean_ms=%.2f\n",
          count, secs, count / secs, pct (lat, count, 50), pct (lat, count, 90),
          pct (lat, count, 99), lat[count - 1], sum / count);
  free (buf);
  free (lat);
  return 0;
}
