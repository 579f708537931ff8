/* s3chunk: the chunk object codec.
 *
 * Header, 64 bytes, all integers little-endian (docs/FORMAT.md):
 *   0  magic "S3CKCHNK"       8   format version (u16)   10 codec (u8)
 *   11 reserved, 0 (u8)       12  header size (u32)     16 volume id (16)
 *   32 chunk index (u64)      40  stored length (u32)   44 plain length (u32)
 *   48 XXH3-64 of the plain content (u64)
 *   56 XXH3-64 of bytes 0..55 (u64)
 * followed by stored-length bytes of payload (raw, or one zstd frame).
 *
 * Format version 2 (encrypted volumes): the same header with the content
 * hash 0, then a 24-byte random nonce, the payload encrypted with
 * AES-256-GCM, and the 16-byte tag; stored length counts all three.  The
 * GCM key is HMAC-SHA256 (data key, "s3chunk object key" || nonce), one
 * per object; the IV is the nonce's first 12 bytes; the associated data is
 * the 64 header bytes.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <xxhash.h>
#include <zstd.h>

#include "codec.h"
#include "log.h"

struct codec_ctx {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
  /* For encrypted objects, made once and reused for every chunk: */
  EVP_CIPHER_CTX *cipher;       /* AES-256-GCM */
  EVP_MAC_CTX *mac;             /* HMAC-SHA256 keyed with the data key */
  uint64_t mac_serial;          /* which codec_key mac holds; 0: none */
};

static const char object_label[] = "s3chunk object key";

struct codec_ctx *
codec_ctx_new (void)
{
  struct codec_ctx *ctx = calloc (1, sizeof *ctx);

  if (ctx == NULL)
    return NULL;
  ctx->cctx = ZSTD_createCCtx ();
  ctx->dctx = ZSTD_createDCtx ();
  ctx->cipher = EVP_CIPHER_CTX_new ();
  if (ctx->cipher &&
      EVP_CipherInit_ex (ctx->cipher, EVP_aes_256_gcm (), NULL, NULL, NULL,
                         1) != 1) {
    EVP_CIPHER_CTX_free (ctx->cipher);
    ctx->cipher = NULL;
  }
  {
    EVP_MAC *hmac = EVP_MAC_fetch (NULL, "HMAC", NULL);
    if (hmac)
      ctx->mac = EVP_MAC_CTX_new (hmac);
    EVP_MAC_free (hmac);        /* the context holds a reference */
  }
  if (ctx->cctx == NULL || ctx->dctx == NULL || ctx->cipher == NULL ||
      ctx->mac == NULL) {
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
    EVP_CIPHER_CTX_free (ctx->cipher);
    EVP_MAC_CTX_free (ctx->mac);        /* wipes the HMAC key */
    free (ctx);
  }
}

size_t
codec_bound (size_t plain_len)
{
  return CODEC_HEADER_SIZE + CODEC_SEAL_OVERHEAD
    + ZSTD_compressBound (plain_len);
}

static void put16 (uint8_t *p, uint16_t v) { v = htole16 (v); memcpy (p, &v, 2); }
static void put32 (uint8_t *p, uint32_t v) { v = htole32 (v); memcpy (p, &v, 4); }
static void put64 (uint8_t *p, uint64_t v) { v = htole64 (v); memcpy (p, &v, 8); }
static uint16_t get16 (const uint8_t *p) { uint16_t v; memcpy (&v, p, 2); return le16toh (v); }
static uint32_t get32 (const uint8_t *p) { uint32_t v; memcpy (&v, p, 4); return le32toh (v); }
static uint64_t get64 (const uint8_t *p) { uint64_t v; memcpy (&v, p, 8); return le64toh (v); }


/* ------------------------------------------------------------ AEAD */

