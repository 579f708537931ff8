/* s3chunk: the S3 object store: any S3-compatible bucket (AWS, MinIO, Ceph
 * RGW, R2...).
 *
 * Requests: GetObject, PutObject (conditional with If-None-Match: * or
 * If-Match), DeleteObject, DeleteObjects (POST ?delete, 1000 keys a time)
 * and ListObjectsV2, each signed with SigV4 (sigv4.c) and a signed payload
 * hash, so the server checks the body too.  XML is read by s3-xml.c, the
 * credentials found by s3-creds.c.
 *
 * Connections: a bounded pool of curl easy handles, one per connection kept
 * alive, each driven through its own multi handle so that we get control
 * back every POLL_MS however quiet the socket.  A request takes a free
 * handle (or makes one while fewer than `connections` exist, or waits),
 * uses it alone, and gives it back; a handle is never used by two threads
 * at once.  The pool's mutex is never held across network I/O.
 *
 * Sibling (objstore_sibling): a second store on the same bucket, prefix,
 * endpoint and credentials (the settings copied, the credential provider
 * shared by reference: either may be closed first) with a pool
 * of its own holding one connection, no startup check and no fence.  The
 * lock renews through it, so a renewal never waits in pool_get behind
 * uploads and reads that hold every handle of the data store.
 *
 * Timeouts: request_timeout is an idle limit, not a limit on the whole
 * transfer: a request is aborted when no byte moved in either direction
 * for that long (the wait for the first byte of the answer, or a transfer
 * that stalled), so a large chunk on a slow but working link finishes.
 * The progress callback keeps the time of the last byte; making the
 * connection has its own limit, CONNECT_TIMEOUT.
 *
 * The write fence (fence.h): every mutating request (PUT, conditional PUT,
 * DELETE, POST ?delete) checks the store's fence before each attempt,
 * retries and the attempt after a backoff sleep included, and gives up
 * with -ENOLCK when it is past; it is never retried after that.  Within an
 * attempt the fence is enforced two ways:
 *   - the progress callback aborts the transfer once the fence is past or
 *     closed, checked against the deadline as it is at that moment, at
 *     least every POLL_MS (the lock closes it when it fences itself: a
 *     transfer under way stops within POLL_MS).  Not by a fixed curl
 *     timeout taken at the start: renewals move the deadline on, and a
 *     long upload may go on as long as they do;
 *   - bodies go through a read callback, which checks the fence again
 *     before it hands curl the last bytes of the body.  A server does not
 *     act on a request whose body is incomplete, so a process frozen
 *     (SIGSTOP, a suspend) between the check before the attempt and the
 *     send cannot complete a write after the deadline.
 * Every socket has SO_LINGER {1, 0}: closing an aborted connection sends a
 * RST and the kernel drops the bytes still queued instead of sending them
 * later.  An aborted request whose body curl already had in full may still
 * have landed, which is what -ENOLCK says (objstore.h).  A request without
 * a body (DELETE) is complete once its headers are out: it relies on the
 * check before the attempt and on the margin of the lease.  Reads (GET,
 * list) are never fenced.
 *
 * Failures: s3_retryable() is the one list of what is retried (5xx, 429,
 * 408, S3's RequestTimeout / SlowDown codes, timeouts and connection
 * failures); everything else is final.  Retries back off exponentially with
 * full jitter (100 ms base, 5 s cap), are signed afresh (new x-amz-date),
 * and stop when the operation's retry_time is spent.  s3_errno() is the one
 * map from HTTP status and curl result to errno.
 *
 * Ambiguity: a mutating request whose attempt may have reached the store
 * without us seeing the answer (a timeout, a dropped connection, a
 * 500/502/504, or a body curl sent in full and then re-sent by itself on
 * a new connection: see seek_cb) has an unknown outcome from then on.  Only a success
 * settles it; a later failure (a 503 or 429 when the budget runs out, a
 * refused connection, a 403, a conditional put's 412, which may be our own
 * earlier attempt having landed) says nothing about that earlier attempt,
 * so the answer is -ETIMEDOUT, "outcome unknown", never -EIO or -EEXIST,
 * logged once with the op, key, attempts and last answer: callers that
 * care re-read (the lock), the cache counts the chunk as maybe present.
 * The one exception is a DELETE answered 404: the key is gone either way,
 * which is all a delete promises.
 *
 * Dialects: how a store spells conditional writes is one entry of a small
 * table (dialects[] below), kept apart from the request engine: which
 * header makes a PUT create-only, which makes it replace-if-unchanged and
 * what value that carries (a quoted ETag, a bare one, or a generation
 * number), and which error code besides 412 says "the condition failed".
 * provider= picks the entry; "auto" takes it from the endpoint's host name
 * when that names a provider, else s3_detect probes the store once on a
 * throw-away key before the lock is taken.  docs/S3.md has the provider
 * table and the documentation each entry follows.
 */
#include <config.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cleanup.h"
#include "log.h"
#include "objstore.h"
#include "s3-creds.h"
#include "s3-xml.h"
#include "sigv4.h"

#define DEFAULT_CONNECTIONS 16
#define DEFAULT_RETRY_TIME 60.0
#define DEFAULT_REQUEST_TIMEOUT 30.0
#define CONNECT_TIMEOUT 10.0    /* seconds, at most */
#define PROBE_RETRY_TIME 15.0   /* seconds the startup check may retry */
#define BACKOFF_BASE 0.1        /* seconds */
#define BACKOFF_CAP 5.0         /* seconds */
#define DELETE_BATCH 1000       /* DeleteObjects' limit */
#define ERROR_BODY_MAX 65536    /* bytes of an error body kept */
#define RESERVE_MAX (256 << 20) /* largest Content-Length trusted ahead */
#define POLL_MS 100             /* the longest we leave a transfer alone */

#define CLOCK_HINT \
  "check the access key, secret key, region and the machine's clock"

/* ------------------------------------------------------------ dialects */

enum s3_tag {
  TAG_QUOTED,                   /* If-Match: "etag" (RFC 7232 entity-tag) */
  TAG_BARE,                     /* If-Match: etag (Ceph RGW 16.2) */
  TAG_GENERATION,               /* the object's generation number (GCS) */
};

struct s3_dialect {
  const char *name;             /* the provider= word, or what auto found */
  const char *create_header;    /* makes a PUT create-only; NULL: none */
  const char *create_value;
  const char *replace_header;   /* replace-if-unchanged; NULL: none (no
                                   compare-and-swap) */
  enum s3_tag tag;              /* what replace_header carries */
  const char *refuse;           /* non-NULL: no conditional write at all;
                                   what is missing, for the refusal */
};

/* What each provider's documentation says (docs/S3.md names the pages):
 *  - AWS S3 (since 2024-08 create-only, 2024-11 If-Match), MinIO (since
 *    RELEASE.2024-05-07) and R2: If-None-Match: * and If-Match with the
 *    ETag as RFC 7232 spells it, quoted (R2 refuses a bare one); a failed
 *    condition is 412, and AWS answers 409 ConditionalRequestConflict when
 *    another write to the key is under way: that refusal is definite (our
 *    request did nothing), so it is retried like a 503 and, once the
 *    budget is spent, reported as -EEXIST, which every caller settles by
 *    reading the key again;
 *  - Ceph RGW 16.2 compares If-Match with the bare ETag: "standard-bare",
 *    found by the probe (a quoted If-Match of the object's own ETag
 *    answered 412);
 *  - GCS's XML API: x-goog-if-generation-match: 0 creates only, and the
 *    object's generation (x-goog-generation on GET and PUT answers, which
 *    we carry in objstore_info.etag) replaces only that generation;
 *  - Alibaba OSS: PutObject answers 400 NotImplemented to If-Match and
 *    If-None-Match; x-oss-forbid-overwrite: true creates only (409
 *    FileAlreadyExists); there is no compare-and-swap, so the lock uses
 *    its epoch protocol (lock.h);
 *  - Backblaze B2's S3-compatible API documents no conditional PUT.
 */
static const struct s3_dialect dialect_aws = {
  "aws", "If-None-Match", "*", "If-Match", TAG_QUOTED, NULL,
};
static const struct s3_dialect dialect_minio = {
  "minio", "If-None-Match", "*", "If-Match", TAG_QUOTED, NULL,
};
static const struct s3_dialect dialect_ceph = {
  "ceph", "If-None-Match", "*", "If-Match", TAG_BARE, NULL,
};
static const struct s3_dialect dialect_r2 = {
  "r2", "If-None-Match", "*", "If-Match", TAG_QUOTED, NULL,
};
static const struct s3_dialect dialect_gcs = {
  "gcs", "x-goog-if-generation-match", "0", "x-goog-if-generation-match",
  TAG_GENERATION, NULL,
};
static const struct s3_dialect dialect_oss = {
  "oss", "x-oss-forbid-overwrite", "true", NULL, TAG_QUOTED, NULL,
};
static const struct s3_dialect dialect_b2 = {
  "b2", NULL, NULL, NULL, TAG_QUOTED,
  "Backblaze B2's S3-compatible API has no conditional PutObject (neither "
  "If-None-Match nor If-Match)",
};
/* What the probe can find when the host names no provider. */
static const struct s3_dialect dialect_standard = {
  "standard", "If-None-Match", "*", "If-Match", TAG_QUOTED, NULL,
};
static const struct s3_dialect dialect_standard_bare = {
  "standard-bare", "If-None-Match", "*", "If-Match", TAG_BARE, NULL,
};
static const struct s3_dialect dialect_none = {
  "none", NULL, NULL, NULL, TAG_QUOTED,
  "the store enforces no conditional write (If-None-Match was refused as "
  "not implemented, and x-oss-forbid-overwrite: true was ignored)",
};

static const struct s3_dialect *const providers[] = {
  &dialect_aws, &dialect_minio, &dialect_ceph, &dialect_r2, &dialect_gcs,
  &dialect_oss, &dialect_b2,
};

/* The provider an endpoint host names, or NULL. */
static const struct s3_dialect *
dialect_of_host (const char *host)
{
  static const struct { const char *suffix; const struct s3_dialect *d; }
  hosts[] = {
    { ".r2.cloudflarestorage.com", &dialect_r2 },
    { "storage.googleapis.com", &dialect_gcs },
    { ".aliyuncs.com", &dialect_oss },
    { ".backblazeb2.com", &dialect_b2 },
    { ".amazonaws.com", &dialect_aws },
  };
  size_t n = strlen (host), i;

  for (i = 0; i < sizeof hosts / sizeof hosts[0]; ++i) {
    size_t m = strlen (hosts[i].suffix);
    if (n >= m && strcasecmp (host + n - m, hosts[i].suffix) == 0 &&
        (n == m || hosts[i].suffix[0] == '.' || host[n - m - 1] == '.'))
      return hosts[i].d;
  }
  return NULL;
}

struct s3store {
  struct objstore os;           /* must be first */

