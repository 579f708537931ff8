/* s3chunk create, grow, unlock and destroy: the commands that write.
 *
 * grow and destroy take the volume lock themselves (as the plugin does),
 * so no nbdkit can start on the volume while they write.  destroy refuses
 * a volume whose lock is fresh (a running nbdkit would keep writing
 * chunks of a volume being deleted); grow asks the holder to grow the
 * volume instead (grow_online).  A stale lock (its holder crashed) does
 * not stop them: they take it over.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "growreq.h"
#include "params.h"
#include "progress.h"
#include "s3chunk.h"

/* Keys per delete request: the most S3's DeleteObjects takes. */
#define DELETE_BATCH 1000

const char create_usage[] =
  "Usage: s3chunk create STORE-PARAMETER... size=SIZE [chunk-size=SIZE]\n"
  "                      [compression=zstd|none] [level=N]\n"
  "\n"
  "Create a volume: write its superblock.  A volume costs only what is\n"
  "written to it, so size= can be far larger than the store.  Refuses a\n"
  "store that holds a volume already (or chunk objects without one).\n"
  "nbdkit with the same store parameters then serves it.\n"
  "\n"
  "Parameters:\n"
  "  size=SIZE             The disk's size (K, M, G, T, P suffixes).\n"
  "  chunk-size=SIZE       Bytes per chunk object: a power of 2 from 64K to\n"
  "                        64M (default 1M).  Fixed for the volume's life.\n"
  "  compression=zstd|none Compress chunks (default zstd).  Fixed.\n"
  "  level=N               zstd level, 1 to 19 (default 1).  Fixed.\n"
  "  encryption=aes-256-gcm|none  Encrypt every chunk (implied by a key).\n"
  "  key=+FILE             The key (or --key=+FILE; - for stdin, -FD).\n"
  "  key-format=passphrase|raw  scrypt a passphrase (default), or use 32\n"
  "                        bytes / 64 hex digits as the key itself.\n"
  "\n"
  "Options:\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

const char rekey_usage[] =
  "Usage: s3chunk rekey STORE-PARAMETER... key=+OLD new-key=+NEW\n"
  "                     [new-key-format=passphrase|raw]\n"
  "\n"
  "Replace the key of an encrypted volume: the volume key is wrapped by the\n"
  "new key (new salt), and the superblock rewritten only if unchanged since\n"
  "it was read.  No chunk object is rewritten, so it takes a second.\n"
  "Refused while the volume's lock is fresh (stop its nbdkit first).\n"
  "Someone who had the old key and read the superblock then knows the\n"
  "volume key still: against that, copy the data to a new volume.\n"
  "\n"
  "Parameters:\n"
  "  key=+FILE, --key=+FILE         The current key.\n"
  "  new-key=+FILE, --new-key=+FILE The new key (- for stdin, -FD).\n"
  "  new-key-format=passphrase|raw  How to read the new key (default\n"
  "                                 passphrase).\n"
  "\n"
  "Options:\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

const char grow_usage[] =
  "Usage: s3chunk grow STORE-PARAMETER... SIZE\n"
  "       s3chunk grow STORE-PARAMETER... size=SIZE\n"
  "\n"
  "Grow a volume to SIZE (it never shrinks).  A volume no nbdkit serves\n"
  "is grown under the volume lock (a stale lock is taken over).  A served\n"
  "volume (its lock is fresh) is grown by its nbdkit: this leaves a\n"
  "request in the store and waits until the superblock says SIZE, or the\n"
  "plugin refuses (the reason is printed).  New connections then get the\n"
  "new size; for /dev/nbdX run s3chunk-nbd-resize on the client.  Then\n"
  "grow the filesystem: resize2fs (ext4) or xfs_growfs (xfs).\n"
  "\n"
  "Options:\n"
  "  --wait=SECS      How long to wait for a serving nbdkit (default two\n"
  "                   of its lock leases plus 10 s).\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

const char unlock_usage[] =
  "Usage: s3chunk unlock [--yes] [--force] STORE-PARAMETER...\n"
  "\n"
  "Show who holds the volume's lock and remove it, after asking on the\n"
  "terminal.  Needed only after a crash, and only if the next start cannot\n"
  "wait for the lease to run out.  A fresh lock (renewed within its lease:\n"
  "its holder looks alive) is removed only with --force; an nbdkit that is\n"
  "in fact still running then stops writing at its next renewal, and what\n"
  "it wrote meanwhile may be lost.\n"
  "\n"
  "Options:\n"
  "  -y, --yes        Do not ask (for scripts).\n"
  "  -f, --force      Remove a fresh or an invalid lock too.\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