static int
gcm_run (struct codec_ctx *ctx, int enc, const uint8_t key[32],
         const uint8_t iv[12], const void *aad, size_t aad_len,
         const void *in, size_t len, void *out, uint8_t tag[CODEC_TAG_SIZE])
{
  EVP_CIPHER_CTX *c = ctx->cipher;
  int n;

  /* The cipher stays AES-256-GCM: only the key and IV change. */
  if (len > INT_MAX || aad_len > INT_MAX ||
      EVP_CipherInit_ex (c, NULL, NULL, key, iv, enc) != 1 ||
      EVP_CipherUpdate (c, NULL, &n, aad, (int) aad_len) != 1 ||
      (len && EVP_CipherUpdate (c, out, &n, in, (int) len) != 1))
    return -EIO;
  if (!enc && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_TAG, CODEC_TAG_SIZE,
                                   tag) != 1)
    return -EIO;
  if (EVP_CipherFinal_ex (c, (uint8_t *) out + len, &n) != 1)
    return enc ? -EIO : -EBADMSG;
  if (enc && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_GET_TAG, CODEC_TAG_SIZE,
                                  tag) != 1)
    return -EIO;
  return 0;
}

int
codec_gcm_seal (struct codec_ctx *ctx, const uint8_t key[32],
                const uint8_t iv[12], const void *aad, size_t aad_len,
                const void *in, size_t len, void *out,
                uint8_t tag[CODEC_TAG_SIZE])
{
  return gcm_run (ctx, 1, key, iv, aad, aad_len, in, len, out, tag);
}

int
codec_gcm_open (struct codec_ctx *ctx, const uint8_t key[32],
                const uint8_t iv[12], const void *aad, size_t aad_len,
                const void *in, size_t len, void *out,
                const uint8_t tag[CODEC_TAG_SIZE])
{
  return gcm_run (ctx, 0, key, iv, aad, aad_len, in, len, out,
                  (uint8_t *) tag);
}

/* The one-time GCM key of the object with this nonce:
 * HMAC-SHA256 (data key, "s3chunk object key" || nonce).  A 192-bit random
 * nonce makes two objects sharing a key (and so GCM's IV-reuse failure)
 * a non-event however many chunks a volume writes over its life, with no
 * counter to keep across restarts and writers.
 */
static int
object_key (struct codec_ctx *ctx, const struct codec_key *dkey,
            const uint8_t nonce[CODEC_NONCE_SIZE], uint8_t out[32])
{
  size_t n = 0;

  if (ctx->mac_serial != dkey->serial) {
    OSSL_PARAM params[2] = {
      OSSL_PARAM_construct_utf8_string (OSSL_MAC_PARAM_DIGEST,
                                        (char *) "SHA256", 0),
      OSSL_PARAM_construct_end (),
    };
    if (EVP_MAC_init (ctx->mac, dkey->key, sizeof dkey->key, params) != 1)
      return -EIO;
    ctx->mac_serial = dkey->serial;
  }
  else if (EVP_MAC_init (ctx->mac, NULL, 0, NULL) != 1)
    return -EIO;
  if (EVP_MAC_update (ctx->mac, (const uint8_t *) object_label,
                      sizeof object_label - 1) != 1 ||
      EVP_MAC_update (ctx->mac, nonce, CODEC_NONCE_SIZE) != 1 ||
      EVP_MAC_final (ctx->mac, out, &n, 32) != 1 || n != 32)
    return -EIO;
  return 0;
}

/* ----------------------------------------------------------- encode */