  char *bucket;
  char *prefix;                 /* "" or "a/b/" */
  char *endpoint;               /* as given or defaulted, for messages */
  char *url_base;               /* "https://bucket.host:port" */
  char *host;                   /* the Host header: "bucket.host:port" */
  char *path_base;              /* encoded "/base/bucket" or "/base" or "" */
  char *region;
  char *ca_file;
  bool path_style;
  struct s3_creds_provider *creds; /* shared with the sibling */
  double retry_time;            /* < 0: no retries */
  double request_timeout;
  char *sse, *sse_kms_key_id, *storage_class;

  const struct s3_dialect *dialect;
  const char *dialect_how;      /* "given", "from the endpoint", "probed" */
  pthread_mutex_t detect_lock;  /* one probe at a time */
  bool detected;                /* s3_detect ran (or nothing to find) */
  int detect_result;
  int64_t clock_offset;         /* seconds added to time (NULL) when
                                   signing (RequestTimeTooSkewed); atomic */
  int skew_logged;              /* atomic */
  int no_cas_logged;            /* atomic */

  pthread_mutex_t lock;         /* protects the pool below */
  pthread_cond_t cond;          /* a handle was returned */
  struct s3_conn **idle;        /* free handles, max_handles slots */
  unsigned n_idle, n_handles, max_handles;
};

/* A pooled connection: the easy handle, and the multi handle that drives
 * it (and keeps its connection alive between requests).
 */
struct s3_conn {
  CURL *easy;
  CURLM *multi;
};

static const struct objstore_ops s3_ops;

/* ------------------------------------------------------------- globals */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
init_curl (void)
{
  curl_init_result = curl_global_init (CURL_GLOBAL_DEFAULT);
}

/* A per-thread generator for the jitter, seeded from the clock and the
 * thread, so threads do not retry in step.
 */
static __thread uint64_t rng_state;

static double
random_unit (void)
{
  uint64_t x = rng_state;

  if (x == 0) {
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    x = (uint64_t) ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
      (uint64_t) (uintptr_t) &rng_state ^ (uint64_t) ts.tv_sec;
    if (x == 0)
      x = 1;
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return (double) (x >> 11) / (double) (1ULL << 53);
}

static double
now_monotonic (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
sleep_seconds (double s)
{
  struct timespec ts;

  if (s <= 0)
    return;
  ts.tv_sec = (time_t) s;
  ts.tv_nsec = (long) ((s - (double) ts.tv_sec) * 1e9);
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* asprintf that returns the string, or NULL on failure. */
static char *
xasprintf (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

static char *
xasprintf (const char *fmt, ...)
{
  va_list ap;
  char *s;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&s, fmt, ap);
  va_end (ap);
  return r < 0 ? NULL : s;
}

/* ---------------------------------------------------------------- pool */

static void
conn_free (struct s3_conn *h)
{
  if (h == NULL)
    return;
  if (h->multi)
    curl_multi_cleanup (h->multi);
  if (h->easy)
    curl_easy_cleanup (h->easy);
  free (h);
}

static struct s3_conn *
conn_new (void)
{
  struct s3_conn *h = calloc (1, sizeof *h);

  if (h == NULL)
    return NULL;
  h->easy = curl_easy_init ();
  h->multi = curl_multi_init ();
  if (h->easy == NULL || h->multi == NULL) {
    conn_free (h);
    return NULL;
  }
  return h;
}

/* Take a handle: a free one, a new one while under the limit, or wait. */
static struct s3_conn *
pool_get (struct s3store *st)
{
  struct s3_conn *h = NULL;
  bool make = false;

  pthread_mutex_lock (&st->lock);
  while (st->n_idle == 0 && st->n_handles >= st->max_handles)
    pthread_cond_wait (&st->cond, &st->lock);
  if (st->n_idle > 0)
    h = st->idle[--st->n_idle];
  else {
    st->n_handles++;
    make = true;
  }
  pthread_mutex_unlock (&st->lock);

  if (make) {
    h = conn_new ();
    if (h == NULL) {
      pthread_mutex_lock (&st->lock);
      st->n_handles--;
      pthread_cond_signal (&st->cond);
      pthread_mutex_unlock (&st->lock);
    }
  }
  return h;
}

static void
pool_put (struct s3store *st, struct s3_conn *h)
{
  pthread_mutex_lock (&st->lock);
  st->idle[st->n_idle++] = h;
  pthread_cond_signal (&st->cond);
  pthread_mutex_unlock (&st->lock);
}

/* ------------------------------------------------------------ requests */

/* One S3 request, retried as a whole.  The caller fills the inputs; the
 * outputs describe the last attempt.
 */
struct s3_call {
  /* Inputs. */
  const char *op;               /* "get", "put"... for messages */
  const char *key;              /* the volume's key, for messages */
  const char *method;
  const char *object;           /* full object name, NULL for the bucket */
  const struct sigv4_param *params;
  size_t n_params;
  const void *body;
  size_t body_len;
  const char *content_type;
  const char *content_md5;      /* base64, or NULL */
  const char *cond_name;        /* the dialect's conditional header, or
                                   NULL */
  const char *cond_value;
  struct sigv4_header extra[3]; /* more signed headers (SSE, storage
                                   class) */
  size_t n_extra;
  struct cs_buf *out;           /* a 2xx body goes here; NULL: dropped */
  size_t max_len;               /* larger 2xx bodies: -EFBIG (default:
                                   SIZE_MAX) */
  bool conditional;             /* put_if: ambiguous outcomes matter */
  bool mutating;                /* can change an object: obeys the fence */
  double retry_time;            /* this call's budget */
  bool quiet_enoent;            /* -ENOENT is an answer: do not log it */
  bool quiet_eexist;            /* -EEXIST is an answer: do not log it */
  bool quiet;                   /* the caller logs every failure itself */

  /* Outputs of the last attempt. */
  CURLcode cc;
  long status;
  bool efbig;
  bool in_2xx;                  /* parsing a 2xx response right now */
  char etag[128];
  char generation[32];          /* x-goog-generation (GCS) */
  int64_t mtime, date;
  char request_id[128];
  char bucket_region[64];
  struct s3_error err;
  struct cs_buf err_body;
  char errbuf[CURL_ERROR_SIZE];
  unsigned attempts;
  bool ambiguous_seen;          /* some attempt may have taken effect */
  bool skew_retried;            /* re-signed once after RequestTimeTooSkewed */
  double elapsed;

  /* The attempt under way. */
  struct cs_fence *fence;       /* mutating requests: the store's fence */
  size_t body_pos;              /* bytes of the body handed to curl */
  bool body_complete;           /* all of them, or there are none: the
                                   server may act on the request */
  bool fenced;                  /* aborted: the fence is past or closed */
  bool fence_timeout;           /* curl's timeout is the fence's deadline */
  bool resent;                  /* curl sent the whole body, then again */
  double idle_limit;            /* seconds with no byte moved: abort */
  double last_move;             /* when a byte last moved */
  curl_off_t seen_dl, seen_ul;  /* the counts then */
  bool stalled;                 /* aborted after idle_limit */
};

static bool
is_2xx (long status)
{
  return status >= 200 && status < 300;
}

/* The one list of what is worth retrying. */
static bool
s3_retryable (const struct s3_call *c)
{
  if (c->efbig)
    return false;
  switch (c->cc) {
  case CURLE_OK:
    break;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_WEIRD_SERVER_REPLY:
    return true;
  default:
    return false;
  }
  switch (c->status) {
  case 408: case 429:
  case 500: case 502: case 503: case 504:
    return true;
  }
  /* S3 says these with other statuses too (RequestTimeout is a 400). */
  /* ConditionalRequestConflict (AWS, 409): another write to the key was
   * under way and ours did nothing; AWS's guide says to retry it.
   */
  return strcmp (c->err.code, "RequestTimeout") == 0 ||
    strcmp (c->err.code, "ConditionalRequestConflict") == 0 ||
    strcmp (c->err.code, "SlowDown") == 0 ||
    strcmp (c->err.code, "InternalError") == 0 ||
    strcmp (c->err.code, "ServiceUnavailable") == 0;
}

/* Could this failed attempt have changed the object all the same?  Only
 * when the request may have been received and acted on but we never saw
 * a definite answer.
 */
static bool
s3_ambiguous (const struct s3_call *c)
{
  switch (c->cc) {
  case CURLE_OK:
    return c->status == 500 || c->status == 502 || c->status == 504;
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_WEIRD_SERVER_REPLY:
    return true;
  default:
    return false;
  }
}

/* The one map from an HTTP status / curl result to errno. */
static int
s3_errno (const struct s3_call *c)
{
  if (c->efbig)
    return -EFBIG;
  switch (c->cc) {
  case CURLE_OK:
    break;
  case CURLE_OPERATION_TIMEDOUT:
    return -ETIMEDOUT;
  case CURLE_COULDNT_CONNECT:
    return -ECONNREFUSED;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return -EHOSTUNREACH;
  case CURLE_OUT_OF_MEMORY:
    return -ENOMEM;
  default:
    return -EIO;
  }
  if (is_2xx (c->status))
    return 0;
  switch (c->status) {
  case 401:
  case 403:
    return -EACCES;
  case 404:
    /* A missing bucket is a broken setup, not a missing object. */
    return strcmp (c->err.code, "NoSuchBucket") == 0 ? -EIO : -ENOENT;
  case 408:
    return -ETIMEDOUT;
  case 409:
    /* ConditionalRequestConflict once its retries are spent: the
     * condition is not known to hold, and the caller re-reads (see the
     * dialect table).  FileAlreadyExists: OSS's refused create-only.
     */
    return strcmp (c->err.code, "ConditionalRequestConflict") == 0 ||
      strcmp (c->err.code, "FileAlreadyExists") == 0 ? -EEXIST : -EIO;
  case 412:
    return -EEXIST;
  case 400:
  case 501:
    if (strcmp (c->err.code, "NotImplemented") == 0)
      return -ENOTSUP;
    return strcmp (c->err.code, "RequestTimeout") == 0 ?
      -ETIMEDOUT : c->status == 400 ? -EINVAL : -EIO;
  default:
    return -EIO;
  }
}

/* "HTTP 503 SlowDown: Please reduce your request rate." or
 * "curl error 7: Failed to connect to ...".
 */
static void
describe (const struct s3_call *c, char *buf, size_t size)
{
  if (c->efbig)
    snprintf (buf, size, "object larger than %zu bytes", c->max_len);
  else if (c->cc != CURLE_OK)
    snprintf (buf, size, "curl error %d: %s", (int) c->cc,
              c->errbuf[0] ? c->errbuf : curl_easy_strerror (c->cc));
  else
    snprintf (buf, size, "HTTP %ld%s%s%s%s", c->status,
              c->err.code[0] ? " " : "", c->err.code,
              c->err.message[0] ? ": " : "", c->err.message);
}

static int
full_path (struct s3store *st, const char *object, char **out)
{
  CLEANUP_FREE char *enc = NULL;

  if (object == NULL) {
    *out = strdup (st->path_base[0] ? st->path_base : "/");
    return *out ? 0 : -ENOMEM;
  }
  enc = sigv4_uri_encode (object, false);
  *out = enc ? xasprintf ("%s/%s", st->path_base, enc) : NULL;
  return *out ? 0 : -ENOMEM;
}

/* Header lines.  Names are matched case-insensitively. */
static bool
header_is (const char *line, size_t len, const char *name, const char **val)
{
  size_t n = strlen (name);

  if (len <= n || strncasecmp (line, name, n) != 0 || line[n] != ':')
    return false;
  *val = line + n + 1;
  return true;
}

/* Copy a header value into buf, trimmed, without CR/LF. */
static void
header_value (const char *v, const char *end, char *buf, size_t size)
{
  size_t n;

  while (v < end && (*v == ' ' || *v == '\t'))
    ++v;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' ||
                     end[-1] == '\t'))
    --end;
  n = (size_t) (end - v);
  if (n >= size)
    n = size - 1;
  memcpy (buf, v, n);
  buf[n] = '\0';
}

static size_t
header_cb (char *line, size_t size, size_t nitems, void *opaque)
{
  struct s3_call *c = opaque;
  size_t len = size * nitems;
  const char *end = line + len, *v;
  char value[256];

  c->last_move = now_monotonic ();     /* the answer is coming */

  if (len >= 5 && strncmp (line, "HTTP/", 5) == 0) {
    /* A new response (after a 100 Continue, say): start over. */
    const char *sp = memchr (line, ' ', len);
    c->status = sp ? strtol (sp + 1, NULL, 10) : 0;
    c->in_2xx = is_2xx (c->status);
    c->etag[0] = c->request_id[0] = c->bucket_region[0] = '\0';
    c->generation[0] = '\0';
    c->mtime = c->date = 0;
    return len;
  }
  if (header_is (line, len, "ETag", &v)) {
    size_t n;

    header_value (v, end, value, sizeof value);
    v = value;
    if (strncmp (v, "W/", 2) == 0)
      v += 2;
    if (*v == '"')
      ++v;
    n = strlen (v);
    if (n > 0 && v[n - 1] == '"')
      --n;
    if (n >= sizeof c->etag)
      n = sizeof c->etag - 1;
    memcpy (c->etag, v, n);
    c->etag[n] = '\0';
  }
  else if (header_is (line, len, "Last-Modified", &v)) {
    header_value (v, end, value, sizeof value);
    time_t t = curl_getdate (value, NULL);
    c->mtime = t > 0 ? t : 0;
  }
  else if (header_is (line, len, "Date", &v)) {
    header_value (v, end, value, sizeof value);
    time_t t = curl_getdate (value, NULL);
    c->date = t > 0 ? t : 0;
  }
  else if (header_is (line, len, "x-goog-generation", &v))
    header_value (v, end, c->generation, sizeof c->generation);
  else if (header_is (line, len, "x-amz-request-id", &v))
    header_value (v, end, c->request_id, sizeof c->request_id);
  else if (header_is (line, len, "x-amz-bucket-region", &v))
    header_value (v, end, c->bucket_region, sizeof c->bucket_region);
  else if (header_is (line, len, "Content-Length", &v) && c->in_2xx &&
           c->out) {
    unsigned long long n;
    header_value (v, end, value, sizeof value);
    errno = 0;
    n = strtoull (value, NULL, 10);
    if (errno == 0) {
      if (n > c->max_len) {
        c->efbig = true;
        return 0;               /* abort the transfer */
      }
      /* Room for the body at once, unless the size is implausible. */
      if (n <= RESERVE_MAX && cs_buf_reserve (c->out, n) < 0)
        return 0;
    }
  }
  return len;
}

static size_t
write_cb (char *data, size_t size, size_t nmemb, void *opaque)
{
  struct s3_call *c = opaque;
  size_t len = size * nmemb;

  if (c->in_2xx) {
    if (c->out == NULL)
      return len;
    if (len > c->max_len - c->out->len) {
      c->efbig = true;
      return 0;
    }
    return cs_buf_append (c->out, data, len) == 0 ? len : 0;
  }
  if (c->err_body.len < ERROR_BODY_MAX) {
    size_t n = len;
    if (n > ERROR_BODY_MAX - c->err_body.len)
      n = ERROR_BODY_MAX - c->err_body.len;
    if (cs_buf_append (&c->err_body, data, n) < 0)
      return 0;
  }
  return len;
}

/* The body, handed out as curl asks for it.  The last bytes go only
 * while the fence allows: until then the server holds an incomplete
 * request, which it never acts on.
 */
static size_t
read_cb (char *buf, size_t size, size_t nitems, void *opaque)
{
  struct s3_call *c = opaque;
  size_t n = size * nitems, left = c->body_len - c->body_pos;

  if (n > left)
    n = left;
  if (n == left && n > 0 && c->mutating && cs_fence_left (c->fence) <= 0) {
    c->fenced = true;
    return CURL_READFUNC_ABORT;
  }
  memcpy (buf, (const char *) c->body + c->body_pos, n);
  c->body_pos += n;
  if (c->body_pos == c->body_len)
    c->body_complete = true;
  return n;
}

/* curl rewinds the body to send it again: on a kept-alive connection
 * that closed without an answer, it re-sends the request on a new one by
 * itself.  If the body had gone in full, the server may have acted on the
 * first send: whatever the second one gets, the attempt is ambiguous.
 */
static int
seek_cb (void *opaque, curl_off_t offset, int origin)
{
  struct s3_call *c = opaque;

  if (c->body_complete)
    c->resent = true;
  if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > c->body_len)
    return CURL_SEEKFUNC_CANTSEEK;
  c->body_pos = (size_t) offset;
  return CURL_SEEKFUNC_OK;
}

