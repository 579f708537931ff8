/* s3chunk: an nbdkit plugin that serves a block device stored as
 * compressed chunk objects in an S3 bucket or a local directory.
 *
 * This is the only file that includes nbdkit-plugin.h.  It parses the
 * parameters, opens the store and the volume at start-up (so every bad
 * parameter or unreachable store is reported before the first client),
 * starts the cache's threads after nbdkit forks, and maps the NBD
 * callbacks onto the cache.  The man page is nbdkit-s3chunk-plugin.pod.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cache.h"
#include "chunkstore.h"
#include "log.h"
#include "objstore.h"
#include "params.h"

/* Defaults; the reasons are in the man page (PARAMETERS). */
#define DEFAULT_CACHE_SIZE (256 * 1024 * 1024)
#define DEFAULT_CONNECTIONS 16
#define DEFAULT_UPLOAD_DELAY 2.0
#define MAX_CONNECTIONS 256

static struct {
  char *dir;
  uint64_t size;
  uint32_t chunk_size;
  int level;                    /* -1: not given */
  bool compression_set, compression;
  uint64_t cache_size;
  unsigned connections;
  double upload_delay;
} cfg = {
  .level = -1,
  .cache_size = DEFAULT_CACHE_SIZE,
  .connections = DEFAULT_CONNECTIONS,
  .upload_delay = DEFAULT_UPLOAD_DELAY,
};

static struct objstore *store;
static struct cs_volume *volume;
static struct cache *cache;

/* Route chunkstore's messages through nbdkit. */
static void
log_to_nbdkit (enum cs_log_level level, const char *msg)
{
  switch (level) {
  case CS_LOG_ERROR: nbdkit_error ("%s", msg); break;
  case CS_LOG_WARN: nbdkit_error ("warning: %s", msg); break;
  default: nbdkit_debug ("%s", msg); break;
  }
}

static void
s3chunk_load (void)
{
  cs_log_set (log_to_nbdkit);
}

static void
s3chunk_unload (void)
{
  free (cfg.dir);
}

/* Report a bad value for key once, naming what is accepted. */
#define BAD_PARAM(key, value, accepted)                                 \
  do {                                                                  \
    nbdkit_error ("%s=%s: invalid value: expected %s", key, value, accepted); \
    return -1;                                                          \
  } while (0)

static int
s3chunk_config (const char *key, const char *value)
{
  uint64_t u;

  if (strcmp (key, "dir") == 0) {
    free (cfg.dir);
    cfg.dir = nbdkit_absolute_path (value);
    if (cfg.dir == NULL)
      return -1;
  }
  else if (strcmp (key, "size") == 0) {
    if (params_parse_size (value, &u) < 0 || u == 0)
      BAD_PARAM (key, value, "a size in bytes with an optional suffix K, M, "
                 "G, T or P (powers of 1024), e.g. size=1T");
    if (u % CS_SIZE_ALIGN || u > CS_MAX_SIZE)
      BAD_PARAM (key, value, "a multiple of 512 bytes, at most 1 EiB");
    cfg.size = u;
  }
  else if (strcmp (key, "chunk-size") == 0) {
    if (params_parse_size (value, &u) < 0 ||
        u < CS_MIN_CHUNK_SIZE || u > CS_MAX_CHUNK_SIZE || (u & (u - 1)))
      BAD_PARAM (key, value, "a power of two from 64K to 64M, e.g. "
                 "chunk-size=1M");
    cfg.chunk_size = u;
  }
  else if (strcmp (key, "compression") == 0) {
    if (strcmp (value, "zstd") == 0)
      cfg.compression = true;
    else if (strcmp (value, "none") == 0)
      cfg.compression = false;
    else
      BAD_PARAM (key, value, "zstd or none");
    cfg.compression_set = true;
  }
  else if (strcmp (key, "level") == 0) {
    if (params_parse_uint (value, 1, CS_MAX_LEVEL, &u) < 0)
      BAD_PARAM (key, value, "a zstd level from 1 to 19");
    cfg.level = u;
  }
  else if (strcmp (key, "cache-size") == 0) {
    if (params_parse_size (value, &u) < 0 || u < 16 * 1024 * 1024)
      BAD_PARAM (key, value, "a size of at least 16M, e.g. cache-size=256M");
    cfg.cache_size = u;
  }
  else if (strcmp (key, "connections") == 0) {
    if (params_parse_uint (value, 1, MAX_CONNECTIONS, &u) < 0)
      BAD_PARAM (key, value, "a number from 1 to 256");
    cfg.connections = u;
  }
  else if (strcmp (key, "upload-delay") == 0) {
    if (params_parse_seconds (value, &cfg.upload_delay) < 0 ||
        cfg.upload_delay > 3600)
      BAD_PARAM (key, value, "seconds from 0 to 3600, e.g. upload-delay=2 "
                 "or upload-delay=500ms");
  }
  else {
    nbdkit_error ("unknown parameter '%s': see nbdkit-s3chunk-plugin(1) or "
                  "'nbdkit s3chunk --help' for the parameters", key);
    return -1;
  }
  return 0;
}

