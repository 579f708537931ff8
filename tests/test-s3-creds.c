/* s3chunk: the order in which S3 credentials are found (parameters >
 * environment > web identity > profile > container > instance metadata),
 * profile selection, the messages when something is missing, the parsers
 * (credential_process and metadata JSON, STS XML, ISO 8601 times), the
 * refresh schedule, a credential_process rotating keys under readers that
 * must never see a torn snapshot, and that no secret is logged.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <time.h>

#include "log.h"
#include "s3-creds-int.h"
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
  unsetenv ("AWS_WEB_IDENTITY_TOKEN_FILE");
  unsetenv ("AWS_ROLE_ARN");
  unsetenv ("AWS_ROLE_SESSION_NAME");
  unsetenv ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  unsetenv ("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  unsetenv ("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  unsetenv ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
  unsetenv ("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  unsetenv ("AWS_ENDPOINT_URL_STS");
  unsetenv ("AWS_ENDPOINT_URL");
  unsetenv ("AWS_STS_REGIONAL_ENDPOINTS");
  unsetenv ("AWS_REGION");
  unsetenv ("AWS_DEFAULT_REGION");
  /* Never the network in these tests: no instance metadata. */
  setenv ("AWS_EC2_METADATA_DISABLED", "true", 1);
  setenv ("AWS_SHARED_CREDENTIALS_FILE", cred_file, 1);
  setenv ("AWS_CONFIG_FILE", config_file, 1);
  unlink (cred_file);
  unlink (config_file);
  logged[0] = '\0';
}

/* What a resolution gave, copied out of the provider. */
struct got {
  char ak[128], sk[128], tok[128];
  bool has_tok;
  char source[600];
};

static int
resolve_with (const struct s3_creds_params *p, struct got *g)
{
  struct s3_creds_provider *pr;
  struct s3_creds *c;
  int r;

  memset (g, 0, sizeof *g);
  r = s3_creds_open (p, &pr);
  if (r < 0)
    return r;
  c = s3_creds_get (pr);
  snprintf (g->ak, sizeof g->ak, "%s", c->access_key);
  snprintf (g->sk, sizeof g->sk, "%s", c->secret_key);
  g->has_tok = c->session_token != NULL;
  snprintf (g->tok, sizeof g->tok, "%s", c->session_token ? c->session_token
            : "");
  snprintf (g->source, sizeof g->source, "%s", s3_creds_source (pr));
  s3_creds_put (c);
  s3_creds_close (pr);
  return 0;
}

static int
resolve (const char *ak, const char *sk, const char *tok, const char *profile,
         struct got *g)
{
  struct s3_creds_params p = {
    .access_key = ak, .secret_key = sk, .session_token = tok,
    .profile = profile,
  };
  return resolve_with (&p, g);
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
  struct got c;

  clear_env ();
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
  write_file (cred_file, credentials_text);
  CHECK (resolve ("PARAMKEY", "param-secret", NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "PARAMKEY");
  CHECK_STR (c.sk, "param-secret");
  CHECK (!c.has_tok);
  CHECK_STR (c.source, "parameters");

  CHECK (resolve ("PARAMKEY", "param-secret", "param-token",
                           "work", &c) == 0);
  CHECK_STR (c.tok, "param-token");

  /* Half a pair is an error, not a silent fall-through. */
  logged[0] = '\0';
  CHECK (resolve ("PARAMKEY", NULL, NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "access_key given without secret_key") != NULL);
  CHECK (resolve ("", "param-secret", NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "secret_key given without access_key") != NULL);
}

static void
test_env_second (void)
{
  struct got c;

  clear_env ();
  write_file (cred_file, credentials_text);
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
  setenv ("AWS_SESSION_TOKEN", "env-token", 1);
  CHECK (resolve (NULL, "", NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "ENVKEY");
  CHECK_STR (c.sk, "env-secret");
  CHECK_STR (c.tok, "env-token");
  CHECK_STR (c.source, "environment");

  /* AWS_PROFILE does not override the environment's keys... */
  setenv ("AWS_PROFILE", "work", 1);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "ENVKEY");

  /* ...but a profile parameter does, like the AWS CLI's --profile. */
  CHECK (resolve (NULL, NULL, NULL, "work", &c) == 0);
  CHECK_STR (c.ak, "WORKKEY");

  /* Half a pair in the environment: a warning, then the file. */
  clear_env ();
  write_file (cred_file, credentials_text);
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "FILEDEFAULTKEY");
  CHECK (strstr (logged, "AWS_ACCESS_KEY_ID is set but "
                 "AWS_SECRET_ACCESS_KEY is not") != NULL);
}

