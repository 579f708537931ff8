/* s3chunk: SigV4 against the published AWS example vectors.
 *
 * Where each vector comes from:
 *  - "Signature Calculations for the Authorization Header: Transferring
 *    Payload in a Single Chunk (AWS Signature Version 4)", Amazon S3 API
 *    Reference, section "Examples: Signature Calculations": GET Object,
 *    PUT Object, GET Bucket Lifecycle, Get Bucket (List Objects); key
 *    AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,
 *    20130524T000000Z, us-east-1, examplebucket.s3.amazonaws.com.
 *  - the AWS Signature Version 4 test suite (aws-sig-v4-test-suite,
 *    published with the AWS General Reference "Signature Version 4 test
 *    suite"): get-vanilla, get-vanilla-query-order-key-case, get-utf8,
 *    get-header-value-trim, get-header-key-duplicate; key AKIDEXAMPLE /
 *    wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1,
 *    service "service".
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"
#include "unit.h"

static const struct sigv4_key s3_example_key = {
  .access_key = "AKIAIOSFODNN7EXAMPLE",
  .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  .region = "us-east-1",
  .service = "s3",
};
#define S3_DATE "20130524T000000Z"

static const struct sigv4_key suite_key = {
  .access_key = "AKIDEXAMPLE",
  .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  .region = "us-east-1",
  .service = "service",
};
#define SUITE_DATE "20150830T123600Z"

/* Check every step of one signature: canonical request (when given),
 * string to sign (when given), signature and Authorization header.
 */
static void
check_vector (const char *name, const struct sigv4_key *key,
              const char *date, const struct sigv4_request *req,
              const char *want_canonical, const char *want_to_sign,
              const char *want_signature)
{
  char *canonical = NULL, *signed_headers = NULL, *to_sign = NULL;
  char *auth = NULL, *want_auth = NULL;
  char sig[65];

  CHECK (sigv4_canonical_request (req, &canonical, &signed_headers) == 0);
  if (want_canonical)
    CHECK_STR (canonical, want_canonical);
  CHECK (sigv4_string_to_sign (key, date, canonical, &to_sign) == 0);
  if (want_to_sign)
    CHECK_STR (to_sign, want_to_sign);
  CHECK (sigv4_signature (key, date, to_sign, sig) == 0);
  CHECK_STR (sig, want_signature);

  CHECK (sigv4_authorization (key, date, req, &auth) == 0);
  CHECK (asprintf (&want_auth, "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/"
                   "aws4_request,SignedHeaders=%s,Signature=%s",
                   key->access_key, date, key->region, key->service,
                   signed_headers, want_signature) > 0);
  CHECK_STR (auth, want_auth);
  free (canonical);
  free (signed_headers);
  free (to_sign);
  free (auth);
  free (want_auth);
}

