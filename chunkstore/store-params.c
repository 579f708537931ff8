/* s3chunk: the parameters that name a store. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "params.h"
#include "s3-creds.h"
#include "store-params.h"

/* Replace *field with a copy of value. */
static int
set_string (const char **field, const char *value)
{
  char *copy = strdup (value);

  if (copy == NULL)
    return -ENOMEM;
  free ((char *) *field);
  *field = copy;
  return 0;
}

/* AWS's bucket naming rules: 3 to 63 lower-case letters, digits, dots and
 * hyphens, starting and ending with a letter or digit, no "..", not shaped
 * like an IPv4 address, none of the reserved prefixes ("xn--", "sthree-")
 * and suffixes ("-s3alias", "--ol-s3").  Other stores allow more, but a
 * volume should be portable between them.
 */
static bool
ends_with (const char *s, size_t n, const char *suffix)
{
  size_t m = strlen (suffix);
  return n >= m && strcmp (s + n - m, suffix) == 0;
}

bool
store_params_valid_bucket (const char *b)
{
  size_t n = strlen (b), i;
  unsigned a1, a2, a3, a4;
  char end;

  if (n < 3 || n > 63)
    return false;
  if (sscanf (b, "%u.%u.%u.%u%c", &a1, &a2, &a3, &a4, &end) == 4)
    return false;
  if (strncmp (b, "xn--", 4) == 0 || strncmp (b, "sthree-", 7) == 0 ||
      ends_with (b, n, "-s3alias") || ends_with (b, n, "--ol-s3"))
    return false;
  for (i = 0; i < n; ++i)
    if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') ||
          b[i] == '.' || b[i] == '-'))
      return false;
  return b[0] != '.' && b[0] != '-' && b[n - 1] != '.' && b[n - 1] != '-'
    && strstr (b, "..") == NULL;
}

#define BAD(...) do { cs_error (__VA_ARGS__); return -EINVAL; } while (0)

