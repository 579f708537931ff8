/* s3chunk: the S3 XML documents the S3 store reads and writes.
 *
 * Parsing uses libxml2 without network access and without entity
 * substitution (no XML_PARSE_NOENT, no DTD loading), so a hostile or broken
 * server cannot make us fetch anything or expand entities; elements are
 * matched by local name, whatever their namespace.  Every parser returns 0
 * or a negative errno (-EPROTO for a document that is not what it should
 * be, or one that carries a DTD: S3 sends none) and never crashes on
 * malformed input.
 */
#ifndef S3CHUNK_S3_XML_H
#define S3CHUNK_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Parse an untrusted XML answer the one safe way (libxml2 initialised
 * once; no network, no entity substitution, no DTD, no messages): the
 * document (free it with xmlFreeDoc), or NULL.  For the other parsers of
 * AWS answers (STS, s3-creds-parse.c).
 */
struct _xmlDoc;
extern struct _xmlDoc *s3_xml_read (const void *xml, size_t len);

/* An S3 error body: <Error><Code/><Message/>...</Error>. */
struct s3_error {
  char code[64];                /* "NoSuchKey", "" if none */
  char message[256];
  char region[64];              /* <Region> of a wrong-region answer, or "" */
  char key[256];                /* <Key> of a DeleteObjects error, or "" */
};

/* Parse an error body into err (all fields "" on failure).  Returns 0, or
 * -EPROTO if the body is not an S3 error document.
 */
extern int s3_xml_parse_error (const void *xml, size_t len,
                               struct s3_error *err);

/* Called for each key of a listing, store prefix already removed. */
typedef int (*s3_xml_key_fn) (void *opaque, const char *key, uint64_t size);

/* One ListObjectsV2 page (<ListBucketResult>).  Calls fn for each
 * <Contents> whose <Key> starts with strip_prefix (removed before the
 * call; other keys are skipped); a non-zero return from fn stops the walk
 * and is returned.  *truncated and *next_token (malloc'd, NULL when absent)
 * say whether and how to ask for the next page.  A truncated page without
 * a token is -EPROTO, so callers cannot loop forever.
 */
extern int s3_xml_parse_list (const void *xml, size_t len,
                              const char *strip_prefix,
                              s3_xml_key_fn fn, void *opaque,
                              bool *truncated, char **next_token);

/* A DeleteObjects answer (<DeleteResult>): *n_errors gets the number of
 * <Error> entries and first (if not NULL) the first of them.  NoSuchKey
 * entries are not errors (deleting a missing key succeeds) and not counted.
 */
extern int s3_xml_parse_delete_result (const void *xml, size_t len,
                                       size_t *n_errors,
                                       struct s3_error *first);

/* Append the DeleteObjects request body for keys[0..n) to out, each key
 * written as prefix + key, with <Quiet>true</Quiet>.  0 or -ENOMEM.
 */
extern int s3_xml_delete_body (const char *prefix,
                               const char *const *keys, size_t n,
                               struct cs_buf *out);

#endif /* S3CHUNK_S3_XML_H */
