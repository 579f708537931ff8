/* s3chunk: parsing of parameter values shared by the plugin and the tools.
 * Each returns 0 or -EINVAL; the caller names the parameter in its message.
 */
#ifndef S3CHUNK_PARAMS_H
#define S3CHUNK_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte count: digits with an optional suffix K, M, G, T, P or E (powers
 * of 1024, upper or lower case, an optional trailing "iB" or "B").
 * Refuses signs, spaces, empty strings, overflow.
 */
extern int params_parse_size (const char *s, uint64_t *out);

/* true/false, yes/no, on/off, 1/0. */
extern int params_parse_bool (const char *s, bool *out);

/* A non-negative integer within [min, max]. */
extern int params_parse_uint (const char *s, uint64_t min, uint64_t max,
                              uint64_t *out);

/* Seconds, possibly fractional ("0.5", "30"), or with a unit suffix
 * "ms", "s", "m", "h".  Within [0, 1e9].
 */
extern int params_parse_seconds (const char *s, double *out);

/* True if s is exactly len lowercase hexadecimal digits (ids, digests). */
extern bool params_is_hex (const char *s, size_t len);

/* Format bytes as "1 GiB", "512 KiB", "1234 bytes" (exact units only when
 * exact, else one decimal).  Returns buf.
 */
extern const char *params_format_size (uint64_t bytes, char *buf, size_t len);

#endif /* S3CHUNK_PARAMS_H */
