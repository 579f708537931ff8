#!/usr/bin/env bash
# s3chunk tests: an ambiguous PUT followed by a trim must not bring old
# data back (docs/ARCHITECTURE.md rule 8: a chunk is "maybe present" from
# the moment its PUT is sent until a DELETE is confirmed).
#
# tests/s3-fault-proxy in mode drop-then-503 on the PUTs of one chunk key:
# the first PUT reaches the gateway, which stores the object, but its
# answer is dropped; every retry gets 503 SlowDown until the plugin's
# retry budget (retry-time=3) is spent, so the plugin never learns that the
# object exists.  Then the whole chunk is trimmed (or zeroed) while the
# 503s go on, the proxy lets everything through again, a flush must
# succeed, nbdkit stops cleanly and restarts straight on the gateway: the
# chunk must read as zeroes and its object must be gone.
#  a. chunk 3, never written before (no object, the allocation map says
#     absent), trimmed;
#  b. chunk 5, never written before, zeroed (NBD_CMD_WRITE_ZEROES);
#  c. control: chunk 7, whose object existed before the restart (the map
#     says present), trimmed: a DELETE is sent whatever the PUT did.
# Data: patterns of nbd-verify (seed = chunk index), checked after restart;
# chunk 1 (written and flushed once, untouched) must keep its pattern.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

s3_start_cluster
s3_start_proxy
P=$S3_PROXY_URL
sock=$tmp/sock
M=$((1024 * 1024))
vol=amb
# retry-time=3: the budget of one upload; the 503s last longer.
params=(size=16M chunk-size=1M retry-time=3 request-timeout=5 upload-delay=0.5
        lease=6)

key_of () { printf '%s/chunks/%016x' "$vol" "$1"; }
has_key () { s3_keys "$vol/chunks/" | grep -qx "$(key_of "$1")"; }

# wait_upload_failed LOG IDX: until nbdkit logged that the upload of chunk
# IDX failed for good (its retry budget spent), 60 s at most.
wait_upload_failed ()
{
    local log=$1 k
    k=$(printf 'chunks/%016x' "$2")
    for (( i = 0; i < 600; ++i )); do
        grep -q "error: .*$k" "$log" && { grep -m 1 "error: .*$k" "$log"; return 0; }
        sleep 0.1
    done
    fail "no failed upload of $k logged within 60 s"
}

# ambiguous IDX LOG: write chunk IDX (pattern IDX) so that its PUT lands
# with its answer lost and every retry gets 503; leaves the 503 rule on.
ambiguous ()
{
    local idx=$1 log=$2 k
    k=$(key_of "$idx")
    proxy_stats_reset
    proxy_rule "mode=drop-then-503&method=PUT&path=/$k\$"
    check "write chunk $idx: its PUT lands, the answer is lost, retries get 503"
    "$VERIFY" --socket "$sock" --write-pattern $((idx * M)) $M "$idx"
    wait_upload_failed "$log" "$idx"
    expect_eq "proxy: PUT answers dropped (chunk $idx)" 1 "$(proxy_stat fault:drop)"
    expect_ge "proxy: 503s (chunk $idx)" 1 "$(proxy_stat fault:503)"
    grep "PUT /$S3_BUCKET/$k fault=drop " "$S3_PROXY_LOG" | tail -n 1
    grep -q "PUT /$S3_BUCKET/$k fault=drop .* up=200" "$S3_PROXY_LOG" ||
        fail "the dropped PUT of chunk $idx did not reach the gateway (no up=200)"
    has_key "$idx" || fail "the gateway does not list $k after the dropped PUT"
    echo "ok: the gateway holds $k; the plugin was never told"
}

echo "=== setup: chunks 1 and 7 written and flushed, restart ==="
start_nbdkit "$sock" $(s3_args "$vol/" "$P") "${params[@]}"
"$VERIFY" --socket "$sock" --write-pattern $M $M 101 \
    --write-pattern $((7 * M)) $M 107 --flush
stop_nbdkit "$sock"
for i in 1 7; do has_key $i || fail "no object for chunk $i after the flush"; done
has_key 3 && fail "chunk 3 has an object before the test"
has_key 5 && fail "chunk 5 has an object before the test"

start_nbdkit "$sock" $(s3_args "$vol/" "$P") "${params[@]}"
log=${_nbdkit_log[$sock]}

echo "=== a. chunk 3 (no object before): ambiguous PUT, trim ==="
ambiguous 3 "$log"
check "trim chunk 3 while its PUTs still get 503"
s3_ops_reset
"$VERIFY" --socket "$sock" --trim $((3 * M)) $M --expect-zero $((3 * M)) $M
# (A figure, not a check: a fixed plugin may send the DELETE at once or
# at the flush.)
echo "gateway DELETEs of chunk 3 right after the trim:" \
    "$(s3_ops_uri delete_obj "$(key_of 3)")," \
    "multi-object deletes: $(s3_ops multi_object_delete)"

echo "=== b. chunk 5 (no object before): ambiguous PUT, write zeroes ==="
ambiguous 5 "$log"
check "zero chunk 5 while its PUTs still get 503"
"$VERIFY" --socket "$sock" --zero $((5 * M)) $M --expect-zero $((5 * M)) $M

echo "=== c. control: chunk 7 (its object existed): ambiguous PUT, trim ==="
ambiguous 7 "$log"
check "trim chunk 7 while its PUTs still get 503"
"$VERIFY" --socket "$sock" --trim $((7 * M)) $M --expect-zero $((7 * M)) $M

echo "=== the store is back: flush, clean stop ==="
proxy_rule "mode=none"
check "the flush succeeds"
"$VERIFY" --socket "$sock" --flush
stop_nbdkit "$sock"

echo "=== after a restart straight on the gateway ==="
keys=$(s3_keys "$vol/chunks/" | tr '\n' ' ')
echo "chunk objects: $keys"
start_nbdkit "$sock" $(s3_args "$vol/") "${params[@]}"
bad=()
for i in 3 5 7; do
    if "$VERIFY" --socket "$sock" --expect-zero $((i * M)) $M 2>"$tmp/v$i.err"; then
        echo "ok: chunk $i reads as zeroes"
        continue
    fi
    cat "$tmp/v$i.err"
    if "$VERIFY" --socket "$sock" --expect-pattern $((i * M)) $M "$i" 2>/dev/null; then
        echo "FAIL: chunk $i reads the data of its ambiguous PUT (pattern $i) instead of zeroes"
    elif [ "$i" = 7 ] && "$VERIFY" --socket "$sock" --expect-pattern $((i * M)) $M 107 2>/dev/null; then
        echo "FAIL: chunk $i reads its old data (pattern 107) instead of zeroes"
    else
        echo "FAIL: chunk $i reads neither zeroes nor any data written to it"
    fi
    bad+=("$i")
done
"$VERIFY" --socket "$sock" --expect-pattern $M $M 101 ||
    bad+=("1 (untouched, must keep pattern 101)")
for i in 3 5 7; do
    if has_key "$i"; then
        echo "FAIL: the gateway still lists $(key_of "$i") after the trim/zero and a flush"
        bad+=("$i (object)")
    fi
done
stop_nbdkit "$sock"
[ ${#bad[@]} -eq 0 ] || fail "chunks that came back after a trim/zero: ${bad[*]}"

echo "$0: PASS"