static void
test_file_third (void)
{
  struct got c;
  char want_source[400];

  clear_env ();
  write_file (cred_file, credentials_text);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "FILEDEFAULTKEY");
  CHECK_STR (c.sk, "file/default+secret=");
  CHECK (!c.has_tok);
  snprintf (want_source, sizeof want_source, "%s, profile \"default\"",
            cred_file);
  CHECK_STR (c.source, want_source);

  /* AWS_PROFILE picks the section; names are case-insensitive, values
   * trimmed (CRLF too), the nested "s3 =" block is not read.
   */
  setenv ("AWS_PROFILE", "work", 1);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "WORKKEY");
  CHECK_STR (c.sk, "work-secret");
  CHECK_STR (c.tok, "work-token");

  /* The profile parameter beats AWS_PROFILE. */
  CHECK (resolve (NULL, NULL, NULL, "default", &c) == 0);
  CHECK_STR (c.ak, "FILEDEFAULTKEY");

  /* A profile with only one key is an error naming what is missing. */
  logged[0] = '\0';
  CHECK (resolve (NULL, NULL, NULL, "half", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"half\" has aws_access_key_id but not "
                 "aws_secret_access_key") != NULL);

  /* A named profile that is nowhere. */
  logged[0] = '\0';
  CHECK (resolve (NULL, NULL, NULL, "nosuch", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"nosuch\" not found") != NULL);
  CHECK (strstr (logged, cred_file) != NULL);

  /* A profile that exists but holds no keys. */
  logged[0] = '\0';
  CHECK (resolve (NULL, NULL, NULL, "regiononly", &c) == -EINVAL);
  CHECK (strstr (logged, "profile \"regiononly\" has no") != NULL);
}

static void
test_config_file (void)
{
  struct got c;

  clear_env ();
  write_file (config_file,
              "[default]\nregion = us-east-1\n"
              "aws_access_key_id = CONFIGDEFAULT\n"
              "aws_secret_access_key = config-default-secret\n"
              "[profile dev]\n"
              "aws_access_key_id = CONFIGDEV\n"
              "aws_secret_access_key = config-dev-secret\n"
              "[dev]\naws_access_key_id = WRONGSECTION\n");
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "CONFIGDEFAULT");
  CHECK (resolve (NULL, NULL, NULL, "dev", &c) == 0);
  CHECK_STR (c.ak, "CONFIGDEV");
  CHECK_STR (c.sk, "config-dev-secret");

  /* The credentials file comes before the config file. */
  write_file (cred_file, credentials_text);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "FILEDEFAULTKEY");
}

static void
test_home_default (void)
{
  struct got c;
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
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "HOMEKEY");

  /* "~/" in AWS_SHARED_CREDENTIALS_FILE is the home directory. */
  setenv ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", 1);
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
  CHECK_STR (c.ak, "HOMEKEY");
  unlink (path);
  rmdir (aws);
}

static void
test_nothing (void)
{
  struct got c;

  clear_env ();
  CHECK (resolve (NULL, NULL, NULL, NULL, &c) == -EINVAL);
  CHECK (strstr (logged, "none found") != NULL);
  CHECK (strstr (logged, "AWS_ACCESS_KEY_ID") != NULL);
}


/* ------------------------------------------------------------ parsers */

static void
test_times (void)
{
  static const struct { const char *s; int64_t want; } ok[] = {
    { "1970-01-01T00:00:00Z", 0 },
    { "2024-05-01T12:00:00Z", 1714564800 },
    { "2024-05-01T12:00:00.123456Z", 1714564800 },
    { "2024-05-01t12:00:00z", 1714564800 },
    { "2024-05-01T14:00:00+02:00", 1714564800 },
    { "2024-05-01T07:30:00-0430", 1714564800 },
    { " 2016-02-25T06:03:31Z\n", 1456380211 },
  };
  static const char *const bad[] = {
    "", "2024-05-01", "2024-05-01T12:00:00", "2024-13-01T00:00:00Z",
    "2024-05-01T25:00:00Z", "yesterday", "2024-05-01T12:00:00Zjunk",
    "2024-05-01T12:00:00.Z",
  };
  size_t i;
  int64_t t;

  for (i = 0; i < sizeof ok / sizeof ok[0]; ++i) {
    t = -1;
    CHECK (s3_creds_parse_time (ok[i].s, &t) == 0);
    CHECK_EQ (t, ok[i].want);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; ++i)
    CHECK (s3_creds_parse_time (bad[i], &t) == -EINVAL);
}

