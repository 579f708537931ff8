/* s3chunk: the online grow request and its answer (docs/FORMAT.md, "Online
 * grow").  "s3chunk grow" on a served volume creates the request object
 * (create-only); the plugin that holds the volume's lock reads it at its
 * lock renewals, grows the volume, writes the answer and deletes the
 * request.  Both are small key=value texts like the lock object, and both
 * are untrusted input.
 */
#ifndef S3CHUNK_GROWREQ_H
#define S3CHUNK_GROWREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GROWREQ_KEY "grow-request"
#define GROWANS_KEY "grow-answer"
#define GROWREQ_FORMAT_VERSION 1
#define GROWREQ_MAX_SIZE 4096

struct growreq {
  char id[33];                  /* 128 random bits, hex: which request */
  uint64_t size;                /* the size asked for, in bytes */
  int64_t requested_at;         /* seconds since the epoch (informational) */
  char host[256];               /* who asked (informational) */
};

struct growans {
  char id[33];                  /* the request answered */
  bool refused;                 /* false: the volume has size now */
  uint64_t size;                /* the volume's size after the answer */
  char reason[512];             /* why refused; one line, printable */
};

/* Text of a request / an answer in buf: its length, or -ENAMETOOLONG. */
extern int growreq_format (const struct growreq *r, char *buf, size_t len);
extern int growans_format (const struct growans *a, char *buf, size_t len);

/* Parse; -EIO (logged, naming the key) for anything malformed. */
extern int growreq_parse (const void *data, size_t len, struct growreq *r);
extern int growans_parse (const void *data, size_t len, struct growans *a);

#endif /* S3CHUNK_GROWREQ_H */
