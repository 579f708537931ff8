/* s3chunk: fetching credentials from the sources that hand out temporary
 * ones (s3-creds.h): EC2 instance metadata (IMDSv2), the container
 * endpoint, STS AssumeRoleWithWebIdentity, Alibaba ECS RAM roles, and a
 * credential_process.
 *
 * Each fetch is short and blocking, on its own curl easy handle (the
 * store's pool is left alone): the refresh thread calls these, never a
 * request.  Metadata and container requests never go through a proxy
 * (they are link-local or loopback); STS does, like any https request.
 */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cleanup.h"
#include "log.h"
#include "s3-creds-int.h"

#define ANSWER_MAX (256 << 10)  /* bytes of an answer kept */
#define METADATA_TIMEOUT 5      /* seconds, a metadata request */
#define METADATA_CONNECT 2      /* seconds to connect to a metadata service */
#define STS_TIMEOUT 30
#define PROCESS_TIMEOUT 60      /* seconds a credential_process may take */
#define METADATA_TOKEN_TTL "21600"

extern char **environ;

static void
wipe_free (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

struct answer {
  long status;
  CURLcode cc;
  char *body;
  size_t len;
  char errbuf[CURL_ERROR_SIZE];
};

static void
answer_free (struct answer *a)
{
  if (a->body) {
    explicit_bzero (a->body, a->len);
    free (a->body);
  }
  a->body = NULL;
  a->len = 0;
}

static size_t
write_cb (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct answer *a = opaque;
  size_t n = size * nmemb;
  char *b;

  if (a->len + n > ANSWER_MAX)
    return 0;
  b = realloc (a->body, a->len + n + 1);
  if (b == NULL)
    return 0;
  a->body = b;
  memcpy (b + a->len, ptr, n);
  a->len += n;
  b[a->len] = '\0';
  return n;
}

/* One request; 0 when an answer came (whatever its status), else -errno
 * with a->cc and a->errbuf saying why.
 */
static int
http (const char *method, const char *url, struct curl_slist *hdrs,
      const char *body, long timeout, bool no_proxy, const char *ca_file,
      struct answer *a)
{
  CURL *h = curl_easy_init ();
  int r = 0;

  memset (a, 0, sizeof *a);
  if (h == NULL)
    return -ENOMEM;
  curl_easy_setopt (h, CURLOPT_URL, url);
  curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp (method, "PUT") == 0 || body) {
    curl_easy_setopt (h, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt (h, CURLOPT_POSTFIELDSIZE, (long) (body ? strlen (body) : 0));
  }
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, a);
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, a->errbuf);
  curl_easy_setopt (h, CURLOPT_TIMEOUT, timeout);
  curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT,
                    no_proxy ? (long) METADATA_CONNECT : 10L);
  curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
  if (no_proxy)
    curl_easy_setopt (h, CURLOPT_NOPROXY, "*");
  if (ca_file)
    curl_easy_setopt (h, CURLOPT_CAINFO, ca_file);
  a->cc = curl_easy_perform (h);
  if (a->cc == CURLE_OK)
    curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &a->status);
  else {
    if (a->errbuf[0] == '\0')
      snprintf (a->errbuf, sizeof a->errbuf, "%s",
                curl_easy_strerror (a->cc));
    r = a->cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT :
      a->cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED :
      a->cc == CURLE_COULDNT_RESOLVE_HOST ? -EHOSTUNREACH : -EIO;
    answer_free (a);
  }
  curl_easy_cleanup (h);
  return r;
}

/* The first line of an error body, printable, for messages. */
static const char *
snippet (const struct answer *a, char *buf, size_t len)
{
  size_t i, j = 0;

  if (a->body == NULL || len == 0)
    return "";
  for (i = 0; i < a->len && j + 1 < len && j < 160; ++i) {
    char c = a->body[i];
    if (c == '\n' || c == '\r') {
      if (j)
        break;
      continue;
    }
    buf[j++] = (unsigned char) c < 0x20 ? ' ' : c;
  }
  buf[j] = '\0';
  return buf;
}

static int
http_errno (long status)
{
  return status == 401 || status == 403 ? -EACCES :
    status == 404 ? -ENOENT : status == 400 ? -EINVAL : -EIO;
}

