/* s3chunk: unit tests of client-side encryption.
 *
 * - The primitives as s3chunk calls them, against published vectors:
 *   AES-256-GCM: test cases 13 to 16 of McGrew and Viega, "The Galois/
 *   Counter Mode of Operation (GCM)" (the GCM submission to NIST, whose
 *   appendix B the NIST GCM validation vectors reproduce);
 *   scrypt: RFC 7914 section 12 (the first three; the fourth needs 1 GiB);
 *   HKDF-SHA256: RFC 5869 appendix A.1; HMAC-SHA256: RFC 4231 case 2.
 * - Encrypted chunk objects: round trips, and every kind of tampering
 *   (header, nonce, ciphertext, tag bits; moved between indexes and
 *   volumes; truncated; another key; a plain object planted) refused with
 *   -EIO and a message naming the object key.
 * - The superblock: wrong key, no key, key for a plain volume, encryption
 *   removed, size changed, wrapped key swapped, KDF cost raised: refused;
 *   rekey keeps the chunks readable and the old key out.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "chunkstore.h"
#include "codec.h"
#include "crypt.h"
#include "unit.h"

#define CHUNK (64 * 1024)

static struct codec_ctx *ctx;

static size_t
unhex (const char *s, uint8_t *out)
{
  size_t n = strlen (s) / 2;
  for (size_t i = 0; i < n; ++i)
    sscanf (s + 2 * i, "%2hhx", &out[i]);
  return n;
}

/* ------------------------------------------------------------- vectors */

static void
test_gcm_vectors (void)
{
  static const struct {
    const char *name, *k, *iv, *p, *a, *c, *t;
  } v[] = {
    { "GCM test case 13",
      "0000000000000000000000000000000000000000000000000000000000000000",
      "000000000000000000000000", "", "", "",
      "530f8afbc74536b9a963b4f1c4cb738b" },
    { "GCM test case 14",
      "0000000000000000000000000000000000000000000000000000000000000000",
      "000000000000000000000000", "00000000000000000000000000000000", "",
      "cea7403d4d606b6e074ec5d3baf39d18",
      "d0d1c8a799996bf0265b98b5d48ab919" },
    { "GCM test case 15",
      "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
      "cafebabefacedbaddecaf888",
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
      "",
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
      "b094dac5d93471bdec1a502270e3cc6c" },
    { "GCM test case 16",
      "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
      "cafebabefacedbaddecaf888",
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
      "feedfacedeadbeeffeedfacedeadbeefabaddad2",
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
      "76fc6ece0f4e1768cddf8853bb2d551b" },
  };

  for (size_t i = 0; i < sizeof v / sizeof v[0]; ++i) {
    uint8_t k[32], iv[12], p[64], a[20], c[64], t[16], out[64], tag[16];
    size_t plen, alen;

    unhex (v[i].k, k);
    unhex (v[i].iv, iv);
    plen = unhex (v[i].p, p);
    alen = unhex (v[i].a, a);
    unhex (v[i].c, c);
    unhex (v[i].t, t);
    CHECK_EQ (codec_gcm_seal (ctx, k, iv, a, alen, p, plen, out, tag), 0);
    CHECK (memcmp (out, c, plen) == 0);
    CHECK (memcmp (tag, t, 16) == 0);
    memset (out, 0, sizeof out);
    CHECK_EQ (codec_gcm_open (ctx, k, iv, a, alen, c, plen, out, t), 0);
    CHECK (memcmp (out, p, plen) == 0);
    /* And any changed bit of the tag, the ciphertext or the AAD fails. */
    t[15] ^= 1;
    CHECK_EQ (codec_gcm_open (ctx, k, iv, a, alen, c, plen, out, t), -EBADMSG);
    t[15] ^= 1;
    if (plen) {
      c[0] ^= 0x80;
      CHECK_EQ (codec_gcm_open (ctx, k, iv, a, alen, c, plen, out, t),
                -EBADMSG);
      c[0] ^= 0x80;
    }
    if (alen) {
      a[alen - 1] ^= 1;
      CHECK_EQ (codec_gcm_open (ctx, k, iv, a, alen, c, plen, out, t),
                -EBADMSG);
    }
  }
}

