# s3chunk tests: a small VM with the kernel's NBD driver, for the tests
# that go the way users do: nbd-client and /dev/nbd0 (tests/test-vm-*.sh).
# On top of tests/functions.sh:
#
#   source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/vm-functions.sh"
#   make_tmpdir
#   vm_start                                  # boots in ~10 s under TCG
#   start_nbdkit "$tmp/sock" $(store_args vol) size=1G
#   vm_nbd_attach nbd0 "$tmp/sock" -b 4096    # nbd-client in the guest
#   vm_run 'mkfs.ext4 -q /dev/nbd0'           # output, exit status back
#   vm_nbd_detach nbd0
#
# The VM: qemu-system-x86_64 under TCG (-accel tcg: this machine has no
# usable KVM) with a Debian kernel and an initramfs of Debian packages
# (tests/vm-image.sh, cached in $abs_top_builddir/tests/vm), no network
# device at all.  The guest reaches nbdkit only through virtio-serial
# ports: vm_nbd_attach adds one port per NBD connection through qemu's QMP
# monitor, each a chardev that connects to nbdkit's Unix socket; in the
# guest, nbd-bridge (tests/vm-init) gives nbd-client a Unix socket whose
# Nth connection is copied (socat) to the Nth port.  Commands run through
# another port, s3chunk.cmd (tests/vm-init), with their output in files of
# the test directory $tmp, which the guest sees as /host (virtio 9p): a
# test's shadow copies and journals live there, outside the VM and the
# volume.  The console (kernel messages) is $tmp/vm-console.log.
#
# Where qemu cannot run, the tests fail (they do not skip): CI installs it
# (scripts/install-deps).

source "${abs_top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}/tests/functions.sh"

VM_IMAGE_DIR=${S3CHUNK_VM_IMAGE_DIR:-$abs_top_builddir/tests/vm}
# Guest commands that take longer than this are a hang (seconds).
VM_TIMEOUT=${S3CHUNK_VM_TIMEOUT:-600}
# vCPUs: one is enough and frugal, but the kernel's NBD driver maps each
# CPU's queue onto one connection: a test of nbd-client -C N sets VM_SMP.
VM_SMP=${VM_SMP:-1}

_vm_pid=
# Counters and the "stuck" mark live in files of $tmp/.vm, not in shell
# variables: tests call vm_run inside $(...), a subshell, whose variables
# would be lost and its numbers handed out again.
_vm_next ()
{
    local f=$tmp/.vm/$1 n
    n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$f"
    echo "$n"
}
declare -A _vm_ports

# requires_vm: what the VM needs on the host; fails (never skips) when
# something is missing or the image cannot be built.
requires_vm ()
{
    local b
    for b in qemu-system-x86_64 apt-get dpkg objdump objcopy flock; do
        command -v "$b" >/dev/null 2>&1 ||
            fail "$b not found: the VM tests need it (scripts/install-deps)"
    done
    [ -d "$tmp" ] || fail "requires_vm: call make_tmpdir first"
    bash "$abs_top_srcdir/tests/vm-image.sh" build "$VM_IMAGE_DIR" ||
        fail "could not build the VM image (tests/vm-image.sh)"
}

# _vm_qmp JSON: one QMP command; prints its answer line; fails on an
# error answer (events before the answer are skipped).
_vm_qmp ()
{
    local line i
    echo "$1" >&"$_vm_qmp_in"
    for (( i = 0; i < 300; ++i )); do
        if read -r -t 0.1 line <&"$_vm_qmp_out"; then
            case $line in
            *'"return"'*) echo "$line"; return 0 ;;
            *'"error"'*) echo "$0: QMP: $1: $line"; return 1 ;;
            *) echo "$line" >> "$tmp/vm-qmp-events.log" ;;
            esac
        fi
        _vm_alive || { echo "$0: QMP: qemu exited"; return 1; }
    done
    echo "$0: QMP: no answer to $1"
    return 1
}

_vm_alive ()
{
    [ -n "$_vm_pid" ] && kill -0 "$_vm_pid" 2>/dev/null && ! _is_zombie "$_vm_pid"
}

# vm_start: boot the VM and register vm_stop at exit.  A guest that is
# not up within 180 s is killed and booted once more (a boot under TCG
# hung once in CI with another VM test booting beside it, before any of
# our code ran); a second failure fails the test.  VM_FIRST_BOOT_SECS
# (default 180) shortens the first try, to exercise that path.
_vm_stop_registered=
vm_start ()
{
    local try
    requires_vm
    for try in 1 2; do
        if [ "$try" = 1 ]; then _vm_boot "${VM_FIRST_BOOT_SECS:-180}" && return 0
        else _vm_boot 180 && return 0; fi
        echo "$0: the VM did not boot in time (try $try)"
        tail -n 30 "$tmp/vm-console.log"
        [ -n "$_vm_pid" ] && { kill -9 "$_vm_pid" 2>/dev/null || true; wait "$_vm_pid" 2>/dev/null || true; }
        _vm_pid=
        exec {_vm_cmd_in}>&- {_vm_cmd_out}>&- {_vm_qmp_in}>&- {_vm_qmp_out}>&-
    done
    fail "the VM did not boot within 180 s, twice"
}

