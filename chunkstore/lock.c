/* s3chunk: the one-mounter lock (see lock.h for the protocol).
 *
 * Time.  Two clocks are used and never mixed:
 *  - whether someone else's lock is stale is judged by the STORE's clock
 *    alone: the object's last-modified time against the store's time in
 *    the same response, so a machine with a wrong clock can neither steal a
 *    live lock nor keep a dead one;
 *  - whether we may still hold ours is judged by the local CLOCK_BOOTTIME
 *    from the moment the last successful renewal was SENT (the store stamps
 *    it later than that, so our view of the lease is never longer than
 *    theirs).  CLOCK_BOOTTIME, unlike CLOCK_MONOTONIC, keeps counting while
 *    the machine is suspended: after a suspend longer than the lease we know
 *    at once that the lease ran out.  The write deadline (fence.h) is one
 *    renewal period before the lease could run out; past it no request that
 *    can change an object is sent or left running, and the watchdog fences.
 *    That period, plus the taker's margin, is what is left for clock rate
 *    differences and for bytes already on the wire.
 *
 * The fence (struct cs_fence) is the lock's and is moved only here: each
 * successful write sets its deadline to sent + lease - lease/3, fencing
 * closes it for good.  The plugin attaches it to the data store; the lock's
 * own requests go through a store without it (its renewals are conditional
 * on our own etag, so a late one cannot overwrite a taker's object).
 *
 * Release.  A clean stop does not delete the object (a delete is not
 * conditional: between reading the object and deleting it, a taker could
 * take the lock over, and we would delete ITS lock, letting a third
 * instance in while it still writes).  It replaces our object, if it is
 * still exactly ours (If-Match), by a "released" one that any starter may
 * take at once, by the same conditional replace as a stale takeover.
 *
 * Threads.  lock_start runs two threads: the renewer does the store I/O,
 * the watchdog only watches the deadline, so a renewal stuck in a slow
 * request cannot delay fencing.  The mutex guards the fields below it and
 * is never held across I/O.
 *
 * Every write of ours carries a new sequence number, so its content (and
 * so its etag) is unique: after an outcome we do not know (-ETIMEDOUT) or
 * a refused condition (-EEXIST), reading the object back says exactly
 * whether our write landed, an older one of ours is there, or someone
 * else's.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "fence.h"
#include "lock.h"
#include "log.h"
#include "params.h"

/* A lock object is a few hundred bytes; refuse anything much larger. */
#define LOCK_MAX_SIZE 4096

/* How many times acquire goes round when the object keeps appearing and
 * disappearing under it (holders starting and stopping).
 */
#define ACQUIRE_ATTEMPTS 5

struct lock {
  struct objstore *os;          /* not owned */
  double period;                /* seconds between renewals: lease / 3 */
  double fence_after;           /* lease - period */
  pthread_t renewer, watchdog;
  bool renewer_started, watchdog_started;
  lock_fence_fn fence;
  void *opaque;
  lock_renewed_fn renewed;      /* lock_set_renewed_hook */
  void *renewed_opaque;
  struct cs_fence wfence;       /* the write deadline, see fence.h */

  pthread_mutex_t mu;
  pthread_cond_t cond;          /* on CLOCK_MONOTONIC, see wait_until */
  struct lock_holder me;        /* what we last tried to write */
  char etag[128];               /* of our object in the store */
  int64_t ok_sent;              /* CLOCK_BOOTTIME ns: when the last
                                   successful write was sent */
  bool stopping, fenced;
  char why[512];

  /* The epoch protocol (a store without compare-and-swap; see "The
   * epoch lock" below): our epoch, the last heartbeat we created.
   */
  bool epochs;
  uint64_t epoch, hb;
};

/* The epoch protocol, below (after the probe's helpers it needs). */
static int epoch_read (struct objstore *os, struct lock_holder *h,
                       int64_t *age, bool *fresh);
static int epoch_renew (struct lock *l);

/* ---------------------------------------------------------------- clocks */

#define NS 1000000000LL

/* Condition variables cannot wait on CLOCK_BOOTTIME, so waits are taken
 * on CLOCK_MONOTONIC in steps of at most this much and the deadline is
 * checked on CLOCK_BOOTTIME after each: a suspend delays a wake-up by at
 * most one step.  (The requests check the fence themselves; this only
 * bounds how late the watchdog notices.)
 */
#define WAIT_STEP_NS (NS / 5)

/* Wait on l->cond (l->mu held) until CLOCK_BOOTTIME reaches `until`, or a
 * signal, or one step.
 */
static void
wait_until (struct lock *l, int64_t until)
{
  int64_t left = until - cs_boottime_ns ();
  struct timespec ts;

  if (left <= 0)
    return;
  if (left > WAIT_STEP_NS)
    left = WAIT_STEP_NS;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  left += ts.tv_nsec;
  ts.tv_sec += left / NS;
  ts.tv_nsec = left % NS;
  pthread_cond_timedwait (&l->cond, &l->mu, &ts);
}

static int64_t
secs_ns (double secs)
{
  return (int64_t) (secs * NS);
}

/* ------------------------------------------------------------- the format */

/* Host names and versions are printed in refusals: keep them to a safe
 * alphabet so that an untrusted object cannot put control characters in
 * our log.
 */
static bool
safe_char (char c)
{
  return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') ||
    ('0' <= c && c <= '9') || c == '.' || c == '-' || c == '_' ||
    c == '+' || c == '~';
}

static bool
safe_string (const char *s, size_t max)
{
  size_t n = strlen (s);

  if (n == 0 || n >= max)
    return false;
  for (; *s; ++s)
    if (!safe_char (*s))
      return false;
  return true;
}

int
lock_format (const struct lock_holder *h, char *buf, size_t len)
{
  int n = snprintf (buf, len,
                    "s3chunk lock\n"
                    "format-version=%d\n"
                    "owner=%s\n"
                    "host=%s\n"
                    "pid=%" PRId64 "\n"
                    "taken-at=%" PRId64 "\n"
                    "renewed-at=%" PRId64 "\n"
                    "lease=%u\n"
                    "sequence=%" PRIu64 "\n"
                    "version=%s\n"
                    "%s",
                    LOCK_FORMAT_VERSION, h->owner, h->host, h->pid,
                    h->taken_at, h->renewed_at, h->lease, h->sequence,
                    h->version, h->released ? "released=1\n" : "");

  if (n < 0 || (size_t) n >= len)
    return -ENAMETOOLONG;
  return n;
}

#define BADLOCK(...) do { cs_error (__VA_ARGS__); return -EIO; } while (0)

