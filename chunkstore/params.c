/* s3chunk: parsing of parameter values. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "params.h"

int
params_parse_size (const char *s, uint64_t *out)
{
  static const char units[] = "KMGTPE";
  uint64_t v = 0, mult = 1;
  const char *p = s, *u;

  if (*p < '0' || *p > '9')
    return -EINVAL;
  for (; *p >= '0' && *p <= '9'; ++p) {
    if (v > (UINT64_MAX - (*p - '0')) / 10)
      return -EINVAL;
    v = v * 10 + (*p - '0');
  }
  if (*p) {
    char c = *p >= 'a' && *p <= 'z' ? *p - 32 : *p;
    if (c == 'B' && p[1] == '\0')
      p++;
    else if ((u = strchr (units, c)) != NULL && c != '\0') {
      for (int i = 0; i <= u - units; ++i)
        mult *= 1024;
      p++;
      if (strcasecmp (p, "iB") == 0 || strcasecmp (p, "B") == 0)
        p += strlen (p);
    }
  }
  if (*p != '\0')
    return -EINVAL;
  if (v && mult > UINT64_MAX / v)
    return -EINVAL;
  *out = v * mult;
  return 0;
}

int
params_parse_bool (const char *s, bool *out)
{
  if (!strcasecmp (s, "true") || !strcasecmp (s, "yes") ||
      !strcasecmp (s, "on") || !strcmp (s, "1"))
    *out = true;
  else if (!strcasecmp (s, "false") || !strcasecmp (s, "no") ||
           !strcasecmp (s, "off") || !strcmp (s, "0"))
    *out = false;
  else
    return -EINVAL;
  return 0;
}

int
params_parse_uint (const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
  uint64_t v = 0;
  const char *p;

  if (*s == '\0')
    return -EINVAL;
  for (p = s; *p; ++p) {
    if (*p < '0' || *p > '9' || v > (UINT64_MAX - (*p - '0')) / 10)
      return -EINVAL;
    v = v * 10 + (*p - '0');
  }
  if (v < min || v > max)
    return -EINVAL;
  *out = v;
  return 0;
}

int
params_parse_seconds (const char *s, double *out)
{
  char *end;
  double v;

  if ((*s < '0' || *s > '9') && *s != '.')
    return -EINVAL;
  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || !isfinite (v))
    return -EINVAL;
  if (strcmp (end, "ms") == 0)
    v /= 1000;
  else if (strcmp (end, "m") == 0)
    v *= 60;
  else if (strcmp (end, "h") == 0)
    v *= 3600;
  else if (*end != '\0' && strcmp (end, "s") != 0)
    return -EINVAL;
  if (v < 0 || v > 1e9)
    return -EINVAL;
  *out = v;
  return 0;
}

const char *
params_format_size (uint64_t bytes, char *buf, size_t len)
{
  static const char *units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  int i = -1;
  uint64_t v = bytes;

  while (v >= 1024 && i < 5) {
    if (v % 1024) {
      double d = bytes;
      int j;
      for (j = 0; d >= 1024 && j < 6; ++j)
        d /= 1024;
      snprintf (buf, len, "%.1f %s", d, units[j - 1]);
      return buf;
    }
    v /= 1024;
    i++;
  }
  if (i < 0)
    snprintf (buf, len, "%" PRIu64 " bytes", bytes);
  else
    snprintf (buf, len, "%" PRIu64 " %s", v, units[i]);
  return buf;
}

bool
params_is_hex (const char *s, size_t len)
{
  if (strlen (s) != len)
    return false;
  for (; *s; ++s)
    if (!(('0' <= *s && *s <= '9') || ('a' <= *s && *s <= 'f')))
      return false;
  return true;
}