# _vm_boot SECS: one boot; status 1 if the guest did not say "ready" in
# SECS seconds.
_vm_boot ()
{
    local line t0=$SECONDS i secs=$1
    # A new guest numbers its commands from 1 again.
    rm -rf "$tmp/.vm" "$tmp"/vm-{cmd,qmp}.{in,out}
    mkdir -p "$tmp/.vm"
    mkfifo "$tmp/vm-cmd.in" "$tmp/vm-cmd.out" "$tmp/vm-qmp.in" "$tmp/vm-qmp.out"
    # Opened read-write: opening a FIFO that way never blocks, whether
    # qemu has opened its end yet or not.
    exec {_vm_cmd_in}<>"$tmp/vm-cmd.in" {_vm_cmd_out}<>"$tmp/vm-cmd.out"
    exec {_vm_qmp_in}<>"$tmp/vm-qmp.in" {_vm_qmp_out}<>"$tmp/vm-qmp.out"
    echo "$0: booting the VM ($(cat "$VM_IMAGE_DIR/kernel-version"))"
    qemu-system-x86_64 -accel tcg -m 1024 -smp "$VM_SMP" \
        -display none -nodefaults -no-reboot \
        -kernel "$VM_IMAGE_DIR/vmlinuz" -initrd "$VM_IMAGE_DIR/initrd" \
        -append "console=ttyS0 panic=-1 quiet" \
        -serial "file:$tmp/vm-console.log" \
        -chardev "pipe,id=qmp,path=$tmp/vm-qmp" -mon chardev=qmp,mode=control \
        -device virtio-serial-pci,id=vser0,max_ports=64 \
        -chardev "pipe,id=cmd,path=$tmp/vm-cmd" \
        -device virtserialport,bus=vser0.0,chardev=cmd,name=s3chunk.cmd \
        -fsdev "local,id=host,path=$tmp,security_model=none" \
        -device virtio-9p-pci,fsdev=host,mount_tag=host \
        > "$tmp/vm-qemu.log" 2>&1 &
    _vm_pid=$!
    [ -n "$_vm_stop_registered" ] || { cleanup_fn vm_stop; _vm_stop_registered=1; }
    # The QMP greeting, then capabilities negotiation.
    for (( i = 0; i < 300; ++i )); do
        read -r -t 0.1 line <&"$_vm_qmp_out" && break
        _vm_alive || { cat "$tmp/vm-qemu.log"; fail "qemu exited at start"; }
    done
    [[ $line == *QMP* ]] || fail "no QMP greeting from qemu: $line"
    _vm_qmp '{"execute":"qmp_capabilities"}' >/dev/null ||
        fail "QMP capabilities"
    for (( i = 0; i < secs * 10; ++i )); do
        if [ -f "$tmp/.vm/ready" ]; then line=$(cat "$tmp/.vm/ready"); break; fi
        read -r -t 0.1 line <&"$_vm_cmd_out" || true
        if ! _vm_alive; then
            cat "$tmp/vm-qemu.log"; tail -n 30 "$tmp/vm-console.log"
            fail "the VM died while booting"
        fi
    done
    [[ $line == ready* ]] || return 1
    echo "$0: VM up in $((SECONDS - t0)) s: $line"
}

