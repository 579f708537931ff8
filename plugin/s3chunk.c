/* s3chunk: an nbdkit plugin that serves a block device stored as
 * compressed chunk objects in an S3 bucket or a local directory.
 *
 * This is the only file that includes nbdkit-plugin.h.  It parses the
 * parameters, opens the store and the volume at start-up (so every bad
 * parameter or unreachable store is reported before the first client),
 * starts the cache's threads after nbdkit forks, and maps the NBD
 * callbacks onto the cache.  The man page is nbdkit-s3chunk-plugin.pod.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cache.h"
#include "chunkstore.h"
#include "cleanup.h"
#include "crypt.h"
#include "growreq.h"
#include "lock.h"
#include "log.h"
#include "objstore.h"
#include "params.h"
#include "store-params.h"

/* Defaults; the reasons are in the man page (PARAMETERS). */
#define DEFAULT_CACHE_SIZE (256 * 1024 * 1024)
#define DEFAULT_CONNECTIONS 16
#define DEFAULT_UPLOAD_DELAY 2.0
#define DEFAULT_READAHEAD 64
#define DEFAULT_STATUS_INTERVAL 300
#define MAX_CONNECTIONS 256

static struct {
  uint64_t size;
  uint32_t chunk_size;
  int level;                    /* -1: not given */
  bool compression_set, compression;
  uint64_t cache_size;
  unsigned connections;
  double upload_delay;
  unsigned readahead;
  double status_interval;       /* seconds; 0: only at exit */
  int encryption;               /* CS_ENCRYPT_* */
  bool key_set;                 /* key= given: the volume is encrypted */
  struct cs_user_key key;       /* freed once the volume is open */
} cfg = {
  .level = -1,
  .cache_size = DEFAULT_CACHE_SIZE,
  .connections = DEFAULT_CONNECTIONS,
  .upload_delay = DEFAULT_UPLOAD_DELAY,
  .readahead = DEFAULT_READAHEAD,
  .status_interval = DEFAULT_STATUS_INTERVAL,
};

/* dir= or bucket= and the S3 parameters. */
static struct store_params sp = STORE_PARAMS_INIT;

static struct objstore *store;
static bool started;            /* .after_fork ran: this process serves */
static struct cs_volume *volume;
static struct cache *cache;

/* ------------------------------------------------------------ volume lock
 * One mounter per volume (chunkstore/lock.h, "VOLUME LOCK" in the man
 * page).  Taken in .get_ready before the volume is opened, so that even
 * creating or growing the superblock happens under it; renewed by threads
 * started in .after_fork; a lost lock puts the cache into its sticky
 * failed state; released by .cleanup once the cache has stopped.
 *
 * The lock's fence is attached to the store the volume is written
 * through: no chunk or superblock request is sent, or left running, past
 * the lock's write deadline (chunkstore/fence.h).  The lock itself talks
 * to the store through a sibling handle with its own connection
 * (lock_store), so its renewals never queue behind data transfers.
 */

/* 60 s: renewals every 20 s cost three small PUTs a minute; a store that
 * stalls for up to 40 s does not stop the volume; a crashed holder blocks
 * a restart for at most a minute.
 */
#define DEFAULT_LEASE 60
#define MIN_LEASE 3
#define MAX_LEASE 3600

static struct {
  bool none;                    /* lock=none */
  unsigned lease;
  bool force;                   /* force-unlock=true */
  bool test_ignore_conditions;  /* s3chunk-test-ignore-conditions=true */
} lockcfg = { .lease = DEFAULT_LEASE };

static struct lock *vlock;
static struct objstore *lock_store;     /* == store if no sibling */
static bool exit_hooks;         /* release_at_exit registered */
static bool forked;             /* we are the parent of a fork */

static void
forked_parent (void)
{
  forked = true;
}

static void release_at_exit (void);
static bool read_only;          /* nbdkit -r: no lock, no writes */

static bool
is_lock_key (const char *key)
{
  return strcmp (key, "lock") == 0 || strcmp (key, "lease") == 0 ||
    strcmp (key, "force-unlock") == 0 ||
    strcmp (key, "s3chunk-test-ignore-conditions") == 0;
}

/* 0, or -1 on a bad value (reported). */
static int
lock_config (const char *key, const char *value)
{
  uint64_t u;

  if (strcmp (key, "lock") == 0) {
    if (strcmp (value, "object") == 0)
      lockcfg.none = false;
    else if (strcmp (value, "none") == 0)
      lockcfg.none = true;
    else {
      nbdkit_error ("%s=%s: invalid value: expected object or none",
                    key, value);
      return -1;
    }
  }
  else if (strcmp (key, "lease") == 0) {
    if (params_parse_uint (value, MIN_LEASE, MAX_LEASE, &u) < 0) {
      nbdkit_error ("%s=%s: invalid value: expected whole seconds from %d "
                    "to %d, e.g. lease=60", key, value, MIN_LEASE, MAX_LEASE);
      return -1;
    }
    lockcfg.lease = u;
  }
  else if (strcmp (key, "force-unlock") == 0) {
    if (params_parse_bool (value, &lockcfg.force) < 0) {
      nbdkit_error ("%s=%s: invalid value: expected true or false",
                    key, value);
      return -1;
    }
  }
  else if (strcmp (key, "s3chunk-test-ignore-conditions") == 0) {
    if (params_parse_bool (value, &lockcfg.test_ignore_conditions) < 0) {
      nbdkit_error ("%s=%s: invalid value: expected true or false",
                    key, value);
      return -1;
    }
  }
  return 0;
}

/* Was nbdkit started with -r / --readonly / --read-only?  The plugin API
 * has no global read-only flag before the first connection, so read our
 * own command line the way nbdkit's getopt_long does (options of nbdkit
 * 1.32 and later; they may come anywhere before "--").  Anything we cannot
 * parse for certain answers false: then we take the lock like a writer,
 * which is always safe.  A true answer also makes can_write say no, so a
 * wrong guess can never let an unlocked instance write.
 */
