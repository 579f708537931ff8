/* bench/bench-util.h: the timing and percentile helpers the benchmark's
 * small C programs share (each is built alone by gcc from bench/run or
 * bench/read-bench; this header travels with them).
 */
#ifndef S3CHUNK_BENCH_UTIL_H
#define S3CHUNK_BENCH_UTIL_H

#include <stddef.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* qsort comparison of doubles. */
static inline int
cmp (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0-100) of a sorted array of n > 0 values. */
static inline double
pct (const double *v, size_t n, double p)
{
  size_t k = (size_t) (p / 100.0 * n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

#endif
