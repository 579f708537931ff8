# s3chunk tests: helpers of the robustness tests (crashes, store faults,
# corrupt objects), on top of tests/functions.sh (source that first).
#
#   robust_seed CRASH          seed from $S3CHUNK_CRASH_SEED or random;
#                              printed with the line that replays it
#   rand_between LO HI         a number in [LO, HI] from the seeded RANDOM
#   run_crash_fs FSTYPE        the filesystem crash test (ext4, xfs)

CRASH_IO=$abs_top_builddir/tests/nbd-crash-io
FSYNC_WORKLOAD=$abs_top_builddir/tests/fsync-workload

# robust_seed: pick the run's seed and seed bash's RANDOM with it, so the
# parameters and kill points drawn below are the same on a replay (the
# timing of the machine is not: a replay reproduces the plan, not every
# interleaving).
robust_seed ()
{
    seed=${S3CHUNK_CRASH_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 + 1 ))}
    RANDOM=$seed
    echo "$0: seed $seed (replay with S3CHUNK_CRASH_SEED=$seed)"
}

rand_between ()
{
    echo $(( $1 + RANDOM % ($2 - $1 + 1) ))
}

# pick WORD...: one of the words, from the seeded RANDOM.
pick ()
{
    local a=("$@")
    echo "${a[RANDOM % ${#a[@]}]}"
}

# ms_sleep MS
ms_sleep ()
{
    sleep "$(printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )))"
}

requires_robust_programs ()
{
    local p
    requires_test_programs
    for p in "$CRASH_IO" "$FSYNC_WORKLOAD"; do
        [ -x "$p" ] || fail "$p is missing: run make check (or make $p)"
    done
}

# _crash_teardown SOCK FUSE MNT: after nbdkit was killed: stop the
# workload, then unmount everything, forcibly if it must be (the device
# under the filesystem is gone: writes fail with EIO).
_crash_teardown ()
{
    local sock=$1 fuse=$2 mnt=$3
    if [ -n "${_workload_pid:-}" ]; then
        kill -9 "$_workload_pid" 2>/dev/null || true
        # It may sit in D state until its I/O fails; that takes a moment.
        _wait_exit "$_workload_pid" 30 > /dev/null 2>&1 || true
        _workload_pid=
    fi
    unmount_fs "$mnt" "$fuse/disk"
    stop_nbdfuse "$fuse"
}

