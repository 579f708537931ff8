#!/bin/bash
# s3chunk tests: what a filesystem on /dev/nbd0 (the kernel's NBD driver,
# in a VM: tests/vm-functions.sh) sees when nbdkit dies, hangs or is
# stopped in the wrong order, and that nothing fsync'ed or acknowledged is
# lost.
#
#   a. SIGKILL under tests/fsync-workload (ext4): without -t the guest's
#      writer gets EIO after the block layer's 30 s timer, or stays blocked
#      until nbd-client -d (both seen; the test reports which);
#      then nbd-client -d, restart with force-unlock=true, attach, mount
#      (journal replay), umount, e2fsck -f clean, every fsync'ed byte the
#      journal (kept on the host) names is there.
#   b. SIGSTOP (a hung nbdkit) for 12 s: without -t the writer waits and
#      goes on when nbdkit resumes, nothing lost; with -t 4 the kernel
#      gives up after ~4 s and the filesystem sees EIO.  This is what the
#      nbd-client -t of docs/OPERATIONS.md is chosen from.
#   c. Stop order: umount, nbd-client -d, SIGTERM: exit 0, no warning,
#      everything there.  SIGTERM first, while mounted with writes not yet
#      flushed: nbdkit warns that the client had unflushed writes, stores
#      them (exit 0), and after a restart every fsync'ed file is intact and
#      the filesystem is clean after its journal replay.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/vm-functions.sh"

make_tmpdir
requires_test_programs
[ -x "$abs_top_builddir/tests/fsync-workload" ] ||
    fail "tests/fsync-workload is missing: run make check"
cp "$abs_top_builddir/tests/fsync-workload" "$tmp/fsync-workload"
vm_start
sock=$tmp/sock
seed=${S3CHUNK_CRASH_SEED:-$((RANDOM % 1000 + 1))}
echo "seed $seed (S3CHUNK_CRASH_SEED=$seed replays the workload)"

# verify_after_restart VOL: restart nbdkit taking the lock over, attach,
# mount (replay), umount, fsck clean, mount, check the journal's promises.
verify_after_restart ()
{
    local vol=$1
    start_nbdkit "$sock" $(store_args "$vol") cache-size=64M $(takeover_args)
    vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client after restart"
    check "mount replays the journal; then e2fsck -f finds it clean"
    vm_ok "mount /dev/nbd0 /mnt/fs && umount /mnt/fs"
    vm_ok "e2fsck -f -n /dev/nbd0" || fail "e2fsck after the journal replay"
    check "every fsync'ed file and append is intact"
    vm_ok "mount /dev/nbd0 /mnt/fs &&
           /host/fsync-workload --dir /mnt/fs/w --journal /host/journal --verify" ||
        fail "fsync'ed data lost (journal $tmp/journal)"
    echo "ok: $(grep -c '^[FA] ' "$tmp/journal") promises kept"
    vm_ok "umount /mnt/fs"
    vm_nbd_detach nbd0
    stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
}

# force_teardown: the guest's side of a dead device: unmount (the
# filesystem sees EIO), nbd-client -d, remove the ports.
force_teardown ()
{
    vm_ports_remove nbd0
    vm_run -t 120 "nbd-client -d /dev/nbd0; kill -9 \$(pidof fsync-workload) 2>/dev/null; sleep 1; umount /mnt/fs 2>&1 || umount -l /mnt/fs" || true
}