int
lock_parse (const void *data, size_t len, struct lock_holder *h)
{
  CLEANUP_FREE char *text = NULL;
  char *line, *save = NULL;
  unsigned seen = 0;
  enum { F_OWNER = 1, F_HOST = 2, F_PID = 4, F_TAKEN = 8, F_RENEWED = 16,
         F_LEASE = 32, F_SEQ = 64, F_VERSION = 128, F_ALL = 255,
         F_RELEASED = 256 /* optional */ };
  bool version_seen = false;

  memset (h, 0, sizeof *h);
  if (len > LOCK_MAX_SIZE || memchr (data, '\0', len))
    BADLOCK ("read %s: not an s3chunk lock (binary or too large)", LOCK_KEY);
  if (len == 0 || ((const char *) data)[len - 1] != '\n')
    BADLOCK ("read %s: not an s3chunk lock (truncated)", LOCK_KEY);
  text = strndup (data, len);
  if (text == NULL)
    return -ENOMEM;
  if (strstr (text, "\n\n") || strchr (text, '\r'))
    BADLOCK ("read %s: malformed lock object (empty line or CR)", LOCK_KEY);
  line = strtok_r (text, "\n", &save);
  if (line == NULL || strcmp (line, "s3chunk lock") != 0)
    BADLOCK ("read %s: not an s3chunk lock (bad first line)", LOCK_KEY);
  while ((line = strtok_r (NULL, "\n", &save)) != NULL) {
    char *eq = strchr (line, '=');
    const char *k = line, *val;
    unsigned bit = 0;
    uint64_t u;

    if (eq == NULL)
      BADLOCK ("read %s: malformed lock line", LOCK_KEY);
    *eq = '\0';
    val = eq + 1;
    if (!version_seen) {
      if (strcmp (k, "format-version") != 0)
        BADLOCK ("read %s: format-version must come first", LOCK_KEY);
      if (params_parse_uint (val, 0, 1000000, &u) < 0)
        BADLOCK ("read %s: bad format-version", LOCK_KEY);
      if (u != LOCK_FORMAT_VERSION)
        BADLOCK ("read %s: lock format version %" PRIu64 ", this s3chunk "
                 "reads version %d: it was written by another release",
                 LOCK_KEY, u, LOCK_FORMAT_VERSION);
      version_seen = true;
      continue;
    }
    if (strcmp (k, "owner") == 0) {
      bit = F_OWNER;
      if (!params_is_hex (val, 32))
        BADLOCK ("read %s: bad owner", LOCK_KEY);
      memcpy (h->owner, val, 33);
    }
    else if (strcmp (k, "host") == 0) {
      bit = F_HOST;
      if (!safe_string (val, sizeof h->host))
        BADLOCK ("read %s: bad host", LOCK_KEY);
      strcpy (h->host, val);
    }
    else if (strcmp (k, "pid") == 0) {
      bit = F_PID;
      if (params_parse_uint (val, 1, INT32_MAX, &u) < 0)
        BADLOCK ("read %s: bad pid", LOCK_KEY);
      h->pid = u;
    }
    else if (strcmp (k, "taken-at") == 0) {
      bit = F_TAKEN;
      if (params_parse_uint (val, 0, INT64_MAX, &u) < 0)
        BADLOCK ("read %s: bad taken-at", LOCK_KEY);
      h->taken_at = u;
    }
    else if (strcmp (k, "renewed-at") == 0) {
      bit = F_RENEWED;
      if (params_parse_uint (val, 0, INT64_MAX, &u) < 0)
        BADLOCK ("read %s: bad renewed-at", LOCK_KEY);
      h->renewed_at = u;
    }
    else if (strcmp (k, "lease") == 0) {
      bit = F_LEASE;
      if (params_parse_uint (val, LOCK_MIN_LEASE, LOCK_MAX_LEASE, &u) < 0)
        BADLOCK ("read %s: bad lease", LOCK_KEY);
      h->lease = u;
    }
    else if (strcmp (k, "sequence") == 0) {
      bit = F_SEQ;
      if (params_parse_uint (val, 0, UINT64_MAX, &u) < 0)
        BADLOCK ("read %s: bad sequence", LOCK_KEY);
      h->sequence = u;
    }
    else if (strcmp (k, "released") == 0) {
      bit = F_RELEASED;
      if (strcmp (val, "1") != 0)
        BADLOCK ("read %s: bad released", LOCK_KEY);
      h->released = true;
    }
    else if (strcmp (k, "version") == 0) {
      bit = F_VERSION;
      if (!safe_string (val, sizeof h->version))
        BADLOCK ("read %s: bad version", LOCK_KEY);
      strcpy (h->version, val);
    }
    else
      BADLOCK ("read %s: unknown lock field: written by a newer s3chunk?",
               LOCK_KEY);
    if (seen & bit)
      BADLOCK ("read %s: duplicate field %s", LOCK_KEY, k);
    seen |= bit;
  }
  if ((seen & F_ALL) != F_ALL)
    BADLOCK ("read %s: lock object is missing fields (truncated?)", LOCK_KEY);
  return 0;
}

void
lock_describe (const struct lock_holder *h, int64_t age, char *buf,
               size_t len)
{
  char since[64] = "an unknown time", renewed[64] = "at an unknown time";
  time_t t = h->taken_at;
  struct tm tm;

  if (h->taken_at > 0 && gmtime_r (&t, &tm))
    strftime (since, sizeof since, "%Y-%m-%d %H:%M:%S UTC", &tm);
  if (age >= 0)
    snprintf (renewed, sizeof renewed, "%" PRId64 " s ago", age);
  snprintf (buf, len, "host %s (pid %" PRId64 ", s3chunk %s), taken at %s, "
            "%s %s, lease %u s",
            h->host, h->pid, h->version, since,
            h->released ? "released" : "last renewed", renewed, h->lease);
}

/* ------------------------------------------------------------ store I/O */

/* The store's answer to "how long since this object was written", by its
 * own clock; -1 when it did not say.
 */
static int64_t
age_of (const struct objstore_info *info)
{
  if (info->mtime <= 0 || info->date <= 0)
    return -1;
  return info->date >= info->mtime ? info->date - info->mtime : 0;
}

/* Stale means not rewritten for longer than the lease plus a margin, by
 * the store's clock.  Both times are whole seconds rounded down, so the
 * real age may be up to a second less than age: the margin covers that,
 * and age > lease + LOCK_TAKE_MARGIN means at least lease seconds really
 * passed since the store stamped the holder's last renewal, which it sent
 * earlier still.  The holder stopped writing lease/3 before that (its
 * write deadline).  Unknown age: never stale (only force takes it).
 */
static bool
is_stale (int64_t age, unsigned lease)
{
  return age >= 0 && age > (int64_t) lease + LOCK_TAKE_MARGIN;
}

/* Get the lock object.  *valid tells whether it parsed (errors other than
 * -ENOENT are returned; a bad object is 0 with *valid false).
 */
static int
read_lock (struct objstore *os, struct cs_buf *b, struct objstore_info *info,
           struct lock_holder *h, bool *valid)
{
  int r;

  memset (info, 0, sizeof *info);
  r = objstore_get (os, LOCK_KEY, LOCK_MAX_SIZE, b, info);
  if (r == -EFBIG) {
    *valid = false;
    memset (h, 0, sizeof *h);
    return 0;
  }
  if (r < 0)
    return r;
  *valid = lock_parse (b->data, b->len, h) == 0;
  return 0;
}

