/* s3chunk: the chunk object codec.
 *
 * Header, 64 bytes, all integers little-endian (docs/FORMAT.md):
 *   0  magic "S3CKCHNK"       8   format version (u16)   10 codec (u8)
 *   11 reserved, 0 (u8)       12  header size (u32)     16 volume id (16)
 *   32 chunk index (u64)      40  stored length (u32)   44 plain length (u32)
 *   48 XXH3-64 of the plain content (u64)
 *   56 XXH3-64 of bytes 0..55 (u64)
 * followed by stored-length bytes of payload (raw, or one zstd frame).
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "codec.h"
#include "log.h"

struct codec_ctx {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
};

struct codec_ctx *
codec_ctx_new (void)
{
  struct codec_ctx *ctx = calloc (1, sizeof *ctx);

  if (ctx == NULL)
    return NULL;
  ctx->cctx = ZSTD_createCCtx ();
  ctx->dctx = ZSTD_createDCtx ();
  if (ctx->cctx == NULL || ctx->dctx == NULL) {
    codec_ctx_free (ctx);
    return NULL;
  }
  return ctx;
}

void
codec_ctx_free (struct codec_ctx *ctx)
{
  if (ctx) {
    ZSTD_freeCCtx (ctx->cctx);
    ZSTD_freeDCtx (ctx->dctx);
    free (ctx);
  }
}

size_t
codec_bound (size_t plain_len)
{
  return CODEC_HEADER_SIZE + ZSTD_compressBound (plain_len);
}

static void put16 (uint8_t *p, uint16_t v) { v = htole16 (v); memcpy (p, &v, 2); }
static void put32 (uint8_t *p, uint32_t v) { v = htole32 (v); memcpy (p, &v, 4); }
static void put64 (uint8_t *p, uint64_t v) { v = htole64 (v); memcpy (p, &v, 8); }
static uint16_t get16 (const uint8_t *p) { uint16_t v; memcpy (&v, p, 2); return le16toh (v); }
static uint32_t get32 (const uint8_t *p) { uint32_t v; memcpy (&v, p, 4); return le32toh (v); }
static uint64_t get64 (const uint8_t *p) { uint64_t v; memcpy (&v, p, 8); return le64toh (v); }

int
codec_encode (struct codec_ctx *ctx,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              uint64_t index, int level,
              const void *plain, size_t plain_len, struct cs_buf *out)
{
  uint8_t *h;
  size_t stored = 0;
  uint8_t codec = CODEC_RAW;
  int r;

  if (plain_len > UINT32_MAX)
    return -EINVAL;
  r = cs_buf_reserve (out, codec_bound (plain_len));
  if (r < 0)
    return r;
  h = out->data;

  if (level > 0) {
    size_t n;

    ZSTD_CCtx_reset (ctx->cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter (ctx->cctx, ZSTD_c_compressionLevel, level);
    /* Our own checksum covers the content; the frame's would be redundant. */
    ZSTD_CCtx_setParameter (ctx->cctx, ZSTD_c_checksumFlag, 0);
    n = ZSTD_compress2 (ctx->cctx, h + CODEC_HEADER_SIZE,
                        out->cap - CODEC_HEADER_SIZE, plain, plain_len);
    if (ZSTD_isError (n)) {
      cs_error ("compress chunk %" PRIu64 ": %s", index, ZSTD_getErrorName (n));
      return -EIO;
    }
    if (n < plain_len - plain_len / 32) {
      codec = CODEC_ZSTD;
      stored = n;
    }
  }
  if (codec == CODEC_RAW) {
    memcpy (h + CODEC_HEADER_SIZE, plain, plain_len);
    stored = plain_len;
  }

  memcpy (h, CODEC_MAGIC, 8);
  put16 (h + 8, CODEC_FORMAT_VERSION);
  h[10] = codec;
  h[11] = 0;
  put32 (h + 12, CODEC_HEADER_SIZE);
  memcpy (h + 16, volume_id, CODEC_VOLUME_ID_SIZE);
  put64 (h + 32, index);
  put32 (h + 40, (uint32_t) stored);
  put32 (h + 44, (uint32_t) plain_len);
  put64 (h + 48, XXH3_64bits (plain, plain_len));
  put64 (h + 56, XXH3_64bits (h, 56));
  out->len = CODEC_HEADER_SIZE + stored;
  return 0;
}

