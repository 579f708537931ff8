#!/usr/bin/env bash
# s3chunk tests: the store goes down, and nothing hangs.  nbdkit talks to a
# real Ceph RADOS Gateway through tests/s3-fault-proxy.  (test-s3-retry.sh
# covers a flush failing while PUTs answer 500; this test covers the store
# being entirely gone, the filesystem on top, and time bounds.)
#  1. The proxy is killed (connection refused, every request) for longer
#     than retry-time=2: writes still land in memory, a flush fails with EIO
#     within 30 s; dirty data is still served from memory; a read of a chunk that is only in the store
#     fails with EIO within 30 s, it never returns wrong bytes; once the
#     proxy is back the next flush succeeds, and after a restart every byte
#     is there.
#  2. ext4 on top: the store answers 500 to everything; an fsync fails
#     within 60 s instead of hanging; the store comes back; after umount, a
#     clean stop and a restart, the log replays, e2fsck -fn is clean and
#     every file fsync'ed before the outage is intact.
#  3. A stalled upload never blocks other chunks: the proxy holds the PUTs
#     of one chunk key for 30 s; meanwhile reads of other chunks (from the
#     store and from memory), writes, and a FUA write of another chunk all
#     return within 10 s, and so does a read of the stalled chunk itself.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"
source "$abs_top_srcdir/tests/robust-functions.sh"

requires timeout --version
s3_start_cluster
requires_robust_programs
s3_start_proxy
t0=$SECONDS
sock=$tmp/sock
M=$((1024 * 1024))

# bounded MAX CMD...: run CMD, killed after MAX + 10 s; sets $rc and
# $took (seconds) and fails if it took more than MAX.
bounded ()
{
    local max=$1 start
    shift
    start=$(date +%s.%N)
    rc=0
    timeout -s KILL $((max + 10)) "$@" > "$tmp/bounded.out" 2>&1 || rc=$?
    took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    cat "$tmp/bounded.out"
    [ "$rc" -ne 137 ] || fail "'$*' hung (killed after $((max + 10)) s)"
    if awk -v t="$took" -v m="$max" 'BEGIN { exit !(t > m) }'; then
        fail "'$*' took $took s, more than $max s"
    fi
    echo "(took $took s, status $rc)"
}

