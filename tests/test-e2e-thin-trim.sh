#!/usr/bin/env bash
# s3chunk tests: a thin volume through the kernel (nbdkit -> nbdfuse ->
# loop device -> ext4).  A 1 TiB volume costs only what is written, and
# what the filesystem frees comes back when it is trimmed.
#  1. create 1T with 's3chunk create'; mkfs.ext4 (which discards the whole
#     device) and mount: the store holds only a few MB.
#  2. Write 300 MB of base64 text of random data, sync: the stored bytes
#     grow by about 300 MB / 1.33.  Delete the files, fstrim, flush: the
#     stored bytes fall back to within a few MB of the start.
#  3. The same with 'mount -o discard' and no fstrim: deleting is enough.
#  4. e2fsck -fn finds the filesystem clean, s3chunk fsck the store.
# Stored bytes are read with 's3chunk info --json' (the sum of the object
# sizes in the store's listing), so this runs on S3 as well.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

skip_if_valgrind "(too slow through the kernel)"
requires_e2e
requires mkfs.ext4 -V
requires e2fsck -V
requires fstrim --version
make_tmpdir
requires_test_programs
requires_tool

M=$((1024 * 1024))
sock=$tmp/sock fuse=$tmp/fuse mnt=$tmp/mnt
disk=$fuse/disk
store=$(store_args vol)
mkdir -p "$mnt"
cleanup_fn stop_nbdfuse "$fuse"
cleanup_fn unmount_fs "$mnt" "$disk"

stored ()
{
    "$S3CHUNK" info --json $store > "$tmp/stored.json" ||
        fail "s3chunk info failed"
    json_get "$tmp/stored.json" 'j["stored_bytes"]'
}
mb () { echo "$(( $1 / M )) MB"; }

# flush_all: everything the filesystem wrote (or trimmed) reaches nbdkit,
# and nbdkit's cache reaches the store.  sync(1) of the FUSE file makes
# nbdfuse send an NBD flush, which the plugin turns into a barrier.
flush_all ()
{
    sync
    sync -f "$mnt" 2>/dev/null || true
    sync "$disk"
}

# write_files N: N files of 100 MB of base64 text of random data
# (compressible by 4/3, not more).
write_files ()
{
    local i
    for (( i = 0; i < $1; ++i )); do
        head -c $((75 * M)) /dev/urandom | base64 -w 76 > "$mnt/data$i"
    done
}

# wait_stored_below LIMIT WHAT: flush until the stored bytes are at most
# LIMIT (trims may take a moment to reach the store: ext4 issues online
# discards at the commit after the delete).
wait_stored_below ()
{
    local limit=$1 what=$2 i s
    for (( i = 0; i < 30; ++i )); do
        flush_all
        s=$(stored)
        [ "$s" -gt "$limit" ] || { echo "$what: stored $(mb "$s")"; return 0; }
        sleep 0.5
    done
    fail "$what: stored bytes $s ($(mb "$s")), expected at most $limit ($(mb "$limit"))"
}

echo "=== 1. a 1 TiB volume costs nothing until written ==="
tool_ok create "$S3CHUNK" create $store size=1T
start_nbdkit "$sock" $store cache-size=128M upload-delay=1
start_nbdfuse "$sock" "$fuse"
[ "$(stat -c %s "$disk")" -eq $((1024 * 1024 * M)) ] || fail "the disk is not 1 TiB"
check "mkfs.ext4 (discards the device), mount"
t0=$SECONDS
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$disk"
mount -o loop,noinit_itable "$disk" "$mnt"
echo "mkfs and mount took $((SECONDS - t0)) s"
flush_all
s0=$(stored)
n0=$(json_get "$tmp/stored.json" 'j["chunk_objects"]')
echo "after mkfs: $n0 chunk objects, stored $s0 bytes ($(mb "$s0"))"
[ "$s0" -lt $((16 * M)) ] || fail "an empty 1 TiB ext4 takes $(mb "$s0") in the store"
df -h "$mnt"

echo "=== 2. write 300 MB, delete, fstrim ==="
t0=$SECONDS
write_files 3
flush_all
s1=$(stored)
echo "after writing 300 MB ($((SECONDS - t0)) s): stored $s1 bytes ($(mb "$s1"))"
# 3 x 100 MB of base64 (4/3 compressible): about 225 MB stored.
[ "$s1" -ge $((s0 + 200 * M)) ] && [ "$s1" -le $((s0 + 260 * M)) ] ||
    fail "300 MB of base64 text stored as $(mb $((s1 - s0))), expected about 225 MB"
rm -f "$mnt"/data*
flush_all
check "fstrim gives the space back"
fstrim -v "$mnt"
wait_stored_below $((s0 + 4 * M)) "after rm and fstrim"
echo "stored: $s0 at the start, $(stored) now"

echo "=== 3. mount -o discard: deleting is enough ==="
umount "$mnt"
mount -o loop,discard,noinit_itable "$disk" "$mnt"
flush_all
s2=$(stored)
write_files 1
flush_all
s3=$(stored)
echo "after writing 100 MB: stored $(mb "$s3")"
[ "$s3" -ge $((s2 + 65 * M)) ] || fail "100 MB of base64 text stored as $(mb $((s3 - s2)))"
rm -f "$mnt"/data*
wait_stored_below $((s2 + 4 * M)) "after rm with -o discard"

echo "=== 4. the filesystem and the store are clean ==="
unmount_fs "$mnt" "$disk"
e2fsck -f -n "$disk"
stop_nbdfuse "$fuse"
stop_nbdkit "$sock"
tool_ok fsck "$S3CHUNK" fsck --quiet $store
echo "$0: PASS"