int
lock_read (struct objstore *os, struct lock_holder *h, int64_t *age,
           bool *fresh)
{
  struct cs_buf b = CS_BUF_INIT;
  struct objstore_info info;
  bool valid;
  int r;

  r = read_lock (os, &b, &info, h, &valid);
  cs_buf_free (&b);
  if (r == -ENOENT)
    return epoch_read (os, h, age, fresh);
  if (r < 0)
    return r;
  if (!valid)
    return -EIO;
  *age = age_of (&info);
  *fresh = !h->released && !is_stale (*age, h->lease);
  return h->released ? -ENOENT : 0;
}

/* ------------------------------------------------------- the epoch lock
 *
 * For a store with create-only writes and no compare-and-swap (Alibaba
 * OSS).  The argument is in docs/FORMAT.md, "The epoch lock"; in short:
 *
 *   lock.d/<N>            the claim of epoch N (20 digits): created only
 *                         if absent, so each epoch has exactly one holder;
 *                         its text is a lock object (lock_format).  Claims
 *                         are never deleted (but by "s3chunk destroy"):
 *                         a deleted one could be created again by a taker
 *                         whose listing is stale, and two would hold N.
 *   lock.d/<N>.hb-<K>     heartbeat K of epoch N, created only if absent,
 *                         K = 1, 2, ... without gaps; its store mtime says
 *                         the holder is alive.
 *   lock.d/<N>.released   epoch N's holder stopped writing: free at once.
 *
 * A renewal creates the next heartbeat (sent at t), THEN reads that claim
 * N+1 does not exist and that claim N is still ours; only then does the
 * write deadline move to t + lease - lease/3.  A taker judges epoch N stale
 * by its newest heartbeat's age on the store's clock, creates claim N+1,
 * and writes nothing before the store's clock says a whole lease has
 * passed since its claim: every renewal of N that passed its check read
 * "no N+1" before the claim existed, so it was sent before, and its
 * deadline is over by then.  A released epoch, or none at all, needs no
 * wait.  The holder deletes heartbeats and released markers of older
 * epochs, and its own heartbeats but the last two.
 */

#define EPOCH_KEY_MAX 80

static int refuse (const struct lock_holder *h, bool valid, int64_t age,
                   unsigned lease);
static void do_fence (struct lock *l, const char *reason);
static void free_lock (struct lock *l);

static void
claim_key (char *k, uint64_t n)
{
  snprintf (k, EPOCH_KEY_MAX, LOCK_EPOCH_PREFIX "%020" PRIu64, n);
}

static void
hb_key (char *k, uint64_t n, uint64_t hb)
{
  snprintf (k, EPOCH_KEY_MAX, LOCK_EPOCH_PREFIX "%020" PRIu64 ".hb-%020"
            PRIu64, n, hb);
}

static void
released_key (char *k, uint64_t n)
{
  snprintf (k, EPOCH_KEY_MAX, LOCK_EPOCH_PREFIX "%020" PRIu64 ".released",
            n);
}

/* "lock.d/<N>[.hb-<K>|.released]" -> N, K (0 if none), kind. */
enum epoch_kind { EK_CLAIM, EK_HB, EK_RELEASED, EK_OTHER };

static enum epoch_kind
parse_epoch_key (const char *key, uint64_t *n, uint64_t *k)
{
  const char *p = key + strlen (LOCK_EPOCH_PREFIX);
  char *end;

  if (strncmp (key, LOCK_EPOCH_PREFIX, strlen (LOCK_EPOCH_PREFIX)) != 0 ||
      strlen (p) < 20)
    return EK_OTHER;
  *k = 0;
  *n = strtoull (p, &end, 10);
  if (end != p + 20)
    return EK_OTHER;
  if (*end == '\0')
    return EK_CLAIM;
  if (strcmp (end, ".released") == 0)
    return EK_RELEASED;
  if (strncmp (end, ".hb-", 4) == 0) {
    *k = strtoull (end + 4, &end, 10);
    return *end == '\0' ? EK_HB : EK_OTHER;
  }
  return EK_OTHER;
}

/* What the store says about the newest epoch. */
struct epoch_view {
  uint64_t epoch;               /* 0: no claim at all */
  uint64_t hb;                  /* its newest heartbeat, 0: none */
  bool released;
  bool valid;                   /* the claim parsed */
  struct lock_holder holder;
  int64_t age;                  /* of the newest heartbeat (else of the
                                   claim), by the store's clock; -1 */
};

struct epoch_list {
  uint64_t epoch, hb;
};

static int
epoch_list_one (void *opaque, const char *key, uint64_t size)
{
  struct epoch_list *el = opaque;
  uint64_t n, k;
  enum epoch_kind kind = parse_epoch_key (key, &n, &k);

  if (kind == EK_OTHER)
    return 0;
  if (n > el->epoch) {
    el->epoch = n;
    el->hb = 0;
  }
  if (kind == EK_HB && n == el->epoch && k > el->hb)
    el->hb = k;
  return 0;
}

/* Get a small object; *info filled.  0, -ENOENT, or an error. */
static int
get_small (struct objstore *os, const char *key, struct cs_buf *b,
           struct objstore_info *info)
{
  memset (info, 0, sizeof *info);
  return objstore_get (os, key, LOCK_MAX_SIZE, b, info);
}

/* Look at the newest epoch.  The listing only gives a starting point:
 * claims and heartbeats are found by reading keys, which the stores we
 * know answer consistently after a write (docs/FORMAT.md).
 */
static int
epoch_look (struct objstore *os, struct epoch_view *v)
{
  struct epoch_list el = { 0, 0 };
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  char key[EPOCH_KEY_MAX];
  int r, tries;

  memset (v, 0, sizeof *v);
  v->age = -1;
  for (tries = 0; tries < 3; ++tries) {
    el.epoch = el.hb = 0;
    r = objstore_list (os, LOCK_EPOCH_PREFIX, epoch_list_one, &el);
    if (r < 0)
      goto out;
    /* Newer claims than listed? */
    for (;;) {
      claim_key (key, el.epoch + 1);
      r = get_small (os, key, &b, &info);
      if (r == -ENOENT)
        break;
      if (r < 0)
        goto out;
      el.epoch++;
      el.hb = 0;
    }
    v->epoch = el.epoch;
    if (el.epoch == 0) {
      r = 0;
      goto out;
    }
    claim_key (key, el.epoch);
    r = get_small (os, key, &b, &info);
    if (r < 0 && r != -ENOENT)
      goto out;
    v->valid = r == 0 && lock_parse (b.data, b.len, &v->holder) == 0;
    v->age = r == 0 ? age_of (&info) : -1;
    released_key (key, el.epoch);
    r = get_small (os, key, &b, &info);
    if (r < 0 && r != -ENOENT)
      goto out;
    v->released = r == 0;
    /* The newest heartbeat: from the listed one on, while the next one
     * is there.
     */
    for (;;) {
      hb_key (key, el.epoch, el.hb + 1);
      r = get_small (os, key, &b, &info);
      if (r == -ENOENT)
        break;
      if (r < 0)
        goto out;
      el.hb++;
      v->age = age_of (&info);
    }
    v->hb = el.hb;
    if (el.hb == 0) {
      r = 0;
      goto out;
    }
    hb_key (key, el.epoch, el.hb);
    r = get_small (os, key, &b, &info);
    if (r == 0) {
      v->age = age_of (&info);
      goto out;
    }
    if (r != -ENOENT)
      goto out;
    /* The listed heartbeat was cleaned up under us: the holder is at
     * work.  List again; in the end call it fresh.
     */
    v->age = 0;
  }
  r = 0;
 out:
  cs_buf_free (&b);
  return r;
}

