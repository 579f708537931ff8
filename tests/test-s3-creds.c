/* s3chunk: the order in which S3 credentials are found (parameters >
 * environment > shared credentials file > config file), profile selection,
 * the messages when something is missing, and that no secret is logged.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "s3-creds.h"
#include "unit.h"

/* Every message, at every level, so we can look for secrets in them. */
static char logged[16384];
static char all_logged[65536];

static void
append (char *buf, size_t size, enum cs_log_level level, const char *msg)
{
  size_t n = strlen (buf);

  snprintf (buf + n, size - n, "%d: %s\n", (int) level, msg);
}

static void
capture (enum cs_log_level level, const char *msg)
{
  append (logged, sizeof logged, level, msg);
  append (all_logged, sizeof all_logged, level, msg);
}

static char dir[] = "/tmp/test-s3-creds-XXXXXX";
static char cred_file[256], config_file[256];

static void
write_file (const char *path, const char *text)
{
  FILE *f = fopen (path, "w");

  if (f == NULL || fputs (text, f) < 0 || fclose (f) != 0) {
    perror (path);
    exit (1);
  }
}

static void
clear_env (void)
{
  unsetenv ("AWS_ACCESS_KEY_ID");
  unsetenv ("AWS_SECRET_ACCESS_KEY");
  unsetenv ("AWS_SESSION_TOKEN");
  unsetenv ("AWS_PROFILE");
  setenv ("AWS_SHARED_CREDENTIALS_FILE", cred_file, 1);
  setenv ("AWS_CONFIG_FILE", config_file, 1);
  unlink (cred_file);
  unlink (config_file);
  logged[0] = '\0';
}

static const char credentials_text[] =
  "# a comment\n"
  "[default]\n"
  "aws_access_key_id = FILEDEFAULTKEY\n"
  "aws_secret_access_key = file/default+secret=\n"
  "\n"
  "[work]\n"
  "; another comment\n"
  "  AWS_Access_Key_ID=WORKKEY  \r\n"
  "aws_secret_access_key=work-secret\r\n"
  "aws_session_token = work-token\n"
  "s3 =\n"
  "  aws_access_key_id = NESTEDNOTME\n"
  "region = eu-west-1\n"
  "\n"
  "[half]\n"
  "aws_access_key_id = HALFKEY\n"
  "[regiononly]\n"
  "region = us-west-2\n";

static void
test_params_first (void)
{
  struct s3_creds c;

  clear_env ();
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
  write_file (cred_file, credentials_text);
  CHECK (s3_creds_resolve ("PARAMKEY", "param-secret", NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "PARAMKEY");
  CHECK_STR (c.secret_key, "param-secret");
  CHECK (c.session_token == NULL);
  CHECK_STR (c.source, "parameters");
  s3_creds_free (&c);
  CHECK (c.access_key == NULL && c.secret_key == NULL);

  CHECK (s3_creds_resolve ("PARAMKEY", "param-secret", "param-token",
                           "work", &c) == 0);
  CHECK_STR (c.session_token, "param-token");
  s3_creds_free (&c);

  /* Half a pair is an error, not a silent fall-through. */
  logged[0] = '\0';
  CHECK (s3_creds_resolve ("PARAMKEY", NULL, NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "access_key given without secret_key") != NULL);
  CHECK (s3_creds_resolve ("", "param-secret", NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "secret_key given without access_key") != NULL);
}

static void
test_env_second (void)
{
  struct s3_creds c;

  clear_env ();
  write_file (cred_file, credentials_text);
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
  setenv ("AWS_SESSION_TOKEN", "env-token", 1);
  CHECK (s3_creds_resolve (NULL, "", NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "ENVKEY");
  CHECK_STR (c.secret_key, "env-secret");
  CHECK_STR (c.session_token, "env-token");
  CHECK_STR (c.source, "environment");
  s3_creds_free (&c);

  /* AWS_PROFILE does not override the environment's keys... */
  setenv ("AWS_PROFILE", "work", 1);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "ENVKEY");
  s3_creds_free (&c);

  /* ...but a profile parameter does, like the AWS CLI's --profile. */
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "work", &c) == 0);
  CHECK_STR (c.access_key, "WORKKEY");
  s3_creds_free (&c);

  /* Half a pair in the environment: a warning, then the file. */
  clear_env ();
  write_file (cred_file, credentials_text);
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "FILEDEFAULTKEY");
  CHECK (strstr (logged, "AWS_ACCESS_KEY_ID is set but "
                 "AWS_SECRET_ACCESS_KEY is not") != NULL);
  s3_creds_free (&c);
}