static void
test_kdf_vectors (void)
{
  static const struct {
    const char *p, *s;
    uint64_t n;
    uint32_t r, pp;
    const char *dk;
  } v[] = {
    { "", "", 16, 1, 1,
      "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
      "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906" },
    { "password", "NaCl", 1024, 8, 16,
      "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
      "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640" },
    { "pleaseletmein", "SodiumChloride", 16384, 8, 1,
      "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
      "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887" },
  };
  uint8_t out[64], want[64];

  for (size_t i = 0; i < sizeof v / sizeof v[0]; ++i) {
    unhex (v[i].dk, want);
    CHECK_EQ (crypt_scrypt (v[i].p, strlen (v[i].p), v[i].s, strlen (v[i].s),
                            v[i].n, v[i].r, v[i].pp, out, 64), 0);
    CHECK (memcmp (out, want, 64) == 0);
  }

  /* RFC 5869 A.1 */
  {
    uint8_t ikm[22], salt[13], info[10], okm[42];
    memset (ikm, 0x0b, sizeof ikm);
    for (int i = 0; i < 13; ++i) salt[i] = i;
    for (int i = 0; i < 10; ++i) info[i] = 0xf0 + i;
    unhex ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
           "34007208d5b887185865", want);
    CHECK_EQ (crypt_hkdf (ikm, 22, salt, 13, info, 10, okm, 42), 0);
    CHECK (memcmp (okm, want, 42) == 0);
  }
  /* RFC 4231 test case 2 */
  unhex ("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
         want);
  CHECK_EQ (crypt_hmac_sha256 ((const uint8_t *) "Jefe", 4,
                               "what do ya want for nothing?", 28, out), 0);
  CHECK (memcmp (out, want, 32) == 0);
}

/* --------------------------------------------------------- chunk objects */

static const uint8_t vol[CODEC_VOLUME_ID_SIZE] = "0123456789abcdef";
static const uint8_t other[CODEC_VOLUME_ID_SIZE] = "fedcba9876543210";
static struct codec_key key1 = { .serial = 1001 }, key2 = { .serial = 1002 };
static uint8_t plain[CHUNK], out[CHUNK];
static const char secret_text[] = "THE-SECRET-PLAINTEXT-MARKER ";

static int
decode (const struct cs_buf *b, const struct codec_key *k, const uint8_t *id,
        uint64_t idx)
{
  static struct cs_buf copy;    /* decode works in place: keep b intact */

  copy.len = 0;
  cs_buf_append (&copy, b->data, b->len);
  memset (out, 0xAA, sizeof out);
  return codec_decode (ctx, k, id, idx, "chunks/0000000000000007",
                       copy.data, copy.len, out, CHUNK);
}

static void
reseal (struct cs_buf *b)
{
  uint64_t h = htole64 (XXH3_64bits (b->data, 56));
  memcpy (b->data + 56, &h, 8);
}

static bool
contains (const uint8_t *hay, size_t n, const char *needle)
{
  size_t m = strlen (needle);
  for (size_t i = 0; i + m <= n; ++i)
    if (memcmp (hay + i, needle, m) == 0)
      return true;
  return false;
}

