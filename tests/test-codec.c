/* s3chunk: unit tests of the chunk codec: round trips, and every kind of
 * damaged object must be refused with -EIO and a message naming the key.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>

#include "codec.h"
#include "unit.h"

#define CHUNK (64 * 1024)

static const uint8_t vol[CODEC_VOLUME_ID_SIZE] = "0123456789abcdef";
static const uint8_t other[CODEC_VOLUME_ID_SIZE] = "fedcba9876543210";
static uint8_t plain[CHUNK], out[CHUNK];
static struct codec_ctx *ctx;

/* Text-like content that compresses. */
static void
fill_text (uint8_t *p, size_t n, unsigned seed)
{
  static const char *words[] = { "GET ", "/index.html ", "HTTP/1.1 ", "200 ",
    "Mozilla/5.0 ", "127.0.0.1 ", "- - ", "[21/Nov/2026] " };
  size_t i = 0;

  while (i < n) {
    const char *w = words[(seed = seed * 1103515245 + 12345) >> 16 & 7];
    for (; *w && i < n; ++w)
      p[i++] = *w;
  }
}

static void
fill_random (uint8_t *p, size_t n, uint64_t seed)
{
  for (size_t i = 0; i < n; ++i) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    p[i] = seed;
  }
}

static int
decode (const struct cs_buf *b, const uint8_t *id, uint64_t idx, size_t len)
{
  memset (out, 0xAA, sizeof out);
  return codec_decode (ctx, NULL, id, idx, "chunks/0000000000000007",
                       b->data, b->len, out, len);
}

/* Rewrite the header checksum so that a change to a field reaches the
 * field's own check instead of the header checksum.
 */
static void
reseal (struct cs_buf *b)
{
  uint64_t h = htole64 (XXH3_64bits (b->data, 56));
  memcpy (b->data + 56, &h, 8);
}

static void
test_round_trips (void)
{
  struct cs_buf b = CS_BUF_INIT;
  struct codec_header h;

  fill_text (plain, CHUNK, 1);
  CHECK_EQ (codec_encode (ctx, NULL, vol, 7, 1, plain, CHUNK, &b), 0);
  CHECK (b.len < CHUNK / 4);          /* text compresses */
  CHECK_EQ (codec_peek_header (b.data, b.len, &h), 0);
  CHECK_EQ (h.codec, CODEC_ZSTD);
  CHECK_EQ (h.index, 7);
  CHECK_EQ (h.plain_len, CHUNK);
  CHECK_EQ (h.stored_len, b.len - CODEC_HEADER_SIZE);
  CHECK_EQ (decode (&b, vol, 7, CHUNK), 0);
  CHECK (memcmp (plain, out, CHUNK) == 0);

  /* Level 0 stores raw. */
  CHECK_EQ (codec_encode (ctx, NULL, vol, 7, 0, plain, CHUNK, &b), 0);
  CHECK_EQ (b.len, CHUNK + CODEC_HEADER_SIZE);
  CHECK_EQ (decode (&b, vol, 7, CHUNK), 0);
  CHECK (memcmp (plain, out, CHUNK) == 0);

  /* Incompressible data falls back to raw even at a high level. */
  fill_random (plain, CHUNK, 42);
  CHECK_EQ (codec_encode (ctx, NULL, vol, 9, 19, plain, CHUNK, &b), 0);
  CHECK_EQ (codec_peek_header (b.data, b.len, &h), 0);
  CHECK_EQ (h.codec, CODEC_RAW);
  CHECK_EQ (decode (&b, vol, 9, CHUNK), 0);
  CHECK (memcmp (plain, out, CHUNK) == 0);

  /* Every level decodes. */
  fill_text (plain, CHUNK, 3);
  for (int level = 1; level <= 19; level += 6) {
    CHECK_EQ (codec_encode (ctx, NULL, vol, 1, level, plain, CHUNK, &b), 0);
    CHECK_EQ (decode (&b, vol, 1, CHUNK), 0);
    CHECK (memcmp (plain, out, CHUNK) == 0);
  }
  cs_buf_free (&b);
}

/* Flip every bit of a small object, one at a time.  Each flip must give
 * -EIO with one message naming the key, or, for bits zstd does not use
 * (padding in its tables), exactly the original bytes: never wrong ones.
 */