static bool
cmdline_readonly (void)
{
  static const struct { const char *name; bool arg; } longopts[] = {
    { "debug", 1 }, { "dump-config", 0 }, { "dump-plugin", 0 },
    { "exit-with-parent", 0 }, { "export", 1 }, { "export-name", 1 },
    { "exportname", 1 }, { "filter", 1 }, { "foreground", 0 },
    { "no-fork", 0 }, { "group", 1 }, { "help", 0 }, { "ip-addr", 1 },
    { "ipaddr", 1 }, { "log", 1 }, { "long-options", 0 },
    { "mask-handshake", 1 }, { "new-style", 0 }, { "newstyle", 0 },
    { "no-sr", 0 }, { "old-style", 0 }, { "oldstyle", 0 },
    { "pid-file", 1 }, { "pidfile", 1 }, { "port", 1 },
    { "read-only", 0 }, { "readonly", 0 }, { "run", 1 },
    { "selinux-label", 1 }, { "short-options", 0 }, { "single", 0 },
    { "stdin", 0 }, { "swap", 0 }, { "threads", 1 }, { "tls", 1 },
    { "tls-certificates", 1 }, { "tls-psk", 1 }, { "tls-verify-peer", 0 },
    { "unix", 1 }, { "user", 1 }, { "verbose", 0 }, { "version", 0 },
    { "vsock", 0 }, { "ipv4-only", 0 }, { "ipv6-only", 0 },
  };
  static const char shortopts[] = "46D:e:fg:i:nop:P:rst:u:U:vV";
#define IS_R(k) (strncmp (longopts[k].name, "read", 4) == 0)
  char buf[65536];
  size_t len = 0, i;
  bool ro = false;
  FILE *fp;

  fp = fopen ("/proc/self/cmdline", "re");
  if (fp == NULL)
    return false;
  len = fread (buf, 1, sizeof buf - 1, fp);
  fclose (fp);
  if (len == 0 || len == sizeof buf - 1)
    return false;
  buf[len] = '\0';

  /* Skip argv[0]. */
  i = strlen (buf) + 1;
  while (i < len) {
    const char *a = &buf[i];
    size_t next = i + strlen (a) + 1;

    if (strcmp (a, "--") == 0)
      break;
    if (a[0] != '-' || a[1] == '\0')
      ;                         /* plugin name, key=value, or "-" */
    else if (a[1] == '-') {
      const char *name = a + 2, *eq = strchr (name, '=');
      size_t n = eq ? (size_t) (eq - name) : strlen (name), k;
      int match = -1, nmatch = 0;
      bool ambiguous_r = false;

      for (k = 0; k < sizeof longopts / sizeof longopts[0]; ++k) {
        if (strncmp (longopts[k].name, name, n) != 0)
          continue;
        if (strlen (longopts[k].name) == n) {   /* exact */
          match = k;
          nmatch = 1;
          break;
        }
        if (nmatch > 0 && IS_R (match) != IS_R (k))
          ambiguous_r = true;
        match = k;
        nmatch++;
      }
      /* An abbreviation is fine only if every candidate means the same
       * (nbdkit would refuse an ambiguous one anyway).
       */
      if (match < 0 || ambiguous_r ||
          (nmatch > 1 && longopts[match].arg))
        return false;
      if (IS_R (match))
        ro = true;
      if (longopts[match].arg && !eq)
        next += strlen (&buf[next]) + 1;        /* skip its argument */
    }
    else {
      for (const char *c = a + 1; *c; ++c) {
        const char *o = strchr (shortopts, *c);

        if (*c == ':' || o == NULL)
          return false;
        if (*c == 'r')
          ro = true;
        if (o[1] == ':') {
          if (c[1] == '\0')
            next += strlen (&buf[next]) + 1;    /* skip its argument */
          break;
        }
      }
    }
    i = next;
  }
#undef IS_R
  return ro;
}

/* The fence callback: the lock may be lost, so stop writing now. */
static void
fence_cache (void *opaque, const char *why)
{
  struct cache *c = opaque;

  cache_fail (c, why);
}

/* After the store is opened: check it, and take the lock (or say who has
 * it when read-only).  On failure nothing is left behind.
 */
static int
volume_lock_take (void)
{
  struct lock_params lp = {
    .lease = lockcfg.lease,
    .force = lockcfg.force,
    .version = PACKAGE_VERSION,
  };
  int r;

  if (lockcfg.test_ignore_conditions) {
    struct objstore *w;

    nbdkit_debug ("s3chunk-test-ignore-conditions=true: put_if ignores "
                  "its conditions (test only)");
    if (objstore_fault_wrap (store, &w) < 0)
      return -1;
    objstore_fault_set (w, FAULT_OP_PUT_IF, FAULT_IGNORE_CONDITIONS, 0, 0,
                        UINT32_MAX);
    store = w;
  }

  read_only = cmdline_readonly ();
  if (read_only) {
    struct lock_holder h;
    char desc[512];
    int64_t age;
    bool fresh;

    /* A reader takes no lock: it would keep the writer out. */
    r = lock_read (store, &h, &age, &fresh);
    if (r == 0) {
      lock_describe (&h, age, desc, sizeof desc);
      if (fresh)
        nbdkit_error ("warning: read-only: the volume is being written by "
                      "%s: reads may mix data from before and after its "
                      "writes", desc);
      else
        nbdkit_debug ("read-only: stale lock of %s", desc);
    }
    else
      nbdkit_debug ("read-only: no lock taken (nbdkit -r)%s",
                    r == -ENOENT ? ", none held" : "");
    return 0;
  }

  if (lockcfg.none) {
    nbdkit_error ("warning: lock=none: NO VOLUME LOCK is taken: if another "
                  "instance writes this volume at the same time, the two "
                  "corrupt it");
    return 0;
  }

  if (lock_probe (store) < 0)
    return -1;
  nbdkit_debug ("store: conditional writes spelt as provider %s (%s)",
                objstore_dialect (store),
                objstore_caps (store) & OBJSTORE_CAP_CAS ?
                "compare-and-swap lock" : "create-only: epoch lock");
  r = objstore_sibling (store, &lock_store);
  if (r == -ENOTSUP)
    lock_store = store;
  else if (r < 0) {
    nbdkit_error ("lock: cannot open a connection of its own to the store: "
                  "%s", strerror (-r));
    return -1;
  }
  if (lock_acquire (lock_store, &lp, &vlock) < 0) {
    if (lock_store != store)
      objstore_close (lock_store);
    lock_store = NULL;
    return -1;
  }
  objstore_set_fence (store, lock_fence (vlock));
  if (!exit_hooks) {
    pthread_atfork (NULL, forked_parent, NULL);
    atexit (release_at_exit);
    exit_hooks = true;
  }
  return 0;
}

/* Give the lock back (if it is still ours). */
static void
volume_lock_drop (void)
{
  lock_release (vlock);
  vlock = NULL;
  if (lock_store && lock_store != store)
    objstore_close (lock_store);
  lock_store = NULL;
}

/* nbdkit can fail after .get_ready and before .after_fork (a socket that
 * is in use) and exit without calling .cleanup or .unload: give back the
 * lock then, so that the next start need not wait for the lease to run
 * out.  Not in the parent that forked the serving process (the child
 * holds the lock), and not once this process serves (.cleanup does it).
 */
static void
release_at_exit (void)
{
  if (vlock && !started && !forked)
    volume_lock_drop ();
}