static void
test_objects (void)
{
  struct cs_buf b = CS_BUF_INIT, c = CS_BUF_INIT, p = CS_BUF_INIT;
  struct codec_header h;
  uint32_t stored;

  for (int i = 0; i < 32; ++i)
    key1.key[i] = i, key2.key[i] = 0x80 | i;
  for (size_t i = 0; i < CHUNK; ++i)
    plain[i] = secret_text[i % (sizeof secret_text - 1)];

  /* Round trips, compressed and raw; no plaintext or hash of it shows. */
  for (int level = 0; level <= 3; level += 3) {
    CHECK_EQ (codec_encode (ctx, &key1, vol, 7, level, plain, CHUNK, &b), 0);
    CHECK_EQ (codec_peek_header (b.data, b.len, &h), 0);
    CHECK_EQ (h.format_version, CODEC_FORMAT_SEALED);
    CHECK_EQ (h.codec, level ? CODEC_ZSTD : CODEC_RAW);
    CHECK_EQ (h.plain_hash, 0);
    CHECK_EQ (h.stored_len, b.len - CODEC_HEADER_SIZE);
    CHECK (b.len <= codec_bound (CHUNK));
    CHECK (!contains (b.data, b.len, "SECRET"));
    CHECK_EQ (decode (&b, &key1, vol, 7), 0);
    CHECK (memcmp (out, plain, CHUNK) == 0);
  }
  /* Two encodings of the same chunk differ (fresh nonce each time). */
  CHECK_EQ (codec_encode (ctx, &key1, vol, 7, 3, plain, CHUNK, &c), 0);
  CHECK (b.len == c.len && memcmp (b.data, c.data, b.len) != 0);
  /* Control: the plain format does show the text. */
  CHECK_EQ (codec_encode (ctx, NULL, vol, 7, 0, plain, CHUNK, &p), 0);
  CHECK (contains (p.data, p.len, "SECRET"));

  /* Every bit of the object, header (resealed, so the AEAD and not the
   * header checksum is what refuses), nonce, ciphertext and tag.
   */
  CHECK_EQ (codec_encode (ctx, &key1, vol, 7, 3, plain, CHUNK, &b), 0);
  for (size_t i = 0; i < b.len; i += (i < 200 || i + 200 > b.len) ? 1 : 61)
    for (int bit = 0; bit < 8; ++bit) {
      int r;
      c.len = 0;
      cs_buf_append (&c, b.data, b.len);
      c.data[i] ^= 1 << bit;
      if (i < 56)
        reseal (&c);
      r = decode (&c, &key1, vol, 7);
      if (r != -EIO) {
        fprintf (stderr, "flip of byte %zu bit %d accepted\n", i, bit);
        CHECK_EQ (r, -EIO);
        goto flips_done;
      }
      if (i >= CODEC_HEADER_SIZE && !unit_logged ("authentication failed")) {
        fprintf (stderr, "flip of byte %zu: %s\n", i, unit_last_log);
        CHECK (0);
        goto flips_done;
      }
    }
  CHECK (unit_logged ("chunks/0000000000000007"));
 flips_done:

  /* The tag alone, the nonce alone: named as authentication failures. */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[c.len - 1] ^= 1;
  CHECK_EQ (decode (&c, &key1, vol, 7), -EIO);
  CHECK (unit_logged ("read chunks/0000000000000007: authentication failed"));
  c.data[c.len - 1] ^= 1;
  c.data[CODEC_HEADER_SIZE + 3] ^= 1;
  CHECK_EQ (decode (&c, &key1, vol, 7), -EIO);
  CHECK (unit_logged ("authentication failed"));

  /* Moved to another index: refused by the header check; with the header
   * rewritten to the new index (and its checksum fixed), by the tag.
   */
  CHECK_EQ (decode (&b, &key1, vol, 8), -EIO);
  CHECK (unit_logged ("holds chunk 7"));
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[32] = 8;
  reseal (&c);
  CHECK_EQ (codec_peek_header (c.data, c.len, &h), 0);
  CHECK_EQ (h.index, 8);
  memset (out, 0xAA, sizeof out);
  {
    struct cs_buf d = CS_BUF_INIT;
    cs_buf_append (&d, c.data, c.len);
    CHECK_EQ (codec_decode (ctx, &key1, vol, 8, "chunks/0000000000000008",
                            d.data, d.len, out, CHUNK), -EIO);
    CHECK (unit_logged ("read chunks/0000000000000008: authentication"));
    cs_buf_free (&d);
  }

  /* Moved to another volume: refused by the volume id; with the id
   * rewritten, by the tag (and another volume has another key anyway).
   */
  CHECK_EQ (decode (&b, &key1, other, 7), -EIO);
  CHECK (unit_logged ("another volume"));
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  memcpy (c.data + 16, other, 16);
  reseal (&c);
  CHECK_EQ (decode (&c, &key1, other, 7), -EIO);
  CHECK (unit_logged ("authentication failed"));
  CHECK_EQ (decode (&b, &key2, vol, 7), -EIO);
  CHECK (unit_logged ("authentication failed"));

  /* Truncated at every length near the ends, and with the stored length
   * rewritten to match the truncation.
   */
  for (size_t n = 0; n < b.len; n += (n < 200 || n + 200 > b.len) ? 1 : 301) {
    c.len = 0;
    cs_buf_append (&c, b.data, n);
    CHECK_EQ (decode (&c, &key1, vol, 7), -EIO);
  }
  c.len = 0;
  cs_buf_append (&c, b.data, b.len - 5);
  stored = htole32 ((uint32_t) (c.len - CODEC_HEADER_SIZE));
  memcpy (c.data + 40, &stored, 4);
  reseal (&c);
  CHECK_EQ (decode (&c, &key1, vol, 7), -EIO);
  CHECK (unit_logged ("authentication failed"));

  /* A plain object planted in an encrypted volume, and the reverse. */
  CHECK_EQ (decode (&p, &key1, vol, 7), -EIO);
  CHECK (unit_logged ("unencrypted chunk object in an encrypted volume"));
  CHECK_EQ (decode (&b, NULL, vol, 7), -EIO);
  CHECK (unit_logged ("encrypted chunk object in a volume without"));

  /* A content hash in a sealed header (which would leak) is refused. */
  c.len = 0;
  cs_buf_append (&c, b.data, b.len);
  c.data[48] = 1;
  reseal (&c);
  CHECK_EQ (decode (&c, &key1, vol, 7), -EIO);

  cs_buf_free (&b);
  cs_buf_free (&c);
  cs_buf_free (&p);
}

