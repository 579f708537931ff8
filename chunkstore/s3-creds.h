/* s3chunk: where the S3 store's credentials come from, and keeping
 * temporary ones fresh.
 *
 * The chain (credentials=auto), in the order of the AWS SDKs' default
 * provider chain; the first source that is configured is used, and if it
 * then fails the start fails naming it (no silent fall-through):
 *   1. static: the parameters access-key / secret-key (and session-token);
 *   2. env: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   3. web-identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      (+ AWS_ROLE_SESSION_NAME), through STS AssumeRoleWithWebIdentity;
 *   4. profile: PROFILE (the profile parameter, else AWS_PROFILE, else
 *      "default") of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE,
 *      else ~/.aws/credentials) and the config file (AWS_CONFIG_FILE, else
 *      ~/.aws/config, section [profile PROFILE]); the credentials file's
 *      values win.  In the profile: role_arn + web_identity_token_file
 *      (web-identity), else static keys, else credential_process (process);
 *   5. container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (against
 *      http://169.254.170.2), else AWS_CONTAINER_CREDENTIALS_FULL_URI (https,
 *      or http to a loopback address, 169.254.170.2 or 169.254.170.23 /
 *      fd00:ec2::23), with AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read on
 *      every fetch) or AWS_CONTAINER_AUTHORIZATION_TOKEN;
 *   6. imds: EC2 instance metadata, IMDSv2 (a session token first), unless
 *      AWS_EC2_METADATA_DISABLED=true; AWS_EC2_METADATA_SERVICE_ENDPOINT (or
 *      the metadata-endpoint parameter) moves it.  IMDSv1 only if asked.
 * A profile given as a parameter skips 2 and 3, like the AWS CLI's
 * --profile.  Not in the chain, only by name: ecs-ram-role[:ROLE] (Alibaba
 * Cloud ECS instance RAM role, metadata service http://100.100.100.200,
 * its own token header).
 *
 * Temporary credentials (those with an Expiration) are fetched again in
 * the background before they expire (s3_creds_open): requests already
 * signed keep the keys they took, new ones take the new keys.
 *
 * Secrets are never logged; only the access key id and the source are.
 */
#ifndef S3CHUNK_S3_CREDS_H
#define S3CHUNK_S3_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum s3_creds_kind {
  S3_CREDS_AUTO = 0,
  S3_CREDS_STATIC,
  S3_CREDS_ENV,
  S3_CREDS_PROFILE,
  S3_CREDS_PROCESS,
  S3_CREDS_WEB_IDENTITY,
  S3_CREDS_CONTAINER,
  S3_CREDS_IMDS,
  S3_CREDS_ECS_RAM_ROLE,
};

/* "auto", "static", ... "ecs-ram-role" (the credentials= names). */
extern const char *s3_creds_kind_name (enum s3_creds_kind kind);

/* Parse a credentials= value: one of the names above, or
 * "ecs-ram-role:ROLE" (*role points into s then, else NULL).  -EINVAL if
 * it is none of them.
 */
extern int s3_creds_parse_kind (const char *s, enum s3_creds_kind *kind,
                                const char **role);

struct s3_creds_params {
  const char *access_key;       /* NULL or "": not given */
  const char *secret_key;
  const char *session_token;
  const char *profile;
  const char *credentials;      /* the source: NULL or "auto": the chain */
  double margin;                /* refresh at the earlier of this many
                                   seconds before Expiration and half the
                                   lifetime; 0: 300 */
  bool imds_v1;                 /* IMDSv1 if the IMDSv2 token is refused
                                   (403/404/405), unless
                                   AWS_EC2_METADATA_V1_DISABLED=true */
  const char *metadata_endpoint; /* imds / ecs-ram-role base URL (tests) */
  const char *region;           /* for the regional STS endpoint */
  const char *ca_file;          /* extra CA bundle for https fetches */
};

/* One set of keys: immutable once made, reference-counted, so a request
 * signs with one consistent snapshot however often they rotate.
 */
