/* s3chunk: progress bar and periodic progress lines (progress.h). */
#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "params.h"
#include "progress.h"

#define TTY_INTERVAL 0.2
#define PLAIN_INTERVAL 10.0

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
  bool active, tty, drawn;
  bool printed;                 /* plain: a line was printed, */
  uint64_t printed_done;        /* at this count */
  const char *what, *unit;
  uint64_t total, total_bytes;
  uint64_t done, bytes, problems;
  double start, last_draw, interval;
} P;

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *
progress_format_duration (double secs, char *buf, size_t len)
{
  uint64_t s = secs < 0 ? 0 : secs > 1e8 ? 100000000 : (uint64_t) (secs + 0.5);

  if (s >= 3600)
    snprintf (buf, len, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
              s / 3600, s / 60 % 60, s % 60);
  else
    snprintf (buf, len, "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
  return buf;
}

static unsigned
term_width (void)
{
  struct winsize ws;

  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
    return ws.ws_col > 200 ? 200 : ws.ws_col;
  return 80;
}

/* The numbers after the bar: "1234/5000 objects, 56.1 MiB/s, 0:23 left". */
static void
format_stats (char *buf, size_t len, double t)
{
  double elapsed = t - P.start, rate_items, rate_bytes;
  char rate[48] = "", left[48] = "", d[32], probs[48] = "";

  rate_items = elapsed > 0 ? P.done / elapsed : 0;
  rate_bytes = elapsed > 0 ? P.bytes / elapsed : 0;
  if (P.total_bytes > 0 && rate_bytes > 0)
    snprintf (rate, sizeof rate, ", %.1f MiB/s", rate_bytes / 1048576.0);
  else if (rate_items > 0)
    snprintf (rate, sizeof rate, ", %.0f %s/s", rate_items, P.unit);
  if (elapsed >= 1 && P.done > 0 && P.done < P.total) {
    double secs;
    if (P.total_bytes > 0 && P.bytes > 0 && P.bytes < P.total_bytes)
      secs = (P.total_bytes - P.bytes) / rate_bytes;
    else
      secs = (P.total - P.done) / rate_items;
    snprintf (left, sizeof left, ", %s left",
              progress_format_duration (secs, d, sizeof d));
  }
  if (P.problems)
    snprintf (probs, sizeof probs, ", %" PRIu64 " problem%s", P.problems,
              P.problems == 1 ? "" : "s");
  snprintf (buf, len, "%" PRIu64 "/%" PRIu64 " %s%s%s%s",
            P.done, P.total, P.unit, rate, left, probs);
}

/* Called with mu held. */
static void
draw (double t)
{
  char stats[160];
  unsigned pct = P.total ? (unsigned) (P.done * 100 / P.total) : 100;

  format_stats (stats, sizeof stats, t);
  if (P.tty) {
    int width = term_width ();
    int barw = width - (int) strlen (P.what) - (int) strlen (stats) - 12;
    char bar[201];
    int i, fill;

    if (barw > 50)
      barw = 50;
    if (barw < 10)
      barw = 0;
    fill = P.total ? (int) ((double) P.done / P.total * barw) : barw;
    for (i = 0; i < barw; ++i)
      bar[i] = i < fill ? '#' : '.';
    bar[barw] = '\0';
    fprintf (stderr, "\r\033[K%s %s%s%s %3u%% %s", P.what,
             barw ? "[" : "", bar, barw ? "]" : "", pct, stats);
    P.drawn = true;
  }
  else {
    fprintf (stderr, "s3chunk: %s: %3u%%, %s\n", P.what, pct, stats);
    P.printed = true;
    P.printed_done = P.done;
  }
  fflush (stderr);
  P.last_draw = t;
}

static void
clear_bar (void)
{
  if (P.drawn) {
    fputs ("\r\033[K", stderr);
    fflush (stderr);
    P.drawn = false;
  }
}

void
progress_start (const char *what, const char *unit, uint64_t total,
                uint64_t total_bytes, bool quiet)
{
  const char *e = getenv ("S3CHUNK_PROGRESS_INTERVAL");
  double iv;

  pthread_mutex_lock (&mu);
  memset (&P, 0, sizeof P);
  P.active = !quiet;
  P.tty = isatty (STDERR_FILENO);
  P.what = what;
  P.unit = unit;
  P.total = total;
  P.total_bytes = total_bytes;
  P.start = P.last_draw = now ();
  P.interval = P.tty ? TTY_INTERVAL : PLAIN_INTERVAL;
  if (e && params_parse_seconds (e, &iv) == 0)
    P.interval = iv;
  pthread_mutex_unlock (&mu);
}

void
progress_update (uint64_t done, uint64_t bytes, uint64_t problems)
{
  double t = now ();

  pthread_mutex_lock (&mu);
  P.done = done;
  P.bytes = bytes;
  P.problems = problems;
  if (P.active && t - P.last_draw >= P.interval)
    draw (t);
  pthread_mutex_unlock (&mu);
}

void
progress_end (void)
{
  pthread_mutex_lock (&mu);
  if (P.active) {
    if (P.tty)
      clear_bar ();
    else if (P.printed && P.printed_done != P.done)
      draw (now ());            /* the last plain line: 100% */
  }
  P.active = false;
  pthread_mutex_unlock (&mu);
}

void
progress_printf (FILE *fp, const char *fmt, ...)
{
  bool redraw;
  va_list ap;

  pthread_mutex_lock (&mu);
  /* stdout may be the same terminal as the bar on stderr. */
  redraw = P.active && P.drawn && (fp == stderr || isatty (fileno (fp)));
  if (redraw)
    clear_bar ();
  va_start (ap, fmt);
  vfprintf (fp, fmt, ap);
  va_end (ap);
  fflush (fp);
  if (redraw)
    draw (now ());
  pthread_mutex_unlock (&mu);
}
