/* s3chunk-nbd-resize: give a kernel NBD device (/dev/nbdX, attached with
 * nbd-client over netlink) the larger size of an export that grew while
 * it was attached, without detaching: the volume stays mounted.
 *
 *   s3chunk-nbd-resize DEVICE -unix SOCKET | HOST PORT  [options]
 *
 * Why it is this way (the man page is s3chunk-nbd-resize.pod):
 *
 * - The kernel's connections keep the size of their handshake (nbdkit
 *   checks every request against it), so the device must get new
 *   connections, and the driver's NBD_CMD_RECONFIGURE takes a new socket
 *   (NBD_ATTR_SOCKETS) only in place of a dead one (nbd_reconnect_socket
 *   in drivers/block/nbd.c; when none is dead it answers -ENOSPC, which
 *   nbd_genl_reconfigure turns into success).  So: open the new
 *   connections with the export name "s3chunk:replace-stale", whose first
 *   .open makes the plugin end the connections that were open when the
 *   volume grew; hand each new socket to the kernel; confirm it was taken
 *   from the kernel log ("reconnected socket"), trying again while the
 *   old socket is not dead yet.
 * - Before that, NBD_ATTR_DEAD_CONN_TIMEOUT: without it, a device whose
 *   only connection died fails every request with EIO at once; with it,
 *   requests wait for the new connection.  Afterwards it is put back to
 *   what nbd-client set: nothing (0) for Debian 12's nbd-client 3.24,
 *   which never sets it; newer nbd-client releases set 30 s with
 *   -persist (or -dead-conn-timeout): give -restore-dead-timeout then.
 * - While the connections are replaced, the filesystems mounted from the
 *   device are frozen (FIFREEZE: the kernel writes everything back and
 *   holds new writes), so that no request is in flight on the old
 *   connection when nbdkit ends it.  A request in flight then is what
 *   goes wrong: nbdkit 1.32 answers ESHUTDOWN (the kernel's EIO) to a
 *   request another of its threads had read just before the end of
 *   input, a reply to a request the kernel sent after nbdkit stopped
 *   reading is never sent, and a reply that fails to send can crash
 *   nbdkit 1.32 (assertion in raw_send_socket); tests/nbd-replace-check.c
 *   showed all three under a writer that never pauses.  -no-freeze
 *   skips it (a device without a filesystem, or one whose writer
 *   cannot wait a second).
 * - The size is read first, on a connection with an ordinary export name
 *   (NBD_OPT_INFO, no transmission), so that nothing is touched when it
 *   is not larger or not a multiple of the device's block size.
 *
 * It runs in an initramfs: libc only, raw generic netlink, its own
 * fixed-newstyle handshake.  Every failure prints one line: what failed,
 * the errno, what to do.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <endian.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <linux/fs.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>

#define PROG "s3chunk-nbd-resize"
#define REPLACE_EXPORT "s3chunk:replace-stale"

/* NBD protocol constants (the NBD protocol document, "Newstyle
 * negotiation").
 */
#define NBD_MAGIC UINT64_C (0x4e42444d41474943)          /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC UINT64_C (0x49484156454F5054)     /* "IHAVEOPT" */
#define NBD_REP_MAGIC UINT64_C (0x3e889045565a9)
#define FLAG_FIXED_NEWSTYLE 1
#define FLAG_NO_ZEROES 2
#define OPT_ABORT 2
#define OPT_INFO 6
#define OPT_GO 7
#define REP_ACK 1
#define REP_INFO 3
#define REP_FLAG_ERROR (UINT32_C (1) << 31)
#define INFO_EXPORT 0

static const char *device;
static unsigned nbd_index;

static void thaw_all (void);