const char destroy_usage[] =
  "Usage: s3chunk destroy [--yes] [--quiet] STORE-PARAMETER...\n"
  "\n"
  "Delete every object of the volume: the chunks (in batches), the lock,\n"
  "and the superblock last, so that an interrupted destroy can be run\n"
  "again.  Asks for the first 8 characters of the volume id first.\n"
  "Refused while the volume's lock is fresh (stop its nbdkit first).\n"
  "Objects that are not s3chunk's are left where they are.\n"
  "\n"
  "Options:\n"
  "  -y, --yes        Do not ask (for scripts).\n"
  "  -q, --quiet      No progress.\n"
  "  -v, --verbose    More messages.\n"
  "  -h, --help       This help.\n";

/* A size as the plugin takes size=: 0, or -1 reported. */
static int
parse_volume_size (const char *key, const char *value, uint64_t *out)
{
  uint64_t u;

  if (params_parse_size (value, &u) < 0 || u == 0) {
    tool_error ("%s%s: invalid value: expected a size in bytes with an "
                "optional suffix K, M, G, T or P (powers of 1024), e.g. 1T",
                key, value);
    return -1;
  }
  if (u % CS_SIZE_ALIGN || u > CS_MAX_SIZE) {
    tool_error ("%s%s: invalid value: expected a multiple of 512 bytes, at "
                "most 1 EiB", key, value);
    return -1;
  }
  *out = u;
  return 0;
}

/* The refusal when a fresh lock is found: who, and the way out. */
static void
refuse_locked (const struct lock_holder *h, int64_t age, const char *advice)
{
  char desc[512];

  lock_describe (h, age, desc, sizeof desc);
  tool_error ("the volume is in use: locked by %s: %s", desc, advice);
}

/* ---------------------------------------------------------------- create */

static struct {
  uint64_t size;
  uint32_t chunk_size;
  int level;
  int compress;                 /* CS_COMPRESS_* */
  int encryption;               /* CS_ENCRYPT_* */
} cfg = { .level = -1 };