/* Route chunkstore's messages through nbdkit. */
static void
log_to_nbdkit (enum cs_log_level level, const char *msg)
{
  switch (level) {
  case CS_LOG_ERROR: nbdkit_error ("%s", msg); break;
  case CS_LOG_WARN: nbdkit_error ("warning: %s", msg); break;
  default: nbdkit_debug ("%s", msg); break;
  }
}

static void
s3chunk_load (void)
{
  cs_log_set (log_to_nbdkit);
}

/* nbdkit's exit status when acknowledged writes were dropped at shutdown
 * (the plugin could not store them): the man page's EXIT STATUS.
 */
#define EXIT_DATA_LOST 3
static bool data_lost;          /* set by .cleanup */

static void
s3chunk_unload (void)
{
  store_params_free (&sp);
  crypt_key_free (&cfg.key);
  /* nbdkit 1.32 exits 0 whatever happened in .cleanup; a unit or script
   * that stops nbdkit must be able to tell that data was lost without
   * reading the log.  This is the last plugin code nbdkit runs (it only
   * frees memory after it), so exiting here loses nothing.
   */
  if (data_lost) {
    fflush (NULL);
    exit (EXIT_DATA_LOST);
  }
}

/* The store parameters; secrets follow nbdkit's password convention
 * (a value, +FILE, - for the terminal, -FD).  1 if key is not one of
 * them, 0 done, -1 error (reported).
 */
static int
store_config (const char *key, const char *value)
{
  char *secret = NULL;
  int r;

  if (strcmp (key, "secret-key") == 0 || strcmp (key, "session-token") == 0) {
    if (nbdkit_read_password (value, &secret) < 0)
      return -1;
    r = store_params_set (&sp, key, secret);
    memset (secret, 0, strlen (secret));
    free (secret);
  }
  else
    r = store_params_set (&sp, key, value);
  return r < 0 ? -1 : r;
}

/* Report a bad value for key once, naming what is accepted. */
#define BAD_PARAM(key, value, accepted)                                 \
  do {                                                                  \
    nbdkit_error ("%s=%s: invalid value: expected %s", key, value, accepted); \
    return -1;                                                          \
  } while (0)

static int
s3chunk_config (const char *key, const char *value)
{
  uint64_t u;
  int r;

  if ((r = store_config (key, value)) <= 0)
    return r;
  if (strcmp (key, "size") == 0) {
    if (params_parse_size (value, &u) < 0 || u == 0)
      BAD_PARAM (key, value, "a size in bytes with an optional suffix K, M, "
                 "G, T or P (powers of 1024), e.g. size=1T");
    if (u % CS_SIZE_ALIGN || u > CS_MAX_SIZE)
      BAD_PARAM (key, value, "a multiple of 512 bytes, at most 1 EiB");
    cfg.size = u;
  }
  else if (strcmp (key, "chunk-size") == 0) {
    if (params_parse_size (value, &u) < 0 ||
        u < CS_MIN_CHUNK_SIZE || u > CS_MAX_CHUNK_SIZE || (u & (u - 1)))
      BAD_PARAM (key, value, "a power of two from 64K to 64M, e.g. "
                 "chunk-size=1M");
    cfg.chunk_size = u;
  }
  else if (strcmp (key, "compression") == 0) {
    if (strcmp (value, "zstd") == 0)
      cfg.compression = true;
    else if (strcmp (value, "none") == 0)
      cfg.compression = false;
    else
      BAD_PARAM (key, value, "zstd or none");
    cfg.compression_set = true;
  }
  else if (strcmp (key, "level") == 0) {
    if (params_parse_uint (value, 1, CS_MAX_LEVEL, &u) < 0)
      BAD_PARAM (key, value, "a zstd level from 1 to 19");
    cfg.level = u;
  }
  else if (strcmp (key, "cache-size") == 0) {
    if (params_parse_size (value, &u) < 0 || u < 16 * 1024 * 1024)
      BAD_PARAM (key, value, "a size of at least 16M, e.g. cache-size=256M");
    cfg.cache_size = u;
  }
  else if (strcmp (key, "connections") == 0) {
    if (params_parse_uint (value, 1, MAX_CONNECTIONS, &u) < 0)
      BAD_PARAM (key, value, "a number from 1 to 256");
    cfg.connections = u;
  }
  else if (strcmp (key, "upload-delay") == 0) {
    if (params_parse_seconds (value, &cfg.upload_delay) < 0 ||
        cfg.upload_delay > 3600)
      BAD_PARAM (key, value, "seconds from 0 to 3600, e.g. upload-delay=2 "
                 "or upload-delay=500ms");
  }
  else if (is_lock_key (key)) {
    if (lock_config (key, value) < 0)
      return -1;
  }
  else if (strcmp (key, "status-interval") == 0) {
    if (params_parse_seconds (value, &cfg.status_interval) < 0 ||
        cfg.status_interval > 86400)
      BAD_PARAM (key, value, "seconds from 0 (only at exit) to 86400, "
                 "e.g. status-interval=5m");
  }
  else if (strcmp (key, "key") == 0) {
    /* +FILE, -FD or -: never a literal (nbdkit -v prints parameters). */
    if (crypt_key_read (key, value, &cfg.key) < 0)
      return -1;
    cfg.key_set = true;
  }
  else if (strcmp (key, "key-format") == 0) {
    enum crypt_key_format f;
    if (crypt_key_format_parse (key, value, &f) < 0)
      return -1;
    cfg.key.format = f;
  }
  else if (strcmp (key, "encryption") == 0) {
    if (strcmp (value, "aes-256-gcm") == 0)
      cfg.encryption = CS_ENCRYPT_AES256GCM;
    else if (strcmp (value, "none") == 0)
      cfg.encryption = CS_ENCRYPT_NONE;
    else
      BAD_PARAM (key, value, "aes-256-gcm or none");
  }
  else if (strcmp (key, "readahead") == 0) {
    if (params_parse_uint (value, 0, 1024, &u) < 0)
      BAD_PARAM (key, value, "a number of chunks from 0 to 1024");
    cfg.readahead = u;
  }
  else {
    nbdkit_error ("unknown parameter '%s': see nbdkit-s3chunk-plugin(1) or "
                  "'nbdkit s3chunk --help' for the parameters", key);
    return -1;
  }
  return 0;
}

