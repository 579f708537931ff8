/* s3chunk: client-side encryption: keys, KDFs, the wrapped volume key and
 * the superblock MAC (crypt.h says how they fit together).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "crypt.h"
#include "log.h"

/* ------------------------------------------------------- locked memory */

static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static struct crypt_secret *secrets;

struct crypt_secret *
crypt_secret_new (size_t len)
{
  long page = sysconf (_SC_PAGESIZE);
  size_t map_len = (sizeof (struct crypt_secret) + len + page - 1)
    / page * page;
  struct crypt_secret *s;

  s = mmap (NULL, map_len, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED)
    return NULL;
  /* Keep it out of swap and core dumps where the system lets us: an
   * unprivileged process may have a small RLIMIT_MEMLOCK, so a refusal is
   * only worth a debug line.
   */
  if (mlock (s, map_len) < 0)
    cs_debug ("key memory: mlock: %s (the key may be swapped out)",
              strerror (errno));
#ifdef MADV_DONTDUMP
  madvise (s, map_len, MADV_DONTDUMP);
#endif
  s->len = len;
  s->map_len = map_len;
  pthread_mutex_lock (&secrets_lock);
  s->next = secrets;
  secrets = s;
  pthread_mutex_unlock (&secrets_lock);
  return s;
}

