/* s3chunk: libFuzzer target for the chunk codec (chunkstore/codec.c).
 *
 * Every object read from a store is untrusted (docs/FORMAT.md): whatever
 * the bytes, codec_decode must not crash, must not read or write out of
 * bounds, and may return 0 only for a valid object.  The volume id, chunk
 * index and chunk size the caller expects are taken from the input's own
 * header (where it has one), so that real objects in the seed corpus reach
 * the payload checks; the plain size is kept to 64 KiB - 256 KiB.
 *
 * The oracle for success: the header checks out (codec_peek_header), its
 * fields are what was expected, the stored length is the rest of the
 * object, and the XXH3-64 of what decode returned is the header's.  The
 * output buffer is poisoned first, so that a decode that "succeeds"
 * without writing every byte is caught by the hash.
 *
 * Encrypted objects (format version 2) are decoded with the fixed key
 * fuzz_key below, as an encrypted volume's reader would; the seeds
 * sealed-* were encoded with it (codec_encode with &fuzz_key, volume id
 * "0123456789abcdef", index 7, 64 KiB of text or random bytes), so that
 * the fuzzer reaches the tag check and the decompression after it.  For
 * them success also means content hash 0 and room for nonce and tag; a
 * mutated input can pass only by forging a GCM tag.  decode works in
 * place, so the input is copied.
 *
 *   make fuzz && fuzz/fuzz-codec fuzz/corpus/codec
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "codec.h"
#include "log.h"

static void
quiet (enum cs_log_level level, const char *msg)
{
  /* The message must be a complete string (this reads all of it). */
  volatile size_t n = strlen (msg);
  (void) n;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static const struct codec_key fuzz_key = {
  .key = "s3chunk fuzz key, not a secret!",
  .serial = 1,
};

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static struct codec_ctx *ctx;
  static uint8_t *plain;
  uint8_t vol[CODEC_VOLUME_ID_SIZE] = { 0 };
  uint64_t index = 7;
  uint32_t plain_len = 65536, hlen;
  struct codec_header hdr;
  const struct codec_key *key = NULL;
  uint8_t *copy;
  int r;

  if (ctx == NULL) {
    cs_log_set (quiet);
    ctx = codec_ctx_new ();
    plain = malloc (256 * 1024);
    if (ctx == NULL || plain == NULL)
      abort ();
  }
  if (size >= CODEC_HEADER_SIZE) {
    memcpy (vol, data + 16, sizeof vol);
    memcpy (&index, data + 32, 8);
    index = le64toh (index);
    memcpy (&hlen, data + 44, 4);
    hlen = le32toh (hlen);
    if (hlen == 65536 || hlen == 131072 || hlen == 262144)
      plain_len = hlen;
  }
  memset (plain, 0xA5, plain_len);
  if (size >= 10 && data[8] == CODEC_FORMAT_SEALED && data[9] == 0)
    key = &fuzz_key;
  copy = malloc (size ? size : 1);
  if (copy == NULL)
    abort ();
  memcpy (copy, data, size);

  r = codec_decode (ctx, key, vol, index, "chunks/fuzz", copy, size, plain,
                    plain_len);
  free (copy);
  if (r != 0 && r != -EIO) {
    fprintf (stderr, "codec_decode returned %d, neither 0 nor -EIO\n", r);
    abort ();
  }
  if (r == 0) {
    if (codec_peek_header (data, size, &hdr) != 0) {
      fprintf (stderr, "decode accepted an object whose header is bad\n");
      abort ();
    }
    if (hdr.format_version !=
        (key ? CODEC_FORMAT_SEALED : CODEC_FORMAT_VERSION) ||
        (hdr.codec != CODEC_RAW && hdr.codec != CODEC_ZSTD) ||
        memcmp (hdr.volume_id, vol, sizeof vol) != 0 ||
        hdr.index != index || hdr.plain_len != plain_len ||
        hdr.stored_len != size - CODEC_HEADER_SIZE) {
      fprintf (stderr, "decode accepted an object with wrong header fields\n");
      abort ();
    }
    if (key && (hdr.plain_hash != 0 ||
                hdr.stored_len < CODEC_SEAL_OVERHEAD)) {
      fprintf (stderr, "decode accepted a sealed object with a content "
               "hash or no room for nonce and tag\n");
      abort ();
    }
    if (!key && XXH3_64bits (plain, plain_len) != hdr.plain_hash) {
      fprintf (stderr, "decode returned content whose hash is not the "
               "header's\n");
      abort ();
    }
  }
  /* The header reader alone, on every prefix length the input offers. */
  (void) codec_peek_header (data, size, &hdr);
  return 0;
}
