/* s3chunk: the online grow request and its answer (growreq.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore.h"
#include "cleanup.h"
#include "growreq.h"
#include "log.h"
#include "params.h"

/* Printable ASCII, no '\n', at most max - 1 bytes (the field buffer). */
static bool
printable (const char *s, size_t max)
{
  size_t n = strlen (s);

  if (n >= max)
    return false;
  for (; *s; ++s)
    if (*s < 0x20 || *s > 0x7e)
      return false;
  return true;
}

int
growreq_format (const struct growreq *r, char *buf, size_t len)
{
  int n = snprintf (buf, len,
                    "s3chunk grow-request\n"
                    "format-version=%d\n"
                    "request-id=%s\n"
                    "size=%" PRIu64 "\n"
                    "requested-at=%" PRId64 "\n"
                    "host=%s\n",
                    GROWREQ_FORMAT_VERSION, r->id, r->size, r->requested_at,
                    r->host);

  return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : n;
}

int
growans_format (const struct growans *a, char *buf, size_t len)
{
  int n = snprintf (buf, len,
                    "s3chunk grow-answer\n"
                    "format-version=%d\n"
                    "request-id=%s\n"
                    "result=%s\n"
                    "size=%" PRIu64 "\n"
                    "%s%s%s",
                    GROWREQ_FORMAT_VERSION, a->id,
                    a->refused ? "refused" : "grown", a->size,
                    a->reason[0] ? "reason=" : "", a->reason,
                    a->reason[0] ? "\n" : "");

  return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : n;
}

#define BAD(...) do { cs_error (__VA_ARGS__); return -EIO; } while (0)

/* The common frame: first line `magic`, then format-version, then fields
 * handed to fn one by one (0 taken, -1 unknown or bad).  Returns the
 * field bits fn set, or -EIO (logged).
 */
typedef int (*field_fn) (void *obj, const char *k, const char *v,
                         unsigned *seen);

static int
parse_frame (const char *key, const char *magic, const void *data,
             size_t len, field_fn fn, void *obj)
{
  CLEANUP_FREE char *text = NULL;
  char *line, *save = NULL;
  unsigned seen = 0;
  bool version_seen = false;
  uint64_t u;

  if (len > GROWREQ_MAX_SIZE || len == 0 || memchr (data, '\0', len) ||
      ((const char *) data)[len - 1] != '\n')
    BAD ("read %s: not an s3chunk %s (binary, truncated or too large)",
         key, magic + 8);
  text = strndup (data, len);
  if (text == NULL)
    return -ENOMEM;
  if (strstr (text, "\n\n") || strchr (text, '\r'))
    BAD ("read %s: malformed (empty line or CR)", key);
  line = strtok_r (text, "\n", &save);
  if (line == NULL || strcmp (line, magic) != 0)
    BAD ("read %s: not an s3chunk %s (bad first line)", key, magic + 8);
  while ((line = strtok_r (NULL, "\n", &save)) != NULL) {
    char *eq = strchr (line, '=');

    if (eq == NULL)
      BAD ("read %s: malformed line", key);
    *eq = '\0';
    if (!version_seen) {
      if (strcmp (line, "format-version") != 0 ||
          params_parse_uint (eq + 1, 0, 1000000, &u) < 0)
        BAD ("read %s: format-version must come first", key);
      if (u != GROWREQ_FORMAT_VERSION)
        BAD ("read %s: format version %" PRIu64 ", this s3chunk reads "
             "version %d: written by another release", key, u,
             GROWREQ_FORMAT_VERSION);
      version_seen = true;
    }
    else if (fn (obj, line, eq + 1, &seen) < 0)
      BAD ("read %s: unknown, duplicate or bad field \"%s\"", key, line);
  }
  if (!version_seen)
    BAD ("read %s: no format-version", key);
  return seen;
}

#define ONCE(bit) do { if (*seen & (bit)) return -1; *seen |= (bit); } \
  while (0)

static int
req_field (void *obj, const char *k, const char *v, unsigned *seen)
{
  struct growreq *r = obj;
  uint64_t u;

  if (strcmp (k, "request-id") == 0) {
    ONCE (1);
    if (!params_is_hex (v, 32))
      return -1;
    memcpy (r->id, v, 33);
  }
  else if (strcmp (k, "size") == 0) {
    ONCE (2);
    if (params_parse_uint (v, 1, CS_MAX_SIZE, &u) < 0)
      return -1;
    r->size = u;
  }
  else if (strcmp (k, "requested-at") == 0) {
    ONCE (4);
    if (params_parse_uint (v, 0, INT64_MAX, &u) < 0)
      return -1;
    r->requested_at = u;
  }
  else if (strcmp (k, "host") == 0) {
    ONCE (8);
    if (!printable (v, sizeof r->host))
      return -1;
    strcpy (r->host, v);
  }
  else
    return -1;
  return 0;
}

int
growreq_parse (const void *data, size_t len, struct growreq *r)
{
  int seen;

  memset (r, 0, sizeof *r);
  seen = parse_frame (GROWREQ_KEY, "s3chunk grow-request", data, len,
                      req_field, r);
  if (seen < 0)
    return seen;
  if (seen != 15)
    BAD ("read %s: missing fields (truncated?)", GROWREQ_KEY);
  return 0;
}

static int
ans_field (void *obj, const char *k, const char *v, unsigned *seen)
{
  struct growans *a = obj;
  uint64_t u;

  if (strcmp (k, "request-id") == 0) {
    ONCE (1);
    if (!params_is_hex (v, 32))
      return -1;
    memcpy (a->id, v, 33);
  }
  else if (strcmp (k, "result") == 0) {
    ONCE (2);
    if (strcmp (v, "grown") == 0)
      a->refused = false;
    else if (strcmp (v, "refused") == 0)
      a->refused = true;
    else
      return -1;
  }
  else if (strcmp (k, "size") == 0) {
    ONCE (4);
    if (params_parse_uint (v, 0, CS_MAX_SIZE, &u) < 0)
      return -1;
    a->size = u;
  }
  else if (strcmp (k, "reason") == 0) {
    ONCE (8);
    if (!printable (v, sizeof a->reason))
      return -1;
    strcpy (a->reason, v);
  }
  else
    return -1;
  return 0;
}

int
growans_parse (const void *data, size_t len, struct growans *a)
{
  int seen;

  memset (a, 0, sizeof *a);
  seen = parse_frame (GROWANS_KEY, "s3chunk grow-answer", data, len,
                      ans_field, a);
  if (seen < 0)
    return seen;
  if ((seen & 7) != 7)
    BAD ("read %s: missing fields (truncated?)", GROWANS_KEY);
  return 0;
}
