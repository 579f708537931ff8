/* s3chunk: AWS Signature Version 4 for S3 requests (header-based, signed
 * payload), written from the AWS documentation "Authenticating Requests
 * (AWS Signature Version 4)" and "Signature Calculations for the
 * Authorization Header: Transferring Payload in a Single Chunk".
 *
 * No network and no global state: every function is a pure computation, so
 * the published example vectors test it exactly (tests/test-sigv4.c).
 * Strings returned through char ** are malloc'd; the caller frees them.
 * Functions returning int give 0 or -ENOMEM / -EINVAL.
 */
#ifndef S3CHUNK_SIGV4_H
#define S3CHUNK_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* SHA-256 of the empty string, the payload hash of a request with no body. */
#define SIGV4_EMPTY_SHA256 \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* One request header.  Names are matched case-insensitively. */
struct sigv4_header {
  const char *name;
  const char *value;
};

/* One query parameter, not encoded.  value NULL is a parameter without
 * "=" in the URL (S3's "?delete"); it signs as "name=".
 */
struct sigv4_param {
  const char *name;
  const char *value;
};

/* What is signed.  Every header in headers is signed, so it must be sent
 * exactly as given (include host, x-amz-date and x-amz-content-sha256).
 */
struct sigv4_request {
  const char *method;               /* "GET", "PUT", ... */
  const char *path;                 /* canonical URI, already encoded:
                                       sigv4_uri_encode (.., false) */
  const char *query;                /* canonical query string or "" */
  const struct sigv4_header *headers;
  size_t n_headers;
  const char *payload_hash;         /* hex SHA-256 of the body */
};

/* The signer's identity and scope. */
struct sigv4_key {
  const char *access_key;
  const char *secret_key;
  const char *region;               /* "us-east-1" */
  const char *service;              /* "s3" */
};

/* Lowercase hex SHA-256 of len bytes (out: 65 bytes with the NUL). */
extern void sigv4_sha256_hex (const void *data, size_t len, char out[65]);

/* Base64 of the MD5 of len bytes, for Content-MD5 (out: 25 bytes). */
extern void sigv4_md5_base64 (const void *data, size_t len, char out[25]);

/* "20130524T000000Z" (out: 17 bytes) from a UTC time. */
extern void sigv4_amz_date (time_t t, char out[17]);

/* URI-encode per the SigV4 rules: every byte except A-Z a-z 0-9 - . _ ~
 * becomes %XX (uppercase hex); '/' is kept unless encode_slash.
 * NULL on out of memory.
 */
extern char *sigv4_uri_encode (const char *s, bool encode_slash);

/* Build the query string from n raw parameters: names and values encoded,
 * sorted by encoded name then value.  *canonical gets the string to sign,
 * *url (if not NULL) the string to put after "?" in the URL; they differ
 * only for parameters without a value.
 */
extern int sigv4_query (const struct sigv4_param *params, size_t n,
                        char **canonical, char **url);

/* The canonical request, and the SignedHeaders list ("host;x-amz-date"). */
extern int sigv4_canonical_request (const struct sigv4_request *req,
                                    char **canonical, char **signed_headers);

/* The string to sign for a canonical request made at amz_date. */
extern int sigv4_string_to_sign (const struct sigv4_key *key,
                                 const char *amz_date,
                                 const char *canonical_request, char **out);

/* Hex HMAC of string_to_sign under the key derived for amz_date's day
 * (out: 65 bytes).
 */
extern int sigv4_signature (const struct sigv4_key *key, const char *amz_date,
                            const char *string_to_sign, char out[65]);

/* All of the above: the value of the Authorization header. */
extern int sigv4_authorization (const struct sigv4_key *key,
                                const char *amz_date,
                                const struct sigv4_request *req, char **out);

#endif /* S3CHUNK_SIGV4_H */
