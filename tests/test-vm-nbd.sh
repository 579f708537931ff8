#!/bin/bash
# s3chunk tests: nbd-client options through the kernel's NBD driver (in a
# VM: tests/vm-functions.sh).
#
#   a. nbd-client -C 4: 48 MiB of random data written with O_DIRECT from
#      four CPUs over four connections (nbdkit's log filter shows they
#      carried writes; stopping shows no unflushed-writes warning),
#      detach, restart, read back over one connection: the same sha256.
#   b. fsync-heavy appends on ext4 (N fsync'ed 4 KiB appends): NBD flushes,
#      FUA writes and PUTs per fsync through /dev/nbd0, against the same
#      through nbdfuse + a loop device on the host (when the host has
#      /dev/fuse); the figures are printed for docs/BENCHMARKS.md.  Each
#      fsync must reach the store (at least one PUT and one flush or FUA).
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/vm-functions.sh"

make_tmpdir
requires_test_programs
VM_SMP=4            # four CPU queues, so that four connections carry I/O
vm_start
sock=$tmp/sock
N=${S3CHUNK_VM_FSYNCS:-40}

echo "=== a. nbd-client -C 4 ==="
dd if=/dev/urandom of="$tmp/shadow" bs=1M count=48 status=none
want=$(sha256sum < "$tmp/shadow" | cut -d' ' -f1)
start_nbdkit "$sock" --filter=log $(store_args vol) size=256M cache-size=32M \
    logfile="$tmp/nbd-a.log"
vm_nbd_attach nbd0 "$sock" -b 4096 -C 4 || fail "nbd-client -C 4"
# One writer per CPU (each CPU's queue is one connection), 12 MiB each,
# fsync'ed: dd to a device with a write cache flushes only when told.
vm_ok "for c in 0 1 2 3; do taskset -c \$c dd if=/host/shadow of=/dev/nbd0 bs=1M skip=\$((c*12)) seek=\$((c*12)) count=12 oflag=direct conv=notrunc,fsync 2>/dev/null & done; wait"
vm_nbd_detach nbd0
stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
! grep -q 'with writes it had not flushed' "$tmp"/nbdkit-1.log ||
    fail "writes fsync'ed over one of 4 connections counted as unflushed"
conns=$(grep -E '^[^ ]+ [^ ]+ connection=[0-9]+ Write ' "$tmp/nbd-a.log" |
            sed -E 's/.* connection=([0-9]+) .*/\1/' | sort -u | wc -l)
