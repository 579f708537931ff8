/* s3chunk: reading what the credential sources answer (s3-creds.h): a
 * small JSON reader for flat objects, ISO 8601 times, and the STS
 * AssumeRoleWithWebIdentity XML (libxml2, the options of s3-xml.c).
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "s3-creds.h"
#include "s3-xml.h"

static void
wipe_free (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

struct s3_creds *
s3_creds_new (const char *ak, const char *sk, const char *token,
              int64_t expiration)
{
  struct s3_creds *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  c->access_key = strdup (ak);
  c->secret_key = strdup (sk);
  c->session_token = token && *token ? strdup (token) : NULL;
  c->expiration = expiration;
  c->refs = 1;
  if (c->access_key == NULL || c->secret_key == NULL ||
      (token && *token && c->session_token == NULL)) {
    wipe_free (c->access_key);
    wipe_free (c->secret_key);
    wipe_free (c->session_token);
    free (c);
    return NULL;
  }
  return c;
}

void
s3_creds_put (struct s3_creds *c)
{
  if (c == NULL)
    return;
  if (__atomic_sub_fetch (&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  wipe_free (c->access_key);
  wipe_free (c->secret_key);
  wipe_free (c->session_token);
  free (c);
}

/* ------------------------------------------------------------- times */

static int
digits (const char **p, int n, int *out)
{
  int v = 0, i;

  for (i = 0; i < n; ++i) {
    if (!isdigit ((unsigned char) (*p)[i]))
      return -1;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return 0;
}

int
s3_creds_parse_time (const char *s, int64_t *out)
{
  struct tm tm;
  int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
  const char *p = s;
  time_t t;

  if (s == NULL)
    return -EINVAL;
  while (isspace ((unsigned char) *p))
    ++p;
  if (digits (&p, 4, &y) < 0 || *p++ != '-' || digits (&p, 2, &mo) < 0 ||
      *p++ != '-' || digits (&p, 2, &d) < 0 ||
      (*p != 'T' && *p != 't' && *p != ' '))
    return -EINVAL;
  ++p;
  if (digits (&p, 2, &h) < 0 || *p++ != ':' || digits (&p, 2, &mi) < 0 ||
      *p++ != ':' || digits (&p, 2, &sec) < 0)
    return -EINVAL;
  if (*p == '.' || *p == ',') {
    ++p;
    if (!isdigit ((unsigned char) *p))
      return -EINVAL;
    while (isdigit ((unsigned char) *p))
      ++p;
  }
  if (*p == 'Z' || *p == 'z')
    ++p;
  else if (*p == '+' || *p == '-') {
    sign = *p++ == '+' ? 1 : -1;
    if (digits (&p, 2, &oh) < 0)
      return -EINVAL;
    if (*p == ':')
      ++p;
    if (digits (&p, 2, &om) < 0)
      return -EINVAL;
  }
  else
    return -EINVAL;             /* no zone: ambiguous, refused */
  while (isspace ((unsigned char) *p))
    ++p;
  if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
      sec > 60 || oh > 23 || om > 59)
    return -EINVAL;
  memset (&tm, 0, sizeof tm);
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  t = timegm (&tm);
  if (t == (time_t) -1)
    return -EINVAL;
  *out = (int64_t) t - sign * (oh * 3600 + om * 60);
  return 0;
}

/* -------------------------------------------------------------- JSON
 *
 * Enough JSON for the credential answers: one object whose members we
 * want are strings or numbers; nested objects and arrays are skipped
 * (checked for balance).  Strings are unescaped (\uXXXX to UTF-8).
 */

#define JSON_MAX_MEMBERS 64

struct json_flat {
  size_t n;
  char *name[JSON_MAX_MEMBERS];
  char *value[JSON_MAX_MEMBERS];   /* NULL for objects, arrays, null */
  bool is_string[JSON_MAX_MEMBERS];
};

static void
json_free (struct json_flat *j)
{
  size_t i;

  for (i = 0; i < j->n; ++i) {
    free (j->name[i]);
    wipe_free (j->value[i]);
  }
  j->n = 0;
}

struct json_in {
  const char *p, *end;
};

static void
json_ws (struct json_in *in)
{
  while (in->p < in->end && (*in->p == ' ' || *in->p == '\t' ||
                             *in->p == '\n' || *in->p == '\r'))
    in->p++;
}

