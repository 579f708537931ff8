#!/usr/bin/env bash
# s3chunk tests: the S3 object store against a real Ceph RADOS Gateway,
# through objstore.h (tests/test-objstore-s3.c): get / put / overwrite with
# etag, mtime and date; -ENOENT, -EFBIG; conditional puts and 8 threads
# racing them; a listing of more than one page; delete-many in batches;
# prefixes that keep volumes apart; the counters; the startup check; the
# write fence, the sibling, ambiguous outcomes, listings that repeat their
# continuation token and the request timeout as an idle limit, through
# tests/s3-fault-proxy and tests/s3-stub-server.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

prog=$abs_top_builddir/tests/test-objstore-s3
[ -x "$prog" ] || fail "$prog is missing: run make check (or make $prog)"

s3_start_cluster
# The fence, ambiguity, listing and timeout tests go through the fault proxy and the
# stub (tests/s3-stub-server), both in front of the gateway.
s3_start_proxy
S3_STUB_LOG=$tmp/stub.log
/usr/bin/python3 "$abs_top_srcdir/tests/s3-stub-server" \
    --upstream "$S3_ENDPOINT" --port-file "$tmp/stub.port" \
    --log "$S3_STUB_LOG" 2> "$tmp/stub.err" &
stub_pid=$!
stop_stub () { kill "$stub_pid" 2>/dev/null; wait "$stub_pid" 2>/dev/null; }
cleanup_fn stop_stub
for (( i = 0; i < 100; ++i )); do
    [ -s "$tmp/stub.port" ] && break
    sleep 0.1
done
[ -s "$tmp/stub.port" ] || { cat "$tmp/stub.err"; fail "the stub did not start"; }
S3_STUB_URL=http://127.0.0.1:$(cat "$tmp/stub.port")
export S3_PROXY_URL S3_STUB_URL

check "tests/test-objstore-s3 against the gateway"
# (its exit status 77, "not configured", is a failure here)
rc=0
"$prog" || rc=$?
[ "$rc" -eq 0 ] || fail "tests/test-objstore-s3 failed with status $rc"

check "the gateway served the requests (ops log)"
expect_ge "put_obj" 1100 "$(s3_ops put_obj)"
expect_ge "multi_object_delete" 2 "$(s3_ops multi_object_delete)"
expect_ge "list_bucket" 6 "$(s3_ops list_bucket)"

check "nothing left in the bucket"
left=$(s3_keys "" | wc -l)
expect_eq "keys left in the bucket" 0 "$left"

echo "$0: PASS"
