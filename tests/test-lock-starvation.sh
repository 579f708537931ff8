#!/usr/bin/env bash
# s3chunk tests: lock renewals never queue behind data transfers.
#
# Every chunk PUT is held 8 s by tests/s3-fault-proxy (mode stall), with
# connections=2 and lease=6: the upload workers keep both data connections
# busy for about 16 s, twice the point (lease - lease/3 = 4 s) at which the
# holder fences itself if no renewal succeeds.  The renewals go through the
# lock's own connection (the store's sibling handle), so they go on every
# 2 s: the instance must not fence itself, the flush must succeed once the
# uploads are through, and the data must be in the store after a restart.
# With one pool shared by the lock and the uploads (before), the renewal
# waited for a handle behind the stalled PUTs and the volume fenced itself
# for no reason.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

s3_start_cluster
s3_start_proxy
P=$S3_PROXY_URL
sock=$tmp/sock
M=$((1024 * 1024))
lock_seq ()
{
    s3_request GET "/$S3_BUCKET/vol-s/lock" | sed -n 's/^sequence=//p'
}

start_nbdkit "$sock" -v $(s3_args vol-s "$P") size=64M lease=6 \
    connections=2 upload-delay=0.1 retry-time=60
log=${_nbdkit_log[$sock]}
seq0=$(lock_seq)
proxy_rule "mode=stall&delay=8&method=PUT&path=/chunks/"

check "write 4 chunks; their PUTs are held 8 s each on both connections"
"$VERIFY" --socket "$sock" --write-pattern 0 $((4 * M)) 31
t0=$SECONDS
check "reads of other chunks go on meanwhile"
"$VERIFY" --socket "$sock" --expect-zero $((8 * M)) $((2 * M))
check "a flush waits for the uploads and succeeds"
"$VERIFY" --socket "$sock" --flush
t=$((SECONDS - t0))
echo "flush returned after $t s"
[ "$t" -ge 8 ] || fail "the flush returned before the held PUTs ended: is the stall rule working?"
proxy_rule "mode=none"
seq1=$(lock_seq)
echo "lock sequence $seq0 -> $seq1"
expect_ge "renewals while the uploads were held" $((seq0 + 4)) "$seq1"
! grep -q "lock is lost\|volume is now read-only" "$log" ||
    { grep "lock is lost\|read-only" "$log"; fail "the instance fenced itself"; }
check "still writable"
"$VERIFY" --socket "$sock" --write-pattern $((4 * M)) $M 32 --flush
stop_nbdkit "$sock"

check "after a restart the data is in the store"
start_nbdkit "$sock" $(s3_args vol-s)
"$VERIFY" --socket "$sock" --expect-pattern 0 $((4 * M)) 31 \
    --expect-pattern $((4 * M)) $M 32
stop_nbdkit "$sock"
echo "$0: PASS"
