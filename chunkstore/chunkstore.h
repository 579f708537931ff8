/* s3chunk: the chunk store.  A volume is a superblock object plus one
 * object per chunk that is not all zeroes; this module maps chunk indexes to
 * keys, encodes and decodes chunks, and keeps the allocation map (which
 * chunks have an object) so that reading a never-written chunk costs no
 * request.  The object layout is docs/FORMAT.md.
 */
#ifndef S3CHUNK_CHUNKSTORE_H
#define S3CHUNK_CHUNKSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "crypt.h"
#include "objstore.h"

#define CS_SUPERBLOCK_KEY "superblock"
#define CS_CHUNK_PREFIX "chunks/"
#define CS_SUPERBLOCK_VERSION 1
#define CS_SUPERBLOCK_VERSION_ENCRYPTED 2

#define CS_DEFAULT_CHUNK_SIZE (1024 * 1024)
#define CS_MIN_CHUNK_SIZE (64 * 1024)
#define CS_MAX_CHUNK_SIZE (64 * 1024 * 1024)
#define CS_DEFAULT_LEVEL 1
#define CS_MAX_LEVEL 19
#define CS_SIZE_ALIGN 512       /* the volume size is a multiple of this */
#define CS_MAX_SIZE (UINT64_C (1) << 60)
/* The allocation map keeps one bit per chunk in memory: 2^31 chunks is a
 * 256 MiB map (2 PiB with 1 MiB chunks); more needs larger chunks.
 */
#define CS_MAX_CHUNKS (UINT64_C (1) << 31)

/* What the caller asks for when opening a volume.  Zero fields mean "not
 * given": use the volume's values, or the defaults when creating.
 */
struct cs_volume_params {
  uint64_t size;                /* create / grow to this; 0 = keep */
  uint32_t chunk_size;          /* 0 = default / as created */
  int level;                    /* -1 = default / as created; 0 = no zstd */
  enum { CS_COMPRESS_UNSET, CS_COMPRESS_NONE, CS_COMPRESS_ZSTD } compress;
  bool readonly;                /* never write the superblock */
  bool create_only;             /* fail if the volume exists */
  /* Encryption: chosen at creation (UNSET with a key means AES-256-GCM);
   * when opening, a key is required for an encrypted volume and refused
   * for a plain one (so a swapped superblock cannot turn it off).
   */
  enum { CS_ENCRYPT_UNSET, CS_ENCRYPT_NONE, CS_ENCRYPT_AES256GCM } encryption;
  const struct cs_user_key *key;        /* NULL: no key given */
};

struct cs_volume {
  struct objstore *os;          /* not owned */
  uint8_t volume_id[CODEC_VOLUME_ID_SIZE];
  /* size and nchunks grow while the volume is served (cs_volume_grow):
   * threads other than the one growing read them with cs_volume_size and
   * cs_volume_nchunks.
   */
  uint64_t size;
  uint32_t chunk_size;
  unsigned chunk_shift;         /* log2 (chunk_size) */
  uint64_t nchunks;             /* ceil (size / chunk_size) */
  int level;                    /* 0 = raw */
  int64_t created;              /* seconds since the epoch */
  char etag[128];               /* of the superblock we read or wrote */
  struct cs_crypt *crypt;       /* NULL: not encrypted */

  uint64_t *map;                /* allocation bitmap, nchunks bits, in an
                                   address range reserved for the largest
                                   volume: it never moves */
  size_t map_bytes;             /* of it accessible */
  bool map_loaded;
};

/* Open the volume in os, creating it if it does not exist and p->size is
 * set, growing it if p->size is larger.  Refuses (one clear line, -EINVAL)
 * a different chunk size or level, a smaller size, an unknown format
 * version.  -ENOENT (with a message) when it does not exist and no size
 * was given.
 */
extern int cs_volume_open (struct objstore *os,
                           const struct cs_volume_params *p,
                           struct cs_volume **out);

