/* s3chunk tests: one NBD connection held open, for the online grow test.
 *
 *   nbd-hold --socket SOCK [--export NAME] [--size N] [--ready FILE]
 *            [--hold SECS]
 *
 * Connects (with export name NAME), checks that the size the handshake
 * gave is N, writes that size to FILE, then with --hold reads 512 bytes at
 * offset 0 every 50 ms until the server ends the connection: exit 0 if it
 * did within SECS, 1 if the connection was still working then (or any
 * other failure, with a message).  Without --hold it disconnects at once.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

int
main (int argc, char **argv)
{
  const char *sock = NULL, *export = "", *ready = NULL;
  double hold = -1;
  int64_t want = -1, size;
  struct nbd_handle *h;
  struct timespec t0, t;
  char buf[512];
  int i;

  for (i = 1; i + 1 < argc; i += 2) {
    if (strcmp (argv[i], "--socket") == 0) sock = argv[i + 1];
    else if (strcmp (argv[i], "--export") == 0) export = argv[i + 1];
    else if (strcmp (argv[i], "--size") == 0) want = strtoll (argv[i + 1], NULL, 0);
    else if (strcmp (argv[i], "--ready") == 0) ready = argv[i + 1];
    else if (strcmp (argv[i], "--hold") == 0) hold = strtod (argv[i + 1], NULL);
    else break;
  }
  if (sock == NULL || i != argc) {
    fprintf (stderr, "usage: nbd-hold --socket SOCK [--export NAME] "
             "[--size N] [--ready FILE] [--hold SECS]\n");
    return 2;
  }
  h = nbd_create ();
  if (h == NULL || nbd_set_export_name (h, export) == -1 ||
      nbd_connect_unix (h, sock) == -1) {
    fprintf (stderr, "nbd-hold: connect: %s\n", nbd_get_error ());
    return 1;
  }
  size = nbd_get_size (h);
  if (want >= 0 && size != want) {
    fprintf (stderr, "nbd-hold: FAILED: the handshake gave size %" PRId64
             ", expected %" PRId64 "\n", size, want);
    return 1;
  }
  if (ready) {
    FILE *fp = fopen (ready, "w");
    if (fp == NULL || fprintf (fp, "%" PRId64 "\n", size) < 0 ||
        fclose (fp) != 0) {
      perror (ready);
      return 1;
    }
  }
  if (hold < 0) {
    nbd_shutdown (h, 0);
    nbd_close (h);
    return 0;
  }
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (nbd_pread (h, buf, sizeof buf, 0, 0) == -1) {
      printf ("nbd-hold: the server ended the connection: %s\n",
              nbd_get_error ());
      nbd_close (h);
      return 0;
    }
    clock_gettime (CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > hold) {
      fprintf (stderr, "nbd-hold: FAILED: the connection still works after "
               "%.0f s\n", hold);
      nbd_close (h);
      return 1;
    }
    usleep (50 * 1000);
  }
}