/* Read a key back after a create whose answer was -EEXIST or -ETIMEDOUT:
 * 1 it holds exactly text, 0 it is missing, -EEXIST something else, or an
 * error.
 */
static int
read_back (struct objstore *os, const char *key, const char *text, size_t n)
{
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  int r = get_small (os, key, &b, &info);

  if (r == 0)
    r = b.len == n && memcmp (b.data, text, n) == 0 ? 1 : -EEXIST;
  else if (r == -ENOENT)
    r = 0;
  cs_buf_free (&b);
  return r;
}

/* Create key with text: 0 ours is there, -EEXIST another is, -EAGAIN
 * nothing is (an unknown outcome that did not land yet), or an error.
 */
static int
create_settled (struct objstore *os, const char *key, const char *text,
                size_t n)
{
  int r = objstore_put_if (os, key, text, n, NULL, NULL);

  if (r == 0)
    return 0;
  if (r != -EEXIST && r != -ETIMEDOUT)
    return r;
  r = read_back (os, key, text, n);
  return r == 1 ? 0 : r == 0 ? -EAGAIN : r;
}

/* Delete what older epochs left (heartbeats, released markers), never a
 * claim.  Failures only leave garbage for the next holder.
 */
struct epoch_garbage {
  uint64_t below;
  char **keys;
  size_t n, cap;
};

static int
epoch_garbage_one (void *opaque, const char *key, uint64_t size)
{
  struct epoch_garbage *g = opaque;
  uint64_t n, k;
  enum epoch_kind kind = parse_epoch_key (key, &n, &k);
  char **bigger;

  if ((kind != EK_HB && kind != EK_RELEASED) || n >= g->below)
    return 0;
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 16;
    bigger = realloc (g->keys, g->cap * sizeof *g->keys);
    if (bigger == NULL)
      return -ENOMEM;
    g->keys = bigger;
  }
  g->keys[g->n] = strdup (key);
  if (g->keys[g->n] == NULL)
    return -ENOMEM;
  g->n++;
  return 0;
}

static void
epoch_cleanup (struct lock *l)
{
  struct epoch_garbage g = { l->epoch, NULL, 0, 0 };
  size_t i;

  if (objstore_list (l->os, LOCK_EPOCH_PREFIX, epoch_garbage_one, &g) == 0 &&
      g.n > 0) {
    cs_debug ("lock: deleting %zu heartbeat and released objects of epochs "
              "before %" PRIu64, g.n, l->epoch);
    objstore_del_many (l->os, (const char *const *) g.keys, g.n);
  }
  for (i = 0; i < g.n; ++i)
    free (g.keys[i]);
  free (g.keys);
}

/* Wait until the store's clock says a whole lease (and the margin) has
 * passed since our claim was stamped: see the top of this section.
 */
static int
epoch_wait (struct lock *l, unsigned lease)
{
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  char key[EPOCH_KEY_MAX];
  int64_t age;
  int r;

  claim_key (key, l->epoch);
  cs_debug ("lock: epoch %" PRIu64 " claimed: waiting %u s by the store's "
            "clock before writing", l->epoch, lease + LOCK_TAKE_MARGIN);
  for (;;) {
    r = get_small (l->os, key, &b, &info);
    if (r < 0)
      break;
    age = age_of (&info);
    if (age < 0) {
      cs_error ("lock: the store gave no time for %s: cannot take the lock "
                "over safely", key);
      r = -EIO;
      break;
    }
    if (is_stale (age, lease))
      break;
    {
      /* (The store's clock has whole seconds: look four times a one.) */
      struct timespec ts = { 0, 250 * 1000 * 1000 };
      while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
    }
  }
  cs_buf_free (&b);
  return r;
}

static int
epoch_acquire (struct lock *l, const struct lock_params *p)
{
  struct epoch_view v;
  char key[EPOCH_KEY_MAX], text[LOCK_MAX_SIZE], desc[512];
  int attempt, n, r;

  l->epochs = true;
  for (attempt = 0; attempt < ACQUIRE_ATTEMPTS; ++attempt) {
    bool stale, taking;

    r = epoch_look (l->os, &v);
    if (r < 0)
      return r;
    taking = v.epoch > 0 && !v.released;
    stale = taking && is_stale (v.age, v.valid ? v.holder.lease : p->lease);
    if (taking && !stale && !p->force)
      return refuse (&v.holder, v.valid, v.age, p->lease);

    l->epoch = v.epoch + 1;
    l->me.sequence++;
    l->me.taken_at = l->me.renewed_at = time (NULL);
    n = lock_format (&l->me, text, sizeof text);
    if (n < 0)
      return n;
    claim_key (key, l->epoch);
    r = create_settled (l->os, key, text, n);
    if (r == -EAGAIN)
      continue;                 /* not there: look again */
    if (r == -EEXIST) {
      /* Another taker created this epoch first: it is the holder. */
      r = epoch_look (l->os, &v);
      if (r < 0)
        return r;
      return refuse (&v.holder, v.valid, v.age, p->lease);
    }
    if (r < 0)
      return r;

    if (v.valid)
      lock_describe (&v.holder, v.age, desc, sizeof desc);
    else
      snprintf (desc, sizeof desc, "an unreadable lock claim");
    if (taking) {
      cs_warn ("lock: took over the %s lock of %s", stale ? "stale" :
               "FRESH (force-unlock=true)", desc);
      /* The holder taken over stops by its own lease. */
      r = epoch_wait (l, v.valid ? v.holder.lease : p->lease);
      if (r < 0)
        return r;
    }
    else if (v.epoch > 0)
      cs_debug ("lock: took the lock released by %s", desc);
    break;
  }
  if (attempt == ACQUIRE_ATTEMPTS) {
    cs_error ("lock: the lock claims kept changing while taking the lock "
              "(other instances starting and stopping?): try again");
    return -EBUSY;
  }
  /* The first heartbeat opens the fence (its check runs as always). */
  for (int i = 0; i < 3; ++i) {
    r = epoch_renew (l);
    if (r != -EAGAIN)
      break;
  }
  if (r < 0) {
    if (r != -ENOLCK)
      cs_error ("lock: the first heartbeat of epoch %" PRIu64 " failed: %s",
                l->epoch, strerror (-r));
    return r == -ENOLCK ? -EBUSY : r;
  }
  epoch_cleanup (l);
  cs_debug ("lock: taken, epoch %" PRIu64 ", owner %s, lease %u s",
            l->epoch, l->me.owner, l->me.lease);
  return 0;
}

