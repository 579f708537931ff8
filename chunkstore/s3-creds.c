/* s3chunk: choosing the credential source (see s3-creds.h for the chain)
 * and keeping temporary credentials fresh.
 *
 * The provider holds the current keys as one immutable, reference-counted
 * struct s3_creds.  s3_creds_get hands out a reference under the lock; a
 * refresh builds a whole new one and swaps the pointer under the lock, so
 * a request signs with one consistent key, secret and token, and requests
 * in flight finish with the keys they took.  The store and its sibling
 * (the lock's renewals) share one provider.
 *
 * Refresh: a thread per provider whose keys expire.  It fetches at the
 * earlier of margin seconds before Expiration and halfway through the
 * lifetime, minus up to 10 % jitter (AWS publishes new instance keys at
 * least five minutes before the old ones expire).  A failure is logged
 * and retried with backoff (1 s doubling to 60 s, jittered); the old keys
 * stay in use, and only once they have expired do requests fail (the
 * store refuses them; s3_creds_get says why, every 30 s at most).
 *
 * Fork: nbdkit opens the store, then forks.  Threads do not survive a
 * fork, so the thread is (re)started lazily by the first s3_creds_get in
 * a process where none runs; pthread_atfork handlers hold every
 * provider's lock across fork so the child never sees a half-made swap,
 * and give the child fresh locks and conditions.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "s3-creds-int.h"
#include "s3-creds.h"

#define DEFAULT_MARGIN 300.0    /* seconds */
#define BACKOFF_MAX 60.0        /* seconds between failed refreshes, at most */
#define EXPIRED_LOG_EVERY 30.0  /* seconds */
#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"
#define ECS_CONTAINER_HOST "http://169.254.170.2"
#define ALIBABA_METADATA "http://100.100.100.200"

static bool
given (const char *s)
{
  return s && *s;
}