static void
test_json (void)
{
  struct s3_creds *c;
  char err[300];
  const char *j;

  /* credential_process, as the AWS CLI documents it. */
  j = "{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC\", "
    "\"SecretAccessKey\": \"proc\\/secret\\u00e9\", "
    "\"SessionToken\": \"proc-token\", "
    "\"Expiration\": \"2030-01-01T00:00:00Z\"}";
  CHECK (s3_creds_parse_json (S3_JSON_PROCESS, j, strlen (j), &c, err,
                              sizeof err) == 0);
  if (c) {
    CHECK_STR (c->access_key, "ASIAPROC");
    CHECK_STR (c->secret_key, "proc/secret\xc3\xa9");
    CHECK_STR (c->session_token, "proc-token");
    CHECK_EQ (c->expiration, 1893456000);
    s3_creds_put (c);
  }
  /* Without Expiration and SessionToken: long-term keys. */
  j = " {\"Version\":1,\"AccessKeyId\":\"AKIA\",\"SecretAccessKey\":\"s\"} ";
  CHECK (s3_creds_parse_json (S3_JSON_PROCESS, j, strlen (j), &c, err,
                              sizeof err) == 0);
  if (c) {
    CHECK (c->session_token == NULL);
    CHECK_EQ (c->expiration, 0);
    s3_creds_put (c);
  }
  j = "{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"s\"}";
  CHECK (s3_creds_parse_json (S3_JSON_PROCESS, j, strlen (j), &c, err,
                              sizeof err) == -EPROTO);
  CHECK (strstr (err, "Version") != NULL);
  j = "{\"Version\": 1, \"AccessKeyId\": \"A\"}";
  CHECK (s3_creds_parse_json (S3_JSON_PROCESS, j, strlen (j), &c, err,
                              sizeof err) == -EPROTO);
  CHECK (strstr (err, "SecretAccessKey") != NULL);
  j = "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"s\", "
    "\"Expiration\": \"soon\"}";
  CHECK (s3_creds_parse_json (S3_JSON_PROCESS, j, strlen (j), &c, err,
                              sizeof err) == -EPROTO);
  CHECK (strstr (err, "ISO 8601") != NULL);

  /* The EC2 instance metadata answer; unknown members, nested ones. */
  j = "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : "
    "\"2012-04-26T16:39:16Z\",\n  \"Type\" : \"AWS-HMAC\",\n"
    "  \"AccessKeyId\" : \"ASIAIMDS\",\n  \"SecretAccessKey\" : \"imds-s\",\n"
    "  \"Token\" : \"imds-token\",\n  \"Extra\": {\"a\": [1, 2, {\"b\": null}]},"
    "\n  \"Expiration\" : \"2017-05-17T15:09:54Z\"\n}";
  CHECK (s3_creds_parse_json (S3_JSON_AWS_METADATA, j, strlen (j), &c, err,
                              sizeof err) == 0);
  if (c) {
    CHECK_STR (c->access_key, "ASIAIMDS");
    CHECK_STR (c->session_token, "imds-token");
    CHECK_EQ (c->expiration, 1495033794);
    s3_creds_put (c);
  }
  /* Metadata keys always expire; a failure Code is refused. */
  j = "{\"AccessKeyId\": \"A\", \"SecretAccessKey\": \"s\", \"Token\": \"t\"}";
  CHECK (s3_creds_parse_json (S3_JSON_AWS_METADATA, j, strlen (j), &c, err,
                              sizeof err) == -EPROTO);
  j = "{\"Code\": \"AssumeRoleUnauthorizedAccess\", \"Message\": \"no\"}";
  CHECK (s3_creds_parse_json (S3_JSON_AWS_METADATA, j, strlen (j), &c, err,
                              sizeof err) == -EACCES);
  CHECK (strstr (err, "AssumeRoleUnauthorizedAccess") != NULL);
  j = "{\"code\": \"InvalidToken\", \"message\": \"bad auth\"}";
  CHECK (s3_creds_parse_json (S3_JSON_AWS_METADATA, j, strlen (j), &c, err,
                              sizeof err) == -EACCES);
  CHECK (strstr (err, "InvalidToken: bad auth") != NULL);

  /* Alibaba's names. */
  j = "{\"AccessKeyId\" : \"STS.ALI\", \"AccessKeySecret\" : \"ali-s\", "
    "\"Expiration\" : \"2017-11-01T05:20:01Z\", \"SecurityToken\" : "
    "\"ali-token\", \"LastUpdated\" : \"2017-10-31T23:20:01Z\", "
    "\"Code\" : \"Success\"}";
  CHECK (s3_creds_parse_json (S3_JSON_ALIBABA, j, strlen (j), &c, err,
                              sizeof err) == 0);
  if (c) {
    CHECK_STR (c->secret_key, "ali-s");
    CHECK_STR (c->session_token, "ali-token");
    CHECK_EQ (c->expiration, 1509513601);
    s3_creds_put (c);
  }

  /* Not JSON objects. */
  {
    static const char *const bad[] = {
      "", "[]", "{", "{\"a\" 1}", "{\"a\": \"\\x\"}", "{\"a\": 1,}",
      "{\"a\": \"b\"} x", "{\"a\": \"\\u0000\"}", "{\"a\": [1, 2}",
      "{\"a\": \"\\ud800\"}",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i)
      CHECK (s3_creds_parse_json (S3_JSON_PROCESS, bad[i], strlen (bad[i]),
                                  &c, err, sizeof err) == -EPROTO);
  }
}

