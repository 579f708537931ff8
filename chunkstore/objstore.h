/* s3chunk: the object store, the only polymorphic layer.
 *
 * One small table of operations with one file per variant: objstore-dir.c
 * (a local directory, the embedded default), objstore-s3.c (any S3-compatible
 * bucket) and objstore-fault.c (a wrapper that fails, stalls or corrupts
 * chosen calls, for tests).
 *
 * Keys are relative to the volume: a variant applies its own prefix
 * (the S3 prefix= or the directory path).  Keys use [A-Za-z0-9._/-] only.
 *
 * Every operation is safe to call from several threads at once.  Every
 * operation returns 0 on success or a negative errno:
 *   -ENOENT     get of a missing key;
 *   -EEXIST     put_if whose condition does not hold (the key exists for a
 *               create-if-absent, or its etag differs / it is gone for a
 *               replace-if-unchanged);
 *   -ETIMEDOUT  the outcome is unknown (a request that timed out after it
 *               may have reached the store): callers that care re-read;
 *   -EFBIG      get of an object larger than max_len;
 *   -ENOLCK     not sent, or aborted: the store's write fence (fence.h)
 *               is past its deadline or closed, so the volume lock may be
 *               lost.  A mutating request aborted under way may still have
 *               landed (its outcome is unknown, like -ETIMEDOUT);
 *   -EACCES     credentials refused;  -EIO and others: see the log.
 * A variant logs one clear line (operation, key, cause) for every failure
 * other than the expected -ENOENT / -EEXIST, so callers need not repeat it.
 */
#ifndef S3CHUNK_OBJSTORE_H
#define S3CHUNK_OBJSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "fence.h"

/* What a store says about an object after get / put / put_if. */
struct objstore_info {
  char etag[128];       /* opaque version tag, for put_if; "" if unknown */
  int64_t mtime;        /* last modified, seconds since the epoch by the
                           store's clock; 0 if unknown */
  int64_t date;         /* the store's clock when it answered; 0 if unknown */
  uint64_t size;        /* object size in bytes */
};

/* Which forms of put_if a store enforces (objstore_caps).  A store with
 * both is what the volume lock was first written for; a store with
 * create-only alone (Alibaba OSS) gets the epoch lock (lock.h); a store
 * with neither cannot hold a volume lock at all.
 */
#define OBJSTORE_CAP_CREATE 1   /* put_if (if_match == NULL) */
#define OBJSTORE_CAP_CAS 2      /* put_if (if_match == an etag) */

/* Called once per key by list.  A non-zero return stops the listing and
 * becomes list's return value.
 */
typedef int (*objstore_list_fn) (void *opaque, const char *key, uint64_t size);

struct objstore;

struct objstore_ops {
  const char *name;

  /* Read the whole object into out (out->len set).  -ENOENT if missing,
   * -EFBIG if larger than max_len.  info may be NULL.
   */
  int (*get) (struct objstore *os, const char *key, size_t max_len,
              struct cs_buf *out, struct objstore_info *info);

  /* Create or replace the object atomically: readers see the old or the
   * new content, never a mix.  Durable when it returns.  info may be NULL.
   */
  int (*put) (struct objstore *os, const char *key,
              const void *data, size_t len, struct objstore_info *info);

  /* Conditional put.  if_match == NULL: create only if absent.
   * Otherwise replace only if the current etag equals if_match.
   * -EEXIST when the condition does not hold.
   */
  int (*put_if) (struct objstore *os, const char *key,
                 const void *data, size_t len, const char *if_match,
                 struct objstore_info *info);

  /* Delete; deleting a missing key succeeds. */
  int (*del) (struct objstore *os, const char *key);

  /* Delete n keys, batched as the store allows.  Missing keys succeed. */
  int (*del_many) (struct objstore *os, const char *const *keys, size_t n);

  /* Call fn for every key that starts with prefix, in no particular order. */
  int (*list) (struct objstore *os, const char *prefix,
               objstore_list_fn fn, void *opaque);

  /* Free everything.  os is invalid afterwards. */
  void (*close) (struct objstore *os);

  /* Optional.  Open another handle on the same store and prefix with its
   * own connection, for requests that must never queue behind data
   * transfers (the lock's renewals).  It has no fence.
   */
  int (*sibling) (struct objstore *os, struct objstore **out);

  /* Optional, for wrappers: pass a new fence on to the wrapped store.
   * os->fence is already set when it is called.
   */
  void (*set_fence) (struct objstore *os, struct cs_fence *f);

  /* Optional.  Find out, once, how the store spells conditional writes
   * (objstore_detect); absent: nothing to find out.
   */
  int (*detect) (struct objstore *os);

  /* Optional.  OBJSTORE_CAP_* (after detect); absent: both. */
  unsigned (*caps) (struct objstore *os);

