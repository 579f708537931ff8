# s3chunk tests: helpers for the S3 tests (tests/test-s3-*.sh), on top of
# tests/functions.sh.
#
#   source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"
#   s3_start_cluster          # $tmp, a Ceph RADOS Gateway and $S3_BUCKET
#   start_nbdkit "$tmp/sock" $(s3_args vol1) size=64M
#
# Every test starts its own throwaway cluster (tests/ceph.sh) in its own
# $tmp and stops it at exit, whatever happens; two clusters run side by side
# (make -j2).  The tests skip (77) only when the Ceph packages are missing:
# CI installs them, so there they always run.
#
# Cleanup order at exit (cleanup_fn hooks run last registered first): the
# fault proxy is set to let everything through, then nbdkit is stopped (its
# last flush needs the store), then the proxy, then the cluster.

source "${abs_top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}/tests/functions.sh"

CEPH_SH=$abs_top_srcdir/tests/ceph.sh
# Time limits in the tests are multiplied by this (nbdkit under valgrind
# is slow).
S3_SLOW=1
[ "${S3CHUNK_VALGRIND:-}" != 1 ] || S3_SLOW=5
S3_PROXY=$abs_top_srcdir/tests/s3-fault-proxy

# requires_ceph: skip unless the Ceph daemons are installed; fail (not skip)
# if they are but a helper the tests need is missing.
requires_ceph ()
{
    local b
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
        if ! command -v "$b" >/dev/null 2>&1; then
            echo "$0: SKIP: $b not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)"
            exit 77
        fi
    done
    for b in curl /usr/bin/python3 nbdkit; do
        command -v "$b" >/dev/null 2>&1 || fail "$b not found"
    done
}

_s3_cluster=
_s3_proxy_pid=

_s3_stop_cluster ()
{
    [ -n "$_s3_cluster" ] || return 0
    echo "$0: stopping the Ceph cluster in $_s3_cluster"
    "$CEPH_SH" stop "$_s3_cluster" || echo "$0: warning: ceph.sh stop failed"
    _s3_cluster=
}

_s3_stop_proxy ()
{
    [ -n "$_s3_proxy_pid" ] || return 0
    kill "$_s3_proxy_pid" 2>/dev/null
    wait "$_s3_proxy_pid" 2>/dev/null
    _s3_proxy_pid=
}

# Let everything through again before nbdkit's last flush.
_s3_proxy_clear ()
{
    [ -n "$_s3_proxy_pid" ] || return 0
    curl -sS -m 5 -o /dev/null "$S3_PROXY_URL/__fault?mode=none" 2>/dev/null
    return 0
}

# s3_start_cluster: make $tmp, start a cluster in $tmp/ceph (exports
# S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION CEPH_DIR ...) and make
# the bucket $S3_BUCKET.
s3_start_cluster ()
{
    local t0=$SECONDS
    requires_ceph
    make_tmpdir
    requires_test_programs
    # The nbdkit stop registered here runs before the cluster stops.
    cleanup_fn _s3_stop_cluster
    cleanup_fn _s3_stop_proxy
    cleanup_fn _stop_all_nbdkit
    cleanup_fn _s3_proxy_clear
    _s3_cluster=$tmp/ceph
    if ! "$CEPH_SH" start "$_s3_cluster" > "$tmp/ceph.env"; then
        fail "could not start a Ceph cluster (tests/ceph.sh start)"
    fi
    # shellcheck disable=SC1091
    . "$_s3_cluster/env"
    S3_BUCKET=s3chunk-test
    export S3_BUCKET
    "$CEPH_SH" mkbucket "$_s3_cluster" "$S3_BUCKET" || fail "mkbucket"
    echo "$0: cluster at $S3_ENDPOINT, bucket $S3_BUCKET ($((SECONDS - t0)) s)"
}

# s3_args PREFIX [ENDPOINT]: the plugin parameters of volume PREFIX in the
# test bucket, with the credentials as parameters.
s3_args ()
{
    echo "bucket=$S3_BUCKET endpoint=${2:-$S3_ENDPOINT}"
    echo "access-key=$S3_ACCESS_KEY secret-key=$S3_SECRET_KEY prefix=$1"
}