static int
s3chunk_config_complete (void)
{
  if (cfg.dir == NULL) {
    nbdkit_error ("no store given: add dir=PATH for a local directory "
                  "(or bucket=NAME for S3)");
    return -1;
  }
  if (cfg.compression_set && !cfg.compression && cfg.level >= 0) {
    nbdkit_error ("level=%d conflicts with compression=none: drop one",
                  cfg.level);
    return -1;
  }
  return 0;
}

#define s3chunk_config_help \
  "dir=PATH              Local directory holding the volume.\n" \
  "size=SIZE             Create the volume, or grow it (K/M/G/T suffixes).\n" \
  "chunk-size=SIZE       Chunk size at creation (power of 2, default 1M).\n" \
  "compression=zstd|none Compress chunks at creation (default zstd).\n" \
  "level=N               zstd level at creation (1-19, default 1).\n" \
  "cache-size=SIZE       Memory for cached chunks (default 256M).\n" \
  "connections=N         Parallel uploads (default 16).\n" \
  "upload-delay=SECS     Delay before uploading a partly written chunk (2)."

/* Open everything before nbdkit accepts a connection or forks, so errors
 * reach the user's terminal and nbdkit exits with them.
 */
static int
s3chunk_get_ready (void)
{
  struct cs_volume_params vp = {
    .size = cfg.size,
    .chunk_size = cfg.chunk_size,
    .level = cfg.compression_set && !cfg.compression ? 0 : cfg.level,
  };
  struct cache_params cp = {
    .cache_size = cfg.cache_size,
    .workers = cfg.connections,
    .upload_delay = cfg.upload_delay,
  };
  int r;

  r = objstore_dir_open (cfg.dir, cfg.size > 0, &store);
  if (r < 0)
    return -1;
  r = cs_volume_open (store, &vp, &volume);
  if (r < 0)
    return -1;
  r = cs_map_load (volume);
  if (r < 0)
    return -1;
  r = cache_open (volume, &cp, &cache);
  if (r < 0) {
    nbdkit_error ("cache: %s", strerror (-r));
    return -1;
  }
  nbdkit_debug ("volume: size %" PRIu64 ", chunk size %" PRIu32
                ", %" PRIu64 " chunk(s) stored, level %d",
                volume->size, volume->chunk_size, cs_map_count (volume),
                volume->level);
  return 0;
}

/* Threads do not survive fork: start them in the process that serves. */
static int
s3chunk_after_fork (void)
{
  return cache_start (cache) < 0 ? -1 : 0;
}

/* Called on SIGTERM/SIGINT and at exit, after the last connection closed:
 * everything written goes to the store before the process ends.
 */
static void
s3chunk_cleanup (void)
{
  if (cache) {
    if (cache_close (cache) < 0)
      nbdkit_error ("shutdown: some data could not be stored (see above)");
    cache = NULL;
  }
  cs_volume_close (volume);
  volume = NULL;
  objstore_close (store);
  store = NULL;
}

/* Every connection shares the one cache; there is no per-connection state. */
static void *
s3chunk_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
s3chunk_get_size (void *handle)
{
  return volume->size;
}

/* Any alignment works (the cache does read-modify-write), but whole chunks
 * avoid it: advertise the chunk size as preferred.
 */
