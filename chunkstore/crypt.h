/* s3chunk: client-side encryption: the user's key, the volume key, the
 * key derivations and the superblock's MAC (docs/FORMAT.md, "Encryption").
 * The per-object AEAD is in codec.c; everything here is OpenSSL.
 *
 * Key hierarchy:
 *   user key (passphrase --scrypt--> KEK, or a raw 32-byte KEK)
 *     HKDF-SHA256(KEK, salt = volume id, "s3chunk key wrap")  -> wrap key
 *     HKDF-SHA256(KEK, salt = volume id, "s3chunk key check") -> key-check
 *   volume key (32 random bytes, AES-256-GCM-wrapped by the wrap key)
 *     HKDF-SHA256(VK, salt = volume id, "s3chunk superblock mac") -> MAC key
 *     HKDF-SHA256(VK, salt = volume id, "s3chunk chunk data")     -> data key
 * Rekeying rewraps the same volume key, so chunk objects stay as they are.
 *
 * Secrets live in locked, non-dumpable memory (crypt_secret) and are wiped
 * with OPENSSL_cleanse when freed.  Nothing here logs key material.
 */
#ifndef S3CHUNK_CRYPT_H
#define S3CHUNK_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define CRYPT_KEY_SIZE 32
#define CRYPT_SALT_SIZE 16
#define CRYPT_CHECK_SIZE 16
#define CRYPT_WRAP_IV_SIZE 12
#define CRYPT_TAG_SIZE 16
#define CRYPT_WRAPPED_SIZE (CRYPT_WRAP_IV_SIZE + CRYPT_KEY_SIZE + CRYPT_TAG_SIZE)
#define CRYPT_MAC_SIZE 32
#define CRYPT_MAX_KEY_FILE 4096

/* scrypt cost: the default and the bounds a superblock may name (a larger
 * N would let a forged superblock make every start take gigabytes).
 * N = 2^17, r = 8: 128 MiB and about half a second, once per start.
 */
#define CRYPT_SCRYPT_N_DEFAULT (UINT64_C (1) << 17)
#define CRYPT_SCRYPT_N_MIN (UINT64_C (1) << 14)
#define CRYPT_SCRYPT_N_MAX (UINT64_C (1) << 20)
#define CRYPT_SCRYPT_R 8
#define CRYPT_SCRYPT_R_MAX 32
#define CRYPT_SCRYPT_P 1
#define CRYPT_SCRYPT_P_MAX 16
#define CRYPT_SCRYPT_MAXMEM (UINT64_C (1) << 31)

/* Locked memory for one secret (len bytes of data). */
struct crypt_secret {
  size_t len;
  size_t map_len;
  struct crypt_secret *next;    /* all live secrets, for crypt_relock */
  uint8_t data[];
};
extern struct crypt_secret *crypt_secret_new (size_t len);
extern void crypt_secret_free (struct crypt_secret *s);

/* mlock every live secret again: locks are not inherited across fork. */
extern void crypt_relock (void);

enum crypt_key_format {
  CRYPT_FORMAT_UNSET = 0,       /* follow the superblock (passphrase at
                                   creation) */
  CRYPT_FORMAT_PASSPHRASE,
  CRYPT_FORMAT_RAW,
};

/* The user's key as given: where it came from and its bytes. */
struct cs_user_key {
  enum crypt_key_format format;
  char source[256];             /* "key=+/etc/k" for messages, never bytes */
  struct crypt_secret *material;
};

/* Read a key given as param=VALUE: +FILE, -FD or - (stdin; not echoed
 * on a terminal).  A literal is refused (it would be seen in ps and in
 * nbdkit -v).  One trailing newline (LF or CRLF) is removed.  0, or
 * -EINVAL / -errno after logging one line (never the value itself, unless
 * it is a path).
 */
extern int crypt_key_read (const char *param, const char *value,
                           struct cs_user_key *out);
extern void crypt_key_free (struct cs_user_key *k);

/* Parse "passphrase" / "raw".  0 or -EINVAL (logged). */
extern int crypt_key_format_parse (const char *param, const char *value,
                                   enum crypt_key_format *out);

/* The volume's encryption state (NULL in struct cs_volume: no encryption). */
enum crypt_kdf { CRYPT_KDF_SCRYPT, CRYPT_KDF_NONE };
struct cs_crypt {
  enum crypt_kdf kdf;
  uint8_t salt[CRYPT_SALT_SIZE];
  uint64_t scrypt_n;
  uint32_t scrypt_r, scrypt_p;
  uint8_t key_check[CRYPT_CHECK_SIZE];
  uint8_t wrapped[CRYPT_WRAPPED_SIZE];
  uint8_t mac[CRYPT_MAC_SIZE];  /* as read (parse) */
  size_t mac_offset;            /* bytes of the superblock the MAC covers */
  /* Once unlocked (key given and checked), in locked memory: */
  struct crypt_secret *keys;    /* NULL: no key, headers only */
};

/* Pointers into c->keys. */
extern const struct codec_key *crypt_codec_key (const struct cs_crypt *c);

/* A new encryption state for a volume being created: random volume key,
 * wrapped by the user's key.  0 or -errno (logged).
 */
extern int crypt_create (const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         const struct cs_user_key *k, struct cs_crypt **out);

/* Check the user's key against c (key-check), unwrap the volume key and
 * verify the superblock's MAC over text[0..c->mac_offset).  -EACCES for a
 * wrong key, -EIO for a superblock that fails authentication (both
 * logged with what to do).
 */
extern int crypt_unlock (struct cs_crypt *c,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         const struct cs_user_key *k,
                         const void *text, size_t text_len);

/* Wrap the volume key of an unlocked c by a new user key (new salt, new
 * key-check), keeping the volume key.  0 or -errno (logged).
 */
extern int crypt_rewrap (struct cs_crypt *c,
                         const uint8_t volume_id[CODEC_VOLUME_ID_SIZE],
                         const struct cs_user_key *k);

/* The MAC of a superblock text (c unlocked). */
extern int crypt_superblock_mac (const struct cs_crypt *c, const void *text,
                                 size_t len, uint8_t mac[CRYPT_MAC_SIZE]);

extern void crypt_free (struct cs_crypt *c);

/* Primitives, exposed for the unit tests (published test vectors). */
extern int crypt_scrypt (const void *pass, size_t pass_len,
                         const void *salt, size_t salt_len, uint64_t n,
                         uint32_t r, uint32_t p, uint8_t *out, size_t len);
extern int crypt_hkdf (const uint8_t *ikm, size_t ikm_len,
                       const void *salt, size_t salt_len,
                       const void *info, size_t info_len,
                       uint8_t *out, size_t len);
extern int crypt_hmac_sha256 (const uint8_t *key, size_t key_len,
                              const void *data, size_t len,
                              uint8_t out[CRYPT_MAC_SIZE]);

/* Lower-case hex of n bytes into out (2n+1); and back (exactly 2n digits). */
extern void crypt_hex (const uint8_t *p, size_t n, char *out);
extern int crypt_unhex (const char *s, uint8_t *out, size_t n);

#endif /* S3CHUNK_CRYPT_H */