# vm_run [-t SECS] CMD: run the shell command CMD (busybox sh) in the
# guest; prints its output (stdout and stderr) and returns its status, or
# 124 after SECS (default VM_TIMEOUT) without an answer.  The output is
# also in $tmp/.vm/N.out.  The script and the answer go through the
# shared directory (tests/vm-init's command loop); the port only wakes
# the guest.  A command the guest itself gives up on leaves N.diag (what
# the guest was doing), printed here.
vm_run ()
{
    local secs=$VM_TIMEOUT n i rc
    if [ "$1" = -t ]; then secs=$2; shift 2; fi
    _vm_alive || { echo "$0: vm_run: the VM is not running"; return 125; }
    if [ -e "$tmp/.vm/stuck" ]; then
        echo "$0: vm_run: the guest is stuck in an earlier command: not running $*"
        return 124
    fi
    n=$(_vm_next seq)
    echo "$secs" > "$tmp/.vm/$n.t"
    printf '%s\n' "$*" > "$tmp/.vm/$n.sh.new"
    mv "$tmp/.vm/$n.sh.new" "$tmp/.vm/$n.sh"
    echo "$n" >&"$_vm_cmd_in"
    # The guest's watcher ends the command after SECS; allow it the time
    # to say what it found.
    for (( i = 0; i < (secs + 30) * 10; ++i )); do
        if [ -f "$tmp/.vm/$n.rc" ]; then
            rc=$(cat "$tmp/.vm/$n.rc")
            cat "$tmp/.vm/$n.out"
            if [ -f "$tmp/.vm/$n.diag" ]; then
                echo "$0: vm_run: the guest gave up after $secs s on: $*"
                cat "$tmp/.vm/$n.diag"
                return 124
            fi
            return "$rc"
        fi
        _vm_alive || break
        # Drain the port's old answers: an older guest wrote to it.
        read -r -t 0.1 _ <&"$_vm_cmd_out" || true
    done
    cat "$tmp/.vm/$n.out" 2>/dev/null
    cat "$tmp/.vm/$n.diag" 2>/dev/null
    if ! _vm_alive; then
        echo "$0: vm_run: the VM died running: $*"
        tail -n 30 "$tmp/vm-console.log"
        return 125
    fi
    echo "$0: vm_run: no answer within $secs s to: $*"
    tail -n 60 "$tmp/vm-console.log"
    # The guest is stuck in the kernel: later commands would queue
    # behind this one.
    touch "$tmp/.vm/stuck"
    return 124
}

# vm_ok CMD: vm_run CMD and fail the test unless it succeeded.
vm_ok ()
{
    local rc=0
    vm_run "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "$0: FAIL: guest command failed (status $rc): ${*: -1}" >&2
        exit 1
    fi
}

# _vm_add_ports KEY N SOCK: remove KEY's ports, then add N new ones, each a
# chardev connected by qemu to SOCK (at once) and a virtio-serial port
# named s3chunk.nbd.M; their names go to the array _vm_names.
_vm_add_ports ()
{
    local key=$1 conns=$2 sock=$3 n i
    vm_ports_remove "$key"
    _vm_names=()
    for (( i = 0; i < conns; ++i )); do
        n=$(_vm_next port-seq)
        _vm_qmp '{"execute":"chardev-add","arguments":{"id":"nbdc'$n'","backend":{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"'"$sock"'"}},"server":false}}}}' >/dev/null ||
            fail "chardev-add for $sock"
        _vm_qmp '{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","chardev":"nbdc'$n'","name":"s3chunk.nbd.'$n'","id":"nbdp'$n'"}}' >/dev/null ||
            fail "device_add of port $n"
        _vm_names+=("s3chunk.nbd.$n")
        _vm_ports[$key]="${_vm_ports[$key]:-} $n"
    done
}

# vm_nbd_attach DEV SOCK [NBD-CLIENT-OPTION...]: attach /dev/DEV in the
# guest to the nbdkit serving SOCK: one new virtio-serial port per
# connection (-C N / -connections N), each connected by qemu to SOCK,
# bridged in the guest to /run/DEV.sock, then
# "nbd-client -unix /run/DEV.sock /dev/DEV OPTIONS".  Returns
# nbd-client's status (its output is printed).
vm_nbd_attach ()
{
    local dev=$1 sock=$2 conns=1 a prev= rc=0
    shift 2
    for a in "$@"; do
        if [ "$prev" = -C ] || [ "$prev" = -connections ]; then conns=$a; fi
        prev=$a
    done
    _vm_add_ports "$dev" "$conns" "$sock"
    echo "$0: nbd-client -unix /run/$dev.sock /dev/$dev $* (ports ${_vm_ports[$dev]# })"
    vm_run "nbd-wait-free $dev && nbd-bridge /run/$dev.sock ${_vm_names[*]} && nbd-client -unix /run/$dev.sock /dev/$dev $*" ||
        rc=$?
    return "$rc"
}

# vm_ports_remove DEV: remove the ports of DEV's connections (closing
# qemu's connections to nbdkit) and stop their bridge in the guest.
# Safe to call twice.  Also what a test calls after nbdkit died: qemu does
# not reliably pass a chardev's hang-up on to the guest (the port stays
# "connected" and the bridge waits), while a real socket to nbdkit would
# be closed by the kernel; removing the port ends the guest's bridge, which
# closes nbd-client's socket the same way.
vm_ports_remove ()
{
    local dev=$1 n i
    [ -n "${_vm_ports[$dev]:-}" ] || return 0
    vm_run -t 30 "[ ! -s /run/$dev.sock.pid ] || kill \$(cat /run/$dev.sock.pid) 2>/dev/null; rm -f /run/$dev.sock.pid" >/dev/null || true
    for n in ${_vm_ports[$dev]}; do
        _vm_qmp '{"execute":"device_del","arguments":{"id":"nbdp'$n'"}}' >/dev/null || true
        # The chardev is busy until the port is gone.
        for (( i = 0; i < 50; ++i )); do
            _vm_qmp '{"execute":"chardev-remove","arguments":{"id":"nbdc'$n'"}}' \
                >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    unset "_vm_ports[$dev]"
}