int
codec_encode (struct codec_ctx *ctx, const struct codec_key *key,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              uint64_t index, int level,
              const void *plain, size_t plain_len, struct cs_buf *out)
{
  uint8_t *h, *payload;
  size_t stored = 0, room;
  uint8_t codec = CODEC_RAW;
  int r;

  if (plain_len > UINT32_MAX - CODEC_SEAL_OVERHEAD)
    return -EINVAL;
  r = cs_buf_reserve (out, codec_bound (plain_len));
  if (r < 0)
    return r;
  h = out->data;
  /* Sealed: nonce, ciphertext, tag; the payload is compressed where the
   * ciphertext goes and encrypted in place.
   */
  payload = h + CODEC_HEADER_SIZE + (key ? CODEC_NONCE_SIZE : 0);
  room = out->cap - CODEC_HEADER_SIZE - (key ? CODEC_SEAL_OVERHEAD : 0);

  if (level > 0) {
    size_t n;

    ZSTD_CCtx_reset (ctx->cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter (ctx->cctx, ZSTD_c_compressionLevel, level);
    /* Our own checksum covers the content; the frame's would be redundant. */
    ZSTD_CCtx_setParameter (ctx->cctx, ZSTD_c_checksumFlag, 0);
    n = ZSTD_compress2 (ctx->cctx, payload, room, plain, plain_len);
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
    if (!key)                   /* sealed: encrypted from plain directly */
      memcpy (payload, plain, plain_len);
    stored = plain_len;
  }

  memcpy (h, CODEC_MAGIC, 8);
  put16 (h + 8, key ? CODEC_FORMAT_SEALED : CODEC_FORMAT_VERSION);
  h[10] = codec;
  h[11] = 0;
  put32 (h + 12, CODEC_HEADER_SIZE);
  memcpy (h + 16, volume_id, CODEC_VOLUME_ID_SIZE);
  put64 (h + 32, index);
  put32 (h + 40, (uint32_t) (stored + (key ? CODEC_SEAL_OVERHEAD : 0)));
  put32 (h + 44, (uint32_t) plain_len);
  /* A hash of the plain content in the clear would let anyone confirm a
   * guess of a chunk's content: sealed objects carry 0 (the tag covers it).
   */
  put64 (h + 48, key ? 0 : XXH3_64bits (plain, plain_len));
  put64 (h + 56, XXH3_64bits (h, 56));
  out->len = CODEC_HEADER_SIZE + stored;

  if (key) {
    uint8_t *nonce = h + CODEC_HEADER_SIZE, okey[32];

    if (RAND_bytes (nonce, CODEC_NONCE_SIZE) != 1) {
      cs_error ("encrypt chunk %" PRIu64 ": the random generator failed",
                index);
      return -EIO;
    }
    r = object_key (ctx, key, nonce, okey);
    if (r == 0)
      r = gcm_run (ctx, 1, okey, nonce, h, CODEC_HEADER_SIZE,
                   codec == CODEC_RAW ? plain : payload, stored, payload,
                   payload + stored);
    OPENSSL_cleanse (okey, sizeof okey);
    if (r < 0) {
      cs_error ("encrypt chunk %" PRIu64 ": AES-256-GCM failed in OpenSSL",
                index);
      return -EIO;
    }
    out->len += CODEC_SEAL_OVERHEAD;
  }
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
codec_decode (struct codec_ctx *ctx, const struct codec_key *dkey,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              uint64_t index, const char *key,
              void *obj, size_t obj_len, void *plain, size_t plain_len)
{
  uint8_t *h = obj, *payload;
  struct codec_header hdr;
  uint32_t clen;                /* payload bytes before sealing */
  const char *what = "object in the store is damaged; restore it from a "
    "backup or run 's3chunk fsck'";
  int version = dkey ? CODEC_FORMAT_SEALED : CODEC_FORMAT_VERSION;

  if (obj_len < CODEC_HEADER_SIZE)
    BAD ("read %s: object is %zu bytes, shorter than a chunk header (%d): %s",
         key, obj_len, CODEC_HEADER_SIZE, what);
  if (memcmp (h, CODEC_MAGIC, 8) != 0)
    BAD ("read %s: not an s3chunk chunk object (bad magic): %s", key, what);
  if (get64 (h + 56) != XXH3_64bits (h, 56))
    BAD ("read %s: chunk header checksum mismatch: %s", key, what);
  codec_peek_header (obj, obj_len, &hdr);
  if (hdr.format_version == CODEC_FORMAT_VERSION && dkey)
    BAD ("read %s: an unencrypted chunk object in an encrypted volume: "
         "refused (it was not written by this volume's key, and may have "
         "been planted); restore it from a backup or run 's3chunk fsck'",
         key);
  if (hdr.format_version == CODEC_FORMAT_SEALED && !dkey)
    BAD ("read %s: an encrypted chunk object in a volume without "
         "encryption: was it copied from an encrypted volume?", key);
  if (hdr.format_version != version)
    BAD ("read %s: chunk format version %u, this build reads %d and %d: "
         "use a newer s3chunk", key, hdr.format_version,
         CODEC_FORMAT_VERSION, CODEC_FORMAT_SEALED);
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
  payload = h + CODEC_HEADER_SIZE;
  clen = hdr.stored_len;
  if (dkey) {
    if (clen < CODEC_SEAL_OVERHEAD)
      BAD ("read %s: encrypted payload of %u bytes, shorter than its nonce "
           "and tag: %s", key, clen, what);
    if (hdr.plain_hash != 0)
      BAD ("read %s: encrypted object with a content hash: %s", key, what);
    clen -= CODEC_SEAL_OVERHEAD;
    payload += CODEC_NONCE_SIZE;
  }
  if (hdr.codec == CODEC_RAW && clen != plain_len)
    BAD ("read %s: raw payload of %u bytes, expected %zu: %s",
         key, clen, plain_len, what);
  if (hdr.codec != CODEC_RAW && hdr.codec != CODEC_ZSTD)
    BAD ("read %s: unknown codec %u: use a newer s3chunk", key, hdr.codec);

  if (dkey) {
    uint8_t okey[32];
    int r;

    /* Raw: straight into plain; zstd: in place, decompressed below.  No
     * byte is used before the tag has verified.
     */
    r = object_key (ctx, dkey, h + CODEC_HEADER_SIZE, okey);
    if (r == 0)
      r = gcm_run (ctx, 0, okey, h + CODEC_HEADER_SIZE, h, CODEC_HEADER_SIZE,
                   payload, clen, hdr.codec == CODEC_RAW ? plain : payload,
                   payload + clen);
    OPENSSL_cleanse (okey, sizeof okey);
    if (r == -EBADMSG) {
      OPENSSL_cleanse (plain, plain_len);
      BAD ("read %s: authentication failed (AES-256-GCM tag mismatch): "
           "the object was altered or truncated, moved from another chunk "
           "or volume, or written with another volume key; restore it from "
           "a backup or run 's3chunk fsck' with the key", key);
    }
    if (r < 0)
      BAD ("read %s: AES-256-GCM failed in OpenSSL", key);
    if (hdr.codec == CODEC_RAW)
      return 0;
  }

  switch (hdr.codec) {
  case CODEC_RAW:
    memcpy (plain, payload, plain_len);
    break;
  case CODEC_ZSTD: {
    unsigned long long fcs;
    size_t n;

    fcs = ZSTD_getFrameContentSize (payload, clen);
    if (fcs != plain_len)
      BAD ("read %s: zstd frame declares %s%llu bytes, expected %zu: %s",
           key, fcs == ZSTD_CONTENTSIZE_ERROR ? "an invalid size " : "",
           fcs == ZSTD_CONTENTSIZE_ERROR ? 0ULL : fcs, plain_len, what);
    n = ZSTD_decompressDCtx (ctx->dctx, plain, plain_len, payload, clen);
    if (ZSTD_isError (n))
      BAD ("read %s: zstd: %s: %s", key, ZSTD_getErrorName (n), what);
    if (n != plain_len)
      BAD ("read %s: zstd produced %zu bytes, expected %zu: %s",
           key, n, plain_len, what);
    break;
  }
  }

  if (!dkey && XXH3_64bits (plain, plain_len) != hdr.plain_hash)
    BAD ("read %s: checksum of the content does not match: %s", key, what);
  return 0;
}
