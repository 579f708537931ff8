# s3chunk tests: helpers sourced by the shell tests (tests/test-*.sh).
#
#   source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
#
# Environment (set by AM_TESTS_ENVIRONMENT; defaults allow running a test
# by hand from the top of the tree):
#   PLUGIN, abs_top_builddir, abs_top_srcdir
#   S3CHUNK_VALGRIND=1     run nbdkit under valgrind (exit 119 on errors)
#   S3CHUNK_TEST_VERBOSE=1 run nbdkit with -v (large logs)
#   S3CHUNK_KEEP_TMP=1     keep the test directory (printed) after the test
#   S3CHUNK_TEST_BUCKET    run against S3 instead of a directory (see
#                          store_args below)
#
# Conventions, after nbdkit's tests/functions.sh.in: "requires CMD" skips
# (exit 77) when CMD does not work; cleanup_fn registers a command run at
# exit, whatever the outcome, in reverse order of registration (so a test
# registers "stop nbdkit" before "unmount" and they run unmount first);
# start_nbdkit / stop_nbdkit / kill_nbdkit manage nbdkit in the background.

set -e

abs_top_srcdir=${abs_top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
abs_top_builddir=${abs_top_builddir:-$abs_top_srcdir}
PLUGIN=${PLUGIN:-$abs_top_builddir/s3chunk.so}
RANDOM_IO=$abs_top_builddir/tests/nbd-random-io
VERIFY=$abs_top_builddir/tests/nbd-verify

# ------------------------------------------------------------- cleanup

_cleanup_hook_count=0
_nbdkit_logs=()
_tmp_to_remove=

# cleanup_fn CMD [ARGS...]: run CMD ARGS at exit (last registered first).
cleanup_fn ()
{
    local _hook=_cleanup_hook$((_cleanup_hook_count++))
    declare -ag "$_hook"
    eval "$_hook"'=("$@")'
}

_run_cleanup_hooks ()
{
    local _status=$? _i _log

    set +e
    trap '' INT QUIT TERM EXIT
    if [ "$_status" -ne 0 ] && [ "$_status" -ne 77 ]; then
        for _log in "${_nbdkit_logs[@]}"; do
            [ -s "$_log" ] || continue
            echo "$0: ---- last lines of $_log ----"
            tail -n 40 "$_log"
        done
        echo "$0: FAILED with exit code $_status"
    fi
    for (( _i = _cleanup_hook_count - 1; _i >= 0; --_i )); do
        eval '"${_cleanup_hook'$_i'[@]}"'
    done
    # Last of all, once nothing runs or is mounted in it (never remove
    # through a mount point that is somehow still there).
    if [ -n "$_tmp_to_remove" ]; then
        if grep -q " $_tmp_to_remove/" /proc/mounts 2>/dev/null; then
            echo "$0: $_tmp_to_remove still has mounts: not removed"
        else
            rm -rf "$_tmp_to_remove"
        fi
    fi
    [ -z "${_nbdkit_supp:-}" ] || rm -f "$_nbdkit_supp"
    exit "$_status"
}
trap _run_cleanup_hooks EXIT
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM

# ------------------------------------------------------------ requires

# requires CMD [ARGS...]: skip the test (exit 77) unless CMD succeeds.
requires ()
{
    ( "$@" ) </dev/null >/dev/null 2>&1 || {
        echo "$0: SKIP: '$*' failed: test prerequisite is missing or not working"
        exit 77
    }
}

requires_root ()
{
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: SKIP: needs root"
        exit 77
    fi
}

skip_if_valgrind ()
{
    if [ "${S3CHUNK_VALGRIND:-}" = 1 ]; then
        echo "$0: SKIP under valgrind: $*"
        exit 77
    fi
}

# The helper programs are built by make check; by hand, make them first.
requires_test_programs ()
{
    local p
    for p in "$RANDOM_IO" "$VERIFY" "$PLUGIN"; do
        if [ ! -x "$p" ] && [ ! -f "$p" ]; then
            echo "$0: $p is missing: run make (and make check) first"
            exit 1
        fi
    done
}

# --------------------------------------------------------------- tmpdir

# make_tmpdir: a private directory in $tmp, removed at exit after every
# cleanup hook has run.  Tests run in parallel: everything a test creates
# goes here.  Unix socket paths must stay short (108 bytes), so it lives in
# /tmp unless TMPDIR says otherwise.
make_tmpdir ()
{
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/s3chunk-$(basename "$0" .sh).XXXXXX")
    if [ "${S3CHUNK_KEEP_TMP:-}" = 1 ]; then
        echo "$0: test directory $tmp (kept)"
    else
        _tmp_to_remove=$tmp
    fi
}

# ---------------------------------------------------------------- store

# store_args NAME: the store parameters of volume NAME, one word each (no
# spaces in them).  Today: dir=$tmp/NAME.  When S3CHUNK_TEST_BUCKET is set
# (and the plugin has S3 support), the same tests run against that bucket
# instead, under a prefix unique to this test run and volume:
#   S3CHUNK_TEST_BUCKET    the bucket (required for S3; must exist)
#   S3CHUNK_TEST_ENDPOINT  or S3_ENDPOINT (as tests/ceph.sh prints it)
#   S3CHUNK_TEST_ACCESS_KEY, S3CHUNK_TEST_SECRET_KEY  or S3_ACCESS_KEY,
#                          S3_SECRET_KEY
#   S3CHUNK_TEST_PREFIX    first part of the prefix (default s3chunk-tests)
#   S3CHUNK_TEST_STORE_EXTRA  more parameters (tests/s3-provider-run)
store_args ()
{
    local name=$1 v
    if store_is_s3; then
        echo "bucket=$S3CHUNK_TEST_BUCKET"
        v=${S3CHUNK_TEST_ENDPOINT:-${S3_ENDPOINT:-}}
        [ -z "$v" ] || echo "endpoint=$v"
        v=${S3CHUNK_TEST_ACCESS_KEY:-${S3_ACCESS_KEY:-}}
        [ -z "$v" ] || echo "access-key=$v"
        v=${S3CHUNK_TEST_SECRET_KEY:-${S3_SECRET_KEY:-}}
        [ -z "$v" ] || echo "secret-key=$v"
        echo "prefix=${S3CHUNK_TEST_PREFIX:-s3chunk-tests}/$(basename "$tmp")/$name/"
        # tests/s3-provider-run: e.g. provider=r2
        [ -z "${S3CHUNK_TEST_STORE_EXTRA:-}" ] || echo "$S3CHUNK_TEST_STORE_EXTRA"
    else
        echo "dir=$tmp/$name"
    fi
}

store_is_s3 ()
{
    [ -n "${S3CHUNK_TEST_BUCKET:-}" ]
}

# store_can_list: can the test look at the objects of a volume directly?
# (Only for the directory store for now; checks that need it say so.)
store_can_list ()
{
    ! store_is_s3
}

# store_chunks NAME: the indexes (decimal, sorted) of the chunk objects of
# volume NAME, one a line.  Temporary files of unfinished puts are ignored.
store_chunks ()
{
    local name=$1 f
    [ -d "$tmp/$name/chunks" ] || return 0
    for f in "$tmp/$name/chunks"/*; do
        f=${f##*/}
        [[ $f =~ ^[0-9a-f]{16}$ ]] || continue
        echo $((16#$f))
    done | sort -n
}

store_chunk_count ()
{
    store_chunks "$1" | wc -l
}

# ---------------------------------------------------------------- nbdkit

# The command that runs nbdkit: under valgrind when S3CHUNK_VALGRIND=1,
# with the ASan runtime preloaded when the plugin was built with
# --enable-sanitizers (nbdkit itself is not instrumented, and the runtime
# must come first in the process).
nbdkit_cmd=(nbdkit)
_nbdkit_env=()
if ldd "$PLUGIN" 2>/dev/null | grep -q libasan; then
    # With tests/asan-preload.so (see there): without it nbdkit hangs at
    # exit once it has printed a strerror() message.
    _asan_preload=$abs_top_builddir/tests/asan-preload.so
    [ -f "$_asan_preload" ] || {
        echo "$0: $_asan_preload is missing: run make check"; exit 1; }
    _nbdkit_env+=("LD_PRELOAD=$(gcc -print-file-name=libasan.so) $_asan_preload")
    # Leaks are checked (see _log_has_reports for the one nbdkit has);
    # a UBSan report stops nbdkit with a stack trace.
    _nbdkit_env+=("ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}")
    _nbdkit_env+=("LSAN_OPTIONS=${LSAN_OPTIONS:-exitcode=0}")
    _nbdkit_env+=("UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}")
fi
if [ "${S3CHUNK_VALGRIND:-}" = 1 ]; then
    # nbdkit's own --valgrind exists only in its source tree (./nbdkit);
    # NBDKIT_VALGRIND=1 is what that wrapper sets.
    _nbdkit_env+=(NBDKIT_VALGRIND=1)
    nbdkit_cmd=(valgrind --leak-check=full --error-exitcode=119
                --trace-children=no --num-callers=50 --vgdb=no)
    if [ -f "$abs_top_srcdir/tests/valgrind.supp" ]; then
        nbdkit_cmd+=("--suppressions=$abs_top_srcdir/tests/valgrind.supp")
    fi
    # The installed nbdkit (1.32) now and then leaks a block allocated and
    # lost entirely inside itself, in a connection thread, when it stops
    # right after a client left.  Suppress leaks whose every frame is in
    # nbdkit (any depth); a leak with a plugin frame is still reported.
    _nbdkit_supp=$(mktemp "${TMPDIR:-/tmp}/s3chunk-nbdkit-supp.XXXXXX")
    _nbdkit_bin=$(command -v nbdkit)
    for (( _i = 1; _i <= 40; ++_i )); do
        echo "{"
        echo "   nbdkit-internal-leak-depth-$_i"
        echo "   Memcheck:Leak"
        echo "   fun:malloc"
        for (( _j = 0; _j < _i; ++_j )); do echo "   obj:$_nbdkit_bin"; done
        echo "   fun:start_thread"
        echo "}"
    done > "$_nbdkit_supp"
    nbdkit_cmd+=("--suppressions=$_nbdkit_supp")
    nbdkit_cmd+=(nbdkit)
fi
if [ ${#_nbdkit_env[@]} -gt 0 ]; then
    nbdkit_cmd=(env "${_nbdkit_env[@]}" "${nbdkit_cmd[@]}")
fi
# A refusal or a captive run that takes longer than this is a hang.
_nbdkit_timeout=120
_nbdkit_verbose=()
[ "${S3CHUNK_TEST_VERBOSE:-}" != 1 ] || _nbdkit_verbose=(-v)

declare -A _nbdkit_pid _nbdkit_log
_nbdkit_count=0

# Sanitizer and valgrind reports in a log mean failure even if nbdkit
# exited 0 (UBSan may be built to recover).
_log_has_reports ()
{
    grep -E -q 'runtime error:|ERROR: (Address|Thread|Undefined)Sanitizer|== ERROR SUMMARY: [1-9]' "$1" &&
        return 0
    # LeakSanitizer: a leak counts when its stack has a frame of ours.
    # nbdkit 1.32 itself now and then leaks a connection's context (280
    # bytes, malloc'ed in backend_open) when it exits while a connection
    # thread is still ending: it does not wait for them (fixed upstream in
    # nbdkit commit 07806d6d); the valgrind suppressions above skip the
    # same leak.  LSAN_OPTIONS=exitcode=0 leaves the decision to this.
    grep -q 'ERROR: LeakSanitizer' "$1" || return 1
    awk '/^(Direct|Indirect) leak of/ { inleak = 1; next }
         inleak && /^$/ { inleak = 0 }
         inleak && /s3chunk|chunkstore\/|plugin\/|tests\/|tools\// { ours = 1 }
         END { exit !ours }' "$1"
}

# start_nbdkit SOCK [NBDKIT-OPTION...] PLUGIN-PARAM...
# Start nbdkit -f in the background on Unix socket SOCK (pid file SOCK.pid,
# log in $tmp/nbdkit-N.log) and wait until it accepts connections.  Options
# (words starting with "-") go to nbdkit before the plugin.  Returns 1, with
# the log, if nbdkit exits instead.  One nbdkit per socket at a time.
start_nbdkit ()
{
    local sock=$1 opts=() n log pid i
    shift
    while [ $# -gt 0 ] && [[ $1 == -* ]]; do opts+=("$1"); shift; done

    if [ -n "${_nbdkit_pid[$sock]:-}" ]; then
        echo "$0: start_nbdkit: nbdkit on $sock is already running"
        return 1
    fi
    n=$((++_nbdkit_count))
    log=$tmp/nbdkit-$n.log
    _nbdkit_logs+=("$log")
    rm -f "$sock" "$sock.pid"
    echo "$0: start nbdkit #$n on $sock: $*"
    "${nbdkit_cmd[@]}" -f -U "$sock" -P "$sock.pid" "${_nbdkit_verbose[@]}" \
        "${opts[@]}" "$PLUGIN" "$@" >"$log" 2>&1 &
    pid=$!
    # 60 s: valgrind is slow to start.
    for (( i = 0; i < 600; ++i )); do
        if [ -S "$sock" ] && [ -s "$sock.pid" ]; then
            _nbdkit_pid[$sock]=$pid
            _nbdkit_log[$sock]=$log
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null || _is_zombie "$pid"; then
            wait "$pid" && i=0 || i=$?
            echo "$0: nbdkit #$n exited with status $i before serving:"
            cat "$log"
            return 1
        fi
        sleep 0.1
    done
    echo "$0: nbdkit #$n did not create $sock within 60 s:"
    cat "$log"
    kill -9 "$pid"
    return 1
}

_is_zombie ()
{
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ "$st" = Z ]
}

# _wait_exit PID SECONDS: wait until PID (a child) exits; its status.
_wait_exit ()
{
    local pid=$1 secs=$2 i
    for (( i = 0; i < secs * 10; ++i )); do
        if ! kill -0 "$pid" 2>/dev/null || _is_zombie "$pid"; then
            break
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && ! _is_zombie "$pid"; then
        echo "$0: pid $pid still running after $secs s: SIGKILL"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return 124
    fi
    wait "$pid"
}

# stop_nbdkit SOCK: SIGTERM and wait for the exit (the plugin writes every
# dirty chunk to the store before it exits).  Fails if nbdkit took too long,
# exited non-zero (valgrind: 119), reported data it could not store, or a
# sanitizer or valgrind report is in its log.
stop_nbdkit ()
{
    local sock=$1 pid rc=0 log
    pid=${_nbdkit_pid[$sock]:-}
    log=${_nbdkit_log[$sock]:-}
    if [ -z "$pid" ]; then
        echo "$0: stop_nbdkit: no nbdkit on $sock"
        return 1
    fi
    echo "$0: stop nbdkit on $sock (SIGTERM, wait)"
    kill -TERM "$pid" 2>/dev/null || true
    _wait_exit "$pid" 120 || rc=$?
    unset "_nbdkit_pid[$sock]"
    if grep -q 'error:' "$log"; then
        echo "$0: nbdkit reported errors:"
        grep 'error:' "$log" | head -n 20
    fi
    if [ "$rc" -ne 0 ]; then
        echo "$0: FAIL: nbdkit exited with status $rc (119: valgrind errors)"
        return 1
    fi
    if grep -q 'could not be stored' "$log"; then
        echo "$0: FAIL: nbdkit lost data at shutdown"
        return 1
    fi
    if _log_has_reports "$log"; then
        echo "$0: FAIL: sanitizer or valgrind report in $log"
        return 1
    fi
}

# kill_nbdkit SOCK: SIGKILL, like pulling the power: only what was flushed
# may survive.
kill_nbdkit ()
{
    local sock=$1 pid
    pid=${_nbdkit_pid[$sock]:-}
    if [ -z "$pid" ]; then
        echo "$0: kill_nbdkit: no nbdkit on $sock"
        return 1
    fi
    echo "$0: kill -9 nbdkit on $sock"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "_nbdkit_pid[$sock]"
}

# takeover_args: the parameters that restart a volume right after its
# nbdkit was killed with kill -9: the dead instance's lock is still fresh
# for a lease, so take it over at once.  Empty with a plugin that has no
# volume lock.
takeover_args ()
{
    if [ -z "${_plugin_has_force_unlock:-}" ]; then
        if "${nbdkit_cmd[@]}" "$PLUGIN" --help 2>/dev/null |
                grep -q '^ *force-unlock='; then
            _plugin_has_force_unlock=yes
        else
            _plugin_has_force_unlock=no
        fi
    fi
    [ "$_plugin_has_force_unlock" = no ] || echo force-unlock=true
}

_stop_all_nbdkit ()
{
    local sock
    for sock in "${!_nbdkit_pid[@]}"; do
        stop_nbdkit "$sock" || true
    done
}
cleanup_fn _stop_all_nbdkit

# nbdkit_refuses PATTERN PARAM...: nbdkit must refuse to start with these
# plugin parameters, with a message on stderr matching the extended regular
# expression PATTERN.  A refusal must come at start-up: the captive command
# must never run.
nbdkit_refuses ()
{
    local pattern=$1 out rc=0
    shift
    out=$tmp/refuse.out
    rm -f "$tmp/ran"
    timeout -k 5 $_nbdkit_timeout "${nbdkit_cmd[@]}" -U - \
        --run "touch $tmp/ran" "$PLUGIN" "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "$0: FAIL: nbdkit hung for $_nbdkit_timeout s refusing: $*"
        cat "$out"
        return 1
    fi
    if [ -e "$tmp/ran" ] || [ "$rc" -eq 0 ]; then
        echo "$0: FAIL: nbdkit accepted: $*"
        cat "$out"
        return 1
    fi
    if [ "$rc" -eq 119 ] || _log_has_reports "$out"; then
        echo "$0: FAIL: valgrind or sanitizer report while refusing: $*"
        cat "$out"
        return 1
    fi
    if ! grep -E -q -- "$pattern" "$out"; then
        echo "$0: FAIL: refused '$*' without a message matching '$pattern':"
        cat "$out"
        return 1
    fi
    echo "ok: refused $*: $(grep -E -- "$pattern" "$out" | head -n 1)"
}

# nbdkit_accepts PARAM...: nbdkit must start with these parameters (and
# serve a connection: the captive nbdinfo must succeed).
nbdkit_accepts ()
{
    local out rc=0
    out=$tmp/accept.out
    timeout -k 5 $_nbdkit_timeout "${nbdkit_cmd[@]}" -U - \
        --run 'nbdinfo --size "$uri"' "$PLUGIN" "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] || _log_has_reports "$out"; then
        echo "$0: FAIL: nbdkit did not accept $* (status $rc):"
        cat "$out"
        return 1
    fi
    echo "ok: accepted $*"
}

# ------------------------------------------------------------- checking

# fail MESSAGE: print and exit 1.
fail ()
{
    echo "$0: FAIL: $*"
    exit 1
}

# check MESSAGE: announce a check (so a failure log says what failed).
check ()
{
    echo "--- check: $*"
}

# ------------------------------------------------------------------ e2e
# A filesystem through the kernel: nbdkit -> nbdfuse (a FUSE file) -> a
# loop device -> ext4/xfs.  Root only.  Tear down in the reverse order:
# umount (which detaches the loop device), fusermount3 -u, stop nbdkit.

requires_e2e ()
{
    requires_root
    if [ ! -c /dev/fuse ]; then
        echo "$0: SKIP: no /dev/fuse"
        exit 77
    fi
    requires nbdfuse --version
    requires fusermount3 --version
    requires losetup --version
    requires mountpoint --version
    requires sha256sum --version
}

declare -A _nbdfuse_pid

# start_nbdfuse SOCK DIR: serve the disk as DIR/disk; waits until ready.
start_nbdfuse ()
{
    local sock=$1 dir=$2 i pid
    mkdir -p "$dir"
    rm -f "$dir.pid"
    echo "$0: nbdfuse $dir/disk --unix $sock"
    nbdfuse -P "$dir.pid" "$dir/disk" --unix "$sock" &
    pid=$!
    for (( i = 0; i < 300; ++i )); do
        if [ -s "$dir.pid" ] && [ -e "$dir/disk" ]; then
            _nbdfuse_pid[$dir]=$pid
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || true
            fail "nbdfuse exited before serving $dir/disk"
        fi
        sleep 0.1
    done
    fail "nbdfuse did not serve $dir/disk within 30 s"
}

# stop_nbdfuse DIR: fusermount3 -u (lazily if it stays busy) and wait for
# nbdfuse to exit.  Safe to call when nothing is mounted.
stop_nbdfuse ()
{
    local dir=$1 pid i
    pid=${_nbdfuse_pid[$dir]:-}
    # (findmnt: a FUSE mount whose nbdfuse died fails mountpoint's stat
    # with ENOTCONN, but must be unmounted all the same.)
    if mountpoint -q "$dir" || findmnt -rn --mountpoint "$dir" >/dev/null; then
        echo "$0: fusermount3 -u $dir"
        for (( i = 0; i < 20; ++i )); do
            fusermount3 -u "$dir" 2>/dev/null && break
            sleep 0.5
        done
        if mountpoint -q "$dir" || findmnt -rn --mountpoint "$dir" >/dev/null; then
            echo "$0: $dir still busy: lazy unmount"
            fusermount3 -u -z "$dir" || true
        fi
    fi
    if [ -n "$pid" ]; then
        _wait_exit "$pid" 30 >/dev/null 2>&1 || true
        unset "_nbdfuse_pid[$dir]"
    fi
}

# unmount_fs MNT FILE: umount MNT (lazily if it stays busy) and detach any
# loop device still backed by FILE.  Safe to call when nothing is mounted.
unmount_fs ()
{
    local mnt=$1 file=$2 i dev
    # (findmnt too: a filesystem shut down by I/O errors fails mountpoint's
    # stat with EIO, but must be unmounted all the same.)
    if mountpoint -q "$mnt" || findmnt -rn --mountpoint "$mnt" >/dev/null; then
        echo "$0: umount $mnt"
        for (( i = 0; i < 20; ++i )); do
            umount "$mnt" 2>/dev/null && break
            sleep 0.5
        done
        if mountpoint -q "$mnt" || findmnt -rn --mountpoint "$mnt" >/dev/null; then
            echo "$0: $mnt still busy: lazy unmount"
            umount -l "$mnt" || true
        fi
    fi
    if [ -e "$file" ]; then
        for dev in $(losetup -j "$file" -O NAME -n 2>/dev/null); do
            echo "$0: losetup -d $dev"
            losetup -d "$dev" || true
        done
    fi
}

# populate_tree DIR: files of many sizes (several MB, hundreds of small
# ones, compressible and not, sparse), a hard link, renames, permissions,
# ownership, a symlink, in-place overwrites and appends.
populate_tree ()
{
    local d=$1 i
    mkdir -p "$d/big" "$d/small" "$d/perm"
    dd if=/dev/urandom of="$d/big/r1" bs=1M count=1 status=none
    dd if=/dev/urandom of="$d/big/r5" bs=1M count=5 status=none
    dd if=/dev/urandom of="$d/big/r12" bs=1M count=12 status=none
    dd if=/dev/urandom of="$d/big/r3odd" bs=1000 count=3333 status=none
    yes "s3chunk end-to-end test: a compressible line of log text 0123456789" |
        head -c $((8 * 1024 * 1024)) > "$d/big/text"
    truncate -s 20M "$d/big/sparse"
    dd if=/dev/urandom of="$d/big/sparse" bs=64K count=3 seek=100 \
       conv=notrunc status=none
    for (( i = 0; i < 300; ++i )); do
        mkdir -p "$d/small/d$((i % 10))"
        head -c $(( (i * 7919) % 20000 )) /dev/urandom > "$d/small/d$((i % 10))/f$i"
    done
    : > "$d/small/empty"
    # Overwrite the middle of a big file in place; append to a small one.
    dd if=/dev/urandom of="$d/big/r5" bs=4096 count=10 seek=300 \
       conv=notrunc status=none
    head -c 5000 /dev/urandom >> "$d/small/d3/f3"
    # Links, renames, permissions, ownership.
    ln "$d/big/r5" "$d/perm/hardlink-r5"
    ln -s ../big/r1 "$d/perm/symlink-r1"
    mv "$d/small/d0/f0" "$d/small/d1/renamed-f0"
    mv "$d/small/d9" "$d/small/d9-renamed"
    echo secret > "$d/perm/secret"; chmod 600 "$d/perm/secret"
    echo suid > "$d/perm/suid"; chmod 4755 "$d/perm/suid"
    echo ro > "$d/perm/ro"; chmod 444 "$d/perm/ro"
    mkdir "$d/perm/private"; chmod 700 "$d/perm/private"
    echo owned > "$d/perm/owned"; chown 1234:5678 "$d/perm/owned"
    # Some deletions.
    rm -f "$d/small/d2/f2" "$d/small/d2/f12"
}

# record_tree DIR OUT: OUT.sums (sha256 of every file) and OUT.meta (type,
# mode, links, owner, size, mtime, symlink target of every entry).
record_tree ()
{
    local d=$1 out=$2
    ( cd "$d" && find . -path ./lost+found -prune -o -type f -print0 |
          sort -z | xargs -0 sha256sum ) > "$out.sums"
    ( cd "$d" && find . -path ./lost+found -prune -o \
          -printf '%y %m %n %U:%G %s %T@ %p -> %l\n' | sort ) > "$out.meta"
}

# run_e2e FSTYPE [PARAM...]: the end-to-end test of a filesystem on the
# plugin; PARAMs go to every start of nbdkit (e.g. key=+FILE).  If the
# test defines e2e_populate_extra, it is called with the tree's directory
# after populate_tree (its files are checked like the others).
run_e2e ()
{
    local fstype=$1 sock fuse mnt disk n1 n2 before after i
    local mkfs fsck extra=("${@:2}")
    case $fstype in
    ext4) mkfs=(mkfs.ext4 -q -F); fsck=(e2fsck -f -n) ;;
    xfs)  mkfs=(mkfs.xfs -q -f);  fsck=(xfs_repair -n) ;;
    *) fail "run_e2e: unknown filesystem $fstype" ;;
    esac
    requires_e2e
    requires "${mkfs[0]}" -V
    requires "${fsck[0]}" -V
    make_tmpdir
    requires_test_programs

    sock=$tmp/sock fuse=$tmp/fuse mnt=$tmp/mnt
    disk=$fuse/disk
    mkdir -p "$mnt"
    # Runs before _stop_all_nbdkit (hooks run last first): umount and
    # detach the loop device, unmount the FUSE file, then nbdkit stops.
    cleanup_fn stop_nbdfuse "$fuse"
    cleanup_fn unmount_fs "$mnt" "$disk"

    echo "=== $fstype: create, fill, record ==="
    start_nbdkit "$sock" $(store_args vol) "${extra[@]}" size=512M cache-size=64M \
        upload-delay=1
    start_nbdfuse "$sock" "$fuse"
    check "mkfs, mount -o loop"
    "${mkfs[@]}" "$disk"
    mount -o loop "$disk" "$mnt"
    check "write a tree of files"
    populate_tree "$mnt/tree"
    ! declare -F e2e_populate_extra >/dev/null || e2e_populate_extra "$mnt/tree"
    sync
    if store_can_list; then
        n1=$(store_chunk_count vol)
        check "delete 12 MB, fstrim, sync: chunk objects go ($n1 before)"
        rm "$mnt/tree/big/r12"
        # xfs frees extents in the background and fstrim skips extents
        # freed by a transaction not yet in the log: try a few times.
        # fstrim dirties no filesystem data, so sync may send no flush
        # down: fsync the FUSE file itself (nbdfuse turns it into a flush).
        for (( i = 0; i < 20; ++i )); do
            sync
            fstrim -v "$mnt"
            sync "$disk"
            n2=$(store_chunk_count vol)
            [ "$n2" -gt $(( n1 - 8 )) ] || break
            sleep 0.5
        done
        echo "$n2 chunk object(s) after fstrim"
        [ "$n2" -le $(( n1 - 8 )) ] ||
            fail "fstrim of a deleted 12 MB file freed only $(( n1 - n2 )) chunk object(s)"
    else
        rm "$mnt/tree/big/r12"
    fi
    record_tree "$mnt" "$tmp/before"
    echo "$(wc -l < "$tmp/before.sums") files recorded"
    before=$(stat -c '%i %h' "$mnt/tree/big/r5")

    check "umount, fusermount3 -u, stop nbdkit (flushes)"
    sync
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    ! mountpoint -q "$mnt" || fail "$mnt is still mounted"
    ! mountpoint -q "$fuse" || fail "$fuse is still mounted"

    echo "=== $fstype: restart, fsck, verify ==="
    start_nbdkit "$sock" $(store_args vol) "${extra[@]}" cache-size=64M
    start_nbdfuse "$sock" "$fuse"
    check "${fsck[*]} finds the filesystem clean"
    "${fsck[@]}" "$disk"
    check "mount again: every checksum matches"
    mount -o loop "$disk" "$mnt"
    ( cd "$mnt" && sha256sum --quiet -c "$tmp/before.sums" ) ||
        fail "checksums differ after restart"
    echo "ok: $(wc -l < "$tmp/before.sums") files match"
    check "metadata (types, modes, link counts, owners, sizes, mtimes)"
    record_tree "$mnt" "$tmp/after"
    diff -u "$tmp/before.meta" "$tmp/after.meta" ||
        fail "metadata differs after restart"
    check "hard link, permissions, symlink"
    after=$(stat -c '%i %h' "$mnt/tree/perm/hardlink-r5")
    [ "$after" = "$before" ] && [ "${after#* }" = 2 ] ||
        fail "hard link: r5 was '$before', the link is '$after'"
    [ "$(stat -c %a "$mnt/tree/perm/secret")" = 600 ] || fail "mode of secret"
    [ "$(stat -c %a "$mnt/tree/perm/suid")" = 4755 ] || fail "mode of suid"
    [ "$(stat -c %a "$mnt/tree/perm/private")" = 700 ] || fail "mode of private"
    [ "$(stat -c %u:%g "$mnt/tree/perm/owned")" = 1234:5678 ] ||
        fail "owner of owned"
    [ "$(readlink "$mnt/tree/perm/symlink-r1")" = ../big/r1 ] ||
        fail "symlink target"
    [ ! -e "$mnt/tree/small/d0/f0" ] && [ -f "$mnt/tree/small/d1/renamed-f0" ] ||
        fail "rename of f0"
    [ ! -e "$mnt/tree/big/r12" ] || fail "deleted file is back"
    echo "ok"

    check "teardown leaves nothing mounted"
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    ! mountpoint -q "$mnt" || fail "$mnt is still mounted"
    ! mountpoint -q "$fuse" || fail "$fuse is still mounted"
    echo "$0: PASS"
}