# proxy_down / proxy_up: kill the proxy (connections refused), and start
# it again on the same port.
proxy_down ()
{
    kill "$_s3_proxy_pid"
    wait "$_s3_proxy_pid" 2>/dev/null || true
    _s3_proxy_pid=
    echo "$0: proxy killed: the store is unreachable"
}
proxy_up ()
{
    local port=${S3_PROXY_URL##*:} i
    rm -f "$tmp/proxy.port"
    /usr/bin/python3 "$S3_PROXY" --upstream "$S3_ENDPOINT" --port "$port" \
        --port-file "$tmp/proxy.port" --log "$S3_PROXY_LOG" --seed 8 \
        > /dev/null 2>> "$tmp/proxy.err" &
    _s3_proxy_pid=$!
    for (( i = 0; i < 100; ++i )); do
        [ -s "$tmp/proxy.port" ] && break
        sleep 0.1
    done
    [ -s "$tmp/proxy.port" ] || { cat "$tmp/proxy.err"; return 1; }
    echo "$0: proxy back on port $port"
}
# If a check fails while the proxy is down, bring it back before the
# cleanup stops nbdkit (which then stores what it holds).
_proxy_back ()
{
    [ -n "$_s3_proxy_pid" ] || proxy_up || true
}
cleanup_fn _proxy_back

echo "=== 1. the store unreachable (proxy killed) for longer than retry-time ==="
vol1=(chunk-size=64K cache-size=16M retry-time=2 request-timeout=2
      upload-delay=0.2)
start_nbdkit "$sock" $(s3_args vol1 "$S3_PROXY_URL") size=64M "${vol1[@]}"
check "2 MiB written and flushed, then a restart: the cache is empty"
"$VERIFY" --socket "$sock" --write-pattern 0 $((2 * M)) 1 --flush
stop_nbdkit "$sock"
start_nbdkit "$sock" -v $(s3_args vol1 "$S3_PROXY_URL") "${vol1[@]}"
log=${_nbdkit_log[$sock]}
check "the store goes away; then 1 MiB + 5 bytes written at 8 MiB (dirty)"
# (Written after the store went away, so that no upload can finish first.
# Never written before, so the writes need no read from the store.)
proxy_down
bounded 10 "$VERIFY" --socket "$sock" --write-pattern $((8 * M)) $((M + 5)) 2
[ "$rc" -eq 0 ] || fail "writes into memory failed while the store is down"
check "a flush fails with EIO, within 30 s"
bounded 30 "$VERIFY" --socket "$sock" --flush
[ "$rc" -eq 1 ] && grep -q 'FAILED: flush.*Input/output error' "$tmp/bounded.out" ||
    fail "the flush did not fail with EIO while the store is unreachable"
check "the dirty data is still served, from memory, within 10 s"
bounded 10 "$VERIFY" --socket "$sock" --expect-pattern $((8 * M)) $((M + 5)) 2
[ "$rc" -eq 0 ] || fail "dirty data not served while the store is down"
check "a chunk that is only in the store: EIO within 30 s, never wrong bytes"
bounded 30 "$VERIFY" --socket "$sock" --expect-pattern $((1 * M)) 4096 1
[ "$rc" -eq 1 ] && grep -q 'FAILED: .*Input/output error' "$tmp/bounded.out" ||
    fail "a read from the unreachable store did not fail with EIO"
grep -q 'error: .*get chunks/' "$log" || fail "nbdkit logged no error for the failed GET"
check "a second flush fails too, still within 30 s"
bounded 30 "$VERIFY" --socket "$sock" --flush
[ "$rc" -eq 1 ] || fail "a flush succeeded while the store is unreachable"
check "the store is back: a flush succeeds (within 30 s), the reads work"
proxy_up || fail "the proxy did not restart"
bounded 30 "$VERIFY" --socket "$sock" --flush \
    --expect-pattern 0 $((2 * M)) 1 --expect-pattern $((8 * M)) $((M + 5)) 2
[ "$rc" -eq 0 ] || fail "the flush after the store came back failed"
stop_nbdkit "$sock"
check "after a restart straight to the gateway every byte is there"
start_nbdkit "$sock" $(s3_args vol1) "${vol1[@]}"
"$VERIFY" --socket "$sock" --expect-pattern 0 $((2 * M)) 1 \
    --expect-zero $((2 * M)) $((6 * M)) \
    --expect-pattern $((8 * M)) $((M + 5)) 2 \
    --expect-zero $((9 * M + 5)) $((55 * M - 5))
stop_nbdkit "$sock"

echo "=== 2. ext4: the store answers 500 to everything ==="
if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/fuse ] || ! command -v nbdfuse >/dev/null ||
   ! command -v mkfs.ext4 >/dev/null; then
    echo "$0: part 2 skipped: needs root, /dev/fuse, nbdfuse and mkfs.ext4"
else
    fuse=$tmp/fuse mnt=$tmp/mnt disk=$tmp/fuse/disk
    mkdir -p "$mnt"
    cleanup_fn _crash_teardown "$sock" "$fuse" "$mnt"
    vol2=(chunk-size=256K cache-size=32M retry-time=2 request-timeout=2
          upload-delay=0.5)
    start_nbdkit "$sock" $(s3_args vol2 "$S3_PROXY_URL") size=512M "${vol2[@]}"
    log=${_nbdkit_log[$sock]}
    start_nbdfuse "$sock" "$fuse"
    mkfs.ext4 -q -F "$disk"
    mount -o loop "$disk" "$mnt"
    check "fsync workload for 4 s while the store works"
    "$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --seed 11 \
        --duration 4 --max-size 1048576 | tail -n 1
    proxy_rule "mode=500"
    check "a new file and fsync: fails within 60 s, does not hang"
    bounded 60 dd if=/dev/urandom of="$mnt/during-outage" bs=64K count=16 \
        conv=fsync status=none
    [ "$rc" -ne 0 ] || fail "fsync succeeded while the store answers 500 to everything"
    echo "ok: fsync failed: $(cat "$tmp/bounded.out")"
    expect_ge "proxy: 500 answers" 1 "$(proxy_stat fault:500)"
    proxy_rule "mode=none"
    check "the store is back: umount, clean stop (uploads what is left)"
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    check "restart, replay the log, e2fsck -fn, every fsync'ed file intact"
    start_nbdkit "$sock" $(s3_args vol2) "${vol2[@]}"
    start_nbdfuse "$sock" "$fuse"
    mount -o loop "$disk" "$mnt"
    unmount_fs "$mnt" "$disk"
    e2fsck -f -n "$disk" > "$tmp/fsck.out" 2>&1 ||
        { cat "$tmp/fsck.out"; fail "e2fsck -fn found damage after the outage"; }
    echo "ok: e2fsck -fn clean"
    mount -o loop "$disk" "$mnt"
    "$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --verify ||
        fail "data fsync'ed before the outage was lost"
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
fi