static void
test_every_bit_flip (int level)
{
  struct cs_buf b = CS_BUF_INIT, copy = CS_BUF_INIT;
  const size_t len = 4096;
  unsigned wrong = 0, harmless = 0;

  fill_text (plain, len, 5);
  plain[100] = 0;
  CHECK_EQ (codec_encode (ctx, NULL, vol, 3, level, plain, len, &b), 0);
  for (size_t i = 0; i < b.len; ++i)
    for (int bit = 0; bit < 8; ++bit) {
      int r;

      copy.len = 0;
      cs_buf_append (&copy, b.data, b.len);
      copy.data[i] ^= 1 << bit;
      unit_errors_logged = 0;
      r = decode (&copy, vol, 3, len);
      if (r == 0 && memcmp (out, plain, len) == 0 &&
          i >= CODEC_HEADER_SIZE && level > 0)
        harmless++;
      else if (r != -EIO || unit_errors_logged != 1 ||
               !unit_logged ("chunks/0000000000000007")) {
        wrong++;
        fprintf (stderr, "bit flip at byte %zu bit %d: r=%d\n", i, bit, r);
      }
    }
  CHECK_EQ (wrong, 0);
  /* Most of the payload matters: only a few flips may be harmless. */
  CHECK (harmless < b.len);
  cs_buf_free (&b);
  cs_buf_free (&copy);
}

static void
test_damage (void)
{
  struct cs_buf b = CS_BUF_INIT, c = CS_BUF_INIT;

  fill_text (plain, CHUNK, 9);
  CHECK_EQ (codec_encode (ctx, NULL, vol, 7, 1, plain, CHUNK, &b), 0);

  /* Truncated at every interesting length. */
  for (size_t n = 0; n < b.len; n += n < 80 ? 1 : 997) {
    c.len = 0;
    cs_buf_append (&c, b.data, n);
    CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  }
  CHECK (unit_logged ("truncated") || unit_logged ("shorter"));

  /* Padded. */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  cs_buf_append (&c, "x", 1);
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);

  /* Another volume's chunk. */
  CHECK_EQ (decode (&b, other, 7, CHUNK), -EIO);
  CHECK (unit_logged ("another volume"));

  /* Another chunk's object copied over this key. */
  CHECK_EQ (decode (&b, vol, 8, CHUNK), -EIO);
  CHECK (unit_logged ("holds chunk 7"));

  /* A volume with another chunk size. */
  CHECK_EQ (decode (&b, vol, 7, CHUNK / 2), -EIO);

  /* A newer format version, with a valid header checksum. */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[8] = 3;
  reseal (&c);
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  CHECK (unit_logged ("newer s3chunk"));

  /* Format version 2 (encrypted) in a volume without encryption. */
  c.data[8] = 2;
  reseal (&c);
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  CHECK (unit_logged ("encrypted chunk object in a volume without"));

  /* An unknown codec. */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[10] = 9;
  reseal (&c);
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  CHECK (unit_logged ("unknown codec"));

  /* Payload damaged but the header resealed: the content checksum or
   * zstd catches it.
   */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[c.len - 10] ^= 0xff;
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);

  /* A foreign object under a chunk key. */
  c.len = 0;
  cs_buf_append (&c, "<html>not a chunk</html>", 24);
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  CHECK (unit_logged ("not an s3chunk chunk object") ||
         unit_logged ("shorter"));

  /* Raw payload whose content checksum does not match. */
  CHECK_EQ (codec_encode (ctx, NULL, vol, 7, 0, plain, CHUNK, &c), 0);
  c.data[CODEC_HEADER_SIZE + 5] ^= 1;
  CHECK_EQ (decode (&c, vol, 7, CHUNK), -EIO);
  CHECK (unit_logged ("checksum of the content"));

  cs_buf_free (&b);
  cs_buf_free (&c);
}

int
main (void)
{
  unit_init ();
  ctx = codec_ctx_new ();
  CHECK (ctx != NULL);
  test_round_trips ();
  test_every_bit_flip (1);
  test_every_bit_flip (0);
  test_damage ();
  codec_ctx_free (ctx);
  return unit_done ("test-codec");
}