# s3_request METHOD PATH [curl args]: one signed request to the gateway;
# prints the body.
s3_request ()
{
    local method=$1 path=$2
    shift 2
    curl -sS -m 30 -X "$method" --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" "$S3_ENDPOINT$path"
}

# s3_keys PREFIX: the keys of the bucket under PREFIX (first 1000), one a
# line, as the gateway lists them.
s3_keys ()
{
    # (curl signs the query as given: encode the slashes ourselves)
    s3_request GET "/$S3_BUCKET?list-type=2&prefix=${1//\//%2F}" |
        grep -o '<Key>[^<]*</Key>' | sed 's/<Key>\(.*\)<\/Key>/\1/'
}

# s3_ops KIND: how many requests of KIND (get_obj, put_obj, ...) radosgw
# served since the last s3_ops_reset (0 if none).
s3_ops ()
{
    "$CEPH_SH" ops "$_s3_cluster" | awk -v k="$1" '$1 == k { n = $2 } END { print n + 0 }'
}

# s3_ops_uri OPERATION REGEX: how many requests of OPERATION whose URI
# ("GET /bucket/key HTTP/1.1") matches the Python regex REGEX radosgw
# served since the last s3_ops_reset, from its ops log.
s3_ops_uri ()
{
    /usr/bin/python3 - "$_s3_cluster/log/rgw-ops.log" "$1" "$2" <<'EOF'
import json, os, re, sys
path, op, rx = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
data = open(path, encoding="utf-8", errors="replace").read() \
    if os.path.exists(path) else ""
dec, i, n = json.JSONDecoder(), 0, 0
while i < len(data):
    if data[i] != "{":
        i += 1
        continue
    try:
        obj, i = dec.raw_decode(data, i)
    except ValueError:
        i += 1
        continue
    if isinstance(obj, dict) and obj.get("operation") == op and \
            rx.search(obj.get("uri", "")):
        n += 1
print(n)
EOF
}

s3_ops_reset ()
{
    "$CEPH_SH" ops-reset "$_s3_cluster"
}

# s3_start_proxy: the fault proxy in front of the gateway; sets
# S3_PROXY_URL (http://127.0.0.1:PORT) and S3_PROXY_LOG.
s3_start_proxy ()
{
    local i
    S3_PROXY_LOG=$tmp/proxy.log
    rm -f "$tmp/proxy.port"
    /usr/bin/python3 "$S3_PROXY" --upstream "$S3_ENDPOINT" \
        --port-file "$tmp/proxy.port" --log "$S3_PROXY_LOG" --seed 7 \
        > /dev/null 2> "$tmp/proxy.err" &
    _s3_proxy_pid=$!
    for (( i = 0; i < 100; ++i )); do
        [ -s "$tmp/proxy.port" ] && break
        kill -0 "$_s3_proxy_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$tmp/proxy.port" ] || { cat "$tmp/proxy.err"; fail "the fault proxy did not start"; }
    S3_PROXY_URL=http://127.0.0.1:$(cat "$tmp/proxy.port")
    echo "$0: fault proxy at $S3_PROXY_URL"
}

# proxy_rule QUERY: replace the proxy's fault rule ("mode=503&count=3...").
proxy_rule ()
{
    local code
    code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$S3_PROXY_URL/__fault?$1")
    [ "$code" = 200 ] || fail "proxy rule $1: HTTP $code"
    echo "$0: proxy rule: $1"
}

# proxy_stat KEY: one counter of the proxy (0 if absent): requests,
# method:PUT, fault:503, status:200, faulted:GET ...
proxy_stat ()
{
    curl -sS -m 10 "$S3_PROXY_URL/__stats?format=text" |
        awk -v k="$1" '$1 == k { n = $2 } END { print n + 0 }'
}

proxy_stats_reset ()
{
    curl -sS -m 10 -o /dev/null "$S3_PROXY_URL/__stats?reset=1"
}

# expect_eq WHAT EXPECTED GOT / expect_ge WHAT MIN GOT
expect_eq ()
{
    [ "$2" = "$3" ] || fail "$1: expected $2, got $3"
    echo "ok: $1 = $3"
}

expect_ge ()
{
    [ "$3" -ge "$2" ] || fail "$1: expected at least $2, got $3"
    echo "ok: $1 = $3 (>= $2)"
}
