#!/usr/bin/env bash
# s3chunk tests: growing a volume and its filesystem without LVM, through
# the kernel (nbdkit -> nbdfuse -> loop device -> ext4 / xfs).
#
# For each filesystem: create the volume, mkfs, mount, write files and
# record their checksums, fill the rest of the filesystem (fallocate), and
# stop cleanly (umount, detach, stop nbdkit).  Grow the volume offline -
# ext4 by restarting nbdkit with a larger size=, xfs with 's3chunk grow'
# and a restart without size= - reattach, mount, and grow the filesystem
# online (resize2fs / xfs_growfs).  Then: df shows the new size, every
# checksum verifies, a new file (which can only go into the new space, the
# old space being full) is written and read back after a restart, and
# e2fsck -fn / xfs_repair -n and s3chunk fsck find everything clean.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

skip_if_valgrind "(too slow through the kernel)"
requires_e2e
make_tmpdir
requires_test_programs
requires_tool

M=$((1024 * 1024))
sock=$tmp/sock fuse=$tmp/fuse mnt=$tmp/mnt
disk=$fuse/disk
mkdir -p "$mnt"
cleanup_fn stop_nbdfuse "$fuse"
cleanup_fn unmount_fs "$mnt" "$disk"

# CAP_SYS_RESOURCE (bit 24) in our effective capabilities?
has_cap_sys_resource ()
{
    local caps
    caps=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
    [ -n "$caps" ] && (( (16#$caps >> 24) & 1 ))
}

fs_size () { df -B1 --output=size "$mnt" | tail -n 1 | tr -d ' '; }
fs_avail () { df -B1 --output=avail "$mnt" | tail -n 1 | tr -d ' '; }

detach ()
{
    sync
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    ! mountpoint -q "$mnt" || fail "$mnt is still mounted"
}

# run_grow FSTYPE OLD NEW HOW: HOW is size= or tool.
run_grow ()
{
    local fstype=$1 old=$2 new=$3 how=$4 store mkfs fsck grow
    local size0 size1 avail loopdev
    store=$(store_args "vol-$fstype")
    case $fstype in
    ext4) mkfs=(mkfs.ext4 -q -F); fsck=(e2fsck -f -n) ;;
    xfs)  mkfs=(mkfs.xfs -q -f);  fsck=(xfs_repair -n) ;;
    esac

    echo "=== $fstype: $((old / M)) MiB, grown to $((new / M)) MiB with $how ==="
    tool_ok create-$fstype "$S3CHUNK" create $store size=$old
    start_nbdkit "$sock" $store upload-delay=1
    start_nbdfuse "$sock" "$fuse"
    "${mkfs[@]}" "$disk"
    mount -o loop "$disk" "$mnt"
    size0=$(fs_size)
    check "write files, record checksums, fill the rest"
    populate_small "$mnt/tree"
    ( cd "$mnt" && find tree -type f -print0 | sort -z | xargs -0 sha256sum ) \
        > "$tmp/$fstype.sums"
    avail=$(fs_avail)
    # Leave 8 MiB: the old space is full, so new data goes to the new space.
    fallocate -l $(( avail - 8 * M )) "$mnt/filler"
    echo "filesystem $size0 bytes, $(fs_avail) bytes free after the filler"
    detach

    check "grow the volume offline ($how)"
    if [ "$how" = tool ]; then
        tool_ok grow-$fstype "$S3CHUNK" grow $store $new
        start_nbdkit "$sock" $store upload-delay=1
    else
        start_nbdkit "$sock" $store size=$new upload-delay=1
    fi
    start_nbdfuse "$sock" "$fuse"
    [ "$(stat -c %s "$disk")" -eq "$new" ] || fail "the disk is not $new bytes"
    tool_ok info-$fstype "$S3CHUNK" info --json $store
    [ "$(json_get "$tmp/info-$fstype.out" 'j["size"]')" -eq "$new" ] ||
        fail "the superblock does not say $new"

    check "mount and grow $fstype online"
    mount -o loop "$disk" "$mnt"
    loopdev=$(losetup -j "$disk" -O NAME -n | head -n 1)
    [ -n "$loopdev" ] || fail "no loop device for $disk"
    [ "$(blockdev --getsize64 "$loopdev")" -eq "$new" ] ||
        fail "$loopdev is not $new bytes"
    [ "$(fs_size)" -eq "$size0" ] || fail "the filesystem changed size by itself"
    case $fstype in
    ext4)
        if has_cap_sys_resource; then
            resize2fs "$loopdev"
        else
            # The kernel allows ext4's online resize ioctl only with
            # CAP_SYS_RESOURCE, which some containers drop: resize offline.
            echo "no CAP_SYS_RESOURCE here: resizing ext4 offline"
            umount "$mnt"
            e2fsck -f -p "$disk"
            resize2fs "$disk"
            mount -o loop "$disk" "$mnt"
        fi
        ;;
    xfs)  xfs_growfs "$mnt" ;;
    esac
    size1=$(fs_size)
    df -h "$mnt"
    echo "filesystem: $size0 -> $size1 bytes"
    [ "$size1" -ge $(( size0 + (new - old) * 9 / 10 )) ] ||
        fail "df shows $size1 bytes, expected about $size0 + $((new - old))"
    check "every checksum verifies"
    ( cd "$mnt" && sha256sum --quiet -c "$tmp/$fstype.sums" ) ||
        fail "checksums differ after growing"
    check "write into the new space"
    head -c $((48 * M)) /dev/urandom > "$mnt/new-space"
    yes "written after growing $fstype" | head -c $((16 * M)) >> "$mnt/new-space"
    ( cd "$mnt" && sha256sum new-space ) > "$tmp/$fstype.new"
    [ "$(fs_avail)" -lt $(( size1 - size0 )) ] || fail "the new file took no space"
    detach

    check "restart: ${fsck[*]} clean, every file verifies"
    start_nbdkit "$sock" $store
    start_nbdfuse "$sock" "$fuse"
    "${fsck[@]}" "$disk"
    mount -o loop "$disk" "$mnt"
    [ "$(fs_size)" -eq "$size1" ] || fail "the grown size did not stick"
    ( cd "$mnt" && sha256sum --quiet -c "$tmp/$fstype.sums" "$tmp/$fstype.new" ) ||
        fail "checksums differ after the restart"
    detach
    tool_ok fsck-$fstype "$S3CHUNK" fsck --quiet $store
    grep -q ": clean$" "$tmp/fsck-$fstype.out" || fail "s3chunk fsck is not clean"
}