echo "=== a. SIGKILL under an fsync workload ==="
start_nbdkit "$sock" $(store_args vol) size=2G cache-size=64M
vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client"
vm_ok "mkfs.ext4 -q -F /dev/nbd0 && mkdir -p /mnt/fs && mount /dev/nbd0 /mnt/fs && mkdir /mnt/fs/w"
vm_ok "rm -f /host/fw.rc; ( /host/fsync-workload --dir /mnt/fs/w --journal /host/journal --seed $seed --duration 300 --max-size 1048576 > /host/fw.out 2>&1; echo \$? > /host/fw.rc ) &"
sleep 12
n=$(grep -c '^[FA] ' "$tmp/journal" || true)
[ "$n" -gt 3 ] || { cat "$tmp/fw.out"; fail "the workload made only $n promises in 12 s"; }
kill_nbdkit "$sock"
# The guest's sockets close as they would with a real socket to nbdkit
# (see vm_ports_remove).
vm_ports_remove nbd0
t0=$SECONDS
# Without -t the guest may get EIO (the requests in flight wait for the
# block layer's 30 s timer, are requeued and find the connection dead) or
# stay blocked until nbd-client -d: both were seen.  Report which.
for (( i = 0; i < 75; ++i )); do
    grep -q 'Input/output error' "$tmp/fw.out" && break
    sleep 1
done
if grep -q 'Input/output error' "$tmp/fw.out"; then
    echo "the guest's writer saw EIO $((SECONDS - t0)) s after the SIGKILL, after $n+ promises:"
else
    echo "the guest's writer was still blocked $((SECONDS - t0)) s after the SIGKILL (no -t): nbd-client -d ends it"
fi
tail -n 2 "$tmp/fw.out"
vm_run "dmesg | grep -E 'nbd0|EXT4-fs|I/O error' | tail -n 6" || true
force_teardown
verify_after_restart vol

echo "=== b. a hung nbdkit (SIGSTOP 12 s), without and with nbd-client -t 4 ==="
# writer: one 4 KiB fsync'ed append a second, each numbered, until told.
writer='i=0; rm -f /host/w.rc /host/w.stop; while [ ! -e /host/w.stop ]; do i=$((i+1)); echo "record $i" | dd of=/mnt/fs/log bs=4096 conv=notrunc,fsync oflag=append 2>/dev/null || { echo "$i failed at $(date +%s)" > /host/w.rc; exit; }; echo $i > /host/w.n; sleep 1; done; echo "stopped $i" > /host/w.rc'
for t in none 4; do
    topt=; [ "$t" = none ] || topt="-t $t"
    echo "--- nbd-client ${topt:-without -t}"
    start_nbdkit "$sock" $(store_args vol) cache-size=64M
    vm_nbd_attach nbd0 "$sock" -b 4096 $topt || fail "nbd-client $topt"
    vm_ok "mount /dev/nbd0 /mnt/fs && rm -f /mnt/fs/log"
    vm_ok "( $writer ) > /dev/null 2>&1 &"
    sleep 4
    pid=${_nbdkit_pid[$sock]}
    kill -STOP "$pid"
    t0=$SECONDS
    sleep 12
    before=$(cat "$tmp/w.rc" 2>/dev/null || true)
    kill -CONT "$pid"
    echo "while nbdkit was stopped: ${before:-the writer waited, no error}"
    sleep 4
    touch "$tmp/w.stop"
    for (( i = 0; i < 30; ++i )); do [ -s "$tmp/w.rc" ] && break; sleep 1; done
    echo "writer: $(cat "$tmp/w.rc" 2>/dev/null), last record $(cat "$tmp/w.n")"
    vm_run "dmesg | grep -E 'nbd0' | tail -n 4" || true
    if [ "$t" = none ]; then
        [ -z "$before" ] || fail "without -t the writer failed while nbdkit was only stopped: $before"
        grep -q '^stopped' "$tmp/w.rc" || fail "without -t the writer failed after nbdkit resumed: $(cat "$tmp/w.rc")"
        check "every record is in the file, in order"
        vm_ok "n=\$(cat /host/w.n); i=1; while [ \$i -le \$n ]; do grep -qx \"record \$i\" /mnt/fs/log || { echo missing \$i; exit 1; }; i=\$((i+1)); done"
        vm_ok "umount /mnt/fs"
        vm_nbd_detach nbd0
        stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
    else
        [[ $before == *failed* ]] || fail "with -t $t the writer did not fail while nbdkit hung"
        echo "ok: with -t $t the filesystem saw EIO after ~$t s: a hung server is a crash"
        force_teardown
        stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
    fi
done
check "after the timeout: fsck clean, fsync'ed files intact"
verify_after_restart vol