int
store_params_set (struct store_params *p, const char *key, const char *value)
{
  struct objstore_s3_params *s = &p->s3;

  if (strcmp (key, "dir") == 0) {
    char *abs;
    if (*value == '\0')
      BAD ("dir=: invalid value: expected a directory path");
    if (*value == '/')
      abs = strdup (value);
    else {
      char cwd[PATH_MAX];
      if (getcwd (cwd, sizeof cwd) == NULL)
        return -errno;
      if (asprintf (&abs, "%s/%s", cwd, value) < 0)
        abs = NULL;
    }
    if (abs == NULL)
      return -ENOMEM;
    free (p->dir);
    p->dir = abs;
    return 0;
  }
  if (strcmp (key, "bucket") == 0) {
    if (!store_params_valid_bucket (value))
      BAD ("bucket=%s: invalid bucket name: expected 3 to 63 lower-case "
           "letters, digits, dots and hyphens, starting and ending with a "
           "letter or digit, not an IP address, without the prefixes "
           "xn-- and sthree- or the suffixes -s3alias and --ol-s3 (AWS's "
           "bucket naming rules)", value);
    return set_string (&s->bucket, value);
  }
  if (strcmp (key, "prefix") == 0)
    return set_string (&s->prefix, value);
  if (strcmp (key, "endpoint") == 0) {
    if (strncmp (value, "http://", 7) != 0 &&
        strncmp (value, "https://", 8) != 0)
      BAD ("endpoint=%s: invalid value: expected a URL starting with "
           "http:// or https://", value);
    return set_string (&s->endpoint, value);
  }
  if (strcmp (key, "region") == 0)
    return set_string (&s->region, value);
  if (strcmp (key, "access-key") == 0)
    return set_string (&s->access_key, value);
  if (strcmp (key, "secret-key") == 0)
    return set_string (&s->secret_key, value);
  if (strcmp (key, "session-token") == 0)
    return set_string (&s->session_token, value);
  if (strcmp (key, "profile") == 0)
    return set_string (&s->profile, value);
  if (strcmp (key, "credentials") == 0) {
    enum s3_creds_kind kind;
    const char *role;
    if (s3_creds_parse_kind (value, &kind, &role) < 0)
      BAD ("credentials=%s: invalid value: expected auto, static, env, "
           "profile, process, web-identity, container, imds or "
           "ecs-ram-role[:ROLE]", value);
    return set_string (&s->credentials, value);
  }
  if (strcmp (key, "credentials-margin") == 0) {
    double d;
    if (params_parse_seconds (value, &d) < 0 || d < 1 || d > 43200)
      BAD ("credentials-margin=%s: invalid value: expected seconds from 1 "
           "to 43200, e.g. credentials-margin=300", value);
    s->credentials_margin = d;
    return 0;
  }
  if (strcmp (key, "imds-v1") == 0) {
    bool b;
    if (params_parse_bool (value, &b) < 0)
      BAD ("imds-v1=%s: invalid value: expected true or false", value);
    s->imds_v1 = b;
    return 0;
  }
  if (strcmp (key, "metadata-endpoint") == 0) {
    if (strncmp (value, "http://", 7) != 0 &&
        strncmp (value, "https://", 8) != 0)
      BAD ("metadata-endpoint=%s: invalid value: expected a URL starting "
           "with http:// or https://", value);
    return set_string (&s->metadata_endpoint, value);
  }
  if (strcmp (key, "ca-file") == 0) {
    char *real = realpath (value, NULL);
    if (real == NULL)
      BAD ("ca-file=%s: %s", value, strerror (errno));
    free ((char *) s->ca_file);
    s->ca_file = real;
    return 0;
  }
  if (strcmp (key, "path-style") == 0) {
    bool b;
    if (strcmp (value, "auto") == 0)
      s->path_style = -1;
    else if (strcmp (value, "domain") == 0)
      s->path_style = 2;
    else if (params_parse_bool (value, &b) == 0)
      s->path_style = b;
    else
      BAD ("path-style=%s: invalid value: expected true, false, auto or "
           "domain (the endpoint is the bucket's own host name)", value);
    return 0;
  }
  if (strcmp (key, "provider") == 0) {
    static const char *const words[] = {
      "auto", "aws", "minio", "ceph", "r2", "gcs", "oss", "b2",
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; ++i)
      if (strcmp (value, words[i]) == 0)
        return set_string (&s->provider, value);
    BAD ("provider=%s: invalid value: expected %s", value,
         OBJSTORE_S3_PROVIDERS);
  }
  if (strcmp (key, "sse") == 0) {
    if (strcmp (value, "AES256") != 0 && strcmp (value, "aws:kms") != 0)
      BAD ("sse=%s: invalid value: expected AES256 or aws:kms", value);
    return set_string (&s->sse, value);
  }
  if (strcmp (key, "sse-kms-key-id") == 0)
    return set_string (&s->sse_kms_key_id, value);
  if (strcmp (key, "storage-class") == 0) {
    static const char *const archive[] = {
      "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "Archive", "ColdArchive",
      "DeepColdArchive", "ARCHIVE", "COLDLINE",
    };
    if (*value == '\0')
      BAD ("storage-class=: invalid value: expected a class name such as "
           "STANDARD or STANDARD_IA");
    for (size_t i = 0; i < sizeof archive / sizeof archive[0]; ++i)
      if (strcmp (value, archive[i]) == 0)
        cs_warn ("storage-class=%s: an archive class: chunks are read back "
                 "(every read of the device and every partial write), and "
                 "archived objects must be restored before a read succeeds, "
                 "or cost a retrieval fee and a minimum storage time each",
                 value);
    return set_string (&s->storage_class, value);
  }
  if (strcmp (key, "retry-time") == 0) {
    double d;
    if (params_parse_seconds (value, &d) < 0 || d > 86400)
      BAD ("retry-time=%s: invalid value: expected seconds from 0 (never "
           "retry) to 86400, e.g. retry-time=60", value);
    s->retry_time = d > 0 ? d : -1;
    return 0;
  }
  if (strcmp (key, "request-timeout") == 0) {
    double d;
    if (params_parse_seconds (value, &d) < 0 || d < 1 || d > 86400)
      BAD ("request-timeout=%s: invalid value: expected seconds from 1 to "
           "86400, e.g. request-timeout=30", value);
    s->request_timeout = d;
    return 0;
  }
  return 1;
}

