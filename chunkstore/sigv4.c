/* s3chunk: AWS Signature Version 4, header-based with a signed payload.
 *
 * The steps, as the AWS documentation names them:
 *   CanonicalRequest = Method \n CanonicalURI \n CanonicalQueryString \n
 *                      CanonicalHeaders \n SignedHeaders \n HashedPayload
 *   StringToSign     = "AWS4-HMAC-SHA256" \n amz-date \n scope \n
 *                      hex(SHA256(CanonicalRequest))
 *   SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4" secret, yyyymmdd),
 *                                         region), service), "aws4_request")
 *   Signature        = hex(HMAC(SigningKey, StringToSign))
 * S3 differs from the other services in one way that matters here: the
 * path is encoded once and never normalised (no "." / ".." removal, no
 * double encoding), so the caller passes it ready.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cleanup.h"
#include "sigv4.h"

#define ALGORITHM "AWS4-HMAC-SHA256"

static const char hexdigits[] = "0123456789abcdef";

static void
to_hex (const unsigned char *p, size_t n, char *out)
{
  size_t i;

  for (i = 0; i < n; ++i) {
    out[2 * i] = hexdigits[p[i] >> 4];
    out[2 * i + 1] = hexdigits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

void
sigv4_sha256_hex (const void *data, size_t len, char out[65])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;

  /* EVP_Digest only fails on allocation failure inside OpenSSL; an empty
   * output then fails the signature check at the server, loudly.
   */
  if (!EVP_Digest (data, len, md, &mdlen, EVP_sha256 (), NULL) ||
      mdlen != 32) {
    out[0] = '\0';
    return;
  }
  to_hex (md, 32, out);
}

void
sigv4_md5_base64 (const void *data, size_t len, char out[25])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;

  if (!EVP_Digest (data, len, md, &mdlen, EVP_md5 (), NULL) || mdlen != 16) {
    out[0] = '\0';
    return;
  }
  EVP_EncodeBlock ((unsigned char *) out, md, 16);  /* 24 chars + NUL */
}