static int
s3chunk_config_complete (void)
{
  if (store_params_check (&sp) < 0)
    return -1;
  if (cfg.compression_set && !cfg.compression && cfg.level >= 0) {
    nbdkit_error ("level=%d conflicts with compression=none: drop one",
                  cfg.level);
    return -1;
  }
  /* Taking over a lock nobody will take is a sign of a muddled command
   * line (lock=none was meant to be temporary, or force-unlock=true was
   * meant instead): refuse rather than guess which.
   */
  if (cfg.encryption == CS_ENCRYPT_AES256GCM && !cfg.key_set) {
    nbdkit_error ("encryption=aes-256-gcm needs a key: add key=+FILE "
                  "(a passphrase, or 32 raw bytes with key-format=raw), "
                  "key=- (stdin) or key=-FD");
    return -1;
  }
  if (cfg.encryption == CS_ENCRYPT_NONE && cfg.key_set) {
    nbdkit_error ("key= conflicts with encryption=none: drop one");
    return -1;
  }
  if (cfg.key.format != CRYPT_FORMAT_UNSET && !cfg.key_set) {
    nbdkit_error ("key-format= without key=: add key=+FILE");
    return -1;
  }
  if (lockcfg.none && lockcfg.force) {
    nbdkit_error ("force-unlock=true conflicts with lock=none (which takes "
                  "no lock to force): drop one");
    return -1;
  }
  return 0;
}

#define s3chunk_config_help \
  STORE_PARAMS_HELP \
  "size=SIZE             Create the volume, or grow it (K/M/G/T suffixes).\n" \
  "chunk-size=SIZE       Chunk size at creation (power of 2, default 1M).\n" \
  "compression=zstd|none Compress chunks at creation (default zstd).\n" \
  "level=N               zstd level at creation (1-19, default 1).\n" \
  "cache-size=SIZE       Memory for cached chunks (default 256M).\n" \
  "connections=N         Parallel uploads (default 16).\n" \
  "upload-delay=SECS     Delay before uploading a partly written chunk (2).\n" \
  "readahead=N           Most chunks fetched ahead of a sequential reader\n" \
  "                      (64; the window adapts up to it, 0: off).\n" \
  "status-interval=SECS  Log a status line this often, and at exit (300).\n" \
  "encryption=aes-256-gcm|none  Encrypt chunks, at creation (with key=).\n" \
  "key=+FILE|-|-FD       Key of an encrypted volume (never a literal).\n" \
  "key-format=passphrase|raw  At creation: scrypt a passphrase (default)\n" \
  "                      or use a 32-byte (or 64 hex digit) key as is.\n" \
  "lock=object|none      Take the volume lock (default object).\n" \
  "lease=SECS            Lock lease, renewed every third of it (60).\n" \
  "force-unlock=true     Take over the lock even if its holder looks alive."

/* ---------------------------------------------------------- status line
 * What the volume is doing, for operators: one line on stderr (the
 * journal under systemd) every status-interval= seconds and at exit.  It
 * is not an error, so it does not go through nbdkit_error; with nbdkit
 * -v it also goes to the debug log.
 */
static pthread_t status_thread;
static bool status_running;
static pthread_mutex_t status_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t status_cond = PTHREAD_COND_INITIALIZER;
static bool status_stop;

static double
mib (uint64_t bytes)
{
  return bytes / 1048576.0;
}

static void
print_status (const char *when)
{
  struct cache_stats c;
  struct objstore_stats o;
  char line[2048], creds[1024];

  if (cache == NULL || store == NULL)
    return;
  cache_get_stats (cache, &c);
  objstore_get_stats (store, &o);
  snprintf (line, sizeof line,
            "status (%s): client: %" PRIu64 " reads %.1f MiB, %" PRIu64
            " writes %.1f MiB, %" PRIu64 " zero/trim, %" PRIu64 " flushes; "
            "cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
            " read ahead (%" PRIu64 " dropped), %.1f MiB dirty, "
            "%.1f MiB held, %.1f s writers waited, %" PRIu64
            " reads waited for a fetch (%.1f s), %" PRIu64
            " upload failures; store: %" PRIu64 " GET, %" PRIu64 " PUT, %"
            PRIu64 " conditional PUT, %" PRIu64 " DELETE (%" PRIu64
            " keys), %" PRIu64 " LIST, %.1f MiB up, %.1f MiB down, %" PRIu64
            " retries, %" PRIu64 " errors; compression %.2fx%s",
            when, c.reads, mib (c.bytes_read), c.writes,
            mib (c.bytes_written), c.zeroes, c.flushes, c.hits, c.misses,
            c.readahead, c.ra_cancelled,
            mib (c.dirty_bytes), mib (c.mem_bytes), c.pressure_wait,
            c.read_waits, c.read_wait, c.upload_failures, o.gets, o.puts,
            o.put_ifs, o.dels, o.del_keys, o.lists, mib (o.bytes_up),
            mib (o.bytes_down), o.retries, o.errors,
            o.bytes_up ? (double) c.bytes_plain_up / o.bytes_up : 0,
            cache_failed (cache) ? "; FAILED: writes are refused" : "");
  /* Which credentials sign (never the secret), and their expiry. */
  if (objstore_s3_credentials (store, creds, sizeof creds) == 0) {
    size_t n = strlen (line);
    snprintf (line + n, sizeof line - n, "; credentials: %s", creds);
  }
  fprintf (stderr, "nbdkit: s3chunk: %s\n", line);
  nbdkit_debug ("%s", line);
}

static void *
status_main (void *arg)
{
  struct timespec ts;

  pthread_mutex_lock (&status_lock);
  while (!status_stop) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t) cfg.status_interval;
    ts.tv_nsec += (long) ((cfg.status_interval -
                           (time_t) cfg.status_interval) * 1e9);
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    if (pthread_cond_timedwait (&status_cond, &status_lock, &ts) == ETIMEDOUT
        && !status_stop)
      print_status ("running");
  }
  pthread_mutex_unlock (&status_lock);
  return NULL;
}

static void
status_start (void)
{
  if (cfg.status_interval > 0 &&
      pthread_create (&status_thread, NULL, status_main, NULL) == 0)
    status_running = true;
}

static void
status_end (void)
{
  if (status_running) {
    pthread_mutex_lock (&status_lock);
    status_stop = true;
    pthread_cond_signal (&status_cond);
    pthread_mutex_unlock (&status_lock);
    pthread_join (status_thread, NULL);
    status_running = false;
  }
}

/* ------------------------------------------------------------ online grow
 * "s3chunk grow" on a served volume creates the object grow-request
 * (docs/FORMAT.md, "Online grow"); we look for it after every successful
 * lock renewal (the renewal thread's hook wakes a thread of ours, which
 * GETs the usually missing object on the data connections, every
 * lease/3, and applies it), so that neither the GET nor a slow
 * superblock write ever delays a renewal.
 *
 * Applying: refuse a smaller size or a bad geometry (logged, and answered
 * in grow-answer so the tool can print why); grow the volume
 * (cs_volume_grow: map first, then the superblock, fenced like every
 * write, then the volume's size); record the client sockets open now
 * (their connections keep the size their handshake gave); publish the new
 * size to .get_size; answer; delete the request.  Each step can be
 * repeated: after a crash or a failed answer or delete the request is
 * still there, and a request for the size the volume already has is
 * answered "grown" again.  A failed superblock write (whose outcome may
 * be unknown) leaves the request and retries at the next renewal, where
 * cs_volume_grow settles it by reading the superblock back.  The tool
 * creates the request only if absent, so there is at most one at a time.
 */
