#!/bin/bash
# Smoke test of tests/ceph.sh (a throwaway Ceph cluster with radosgw) and of
# tests/s3-fault-proxy: S3 PUT/GET/conditional PUT with curl's SigV4 against
# the gateway directly and through the proxy, a few injected faults and the
# proxy's counters, then a clean stop with no daemon left behind.
# Skips (77) only when the Ceph packages are not installed.

# The harness may run us with /bin/sh: this test needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi

set -u

srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
CEPH_SH=$srcdir/tests/ceph.sh
PROXY=$srcdir/tests/s3-fault-proxy

for b in ceph-mon ceph-osd radosgw radosgw-admin ceph; do
    if ! command -v "$b" >/dev/null 2>&1; then
        echo "SKIP: $b not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)"
        exit 77
    fi
done
for b in curl /usr/bin/python3; do
    command -v "$b" >/dev/null 2>&1 || { echo "FAIL: $b not found"; exit 1; }
done

tmp=$(mktemp -d /tmp/s3chunk-ceph-smoke.XXXXXX) || exit 1
cluster=$tmp/ceph
proxy_pid=
failed=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null
        wait "$proxy_pid" 2>/dev/null
    fi
    if [ -d "$cluster" ]; then
        "$CEPH_SH" stop "$cluster" || rc=1
    fi
    if [ "$rc" != 0 ] && [ -d "$tmp" ]; then
        echo "---- logs kept in $tmp ----"
        if [ -f "$tmp/proxy.log" ]; then tail -n 20 "$tmp/proxy.log"; fi
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*"; failed=1; }
check() {   # check WHAT EXPECTED GOT
    if [ "$2" = "$3" ]; then
        echo "ok: $1"
    else
        fail "$1: expected '$2', got '$3'"
    fi
}

# ---------------------------------------------------------------- cluster
t0=$(date +%s%N)
"$CEPH_SH" start "$cluster" > "$tmp/env.out" || { echo "FAIL: cluster start"; exit 1; }
t1=$(date +%s%N)
echo "cluster started in $(( (t1 - t0) / 1000000 )) ms"
# shellcheck disable=SC1090
. <("$CEPH_SH" env "$cluster")
for v in S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION; do
    [ -n "${!v:-}" ] || { echo "FAIL: $v not set by ceph.sh env"; exit 1; }
done
grep -q "^export S3_ENDPOINT=$S3_ENDPOINT\$" "$tmp/env.out" ||
    fail "start did not print S3_ENDPOINT"

bucket=smoke-bucket
"$CEPH_SH" mkbucket "$cluster" "$bucket" || { echo "FAIL: mkbucket"; exit 1; }

# s3 URL [curl args]: one SigV4-signed request; prints the body, then
# the HTTP status on a line of its own.
s3() {
    local url=$1; shift
    curl -sS -m 30 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        -w '\n%{http_code}' "$@" "$url"
}
status_of() { tail -n 1; }

head -c 200000 /dev/urandom > "$tmp/obj"
check "PUT object" 200 "$(s3 "$S3_ENDPOINT/$bucket/obj1" -T "$tmp/obj" | status_of)"
s3 "$S3_ENDPOINT/$bucket/obj1" -o "$tmp/obj.back" >/dev/null
if cmp -s "$tmp/obj" "$tmp/obj.back"; then
    echo "ok: GET returns what was PUT"
else
    fail "GET content differs"
fi
check "HEAD object" 200 "$(s3 "$S3_ENDPOINT/$bucket/obj1" -I -o /dev/null | status_of)"
check "conditional PUT (If-None-Match: *) on an existing key" 412 \
    "$(s3 "$S3_ENDPOINT/$bucket/obj1" -T "$tmp/obj" -H 'If-None-Match: *' | status_of)"
check "conditional PUT on a new key" 200 \
    "$(s3 "$S3_ENDPOINT/$bucket/obj2" -T "$tmp/obj" -H 'If-None-Match: *' | status_of)"
# A real payload hash works too.
sha=$(sha256sum < "$tmp/obj" | cut -d' ' -f1)
check "PUT with x-amz-content-sha256 = payload hash" 200 \
    "$(curl -sS -m 30 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H "x-amz-content-sha256: $sha" \
        -T "$tmp/obj" -o /dev/null -w '%{http_code}' "$S3_ENDPOINT/$bucket/obj3")"
check "GET a missing key" 404 "$(s3 "$S3_ENDPOINT/$bucket/nope" -o /dev/null | status_of)"
list=$(s3 "$S3_ENDPOINT/$bucket?list-type=2")
case $list in
    *"<Key>obj1</Key>"*"<Key>obj2</Key>"*"<Key>obj3</Key>"*) echo "ok: ListObjectsV2" ;;
    *) fail "ListObjectsV2: $list" ;;
esac
check "DELETE object" 204 "$(s3 "$S3_ENDPOINT/$bucket/obj3" -X DELETE | status_of)"

ops=$("$CEPH_SH" ops "$cluster")
check "ops log counts the PUTs" "put_obj 4" "$(grep '^put_obj ' <<<"$ops")"

