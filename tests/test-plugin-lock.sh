#!/usr/bin/env bash
# s3chunk tests: one mounter per volume (the lock object).
#  1. A second instance is refused with one line naming the holder; a
#     read-only one (nbdkit -r) starts, takes no lock and warns.
#  2. A clean stop deletes the lock: a restart starts at once.
#  3. Several instances started at the same moment: exactly one serves.
#  4. A holder killed with SIGKILL: refused while its lock is fresh, taken
#     over once stale; force-unlock=true takes over at once.
#  5. Fencing: the lock taken behind a running instance's back makes its
#     writes and flushes fail, and no chunk object changes afterwards.
#  6. A store that ignores conditional writes is refused, unless lock=none
#     (with a loud warning).
# lease=3 everywhere (renewal every second) keeps the waits short.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires nbdinfo --version
requires sha256sum --version
requires_test_programs
make_tmpdir

sock=$tmp/sock
K=1024
M=$((1024 * 1024))
size=$((8 * M))
chunk=$((64 * K))
store=$(store_args vol)
lock=$tmp/vol/lock
host=$(hostname)

# The lock object's field KEY (directory store only).
lock_field ()
{
    sed -n "s/^$1=//p" "$lock"
}

echo "=== 1. a second instance is refused, naming the holder ==="
start_nbdkit "$sock" $store size=$size chunk-size=$chunk lease=3
pid1=$(cat "$sock.pid")
nbdkit_refuses "the volume is in use: locked by host [^ ]+ \(pid $pid1, s3chunk [^)]*\), taken at [0-9-]+ [0-9:]+ UTC, last renewed [0-9]+ s ago, lease 3 s: .*force-unlock=true.*s3chunk unlock" \
    $store lease=3
check "the refusal is one line"
[ "$(grep -c 'the volume is in use' "$tmp/refuse.out")" -eq 1 ] ||
    fail "more than one line"
grep -q "host $host " "$tmp/refuse.out" || fail "refusal does not name host $host"
if store_can_list; then
    check "the lock object names the serving process and is renewed"
    [ "$(lock_field pid)" = "$pid1" ] || fail "lock pid $(lock_field pid) != $pid1"
    [ "$(lock_field lease)" = 3 ] || fail "lock lease $(lock_field lease)"
    seq1=$(lock_field sequence)
    sleep 2.5
    seq2=$(lock_field sequence)
    [ "$seq2" -ge $((seq1 + 2)) ] || fail "not renewed every second: $seq1 -> $seq2"
fi

check "read-only (nbdkit -r) starts without the lock and warns"
out=$tmp/ro.out
"${nbdkit_cmd[@]}" -r -U - --run 'nbdinfo --json "$uri"' "$PLUGIN" $store \
    >"$out" 2>&1 || { cat "$out"; fail "nbdkit -r did not start"; }
grep -q '"is_read_only": true' "$out" || { cat "$out"; fail "not read-only"; }
grep -q "warning: read-only: the volume is being written by host" "$out" ||
    { cat "$out"; fail "no warning about the writer"; }
if store_can_list; then
    [ "$(lock_field pid)" = "$pid1" ] || fail "the reader touched the lock"
fi
check "also when -r is written --read-only and comes after the plugin"
"${nbdkit_cmd[@]}" -U - --run 'nbdinfo --json "$uri"' "$PLUGIN" $store \
    --read-only >"$out" 2>&1 || { cat "$out"; fail "nbdkit did not start"; }
grep -q '"is_read_only": true' "$out" || { cat "$out"; fail "not read-only"; }

echo "=== 2. a clean stop releases the lock; a restart does not wait ==="
"$VERIFY" --socket "$sock" --write-pattern 0 $((3 * chunk)) 1
stop_nbdkit "$sock"
if store_can_list; then
    # Released by a conditional replace, never deleted (lock.h).
    [ -e "$lock" ] || fail "the lock object was deleted, not released"
    [ "$(lock_field released)" = 1 ] ||
        { cat "$lock"; fail "the lock object is not marked released"; }
    [ "$(lock_field pid)" = "$pid1" ] || fail "released by another pid"