/* Called every POLL_MS at least (see run_transfer), whatever the socket
 * does: a mutating transfer stops as soon as the fence is past or closed.
 */
static int
xferinfo_cb (void *opaque, curl_off_t dltotal, curl_off_t dlnow,
             curl_off_t ultotal, curl_off_t ulnow)
{
  struct s3_call *c = opaque;
  double t;

  if (c->mutating && cs_fence_left (c->fence) <= 0) {
    c->fenced = true;
    return 1;
  }
  /* request_timeout: a transfer may be slow, not silent. */
  t = now_monotonic ();
  if (dlnow != c->seen_dl || ulnow != c->seen_ul) {
    c->seen_dl = dlnow;
    c->seen_ul = ulnow;
    c->last_move = t;
  }
  else if (t - c->last_move >= c->idle_limit) {
    c->stalled = true;
    return 1;
  }
  return 0;
}

/* Closing a socket sends RST and drops what is still queued: an aborted
 * request must not trickle out of the kernel after we gave up on it.
 */
static int
sockopt_cb (void *opaque, curl_socket_t fd, curlsocktype purpose)
{
  const struct linger lg = { .l_onoff = 1, .l_linger = 0 };

  if (purpose == CURLSOCKTYPE_IPCXN)
    setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  return CURL_SOCKOPT_OK;
}

/* curl_easy_perform, but on the handle's own multi handle so that the
 * progress callback runs every POLL_MS even when no byte moves (the easy
 * interface leaves a quiet transfer alone for a second).
 */
static CURLcode
run_transfer (struct s3_conn *h)
{
  CURLcode cc = CURLE_OK;
  CURLMcode mc;
  CURLMsg *msg;
  int running = 1, queued;

  mc = curl_multi_add_handle (h->multi, h->easy);
  if (mc != CURLM_OK)
    return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY :
      CURLE_FAILED_INIT;
  for (;;) {
    mc = curl_multi_perform (h->multi, &running);
    if (mc != CURLM_OK || running == 0)
      break;
    mc = curl_multi_poll (h->multi, NULL, 0, POLL_MS, NULL);
    if (mc != CURLM_OK)
      break;
  }
  if (mc != CURLM_OK)
    cc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
  else {
    cc = CURLE_FAILED_INIT;
    while ((msg = curl_multi_info_read (h->multi, &queued)) != NULL)
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->easy)
        cc = msg->data.result;
  }
  /* The connection stays in the multi handle's cache, unless the transfer
   * was aborted: then curl closes it here (with a RST, see sockopt_cb).
   */
  curl_multi_remove_handle (h->multi, h->easy);
  return cc;
}

static struct curl_slist *
add_header (struct curl_slist *list, bool *ok, const char *name,
            const char *value)
{
  CLEANUP_FREE char *line = NULL;
  struct curl_slist *l;

  if (!*ok)
    return list;
  /* "Name;" sends an empty header; "Name:" would remove it. */
  if (asprintf (&line, value[0] ? "%s: %s" : "%s;", name, value) < 0) {
    line = NULL;
    *ok = false;
    return list;
  }
  l = curl_slist_append (list, line);
  if (l == NULL) {
    *ok = false;
    return list;
  }
  return l;
}

/* One attempt: sign with cr, send, read the answer into c.  Returns 0
 * when the attempt produced an outcome (whatever it is) or -ENOMEM.
 */