static int
epoch_renew (struct lock *l)
{
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  struct lock_holder h;
  char key[EPOCH_KEY_MAX], text[256], desc[512], why[700];
  uint64_t k;
  int64_t sent;
  int n, r;

  pthread_mutex_lock (&l->mu);
  if (l->fenced) {
    pthread_mutex_unlock (&l->mu);
    return -ENOLCK;
  }
  k = l->hb + 1;
  l->me.pid = getpid ();
  pthread_mutex_unlock (&l->mu);

  n = snprintf (text, sizeof text, "s3chunk lock heartbeat\nowner=%s\n"
                "epoch=%" PRIu64 "\nheartbeat=%" PRIu64 "\npid=%" PRId64 "\n",
                l->me.owner, l->epoch, k, l->me.pid);
  hb_key (key, l->epoch, k);
  sent = cs_boottime_ns ();
  r = create_settled (l->os, key, text, n);
  if (r == -EEXIST) {
    /* Only we write our epoch's heartbeats: an older write of ours with
     * another pid (before nbdkit's fork).  Take the next number.
     */
    pthread_mutex_lock (&l->mu);
    l->hb = k;
    pthread_mutex_unlock (&l->mu);
    return -EAGAIN;
  }
  if (r < 0) {
    cs_debug ("lock: heartbeat %" PRIu64 " failed: %s: will retry", k,
              strerror (-r));
    return r;
  }
  pthread_mutex_lock (&l->mu);
  l->hb = k;
  pthread_mutex_unlock (&l->mu);

  /* After the heartbeat, never before it: no newer claim, ours still
   * there.  (In this order: a holder of a later epoch deletes nothing but
   * heartbeats and released markers, yet "s3chunk destroy" deletes all.)
   */
  claim_key (key, l->epoch + 1);
  r = get_small (l->os, key, &b, &info);
  if (r == 0) {
    if (lock_parse (b.data, b.len, &h) == 0) {
      lock_describe (&h, age_of (&info), desc, sizeof desc);
      snprintf (why, sizeof why, "another instance took the volume over: "
                "%s", desc);
    }
    else
      snprintf (why, sizeof why, "another instance took the volume over "
                "(epoch %" PRIu64 ")", l->epoch + 1);
    cs_buf_free (&b);
    do_fence (l, why);
    return -ENOLCK;
  }
  if (r != -ENOENT) {
    cs_buf_free (&b);
    return r;
  }
  claim_key (key, l->epoch);
  r = get_small (l->os, key, &b, &info);
  if (r == 0 && (lock_parse (b.data, b.len, &h) < 0 ||
                 strcmp (h.owner, l->me.owner) != 0))
    r = -EEXIST;
  cs_buf_free (&b);
  if (r == -ENOENT || r == -EEXIST) {
    do_fence (l, r == -ENOENT ? "the lock claim was deleted (s3chunk "
              "destroy or unlock?)" : "the lock claim is not ours any more");
    return -ENOLCK;
  }
  if (r < 0)
    return r;

  pthread_mutex_lock (&l->mu);
  if (sent > l->ok_sent)
    l->ok_sent = sent;
  if (!l->fenced)
    cs_fence_set (&l->wfence, l->ok_sent + secs_ns (l->fence_after));
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->mu);

  /* Our own heartbeats but the last two. */
  if (k > 2) {
    hb_key (key, l->epoch, k - 2);
    objstore_del (l->os, key);
  }
  return 0;
}

static int
epoch_release (struct lock *l)
{
  char key[EPOCH_KEY_MAX], text[LOCK_MAX_SIZE];
  int n, r;

  /* A marker, never a delete of the claim (see the section's top).  Also
   * after a fence: a later epoch does not look at ours.
   */
  pthread_mutex_lock (&l->mu);
  l->me.released = true;
  l->me.sequence++;
  l->me.renewed_at = time (NULL);
  pthread_mutex_unlock (&l->mu);
  n = lock_format (&l->me, text, sizeof text);
  released_key (key, l->epoch);
  r = n < 0 ? n : create_settled (l->os, key, text, n);
  if (r == -EEXIST)
    r = 0;
  cs_fence_close (&l->wfence);
  if (r < 0)
    cs_warn ("lock: could not release the lock (%s): the next start waits "
             "until its lease has run out", strerror (-r));
  else
    cs_debug ("lock: epoch %" PRIu64 " released", l->epoch);
  free_lock (l);
  return r;
}

struct key_list {
  char **keys;
  size_t n, cap;
};

static int
collect_key (void *opaque, const char *key, uint64_t size)
{
  struct key_list *kl = opaque;
  char **bigger;

  if (kl->n == kl->cap) {
    kl->cap = kl->cap ? 2 * kl->cap : 16;
    bigger = realloc (kl->keys, kl->cap * sizeof *kl->keys);
    if (bigger == NULL)
      return -ENOMEM;
    kl->keys = bigger;
  }
  if ((kl->keys[kl->n] = strdup (key)) == NULL)
    return -ENOMEM;
  kl->n++;
  return 0;
}

/* "s3chunk destroy": every lock object, if the newest epoch is ours. */
static int
epoch_delete_all (struct lock *l)
{
  struct epoch_view v;
  struct key_list kl = { NULL, 0, 0 };
  size_t i;
  int r;

  r = epoch_look (l->os, &v);
  if (r < 0)
    return r;
  if (v.epoch != l->epoch) {
    cs_warn ("lock: not deleting the lock objects: the lock is not ours any "
             "more");
    return 0;
  }
  r = objstore_list (l->os, LOCK_EPOCH_PREFIX, collect_key, &kl);
  if (r == 0 && kl.n)
    r = objstore_del_many (l->os, (const char *const *) kl.keys, kl.n);
  for (i = 0; i < kl.n; ++i)
    free (kl.keys[i]);
  free (kl.keys);
  return r;
}

static int
epoch_read (struct objstore *os, struct lock_holder *h, int64_t *age,
            bool *fresh)
{
  struct epoch_view v;
  int r = epoch_look (os, &v);

  if (r < 0)
    return r;
  if (v.epoch == 0)
    return -ENOENT;
  if (!v.valid) {
    cs_error ("read %s: the newest lock claim is not a valid lock object",
              LOCK_EPOCH_PREFIX);
    return -EIO;
  }
  *h = v.holder;
  h->released = v.released;
  h->sequence = v.hb;
  *age = v.age;
  *fresh = !v.released && !is_stale (v.age, h->lease);
  return v.released ? -ENOENT : 0;
}

/* ------------------------------------------------------------ the probe */

/* nbytes random bytes as hex.  The owner id must be unique, or two
 * holders would take each other's lock for their own: no weak fallback.
 */