static void
test_sts_xml (void)
{
  struct s3_creds *c;
  char err[300];
  const char *x =
    "<AssumeRoleWithWebIdentityResponse "
    "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>amzn1.account</SubjectFromWebIdentityToken>\n"
    "    <Credentials>\n"
    "      <SessionToken>sts-token</SessionToken>\n"
    "      <SecretAccessKey>sts/secret</SecretAccessKey>\n"
    "      <Expiration>2014-10-24T23:00:23Z</Expiration>\n"
    "      <AccessKeyId>ASIASTS</AccessKeyId>\n"
    "    </Credentials>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata><RequestId>ad4156e9</RequestId></ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

  CHECK (s3_creds_parse_sts (x, strlen (x), &c, err, sizeof err) == 0);
  if (c) {
    CHECK_STR (c->access_key, "ASIASTS");
    CHECK_STR (c->secret_key, "sts/secret");
    CHECK_STR (c->session_token, "sts-token");
    CHECK_EQ (c->expiration, 1414191623);
    s3_creds_put (c);
  }
  x = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    "<Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
    "<Message>Token expired</Message></Error>"
    "<RequestId>1</RequestId></ErrorResponse>";
  CHECK (s3_creds_parse_sts (x, strlen (x), &c, err, sizeof err) == -EACCES);
  CHECK (strstr (err, "InvalidIdentityToken: Token expired") != NULL);
  x = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
    "<Credentials><AccessKeyId>A</AccessKeyId></Credentials>"
    "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
  CHECK (s3_creds_parse_sts (x, strlen (x), &c, err, sizeof err) == -EPROTO);
  x = "not xml";
  CHECK (s3_creds_parse_sts (x, strlen (x), &c, err, sizeof err) == -EPROTO);
  x = "<!DOCTYPE a [<!ENTITY e \"x\">]><AssumeRoleWithWebIdentityResponse/>";
  CHECK (s3_creds_parse_sts (x, strlen (x), &c, err, sizeof err) == -EPROTO);
}

static void
test_refresh_delay (void)
{
  /* Six hours left: halfway (3 h) is earlier than 5 min before. */
  CHECK_EQ (s3_creds_refresh_delay (1000, 1000 + 21600, 300), 10800);
  /* Eight minutes left: 5 min before expiry (3 min) is earlier. */
  CHECK_EQ (s3_creds_refresh_delay (1000, 1000 + 480, 300), 180);
  /* Thirty seconds, margin 10: halfway. */
  CHECK_EQ (s3_creds_refresh_delay (1000, 1030, 10), 15);
  /* Less than the margin left: halfway, never a storm. */
  CHECK_EQ (s3_creds_refresh_delay (1000, 1100, 300), 50);
  /* Nearly or already expired: in a second. */
  CHECK_EQ (s3_creds_refresh_delay (1000, 1001, 300), 1);
  CHECK_EQ (s3_creds_refresh_delay (1000, 900, 300), 1);
}

