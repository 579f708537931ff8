/* s3chunk: unit tests of parameter parsing. */
#include <config.h>

#include <errno.h>
#include <stdint.h>

#include "params.h"
#include "unit.h"

static uint64_t
size_of (const char *s)
{
  uint64_t v = UINT64_MAX;
  return params_parse_size (s, &v) == 0 ? v : UINT64_MAX - 1;
}

int
main (void)
{
  uint64_t u;
  double d;
  bool b;
  char buf[32];

  unit_init ();
  CHECK_EQ (size_of ("0"), 0);
  CHECK_EQ (size_of ("512"), 512);
  CHECK_EQ (size_of ("1K"), 1024);
  CHECK_EQ (size_of ("1k"), 1024);
  CHECK_EQ (size_of ("64M"), 64 << 20);
  CHECK_EQ (size_of ("1G"), 1 << 30);
  CHECK_EQ (size_of ("1GiB"), 1 << 30);
  CHECK_EQ (size_of ("1GB"), 1 << 30);
  CHECK (size_of ("1T") == UINT64_C (1) << 40);
  CHECK (size_of ("2P") == UINT64_C (2) << 50);
  CHECK (size_of ("1E") == UINT64_C (1) << 60);
  CHECK (size_of ("16E") == UINT64_MAX - 1);             /* overflow */
  CHECK (size_of ("99999999999999999999") == UINT64_MAX - 1);
  CHECK (size_of ("") == UINT64_MAX - 1);
  CHECK (size_of ("abc") == UINT64_MAX - 1);
  CHECK (size_of ("-1") == UINT64_MAX - 1);
  CHECK (size_of ("+1") == UINT64_MAX - 1);
  CHECK (size_of (" 1") == UINT64_MAX - 1);
  CHECK (size_of ("1 ") == UINT64_MAX - 1);
  CHECK (size_of ("1X") == UINT64_MAX - 1);
  CHECK (size_of ("1KK") == UINT64_MAX - 1);
  CHECK (size_of ("1.5G") == UINT64_MAX - 1);
  CHECK (size_of ("K") == UINT64_MAX - 1);

  CHECK (params_parse_bool ("yes", &b) == 0 && b);
  CHECK (params_parse_bool ("TRUE", &b) == 0 && b);
  CHECK (params_parse_bool ("0", &b) == 0 && !b);
  CHECK (params_parse_bool ("off", &b) == 0 && !b);
  CHECK_EQ (params_parse_bool ("maybe", &b), -EINVAL);

  CHECK (params_parse_uint ("16", 1, 256, &u) == 0 && u == 16);
  CHECK_EQ (params_parse_uint ("0", 1, 256, &u), -EINVAL);
  CHECK_EQ (params_parse_uint ("257", 1, 256, &u), -EINVAL);
  CHECK_EQ (params_parse_uint ("", 1, 256, &u), -EINVAL);
  CHECK_EQ (params_parse_uint ("1x", 1, 256, &u), -EINVAL);

  CHECK (params_parse_seconds ("2", &d) == 0 && d == 2);
  CHECK (params_parse_seconds ("0.5", &d) == 0 && d == 0.5);
  CHECK (params_parse_seconds ("500ms", &d) == 0 && d == 0.5);
  CHECK (params_parse_seconds ("2m", &d) == 0 && d == 120);
  CHECK (params_parse_seconds ("1h", &d) == 0 && d == 3600);
  CHECK (params_parse_seconds ("3s", &d) == 0 && d == 3);
  CHECK_EQ (params_parse_seconds ("-1", &d), -EINVAL);
  CHECK_EQ (params_parse_seconds ("x", &d), -EINVAL);
  CHECK_EQ (params_parse_seconds ("5y", &d), -EINVAL);
  CHECK_EQ (params_parse_seconds ("nan", &d), -EINVAL);
  CHECK_EQ (params_parse_seconds ("inf", &d), -EINVAL);

  CHECK (strcmp (params_format_size (1 << 30, buf, sizeof buf), "1 GiB") == 0);
  CHECK (strcmp (params_format_size (1536, buf, sizeof buf), "1.5 KiB") == 0);
  CHECK (strcmp (params_format_size (100, buf, sizeof buf), "100 bytes") == 0);
  return unit_done ("test-params");
}
