/* s3chunk: the write fence (see fence.h). */
#include <config.h>

#include <time.h>

#include "fence.h"

static const int64_t *test_offset;

int64_t
cs_boottime_ns (void)
{
  struct timespec ts;
  const int64_t *off = __atomic_load_n (&test_offset, __ATOMIC_ACQUIRE);
  int64_t t;

  clock_gettime (CLOCK_BOOTTIME, &ts);
  t = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
  if (off)
    t += __atomic_load_n (off, __ATOMIC_ACQUIRE);
  return t;
}

void
cs_boottime_set_offset (const int64_t *offset_ns)
{
  __atomic_store_n (&test_offset, offset_ns, __ATOMIC_RELEASE);
}

void
cs_fence_init (struct cs_fence *f, int64_t deadline)
{
  __atomic_store_n (&f->deadline, deadline, __ATOMIC_RELEASE);
}

void
cs_fence_set (struct cs_fence *f, int64_t deadline)
{
  int64_t cur = __atomic_load_n (&f->deadline, __ATOMIC_ACQUIRE);

  if (deadline <= 0)
    deadline = 1;               /* in the past, but not "closed" */
  while (cur != 0 &&
         !__atomic_compare_exchange_n (&f->deadline, &cur, deadline, false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    ;
}

void
cs_fence_close (struct cs_fence *f)
{
  __atomic_store_n (&f->deadline, 0, __ATOMIC_RELEASE);
}

int64_t
cs_fence_deadline (const struct cs_fence *f)
{
  return f ? __atomic_load_n (&f->deadline, __ATOMIC_ACQUIRE) : CS_FENCE_NONE;
}

int64_t
cs_fence_left (const struct cs_fence *f)
{
  int64_t d = cs_fence_deadline (f);

  if (d == CS_FENCE_NONE)
    return CS_FENCE_NONE;
  if (d == 0)
    return 0;
  return d - cs_boottime_ns ();
}
