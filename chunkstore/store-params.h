/* s3chunk: the parameters that name a store (dir= or bucket= and the S3
 * options), shared by the plugin and the s3chunk command so that both
 * accept the same words and refuse the same mistakes.
 */
#ifndef S3CHUNK_STORE_PARAMS_H
#define S3CHUNK_STORE_PARAMS_H

#include <stdbool.h>

#include "objstore.h"

struct store_params {
  char *dir;                    /* absolute path, or NULL */
  struct objstore_s3_params s3; /* s3.bucket != NULL selects S3; the
                                   strings are owned (malloc'd) */
};

#define STORE_PARAMS_INIT { .s3 = { .path_style = -1 } }

/* Take key=value if key names a store parameter.  Returns 1 if it does
 * not, 0 when taken, -EINVAL for a bad value (logged: the key and what is
 * accepted).  Secrets (secret-key, session-token) are taken as given: the
 * caller resolves "+FILE" or "-" first.  dir= is made absolute.
 */
extern int store_params_set (struct store_params *p, const char *key,
                             const char *value);

/* The checks once all parameters are in: exactly one store, no S3 option
 * with dir=, access and secret key together.  0 or -EINVAL (logged).
 */
extern int store_params_check (const struct store_params *p);

/* Open the store.  create: a missing directory may be created (a volume
 * is about to be made); otherwise a missing one is an error saying so.
 */
extern int store_params_open (const struct store_params *p,
                              unsigned connections, bool create,
                              struct objstore **out);

/* A one-line description ("dir /srv/v1", "s3://bucket/prefix at URL"). */
extern const char *store_params_describe (const struct store_params *p,
                                          char *buf, size_t len);

/* Is this a bucket name S3 accepts (AWS naming rules)? */
extern bool store_params_valid_bucket (const char *b);

extern void store_params_free (struct store_params *p);

/* The help lines for these parameters, shared by --help texts. */
#define STORE_PARAMS_HELP \
  "dir=PATH              Local directory holding the volume.\n" \
  "bucket=NAME           S3 bucket holding the volume.\n" \
  "prefix=PREFIX         Key prefix of the volume in the bucket.\n" \
  "endpoint=URL          S3 endpoint (default AWS for the region).\n" \
  "region=REGION         Signing region (default $AWS_REGION or us-east-1).\n" \
  "access-key=ID         Access key (default: environment, ~/.aws).\n" \
  "secret-key=SECRET     Secret key, or +FILE, - (stdin).\n" \
  "session-token=TOKEN   Session token for temporary credentials.\n" \
  "profile=NAME          Profile in ~/.aws/credentials.\n" \
  "credentials=SOURCE    auto (the AWS chain), static, env, profile, process,\n" \
  "                      web-identity, container, imds, ecs-ram-role[:ROLE].\n" \
  "credentials-margin=SECS  Refresh temporary keys this long before expiry\n" \
  "                      (or halfway, if earlier; 300).\n" \
  "imds-v1=true          Fall back to IMDSv1 if IMDSv2 is refused.\n" \
  "metadata-endpoint=URL Instance metadata service (imds, ecs-ram-role).\n" \
  "ca-file=FILE          CA certificate(s) for HTTPS, instead of the system's.\n" \
  "path-style=true|false|auto|domain  Bucket in the path, not the host name.\n" \
  "provider=auto|aws|minio|ceph|r2|gcs|oss|b2  How conditional writes are spelt.\n" \
  "sse=AES256|aws:kms    Server-side encryption of every object.\n" \
  "sse-kms-key-id=KEY    The KMS key for sse=aws:kms.\n" \
  "storage-class=CLASS   Storage class of every object (no archive classes).\n" \
  "retry-time=SECS       Time spent retrying a failing request (60).\n" \
  "request-timeout=SECS  Time one HTTP request may take (30).\n"

#endif /* S3CHUNK_STORE_PARAMS_H */