struct s3_creds {
  char *access_key;
  char *secret_key;
  char *session_token;          /* NULL if none */
  int64_t expiration;           /* seconds since the epoch; 0: never */
  unsigned refs;                /* (atomic; s3_creds_get / s3_creds_put) */
};

struct s3_creds_provider;

/* Choose the source (the chain, or the one named by p->credentials), fetch
 * the first credentials, and if they expire start refreshing them.
 * Returns 0, or logs one line (the source, the file or URL, the status or
 * errno, what to do) and returns -EINVAL (nothing there, bad settings),
 * -EACCES (refused), -EIO / -ETIMEDOUT / ... (the source failed), -ENOMEM.
 */
extern int s3_creds_open (const struct s3_creds_params *p,
                          struct s3_creds_provider **out);

/* Another reference (a sibling store shares its parent's credentials). */
extern struct s3_creds_provider *s3_creds_ref (struct s3_creds_provider *pr);

/* Drop a reference; the last one stops the refresh and frees everything. */
extern void s3_creds_close (struct s3_creds_provider *pr);

/* The current keys, referenced: give them back with s3_creds_put.  Never
 * NULL.  Logs (at most every 30 s) when they have expired.
 */
extern struct s3_creds *s3_creds_get (struct s3_creds_provider *pr);
extern void s3_creds_put (struct s3_creds *c);

/* Which source ("imds http://169.254.169.254, role web"), for messages. */
extern const char *s3_creds_source (struct s3_creds_provider *pr);
extern enum s3_creds_kind s3_creds_kind (struct s3_creds_provider *pr);

/* One line for status and info: the source, the access key id, when they
 * expire, how many refreshes, the last refresh failure.  Never a secret.
 */
extern void s3_creds_describe (struct s3_creds_provider *pr, char *buf,
                               size_t len);

/* ------------------------------------------------ parts, for the tests */

/* Decide the source without fetching anything: the kind the chain (or
 * p->credentials) picks in this environment, and its description in
 * desc.  S3_CREDS_IMDS when nothing else is configured and
 * AWS_EC2_METADATA_DISABLED is not true.  Logs and returns -EINVAL if
 * nothing is there (or the named source has nothing).
 */
extern int s3_creds_plan (const struct s3_creds_params *p,
                          enum s3_creds_kind *kind, char *desc, size_t len);

/* New keys (copies of the strings; token may be NULL or ""), refs 1. */
extern struct s3_creds *s3_creds_new (const char *ak, const char *sk,
                                      const char *token, int64_t expiration);

/* ISO 8601 / RFC 3339 date and time ("2024-05-01T12:00:00Z", fractions
 * and "+02:00" offsets allowed) to seconds since the epoch.
 */
extern int s3_creds_parse_time (const char *s, int64_t *out);

/* The JSON answers: credential_process output (Version 1, AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration), the EC2 / container
 * metadata (AccessKeyId, SecretAccessKey, Token, Expiration, Code), and
 * Alibaba's (AccessKeyId, AccessKeySecret, SecurityToken, Expiration,
 * Code).  0 and *out, or -EPROTO with why in err.
 */
enum s3_creds_json { S3_JSON_PROCESS, S3_JSON_AWS_METADATA, S3_JSON_ALIBABA };
extern int s3_creds_parse_json (enum s3_creds_json dialect, const char *body,
                                size_t len, struct s3_creds **out,
                                char *err, size_t errlen);

/* An STS AssumeRoleWithWebIdentity answer: 0 and *out; an ErrorResponse
 * gives -EACCES with "Code: Message" in err; anything else -EPROTO.
 */
extern int s3_creds_parse_sts (const char *xml, size_t len,
                               struct s3_creds **out, char *err,
                               size_t errlen);

/* When to refresh keys that expire at expiration, fetched at now: the
 * earlier of margin before it and halfway, at least 1 s from now (no
 * jitter).
 */
extern double s3_creds_refresh_delay (double now, int64_t expiration,
                                      double margin);

#endif /* S3CHUNK_S3_CREDS_H */