static void
test_file_third (void)
{
  struct s3_creds c;
  char want_source[400];

  clear_env ();
  write_file (cred_file, credentials_text);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "FILEDEFAULTKEY");
  CHECK_STR (c.secret_key, "file/default+secret=");
  CHECK (c.session_token == NULL);
  snprintf (want_source, sizeof want_source, "%s, profile \"default\"",
            cred_file);
  CHECK_STR (c.source, want_source);
  s3_creds_free (&c);

  /* AWS_PROFILE picks the section; names are case-insensitive, values
   * trimmed (CRLF too), the nested "s3 =" block is not read.
   */
  setenv ("AWS_PROFILE", "work", 1);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "WORKKEY");
  CHECK_STR (c.secret_key, "work-secret");
  CHECK_STR (c.session_token, "work-token");
  s3_creds_free (&c);

  /* The profile parameter beats AWS_PROFILE. */
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "default", &c) == 0);
  CHECK_STR (c.access_key, "FILEDEFAULTKEY");
  s3_creds_free (&c);

  /* A profile with only one key is an error naming what is missing. */
  logged[0] = '\0';
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "half", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"half\" has aws_access_key_id but not "
                 "aws_secret_access_key") != NULL);

  /* A named profile that is nowhere. */
  logged[0] = '\0';
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "nosuch", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"nosuch\" not found") != NULL);
  CHECK (strstr (logged, cred_file) != NULL);

  /* A profile that exists but holds no keys. */
  logged[0] = '\0';
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "regiononly", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"regiononly\" has no") != NULL);
}

static void
test_config_file (void)
{
  struct s3_creds c;

  clear_env ();
  write_file (config_file,
              "[default]\nregion = us-east-1\n"
              "aws_access_key_id = CONFIGDEFAULT\n"
              "aws_secret_access_key = config-default-secret\n"
              "[profile dev]\n"
              "aws_access_key_id = CONFIGDEV\n"
              "aws_secret_access_key = config-dev-secret\n"
              "[dev]\naws_access_key_id = WRONGSECTION\n");
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "CONFIGDEFAULT");
  s3_creds_free (&c);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, "dev", &c) == 0);
  CHECK_STR (c.access_key, "CONFIGDEV");
  CHECK_STR (c.secret_key, "config-dev-secret");
  s3_creds_free (&c);

  /* The credentials file comes before the config file. */
  write_file (cred_file, credentials_text);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "FILEDEFAULTKEY");
  s3_creds_free (&c);
}

static void
test_home_default (void)
{
  struct s3_creds c;
  char aws[300], path[320];

  clear_env ();
  unsetenv ("AWS_SHARED_CREDENTIALS_FILE");
  unsetenv ("AWS_CONFIG_FILE");
  setenv ("HOME", dir, 1);
  snprintf (aws, sizeof aws, "%s/.aws", dir);
  mkdir (aws, 0700);
  snprintf (path, sizeof path, "%s/credentials", aws);
  write_file (path, "[default]\naws_access_key_id=HOMEKEY\n"
              "aws_secret_access_key=home-secret\n");
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "HOMEKEY");
  s3_creds_free (&c);

  /* "~/" in AWS_SHARED_CREDENTIALS_FILE is the home directory. */
  setenv ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", 1);
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.access_key, "HOMEKEY");
  s3_creds_free (&c);
  unlink (path);
  rmdir (aws);
}

static void
test_nothing (void)
{
  struct s3_creds c;

  clear_env ();
  CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "none found") != NULL);
  CHECK (strstr (logged, "AWS_ACCESS_KEY_ID") != NULL);
  CHECK (c.access_key == NULL);
}

int
main (void)
{
  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (cred_file, sizeof cred_file, "%s/credentials", dir);
  snprintf (config_file, sizeof config_file, "%s/config", dir);
  cs_log_set (capture);

  test_params_first ();
  test_env_second ();
  test_file_third ();
  test_config_file ();
  test_home_default ();
  logged[0] = '\0';
  {
    /* The debug line names the key id and source, never the secret. */
    struct s3_creds c;
    clear_env ();
    write_file (cred_file, credentials_text);
    setenv ("AWS_PROFILE", "work", 1);
    CHECK (s3_creds_resolve (NULL, NULL, NULL, NULL, &c) == 0);
    CHECK (strstr (logged, "WORKKEY") != NULL);
    CHECK (strstr (logged, "work-secret") == NULL);
    CHECK (strstr (logged, "work-token") == NULL);
    s3_creds_free (&c);
  }
  test_nothing ();

  {
    static const char *secrets[] = {
      "param-secret", "param-token", "env-secret", "env-token",
      "file/default+secret=", "work-secret", "work-token",
      "config-default-secret", "config-dev-secret", "home-secret",
    };
    size_t i;

    CHECK (strstr (all_logged, "s3 credentials") != NULL);
    for (i = 0; i < sizeof secrets / sizeof secrets[0]; ++i)
      if (strstr (all_logged, secrets[i])) {
        fprintf (stderr, "FAIL: secret %s was logged\n", secrets[i]);
        unit_failed++;
      }
  }

  clear_env ();
  rmdir (dir);
  return unit_done ("test-s3-creds");
}
