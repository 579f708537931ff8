/* s3chunk: the write fence, shared by the lock (which moves it) and the
 * object stores (which obey it).
 *
 * The invariant (docs/FORMAT.md, "The lock object"): no request of the
 * holder that can change an object of the volume is in flight after its
 * write deadline, which the lock sets to
 *     sent + lease - lease/3
 * where `sent` is when the last successful renewal was sent, by
 * CLOCK_BOOTTIME (it keeps counting while the machine is suspended, so a
 * suspend longer than the lease cannot make the holder believe that no
 * time passed).  A taker waits until the store's own clock says the lease
 * plus a margin ran out: the lease/3 in between covers clock rate
 * differences and bytes already on the wire.
 *
 * Enforcement: objstore.c refuses a mutating call (put, put_if, del,
 * del_many) past the deadline with -ENOLCK before it reaches a variant; a
 * variant checks again before every attempt, bounds every transfer by the
 * time left, and aborts a transfer under way when the deadline passes or
 * the fence is closed (objstore-s3.c: curl's timeouts, its progress and
 * read callbacks).  Once closed a fence never opens again.
 *
 * A store with no fence set (the tools, lock=none, read-only) is not
 * limited.  The lock's own renewals go through a store without a fence:
 * they are conditional on our own last etag, so a late one cannot
 * overwrite a taker's object.
 */
#ifndef S3CHUNK_FENCE_H
#define S3CHUNK_FENCE_H

#include <stdbool.h>
#include <stdint.h>

#define CS_FENCE_NONE INT64_MAX         /* deadline of an open-ended fence */

struct cs_fence {
  int64_t deadline;             /* CLOCK_BOOTTIME ns; atomic; 0: closed */
};

/* Nanoseconds on CLOCK_BOOTTIME (or the test clock, below). */
extern int64_t cs_boottime_ns (void);

/* Tests only: make cs_boottime_ns return the real clock plus *offset_ns
 * (read atomically at every call), to simulate a suspend.  NULL: off.
 */
extern void cs_boottime_set_offset (const int64_t *offset_ns);

/* A fence with no deadline yet (CS_FENCE_NONE). */
extern void cs_fence_init (struct cs_fence *f, int64_t deadline);

/* Move the deadline (later or earlier); ignored once closed. */
extern void cs_fence_set (struct cs_fence *f, int64_t deadline);

/* Close for good: every later check fails. */
extern void cs_fence_close (struct cs_fence *f);

/* Nanoseconds left before the deadline (> 0), or <= 0 when no request may
 * be sent.  f NULL: CS_FENCE_NONE.
 */
extern int64_t cs_fence_left (const struct cs_fence *f);

/* The deadline as stored (0 closed, CS_FENCE_NONE open-ended). */
extern int64_t cs_fence_deadline (const struct cs_fence *f);

#endif /* S3CHUNK_FENCE_H */
