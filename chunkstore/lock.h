/* s3chunk: one mounter per volume.
 *
 * A lock object (key "lock", beside the superblock) is created only if
 * absent, renewed every lease/3 by a replace-if-etag of our own last write,
 * and deleted on a clean stop.  Another process judges it stale when the
 * store's own clock says it was not rewritten for longer than its lease,
 * and takes it over only by a replace-if-etag of the stale object it read,
 * so of several racing takers exactly one wins.  A holder that learns it
 * lost the lock (someone else's object is there), or that cannot renew
 * before the lease could have run out, calls its fence callback at once:
 * the plugin's callback puts the cache into its sticky failed state.
 * The object's text format is in docs/FORMAT.md ("The lock object").
 *
 * The invariant (docs/FORMAT.md, "The write deadline"): no request of the
 * holder that can change a chunk or the superblock is in flight after
 *     sent + lease - lease/3        (holder's CLOCK_BOOTTIME)
 * where sent is when its last successful renewal was sent: the lock's
 * fence (lock_fence, fence.h) carries that deadline to the store, which
 * checks it before every attempt and aborts transfers under way when it
 * passes or the lock fences; and a taker writes nothing before the
 * store's clock says last-modified + lease + LOCK_TAKE_MARGIN.  Clock
 * assumptions: the two clocks' rates differ by much less than a third;
 * the holder's clock counts suspends (CLOCK_BOOTTIME, here); the taker
 * trusts only the store's Date and Last-Modified (is_stale in lock.c).
 *
 * All functions return 0 or a negative errno and log one line on failure.
 */
#ifndef S3CHUNK_LOCK_H
#define S3CHUNK_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "objstore.h"

#define LOCK_KEY "lock"
#define LOCK_PROBE_PREFIX "lock-probe-"
/* The epoch lock's objects (a store without compare-and-swap). */
#define LOCK_EPOCH_PREFIX "lock.d/"
/* The S3 store's dialect probe (objstore-s3.c) leaves nothing behind,
 * unless interrupted.
 */
#define LOCK_DIALECT_PROBE_PREFIX "dialect-probe-"
#define LOCK_FORMAT_VERSION 1
#define LOCK_MIN_LEASE 1                /* seconds; the plugin asks for 3 */
#define LOCK_MAX_LEASE 86400
/* Seconds a taker waits, by the store's clock, beyond the holder's lease
 * (see is_stale in lock.c).
 */
#define LOCK_TAKE_MARGIN 1

struct lock_params {
  unsigned lease;               /* seconds without renewal before a lock
                                   is stale; renewed every lease/3 */
  bool force;                   /* take over even a fresh lock (warned) */
  const char *version;          /* written as version=, e.g. PACKAGE_VERSION */
};

/* What a lock object says, for messages and tools. */
struct lock_holder {
  char owner[33];               /* 128-bit random id, hex */
  char host[256];
  int64_t pid;
  int64_t taken_at, renewed_at; /* the holder's clock, seconds since epoch */
  unsigned lease;
  uint64_t sequence;            /* bumped by every write of the holder */
  char version[64];
  bool released;                /* a clean stop gave it back: free to take */
};

/* Called once, from a lock thread, when the lock may be lost.  reason is
 * one line.  It must not call back into the lock.
 */
typedef void (*lock_fence_fn) (void *opaque, const char *reason);

struct lock;

/* Called from the renewal thread after each successful renewal, outside
 * the lock's own mutex (lock_set_renewed_hook).  It delays the next
 * renewal by as long as it runs: keep it to one small request.
 */
typedef void (*lock_renewed_fn) (void *opaque);

/* Set before lock_start. */
extern void lock_set_renewed_hook (struct lock *l, lock_renewed_fn fn,
                                   void *opaque);

/* Check with a throw-away object "lock-probe-<random>" that the store
 * really enforces put_if conditions: a second create-if-absent and a
 * replace with a wrong etag must fail with -EEXIST, a replace with the
 * right etag must succeed.  0 if enforced; -ENOTSUP (logged: which check
 * failed) if not; another -errno if the store could not be asked.
 */
extern int lock_probe (struct objstore *os);

/* Take the lock of the volume in os (not owned; must outlive the lock).
 * -EBUSY when another holder's lock is fresh or when another taker won a
 * race for a stale one: one error line names the holder (host, pid, since
 * when, last renewal) and the ways out.  No thread is started.
 */
extern int lock_acquire (struct objstore *os, const struct lock_params *p,
                         struct lock **out);

/* Renew once now (so the object carries the pid of the process that
 * serves, after nbdkit's fork), then start the renewal and watchdog
 * threads.  fence may be NULL.  An error means the lock is already lost.
 */
extern int lock_start (struct lock *l, lock_fence_fn fence, void *opaque);

/* One renewal, as the renewal thread does it (exposed for tests; do not
 * call it while the threads run).  0 renewed; -ENOLCK the lock is lost
 * (fenced, the callback called); another -errno: try again later.
 */
extern int lock_renew (struct lock *l);

/* The lock's write fence (fence.h): give it to the store the volume is
 * written through (objstore_set_fence).  Its deadline is the last
 * successful renewal's send time + lease - lease/3 (CLOCK_BOOTTIME);
 * fencing, a lost lock and lock_release close it.  Before the lock is
 * taken its deadline is in the past.
 */
extern struct cs_fence *lock_fence (struct lock *l);

/* True once fenced; the reason is copied to why if why is not NULL. */
extern bool lock_fenced (struct lock *l, char *why, size_t len);

/* Stop the threads (joined when it returns): no renewal and no fence
 * callback after this.  The object stays.
 */
extern void lock_stop (struct lock *l);

/* Stop the threads, close the fence, replace the lock object by a
 * "released" one if it is still exactly ours (a conditional replace of our
 * own etag; never someone else's, and never a delete, which could delete a
 * taker's lock), and free.  A released lock is taken at once by the next
 * starter.  0, or -errno if that write failed (the lock then runs out by
 * itself after its lease).  Call it only once nothing writes through the
 * fence any more.
 */
extern int lock_release (struct lock *l);

/* For "s3chunk destroy" only, once the volume's other objects are gone:
 * as lock_release, but delete the object if it is still ours.  (A delete
 * after a read could remove a lock taken meanwhile; with the volume gone
 * and the superblock deleted next, there is nothing left to write.)
 */
extern int lock_release_delete (struct lock *l);

/* Read the lock object without taking it.  -ENOENT if there is none or
 * it was released (h then describes the last holder).
 * *age is how long ago it was last written by the store's clock (-1 if the
 * store did not say); *fresh whether that is within the holder's lease.
 * -EIO if the object is not a valid lock (logged).
 */
extern int lock_read (struct objstore *os, struct lock_holder *h,
                      int64_t *age, bool *fresh);

/* For "s3chunk unlock": delete the lock object if it is stale, or in any
 * state when force is set (its holder, if alive, fences at its next
 * renewal).  0 also when there is none; -EBUSY (holder named) if fresh.
 */
extern int lock_break (struct objstore *os, bool force);

/* Serialise / parse the lock object (exposed for tests and tools). */
extern int lock_format (const struct lock_holder *h, char *buf, size_t len);
extern int lock_parse (const void *data, size_t len, struct lock_holder *h);

/* One line describing a holder, as used in refusals: "host H (pid P),
 * taken at T, last renewed N s ago".  age < 0: unknown.
 */
extern void lock_describe (const struct lock_holder *h, int64_t age,
                           char *buf, size_t len);

#endif /* S3CHUNK_LOCK_H */
