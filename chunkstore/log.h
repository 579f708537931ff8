/* s3chunk: the injected logger used by everything below the plugin.
 *
 * chunkstore/ never talks to nbdkit or to stderr directly: the plugin routes
 * messages to nbdkit_error / nbdkit_debug, the tools and unit tests to stderr.
 */
#ifndef S3CHUNK_LOG_H
#define S3CHUNK_LOG_H

enum cs_log_level {
  CS_LOG_ERROR,                 /* an operation failed; one line that says why */
  CS_LOG_WARN,                  /* something the operator should know about */
  CS_LOG_INFO,                  /* rare, useful facts (volume created, grown) */
  CS_LOG_DEBUG,                 /* retries, timings: only with -v / debug on */
};

typedef void (*cs_log_fn) (enum cs_log_level level, const char *msg);

/* Install the sink for all messages.  NULL restores the default, which
 * prints errors and warnings to stderr and drops the rest.  Not thread-safe:
 * call before any other thread starts.
 */
extern void cs_log_set (cs_log_fn fn);

/* Format and send one message (no trailing newline needed). */
extern void cs_log (enum cs_log_level level, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#define cs_error(...) cs_log (CS_LOG_ERROR, __VA_ARGS__)
#define cs_warn(...)  cs_log (CS_LOG_WARN, __VA_ARGS__)
#define cs_info(...)  cs_log (CS_LOG_INFO, __VA_ARGS__)
#define cs_debug(...) cs_log (CS_LOG_DEBUG, __VA_ARGS__)

#endif /* S3CHUNK_LOG_H */
