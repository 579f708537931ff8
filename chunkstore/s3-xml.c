/* s3chunk: reading and writing S3's XML documents with libxml2. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "s3-xml.h"

/* libxml2 must be initialised once before threads use it. */
static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void
xml_init (void)
{
  xmlInitParser ();
}

/* No network, no entity substitution, no DTD, no messages on stderr. */
#define PARSE_OPTIONS \
  (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | \
   XML_PARSE_NOCDATA)

struct _xmlDoc *
s3_xml_read (const void *xml, size_t len)
{
  xmlDocPtr doc;

  pthread_once (&xml_once, xml_init);
  if (xml == NULL || len == 0 || len > INT_MAX)
    return NULL;
  doc = xmlReadMemory (xml, (int) len, "s3.xml", NULL, PARSE_OPTIONS);
  if (doc == NULL)
    return NULL;
  /* AWS never sends a DTD; one can only be there to define entities. */
  if (doc->intSubset || doc->extSubset) {
    xmlFreeDoc (doc);
    return NULL;
  }
  return doc;
}

static xmlDocPtr
parse (const void *xml, size_t len, const char *root_name,
       xmlNodePtr *root)
{
  xmlDocPtr doc = s3_xml_read (xml, len);

  *root = NULL;
  if (doc == NULL)
    return NULL;
  *root = xmlDocGetRootElement (doc);
  if (*root == NULL ||
      strcmp ((const char *) (*root)->name, root_name) != 0) {
    xmlFreeDoc (doc);
    *root = NULL;
    return NULL;
  }
  return doc;
}

static bool
is (xmlNodePtr n, const char *name)
{
  return n->type == XML_ELEMENT_NODE &&
    strcmp ((const char *) n->name, name) == 0;
}

/* The text of n, malloc'd by libxml2 (free with xmlFree), never NULL
 * unless out of memory.
 */
static char *
text_of (xmlNodePtr n)
{
  return (char *) xmlNodeGetContent (n);
}

/* Copy the text of n into buf (truncated to size - 1 bytes). */
static void
copy_text (xmlNodePtr n, char *buf, size_t size)
{
  char *t = text_of (n);

  if (t) {
    snprintf (buf, size, "%s", t);
    xmlFree (t);
  }
}

/* Fill err from the children of an <Error> element. */
static void
read_error (xmlNodePtr e, struct s3_error *err)
{
  xmlNodePtr c;

  for (c = e->children; c; c = c->next) {
    if (is (c, "Code"))
      copy_text (c, err->code, sizeof err->code);
    else if (is (c, "Message"))
      copy_text (c, err->message, sizeof err->message);
    else if (is (c, "Region"))
      copy_text (c, err->region, sizeof err->region);
    else if (is (c, "Key"))
      copy_text (c, err->key, sizeof err->key);
  }
}

int
s3_xml_parse_error (const void *xml, size_t len, struct s3_error *err)
{
  xmlNodePtr root;
  xmlDocPtr doc;

  memset (err, 0, sizeof *err);
  doc = parse (xml, len, "Error", &root);
  if (doc == NULL)
    return -EPROTO;
  read_error (root, err);
  xmlFreeDoc (doc);
  return 0;
}

static int
parse_u64 (const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;

  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
    ++s;
  if (*s < '0' || *s > '9')
    return -EPROTO;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno)
    return -EPROTO;
  while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
    ++end;
  if (*end)
    return -EPROTO;
  *out = v;
  return 0;
}

/* One <Contents>: its <Key> and <Size>. */
static int
list_entry (xmlNodePtr contents, const char *strip_prefix,
            s3_xml_key_fn fn, void *opaque)
{
  xmlNodePtr c;
  char *key = NULL;
  uint64_t size = 0;
  size_t plen = strlen (strip_prefix);
  int r = 0;

  for (c = contents->children; c && r == 0; c = c->next) {
    if (is (c, "Key") && key == NULL) {
      key = text_of (c);
      if (key == NULL)
        r = -ENOMEM;
    }
    else if (is (c, "Size")) {
      char *t = text_of (c);
      r = t ? parse_u64 (t, &size) : -ENOMEM;
      xmlFree (t);
    }
  }
  if (r == 0 && key == NULL)
    r = -EPROTO;
  /* Keys outside the prefix cannot come from a prefix listing; skip them
   * rather than hand the caller a key that is not its own.  So is the
   * prefix itself, which is not a key of the volume.
   */
  if (r == 0 && strncmp (key, strip_prefix, plen) == 0 && key[plen])
    r = fn (opaque, key + plen, size);
  xmlFree (key);
  return r;
}