# vm_nbd_detach DEV: nbd-client -d /dev/DEV in the guest and wait until the
# kernel has let the device go, then remove its ports.  Returns nbd-client
# -d's status.
vm_nbd_detach ()
{
    local dev=$1 rc=0
    vm_run -t 90 "nbd-client -d /dev/$dev; rc=\$?; nbd-wait-free $dev; exit \$rc" || rc=$?
    vm_ports_remove "$dev"
    return "$rc"
}

# vm_stop: unmount what the guest has mounted, detach its NBD devices,
# stop qemu.  Registered by vm_start.
vm_stop ()
{
    local dev i
    _vm_alive || { _vm_pid=; return 0; }
    if [ ! -e "$tmp/.vm/stuck" ]; then
        vm_run -t 60 'for m in $(awk '\''$1 ~ /^\/dev\/nbd/ { print $2 }'\'' /proc/mounts); do umount "$m" || umount -l "$m"; done; for d in /sys/block/nbd*; do [ "$(cat $d/size)" = 0 ] || nbd-client -d /dev/${d##*/}; done; sync' \
            >/dev/null 2>&1 || true
    fi
    for dev in "${!_vm_ports[@]}"; do vm_ports_remove "$dev" >/dev/null 2>&1 || true; done
    _vm_qmp '{"execute":"quit"}' >/dev/null 2>&1 || true
    for (( i = 0; i < 100; ++i )); do
        _vm_alive || break
        sleep 0.1
    done
    if _vm_alive; then kill -9 "$_vm_pid" 2>/dev/null || true; fi
    wait "$_vm_pid" 2>/dev/null || true
    _vm_pid=
}

# vm_make_tree DIR: a tree of files on the host (DIR, in $tmp) to copy into
# the guest's filesystem: random and compressible files of several MiB, an
# odd size, a sparse file, 200 small files, a hard link, a symlink, modes
# and owners.  DIR.sums: sha256 of every file (relative "./" paths).
vm_make_tree ()
{
    local d=$1 i
    mkdir -p "$d/big" "$d/small" "$d/perm"
    dd if=/dev/urandom of="$d/big/r1" bs=1M count=1 status=none
    dd if=/dev/urandom of="$d/big/r6" bs=1M count=6 status=none
    dd if=/dev/urandom of="$d/big/r3odd" bs=1000 count=3333 status=none
    yes "s3chunk vm test: a compressible line of log text 0123456789" |
        head -c $((4 * 1024 * 1024)) > "$d/big/text"
    truncate -s 8M "$d/big/sparse"
    dd if=/dev/urandom of="$d/big/sparse" bs=64K count=3 seek=60 \
       conv=notrunc status=none
    for (( i = 0; i < 200; ++i )); do
        mkdir -p "$d/small/d$((i % 10))"
        head -c $(( (i * 7919) % 20000 )) /dev/urandom > "$d/small/d$((i % 10))/f$i"
    done
    : > "$d/small/empty"
    ln "$d/big/r6" "$d/perm/hardlink-r6"
    ln -s ../big/r1 "$d/perm/symlink-r1"
    echo secret > "$d/perm/secret"; chmod 600 "$d/perm/secret"
    echo suid > "$d/perm/suid"; chmod 4755 "$d/perm/suid"
    echo owned > "$d/perm/owned"; chown 1234:5678 "$d/perm/owned"
    ( cd "$d" && find . -type f -print0 | sort -z | xargs -0 sha256sum ) > "$d.sums"
}

# The guest's record of a tree's metadata (busybox stat): type, mode,
# links, owner, size, mtime, name; symlink targets.
VM_META='find . | sort | while read -r f; do stat -c "%F %a %h %u:%g %s %Y %n" "$f"; [ ! -L "$f" ] || echo "-> $(readlink "$f")"; done'

# vm_nbd_add_ports DEV N SOCK: N more connections to the nbdkit serving
# SOCK for DEV, after it is attached: N new ports (registered as DEV.add,
# so vm_ports_remove DEV.add removes them) bridged in the guest to
# /run/DEV.add.sock, for a program that opens connections of its own
# (s3chunk-nbd-resize).  Add them only when the connections may start:
# qemu connects each port to nbdkit at once.
vm_nbd_add_ports ()
{
    local dev=$1 conns=$2 sock=$3
    _vm_add_ports "$dev.add" "$conns" "$sock"
    vm_run "nbd-bridge /run/$dev.add.sock ${_vm_names[*]}"
}
