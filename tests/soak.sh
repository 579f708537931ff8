#!/usr/bin/env bash
# s3chunk soak test: make soak (root; not part of make check).
#
# Two volumes on a throwaway Ceph RADOS Gateway, both reached through
# tests/s3-fault-proxy, which faults 5% of the requests (500, 503 SlowDown,
# resets, cut answers, dropped answers, short stalls, in turn):
#   raw:  fio with its nbd engine, 4 jobs (4 NBD connections), each on its
#         own 128 MiB of the disk: 48 MiB of random writes of 4K-256K, then
#         every block read back and checked (verify=crc32c);
#   ext4: ext4 through nbdfuse and a loop device, fio with 3 jobs writing
#         32 MiB files with O_DIRECT and fsync, then the page cache dropped
#         and every block read back and checked;
# round after round, each round a new random seed, for SOAK_MINUTES
# (default 10).  At the end the faults stop, both volumes are stopped and
# restarted straight on the gateway, the last round is verified again
# (fio --verify_only), and e2fsck -fn must find ext4 clean.  Prints what
# it did and ends with "verification errors: 0" or fails.
#
#   make soak [SOAK_MINUTES=N]  (or: sudo SOAK_MINUTES=1 tests/soak.sh)
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"
source "$abs_top_srcdir/tests/robust-functions.sh"

minutes=${SOAK_MINUTES:-10}
requires_e2e
requires mkfs.ext4 -V
requires fio --version
fio --enghelp=nbd >/dev/null 2>&1 ||
    { echo "$0: SKIP: this fio has no nbd engine"; exit 77; }
s3_start_cluster
requires_robust_programs
s3_start_proxy
robust_seed
t0=$SECONDS
rsock=$tmp/raw.sock fsock=$tmp/fs.sock fuse=$tmp/fuse mnt=$tmp/mnt
disk=$fuse/disk
mkdir -p "$mnt"
cleanup_fn _crash_teardown "$fsock" "$fuse" "$mnt"
vol=(chunk-size=256K cache-size=64M upload-delay=0.5 retry-time=120
     request-timeout=10 connections=16)

start_nbdkit "$rsock" -v $(s3_args soak-raw "$S3_PROXY_URL") size=512M "${vol[@]}"
rlog=${_nbdkit_log[$rsock]}
start_nbdkit "$fsock" -v $(s3_args soak-fs "$S3_PROXY_URL") size=1G "${vol[@]}"
flog=${_nbdkit_log[$fsock]}
start_nbdfuse "$fsock" "$fuse"
mkfs.ext4 -q -F "$disk"
mount -o loop "$disk" "$mnt"
proxy_stats_reset
start_fault_rotation 0.05 5 500 503 reset cut drop stall

# raw_job SEED [fio options...]: the raw-device job file on stdout.
raw_job ()
{
    cat <<JOB
[global]
ioengine=nbd
uri=nbd+unix:///?socket=$rsock
rw=randwrite
bsrange=4k-256k
bs_unaligned=0
iodepth=8
size=48M
numjobs=4
offset_increment=128M
verify=crc32c
verify_fatal=1
verify_dump=1
randrepeat=0
randseed=$1
group_reporting=1
[raw]
JOB
}

# fs_job SEED: the ext4 job file on stdout (write phase only).
fs_job ()
{
    cat <<JOB
[global]
directory=$mnt/fio
ioengine=psync
direct=1
rw=randwrite
bsrange=4k-64k
size=32M
numjobs=3
fsync=64
verify=crc32c
verify_fatal=1
verify_dump=1
do_verify=0
randrepeat=0
randseed=$1
group_reporting=1
[fs]
JOB
}

# fio_run NAME LOG JOBFILE [fio options]: fio, its status and its errors.
fio_errors=0
fio_run ()
{
    local name=$1 log=$2 job=$3 rc=0
    shift 3
    fio --output-format=normal "$@" "$job" > "$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] || grep -qE 'verify: bad|bad magic|crc32c: verify failed|err= *[1-9]' "$log"; then
        echo "$0: $name: fio failed (status $rc):"
        grep -E 'verify|err=|error' "$log" | head -n 20
        return 1
    fi
}