int
s3_xml_parse_list (const void *xml, size_t len, const char *strip_prefix,
                   s3_xml_key_fn fn, void *opaque,
                   bool *truncated, char **next_token)
{
  xmlNodePtr root, c;
  xmlDocPtr doc;
  int r = 0;

  *truncated = false;
  *next_token = NULL;
  doc = parse (xml, len, "ListBucketResult", &root);
  if (doc == NULL)
    return -EPROTO;

  /* Read the paging state first, so a callback's early stop still leaves
   * it filled in.
   */
  for (c = root->children; c && r == 0; c = c->next) {
    if (is (c, "IsTruncated")) {
      char *t = text_of (c);
      if (t == NULL)
        r = -ENOMEM;
      else
        *truncated = strcmp (t, "true") == 0;
      xmlFree (t);
    }
    else if (is (c, "NextContinuationToken") && *next_token == NULL) {
      char *t = text_of (c);
      if (t == NULL)
        r = -ENOMEM;
      else if (t[0] && (*next_token = strdup (t)) == NULL)
        r = -ENOMEM;
      xmlFree (t);
    }
  }
  if (r == 0 && *truncated && *next_token == NULL)
    r = -EPROTO;

  for (c = root->children; c && r == 0; c = c->next)
    if (is (c, "Contents"))
      r = list_entry (c, strip_prefix, fn, opaque);

  xmlFreeDoc (doc);
  if (r < 0) {
    free (*next_token);
    *next_token = NULL;
    *truncated = false;
  }
  return r;
}

int
s3_xml_parse_delete_result (const void *xml, size_t len, size_t *n_errors,
                            struct s3_error *first)
{
  xmlNodePtr root, c;
  xmlDocPtr doc;

  *n_errors = 0;
  if (first)
    memset (first, 0, sizeof *first);
  doc = parse (xml, len, "DeleteResult", &root);
  if (doc == NULL)
    return -EPROTO;
  for (c = root->children; c; c = c->next) {
    if (is (c, "Error")) {
      struct s3_error e = { .code = "" };

      read_error (c, &e);
      if (strcmp (e.code, "NoSuchKey") == 0)
        continue;               /* deleting a missing key succeeds */
      if (*n_errors == 0 && first)
        *first = e;
      ++*n_errors;
    }
  }
  xmlFreeDoc (doc);
  return 0;
}

static int
append_str (struct cs_buf *out, const char *s)
{
  return cs_buf_append (out, s, strlen (s));
}

static int
append_escaped (struct cs_buf *out, const char *s)
{
  int r = 0;

  for (; *s && r == 0; ++s) {
    switch (*s) {
    case '&': r = append_str (out, "&amp;"); break;
    case '<': r = append_str (out, "&lt;"); break;
    case '>': r = append_str (out, "&gt;"); break;
    case '"': r = append_str (out, "&quot;"); break;
    case '\'': r = append_str (out, "&apos;"); break;
    default: r = cs_buf_append (out, s, 1);
    }
  }
  return r;
}

int
s3_xml_delete_body (const char *prefix, const char *const *keys, size_t n,
                    struct cs_buf *out)
{
  size_t i;
  int r;

  r = append_str (out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                  "<Quiet>true</Quiet>");
  for (i = 0; i < n && r == 0; ++i) {
    r = append_str (out, "<Object><Key>");
    if (r == 0)
      r = append_escaped (out, prefix);
    if (r == 0)
      r = append_escaped (out, keys[i]);
    if (r == 0)
      r = append_str (out, "</Key></Object>");
  }
  if (r == 0)
    r = append_str (out, "</Delete>");
  return r;
}
