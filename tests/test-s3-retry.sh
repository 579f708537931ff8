#!/usr/bin/env bash
# s3chunk tests: failures of the S3 store, injected by tests/s3-fault-proxy
# between nbdkit and a real Ceph RADOS Gateway.
#  a. The first 3 chunk PUTs answer 503 SlowDown: a write and a flush
#     succeed, the proxy counted the 503s and the retries, nbdkit -v logged
#     each retry, and the data is in the store after a restart.
#  b. Every PUT answers 500 for longer than retry-time=2: the flush fails
#     (EIO to the client) within a bounded time, the data is still served
#     from memory; once the store is back a later flush succeeds and the
#     data survives a restart.
#  c. Reading chunks never written gives zeroes without a single GET of a
#     chunk object (the allocation map knows), while reading written ones
#     does GET them (the count works).
#  d. Connection resets, then cut answers (bodies cut short, PUT answers
#     dropped after the store acted), on 20% of all requests during random
#     parallel I/O with a cache smaller than the disk: every read checks
#     against a shadow copy, and after a restart the store holds exactly
#     the shadow.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

s3_start_cluster
s3_start_proxy
P=$S3_PROXY_URL
sock=$tmp/sock
M=$((1024 * 1024))

# nbdkit -v logs every retry of the store at debug level.
count_retries ()
{
    grep -c "$2.*; retry [0-9]* in" "$1" || true
}

echo "=== a. 3 PUTs answer 503 SlowDown, then the store recovers ==="
start_nbdkit "$sock" -v $(s3_args vol-a "$P") size=64M retry-time=30
log=${_nbdkit_log[$sock]}
proxy_stats_reset
proxy_rule "mode=503&count=3&method=PUT&path=/chunks/"
check "write 2 MiB + 100 bytes (3 chunks) and flush through the 503s"
"$VERIFY" --socket "$sock" --write-pattern 0 $((2 * M + 100)) 11 --flush
expect_eq "proxy: 503 faults injected" 3 "$(proxy_stat fault:503)"
expect_eq "proxy: 503 answers relayed" 3 "$(proxy_stat status:503)"
expect_ge "proxy: PUTs (3 chunks + 3 retries)" 6 "$(proxy_stat method:PUT)"
expect_eq "proxy: PUTs faulted" 3 "$(proxy_stat faulted:PUT)"
expect_eq "nbdkit -v: retry lines for 503 SlowDown" 3 \
    "$(count_retries "$log" 's3: put chunks/.*HTTP 503 SlowDown')"
grep -m 1 's3: put chunks/.*HTTP 503 SlowDown.*; retry' "$log"
! grep -q 'error:' "$log" || { grep 'error:' "$log"; fail "nbdkit logged an error"; }
stop_nbdkit "$sock"

check "after a restart (straight to the gateway) the data is there"
start_nbdkit "$sock" $(s3_args vol-a) retry-time=30

echo "=== c. no GET for a chunk never written ==="
s3_ops_reset
check "4 MiB never written (4 chunks) read as zeroes"
"$VERIFY" --socket "$sock" --expect-zero $((4 * M)) $((4 * M)) \
    --expect-zero $((64 * M - 1)) 1
expect_eq "gateway: GETs of chunk objects" 0 \
    "$(s3_ops_uri get_obj '^GET /[^ ]*/vol-a/chunks/')"
expect_eq "gateway: GETs at all" 0 "$(s3_ops get_obj)"
check "the written chunks do come from the store (the count works)"
"$VERIFY" --socket "$sock" --expect-pattern 0 $((2 * M + 100)) 11 \
    --expect-zero $((2 * M + 100)) $((M - 100))
expect_eq "gateway: GETs of chunk objects" 3 \
    "$(s3_ops_uri get_obj '^GET /[^ ]*/vol-a/chunks/')"
stop_nbdkit "$sock"

echo "=== b. the store fails every PUT for longer than retry-time ==="
start_nbdkit "$sock" -v $(s3_args vol-b "$P") size=64M retry-time=2
log=${_nbdkit_log[$sock]}
proxy_stats_reset
proxy_rule "mode=500&method=PUT"
check "write, then flush: the flush fails (EIO) within a bounded time"
t0=$SECONDS
rc=0
"$VERIFY" --socket "$sock" --write-pattern $M $((3 * M)) 22 --flush \
    > "$tmp/flush.out" 2>&1 || rc=$?