fi
t0=$(date +%s%N)
start_nbdkit "$sock" $store lease=3
t1=$(date +%s%N)
grep -q "took over" "${_nbdkit_log[$sock]}" && fail "the restart took over a lock"
if [ "${S3CHUNK_VALGRIND:-}" != 1 ]; then
    [ $(( (t1 - t0) / 1000000 )) -lt 2500 ] ||
        fail "restart took $(( (t1 - t0) / 1000000 )) ms"
fi
"$VERIFY" --socket "$sock" --expect-pattern 0 $((3 * chunk)) 1
stop_nbdkit "$sock"

echo "=== 3. several instances at the same moment: exactly one serves ==="
n=6
pids=()
for (( i = 0; i < n; ++i )); do
    rm -f "$sock$i" "$sock$i.pid"
    "${nbdkit_cmd[@]}" -f -U "$sock$i" -P "$sock$i.pid" "$PLUGIN" $store \
        lease=3 >"$tmp/race$i.log" 2>&1 &
    pids+=($!)
done
# Losers exit within a second; the winner serves.
for (( t = 0; t < 100; ++t )); do
    alive=0
    for (( i = 0; i < n; ++i )); do
        if kill -0 "${pids[i]}" 2>/dev/null && ! _is_zombie "${pids[i]}"; then
            alive=$((alive + 1))
        fi
    done
    [ "$alive" -gt 1 ] || break
    sleep 0.1
done
sleep 1
winners=0
for (( i = 0; i < n; ++i )); do
    if kill -0 "${pids[i]}" 2>/dev/null && ! _is_zombie "${pids[i]}"; then
        winners=$((winners + 1))
        winner=$i
    else
        rc=0
        wait "${pids[i]}" || rc=$?
        [ "$rc" -ne 0 ] || fail "instance $i exited 0 without serving"
        grep -q 'the volume is in use: locked by host' "$tmp/race$i.log" ||
            { cat "$tmp/race$i.log"; fail "instance $i exited for another reason"; }
    fi
done
[ "$winners" -eq 1 ] || fail "$winners instances serve the volume"
nbdinfo --size "nbd+unix:///?socket=$sock$winner" >/dev/null ||
    fail "the winner does not serve"
kill -TERM "${pids[winner]}"
_wait_exit "${pids[winner]}" 60 || fail "the winner exited with $?"

echo "=== 4. a holder killed with SIGKILL ==="
start_nbdkit "$sock" $store lease=3
kill_nbdkit "$sock"
check "refused while its lock is fresh"
nbdkit_refuses "the volume is in use: .*start again when the lease has run out" \
    $store lease=3
check "taken over once stale (by the store's clock)"
sleep 6     # age > lease + 1 s (LOCK_TAKE_MARGIN), whole seconds
start_nbdkit "$sock" $store lease=3
grep -q "took over the stale lock of host" "${_nbdkit_log[$sock]}" ||
    fail "no message about the takeover"
"$VERIFY" --socket "$sock" --expect-pattern 0 $((3 * chunk)) 1
kill_nbdkit "$sock"
check "force-unlock=true takes over a fresh lock at once, with a warning"
start_nbdkit "$sock" $store lease=3 force-unlock=true
grep -q "warning: lock: took over the FRESH (force-unlock=true) lock" \
    "${_nbdkit_log[$sock]}" || fail "no warning about the forced takeover"
stop_nbdkit "$sock"

echo "=== 5. fencing: the lock taken behind a running instance's back ==="
if store_can_list; then
    # upload-delay=60: a partly written chunk stays dirty in the cache
    # across the takeover; it must never reach the store afterwards.
    start_nbdkit "$sock" $store lease=3 upload-delay=60
    log=${_nbdkit_log[$sock]}
    "$VERIFY" --socket "$sock" --write-pattern 0 $((4 * chunk)) 2 --flush
    "$VERIFY" --socket "$sock" --write-pattern $((5 * chunk + 100)) 1000 4
    # Another holder: a valid lock object with another owner, written the
    # way a store replaces an object (new file, rename).
    cat >"$lock.new" <<EOF
