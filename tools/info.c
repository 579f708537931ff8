/* s3chunk info: a volume's geometry, who holds its lock, and what it
 * costs in the store (from one listing: no object is read but the
 * superblock and the lock).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "s3chunk.h"

const char info_usage[] =
  "Usage: s3chunk info [--json] STORE-PARAMETER...\n"
  "\n"
  "Show the volume's store, format version, id, size, chunk size,\n"
  "compression and creation time; who holds its lock (host, pid, since\n"
  "when, last renewal, fresh or stale) or \"not locked\"; the number of chunk\n"
  "objects, the bytes they take in the store against the bytes of disk they\n"
  "hold (objects x chunk size) and the compression ratio; and objects that\n"
  "are not chunks of the volume.\n"
  "\n"
  "Options:\n"
  "  --json           One JSON object on stdout instead of text.\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

/* The most keys of other objects listed by --json (and 10 in text). */
#define MAX_OTHER_KEYS 1000

/* ------------------------------------------------------------------ JSON */

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if invalid. */
static size_t
utf8_len (const unsigned char *s)
{
  size_t n, i;
  uint32_t c;

  if (s[0] < 0x80)
    return 1;
  if ((s[0] & 0xe0) == 0xc0) { n = 2; c = s[0] & 0x1f; }
  else if ((s[0] & 0xf0) == 0xe0) { n = 3; c = s[0] & 0x0f; }
  else if ((s[0] & 0xf8) == 0xf0) { n = 4; c = s[0] & 0x07; }
  else return 0;
  for (i = 1; i < n; ++i) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    c = c << 6 | (s[i] & 0x3f);
  }
  /* Overlong forms, surrogates, beyond U+10FFFF. */
  if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
      (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
      (c >= 0xd800 && c <= 0xdfff))
    return 0;
  return n;
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes that are not UTF-8 (a foreign key can be anything) become U+FFFD.
 */
static void
json_string (FILE *fp, const char *str)
{
  const unsigned char *s = (const unsigned char *) str;

  fputc ('"', fp);
  while (*s) {
    size_t n;
    switch (*s) {
    case '"': fputs ("\\\"", fp); s++; continue;
    case '\\': fputs ("\\\\", fp); s++; continue;
    case '\b': fputs ("\\b", fp); s++; continue;
    case '\f': fputs ("\\f", fp); s++; continue;
    case '\n': fputs ("\\n", fp); s++; continue;
    case '\r': fputs ("\\r", fp); s++; continue;
    case '\t': fputs ("\\t", fp); s++; continue;
    }
    if (*s < 0x20 || *s == 0x7f) {
      fprintf (fp, "\\u%04x", *s);
      s++;
      continue;
    }
    n = utf8_len (s);
    if (n == 0) {
      fputs ("\\ufffd", fp);
      s++;
      continue;
    }
    fwrite (s, 1, n, fp);
    s += n;
  }
  fputc ('"', fp);
}

/* A key and a separator: ",\n  "key": " (first: no comma). */
static void
json_key (FILE *fp, bool *first, const char *key)
{
  fputs (*first ? "{\n  " : ",\n  ", fp);
  *first = false;
  json_string (fp, key);
  fputs (": ", fp);
}

/* ---------------------------------------------------------------- info */

struct lockinfo {
  int r;                        /* 0, -ENOENT none, -EIO invalid, other */
  struct lock_holder h;
  int64_t age;
  bool fresh;
};

/* "1.5 GiB (1610612736 bytes)", or "512 bytes" when that says it all. */
static const char *
both_sizes (uint64_t n, char *buf, size_t len)
{
  char f[32];

  params_format_size (n, f, sizeof f);
  if (strstr (f, "bytes"))
    snprintf (buf, len, "%s", f);
  else
    snprintf (buf, len, "%s (%" PRIu64 " bytes)", f, n);
  return buf;
}

static const char *info_provider (void);

