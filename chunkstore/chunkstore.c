/* s3chunk: the chunk store (superblock, chunk objects, allocation map). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "chunkstore.h"
#include "cleanup.h"
#include "log.h"
#include "params.h"

/* Superblocks are a few hundred bytes; refuse anything much larger. */
#define SUPERBLOCK_MAX 4096

/* ---------------------------------------------------------- superblock */

int
cs_superblock_format (const struct cs_volume *v, struct cs_buf *out)
{
  char text[2048], id[2 * CODEC_VOLUME_ID_SIZE + 1];
  const struct cs_crypt *c = v->crypt;
  int n, i;

  for (i = 0; i < CODEC_VOLUME_ID_SIZE; ++i)
    snprintf (id + 2 * i, 3, "%02x", v->volume_id[i]);
  n = snprintf (text, sizeof text,
                "s3chunk volume\n"
                "format-version=%d\n"
                "volume-id=%s\n"
                "size=%" PRIu64 "\n"
                "chunk-size=%" PRIu32 "\n"
                "codec=%s\n"
                "level=%d\n"
                "created=%" PRId64 "\n",
                c ? CS_SUPERBLOCK_VERSION_ENCRYPTED : CS_SUPERBLOCK_VERSION,
                id, v->size, v->chunk_size,
                v->level ? "zstd" : "none", v->level, v->created);
  if (c) {
    char salt[2 * CRYPT_SALT_SIZE + 1], check[2 * CRYPT_CHECK_SIZE + 1];
    char wrapped[2 * CRYPT_WRAPPED_SIZE + 1], mac[2 * CRYPT_MAC_SIZE + 1];
    uint8_t m[CRYPT_MAC_SIZE];
    int r;

    crypt_hex (c->salt, sizeof c->salt, salt);
    crypt_hex (c->key_check, sizeof c->key_check, check);
    crypt_hex (c->wrapped, sizeof c->wrapped, wrapped);
    n += snprintf (text + n, sizeof text - n, "encryption=aes-256-gcm\n");
    if (c->kdf == CRYPT_KDF_SCRYPT)
      n += snprintf (text + n, sizeof text - n,
                     "kdf=scrypt\nkdf-salt=%s\nkdf-n=%" PRIu64 "\n"
                     "kdf-r=%" PRIu32 "\nkdf-p=%" PRIu32 "\n",
                     salt, c->scrypt_n, c->scrypt_r, c->scrypt_p);
    else
      n += snprintf (text + n, sizeof text - n, "kdf=none\n");
    n += snprintf (text + n, sizeof text - n,
                   "key-check=%s\nwrapped-key=%s\n", check, wrapped);
    /* The MAC covers every byte before its own line. */
    r = crypt_superblock_mac (c, text, n, m);
    if (r < 0) {
      cs_error ("write superblock: the volume is encrypted and no key was "
                "given: give key=+FILE");
      return r;
    }
    crypt_hex (m, sizeof m, mac);
    n += snprintf (text + n, sizeof text - n, "mac=%s\n", mac);
  }
  out->len = 0;
  return cs_buf_append (out, text, n);
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

#define BADSB(...) do { cs_error (__VA_ARGS__); return -EIO; } while (0)

/* The fields of format version 2 (docs/FORMAT.md, "Encryption"): 0 taken,
 * 1 not one of them, -EIO bad (logged).  The seen bits are those of
 * cs_superblock_parse.
 */
static int
parse_crypt_field (const char *key, const char *k, const char *val,
                   struct cs_crypt *c, unsigned *seen)
{
  uint64_t u;

  if (strcmp (k, "encryption") == 0) {
    if (strcmp (val, "aes-256-gcm") != 0)
      BADSB ("read %s: unknown encryption \"%s\": use a newer s3chunk",
             key, val);
    *seen |= 64;
  }
  else if (strcmp (k, "kdf") == 0) {
    if (strcmp (val, "scrypt") == 0)
      c->kdf = CRYPT_KDF_SCRYPT;
    else if (strcmp (val, "none") == 0)
      c->kdf = CRYPT_KDF_NONE;
    else
      BADSB ("read %s: unknown kdf \"%s\": use a newer s3chunk", key, val);
    *seen |= 128;
  }
  else if (strcmp (k, "kdf-salt") == 0) {
    if (crypt_unhex (val, c->salt, sizeof c->salt) < 0)
      BADSB ("read %s: bad kdf-salt", key);
    *seen |= 256;
  }
  else if (strcmp (k, "kdf-n") == 0) {
    /* Bounded: a forged superblock must not make a start use gigabytes. */
    if (params_parse_uint (val, CRYPT_SCRYPT_N_MIN, CRYPT_SCRYPT_N_MAX,
                           &u) < 0 || (u & (u - 1)))
      BADSB ("read %s: bad kdf-n \"%s\": expected a power of two from "
             "2^14 to 2^20", key, val);
    c->scrypt_n = u;
    *seen |= 512;
  }
  else if (strcmp (k, "kdf-r") == 0) {
    if (params_parse_uint (val, 1, CRYPT_SCRYPT_R_MAX, &u) < 0)
      BADSB ("read %s: bad kdf-r \"%s\"", key, val);
    c->scrypt_r = u;
    *seen |= 1024;
  }
  else if (strcmp (k, "kdf-p") == 0) {
    if (params_parse_uint (val, 1, CRYPT_SCRYPT_P_MAX, &u) < 0)
      BADSB ("read %s: bad kdf-p \"%s\"", key, val);
    c->scrypt_p = u;
    *seen |= 2048;
  }
  else if (strcmp (k, "key-check") == 0) {
    if (crypt_unhex (val, c->key_check, sizeof c->key_check) < 0)
      BADSB ("read %s: bad key-check", key);
    *seen |= 4096;
  }
  else if (strcmp (k, "wrapped-key") == 0) {
    if (crypt_unhex (val, c->wrapped, sizeof c->wrapped) < 0)
      BADSB ("read %s: bad wrapped-key", key);
    *seen |= 8192;
  }
  else if (strcmp (k, "mac") == 0) {
    if (crypt_unhex (val, c->mac, sizeof c->mac) < 0)
      BADSB ("read %s: bad mac", key);
    *seen |= 16384;
  }
  else
    return 1;
  return 0;
}

int
cs_superblock_parse (const char *key, const void *data, size_t len,
                     struct cs_volume *v)
{
  CLEANUP_FREE char *text = NULL;
  char *line, *save = NULL;
  unsigned seen = 0;
  int version = -1;
  enum { F_ID = 1, F_SIZE = 2, F_CHUNK = 4, F_CODEC = 8, F_LEVEL = 16,
         F_CREATED = 32, F_ALL = 63,
         /* format-version 2: encryption */
         F_ENC = 64, F_KDF = 128, F_SALT = 256, F_N = 512, F_R = 1024,
         F_P = 2048, F_CHECK = 4096, F_WRAPPED = 8192, F_MAC = 16384,
         F_SCRYPT = F_SALT | F_N | F_R | F_P,
         F_ENC_ALL = F_ENC | F_KDF | F_CHECK | F_WRAPPED | F_MAC };
  bool zstd = false;
  struct cs_crypt *c = NULL;
  int r;

  if (len > SUPERBLOCK_MAX || memchr (data, '\0', len))
    BADSB ("read %s: not an s3chunk superblock (binary or too large)", key);
  text = strndup (data, len);
  if (text == NULL)
    return -ENOMEM;
  crypt_free (v->crypt);
  v->crypt = NULL;
  line = strtok_r (text, "\n", &save);
  if (line == NULL || strcmp (line, "s3chunk volume") != 0)
    BADSB ("read %s: not an s3chunk superblock (bad first line)", key);
  while ((line = strtok_r (NULL, "\n", &save)) != NULL) {
    char *eq = strchr (line, '=');
    const char *k = line, *val;
    uint64_t u;

    if (seen & F_MAC)
      BADSB ("read %s: superblock has lines after its mac= line", key);
    if (eq == NULL)
      BADSB ("read %s: malformed superblock line \"%s\"", key, line);
    *eq = '\0';
    val = eq + 1;
    if (strcmp (k, "format-version") == 0) {
      if (params_parse_uint (val, 0, 1000000, &u) < 0)
        BADSB ("read %s: bad format-version \"%s\"", key, val);
      version = u;
      if (version != CS_SUPERBLOCK_VERSION &&
          version != CS_SUPERBLOCK_VERSION_ENCRYPTED)
        BADSB ("open volume: %s has format version %d, this s3chunk reads "
               "versions %d and %d: use the s3chunk release that created it",
               key, version, CS_SUPERBLOCK_VERSION,
               CS_SUPERBLOCK_VERSION_ENCRYPTED);
      if (version == CS_SUPERBLOCK_VERSION_ENCRYPTED &&
          (c = v->crypt = calloc (1, sizeof *c)) == NULL)
        return -ENOMEM;
    }
    else if (version < 0)
      BADSB ("read %s: format-version must come first", key);
    else if (strcmp (k, "volume-id") == 0) {
      if (strlen (val) != 2 * CODEC_VOLUME_ID_SIZE)
        BADSB ("read %s: bad volume-id", key);
      for (int i = 0; i < CODEC_VOLUME_ID_SIZE; ++i) {
        int hi = hexval (val[2 * i]), lo = hexval (val[2 * i + 1]);
        if (hi < 0 || lo < 0)
          BADSB ("read %s: bad volume-id", key);
        v->volume_id[i] = hi << 4 | lo;
      }
      seen |= F_ID;
    }
    else if (strcmp (k, "size") == 0) {
      if (params_parse_uint (val, CS_SIZE_ALIGN, CS_MAX_SIZE, &u) < 0 ||
          u % CS_SIZE_ALIGN)
        BADSB ("read %s: bad size \"%s\"", key, val);
      v->size = u;
      seen |= F_SIZE;
    }
    else if (strcmp (k, "chunk-size") == 0) {
      if (params_parse_uint (val, CS_MIN_CHUNK_SIZE, CS_MAX_CHUNK_SIZE, &u) < 0
          || (u & (u - 1)))
        BADSB ("read %s: bad chunk-size \"%s\"", key, val);
      v->chunk_size = u;
      seen |= F_CHUNK;
    }
    else if (strcmp (k, "codec") == 0) {
      if (strcmp (val, "zstd") == 0)
        zstd = true;
      else if (strcmp (val, "none") != 0)
        BADSB ("read %s: unknown codec \"%s\": use a newer s3chunk", key, val);
      seen |= F_CODEC;
    }
    else if (strcmp (k, "level") == 0) {
      if (params_parse_uint (val, 0, CS_MAX_LEVEL, &u) < 0)
        BADSB ("read %s: bad level \"%s\"", key, val);
      v->level = u;
      seen |= F_LEVEL;
    }
    else if (strcmp (k, "created") == 0) {
      if (params_parse_uint (val, 0, INT64_MAX, &u) < 0)
        BADSB ("read %s: bad created \"%s\"", key, val);
      v->created = u;
      seen |= F_CREATED;
    }
    else if (c && (r = parse_crypt_field (key, k, val, c, &seen)) <= 0) {
      if (r < 0)
        return r;               /* logged */
      /* The MAC covers the text up to its own line. */
      if (strcmp (k, "mac") == 0)
        c->mac_offset = k - text;
    }
    else
      BADSB ("read %s: unknown superblock field \"%s\": use a newer s3chunk",
             key, k);
  }
  if (c && (seen & F_KDF) && c->kdf == CRYPT_KDF_NONE) {
    if (seen & F_SCRYPT)
      BADSB ("read %s: kdf=none with scrypt parameters", key);
    seen |= F_SCRYPT;           /* a raw key has no KDF parameters */
  }
  if ((seen & F_ALL) != F_ALL ||
      (c && seen != (F_ALL | F_ENC_ALL | F_SCRYPT)))
    BADSB ("read %s: superblock is missing fields (truncated?)", key);
  if (c && c->kdf == CRYPT_KDF_SCRYPT &&
      128 * (uint64_t) c->scrypt_r * c->scrypt_n > CRYPT_SCRYPT_MAXMEM)
    BADSB ("read %s: kdf-n=%" PRIu64 " with kdf-r=%" PRIu32 " needs more "
           "than 2 GiB", key, c->scrypt_n, c->scrypt_r);
  if (zstd != (v->level > 0))
    BADSB ("read %s: codec and level disagree", key);
  for (v->chunk_shift = 0; (1u << v->chunk_shift) < v->chunk_size;
       v->chunk_shift++)
    ;
  v->nchunks = (v->size + v->chunk_size - 1) >> v->chunk_shift;
  return 0;
}

/* --------------------------------------------------------- allocation map */

/* Can a volume of this size and chunk size be served? */
static int
check_geometry (uint64_t size, uint32_t chunk_size)
{
  uint64_t n = (size + chunk_size - 1) / chunk_size;
  char s1[32], s2[32];

  if (n > CS_MAX_CHUNKS) {
    cs_error ("size=%s with chunk-size=%s makes %" PRIu64 " chunks, more "
              "than the %" PRIu64 " s3chunk keeps track of in memory: use a "
              "larger chunk size (fixed when the volume is created) or a "
              "smaller size", params_format_size (size, s1, sizeof s1),
              params_format_size (chunk_size, s2, sizeof s2), n,
              CS_MAX_CHUNKS);
    return -EINVAL;
  }
  return 0;
}

/* The map's address space is reserved once, for the largest volume the
 * format allows (CS_MAX_CHUNKS bits, 256 MiB), with PROT_NONE and
 * MAP_NORESERVE: it costs no memory until pages are made accessible, and
 * growing only makes more of it accessible (mprotect) in place.  So the
 * map never moves: a running plugin grows its volume (cs_volume_grow)
 * while other threads test and set bits, and none of them can ever hold a
 * pointer to a freed array.  The alternative, a lock around every map
 * access, would put a lock on the read path of every request for the
 * sake of a rare grow.  Pages of a private anonymous mapping read as
 * zeroes when first made accessible; the map is never shrunk.
 */
#define MAP_RESERVE_BYTES (CS_MAX_CHUNKS / 8 + 8)

static int
map_reserve (struct cs_volume *v)
{
  void *p = mmap (NULL, MAP_RESERVE_BYTES, PROT_NONE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

  if (p == MAP_FAILED) {
    int e = errno;
    cs_error ("allocation map: cannot reserve %" PRIu64 " MiB of address "
              "space: %s", (uint64_t) MAP_RESERVE_BYTES >> 20, strerror (e));
    return -e;
  }
  v->map = p;
  v->map_bytes = 0;
  return 0;
}

/* Make the map cover nchunks bits (plus a spare word); never shrinks. */
static int
map_resize (struct cs_volume *v, uint64_t nchunks)
{
  long page = sysconf (_SC_PAGESIZE);
  size_t want = ((nchunks + 63) / 64) * 8 + 8;

  if (v->map == NULL && map_reserve (v) < 0)
    return -ENOMEM;
  want = (want + page - 1) / page * page;
  if (want <= v->map_bytes)
    return 0;
  if (want > MAP_RESERVE_BYTES ||
      mprotect ((char *) v->map + v->map_bytes, want - v->map_bytes,
                PROT_READ | PROT_WRITE) < 0) {
    cs_error ("allocation map of %" PRIu64 " chunks: out of memory",
              nchunks);
    return -ENOMEM;
  }
  v->map_bytes = want;
  return 0;
}

uint64_t
cs_volume_size (const struct cs_volume *v)
{
  return __atomic_load_n (&v->size, __ATOMIC_ACQUIRE);
}

uint64_t
cs_volume_nchunks (const struct cs_volume *v)
{
  return __atomic_load_n (&v->nchunks, __ATOMIC_ACQUIRE);
}

bool
cs_map_test (const struct cs_volume *v, uint64_t idx)
{
  if (!v->map_loaded)
    return true;
  return __atomic_load_n (&v->map[idx / 64], __ATOMIC_ACQUIRE)
    & (UINT64_C (1) << (idx % 64));
}

void
cs_map_set (struct cs_volume *v, uint64_t idx, bool present)
{
  uint64_t bit = UINT64_C (1) << (idx % 64);

  if (present)
    __atomic_or_fetch (&v->map[idx / 64], bit, __ATOMIC_RELEASE);
  else
    __atomic_and_fetch (&v->map[idx / 64], ~bit, __ATOMIC_RELEASE);
}

uint64_t
cs_map_count (const struct cs_volume *v)
{
  uint64_t n = 0, i;

  for (i = 0; i < (cs_volume_nchunks (v) + 63) / 64; ++i)
    n += __builtin_popcountll (__atomic_load_n (&v->map[i], __ATOMIC_RELAXED));
  return n;
}

static int
map_add (void *opaque, const char *key, uint64_t size)
{
  struct cs_volume *v = opaque;
  uint64_t idx;

  if (!cs_chunk_key_parse (key, &idx))
    cs_warn ("list: %s is not a chunk object of this volume: ignored "
             "('s3chunk fsck' reports such objects)", key);
  else if (idx >= cs_volume_nchunks (v))
    cs_warn ("list: %s is beyond the end of the volume: ignored", key);
  else
    cs_map_set (v, idx, true);
  return 0;
}

int
cs_map_load (struct cs_volume *v)
{
  int r;

  memset (v->map, 0, (cs_volume_nchunks (v) + 63) / 64 * sizeof *v->map);
  r = objstore_list (v->os, CS_CHUNK_PREFIX, map_add, v);
  if (r < 0)
    return r;
  v->map_loaded = true;
  return 0;
}

/* ------------------------------------------------------------------ open */

static int
write_superblock (struct cs_volume *v, const char *if_match)
{
  struct cs_buf sb = CS_BUF_INIT;
  struct objstore_info info;
  int r;

  r = cs_superblock_format (v, &sb);
  if (r == 0)
    r = objstore_put_if (v->os, CS_SUPERBLOCK_KEY, sb.data, sb.len,
                         if_match, &info);
  if (r == -ENOTSUP) {
    /* The store has no such conditional write (OSS has no replace-if,
     * B2 none at all).  The superblock is written only by the volume
     * lock's holder (or under lock=none, at the user's risk), so the
     * condition guards against nobody: a create checks that there is no
     * superblock yet, then both write it plainly, through the fence.
     */
    struct cs_buf back = CS_BUF_INIT;

    cs_debug ("write %s: the store has no %s write: written plainly by "
              "the lock holder", CS_SUPERBLOCK_KEY,
              if_match ? "replace-if-unchanged" : "create-only");
    r = 0;
    if (if_match == NULL) {
      r = objstore_get (v->os, CS_SUPERBLOCK_KEY, 65536, &back, NULL);
      r = r == 0 ? -EEXIST : r == -ENOENT ? 0 : r;
    }
    cs_buf_free (&back);
    if (r == 0)
      r = objstore_put (v->os, CS_SUPERBLOCK_KEY, sb.data, sb.len, &info);
  }
  if (r == -ETIMEDOUT) {
    /* The outcome is unknown (rule 9): settle it by reading back.  Our
     * exact text there means it landed.  (The superblock's created= and
     * volume-id make a create's text unique to us.)
     */
    struct cs_buf back = CS_BUF_INIT;
    int r2 = objstore_get (v->os, CS_SUPERBLOCK_KEY, 65536, &back, &info);

    if (r2 == 0 && back.len == sb.len &&
        memcmp (back.data, sb.data, sb.len) == 0) {
      cs_debug ("write %s: the answer was lost, but it landed",
                CS_SUPERBLOCK_KEY);
      r = 0;
    }
    else if (r2 == 0 || r2 == -ENOENT)
      cs_error ("write %s: the answer was lost and it did not land: try "
                "again", CS_SUPERBLOCK_KEY);
    else
      cs_error ("write %s: the answer was lost and reading it back failed "
                "too: whether it landed is unknown; try again",
                CS_SUPERBLOCK_KEY);
    cs_buf_free (&back);
  }
  cs_buf_free (&sb);
  if (r == 0)
    memcpy (v->etag, info.etag, sizeof v->etag);
  return r;
}

static int
create_volume (struct cs_volume *v, const struct cs_volume_params *p)
{
  char s1[32];

  if (getrandom (v->volume_id, sizeof v->volume_id, 0) != sizeof v->volume_id)
    return -errno;
  v->size = p->size;
  v->chunk_size = p->chunk_size ? p->chunk_size : CS_DEFAULT_CHUNK_SIZE;
  if (check_geometry (v->size, v->chunk_size) < 0)
    return -EINVAL;
  v->level = p->compress == CS_COMPRESS_NONE ? 0
    : p->level >= 0 ? p->level : CS_DEFAULT_LEVEL;
  v->created = time (NULL);
  for (v->chunk_shift = 0; (1u << v->chunk_shift) < v->chunk_size;
       v->chunk_shift++)
    ;
  v->nchunks = (v->size + v->chunk_size - 1) >> v->chunk_shift;
  if (p->encryption != CS_ENCRYPT_NONE && p->key) {
    int r = crypt_create (v->volume_id, p->key, &v->crypt);
    if (r < 0)
      return r;
  }
  else if (p->key) {
    cs_error ("create volume: a key was given with encryption=none: drop "
              "one");
    return -EINVAL;
  }
  else if (p->encryption == CS_ENCRYPT_AES256GCM) {
    cs_error ("create volume: encryption=aes-256-gcm needs a key: give "
              "key=+FILE");
    return -EINVAL;
  }
  cs_info ("creating volume: size %s, chunk size %" PRIu32 ", %s level %d%s",
           params_format_size (v->size, s1, sizeof s1), v->chunk_size,
           v->level ? "zstd" : "no compression", v->level,
           v->crypt ? ", encrypted (aes-256-gcm)" : "");
  return write_superblock (v, NULL);
}

/* Our superblock write of text was refused (412) or its outcome is
 * unknown: is the superblock there now exactly text?  Then it was ours
 * (an earlier attempt whose answer was lost landed): adopt its etag.
 * The text is deterministic (the MAC of an encrypted one too), and the
 * volume id makes it unique to this volume.
 */
static bool
superblock_is (struct cs_volume *v, const struct cs_buf *text)
{
  struct cs_buf back = CS_BUF_INIT;
  struct objstore_info info;
  bool same;

  same = objstore_get (v->os, CS_SUPERBLOCK_KEY, SUPERBLOCK_MAX, &back,
                       &info) == 0 &&
    back.len == text->len && memcmp (back.data, text->data, text->len) == 0;
  if (same)
    memcpy (v->etag, info.etag, sizeof v->etag);
  cs_buf_free (&back);
  return same;
}

int
cs_volume_grow (struct cs_volume *v, uint64_t new_size)
{
  uint64_t old = v->size, old_n = v->nchunks, new_n;
  struct cs_volume next;
  struct cs_buf text = CS_BUF_INIT;
  char s1[32], s2[32];
  int r;

  if (new_size == old)
    return 0;
  if (new_size < old) {
    cs_error ("size=%" PRIu64 " is smaller than the volume (%" PRIu64 " "
              "bytes): shrinking would destroy data at the end of the disk; "
              "leave size= out or give at least the current size",
              new_size, old);
    return -EINVAL;
  }
  if (new_size % CS_SIZE_ALIGN || new_size > CS_MAX_SIZE) {
    cs_error ("size=%" PRIu64 ": a volume's size is a multiple of %d bytes, "
              "at most 1 EiB", new_size, CS_SIZE_ALIGN);
    return -EINVAL;
  }
  if (check_geometry (new_size, v->chunk_size) < 0)
    return -EINVAL;
  new_n = (new_size + v->chunk_size - 1) >> v->chunk_shift;

  /* The map first: it must cover the new chunks before anyone can be told
   * the new size.  The bits beyond the old end are clear (nothing sets
   * them; clear them anyway, the map is untrusted only in its use), so
   * the new space reads as zeroes.  Readers of the old range go on
   * undisturbed: the map does not move (map_resize).
   */
  r = map_resize (v, new_n);
  if (r < 0)
    return r;
  if (old_n % 64)
    __atomic_and_fetch (&v->map[old_n / 64],
                        (UINT64_C (1) << (old_n % 64)) - 1, __ATOMIC_RELEASE);
  for (uint64_t w = (old_n + 63) / 64; w < (new_n + 63) / 64; ++w)
    __atomic_store_n (&v->map[w], 0, __ATOMIC_RELEASE);

  /* The superblock is written from a copy, so that v keeps saying the old
   * size until the store has the new one: a volume is never served larger
   * than its superblock says.
   */
  next = *v;
  next.size = new_size;
  next.nchunks = new_n;
  r = cs_superblock_format (&next, &text);
  if (r == 0)
    r = write_superblock (&next, v->etag);
  if (r == 0)
    memcpy (v->etag, next.etag, sizeof v->etag);
  else if ((r == -EEXIST || r == -ETIMEDOUT || r == -EIO) &&
           superblock_is (v, &text)) {
    cs_debug ("grow volume: the superblock already says %" PRIu64 " (an "
              "earlier attempt landed)", new_size);
    r = 0;
  }
  cs_buf_free (&text);
  if (r < 0) {
    if (r == -EEXIST)
      cs_error ("grow volume: the superblock changed while we grew it: "
                "is another process using this volume?");
    return r == -EEXIST ? -EBUSY : r;
  }
  /* Publish: nchunks before size, so that whoever sees the new size sees
   * the chunks that cover it.
   */
  __atomic_store_n (&v->nchunks, new_n, __ATOMIC_RELEASE);
  __atomic_store_n (&v->size, new_size, __ATOMIC_RELEASE);
  cs_info ("volume grown from %s to %s",
           params_format_size (old, s1, sizeof s1),
           params_format_size (new_size, s2, sizeof s2));
  return 0;
}

int
cs_volume_check_key (struct cs_volume *v, const struct cs_user_key *k,
                     bool no_key_ok, const void *text, size_t len)
{
  if (v->crypt == NULL) {
    /* A key says the user expects encryption: a superblock without it may
     * be an attacker's way of turning it off.
     */
    if (k) {
      cs_error ("open volume: a key was given (%s) but the volume is not "
                "encrypted: refused, in case its superblock was replaced "
                "to turn encryption off; leave the key out only if this "
                "volume was created without one", k->source);
      return -EACCES;
    }
    return 0;
  }
  if (k == NULL) {
    if (no_key_ok)
      return 0;
    cs_error ("open volume: the volume is encrypted (aes-256-gcm, kdf %s): "
              "give its key with key=+FILE, key=- (stdin) or key=-FD",
              v->crypt->kdf == CRYPT_KDF_SCRYPT ? "scrypt" : "none");
    return -EACCES;
  }
  return crypt_unlock (v->crypt, v->volume_id, k, text,
                       v->crypt->mac_offset <= len ? v->crypt->mac_offset
                       : len);
}

int
cs_volume_rekey (struct cs_volume *v, const struct cs_user_key *k)
{
  struct cs_crypt old;
  int r;

  if (v->crypt == NULL || v->crypt->keys == NULL) {
    cs_error ("rekey: %s", v->crypt ? "the current key is needed"
              : "the volume is not encrypted (encryption is chosen when "
              "it is created)");
    return -EINVAL;
  }
  old = *v->crypt;
  r = crypt_rewrap (v->crypt, v->volume_id, k);
  if (r == 0)
    r = write_superblock (v, v->etag);
  if (r < 0) {
    if (r == -EEXIST)
      cs_error ("rekey: the superblock changed while we rewrote it: is "
                "another process using this volume?");
    *v->crypt = old;
    OPENSSL_cleanse (&old, sizeof old);
    return r == -EEXIST ? -EBUSY : r;
  }
  OPENSSL_cleanse (&old, sizeof old);
  return 0;
}

int
cs_volume_open (struct objstore *os, const struct cs_volume_params *p,
                struct cs_volume **out)
{
  struct cs_volume *v;
  struct cs_buf sb = CS_BUF_INIT;
  struct objstore_info info;
  int r, tries;

  v = calloc (1, sizeof *v);
  if (v == NULL)
    return -ENOMEM;
  v->os = os;

  /* Two processes creating the same volume at once: create-if-absent lets
   * one win; the other reads what the winner wrote.
   */
  for (tries = 0; tries < 3; ++tries) {
    r = objstore_get (os, CS_SUPERBLOCK_KEY, SUPERBLOCK_MAX, &sb, &info);
    if (r == -ENOENT) {
      if (p->size == 0) {
        cs_error ("open volume: no volume here (no %s object): "
                  "give size= to create one", CS_SUPERBLOCK_KEY);
        break;
      }
      if (p->readonly) {
        cs_error ("open volume: no volume here, and a read-only open "
                  "cannot create one");
        break;
      }
      r = create_volume (v, p);
      if (r == -EEXIST)
        continue;
      break;
    }
    if (r < 0)
      break;
    if (p->create_only) {
      cs_error ("create volume: a volume exists here already");
      r = -EEXIST;
      break;
    }
    memcpy (v->etag, info.etag, sizeof v->etag);
    r = cs_superblock_parse (CS_SUPERBLOCK_KEY, sb.data, sb.len, v);
    if (r < 0)
      break;
    r = cs_volume_check_key (v, p->key, false, sb.data, sb.len);
    if (r < 0)
      break;
    if (p->encryption != CS_ENCRYPT_UNSET &&
        (p->encryption == CS_ENCRYPT_AES256GCM) != (v->crypt != NULL)) {
      cs_error ("encryption=%s differs from the volume's (%s), fixed when "
                "it was created: leave encryption= out",
                p->encryption == CS_ENCRYPT_NONE ? "none" : "aes-256-gcm",
                v->crypt ? "aes-256-gcm" : "none");
      r = -EINVAL;
    }
    else if (p->chunk_size && p->chunk_size != v->chunk_size) {
      cs_error ("chunk-size=%" PRIu32 " differs from the volume's chunk size "
                "%" PRIu32 ", fixed when it was created: leave chunk-size= "
                "out", p->chunk_size, v->chunk_size);
      r = -EINVAL;
    }
    else if (p->compress != CS_COMPRESS_UNSET &&
             (p->compress == CS_COMPRESS_ZSTD) != (v->level > 0)) {
      cs_error ("compression=%s differs from the volume's compression "
                "(%s), fixed when it was created: leave compression= out",
                p->compress == CS_COMPRESS_ZSTD ? "zstd" : "none",
                v->level ? "zstd" : "none");
      r = -EINVAL;
    }
    else if (p->level >= 0 && p->level != v->level) {
      cs_error ("compression level %d differs from the volume's level %d, "
                "fixed when it was created: leave the compression "
                "parameters out", p->level, v->level);
      r = -EINVAL;
    }
    else if (p->size && p->size < v->size) {
      r = cs_volume_grow (v, p->size);  /* refuses with the reason */
    }
    break;
  }
  cs_buf_free (&sb);
  if (r == 0)
    r = map_resize (v, v->nchunks);      /* fresh pages: all clear */
  if (r == 0 && p->size > v->size) {
    if (p->readonly) {
      cs_error ("size=%" PRIu64 " would grow the volume, which a read-only "
                "open cannot do", p->size);
      r = -EINVAL;
    }
    else
      r = cs_volume_grow (v, p->size);
  }
  if (r < 0) {
    cs_volume_close (v);
    return r;
  }
  *out = v;
  return 0;
}

void
cs_volume_close (struct cs_volume *v)
{
  if (v) {
    if (v->map)
      munmap (v->map, MAP_RESERVE_BYTES);
    crypt_free (v->crypt);
    free (v);
  }
}

/* ---------------------------------------------------------------- chunks */

void
cs_chunk_key (uint64_t idx, char *buf, size_t len)
{
  snprintf (buf, len, CS_CHUNK_PREFIX "%016" PRIx64, idx);
}

bool
cs_chunk_key_parse (const char *key, uint64_t *idx)
{
  const size_t plen = sizeof CS_CHUNK_PREFIX - 1;
  uint64_t v = 0;
  int i;

  if (strncmp (key, CS_CHUNK_PREFIX, plen) != 0 || strlen (key) != plen + 16)
    return false;
  for (i = 0; i < 16; ++i) {
    int d = hexval (key[plen + i]);
    if (d < 0)
      return false;
    v = v << 4 | d;
  }
  *idx = v;
  return true;
}

bool
cs_is_zero (const void *p, size_t n)
{
  const unsigned char *b = p;

  /* Check the first 16 bytes, then compare the buffer with itself shifted
   * by 16: memcmp is vectorised and this touches each byte twice at most.
   */
  if (n <= 16) {
    for (size_t i = 0; i < n; ++i)
      if (b[i])
        return false;
    return true;
  }
  for (size_t i = 0; i < 16; ++i)
    if (b[i])
      return false;
  return memcmp (b, b + 16, n - 16) == 0;
}

int
cs_chunk_read (struct cs_volume *v, struct codec_ctx *ctx, uint64_t idx,
               void *plain, struct cs_buf *scratch)
{
  char key[32];
  int r;

  if (!cs_map_test (v, idx)) {
    memset (plain, 0, v->chunk_size);
    return 0;
  }
  cs_chunk_key (idx, key, sizeof key);
  r = objstore_get (v->os, key, codec_bound (v->chunk_size), scratch, NULL);
  if (r == -ENOENT) {
    memset (plain, 0, v->chunk_size);
    return 0;
  }
  if (r == -EFBIG)
    return -EIO;                /* larger than any chunk: not one (logged) */
  if (r < 0)
    return r;
  if (v->crypt && v->crypt->keys == NULL) {
    cs_error ("read %s: the volume is encrypted and no key was given", key);
    return -EACCES;
  }
  return codec_decode (ctx, crypt_codec_key (v->crypt), v->volume_id, idx,
                       key, scratch->data, scratch->len, plain,
                       v->chunk_size);
}

int
cs_chunk_write (struct cs_volume *v, struct codec_ctx *ctx, uint64_t idx,
                const void *plain, struct cs_buf *scratch)
{
  char key[32];
  int r;

  if (cs_is_zero (plain, v->chunk_size))
    return cs_chunk_delete_many (v, &idx, 1);
  cs_chunk_key (idx, key, sizeof key);
  if (v->crypt && v->crypt->keys == NULL) {
    cs_error ("write %s: the volume is encrypted and no key was given", key);
    return -EACCES;
  }
  r = codec_encode (ctx, crypt_codec_key (v->crypt), v->volume_id, idx,
                    v->level, plain, v->chunk_size, scratch);
  if (r < 0)
    return r;
  /* Maybe present from the moment the PUT may be sent (rule 8): if its
   * outcome is never known (a lost answer, then failures), a later zero or
   * trim of the chunk must still delete it.  Only a confirmed delete
   * clears the bit.
   */
  if (v->map)
    cs_map_set (v, idx, true);
  return objstore_put (v->os, key, scratch->data, scratch->len, NULL);
}

int
cs_chunk_delete_many (struct cs_volume *v, const uint64_t *idx, size_t n)
{
  CLEANUP_FREE char *keybuf = NULL;
  CLEANUP_FREE const char **keys = NULL;
  size_t i, m = 0;
  int r;

  keybuf = malloc (n * 32);
  keys = malloc (n * sizeof *keys);
  if (keybuf == NULL || keys == NULL)
    return -ENOMEM;
  for (i = 0; i < n; ++i) {
    if (!cs_map_test (v, idx[i]))
      continue;                 /* no object: nothing to delete */
    cs_chunk_key (idx[i], keybuf + 32 * m, 32);
    keys[m] = keybuf + 32 * m;
    m++;
  }
  r = objstore_del_many (v->os, keys, m);
  if (r == 0 && v->map)
    for (i = 0; i < n; ++i)
      cs_map_set (v, idx[i], false);
  return r;
}
