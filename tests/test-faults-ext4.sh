#!/usr/bin/env bash
# s3chunk tests: ext4 on a misbehaving store.  nbdkit talks to a real Ceph
# RADOS Gateway through tests/s3-fault-proxy, which faults 10% of all
# requests, the kind of fault changing every 2 seconds: HTTP 500, 503
# SlowDown, connection reset, answers cut short, answers dropped after the
# store acted, and stalls shorter than request-timeout.  Under that, mkfs,
# a tree of files and an fsync workload (tests/fsync-workload.c) must
# complete without an error reaching ext4; then, after umount and a clean
# stop, a restart straight to the gateway: e2fsck -fn is clean and every
# checksum and every fsync'ed byte is there.  nbdkit -v must show the
# retries of each kind of fault.  The seed is printed (S3CHUNK_CRASH_SEED).
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"
source "$abs_top_srcdir/tests/robust-functions.sh"

skip_if_valgrind "(too slow through the kernel)"
requires_e2e
requires mkfs.ext4 -V
requires e2fsck -V
s3_start_cluster
requires_robust_programs
s3_start_proxy
robust_seed
t0=$SECONDS
sock=$tmp/sock fuse=$tmp/fuse mnt=$tmp/mnt
disk=$fuse/disk
mkdir -p "$mnt"
cleanup_fn _crash_teardown "$sock" "$fuse" "$mnt"

modes=(500 503 reset cut drop stall)

vol=(chunk-size=256K cache-size=32M upload-delay=0.5 retry-time=60
     request-timeout=5 connections=8)
start_nbdkit "$sock" -v $(s3_args vol "$S3_PROXY_URL") size=512M "${vol[@]}"
log=${_nbdkit_log[$sock]}
proxy_stats_reset
start_fault_rotation 0.1 2 "${modes[@]}"

echo "=== ext4 under faults: mkfs, a tree of files, fsync workload ==="
start_nbdfuse "$sock" "$fuse"
mkfs.ext4 -q -F "$disk"
mount -o loop "$disk" "$mnt"
check "write a tree of files"
populate_tree "$mnt/tree"
sync -f "$mnt"
check "fsync workload for 15 s"
"$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --seed "$seed" \
    --duration 15 --max-size 2097152 || fail "the fsync workload failed"
check "drop the page cache: read everything back through the faults"
sync -f "$mnt"
echo 3 > /proc/sys/vm/drop_caches
record_tree "$mnt" "$tmp/before"
"$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --verify ||
    fail "data read back under faults differs"
unmount_fs "$mnt" "$disk"
stop_nbdfuse "$fuse"
stop_fault_rotation
echo "faults injected:"
curl -sS -m 10 "$S3_PROXY_URL/__stats?format=text" | grep -E '^(requests|fault:|faulted:)'
for m in "${modes[@]}"; do
    expect_ge "proxy: $m faults" 1 "$(proxy_stat "fault:$m")"
done
check "nbdkit -v shows the retries"
retries=$(grep -c '; retry [0-9]* in' "$log" || true)
expect_ge "retry lines" 20 "$retries"
expect_ge "retries of HTTP 500" 1 "$(grep -c 'HTTP 500.*; retry' "$log" || true)"
expect_ge "retries of 503 SlowDown" 1 "$(grep -c '503 SlowDown.*; retry' "$log" || true)"
expect_ge "retries of failed connections (reset, cut, drop)" 1 \
    "$(grep '; retry [0-9]* in' "$log" | grep -vc 'HTTP [0-9]' || true)"
if grep -q 'error:' "$log"; then
    grep 'error:' "$log" | head
    fail "an error reached nbdkit's log under faults that retries must absorb"
fi
stop_nbdkit "$sock"

echo "=== restart straight to the gateway: fsck, checksums, fsync'ed bytes ==="
start_nbdkit "$sock" $(s3_args vol) "${vol[@]}"
start_nbdfuse "$sock" "$fuse"
e2fsck -f -n "$disk" > "$tmp/fsck.out" 2>&1 ||
    { cat "$tmp/fsck.out"; fail "e2fsck -fn found damage"; }
echo "ok: e2fsck -fn clean"
mount -o loop "$disk" "$mnt"
( cd "$mnt" && sha256sum --quiet -c "$tmp/before.sums" ) ||
    fail "checksums differ after restart"
echo "ok: $(wc -l < "$tmp/before.sums") files match"
"$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --verify ||
    fail "fsync'ed data differs after restart"
unmount_fs "$mnt" "$disk"
stop_nbdfuse "$fuse"
stop_nbdkit "$sock"
echo "$0: PASS (seed $seed, $((SECONDS - t0)) s after the cluster started)"
