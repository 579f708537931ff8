/* s3chunk: the write-back chunk cache between the plugin and the chunk
 * store.  Byte ranges become chunks; writes land in memory and background
 * workers upload dirty chunks; flush is a barrier.  The states and rules
 * are described at the top of cache.c.
 *
 * All functions return 0 or a negative errno; failures are logged once.
 * Every function is safe to call from many threads at once.
 */
#ifndef S3CHUNK_CACHE_H
#define S3CHUNK_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

struct cache_params {
  uint64_t cache_size;          /* bytes of chunk data held in memory */
  unsigned workers;             /* upload threads (and parallel fetches) */
  double upload_delay;          /* seconds a partly written chunk waits */
  unsigned readahead;           /* most chunks fetched ahead of one
                                   sequential stream (0: none) */
};

struct cache_stats {
  uint64_t reads, writes, zeroes, flushes;      /* client requests */
  uint64_t bytes_read, bytes_written;           /* client bytes */
  uint64_t hits, misses, zero_reads;            /* chunk lookups on read */
  uint64_t loads, uploads, deletes;             /* chunk transfers done */
  uint64_t readahead;                           /* fetches queued ahead of
                                                   sequential streams */
  uint64_t ra_cancelled;                        /* ... dropped unstarted */
  uint64_t upload_failures;
  uint64_t bytes_plain_up;                      /* before compression */
  uint64_t dirty_bytes, mem_bytes;              /* now */
  uint64_t uploading;                           /* uploads in flight now */
  double pressure_wait;                         /* seconds writers waited */
  uint64_t read_waits;                          /* reads that waited for a
                                                   fetch in flight */
  double read_wait;                             /* ... seconds, all told */
};

struct cache;

/* Create a cache over an open volume (not owned).  No thread is started:
 * call cache_start after nbdkit has forked.
 */
extern int cache_open (struct cs_volume *v, const struct cache_params *p,
                       struct cache **out);

/* Start the worker threads. */
extern int cache_start (struct cache *c);

extern int cache_pread (struct cache *c, void *buf, uint32_t count,
                        uint64_t offset);

/* With fua, returns only when the written chunks are in the store. */
extern int cache_pwrite (struct cache *c, const void *buf, uint32_t count,
                         uint64_t offset, bool fua);

/* Zero a range (also used for trim): whole chunks lose their object,
 * partial chunks get zeroes written.  With fast, -EOPNOTSUPP (and nothing
 * changed) when that would need a chunk fetched from the store first.
 */
extern int cache_zero (struct cache *c, uint32_t count, uint64_t offset,
                       bool fua, bool fast);

/* The barrier: returns when every write acknowledged before the call is
 * in the store, or -EIO if an upload it waits for failed (the data stays
 * dirty and is retried).
 */
extern int cache_flush (struct cache *c);

/* Is chunk-aligned data at offset allocated (true) or a hole reading as
 * zeroes (false)?  *len is set to how many bytes from offset share that
 * answer (at most count, at least 1 unless count is 0).
 */
extern bool cache_allocated (struct cache *c, uint64_t offset, uint64_t count,
                             uint64_t *len);

/* Enter the sticky failed state: no further upload starts, every write,
 * zero and flush (and a flush or FUA write already waiting) fails with
 * -EIO, until the process restarts; reads keep working.  Used when the
 * volume lock may have been lost; entered by the cache itself when the
 * store refuses an upload because the lock's write deadline passed
 * (-ENOLCK).  reason is logged.
 */
extern void cache_fail (struct cache *c, const char *reason);
extern bool cache_failed (struct cache *c);

/* Is chunk idx in memory, or being (or queued to be) fetched?  For tests
 * of read-ahead.
 */
extern bool cache_has_chunk (struct cache *c, uint64_t idx);

/* Counters, for the status line and the benchmark. */
extern void cache_get_stats (struct cache *c, struct cache_stats *out);

/* Flush everything (retrying for a while), stop the workers and free.
 * Returns -EIO if dirty data could not be written: it is lost.
 */
extern int cache_close (struct cache *c);

#endif /* S3CHUNK_CACHE_H */
