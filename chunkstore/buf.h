/* s3chunk: a growable byte buffer, reused across calls to avoid malloc on
 * the hot path (one per worker thread).
 */
#ifndef S3CHUNK_BUF_H
#define S3CHUNK_BUF_H

#include <stddef.h>
#include <stdint.h>

struct cs_buf {
  uint8_t *data;
  size_t len;                   /* bytes in use */
  size_t cap;                   /* bytes allocated */
};

#define CS_BUF_INIT { NULL, 0, 0 }

/* Make room for at least cap bytes (contents kept).  0 or -ENOMEM. */
extern int cs_buf_reserve (struct cs_buf *b, size_t cap);

/* Append n bytes.  0 or -ENOMEM. */
extern int cs_buf_append (struct cs_buf *b, const void *p, size_t n);

/* Release the memory; the buffer can be used again afterwards. */
extern void cs_buf_free (struct cs_buf *b);

#endif /* S3CHUNK_BUF_H */
