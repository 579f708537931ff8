/* bench/nbd-randread: random reads of BYTES each from an NBD server, on
 * THREADS connections of their own (one request in flight on each), for
 * the plugin-direct figures of bench/run.
 *
 *   nbd-randread URI RANGE COUNT [THREADS [BYTES [SEED]]]   (1, 4096, 1)
 *
 * Offsets are multiples of BYTES in [0, RANGE), drawn from a xorshift
 * generator (SEED, and the thread's number): the same offsets in every
 * run.  Prints one line of key=value pairs:
 *   count= threads= seconds= iops= mbs= p50_ms= p99_ms= max_ms=
 * (the percentiles of the single reads, nearest rank). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "bench-util.h"

static const char *uri;
static uint64_t range, bytes, seed;
static size_t per_thread;
static double *lat;
static int failed;

static void *
worker (void *arg)
{
  size_t t = (size_t) (uintptr_t) arg;
  uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ULL ^ (t + 1) * 0xD1B54A32D192ED03ULL;
  uint64_t slots = range / bytes;
  char *buf = malloc (bytes);
  struct nbd_handle *nbd = nbd_create ();
  if (!buf || !nbd || nbd_connect_uri (nbd, uri) == -1) {
    fprintf (stderr, "nbd-randread: %s\n", nbd ? nbd_get_error () : "nbd_create");
    __atomic_store_n (&failed, 1, __ATOMIC_SEQ_CST);
    free (buf);
    if (nbd) nbd_close (nbd);
    return NULL;
  }
  for (size_t i = 0; i < per_thread; ++i) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    uint64_t off = (x % slots) * bytes;
    double a = now ();
    if (nbd_pread (nbd, buf, bytes, off, 0) == -1) {
      fprintf (stderr, "nbd-randread: pread at %" PRIu64 ": %s\n", off, nbd_get_error ());
      __atomic_store_n (&failed, 1, __ATOMIC_SEQ_CST);
      break;
    }
    lat[t * per_thread + i] = (now () - a) * 1000.0;
  }
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  free (buf);
  return NULL;
}

int
main (int argc, char **argv)
{
  if (argc < 4 || argc > 7) {
    fprintf (stderr, "usage: nbd-randread URI RANGE COUNT [THREADS [BYTES [SEED]]]\n");
    return 2;
  }
  uri = argv[1];
  range = strtoull (argv[2], NULL, 0);
  size_t count = strtoul (argv[3], NULL, 0);
  size_t threads = argc > 4 ? strtoul (argv[4], NULL, 0) : 1;
  bytes = argc > 5 ? strtoull (argv[5], NULL, 0) : 4096;
  seed = argc > 6 ? strtoull (argv[6], NULL, 0) : 1;
  if (threads < 1 || threads > 256 || bytes == 0 || range < bytes || count < threads) {
    fprintf (stderr, "nbd-randread: bad arguments\n");
    return 2;
  }
  per_thread = count / threads;
  count = per_thread * threads;
  lat = calloc (count, sizeof *lat);
  pthread_t *tid = calloc (threads, sizeof *tid);
  if (!lat || !tid) {
    perror ("calloc");
    return 1;
  }
  double t0 = now ();
  for (size_t t = 0; t < threads; ++t)
    if (pthread_create (&tid[t], NULL, worker, (void *) (uintptr_t) t) != 0) {
      perror ("pthread_create");
      return 1;
    }
  for (size_t t = 0; t < threads; ++t)
    pthread_join (tid[t], NULL);
  double secs = now () - t0;
  if (failed)
    return 1;
  qsort (lat, count, sizeof *lat, cmp);
  printf ("count=%zu threads=%zu seconds=%.3f iops=%.1f mbs=%.2f p50_ms=%.2f "
          "p99_ms=%.2f max_ms=%.2f\n", count, threads, secs, count / secs,
          count * (double) bytes / secs / 1e6, pct (lat, count, 50),
          pct (lat, count, 99), lat[count - 1]);
  free (lat);
  free (tid);
  return 0;
}