void
sigv4_amz_date (time_t t, char out[17])
{
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool
unreserved (unsigned char c)
{
  return ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') ||
    ('0' <= c && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

char *
sigv4_uri_encode (const char *s, bool encode_slash)
{
  size_t n = strlen (s);
  char *out, *q;
  const unsigned char *p;

  if (n > (SIZE_MAX - 1) / 3)
    return NULL;
  out = q = malloc (3 * n + 1);
  if (out == NULL)
    return NULL;
  for (p = (const unsigned char *) s; *p; ++p) {
    if (unreserved (*p) || (*p == '/' && !encode_slash))
      *q++ = *p;
    else {
      *q++ = '%';
      *q++ = "0123456789ABCDEF"[*p >> 4];
      *q++ = "0123456789ABCDEF"[*p & 15];
    }
  }
  *q = '\0';
  return out;
}

struct enc_param {
  char *name, *value;           /* encoded; value NULL: no "=" in the URL */
};

static int
compare_params (const void *a, const void *b)
{
  const struct enc_param *x = a, *y = b;
  int r = strcmp (x->name, y->name);

  if (r)
    return r;
  return strcmp (x->value ? x->value : "", y->value ? y->value : "");
}

/* Close a memstream and hand over its string, or free it on error. */
static int
finish_stream (FILE *f, char **buf, char **out)
{
  bool err = ferror (f);

  if (fclose (f) != 0 || err) {
    free (*buf);
    *buf = NULL;
    return -ENOMEM;
  }
  *out = *buf;
  return 0;
}

int
sigv4_query (const struct sigv4_param *params, size_t n,
             char **canonical, char **url)
{
  struct enc_param *enc;
  char *cbuf = NULL, *ubuf = NULL;
  size_t clen, ulen, i;
  FILE *cf = NULL, *uf = NULL;
  int r = -ENOMEM;

  *canonical = NULL;
  if (url)
    *url = NULL;
  enc = calloc (n ? n : 1, sizeof *enc);
  if (enc == NULL)
    return -ENOMEM;
  for (i = 0; i < n; ++i) {
    enc[i].name = sigv4_uri_encode (params[i].name, true);
    if (enc[i].name == NULL)
      goto out;
    if (params[i].value) {
      enc[i].value = sigv4_uri_encode (params[i].value, true);
      if (enc[i].value == NULL)
        goto out;
    }
  }
  qsort (enc, n, sizeof *enc, compare_params);

  cf = open_memstream (&cbuf, &clen);
  uf = open_memstream (&ubuf, &ulen);
  if (cf == NULL || uf == NULL)
    goto out;
  for (i = 0; i < n; ++i) {
    const char *sep = i ? "&" : "";
    fprintf (cf, "%s%s=%s", sep, enc[i].name,
             enc[i].value ? enc[i].value : "");
    if (enc[i].value)
      fprintf (uf, "%s%s=%s", sep, enc[i].name, enc[i].value);
    else
      fprintf (uf, "%s%s", sep, enc[i].name);
  }
  r = finish_stream (cf, &cbuf, canonical);
  cf = NULL;
  if (r == 0) {
    char *u = NULL;
    r = finish_stream (uf, &ubuf, &u);
    uf = NULL;
    if (r == 0 && url)
      *url = u;
    else
      free (u);
    if (r < 0) {
      free (*canonical);
      *canonical = NULL;
    }
  }
 out:
  if (cf) {
    fclose (cf);
    free (cbuf);
  }
  if (uf) {
    fclose (uf);
    free (ubuf);
  }
  for (i = 0; i < n; ++i) {
    free (enc[i].name);
    free (enc[i].value);
  }
  free (enc);
  return r;
}

struct canon_header {
  char *name;                   /* lowercase */
  const char *value;
  size_t order;                 /* keeps repeated headers in given order */
};

static int
compare_headers (const void *a, const void *b)
{
  const struct canon_header *x = a, *y = b;
  int r = strcmp (x->name, y->name);

  if (r)
    return r;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* Header values are trimmed and runs of spaces become one space. */
static void
put_trimmed (FILE *f, const char *v)
{
  bool space = false, started = false;

  for (; *v; ++v) {
    if (*v == ' ' || *v == '\t') {
      space = started;
      continue;
    }
    if (space)
      fputc (' ', f);
    space = false;
    started = true;
    fputc (*v, f);
  }
}

int
sigv4_canonical_request (const struct sigv4_request *req,
                         char **canonical, char **signed_headers)
{
  struct canon_header *h;
  char *cbuf = NULL, *sbuf = NULL;
  size_t clen, slen, i, j;
  FILE *cf = NULL, *sf = NULL;
  int r = -ENOMEM;

  *canonical = *signed_headers = NULL;
  h = calloc (req->n_headers ? req->n_headers : 1, sizeof *h);
  if (h == NULL)
    return -ENOMEM;
  for (i = 0; i < req->n_headers; ++i) {
    h[i].name = strdup (req->headers[i].name);
    if (h[i].name == NULL)
      goto out;
    for (j = 0; h[i].name[j]; ++j)
      if ('A' <= h[i].name[j] && h[i].name[j] <= 'Z')
        h[i].name[j] += 'a' - 'A';
    h[i].value = req->headers[i].value;
    h[i].order = i;
  }
  qsort (h, req->n_headers, sizeof *h, compare_headers);

  cf = open_memstream (&cbuf, &clen);
  sf = open_memstream (&sbuf, &slen);
  if (cf == NULL || sf == NULL)
    goto out;
  fprintf (cf, "%s\n%s\n%s\n", req->method, req->path,
           req->query ? req->query : "");
  for (i = 0; i < req->n_headers; i = j) {
    /* A header given twice signs once, its values joined by commas. */
    fprintf (cf, "%s:", h[i].name);
    fprintf (sf, "%s%s", i ? ";" : "", h[i].name);
    for (j = i; j < req->n_headers && strcmp (h[j].name, h[i].name) == 0;
         ++j) {
      if (j > i)
        fputc (',', cf);
      put_trimmed (cf, h[j].value);
    }
    fputc ('\n', cf);
  }
  fflush (sf);
  fprintf (cf, "\n%s\n%s", sbuf ? sbuf : "", req->payload_hash);
  r = finish_stream (cf, &cbuf, canonical);
  cf = NULL;
  if (r == 0) {
    r = finish_stream (sf, &sbuf, signed_headers);
    sf = NULL;
    if (r < 0) {
      free (*canonical);
      *canonical = NULL;
    }
  }
 out:
  if (cf) {
    fclose (cf);
    free (cbuf);
  }
  if (sf) {
    fclose (sf);
    free (sbuf);
  }
  for (i = 0; i < req->n_headers; ++i)
    free (h[i].name);
  free (h);
  return r;
}

static int
scope_of (const struct sigv4_key *key, const char *amz_date, char **out)
{
  if (strlen (amz_date) != 16)
    return -EINVAL;
  if (asprintf (out, "%.8s/%s/%s/aws4_request",
                amz_date, key->region, key->service) < 0) {
    *out = NULL;
    return -ENOMEM;
  }
  return 0;
}

int
sigv4_string_to_sign (const struct sigv4_key *key, const char *amz_date,
                      const char *canonical_request, char **out)
{
  CLEANUP_FREE char *scope = NULL;
  char hash[65];
  int r;

  *out = NULL;
  r = scope_of (key, amz_date, &scope);
  if (r < 0)
    return r;
  sigv4_sha256_hex (canonical_request, strlen (canonical_request), hash);
  if (asprintf (out, ALGORITHM "\n%s\n%s\n%s", amz_date, scope, hash) < 0) {
    *out = NULL;
    return -ENOMEM;
  }
  return 0;
}

static int
hmac (const void *key, size_t keylen, const void *data, size_t len,
      unsigned char out[32])
{
  unsigned int outlen = 0;

  if (HMAC (EVP_sha256 (), key, (int) keylen, data, len, out, &outlen)
      == NULL || outlen != 32)
    return -ENOMEM;
  return 0;
}

int
sigv4_signature (const struct sigv4_key *key, const char *amz_date,
                 const char *string_to_sign, char out[65])
{
  unsigned char k[32], k2[32], sig[32];
  char day[9];
  size_t slen = strlen (key->secret_key);
  char *secret;
  int r;

  out[0] = '\0';
  if (strlen (amz_date) != 16)
    return -EINVAL;
  memcpy (day, amz_date, 8);
  day[8] = '\0';
  secret = malloc (slen + 5);
  if (secret == NULL)
    return -ENOMEM;
  memcpy (secret, "AWS4", 4);
  memcpy (secret + 4, key->secret_key, slen + 1);
  r = hmac (secret, slen + 4, day, 8, k);
  OPENSSL_cleanse (secret, slen + 4);
  free (secret);
  /* Output never aliases the key: alternate between k and k2. */
  if (r == 0)
    r = hmac (k, 32, key->region, strlen (key->region), k2);
  if (r == 0)
    r = hmac (k2, 32, key->service, strlen (key->service), k);
  if (r == 0)
    r = hmac (k, 32, "aws4_request", 12, k2);
  if (r == 0)
    r = hmac (k2, 32, string_to_sign, strlen (string_to_sign), sig);
  OPENSSL_cleanse (k, sizeof k);
  OPENSSL_cleanse (k2, sizeof k2);
  if (r == 0)
    to_hex (sig, 32, out);
  return r;
}

int
sigv4_authorization (const struct sigv4_key *key, const char *amz_date,
                     const struct sigv4_request *req, char **out)
{
  CLEANUP_FREE char *canonical = NULL, *signed_headers = NULL;
  CLEANUP_FREE char *to_sign = NULL, *scope = NULL;
  char sig[65];
  int r;

  *out = NULL;
  r = sigv4_canonical_request (req, &canonical, &signed_headers);
  if (r == 0)
    r = sigv4_string_to_sign (key, amz_date, canonical, &to_sign);
  if (r == 0)
    r = sigv4_signature (key, amz_date, to_sign, sig);
  if (r == 0)
    r = scope_of (key, amz_date, &scope);
  if (r < 0)
    return r;
  if (asprintf (out, ALGORITHM " Credential=%s/%s,SignedHeaders=%s,"
                "Signature=%s", key->access_key, scope, signed_headers,
                sig) < 0) {
    *out = NULL;
    return -ENOMEM;
  }
  return 0;
}