# ---------------------------------------------------------------- proxy
/usr/bin/python3 "$PROXY" --upstream "$S3_ENDPOINT" --port-file "$tmp/proxy.port" \
    --log "$tmp/proxy.log" --seed 42 > /dev/null 2>"$tmp/proxy.err" &
proxy_pid=$!
for _ in $(seq 1 100); do
    [ -s "$tmp/proxy.port" ] && break
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
done
[ -s "$tmp/proxy.port" ] || { cat "$tmp/proxy.err"; echo "FAIL: proxy did not start"; exit 1; }
P=http://127.0.0.1:$(cat "$tmp/proxy.port")
ctl() { curl -sS -m 10 -o /dev/null -w '%{http_code}' "$P/$1"; }
pstat() { curl -sS -m 10 "$P/__stats?format=text" | awk -v k="$1" '$1 == k {print $2}'; }

# SigV4 through the proxy: Host is forwarded as the client signed it.
s3 "$P/$bucket/obj1" -o "$tmp/obj.proxy" >/dev/null
cmp -s "$tmp/obj" "$tmp/obj.proxy" && echo "ok: GET through the proxy" ||
    fail "GET through the proxy"

# First 2 PUTs get 503 SlowDown, the third succeeds.
check "reset the proxy counters" 200 "$(ctl "__stats?reset=1")"
check "set rule 503 x2" 200 "$(ctl "__fault?mode=503&count=2&method=PUT")"
out=$(s3 "$P/$bucket/retry" -T "$tmp/obj")
check "1st PUT through proxy" 503 "$(status_of <<<"$out")"
case $out in *"<Code>SlowDown</Code>"*) echo "ok: SlowDown body" ;; *) fail "no SlowDown body: $out" ;; esac
check "2nd PUT through proxy" 503 "$(s3 "$P/$bucket/retry" -T "$tmp/obj" | status_of)"
check "3rd PUT through proxy" 200 "$(s3 "$P/$bucket/retry" -T "$tmp/obj" | status_of)"
check "GET after the retries" 200 "$(s3 "$P/$bucket/retry" -o "$tmp/retry.back" | status_of)"
cmp -s "$tmp/obj" "$tmp/retry.back" || fail "retried object content differs"
check "proxy count of PUT" 3 "$(pstat method:PUT)"
check "proxy count of GET" 1 "$(pstat method:GET)"
check "proxy count of 503 faults" 2 "$(pstat fault:503)"
check "proxy count of status 200" 2 "$(pstat status:200)"
check "proxy requests" 4 "$(pstat requests)"

# curl's own retries (transient 503) get through after one fault.
ctl "__fault?mode=503&count=1" >/dev/null
check "curl --retry through one 503" 200 \
    "$(s3 "$P/$bucket/obj1" --retry 2 --retry-delay 1 -o "$tmp/retry2" | status_of)"

# Reset, truncated body, 500: the client sees the failure.
ctl "__fault?mode=reset&count=1" >/dev/null
s3 "$P/$bucket/obj1" -o /dev/null >/dev/null 2>&1
check "reset: curl fails with 56 (recv failure)" 56 "$?"
ctl "__fault?mode=cut&count=1&cut=1000" >/dev/null
s3 "$P/$bucket/obj1" -o "$tmp/cut" >/dev/null 2>&1
check "cut: curl fails with 18 (partial file)" 18 "$?"
check "cut: 1000 bytes arrived" 1000 "$(wc -c < "$tmp/cut")"
ctl "__fault?mode=500&count=1&method=GET" >/dev/null
check "500 on GET" 500 "$(s3 "$P/$bucket/obj1" -o /dev/null | status_of)"
check "then GET is fine" 200 "$(s3 "$P/$bucket/obj1" -o /dev/null | status_of)"
check "faults by kind: reset" 1 "$(pstat fault:reset)"
check "faults by kind: cut" 1 "$(pstat fault:cut)"
check "faults by kind: 500" 1 "$(pstat fault:500)"

kill "$proxy_pid"
wait "$proxy_pid" 2>/dev/null
proxy_pid=

# ---------------------------------------------------------------- stop
pids=$(cat "$cluster"/pid/*.pid)
[ "$(wc -w <<<"$pids")" = 3 ] || fail "expected 3 daemons, got pids: $pids"
t0=$(date +%s%N)
"$CEPH_SH" stop "$cluster" || fail "stop"
t1=$(date +%s%N)
echo "cluster stopped in $(( (t1 - t0) / 1000000 )) ms"
left=
for pid in $pids; do
    # A zombie waiting for init to reap it is not running.
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    if [ -n "$state" ] && [ "$state" != Z ]; then left="$left $pid"; fi
done
for d in /proc/[0-9]*; do
    [ "$(awk '/^State:/ {print $2}' "$d/status" 2>/dev/null)" = Z ] && continue
    if tr '\0' ' ' 2>/dev/null < "$d/cmdline" | grep -qF -- "$cluster/"; then
        left="$left ${d#/proc/}"
    fi
done
check "no daemon of ours left running" "" "$left"

if [ "$failed" != 0 ]; then
    exit 1
fi
echo "PASS"
exit 0