void
crypt_secret_free (struct crypt_secret *s)
{
  struct crypt_secret **pp;

  if (s == NULL)
    return;
  pthread_mutex_lock (&secrets_lock);
  for (pp = &secrets; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  pthread_mutex_unlock (&secrets_lock);
  OPENSSL_cleanse (s->data, s->len);
  munlock (s, s->map_len);
  munmap (s, s->map_len);
}

void
crypt_relock (void)
{
  struct crypt_secret *s;

  pthread_mutex_lock (&secrets_lock);
  for (s = secrets; s; s = s->next)
    if (mlock (s, s->map_len) < 0)
      cs_debug ("key memory: mlock after fork: %s", strerror (errno));
  pthread_mutex_unlock (&secrets_lock);
}

/* ---------------------------------------------------------------- hex */

void
crypt_hex (const uint8_t *p, size_t n, char *out)
{
  static const char digits[] = "0123456789abcdef";

  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int
crypt_unhex (const char *s, uint8_t *out, size_t n)
{
  if (strlen (s) != 2 * n)
    return -EINVAL;
  for (size_t i = 0; i < n; ++i) {
    int hi = hexval (s[2 * i]), lo = hexval (s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    out[i] = hi << 4 | lo;
  }
  return 0;
}

/* ----------------------------------------------------------- user key */

/* Read fd into s->data (at most CRYPT_MAX_KEY_FILE bytes); s->len is set
 * to what was read.
 */
static int
read_all (int fd, struct crypt_secret *s)
{
  size_t len = 0;

  for (;;) {
    ssize_t n = read (fd, s->data + len, CRYPT_MAX_KEY_FILE + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;
    len += n;
    if (len > CRYPT_MAX_KEY_FILE)
      return -EFBIG;
  }
  s->len = len;
  return 0;
}

/* One line from the terminal with echo off, or all of stdin otherwise. */
static int
read_stdin (struct crypt_secret *s)
{
  struct termios old, quiet;
  bool tty = isatty (STDIN_FILENO) && tcgetattr (STDIN_FILENO, &old) == 0;
  size_t len = 0;
  int r = 0;

  if (!tty)
    return read_all (STDIN_FILENO, s);
  fprintf (stderr, "s3chunk key: ");
  fflush (stderr);
  quiet = old;
  quiet.c_lflag &= ~ECHO;
  tcsetattr (STDIN_FILENO, TCSAFLUSH, &quiet);
  for (;;) {
    char c;
    ssize_t n = read (STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || c == '\n')
      break;
    if (len == CRYPT_MAX_KEY_FILE) {
      r = -EFBIG;
      break;
    }
    s->data[len++] = c;
  }
  tcsetattr (STDIN_FILENO, TCSAFLUSH, &old);
  fputc ('\n', stderr);
  s->len = len;
  return r;
}

int
crypt_key_read (const char *param, const char *value,
                struct cs_user_key *out)
{
  struct crypt_secret *s;
  const char *how;
  int r, fd = -1;

  if (value[0] != '+' && value[0] != '-') {
    /* Do not echo it: it is the secret. */
    cs_error ("%s=...: refused: a key on the command line can be read by "
              "other users (ps, /proc) and is printed by nbdkit -v: put it "
              "in a file readable only by you and give %s=+FILE, or %s=- "
              "to read it from stdin, or %s=-FD for an open file "
              "descriptor", param, param, param, param);
    return -EINVAL;
  }
  if (value[0] == '-' && value[1] != '\0' &&
      strspn (value + 1, "0123456789") != strlen (value + 1)) {
    cs_error ("%s=%s: invalid value: expected +FILE, - (stdin) or -FD "
              "(a file descriptor number)", param, value);
    return -EINVAL;
  }
  /* The secret's buffer is one byte larger than the largest key file. */
  s = crypt_secret_new (CRYPT_MAX_KEY_FILE + 1);
  if (s == NULL)
    return -ENOMEM;
  if (value[0] == '+') {
    how = "read the key file";
    fd = open (value + 1, O_RDONLY | O_CLOEXEC);
    r = fd < 0 ? -errno : read_all (fd, s);
    if (fd >= 0)
      close (fd);
  }
  else if (value[1] == '\0') {
    how = "read the key from stdin";
    r = read_stdin (s);
  }
  else {
    how = "read the key from the file descriptor";
    fd = atoi (value + 1);
    r = read_all (fd, s);
    close (fd);
  }
  if (r == -EFBIG)
    cs_error ("%s=%s: the key is larger than %d bytes: expected a "
              "passphrase or a 32-byte key", param, value,
              CRYPT_MAX_KEY_FILE);
  else if (r < 0)
    cs_error ("%s=%s: %s: %s", param, value, how, strerror (-r));
  if (r == 0) {
    /* One trailing newline is the file's, not the key's. */
    if (s->len > 0 && s->data[s->len - 1] == '\n')
      s->len--;
    if (s->len > 0 && s->data[s->len - 1] == '\r')
      s->len--;
    if (s->len == 0) {
      cs_error ("%s=%s: the key is empty", param, value);
      r = -EINVAL;
    }
  }
  if (r < 0) {
    s->len = CRYPT_MAX_KEY_FILE + 1;    /* wipe all of it */
    crypt_secret_free (s);
    return r == -EFBIG ? -EINVAL : r;
  }
  crypt_secret_free (out->material);
  out->material = s;
  snprintf (out->source, sizeof out->source, "%s=%s", param, value);
  return 0;
}

void
crypt_key_free (struct cs_user_key *k)
{
  if (k->material) {
    k->material->len = CRYPT_MAX_KEY_FILE + 1;
    crypt_secret_free (k->material);
  }
  k->material = NULL;
}

int
crypt_key_format_parse (const char *param, const char *value,
                        enum crypt_key_format *out)
{
  if (strcmp (value, "passphrase") == 0)
    *out = CRYPT_FORMAT_PASSPHRASE;
  else if (strcmp (value, "raw") == 0)
    *out = CRYPT_FORMAT_RAW;
  else {
    cs_error ("%s=%s: invalid value: expected passphrase (stretched with "
              "scrypt) or raw (exactly 32 bytes, or 64 hex digits)",
              param, value);
    return -EINVAL;
  }
  return 0;
}

/* ---------------------------------------------------------- primitives */

int
crypt_scrypt (const void *pass, size_t pass_len, const void *salt,
              size_t salt_len, uint64_t n, uint32_t r, uint32_t p,
              uint8_t *out, size_t len)
{
  /* Room for scrypt's V (128 r N) and B (128 r p), plus slack. */
  uint64_t mem = 128 * (uint64_t) r * (n + p + 2) + (1 << 20);

  if (EVP_PBE_scrypt (pass_len ? pass : "", pass_len, salt, salt_len,
                      n, r, p, mem, out, len) != 1) {
    cs_error ("scrypt (N=%llu, r=%u, p=%u): failed (out of memory?)",
              (unsigned long long) n, r, p);
    return -ENOMEM;
  }
  return 0;
}

int
crypt_hkdf (const uint8_t *ikm, size_t ikm_len, const void *salt,
            size_t salt_len, const void *info, size_t info_len,
            uint8_t *out, size_t len)
{
  EVP_KDF *kdf = EVP_KDF_fetch (NULL, "HKDF", NULL);
  EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new (kdf) : NULL;
  OSSL_PARAM params[5], *q = params;
  int ok = 0;

  if (kctx) {
    *q++ = OSSL_PARAM_construct_utf8_string (OSSL_KDF_PARAM_DIGEST,
                                             (char *) "SHA256", 0);
    *q++ = OSSL_PARAM_construct_octet_string (OSSL_KDF_PARAM_KEY,
                                              (void *) ikm, ikm_len);
    *q++ = OSSL_PARAM_construct_octet_string (OSSL_KDF_PARAM_SALT,
                                              (void *) salt, salt_len);
    *q++ = OSSL_PARAM_construct_octet_string (OSSL_KDF_PARAM_INFO,
                                              (void *) info, info_len);
    *q = OSSL_PARAM_construct_end ();
    ok = EVP_KDF_derive (kctx, out, len, params) == 1;
  }
  EVP_KDF_CTX_free (kctx);
  EVP_KDF_free (kdf);
  if (!ok) {
    cs_error ("HKDF-SHA256: failed in OpenSSL");
    return -EIO;
  }
  return 0;
}

int
crypt_hmac_sha256 (const uint8_t *key, size_t key_len, const void *data,
                   size_t len, uint8_t out[CRYPT_MAC_SIZE])
{
  size_t n = 0;

  if (EVP_Q_mac (NULL, "HMAC", NULL, "SHA256", NULL, key, key_len,
                 data, len, out, CRYPT_MAC_SIZE, &n) == NULL ||
      n != CRYPT_MAC_SIZE) {
    cs_error ("HMAC-SHA256: failed in OpenSSL");
    return -EIO;
  }
  return 0;
}

/* One-shot AES-256-GCM for the key wrap.  open: returns -EBADMSG when the
 * tag does not match.
 */
static int
gcm (bool seal, const uint8_t key[CRYPT_KEY_SIZE],
     const uint8_t iv[CRYPT_WRAP_IV_SIZE], const void *aad, size_t aad_len,
     const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[CRYPT_TAG_SIZE])
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new ();
  int n, ok;

  if (c == NULL)
    return -ENOMEM;
  ok = EVP_CipherInit_ex (c, EVP_aes_256_gcm (), NULL, key, iv, seal) == 1
    && EVP_CipherUpdate (c, NULL, &n, aad, aad_len) == 1
    && EVP_CipherUpdate (c, out, &n, in, len) == 1;
  if (ok && !seal)
    ok = EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_TAG, CRYPT_TAG_SIZE,
                              tag) == 1;
  if (ok) {
    if (EVP_CipherFinal_ex (c, out + len, &n) != 1) {
      EVP_CIPHER_CTX_free (c);
      if (seal)
        return -EIO;
      OPENSSL_cleanse (out, len);
      return -EBADMSG;
    }
  }
  if (ok && seal)
    ok = EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_GET_TAG, CRYPT_TAG_SIZE,
                              tag) == 1;
  EVP_CIPHER_CTX_free (c);
  return ok ? 0 : -EIO;
}

/* ----------------------------------------------------------- the keys */

/* What c->keys holds. */
struct keyset {
  uint8_t vk[CRYPT_KEY_SIZE];           /* the volume key */
  uint8_t mac_key[CRYPT_KEY_SIZE];      /* superblock MAC */
  struct codec_key data;                /* chunk objects */
};

/* Derived from the user's key, short-lived. */
struct kek {
  uint8_t kek[CRYPT_KEY_SIZE];
  uint8_t wrap[CRYPT_KEY_SIZE];
  uint8_t check[CRYPT_KEY_SIZE];
};

static const char wrap_aad[] = "s3chunk volume key";

const struct codec_key *
crypt_codec_key (const struct cs_crypt *c)
{
  return c && c->keys ? &((const struct keyset *) c->keys->data)->data
    : NULL;
}

/* The user's key to its KEK and the keys derived from it.  The rule that
 * tells a raw key from a passphrase is the superblock's kdf field: kdf=none
 * takes exactly 32 bytes, or 64 hex digits; kdf=scrypt any bytes.
 */
static int
derive_kek (const struct cs_crypt *c,
            const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
            const struct cs_user_key *k, struct kek *out)
{
  const struct crypt_secret *m = k->material;
  int r;

  if (c->kdf == CRYPT_KDF_NONE) {
    if (m->len == CRYPT_KEY_SIZE)
      memcpy (out->kek, m->data, CRYPT_KEY_SIZE);
    else {
      char hex[2 * CRYPT_KEY_SIZE + 1];
      if (m->len == 2 * CRYPT_KEY_SIZE)
        memcpy (hex, m->data, m->len);
      hex[m->len == 2 * CRYPT_KEY_SIZE ? m->len : 0] = '\0';
      r = crypt_unhex (hex, out->kek, CRYPT_KEY_SIZE);
      OPENSSL_cleanse (hex, sizeof hex);
      if (r < 0) {
        cs_error ("%s: a raw key (key-format=raw, kdf=none) is exactly 32 "
                  "bytes or 64 hex digits; this one is %zu bytes: give the "
                  "key file the volume was created with", k->source, m->len);
        return -EINVAL;
      }
    }
  }
  else {
    r = crypt_scrypt (m->data, m->len, c->salt, sizeof c->salt, c->scrypt_n,
                      c->scrypt_r, c->scrypt_p, out->kek, CRYPT_KEY_SIZE);
    if (r < 0)
      return r;
  }
  r = crypt_hkdf (out->kek, CRYPT_KEY_SIZE, volume_id, CODEC_VOLUME_ID_SIZE,
                  "s3chunk key wrap", 16, out->wrap, CRYPT_KEY_SIZE);
  if (r == 0)
    r = crypt_hkdf (out->kek, CRYPT_KEY_SIZE, volume_id, CODEC_VOLUME_ID_SIZE,
                    "s3chunk key check", 17, out->check, CRYPT_KEY_SIZE);
  return r;
}

/* From the volume key in ks->vk, the MAC and data keys. */
static int
derive_volume_keys (struct keyset *ks,
                    const uint8_t volume_id[CODEC_VOLUME_ID_SIZE])
{
  static uint64_t serial;
  int r;

  r = crypt_hkdf (ks->vk, CRYPT_KEY_SIZE, volume_id, CODEC_VOLUME_ID_SIZE,
                  "s3chunk superblock mac", 22, ks->mac_key, CRYPT_KEY_SIZE);
  if (r == 0)
    r = crypt_hkdf (ks->vk, CRYPT_KEY_SIZE, volume_id, CODEC_VOLUME_ID_SIZE,
                    "s3chunk chunk data", 18, ks->data.key, CRYPT_KEY_SIZE);
  ks->data.serial = __atomic_add_fetch (&serial, 1, __ATOMIC_RELAXED);
  return r;
}

/* Wrap ks->vk for c with k: new salt (scrypt), new IV, new key-check. */
static int
wrap (struct cs_crypt *c, const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
      const struct cs_user_key *k, const struct keyset *ks)
{
  struct crypt_secret *s = crypt_secret_new (sizeof (struct kek));
  struct kek *kk;
  int r;

  if (s == NULL)
    return -ENOMEM;
  kk = (struct kek *) s->data;
  c->kdf = k->format == CRYPT_FORMAT_RAW ? CRYPT_KDF_NONE : CRYPT_KDF_SCRYPT;
  if (c->kdf == CRYPT_KDF_SCRYPT) {
    c->scrypt_n = CRYPT_SCRYPT_N_DEFAULT;
    c->scrypt_r = CRYPT_SCRYPT_R;
    c->scrypt_p = CRYPT_SCRYPT_P;
    if (RAND_bytes (c->salt, sizeof c->salt) != 1) {
      r = -EIO;
      goto out;
    }
  }
  else {
    memset (c->salt, 0, sizeof c->salt);
    c->scrypt_n = c->scrypt_r = c->scrypt_p = 0;
  }
  r = derive_kek (c, volume_id, k, kk);
  if (r < 0)
    goto out;
  memcpy (c->key_check, kk->check, CRYPT_CHECK_SIZE);
  if (RAND_bytes (c->wrapped, CRYPT_WRAP_IV_SIZE) != 1) {
    r = -EIO;
    goto out;
  }
  r = gcm (true, kk->wrap, c->wrapped, wrap_aad, sizeof wrap_aad - 1,
           ks->vk, CRYPT_KEY_SIZE, c->wrapped + CRYPT_WRAP_IV_SIZE,
           c->wrapped + CRYPT_WRAP_IV_SIZE + CRYPT_KEY_SIZE);
 out:
  if (r == -EIO)
    cs_error ("wrap the volume key: OpenSSL failed");
  crypt_secret_free (s);
  return r;
}

int
crypt_create (const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              const struct cs_user_key *k, struct cs_crypt **out)
{
  struct cs_crypt *c = calloc (1, sizeof *c);
  struct keyset *ks;
  int r;

  if (c == NULL || (c->keys = crypt_secret_new (sizeof *ks)) == NULL) {
    free (c);
    return -ENOMEM;
  }
  ks = (struct keyset *) c->keys->data;
  if (RAND_bytes (ks->vk, sizeof ks->vk) != 1) {
    cs_error ("create the volume key: RAND_bytes failed");
    crypt_free (c);
    return -EIO;
  }
  r = derive_volume_keys (ks, volume_id);
  if (r == 0)
    r = wrap (c, volume_id, k, ks);
  if (r < 0) {
    crypt_free (c);
    return r;
  }
  *out = c;
  return 0;
}

int
crypt_rewrap (struct cs_crypt *c,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              const struct cs_user_key *k)
{
  struct cs_crypt n = *c;
  int r;

  if (c->keys == NULL)
    return -EACCES;
  r = wrap (&n, volume_id, k, (const struct keyset *) c->keys->data);
  if (r == 0)
    *c = n;
  return r;
}

int
crypt_unlock (struct cs_crypt *c,
              const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
              const struct cs_user_key *k, const void *text, size_t text_len)
{
  struct crypt_secret *s = crypt_secret_new (sizeof (struct kek));
  struct crypt_secret *keys = crypt_secret_new (sizeof (struct keyset));
  struct keyset *ks;
  struct kek *kk;
  uint8_t mac[CRYPT_MAC_SIZE];
  int r;

  if (s == NULL || keys == NULL) {
    crypt_secret_free (s);
    crypt_secret_free (keys);
    return -ENOMEM;
  }
  kk = (struct kek *) s->data;
  ks = (struct keyset *) keys->data;
  if (k->format != CRYPT_FORMAT_UNSET &&
      (k->format == CRYPT_FORMAT_RAW) != (c->kdf == CRYPT_KDF_NONE)) {
    cs_error ("open volume: key-format=%s, but the volume was created with "
              "a %s: leave key-format= out (the superblock says which)",
              k->format == CRYPT_FORMAT_RAW ? "raw" : "passphrase",
              c->kdf == CRYPT_KDF_NONE ? "raw key" : "passphrase");
    r = -EINVAL;
    goto out;
  }
  r = derive_kek (c, volume_id, k, kk);
  if (r < 0)
    goto out;
  if (CRYPTO_memcmp (kk->check, c->key_check, CRYPT_CHECK_SIZE) != 0) {
    cs_error ("open volume: wrong key: %s does not match this volume's "
              "key-check value: give the key the volume was created (or "
              "last rekeyed) with", k->source);
    r = -EACCES;
    goto out;
  }
  r = gcm (false, kk->wrap, c->wrapped, wrap_aad, sizeof wrap_aad - 1,
           c->wrapped + CRYPT_WRAP_IV_SIZE, CRYPT_KEY_SIZE, ks->vk,
           c->wrapped + CRYPT_WRAP_IV_SIZE + CRYPT_KEY_SIZE);
  if (r == -EBADMSG) {
    cs_error ("open volume: superblock: the wrapped volume key fails "
              "authentication although %s passes the key check: the "
              "superblock was altered; restore it from a backup", k->source);
    r = -EIO;
    goto out;
  }
  if (r == 0)
    r = derive_volume_keys (ks, volume_id);
  if (r == 0)
    r = crypt_hmac_sha256 (ks->mac_key, CRYPT_KEY_SIZE, text, text_len, mac);
  if (r == 0 && CRYPTO_memcmp (mac, c->mac, CRYPT_MAC_SIZE) != 0) {
    cs_error ("open volume: superblock fails authentication (its MAC "
              "does not match): it was altered (geometry, encryption or "
              "key fields); restore it from a backup");
    r = -EIO;
  }
 out:
  crypt_secret_free (s);
  if (r < 0)
    crypt_secret_free (keys);
  else {
    crypt_secret_free (c->keys);
    c->keys = keys;
  }
  return r;
}

int
crypt_superblock_mac (const struct cs_crypt *c, const void *text,
                      size_t len, uint8_t mac[CRYPT_MAC_SIZE])
{
  if (c->keys == NULL)
    return -EACCES;
  return crypt_hmac_sha256 (((const struct keyset *) c->keys->data)->mac_key,
                            CRYPT_KEY_SIZE, text, len, mac);
}

void
crypt_free (struct cs_crypt *c)
{
  if (c) {
    crypt_secret_free (c->keys);
    OPENSSL_cleanse (c, sizeof *c);
    free (c);
  }
}