static int
create_param (const char *key, const char *value)
{
  uint64_t u;

  if (strcmp (key, "encryption") == 0) {
    if (strcmp (value, "aes-256-gcm") == 0)
      cfg.encryption = CS_ENCRYPT_AES256GCM;
    else if (strcmp (value, "none") == 0)
      cfg.encryption = CS_ENCRYPT_NONE;
    else {
      tool_error ("encryption=%s: invalid value: expected aes-256-gcm or "
                  "none", value);
      return -1;
    }
    return 0;
  }

  if (strcmp (key, "size") == 0)
    return parse_volume_size ("size=", value, &cfg.size);
  if (strcmp (key, "chunk-size") == 0) {
    if (params_parse_size (value, &u) < 0 ||
        u < CS_MIN_CHUNK_SIZE || u > CS_MAX_CHUNK_SIZE || (u & (u - 1))) {
      tool_error ("chunk-size=%s: invalid value: expected a power of two "
                  "from 64K to 64M, e.g. chunk-size=1M", value);
      return -1;
    }
    cfg.chunk_size = u;
    return 0;
  }
  if (strcmp (key, "compression") == 0) {
    if (strcmp (value, "zstd") == 0)
      cfg.compress = CS_COMPRESS_ZSTD;
    else if (strcmp (value, "none") == 0)
      cfg.compress = CS_COMPRESS_NONE;
    else {
      tool_error ("compression=%s: invalid value: expected zstd or none",
                  value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "level") == 0) {
    if (params_parse_uint (value, 1, CS_MAX_LEVEL, &u) < 0) {
      tool_error ("level=%s: invalid value: expected a zstd level from 1 "
                  "to 19", value);
      return -1;
    }
    cfg.level = u;
    return 0;
  }
  return 1;
}

static int
stop_at_first (void *opaque, const char *key, uint64_t size)
{
  return 1;
}

int
cmd_create (int argc, char **argv)
{
  static const struct option longopts[] = {
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct cs_volume_params vp = { 0 };
  struct cs_volume *v;
  struct cs_buf b = CS_BUF_INIT;
  char id[33], s1[32], s2[32];
  int c, r;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS, longopts,
                           NULL)) != -1) {
    switch (c) {
    TOOL_COMMON_CASES (create_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, create_param, NULL) < 0)
    return EXIT_USAGE;
  if (cfg.size == 0) {
    tool_error ("size= is required: the disk's size, e.g. size=1T");
    return EXIT_USAGE;
  }
  if (cfg.compress == CS_COMPRESS_NONE && cfg.level >= 0) {
    tool_error ("level=%d conflicts with compression=none: drop one",
                cfg.level);
    return EXIT_USAGE;
  }
  if (cfg.encryption == CS_ENCRYPT_AES256GCM && !tool_key_set) {
    tool_error ("encryption=aes-256-gcm needs a key: add --key=+FILE");
    return EXIT_USAGE;
  }
  if (cfg.encryption == CS_ENCRYPT_NONE && tool_key_set) {
    tool_error ("a key conflicts with encryption=none: drop one");
    return EXIT_USAGE;
  }
  if (tool_open_store (true, 4) < 0)
    return EXIT_FAIL;

  /* The friendly refusals; create_only below is the race-proof one. */
  r = objstore_get (tool_os, CS_SUPERBLOCK_KEY, 65536, &b, NULL);
  cs_buf_free (&b);
  if (r == 0 || r == -EFBIG) {
    tool_error ("a volume exists in %s already: 's3chunk info' shows it, "
                "'s3chunk grow' grows it, 's3chunk destroy' deletes it",
                tool_store_desc);
    return EXIT_FAIL;
  }
  if (r != -ENOENT)
    return EXIT_FAIL;
  r = objstore_list (tool_os, CS_CHUNK_PREFIX, stop_at_first, NULL);
  if (r == 1) {
    /* Another volume's chunks would read as I/O errors in the new one. */
    tool_error ("%s holds chunk objects but no volume (left by an "
                "interrupted destroy?): a new volume cannot use them; "
                "delete the objects under %s first", tool_store_desc,
                CS_CHUNK_PREFIX);
    return EXIT_FAIL;
  }
  if (r < 0)
    return EXIT_FAIL;

  vp.size = cfg.size;
  vp.chunk_size = cfg.chunk_size;
  vp.compress = cfg.compress;
  vp.level = cfg.compress == CS_COMPRESS_NONE ? 0 : cfg.level;
  vp.create_only = true;
  vp.encryption = cfg.encryption;
  vp.key = tool_key_set ? &tool_key : NULL;
  r = cs_volume_open (tool_os, &vp, &v);
  if (r == -ENOMEM) {
    /* The library says nothing: its allocation map (one bit per chunk)
     * did not fit in memory, and the superblock may be written already.
     */
    uint64_t cs = cfg.chunk_size ? cfg.chunk_size : CS_DEFAULT_CHUNK_SIZE;
    tool_error ("out of memory for the allocation map of %" PRIu64 " chunks "
                "(one bit each, which nbdkit needs too): choose a larger "
                "chunk-size= or a smaller size=%s", (cfg.size + cs - 1) / cs,
                objstore_get (tool_os, CS_SUPERBLOCK_KEY, 65536, &b, NULL) == 0
                ? "; the superblock was written anyway: remove it with "
                  "'s3chunk destroy'" : "");
    cs_buf_free (&b);
    return EXIT_FAIL;
  }
  if (r < 0)
    return EXIT_FAIL;
  tool_volume_id (v, id);
  printf ("created volume %s in %s: size %s, chunk size %s, ", id,
          tool_store_desc, params_format_size (v->size, s1, sizeof s1),
          params_format_size (v->chunk_size, s2, sizeof s2));
  if (v->level)
    printf ("zstd level %d", v->level);
  else
    printf ("no compression");
  if (v->crypt)
    printf (", encrypted (aes-256-gcm, %s)",
            v->crypt->kdf == CRYPT_KDF_SCRYPT ? "passphrase, scrypt"
            : "raw key");
  printf ("\n");
  cs_volume_close (v);
  return EXIT_OK;
}

/* ------------------------------------------------------------------ grow */

static uint64_t grow_size;
static const char *grow_text;   /* as typed, for messages */

static int
grow_param (const char *key, const char *value)
{
  if (strcmp (key, "size") != 0)
    return 1;
  if (grow_size) {
    tool_error ("more than one size given: 'size=%s'", value);
    return -1;
  }
  grow_text = value;
  return parse_volume_size ("size=", value, &grow_size);
}

static int
grow_word (const char *word)
{
  if (grow_size) {
    tool_error ("more than one size given: '%s'", word);
    return -1;
  }
  grow_text = word;
  return parse_volume_size ("", word, &grow_size);
}

static double
mono_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Grow a volume that a plugin serves (its lock is fresh): leave a request
 * for it (docs/FORMAT.md, "Online grow") and wait until its superblock
 * says the new size, or the plugin's answer refuses, or wait_secs pass.
 * Success only when the superblock says so.
 */