echo "=== c. stop order ==="
check "right order: umount, nbd-client -d, SIGTERM: exit 0, no warning"
start_nbdkit "$sock" $(store_args vol) cache-size=64M
log=${_nbdkit_log[$sock]}
vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client"
vm_ok "mount /dev/nbd0 /mnt/fs && dd if=/dev/urandom of=/mnt/fs/right bs=1M count=4 2>/dev/null && sha256sum /mnt/fs/right > /host/right.sum"
vm_ok "umount /mnt/fs"
vm_nbd_detach nbd0
stop_nbdkit "$sock" || fail "the right order did not stop cleanly"
! grep -q 'with writes it had not flushed' "$log" ||
    fail "a warning about unflushed writes after the right stop order"

check "wrong order: SIGTERM while mounted, with written but unflushed data"
start_nbdkit "$sock" $(store_args vol) cache-size=64M upload-delay=30
log=${_nbdkit_log[$sock]}
vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client"
# One file fsync'ed (acknowledged and flushed), then a second written
# with O_DIRECT and no fsync: its data reaches nbdkit as writes before dd
# returns, with no flush after them (the extents wait in ext4's journal,
# whose commit is 60 s away).  (Writeback of the page cache by the flusher
# made the same state only when the guest was quick enough: under load
# the flush came first, or no write did.)
vm_ok "mount /dev/nbd0 /mnt/fs -o commit=60 && dd if=/dev/urandom of=/mnt/fs/fsynced bs=1M count=2 conv=fsync 2>/dev/null && sha256sum /mnt/fs/fsynced > /host/fsynced.sum && dd if=/dev/urandom of=/mnt/fs/unsynced bs=1M count=2 iflag=fullblock oflag=direct 2>/dev/null"
pid=${_nbdkit_pid[$sock]}
kill -TERM "$pid"
# nbdkit 1.32 does not end a connection on SIGTERM: it answers the
# client's next requests with ESHUTDOWN and exits only once the client
# has closed the connection (seen both ways here: sometimes the kernel's
# next request ends it, sometimes the connection stays open until the
# socket closes).  Let the guest send a request (a sync in the background:
# it may block for good on a filesystem whose journal just failed), then
# close the guest's connection as nbd-client -d would.
sleep 5
if kill -0 "$pid" 2>/dev/null && ! _is_zombie "$pid"; then
    echo "nbdkit still runs 5 s after SIGTERM with an idle client connected"
fi
vm_run -t 60 "( sync & ); sleep 5" >/dev/null || true
if kill -0 "$pid" 2>/dev/null && ! _is_zombie "$pid"; then
    echo "nbdkit still runs after the guest's sync: closing the guest's connection"
fi
vm_ports_remove nbd0
rc=0; _wait_exit "$pid" 120 || rc=$?
unset "_nbdkit_pid[$sock]"
echo "nbdkit exited with status $rc:"
grep -E 'warning: a client|could not be stored' "$log" || true
[ "$rc" -ne 124 ] || fail "nbdkit did not exit within 120 s of its client's disconnect after SIGTERM"
[ "$rc" -eq 0 ] || fail "nbdkit exited $rc: it lost acknowledged writes"
grep -q 'with writes it had not flushed' "$log" ||
    fail "no warning that the client was cut off with unflushed writes"
vm_run -t 90 "ls /mnt/fs > /dev/null; dmesg | grep -E 'nbd0|EXT4-fs' | tail -n 4" || true
force_teardown
start_nbdkit "$sock" $(store_args vol) cache-size=64M
vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client after the wrong order"
vm_ok "mount /dev/nbd0 /mnt/fs && umount /mnt/fs && e2fsck -f -n /dev/nbd0" ||
    fail "not clean after the wrong stop order"
vm_ok "mount /dev/nbd0 /mnt/fs && sha256sum -c /host/fsynced.sum && sha256sum -c /host/right.sum" ||
    fail "an fsync'ed file changed after the wrong stop order"
vm_ok "umount /mnt/fs"
vm_nbd_detach nbd0
stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
echo "$0: PASS"