echo "=== 3. a stalled upload does not block other chunks ==="
# Chunk 5 of 64 KiB: its key ends in chunks/0000000000000005.
vol3=(chunk-size=64K cache-size=16M retry-time=120 request-timeout=60
      upload-delay=0 connections=4)
start_nbdkit "$sock" $(s3_args vol3 "$S3_PROXY_URL") size=64M "${vol3[@]}"
check "chunks 0-31 written and flushed; restart: the cache is empty"
"$VERIFY" --socket "$sock" --write-pattern 0 $((2 * M)) 3 --flush
stop_nbdkit "$sock"
start_nbdkit "$sock" $(s3_args vol3 "$S3_PROXY_URL") "${vol3[@]}"
proxy_stats_reset
proxy_rule "mode=stall&delay=30&method=PUT&path=chunks/0000000000000005%24"
check "write chunk 5: its upload starts and stalls for 30 s"
"$VERIFY" --socket "$sock" --write-pattern $((5 * 65536)) 65536 4
for (( i = 0; i < 50; ++i )); do
    [ "$(proxy_stat fault:stall)" -ge 1 ] && break
    sleep 0.1
done
expect_eq "proxy: stalled PUTs" 1 "$(proxy_stat fault:stall)"
check "meanwhile, reads of other chunks from the store: within 10 s"
bounded 10 "$VERIFY" --socket "$sock" --expect-pattern 0 $((5 * 65536)) 3 \
    --expect-pattern $((6 * 65536)) $((26 * 65536)) 3
[ "$rc" -eq 0 ] || fail "reads of other chunks failed during a stalled upload"
check "a read of the stalled chunk itself (from memory): within 10 s"
bounded 10 "$VERIFY" --socket "$sock" --expect-pattern $((5 * 65536)) 65536 4
[ "$rc" -eq 0 ] || fail "read of the chunk being uploaded failed"
check "writes and a FUA write of other chunks: within 10 s"
bounded 10 "$VERIFY" --socket "$sock" --write-pattern $((40 * 65536)) $((4 * 65536)) 5 \
    --fua --write-pattern $((50 * 65536)) 65536 6 \
    --expect-pattern $((40 * 65536)) $((4 * 65536)) 5
[ "$rc" -eq 0 ] || fail "writes failed during a stalled upload"
[ "$(proxy_stat fault:stall)" -eq 1 ] || fail "more than one PUT was stalled"
proxy_rule "mode=none"
check "the stall ends: a clean stop stores everything; restart and read back"
stop_nbdkit "$sock"
start_nbdkit "$sock" $(s3_args vol3) "${vol3[@]}"
"$VERIFY" --socket "$sock" --expect-pattern 0 $((5 * 65536)) 3 \
    --expect-pattern $((5 * 65536)) 65536 4 \
    --expect-pattern $((6 * 65536)) $((26 * 65536)) 3 \
    --expect-pattern $((40 * 65536)) $((4 * 65536)) 5 \
    --expect-pattern $((50 * 65536)) 65536 6
stop_nbdkit "$sock"

echo "$0: PASS ($((SECONDS - t0)) s after the cluster started)"
