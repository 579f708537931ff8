/* s3chunk: what a listing of the store holds (s3chunk.h, "scan.c"). */
#include <config.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "growreq.h"
#include "s3chunk.h"

/* The directory store's temporary files ("NAME.tmp-<hex>", objstore-dir.c)
 * and its flock file, which is not an object.
 */
#define DIR_TMP_MARK ".tmp-"
#define DIR_LOCK_FILE ".lock"

const char *
scan_kind_name (enum scan_kind k)
{
  switch (k) {
  case SCAN_BEYOND: return "beyond the end";
  case SCAN_PROBE: return "stray lock probe";
  case SCAN_TEMP: return "stray temporary file";
  case SCAN_FOREIGN: return "not s3chunk's";
  default: return "?";
  }
}

static int
add_other (struct scan *s, const char *key, uint64_t size, enum scan_kind k)
{
  if (s->nother == s->ocap) {
    size_t cap = s->ocap ? 2 * s->ocap : 64;
    struct scan_other *o = realloc (s->other, cap * sizeof *o);
    if (o == NULL)
      return -ENOMEM;
    s->other = o;
    s->ocap = cap;
  }
  s->other[s->nother].key = strdup (key);
  if (s->other[s->nother].key == NULL)
    return -ENOMEM;
  s->other[s->nother].size = size;
  s->other[s->nother].kind = k;
  s->nother++;
  s->count[k]++;
  return 0;
}

static int
add_chunk (struct scan *s, uint64_t idx, uint64_t size)
{
  if (s->nchunks == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1024;
    uint64_t *c = realloc (s->chunks, cap * sizeof *c);
    uint64_t *z;
    if (c == NULL)
      return -ENOMEM;
    s->chunks = c;
    z = realloc (s->chunk_sizes, cap * sizeof *z);
    if (z == NULL)
      return -ENOMEM;
    s->chunk_sizes = z;
    s->cap = cap;
  }
  s->chunks[s->nchunks] = idx;
  s->chunk_sizes[s->nchunks] = size;
  s->nchunks++;
  s->chunk_bytes += size;
  return 0;
}

static int
list_one (void *opaque, const char *key, uint64_t size)
{
  struct scan *s = opaque;
  uint64_t idx;

  if (strcmp (key, CS_SUPERBLOCK_KEY) == 0) {
    s->superblock = true;
    return 0;
  }
  if (strcmp (key, LOCK_KEY) == 0) {
    s->lock = true;
    return 0;
  }
  /* The online grow's request (while pending) and last answer. */
  if (strcmp (key, GROWREQ_KEY) == 0 || strcmp (key, GROWANS_KEY) == 0)
    return 0;
  if (cs_chunk_key_parse (key, &idx)) {
    if (idx < s->volume_chunks)
      return add_chunk (s, idx, size);
    return add_other (s, key, size, SCAN_BEYOND);
  }
  if (strncmp (key, LOCK_PROBE_PREFIX, strlen (LOCK_PROBE_PREFIX)) == 0 ||
      strncmp (key, LOCK_DIALECT_PROBE_PREFIX,
               strlen (LOCK_DIALECT_PROBE_PREFIX)) == 0)
    return add_other (s, key, size, SCAN_PROBE);
  return add_other (s, key, size, SCAN_FOREIGN);
}

/* nftw has no opaque pointer. */
static struct scan *walk_scan;
static size_t walk_root_len;
static int walk_err;

static int
walk_one (const char *path, const struct stat *st, int type, struct FTW *f)
{
  const char *rel = path + walk_root_len;
  const char *base = path + f->base;

  while (*rel == '/')
    rel++;
  if (type == FTW_F && strstr (base, DIR_TMP_MARK) &&
      strcmp (base, DIR_LOCK_FILE) != 0) {
    walk_err = add_other (walk_scan, rel, st->st_size, SCAN_TEMP);
    return walk_err ? 1 : 0;
  }
  return 0;
}

static int
cmp_u64_pair (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static int
cmp_other (const void *a, const void *b)
{
  const struct scan_other *x = a, *y = b;
  return strcmp (x->key, y->key);
}

int
scan_store (struct objstore *os, uint64_t volume_chunks, const char *dir,
            struct scan *s)
{
  int r;

  memset (s, 0, sizeof *s);
  s->volume_chunks = volume_chunks;
  r = objstore_list (os, "", list_one, s);
  if (r == -ENOMEM)
    tool_error ("list: out of memory");
  if (r < 0)
    return r;                   /* the store said why */

  if (dir) {
    walk_scan = s;
    walk_root_len = strlen (dir);
    walk_err = 0;
    if (nftw (dir, walk_one, 16, FTW_PHYS) < 0) {
      r = -errno;
      tool_error ("walk %s: %s", dir, strerror (errno));
      return r;
    }
    if (walk_err)
      return walk_err;
  }

  /* Sorted: fsck reads in key order, reports are stable.  Sort the pairs
   * (index, size) together through a temporary array.
   */
  if (s->nchunks > 1) {
    uint64_t *pairs = malloc (2 * s->nchunks * sizeof *pairs);
    size_t i;
    if (pairs == NULL)
      return -ENOMEM;
    for (i = 0; i < s->nchunks; ++i) {
      pairs[2 * i] = s->chunks[i];
      pairs[2 * i + 1] = s->chunk_sizes[i];
    }
    qsort (pairs, s->nchunks, 2 * sizeof *pairs, cmp_u64_pair);
    for (i = 0; i < s->nchunks; ++i) {
      s->chunks[i] = pairs[2 * i];
      s->chunk_sizes[i] = pairs[2 * i + 1];
    }
    free (pairs);
  }
  if (s->nother > 1)
    qsort (s->other, s->nother, sizeof *s->other, cmp_other);
  return 0;
}

void
scan_free (struct scan *s)
{
  size_t i;

  for (i = 0; i < s->nother; ++i)
    free (s->other[i].key);
  free (s->other);
  free (s->chunks);
  free (s->chunk_sizes);
  memset (s, 0, sizeof *s);
}