  /* Optional.  One word naming how conditional writes are spelt, for
   * messages and "s3chunk info"; absent: the variant's name.
   */
  const char *(*dialect) (struct objstore *os);
};

/* Request counters, kept by the wrappers below for every variant. */
struct objstore_stats {
  uint64_t gets, puts, put_ifs, dels, del_keys, lists;
  uint64_t bytes_down, bytes_up;
  uint64_t errors;
  uint64_t retries;             /* attempts repeated after a transient
                                   failure (kept by the variant) */
  uint64_t fenced;              /* mutating requests refused or aborted by
                                   the fence */
};

/* Every variant embeds this as its first member. */
struct objstore {
  const struct objstore_ops *ops;
  struct objstore_stats stats;  /* updated atomically by the wrappers */
  struct cs_fence *fence;       /* NULL: writes are not limited; not owned */
};

/* Wrappers: dispatch to the variant and count the request. */
extern int objstore_get (struct objstore *os, const char *key, size_t max_len,
                         struct cs_buf *out, struct objstore_info *info);
extern int objstore_put (struct objstore *os, const char *key,
                         const void *data, size_t len,
                         struct objstore_info *info);
extern int objstore_put_if (struct objstore *os, const char *key,
                            const void *data, size_t len,
                            const char *if_match, struct objstore_info *info);
extern int objstore_del (struct objstore *os, const char *key);
extern int objstore_del_many (struct objstore *os,
                              const char *const *keys, size_t n);
extern int objstore_list (struct objstore *os, const char *prefix,
                          objstore_list_fn fn, void *opaque);
extern void objstore_close (struct objstore *os);

/* Limit every later mutating request of os (and of the stores it wraps)
 * by fence, which must outlive os.  Set it before requests start.
 */
extern void objstore_set_fence (struct objstore *os, struct cs_fence *f);

/* A handle with its own connection (see objstore_ops.sibling); -ENOTSUP
 * if the variant has none.
 */
extern int objstore_sibling (struct objstore *os, struct objstore **out);

/* 0 if os may send a mutating request for key now; else -ENOLCK, counted
 * and logged once per store (op and key named).  Variants call it again
 * before every attempt.
 */
extern int objstore_fence_check (struct objstore *os, const char *op,
                                 const char *key);

/* Find out, once per store (later calls return the first answer), how it
 * spells conditional writes: the S3 store's start-up probe of its dialect
 * when provider=auto (a few requests on a throw-away key).  0, or
 * -ENOTSUP when the store cannot do any conditional write (logged: what is
 * missing and the way out), or another -errno.  Call it before taking the
 * volume lock; readers need not.
 */
extern int objstore_detect (struct objstore *os);

/* OBJSTORE_CAP_* of the store (meaningful after objstore_detect). */
extern unsigned objstore_caps (struct objstore *os);

/* "aws", "ceph", "gcs", "oss", "dir"... (see objstore_ops.dialect). */
extern const char *objstore_dialect (struct objstore *os);

/* A snapshot of the counters. */
extern void objstore_get_stats (struct objstore *os,
                                struct objstore_stats *out);

/* The variants' constructors.  Each returns 0 and sets *out, or logs why
 * and returns a negative errno.
 */

/* A local directory (created if missing when create is true). */
extern int objstore_dir_open (const char *path, bool create,
                              struct objstore **out);

/* A wrapper for tests (objstore-fault.c): it passes calls to inner (which
 * it owns) until told to fail, stall or corrupt some of them.
 */
enum objstore_fault_op {
  FAULT_OP_GET = 1, FAULT_OP_PUT = 2, FAULT_OP_PUT_IF = 4, FAULT_OP_DEL = 8,
  FAULT_OP_LIST = 16, FAULT_OP_ALL = 31,
};
enum objstore_fault_kind {
  FAULT_NONE,
  FAULT_FAIL,           /* return the error without calling inner */
  FAULT_STALL,          /* block until objstore_fault_release, then pass */
  FAULT_STALL_FAIL,     /* block until released, then fail with err */
  FAULT_CORRUPT,        /* get: flip one bit of the returned object */
  FAULT_TRUNCATE,       /* get: return only the first half of the object */
  FAULT_IGNORE_CONDITIONS, /* put_if behaves as a plain put (a store that
                              accepts the headers and ignores them) */
  FAULT_LAND_TIMEOUT,   /* put, put_if, del: pass the call, then answer
                           -ETIMEDOUT (it landed, the reply was lost) */
};
extern int objstore_fault_wrap (struct objstore *inner, struct objstore **out);

/* Make the wrapper a store with only these OBJSTORE_CAP_* (tests of the
 * epoch lock): a put_if of a form not in caps fails with -ENOTSUP without
 * reaching the inner store, as a store that answers NotImplemented.
 */
extern void objstore_fault_set_caps (struct objstore *os, unsigned caps);