/* Append "name: value" to l. */
static struct curl_slist *
add (struct curl_slist *l, bool *ok, const char *name, const char *v)
{
  char line[16384 + 128];
  struct curl_slist *n;

  snprintf (line, sizeof line, "%s: %s", name, v);
  n = curl_slist_append (l, line);
  explicit_bzero (line, sizeof line);
  if (n == NULL)
    *ok = false;
  return n ? n : l;
}

/* Read a small token file: trimmed of the trailing newline; no CR/LF
 * within (it goes into a header).
 */
static int
read_token_file (const char *path, char **out, char *err, size_t errlen,
                 const char *what)
{
  FILE *f = fopen (path, "re");
  char *buf;
  size_t n;
  int e;

  *out = NULL;
  if (f == NULL) {
    e = errno;
    snprintf (err, errlen, "%s %s: %s", what, path, strerror (e));
    return -e;
  }
  buf = calloc (1, 16385);
  if (buf == NULL) {
    fclose (f);
    return -ENOMEM;
  }
  n = fread (buf, 1, 16384, f);
  e = ferror (f) ? EIO : 0;
  fclose (f);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                   buf[n - 1] == ' '))
    buf[--n] = '\0';
  if (e || n == 0 || strpbrk (buf, "\r\n")) {
    snprintf (err, errlen, "%s %s: %s", what, path,
              e ? strerror (e) : n == 0 ? "empty" : "holds more than one line");
    wipe_free (buf);
    return e ? -e : -EINVAL;
  }
  *out = buf;
  return 0;
}

/* ------------------------------------------------ instance metadata
 *
 * EC2 (IMDSv2) and Alibaba ECS share a shape: PUT /latest/api/token with
 * a TTL header, then GETs with the token header: the role list, then the
 * role's JSON.
 */
struct metadata_dialect {
  const char *ttl_header, *token_header, *creds_path;
  enum s3_creds_json json;
  const char *name;
};

static const struct metadata_dialect ec2 = {
  "X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token",
  "/latest/meta-data/iam/security-credentials/", S3_JSON_AWS_METADATA,
  "instance metadata",
};
static const struct metadata_dialect alibaba = {
  "X-aliyun-ecs-metadata-token-ttl-seconds", "X-aliyun-ecs-metadata-token",
  "/latest/meta-data/ram/security-credentials/", S3_JSON_ALIBABA,
  "ECS metadata",
};

static int
metadata_fetch (struct creds_source *s, const struct metadata_dialect *d,
                struct s3_creds **out, char *err, size_t errlen)
{
  CLEANUP_FREE char *url = NULL, *role = NULL;
  char *token = NULL;
  struct curl_slist *hdrs = NULL;
  struct answer a;
  bool ok = true;
  char snip[200];
  int r;

  /* 1. The session token. */
  if (asprintf (&url, "%s/latest/api/token", s->url) < 0)
    return -ENOMEM;
  hdrs = add (hdrs, &ok, d->ttl_header, METADATA_TOKEN_TTL);
  if (!ok) {
    curl_slist_free_all (hdrs);
    return -ENOMEM;
  }
  r = http ("PUT", url, hdrs, NULL, METADATA_TIMEOUT, true, NULL, &a);
  curl_slist_free_all (hdrs);
  hdrs = NULL;
  if (r < 0) {
    snprintf (err, errlen, "%s: PUT %s: %s (is this an instance with a "
              "metadata service? choose another source with credentials=)",
              s->desc, url, a.errbuf);
    return r;
  }
  if (a.status == 200 && a.len > 0 && a.len < 4096 &&
      strpbrk (a.body, "\r\n") == NULL)
    token = strdup (a.body);
  else if ((a.status == 403 || a.status == 404 || a.status == 405) &&
           s->imds_v1)
    cs_debug ("s3 credentials: %s: PUT %s: HTTP %ld: falling back to IMDSv1 "
              "(imds-v1=true)", s->desc, url, a.status);
  else {
    snprintf (err, errlen, "%s: PUT %s (the IMDSv2 session token): HTTP %ld "
              "%s%s", s->desc, url, a.status, snippet (&a, snip, sizeof snip),
              a.status == 403 || a.status == 404 || a.status == 405 ?
              " (give imds-v1=true to fall back to IMDSv1)" : "");
    r = a.status == 200 ? -EPROTO : http_errno (a.status);
    answer_free (&a);
    return r;
  }
  answer_free (&a);
  if (token) {
    hdrs = add (hdrs, &ok, d->token_header, token);
    wipe_free (token);
    if (!ok) {
      curl_slist_free_all (hdrs);
      return -ENOMEM;
    }
  }

