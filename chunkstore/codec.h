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
#define CODEC_FORMAT_VERSION 1          /* plain objects */
#define CODEC_FORMAT_SEALED 2           /* encrypted objects (AES-256-GCM) */
#define CODEC_HEADER_SIZE 64
#define CODEC_VOLUME_ID_SIZE 16
#define CODEC_NONCE_SIZE 24             /* per object, random */
#define CODEC_TAG_SIZE 16
#define CODEC_SEAL_OVERHEAD (CODEC_NONCE_SIZE + CODEC_TAG_SIZE)

enum codec_kind {
  CODEC_RAW = 0,
  CODEC_ZSTD = 1,
};

/* The data key of an encrypted volume (crypt.h derives it, in locked
 * memory).  serial tells keys apart, so that a context keyed for one need
 * not compare key bytes to know it must rekey.
 */
struct codec_key {
  uint8_t key[32];
  uint64_t serial;
};

/* Compression and cipher contexts for one thread (zstd wants one per
 * thread, reused; so does OpenSSL's EVP_CIPHER_CTX).
 */
struct codec_ctx;
extern struct codec_ctx *codec_ctx_new (void);
extern void codec_ctx_free (struct codec_ctx *ctx);

/* The largest object that encoding plain_len bytes can produce (with or
 * without encryption).
 */
extern size_t codec_bound (size_t plain_len);

/* Encode plain into out (replacing its contents).  level 0 means store raw;
 * otherwise zstd at that level, falling back to raw when compression saves
 * less than 1/32 of the size.  key NULL: a plain object (format version
 * 1); otherwise the payload is sealed with AES-256-GCM under a one-time
 * key derived from key and a random nonce, the header being the
 * associated data (format version 2).  0 or -errno (logged).
 */
extern int codec_encode (struct codec_ctx *ctx, const struct codec_key *key,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         uint64_t index, int level,
                         const void *plain, size_t plain_len,
                         struct cs_buf *out);

/* Decode obj into plain, which must be exactly plain_len bytes.  Checks the
 * magic, format version, codec, volume id, chunk index, lengths and the
 * checksums; with dkey (an encrypted volume) only format version 2 is
 * accepted and its tag must verify, without dkey only version 1.  An
 * encrypted object is decrypted in place: obj's bytes are undefined
 * afterwards.  Returns 0, or -EIO after logging one line naming key and
 * what was wrong (plain's bytes are undefined then; a failed tag wipes
 * them).
 */
extern int codec_decode (struct codec_ctx *ctx, const struct codec_key *dkey,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         uint64_t index, const char *key,
                         void *obj, size_t obj_len,
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

/* AES-256-GCM as the codec uses it, with ctx's reused cipher context
 * (exposed for the unit tests: published test vectors).  open returns
 * -EBADMSG when the tag does not match.  in and out may be the same.
 */
extern int codec_gcm_seal (struct codec_ctx *ctx, const uint8_t key[32],
                           const uint8_t iv[12], const void *aad,
                           size_t aad_len, const void *in, size_t len,
                           void *out, uint8_t tag[CODEC_TAG_SIZE]);
extern int codec_gcm_open (struct codec_ctx *ctx, const uint8_t key[32],
                           const uint8_t iv[12], const void *aad,
                           size_t aad_len, const void *in, size_t len,
                           void *out, const uint8_t tag[CODEC_TAG_SIZE]);

#endif /* S3CHUNK_CODEC_H */
