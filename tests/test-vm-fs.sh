#!/bin/bash
# s3chunk tests: ext4 and xfs through the kernel's NBD driver, the way users
# attach a volume: nbd-client and /dev/nbd0 in a VM (tests/vm-functions.sh).
# For each: mkfs, mount, copy a tree of files with known checksums in,
# umount, nbd-client -d, stop nbdkit; start a new nbdkit, attach again,
# fsck finds the filesystem clean, every checksum and the metadata are
# what they were.  tests/s3/test-vm-fs.s3 runs it on the Ceph gateway.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/vm-functions.sh"

make_tmpdir
requires_test_programs
vm_start

vm_make_tree "$tmp/src"
echo "$(wc -l < "$tmp/src.sums") files in the tree"
sock=$tmp/sock

for fstype in ext4 xfs; do
    case $fstype in
    ext4) mkfs="mkfs.ext4 -q -F"; fsck="e2fsck -f -n" ;;
    xfs)  mkfs="mkfs.xfs -q -f";  fsck="xfs_repair -n" ;;
    esac
    vol=vol-$fstype
    echo "=== $fstype: create, fill, record ==="
    start_nbdkit "$sock" $(store_args "$vol") size=1G cache-size=64M
    vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client"
    check "$mkfs /dev/nbd0, mount, copy the tree in"
    vm_ok "$mkfs /dev/nbd0"
    vm_ok "mkdir -p /mnt/$fstype && mount /dev/nbd0 /mnt/$fstype &&
           mkdir /mnt/$fstype/tree &&
           tar -C /host/src -cf - . | tar -C /mnt/$fstype/tree -xf -"
    check "the copy in the guest's page cache matches, before any restart"
    vm_ok "cd /mnt/$fstype/tree && sha256sum -c -s /host/src.sums"
    vm_ok "cd /mnt/$fstype/tree && $VM_META" > "$tmp/$fstype.meta-before"
    grep -q '^regular file 644 2 0:0 6291456 .* ./big/r6$' "$tmp/$fstype.meta-before" ||
        fail "r6 should have two links: $(grep big/r6 "$tmp/$fstype.meta-before")"

    check "umount, nbd-client -d, stop nbdkit (in that order)"
    vm_ok "umount /mnt/$fstype"
    vm_nbd_detach nbd0 || fail "nbd-client -d"
    stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"

    echo "=== $fstype: restart, attach, fsck, verify ==="
    start_nbdkit "$sock" $(store_args "$vol") cache-size=64M
    vm_nbd_attach nbd0 "$sock" -b 4096 || fail "nbd-client after restart"
    vm_ok "cat /sys/block/nbd0/size" | grep -qx $((1024 * 1024 * 2)) ||
        fail "the device has not the volume's size"
    check "$fsck /dev/nbd0 finds it clean"
    vm_ok "$fsck /dev/nbd0"
    check "every checksum matches"
    vm_ok "mount /dev/nbd0 /mnt/$fstype && cd /mnt/$fstype/tree &&
           sha256sum -c -s /host/src.sums" ||
        fail "checksums differ after the restart"
    echo "ok: $(wc -l < "$tmp/src.sums") files match"
    check "metadata (types, modes, links, owners, sizes, mtimes, symlinks)"
    vm_ok "cd /mnt/$fstype/tree && $VM_META" > "$tmp/$fstype.meta-after"
    diff -u "$tmp/$fstype.meta-before" "$tmp/$fstype.meta-after" ||
        fail "metadata differs after the restart"
    vm_ok "umount /mnt/$fstype"
    vm_nbd_detach nbd0 || fail "nbd-client -d"
    stop_nbdkit "$sock" || fail "nbdkit did not stop cleanly"
done
echo "$0: PASS"