static pthread_t grow_thread;
static bool grow_running;
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t grow_cond = PTHREAD_COND_INITIALIZER;
static bool grow_stop;
static bool grow_look;          /* a renewal succeeded: look for a request */

/* What .get_size tells new connections: the volume's size once the whole
 * grow (including recording the old connections) is done.
 */
static uint64_t served_size;

static void record_client_sockets (void);

/* The lock's renewal thread, after a successful renewal: only wake the
 * grow thread, which reads the request itself.  A GET here would delay
 * the next renewal by as long as it took (a store that stops answering
 * holds a request for its whole retry budget), and a GET on the lock's
 * single connection would make the renewal wait for it too.
 */
static void
grow_renewed (void *opaque)
{
  pthread_mutex_lock (&grow_lock);
  grow_look = true;
  pthread_cond_signal (&grow_cond);
  pthread_mutex_unlock (&grow_lock);
}

/* Read grow-request: 1 with the request in *b (an empty b for an object
 * too large to be one: refused as malformed), 0 if there is none or it
 * could not be read (looked for again at the next renewal).
 */
static int
grow_read (struct cs_buf *b)
{
  int r = objstore_get (store, GROWREQ_KEY, GROWREQ_MAX_SIZE, b, NULL);

  if (r == -EFBIG) {
    b->len = 0;
    return 1;
  }
  if (r == 0)
    return 1;
  if (r != -ENOENT)
    nbdkit_debug ("grow: reading %s failed: %s: will look again at the "
                  "next renewal", GROWREQ_KEY, strerror (-r));
  return 0;
}

/* Write the answer, then delete the request.  Failures leave the request
 * for the next renewal (answered again).
 */
static void
grow_answer (const struct growans *a)
{
  char text[GROWREQ_MAX_SIZE];
  int n = growans_format (a, text, sizeof text), r;

  if (n < 0)
    return;
  r = objstore_put (store, GROWANS_KEY, text, n, NULL);
  if (r == 0)
    r = objstore_del (store, GROWREQ_KEY);
  if (r < 0)
    nbdkit_error ("grow: answering the request failed (%s): it is answered "
                  "again at the next lock renewal", strerror (-r));
}

static void
grow_apply (const struct cs_buf *text)
{
  struct growreq rq;
  struct growans a = { .refused = true };
  uint64_t cur = cs_volume_size (volume);
  char s1[32], s2[32];
  int r;

  a.size = cur;
  if (text->len == 0 || growreq_parse (text->data, text->len, &rq) < 0) {
    memset (a.id, '0', 32);
    snprintf (a.reason, sizeof a.reason, "%s is not a valid grow request",
              GROWREQ_KEY);
    nbdkit_error ("grow: %s: refused and deleted", a.reason);
    grow_answer (&a);
    return;
  }
  memcpy (a.id, rq.id, sizeof a.id);
  params_format_size (rq.size, s1, sizeof s1);
  params_format_size (cur, s2, sizeof s2);
  if (rq.size < cur)
    snprintf (a.reason, sizeof a.reason, "%s (%" PRIu64 " bytes) is smaller "
              "than the volume (%s, %" PRIu64 " bytes): a volume never "
              "shrinks", s1, rq.size, s2, cur);
  else if (rq.size % CS_SIZE_ALIGN || rq.size > CS_MAX_SIZE)
    snprintf (a.reason, sizeof a.reason, "%" PRIu64 " bytes is not a "
              "multiple of %d or more than 1 EiB", rq.size, CS_SIZE_ALIGN);
  else if ((rq.size + volume->chunk_size - 1) / volume->chunk_size >
           CS_MAX_CHUNKS)
    snprintf (a.reason, sizeof a.reason, "%s makes more than %" PRIu64
              " chunks of %" PRIu32 " bytes", s1, CS_MAX_CHUNKS,
              volume->chunk_size);
  else if (cache_failed (cache))
    snprintf (a.reason, sizeof a.reason, "the plugin has stopped writing "
              "(see its log): restart it");
  else {
    a.refused = false;
    if (rq.size > cur) {
      nbdkit_debug ("grow: request %s from %s: %s to %s", rq.id, rq.host,
                    s2, s1);
      r = cs_volume_grow (volume, rq.size);
      if (r == -EINVAL || r == -EBUSY) {
        a.refused = true;
        snprintf (a.reason, sizeof a.reason, "growing the superblock was "
                  "refused: %s (see the plugin's log)", strerror (-r));
      }
      else if (r < 0) {
        nbdkit_error ("grow: to %s: writing the superblock failed (%s): "
                      "trying again at the next lock renewal", s1,
                      strerror (-r));
        return;
      }
    }
    if (!a.refused) {
      /* Connections open now were told the old size; the kernel's NBD
       * client replaces them when asked (s3chunk_open).  Recorded before
       * new handshakes can see the new size, so none is missed.
       */
      if (rq.size > __atomic_load_n (&served_size, __ATOMIC_ACQUIRE))
        record_client_sockets ();
      __atomic_store_n (&served_size, cs_volume_size (volume),
                        __ATOMIC_RELEASE);
      a.size = cs_volume_size (volume);
      /* Not an error: said like the status line, on stderr. */
      fprintf (stderr, "nbdkit: s3chunk: grow: the volume is %s now "
               "(request of %s); connections opened before keep the old "
               "size\n", s1, rq.host);
      nbdkit_debug ("grow: the volume is %s now", s1);
    }
  }
  if (a.refused)
    nbdkit_error ("grow: request %s from %s refused: %s", rq.id, rq.host,
                  a.reason);
  grow_answer (&a);
}

static void *
grow_main (void *arg)
{
  struct cs_buf t = CS_BUF_INIT;

  pthread_mutex_lock (&grow_lock);
  while (!grow_stop) {
    if (!grow_look) {
      pthread_cond_wait (&grow_cond, &grow_lock);
      continue;
    }
    grow_look = false;
    pthread_mutex_unlock (&grow_lock);
    t.len = 0;
    if (grow_read (&t))
      grow_apply (&t);
    pthread_mutex_lock (&grow_lock);
  }
  pthread_mutex_unlock (&grow_lock);
  cs_buf_free (&t);
  return NULL;
}