echo "connections that carried writes: $conns"
[ "$conns" -ge 2 ] || fail "nbd-client -C 4 used $conns connection(s) for writes"
start_nbdkit "$sock" $(store_args vol) cache-size=32M
vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client"
got=$(vm_ok "dd if=/dev/nbd0 bs=1M count=48 iflag=direct 2>/dev/null | sha256sum" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "data written over 4 connections reads back as $got, not $want"
echo "ok: 48 MiB over 4 connections read back intact"
vm_nbd_detach nbd0
stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"

echo "=== b. fsync'ed appends: flushes, FUA writes, PUTs per fsync ==="
# count LOG PATTERN: lines of nbdkit's log filter matching PATTERN.
count () { grep -E -c "$2" "$1" || true; }
puts () { sed -n 's/.* \([0-9]*\) PUT, .*/\1/p' "$1" | tail -n 1; }
appends="i=0; while [ \$i -lt \$1 ]; do i=\$((i+1)); echo \"append \$i\" | dd of=\$2 bs=4096 conv=notrunc,fsync oflag=append 2>/dev/null || exit 1; done"
printf '%s\n' "$appends" > "$tmp/appends.sh"

# session PATH N: one nbdkit with the log filter; mount, N appends, umount.
# Prints "flushes fua puts".
vm_session ()
{
    local n=$1 l=$tmp/nbd-b$n.log
    rm -f "$l"
    start_nbdkit "$sock" --filter=log $(store_args volb) cache-size=32M \
        logfile="$l" >/dev/null
    local nlog=${_nbdkit_log[$sock]}
    vm_nbd_attach nbd0 "$sock" -b 4096 > "$tmp/attach.out" ||
        { cat "$tmp/attach.out"; fail "nbd-client"; }
    vm_ok "mount /dev/nbd0 /mnt/b && sh /host/appends.sh $n /mnt/b/log && umount /mnt/b" >/dev/null
    vm_nbd_detach nbd0 >/dev/null
    stop_nbdkit "$sock" >/dev/null || fail "nbdkit did not stop cleanly"
    echo "$(count "$l" ' Flush id=') $(count "$l" ' Write id=.* fua=1') $(puts "$nlog")"
}
fuse_session ()
{
    local n=$1 l=$tmp/nbd-f$n.log fuse=$tmp/fuse mnt=$tmp/mntf
    rm -f "$l"
    start_nbdkit "$sock" --filter=log $(store_args volf) cache-size=32M \
        logfile="$l" >/dev/null
    local nlog=${_nbdkit_log[$sock]}
    start_nbdfuse "$sock" "$fuse" >/dev/null
    mkdir -p "$mnt"
    mount -o loop "$fuse/disk" "$mnt"
    bash "$tmp/appends.sh" "$n" "$mnt/log" || fail "appends on the host"
    unmount_fs "$mnt" "$fuse/disk" >/dev/null
    stop_nbdfuse "$fuse" >/dev/null
    stop_nbdkit "$sock" >/dev/null || fail "nbdkit did not stop cleanly"
    echo "$(count "$l" ' Flush id=') $(count "$l" ' Write id=.* fua=1') $(puts "$nlog")"
}
per_fsync ()
{
    awk -v n="$N" -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ");
        printf "%.2f flushes, %.2f FUA writes, %.2f PUTs", (y[1]-x[1])/n, (y[2]-x[2])/n, (y[3]-x[3])/n }'
}

start_nbdkit "$sock" $(store_args volb) size=1G cache-size=32M
vm_nbd_attach nbd0 "$sock" -b 4096 > "$tmp/attach.out" ||
    { cat "$tmp/attach.out"; fail "nbd-client"; }
vm_ok "mkfs.ext4 -q -F /dev/nbd0 && mkdir -p /mnt/b"
vm_nbd_detach nbd0
stop_nbdkit "$sock"
k0=$(vm_session 0)
kN=$(vm_session "$N")
echo "kernel NBD (/dev/nbd0): mount+umount: $k0; with $N fsyncs: $kN"
kernel=$(per_fsync "$k0" "$kN")
echo "per fsync, /dev/nbd0: $kernel"
read -r kf ku kp <<< "$(awk -v n="$N" -v a="$k0" -v b="$kN" 'BEGIN { split(a, x, " "); split(b, y, " "); print (y[1]-x[1])/n, (y[2]-x[2])/n, (y[3]-x[3])/n }')"
awk -v f="$kf" -v u="$ku" -v p="$kp" 'BEGIN { exit !(p >= 1 && f + u >= 1) }' ||
    fail "an fsync through /dev/nbd0 did not reach the store ($kernel)"

if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && command -v nbdfuse >/dev/null; then
    cleanup_fn stop_nbdfuse "$tmp/fuse"
    cleanup_fn unmount_fs "$tmp/mntf" "$tmp/fuse/disk"
    start_nbdkit "$sock" $(store_args volf) size=1G cache-size=32M >/dev/null
    start_nbdfuse "$sock" "$tmp/fuse" >/dev/null
    mkfs.ext4 -q -F "$tmp/fuse/disk"
    stop_nbdfuse "$tmp/fuse" >/dev/null
    stop_nbdkit "$sock" >/dev/null
    f0=$(fuse_session 0)
    fN=$(fuse_session "$N")
    echo "nbdfuse + loop: mount+umount: $f0; with $N fsyncs: $fN"
    echo "per fsync, nbdfuse + loop: $(per_fsync "$f0" "$fN")"
else
    echo "(no /dev/fuse or not root: nbdfuse + loop not measured)"
fi
echo "$0: PASS"