static void
die (const char *fmt, ...)
{
  va_list ap;

  thaw_all ();

  fprintf (stderr, PROG ": %s: ", device ? device : "");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ sysfs */

/* The first line of /sys/block/nbdX/NAME, or "" if it cannot be read. */
static void
sys_read (const char *name, char *buf, size_t len)
{
  char path[256];
  FILE *fp;

  snprintf (path, sizeof path, "/sys/block/nbd%u/%s", nbd_index, name);
  buf[0] = '\0';
  fp = fopen (path, "re");
  if (fp == NULL)
    return;
  if (fgets (buf, len, fp) == NULL)
    buf[0] = '\0';
  fclose (fp);
  buf[strcspn (buf, "\n")] = '\0';
}

static uint64_t
sys_u64 (const char *name)
{
  char buf[64];

  sys_read (name, buf, sizeof buf);
  return strtoull (buf, NULL, 10);
}

/* The device's connections: the driver makes one hardware queue per
 * connection (blk_mq_update_nr_hw_queues in nbd_start_device), listed in
 * /sys/block/nbdX/mq.
 */
static unsigned
sys_connections (void)
{
  char path[256];
  struct dirent *d;
  unsigned n = 0;
  DIR *dir;

  snprintf (path, sizeof path, "/sys/block/nbd%u/mq", nbd_index);
  dir = opendir (path);
  if (dir == NULL)
    return 0;
  while ((d = readdir (dir)) != NULL)
    if (d->d_name[0] >= '0' && d->d_name[0] <= '9')
      n++;
  closedir (dir);
  return n;
}

/* ---------------------------------------------------------- NBD handshake */

static int
full_io (int fd, void *buf, size_t len, bool rd)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = rd ? read (fd, p, len) : write (fd, p, len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = ECONNRESET;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

static int
server_connect (const char *unix_path, const char *host, const char *port)
{
  int fd = -1, e;

  if (unix_path) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen (unix_path) >= sizeof sun.sun_path)
      die ("socket path %s is too long", unix_path);
    strcpy (sun.sun_path, unix_path);
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect (fd, (struct sockaddr *) &sun, sizeof sun) < 0)
      die ("connect to %s: %s: is nbdkit serving it?", unix_path,
           strerror (errno));
    return fd;
  }
  else {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *a;

    e = getaddrinfo (host, port, &hints, &res);
    if (e != 0)
      die ("resolve %s port %s: %s", host, port, gai_strerror (e));
    for (a = res; a; a = a->ai_next) {
      fd = socket (a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                   a->ai_protocol);
      if (fd >= 0 && connect (fd, a->ai_addr, a->ai_addrlen) == 0)
        break;
      e = errno;
      if (fd >= 0)
        close (fd);
      fd = -1;
      errno = e;
    }
    freeaddrinfo (res);
    if (fd < 0)
      die ("connect to %s port %s: %s: is nbdkit serving it?", host, port,
           strerror (errno));
    return fd;
  }
}

/* Fixed newstyle negotiation of export name with option opt (OPT_INFO or
 * OPT_GO).  Returns the export's size; with OPT_GO the socket is in the
 * transmission phase afterwards, ready for the kernel.
 */
static uint64_t
handshake (int fd, const char *name, uint32_t opt)
{
  struct { uint64_t magic, opts; uint16_t flags; } __attribute__ ((packed)) g;
  struct { uint64_t magic; uint32_t opt, type, len; }
    __attribute__ ((packed)) rep;
  uint32_t cflags, nlen = strlen (name);
  uint64_t size = 0;
  bool have_size = false;
  char buf[1024];

  if (full_io (fd, &g, sizeof g, true) < 0)
    die ("NBD handshake: reading the greeting: %s", strerror (errno));
  if (be64toh (g.magic) != NBD_MAGIC || be64toh (g.opts) != NBD_OPTS_MAGIC ||
      !(be16toh (g.flags) & FLAG_FIXED_NEWSTYLE))
    die ("NBD handshake: the server does not speak fixed newstyle NBD: is "
         "this nbdkit's socket?");
  cflags = htobe32 (FLAG_FIXED_NEWSTYLE |
                    (be16toh (g.flags) & FLAG_NO_ZEROES));
  {
    struct { uint64_t magic; uint32_t opt, len, nlen; }
      __attribute__ ((packed)) o = {
      htobe64 (NBD_OPTS_MAGIC), htobe32 (opt), htobe32 (4 + nlen + 2),
      htobe32 (nlen)
    };
    uint16_t ninfo = 0;

    if (full_io (fd, &cflags, sizeof cflags, false) < 0 ||
        full_io (fd, &o, sizeof o, false) < 0 ||
        full_io (fd, (void *) name, nlen, false) < 0 ||
        full_io (fd, &ninfo, sizeof ninfo, false) < 0)
      die ("NBD handshake: sending the option: %s", strerror (errno));
  }
  for (;;) {
    uint32_t len, type;

    if (full_io (fd, &rep, sizeof rep, true) < 0)
      die ("NBD handshake: reading a reply: %s", strerror (errno));
    len = be32toh (rep.len);
    type = be32toh (rep.type);
    if (be64toh (rep.magic) != NBD_REP_MAGIC || be32toh (rep.opt) != opt ||
        len > sizeof buf)
      die ("NBD handshake: malformed option reply");
    if (full_io (fd, buf, len, true) < 0)
      die ("NBD handshake: reading a reply: %s", strerror (errno));
    if (type & REP_FLAG_ERROR)
      die ("NBD handshake: export \"%s\" refused by the server (error "
           "%" PRIu32 "%s%.*s)", name, type & ~REP_FLAG_ERROR,
           len ? ": " : "", (int) len, buf);
    if (type == REP_INFO && len >= 12 &&
        be16toh (*(uint16_t *) buf) == INFO_EXPORT) {
      uint64_t s;
      memcpy (&s, buf + 2, 8);
      size = be64toh (s);
      have_size = true;
    }
    if (type == REP_ACK)
      break;
  }
  if (!have_size)
    die ("NBD handshake: the server did not say the export's size");
  if (opt == OPT_INFO) {
    struct { uint64_t magic; uint32_t opt, len; } __attribute__ ((packed))
      a = { htobe64 (NBD_OPTS_MAGIC), htobe32 (OPT_ABORT), 0 };
    (void) full_io (fd, &a, sizeof a, false);
  }
  return size;
}

