/* s3chunk: libFuzzer target for the S3 XML parsers (chunkstore/s3-xml.c):
 * ListObjectsV2 pages, DeleteObjects results and error bodies come from
 * the network and are untrusted.  Whatever the bytes, the parsers must not
 * crash or leak, must return 0 or a negative errno, and must keep their
 * documented promises:
 *
 *   - a page that says it is truncated comes with a continuation token;
 *   - every key handed to the callback is a NUL-terminated string that
 *     started with the store prefix (which is removed);
 *   - a callback's non-zero return stops the walk and is returned;
 *   - the fields of struct s3_error are NUL-terminated within their size.
 *
 * The first byte of the input chooses the parser (its low 2 bits) and when
 * the list callback stops (the rest); the seed corpus in
 * fuzz/corpus/s3-xml/ starts each real document with that byte.
 *
 *   make fuzz && fuzz/fuzz-s3-xml fuzz/corpus/s3-xml
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "s3-xml.h"

#define PREFIX "vol1/"

struct walk {
  unsigned n, stop_after;
};

static void
quiet (enum cs_log_level level, const char *msg)
{
  volatile size_t n = strlen (msg);
  (void) n;
}

static int
key_cb (void *opaque, const char *key, uint64_t size)
{
  struct walk *w = opaque;
  volatile size_t n;

  if (key == NULL)
    abort ();
  n = strlen (key);             /* must be a string */
  (void) n;
  w->n++;
  if (w->stop_after && w->n == w->stop_after)
    return 4242;
  return 0;
}

static void
check_error_fields (const struct s3_error *e)
{
  if (memchr (e->code, '\0', sizeof e->code) == NULL ||
      memchr (e->message, '\0', sizeof e->message) == NULL ||
      memchr (e->region, '\0', sizeof e->region) == NULL ||
      memchr (e->key, '\0', sizeof e->key) == NULL) {
    fprintf (stderr, "struct s3_error field not NUL-terminated\n");
    abort ();
  }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static int init;
  struct s3_error err;
  struct walk w = { 0, 0 };
  bool truncated = false;
  char *token = (char *) "unset";
  size_t nerr = 0;
  uint8_t sel;
  char *copy;
  int r;

  if (!init) {
    cs_log_set (quiet);
    init = 1;
  }
  if (size < 1)
    return 0;
  sel = data[0];
  data++, size--;
  /* The parsers take (pointer, length): give them a private copy of exactly
   * that many bytes, so that ASan sees any read past the end.
   */
  copy = malloc (size ? size : 1);
  if (copy == NULL)
    abort ();
  memcpy (copy, data, size);

  switch (sel & 3) {
  case 0:
  case 3:
    memset (&err, 0x5a, sizeof err);
    r = s3_xml_parse_error (copy, size, &err);
    if (r != 0 && r != -EPROTO && r != -ENOMEM)
      abort ();
    check_error_fields (&err);
    break;
  case 1:
    w.stop_after = sel >> 2;
    r = s3_xml_parse_list (copy, size, (sel & 0x80) ? "" : PREFIX, key_cb, &w,
                           &truncated, &token);
    if (r == 4242) {
      if (w.stop_after == 0 || w.n != w.stop_after)
        abort ();
    }
    else if (r != 0 && r >= -4095 && r < 0)
      ;                         /* an errno: fine */
    else if (r != 0)
      abort ();
    if (r == 0 && truncated && token == NULL) {
      fprintf (stderr, "a truncated page without a token was accepted\n");
      abort ();
    }
    if (r == 0 && token != NULL) {
      volatile size_t n = strlen (token);
      (void) n;
    }
    /* The token is the caller's whatever the result (NULL on an error). */
    if (r < 0 && token != NULL)
      abort ();
    free (token);
    break;
  case 2:
    memset (&err, 0x5a, sizeof err);
    r = s3_xml_parse_delete_result (copy, size, &nerr, &err);
    if (r > 0)
      abort ();
    check_error_fields (&err);
    break;
  }
  free (copy);
  return 0;
}
