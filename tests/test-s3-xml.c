/* s3chunk: the S3 XML documents: ListObjectsV2 pages, DeleteObjects
 * results, error bodies, the DeleteObjects request, and malformed or
 * hostile input (an error, never a crash).  The sample documents follow the
 * shapes in the Amazon S3 API Reference pages "ListObjectsV2",
 * "DeleteObjects" and "Error Responses".
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3-xml.h"
#include "unit.h"

#define XMLDECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
#define NS "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""

struct seen {
  char keys[8][64];
  uint64_t sizes[8];
  size_t n;
  size_t stop_after;            /* 0: never stop */
};

static int
collect (void *opaque, const char *key, uint64_t size)
{
  struct seen *s = opaque;

  if (s->n < 8) {
    snprintf (s->keys[s->n], sizeof s->keys[0], "%s", key);
    s->sizes[s->n] = size;
  }
  s->n++;
  if (s->stop_after && s->n == s->stop_after)
    return 42;
  return 0;
}

static int
parse_list (const char *xml, const char *prefix, struct seen *s,
            bool *truncated, char **token)
{
  return s3_xml_parse_list (xml, strlen (xml), prefix, collect, s,
                            truncated, token);
}

static void
test_list_truncated (void)
{
  const char *page =
    XMLDECL
    "<ListBucketResult " NS ">\n"
    "  <Name>bucket</Name>\n"
    "  <Prefix>vol1/</Prefix>\n"
    "  <KeyCount>3</KeyCount>\n"
    "  <MaxKeys>3</MaxKeys>\n"
    "  <IsTruncated>true</IsTruncated>\n"
    "  <ContinuationToken>abc</ContinuationToken>\n"
    "  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>\n"
    "  <Contents>\n"
    "    <Key>vol1/superblock</Key>\n"
    "    <LastModified>2013-09-17T18:07:53.000Z</LastModified>\n"
    "    <ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag>\n"
    "    <Size>512</Size>\n"
    "    <StorageClass>STANDARD</StorageClass>\n"
    "  </Contents>\n"
    "  <Contents><Key>vol1/chunks/0000000000000001</Key><Size>4194304</Size></Contents>\n"
    "  <Contents><Size>0</Size><Key>vol1/lock</Key></Contents>\n"
    "</ListBucketResult>\n";
  struct seen s = { .n = 0 };
  bool truncated;
  char *token;

  CHECK (parse_list (page, "vol1/", &s, &truncated, &token) == 0);
  CHECK (truncated);
  CHECK_STR (token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
  CHECK (s.n == 3);
  CHECK_STR (s.keys[0], "superblock");
  CHECK (s.sizes[0] == 512);
  CHECK_STR (s.keys[1], "chunks/0000000000000001");
  CHECK (s.sizes[1] == 4194304);
  CHECK_STR (s.keys[2], "lock");
  CHECK (s.sizes[2] == 0);
  free (token);

  /* The same page with no store prefix gives the keys whole. */
  memset (&s, 0, sizeof s);
  CHECK (parse_list (page, "", &s, &truncated, &token) == 0);
  CHECK (s.n == 3);
  CHECK_STR (s.keys[0], "vol1/superblock");
  free (token);

  /* A callback's non-zero return stops the walk and is returned. */
  memset (&s, 0, sizeof s);
  s.stop_after = 2;
  CHECK (parse_list (page, "vol1/", &s, &truncated, &token) == 42);
  CHECK (s.n == 2);
  free (token);
}

static void
test_list_last_page (void)
{
  /* The last page, with a namespace prefix on every element, keys outside
   * the store prefix (skipped) and the prefix itself (not a key).
   */
  const char *page =
    XMLDECL
    "<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<s3:IsTruncated>false</s3:IsTruncated>"
    "<s3:Contents><s3:Key>p/q/a</s3:Key><s3:Size>1</s3:Size></s3:Contents>"
    "<s3:Contents><s3:Key>p/q/</s3:Key><s3:Size>0</s3:Size></s3:Contents>"
    "<s3:Contents><s3:Key>other/b</s3:Key><s3:Size>2</s3:Size></s3:Contents>"
    "</s3:ListBucketResult>";
  const char *empty =
    XMLDECL "<ListBucketResult " NS "><Name>b</Name><KeyCount>0</KeyCount>"
    "<IsTruncated>false</IsTruncated></ListBucketResult>";
  struct seen s = { .n = 0 };
  bool truncated = true;
  char *token = (char *) "x";

  CHECK (parse_list (page, "p/q/", &s, &truncated, &token) == 0);
  CHECK (!truncated);
  CHECK (token == NULL);
  CHECK (s.n == 1);
  CHECK_STR (s.keys[0], "a");

  memset (&s, 0, sizeof s);
  CHECK (parse_list (empty, "p/", &s, &truncated, &token) == 0);
  CHECK (!truncated && token == NULL && s.n == 0);
}

static void
test_list_bad (void)
{
  const char *bad[] = {
    "",
    "not xml at all",
    "<ListBucketResult><Contents><Key>a</Key>",           /* cut short */
    "<Error><Code>NoSuchBucket</Code></Error>",           /* wrong root */
    /* truncated but no token: would loop forever */
    "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
    /* a Contents without a Key */
    "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
    /* sizes that are not numbers */
    "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents>"
    "</ListBucketResult>",
    "<ListBucketResult><Contents><Key>a</Key><Size>12x</Size></Contents>"
    "</ListBucketResult>",
    "<ListBucketResult><Contents><Key>a</Key>"
    "<Size>99999999999999999999999</Size></Contents></ListBucketResult>",
  };
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    struct seen s = { .n = 0 };
    bool truncated = true;
    char *token = (char *) "x";
    int r = parse_list (bad[i], "", &s, &truncated, &token);

    if (r != -EPROTO)
      fprintf (stderr, "bad list %zu: r = %d\n", i, r);
    CHECK (r == -EPROTO);
    CHECK (token == NULL);
    CHECK (!truncated);
  }
  {
    bool truncated;
    char *token;
    struct seen s = { .n = 0 };
    CHECK (s3_xml_parse_list (NULL, 0, "", collect, &s, &truncated, &token)
           == -EPROTO);
  }
}

