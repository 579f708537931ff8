/* bench/read-streams: N sequential readers of an NBD disk, each over its
 * own region (the disk split in N equal parts) on its own connection,
 * one request of REQ bytes at a time, in order.  Prints the seconds taken
 * and MB/s over all readers, and a checksum of what was read (the sum of
 * its 64-bit words) so that two runs can be compared.
 *
 *   read-streams SOCKET NSTREAMS [REQ]        (REQ default 256K)
 *   read-streams SOCKET NSTREAMS REQ interleave
 *
 * With "interleave" one thread on one connection takes the N readers'
 * requests in turn, one request at a time: two files copied by one
 * process, or a filesystem's metadata reads between the data of a file.
 *
 * Build: gcc -O2 -o read-streams read-streams.c -lnbd -lpthread
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

struct stream {
  pthread_t t;
  const char *sock;
  uint64_t from, to, req, sum;
  int err;
};

static void *
run (void *arg)
{
  struct stream *s = arg;
  struct nbd_handle *h = nbd_create ();
  char *buf = malloc (s->req);
  uint64_t off;

  if (h == NULL || buf == NULL || nbd_connect_unix (h, s->sock) == -1) {
    fprintf (stderr, "read-streams: connect: %s\n", nbd_get_error ());
    s->err = 1;
    return NULL;
  }
  for (off = s->from; off < s->to; off += s->req) {
    uint64_t n = s->to - off < s->req ? s->to - off : s->req;
    if (nbd_pread (h, buf, n, off, 0) == -1) {
      fprintf (stderr, "read-streams: pread %" PRIu64 ": %s\n", off,
               nbd_get_error ());
      s->err = 1;
      break;
    }
    for (uint64_t i = 0; i + 8 <= n; i += 8) {
      uint64_t w;
      memcpy (&w, buf + i, 8);
      s->sum += w;
    }
  }
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (buf);
  return NULL;
}

/* The interleaved reader's one connection. */
static struct nbd_handle *one_h;
static char *one_buf;

static int
read_range (struct stream *s)
{
  uint64_t n = s->to - s->from;

  if (one_h == NULL) {
    one_h = nbd_create ();
    one_buf = malloc (s->req);
    if (one_h == NULL || one_buf == NULL ||
        nbd_connect_unix (one_h, s->sock) == -1) {
      fprintf (stderr, "read-streams: connect: %s\n", nbd_get_error ());
      return 1;
    }
  }
  if (nbd_pread (one_h, one_buf, n, s->from, 0) == -1) {
    fprintf (stderr, "read-streams: pread %" PRIu64 ": %s\n", s->from,
             nbd_get_error ());
    return 1;
  }
  for (uint64_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy (&w, one_buf + i, 8);
    s->sum += w;
  }
  return 0;
}

static void
close_one (void)
{
  if (one_h) {
    nbd_shutdown (one_h, 0);
    nbd_close (one_h);
  }
  free (one_buf);
}

int
main (int argc, char **argv)
{
  struct nbd_handle *h;
  struct stream *s;
  struct timespec t0, t1;
  uint64_t size, part, req = 256 * 1024, sum = 0;
  unsigned n, i;
  int err = 0;
  double secs;

  if (argc < 3) {
    fprintf (stderr, "usage: read-streams SOCKET NSTREAMS [REQ]\n");
    return 2;
  }
  n = atoi (argv[2]);
  if (argc > 3)
    req = strtoull (argv[3], NULL, 0);
  h = nbd_create ();
  if (h == NULL || nbd_connect_unix (h, argv[1]) == -1 ||
      (int64_t) (size = nbd_get_size (h)) < 0) {
    fprintf (stderr, "read-streams: %s\n", nbd_get_error ());
    return 1;
  }
  nbd_close (h);
  if (n < 1 || req < 512) {
    fprintf (stderr, "read-streams: bad NSTREAMS or REQ\n");
    return 2;
  }
  s = calloc (n, sizeof *s);
  part = size / n / req * req;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (i = 0; i < n; ++i) {
    s[i].sock = argv[1];
    s[i].req = req;
    s[i].from = i * part;
    s[i].to = i + 1 == n ? size : (i + 1) * part;
  }
  if (argc > 4 && strcmp (argv[4], "interleave") == 0) {
    /* One stream object per region, run one request at a time in turn. */
    struct stream one = { .sock = argv[1] };
    bool more = true;

    while (more && !err) {
      more = false;
      for (i = 0; i < n; ++i) {
        if (s[i].from >= s[i].to)
          continue;
        one.req = req;
        one.from = s[i].from;
        one.to = s[i].from + req < s[i].to ? s[i].from + req : s[i].to;
        one.sum = 0;
        err |= read_range (&one);
        sum += one.sum;
        s[i].from = one.to;
        more = true;
      }
    }
    close_one ();
  }
  else {
    for (i = 0; i < n; ++i)
      pthread_create (&s[i].t, NULL, run, &s[i]);
    for (i = 0; i < n; ++i) {
      pthread_join (s[i].t, NULL);
      err |= s[i].err;
      sum += s[i].sum;
    }
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf ("%.3f s %.1f MB/s sum %016" PRIx64 "\n", secs, size / secs / 1e6,
          sum);
  return err;
}