/* Before the lock's threads start. */
static int
grow_start (void)
{
  int r;

  served_size = volume->size;
  if (vlock == NULL)
    return 0;                   /* lock=none or read-only: no online grow */
  r = pthread_create (&grow_thread, NULL, grow_main, NULL);
  if (r != 0) {
    nbdkit_error ("grow: cannot start a thread: %s", strerror (r));
    return -1;
  }
  grow_running = true;
  lock_set_renewed_hook (vlock, grow_renewed, NULL);
  return 0;
}

/* At shutdown, before the last flush: a grow under way finishes, a
 * request that arrives from now on stays in the store (and is applied by
 * the next start, or withdrawn by the tool when it gives up).
 */
static void
grow_end (void)
{
  if (grow_running) {
    pthread_mutex_lock (&grow_lock);
    grow_stop = true;
    pthread_cond_signal (&grow_cond);
    pthread_mutex_unlock (&grow_lock);
    pthread_join (grow_thread, NULL);
    grow_running = false;
  }
}

/* ----------------------------------------------- replacing old connections
 * After an online grow, connections opened before it keep the old size:
 * nbdkit checks every request against the size it cached at the
 * handshake, so they cannot reach the new space, and nbdkit 1.32 has no
 * way for a plugin to close a connection.  The kernel's NBD driver takes
 * a new socket only in place of a dead one (NBD_CMD_RECONFIGURE), so
 * s3chunk-nbd-resize opens fresh connections with the export name
 * S3CHUNK_REPLACE_EXPORT, and the first .open of such a connection kills
 * the connections recorded at grow time.
 *
 * Recording: the client sockets of this process are its sockets that do
 * not listen (SO_ACCEPTCONN 0) and whose local address is a listening
 * socket's (accepted from it); our own connections to the store have
 * ephemeral local addresses.  fd and inode are kept, so a closed and
 * reused fd number is never touched.
 *
 * Killing: shutdown (SHUT_RD), not close (the fd is nbdkit's) and not
 * SHUT_RDWR: nbdkit's reading thread sees end of input and ends the
 * connection after the replies of the requests it is serving; for a Unix
 * socket the peer's next send fails at once (EPIPE), and the kernel's
 * driver marks that socket dead and sends the request again on the
 * replacement.  What tests/nbd-replace-check.c measured under a client
 * that writes without pause, with nbdkit 1.32: over a Unix socket every
 * write sent was answered in most runs, but nbdkit answers ESHUTDOWN
 * (EIO for the kernel) to a request one of its threads read in the
 * instant another read the end of input (2 of 200, once); over TCP
 * requests not yet read are never answered (the driver retries them
 * after its request timeout) and nbdkit 1.32 can abort in
 * raw_send_socket when the client closes while replies are still being
 * sent.  SHUT_RDWR was no better: requests answered by nobody on Unix
 * sockets too, and the same abort over TCP.  So the client should make
 * the old connections idle first: s3chunk-nbd-resize freezes the
 * device's filesystems while it replaces them.
 */
#define S3CHUNK_REPLACE_EXPORT "s3chunk:replace-stale"

struct stale_sock {
  int fd;
  dev_t dev;
  ino_t ino;
};
static pthread_mutex_t stale_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t replaced_closing;         /* closes not to warn about */
static struct stale_sock *stale;
static size_t nstale;

