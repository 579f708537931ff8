/* s3chunk: a fault-injecting object store wrapper, for tests.
 *
 * In the spirit of SQLite's test_vfs.c: every call goes to the wrapped
 * store unless a rule says to fail it, stall it, or damage what it returns.
 * One rule at a time is enough for the tests; set a new one to change it.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "objstore.h"

struct faultstore {
  struct objstore os;           /* must be first */
  struct objstore *inner;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned ops;
  enum objstore_fault_kind kind;
  int err;
  uint32_t skip, count;
  char key[64];                 /* only this key, if set */
  unsigned stalled, faulted;
  uint64_t release_gen;
  unsigned caps;                /* 0: the inner store's */
};

/* Decide what happens to this call; for a stall, wait here. */
static enum objstore_fault_kind
decide (struct faultstore *f, unsigned op, const char *key, int *err)
{
  enum objstore_fault_kind k = FAULT_NONE;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  if (f->kind == FAULT_NONE || !(f->ops & op) ||
      (f->key[0] && strcmp (f->key, key) != 0))
    return FAULT_NONE;
  if (f->skip > 0) {
    f->skip--;
    return FAULT_NONE;
  }
  if (f->count == 0)
    return FAULT_NONE;
  if (f->count != UINT32_MAX)
    f->count--;
  f->faulted++;
  k = f->kind;
  *err = f->err;
  if (k == FAULT_STALL || k == FAULT_STALL_FAIL) {
    uint64_t gen = f->release_gen;
    f->stalled++;
    pthread_cond_broadcast (&f->cond);
    while (gen == f->release_gen)
      pthread_cond_wait (&f->cond, &f->lock);
    f->stalled--;
    k = k == FAULT_STALL ? FAULT_NONE : FAULT_FAIL;
  }
  return k;
}

static int
fault_get (struct objstore *os, const char *key, size_t max_len,
           struct cs_buf *out, struct objstore_info *info)
{
  struct faultstore *f = (struct faultstore *) os;
  int err = -EIO, r;

  switch (decide (f, FAULT_OP_GET, key, &err)) {
  case FAULT_FAIL:
    cs_error ("get %s: injected fault: %s", key, strerror (-err));
    return err;
  case FAULT_CORRUPT:
    r = objstore_get (f->inner, key, max_len, out, info);
    if (r == 0 && out->len > 0)
      out->data[out->len / 2] ^= 0x10;
    return r;
  case FAULT_TRUNCATE:
    r = objstore_get (f->inner, key, max_len, out, info);
    if (r == 0)
      out->len /= 2;
    return r;
  default:
    return objstore_get (f->inner, key, max_len, out, info);
  }
}

static int
fault_put (struct objstore *os, const char *key, const void *data,
           size_t len, struct objstore_info *info)
{
  struct faultstore *f = (struct faultstore *) os;
  int err = -EIO, r;

  switch (decide (f, FAULT_OP_PUT, key, &err)) {
  case FAULT_FAIL:
    cs_error ("put %s: injected fault: %s", key, strerror (-err));
    return err;
  case FAULT_LAND_TIMEOUT:
    r = objstore_put (f->inner, key, data, len, info);
    if (r < 0)
      return r;
    cs_error ("put %s: injected fault: landed, answer lost", key);
    return -ETIMEDOUT;
  default:
    return objstore_put (f->inner, key, data, len, info);
  }
}

static int
fault_put_if (struct objstore *os, const char *key, const void *data,
              size_t len, const char *if_match, struct objstore_info *info)
{
  struct faultstore *f = (struct faultstore *) os;
  int err = -EIO, r;

  if (f->caps &&
      !(f->caps & (if_match ? OBJSTORE_CAP_CAS : OBJSTORE_CAP_CREATE))) {
    cs_error ("put-if %s: this test store has no %s", key,
              if_match ? "compare-and-swap" : "create-only write");
    return -ENOTSUP;
  }
  switch (decide (f, FAULT_OP_PUT_IF, key, &err)) {
  case FAULT_FAIL:
    cs_error ("put-if %s: injected fault: %s", key, strerror (-err));
    return err;
  case FAULT_IGNORE_CONDITIONS:
    return objstore_put (f->inner, key, data, len, info);
  case FAULT_LAND_TIMEOUT:
    r = objstore_put_if (f->inner, key, data, len, if_match, info);
    if (r < 0)
      return r;
    cs_error ("put-if %s: injected fault: landed, answer lost", key);
    return -ETIMEDOUT;
  default:
    return objstore_put_if (f->inner, key, data, len, if_match, info);
  }
}