  /* 2. The role, unless given. */
  if (s->role)
    role = strdup (s->role);
  else {
    free (url);
    url = NULL;
    if (asprintf (&url, "%s%s", s->url, d->creds_path) < 0) {
      curl_slist_free_all (hdrs);
      return -ENOMEM;
    }
    r = http ("GET", url, hdrs, NULL, METADATA_TIMEOUT, true, NULL, &a);
    if (r < 0 || a.status != 200 || a.len == 0) {
      if (r < 0)
        snprintf (err, errlen, "%s: GET %s: %s", s->desc, url, a.errbuf);
      else
        snprintf (err, errlen, "%s: GET %s: HTTP %ld %s%s", s->desc, url,
                  a.status, snippet (&a, snip, sizeof snip),
                  a.status == 404 || a.len == 0 ?
                  " (no role is attached to this instance: attach one)" : "");
      r = r < 0 ? r : a.status == 200 ? -ENOENT : http_errno (a.status);
      answer_free (&a);
      curl_slist_free_all (hdrs);
      return r;
    }
    role = strndup (a.body, strcspn (a.body, "\r\n"));
    answer_free (&a);
  }
  if (role == NULL) {
    curl_slist_free_all (hdrs);
    return -ENOMEM;
  }

  /* 3. The role's credentials. */
  {
    char *enc = curl_easy_escape (NULL, role, 0);
    free (url);
    url = NULL;
    if (enc == NULL || asprintf (&url, "%s%s%s", s->url, d->creds_path,
                                 enc) < 0) {
      curl_free (enc);
      curl_slist_free_all (hdrs);
      return -ENOMEM;
    }
    curl_free (enc);
  }
  r = http ("GET", url, hdrs, NULL, METADATA_TIMEOUT, true, NULL, &a);
  curl_slist_free_all (hdrs);
  if (r < 0) {
    snprintf (err, errlen, "%s: GET %s: %s", s->desc, url, a.errbuf);
    return r;
  }
  if (a.status != 200) {
    snprintf (err, errlen, "%s: GET %s: HTTP %ld %s%s", s->desc, url,
              a.status, snippet (&a, snip, sizeof snip),
              a.status == 404 ? " (no such role on this instance: check the "
              "role name)" : "");
    answer_free (&a);
    return http_errno (a.status);
  }
  {
    char why[300];
    r = s3_creds_parse_json (d->json, a.body, a.len, out, why, sizeof why);
    if (r < 0)
      snprintf (err, errlen, "%s: GET %s: %s", s->desc, url, why);
  }
  answer_free (&a);
  return r;
}

/* ------------------------------------------------------- container */

static int
container_fetch (struct creds_source *s, struct s3_creds **out, char *err,
                 size_t errlen)
{
  struct curl_slist *hdrs = NULL;
  struct answer a;
  char *auth = NULL, snip[200], why[300];
  bool ok = true;
  int r;

  /* The token file wins, and is read every time: it is rotated. */
  if (s->token_file) {
    r = read_token_file (s->token_file, &auth, why, sizeof why,
                         "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (r < 0) {
      snprintf (err, errlen, "%s: %s", s->desc, why);
      return r;
    }
  }
  else if (s->auth_token && (auth = strdup (s->auth_token)) == NULL)
    return -ENOMEM;
  if (auth) {
    hdrs = add (hdrs, &ok, "Authorization", auth);
    wipe_free (auth);
    if (!ok) {
      curl_slist_free_all (hdrs);
      return -ENOMEM;
    }
  }
  r = http ("GET", s->url, hdrs, NULL, METADATA_TIMEOUT, true, s->ca_file, &a);
  curl_slist_free_all (hdrs);
  if (r < 0) {
    snprintf (err, errlen, "%s: GET %s: %s", s->desc, s->url, a.errbuf);
    return r;
  }
  if (a.status != 200) {
    snprintf (err, errlen, "%s: GET %s: HTTP %ld %s%s", s->desc, s->url,
              a.status, snippet (&a, snip, sizeof snip),
              a.status == 401 || a.status == 403 ?
              " (check AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE])" : "");
    answer_free (&a);
    return http_errno (a.status);
  }
  r = s3_creds_parse_json (S3_JSON_AWS_METADATA, a.body, a.len, out, why,
                           sizeof why);
  if (r < 0)
    snprintf (err, errlen, "%s: GET %s: %s", s->desc, s->url, why);
  answer_free (&a);
  return r;
}