static void
wipe_free (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

static bool
env_true (const char *name)
{
  const char *v = getenv (name);
  return v && strcasecmp (v, "true") == 0;
}

static double
wall_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *const kind_names[] = {
  [S3_CREDS_AUTO] = "auto",
  [S3_CREDS_STATIC] = "static",
  [S3_CREDS_ENV] = "env",
  [S3_CREDS_PROFILE] = "profile",
  [S3_CREDS_PROCESS] = "process",
  [S3_CREDS_WEB_IDENTITY] = "web-identity",
  [S3_CREDS_CONTAINER] = "container",
  [S3_CREDS_IMDS] = "imds",
  [S3_CREDS_ECS_RAM_ROLE] = "ecs-ram-role",
};

const char *
s3_creds_kind_name (enum s3_creds_kind kind)
{
  return (unsigned) kind < sizeof kind_names / sizeof kind_names[0] ?
    kind_names[kind] : "?";
}

int
s3_creds_parse_kind (const char *s, enum s3_creds_kind *kind,
                     const char **role)
{
  size_t i;

  *role = NULL;
  if (!given (s)) {
    *kind = S3_CREDS_AUTO;
    return 0;
  }
  for (i = 0; i < sizeof kind_names / sizeof kind_names[0]; ++i)
    if (strcmp (s, kind_names[i]) == 0) {
      *kind = i;
      return 0;
    }
  if (strncmp (s, "ecs-ram-role:", 13) == 0 && s[13] &&
      strspn (s + 13, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
              "0123456789-_.+=,@") == strlen (s + 13)) {
    *kind = S3_CREDS_ECS_RAM_ROLE;
    *role = s + 13;
    return 0;
  }
  return -EINVAL;
}

double
s3_creds_refresh_delay (double now, int64_t expiration, double margin)
{
  double life = (double) expiration - now, d;

  if (life <= 2)
    return 1;
  d = life / 2;
  if (life - margin > 0 && life - margin < d)
    d = life - margin;
  return d < 1 ? 1 : d;
}

/* ------------------------------------------------------------- files */

/* $HOME, else the password database; NULL if neither says. */
static char *
home_dir (void)
{
  const char *h = getenv ("HOME");
  struct passwd pw, *res = NULL;
  char buf[4096];

  if (given (h))
    return strdup (h);
  if (getpwuid_r (getuid (), &pw, buf, sizeof buf, &res) == 0 && res &&
      given (pw.pw_dir))
    return strdup (pw.pw_dir);
  return NULL;
}

/* The file named by env_var ("~/" expanded), else ~/.aws/default_name. */
static char *
aws_file (const char *env_var, const char *default_name)
{
  const char *e = getenv (env_var);
  CLEANUP_FREE char *home = NULL;
  char *path;

  if (given (e) && strncmp (e, "~/", 2) != 0)
    return strdup (e);
  home = home_dir ();
  if (home == NULL)
    return NULL;
  if (given (e))
    return asprintf (&path, "%s/%s", home, e + 2) < 0 ? NULL : path;
  return asprintf (&path, "%s/.aws/%s", home, default_name) < 0 ? NULL : path;
}

static char *
trim (char *s)
{
  char *end;

  while (isspace ((unsigned char) *s))
    ++s;
  end = s + strlen (s);
  while (end > s && isspace ((unsigned char) end[-1]))
    *--end = '\0';
  return s;
}

/* The settings of one profile we act on, merged from both files (the
 * credentials file's win), and the file each came from.
 */
enum {
  P_ACCESS_KEY, P_SECRET_KEY, P_SESSION_TOKEN, P_PROCESS, P_ROLE_ARN,
  P_TOKEN_FILE, P_SESSION_NAME, P_SOURCE_PROFILE, P_CREDENTIAL_SOURCE,
  P_SSO, P_SSO_SESSION, P_N,
};
static const char *const profile_names[P_N] = {
  "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
  "credential_process", "role_arn", "web_identity_token_file",
  "role_session_name", "source_profile", "credential_source",
  "sso_start_url", "sso_session",
};

struct profile {
  char *v[P_N];
  const char *from[P_N];        /* the path it came from */
  bool file_found, section_found;
};

static void
profile_free (struct profile *k)
{
  size_t i;

  for (i = 0; i < P_N; ++i)
    wipe_free (k->v[i]);
  memset (k, 0, sizeof *k);
}

/* Read [section] of an INI file the way the AWS CLI reads it: '#' and
 * ';' start comment lines, names are case-insensitive, values trimmed,
 * indented lines under an empty value are a nested block (ignored).  A
 * value already set (by the credentials file) is kept.  A missing file
 * is not an error.
 */
static int
read_profile (const char *path, const char *section, struct profile *k)
{
  FILE *f;
  char *line = NULL;
  size_t cap = 0, i;
  ssize_t n;
  bool in_section = false, nested = false;
  int r = 0;

  f = fopen (path, "re");
  if (f == NULL) {
    if (errno == ENOENT || errno == ENOTDIR)
      return 0;
    r = -errno;
    cs_error ("s3 credentials: %s: %s", path, strerror (errno));
    return r;
  }
  k->file_found = true;
  while (r == 0 && (n = getline (&line, &cap, f)) >= 0) {
    bool indented = n > 0 && (line[0] == ' ' || line[0] == '\t');
    char *s = trim (line), *eq;

    if (*s == '\0' || *s == '#' || *s == ';')
      continue;
    if (*s == '[') {
      char *close = strrchr (s, ']');
      nested = false;
      if (close == NULL)
        continue;
      *close = '\0';
      in_section = strcmp (trim (s + 1), section) == 0;
      if (in_section)
        k->section_found = true;
      continue;
    }
    if (!in_section || (indented && nested))
      continue;
    eq = strchr (s, '=');
    if (eq == NULL)
      continue;
    *eq = '\0';
    s = trim (s);
    eq = trim (eq + 1);
    nested = *eq == '\0';
    for (i = 0; i < P_N; ++i)
      if (strcasecmp (s, profile_names[i]) == 0 && k->v[i] == NULL &&
          *eq) {
        if ((k->v[i] = strdup (eq)) == NULL)
          r = -ENOMEM;
        k->from[i] = path;
      }
  }
  if (r == 0 && ferror (f)) {
    r = -EIO;
    cs_error ("s3 credentials: %s: read error", path);
  }
  if (line) {
    explicit_bzero (line, cap);
    free (line);
  }
  fclose (f);
  return r;
}

/* ------------------------------------------------------------ the plan */

static void
source_free (struct creds_source *s)
{
  s3_creds_put (s->fixed);
  free (s->url);
  wipe_free (s->auth_token);
  free (s->token_file);
  free (s->role);
  free (s->session_name);
  free (s->command);
  free (s->ca_file);
  memset (s, 0, sizeof *s);
}

static int
set_fixed (struct creds_source *s, enum s3_creds_kind kind, const char *ak,
           const char *sk, const char *token)
{
  s->kind = kind;
  s->fixed = s3_creds_new (ak, sk, token, 0);
  return s->fixed ? 0 : -ENOMEM;
}

static int
dup_into (char **dst, const char *v)
{
  *dst = v ? strdup (v) : NULL;
  return v && *dst == NULL ? -ENOMEM : 0;
}

/* The STS endpoint, as the SDKs find it: AWS_ENDPOINT_URL_STS, else
 * AWS_ENDPOINT_URL, else the global endpoint if AWS_STS_REGIONAL_ENDPOINTS
 * is "legacy", else the region's.
 */
static char *
sts_endpoint (const struct s3_creds_params *p)
{
  const char *e = getenv ("AWS_ENDPOINT_URL_STS"), *region, *mode;
  char *url;

  if (!given (e))
    e = getenv ("AWS_ENDPOINT_URL");
  if (given (e)) {
    url = strdup (e);
    if (url && strlen (url) > 8 && url[strlen (url) - 1] == '/')
      url[strlen (url) - 1] = '\0';
    return url;
  }
  mode = getenv ("AWS_STS_REGIONAL_ENDPOINTS");
  region = given (p->region) ? p->region :
    given (getenv ("AWS_REGION")) ? getenv ("AWS_REGION") :
    given (getenv ("AWS_DEFAULT_REGION")) ? getenv ("AWS_DEFAULT_REGION") :
    NULL;
  if ((mode && strcasecmp (mode, "legacy") == 0) || region == NULL)
    return strdup ("https://sts.amazonaws.com");
  if (asprintf (&url, "https://sts.%s.amazonaws.com%s", region,
                strncmp (region, "cn-", 3) == 0 ? ".cn" : "") < 0)
    return NULL;
  return url;
}

static int
plan_web_identity (const struct s3_creds_params *p, struct creds_source *s,
                   const char *token_file, const char *role_arn,
                   const char *session_name, const char *where)
{
  char name[64];

  s->kind = S3_CREDS_WEB_IDENTITY;
  if (!given (session_name)) {
    snprintf (name, sizeof name, "s3chunk-%lld", (long long) time (NULL));
    session_name = name;
  }
  if (dup_into (&s->token_file, token_file) < 0 ||
      dup_into (&s->role, role_arn) < 0 ||
      dup_into (&s->session_name, session_name) < 0 ||
      (s->url = sts_endpoint (p)) == NULL)
    return -ENOMEM;
  snprintf (s->desc, sizeof s->desc, "web identity (%s: token file %s, role "
            "%s) through STS %s", where, token_file, role_arn, s->url);
  return 0;
}

/* The profile's sources.  1 if one was chosen, 0 if the profile has
 * nothing for this kind, < 0 error (logged).
 */
static int
plan_profile (const struct s3_creds_params *p, enum s3_creds_kind kind,
              struct creds_source *s)
{
  const char *env_profile = getenv ("AWS_PROFILE");
  const char *profile = given (p->profile) ? p->profile :
    given (env_profile) ? env_profile : "default";
  bool named = given (p->profile) || given (env_profile);
  CLEANUP_FREE char *cred_path = aws_file ("AWS_SHARED_CREDENTIALS_FILE",
                                           "credentials");
  CLEANUP_FREE char *config_path = aws_file ("AWS_CONFIG_FILE", "config");
  CLEANUP_FREE char *config_section = NULL;
  char where[600];
  struct profile k;
  int r = 0;

  memset (&k, 0, sizeof k);
  if (strcmp (profile, "default") == 0)
    config_section = strdup ("default");
  else if (asprintf (&config_section, "profile %s", profile) < 0)
    config_section = NULL;
  if (config_section == NULL)
    return -ENOMEM;
  if (cred_path)
    r = read_profile (cred_path, profile, &k);
  if (r == 0 && config_path)
    r = read_profile (config_path, config_section, &k);
  if (r < 0)
    goto out;

  if (!k.section_found) {
    if (named) {
      cs_error ("s3 credentials: profile \"%s\" not found in %s or %s: "
                "check the name (profile= or AWS_PROFILE)", profile,
                cred_path ? cred_path : "~/.aws/credentials",
                config_path ? config_path : "~/.aws/config");
      r = -EINVAL;
    }
    goto out;
  }

#define FROM(i) (k.from[i] ? k.from[i] : "?")
  /* role_arn + web_identity_token_file: assume the role. */
  if (k.v[P_ROLE_ARN] && k.v[P_TOKEN_FILE]) {
    if (kind != S3_CREDS_AUTO && kind != S3_CREDS_PROFILE &&
        kind != S3_CREDS_WEB_IDENTITY)
      goto nothing;
    snprintf (where, sizeof where, "profile \"%s\" in %s", profile,
              FROM (P_ROLE_ARN));
    r = plan_web_identity (p, s, k.v[P_TOKEN_FILE], k.v[P_ROLE_ARN],
                           k.v[P_SESSION_NAME], where);
    r = r < 0 ? r : 1;
    goto out;
  }
  if (kind == S3_CREDS_WEB_IDENTITY)
    goto nothing;
  if (k.v[P_ROLE_ARN] && kind != S3_CREDS_PROCESS) {
    cs_error ("s3 credentials: %s: profile \"%s\" has role_arn with %s: "
              "assuming a role from another profile is not supported; use "
              "web_identity_token_file, credential_process (e.g. the AWS "
              "CLI's \"aws configure export-credentials --format process\") "
              "or static keys", FROM (P_ROLE_ARN), profile,
              k.v[P_SOURCE_PROFILE] ? "source_profile" :
              k.v[P_CREDENTIAL_SOURCE] ? "credential_source" :
              "no web_identity_token_file");
    r = -EINVAL;
    goto out;
  }
  /* Static keys. */
  if (k.v[P_ACCESS_KEY] || k.v[P_SECRET_KEY]) {
    if (kind == S3_CREDS_PROCESS)
      goto process;
    if (!k.v[P_ACCESS_KEY] || !k.v[P_SECRET_KEY]) {
      bool has_ak = k.v[P_ACCESS_KEY] != NULL;
      cs_error ("s3 credentials: %s: profile \"%s\" has %s but not %s",
                has_ak ? FROM (P_ACCESS_KEY) : FROM (P_SECRET_KEY), profile,
                has_ak ? "aws_access_key_id" : "aws_secret_access_key",
                has_ak ? "aws_secret_access_key" : "aws_access_key_id");
      r = -EINVAL;
      goto out;
    }
    r = set_fixed (s, S3_CREDS_PROFILE, k.v[P_ACCESS_KEY],
                   k.v[P_SECRET_KEY], k.v[P_SESSION_TOKEN]);
    if (r == 0)
      snprintf (s->desc, sizeof s->desc, "%s, profile \"%s\"",
                FROM (P_ACCESS_KEY), profile);
    r = r < 0 ? r : 1;
    goto out;
  }
 process:
  if (k.v[P_PROCESS]) {
    s->kind = S3_CREDS_PROCESS;
    if (dup_into (&s->command, k.v[P_PROCESS]) < 0) {
      r = -ENOMEM;
      goto out;
    }
    snprintf (s->desc, sizeof s->desc, "credential_process of profile "
              "\"%s\" in %s", profile, FROM (P_PROCESS));
    r = 1;
    goto out;
  }
  if (k.v[P_SSO] || k.v[P_SSO_SESSION]) {
    cs_error ("s3 credentials: %s: profile \"%s\" is an IAM Identity Center "
              "(SSO) profile, which is not supported: use credential_process "
              "= aws configure export-credentials --profile %s --format "
              "process", FROM (k.v[P_SSO] ? P_SSO : P_SSO_SESSION), profile,
              profile);
    r = -EINVAL;
    goto out;
  }
 nothing:
  /* A profile asked for by parameter must give something. */
  if (given (p->profile) || kind != S3_CREDS_AUTO) {
    cs_error ("s3 credentials: profile \"%s\" has no %s (in %s and %s)",
              profile, kind == S3_CREDS_PROCESS ? "credential_process" :
              kind == S3_CREDS_WEB_IDENTITY ?
              "role_arn and web_identity_token_file" :
              "aws_access_key_id / aws_secret_access_key, "
              "credential_process or role_arn + web_identity_token_file",
              cred_path ? cred_path : "~/.aws/credentials",
              config_path ? config_path : "~/.aws/config");
    r = -EINVAL;
  }
#undef FROM
 out:
  profile_free (&k);
  return r;
}

static int
plan_container (const struct s3_creds_params *p, struct creds_source *s)
{
  const char *rel = getenv ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  const char *full = getenv ("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  const char *tok = getenv ("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  const char *tok_file = getenv ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");

  s->kind = S3_CREDS_CONTAINER;
  if (given (rel)) {
    if (asprintf (&s->url, "%s%s%s", ECS_CONTAINER_HOST,
                  rel[0] == '/' ? "" : "/", rel) < 0) {
      s->url = NULL;
      return -ENOMEM;
    }
    snprintf (s->desc, sizeof s->desc, "container credentials %s "
              "(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)", s->url);
  }
  else {
    if (strncasecmp (full, "https://", 8) != 0) {
      char host[256];
      const char *h, *e;
      size_t n;

      if (strncasecmp (full, "http://", 7) != 0) {
        cs_error ("s3 credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: "
                  "expected an http:// or https:// URL", full);
        return -EINVAL;
      }
      h = full + 7;
      if (*h == '[') {
        e = strchr (h, ']');
        h++;
      }
      else
        e = h + strcspn (h, ":/?#");
      n = e ? (size_t) (e - h) : 0;
      if (n == 0 || n >= sizeof host) {
        cs_error ("s3 credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: "
                  "no host", full);
        return -EINVAL;
      }
      memcpy (host, h, n);
      host[n] = '\0';
      if (!creds_container_host_allowed (host)) {
        cs_error ("s3 credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: "
                  "over http the host must be a loopback address, "
                  "169.254.170.2, 169.254.170.23 or fd00:ec2::23 (as the "
                  "AWS SDKs require); use https for any other host", full);
        return -EINVAL;
      }
    }
    if (dup_into (&s->url, full) < 0)
      return -ENOMEM;
    snprintf (s->desc, sizeof s->desc, "container credentials %s "
              "(AWS_CONTAINER_CREDENTIALS_FULL_URI)", s->url);
  }
  if (given (tok_file) ? dup_into (&s->token_file, tok_file) < 0 :
      given (tok) ? dup_into (&s->auth_token, tok) < 0 : false)
    return -ENOMEM;
  if (dup_into (&s->ca_file, p->ca_file) < 0)
    return -ENOMEM;
  return 0;
}

static int
plan_metadata (const struct s3_creds_params *p, enum s3_creds_kind kind,
               const char *role, struct creds_source *s)
{
  const char *base;
  size_t n;

  s->kind = kind;
  s->imds_v1 = p->imds_v1;
  if (kind == S3_CREDS_IMDS) {
    const char *e = getenv ("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *mode = getenv ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
    base = given (p->metadata_endpoint) ? p->metadata_endpoint :
      given (e) ? e : mode && strcasecmp (mode, "IPv6") == 0 ?
      IMDS_DEFAULT_V6 : IMDS_DEFAULT;
    if (env_true ("AWS_EC2_METADATA_V1_DISABLED"))
      s->imds_v1 = false;
  }
  else {
    const char *e = getenv ("ALIBABA_CLOUD_ECS_METADATA");
    base = given (p->metadata_endpoint) ? p->metadata_endpoint :
      ALIBABA_METADATA;
    if (!given (role) && given (e))
      role = e;
    if (env_true ("ALIBABA_CLOUD_IMDSV1_DISABLED"))
      s->imds_v1 = false;
  }
  if (dup_into (&s->url, base) < 0 || dup_into (&s->role, given (role) ?
                                                 role : NULL) < 0)
    return -ENOMEM;
  n = strlen (s->url);
  while (n > 0 && s->url[n - 1] == '/')
    s->url[--n] = '\0';
  snprintf (s->desc, sizeof s->desc, "%s %s%s%s%s",
            kind == S3_CREDS_IMDS ? "EC2 instance metadata (IMDSv2)" :
            "Alibaba ECS instance RAM role metadata", s->url,
            s->role ? ", role " : "", s->role ? s->role : "",
            s->imds_v1 ? ", IMDSv1 fallback" : "");
  return 0;
}

/* Choose the source into s (zeroed first).  0, or logged and < 0. */
static int
plan (const struct s3_creds_params *p, struct creds_source *s)
{
  enum s3_creds_kind kind;
  const char *role, *v;
  bool static_given = given (p->access_key) || given (p->secret_key);
  bool skip_env = given (p->profile);
  int r;

  memset (s, 0, sizeof *s);
  if (s3_creds_parse_kind (p->credentials, &kind, &role) < 0) {
    cs_error ("s3 credentials: credentials=%s: expected auto, static, env, "
              "profile, process, web-identity, container, imds or "
              "ecs-ram-role[:ROLE]", p->credentials);
    return -EINVAL;
  }
  if (!(p->margin >= 0)) {
    cs_error ("s3 credentials: the refresh margin must be >= 0 seconds");
    return -EINVAL;
  }

  /* 1. Parameters. */
  if (static_given) {
    if (!given (p->access_key) || !given (p->secret_key)) {
      cs_error ("s3 credentials: %s given without %s",
                given (p->access_key) ? "access_key" : "secret_key",
                given (p->access_key) ? "secret_key" : "access_key");
      return -EINVAL;
    }
    if (kind != S3_CREDS_AUTO && kind != S3_CREDS_STATIC) {
      cs_error ("s3 credentials: access-key= and secret-key= are static "
                "credentials, but credentials=%s: drop one or the other",
                s3_creds_kind_name (kind));
      return -EINVAL;
    }
    r = set_fixed (s, S3_CREDS_STATIC, p->access_key, p->secret_key,
                   p->session_token);
    snprintf (s->desc, sizeof s->desc, "parameters");
    return r;
  }
  if (kind == S3_CREDS_STATIC) {
    cs_error ("s3 credentials: credentials=static needs access-key= and "
              "secret-key=");
    return -EINVAL;
  }

  /* 2. Environment, unless a profile was asked for by parameter. */
  if ((kind == S3_CREDS_AUTO && !skip_env) || kind == S3_CREDS_ENV) {
    const char *ak = getenv ("AWS_ACCESS_KEY_ID");
    const char *sk = getenv ("AWS_SECRET_ACCESS_KEY");
    if (given (ak) && given (sk)) {
      r = set_fixed (s, S3_CREDS_ENV, ak, sk, getenv ("AWS_SESSION_TOKEN"));
      snprintf (s->desc, sizeof s->desc, "environment");
      return r;
    }
    if (kind == S3_CREDS_ENV) {
      cs_error ("s3 credentials: credentials=env: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY are %s", given (ak) || given (sk) ?
                "not both set" : "not set");
      return -EINVAL;
    }
    if (given (ak) || given (sk))
      cs_warn ("s3 credentials: %s is set but %s is not: ignoring both",
               given (ak) ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
               given (ak) ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
  }

  /* 3. Web identity from the environment. */
  if ((kind == S3_CREDS_AUTO && !skip_env) || kind == S3_CREDS_WEB_IDENTITY) {
    const char *tf = getenv ("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *arn = getenv ("AWS_ROLE_ARN");
    if (given (tf) && given (arn))
      return plan_web_identity (p, s, tf, arn,
                                getenv ("AWS_ROLE_SESSION_NAME"),
                                "environment");
    if (given (tf) || given (arn)) {
      cs_error ("s3 credentials: %s is set but %s is not: set both for a "
                "web identity, or neither",
                given (tf) ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
                given (tf) ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
      return -EINVAL;
    }
  }

  /* 4. The profile. */
  if (kind == S3_CREDS_AUTO || kind == S3_CREDS_PROFILE ||
      kind == S3_CREDS_PROCESS || kind == S3_CREDS_WEB_IDENTITY) {
    r = plan_profile (p, kind, s);
    if (r != 0)
      return r < 0 ? r : 0;
    if (kind != S3_CREDS_AUTO) {
      /* plan_profile said what is missing only for a named profile */
      cs_error ("s3 credentials: credentials=%s: nothing in the %s",
                s3_creds_kind_name (kind), kind == S3_CREDS_WEB_IDENTITY ?
                "environment (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN) "
                "or the profile" : "profile");
      return -EINVAL;
    }
  }

  /* 5. Container. */
  if (kind == S3_CREDS_AUTO || kind == S3_CREDS_CONTAINER) {
    if (given (getenv ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) ||
        given (getenv ("AWS_CONTAINER_CREDENTIALS_FULL_URI")))
      return plan_container (p, s);
    if (kind == S3_CREDS_CONTAINER) {
      cs_error ("s3 credentials: credentials=container: neither "
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
                "AWS_CONTAINER_CREDENTIALS_FULL_URI is set");
      return -EINVAL;
    }
  }

  /* 6. EC2 instance metadata. */
  if (kind == S3_CREDS_AUTO || kind == S3_CREDS_IMDS) {
    if (!env_true ("AWS_EC2_METADATA_DISABLED"))
      return plan_metadata (p, S3_CREDS_IMDS, NULL, s);
    if (kind == S3_CREDS_IMDS) {
      cs_error ("s3 credentials: credentials=imds, but "
                "AWS_EC2_METADATA_DISABLED=true");
      return -EINVAL;
    }
  }

  if (kind == S3_CREDS_ECS_RAM_ROLE)
    return plan_metadata (p, kind, role, s);

  v = getenv ("AWS_SHARED_CREDENTIALS_FILE");
  cs_error ("s3 credentials: none found: give access-key= and secret-key=, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add a "
            "[default] profile to %s, or run where a container or instance "
            "metadata service hands out credentials (instance metadata is "
            "off: AWS_EC2_METADATA_DISABLED=true)",
            given (v) ? v : "~/.aws/credentials");
  return -EINVAL;
}

int
s3_creds_plan (const struct s3_creds_params *p, enum s3_creds_kind *kind,
               char *desc, size_t len)
{
  struct creds_source s;
  int r = plan (p, &s);

  if (r == 0) {
    *kind = s.kind;
    snprintf (desc, len, "%s", s.desc);
  }
  source_free (&s);
  return r;
}

/* ---------------------------------------------------------- provider */

struct s3_creds_provider {
  unsigned refs;                /* atomic */
  struct creds_source src;
  double margin;

  pthread_mutex_t lock;         /* protects everything below */
  pthread_cond_t cond;          /* stop was set */
  struct s3_creds *cur;         /* never NULL */
  bool refreshing;              /* cur expires: the thread renews it */
  bool thread_running;          /* in this process */
  bool stop;
  pthread_t thread;
  double next_refresh;          /* wall clock, seconds */
  double fetched;               /* when cur was fetched */
  unsigned refreshes, failures_in_row;
  uint64_t failures;
  char last_error[700];
  double last_expired_log;
  unsigned seed;

  struct s3_creds_provider *next; /* all_providers */
};

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct s3_creds_provider *all_providers;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
init_sync (struct s3_creds_provider *pr)
{
  pthread_condattr_t ca;

  pthread_mutex_init (&pr->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&pr->cond, &ca);
  pthread_condattr_destroy (&ca);
}

static void
atfork_prepare (void)
{
  struct s3_creds_provider *pr;

  pthread_mutex_lock (&all_lock);
  for (pr = all_providers; pr; pr = pr->next)
    pthread_mutex_lock (&pr->lock);
}

static void
atfork_parent (void)
{
  struct s3_creds_provider *pr;

  for (pr = all_providers; pr; pr = pr->next)
    pthread_mutex_unlock (&pr->lock);
  pthread_mutex_unlock (&all_lock);
}

/* The child has no refresh thread: fresh locks (the thread may have been
 * waiting on the condition) and the thread restarts at the next get.
 */
static void
atfork_child (void)
{
  struct s3_creds_provider *pr;

  for (pr = all_providers; pr; pr = pr->next) {
    pthread_mutex_unlock (&pr->lock);
    memset (&pr->cond, 0, sizeof pr->cond);
    {
      pthread_condattr_t ca;
      pthread_condattr_init (&ca);
      pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
      pthread_cond_init (&pr->cond, &ca);
      pthread_condattr_destroy (&ca);
    }
    pr->thread_running = false;
  }
  pthread_mutex_unlock (&all_lock);
}

static void
register_atfork (void)
{
  pthread_atfork (atfork_prepare, atfork_parent, atfork_child);
}

static void
fmt_time (int64_t t, char *buf, size_t len)
{
  struct tm tm;
  time_t tt = (time_t) t;

  gmtime_r (&tt, &tm);
  strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double
jitter (struct s3_creds_provider *pr, double d, double spread)
{
  return d * (1.0 - spread * (rand_r (&pr->seed) / (double) RAND_MAX));
}

/* Called with the lock held, once the keys in c were fetched at now. */
static void
schedule (struct s3_creds_provider *pr, const struct s3_creds *c, double now)
{
  pr->refreshing = c->expiration != 0;
  if (pr->refreshing)
    pr->next_refresh = now +
      jitter (pr, s3_creds_refresh_delay (now, c->expiration, pr->margin),
              0.1);
}

static void *
refresh_main (void *arg)
{
  struct s3_creds_provider *pr = arg;
  char err[sizeof pr->last_error];

  pthread_mutex_lock (&pr->lock);
  while (!pr->stop && pr->refreshing) {
    double now = wall_now ();
    struct s3_creds *c = NULL, *old;
    char when[32];
    int r;

    if (now < pr->next_refresh) {
      /* At most a second at a time: the wall clock may jump (suspend). */
      struct timespec ts;
      double wait = pr->next_refresh - now;
      if (wait > 1)
        wait = 1;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_sec += (time_t) wait;
      ts.tv_nsec += (long) ((wait - (time_t) wait) * 1e9);
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait (&pr->cond, &pr->lock, &ts);
      continue;
    }
    pthread_mutex_unlock (&pr->lock);
    r = creds_fetch (&pr->src, &c, err, sizeof err);
    now = wall_now ();
    pthread_mutex_lock (&pr->lock);
    if (pr->stop) {
      s3_creds_put (c);
      break;
    }
    if (r == 0) {
      old = pr->cur;
      pr->cur = c;
      pr->fetched = now;
      pr->refreshes++;
      pr->failures_in_row = 0;
      pr->last_error[0] = '\0';
      schedule (pr, c, now);
      pthread_mutex_unlock (&pr->lock);
      fmt_time (c->expiration, when, sizeof when);
      cs_debug ("s3 credentials: refreshed from %s: access key %s%s%s "
                "(in %.0f s); the next refresh in %.0f s", pr->src.desc,
                c->access_key, c->expiration ? ", expires " : ", no expiry",
                c->expiration ? when : "", (double) c->expiration - now,
                pr->refreshing ? pr->next_refresh - now : 0);
      s3_creds_put (old);
      pthread_mutex_lock (&pr->lock);
    }
    else {
      double delay = 1;
      unsigned i;
      int64_t exp = pr->cur->expiration;

      pr->failures++;
      pr->failures_in_row++;
      for (i = 1; i < pr->failures_in_row && delay < BACKOFF_MAX; ++i)
        delay *= 2;
      if (delay > BACKOFF_MAX)
        delay = BACKOFF_MAX;
      delay = jitter (pr, delay, 0.5);
      pr->next_refresh = now + delay;
      snprintf (pr->last_error, sizeof pr->last_error, "%s", err);
      pthread_mutex_unlock (&pr->lock);
      fmt_time (exp, when, sizeof when);
      if (exp > now)
        cs_warn ("s3 credentials: refresh failed (%u in a row; the keys in "
                 "use expire at %s, in %.0f s; next try in %.1f s): %s",
                 pr->failures_in_row, when, exp - now, delay, err);
      else
        cs_error ("s3 credentials: refresh failed (%u in a row; the keys "
                  "EXPIRED at %s, requests fail until a refresh works; next "
                  "try in %.1f s): %s", pr->failures_in_row, when, delay,
                  err);
      pthread_mutex_lock (&pr->lock);
    }
  }
  pthread_mutex_unlock (&pr->lock);
  return NULL;
}

/* With the lock held: a refresh thread in this process, if needed. */
static void
ensure_thread (struct s3_creds_provider *pr)
{
  int e;

  if (!pr->refreshing || pr->thread_running || pr->stop)
    return;
  e = pthread_create (&pr->thread, NULL, refresh_main, pr);
  if (e == 0)
    pr->thread_running = true;
  else if (pr->failures == 0) {
    pr->failures++;
    snprintf (pr->last_error, sizeof pr->last_error,
              "cannot start the refresh thread: %s", strerror (e));
  }
}

int
s3_creds_open (const struct s3_creds_params *p,
               struct s3_creds_provider **out)
{
  struct s3_creds_provider *pr;
  char err[700], when[32];
  double now;
  int r;

  *out = NULL;
  pthread_once (&atfork_once, register_atfork);
  pr = calloc (1, sizeof *pr);
  if (pr == NULL)
    return -ENOMEM;
  r = plan (p, &pr->src);
  if (r < 0) {
    if (r == -ENOMEM)
      cs_error ("s3 credentials: out of memory");
    source_free (&pr->src);
    free (pr);
    return r;
  }
  if (pr->src.ca_file == NULL && dup_into (&pr->src.ca_file, p->ca_file) < 0)
    goto nomem;
  pr->margin = p->margin > 0 ? p->margin : DEFAULT_MARGIN;
  pr->seed = (unsigned) time (NULL) ^ (unsigned) getpid () ^
    (unsigned) (uintptr_t) pr;
  r = creds_fetch (&pr->src, &pr->cur, err, sizeof err);
  if (r < 0) {
    if (r == -ENOMEM)
      cs_error ("s3 credentials: %s: out of memory", pr->src.desc);
    else
      cs_error ("s3 credentials: %s", err);
    source_free (&pr->src);
    free (pr);
    return r;
  }
  now = wall_now ();
  if (pr->cur->expiration && pr->cur->expiration <= now) {
    fmt_time (pr->cur->expiration, when, sizeof when);
    cs_error ("s3 credentials: %s: the keys it gave (access key %s) expired "
              "at %s: check the source, and this machine's clock",
              pr->src.desc, pr->cur->access_key, when);
    s3_creds_put (pr->cur);
    source_free (&pr->src);
    free (pr);
    return -EACCES;
  }
  pr->refs = 1;
  pr->fetched = now;
  init_sync (pr);
  schedule (pr, pr->cur, now);
  fmt_time (pr->cur->expiration, when, sizeof when);
  cs_debug ("s3 credentials: access key %s from %s%s%s%s%s",
            pr->cur->access_key, pr->src.desc,
            pr->cur->session_token ? ", with a session token" : "",
            pr->cur->expiration ? ", expires " : "",
            pr->cur->expiration ? when : "",
            pr->refreshing ? ", refreshed in the background" : "");
  pthread_mutex_lock (&all_lock);
  pr->next = all_providers;
  all_providers = pr;
  pthread_mutex_lock (&pr->lock);
  ensure_thread (pr);
  pthread_mutex_unlock (&pr->lock);
  pthread_mutex_unlock (&all_lock);
  *out = pr;
  return 0;

 nomem:
  cs_error ("s3 credentials: out of memory");
  source_free (&pr->src);
  free (pr);
  return -ENOMEM;
}

struct s3_creds_provider *
s3_creds_ref (struct s3_creds_provider *pr)
{
  __atomic_add_fetch (&pr->refs, 1, __ATOMIC_RELAXED);
  return pr;
}

void
s3_creds_close (struct s3_creds_provider *pr)
{
  struct s3_creds_provider **pp;
  bool join;

  if (pr == NULL || __atomic_sub_fetch (&pr->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  pthread_mutex_lock (&all_lock);
  for (pp = &all_providers; *pp; pp = &(*pp)->next)
    if (*pp == pr) {
      *pp = pr->next;
      break;
    }
  pthread_mutex_unlock (&all_lock);
  pthread_mutex_lock (&pr->lock);
  pr->stop = true;
  join = pr->thread_running;
  pthread_cond_broadcast (&pr->cond);
  pthread_mutex_unlock (&pr->lock);
  /* (a fetch under way finishes first: at most its timeout) */
  if (join)
    pthread_join (pr->thread, NULL);
  s3_creds_put (pr->cur);
  source_free (&pr->src);
  pthread_mutex_destroy (&pr->lock);
  pthread_cond_destroy (&pr->cond);
  free (pr);
}

struct s3_creds *
s3_creds_get (struct s3_creds_provider *pr)
{
  struct s3_creds *c;
  double now = 0;
  bool log_expired = false;
  char err[sizeof pr->last_error], when[32];

  pthread_mutex_lock (&pr->lock);
  ensure_thread (pr);
  c = pr->cur;
  __atomic_add_fetch (&c->refs, 1, __ATOMIC_RELAXED);
  if (c->expiration) {
    now = wall_now ();
    if (now >= c->expiration &&
        now - pr->last_expired_log >= EXPIRED_LOG_EVERY) {
      pr->last_expired_log = now;
      log_expired = true;
      snprintf (err, sizeof err, "%s", pr->last_error[0] ? pr->last_error
                : "no refresh has run yet");
    }
  }
  pthread_mutex_unlock (&pr->lock);
  if (log_expired) {
    fmt_time (c->expiration, when, sizeof when);
    cs_error ("s3 credentials from %s: access key %s expired at %s (%.0f s "
              "ago) and no refresh has worked since (last: %s): the store "
              "refuses requests until one does", pr->src.desc,
              c->access_key, when, now - c->expiration, err);
  }
  return c;
}

const char *
s3_creds_source (struct s3_creds_provider *pr)
{
  return pr->src.desc;
}

enum s3_creds_kind
s3_creds_kind (struct s3_creds_provider *pr)
{
  return pr->src.kind;
}

void
s3_creds_describe (struct s3_creds_provider *pr, char *buf, size_t len)
{
  char when[32], ak[136], err[sizeof pr->last_error];
  int64_t exp;
  unsigned refreshes;
  uint64_t failures;
  double now = wall_now ();

  pthread_mutex_lock (&pr->lock);
  snprintf (ak, sizeof ak, "%s", pr->cur->access_key);
  exp = pr->cur->expiration;
  refreshes = pr->refreshes;
  failures = pr->failures;
  snprintf (err, sizeof err, "%s", pr->last_error);
  pthread_mutex_unlock (&pr->lock);
  fmt_time (exp, when, sizeof when);
  if (exp == 0)
    snprintf (buf, len, "%s (%s): access key %s",
              s3_creds_kind_name (pr->src.kind), pr->src.desc, ak);
  else
    snprintf (buf, len, "%s (%s): access key %s, expires %s (in %.0f s), "
              "%u refreshes, %" PRIu64 " failed%s%s",
              s3_creds_kind_name (pr->src.kind), pr->src.desc, ak, when,
              exp - now, refreshes, failures, err[0] ? ", last failure: " : "",
              err);
}