cat "$tmp/flush.out"
[ "$rc" -ne 0 ] || fail "the flush succeeded while every PUT fails"
grep -q 'FAILED: flush.*Input/output error' "$tmp/flush.out" ||
    fail "the client did not see the flush fail with EIO"
[ $((SECONDS - t0)) -le $((20 * S3_SLOW)) ] ||
    fail "the failing flush took $((SECONDS - t0)) s (retry-time=2)"
echo "ok: flush failed after $((SECONDS - t0)) s"
grep -q 'error: .*put chunks/.*HTTP 500 InternalError' "$log" ||
    fail "nbdkit logged no error for the failed PUTs"
grep -m 1 'error: .*put chunks/.*HTTP 500' "$log"
expect_ge "proxy: 500 faults" 3 "$(proxy_stat fault:500)"
expect_ge "nbdkit -v: retry lines for HTTP 500" 3 \
    "$(count_retries "$log" 's3: put chunks/.*HTTP 500')"

check "the data is still served (from memory), also after a second failed flush"
"$VERIFY" --socket "$sock" --expect-pattern $M $((3 * M)) 22
rc=0
"$VERIFY" --socket "$sock" --flush > "$tmp/flush2.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a flush succeeded while every PUT fails"
"$VERIFY" --socket "$sock" --expect-pattern $M $((3 * M)) 22 \
    --expect-zero 0 $M --expect-zero $((4 * M)) $M

check "the store is back: the next flush succeeds"
proxy_rule "mode=none"
"$VERIFY" --socket "$sock" --flush --expect-pattern $M $((3 * M)) 22
stop_nbdkit "$sock"
check "after a restart the data is in the store"
start_nbdkit "$sock" $(s3_args vol-b) retry-time=30
"$VERIFY" --socket "$sock" --expect-zero 0 $M \
    --expect-pattern $M $((3 * M)) 22 --expect-zero $((4 * M)) $M
stop_nbdkit "$sock"

echo "=== d. resets and cut answers on 20% of requests during random I/O ==="
# 32 MiB of 64 KiB chunks through a 16 MiB cache: chunks are evicted and
# read back from the store while the faults go on.  The faults hit every
# kind of request, the lock's renewals too (an ambiguous conditional put is
# a warning, resolved by reading the lock again).
vol_d=(size=32M chunk-size=64K cache-size=16M connections=8 upload-delay=0.1
       retry-time=60 request-timeout=10)
start_nbdkit "$sock" -v $(s3_args vol-d "$P") "${vol_d[@]}"
log=${_nbdkit_log[$sock]}
proxy_stats_reset
proxy_rule "mode=reset&probability=0.2&seed=3"
check "random I/O with resets"
"$RANDOM_IO" --socket "$sock" --threads 4 --connections 2 --ops 300 \
    --seed 4242 --shadow-out "$tmp/shadow1"
expect_ge "proxy: resets" 20 "$(proxy_stat fault:reset)"
proxy_rule "mode=cut&probability=0.2&seed=5"
check "random I/O with cut answers (the disk is read back first)"
"$RANDOM_IO" --socket "$sock" --threads 4 --connections 2 --ops 150 \
    --seed 4343 --shadow-in "$tmp/shadow1" --shadow-out "$tmp/shadow2"
expect_ge "proxy: cut answers" 20 "$(proxy_stat fault:cut)"
expect_ge "proxy: faulted GETs" 10 "$(proxy_stat faulted:GET)"
expect_ge "proxy: faulted PUTs" 10 "$(proxy_stat faulted:PUT)"
expect_ge "nbdkit -v: retry lines" 20 "$(count_retries "$log" 's3: ')"
if grep 'error:' "$log" | grep -v 'error: warning:' | grep -q .; then
    grep 'error:' "$log" | head
    fail "nbdkit logged an error"
fi
proxy_rule "mode=none"
stop_nbdkit "$sock"
check "after a restart (straight to the gateway) the store holds the shadow"
start_nbdkit "$sock" $(s3_args vol-d) "${vol_d[@]}"
"$RANDOM_IO" --socket "$sock" --verify-only --shadow-in "$tmp/shadow2"
stop_nbdkit "$sock"

echo "$0: PASS"