/* ---------------------------------------------------- web identity */

static int
web_identity_fetch (struct creds_source *s, struct s3_creds **out,
                    char *err, size_t errlen)
{
  char *jwt = NULL, *e_jwt = NULL, *e_role = NULL, *e_name = NULL;
  char *body = NULL, why[400], snip[200];
  struct curl_slist *hdrs = NULL;
  struct answer a;
  bool ok = true;
  int r;

  r = read_token_file (s->token_file, &jwt, why, sizeof why,
                       "web identity token file");
  if (r < 0) {
    snprintf (err, errlen, "%s: %s", s->desc, why);
    return r;
  }
  e_jwt = curl_easy_escape (NULL, jwt, 0);
  e_role = curl_easy_escape (NULL, s->role, 0);
  e_name = curl_easy_escape (NULL, s->session_name, 0);
  wipe_free (jwt);
  if (e_jwt == NULL || e_role == NULL || e_name == NULL ||
      asprintf (&body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                "&RoleArn=%s&RoleSessionName=%s&WebIdentityToken=%s",
                e_role, e_name, e_jwt) < 0) {
    body = NULL;
    r = -ENOMEM;
    goto out;
  }
  hdrs = add (hdrs, &ok, "Content-Type",
              "application/x-www-form-urlencoded; charset=utf-8");
  hdrs = add (hdrs, &ok, "Accept", "application/xml");
  if (!ok) {
    r = -ENOMEM;
    goto out;
  }
  r = http ("POST", s->url, hdrs, body, STS_TIMEOUT, false, s->ca_file, &a);
  if (r < 0) {
    snprintf (err, errlen, "%s: POST %s: %s", s->desc, s->url, a.errbuf);
    goto out;
  }
  r = s3_creds_parse_sts (a.body, a.len, out, why, sizeof why);
  if (a.status != 200 && r == 0) {
    s3_creds_put (*out);
    *out = NULL;
    r = -EPROTO;
  }
  if (r < 0) {
    if (a.status != 200)
      snprintf (err, errlen, "%s: POST %s AssumeRoleWithWebIdentity: HTTP "
                "%ld: %s%s", s->desc, s->url, a.status,
                r == -EACCES ? why : snippet (&a, snip, sizeof snip),
                a.status == 403 || r == -EACCES ? " (check the role's trust "
                "policy, the token file and AWS_ROLE_ARN)" : "");
    else
      snprintf (err, errlen, "%s: POST %s AssumeRoleWithWebIdentity: %s",
                s->desc, s->url, why);
    if (r == -EPROTO && a.status != 200)
      r = http_errno (a.status);
  }
  answer_free (&a);
 out:
  curl_slist_free_all (hdrs);
  if (e_jwt) {
    explicit_bzero (e_jwt, strlen (e_jwt));
    curl_free (e_jwt);
  }
  curl_free (e_role);
  curl_free (e_name);
  wipe_free (body);
  return r;
}

/* ---------------------------------------------------------- process */

