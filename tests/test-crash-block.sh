#!/usr/bin/env bash
# s3chunk tests: block-level crash consistency.  tests/nbd-crash-io.c
# writes 4 KiB blocks (and zeroes) from 4 connections, with flushes and FUA
# writes, while nbdkit is killed with SIGKILL at a random moment; after a
# restart (force-unlock=true) every block must hold what the last write
# acknowledged before the last completed flush (or a completed FUA write)
# put there, or a later write; and every block must hold zeroes or one of
# the values ever written to it: never garbage, never a torn block.  Five
# kills with geometry and timing drawn from the seed (printed;
# S3CHUNK_CRASH_SEED=N replays the plan).
#
# Two controls show that the checker can fail: the same writes on nbdkit's
# memory plugin (which forgets everything when killed) must be reported as
# lost flushed data, and a block damaged behind the server's back (file
# plugin) as garbage.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/robust-functions.sh"

requires nbdkit --version
make_tmpdir
requires_robust_programs
robust_seed
t0=$SECONDS
sock=$tmp/sock
rounds=${S3CHUNK_CRASH_ROUNDS:-5}
area=(--offset 1M --length 32M)

chunk=$(pick 64K 128K 1M)
delay=$(pick 0 0.05 0.5 2)
cache=$(pick 16M 64M)
# (One upload connection to S3 makes a round too slow for the time limit.)
if store_is_s3; then conns=$(pick 4 16); else conns=$(pick 1 4 16); fi
echo "$0: plan: chunk-size=$chunk upload-delay=$delay cache-size=$cache" \
     "connections=$conns, $rounds kills"
vol=(cache-size=$cache upload-delay=$delay connections=$conns)

start_nbdkit "$sock" $(store_args vol) size=40M chunk-size=$chunk "${vol[@]}"
for (( round = 1; round <= rounds; ++round )); do
    kill_ms=$(rand_between 200 2500)
    echo "=== round $round/$rounds: write, kill -9 nbdkit after $kill_ms ms ==="
    rm -f "$tmp/ready"
    "$CRASH_IO" --socket "$sock" --state "$tmp/state" --seed "$seed" \
        "${area[@]}" --duration 60 --ready-file "$tmp/ready" \
        > "$tmp/crash-io-$round.out" 2>&1 &
    pid=$!
    # The kill point counts from when the writers start (the check of the
    # previous round comes first and takes long under valgrind or ASan).
    for (( i = 0; i < 1200; ++i )); do
        [ ! -e "$tmp/ready" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -e "$tmp/ready" ] || { cat "$tmp/crash-io-$round.out"; fail "the writers did not start"; }
    ms_sleep "$kill_ms"
    kill_nbdkit "$sock"
    rc=0
    wait "$pid" || rc=$?
    cat "$tmp/crash-io-$round.out"
    [ "$rc" -eq 0 ] || fail "nbd-crash-io failed in round $round (status $rc)"
    grep -q 'failed after' "$tmp/crash-io-$round.out" ||
        fail "the writers did not see the server go away"
    start_nbdkit "$sock" $(store_args vol) $(takeover_args) "${vol[@]}"
done
check "after the last kill, every flushed block is there, nothing is garbage"
"$CRASH_IO" --socket "$sock" --state "$tmp/state" "${area[@]}" --verify-only ||
    fail "flushed data lost or damaged (seed $seed)"
check "the area around the test area still reads as zeroes"
"$VERIFY" --socket "$sock" --expect-zero 0 1M --expect-zero 33M 7M
check "and after a clean stop"
stop_nbdkit "$sock"
start_nbdkit "$sock" $(store_args vol) "${vol[@]}"
"$CRASH_IO" --socket "$sock" --state "$tmp/state" "${area[@]}" --verify-only ||
    fail "flushed data lost after a clean stop (seed $seed)"
stop_nbdkit "$sock"

echo "=== controls: the checker detects loss and garbage ==="
check "memory plugin (volatile): flushed data lost after kill -9 is reported"
PLUGIN=memory start_nbdkit "$sock" size=40M
"$CRASH_IO" --socket "$sock" --state "$tmp/state-mem" --seed "$seed" \
    "${area[@]}" --duration 1 > "$tmp/mem.out" 2>&1 || { cat "$tmp/mem.out"; fail "control run"; }
kill_nbdkit "$sock"
PLUGIN=memory start_nbdkit "$sock" size=40M
rc=0
"$CRASH_IO" --socket "$sock" --state "$tmp/state-mem" "${area[@]}" \
    --verify-only > "$tmp/mem-verify.out" 2>&1 || rc=$?
kill_nbdkit "$sock"
[ "$rc" -eq 1 ] && grep -q 'FLUSHED DATA WAS LOST' "$tmp/mem-verify.out" ||
    { cat "$tmp/mem-verify.out"; fail "the checker missed lost flushed data"; }
echo "ok: $(grep -c 'FLUSHED DATA WAS LOST' "$tmp/mem-verify.out") lost block(s) reported"
check "file plugin: a damaged block is reported as garbage"
truncate -s 40M "$tmp/disk.img"
PLUGIN=file start_nbdkit "$sock" file="$tmp/disk.img"
"$CRASH_IO" --socket "$sock" --state "$tmp/state-file" --seed "$seed" \
    "${area[@]}" --duration 1 > "$tmp/file.out" 2>&1 || { cat "$tmp/file.out"; fail "control run"; }
# Damage one byte inside the first block that holds a write.
off=$(awk 'NR > 1 && $3 != "z" && $3 != 0 { print $1; exit }' "$tmp/state-file")
printf '\x5a' | dd of="$tmp/disk.img" bs=1 seek=$(( 1048576 + off * 4096 + 100 )) \
    conv=notrunc status=none
rc=0
"$CRASH_IO" --socket "$sock" --state "$tmp/state-file" "${area[@]}" \
    --verify-only > "$tmp/file-verify.out" 2>&1 || rc=$?
stop_nbdkit "$sock"
[ "$rc" -eq 1 ] && grep -q "block $off .*garbage" "$tmp/file-verify.out" ||
    { cat "$tmp/file-verify.out"; fail "the checker missed a damaged block $off"; }
grep "block $off " "$tmp/file-verify.out"

echo "$0: PASS ($rounds kills, seed $seed, $((SECONDS - t0)) s)"