int
codec_peek_header (const void *obj, size_t obj_len, struct codec_header *hdr)
{
  const uint8_t *h = obj;

  if (obj_len < CODEC_HEADER_SIZE || memcmp (h, CODEC_MAGIC, 8) != 0)
    return -EIO;
  if (get64 (h + 56) != XXH3_64bits (h, 56))
    return -EIO;
  hdr->format_version = get16 (h + 8);
  hdr->codec = h[10];
  memcpy (hdr->volume_id, h + 16, CODEC_VOLUME_ID_SIZE);
  hdr->index = get64 (h + 32);
  hdr->stored_len = get32 (h + 40);
  hdr->plain_len = get32 (h + 44);
  hdr->plain_hash = get64 (h + 48);
  return 0;
}

#define BAD(...) do { cs_error (__VA_ARGS__); return -EIO; } while (0)

int
codec_decode (struct codec_ctx *ctx,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              uint64_t index, const char *key,
              const void *obj, size_t obj_len, void *plain, size_t plain_len)
{
  const uint8_t *h = obj;
  struct codec_header hdr;
  const char *what = "object in the store is damaged; restore it from a "
    "backup or run 's3chunk fsck'";

  if (obj_len < CODEC_HEADER_SIZE)
    BAD ("read %s: object is %zu bytes, shorter than a chunk header (%d): %s",
         key, obj_len, CODEC_HEADER_SIZE, what);
  if (memcmp (h, CODEC_MAGIC, 8) != 0)
    BAD ("read %s: not an s3chunk chunk object (bad magic): %s", key, what);
  if (get64 (h + 56) != XXH3_64bits (h, 56))
    BAD ("read %s: chunk header checksum mismatch: %s", key, what);
  codec_peek_header (obj, obj_len, &hdr);
  if (hdr.format_version != CODEC_FORMAT_VERSION)
    BAD ("read %s: chunk format version %u, this build reads %d: "
         "use a newer s3chunk", key, hdr.format_version, CODEC_FORMAT_VERSION);
  if (get32 (h + 12) != CODEC_HEADER_SIZE)
    BAD ("read %s: header size %u, expected %d: %s",
         key, get32 (h + 12), CODEC_HEADER_SIZE, what);
  if (memcmp (hdr.volume_id, volume_id, CODEC_VOLUME_ID_SIZE) != 0)
    BAD ("read %s: object belongs to another volume (volume id differs): "
         "was it copied from another volume?", key);
  if (hdr.index != index)
    BAD ("read %s: object holds chunk %" PRIu64 ", not chunk %" PRIu64 ": %s",
         key, hdr.index, index, what);
  if (hdr.plain_len != plain_len)
    BAD ("read %s: plain length %u, the volume's chunk size is %zu: %s",
         key, hdr.plain_len, plain_len, what);
  if (hdr.stored_len != obj_len - CODEC_HEADER_SIZE)
    BAD ("read %s: header says %u payload bytes, object has %zu "
         "(truncated or padded): %s",
         key, hdr.stored_len, obj_len - CODEC_HEADER_SIZE, what);

  switch (hdr.codec) {
  case CODEC_RAW:
    if (hdr.stored_len != plain_len)
      BAD ("read %s: raw payload of %u bytes, expected %zu: %s",
           key, hdr.stored_len, plain_len, what);
    memcpy (plain, h + CODEC_HEADER_SIZE, plain_len);
    break;
  case CODEC_ZSTD: {
    unsigned long long fcs;
    size_t n;

    fcs = ZSTD_getFrameContentSize (h + CODEC_HEADER_SIZE, hdr.stored_len);
    if (fcs != plain_len)
      BAD ("read %s: zstd frame declares %s%llu bytes, expected %zu: %s",
           key, fcs == ZSTD_CONTENTSIZE_ERROR ? "an invalid size " : "",
           fcs == ZSTD_CONTENTSIZE_ERROR ? 0ULL : fcs, plain_len, what);
    n = ZSTD_decompressDCtx (ctx->dctx, plain, plain_len,
                             h + CODEC_HEADER_SIZE, hdr.stored_len);
    if (ZSTD_isError (n))
      BAD ("read %s: zstd: %s: %s", key, ZSTD_getErrorName (n), what);
    if (n != plain_len)
      BAD ("read %s: zstd produced %zu bytes, expected %zu: %s",
           key, n, plain_len, what);
    break;
  }
  default:
    BAD ("read %s: unknown codec %u: use a newer s3chunk", key, hdr.codec);
  }

  if (XXH3_64bits (plain, plain_len) != hdr.plain_hash)
    BAD ("read %s: checksum of the content does not match: %s", key, what);
  return 0;
}