static int
process_fetch (struct creds_source *s, struct s3_creds **out, char *err,
               size_t errlen)
{
  posix_spawn_file_actions_t fa;
  int fds[2], status, r;
  pid_t pid;
  char *argv[] = { (char *) "/bin/sh", (char *) "-c", s->command, NULL };
  char *buf, why[300];
  size_t len = 0, cap = 65536;
  struct timespec t0, now;
  bool too_big = false, timed_out = false;

  if (pipe2 (fds, O_CLOEXEC) < 0) {
    r = -errno;
    snprintf (err, errlen, "%s: pipe: %s", s->desc, strerror (-r));
    return r;
  }
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2 (&fa, fds[1], 1);
  r = posix_spawn (&pid, "/bin/sh", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  close (fds[1]);
  if (r != 0) {
    close (fds[0]);
    snprintf (err, errlen, "%s: cannot run /bin/sh: %s", s->desc,
              strerror (r));
    return -r;
  }
  buf = malloc (cap + 1);
  if (buf == NULL) {
    close (fds[0]);
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    return -ENOMEM;
  }
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct pollfd p = { fds[0], POLLIN, 0 };
    double left;
    ssize_t n;

    clock_gettime (CLOCK_MONOTONIC, &now);
    left = PROCESS_TIMEOUT - ((now.tv_sec - t0.tv_sec) +
                              (now.tv_nsec - t0.tv_nsec) / 1e9);
    if (left <= 0) {
      timed_out = true;
      break;
    }
    r = poll (&p, 1, (int) (left * 1000) + 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      continue;
    if (len == cap) {
      too_big = true;
      break;
    }
    n = read (fds[0], buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += n;
  }
  close (fds[0]);
  if (timed_out || too_big)
    kill (pid, SIGKILL);
  while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
    ;
  buf[len] = '\0';
  if (timed_out || too_big) {
    snprintf (err, errlen, "%s: %s", s->desc, timed_out ?
              "did not finish within 60 s (killed)" :
              "wrote more than 64 KiB (killed)");
    r = timed_out ? -ETIMEDOUT : -EPROTO;
  }
  else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    if (WIFEXITED (status))
      snprintf (err, errlen, "%s: exited with status %d (its messages are "
                "on stderr above)", s->desc, WEXITSTATUS (status));
    else
      snprintf (err, errlen, "%s: killed by signal %d", s->desc,
                WTERMSIG (status));
    r = -EIO;
  }
  else {
    r = s3_creds_parse_json (S3_JSON_PROCESS, buf, len, out, why,
                             sizeof why);
    if (r < 0)
      snprintf (err, errlen, "%s: its output: %s", s->desc, why);
  }
  explicit_bzero (buf, cap + 1);
  free (buf);
  return r;
}

/* ------------------------------------------------------------------ */

bool
creds_container_host_allowed (const char *host)
{
  struct addrinfo hints, *res = NULL, *ai;
  bool ok = true;

  memset (&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo (host, NULL, &hints, &res) != 0)
    return false;
  for (ai = res; ai && ok; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      uint32_t a = ntohl (((struct sockaddr_in *) ai->ai_addr)->sin_addr.s_addr);
      ok = (a >> 24) == 127 || a == 0xa9feaa02 /* 169.254.170.2 */ ||
        a == 0xa9feaa17 /* 169.254.170.23 */;
    }
    else if (ai->ai_family == AF_INET6) {
      const struct in6_addr *a6 =
        &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
      struct in6_addr eks;
      inet_pton (AF_INET6, "fd00:ec2::23", &eks);
      ok = IN6_IS_ADDR_LOOPBACK (a6) || memcmp (a6, &eks, sizeof eks) == 0;
    }
    else
      ok = false;
  }
  freeaddrinfo (res);
  return ok;
}

int
creds_fetch (struct creds_source *s, struct s3_creds **out, char *err,
             size_t errlen)
{
  *out = NULL;
  err[0] = '\0';
  switch (s->kind) {
  case S3_CREDS_IMDS:
    return metadata_fetch (s, &ec2, out, err, errlen);
  case S3_CREDS_ECS_RAM_ROLE:
    return metadata_fetch (s, &alibaba, out, err, errlen);
  case S3_CREDS_CONTAINER:
    return container_fetch (s, out, err, errlen);
  case S3_CREDS_WEB_IDENTITY:
    return web_identity_fetch (s, out, err, errlen);
  case S3_CREDS_PROCESS:
    return process_fetch (s, out, err, errlen);
  default:
    if (s->fixed == NULL)
      return -EINVAL;
    __atomic_add_fetch (&s->fixed->refs, 1, __ATOMIC_RELAXED);
    *out = s->fixed;
    return 0;
  }
}