static int
attempt_signed (struct s3store *st, struct s3_conn *conn, struct s3_call *c,
                const char *payload_hash, double timeout,
                const struct s3_creds *cr)
{
  CURL *h = conn->easy;
  CLEANUP_FREE char *path = NULL, *query = NULL, *url_query = NULL;
  CLEANUP_FREE char *auth = NULL, *url = NULL;
  struct sigv4_header hdr[12];
  size_t n = 0, i;
  char amz_date[17];
  struct curl_slist *list = NULL;
  bool ok = true;
  const struct sigv4_key key = {
    cr->access_key, cr->secret_key, st->region, "s3",
  };
  struct sigv4_request req = {
    .method = c->method, .headers = hdr, .payload_hash = payload_hash,
  };
  long timeout_ms, connect_ms;

  c->cc = CURLE_OK;
  c->status = 0;
  c->efbig = c->in_2xx = false;
  c->etag[0] = c->request_id[0] = c->bucket_region[0] = '\0';
  c->generation[0] = '\0';
  c->mtime = c->date = 0;
  memset (&c->err, 0, sizeof c->err);
  c->err_body.len = 0;
  c->errbuf[0] = '\0';
  c->body_pos = 0;
  c->fenced = c->fence_timeout = c->resent = c->stalled = false;
  /* Without a body, a request is complete once its headers are out. */
  c->body_complete = c->body_len == 0;
  c->idle_limit = timeout;
  c->seen_dl = c->seen_ul = 0;
  if (c->out)
    c->out->len = 0;

  if (full_path (st, c->object, &path) < 0 ||
      sigv4_query (c->params, c->n_params, &query, &url_query) < 0)
    return -ENOMEM;
  url = xasprintf ("%s%s%s%s", st->url_base, path,
                   url_query[0] ? "?" : "", url_query);
  if (url == NULL)
    return -ENOMEM;

  /* Signed fresh on every attempt: x-amz-date is now, by the store's
   * clock once a RequestTimeTooSkewed told us how far ours is off.
   */
  sigv4_amz_date (time (NULL) + __atomic_load_n (&st->clock_offset,
                                                 __ATOMIC_RELAXED),
                  amz_date);
  hdr[n++] = (struct sigv4_header) { "host", st->host };
  hdr[n++] = (struct sigv4_header) { "x-amz-date", amz_date };
  hdr[n++] = (struct sigv4_header) { "x-amz-content-sha256", payload_hash };
  if (cr->session_token)
    hdr[n++] = (struct sigv4_header) { "x-amz-security-token",
                                       cr->session_token };
  if (c->content_md5)
    hdr[n++] = (struct sigv4_header) { "content-md5", c->content_md5 };
  if (c->cond_name)
    hdr[n++] = (struct sigv4_header) { c->cond_name, c->cond_value };
  for (i = 0; i < c->n_extra; ++i)
    hdr[n++] = c->extra[i];
  req.path = path;
  req.query = query;
  req.n_headers = n;
  if (sigv4_authorization (&key, amz_date, &req, &auth) < 0)
    return -ENOMEM;

  for (i = 0; i < n; ++i)
    list = add_header (list, &ok, hdr[i].name, hdr[i].value);
  list = add_header (list, &ok, "Authorization", auth);
  if (c->body)
    list = add_header (list, &ok, "Content-Type",
                       c->content_type ? c->content_type :
                       "application/octet-stream");
  /* No "Expect: 100-continue": a round trip for every upload. */
  if (ok) {
    struct curl_slist *l = curl_slist_append (list, "Expect:");
    if (l)
      list = l;
    else
      ok = false;
  }
  if (!ok) {
    curl_slist_free_all (list);
    return -ENOMEM;
  }

  /* timeout is an idle limit (xferinfo_cb): no limit on the whole
   * transfer.  Nor does the fence set one: its deadline moves on with
   * every renewal, so a fixed timeout taken from it now would cut a long
   * upload that the lock keeps allowing.  xferinfo_cb checks the deadline
   * as it is at every call, at least every POLL_MS, and read_cb before the
   * last bytes of the body.
   */
  timeout_ms = 0;
  connect_ms = (long) ((timeout < CONNECT_TIMEOUT ?
                        timeout : CONNECT_TIMEOUT) * 1000) + 1;

  /* Reset keeps the live connection, the DNS and TLS session caches. */
  curl_easy_reset (h);
  curl_easy_setopt (h, CURLOPT_URL, url);
  /* The path we signed is the path we send: curl must not squash "/./"
   * or "/../" (prefix= refuses them too, see normalise_prefix).
   */
  curl_easy_setopt (h, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt (h, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (h, CURLOPT_HEADERDATA, c);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, c);
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, c->errbuf);
  curl_easy_setopt (h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  curl_easy_setopt (h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt (h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt (h, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
  curl_easy_setopt (h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt (h, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
  curl_easy_setopt (h, CURLOPT_XFERINFODATA, c);
  if (st->ca_file)
    curl_easy_setopt (h, CURLOPT_CAINFO, st->ca_file);
  /* curl silently re-sends a request whose kept-alive connection died
   * before any answer, which would hide an ambiguous conditional put
   * behind the retry's 412.  A fresh connection is never re-sent.
   */
  if (c->conditional)
    curl_easy_setopt (h, CURLOPT_FRESH_CONNECT, 1L);
  if (c->body) {
    /* Through read_cb, never POSTFIELDS: see there. */
    curl_easy_setopt (h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt (h, CURLOPT_READDATA, c);
    curl_easy_setopt (h, CURLOPT_SEEKFUNCTION, seek_cb);
    curl_easy_setopt (h, CURLOPT_SEEKDATA, c);
    if (strcmp (c->method, "PUT") == 0) {
      curl_easy_setopt (h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt (h, CURLOPT_INFILESIZE_LARGE,
                        (curl_off_t) c->body_len);
    }
    else {
      curl_easy_setopt (h, CURLOPT_POST, 1L);
      curl_easy_setopt (h, CURLOPT_POSTFIELDSIZE_LARGE,
                        (curl_off_t) c->body_len);
      if (strcmp (c->method, "POST") != 0)
        curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, c->method);
    }
  }
  else if (strcmp (c->method, "HEAD") == 0)
    curl_easy_setopt (h, CURLOPT_NOBODY, 1L);
  else {
    curl_easy_setopt (h, CURLOPT_HTTPGET, 1L);
    if (strcmp (c->method, "GET") != 0)
      curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, c->method);
  }

  c->last_move = now_monotonic ();
  c->cc = run_transfer (conn);
  /* curl's timeout at the deadline (its clock may be a little ahead). */
  if (c->mutating && c->cc != CURLE_OK &&
      (cs_fence_left (c->fence) <= 0 ||
       (c->cc == CURLE_OPERATION_TIMEDOUT && c->fence_timeout)))
    c->fenced = true;
  else if (c->stalled) {
    c->cc = CURLE_OPERATION_TIMEDOUT;
    snprintf (c->errbuf, sizeof c->errbuf, "no byte moved for %.1f s "
              "(request timeout)", c->idle_limit);
  }
  if (c->cc == CURLE_OK)
    curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &c->status);
  else if (c->efbig)
    c->cc = CURLE_OK;           /* our own abort: the answer is -EFBIG */
  if (!c->efbig && c->cc == CURLE_OK && !is_2xx (c->status) &&
      c->err_body.len)
    s3_xml_parse_error (c->err_body.data, c->err_body.len, &c->err);

  /* Forget what the handle points to before it goes back to the pool. */
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, NULL);
  curl_slist_free_all (list);
  return 0;
}

/* The credential hand-off: each attempt signs with one snapshot of the
 * keys (s3-creds.h), held until its answer is in, so a rotation in the
 * background never tears key, secret and token apart, and a retry signs
 * with whatever is current then.
 */
static int
attempt (struct s3store *st, struct s3_conn *conn, struct s3_call *c,
         const char *payload_hash, double timeout)
{
  struct s3_creds *cr = s3_creds_get (st->creds);
  int r = attempt_signed (st, conn, c, payload_hash, timeout, cr);

  s3_creds_put (cr);
  return r;
}

/* An attempt aborted under way by the fence: never retried.  The first
 * one of the store is an error, the rest debug lines (as in
 * objstore_fence_check: the cache has failed by then and says so).
 */
static int
fenced (struct s3store *st, struct s3_call *c)
{
  const char *fate = c->body_complete ? "it may still have landed" :
    "its body was not complete: it did not land";

  if (__atomic_add_fetch (&st->os.stats.fenced, 1, __ATOMIC_RELAXED) == 1)
    cs_error ("s3: %s %s: aborted under way after %u attempt%s: the write "
              "deadline of the volume lock passed (the lock may be lost); "
              "%s; nothing is written any more", c->op, c->key, c->attempts,
              c->attempts == 1 ? "" : "s", fate);
  else
    cs_debug ("s3: %s %s: aborted under way: past the write deadline; %s",
              c->op, c->key, fate);
  return -ENOLCK;
}

/* An earlier attempt may have taken effect and no later answer settles
 * it (see the top comment): -ETIMEDOUT.
 */
static int
outcome_unknown (struct s3store *st, struct s3_call *c)
{
  char what[512];

  describe (c, what, sizeof what);
  /* A conditional put is not an error yet: the contract gives -ETIMEDOUT
   * to a caller that settles it by reading the object again (the lock).
   */
  if (c->conditional)
    cs_debug ("s3: %s %s: outcome unknown after %u attempts in %.1f s "
              "(last: %s); the caller re-reads", c->op, c->key, c->attempts,
              c->elapsed, what);
  else
    cs_error ("s3: %s %s: outcome unknown: an attempt may have taken "
              "effect without an answer from %s, and %u attempts in %.1f s "
              "did not settle it (last: %s)", c->op, c->key, st->endpoint,
              c->attempts, c->elapsed, what);
  return -ETIMEDOUT;
}

/* The store's Date says our clock is this far off: sign by its clock. */
static void
correct_clock (struct s3store *st, int64_t store_date)
{
  int64_t offset = store_date - (int64_t) time (NULL);

  __atomic_store_n (&st->clock_offset, offset, __ATOMIC_RELAXED);
  if (__atomic_exchange_n (&st->skew_logged, 1, __ATOMIC_RELAXED) == 0)
    cs_warn ("s3: %s refused a request as RequestTimeTooSkewed: this "
             "machine's clock is %" PRId64 " s %s the store's; signing by "
             "the store's clock from now on (set the clock right: NTP)",
             st->endpoint, offset < 0 ? -offset : offset,
             offset < 0 ? "ahead of" : "behind");
  else
    cs_debug ("s3: clock offset to the store now %" PRId64 " s", offset);
}

/* Run a call with retries; returns 0 or a negative errno and, unless the
 * result is one the caller expects, logs the one line that says why.
 */
static int
run (struct s3store *st, struct s3_call *c)
{
  char payload_hash[65], what[512];
  double start = now_monotonic (), deadline, delay, remaining, timeout;
  unsigned i;
  struct s3_conn *h;
  int r;

  sigv4_sha256_hex (c->body ? c->body : "", c->body ? c->body_len : 0,
                    payload_hash);
  deadline = start + (c->retry_time > 0 ? c->retry_time : 0);
  c->attempts = 0;
  c->ambiguous_seen = false;
  c->fence = c->mutating ? st->os.fence : NULL;

  for (;;) {
    c->attempts++;
    timeout = st->request_timeout;
    remaining = deadline - now_monotonic ();
    /* The last attempts get what is left of the budget, but at least a
     * second so that they can succeed at all.
     */
    if (c->attempts > 1 && remaining < timeout)
      timeout = remaining > 1 ? remaining : 1;

    h = pool_get (st);
    if (h == NULL) {
      r = -ENOMEM;
      goto fail_nomem;
    }
    /* After the wait for a handle and any backoff sleep: right before the
     * request goes.  objstore_fence_check counts and logs the refusal.
     */
    if (c->mutating) {
      r = objstore_fence_check (&st->os, c->op, c->key);
      if (r < 0) {
        pool_put (st, h);
        c->elapsed = now_monotonic () - start;
        return r;
      }
    }
    r = attempt (st, h, c, payload_hash, timeout);
    pool_put (st, h);
    if (r < 0)
      goto fail_nomem;
    if (c->fenced) {
      c->elapsed = now_monotonic () - start;
      return fenced (st, c);
    }

    if (!c->efbig && c->cc == CURLE_OK && is_2xx (c->status))
      break;
    if (c->mutating && (s3_ambiguous (c) || c->resent))
      c->ambiguous_seen = true;
    /* Our clock is off: the store refused the request before acting on
     * it.  Sign by its clock from now on, and go again at once, once.
     */
    if (c->cc == CURLE_OK && c->status == 403 && !c->skew_retried &&
        strcmp (c->err.code, "RequestTimeTooSkewed") == 0 && c->date > 0) {
      correct_clock (st, c->date);
      c->skew_retried = true;
      continue;
    }
    if (!s3_retryable (c) || c->retry_time <= 0)
      break;
    /* Full jitter: uniform in [0, min (cap, base * 2^(attempt-1))]. */
    delay = BACKOFF_BASE;
    for (i = 1; i < c->attempts && delay < BACKOFF_CAP; ++i)
      delay *= 2;
    if (delay > BACKOFF_CAP)
      delay = BACKOFF_CAP;
    delay *= random_unit ();
    if (now_monotonic () + delay >= deadline)
      break;
    describe (c, what, sizeof what);
    cs_debug ("s3: %s %s: %s; retry %u in %.0f ms", c->op, c->key, what,
              c->attempts, delay * 1000);
    __atomic_add_fetch (&st->os.stats.retries, 1, __ATOMIC_RELAXED);
    /* No use sleeping past the deadline: the check above refuses then. */
    if (c->mutating && cs_fence_left (c->fence) / 1e9 < delay)
      delay = cs_fence_left (c->fence) / 1e9;
    sleep_seconds (delay);
  }
  c->elapsed = now_monotonic () - start;

  r = s3_errno (c);
  if (r < 0 && c->ambiguous_seen &&
      !(r == -ENOENT && strcmp (c->method, "DELETE") == 0))
    return outcome_unknown (st, c);
  if (r == 0 || c->quiet || (r == -ENOENT && c->quiet_enoent) ||
      (r == -EEXIST && c->quiet_eexist))
    return r;

  describe (c, what, sizeof what);
  if (c->cc != CURLE_OK)
    cs_error ("s3: %s %s: %s %s: %s (%u attempt%s in %.1f s)",
              c->op, c->key,
              c->cc == CURLE_COULDNT_CONNECT ||
              c->cc == CURLE_COULDNT_RESOLVE_HOST ||
              c->cc == CURLE_SSL_CONNECT_ERROR ? "cannot reach" :
              c->cc == CURLE_OPERATION_TIMEDOUT ? "no answer in time from" :
              "request failed at", st->endpoint, what, c->attempts,
              c->attempts == 1 ? "" : "s", c->elapsed);
  else
    cs_error ("s3: %s %s: %s%s%s%s%s%s (%u attempt%s in %.1f s%s%s)",
              c->op, c->key, what,
              r == -EACCES ? "; " CLOCK_HINT : "",
              c->bucket_region[0] ? "; the bucket is in region " : "",
              c->bucket_region,
              c->bucket_region[0] ? ", give region=" : "",
              c->bucket_region,
              c->attempts, c->attempts == 1 ? "" : "s", c->elapsed,
              c->request_id[0] ? ", request id " : "", c->request_id);
  return r;

 fail_nomem:
  c->elapsed = now_monotonic () - start;
  if (c->ambiguous_seen)
    return outcome_unknown (st, c);
  if (!c->quiet)
    cs_error ("s3: %s %s: out of memory", c->op, c->key);
  return r;
}

/* A call with the store's defaults. */
static void
call_init (struct s3store *st, struct s3_call *c, const char *op,
           const char *key, const char *method, const char *object)
{
  memset (c, 0, sizeof *c);
  c->op = op;
  c->key = key;
  c->method = method;
  c->object = object;
  c->max_len = SIZE_MAX;
  c->retry_time = st->retry_time;
}

static void
call_free (struct s3_call *c)
{
  cs_buf_free (&c->err_body);
}

static int
object_name (struct s3store *st, const char *op, const char *key,
             char **out)
{
  if (key == NULL || key[0] == '\0') {
    cs_error ("s3: %s: empty key", op);
    return -EINVAL;
  }
  *out = xasprintf ("%s%s", st->prefix, key);
  return *out ? 0 : -ENOMEM;
}

static void
fill_info (struct s3store *st, struct objstore_info *info,
           const struct s3_call *c, uint64_t size, bool is_put)
{
  if (info == NULL)
    return;
  /* The version tag put_if is given back: GCS conditions on generations. */
  snprintf (info->etag, sizeof info->etag, "%s",
            st->dialect && st->dialect->tag == TAG_GENERATION ?
            c->generation : c->etag);
  info->date = c->date;
  /* A PUT answer carries no Last-Modified: the object's time is the
   * store's clock when it answered.
   */
  info->mtime = c->mtime ? c->mtime : is_put ? c->date : 0;
  info->size = size;
}

/* ----------------------------------------------------------- operations */

static int
s3_get (struct objstore *os, const char *key, size_t max_len,
        struct cs_buf *out, struct objstore_info *info)
{
  struct s3store *st = (struct s3store *) os;
  CLEANUP_FREE char *object = NULL;
  struct s3_call c;
  int r;

  r = object_name (st, "get", key, &object);
  if (r < 0)
    return r;
  call_init (st, &c, "get", key, "GET", object);
  c.out = out;
  c.max_len = max_len;
  c.quiet_enoent = true;
  r = run (st, &c);
  if (r == 0)
    fill_info (st, info, &c, out->len, false);
  else
    out->len = 0;
  call_free (&c);
  return r;
}

/* The headers every PUT carries: server-side encryption, storage class. */
static void
put_headers (struct s3store *st, struct s3_call *c)
{
  if (st->sse)
    c->extra[c->n_extra++] = (struct sigv4_header) {
      "x-amz-server-side-encryption", st->sse };
  if (st->sse_kms_key_id)
    c->extra[c->n_extra++] = (struct sigv4_header) {
      "x-amz-server-side-encryption-aws-kms-key-id", st->sse_kms_key_id };
  if (st->storage_class)
    c->extra[c->n_extra++] = (struct sigv4_header) {
      "x-amz-storage-class", st->storage_class };
}

/* One PUT of object with an optional conditional header (name, value):
 * the engine's part.  c is the caller's, to look at; call_free it.
 */
static int
put_call (struct s3store *st, struct s3_call *c, const char *op,
          const char *key, const char *object, const void *data, size_t len,
          const char *cond_name, const char *cond_value, bool quiet)
{
  call_init (st, c, op, key, "PUT", object);
  c->body = data ? data : "";
  c->body_len = len;
  c->mutating = true;
  c->quiet = quiet;
  put_headers (st, c);
  if (cond_name) {
    c->conditional = true;
    c->quiet_eexist = true;
    c->cond_name = cond_name;
    c->cond_value = cond_value;
  }
  return run (st, c);
}

static bool
all_digits (const char *s)
{
  if (*s == '\0')
    return false;
  for (; *s; ++s)
    if (!isdigit ((unsigned char) *s))
      return false;
  return true;
}

static int detect (struct s3store *st, bool quiet);

static int
do_put (struct s3store *st, const char *op, const char *key,
        const void *data, size_t len, bool conditional, const char *if_match,
        struct objstore_info *info)
{
  const struct s3_dialect *d;
  CLEANUP_FREE char *object = NULL, *quoted = NULL;
  const char *cond_name = NULL, *cond_value = NULL;
  struct s3_call c;
  int r;

  r = object_name (st, op, key, &object);
  if (r < 0)
    return r;
  /* A conditional write before the probe (lock=none creating a volume,
   * say) probes first: the spelling must be known.
   */
  if (conditional && !st->detected) {
    r = detect (st, true);
    if (r < 0)
      return r;
  }
  d = st->dialect ? st->dialect : &dialect_standard;
  if (conditional && if_match == NULL) {
    cond_name = d->create_header;
    cond_value = d->create_value;
    if (cond_name == NULL) {
      cs_error ("s3: %s %s: %s cannot create an object only if it is "
                "absent (provider %s)", op, key, st->endpoint, d->name);
      return -ENOTSUP;
    }
  }
  else if (conditional) {
    cond_name = d->replace_header;
    if (cond_name == NULL) {
      /* The callers ask objstore_caps first; say it once if one does not. */
      if (__atomic_exchange_n (&st->no_cas_logged, 1, __ATOMIC_RELAXED) == 0)
        cs_debug ("s3: %s %s: provider %s has no compare-and-swap", op, key,
                  d->name);
      return -ENOTSUP;
    }
    switch (d->tag) {
    case TAG_QUOTED:
      quoted = xasprintf ("\"%s\"", if_match);
      if (quoted == NULL)
        return -ENOMEM;
      cond_value = quoted;
      break;
    case TAG_BARE:
      cond_value = if_match;
      break;
    case TAG_GENERATION:
      /* No object has a generation that is not a number (lock_probe's
       * wrong tag, say): the condition fails without asking.
       */
      if (!all_digits (if_match))
        return -EEXIST;
      cond_value = if_match;
      break;
    }
  }
  r = put_call (st, &c, op, key, object, data, len, cond_name, cond_value,
                false);
  /* A replace-if-unchanged of a missing object fails its condition. */
  if (r == -ENOENT && conditional && if_match)
    r = -EEXIST;
  else if (r == -ENOENT)
    r = -EIO;                   /* logged by run: a PUT has no such answer */
  if (r == 0)
    fill_info (st, info, &c, len, true);
  call_free (&c);
  return r;
}

static int
s3_put (struct objstore *os, const char *key, const void *data, size_t len,
        struct objstore_info *info)
{
  return do_put ((struct s3store *) os, "put", key, data, len, false, NULL,
                 info);
}

static int
s3_put_if (struct objstore *os, const char *key, const void *data,
           size_t len, const char *if_match, struct objstore_info *info)
{
  return do_put ((struct s3store *) os, "put-if", key, data, len, true,
                 if_match, info);
}

static int
s3_del (struct objstore *os, const char *key)
{
  struct s3store *st = (struct s3store *) os;
  CLEANUP_FREE char *object = NULL;
  struct s3_call c;
  int r;

  r = object_name (st, "delete", key, &object);
  if (r < 0)
    return r;
  call_init (st, &c, "delete", key, "DELETE", object);
  c.quiet_enoent = true;
  c.mutating = true;
  r = run (st, &c);
  if (r == -ENOENT)
    r = 0;                      /* deleting a missing key succeeds */
  call_free (&c);
  return r;
}

static int
delete_batch (struct s3store *st, const char *const *keys, size_t n)
{
  struct cs_buf body = CS_BUF_INIT, answer = CS_BUF_INIT;
  const struct sigv4_param params[] = { { "delete", NULL } };
  char md5[25], label[64];
  struct s3_error first;
  size_t n_errors = 0;
  struct s3_call c;
  int r;

  r = s3_xml_delete_body (st->prefix, keys, n, &body);
  if (r < 0) {
    cs_error ("s3: delete-many: out of memory");
    return r;
  }
  sigv4_md5_base64 (body.data, body.len, md5);
  snprintf (label, sizeof label, "(%zu keys from %s)", n, keys[0]);
  call_init (st, &c, "delete-many", label, "POST", NULL);
  c.params = params;
  c.n_params = 1;
  c.body = body.data;
  c.body_len = body.len;
  c.content_type = "application/xml";
  c.content_md5 = md5;          /* S3 requires it for DeleteObjects */
  c.out = &answer;
  c.mutating = true;
  r = run (st, &c);
  /* A quiet DeleteObjects lists only the keys it could not delete; with
   * none, OSS (and AWS, its guide says) answers with an empty body.
   */
  while (r == 0 && answer.len > 0 &&
         isspace ((unsigned char) answer.data[answer.len - 1]))
    answer.len--;
  if (r == 0 && answer.len == 0)
    ;
  else if (r == 0) {
    r = s3_xml_parse_delete_result (answer.data, answer.len, &n_errors,
                                    &first);
    if (r < 0) {
      cs_error ("s3: delete-many %s: the answer is not a DeleteResult "
                "document", label);
      r = -EIO;
    }
    else if (n_errors > 0) {
      cs_error ("s3: delete-many %s: %zu key%s not deleted; first: %s: "
                "%s: %s", label, n_errors, n_errors == 1 ? "" : "s",
                first.key, first.code, first.message);
      r = strcmp (first.code, "AccessDenied") == 0 ? -EACCES : -EIO;
    }
  }
  call_free (&c);
  cs_buf_free (&body);
  cs_buf_free (&answer);
  return r;
}

static int
s3_del_many (struct objstore *os, const char *const *keys, size_t n)
{
  struct s3store *st = (struct s3store *) os;
  size_t i, m;
  int r;

  for (i = 0; i < n; i += m) {
    m = n - i < DELETE_BATCH ? n - i : DELETE_BATCH;
    r = delete_batch (st, keys + i, m);
    if (r < 0)
      return r;
  }
  return 0;
}

struct list_state {
  objstore_list_fn fn;
  void *opaque;
};

static int
list_key (void *opaque, const char *key, uint64_t size)
{
  struct list_state *ls = opaque;

  return ls->fn (ls->opaque, key, size);
}

/* The continuation tokens of one listing, to notice a server that sends
 * one again: an open-addressed hash set, as a listing of a large volume
 * has a hundred thousand pages.
 */
struct token_set {
  char **slot;                  /* NULL: free */
  size_t n, cap;                /* cap a power of two, or 0 */
};

static uint64_t
token_hash (const char *t)
{
  uint64_t h = 0xcbf29ce484222325ULL;   /* FNV-1a */

  for (; *t; ++t)
    h = (h ^ (unsigned char) *t) * 0x100000001b3ULL;
  return h;
}

/* 1 if t was in the set, 0 if added now, or -ENOMEM. */
static int
token_seen (struct token_set *ts, const char *t)
{
  size_t i;

  if (2 * (ts->n + 1) > ts->cap) {
    struct token_set bigger = { NULL, 0, ts->cap ? 2 * ts->cap : 64 };

    bigger.slot = calloc (bigger.cap, sizeof *bigger.slot);
    if (bigger.slot == NULL)
      return -ENOMEM;
    for (i = 0; i < ts->cap; ++i)
      if (ts->slot[i]) {
        size_t j = token_hash (ts->slot[i]) & (bigger.cap - 1);
        while (bigger.slot[j])
          j = (j + 1) & (bigger.cap - 1);
        bigger.slot[j] = ts->slot[i];
      }
    bigger.n = ts->n;
    free (ts->slot);
    *ts = bigger;
  }
  for (i = token_hash (t) & (ts->cap - 1); ts->slot[i];
       i = (i + 1) & (ts->cap - 1))
    if (strcmp (ts->slot[i], t) == 0)
      return 1;
  ts->slot[i] = strdup (t);
  if (ts->slot[i] == NULL)
    return -ENOMEM;
  ts->n++;
  return 0;
}

static void
token_set_free (struct token_set *ts)
{
  for (size_t i = 0; i < ts->cap; ++i)
    free (ts->slot[i]);
  free (ts->slot);
}

/* A truncated page must give a token this listing has not seen yet, or
 * following it would never end.
 */
static int
next_page_ok (struct s3store *st, const char *full, const char *token,
              struct token_set *seen)
{
  int r;

  /* (s3_xml_parse_list refuses a truncated page without a token; an
   * empty one is no better.)
   */
  if (token == NULL || token[0] == '\0') {
    cs_error ("s3: list %s: %s answered a truncated page without a "
              "continuation token (page %zu): the listing cannot go on; "
              "is the endpoint really S3?", full, st->endpoint,
              seen->n + 1);
    return -EIO;
  }
  r = token_seen (seen, token);
  if (r < 0) {
    cs_error ("s3: list %s: out of memory", full);
    return r;
  }
  if (r == 1) {
    cs_error ("s3: list %s: %s answered page %zu with a continuation token "
              "it gave before (\"%.64s\"): the listing would never end; "
              "is the endpoint really S3?", full, st->endpoint,
              seen->n + 1, token);
    return -EIO;
  }
  return 0;
}

/* List under the store prefix + prefix, one page of at most max_keys
 * (0: the server's default, 1000) or all pages.
 */
static int
list_pages (struct s3store *st, const char *prefix, unsigned max_keys,
            bool quiet, objstore_list_fn fn, void *opaque,
            struct s3_call *probe)
{
  CLEANUP_FREE char *full = NULL;
  char *token = NULL, max[16];
  struct cs_buf page = CS_BUF_INIT;
  struct list_state ls = { fn, opaque };
  struct sigv4_param params[4];
  bool truncated;
  struct s3_call c;
  struct token_set seen = { NULL, 0, 0 };
  int r;

  full = xasprintf ("%s%s", st->prefix, prefix ? prefix : "");
  if (full == NULL)
    return -ENOMEM;
  snprintf (max, sizeof max, "%u", max_keys);
  do {
    size_t n = 0;

    params[n++] = (struct sigv4_param) { "list-type", "2" };
    params[n++] = (struct sigv4_param) { "prefix", full };
    if (max_keys)
      params[n++] = (struct sigv4_param) { "max-keys", max };
    if (token)
      params[n++] = (struct sigv4_param) { "continuation-token", token };
    call_init (st, &c, "list", prefix && prefix[0] ? prefix : "/", "GET",
               NULL);
    c.params = params;
    c.n_params = n;
    c.out = &page;
    c.quiet = quiet;
    if (probe)
      c.retry_time = st->retry_time < PROBE_RETRY_TIME ?
        st->retry_time : PROBE_RETRY_TIME;
    r = run (st, &c);
    if (probe) {
      *probe = c;               /* the caller reads the outcome */
      probe->err_body = (struct cs_buf) CS_BUF_INIT;
    }
    call_free (&c);
    if (r < 0)
      break;
    free (token);
    token = NULL;
    r = s3_xml_parse_list (page.data, page.len, st->prefix, list_key, &ls,
                           &truncated, &token);
    if (r < 0) {
      if (!quiet)
        cs_error ("s3: list %s: the answer of %s is not a ListBucketResult "
                  "document, or a truncated one without a continuation "
                  "token (does the endpoint support ListObjectsV2?)",
                  full, st->endpoint);
      r = -EIO;
    }
    if (r == 0 && truncated && max_keys == 0)
      r = next_page_ok (st, full, token, &seen);
  } while (r == 0 && truncated && max_keys == 0);
  token_set_free (&seen);
  free (token);
  cs_buf_free (&page);
  return r;
}

static int
s3_list (struct objstore *os, const char *prefix, objstore_list_fn fn,
         void *opaque)
{
  return list_pages ((struct s3store *) os, prefix, 0, false, fn, opaque,
                     NULL);
}

static void
s3_close (struct objstore *os)
{
  struct s3store *st = (struct s3store *) os;
  unsigned i;

  if (st == NULL)
    return;
  for (i = 0; i < st->n_idle; ++i)
    conn_free (st->idle[i]);
  free (st->idle);
  pthread_mutex_destroy (&st->lock);
  pthread_mutex_destroy (&st->detect_lock);
  pthread_cond_destroy (&st->cond);
  s3_creds_close (st->creds);
  free (st->bucket);
  free (st->prefix);
  free (st->endpoint);
  free (st->url_base);
  free (st->host);
  free (st->path_base);
  free (st->region);
  free (st->ca_file);
  free (st->sse);
  free (st->sse_kms_key_id);
  free (st->storage_class);
  free (st);
}

static int s3_sibling (struct objstore *os, struct objstore **out);

/* ------------------------------------------------------- dialect probe */

/* The probe's requests: on a throw-away key, each PUT with one spelling,
 * read the answer.  Quiet: the probe says itself what it found.
 */
static int
probe_put (struct s3store *st, const char *key, const char *object, int n,
           const char *name, const char *value, struct s3_call *c)
{
  char body[32];

  snprintf (body, sizeof body, "dialect probe %d\n", n);
  return put_call (st, c, "probe", key, object, body, strlen (body), name,
                   value, true);
}

/* Which spelling of conditional writes does the store honour?  Tried in
 * this order, each on the answer of the one before:
 *   1. If-None-Match: * on a new key.  Succeeds: an answer carrying
 *      x-goog-generation is GCS; else 2.  Refused as NotImplemented: 3.
 *   2. If-Match with the object's ETag quoted.  Succeeds: "standard".
 *      Refused (412, 400): the same bare; succeeds: "standard-bare" (Ceph
 *      RGW 16.2).  Else "standard": lock_probe then says what fails.
 *   3. x-oss-forbid-overwrite: true, twice.  The second refused: OSS.  The
 *      second succeeds too: "none", refused.
 * Whether the conditions are really enforced (a second create refused, a
 * wrong etag refused) is lock_probe's check, afterwards, in the dialect
 * found here.
 */
static int
probe_dialect (struct s3store *st)
{
  CLEANUP_FREE char *object = NULL, *quoted = NULL;
  char key[64], etag[128];
  const struct s3_dialect *found = NULL;
  struct s3_call c;
  uint8_t rnd[8];
  int r;

  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd)
    return -errno;
  snprintf (key, sizeof key, "dialect-probe-%02x%02x%02x%02x%02x%02x%02x%02x",
            rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
  r = object_name (st, "probe", key, &object);
  if (r < 0)
    return r;

  r = probe_put (st, key, object, 1, "If-None-Match", "*", &c);
  snprintf (etag, sizeof etag, "%s", c.etag);
  if (r == 0 && c.generation[0])
    found = &dialect_gcs;
  call_free (&c);
  if (r == 0 && found == NULL) {
    quoted = xasprintf ("\"%s\"", etag);
    if (quoted == NULL) {
      r = -ENOMEM;
      goto out;
    }
    r = probe_put (st, key, object, 2, "If-Match", quoted, &c);
    call_free (&c);
    if (r == 0)
      found = &dialect_standard;
    else if (r == -EEXIST || r == -EINVAL) {
      r = probe_put (st, key, object, 3, "If-Match", etag, &c);
      call_free (&c);
      found = r == 0 ? &dialect_standard_bare : &dialect_standard;
      r = 0;
    }
  }
  else if (r == -ENOTSUP) {
    r = probe_put (st, key, object, 4, "x-oss-forbid-overwrite", "true", &c);
    call_free (&c);
    if (r == 0) {
      r = probe_put (st, key, object, 5, "x-oss-forbid-overwrite", "true",
                     &c);
      call_free (&c);
      found = r == -EEXIST ? &dialect_oss : r == 0 ? &dialect_none : NULL;
      if (found)
        r = 0;
    }
  }
 out:
  s3_del (&st->os, key);
  if (r < 0) {
    cs_error ("s3: %s: cannot find out how the store spells conditional "
              "writes (probing %s): %s; give provider= to say it",
              st->endpoint, key, strerror (-r));
    return r;
  }
  st->dialect = found;
  return 0;
}

/* quiet: a refusal is not logged (a conditional write under lock=none
 * asked: its caller falls back and the user chose the risk).
 */
static int
detect (struct s3store *st, bool quiet)
{
  int r = 0;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&st->detect_lock);
  if (st->detected)
    return st->detect_result;
  if (st->dialect == NULL) {
    r = probe_dialect (st);
    st->dialect_how = "probed";
    if (r < 0)
      st->dialect = &dialect_standard;
  }
  if (r == 0 && st->dialect->refuse) {
    if (!quiet)
      cs_error ("s3: %s: %s, so no volume lock can keep two instances from "
              "writing the same volume (it needs at least a create-only "
              "write): add lock=none if you make sure yourself that only one "
              "instance ever runs (two at once corrupt the volume)",
              st->endpoint, st->dialect->refuse);
    r = -ENOTSUP;
  }
  if (r == 0)
    cs_debug ("s3: conditional writes: provider %s (%s): create-only by %s: "
              "%s, %s", st->dialect->name, st->dialect_how,
              st->dialect->create_header, st->dialect->create_value,
              st->dialect->replace_header == NULL ? "no compare-and-swap" :
              st->dialect->tag == TAG_GENERATION ?
              "replace by x-goog-if-generation-match: generation" :
              st->dialect->tag == TAG_QUOTED ?
              "replace by If-Match: \"etag\"" : "replace by If-Match: etag");
  st->detected = true;
  st->detect_result = r;
  return r;
}

static int
s3_detect (struct objstore *os)
{
  struct s3store *st = (struct s3store *) os;

  /* Asked again after a quiet probe: now say it. */
  if (st->detected && st->detect_result == -ENOTSUP && st->dialect->refuse) {
    st->detected = false;
    return detect (st, false);
  }
  return detect (st, false);
}

static unsigned
s3_caps (struct objstore *os)
{
  const struct s3_dialect *d = ((struct s3store *) os)->dialect;

  if (d == NULL)
    d = &dialect_standard;      /* not probed yet: what we would send */
  return (d->create_header ? OBJSTORE_CAP_CREATE : 0) |
    (d->replace_header ? OBJSTORE_CAP_CAS : 0);
}

static const char *
s3_dialect (struct objstore *os)
{
  const struct s3_dialect *d = ((struct s3store *) os)->dialect;

  return d ? d->name : "auto";
}

static const struct objstore_ops s3_ops = {
  .detect = s3_detect,
  .caps = s3_caps,
  .dialect = s3_dialect,
  .name = "s3",
  .get = s3_get,
  .put = s3_put,
  .put_if = s3_put_if,
  .del = s3_del,
  .del_many = s3_del_many,
  .list = s3_list,
  .close = s3_close,
  .sibling = s3_sibling,
};

/* ---------------------------------------------------------- construction */

/* The pool and its lock, for max_handles connections. */
static int
pool_init (struct s3store *st, unsigned max_handles)
{
  st->max_handles = max_handles;
  st->idle = calloc (max_handles, sizeof *st->idle);
  if (st->idle == NULL)
    return -ENOMEM;
  pthread_mutex_init (&st->lock, NULL);
  pthread_mutex_init (&st->detect_lock, NULL);
  pthread_cond_init (&st->cond, NULL);
  return 0;
}

static char *
dup_or_null (const char *s, bool *ok)
{
  char *d;

  if (s == NULL)
    return NULL;
  d = strdup (s);
  if (d == NULL)
    *ok = false;
  return d;
}

/* Everything copied, so that either store may be closed first; one
 * connection (a renewal is a get and a conditional put, one after the
 * other); no startup check (the store answered already); no fence.
 */
static int
s3_sibling (struct objstore *os, struct objstore **out)
{
  struct s3store *st = (struct s3store *) os, *sb;
  bool ok = true;

  *out = NULL;
  sb = calloc (1, sizeof *sb);
  if (sb == NULL)
    goto nomem;
  sb->os.ops = &s3_ops;
  if (pool_init (sb, 1) < 0) {
    free (sb);
    goto nomem;
  }
  sb->bucket = dup_or_null (st->bucket, &ok);
  sb->prefix = dup_or_null (st->prefix, &ok);
  sb->endpoint = dup_or_null (st->endpoint, &ok);
  sb->url_base = dup_or_null (st->url_base, &ok);
  sb->host = dup_or_null (st->host, &ok);
  sb->path_base = dup_or_null (st->path_base, &ok);
  sb->region = dup_or_null (st->region, &ok);
  sb->ca_file = dup_or_null (st->ca_file, &ok);
  /* Shared, not copied: the lock's renewals sign with the same
   * refreshed keys as the data requests.
   */
  sb->creds = s3_creds_ref (st->creds);
  sb->sse = dup_or_null (st->sse, &ok);
  sb->sse_kms_key_id = dup_or_null (st->sse_kms_key_id, &ok);
  sb->storage_class = dup_or_null (st->storage_class, &ok);
  sb->dialect = st->dialect;
  sb->dialect_how = st->dialect_how;
  sb->detected = st->detected;
  sb->detect_result = st->detect_result;
  sb->clock_offset = __atomic_load_n (&st->clock_offset, __ATOMIC_RELAXED);
  sb->skew_logged = 1;          /* the data store said it */
  sb->path_style = st->path_style;
  sb->retry_time = st->retry_time;
  sb->request_timeout = st->request_timeout;
  if (!ok) {
    s3_close (&sb->os);
    goto nomem;
  }
  cs_debug ("s3: a sibling store on bucket %s at %s, prefix \"%s\", with "
            "a connection of its own", sb->bucket, sb->endpoint, sb->prefix);
  *out = &sb->os;
  return 0;

 nomem:
  cs_error ("s3: sibling store: out of memory");
  return -ENOMEM;
}

static bool
given (const char *s)
{
  return s && *s;
}

/* "/a//b/" -> "a/b/"; "" or "/" -> "".  Control characters are refused. */
static int
normalise_prefix (const char *in, char **out)
{
  size_t n = in ? strlen (in) : 0, j = 0, i;
  char *p = malloc (n + 2);

  *out = NULL;
  if (p == NULL)
    return -ENOMEM;
  for (i = 0; i < n; ++i) {
    if ((unsigned char) in[i] < 0x20 || in[i] == 0x7f) {
      free (p);
      cs_error ("s3: prefix: control characters are not allowed");
      return -EINVAL;
    }
    if (in[i] == '/' && (j == 0 || p[j - 1] == '/'))
      continue;
    /* "." and ".." segments: a URL path squashes them (RFC 3986), so the
     * key signed would not be the key stored.
     */
    if (in[i] == '.' && (j == 0 || p[j - 1] == '/') &&
        (in[i + 1] == '/' || in[i + 1] == '\0' ||
         (in[i + 1] == '.' && (in[i + 2] == '/' || in[i + 2] == '\0')))) {
      free (p);
      cs_error ("s3: prefix %s: \".\" and \"..\" are not allowed as "
                "parts of a prefix", in);
      return -EINVAL;
    }
    p[j++] = in[i];
  }
  if (j > 0 && p[j - 1] != '/')
    p[j++] = '/';
  p[j] = '\0';
  *out = p;
  return 0;
}

static bool
valid_bucket (const char *b)
{
  size_t n = strlen (b);

  if (n < 1 || n > 255)
    return false;
  for (; *b; ++b)
    if (!(isalnum ((unsigned char) *b) || *b == '-' || *b == '.' ||
          *b == '_'))
      return false;
  return true;
}

/* Can the bucket be the first label of a host name (virtual-hosted)? */
static bool
dns_bucket (const char *b, bool https)
{
  size_t n = strlen (b);

  if (n < 3 || n > 63 || !isalnum ((unsigned char) b[0]) ||
      !isalnum ((unsigned char) b[n - 1]))
    return false;
  for (; *b; ++b) {
    if (isupper ((unsigned char) *b) || *b == '_')
      return false;
    /* A dotted name would not match the endpoint's wildcard certificate. */
    if (*b == '.' && https)
      return false;
  }
  return true;
}

struct endpoint {
  bool https;
  char host[256];               /* without brackets */
  bool ipv6;
  char port[8];                 /* "" if none */
  char path[512];               /* "" or "/base" */
};

static int
parse_endpoint (const char *url, struct endpoint *e)
{
  const char *p, *auth_end, *h_end;
  size_t n;

  memset (e, 0, sizeof e[0]);
  if (strncasecmp (url, "https://", 8) == 0) {
    e->https = true;
    p = url + 8;
  }
  else if (strncasecmp (url, "http://", 7) == 0)
    p = url + 7;
  else
    goto bad;
  auth_end = p + strcspn (p, "/?#");
  if (*auth_end == '?' || *auth_end == '#' || memchr (p, '@', auth_end - p))
    goto bad;
  if (*p == '[') {
    h_end = memchr (p, ']', auth_end - p);
    if (h_end == NULL)
      goto bad;
    n = h_end - p - 1;
    if (n == 0 || n >= sizeof e->host)
      goto bad;
    memcpy (e->host, p + 1, n);
    e->ipv6 = true;
    p = h_end + 1;
  }
  else {
    h_end = memchr (p, ':', auth_end - p);
    if (h_end == NULL)
      h_end = auth_end;
    n = h_end - p;
    if (n == 0 || n >= sizeof e->host)
      goto bad;
    memcpy (e->host, p, n);
    p = h_end;
  }
  if (p < auth_end) {
    char *end;
    long port;

    if (*p != ':')
      goto bad;
    n = auth_end - p - 1;
    if (n == 0 || n >= sizeof e->port)
      goto bad;
    memcpy (e->port, p + 1, n);
    port = strtol (e->port, &end, 10);
    if (*end || port < 1 || port > 65535)
      goto bad;
  }
  /* The base path, without trailing slashes. */
  n = strlen (auth_end);
  while (n > 0 && auth_end[n - 1] == '/')
    --n;
  if (n >= sizeof e->path || memchr (auth_end, '?', n) ||
      memchr (auth_end, '#', n))
    goto bad;
  memcpy (e->path, auth_end, n);
  return 0;
 bad:
  cs_error ("s3: endpoint %s: expected http://HOST[:PORT] or "
            "https://HOST[:PORT]", url);
  return -EINVAL;
}

static bool
ip_or_localhost (const struct endpoint *e)
{
  struct in_addr a4;
  size_t n = strlen (e->host);

  return e->ipv6 || inet_pton (AF_INET, e->host, &a4) == 1 ||
    strcasecmp (e->host, "localhost") == 0 ||
    (n > 10 && strcasecmp (e->host + n - 10, ".localhost") == 0);
}

/* Say in one line why the startup check failed. */
static void
explain_probe (struct s3store *st, const struct s3_call *c, int r)
{
  char what[512];
  const char *code = c->err.code;
  struct s3_creds *cr = s3_creds_get (st->creds);
  const char *access_key = cr->access_key, *source = s3_creds_source (st->creds);

  describe (c, what, sizeof what);
  if (c->cc != CURLE_OK)
    cs_error ("s3: endpoint %s is unreachable: %s", st->endpoint, what);
  else if (strcmp (code, "NoSuchBucket") == 0 ||
           (c->status == 404 && code[0] == '\0'))
    cs_error ("s3: bucket %s does not exist at %s (%s)", st->bucket,
              st->endpoint, what);
  else if (strcmp (code, "InvalidAccessKeyId") == 0)
    cs_error ("s3: credentials refused by %s: the access key %s (from %s) "
              "is unknown there (%s)", st->endpoint, access_key,
              source, what);
  else if (strcmp (code, "SignatureDoesNotMatch") == 0)
    cs_error ("s3: credentials refused by %s: the secret key (from %s) does "
              "not match the access key %s, or the region %s is wrong (%s)",
              st->endpoint, source, access_key,
              st->region, what);
  else if (strcmp (code, "RequestTimeTooSkewed") == 0)
    cs_error ("s3: %s refused the request: this machine's clock is off; "
              "set it right (%s)", st->endpoint, what);
  else if (c->bucket_region[0] && strcmp (c->bucket_region, st->region))
    cs_error ("s3: bucket %s is in region %s, not %s: give region=%s (%s)",
              st->bucket, c->bucket_region, st->region, c->bucket_region,
              what);
  else if (c->err.region[0] && strcmp (c->err.region, st->region))
    cs_error ("s3: bucket %s is in region %s, not %s: give region=%s (%s)",
              st->bucket, c->err.region, st->region, c->err.region, what);
  else if (c->status == 301 || c->status == 307 ||
           strcmp (code, "PermanentRedirect") == 0)
    cs_error ("s3: %s redirects requests for bucket %s elsewhere: check "
              "endpoint= and region= (%s)", st->endpoint, st->bucket, what);
  else if (strcmp (code, "AccessDenied") == 0 || r == -EACCES)
    cs_error ("s3: credentials refused by %s: access key %s (from %s) may "
              "not list bucket %s under \"%s\" (%s; %s)", st->endpoint,
              access_key, source, st->bucket,
              st->prefix, what, CLOCK_HINT);
  else if (r == -EIO && c->status == 200)
    cs_error ("s3: %s: bucket %s answered a listing with something that is "
              "not S3's ListObjectsV2 result", st->endpoint, st->bucket);
  else
    cs_error ("s3: bucket %s at %s: startup check failed: %s",
              st->bucket, st->endpoint, what);
  s3_creds_put (cr);
}

static int
probe_key (void *opaque, const char *key, uint64_t size)
{
  return 0;
}

int
objstore_s3_open (const struct objstore_s3_params *p, struct objstore **out)
{
  struct s3store *st;
  struct endpoint e;
  CLEANUP_FREE char *default_endpoint = NULL, *enc_bucket = NULL;
  CLEANUP_FREE char *enc_path = NULL;
  const char *region, *endpoint, *port_sep;
  struct s3_call probe;
  bool bucket_host;
  int r;

  *out = NULL;
  if (!given (p->bucket) || !valid_bucket (p->bucket)) {
    cs_error ("s3: bucket \"%s\": give a bucket name (letters, digits, "
              "'.', '-', '_')", p->bucket ? p->bucket : "");
    return -EINVAL;
  }
  if (p->path_style < -1 || p->path_style > 2) {
    cs_error ("s3: path_style must be -1 (auto), 0, 1 or 2");
    return -EINVAL;
  }
  /* (x != x: NaN) */
  if (!(p->request_timeout >= 0) || p->retry_time != p->retry_time) {
    cs_error ("s3: request_timeout and retry_time must be numbers >= 0");
    return -EINVAL;
  }

  pthread_once (&curl_once, init_curl);
  if (curl_init_result != CURLE_OK) {
    cs_error ("s3: curl_global_init: %s",
              curl_easy_strerror (curl_init_result));
    return -EIO;
  }

  st = calloc (1, sizeof *st);
  if (st == NULL)
    return -ENOMEM;
  st->os.ops = &s3_ops;
  if (pool_init (st, p->connections ? p->connections :
                 DEFAULT_CONNECTIONS) < 0) {
    free (st);
    return -ENOMEM;
  }
  st->retry_time = p->retry_time == 0 ? DEFAULT_RETRY_TIME :
    p->retry_time < 0 ? 0 : p->retry_time;
  st->request_timeout = p->request_timeout ? p->request_timeout :
    DEFAULT_REQUEST_TIMEOUT;

  region = given (p->region) ? p->region :
    given (getenv ("AWS_REGION")) ? getenv ("AWS_REGION") :
    given (getenv ("AWS_DEFAULT_REGION")) ? getenv ("AWS_DEFAULT_REGION") :
    "us-east-1";
  st->region = strdup (region);
  st->bucket = strdup (p->bucket);
  if (st->region == NULL || st->bucket == NULL)
    goto nomem;
  r = normalise_prefix (p->prefix, &st->prefix);
  if (r < 0)
    goto fail;
  if (given (p->ca_file) && (st->ca_file = strdup (p->ca_file)) == NULL)
    goto nomem;
  if (given (p->sse) && strcmp (p->sse, "AES256") != 0 &&
      strcmp (p->sse, "aws:kms") != 0) {
    cs_error ("s3: sse=%s: expected AES256 or aws:kms", p->sse);
    r = -EINVAL;
    goto fail;
  }
  if (given (p->sse_kms_key_id) &&
      !(given (p->sse) && strcmp (p->sse, "aws:kms") == 0)) {
    cs_error ("s3: sse-kms-key-id= goes with sse=aws:kms");
    r = -EINVAL;
    goto fail;
  }
  if ((given (p->sse) && (st->sse = strdup (p->sse)) == NULL) ||
      (given (p->sse_kms_key_id) &&
       (st->sse_kms_key_id = strdup (p->sse_kms_key_id)) == NULL) ||
      (given (p->storage_class) &&
       (st->storage_class = strdup (p->storage_class)) == NULL))
    goto nomem;

  if (given (p->endpoint))
    endpoint = p->endpoint;
  else {
    default_endpoint = xasprintf ("https://s3.%s.amazonaws.com", st->region);
    if (default_endpoint == NULL)
      goto nomem;
    endpoint = default_endpoint;
  }
  st->endpoint = strdup (endpoint);
  if (st->endpoint == NULL)
    goto nomem;
  r = parse_endpoint (endpoint, &e);
  if (r < 0)
    goto fail;

  if (p->path_style == -1)
    st->path_style = ip_or_localhost (&e) || !dns_bucket (p->bucket, e.https);
  else
    st->path_style = p->path_style == 1;
  bucket_host = p->path_style == 2;

  if (!given (p->provider) || strcmp (p->provider, "auto") == 0) {
    st->dialect = dialect_of_host (e.host);
    st->dialect_how = "from the endpoint";
  }
  else {
    for (size_t i = 0; i < sizeof providers / sizeof providers[0]; ++i)
      if (strcmp (p->provider, providers[i]->name) == 0)
        st->dialect = providers[i];
    st->dialect_how = "given";
    if (st->dialect == NULL) {
      cs_error ("s3: provider=%s: expected one of %s", p->provider,
                OBJSTORE_S3_PROVIDERS);
      r = -EINVAL;
      goto fail;
    }
  }
  if (!st->path_style && e.ipv6) {
    cs_error ("s3: endpoint %s: an IPv6 address needs path_style=1",
              endpoint);
    r = -EINVAL;
    goto fail;
  }

  port_sep = e.port[0] ? ":" : "";
  enc_bucket = sigv4_uri_encode (p->bucket, true);
  enc_path = sigv4_uri_encode (e.path, false);
  if (enc_bucket == NULL || enc_path == NULL)
    goto nomem;
  if (bucket_host) {
    /* The endpoint is the bucket's own host name (an OSS custom domain,
     * a CNAME): the bucket is in neither the host nor the path.
     */
    st->host = xasprintf ("%s%s%s%s%s", e.ipv6 ? "[" : "", e.host,
                          e.ipv6 ? "]" : "", port_sep, e.port);
    st->path_base = strdup (enc_path);
  }
  else if (st->path_style) {
    st->host = xasprintf ("%s%s%s%s%s", e.ipv6 ? "[" : "", e.host,
                          e.ipv6 ? "]" : "", port_sep, e.port);
    st->path_base = xasprintf ("%s/%s", enc_path, enc_bucket);
  }
  else {
    st->host = xasprintf ("%s.%s%s%s", p->bucket, e.host, port_sep, e.port);
    st->path_base = strdup (enc_path);
  }
  if (st->host == NULL || st->path_base == NULL)
    goto nomem;
  st->url_base = xasprintf ("%s://%s", e.https ? "https" : "http", st->host);
  if (st->url_base == NULL)
    goto nomem;

  {
    struct s3_creds_params cp = {
      .access_key = p->access_key, .secret_key = p->secret_key,
      .session_token = p->session_token, .profile = p->profile,
      .credentials = p->credentials, .margin = p->credentials_margin,
      .imds_v1 = p->imds_v1, .metadata_endpoint = p->metadata_endpoint,
      .region = st->region, .ca_file = st->ca_file,
    };
    r = s3_creds_open (&cp, &st->creds);
    if (r < 0)
      goto fail;
  }

  cs_debug ("s3: bucket %s at %s (%s, Host %s), prefix \"%s\", region %s, "
            "%u connections, retry time %.0f s, request timeout %.0f s",
            st->bucket, st->endpoint,
            bucket_host ? "bucket host" :
            st->path_style ? "path-style" : "virtual-hosted", st->host,
            st->prefix, st->region, st->max_handles, st->retry_time,
            st->request_timeout);

  /* The startup check: can we list under the prefix? */
  memset (&probe, 0, sizeof probe);
  r = list_pages (st, "", 1, true, probe_key, NULL, &probe);
  if (r < 0) {
    explain_probe (st, &probe, r);
    goto fail;
  }

  *out = &st->os;
  return 0;

 nomem:
  cs_error ("s3: out of memory");
  r = -ENOMEM;
 fail:
  s3_close (&st->os);
  return r;
}

int
objstore_s3_credentials (struct objstore *os, char *buf, size_t len)
{
  struct s3store *st = (struct s3store *) os;

  if (os == NULL || os->ops != &s3_ops || st->creds == NULL)
    return -ENOTSUP;
  s3_creds_describe (st->creds, buf, len);
  return 0;
}
