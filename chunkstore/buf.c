/* s3chunk: a growable byte buffer. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

int
cs_buf_reserve (struct cs_buf *b, size_t cap)
{
  uint8_t *p;
  size_t n;

  if (cap <= b->cap)
    return 0;
  n = b->cap ? b->cap : 4096;
  while (n < cap) {
    if (n > SIZE_MAX / 2)
      return -ENOMEM;
    n *= 2;
  }
  p = realloc (b->data, n);
  if (p == NULL)
    return -ENOMEM;
  b->data = p;
  b->cap = n;
  return 0;
}

int
cs_buf_append (struct cs_buf *b, const void *p, size_t n)
{
  int r;

  if (n > SIZE_MAX - b->len)
    return -ENOMEM;
  r = cs_buf_reserve (b, b->len + n);
  if (r < 0)
    return r;
  if (n)
    memcpy (b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void
cs_buf_free (struct cs_buf *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