static bool
same_listener (const struct sockaddr_storage *l, socklen_t llen,
               const struct sockaddr_storage *c, socklen_t clen)
{
  if (l->ss_family != c->ss_family)
    return false;
  switch (l->ss_family) {
  case AF_UNIX:
    return llen == clen && memcmp (l, c, llen) == 0 &&
      llen > offsetof (struct sockaddr_un, sun_path);
  case AF_INET: {
    const struct sockaddr_in *a = (const void *) l, *b = (const void *) c;
    return a->sin_port == b->sin_port &&
      (a->sin_addr.s_addr == htonl (INADDR_ANY) ||
       a->sin_addr.s_addr == b->sin_addr.s_addr);
  }
  case AF_INET6: {
    const struct sockaddr_in6 *a = (const void *) l, *b = (const void *) c;
    return a->sin6_port == b->sin6_port &&
      (IN6_IS_ADDR_UNSPECIFIED (&a->sin6_addr) ||
       memcmp (&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0);
  }
  default:
    return false;
  }
}

static void
record_client_sockets (void)
{
  struct sock { int fd; bool listening; struct stat st;
                struct sockaddr_storage addr; socklen_t len; };
  CLEANUP_FREE struct sock *s = NULL;
  size_t n = 0, cap = 0, i, j, found = 0;
  struct stale_sock *rec;
  struct dirent *d;
  DIR *dir = opendir ("/proc/self/fd");

  if (dir == NULL) {
    nbdkit_error ("grow: cannot list /proc/self/fd (%m): old connections "
                  "cannot be replaced; reconnect the clients");
    return;
  }
  while ((d = readdir (dir)) != NULL) {
    struct sock x = { .len = sizeof x.addr };
    int on = 0;
    socklen_t olen = sizeof on;
    char *end;

    x.fd = strtol (d->d_name, &end, 10);
    if (*end || end == d->d_name || x.fd == dirfd (dir))
      continue;
    if (fstat (x.fd, &x.st) < 0 || !S_ISSOCK (x.st.st_mode) ||
        getsockopt (x.fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &olen) < 0 ||
        getsockname (x.fd, (struct sockaddr *) &x.addr, &x.len) < 0)
      continue;
    x.listening = on;
    if (n == cap) {
      struct sock *t = realloc (s, (cap = cap ? 2 * cap : 16) * sizeof *s);
      if (t == NULL)
        break;
      s = t;
    }
    s[n++] = x;
  }
  closedir (dir);
  rec = calloc (n ? n : 1, sizeof *rec);
  if (rec == NULL)
    return;
  for (i = 0; i < n; ++i) {
    if (s[i].listening)
      continue;
    for (j = 0; j < n; ++j)
      if (s[j].listening &&
          same_listener (&s[j].addr, s[j].len, &s[i].addr, s[i].len)) {
        rec[found++] = (struct stale_sock) { s[i].fd, s[i].st.st_dev,
                                             s[i].st.st_ino };
        break;
      }
  }
  pthread_mutex_lock (&stale_lock);
  free (stale);
  stale = rec;
  nstale = found;
  pthread_mutex_unlock (&stale_lock);
  nbdkit_debug ("grow: %zu client connection(s) have the old size: a "
                "connection to export \"%s\" ends them", found,
                S3CHUNK_REPLACE_EXPORT);
}

/* Shut the recorded connections down (once). */
static void
replace_stale (void)
{
  size_t i, done = 0;

  pthread_mutex_lock (&stale_lock);
  for (i = 0; i < nstale; ++i) {
    struct stat st;

    if (fstat (stale[i].fd, &st) == 0 && S_ISSOCK (st.st_mode) &&
        st.st_dev == stale[i].dev && st.st_ino == stale[i].ino &&
        shutdown (stale[i].fd, SHUT_RD) == 0)
      done++;
  }
  nbdkit_debug ("grow: export \"%s\": %zu of %zu connection(s) with the old "
                "size shut down", S3CHUNK_REPLACE_EXPORT, done, nstale);
  /* Their unflushed writes are not a wrong stop order: the client goes
   * on on the new connections (one cache, multi-conn).
   */
  __atomic_add_fetch (&replaced_closing, done, __ATOMIC_SEQ_CST);
  nstale = 0;
  pthread_mutex_unlock (&stale_lock);
}

/* Open everything before nbdkit accepts a connection or forks, so errors
 * reach the user's terminal and nbdkit exits with them.
 */
static int
s3chunk_get_ready (void)
{
  struct cs_volume_params vp = {
    .size = cfg.size,
    .chunk_size = cfg.chunk_size,
    .level = cfg.compression_set && !cfg.compression ? 0 : cfg.level,
    .compress = !cfg.compression_set ? CS_COMPRESS_UNSET
      : cfg.compression ? CS_COMPRESS_ZSTD : CS_COMPRESS_NONE,
  };
  struct cache_params cp = {
    .cache_size = cfg.cache_size,
    .workers = cfg.connections,
    .upload_delay = cfg.upload_delay,
    .readahead = cfg.readahead,
  };
  int r;

  if (store_params_open (&sp, cfg.connections, cfg.size > 0, &store) < 0)
    return -1;
  /* Lock before opening the volume: creating or growing it writes. */
  if (volume_lock_take () < 0)
    return -1;
  vp.readonly = read_only;
  vp.encryption = cfg.encryption;
  vp.key = cfg.key_set ? &cfg.key : NULL;
  r = cs_volume_open (store, &vp, &volume);
  /* The volume holds the keys it derived: the user's key is not needed. */
  crypt_key_free (&cfg.key);
  if (r < 0)
    goto fail;
  r = cs_map_load (volume);
  if (r < 0)
    goto fail;
  r = cache_open (volume, &cp, &cache);
  if (r < 0) {
    nbdkit_error ("cache: %s", strerror (-r));
    goto fail;
  }
  nbdkit_debug ("volume: size %" PRIu64 ", chunk size %" PRIu32
                ", %" PRIu64 " chunk(s) stored, level %d%s",
                volume->size, volume->chunk_size, cs_map_count (volume),
                volume->level, volume->crypt ? ", encrypted (aes-256-gcm)"
                : "");
  return 0;

 fail:
  /* nbdkit exits without .cleanup: give the lock back now. */
  volume_lock_drop ();
  return -1;
}

/* Threads do not survive fork: start them in the process that serves. */
static int
s3chunk_after_fork (void)
{
  /* Memory locks are not inherited across fork: lock the keys again. */
  crypt_relock ();
  if (grow_start () < 0) {
    volume_lock_drop ();
    return -1;
  }
  if (vlock && lock_start (vlock, fence_cache, cache) < 0) {
    volume_lock_drop ();
    return -1;
  }
  if (cache_start (cache) < 0) {
    volume_lock_drop ();
    return -1;
  }
  started = true;
  status_start ();
  return 0;
}

/* Connections whose .close has not run.  nbdkit 1.32 does not call .close
 * for the connections still open when it quits (SIGTERM): .cleanup reads
 * this to tell that a client was cut off.
 */
static unsigned open_conns;

static void warn_unflushed (const char *who);

/* Called on SIGTERM/SIGINT and at exit, after the last connection closed:
 * everything written goes to the store before the process ends.
 */
static void
s3chunk_cleanup (void)
{
  status_end ();
  grow_end ();
  if (__atomic_load_n (&open_conns, __ATOMIC_SEQ_CST) > 0)
    warn_unflushed ("nbdkit was stopped while a client was connected");
  if (cache) {
    /* Everything, including the workers' last uploads, ends while the
     * lock is still renewed; a lost lock stops it (the fence).  Only then
     * is the lock given back: stopping the renewals first would leave
     * uploads running against a lease nobody renews.
     */
    if (vlock) {
      int tries;

      for (tries = 0; tries < 3; ++tries)
        if (cache_flush (cache) == 0 || cache_failed (cache))
          break;
      if (tries == 3)
        cache_fail (cache, "shutdown: the last flush failed three times");
    }
    print_status ("exit");
    if (cache_close (cache) < 0) {
      nbdkit_error ("shutdown: some data could not be stored (see above): "
                    "exiting with status %d", EXIT_DATA_LOST);
      data_lost = true;
    }
    cache = NULL;
  }
  /* The workers are joined: release the lock (only if it is still ours). */
  volume_lock_drop ();
  cs_volume_close (volume);
  volume = NULL;
  objstore_close (store);
  store = NULL;
}

/* Every connection shares the one cache; there is no per-connection state. */
static void *
s3chunk_open (int readonly)
{
  const char *name = nbdkit_export_name ();

  __atomic_add_fetch (&open_conns, 1, __ATOMIC_SEQ_CST);
  /* The export name is ignored, except the one that replaces connections
   * with the size from before an online grow (see replace_stale).
   */
  if (name && strcmp (name, S3CHUNK_REPLACE_EXPORT) == 0)
    replace_stale ();
  return NBDKIT_HANDLE_NOT_NEEDED;
}

/* Writes acknowledged since the last flush began, for one warning: a
 * client that goes away with writes it never flushed was most likely cut
 * off by stopping nbdkit before it detached (SIGTERM while /dev/nbd0 is
 * mounted).  Those writes are still stored at shutdown; what the client
 * had not sent yet is lost on its side, and the operator should know
 * the stop order was wrong.  Sequence numbers, not a flag per connection:
 * a flush on any connection covers every connection's writes.
 */
static uint64_t write_seq, flushed_seq;
static bool closed_unflushed;

static void
note_write (void)
{
  __atomic_add_fetch (&write_seq, 1, __ATOMIC_SEQ_CST);
}

/* The warning, once: WHO is "a client disconnected" or "nbdkit was
 * stopped while a client was connected".
 */
static void
warn_unflushed (const char *who)
{
  uint64_t w = __atomic_load_n (&write_seq, __ATOMIC_SEQ_CST);
  size_t rc = __atomic_load_n (&replaced_closing, __ATOMIC_SEQ_CST);

  /* A connection replace_stale ended (as far as we can tell: the next
   * closes after it): not worth the warning below.
   */
  while (rc > 0 &&
         !__atomic_compare_exchange_n (&replaced_closing, &rc, rc - 1, false,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    ;
  if (rc > 0)
    return;
  if (w > __atomic_load_n (&flushed_seq, __ATOMIC_SEQ_CST) &&
      !__atomic_exchange_n (&closed_unflushed, true, __ATOMIC_SEQ_CST))
    nbdkit_error ("warning: %s with writes it had not flushed (was nbdkit "
                  "stopped before the client detached?): they are stored at "
                  "shutdown, but a filesystem still mounted on that client "
                  "loses what it had not sent; stop in this order: umount, "
                  "nbd-client -d, then nbdkit", who);
}

static void
s3chunk_close (void *handle)
{
  __atomic_sub_fetch (&open_conns, 1, __ATOMIC_SEQ_CST);
  warn_unflushed ("a client disconnected");
}

static int64_t
s3chunk_get_size (void *handle)
{
  /* The size now; nbdkit keeps what a connection's handshake got. */
  return __atomic_load_n (&served_size, __ATOMIC_ACQUIRE);
}

/* Any alignment works (the cache does read-modify-write), but whole chunks
 * avoid it: advertise the chunk size as preferred.
 */
static int
s3chunk_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                    uint32_t *maximum)
{
  *minimum = 1;
  *preferred = volume->chunk_size < 32 * 1024 * 1024
    ? volume->chunk_size : 32 * 1024 * 1024;
  *maximum = 0xffffffff;
  return 0;
}

/* Read-only when nbdkit -r was given: we took no lock, so we must not
 * write even if our reading of the command line was wrong.
 */
static int
s3chunk_can_write (void *handle)
{
  return !read_only;
}

/* Flush is a real barrier over every connection's writes (one cache). */
static int
s3chunk_can_flush (void *handle)
{
  return 1;
}

/* FUA is native: a FUA write waits only for the chunks it touched. */
static int
s3chunk_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

/* Safe: all connections share one cache, so a flush on any connection
 * covers writes made on all of them, which is what multi-conn promises.
 */
static int
s3chunk_can_multi_conn (void *handle)
{
  return 1;
}

/* Trim of whole chunks deletes their objects: it really frees space. */
static int
s3chunk_can_trim (void *handle)
{
  return 1;
}

/* Zeroing is never slower than writing zeroes: whole chunks become "no
 * object", parts of cached or never-stored chunks are a memset in the
 * cache.  The one slow case, part of a stored chunk that is not cached
 * (it must be fetched first), refuses a fast zero with ENOTSUP
 * (cache_zero), as the NBD protocol asks.
 */
static int
s3chunk_can_zero (void *handle)
{
  return 1;
}

static int
s3chunk_can_fast_zero (void *handle)
{
  return 1;
}

/* Block status answers from the allocation map, without requests. */
static int
s3chunk_can_extents (void *handle)
{
  return 1;
}

/* Chunks are cached in one process; connections see each other's writes. */
static int
s3chunk_can_cache (void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

static int
s3chunk_is_rotational (void *handle)
{
  return 0;
}

/* The cache has logged the cause; tell the client. */
static int
fail (int r)
{
  /* NBD has few error codes and nbdkit sends EINVAL for any it does not
   * know (a refused connection, a timeout): to the client a store that
   * fails is an I/O error.
   */
  nbdkit_set_error (r == -ENOMEM ? ENOMEM : EIO);
  return -1;
}

static int
s3chunk_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  int r = cache_pread (cache, buf, count, offset);
  return r < 0 ? fail (r) : 0;
}

static int
s3chunk_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  int r = cache_pwrite (cache, buf, count, offset, flags & NBDKIT_FLAG_FUA);
  if (r < 0)
    return fail (r);
  if (!(flags & NBDKIT_FLAG_FUA))
    note_write ();
  return 0;
}

static int
s3chunk_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int r = cache_zero (cache, count, offset, flags & NBDKIT_FLAG_FUA,
                      flags & NBDKIT_FLAG_FAST_ZERO);

  if (r == -EOPNOTSUPP) {
    /* Fast zero refused: the client writes zeroes itself, or not. */
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  if (r < 0)
    return fail (r);
  if (!(flags & NBDKIT_FLAG_FUA))
    note_write ();
  return 0;
}

/* Trimmed space reads as zeroes afterwards, which NBD allows. */
static int
s3chunk_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return s3chunk_zero (handle, count, offset, flags);
}