# run_crash_fs FSTYPE: a filesystem on the plugin (nbdfuse + loop) under a
# workload that fsyncs and journals what fsync promised (tests/
# fsync-workload.c); nbdkit is killed with SIGKILL at a random moment
# ROUNDS times; after each kill: teardown, restart with force-unlock=true,
# mount and umount (journal replay), fsck -n, mount, every promised byte
# is there.
run_crash_fs ()
{
    local fstype=$1 rounds=${S3CHUNK_CRASH_ROUNDS:-5} mkfs fsck
    local sock fuse mnt disk round t0=$SECONDS kill_ms chunk delay cache
    local rc
    case $fstype in
    ext4) mkfs=(mkfs.ext4 -q -F); fsck=(e2fsck -f -n) ;;
    xfs)  mkfs=(mkfs.xfs -q -f);  fsck=(xfs_repair -n) ;;
    *) fail "run_crash_fs: unknown filesystem $fstype" ;;
    esac
    skip_if_valgrind "(too slow through the kernel)"
    requires_e2e
    requires "${mkfs[0]}" -V
    requires "${fsck[0]}" -V
    make_tmpdir
    requires_robust_programs
    robust_seed

    sock=$tmp/sock fuse=$tmp/fuse mnt=$tmp/mnt
    disk=$fuse/disk
    mkdir -p "$mnt"
    cleanup_fn _crash_teardown "$sock" "$fuse" "$mnt"

    # The plan, from the seed: geometry, cache and upload timing.
    chunk=$(pick 64K 256K 1M)
    delay=$(pick 0 0.2 1 2)
    cache=$(pick 16M 64M)
    echo "$0: plan: $fstype, chunk-size=$chunk upload-delay=$delay" \
         "cache-size=$cache, $rounds kills"

    start_nbdkit "$sock" $(store_args vol) size=512M chunk-size=$chunk \
        cache-size=$cache upload-delay=$delay
    start_nbdfuse "$sock" "$fuse"
    "${mkfs[@]}" "$disk"
    mount -o loop "$disk" "$mnt"
    mkdir "$mnt/w"
    # Make the empty filesystem durable before the first kill.
    sync -f "$mnt"

    for (( round = 1; round <= rounds; ++round )); do
        kill_ms=$(rand_between 500 4000)
        echo "=== $fstype round $round/$rounds: workload, kill -9 nbdkit after $kill_ms ms ==="
        "$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" \
            --seed "$seed" --duration 60 > "$tmp/workload-$round.out" 2>&1 &
        _workload_pid=$!
        ms_sleep "$kill_ms"
        kill -0 "$_workload_pid" 2>/dev/null ||
            { cat "$tmp/workload-$round.out"; fail "the workload ended before the kill"; }
        kill_nbdkit "$sock"
        _crash_teardown "$sock" "$fuse" "$mnt"
        tail -n 2 "$tmp/workload-$round.out"
        echo "journal: $(grep -c '^F' "$tmp/journal") file lines," \
             "$(grep -c '^A' "$tmp/journal") appends"
        ! mountpoint -q "$mnt" || fail "$mnt still mounted after teardown"

        check "restart (force-unlock), mount + umount to replay the journal"
        start_nbdkit "$sock" $(store_args vol) $(takeover_args) \
            cache-size=$cache upload-delay=$delay
        start_nbdfuse "$sock" "$fuse"
        mount -o loop "$disk" "$mnt" || fail "mount after the crash failed"
        unmount_fs "$mnt" "$disk"
        check "${fsck[*]} finds the filesystem clean"
        rc=0
        "${fsck[@]}" "$disk" > "$tmp/fsck-$round.out" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            cat "$tmp/fsck-$round.out"
            fail "${fsck[*]} found damage after kill $round (status $rc)"
        fi
        echo "ok: clean"
        check "every file the journal lists is intact, byte for byte"
        mount -o loop "$disk" "$mnt"
        "$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --verify ||
            fail "fsync'ed data lost or damaged after kill $round"
    done

    check "a clean stop keeps everything too"
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    start_nbdkit "$sock" $(store_args vol) cache-size=$cache
    start_nbdfuse "$sock" "$fuse"
    "${fsck[@]}" "$disk" > "$tmp/fsck-final.out" 2>&1 ||
        { cat "$tmp/fsck-final.out"; fail "${fsck[*]} after the clean stop"; }
    mount -o loop "$disk" "$mnt"
    "$FSYNC_WORKLOAD" --dir "$mnt/w" --journal "$tmp/journal" --verify ||
        fail "data lost after the clean stop"
    unmount_fs "$mnt" "$disk"
    stop_nbdfuse "$fuse"
    stop_nbdkit "$sock"
    echo "$0: PASS ($rounds kills, seed $seed, $((SECONDS - t0)) s)"
}

# start_fault_rotation PROBABILITY SECONDS MODE...: in the background, set
# the fault proxy's rule (tests/s3-functions.sh: $S3_PROXY_URL) to each MODE
# in turn for SECONDS, faulting that fraction of all requests; stalls last
# 1.5 s (keep request-timeout above that).  stop_fault_rotation (also run
# at exit) stops it and lets everything through again.
_faults_pid=
start_fault_rotation ()
{
    local p=$1 secs=$2
    shift 2
    _fault_modes=("$@")
    (
        i=0
        while :; do
            mode=${_fault_modes[i % ${#_fault_modes[@]}]}
            curl -sS -m 5 -o /dev/null \
                "$S3_PROXY_URL/__fault?mode=$mode&probability=$p&seed=$(( ${seed:-1} + i ))&delay=1.5" ||
                true
            i=$((i + 1))
            sleep "$secs"
        done
    ) &
    _faults_pid=$!
    [ -n "${_fault_cleanup_registered:-}" ] || cleanup_fn stop_fault_rotation
    _fault_cleanup_registered=1
    echo "$0: fault rotation: ${_fault_modes[*]}, probability $p, $secs s each"
}

stop_fault_rotation ()
{
    [ -n "$_faults_pid" ] || return 0
    kill "$_faults_pid" 2>/dev/null || true
    wait "$_faults_pid" 2>/dev/null || true
    _faults_pid=
    curl -sS -m 5 -o /dev/null "$S3_PROXY_URL/__fault?mode=none" || true
}