static int
grow_online (struct cs_volume *v, const struct lock_holder *h,
             double wait_secs, const char *id)
{
  struct growreq rq = { .size = grow_size, .requested_at = time (NULL) };
  char text[GROWREQ_MAX_SIZE], s1[32], s2[32];
  uint8_t rnd[16];
  struct cs_buf b = CS_BUF_INIT;
  double t0 = mono_now (), last_line = t0, last_lock = t0;
  const char *gone = NULL;
  bool sent = false, other_seen = false;
  int n, r, status = EXIT_FAIL;

  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd) {
    tool_error ("getrandom: %s", strerror (errno));
    return EXIT_FAIL;
  }
  for (int i = 0; i < 16; ++i)
    snprintf (rq.id + 2 * i, 3, "%02x", rnd[i]);
  if (gethostname (rq.host, sizeof rq.host - 1) < 0)
    strcpy (rq.host, "unknown");
  for (char *p = rq.host; *p; ++p)
    if (*p < 0x21 || *p > 0x7e)
      *p = '_';
  n = growreq_format (&rq, text, sizeof text);
  if (n < 0)
    return EXIT_FAIL;
  params_format_size (v->size, s1, sizeof s1);
  params_format_size (grow_size, s2, sizeof s2);
  fprintf (stderr, "s3chunk grow: volume %s is served by %s (pid %" PRId64
           "): asking it to grow from %s to %s (its lock renewals look for "
           "the request every %u s)\n", id, h->host, h->pid, s1, s2,
           h->lease / 3 ? h->lease / 3 : 1);

  for (;;) {
    double now = mono_now ();
    struct cs_volume sb;
    struct growans a;

    /* Send the request (create-only: one request at a time). */
    if (!sent) {
      r = objstore_put_if (tool_os, GROWREQ_KEY, text, n, NULL, NULL);
      if (r == -ENOTSUP) {      /* no create-only write: check, then put */
        r = objstore_get (tool_os, GROWREQ_KEY, GROWREQ_MAX_SIZE, &b, NULL);
        r = r == 0 ? -EEXIST : r == -ENOENT
          ? objstore_put (tool_os, GROWREQ_KEY, text, n, NULL) : r;
      }
      if (r == 0 || r == -ETIMEDOUT)
        sent = true;            /* a lost answer: the wait below settles it */
      else if (r == -EEXIST) {
        if (!other_seen)
          fprintf (stderr, "s3chunk grow: another grow request is pending "
                   "(%s): waiting until it is answered\n", GROWREQ_KEY);
        other_seen = true;
      }
      else {
        tool_error ("writing %s failed: %s: nothing was asked; try again",
                    GROWREQ_KEY, strerror (-r));
        goto out;
      }
    }
    if (sent) {
      /* The superblock decides. */
      memset (&sb, 0, sizeof sb);
      if (objstore_get (tool_os, CS_SUPERBLOCK_KEY, 4096, &b, NULL) == 0 &&
          cs_superblock_parse (CS_SUPERBLOCK_KEY, b.data, b.len, &sb) == 0 &&
          memcmp (sb.volume_id, v->volume_id, sizeof sb.volume_id) == 0 &&
          sb.size >= grow_size) {
        crypt_free (sb.crypt);
        printf ("grew volume %s from %s to %s online: %s (pid %" PRId64 ") "
                "serves the new size to new connections; connections opened "
                "before keep the old size.\n"
                "Next, on the client: s3chunk-nbd-resize DEVICE ... (for "
                "/dev/nbdX; see s3chunk-nbd-resize(1)), then resize2fs "
                "DEVICE (ext4) or xfs_growfs MOUNTPOINT (xfs)\n", id, s1,
                params_format_size (sb.size, s2, sizeof s2), h->host, h->pid);
        status = EXIT_OK;
        goto out;
      }
      crypt_free (sb.crypt);
      if (objstore_get (tool_os, GROWANS_KEY, GROWREQ_MAX_SIZE, &b,
                        NULL) == 0 &&
          growans_parse (b.data, b.len, &a) == 0 &&
          strcmp (a.id, rq.id) == 0 && a.refused) {
        tool_error ("the serving nbdkit refused to grow the volume: %s",
                    a.reason);
        goto out;
      }
    }
    if (now - t0 >= wait_secs)
      break;
    /* A holder that stopped or died will never answer: say so as soon as
     * its lock says so (released, stale or someone else's).
     */
    if (sent && now - last_lock >= 2) {
      struct lock_holder h2;
      int64_t age2;
      bool fresh2;

      last_lock = now;
      r = lock_read (tool_os, &h2, &age2, &fresh2);
      if (r == -ENOENT || (r == 0 && (!fresh2 ||
                                      strcmp (h2.owner, h->owner) != 0))) {
        gone = r == -ENOENT ? "released its lock"
          : !fresh2 ? "stopped renewing its lock (it is stale now)"
          : "lost its lock to another instance";
        break;
      }
    }
    if (now - last_line >= 5) {
      fprintf (stderr, "s3chunk grow: waiting for the serving nbdkit to "
               "apply the request: %.0f s of %.0f s\n", now - t0, wait_secs);
      last_line = now;
    }
    usleep (500 * 1000);
  }

  /* Withdraw our request if it is still there and ours.  (A plugin that
   * read it just before may still apply it: growing is never harmful,
   * and 's3chunk info' shows the size.)
   */
  if (sent &&
      objstore_get (tool_os, GROWREQ_KEY, GROWREQ_MAX_SIZE, &b, NULL) == 0 &&
      b.len == (size_t) n && memcmp (b.data, text, n) == 0)
    objstore_del (tool_os, GROWREQ_KEY);
  if (gone) {
    tool_error ("the nbdkit that served the volume (%s, pid %" PRId64 ") %s "
                "before it applied the request: the volume was not grown; "
                "run 's3chunk grow' again (on a volume nobody serves it "
                "grows the superblock itself)", h->host, h->pid, gone);
    goto out;
  }
  tool_error ("the serving nbdkit (%s, pid %" PRId64 ") did not apply the "
              "request within %.0f s%s: the volume was not grown (if it "
              "applies it late, 's3chunk info' shows the new size).  Is it "
              "a release without online grow, or started with lock=none? "
              "Then restart it with size=%s",
              h->host, h->pid, wait_secs,
              other_seen && !sent ? " (another request stayed pending)" : "",
              grow_text);
 out:
  cs_buf_free (&b);
  return status;
}

