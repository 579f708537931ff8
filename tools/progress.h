/* s3chunk: progress of a long command (fsck, destroy) on stderr.
 *
 * On a terminal: one bar redrawn in place (5 times a second), with the
 * rate and the time left.  Otherwise (a log, a pipe): a plain line every
 * 10 s, so logs stay readable.  $S3CHUNK_PROGRESS_INTERVAL (seconds)
 * overrides either period (the tests use it).
 * Messages printed with progress_printf clear the bar first and redraw it
 * after, so they never mix with it.  One progress at a time.
 */
#ifndef S3CHUNK_PROGRESS_H
#define S3CHUNK_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Start showing the progress of `what` ("fsck", "destroy") over total
 * items (objects) of total_bytes bytes (0 if unknown).  quiet: show
 * nothing.
 */
extern void progress_start (const char *what, const char *unit,
                            uint64_t total, uint64_t total_bytes, bool quiet);

/* Items and bytes done so far, and problems found (shown when non-zero).
 * Redraws when due; cheap to call often.  From one thread.
 */
extern void progress_update (uint64_t done, uint64_t bytes, uint64_t problems);

/* Remove the bar (a final plain line when not on a terminal). */
extern void progress_end (void);

/* printf to fp, clearing the bar first when fp shares the terminal.
 * Thread-safe.
 */
extern void progress_printf (FILE *fp, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* "1:02:03" / "2:03" for a number of seconds. */
extern const char *progress_format_duration (double secs, char *buf,
                                             size_t len);

#endif /* S3CHUNK_PROGRESS_H */