/* ------------------------------------------------------------ superblock */

static char *tmp;

/* A key file with these bytes, read the way the plugin reads key=+FILE. */
static void
key_from (const char *name, const void *bytes, size_t n,
          enum crypt_key_format f, struct cs_user_key *k)
{
  char path[512], param[600];
  int fd;

  snprintf (path, sizeof path, "%s/%s", tmp, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK (fd >= 0 && write (fd, bytes, n) == (ssize_t) n);
  close (fd);
  snprintf (param, sizeof param, "+%s", path);
  memset (k, 0, sizeof *k);
  CHECK_EQ (crypt_key_read ("key", param, k), 0);
  k->format = f;
}

static int
open_with (struct objstore *os, const struct cs_user_key *k, uint64_t size,
           struct cs_volume **v)
{
  struct cs_volume_params p = { .size = size, .chunk_size = CHUNK,
                                .level = -1, .key = k };
  *v = NULL;
  return cs_volume_open (os, &p, v);
}

/* Replace the superblock's text. */
static void
put_sb (struct objstore *os, const char *text)
{
  CHECK_EQ (objstore_put (os, CS_SUPERBLOCK_KEY, text, strlen (text), NULL),
            0);
}

static char *
get_sb (struct objstore *os)
{
  struct cs_buf b = CS_BUF_INIT;
  char *s;

  CHECK_EQ (objstore_get (os, CS_SUPERBLOCK_KEY, 8192, &b, NULL), 0);
  s = strndup ((char *) b.data, b.len);
  cs_buf_free (&b);
  return s;
}

/* Replace the value of field in text (a new string). */
static char *
set_field (const char *text, const char *field, const char *value)
{
  char *s = malloc (strlen (text) + strlen (value) + 2), *p;
  const char *f = strstr (text, field), *end;

  CHECK (f != NULL);
  end = strchr (f + strlen (field), '\n');
  p = s;
  memcpy (p, text, f - text + strlen (field));
  p += f - text + strlen (field);
  p += sprintf (p, "%s", value);
  strcpy (p, end);
  return s;
}

static void
test_superblock (void)
{
  char dir1[600], dir2[600];
  struct objstore *os, *os2;
  struct cs_volume *v;
  struct cs_user_key raw, raw_hex, wrong, pass, none = { 0 };
  struct cs_buf scratch = CS_BUF_INIT;
  static uint8_t data[CHUNK], back[CHUNK];
  uint8_t rawbytes[32];
  char hex[65], *sb, *sb2, *bad, line[200];

  for (int i = 0; i < 32; ++i)
    rawbytes[i] = 0x11 * i;
  crypt_hex (rawbytes, 32, hex);
  key_from ("raw", rawbytes, 32, CRYPT_FORMAT_RAW, &raw);
  key_from ("rawhex", hex, 64, CRYPT_FORMAT_UNSET, &raw_hex);
  key_from ("wrong", "0123456789abcdef0123456789abcdef", 32,
            CRYPT_FORMAT_UNSET, &wrong);
  key_from ("pass", "correct horse battery staple\n", 29,
            CRYPT_FORMAT_PASSPHRASE, &pass);
  (void) none;

  /* A literal key is refused without echoing it. */
  {
    struct cs_user_key lit = { 0 };
    CHECK_EQ (crypt_key_read ("key", "hunter2", &lit), -EINVAL);
    CHECK (unit_logged ("key=+FILE") && !unit_logged ("hunter2"));
  }

  snprintf (dir1, sizeof dir1, "%s/v1", tmp);
  snprintf (dir2, sizeof dir2, "%s/v2", tmp);
  CHECK_EQ (objstore_dir_open (dir1, true, &os), 0);
  CHECK_EQ (objstore_dir_open (dir2, true, &os2), 0);

  /* Create with a raw key; write a chunk. */
  CHECK_EQ (open_with (os, &raw, 16 * CHUNK, &v), 0);
  CHECK (v && v->crypt && v->crypt->kdf == CRYPT_KDF_NONE);
  for (size_t i = 0; i < CHUNK; ++i)
    data[i] = secret_text[i % (sizeof secret_text - 1)];
  CHECK_EQ (cs_chunk_write (v, ctx, 3, data, &scratch), 0);
  cs_volume_close (v);
  sb = get_sb (os);
  CHECK (strstr (sb, "format-version=2\n") && strstr (sb, "kdf=none\n") &&
         strstr (sb, "encryption=aes-256-gcm\n") && strstr (sb, "\nmac="));

  /* Reopen: the same key as 64 hex digits works; reads back. */
  CHECK_EQ (open_with (os, &raw_hex, 0, &v), 0);
  CHECK_EQ (cs_chunk_read (v, ctx, 3, back, &scratch), 0);
  CHECK (memcmp (back, data, CHUNK) == 0);
  cs_volume_close (v);

  /* Wrong key, no key, passphrase format for a raw-key volume. */
  CHECK_EQ (open_with (os, &wrong, 0, &v), -EACCES);
  CHECK (unit_logged ("wrong key") && unit_logged ("key=+"));
  CHECK_EQ (open_with (os, NULL, 0, &v), -EACCES);
  CHECK (unit_logged ("volume is encrypted") && unit_logged ("key=+FILE"));
  CHECK_EQ (open_with (os, &pass, 0, &v), -EINVAL);
  CHECK (unit_logged ("key-format=passphrase"));

  /* Downgrade: encryption removed (a plain superblock put in its place)
   * is refused by a reader that has a key.
   */
  {
    struct cs_volume plainv = { 0 };
    struct cs_buf t = CS_BUF_INIT;
    CHECK_EQ (cs_superblock_parse ("sb", sb, strlen (sb), &plainv), 0);
    crypt_free (plainv.crypt);
    plainv.crypt = NULL;
    CHECK_EQ (cs_superblock_format (&plainv, &t), 0);
    CHECK_EQ (objstore_put (os, CS_SUPERBLOCK_KEY, t.data, t.len, NULL), 0);
    CHECK_EQ (open_with (os, &raw, 0, &v), -EACCES);
    CHECK (unit_logged ("not encrypted: refused"));
    cs_buf_free (&t);
  }
  /* And format-version=2 with the encryption lines cut off. */
  {
    char *cut = strndup (sb, strstr (sb, "encryption=") - sb);
    bad = set_field (cut, "format-version=", "2");
    free (cut);
  }
  put_sb (os, bad);
  CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
  CHECK (unit_logged ("missing fields"));
  free (bad);

  /* Size changed (geometry), MAC left alone. */
  bad = set_field (sb, "\nsize=", "2097152");
  put_sb (os, bad);
  CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
  CHECK (unit_logged ("fails authentication"));
  free (bad);

  /* The MAC itself altered. */
  bad = set_field (sb, "\nmac=", "00000000000000000000000000000000"
                   "00000000000000000000000000000000");
  put_sb (os, bad);
  CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
  free (bad);

  /* A line appended after the MAC. */
  bad = malloc (strlen (sb) + 32);
  sprintf (bad, "%slevel=5\n", sb);
  put_sb (os, bad);
  CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
  CHECK (unit_logged ("after its mac= line"));
  free (bad);

  /* The wrapped key swapped for another volume's, made with the same key:
   * its volume id differs, so it does not even pass the key check; with
   * the key-check copied too, the unwrap fails.
   */
  CHECK_EQ (open_with (os2, &raw, 16 * CHUNK, &v), 0);
  cs_volume_close (v);
  sb2 = get_sb (os2);
  {
    const char *w = strstr (sb2, "wrapped-key=") + 12;
    const char *kc = strstr (sb2, "key-check=") + 10;
    snprintf (line, sizeof line, "%.*s", (int) (strchr (w, '\n') - w), w);
    bad = set_field (sb, "wrapped-key=", line);
    put_sb (os, bad);
    CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
    CHECK (unit_logged ("wrapped volume key fails authentication"));
    free (bad);
    snprintf (line, sizeof line, "%.*s", (int) (strchr (kc, '\n') - kc), kc);
    bad = set_field (sb, "key-check=", line);
    put_sb (os, bad);
    CHECK_EQ (open_with (os, &raw, 0, &v), -EACCES);
    free (bad);
  }
  /* The other volume's chunk object copied in: another volume. */
  {
    struct cs_buf o = CS_BUF_INIT;
    put_sb (os, sb);
    CHECK_EQ (open_with (os2, &raw, 0, &v), 0);
    CHECK_EQ (cs_chunk_write (v, ctx, 3, data, &scratch), 0);
    cs_volume_close (v);
    CHECK_EQ (objstore_get (os2, "chunks/0000000000000003", 1 << 20, &o,
                            NULL), 0);
    CHECK_EQ (objstore_put (os, "chunks/0000000000000004", o.data, o.len,
                            NULL), 0);
    CHECK_EQ (open_with (os, &raw, 0, &v), 0);
    CHECK_EQ (cs_chunk_read (v, ctx, 4, back, &scratch), -EIO);
    CHECK (unit_logged ("another volume"));
    /* Its own chunk 3 copied to index 4: moved between indexes. */
    CHECK_EQ (objstore_get (os, "chunks/0000000000000003", 1 << 20, &o,
                            NULL), 0);
    CHECK_EQ (objstore_put (os, "chunks/0000000000000004", o.data, o.len,
                            NULL), 0);
    CHECK_EQ (cs_chunk_read (v, ctx, 4, back, &scratch), -EIO);
    CHECK (unit_logged ("read chunks/0000000000000004"));
    CHECK_EQ (objstore_del_many (os, (const char *[]) {
          "chunks/0000000000000004" }, 1), 0);
    cs_volume_close (v);
    cs_buf_free (&o);
  }

  /* KDF cost out of bounds is refused at parse, before any scrypt. */
  bad = set_field (sb, "kdf=", "scrypt\nkdf-salt=00000000000000000000000000"
                   "000000\nkdf-n=4294967296\nkdf-r=8\nkdf-p=1");
  put_sb (os, bad);
  CHECK_EQ (open_with (os, &raw, 0, &v), -EIO);
  CHECK (unit_logged ("bad kdf-n"));
  free (bad);

  /* A plain volume refuses a key (the reader expects encryption). */
  put_sb (os, sb);
  {
    char dir3[600];
    struct objstore *os3;
    snprintf (dir3, sizeof dir3, "%s/v3", tmp);
    CHECK_EQ (objstore_dir_open (dir3, true, &os3), 0);
    CHECK_EQ (open_with (os3, NULL, 16 * CHUNK, &v), 0);
    cs_volume_close (v);
    CHECK_EQ (open_with (os3, &raw, 0, &v), -EACCES);
    CHECK (unit_logged ("not encrypted"));
    objstore_close (os3);
  }

  /* Rekey to a passphrase: the chunk stays readable, the old key is out,
   * and the chunk object is untouched.
   */
  {
    struct cs_buf before = CS_BUF_INIT, after = CS_BUF_INIT;
    CHECK_EQ (objstore_get (os, "chunks/0000000000000003", 1 << 20, &before,
                            NULL), 0);
    CHECK_EQ (open_with (os, &raw, 0, &v), 0);
    CHECK_EQ (cs_volume_rekey (v, &pass), 0);
    cs_volume_close (v);
    free (sb2);
    sb2 = get_sb (os);
    CHECK (strstr (sb2, "kdf=scrypt\n") && strstr (sb2, "kdf-n=131072\n"));
    CHECK_EQ (open_with (os, &raw, 0, &v), -EINVAL);       /* format */
    raw.format = CRYPT_FORMAT_UNSET;
    CHECK_EQ (open_with (os, &raw, 0, &v), -EACCES);
    pass.format = CRYPT_FORMAT_UNSET;
    CHECK_EQ (open_with (os, &pass, 0, &v), 0);
    CHECK_EQ (cs_chunk_read (v, ctx, 3, back, &scratch), 0);
    CHECK (memcmp (back, data, CHUNK) == 0);
    cs_volume_close (v);
    CHECK_EQ (objstore_get (os, "chunks/0000000000000003", 1 << 20, &after,
                            NULL), 0);
    CHECK (before.len == after.len &&
           memcmp (before.data, after.data, before.len) == 0);
    cs_buf_free (&before);
    cs_buf_free (&after);
  }

  free (sb);
  free (sb2);
  cs_buf_free (&scratch);
  crypt_key_free (&raw);
  crypt_key_free (&raw_hex);
  crypt_key_free (&wrong);
  crypt_key_free (&pass);
  objstore_close (os);
  objstore_close (os2);
}

int
main (void)
{
  unit_init ();
  ctx = codec_ctx_new ();
  CHECK (ctx != NULL);
  tmp = unit_tmpdir ();
  test_gcm_vectors ();
  test_kdf_vectors ();
  test_objects ();
  test_superblock ();
  codec_ctx_free (ctx);
  unit_rmdir (tmp);
  return unit_done ("test-crypt");
}