int
store_params_check (const struct store_params *p)
{
  const struct objstore_s3_params *s = &p->s3;

  if (p->dir == NULL && s->bucket == NULL)
    BAD ("no store given: add dir=PATH for a local directory or "
         "bucket=NAME for S3");
  if (p->dir && s->bucket)
    BAD ("dir= and bucket= both given: a volume lives in one store, "
         "drop one");
  if (p->dir && (s->prefix || s->endpoint || s->region || s->access_key ||
                 s->secret_key || s->session_token || s->profile ||
                 s->ca_file || s->credentials || s->credentials_margin ||
                 s->imds_v1 || s->metadata_endpoint || s->provider || s->sse ||
                 s->sse_kms_key_id || s->storage_class))
    BAD ("prefix=, endpoint=, region=, access-key=, secret-key=, "
         "session-token=, profile=, credentials=, credentials-margin=, "
         "imds-v1=, metadata-endpoint=, ca-file=, provider=, sse=, "
         "sse-kms-key-id= and storage-class= are for bucket=, not dir=");
  if (s->sse_kms_key_id && !(s->sse && strcmp (s->sse, "aws:kms") == 0))
    BAD ("sse-kms-key-id= goes with sse=aws:kms: add it, or drop the key");
  if (!s->access_key != !s->secret_key)
    BAD ("access-key= and secret-key= go together: give both, or neither "
         "to use the environment or ~/.aws/credentials");
  if (s->credentials) {
    enum s3_creds_kind kind;
    const char *role;
    s3_creds_parse_kind (s->credentials, &kind, &role);
    if (s->access_key && kind != S3_CREDS_AUTO && kind != S3_CREDS_STATIC)
      BAD ("access-key= and secret-key= are static credentials, but "
           "credentials=%s: drop one or the other", s->credentials);
    if (!s->access_key && kind == S3_CREDS_STATIC)
      BAD ("credentials=static needs access-key= and secret-key=");
    if (s->metadata_endpoint && kind != S3_CREDS_AUTO &&
        kind != S3_CREDS_IMDS && kind != S3_CREDS_ECS_RAM_ROLE)
      BAD ("metadata-endpoint= is for credentials=imds or ecs-ram-role, "
           "not credentials=%s", s->credentials);
  }
  return 0;
}

int
store_params_open (const struct store_params *p, unsigned connections,
                   bool create, struct objstore **out)
{
  struct objstore_s3_params s = p->s3;
  struct stat st;

  if (s.bucket) {
    s.connections = connections;
    return objstore_s3_open (&s, out);
  }
  if (!create && stat (p->dir, &st) < 0 && errno == ENOENT)
    BAD ("dir=%s: no such directory, so no volume there: give size= to "
         "create one, or check the path", p->dir);
  return objstore_dir_open (p->dir, create, out);
}

const char *
store_params_describe (const struct store_params *p, char *buf, size_t len)
{
  const struct objstore_s3_params *s = &p->s3;

  if (s->bucket)
    snprintf (buf, len, "s3://%s/%s%s%s", s->bucket,
              s->prefix ? s->prefix : "", s->endpoint ? " at " : "",
              s->endpoint ? s->endpoint : "");
  else
    snprintf (buf, len, "dir %s", p->dir ? p->dir : "(none)");
  return buf;
}

void
store_params_free (struct store_params *p)
{
  struct objstore_s3_params *s = &p->s3;

  free (p->dir);
  free ((char *) s->bucket);
  free ((char *) s->prefix);
  free ((char *) s->endpoint);
  free ((char *) s->region);
  free ((char *) s->access_key);
  if (s->secret_key)
    memset ((char *) s->secret_key, 0, strlen (s->secret_key));
  free ((char *) s->secret_key);
  free ((char *) s->session_token);
  free ((char *) s->profile);
  free ((char *) s->credentials);
  free ((char *) s->metadata_endpoint);
  free ((char *) s->ca_file);
  free ((char *) s->provider);
  free ((char *) s->sse);
  free ((char *) s->sse_kms_key_id);
  free ((char *) s->storage_class);
  memset (p, 0, sizeof *p);
  s->path_style = -1;
}
