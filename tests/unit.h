/* s3chunk: a tiny harness for the C unit tests.
 *
 * CHECK(cond) records a failure with file:line and goes on; the test's
 * main returns unit_done(), which prints "N passed, N failed" for its
 * checks and exits 1 if any failed (automake counts the program as FAIL).
 */
#ifndef S3CHUNK_UNIT_H
#define S3CHUNK_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static unsigned unit_passed, unit_failed;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond)                                                           \
      unit_passed++;                                                    \
    else {                                                              \
      unit_failed++;                                                    \
      fprintf (stderr, "%s:%d: FAIL: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                   \
  } while (0)

/* Check an int result equals an expected value, showing both. */
#define CHECK_EQ(got, want)                                             \
  do {                                                                  \
    long long g_ = (long long) (got), w_ = (long long) (want);          \
    if (g_ == w_)                                                       \
      unit_passed++;                                                    \
    else {                                                              \
      unit_failed++;                                                    \
      fprintf (stderr, "%s:%d: FAIL: %s == %lld, expected %lld\n",      \
               __FILE__, __LINE__, #got, g_, w_);                       \
    }                                                                   \
  } while (0)

/* Check a string result equals an expected one, showing both. */
#define CHECK_STR(got, want)                                            \
  do {                                                                  \
    const char *g_ = (got), *w_ = (want);                               \
    if (g_ != NULL && strcmp (g_, w_) == 0)                             \
      unit_passed++;                                                    \
    else {                                                              \
      unit_failed++;                                                    \
      fprintf (stderr, "%s:%d: FAIL: %s\n  got:  %s\n  want: %s\n",     \
               __FILE__, __LINE__, #got, g_ ? g_ : "(null)", w_);       \
    }                                                                   \
  } while (0)

/* Messages logged by the library are kept so tests can check them. */
static char unit_last_log[2048];
static unsigned unit_errors_logged;

static void
unit_log (enum cs_log_level level, const char *msg)
{
  if (level <= CS_LOG_WARN) {
    snprintf (unit_last_log, sizeof unit_last_log, "%s", msg);
    unit_errors_logged++;
  }
  if (getenv ("UNIT_VERBOSE"))
    fprintf (stderr, "  log: %s\n", msg);
}

static inline void
unit_init (void)
{
  cs_log_set (unit_log);
}

/* True if the last error or warning logged contains s. */
static inline int
unit_logged (const char *s)
{
  return strstr (unit_last_log, s) != NULL;
}

static inline int
unit_done (const char *name)
{
  printf ("%s: %u passed, %u failed\n", name, unit_passed, unit_failed);
  return unit_failed ? 1 : 0;
}

/* A fresh empty directory under $TMPDIR (or /tmp), removed by unit_rmdir. */
static inline char *
unit_tmpdir (void)
{
  const char *base = getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp";
  char *path;

  if (asprintf (&path, "%s/s3chunk-unit-XXXXXX", base) < 0 ||
      mkdtemp (path) == NULL) {
    perror ("mkdtemp");
    exit (77);
  }
  return path;
}

static inline void
unit_rmdir (char *path)
{
  char *cmd;

  if (asprintf (&cmd, "rm -rf '%s'", path) >= 0) {
    if (system (cmd) != 0)
      fprintf (stderr, "warning: could not remove %s\n", path);
    free (cmd);
  }
  free (path);
}

#endif /* S3CHUNK_UNIT_H */