static void
test_kinds (void)
{
  enum s3_creds_kind k;
  const char *role;

  CHECK (s3_creds_parse_kind (NULL, &k, &role) == 0 && k == S3_CREDS_AUTO);
  CHECK (s3_creds_parse_kind ("imds", &k, &role) == 0 && k == S3_CREDS_IMDS);
  CHECK (s3_creds_parse_kind ("web-identity", &k, &role) == 0 &&
         k == S3_CREDS_WEB_IDENTITY);
  CHECK (s3_creds_parse_kind ("ecs-ram-role", &k, &role) == 0 &&
         k == S3_CREDS_ECS_RAM_ROLE && role == NULL);
  CHECK (s3_creds_parse_kind ("ecs-ram-role:MyRole", &k, &role) == 0 &&
         k == S3_CREDS_ECS_RAM_ROLE && role && strcmp (role, "MyRole") == 0);
  CHECK (s3_creds_parse_kind ("ecs-ram-role:", &k, &role) == -EINVAL);
  CHECK (s3_creds_parse_kind ("ecs-ram-role:a/b", &k, &role) == -EINVAL);
  CHECK (s3_creds_parse_kind ("IMDS", &k, &role) == -EINVAL);
  CHECK (s3_creds_parse_kind ("sso", &k, &role) == -EINVAL);
  CHECK (creds_container_host_allowed ("127.0.0.1"));
  CHECK (creds_container_host_allowed ("127.1.2.3"));
  CHECK (creds_container_host_allowed ("::1"));
  CHECK (creds_container_host_allowed ("169.254.170.2"));
  CHECK (creds_container_host_allowed ("169.254.170.23"));
  CHECK (creds_container_host_allowed ("fd00:ec2::23"));
  CHECK (!creds_container_host_allowed ("10.0.0.1"));
  CHECK (!creds_container_host_allowed ("169.254.169.254"));
  CHECK (!creds_container_host_allowed ("192.0.2.1"));
}

/* ------------------------------------------------------- chain order */


struct chain_row {
  const char *what;
  const char *env[8];           /* NAME=VALUE; "files" writes both files */
  const char *credentials, *profile, *access_key;
  int want_r;
  enum s3_creds_kind want;
  const char *want_in_desc;
};