static void
test_hostile (void)
{
  /* A document with a DTD is refused: an external entity is never
   * fetched, an entity bomb never expands.
   */
  const char *xxe =
    XMLDECL
    "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
    "<ListBucketResult><IsTruncated>false</IsTruncated>"
    "<Contents><Key>a&x;</Key><Size>1</Size></Contents></ListBucketResult>";
  const char *bomb =
    XMLDECL
    "<!DOCTYPE Error [<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">"
    "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
    "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">"
    "<!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">"
    "<!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">"
    "<!ENTITY f \"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">"
    "]><Error><Code>&f;</Code></Error>";
  struct seen s = { .n = 0 };
  struct s3_error err;
  bool truncated;
  char *token = NULL;
  int r;

  r = parse_list (xxe, "", &s, &truncated, &token);
  CHECK (r == -EPROTO);
  CHECK (s.n == 0);
  CHECK (token == NULL);

  r = s3_xml_parse_error (bomb, strlen (bomb), &err);
  CHECK (r == -EPROTO);
  CHECK_STR (err.code, "");
}

static void
test_error_bodies (void)
{
  const char *nosuchkey =
    XMLDECL
    "<Error>\n"
    "  <Code>NoSuchKey</Code>\n"
    "  <Message>The resource you requested does not exist</Message>\n"
    "  <Resource>/mybucket/myfoto.jpg</Resource>\n"
    "  <RequestId>4442587FB7D0A2F9</RequestId>\n"
    "</Error>";
  const char *redirect =
    XMLDECL
    "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The "
    "authorization header is malformed; the region 'us-east-1' is wrong; "
    "expecting 'eu-west-1'</Message><Region>eu-west-1</Region>"
    "<RequestId>X</RequestId><HostId>Y</HostId></Error>";
  /* Ceph RGW's shape: the same elements, no declaration. */
  const char *rgw =
    "<Error><Code>PreconditionFailed</Code><BucketName>b</BucketName>"
    "<RequestId>tx0000</RequestId><HostId>z</HostId></Error>";
  char long_msg[2048];
  struct s3_error err;

  CHECK (s3_xml_parse_error (nosuchkey, strlen (nosuchkey), &err) == 0);
  CHECK_STR (err.code, "NoSuchKey");
  CHECK_STR (err.message, "The resource you requested does not exist");
  CHECK_STR (err.region, "");

  CHECK (s3_xml_parse_error (redirect, strlen (redirect), &err) == 0);
  CHECK_STR (err.code, "AuthorizationHeaderMalformed");
  CHECK_STR (err.region, "eu-west-1");

  CHECK (s3_xml_parse_error (rgw, strlen (rgw), &err) == 0);
  CHECK_STR (err.code, "PreconditionFailed");
  CHECK_STR (err.message, "");

  /* An over-long message is cut, not overflowed. */
  memset (long_msg, 0, sizeof long_msg);
  strcpy (long_msg, "<Error><Code>X</Code><Message>");
  memset (long_msg + strlen (long_msg), 'm', 1500);
  strcat (long_msg, "</Message></Error>");
  CHECK (s3_xml_parse_error (long_msg, strlen (long_msg), &err) == 0);
  CHECK (strlen (err.message) == sizeof err.message - 1);

  /* Not an error document: an HTML page from a proxy, garbage, nothing. */
  CHECK (s3_xml_parse_error ("<html><body>502</body></html>", 29, &err)
         == -EPROTO);
  CHECK_STR (err.code, "");
  CHECK (s3_xml_parse_error ("\x01\x02\x03", 3, &err) == -EPROTO);
  CHECK (s3_xml_parse_error ("", 0, &err) == -EPROTO);
  CHECK (s3_xml_parse_error (NULL, 0, &err) == -EPROTO);
}