static int
s3chunk_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                    uint32_t *maximum)
{
  *minimum = 1;
  *preferred = volume->chunk_size < 32 * 1024 * 1024
    ? volume->chunk_size : 32 * 1024 * 1024;
  *maximum = 0xffffffff;
  return 0;
}

/* Flush is a real barrier over every connection's writes (one cache). */
static int
s3chunk_can_flush (void *handle)
{
  return 1;
}

/* FUA is native: a FUA write waits only for the chunks it touched. */
static int
s3chunk_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

/* Safe: all connections share one cache, so a flush on any connection
 * covers writes made on all of them, which is what multi-conn promises.
 */
static int
s3chunk_can_multi_conn (void *handle)
{
  return 1;
}

/* Trim of whole chunks deletes their objects: it really frees space. */
static int
s3chunk_can_trim (void *handle)
{
  return 1;
}

/* Zeroing is never slower than writing zeroes: whole chunks become "no
 * object", parts are a memset in the cache.  So fast zero is honest.
 */
static int
s3chunk_can_zero (void *handle)
{
  return 1;
}

static int
s3chunk_can_fast_zero (void *handle)
{
  return 1;
}

/* Block status answers from the allocation map, without requests. */
static int
s3chunk_can_extents (void *handle)
{
  return 1;
}

/* Chunks are cached in one process; connections see each other's writes. */
static int
s3chunk_can_cache (void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

static int
s3chunk_is_rotational (void *handle)
{
  return 0;
}

/* The cache has logged the cause; pass the errno to the client. */
static int
fail (int r)
{
  nbdkit_set_error (-r);
  return -1;
}

static int
s3chunk_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  int r = cache_pread (cache, buf, count, offset);
  return r < 0 ? fail (r) : 0;
}

static int
s3chunk_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  int r = cache_pwrite (cache, buf, count, offset, flags & NBDKIT_FLAG_FUA);
  return r < 0 ? fail (r) : 0;
}

static int
s3chunk_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int r = cache_zero (cache, count, offset, flags & NBDKIT_FLAG_FUA);
  return r < 0 ? fail (r) : 0;
}

/* Trimmed space reads as zeroes afterwards, which NBD allows. */
static int
s3chunk_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return s3chunk_zero (handle, count, offset, flags);
}

static int
s3chunk_flush (void *handle, uint32_t flags)
{
  int r = cache_flush (cache);
  return r < 0 ? fail (r) : 0;
}

static int
s3chunk_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  uint64_t end = offset + count;

  while (offset < end) {
    uint64_t len;
    bool alloc = cache_allocated (cache, offset, end - offset, &len);

    if (nbdkit_add_extent (extents, offset, len,
                           alloc ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO)
        < 0)
      return -1;
    offset += len;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

/* Requests run in parallel: the cache has one lock for its state, never
 * held across store I/O, and store variants are thread-safe.
 */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name = "s3chunk",
  .version = PACKAGE_VERSION,
  .longname = "s3chunk: a block device in S3 chunk objects",
  .description = "Serve a disk stored as compressed chunk objects in an "
    "S3 bucket or a local directory.",
  .load = s3chunk_load,
  .unload = s3chunk_unload,
  .config = s3chunk_config,
  .config_complete = s3chunk_config_complete,
  .config_help = s3chunk_config_help,
  .magic_config_key = NULL,
  .get_ready = s3chunk_get_ready,
  .after_fork = s3chunk_after_fork,
  .cleanup = s3chunk_cleanup,
  .open = s3chunk_open,
  .get_size = s3chunk_get_size,
  .block_size = s3chunk_block_size,
  .can_write = NULL,
  .can_flush = s3chunk_can_flush,
  .can_fua = s3chunk_can_fua,
  .can_multi_conn = s3chunk_can_multi_conn,
  .can_trim = s3chunk_can_trim,
  .can_zero = s3chunk_can_zero,
  .can_fast_zero = s3chunk_can_fast_zero,
  .can_extents = s3chunk_can_extents,
  .can_cache = s3chunk_can_cache,
  .is_rotational = s3chunk_is_rotational,
  .pread = s3chunk_pread,
  .pwrite = s3chunk_pwrite,
  .zero = s3chunk_zero,
  .trim = s3chunk_trim,
  .flush = s3chunk_flush,
  .extents = s3chunk_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