static void
test_chain_table (void)
{
  static const char profiles[] =
    "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = fs\n"
    "[proc]\ncredential_process = /bin/echo hello\n"
    "[wi]\nrole_arn = arn:aws:iam::1:role/wi\n"
    "web_identity_token_file = /tmp/tok\n"
    "[both]\naws_access_key_id = BOTHKEY\naws_secret_access_key = bs\n"
    "credential_process = /bin/false\n"
    "[assume]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n"
    "[sso]\nsso_start_url = https://example.awsapps.com/start\n"
    "[empty]\nregion = eu-west-1\n";
  static const struct chain_row rows[] = {
    { "parameters beat everything",
      { "AWS_ACCESS_KEY_ID=E", "AWS_SECRET_ACCESS_KEY=e",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:1/c", "files" },
      NULL, NULL, "P", 0, S3_CREDS_STATIC, "parameters" },
    { "environment before web identity",
      { "AWS_ACCESS_KEY_ID=E", "AWS_SECRET_ACCESS_KEY=e",
        "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:r", "files" },
      NULL, NULL, NULL, 0, S3_CREDS_ENV, "environment" },
    { "web identity (env) before the profile",
      { "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:r", "files",
        "AWS_REGION=eu-west-1" },
      NULL, NULL, NULL, 0, S3_CREDS_WEB_IDENTITY, "sts.eu-west-1.amazonaws.com" },
    { "AWS_STS_REGIONAL_ENDPOINTS=legacy: the global STS",
      { "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:r",
        "AWS_REGION=eu-west-1", "AWS_STS_REGIONAL_ENDPOINTS=legacy" },
      NULL, NULL, NULL, 0, S3_CREDS_WEB_IDENTITY, "STS https://sts.amazonaws.com" },
    { "AWS_ENDPOINT_URL_STS wins",
      { "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:r",
        "AWS_ENDPOINT_URL_STS=http://127.0.0.1:9/",
        "AWS_ENDPOINT_URL=http://127.0.0.1:8" },
      NULL, NULL, NULL, 0, S3_CREDS_WEB_IDENTITY, "STS http://127.0.0.1:9" },
    { "half a web identity is an error",
      { "AWS_ROLE_ARN=arn:r", "files" },
      NULL, NULL, NULL, -EINVAL, 0, NULL },
    { "profile before container",
      { "files", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/c" },
      NULL, NULL, NULL, 0, S3_CREDS_PROFILE, "profile \"default\"" },
    { "a profile parameter skips the environment",
      { "AWS_ACCESS_KEY_ID=E", "AWS_SECRET_ACCESS_KEY=e",
        "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t", "AWS_ROLE_ARN=arn:r", "files" },
      NULL, "proc", NULL, 0, S3_CREDS_PROCESS, "credential_process of profile \"proc\"" },
    { "static keys before credential_process in one profile",
      { "files", "AWS_PROFILE=both" },
      NULL, NULL, NULL, 0, S3_CREDS_PROFILE, "profile \"both\"" },
    { "credentials=process takes the process of that profile",
      { "files", "AWS_PROFILE=both" },
      "process", NULL, NULL, 0, S3_CREDS_PROCESS, "credential_process" },
    { "role_arn + web_identity_token_file in a profile",
      { "files", "AWS_PROFILE=wi" },
      NULL, NULL, NULL, 0, S3_CREDS_WEB_IDENTITY, "profile \"wi\"" },
    { "role_arn + source_profile: refused, not skipped",
      { "files", "AWS_PROFILE=assume" },
      NULL, NULL, NULL, -EINVAL, 0, NULL },
    { "an SSO profile: refused",
      { "files", "AWS_PROFILE=sso" },
      NULL, NULL, NULL, -EINVAL, 0, NULL },
    { "an empty profile from AWS_PROFILE: on to the container",
      { "files", "AWS_PROFILE=empty",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/c" },
      NULL, NULL, NULL, 0, S3_CREDS_CONTAINER, "http://169.254.170.2/v2/c" },
    { "an empty profile as a parameter: an error",
      { "files", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/c" },
      NULL, "empty", NULL, -EINVAL, 0, NULL },
    { "RELATIVE_URI before FULL_URI",
      { "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/r",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:5/f" },
      NULL, NULL, NULL, 0, S3_CREDS_CONTAINER, "169.254.170.2/r" },
    { "FULL_URI on loopback",
      { "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:5/f" },
      NULL, NULL, NULL, 0, S3_CREDS_CONTAINER, "http://127.0.0.1:5/f" },
    { "FULL_URI over http elsewhere: refused",
      { "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://192.0.2.1/f" },
      NULL, NULL, NULL, -EINVAL, 0, NULL },
    { "FULL_URI over https anywhere",
      { "AWS_CONTAINER_CREDENTIALS_FULL_URI=https://creds.example/f" },
      NULL, NULL, NULL, 0, S3_CREDS_CONTAINER, "https://creds.example/f" },
    { "nothing else: instance metadata",
      { "AWS_EC2_METADATA_DISABLED=false" },
      NULL, NULL, NULL, 0, S3_CREDS_IMDS, "http://169.254.169.254" },
    { "AWS_EC2_METADATA_SERVICE_ENDPOINT moves it",
      { "AWS_EC2_METADATA_DISABLED=false",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:7/" },
      NULL, NULL, NULL, 0, S3_CREDS_IMDS, "http://127.0.0.1:7" },
    { "nothing, instance metadata disabled",
      { NULL }, NULL, NULL, NULL, -EINVAL, 0, NULL },
    { "credentials=imds, disabled",
      { NULL }, "imds", NULL, NULL, -EINVAL, 0, NULL },
    { "credentials=imds skips the rest of the chain",
      { "AWS_EC2_METADATA_DISABLED=false", "AWS_ACCESS_KEY_ID=E",
        "AWS_SECRET_ACCESS_KEY=e", "files" },
      "imds", NULL, NULL, 0, S3_CREDS_IMDS, "IMDSv2" },
    { "credentials=env with nothing there",
      { "files" }, "env", NULL, NULL, -EINVAL, 0, NULL },
    { "credentials=container with nothing there",
      { "files" }, "container", NULL, NULL, -EINVAL, 0, NULL },
    { "credentials=static without keys",
      { "files" }, "static", NULL, NULL, -EINVAL, 0, NULL },
    { "credentials=env with access-key=",
      { "files" }, "env", NULL, "P", -EINVAL, 0, NULL },
    { "credentials=web-identity without any",
      { "files" }, "web-identity", NULL, NULL, -EINVAL, 0, NULL },
    { "ecs-ram-role is never in the chain, only by name",
      { "AWS_EC2_METADATA_DISABLED=true" }, "ecs-ram-role:R", NULL, NULL, 0,
      S3_CREDS_ECS_RAM_ROLE, "100.100.100.200, role R" },
    { "ecs-ram-role: ALIBABA_CLOUD_ECS_METADATA names the role",
      { "ALIBABA_CLOUD_ECS_METADATA=Envrole" }, "ecs-ram-role", NULL, NULL, 0,
      S3_CREDS_ECS_RAM_ROLE, "role Envrole" },
  };
  size_t i, e;

  for (i = 0; i < sizeof rows / sizeof rows[0]; ++i) {
    const struct chain_row *row = &rows[i];
    struct s3_creds_params p = {
      .credentials = row->credentials, .profile = row->profile,
      .access_key = row->access_key,
      .secret_key = row->access_key ? "p-secret" : NULL,
    };
    enum s3_creds_kind kind = S3_CREDS_AUTO;
    char desc[700] = "";
    int r;

    clear_env ();
    unsetenv ("ALIBABA_CLOUD_ECS_METADATA");
    for (e = 0; e < 8 && row->env[e]; ++e) {
      if (strcmp (row->env[e], "files") == 0)
        write_file (cred_file, profiles);
      else {
        char name[128];
        const char *eq = strchr (row->env[e], '=');
        snprintf (name, sizeof name, "%.*s", (int) (eq - row->env[e]),
                  row->env[e]);
        setenv (name, eq + 1, 1);
      }
    }
    r = s3_creds_plan (&p, &kind, desc, sizeof desc);
    if (r != row->want_r || (r == 0 && kind != row->want) ||
        (r == 0 && row->want_in_desc && !strstr (desc, row->want_in_desc))) {
      unit_failed++;
      fprintf (stderr, "FAIL: chain row \"%s\": got %d %s \"%s\", want %d "
               "%s \"%s\"\n", row->what, r, s3_creds_kind_name (kind), desc,
               row->want_r, s3_creds_kind_name (row->want),
               row->want_in_desc ? row->want_in_desc : "");
    }
    else
      unit_passed++;
    if (r < 0)
      CHECK (strstr (logged, "s3 credentials") != NULL);
  }
  unsetenv ("ALIBABA_CLOUD_ECS_METADATA");
}

/* ---------------------------------- credential_process, and rotation */

static char script[300], counter[300];

/* A credential_process that hands out key number N (counting calls) with
 * a secret derived from it, expiring `ttl` seconds ahead; fails while
 * the file "fail" exists next to it.
 */
static void
write_script (int ttl)
{
  char text[2048];

  snprintf (text, sizeof text,
            "#!/bin/sh\n"
            "[ -e %s.fail ] && { echo 'process: told to fail' >&2; exit 3; }\n"
            "n=$(cat %s 2>/dev/null || echo 0); n=$((n + 1)); echo $n > %s\n"
            "exp=$(date -u -d @$(( $(date +%%s) + %d )) +%%Y-%%m-%%dT%%H:%%M:%%SZ)\n"
            "printf '{\"Version\": 1, \"AccessKeyId\": \"KEY%%s\", "
            "\"SecretAccessKey\": \"secret-of-KEY%%s\", \"SessionToken\": "
            "\"token-of-KEY%%s\", \"Expiration\": \"%%s\"}' $n $n $n $exp\n",
            script, counter, counter, ttl);
  write_file (script, text);
  chmod (script, 0700);
}

struct reader {
  struct s3_creds_provider *pr;
  volatile bool *stop;
  unsigned long reads, torn;
  char first[64], last[64];
};

static void *
reader_main (void *arg)
{
  struct reader *rd = arg;
  char want[200];

  while (!*rd->stop) {
    struct s3_creds *c = s3_creds_get (rd->pr);
    snprintf (want, sizeof want, "secret-of-%s", c->access_key);
    if (strcmp (c->secret_key, want) != 0 || c->session_token == NULL ||
        strcmp (c->session_token + 9, c->access_key) != 0)
      rd->torn++;
    if (rd->reads++ == 0)
      snprintf (rd->first, sizeof rd->first, "%s", c->access_key);
    snprintf (rd->last, sizeof rd->last, "%s", c->access_key);
    s3_creds_put (c);
  }
  return NULL;
}

static void
test_process_rotation (void)
{
  char line[600], fail[320];
  struct s3_creds_params p = { .credentials = "process", .margin = 1 };
  struct s3_creds_provider *pr;
  struct reader rd[4];
  pthread_t th[4];
  volatile bool stop = false;
  struct s3_creds *c;
  int i;

  clear_env ();
  snprintf (script, sizeof script, "%s/process.sh", dir);
  snprintf (counter, sizeof counter, "%s/count", dir);
  snprintf (fail, sizeof fail, "%s.fail", script);
  unlink (counter);
  write_script (3);
  snprintf (line, sizeof line, "[default]\ncredential_process = %s\n",
            script);
  write_file (config_file, line);

  CHECK (s3_creds_open (&p, &pr) == 0);
  if (pr == NULL)
    return;
  CHECK (s3_creds_kind (pr) == S3_CREDS_PROCESS);
  c = s3_creds_get (pr);
  CHECK_STR (c->access_key, "KEY1");
  CHECK (c->expiration > time (NULL));
  s3_creds_put (c);

  /* Readers all the while: never a key with another key's secret. */
  for (i = 0; i < 4; ++i) {
    memset (&rd[i], 0, sizeof rd[i]);
    rd[i].pr = pr;
    rd[i].stop = &stop;
    pthread_create (&th[i], NULL, reader_main, &rd[i]);
  }
  /* 3 s keys, margin 1: a refresh every 1-1.5 s (halfway, jittered). */
  sleep (4);
  c = s3_creds_get (pr);
  CHECK (strcmp (c->access_key, "KEY1") != 0);
  CHECK (strcmp (c->access_key, "KEY2") != 0);
  s3_creds_put (c);

  /* Failures: logged, the old keys kept until they expire. */
  logged[0] = '\0';
  write_file (fail, "");
  sleep (3);
  CHECK (strstr (logged, "refresh failed") != NULL);
  CHECK (strstr (logged, "exited with status 3") != NULL);
  s3_creds_describe (pr, line, sizeof line);
  CHECK (strstr (line, "process (credential_process") != NULL);
  CHECK (strstr (line, "last failure") != NULL);
  CHECK (strstr (line, "secret") == NULL || strstr (line, "secret-of") == NULL);
  /* and they work again afterwards: at the next retry, whose backoff
   * may have doubled to a few seconds by now (poll, do not guess).
   */
  unlink (fail);
  for (i = 0; i < 300; ++i) {
    s3_creds_describe (pr, line, sizeof line);
    if (strstr (line, "last failure") == NULL)
      break;
    usleep (100 * 1000);
  }
  CHECK (strstr (line, "last failure") == NULL);

  stop = true;
  for (i = 0; i < 4; ++i) {
    pthread_join (th[i], NULL);
    CHECK (rd[i].reads > 100);
    CHECK_EQ (rd[i].torn, 0);
    CHECK (strcmp (rd[i].first, rd[i].last) != 0);
  }
  /* A snapshot held across the close stays valid. */
  c = s3_creds_get (pr);
  s3_creds_close (pr);
  CHECK (strncmp (c->access_key, "KEY", 3) == 0);
  s3_creds_put (c);

  /* A failing process at the start: one line naming it. */
  write_file (fail, "");
  logged[0] = '\0';
  CHECK (s3_creds_open (&p, &pr) == -EIO);
  CHECK (strstr (logged, "credential_process of profile \"default\"") != NULL);
  CHECK (strstr (logged, "exited with status 3") != NULL);
  unlink (fail);
  /* A process handing out already-expired keys. */
  write_script (-10);
  logged[0] = '\0';
  CHECK (s3_creds_open (&p, &pr) == -EACCES);
  CHECK (strstr (logged, "expired") != NULL);
  unlink (script);
  unlink (counter);
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
    struct got c;
    clear_env ();
    write_file (cred_file, credentials_text);
    setenv ("AWS_PROFILE", "work", 1);
    CHECK (resolve (NULL, NULL, NULL, NULL, &c) == 0);
    CHECK (strstr (logged, "WORKKEY") != NULL);
    CHECK (strstr (logged, "work-secret") == NULL);
    CHECK (strstr (logged, "work-token") == NULL);
  }
  test_nothing ();
  test_times ();
  test_json ();
  test_sts_xml ();
  test_refresh_delay ();
  test_kinds ();
  test_chain_table ();
  test_process_rotation ();

  {
    static const char *secrets[] = {
      "param-secret", "param-token", "env-secret", "env-token",
      "file/default+secret=", "work-secret", "work-token",
      "config-default-secret", "config-dev-secret", "home-secret",
      "secret-of-KEY", "token-of-KEY",
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