int
cmd_grow (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "wait", required_argument, NULL, 'w' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  double wait_secs = -1;
  struct lock_params lp = {
    .lease = TOOL_LEASE, .version = PACKAGE_VERSION,
  };
  struct cs_volume *v = NULL;
  struct lock *l = NULL;
  struct lock_holder h;
  int64_t age;
  bool fresh;
  char id[33], s1[32], s2[32];
  uint64_t old;
  int c, r, status = EXIT_FAIL;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS "w:", longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'w':
      if (params_parse_seconds (optarg, &wait_secs) < 0 || wait_secs < 1 ||
          wait_secs > 86400) {
        tool_error ("--wait=%s: expected seconds from 1 to 86400", optarg);
        return EXIT_USAGE;
      }
      break;
    TOOL_COMMON_CASES (grow_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, grow_param, grow_word) < 0)
    return EXIT_USAGE;
  if (grow_size == 0) {
    tool_error ("no size given: 's3chunk grow STORE... SIZE', e.g. 2T");
    return EXIT_USAGE;
  }
  if (tool_open_store (false, 4) < 0 || tool_open_volume (&v) < 0)
    return EXIT_FAIL;
  tool_volume_id (v, id);
  old = v->size;
  if (grow_size < old) {
    tool_error ("%s is smaller than the volume (%s, %" PRIu64 " bytes): a "
                "volume never shrinks (that would destroy the data at the "
                "end of the disk)",
                params_format_size (grow_size, s1, sizeof s1),
                params_format_size (old, s2, sizeof s2), old);
    goto out;
  }
  if (grow_size == old) {
    printf ("volume %s is %s already: nothing to do\n", id,
            params_format_size (old, s1, sizeof s1));
    status = EXIT_OK;
    goto out;
  }

  r = lock_read (tool_os, &h, &age, &fresh);
  if (r == 0 && fresh) {
    /* Served: the holder renews every lease/3 and looks for the request
     * then; two lease periods leave room for a slow renewal and the
     * superblock write.
     */
    if (wait_secs < 0)
      wait_secs = 2.0 * h.lease + 10;
    status = grow_online (v, &h, wait_secs, id);
    goto out;
  }
  if (r < 0 && r != -ENOENT && r != -EIO)
    goto out;
  /* Hold the lock while the superblock is rewritten: no nbdkit starts
   * with the old size meanwhile.  A race with one that starts now is
   * refused here, naming it.
   */
  if (lock_acquire (tool_os, &lp, &l) < 0)
    goto out;
  r = cs_volume_grow (v, grow_size);
  if (r == -ENOMEM)             /* the map of the new size, unlogged */
    tool_error ("out of memory for the allocation map of the grown volume "
                "(one bit per chunk, which nbdkit needs too): grow less");
  if (lock_release (l) < 0)
    tool_error ("warning: the lock could not be removed: the next start "
                "waits until its lease (%d s) has run out", TOOL_LEASE);
  if (r < 0)
    goto out;
  printf ("grew volume %s from %s to %s: the next nbdkit start serves the "
          "new size; then grow the filesystem (resize2fs, xfs_growfs)\n", id,
          params_format_size (old, s1, sizeof s1),
          params_format_size (grow_size, s2, sizeof s2));
  status = EXIT_OK;
 out:
  cs_volume_close (v);
  return status;
}

