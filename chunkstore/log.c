/* s3chunk: the injected logger. */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static void
default_sink (enum cs_log_level level, const char *msg)
{
  if (level <= CS_LOG_WARN)
    fprintf (stderr, "s3chunk: %s%s\n",
             level == CS_LOG_WARN ? "warning: " : "", msg);
}

static cs_log_fn sink = default_sink;

void
cs_log_set (cs_log_fn fn)
{
  sink = fn ? fn : default_sink;
}

void
cs_log (enum cs_log_level level, const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  sink (level, msg);
}