static int
fault_del_many (struct objstore *os, const char *const *keys, size_t n)
{
  struct faultstore *f = (struct faultstore *) os;
  int err = -EIO;

  int r;

  switch (decide (f, FAULT_OP_DEL, keys[0], &err)) {
  case FAULT_FAIL:
    cs_error ("delete %s...: injected fault: %s", keys[0], strerror (-err));
    return err;
  case FAULT_LAND_TIMEOUT:
    r = objstore_del_many (f->inner, keys, n);
    if (r < 0)
      return r;
    cs_error ("delete %s...: injected fault: done, answer lost", keys[0]);
    return -ETIMEDOUT;
  default:
    return objstore_del_many (f->inner, keys, n);
  }
}

static int
fault_del (struct objstore *os, const char *key)
{
  return fault_del_many (os, &key, 1);
}

static int
fault_list (struct objstore *os, const char *prefix,
            objstore_list_fn fn, void *opaque)
{
  struct faultstore *f = (struct faultstore *) os;
  int err = -EIO;

  if (decide (f, FAULT_OP_LIST, prefix, &err) == FAULT_FAIL) {
    cs_error ("list %s: injected fault: %s", prefix, strerror (-err));
    return err;
  }
  return objstore_list (f->inner, prefix, fn, opaque);
}

static void
fault_close (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  objstore_close (f->inner);
  pthread_mutex_destroy (&f->lock);
  pthread_cond_destroy (&f->cond);
  free (f);
}

/* The wrapped store obeys the same fence: a call stalled here and let go
 * after the deadline is refused by it.
 */
static void
fault_set_fence (struct objstore *os, struct cs_fence *fence)
{
  struct faultstore *f = (struct faultstore *) os;

  objstore_set_fence (f->inner, fence);
}

/* A wrapper of the inner store's sibling, with a copy of the rule now in
 * force (not the stall state).
 */
static int
fault_sibling (struct objstore *os, struct objstore **out)
{
  struct faultstore *f = (struct faultstore *) os, *g;
  struct objstore *inner, *w;
  int r;

  r = objstore_sibling (f->inner, &inner);
  if (r < 0)
    return r;
  r = objstore_fault_wrap (inner, &w);
  if (r < 0) {
    objstore_close (inner);
    return r;
  }
  g = (struct faultstore *) w;
  pthread_mutex_lock (&f->lock);
  g->ops = f->ops;
  g->kind = f->kind;
  g->err = f->err;
  g->skip = f->skip;
  g->count = f->count;
  g->caps = f->caps;
  memcpy (g->key, f->key, sizeof g->key);
  pthread_mutex_unlock (&f->lock);
  *out = w;
  return 0;
}

static int
fault_detect (struct objstore *os)
{
  return objstore_detect (((struct faultstore *) os)->inner);
}

static unsigned
fault_caps (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  return f->caps ? f->caps : objstore_caps (f->inner);
}

static const char *
fault_dialect (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  return f->caps == OBJSTORE_CAP_CREATE ? "create-only" :
    objstore_dialect (f->inner);
}

static const struct objstore_ops fault_ops = {
  .name = "fault",
  .detect = fault_detect,
  .caps = fault_caps,
  .dialect = fault_dialect,
  .sibling = fault_sibling,
  .set_fence = fault_set_fence,
  .get = fault_get,
  .put = fault_put,
  .put_if = fault_put_if,
  .del = fault_del,
  .del_many = fault_del_many,
  .list = fault_list,
  .close = fault_close,
};

int
objstore_fault_wrap (struct objstore *inner, struct objstore **out)
{
  struct faultstore *f = calloc (1, sizeof *f);

  if (f == NULL)
    return -ENOMEM;
  f->os.ops = &fault_ops;
  f->inner = inner;
  pthread_mutex_init (&f->lock, NULL);
  pthread_cond_init (&f->cond, NULL);
  *out = &f->os;
  return 0;
}

void
objstore_fault_set (struct objstore *os, unsigned ops,
                    enum objstore_fault_kind kind, int err,
                    uint32_t skip, uint32_t count)
{
  struct faultstore *f = (struct faultstore *) os;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  f->ops = ops;
  f->kind = kind;
  f->err = err ? err : -EIO;
  f->skip = skip;
  f->count = count;
  f->key[0] = '\0';
}

void
objstore_fault_set_caps (struct objstore *os, unsigned caps)
{
  struct faultstore *f = (struct faultstore *) os;

  f->caps = caps;
}

void
objstore_fault_only_key (struct objstore *os, const char *key)
{
  struct faultstore *f = (struct faultstore *) os;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  snprintf (f->key, sizeof f->key, "%s", key);
}

void
objstore_fault_release (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  if (f->kind == FAULT_STALL || f->kind == FAULT_STALL_FAIL)
    f->kind = FAULT_NONE;
  f->release_gen++;
  pthread_cond_broadcast (&f->cond);
}

unsigned
objstore_fault_stalled (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  return f->stalled;
}

unsigned
objstore_fault_count (struct objstore *os)
{
  struct faultstore *f = (struct faultstore *) os;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->lock);
  return f->faulted;
}