/* ---------------------------------------------------------------- unlock */

int
cmd_unlock (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "yes", no_argument, NULL, 'y' },
    { "force", no_argument, NULL, 'f' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct lock_holder h;
  int64_t age = -1;
  bool fresh = false, yes = false, force = false;
  char desc[512];
  int c, r;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS "yf", longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'y': yes = true; break;
    case 'f': force = true; break;
    TOOL_COMMON_CASES (unlock_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, NULL, NULL) < 0)
    return EXIT_USAGE;
  if (tool_open_store (false, 2) < 0)
    return EXIT_FAIL;

  r = lock_read (tool_os, &h, &age, &fresh);
  if (r == -ENOENT) {
    printf ("%s: not locked: nothing to do\n", tool_store_desc);
    return EXIT_OK;
  }
  if (r == -EIO) {
    printf ("%s: the lock object is not a valid lock\n", tool_store_desc);
    if (!force) {
      tool_error ("an invalid lock object is removed only with --force");
      return EXIT_FAIL;
    }
  }
  else if (r < 0)
    return EXIT_FAIL;
  else {
    lock_describe (&h, age, desc, sizeof desc);
    printf ("%s: locked by %s: %s\n", tool_store_desc, desc,
            fresh ? "fresh" : "stale");
    if (fresh && !force) {
      if (age >= 0)
        tool_error ("not removed: the holder looks alive (it renewed the "
                    "lock %" PRId64 " s ago, within its lease of %u s): stop "
                    "that nbdkit (it removes its lock when it stops); if it "
                    "is gone, wait about %" PRId64 " s for the lease to run "
                    "out, or add --force", age, h.lease,
                    (int64_t) h.lease + LOCK_TAKE_MARGIN + 1 - age);
      else
        tool_error ("not removed: the holder may be alive (the store did "
                    "not say when the lock was last renewed): stop that "
                    "nbdkit, or add --force if you are sure it is gone");
      return EXIT_FAIL;
    }
    if (fresh)
      tool_error ("warning: removing a FRESH lock: if that nbdkit still "
                  "runs, it stops writing at its next renewal and what it "
                  "wrote since may be lost");
  }
  if (!yes && (r = tool_confirm ("Remove it? [y/N] ", NULL)) <= 0) {
    if (r == 0)
      tool_error ("not removed");
    return EXIT_FAIL;
  }
  tool_mute_warnings = true;    /* the FRESH warning was given above */
  r = lock_break (tool_os, force);
  tool_mute_warnings = false;
  if (r < 0)
    return EXIT_FAIL;
  printf ("%s: lock removed\n", tool_store_desc);
  return EXIT_OK;
}

/* --------------------------------------------------------------- destroy */

static int fenced;              /* atomic: our lock was lost */
static char fence_why[512];

static void
fence_destroy (void *opaque, const char *why)
{
  snprintf (fence_why, sizeof fence_why, "%s", why);
  __atomic_store_n (&fenced, 1, __ATOMIC_RELEASE);
}

