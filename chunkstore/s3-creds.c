/* s3chunk: resolving S3 credentials (see s3-creds.h for the order). */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "s3-creds.h"

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

void
s3_creds_free (struct s3_creds *c)
{
  wipe_free (c->access_key);
  wipe_free (c->secret_key);
  wipe_free (c->session_token);
  c->access_key = c->secret_key = c->session_token = NULL;
  c->source[0] = '\0';
}

static int
set_creds (struct s3_creds *c, const char *ak, const char *sk,
           const char *token)
{
  c->access_key = strdup (ak);
  c->secret_key = strdup (sk);
  c->session_token = given (token) ? strdup (token) : NULL;
  if (c->access_key == NULL || c->secret_key == NULL ||
      (given (token) && c->session_token == NULL)) {
    s3_creds_free (c);
    return -ENOMEM;
  }
  return 0;
}

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

struct profile_keys {
  char *access_key, *secret_key, *session_token;
  bool file_found, section_found;
};

static void
profile_keys_free (struct profile_keys *k)
{
  wipe_free (k->access_key);
  wipe_free (k->secret_key);
  wipe_free (k->session_token);
  k->access_key = k->secret_key = k->session_token = NULL;
}

static int
take (char **dst, const char *value)
{
  wipe_free (*dst);
  *dst = strdup (value);
  return *dst ? 0 : -ENOMEM;
}

/* Read the keys of [section] from an INI file the way the AWS CLI reads
 * it: '#' and ';' start comment lines, names are case-insensitive, values
 * are trimmed, indented lines under an empty value are a nested block
 * (ignored).  A missing file is not an error.
 */
static int
read_profile (const char *path, const char *section, struct profile_keys *k)
{
  FILE *f;
  char *line = NULL;
  size_t cap = 0;
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
    if (strcasecmp (s, "aws_access_key_id") == 0)
      r = take (&k->access_key, eq);
    else if (strcasecmp (s, "aws_secret_access_key") == 0)
      r = take (&k->secret_key, eq);
    else if (strcasecmp (s, "aws_session_token") == 0)
      r = take (&k->session_token, eq);
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

/* Look in one file.  1 if found (out filled), 0 if not there, < 0 error. */
static int
from_file (const char *path, const char *section, const char *profile,
           struct s3_creds *out, bool *profile_seen)
{
  struct profile_keys k = { NULL };
  int r;

  r = read_profile (path, section, &k);
  if (r < 0)
    goto out;
  if (!k.section_found)
    goto out;
  *profile_seen = true;
  if (!given (k.access_key) && !given (k.secret_key))
    goto out;                   /* e.g. a config profile with only region */
  if (!given (k.access_key) || !given (k.secret_key)) {
    cs_error ("s3 credentials: %s: profile \"%s\" has %s but not %s",
              path, profile,
              given (k.access_key) ? "aws_access_key_id" : "aws_secret_access_key",
              given (k.access_key) ? "aws_secret_access_key" : "aws_access_key_id");
    r = -EINVAL;
    goto out;
  }
  r = set_creds (out, k.access_key, k.secret_key, k.session_token);
  if (r == 0) {
    snprintf (out->source, sizeof out->source, "%s, profile \"%s\"",
              path, profile);
    r = 1;
  }
 out:
  profile_keys_free (&k);
  return r;
}

int
s3_creds_resolve (const char *access_key, const char *secret_key,
                  const char *session_token, const char *profile,
                  struct s3_creds *out)
{
  const char *env_ak = getenv ("AWS_ACCESS_KEY_ID");
  const char *env_sk = getenv ("AWS_SECRET_ACCESS_KEY");
  const char *env_profile = getenv ("AWS_PROFILE");
  CLEANUP_FREE char *cred_path = NULL, *config_path = NULL;
  CLEANUP_FREE char *config_section = NULL;
  bool profile_named = given (profile) || given (env_profile);
  bool profile_seen = false;
  int r;

  memset (out, 0, sizeof *out);

  /* 1. Parameters. */
  if (given (access_key) || given (secret_key)) {
    if (!given (access_key) || !given (secret_key)) {
      cs_error ("s3 credentials: %s given without %s",
                given (access_key) ? "access_key" : "secret_key",
                given (access_key) ? "secret_key" : "access_key");
      return -EINVAL;
    }
    r = set_creds (out, access_key, secret_key, session_token);
    if (r == 0)
      snprintf (out->source, sizeof out->source, "parameters");
    goto done;
  }

  /* 2. Environment, unless a profile was asked for by parameter. */
  if (!given (profile)) {
    if (given (env_ak) && given (env_sk)) {
      r = set_creds (out, env_ak, env_sk, getenv ("AWS_SESSION_TOKEN"));
      if (r == 0)
        snprintf (out->source, sizeof out->source, "environment");
      goto done;
    }
    if (given (env_ak) || given (env_sk))
      cs_warn ("s3 credentials: %s is set but %s is not: ignoring both",
               given (env_ak) ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
               given (env_ak) ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
  }

  /* 3. Shared credentials file, then config file. */
  if (!given (profile))
    profile = given (env_profile) ? env_profile : "default";
  cred_path = aws_file ("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  config_path = aws_file ("AWS_CONFIG_FILE", "config");
  if (strcmp (profile, "default") == 0)
    config_section = strdup ("default");
  else if (asprintf (&config_section, "profile %s", profile) < 0)
    config_section = NULL;
  if (config_section == NULL)
    return -ENOMEM;
  r = 0;
  if (cred_path)
    r = from_file (cred_path, profile, profile, out, &profile_seen);
  if (r == 0 && config_path)
    r = from_file (config_path, config_section, profile, out,
                   &profile_seen);
  if (r < 0)
    return r;
  if (r == 1) {
    r = 0;
    goto done;
  }

  if (profile_named && !profile_seen)
    cs_error ("s3 credentials: profile \"%s\" not found in %s or %s",
              profile, cred_path ? cred_path : "~/.aws/credentials",
              config_path ? config_path : "~/.aws/config");
  else if (profile_seen)
    cs_error ("s3 credentials: profile \"%s\" has no aws_access_key_id / "
              "aws_secret_access_key (only static keys are supported)",
              profile);
  else
    cs_error ("s3 credentials: none found: give access-key= and "
              "secret-key=, or set AWS_ACCESS_KEY_ID and "
              "AWS_SECRET_ACCESS_KEY, or add a [default] profile to %s",
              cred_path ? cred_path : "~/.aws/credentials");
  return -EINVAL;

 done:
  if (r == 0)
    cs_debug ("s3 credentials: access key %s from %s%s", out->access_key,
              out->source, out->session_token ? ", with a session token" : "");
  return r;
}