static void
print_text (const struct cs_volume *v, const struct scan *s,
            const struct lockinfo *li)
{
  char b1[64], id[33], t[64], desc[512];
  uint64_t logical = (uint64_t) s->nchunks * v->chunk_size;
  size_t i, shown;

  tool_volume_id (v, id);
  printf ("store:             %s\n", tool_store_desc);
  if (!tool_sp.dir)
    printf ("provider:          %s\n", info_provider ());
  {
    char creds[1024];
    if (objstore_s3_credentials (tool_os, creds, sizeof creds) == 0)
      printf ("credentials:       %s\n", creds);
  }
  printf ("format version:    %d\n", v->crypt
          ? CS_SUPERBLOCK_VERSION_ENCRYPTED : CS_SUPERBLOCK_VERSION);
  printf ("volume id:         %s\n", id);
  printf ("size:              %s\n", both_sizes (v->size, b1, sizeof b1));
  printf ("chunk size:        %s, %" PRIu64 " chunks\n",
          both_sizes (v->chunk_size, b1, sizeof b1), v->nchunks);
  if (v->level)
    printf ("compression:       zstd level %d\n", v->level);
  else
    printf ("compression:       none\n");
  /* The cipher and KDF, never key material. */
  if (v->crypt == NULL)
    printf ("encryption:        none\n");
  else {
    printf ("encryption:        aes-256-gcm (a key per object)\n");
    if (v->crypt->kdf == CRYPT_KDF_SCRYPT)
      printf ("key:               passphrase, scrypt N=%" PRIu64 " r=%" PRIu32
              " p=%" PRIu32 "\n", v->crypt->scrypt_n, v->crypt->scrypt_r,
              v->crypt->scrypt_p);
    else
      printf ("key:               raw 32-byte key (no KDF)\n");
    printf ("superblock:        %s\n", v->crypt->keys
            ? "authenticated with the key"
            : "NOT authenticated (no key given: these fields are as "
              "stored)");
  }
  printf ("created:           %s\n", tool_format_time (v->created, t, sizeof t));
  if (li->r == -ENOENT)
    printf ("lock:              not locked\n");
  else if (li->r == 0) {
    lock_describe (&li->h, li->age, desc, sizeof desc);
    printf ("lock:              %s: %s\n", desc,
            li->fresh ? "fresh (in use)"
            : "stale (its holder is gone; the next start takes it over)");
  }
  else if (li->r == -EIO)
    printf ("lock:              an invalid lock object ('s3chunk unlock "
            "--force' removes it)\n");
  else
    printf ("lock:              could not be read (%s)\n",
            strerror (-li->r));
  printf ("chunk objects:     %zu (%.2f%% of the chunks)\n", s->nchunks,
          v->nchunks ? 100.0 * s->nchunks / v->nchunks : 0.0);
  printf ("stored bytes:      %s\n",
          both_sizes (s->chunk_bytes, b1, sizeof b1));
  printf ("logical bytes:     %s\n", both_sizes (logical, b1, sizeof b1));
  if (s->chunk_bytes)
    printf ("compression ratio: %.2f\n", (double) logical / s->chunk_bytes);
  else
    printf ("compression ratio: -\n");
  printf ("other objects:     %zu", s->nother);
  if (s->nother) {
    const char *sep = " (";
    for (i = 0; i < SCAN_NKINDS; ++i)
      if (s->count[i]) {
        printf ("%s%zu %s", sep, s->count[i], scan_kind_name (i));
        sep = ", ";
      }
    printf ("; 's3chunk fsck' reports them)");
  }
  putchar ('\n');
  shown = s->nother < 10 ? s->nother : 10;
  for (i = 0; i < shown; ++i)
    printf ("                   %s (%s)\n", s->other[i].key,
            scan_kind_name (s->other[i].kind));
  if (s->nother > shown)
    printf ("                   and %zu more\n", s->nother - shown);
}

/* How the store spells conditional writes: given, from the endpoint's
 * host, or "auto" (a writer probes it when it starts; info writes
 * nothing).
 */
static const char *
info_provider (void)
{
  const char *d = objstore_dialect (tool_os);

  return strcmp (d, "auto") == 0 ?
    "auto (probed when a writer starts)" : d;
}