# populate_small DIR: ~20 MB of files, random and text, large and small.
populate_small ()
{
    local d=$1 i
    mkdir -p "$d/a" "$d/b"
    head -c $((7 * M)) /dev/urandom > "$d/a/random7"
    yes "a line of text in a file that the test grows under" |
        head -c $((9 * M)) > "$d/a/text9"
    for (( i = 0; i < 100; ++i )); do
        head -c $(( (i * 7919) % 40000 + 1 )) /dev/urandom > "$d/b/f$i"
    done
    ln "$d/a/random7" "$d/b/hardlink"
}

ran=0
if command -v mkfs.ext4 >/dev/null && command -v resize2fs >/dev/null; then
    run_grow ext4 $((128 * M)) $((384 * M)) size=
    ran=$((ran + 1))
else
    echo "$0: ext4 tools missing: skipping ext4"
fi
# xfs refuses filesystems smaller than 300 MB.
if command -v mkfs.xfs >/dev/null && command -v xfs_growfs >/dev/null; then
    run_grow xfs $((320 * M)) $((704 * M)) tool
    ran=$((ran + 1))
else
    echo "$0: xfs tools missing: skipping xfs"
fi
if [ "$ran" -eq 0 ]; then
    echo "$0: SKIP: neither ext4 nor xfs tools are installed"
    exit 77
fi
echo "$0: PASS"
