/* s3chunk: encode and decode one chunk object (header + payload).
 *
 * The byte layout is documented in docs/FORMAT.md; keep the two in step.
 * Every object read from a store is untrusted: decode checks every header
 * field and the checksum of the plain content before returning a byte.
 */
#ifndef S3CHUNK_CODEC_H
#define S3CHUNK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define CODEC_MAGIC "S3CKCHNK"          /* 8 bytes, no NUL */
#define CODEC_FORMAT_VERSION 1
#define CODEC_HEADER_SIZE 64
#define CODEC_VOLUME_ID_SIZE 16

enum codec_kind {
  CODEC_RAW = 0,
  CODEC_ZSTD = 1,
};

/* Compression contexts for one thread (zstd wants one per thread, reused). */
struct codec_ctx;
extern struct codec_ctx *codec_ctx_new (void);
extern void codec_ctx_free (struct codec_ctx *ctx);

/* The largest object that encoding plain_len bytes can produce. */
extern size_t codec_bound (size_t plain_len);

/* Encode plain into out (replacing its contents).  level 0 means store raw;
 * otherwise zstd at that level, falling back to raw when compression saves
 * less than 1/32 of the size.  0 or -errno (logged).
 */
extern int codec_encode (struct codec_ctx *ctx,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         uint64_t index, int level,
                         const void *plain, size_t plain_len,
                         struct cs_buf *out);

/* Decode obj into plain, which must be exactly plain_len bytes.  Checks the
 * magic, format version, codec, volume id, chunk index, lengths and the
 * checksums.  Returns 0, or -EIO after logging one line naming key and what
 * was wrong.
 */
extern int codec_decode (struct codec_ctx *ctx,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         uint64_t index, const char *key,
                         const void *obj, size_t obj_len,
                         void *plain, size_t plain_len);

/* The fields of a header that passed its own checksum (for fsck / info).
 * Returns 0, or -EIO if obj is not a well-formed chunk header.
 */
struct codec_header {
  uint16_t format_version;
  uint8_t codec;
  uint8_t volume_id[CODEC_VOLUME_ID_SIZE];
  uint64_t index;
  uint32_t stored_len;
  uint32_t plain_len;
  uint64_t plain_hash;
};
extern int codec_peek_header (const void *obj, size_t obj_len,
                              struct codec_header *hdr);

#endif /* S3CHUNK_CODEC_H */