static int
random_hex (char *out, size_t nbytes)
{
  uint8_t b[32];
  size_t i;

  if (nbytes > sizeof b ||
      getrandom (b, nbytes, 0) != (ssize_t) nbytes) {
    cs_error ("lock: getrandom: %s", strerror (errno));
    return -EIO;
  }
  for (i = 0; i < nbytes; ++i)
    snprintf (out + 2 * i, 3, "%02x", b[i]);
  return 0;
}

/* A tag no object has now: for a store whose tags are generation numbers
 * (GCS), a number (generations are microsecond times, never 1).
 */
static const char *
wrong_tag (const char *etag)
{
  size_t i;

  for (i = 0; etag[i]; ++i)
    if (etag[i] < '0' || etag[i] > '9')
      return "s3chunk-probe-not-an-etag";
  return i > 0 ? "1" : "s3chunk-probe-not-an-etag";
}

int
lock_probe (struct objstore *os)
{
  char key[64], hex[17];
  struct objstore_info info;
  const char *bad = NULL;
  unsigned caps;
  int r;

  r = objstore_detect (os);
  if (r < 0)
    return r;
  caps = objstore_caps (os);
  if (!(caps & OBJSTORE_CAP_CREATE)) {
    cs_error ("lock: the store (%s) has no create-only write: no volume lock "
              "is possible; add lock=none if you make sure yourself that "
              "only one instance ever runs", objstore_dialect (os));
    return -ENOTSUP;
  }
  r = random_hex (hex, 8);
  if (r < 0)
    return r;
  snprintf (key, sizeof key, LOCK_PROBE_PREFIX "%s", hex);

  r = objstore_put_if (os, key, "probe 1\n", 8, NULL, &info);
  if (r < 0) {
    cs_error ("lock: checking that the store enforces conditional writes: "
              "create %s: %s", key, strerror (-r));
    return r;
  }
  r = objstore_put_if (os, key, "probe 2\n", 8, NULL, NULL);
  if (r == 0)
    bad = "a second create-if-absent of the same key succeeded";
  else if (r == -EEXIST && !(caps & OBJSTORE_CAP_CAS))
    r = 0;                      /* create-only is all there is: enough */
  else if (r == -EEXIST) {
    r = objstore_put_if (os, key, "probe 3\n", 8, wrong_tag (info.etag),
                         NULL);
    if (r == 0)
      bad = "a replace with a wrong etag succeeded";
    else if (r == -EEXIST && info.etag[0] != '\0') {
      r = objstore_put_if (os, key, "probe 4\n", 8, info.etag, NULL);
      if (r == -EEXIST)
        bad = "a replace with the object's own etag was refused";
    }
    else if (r == -EEXIST)
      bad = "it returned no etag for a conditional write";
  }
  objstore_del (os, key);
  if (bad) {
    cs_error ("lock: the store does not enforce conditional writes (%s), "
              "so the volume lock cannot keep two instances from writing "
              "the same volume (they were spelt as provider %s): give the "
              "right provider=, use a store that honours them, or add "
              "lock=none if you make sure yourself that only one instance "
              "ever runs", bad, objstore_dialect (os));
    return -ENOTSUP;
  }
  if (r < 0 && r != -EEXIST) {
    cs_error ("lock: checking that the store enforces conditional writes on "
              "%s: %s", key, strerror (-r));
    return r;
  }
  return 0;
}

/* ------------------------------------------------------ taking the lock */

static void
free_lock (struct lock *l)
{
  pthread_mutex_destroy (&l->mu);
  pthread_cond_destroy (&l->cond);
  free (l);
}

static int
init_lock (struct objstore *os, const struct lock_params *p,
           struct lock **out)
{
  struct lock *l = calloc (1, sizeof *l);
  pthread_condattr_t ca;
  char host[256];
  size_t i;

  if (l == NULL)
    return -ENOMEM;
  l->os = os;
  l->period = p->lease / 3.0;
  l->fence_after = p->lease - l->period;
  /* Not ours yet: nothing may be written until the lock is taken. */
  cs_fence_init (&l->wfence, 1);
  pthread_mutex_init (&l->mu, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&l->cond, &ca);
  pthread_condattr_destroy (&ca);

  if (random_hex (l->me.owner, 16) < 0) {
    free_lock (l);
    return -EIO;
  }
  if (gethostname (host, sizeof host) < 0 || host[0] == '\0')
    strcpy (host, "unknown");
  host[sizeof host - 1] = '\0';
  for (i = 0; host[i]; ++i)
    if (!safe_char (host[i]))
      host[i] = '_';
  strcpy (l->me.host, host);
  l->me.pid = getpid ();
  l->me.taken_at = l->me.renewed_at = time (NULL);
  l->me.lease = p->lease;
  l->me.sequence = 0;
  snprintf (l->me.version, sizeof l->me.version, "%s",
            p->version && safe_string (p->version, sizeof l->me.version)
            ? p->version : "unknown");
  *out = l;
  return 0;
}

/* Write our object with a fresh sequence number: a create when if_match is
 * NULL, else a replace of that etag.  The outcome is settled (an unknown
 * one by reading the object back):
 *   0        ours is there now (etag and ok_sent updated);
 *   -EEXIST  someone else's object is there, or a bad one: seen, valid,
 *            age and seen_etag (128 bytes) describe it;
 *   -EAGAIN  an older object of ours is there (etag adopted);
 *   -ENOENT  there is no object at all;
 *   other    the store failed; nothing known.
 */
static int
write_ours (struct lock *l, const char *if_match, struct lock_holder *seen,
            bool *valid, int64_t *age, char *seen_etag)
{
  struct lock_holder h;
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  int64_t sent;
  char text[LOCK_MAX_SIZE];
  int n, r;

  pthread_mutex_lock (&l->mu);
  l->me.sequence++;
  l->me.renewed_at = time (NULL);
  l->me.pid = getpid ();
  h = l->me;
  pthread_mutex_unlock (&l->mu);

  n = lock_format (&h, text, sizeof text);
  if (n < 0)
    return n;
  sent = cs_boottime_ns ();
  r = objstore_put_if (l->os, LOCK_KEY, text, n, if_match, &info);
  if (r == 0)
    goto ours;
  if (r != -EEXIST && r != -ETIMEDOUT)
    return r;

  /* Settle by reading back what is there. */
  r = read_lock (l->os, &b, &info, seen, valid);
  *age = r == 0 ? age_of (&info) : -1;
  memcpy (seen_etag, r == 0 ? info.etag : "", r == 0 ? sizeof info.etag : 1);
  if (r == -ENOENT) {
    *valid = false;
    cs_buf_free (&b);
    return -ENOENT;
  }
  if (r < 0) {
    cs_buf_free (&b);
    return r;
  }
  if (!*valid || strcmp (seen->owner, h.owner) != 0 ||
      (seen->released && !h.released)) {
    cs_buf_free (&b);
    return -EEXIST;
  }
  if (b.len != (size_t) n || memcmp (b.data, text, n) != 0) {
    /* An older write of ours: the newer one did not land (yet).  Its
     * mtime may be older than sent, so ok_sent stays as it was.
     */
    cs_debug ("lock: renewal %" PRIu64 " did not land, %" PRIu64 " is there",
              h.sequence, seen->sequence);
    pthread_mutex_lock (&l->mu);
    memcpy (l->etag, info.etag, sizeof l->etag);
    pthread_mutex_unlock (&l->mu);
    cs_buf_free (&b);
    return -EAGAIN;
  }
  cs_buf_free (&b);
  cs_debug ("lock: write %" PRIu64 " landed after all", h.sequence);

 ours:
  pthread_mutex_lock (&l->mu);
  memcpy (l->etag, info.etag, sizeof l->etag);
  if (sent > l->ok_sent)
    l->ok_sent = sent;
  /* A released object of ours holds no lease: it moves no deadline. */
  if (!h.released && !l->fenced)
    cs_fence_set (&l->wfence, l->ok_sent + secs_ns (l->fence_after));
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->mu);
  return 0;
}