/* Grow an open volume to new_size: extend the allocation map, rewrite the
 * superblock only if it is unchanged since we read or wrote it (or find
 * that an earlier attempt of exactly this write landed), and only then
 * publish the new size and chunk count.  Safe while other threads read
 * and write chunks and test the map (one grower at a time).  -EINVAL
 * (logged) for a smaller size or a bad geometry, -EBUSY if another
 * process changed the superblock; on any failure v is unchanged.
 */
extern int cs_volume_grow (struct cs_volume *v, uint64_t new_size);

/* The size and chunk count now, for threads that run while the volume
 * may grow.
 */
extern uint64_t cs_volume_size (const struct cs_volume *v);
extern uint64_t cs_volume_nchunks (const struct cs_volume *v);

extern void cs_volume_close (struct cs_volume *v);

/* Replace the key that wraps the volume key of an open, unlocked,
 * encrypted volume by k (new salt, new wrapped key, new MAC), rewriting
 * the superblock only if it is unchanged since we read it.  The chunk
 * objects stay as they are.  0 or -errno (logged).
 */
extern int cs_volume_rekey (struct cs_volume *v, const struct cs_user_key *k);

/* Check the key of a volume whose superblock text was just parsed into v
 * (by cs_superblock_parse): refuses a key for a plain volume, no key for
 * an encrypted one (unless no_key_ok: then only headers can be checked),
 * a wrong key, a superblock that fails authentication.  0 or -errno
 * (logged).
 */
extern int cs_volume_check_key (struct cs_volume *v,
                                const struct cs_user_key *k, bool no_key_ok,
                                const void *text, size_t len);

/* Serialise / parse a superblock (exposed for the unit tests and tools).
 * An encrypted volume's superblock can be formatted only when unlocked
 * (it carries a MAC); parse does not check the MAC (cs_volume_check_key).
 */
extern int cs_superblock_format (const struct cs_volume *v, struct cs_buf *out);
extern int cs_superblock_parse (const char *key, const void *data, size_t len,
                                struct cs_volume *v);

/* The object key of chunk idx ("chunks/%016x"); buf of at least 32 bytes. */
extern void cs_chunk_key (uint64_t idx, char *buf, size_t len);

/* Parse a chunk key back; false if key is not a chunk key. */
extern bool cs_chunk_key_parse (const char *key, uint64_t *idx);

/* Read chunk idx into plain (chunk_size bytes).  A missing object (or a
 * chunk the allocation map says is absent) reads as zeroes.  scratch is a
 * per-thread buffer.  0 or -errno (logged, naming the key).
 */
extern int cs_chunk_read (struct cs_volume *v, struct codec_ctx *ctx,
                          uint64_t idx, void *plain, struct cs_buf *scratch);

/* Store chunk idx from plain (chunk_size bytes), replacing any object.
 * An all-zero chunk is stored as no object (deleted if the map says one
 * exists).  The map marks the chunk present before the PUT is sent, and
 * leaves it so whatever the outcome ("maybe present").
 */
extern int cs_chunk_write (struct cs_volume *v, struct codec_ctx *ctx,
                           uint64_t idx, const void *plain,
                           struct cs_buf *scratch);

/* Delete the objects of n chunks (batched), skipping those the map says
 * are surely absent; clears their map bits only when the delete is
 * confirmed.
 */
extern int cs_chunk_delete_many (struct cs_volume *v, const uint64_t *idx,
                                 size_t n);

/* Build the allocation map from a listing of the store.  Keys that are not
 * chunks of this volume, or beyond its size, are reported with a warning.
 */
extern int cs_map_load (struct cs_volume *v);

/* Is there (as far as we know) an object for chunk idx?  Without a loaded
 * map this answers true.
 */
extern bool cs_map_test (const struct cs_volume *v, uint64_t idx);
extern void cs_map_set (struct cs_volume *v, uint64_t idx, bool present);

/* Number of chunks with an object, from the map. */
extern uint64_t cs_map_count (const struct cs_volume *v);

/* True if all n bytes at p are zero. */
extern bool cs_is_zero (const void *p, size_t n);

#endif /* S3CHUNK_CHUNKSTORE_H */