/* From now on, let `skip` matching calls pass, then apply kind to the next
 * `count` matching calls (UINT32_MAX: all), failing with err for FAULT_FAIL.
 */
extern void objstore_fault_set (struct objstore *os, unsigned ops,
                                enum objstore_fault_kind kind, int err,
                                uint32_t skip, uint32_t count);

/* Limit the rule set last to calls on this key (reset by the next set). */
extern void objstore_fault_only_key (struct objstore *os, const char *key);

/* Let every stalled call go on, and stop stalling new ones. */
extern void objstore_fault_release (struct objstore *os);

/* Calls stalled right now, and calls faulted so far. */
extern unsigned objstore_fault_stalled (struct objstore *os);
extern unsigned objstore_fault_count (struct objstore *os);

/* An S3-compatible bucket (objstore-s3.c): AWS, MinIO, Ceph RGW, R2...
 * NULL strings and zero numbers take the defaults given for each field.
 */
struct objstore_s3_params {
  const char *bucket;           /* required */
  const char *prefix;           /* keys are stored as "<prefix>/<key>"; slashes
                                   are normalised ("/a//b/" is "a/b"); NULL
                                   or "" (or "/"): no prefix */
  const char *endpoint;         /* "http[s]://host[:port][/path]"; default
                                   https://s3.<region>.amazonaws.com */
  const char *region;           /* signing region; default $AWS_REGION, else
                                   $AWS_DEFAULT_REGION, else us-east-1 */
  const char *access_key;       /* credentials: these (both or neither, plus
                                   an optional session_token), else the */
  const char *secret_key;       /* environment, else the shared credentials
                                   file, */
  const char *session_token;    /* in the AWS order (see s3-creds.h); the
                                   caller resolves "+FILE" / "-" first */
  const char *profile;          /* profile in ~/.aws/credentials; default
                                   $AWS_PROFILE, else "default" */
  const char *credentials;      /* the source (s3-creds.h): NULL or "auto"
                                   the AWS chain, else static, env,
                                   profile, process, web-identity,
                                   container, imds, ecs-ram-role[:ROLE] */
  double credentials_margin;    /* refresh temporary keys this many seconds
                                   before they expire (or halfway, if
                                   earlier); 0: 300 */
  bool imds_v1;                 /* IMDSv1 if the IMDSv2 token is refused */
  const char *metadata_endpoint; /* imds / ecs-ram-role base URL; NULL:
                                   AWS_EC2_METADATA_SERVICE_ENDPOINT, else
                                   the service's own address */
  const char *ca_file;          /* the CA bundle (PEM) to trust for HTTPS,
                                   INSTEAD of curl's default one (it
                                   replaces, it does not add); NULL: the
                                   system's */
  int path_style;               /* -1 auto (path-style when the endpoint host
                                   is an IP address or localhost, or the
                                   bucket name is not a DNS label), 0
                                   virtual-hosted (bucket.host), 1 path-style
                                   (host/bucket), 2 the endpoint is the
                                   bucket's own host (a custom domain) */
  unsigned connections;         /* HTTP connections kept open (one curl
                                   handle each), at most this many requests
                                   at once; 0: 16 */
  double retry_time;            /* seconds one operation may spend retrying
                                   transient failures; 0: 60; < 0: never
                                   retry */
  double request_timeout;       /* seconds an HTTP request may go without
                                   a byte moving either way (not a limit
                                   on the whole transfer); 0: 30 */
  const char *provider;         /* how conditional writes are spelt: aws,
                                   minio, ceph, r2, gcs, oss, b2, or NULL /
                                   "auto": from the endpoint's host name,
                                   else probed by objstore_detect (see the
                                   dialect table in objstore-s3.c) */
  const char *sse;              /* x-amz-server-side-encryption on every
                                   PUT: "AES256" or "aws:kms"; NULL: none */
  const char *sse_kms_key_id;   /* with sse "aws:kms": the key; NULL: the
                                   bucket's default KMS key */
  const char *storage_class;    /* x-amz-storage-class on every PUT; NULL:
                                   the bucket's default */
};

/* The provider= words objstore_s3_params.provider accepts, for --help. */
#define OBJSTORE_S3_PROVIDERS "auto|aws|minio|ceph|r2|gcs|oss|b2"

/* Check the parameters and credentials, then that the bucket answers (a
 * one-key listing under the prefix); on failure log one line saying which
 * of endpoint, bucket, credentials or region is wrong.
 */
extern int objstore_s3_open (const struct objstore_s3_params *p,
                             struct objstore **out);

/* One line saying where os's credentials come from, the access key id and
 * when they expire (never a secret); -ENOTSUP if os is not an S3 store.
 */
extern int objstore_s3_credentials (struct objstore *os, char *buf,
                                    size_t len);

#endif /* S3CHUNK_OBJSTORE_H */