int
cmd_destroy (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "yes", no_argument, NULL, 'y' },
    { "quiet", no_argument, NULL, 'q' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct lock_params lp = {
    .lease = TOOL_LEASE, .version = PACKAGE_VERSION,
  };
  struct cs_volume *v = NULL;
  struct lock *l = NULL;
  struct objstore *lock_os = NULL;
  struct lock_holder h;
  struct scan s = { 0 };
  int64_t age;
  bool fresh, yes = false, quiet = false;
  char id[33], first8[9], b1[32], b2[32], prompt[256];
  char *keybuf = NULL;
  const char **keys = NULL;
  size_t nkeys = 0, i, done = 0;
  int c, r, status = EXIT_FAIL;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS "yq", longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'y': yes = true; break;
    case 'q': quiet = true; break;
    TOOL_COMMON_CASES (destroy_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, NULL, NULL) < 0)
    return EXIT_USAGE;
  tool_key_optional = true;     /* deleting objects needs no key */
  if (tool_open_store (false, 4) < 0 || tool_open_volume (&v) < 0)
    return EXIT_FAIL;
  tool_volume_id (v, id);
  snprintf (first8, sizeof first8, "%.8s", id);

  r = lock_read (tool_os, &h, &age, &fresh);
  if (r == 0 && fresh) {
    refuse_locked (&h, age, "stop its nbdkit first (if it is gone, wait "
                   "until its lease has run out or run 's3chunk unlock')");
    goto out;
  }
  if (r < 0 && r != -ENOENT && r != -EIO)
    goto out;
  if (scan_store (tool_os, v->nchunks, tool_sp.dir, &s) < 0)
    goto out;

  printf ("volume %s in %s: %s, %zu chunk object%s (%s stored)\n", id,
          tool_store_desc, params_format_size (v->size, b1, sizeof b1),
          s.nchunks, s.nchunks == 1 ? "" : "s",
          params_format_size (s.chunk_bytes, b2, sizeof b2));
  fflush (stdout);
  if (!yes) {
    snprintf (prompt, sizeof prompt, "This deletes all its data.  Type the "
              "first 8 characters of the volume id (%s) to go on: ", first8);
    if ((r = tool_confirm (prompt, first8)) <= 0) {
      if (r == 0)
        tool_error ("not destroyed: the answer was not %s", first8);
      goto out;
    }
  }

  /* Hold the lock, renewed, while deleting: no nbdkit starts on a half
   * deleted volume, and if someone takes the lock anyway we stop.
   */
  /* The lock on a connection of its own; the deletes obey its fence. */
  r = objstore_sibling (tool_os, &lock_os);
  if (r == -ENOTSUP)
    lock_os = NULL;
  else if (r < 0) {
    tool_error ("cannot open a second connection to the store: %s",
                strerror (-r));
    goto out;
  }
  if (lock_acquire (lock_os ? lock_os : tool_os, &lp, &l) < 0)
    goto out;
  if (lock_os)
    objstore_set_fence (tool_os, lock_fence (l));
  if (lock_start (l, fence_destroy, NULL) < 0)
    goto out;

  /* Our keys: the chunk objects (in range or not) and lock probes. */
  keybuf = malloc ((s.nchunks + s.nother) * 32 + 1);
  keys = malloc ((s.nchunks + s.nother + 1) * sizeof *keys);
  if (keybuf == NULL || keys == NULL) {
    tool_error ("out of memory");
    goto out;
  }
  for (i = 0; i < s.nchunks; ++i) {
    cs_chunk_key (s.chunks[i], keybuf + 32 * nkeys, 32);
    keys[nkeys] = keybuf + 32 * nkeys;
    nkeys++;
  }
  for (i = 0; i < s.nother; ++i)
    if (s.other[i].kind == SCAN_BEYOND || s.other[i].kind == SCAN_PROBE)
      keys[nkeys++] = s.other[i].key;

  progress_start ("destroy", "objects", nkeys, 0, quiet);
  while (done < nkeys) {
    size_t n = nkeys - done < DELETE_BATCH ? nkeys - done : DELETE_BATCH;

    if (__atomic_load_n (&fenced, __ATOMIC_ACQUIRE)) {
      progress_end ();
      tool_error ("stopped: the volume lock was lost (%s): %zu of %zu "
                  "objects deleted; run destroy again", fence_why, done,
                  nkeys);
      goto out;
    }
    if (objstore_del_many (tool_os, keys + done, n) < 0) {
      progress_end ();
      tool_error ("stopped after %zu of %zu objects: run destroy again",
                  done, nkeys);
      goto out;
    }
    done += n;
    progress_update (done, 0, 0);
  }
  progress_end ();

  /* The directory store's leftovers of unfinished writes, and the now
   * empty chunks directory (the store does not remove directories).
   */
  if (tool_sp.dir) {
    for (i = 0; i < s.nother; ++i) {
      char *path;
      if (s.other[i].kind != SCAN_TEMP)
        continue;
      if (asprintf (&path, "%s/%s", tool_sp.dir, s.other[i].key) < 0)
        continue;
      if (unlink (path) < 0 && errno != ENOENT)
        tool_error ("warning: remove %s: %s", path, strerror (errno));
      free (path);
    }
    {
      char *path;
      if (asprintf (&path, "%s/%.*s", tool_sp.dir,
                    (int) strlen (CS_CHUNK_PREFIX) - 1, CS_CHUNK_PREFIX) >= 0) {
        rmdir (path);           /* only if empty: fine if not */
        free (path);
      }
    }
  }

  /* The lock, then the superblock last: until it goes, 'destroy' can be
   * run again to finish.
   */
  /* An online grow's answer and a request nobody served (the lock is
   * ours: no nbdkit reads them now).  A missing one is fine.
   */
  objstore_del (tool_os, GROWREQ_KEY);
  objstore_del (tool_os, GROWANS_KEY);
  objstore_set_fence (tool_os, NULL);
  r = lock_release_delete (l);
  l = NULL;
  if (r < 0)
    tool_error ("warning: the lock object could not be removed");
  if (objstore_del (tool_os, CS_SUPERBLOCK_KEY) < 0) {
    tool_error ("the superblock could not be deleted: run destroy again");
    goto out;
  }
  printf ("destroyed volume %s: %zu object%s deleted\n", id, nkeys + 1,
          nkeys + 1 == 1 ? "" : "s");
  if (s.count[SCAN_FOREIGN]) {
    printf ("left %zu object%s that s3chunk did not write:",
            s.count[SCAN_FOREIGN], s.count[SCAN_FOREIGN] == 1 ? "" : "s");
    for (i = 0; i < s.nother; ++i)
      if (s.other[i].kind == SCAN_FOREIGN)
        printf (" %s", s.other[i].key);
    printf ("\n");
  }
  status = EXIT_OK;

 out:
  objstore_set_fence (tool_os, NULL);
  if (l)
    lock_release (l);
  objstore_close (lock_os);
  free (keys);
  free (keybuf);
  scan_free (&s);
  cs_volume_close (v);
  return status;
}