static int
hex4 (const char *p, unsigned *out)
{
  unsigned v = 0;
  int i;

  for (i = 0; i < 4; ++i) {
    int c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  *out = v;
  return 0;
}

/* A string at in->p (the opening quote); *out malloc'd if out != NULL. */
static int
json_string (struct json_in *in, char **out)
{
  size_t cap = 64, n = 0;
  char *s = NULL;

  if (in->p >= in->end || *in->p != '"')
    return -1;
  in->p++;
  if (out && (s = malloc (cap)) == NULL)
    return -1;
  while (in->p < in->end && *in->p != '"') {
    char buf[4];
    size_t k = 0;
    unsigned char c = *in->p++;

    if (c < 0x20)
      goto bad;
    if (c != '\\')
      buf[k++] = c;
    else {
      if (in->p >= in->end)
        goto bad;
      c = *in->p++;
      switch (c) {
      case '"': case '\\': case '/': buf[k++] = c; break;
      case 'b': buf[k++] = '\b'; break;
      case 'f': buf[k++] = '\f'; break;
      case 'n': buf[k++] = '\n'; break;
      case 'r': buf[k++] = '\r'; break;
      case 't': buf[k++] = '\t'; break;
      case 'u': {
        unsigned u;
        if (in->end - in->p < 4 || hex4 (in->p, &u) < 0)
          goto bad;
        in->p += 4;
        if (u >= 0xd800 && u <= 0xdbff) {
          unsigned lo;
          if (in->end - in->p < 6 || in->p[0] != '\\' || in->p[1] != 'u' ||
              hex4 (in->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
            goto bad;
          in->p += 6;
          u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        else if (u >= 0xdc00 && u <= 0xdfff)
          goto bad;
        if (u == 0)
          goto bad;
        if (u < 0x80)
          buf[k++] = u;
        else if (u < 0x800) {
          buf[k++] = 0xc0 | (u >> 6);
          buf[k++] = 0x80 | (u & 0x3f);
        }
        else if (u < 0x10000) {
          buf[k++] = 0xe0 | (u >> 12);
          buf[k++] = 0x80 | ((u >> 6) & 0x3f);
          buf[k++] = 0x80 | (u & 0x3f);
        }
        else {
          buf[k++] = 0xf0 | (u >> 18);
          buf[k++] = 0x80 | ((u >> 12) & 0x3f);
          buf[k++] = 0x80 | ((u >> 6) & 0x3f);
          buf[k++] = 0x80 | (u & 0x3f);
        }
        break;
      }
      default:
        goto bad;
      }
    }
    if (s) {
      if (n + k + 1 > cap) {
        char *t;
        cap = 2 * cap + k;
        t = realloc (s, cap);
        if (t == NULL)
          goto bad;
        s = t;
      }
      memcpy (s + n, buf, k);
      n += k;
    }
  }
  if (in->p >= in->end)
    goto bad;
  in->p++;
  if (s) {
    s[n] = '\0';
    *out = s;
  }
  return 0;
 bad:
  if (s) {
    explicit_bzero (s, cap);
    free (s);
  }
  return -1;
}

/* Skip one value (any kind); depth-limited. */
static int
json_skip (struct json_in *in, int depth)
{
  json_ws (in);
  if (in->p >= in->end || depth > 32)
    return -1;
  if (*in->p == '"')
    return json_string (in, NULL);
  if (*in->p == '{' || *in->p == '[') {
    char close = *in->p == '{' ? '}' : ']';
    bool object = close == '}';
    in->p++;
    json_ws (in);
    if (in->p < in->end && *in->p == close) {
      in->p++;
      return 0;
    }
    for (;;) {
      if (object) {
        json_ws (in);
        if (json_string (in, NULL) < 0)
          return -1;
        json_ws (in);
        if (in->p >= in->end || *in->p++ != ':')
          return -1;
      }
      if (json_skip (in, depth + 1) < 0)
        return -1;
      json_ws (in);
      if (in->p >= in->end)
        return -1;
      if (*in->p == ',') {
        in->p++;
        continue;
      }
      if (*in->p++ != close)
        return -1;
      return 0;
    }
  }
  /* A number or a literal: its characters. */
  if (!(isalnum ((unsigned char) *in->p) || *in->p == '-'))
    return -1;
  while (in->p < in->end &&
         (isalnum ((unsigned char) *in->p) || *in->p == '-' ||
          *in->p == '+' || *in->p == '.'))
    in->p++;
  return 0;
}

static int
json_parse_flat (const char *body, size_t len, struct json_flat *j)
{
  struct json_in in = { body, body + len };

  memset (j, 0, sizeof *j);
  json_ws (&in);
  if (in.p >= in.end || *in.p++ != '{')
    return -1;
  json_ws (&in);
  if (in.p < in.end && *in.p == '}') {
    in.p++;
    goto end;
  }
  for (;;) {
    char *name = NULL, *value = NULL;
    const char *start;

    json_ws (&in);
    if (json_string (&in, &name) < 0)
      goto bad;
    json_ws (&in);
    if (in.p >= in.end || *in.p++ != ':') {
      free (name);
      goto bad;
    }
    json_ws (&in);
    if (in.p < in.end && *in.p == '"') {
      if (json_string (&in, &value) < 0) {
        free (name);
        goto bad;
      }
      j->is_string[j->n] = true;
    }
    else {
      start = in.p;
      if (json_skip (&in, 0) < 0) {
        free (name);
        goto bad;
      }
      if (*start != '{' && *start != '[' && strncmp (start, "null", 4)) {
        value = strndup (start, in.p - start);
        if (value == NULL) {
          free (name);
          goto bad;
        }
      }
    }
    if (j->n == JSON_MAX_MEMBERS) {
      free (name);
      wipe_free (value);
      goto bad;
    }
    j->name[j->n] = name;
    j->value[j->n] = value;
    j->n++;
    json_ws (&in);
    if (in.p >= in.end)
      goto bad;
    if (*in.p == ',') {
      in.p++;
      continue;
    }
    if (*in.p++ != '}')
      goto bad;
    break;
  }
 end:
  json_ws (&in);
  if (in.p != in.end)
    goto bad;
  return 0;
 bad:
  json_free (j);
  return -1;
}

/* The value of member name (exact case); NULL if absent or not a
 * string/number.
 */
static const char *
json_get (const struct json_flat *j, const char *name, bool *is_string)
{
  size_t i;

  for (i = 0; i < j->n; ++i)
    if (strcmp (j->name[i], name) == 0) {
      if (is_string)
        *is_string = j->is_string[i];
      return j->value[i];
    }
  return NULL;
}

int
s3_creds_parse_json (enum s3_creds_json dialect, const char *body,
                     size_t len, struct s3_creds **out, char *err,
                     size_t errlen)
{
  struct json_flat j;
  const char *ak, *sk, *token, *exp, *code;
  const char *sk_name, *token_name;
  int64_t expiration = 0;
  bool str;
  int r = -EPROTO;

  *out = NULL;
  if (json_parse_flat (body, len, &j) < 0) {
    snprintf (err, errlen, "the answer is not a JSON object");
    return -EPROTO;
  }
  sk_name = dialect == S3_JSON_ALIBABA ? "AccessKeySecret" : "SecretAccessKey";
  token_name = dialect == S3_JSON_PROCESS ? "SessionToken" :
    dialect == S3_JSON_ALIBABA ? "SecurityToken" : "Token";
  if (dialect == S3_JSON_PROCESS) {
    const char *v = json_get (&j, "Version", &str);
    if (v == NULL || str || strcmp (v, "1") != 0) {
      snprintf (err, errlen, "\"Version\" is %s%s, expected 1",
                v ? v : "missing", v && str ? " (a string)" : "");
      goto out;
    }
  }
  else {
    code = json_get (&j, "Code", &str);
    if (code && strcmp (code, "Success") != 0) {
      const char *msg = json_get (&j, "Message", NULL);
      snprintf (err, errlen, "\"Code\" is \"%s\"%s%s", code,
                msg ? ": " : "", msg ? msg : "");
      r = -EACCES;
      goto out;
    }
  }
  ak = json_get (&j, "AccessKeyId", &str);
  sk = json_get (&j, sk_name, NULL);
  token = json_get (&j, token_name, NULL);
  exp = json_get (&j, "Expiration", NULL);
  if (ak == NULL || *ak == '\0' || sk == NULL || *sk == '\0') {
    /* The container endpoints answer errors as {"code": .., "message": ..} */
    const char *c = json_get (&j, "code", NULL);
    const char *m = json_get (&j, "message", NULL);
    if (c || m) {
      snprintf (err, errlen, "error %s%s%s", c ? c : "", m ? ": " : "",
                m ? m : "");
      r = -EACCES;
    }
    else
      snprintf (err, errlen, "\"%s\" or \"%s\" is missing", "AccessKeyId",
                sk_name);
    goto out;
  }
  if (exp && *exp && s3_creds_parse_time (exp, &expiration) < 0) {
    snprintf (err, errlen, "\"Expiration\" \"%s\" is not an ISO 8601 time",
              exp);
    goto out;
  }
  /* Only credential_process may leave out the Expiration: metadata keys
   * always expire.
   */
  if (dialect != S3_JSON_PROCESS && expiration == 0) {
    snprintf (err, errlen, "\"Expiration\" is missing");
    goto out;
  }
  *out = s3_creds_new (ak, sk, token, expiration);
  r = *out ? 0 : -ENOMEM;
  if (r < 0)
    snprintf (err, errlen, "out of memory");
 out:
  json_free (&j);
  return r;
}

/* --------------------------------------------------------------- STS */

static xmlNodePtr
child (xmlNodePtr n, const char *name)
{
  for (n = n ? n->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE &&
        strcmp ((const char *) n->name, name) == 0)
      return n;
  return NULL;
}

/* The text of the child name of n, malloc'd, or NULL. */
static char *
child_text (xmlNodePtr n, const char *name)
{
  xmlNodePtr c = child (n, name);
  xmlChar *t;
  char *s;

  if (c == NULL || (t = xmlNodeGetContent (c)) == NULL)
    return NULL;
  s = strdup ((const char *) t);
  explicit_bzero (t, strlen ((const char *) t));
  xmlFree (t);
  return s;
}

int
s3_creds_parse_sts (const char *xml, size_t len, struct s3_creds **out,
                    char *err, size_t errlen)
{
  xmlDocPtr doc;
  xmlNodePtr root, cred;
  char *ak = NULL, *sk = NULL, *token = NULL, *exp = NULL;
  int64_t expiration = 0;
  int r = -EPROTO;

  *out = NULL;
  if ((doc = s3_xml_read (xml, len)) == NULL) {
    snprintf (err, errlen, "the answer is not XML (or has a DTD)");
    return -EPROTO;
  }
  root = xmlDocGetRootElement (doc);
  if (root == NULL) {
    snprintf (err, errlen, "the answer is not an STS document");
    goto out;
  }
  if (strcmp ((const char *) root->name, "ErrorResponse") == 0 ||
      strcmp ((const char *) root->name, "Error") == 0) {
    xmlNodePtr e = strcmp ((const char *) root->name, "Error") == 0 ? root
      : child (root, "Error");
    char *code = child_text (e, "Code"), *msg = child_text (e, "Message");
    snprintf (err, errlen, "%s: %s", code ? code : "(no code)",
              msg ? msg : "(no message)");
    free (code);
    free (msg);
    r = -EACCES;
    goto out;
  }
  cred = child (child (root, "AssumeRoleWithWebIdentityResult"),
                "Credentials");
  if (strcmp ((const char *) root->name,
              "AssumeRoleWithWebIdentityResponse") != 0 || cred == NULL) {
    snprintf (err, errlen, "no AssumeRoleWithWebIdentityResult/Credentials "
              "in the answer (root <%s>)", (const char *) root->name);
    goto out;
  }
  ak = child_text (cred, "AccessKeyId");
  sk = child_text (cred, "SecretAccessKey");
  token = child_text (cred, "SessionToken");
  exp = child_text (cred, "Expiration");
  if (ak == NULL || *ak == '\0' || sk == NULL || *sk == '\0' ||
      token == NULL || *token == '\0' || exp == NULL) {
    snprintf (err, errlen, "AccessKeyId, SecretAccessKey, SessionToken or "
              "Expiration is missing from the Credentials");
    goto out;
  }
  if (s3_creds_parse_time (exp, &expiration) < 0) {
    snprintf (err, errlen, "Expiration \"%s\" is not an ISO 8601 time", exp);
    goto out;
  }
  *out = s3_creds_new (ak, sk, token, expiration);
  r = *out ? 0 : -ENOMEM;
 out:
  wipe_free (ak);
  wipe_free (sk);
  wipe_free (token);
  free (exp);
  xmlFreeDoc (doc);
  return r;
}
