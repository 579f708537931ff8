/* s3chunk: dispatch to an object store variant and count its requests. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "log.h"
#include "objstore.h"

#define COUNT(os, field, n) \
  __atomic_add_fetch (&(os)->stats.field, (n), __ATOMIC_RELAXED)

/* -ENOENT from get and -EEXIST from put_if are answers, not errors. */
static int
counted (struct objstore *os, int r, int expected)
{
  if (r < 0 && r != expected)
    COUNT (os, errors, 1);
  return r;
}

int
objstore_fence_check (struct objstore *os, const char *op, const char *key)
{
  if (os->fence == NULL || cs_fence_left (os->fence) > 0)
    return 0;
  /* The first refusal says why; the cache has failed by then and says
   * what it means for the client, so the rest are debug lines.
   */
  if (COUNT (os, fenced, 1) == 1)
    cs_error ("%s %s: not sent: the write deadline of the volume lock has "
              "passed (the lock may be lost): nothing is written any more",
              op, key);
  else
    cs_debug ("%s %s: not sent: past the write deadline", op, key);
  return -ENOLCK;
}

void
objstore_set_fence (struct objstore *os, struct cs_fence *f)
{
  os->fence = f;
  if (os->ops->set_fence)
    os->ops->set_fence (os, f);
}

int
objstore_sibling (struct objstore *os, struct objstore **out)
{
  *out = NULL;
  if (os->ops->sibling == NULL)
    return -ENOTSUP;
  return os->ops->sibling (os, out);
}

int
objstore_detect (struct objstore *os)
{
  return os->ops->detect ? os->ops->detect (os) : 0;
}

unsigned
objstore_caps (struct objstore *os)
{
  return os->ops->caps ? os->ops->caps (os) :
    OBJSTORE_CAP_CREATE | OBJSTORE_CAP_CAS;
}

const char *
objstore_dialect (struct objstore *os)
{
  return os->ops->dialect ? os->ops->dialect (os) : os->ops->name;
}

int
objstore_get (struct objstore *os, const char *key, size_t max_len,
              struct cs_buf *out, struct objstore_info *info)
{
  int r;

  COUNT (os, gets, 1);
  out->len = 0;
  r = os->ops->get (os, key, max_len, out, info);
  if (r == 0)
    COUNT (os, bytes_down, out->len);
  return counted (os, r, -ENOENT);
}

int
objstore_put (struct objstore *os, const char *key,
              const void *data, size_t len, struct objstore_info *info)
{
  int r;

  COUNT (os, puts, 1);
  r = objstore_fence_check (os, "put", key);
  if (r < 0)
    return counted (os, r, 0);
  r = os->ops->put (os, key, data, len, info);
  if (r == 0)
    COUNT (os, bytes_up, len);
  return counted (os, r, 0);
}

int
objstore_put_if (struct objstore *os, const char *key,
                 const void *data, size_t len, const char *if_match,
                 struct objstore_info *info)
{
  int r;

  COUNT (os, put_ifs, 1);
  r = objstore_fence_check (os, "put-if", key);
  if (r < 0)
    return counted (os, r, 0);
  r = os->ops->put_if (os, key, data, len, if_match, info);
  if (r == 0)
    COUNT (os, bytes_up, len);
  return counted (os, r, -EEXIST);
}

int
objstore_del (struct objstore *os, const char *key)
{
  int r;

  COUNT (os, dels, 1);
  COUNT (os, del_keys, 1);
  r = objstore_fence_check (os, "delete", key);
  if (r < 0)
    return counted (os, r, 0);
  return counted (os, os->ops->del (os, key), 0);
}

int
objstore_del_many (struct objstore *os, const char *const *keys, size_t n)
{
  int r;

  if (n == 0)
    return 0;
  COUNT (os, dels, 1);
  COUNT (os, del_keys, n);
  r = objstore_fence_check (os, "delete-many", keys[0]);
  if (r < 0)
    return counted (os, r, 0);
  return counted (os, os->ops->del_many (os, keys, n), 0);
}

int
objstore_list (struct objstore *os, const char *prefix,
               objstore_list_fn fn, void *opaque)
{
  COUNT (os, lists, 1);
  return counted (os, os->ops->list (os, prefix, fn, opaque), 0);
}

void
objstore_close (struct objstore *os)
{
  if (os)
    os->ops->close (os);
}

void
objstore_get_stats (struct objstore *os, struct objstore_stats *out)
{
  uint64_t *src = (uint64_t *) &os->stats;
  uint64_t *dst = (uint64_t *) out;
  size_t i;

  for (i = 0; i < sizeof *out / sizeof (uint64_t); ++i)
    dst[i] = __atomic_load_n (&src[i], __ATOMIC_RELAXED);
}