static int
refuse (const struct lock_holder *h, bool valid, int64_t age, unsigned lease)
{
  char desc[512], wait[96] = "";
  unsigned holder_lease = valid ? h->lease : lease;

  if (age >= 0)
    snprintf (wait, sizeof wait, " (in about %" PRId64 " s)",
              (int64_t) holder_lease + LOCK_TAKE_MARGIN + 1 - age > 0
              ? (int64_t) holder_lease + LOCK_TAKE_MARGIN + 1 - age : 1);
  if (valid)
    lock_describe (h, age, desc, sizeof desc);
  else
    snprintf (desc, sizeof desc, "an unreadable lock object, last written "
              "%" PRId64 " s ago", age);
  cs_error ("the volume is in use: locked by %s: if that process is gone, "
            "start again when the lease has run out%s, or add "
            "force-unlock=true (or run 's3chunk unlock') if you are sure it "
            "is not running", desc, wait);
  return -EBUSY;
}

int
lock_acquire (struct objstore *os, const struct lock_params *p,
              struct lock **out)
{
  struct lock_holder seen;
  struct lock *l;
  bool valid;
  int64_t age;
  int attempt, r;

  if (p->lease < LOCK_MIN_LEASE || p->lease > LOCK_MAX_LEASE)
    return -EINVAL;
  r = objstore_detect (os);
  if (r < 0)
    return r;
  r = init_lock (os, p, &l);
  if (r < 0)
    return r;
  if (!(objstore_caps (os) & OBJSTORE_CAP_CAS)) {
    r = epoch_acquire (l, p);
    if (r < 0)
      goto fail;
    *out = l;
    return 0;
  }

  for (attempt = 0; attempt < ACQUIRE_ATTEMPTS; ++attempt) {
    char etag[128], cur[128], desc[512];
    bool stale;

    r = write_ours (l, NULL, &seen, &valid, &age, etag);
    if (r == 0)
      break;
    if (r == -ENOENT)
      continue;                 /* released meanwhile: try again */
    if (r != -EEXIST)
      goto fail;

    /* Someone else's object: released, fresh, stale, or we are forced. */
    stale = (valid && seen.released) ||
      is_stale (age, valid ? seen.lease : p->lease);
    if (!stale && !p->force) {
      r = refuse (&seen, valid, age, p->lease);
      goto fail;
    }
    if (valid)
      lock_describe (&seen, age, desc, sizeof desc);
    else
      snprintf (desc, sizeof desc, "an unreadable lock object");
    if (etag[0] == '\0') {
      cs_error ("lock: the store gave no etag for %s: cannot take it over "
                "safely", LOCK_KEY);
      r = -EIO;
      goto fail;
    }

    r = write_ours (l, etag, &seen, &valid, &age, cur);
    if (r == 0) {
      if (valid && seen.released)
        cs_debug ("lock: took the lock released by %s", desc);
      else
        cs_warn ("lock: took over the %s lock of %s", stale ? "stale" :
                 "FRESH (force-unlock=true)", desc);
      break;
    }
    if (r == -EEXIST) {
      /* Another taker won the race: it is the holder now. */
      r = refuse (&seen, valid, age, p->lease);
      goto fail;
    }
    if (r == -ENOENT)
      continue;
    goto fail;
  }
  if (attempt == ACQUIRE_ATTEMPTS) {
    cs_error ("lock: the lock object kept changing while taking it (other "
              "instances starting and stopping?): try again");
    r = -EBUSY;
    goto fail;
  }
  cs_debug ("lock: taken, owner %s, lease %u s", l->me.owner, l->me.lease);
  *out = l;
  return 0;

 fail:
  free_lock (l);
  return r;
}

/* -------------------------------------------------------------- fencing */

static void
do_fence (struct lock *l, const char *reason)
{
  char why[sizeof l->why];

  pthread_mutex_lock (&l->mu);
  if (l->fenced) {
    pthread_mutex_unlock (&l->mu);
    return;
  }
  l->fenced = true;
  /* First of all: no request starts, and transfers under way abort. */
  cs_fence_close (&l->wfence);
  snprintf (l->why, sizeof l->why, "%s", reason);
  memcpy (why, l->why, sizeof why);
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->mu);

  cs_error ("lock: the volume lock is lost: %s", why);
  if (l->fence)
    l->fence (l->opaque, why);
}

struct cs_fence *
lock_fence (struct lock *l)
{
  return &l->wfence;
}

bool
lock_fenced (struct lock *l, char *why, size_t len)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&l->mu);
  if (why && len)
    snprintf (why, len, "%s", l->fenced ? l->why : "");
  return l->fenced;
}

int
lock_renew (struct lock *l)
{
  struct lock_holder seen;
  char etag[128], seen_etag[128], desc[512], why[700];
  bool valid;
  int64_t age;
  int r;

  if (l->epochs)
    return epoch_renew (l);
  pthread_mutex_lock (&l->mu);
  if (l->fenced) {
    pthread_mutex_unlock (&l->mu);
    return -ENOLCK;
  }
  memcpy (etag, l->etag, sizeof etag);
  pthread_mutex_unlock (&l->mu);

  r = write_ours (l, etag, &seen, &valid, &age, seen_etag);
  switch (r) {
  case 0:
    return 0;
  case -EAGAIN:
    return -EAGAIN;             /* an etag of ours adopted: go again soon */
  case -ENOENT:
    do_fence (l, "the lock object was deleted (s3chunk unlock, or another "
              "instance started with force-unlock=true and stopped)");
    return -ENOLCK;
  case -EEXIST:
    if (valid && seen.released) {
      lock_describe (&seen, age, desc, sizeof desc);
      snprintf (why, sizeof why, "the lock was broken and released by "
                "another process (s3chunk unlock, or an instance started "
                "with force-unlock=true and stopped): %s", desc);
    }
    else if (valid) {
      lock_describe (&seen, age, desc, sizeof desc);
      snprintf (why, sizeof why, "another instance took the volume over: "
                "%s", desc);
    }
    else
      snprintf (why, sizeof why, "the lock object was replaced by something "
                "that is not our lock");
    do_fence (l, why);
    return -ENOLCK;
  default:
    cs_debug ("lock: renewal failed: %s: will retry", strerror (-r));
    return r;
  }
}