static void
print_json (const struct cs_volume *v, const struct scan *s,
            const struct lockinfo *li)
{
  char id[33], t[64];
  uint64_t logical = (uint64_t) s->nchunks * v->chunk_size;
  bool first = true;
  size_t i;
  FILE *fp = stdout;

  tool_volume_id (v, id);
  json_key (fp, &first, "store");
  json_string (fp, tool_store_desc);
  json_key (fp, &first, "store_kind");
  json_string (fp, tool_sp.dir ? "dir" : "s3");
  if (tool_sp.dir) {
    json_key (fp, &first, "dir");
    json_string (fp, tool_sp.dir);
  }
  else {
    json_key (fp, &first, "bucket");
    json_string (fp, tool_sp.s3.bucket);
    json_key (fp, &first, "prefix");
    json_string (fp, tool_sp.s3.prefix ? tool_sp.s3.prefix : "");
    json_key (fp, &first, "provider");
    json_string (fp, objstore_dialect (tool_os));
    {
      char creds[1024];
      if (objstore_s3_credentials (tool_os, creds, sizeof creds) == 0) {
        json_key (fp, &first, "credentials");
        json_string (fp, creds);
      }
    }
  }
  json_key (fp, &first, "format_version");
  fprintf (fp, "%d", v->crypt ? CS_SUPERBLOCK_VERSION_ENCRYPTED
           : CS_SUPERBLOCK_VERSION);
  json_key (fp, &first, "volume_id");
  json_string (fp, id);
  json_key (fp, &first, "size");
  fprintf (fp, "%" PRIu64, v->size);
  json_key (fp, &first, "chunk_size");
  fprintf (fp, "%" PRIu32, v->chunk_size);
  json_key (fp, &first, "chunks");
  fprintf (fp, "%" PRIu64, v->nchunks);
  json_key (fp, &first, "codec");
  json_string (fp, v->level ? "zstd" : "none");
  json_key (fp, &first, "level");
  fprintf (fp, "%d", v->level);
  json_key (fp, &first, "encryption");
  if (v->crypt == NULL)
    fputs ("null", fp);
  else if (v->crypt->kdf == CRYPT_KDF_SCRYPT)
    fprintf (fp, "{\"cipher\": \"aes-256-gcm\", \"kdf\": \"scrypt\", "
             "\"kdf_n\": %" PRIu64 ", \"kdf_r\": %" PRIu32 ", \"kdf_p\": %"
             PRIu32 ", \"authenticated\": %s}", v->crypt->scrypt_n,
             v->crypt->scrypt_r, v->crypt->scrypt_p,
             v->crypt->keys ? "true" : "false");
  else
    fprintf (fp, "{\"cipher\": \"aes-256-gcm\", \"kdf\": \"none\", "
             "\"authenticated\": %s}", v->crypt->keys ? "true" : "false");
  json_key (fp, &first, "created");
  fprintf (fp, "%" PRId64, v->created);
  json_key (fp, &first, "created_utc");
  json_string (fp, tool_format_time (v->created, t, sizeof t));

  json_key (fp, &first, "lock");
  if (li->r == -ENOENT)
    fputs ("null", fp);
  else if (li->r == 0) {
    fputs ("{\"valid\": true, \"host\": ", fp);
    json_string (fp, li->h.host);
    fprintf (fp, ", \"pid\": %" PRId64 ", \"version\": ", li->h.pid);
    json_string (fp, li->h.version);
    fputs (", \"owner\": ", fp);
    json_string (fp, li->h.owner);
    fprintf (fp, ", \"taken_at\": %" PRId64 ", \"renewed_at\": %" PRId64,
             li->h.taken_at, li->h.renewed_at);
    if (li->age >= 0)
      fprintf (fp, ", \"age\": %" PRId64, li->age);
    else
      fputs (", \"age\": null", fp);
    fprintf (fp, ", \"lease\": %u, \"sequence\": %" PRIu64
             ", \"fresh\": %s}", li->h.lease, li->h.sequence,
             li->fresh ? "true" : "false");
  }
  else
    fprintf (fp, "{\"valid\": false, \"error\": \"%s\"}",
             li->r == -EIO ? "invalid lock object" : "unreadable");

  json_key (fp, &first, "chunk_objects");
  fprintf (fp, "%zu", s->nchunks);
  json_key (fp, &first, "stored_bytes");
  fprintf (fp, "%" PRIu64, s->chunk_bytes);
  json_key (fp, &first, "logical_bytes");
  fprintf (fp, "%" PRIu64, logical);
  json_key (fp, &first, "compression_ratio");
  if (s->chunk_bytes)
    fprintf (fp, "%.4f", (double) logical / s->chunk_bytes);
  else
    fputs ("null", fp);
  json_key (fp, &first, "other_objects");
  fprintf (fp, "%zu", s->nother);
  json_key (fp, &first, "beyond_end_objects");
  fprintf (fp, "%zu", s->count[SCAN_BEYOND]);
  json_key (fp, &first, "lock_probe_objects");
  fprintf (fp, "%zu", s->count[SCAN_PROBE]);
  json_key (fp, &first, "temporary_files");
  fprintf (fp, "%zu", s->count[SCAN_TEMP]);
  json_key (fp, &first, "foreign_objects");
  fprintf (fp, "%zu", s->count[SCAN_FOREIGN]);
  json_key (fp, &first, "other_keys");
  fputc ('[', fp);
  for (i = 0; i < s->nother && i < MAX_OTHER_KEYS; ++i) {
    if (i)
      fputs (", ", fp);
    json_string (fp, s->other[i].key);
  }
  fputc (']', fp);
  json_key (fp, &first, "other_keys_truncated");
  fputs (s->nother > MAX_OTHER_KEYS ? "true" : "false", fp);
  fputs ("\n}\n", fp);
}

int
cmd_info (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "json", no_argument, NULL, 'j' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct cs_volume *v = NULL;
  struct lockinfo li;
  struct scan s;
  bool json = false;
  int c, r;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS, longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'j': json = true; break;
    TOOL_COMMON_CASES (info_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, NULL, NULL) < 0)
    return EXIT_USAGE;
  tool_key_optional = true;     /* shows the (unauthenticated) fields */
  if (tool_open_store (false, 8) < 0 || tool_open_volume (&v) < 0)
    return EXIT_FAIL;

  li.r = lock_read (tool_os, &li.h, &li.age, &li.fresh);
  if (li.r < 0 && li.r != -ENOENT && li.r != -EIO) {
    cs_volume_close (v);
    return EXIT_FAIL;           /* the store said why */
  }
  r = scan_store (tool_os, v->nchunks, tool_sp.dir, &s);
  if (r < 0) {
    cs_volume_close (v);
    return EXIT_FAIL;
  }
  if (json)
    print_json (v, &s, &li);
  else
    print_text (v, &s, &li);
  scan_free (&s);
  cs_volume_close (v);
  if (fflush (stdout) != 0 || ferror (stdout)) {
    tool_error ("write to stdout: %s", strerror (errno));
    return EXIT_FAIL;
  }
  return EXIT_OK;
}