static void
test_s3_get_object (void)
{
  /* Example: GET Object (the first 10 bytes of test.txt). */
  const struct sigv4_header h[] = {
    { "Host", "examplebucket.s3.amazonaws.com" },
    { "Range", "bytes=0-9" },
    { "x-amz-content-sha256", SIGV4_EMPTY_SHA256 },
    { "x-amz-date", S3_DATE },
  };
  const struct sigv4_request req = {
    "GET", "/test.txt", "", h, 4, SIGV4_EMPTY_SHA256,
  };

  check_vector ("S3 GET Object", &s3_example_key, S3_DATE, &req,
                "GET\n"
                "/test.txt\n"
                "\n"
                "host:examplebucket.s3.amazonaws.com\n"
                "range:bytes=0-9\n"
                "x-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\n"
                "x-amz-date:20130524T000000Z\n"
                "\n"
                "host;range;x-amz-content-sha256;x-amz-date\n"
                SIGV4_EMPTY_SHA256,
                "AWS4-HMAC-SHA256\n"
                "20130524T000000Z\n"
                "20130524/us-east-1/s3/aws4_request\n"
                "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void
test_s3_put_object (void)
{
  /* Example: PUT Object ("Welcome to Amazon S3." as test$file.text). */
  const char *body = "Welcome to Amazon S3.";
  char hash[65];
  char *path;

  sigv4_sha256_hex (body, strlen (body), hash);
  CHECK_STR (hash,
             "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  path = sigv4_uri_encode ("/test$file.text", false);
  CHECK_STR (path, "/test%24file.text");
  {
    const struct sigv4_header h[] = {
      { "Date", "Fri, 24 May 2013 00:00:00 GMT" },
      { "Host", "examplebucket.s3.amazonaws.com" },
      { "x-amz-date", S3_DATE },
      { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
      { "x-amz-content-sha256", hash },
    };
    const struct sigv4_request req = { "PUT", path, "", h, 5, hash };

    check_vector ("S3 PUT Object", &s3_example_key, S3_DATE, &req,
                  "PUT\n"
                  "/test%24file.text\n"
                  "\n"
                  "date:Fri, 24 May 2013 00:00:00 GMT\n"
                  "host:examplebucket.s3.amazonaws.com\n"
                  "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
                  "x-amz-date:20130524T000000Z\n"
                  "x-amz-storage-class:REDUCED_REDUNDANCY\n"
                  "\n"
                  "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
                  "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
                  "AWS4-HMAC-SHA256\n"
                  "20130524T000000Z\n"
                  "20130524/us-east-1/s3/aws4_request\n"
                  "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
                  "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
  }
  free (path);
}

static void
test_s3_get_bucket_lifecycle (void)
{
  /* Example: GET Bucket Lifecycle: a parameter without a value. */
  const struct sigv4_param p[] = { { "lifecycle", NULL } };
  const struct sigv4_header h[] = {
    { "Host", "examplebucket.s3.amazonaws.com" },
    { "x-amz-date", S3_DATE },
    { "x-amz-content-sha256", SIGV4_EMPTY_SHA256 },
  };
  char *query = NULL, *url = NULL;

  CHECK (sigv4_query (p, 1, &query, &url) == 0);
  CHECK_STR (query, "lifecycle=");
  CHECK_STR (url, "lifecycle");
  {
    const struct sigv4_request req = {
      "GET", "/", query, h, 3, SIGV4_EMPTY_SHA256,
    };
    check_vector ("S3 GET Bucket Lifecycle", &s3_example_key, S3_DATE, &req,
                  "GET\n"
                  "/\n"
                  "lifecycle=\n"
                  "host:examplebucket.s3.amazonaws.com\n"
                  "x-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\n"
                  "x-amz-date:20130524T000000Z\n"
                  "\n"
                  "host;x-amz-content-sha256;x-amz-date\n"
                  SIGV4_EMPTY_SHA256,
                  "AWS4-HMAC-SHA256\n"
                  "20130524T000000Z\n"
                  "20130524/us-east-1/s3/aws4_request\n"
                  "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
                  "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
  }
  free (query);
  free (url);
}

static void
test_s3_list_objects (void)
{
  /* Example: Get Bucket (List Objects); the parameters are given out of
   * order to check the sort.
   */
  const struct sigv4_param p[] = { { "prefix", "J" }, { "max-keys", "2" } };
  const struct sigv4_header h[] = {
    { "Host", "examplebucket.s3.amazonaws.com" },
    { "x-amz-date", S3_DATE },
    { "x-amz-content-sha256", SIGV4_EMPTY_SHA256 },
  };
  char *query = NULL, *url = NULL;

  CHECK (sigv4_query (p, 2, &query, &url) == 0);
  CHECK_STR (query, "max-keys=2&prefix=J");
  CHECK_STR (url, "max-keys=2&prefix=J");
  {
    const struct sigv4_request req = {
      "GET", "/", query, h, 3, SIGV4_EMPTY_SHA256,
    };
    check_vector ("S3 Get Bucket (List Objects)", &s3_example_key, S3_DATE,
                  &req,
                  "GET\n"
                  "/\n"
                  "max-keys=2&prefix=J\n"
                  "host:examplebucket.s3.amazonaws.com\n"
                  "x-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\n"
                  "x-amz-date:20130524T000000Z\n"
                  "\n"
                  "host;x-amz-content-sha256;x-amz-date\n"
                  SIGV4_EMPTY_SHA256,
                  "AWS4-HMAC-SHA256\n"
                  "20130524T000000Z\n"
                  "20130524/us-east-1/s3/aws4_request\n"
                  "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
                  "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
  }
  free (query);
  free (url);
}

static void
test_suite (void)
{
  const struct sigv4_header base[] = {
    { "Host", "example.amazonaws.com" },
    { "X-Amz-Date", SUITE_DATE },
  };

  /* get-vanilla */
  {
    const struct sigv4_request req = {
      "GET", "/", "", base, 2, SIGV4_EMPTY_SHA256,
    };
    check_vector ("suite get-vanilla", &suite_key, SUITE_DATE, &req,
                  "GET\n/\n\nhost:example.amazonaws.com\n"
                  "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
                  SIGV4_EMPTY_SHA256,
                  NULL,
                  "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  }

  /* get-vanilla-query-order-key-case: Param2=value2&Param1=value1 */
  {
    const struct sigv4_param p[] = {
      { "Param2", "value2" }, { "Param1", "value1" },
    };
    char *query = NULL;

    CHECK (sigv4_query (p, 2, &query, NULL) == 0);
    CHECK_STR (query, "Param1=value1&Param2=value2");
    {
      const struct sigv4_request req = {
        "GET", "/", query, base, 2, SIGV4_EMPTY_SHA256,
      };
      check_vector ("suite get-vanilla-query-order-key-case", &suite_key,
                    SUITE_DATE, &req, NULL, NULL,
                    "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    }
    free (query);
  }

  /* get-utf8: the path is U+1234, encoded as its UTF-8 bytes. */
  {
    char *path = sigv4_uri_encode ("/\xe1\x88\xb4", false);

    CHECK_STR (path, "/%E1%88%B4");
    {
      const struct sigv4_request req = {
        "GET", path, "", base, 2, SIGV4_EMPTY_SHA256,
      };
      check_vector ("suite get-utf8", &suite_key, SUITE_DATE, &req, NULL,
                    NULL,
                    "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
    }
    free (path);
  }

  /* get-header-value-trim: values trimmed, inner runs of spaces become
   * one, even inside quotes.
   */
  {
    const struct sigv4_header h[] = {
      { "Host", "example.amazonaws.com" },
      { "My-Header1", " value1" },
      { "My-Header2", " \"a   b   c\"" },
      { "X-Amz-Date", SUITE_DATE },
    };
    const struct sigv4_request req = {
      "GET", "/", "", h, 4, SIGV4_EMPTY_SHA256,
    };
    check_vector ("suite get-header-value-trim", &suite_key, SUITE_DATE,
                  &req,
                  "GET\n/\n\nhost:example.amazonaws.com\n"
                  "my-header1:value1\nmy-header2:\"a b c\"\n"
                  "x-amz-date:20150830T123600Z\n\n"
                  "host;my-header1;my-header2;x-amz-date\n"
                  SIGV4_EMPTY_SHA256,
                  "AWS4-HMAC-SHA256\n20150830T123600Z\n"
                  "20150830/us-east-1/service/aws4_request\n"
                  "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
                  "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736");
  }

  /* get-header-key-duplicate: one line, values in the order given. */
  {
    const struct sigv4_header h[] = {
      { "Host", "example.amazonaws.com" },
      { "My-Header1", "value2" },
      { "My-Header1", "value2" },
      { "My-Header1", "value1" },
      { "X-Amz-Date", SUITE_DATE },
    };
    const struct sigv4_request req = {
      "GET", "/", "", h, 5, SIGV4_EMPTY_SHA256,
    };
    char *canonical = NULL, *signed_headers = NULL;

    CHECK (sigv4_canonical_request (&req, &canonical, &signed_headers) == 0);
    CHECK_STR (canonical,
               "GET\n/\n\nhost:example.amazonaws.com\n"
               "my-header1:value2,value2,value1\n"
               "x-amz-date:20150830T123600Z\n\n"
               "host;my-header1;x-amz-date\n" SIGV4_EMPTY_SHA256);
    CHECK_STR (signed_headers, "host;my-header1;x-amz-date");
    free (canonical);
    free (signed_headers);
  }
}

static void
test_encoding (void)
{
  struct { const char *in; bool slash; const char *want; } cases[] = {
    { "a b", false, "a%20b" },
    { "a+b=c&d", false, "a%2Bb%3Dc%26d" },
    { "100%", false, "100%25" },
    { "a/b/c", false, "a/b/c" },
    { "a/b", true, "a%2Fb" },
    { "-._~AZaz09", true, "-._~AZaz09" },
    { "*", true, "%2A" },
    { "\xff", true, "%FF" },
    { "", true, "" },
  };
  char *s, *query = NULL, *url = NULL;
  size_t i;

  for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    s = sigv4_uri_encode (cases[i].in, cases[i].slash);
    CHECK_STR (s, cases[i].want);
    free (s);
  }

  /* ListObjectsV2's parameters: the continuation token is opaque base64
   * with '+', '/' and '=', which must be encoded in names and values; the
   * sort is on the encoded form.
   */
  {
    const struct sigv4_param p[] = {
      { "prefix", "vol/chunks/" },
      { "list-type", "2" },
      { "continuation-token", "1ab+c/d==" },
      { "delete", NULL },
    };
    CHECK (sigv4_query (p, 4, &query, &url) == 0);
    CHECK_STR (query, "continuation-token=1ab%2Bc%2Fd%3D%3D&delete=&"
               "list-type=2&prefix=vol%2Fchunks%2F");
    CHECK_STR (url, "continuation-token=1ab%2Bc%2Fd%3D%3D&delete&"
               "list-type=2&prefix=vol%2Fchunks%2F");
    free (query);
    free (url);
  }

  CHECK (sigv4_query (NULL, 0, &query, &url) == 0);
  CHECK_STR (query, "");
  CHECK_STR (url, "");
  free (query);
  free (url);
}

static void
test_helpers (void)
{
  char buf[65], md5[25], date[17];

  sigv4_sha256_hex ("", 0, buf);
  CHECK_STR (buf, SIGV4_EMPTY_SHA256);
  /* RFC 1321's test suite: MD5("") and MD5("abc"), here in base64. */
  sigv4_md5_base64 ("", 0, md5);
  CHECK_STR (md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
  sigv4_md5_base64 ("abc", 3, md5);
  CHECK_STR (md5, "kAFQmDzST7DWlj99KOF/cg==");
  sigv4_amz_date (1369353600, date);  /* 2013-05-24 00:00:00 UTC */
  CHECK_STR (date, "20130524T000000Z");
  sigv4_amz_date (1440938160, date);  /* 2015-08-30 12:36:00 UTC */
  CHECK_STR (date, SUITE_DATE);

  CHECK (sigv4_signature (&suite_key, "2015", "x", buf) < 0);
}

int
main (void)
{
  unit_init ();
  test_s3_get_object ();
  test_s3_put_object ();
  test_s3_get_bucket_lifecycle ();
  test_s3_list_objects ();
  test_suite ();
  test_encoding ();
  test_helpers ();
  return unit_done ("test-sigv4");
}