/* -------------------------------------------------------------- threads */

static void *
renewer_thread (void *arg)
{
  struct lock *l = arg;
  int64_t next;

  pthread_mutex_lock (&l->mu);
  next = l->ok_sent + secs_ns (l->period);
  while (!l->stopping && !l->fenced) {
    int r;

    if (next > cs_boottime_ns ()) {
      wait_until (l, next);
      continue;
    }
    pthread_mutex_unlock (&l->mu);
    r = lock_renew (l);
    if (r == 0 && l->renewed)
      l->renewed (l->renewed_opaque);
    pthread_mutex_lock (&l->mu);
    if (r == 0)
      next = l->ok_sent + secs_ns (l->period);
    else {
      /* Try again soon, a few times before the watchdog fences. */
      double retry = l->period / 4 < 0.25 ? 0.25 : l->period / 4;
      next = cs_boottime_ns () + (r == -EAGAIN ? 0 : secs_ns (retry));
    }
  }
  pthread_mutex_unlock (&l->mu);
  return NULL;
}

static void *
watchdog_thread (void *arg)
{
  struct lock *l = arg;

  pthread_mutex_lock (&l->mu);
  while (!l->stopping && !l->fenced) {
    int64_t deadline = l->ok_sent + secs_ns (l->fence_after);
    double late = (cs_boottime_ns () - l->ok_sent) / (double) NS;

    if (late >= l->fence_after) {
      char why[256];

      snprintf (why, sizeof why, "no renewal of the lock succeeded for "
                "%.1f s, and its lease of %u s could run out soon: another "
                "instance may take the volume over", late, l->me.lease);
      pthread_mutex_unlock (&l->mu);
      do_fence (l, why);
      pthread_mutex_lock (&l->mu);
      break;
    }
    wait_until (l, deadline);
  }
  pthread_mutex_unlock (&l->mu);
  return NULL;
}

void
lock_set_renewed_hook (struct lock *l, lock_renewed_fn fn, void *opaque)
{
  l->renewed = fn;
  l->renewed_opaque = opaque;
}

int
lock_start (struct lock *l, lock_fence_fn fence, void *opaque)
{
  int r;

  l->fence = fence;
  l->opaque = opaque;
  /* The process that serves may not be the one that took the lock (nbdkit
   * forks into the background): write our pid now, and learn at once if
   * the lock was lost since.
   */
  for (int i = 0; i < 3; ++i) {
    r = lock_renew (l);
    if (r != -EAGAIN)
      break;
  }
  if (r == -ENOLCK)
    return r;
  if (r < 0)
    cs_warn ("lock: renewal failed at start (%s): retrying in the background",
             strerror (-r));

  r = pthread_create (&l->watchdog, NULL, watchdog_thread, l);
  if (r != 0) {
    cs_error ("lock: cannot start the lock watchdog thread: %s", strerror (r));
    return -r;
  }
  l->watchdog_started = true;
  r = pthread_create (&l->renewer, NULL, renewer_thread, l);
  if (r != 0) {
    cs_error ("lock: cannot start the lock renewal thread: %s", strerror (r));
    return -r;
  }
  l->renewer_started = true;
  return 0;
}

/* ------------------------------------------------------------- release */

void
lock_stop (struct lock *l)
{
  pthread_mutex_lock (&l->mu);
  l->stopping = true;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->mu);
  if (l->renewer_started)
    pthread_join (l->renewer, NULL);
  if (l->watchdog_started)
    pthread_join (l->watchdog, NULL);
  l->renewer_started = l->watchdog_started = false;
}

int
lock_release (struct lock *l)
{
  struct lock_holder seen;
  char etag[128], seen_etag[128];
  bool valid;
  int64_t age;
  int r;

  if (l == NULL)
    return 0;
  lock_stop (l);
  if (l->epochs)
    return epoch_release (l);

  /* Whatever the plugin had under way was joined before this
   * (cache_close).  The fence closes once the released object is written:
   * the lock may share the data store when the store has no sibling.
   */
  pthread_mutex_lock (&l->mu);
  memcpy (etag, l->etag, sizeof etag);
  l->me.released = true;
  pthread_mutex_unlock (&l->mu);

  /* Replace our object by a released one only if it is still exactly ours
   * (see the top comment for why there is no delete).  Also after a fence:
   * the condition keeps a taker's object safe.
   */
  r = write_ours (l, etag, &seen, &valid, &age, seen_etag);
  if (r == 0)
    cs_debug ("lock: released");
  else if (r == -EEXIST || r == -ENOENT) {
    cs_warn ("lock: not releasing the lock object: it is not ours any more");
    r = 0;
  }
  else if (r == -EAGAIN) {
    /* An older write of ours is there: settle on it once more. */
    pthread_mutex_lock (&l->mu);
    memcpy (etag, l->etag, sizeof etag);
    pthread_mutex_unlock (&l->mu);
    r = write_ours (l, etag, &seen, &valid, &age, seen_etag);
    if (r == -EEXIST || r == -ENOENT)
      r = 0;
  }
  cs_fence_close (&l->wfence);
  if (r < 0)
    cs_warn ("lock: could not release the lock object (%s): the next start "
             "waits until its lease has run out", strerror (-r));
  free_lock (l);
  return r;
}

int
lock_release_delete (struct lock *l)
{
  struct lock_holder seen;
  struct objstore_info info;
  struct cs_buf b = CS_BUF_INIT;
  bool valid;
  int r;

  lock_stop (l);
  cs_fence_close (&l->wfence);
  if (l->epochs) {
    r = epoch_delete_all (l);
    free_lock (l);
    return r;
  }
  r = read_lock (l->os, &b, &info, &seen, &valid);
  cs_buf_free (&b);
  if (r == -ENOENT)
    r = 0;
  else if (r == 0 && valid && strcmp (seen.owner, l->me.owner) == 0)
    r = objstore_del (l->os, LOCK_KEY);
  else if (r == 0) {
    cs_warn ("lock: not deleting the lock object: it is not ours any more");
    r = 0;
  }
  free_lock (l);
  return r;
}

int
lock_break (struct objstore *os, bool force)
{
  /* Not "read, then delete": a new holder could take the stale lock over
   * between the two, and we would delete its fresh lock.  Take the lock
   * ourselves (a conditional replace of exactly the object judged stale,
   * as any taker does), then release our own.
   */
  struct lock_params p = { .lease = 60, .force = force,
                           .version = "s3chunk-unlock" };
  struct lock *l;
  int r;

  r = lock_acquire (os, &p, &l);
  if (r < 0)
    return r;
  return lock_release (l);
}