s3chunk lock
format-version=1
owner=0123456789abcdef0123456789abcdef
host=intruder
pid=4242
taken-at=$(date +%s)
renewed-at=$(date +%s)
lease=3
sequence=1
version=test
EOF
    mv -f "$lock.new" "$lock"
    check "the instance notices within a renewal period and fences"
    for (( t = 0; t < 50; ++t )); do
        grep -q "the volume lock is lost" "$log" && break
        sleep 0.1
    done
    grep -q "lock: the volume lock is lost: another instance took the volume over: host intruder (pid 4242" "$log" ||
        { cat "$log"; fail "no fence message naming the new holder"; }
    grep -q "every write and flush fails" "$log" ||
        fail "the cache was not put into its failed state"
    snap ()
    {
        (cd "$tmp/vol" && find chunks -type f ! -name '*.tmp-*' -printf '%p %s %T@\n' |
             sort && find chunks -type f ! -name '*.tmp-*' -print0 | sort -z |
             xargs -0 -r sha256sum)
    }
    snap >"$tmp/before"
    check "writes fail"
    ! "$VERIFY" --socket "$sock" --write-pattern $((chunk + 5)) 1000 3 \
        2>"$tmp/w.err" || fail "a write succeeded after the lock was lost"
    check "flushes fail"
    ! "$VERIFY" --socket "$sock" --flush 2>"$tmp/f.err" ||
        fail "a flush succeeded after the lock was lost"
    check "zero and trim fail"
    ! "$VERIFY" --socket "$sock" --zero 0 $chunk 2>/dev/null ||
        fail "a zero succeeded after the lock was lost"
    check "reads still work (the dirty chunk too)"
    "$VERIFY" --socket "$sock" --expect-pattern 0 $((4 * chunk)) 2 \
        --expect-pattern $((5 * chunk + 100)) 1000 4
    sleep 1.5
    snap >"$tmp/after"
    check "no chunk object changed after the takeover"
    diff "$tmp/before" "$tmp/after" || fail "chunk objects changed"
    check "stopping uploads nothing and leaves the other holder's lock alone"
    # Not stop_nbdkit: losing the dirty chunk is the expected outcome here.
    pid=${_nbdkit_pid[$sock]}
    kill -TERM "$pid"
    rc=0
    _wait_exit "$pid" 60 || rc=$?
    unset "_nbdkit_pid[$sock]"
    grep -q "could not be stored and are lost" "$log" ||
        fail "the dirty chunk was not reported lost at shutdown"
    check "the exit status says data was lost (3)"
    [ "$rc" = 3 ] || fail "nbdkit exited with status $rc after losing data, not 3"
    snap >"$tmp/after"
    diff "$tmp/before" "$tmp/after" || fail "chunk objects changed at shutdown"
    [ "$(lock_field host)" = intruder ] || fail "the fenced instance touched the lock"
    rm -f "$lock"
else
    echo "(skipped: needs the directory store)"
fi

echo "=== 6. a store that ignores conditional writes ==="
nbdkit_refuses "the store does not enforce conditional writes \(a second create-if-absent of the same key succeeded\).*lock=none" \
    $store s3chunk-test-ignore-conditions=true
nbdkit_accepts $store lock=none s3chunk-test-ignore-conditions=true
grep -q "warning: lock=none: NO VOLUME LOCK is taken" "$tmp/accept.out" ||
    { cat "$tmp/accept.out"; fail "no warning for lock=none"; }
if store_can_list; then
    [ ! -e "$lock" ] || fail "lock=none took a lock"
    ls "$tmp/vol" | grep -q lock-probe && fail "a probe object was left behind"
fi

echo "=== 7. parameters ==="
nbdkit_refuses "lease=2: invalid value" $store lease=2
nbdkit_refuses "lock=maybe: invalid value: expected object or none" $store lock=maybe
nbdkit_refuses "force-unlock=sometimes: invalid value" $store force-unlock=sometimes

echo "$0: PASS"