static int
s3chunk_flush (void *handle, uint32_t flags)
{
  uint64_t w = __atomic_load_n (&write_seq, __ATOMIC_SEQ_CST), f;
  int r = cache_flush (cache);

  if (r < 0)
    return fail (r);
  /* Every write acknowledged before the flush began is stored now. */
  f = __atomic_load_n (&flushed_seq, __ATOMIC_SEQ_CST);
  while (f < w &&
         !__atomic_compare_exchange_n (&flushed_seq, &f, w, false,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    ;
  return 0;
}

static int
s3chunk_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  uint64_t end = offset + count;

  while (offset < end) {
    uint64_t len;
    bool alloc = cache_allocated (cache, offset, end - offset, &len);

    if (nbdkit_add_extent (extents, offset, len,
                           alloc ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO)
        < 0)
      return -1;
    offset += len;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

/* Requests run in parallel: the cache has one lock for its state, never
 * held across store I/O, and store variants are thread-safe.
 */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name = "s3chunk",
  .version = PACKAGE_VERSION,
  .longname = "s3chunk: a block device in S3 chunk objects",
  .description = "Serve a disk stored as compressed chunk objects in an "
    "S3 bucket or a local directory.",
  .load = s3chunk_load,
  .unload = s3chunk_unload,
  .config = s3chunk_config,
  .config_complete = s3chunk_config_complete,
  .config_help = s3chunk_config_help,
  .magic_config_key = NULL,
  .get_ready = s3chunk_get_ready,
  .after_fork = s3chunk_after_fork,
  .cleanup = s3chunk_cleanup,
  .open = s3chunk_open,
  .close = s3chunk_close,
  .get_size = s3chunk_get_size,
  .block_size = s3chunk_block_size,
  .can_write = s3chunk_can_write,
  .can_flush = s3chunk_can_flush,
  .can_fua = s3chunk_can_fua,
  .can_multi_conn = s3chunk_can_multi_conn,
  .can_trim = s3chunk_can_trim,
  .can_zero = s3chunk_can_zero,
  .can_fast_zero = s3chunk_can_fast_zero,
  .can_extents = s3chunk_can_extents,
  .can_cache = s3chunk_can_cache,
  .is_rotational = s3chunk_is_rotational,
  .pread = s3chunk_pread,
  .pwrite = s3chunk_pwrite,
  .zero = s3chunk_zero,
  .trim = s3chunk_trim,
  .flush = s3chunk_flush,
  .extents = s3chunk_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
