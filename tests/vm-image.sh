#!/bin/bash
# tests/vm-image.sh: the small VM of the kernel NBD tests (tests/test-vm-*.sh):
# a Debian kernel and an initramfs made from Debian packages, nothing else.
#
#   tests/vm-image.sh fetch          download the guest's packages (apt-get
#                                    download) into the cache (DEBS below);
#                                    scripts/install-deps runs it
#   tests/vm-image.sh build OUTDIR   fetch if need be, then build
#                                    OUTDIR/vmlinuz and OUTDIR/initrd (an
#                                    uncompressed cpio) unless OUTDIR/stamp
#                                    says they are already built from the
#                                    same packages and the same scripts
#
# The packages are extracted with dpkg -x (never installed on the host).
# Only what the tests run goes into the image: busybox (the shell and the
# small tools), nbd-client, e2fsprogs, xfsprogs, socat, the libraries
# their programs need (found by reading each ELF file's NEEDED entries; a
# library missing from the packages below fails the build, by name), and
# the kernel modules of the list below with their dependencies (from each
# module's .modinfo: the package has no modules.dep, depmod runs at
# install time).  tests/vm-init is the guest's /init.
#
# Environment: S3CHUNK_VM_DEBS, the package cache (default
# /var/cache/s3chunk/vm-debs when writable, else OUTDIR/debs).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The kernel: the one linux-image-amd64 points at today (an ABI package,
# e.g. linux-image-6.1.0-57-amd64).
kernel_pkg ()
{
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# The programs and the packages that hold them and their libraries
# (Debian 12).  A package added to a program's dependencies in an update
# shows up as "library ... not found" at build time: add it here.
packages=(
    busybox-static nbd-client e2fsprogs xfsprogs socat
    libc6 libgcc-s1
    libext2fs2 libcom-err2 libblkid1 libuuid1 libss2
    libinih1 liburcu8 libedit2 libbsd0 libmd0 libtinfo6
    libssl3 libwrap0 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3
    libk5crypto3 libkrb5support0 libkeyutils1
    libgnutls30 libnl-3-200 libnl-genl-3-200 libp11-kit0 libidn2-0
    libunistring2 libtasn1-6 libnettle8 libhogweed6 libgmp10 libffi8
    libdevmapper1.02.1 libselinux1 libpcre2-8-0 libudev1
)

# Programs copied into the image (paths inside the packages).
programs=(
    sbin/nbd-client
    sbin/mke2fs sbin/e2fsck sbin/resize2fs sbin/dumpe2fs sbin/tune2fs
    sbin/mkfs.xfs sbin/xfs_repair usr/sbin/xfs_growfs usr/sbin/xfs_db
    usr/sbin/xfs_io
    usr/bin/socat
)
# Extra libraries the test programs brought in from the host need
# (tests/fsync-workload links libcrypto; the tools in tools/ may link more).
extra_libs=(libcrypto.so.3)

# Modules loaded by tests/vm-init, in this order after their dependencies.
modules=(
    virtio_pci virtio_console virtio_blk
    9pnet_virtio 9p
    crc32c_generic nbd ext4 xfs
)

die () { echo "vm-image.sh: $*" >&2; exit 1; }

debs_dir ()
{
    if [ -n "${S3CHUNK_VM_DEBS:-}" ]; then
        echo "$S3CHUNK_VM_DEBS"
    elif mkdir -p /var/cache/s3chunk/vm-debs 2>/dev/null &&
         [ -w /var/cache/s3chunk/vm-debs ]; then
        echo /var/cache/s3chunk/vm-debs
    else
        echo "${1:?}/debs"
    fi
}

# fetch DIR: the current candidate of every package, as DIR/*.deb; older
# versions are removed.  apt-get download needs fresh package lists: one
# apt-get update (as root) if the first try fails.
fetch ()
{
    local dir=$1 k want=() p f
    k=$(kernel_pkg)
    [ -n "$k" ] || {
        [ "$(id -u)" -eq 0 ] && apt-get update -qq && k=$(kernel_pkg)
        [ -n "$k" ] || die "apt-cache knows no linux-image-amd64: run apt-get update"
    }
    want=("$k" "${packages[@]}")
    mkdir -p "$dir"
    (
        cd "$dir"
        exec 8>.lock
        flock 8
        # What the current versions are called (asked from /: apt leaves
        # out files already in the current directory); download only those
        # missing.  (apt's sandbox user cannot write here: download as root
        # rather than warn.)
        local uris missing=()
        if ! uris=$(cd / && apt-get download --print-uris "${want[@]}" 2>"$dir/download.log"); then
            [ "$(id -u)" -eq 0 ] || { cat download.log >&2; die "apt-get download failed"; }
            apt-get update -qq
            uris=$(cd / && apt-get download --print-uris "${want[@]}" 2>"$dir/download.log") ||
                { cat download.log >&2; die "apt-get download failed"; }
        fi
        # Package lists too old for the mirror: the files are gone.
        : > wanted.tmp
        while read -r _ f _; do
            [ -n "$f" ] || continue
            echo "$f" >> wanted.tmp
            [ -s "$f" ] || missing+=("${f%%_*}")
        done <<< "$uris"
        if [ ${#missing[@]} -gt 0 ]; then
            echo "vm-image.sh: apt-get download ${missing[*]}" >&2
            apt-get download -o APT::Sandbox::User=root "${missing[@]}" \
                >download.log 2>&1 ||
                { cat download.log >&2; die "apt-get download failed"; }
        fi
        while read -r f; do
            [ -s "$f" ] || die "$f is missing after apt-get download"
        done < wanted.tmp
        [ -s wanted.tmp ] || die "apt-get download --print-uris named no package"
        mv wanted.tmp wanted
        # Keep exactly the current versions.
        for f in *.deb; do
            grep -qxF "$f" wanted || rm -f "$f"
        done
    )
}

# modinfo_depends KO: the module's "depends=" list, comma-separated.
modinfo_depends ()
{
    objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null |
        tr '\0' '\n' | sed -n 's/^depends=//p'
}

# needed ELF: the NEEDED libraries of an ELF file.
needed ()
{
    objdump -p "$1" 2>/dev/null | awk '$1 == "NEEDED" { print $2 }'
}

build ()
{
    local out dir x stamp kver kdir lib f m
    out=$(realpath -m "$1")
    dir=$(debs_dir "$out")
    mkdir -p "$out"
    exec 9>"$out/.lock"
    flock 9
    fetch "$dir"
    # s3chunk-nbd-resize, from the build tree, if built (test-vm-grow.sh).
    local resize=$out/../../tools/s3chunk-nbd-resize
    [ -x "$resize" ] || resize=
    stamp=$( { cat "$dir/wanted"; sha256sum "$top/tests/vm-image.sh" "$top/tests/vm-init" $resize | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
    if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
       [ -s "$out/vmlinuz" ] && [ -s "$out/initrd" ]; then
        return 0
    fi
    echo "vm-image.sh: building the VM image in $out" >&2
    x=$out/extract
    rm -rf "$x" "$out/root"
    mkdir -p "$x"
    while read -r f; do dpkg -x "$dir/$f" "$x"; done < "$dir/wanted"

    kver=$(ls "$x/lib/modules" | head -n 1)
    [ -n "$kver" ] && [ -f "$x/boot/vmlinuz-$kver" ] || die "no kernel in the packages"
    kdir=$x/lib/modules/$kver

    local r=$out/root
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,mnt,host,etc,modules}
    ln -sfn ../lib "$r/usr/lib"
    cp "$x/bin/busybox" "$r/bin/busybox"
    for f in "${programs[@]}"; do
        [ -f "$x/$f" ] || die "$f is not in the packages"
        cp "$x/$f" "$r/$f"
    done
    ln -s mke2fs "$r/sbin/mkfs.ext4"
    ln -s e2fsck "$r/sbin/fsck.ext4"
    cp "$x/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$r/lib/x86_64-linux-gnu/"
    ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$r/lib64/ld-linux-x86-64.so.2"

    # Libraries: the NEEDED closure of the programs, from the packages.
    local todo=() seen=" " path
    for f in "${programs[@]}"; do todo+=($(needed "$r/$f")); done
    if [ -n "$resize" ]; then
        cp "$resize" "$r/sbin/s3chunk-nbd-resize"
        todo+=($(needed "$resize"))
    fi
    todo+=("${extra_libs[@]}")
    while [ ${#todo[@]} -gt 0 ]; do
        lib=${todo[0]}
        todo=("${todo[@]:1}")
        [[ $seen == *" $lib "* ]] && continue
        seen+="$lib "
        path=
        for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
            if [ -e "$x/$d/$lib" ]; then path=$x/$d/$lib; break; fi
        done
        [ -n "$path" ] || die "library $lib (needed by the guest's programs) is not in the packages: add its package to tests/vm-image.sh"
        cp -L "$path" "$r/lib/x86_64-linux-gnu/$lib"
        todo+=($(needed "$path"))
    done

    # Modules with their dependencies, in load order.
    declare -A kos=()
    while IFS= read -r f; do
        m=${f##*/}; m=${m%.ko}; kos[${m//-/_}]=$f
    done < <(find "$kdir/kernel" -name '*.ko')
    local order=() loaded=" "
    add_module ()
    {
        local m=${1//-/_} d
        [[ $loaded == *" $m "* ]] && return 0
        [ -n "${kos[$m]:-}" ] || die "module $m is not in $kver"
        for d in $(modinfo_depends "${kos[$m]}" | tr ',' ' '); do
            add_module "$d"
        done
        loaded+="$m "
        order+=("$m")
        cp "${kos[$m]}" "$r/modules/$m.ko"
    }
    for m in "${modules[@]}"; do add_module "$m"; done
    printf '%s\n' "${order[@]}" > "$r/modules/order"

    cp "$top/tests/vm-init" "$r/init"
    chmod 755 "$r/init"
    echo "root:x:0:0:root:/:/bin/sh" > "$r/etc/passwd"
    echo "root:x:0:" > "$r/etc/group"
    cp "$x/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
    ( cd "$r" && find . | sort | "$r/bin/busybox" cpio -o -H newc ) > "$out/initrd.tmp" 2>/dev/null
    mv "$out/vmlinuz.tmp" "$out/vmlinuz"
    mv "$out/initrd.tmp" "$out/initrd"
    echo "$kver" > "$out/kernel-version"
    echo "$stamp" > "$out/stamp"
    rm -rf "$x" "$r"
    echo "vm-image.sh: kernel $kver, initrd $(du -h "$out/initrd" | cut -f1), modules: ${order[*]}" >&2
}

case "${1:-}" in
fetch) fetch "$(debs_dir "${2:-$top/tests/vm}")" ;;
build) build "${2:?usage: vm-image.sh build OUTDIR}" ;;
*) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