/* ----------------------------------------------------------------- rekey */

static struct cs_user_key new_key;
static bool new_key_set;

static int
rekey_set (const char *param, const char *value)
{
  if (strcmp (param, "new-key-format") == 0 ||
      strcmp (param, "--new-key-format") == 0) {
    enum crypt_key_format f;
    if (crypt_key_format_parse (param, value, &f) < 0)
      return -1;
    new_key.format = f;
    return 0;
  }
  if (crypt_key_read (param, value, &new_key) < 0)
    return -1;
  new_key_set = true;
  return 0;
}

static int
rekey_param (const char *key, const char *value)
{
  if (strcmp (key, "new-key") != 0 && strcmp (key, "new-key-format") != 0)
    return 1;
  return rekey_set (key, value);
}

int
cmd_rekey (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "new-key", required_argument, NULL, 'N' },
    { "new-key-format", required_argument, NULL, 'M' },
    TOOL_COMMON_LONGOPTS,
    { NULL, 0, NULL, 0 }
  };
  struct lock_params lp = {
    .lease = TOOL_LEASE, .version = PACKAGE_VERSION,
  };
  struct cs_volume *v = NULL;
  struct lock *l = NULL;
  struct lock_holder h;
  int64_t age;
  bool fresh;
  char id[33];
  int c, r, status = EXIT_FAIL;

  opterr = 0;
  while ((c = getopt_long (argc, argv, TOOL_COMMON_SHORTOPTS, longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'N':
      if (rekey_set ("--new-key", optarg) < 0)
        return EXIT_USAGE;
      break;
    case 'M':
      if (rekey_set ("--new-key-format", optarg) < 0)
        return EXIT_USAGE;
      break;
    TOOL_COMMON_CASES (rekey_usage, argv);
    }
  }
  if (tool_words (argc, argv, optind, rekey_param, NULL) < 0)
    return EXIT_USAGE;
  if (!tool_key_set || !new_key_set) {
    tool_error ("rekey needs the current key and the new one: "
                "'s3chunk rekey STORE... --key=+OLD --new-key=+NEW'");
    crypt_key_free (&new_key);
    return EXIT_USAGE;
  }
  if (tool_open_store (false, 4) < 0 || tool_open_volume (&v) < 0) {
    crypt_key_free (&new_key);
    return EXIT_FAIL;
  }
  tool_volume_id (v, id);
  if (v->crypt == NULL) {
    /* cs_volume_check_key refused the key already; kept for clarity. */
    tool_error ("volume %s is not encrypted: encryption is chosen when a "
                "volume is created", id);
    goto out;
  }
  r = lock_read (tool_os, &h, &age, &fresh);
  if (r == 0 && fresh) {
    refuse_locked (&h, age, "stop its nbdkit first (if it is gone, wait "
                   "until its lease has run out or run 's3chunk unlock')");
    goto out;
  }
  if (r < 0 && r != -ENOENT && r != -EIO)
    goto out;
  /* Under the lock, like grow: no nbdkit starts while the superblock is
   * rewritten (a start reading the old one would still work: the volume
   * key is the same).
   */
  if (lock_acquire (tool_os, &lp, &l) < 0)
    goto out;
  r = cs_volume_rekey (v, &new_key);
  if (lock_release (l) < 0)
    tool_error ("warning: the lock could not be removed: the next start "
                "waits until its lease (%d s) has run out", TOOL_LEASE);
  if (r < 0)
    goto out;
  printf ("rekeyed volume %s: the new key (%s) opens it from now on, the "
          "old one no longer does\n", id,
          v->crypt->kdf == CRYPT_KDF_SCRYPT ? "a passphrase, scrypt"
          : "a raw key");
  status = EXIT_OK;
 out:
  crypt_key_free (&new_key);
  cs_volume_close (v);
  return status;
}
