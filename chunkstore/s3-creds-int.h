/* s3chunk: between the credential chain (s3-creds.c) and the fetchers
 * (s3-creds-fetch.c).  Not for other modules.
 */
#ifndef S3CHUNK_S3_CREDS_INT_H
#define S3CHUNK_S3_CREDS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "s3-creds.h"

/* A chosen source: how to get (or get again) its credentials. */
struct creds_source {
  enum s3_creds_kind kind;
  char desc[600];               /* what and where, for messages */
  struct s3_creds *fixed;       /* static, env, profile keys: the keys */
  char *url;                    /* container: the URL; imds, ecs-ram-role:
                                   the base URL; web-identity: STS */
  char *auth_token;             /* container: AWS_CONTAINER_AUTHORIZATION_TOKEN */
  char *token_file;             /* container: ..._TOKEN_FILE; web-identity:
                                   the web identity token file */
  char *role;                   /* imds, ecs-ram-role: the role name (NULL:
                                   ask the service); web-identity: the ARN */
  char *session_name;           /* web-identity */
  char *command;                /* process: the credential_process line */
  char *ca_file;
  bool imds_v1;
};

/* Fetch the source's credentials once.  0 and *out, or a negative errno
 * with one line in err: the source, the URL or file, the status or errno,
 * what to do.
 */
extern int creds_fetch (struct creds_source *s, struct s3_creds **out,
                        char *err, size_t errlen);

/* Is host (a name or an address) allowed for an http:// container URL:
 * every address it resolves to is loopback, 169.254.170.2, 169.254.170.23
 * or fd00:ec2::23.
 */
extern bool creds_container_host_allowed (const char *host);

#endif /* S3CHUNK_S3_CREDS_INT_H */