static void
test_delete_result (void)
{
  const char *ok =
    XMLDECL "<DeleteResult " NS "></DeleteResult>";
  const char *mixed =
    XMLDECL
    "<DeleteResult " NS ">\n"
    "  <Deleted><Key>vol/a</Key></Deleted>\n"
    "  <Error><Key>vol/z</Key><Code>NoSuchKey</Code></Error>\n"
    "  <Error><Key>vol/b</Key><Code>AccessDenied</Code>"
    "<Message>Access Denied</Message></Error>\n"
    "  <Error><Key>vol/c</Key><Code>InternalError</Code>"
    "<Message>We encountered an internal error.</Message></Error>\n"
    "</DeleteResult>";
  struct s3_error first;
  size_t n = 99;

  CHECK (s3_xml_parse_delete_result (ok, strlen (ok), &n, &first) == 0);
  CHECK (n == 0);
  CHECK (s3_xml_parse_delete_result (mixed, strlen (mixed), &n, &first)
         == 0);
  CHECK (n == 2);
  CHECK_STR (first.key, "vol/b");
  CHECK_STR (first.code, "AccessDenied");
  CHECK_STR (first.message, "Access Denied");
  CHECK (s3_xml_parse_delete_result (mixed, strlen (mixed), &n, NULL) == 0);
  CHECK (n == 2);

  CHECK (s3_xml_parse_delete_result ("<DeleteResult><Error>", 21, &n,
                                     &first) == -EPROTO);
  CHECK (s3_xml_parse_delete_result ("<Error/>", 8, &n, &first) == -EPROTO);
}

static void
test_delete_body (void)
{
  const char *keys[] = { "chunks/01", "a&b<c>'\"" };
  struct cs_buf b = CS_BUF_INIT;
  const char *want =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Delete " NS "><Quiet>true</Quiet>"
    "<Object><Key>vol/chunks/01</Key></Object>"
    "<Object><Key>vol/a&amp;b&lt;c&gt;&apos;&quot;</Key></Object>"
    "</Delete>";

  CHECK (s3_xml_delete_body ("vol/", keys, 2, &b) == 0);
  CHECK (b.len == strlen (want) && memcmp (b.data, want, b.len) == 0);
  if (b.len != strlen (want) || memcmp (b.data, want, b.len) != 0)
    fprintf (stderr, "  got: %.*s\n", (int) b.len, (char *) b.data);
  cs_buf_free (&b);
}

int
main (void)
{
  unit_init ();
  test_list_truncated ();
  test_list_last_page ();
  test_list_bad ();
  test_hostile ();
  test_error_bodies ();
  test_delete_result ();
  test_delete_body ();
  return unit_done ("test-s3-xml");
}
