/* s3chunk: where the S3 store's credentials come from.
 *
 * The order of the AWS CLI and SDKs, first match wins:
 *   1. the parameters access_key / secret_key (and session_token);
 *   2. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 *      AWS_SESSION_TOKEN (skipped when a profile is given as a parameter,
 *      as the AWS CLI does for --profile; AWS_PROFILE does not skip it);
 *   3. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 *      ~/.aws/credentials), section [PROFILE], then the config file
 *      (AWS_CONFIG_FILE, else ~/.aws/config), section [profile PROFILE]
 *      or [default]; PROFILE is the profile parameter, else AWS_PROFILE,
 *      else "default".
 * Not supported: credential_process, SSO, assume-role profiles, the EC2 /
 * ECS metadata services.
 *
 * Secrets are never logged; only the access key id and the source are.
 */
#ifndef S3CHUNK_S3_CREDS_H
#define S3CHUNK_S3_CREDS_H

struct s3_creds {
  char *access_key;
  char *secret_key;
  char *session_token;          /* NULL if none */
  char source[320];             /* where they came from, for messages */
};

/* Resolve credentials in the order above; the parameters may be NULL or ""
 * (not given).  Reads the environment with getenv and the files named
 * there.  Returns 0, or logs one line saying what is missing and returns
 * -EINVAL (nothing found, half a key pair, a named profile that does not
 * exist) or -ENOMEM.
 */
extern int s3_creds_resolve (const char *access_key, const char *secret_key,
                             const char *session_token, const char *profile,
                             struct s3_creds *out);

/* Wipe and free the strings; c can be resolved again afterwards. */
extern void s3_creds_free (struct s3_creds *c);

#endif /* S3CHUNK_S3_CREDS_H */