mkdir -p "$mnt/fio"
round=0
raw_bytes=0 fs_bytes=0
deadline=$(( SECONDS + minutes * 60 ))
echo "=== soak: $minutes minute(s) of rounds (raw: 4 connections x 48 MiB," \
     "ext4: 3 jobs x 32 MiB) under 5% faults ==="
while [ "$SECONDS" -lt "$deadline" ]; do
    round=$((round + 1))
    rseed=$((seed * 1000 + round))
    raw_job "$rseed" > "$tmp/raw.fio"
    fs_job "$rseed" > "$tmp/fs.fio"
    fio_run "round $round raw" "$tmp/raw-$round.log" "$tmp/raw.fio" &
    rpid=$!
    fok=0
    fio_run "round $round ext4 write" "$tmp/fs-$round.log" "$tmp/fs.fio" &&
        sync -f "$mnt" && echo 3 > /proc/sys/vm/drop_caches &&
        fio_run "round $round ext4 verify" "$tmp/fsv-$round.log" \
            "$tmp/fs.fio" --verify_only || fok=1
    rok=0
    wait "$rpid" || rok=1
    [ "$rok" -eq 0 ] || fio_errors=$((fio_errors + 1))
    [ "$fok" -eq 0 ] || fio_errors=$((fio_errors + 1))
    raw_bytes=$((raw_bytes + 4 * 48))
    fs_bytes=$((fs_bytes + 3 * 32))
    echo "round $round (seed $rseed): raw $([ $rok = 0 ] && echo ok || echo FAILED)," \
         "ext4 $([ $fok = 0 ] && echo ok || echo FAILED);" \
         "$((SECONDS - t0)) s; proxy: $(proxy_stat requests) requests," \
         "$(curl -sS -m 10 "$S3_PROXY_URL/__stats?format=text" | awk '/^fault:/ { n += $2 } END { print n + 0 }') faults"
    [ "$fio_errors" -eq 0 ] || break
done
stop_fault_rotation

echo "=== after the faults: stop, restart straight on the gateway, verify again ==="
unmount_fs "$mnt" "$disk"
stop_nbdfuse "$fuse"
stop_nbdkit "$rsock"
stop_nbdkit "$fsock"
start_nbdkit "$rsock" $(s3_args soak-raw) "${vol[@]}"
start_nbdkit "$fsock" $(s3_args soak-fs) "${vol[@]}"
fio_run "final raw verify" "$tmp/raw-final.log" "$tmp/raw.fio" --verify_only ||
    fio_errors=$((fio_errors + 1))
start_nbdfuse "$fsock" "$fuse"
e2fsck -f -n "$disk" > "$tmp/fsck.out" 2>&1 ||
    { cat "$tmp/fsck.out"; fio_errors=$((fio_errors + 1)); echo "$0: e2fsck -fn found damage"; }
mount -o loop "$disk" "$mnt"
fio_run "final ext4 verify" "$tmp/fs-final.log" "$tmp/fs.fio" --verify_only ||
    fio_errors=$((fio_errors + 1))
unmount_fs "$mnt" "$disk"
stop_nbdfuse "$fuse"
stop_nbdkit "$rsock"
stop_nbdkit "$fsock"

echo "=== soak summary ==="
echo "seed $seed, $round round(s) in $((SECONDS - t0)) s"
echo "written and verified: raw $raw_bytes MiB over 4 NBD connections," \
     "ext4 $fs_bytes MiB over 3 files"
echo "proxy: $(curl -sS -m 10 "$S3_PROXY_URL/__stats?format=text" 2>/dev/null | grep -E '^(requests|fault:)' | tr '\n' ' ')"
echo "nbdkit retries logged: raw $(grep -c '; retry [0-9]* in' "$rlog" || true)," \
     "ext4 $(grep -c '; retry [0-9]* in' "$flog" || true)"
echo "verification errors: $fio_errors"
[ "$fio_errors" -eq 0 ] || fail "verification errors (seed $seed; logs in $tmp with S3CHUNK_KEEP_TMP=1)"
echo "$0: PASS"