/* ------------------------------------------------------ generic netlink */

struct nlbuf {
  char data[1024] __attribute__ ((aligned (NLMSG_ALIGNTO)));
  size_t len;
};

static struct nlattr *
nl_put (struct nlbuf *b, uint16_t type, const void *val, size_t len)
{
  struct nlattr *a = (struct nlattr *) (b->data + b->len);

  a->nla_type = type;
  a->nla_len = NLA_HDRLEN + len;
  if (len)
    memcpy ((char *) a + NLA_HDRLEN, val, len);
  b->len += NLA_ALIGN (a->nla_len);
  return a;
}

static void
nl_end (struct nlbuf *b, struct nlattr *nest)
{
  nest->nla_len = b->data + b->len - (char *) nest;
}

static void
nl_start (struct nlbuf *b, uint16_t family, uint8_t cmd)
{
  struct nlmsghdr *h = (struct nlmsghdr *) b->data;
  struct genlmsghdr *g = (struct genlmsghdr *) (b->data + NLMSG_HDRLEN);

  memset (b->data, 0, sizeof b->data);
  h->nlmsg_type = family;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h->nlmsg_seq = 1;
  g->cmd = cmd;
  g->version = family == GENL_ID_CTRL ? 1 : NBD_GENL_VERSION;
  b->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* Send b, wait for the kernel's answer.  0, or -errno from the kernel.
 * If reply is given, the first non-error answer is copied there.
 */
static int
nl_call (int nl, struct nlbuf *b, struct nlbuf *reply)
{
  struct nlmsghdr *h = (struct nlmsghdr *) b->data;
  char in[8192] __attribute__ ((aligned (NLMSG_ALIGNTO)));
  ssize_t n;

  h->nlmsg_len = b->len;
  if (send (nl, b->data, b->len, 0) < 0)
    return -errno;
  for (;;) {
    struct nlmsghdr *r;

    n = recv (nl, in, sizeof in, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    for (r = (struct nlmsghdr *) in; NLMSG_OK (r, (size_t) n);
         r = NLMSG_NEXT (r, n)) {
      if (r->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA (r);
        return e->error;        /* 0: the ACK */
      }
      if (reply && r->nlmsg_len <= sizeof reply->data) {
        memcpy (reply->data, r, r->nlmsg_len);
        reply->len = r->nlmsg_len;
        reply = NULL;
      }
    }
  }
}

static uint16_t
nbd_family (int nl)
{
  struct nlbuf b, rep;
  struct nlattr *a;
  size_t off;
  int r;

  nl_start (&b, GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
  nl_put (&b, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME,
          sizeof NBD_GENL_FAMILY_NAME);
  rep.len = 0;
  r = nl_call (nl, &b, &rep);
  if (r < 0 || rep.len == 0)
    die ("netlink: the kernel has no \"nbd\" family (%s): is the nbd "
         "module loaded, and new enough for netlink (Linux 4.12)?",
         strerror (r < 0 ? -r : ENOENT));
  for (off = NLMSG_HDRLEN + GENL_HDRLEN; off + NLA_HDRLEN <= rep.len;
       off += NLA_ALIGN (a->nla_len)) {
    a = (struct nlattr *) (rep.data + off);
    if (a->nla_len < NLA_HDRLEN)
      break;
    if (a->nla_type == CTRL_ATTR_FAMILY_ID)
      return *(uint16_t *) ((char *) a + NLA_HDRLEN);
  }
  die ("netlink: no family id in the kernel's answer");
  return 0;
}

static char backend[256];       /* /sys/block/nbdX/backend, if set */

/* ------------------------------------------------------------- freezing */

#define MAX_FROZEN 16
static int frozen[MAX_FROZEN];
static char frozen_at[MAX_FROZEN][256];
static int nfrozen;

static void
thaw_all (void)
{
  while (nfrozen > 0) {
    nfrozen--;
    if (ioctl (frozen[nfrozen], FITHAW, 0) < 0)
      fprintf (stderr, PROG ": %s: THAW %s FAILED: %s: its writers wait "
               "until you run 'fsfreeze -u %s'\n", device,
               frozen_at[nfrozen], strerror (errno), frozen_at[nfrozen]);
    close (frozen[nfrozen]);
  }
}

/* Freeze every filesystem mounted from the device or its partitions. */
static void
freeze_mounts (void)
{
  char line[1024], dev[64];
  size_t dlen;
  FILE *fp = fopen ("/proc/self/mounts", "re");

  if (fp == NULL)
    die ("read /proc/self/mounts: %s: give -no-freeze to go on without "
         "freezing", strerror (errno));
  snprintf (dev, sizeof dev, "/dev/nbd%u", nbd_index);
  dlen = strlen (dev);
  while (fgets (line, sizeof line, fp)) {
    char src[256], dir[256];
    int fd;

    if (sscanf (line, "%255s %255s", src, dir) != 2 ||
        strncmp (src, dev, dlen) != 0 ||
        (src[dlen] != '\0' && src[dlen] != 'p'))
      continue;
    if (nfrozen == MAX_FROZEN)
      break;
    fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ioctl (fd, FIFREEZE, 0) < 0) {
      int e = errno;
      if (fd >= 0)
        close (fd);
      fclose (fp);
      thaw_all ();
      die ("freeze %s (FIFREEZE): %s: nothing changed; give -no-freeze "
           "to replace the connections under a running writer (see the "
           "man page)", dir, strerror (e));
    }
    frozen[nfrozen] = fd;
    snprintf (frozen_at[nfrozen], sizeof frozen_at[0], "%s", dir);
    nfrozen++;
    printf (PROG ": %s: %s frozen while the connections are replaced\n",
            device, dir);
  }
  fclose (fp);
}

/* NBD_CMD_RECONFIGURE of our device with one u64 attribute or one socket. */
static int
reconfigure (int nl, uint16_t fam, uint16_t attr, uint64_t val, int sock)
{
  struct nlbuf b;
  uint32_t idx = nbd_index;

  nl_start (&b, fam, NBD_CMD_RECONFIGURE);
  nl_put (&b, NBD_ATTR_INDEX, &idx, sizeof idx);
  /* A device attached with an identifier (nbd-client -i) is reconfigured
   * only by who names it.
   */
  if (backend[0])
    nl_put (&b, NBD_ATTR_BACKEND_IDENTIFIER, backend, strlen (backend) + 1);
  if (sock >= 0) {
    struct nlattr *socks = nl_put (&b, NBD_ATTR_SOCKETS, NULL, 0);
    struct nlattr *item = nl_put (&b, NBD_SOCK_ITEM, NULL, 0);
    uint32_t fd = sock;

    nl_put (&b, NBD_SOCK_FD, &fd, sizeof fd);
    nl_end (&b, item);
    nl_end (&b, socks);
  }
  else
    nl_put (&b, attr, &val, sizeof val);
  return nl_call (nl, &b, NULL);
}

/* ---------------------------------------------------------- kernel log */

/* /dev/kmsg from its end: what the kernel logs from now on. */
static int
kmsg_open (void)
{
  int fd = open ("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

  if (fd < 0)
    die ("open /dev/kmsg: %s: it is needed to tell whether the kernel took "
         "a socket (mount devtmpfs on /dev)", strerror (errno));
  if (lseek (fd, 0, SEEK_END) < 0)
    die ("seek /dev/kmsg: %s", strerror (errno));
  return fd;
}

/* Did the kernel log "nbdX: reconnected socket" since the last call? */
static bool
kmsg_reconnected (int fd)
{
  char rec[2048], want[64];
  bool seen = false;
  ssize_t n;

  snprintf (want, sizeof want, "nbd%u: reconnected socket", nbd_index);
  for (;;) {
    n = read (fd, rec, sizeof rec - 1);
    if (n < 0 && errno == EPIPE)
      continue;                 /* records overwritten: go on */
    if (n <= 0)
      break;
    rec[n] = '\0';
    if (strstr (rec, want))
      seen = true;
  }
  return seen;
}

/* ---------------------------------------------------------------- main */

static void
usage (void)
{
  fprintf (stderr,
           "usage: " PROG " DEVICE -unix SOCKET [OPTION...]\n"
           "       " PROG " DEVICE HOST PORT [OPTION...]\n"
           "Options:\n"
           "  -C N                      connections to give (default: the "
           "device's)\n"
           "  -dead-timeout SECS        how long requests wait for the new "
           "connections (120)\n"
           "  -restore-dead-timeout SECS  set afterwards (0, what "
           "nbd-client 3.24 leaves)\n"
           "  -wait SECS                how long to retry while the old "
           "connection is not dead yet (60)\n"
           "  -no-freeze                do not freeze the device's "
           "filesystems meanwhile\n");
  exit (2);
}

int
main (int argc, char **argv)
{
  const char *unix_path = NULL, *host = NULL, *port = NULL;
  unsigned conns = 0, i;
  uint64_t dead = 120, restore = 0, cur, bs, want;
  double wait_secs = 60;
  bool freeze = true;
  uint16_t fam;
  int nl, kmsg, r, a;
  struct sockaddr_nl snl = { .nl_family = AF_NETLINK };
  char pid[32];

  if (argc < 3)
    usage ();
  device = argv[1];
  if (sscanf (device, "/dev/nbd%u", &nbd_index) != 1 &&
      sscanf (device, "nbd%u", &nbd_index) != 1)
    die ("not an NBD device name (expected /dev/nbdN)");
  a = 2;
  if (strcmp (argv[a], "-unix") == 0 || strcmp (argv[a], "-u") == 0) {
    if (a + 1 >= argc)
      usage ();
    unix_path = argv[a + 1];
    a += 2;
  }
  else {
    if (a + 1 >= argc)
      usage ();
    host = argv[a];
    port = argv[a + 1];
    a += 2;
  }
  for (; a < argc; a += 2) {
    if (strcmp (argv[a], "-no-freeze") == 0) {
      freeze = false;
      a--;
      continue;
    }
    if (a + 1 >= argc)
      usage ();
    if (strcmp (argv[a], "-C") == 0 || strcmp (argv[a], "-connections") == 0)
      conns = strtoul (argv[a + 1], NULL, 10);
    else if (strcmp (argv[a], "-dead-timeout") == 0)
      dead = strtoull (argv[a + 1], NULL, 10);
    else if (strcmp (argv[a], "-restore-dead-timeout") == 0)
      restore = strtoull (argv[a + 1], NULL, 10);
    else if (strcmp (argv[a], "-wait") == 0)
      wait_secs = strtod (argv[a + 1], NULL);
    else
      usage ();
  }
  if (dead == 0)
    die ("-dead-timeout 0 would fail requests with EIO while the "
         "connections are replaced: give at least a few seconds");

  /* The device as it is. */
  sys_read ("pid", pid, sizeof pid);
  if (pid[0] == '\0')
    die ("not attached (no /sys/block/nbd%u/pid): attach it with "
         "nbd-client first", nbd_index);
  cur = sys_u64 ("size") * 512;
  bs = sys_u64 ("queue/logical_block_size");
  if (bs == 0)
    bs = 512;
  if (conns == 0)
    conns = sys_connections ();
  if (conns == 0)
    die ("cannot tell the device's number of connections from "
         "/sys/block/nbd%u/mq: give -C N (nbd-client's -C)", nbd_index);
  sys_read ("backend", backend, sizeof backend);

  /* The export's size, touching nothing. */
  {
    int fd = server_connect (unix_path, host, port);
    want = handshake (fd, "", OPT_INFO);
    close (fd);
  }
  if (want <= cur)
    die ("the export has %" PRIu64 " bytes, the device %" PRIu64 ": not "
         "larger, nothing done (did 's3chunk grow' report success?)",
         want, cur);
  if (want % bs)
    die ("the export's new size %" PRIu64 " is not a multiple of the "
         "device's block size %" PRIu64 ": nothing done; grow the volume "
         "to a multiple of it", want, bs);
  printf (PROG ": %s: %" PRIu64 " -> %" PRIu64 " bytes, %u connection(s)\n",
          device, cur, want, conns);

  nl = socket (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (nl < 0 || bind (nl, (struct sockaddr *) &snl, sizeof snl) < 0)
    die ("netlink socket: %s", strerror (errno));
  fam = nbd_family (nl);
  kmsg = kmsg_open ();

  /* No request in flight on the old connections when they end. */
  if (freeze)
    freeze_mounts ();

  /* Requests wait for the new connections instead of failing. */
  r = reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, dead, -1);
  if (r < 0)
    die ("set the dead-connection timeout (NBD_CMD_RECONFIGURE): %s: is it "
         "attached with netlink (nbd-client without -nonetlink)?",
         strerror (-r));

  for (i = 0; i < conns; ++i) {
    int fd = server_connect (unix_path, host, port);
    uint64_t s = handshake (fd, REPLACE_EXPORT, OPT_GO);
    double t0 = now ();
    bool taken = false;

    if (s != want) {
      reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, restore, -1);
      die ("connection %u has size %" PRIu64 ", the first %" PRIu64 ": the "
           "export changed meanwhile; run again", i + 1, s, want);
    }
    /* The old connection dies when nbdkit has closed it (after the
     * replies to what it had read) and the kernel noticed: until then the
     * kernel has no dead slot and drops the socket (-ENOSPC, reported as
     * success): try again.
     */
    while (!taken) {
      r = reconfigure (nl, fam, 0, 0, fd);
      if (r < 0) {
        reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, restore, -1);
        die ("give connection %u to the kernel (NBD_CMD_RECONFIGURE): %s",
             i + 1, strerror (-r));
      }
      usleep (100 * 1000);
      taken = kmsg_reconnected (kmsg);
      if (!taken && now () - t0 > wait_secs) {
        reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, restore, -1);
        die ("the kernel took no new connection within %.0f s (no "
             "\"reconnected socket\" in its log): the old connection is "
             "still alive: is nbdkit's s3chunk plugin new enough (export "
             "\"%s\")?  The device keeps its old size and works", wait_secs,
             REPLACE_EXPORT);
      }
      if (!taken)
        usleep (200 * 1000);
    }
    close (fd);                 /* the kernel holds its own reference */
    printf (PROG ": %s: connection %u replaced\n", device, i + 1);
  }

  thaw_all ();
  r = reconfigure (nl, fam, NBD_ATTR_SIZE_BYTES, want, -1);
  if (r < 0) {
    reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, restore, -1);
    die ("set the size (NBD_CMD_RECONFIGURE): %s: the connections are new, "
         "the device has its old size; run again", strerror (-r));
  }
  r = reconfigure (nl, fam, NBD_ATTR_DEAD_CONN_TIMEOUT, restore, -1);
  if (r < 0)
    fprintf (stderr, PROG ": %s: warning: restoring the dead-connection "
             "timeout to %" PRIu64 " s failed: %s\n", device, restore,
             strerror (-r));
  if (sys_u64 ("size") * 512 != want)
    die ("the kernel reports %" PRIu64 " bytes after setting %" PRIu64,
         sys_u64 ("size") * 512, want);
  printf (PROG ": %s: now %" PRIu64 " bytes: grow the filesystem "
          "(resize2fs %s, or xfs_growfs MOUNTPOINT)\n", device, want, device);
  return 0;
}
