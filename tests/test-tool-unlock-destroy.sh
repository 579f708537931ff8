#!/usr/bin/env bash
# s3chunk tests: s3chunk unlock and s3chunk destroy.
#  1. unlock after nbdkit was killed with SIGKILL (lease=6): while the lock
#     is fresh it is refused ("looks alive"), the lock stays; once stale,
#     without --yes and no terminal it is refused, "n" on a terminal keeps
#     it, --yes removes it; nbdkit then starts at once and the flushed data
#     is there.  With nothing locked: "not locked", exit 0.
#  2. unlock --force removes a fresh lock (with a warning), and the
#     running holder stops writing (fenced) instead of corrupting.
#  3. destroy: refused while nbdkit serves the volume; without --yes and a
#     terminal, or with a wrong answer, nothing is deleted; with --yes every
#     object goes (chunks, stray probes and temporary files, lock,
#     superblock), a foreign file is left and named; the directory holds no
#     object afterwards, info says there is no volume, and create works
#     again.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

requires nbdkit --version
requires_tool
requires_test_programs
make_tmpdir

K=1024
M=$((1024 * K))
sock=$tmp/sock
store=$(store_args vol)
has_script=no
script --version >/dev/null 2>&1 && has_script=yes

# on_tty NAME INPUT CMD...: run CMD on a terminal (script(1)) typing
# INPUT; output in $tmp/NAME.out, status in $rc.
on_tty ()
{
    local name=$1 input=$2
    shift 2
    rc=0
    printf '%s\n' "$input" |
        script -qec "$(printf '%q ' "$@")" /dev/null > "$tmp/$name.out" 2>&1 || rc=$?
    sed 's/^/  | /' "$tmp/$name.out"
    echo "  (exit status $rc)"
}

lock_exists ()
{
    "$S3CHUNK" info --json $store > "$tmp/lock.json"
    [ "$(json_get "$tmp/lock.json" 'j["lock"] is not None')" = true ]
}

tool_ok create "$S3CHUNK" create $store size=32M chunk-size=64K
id=$(sed -n 's/^created volume \([0-9a-f]*\) .*/\1/p' "$tmp/create.out")

echo "=== 1. unlock after kill -9 ==="
start_nbdkit "$sock" $store lease=6
pid=$(cat "$sock.pid")
"$VERIFY" --socket "$sock" --write-pattern 0 $((M + 12345)) 1 --flush
kill_nbdkit "$sock"
tool_status 1 "locked by host $(hostname) \(pid $pid, .*: fresh" fresh "$S3CHUNK" unlock --yes $store
grep -q "not removed: the holder looks alive (it renewed the lock [0-9]* s ago, within its lease of 6 s)" \
    "$tmp/fresh.err" || fail "unlock of a fresh lock does not say the holder looks alive"
lock_exists || fail "a refused unlock removed the lock"
wait_lock_stale $store
tool_status 1 "stdin is not a terminal: add --yes" notty "$S3CHUNK" unlock $store < /dev/null
lock_exists || fail "unlock without --yes removed the lock"
if [ "$has_script" = yes ]; then
    on_tty no n "$S3CHUNK" unlock $store
    [ "$rc" -eq 1 ] && grep -q "Remove it? \[y/N\]" "$tmp/no.out" ||
        fail "unlock did not ask, or did not refuse on 'n'"
    lock_exists || fail "unlock removed the lock after 'n'"
fi
tool_status 0 "locked by host .*\(pid $pid, .*: stale" yes "$S3CHUNK" unlock --yes $store
grep -q ": lock removed" "$tmp/yes.out" || fail "unlock --yes did not say it removed the lock"
! lock_exists || fail "the lock is still there"
tool_status 0 "not locked: nothing to do" none "$S3CHUNK" unlock $store
check "nbdkit starts at once; the flushed data is there"
start_nbdkit "$sock" $store lease=3
"$VERIFY" --socket "$sock" --expect-pattern 0 $((M + 12345)) 1

echo "=== 2. unlock --force of a live holder's lock ==="
pid=$(cat "$sock.pid")
if [ "$has_script" = yes ]; then
    check "the terminal prompt accepts 'y'"
    on_tty force y "$S3CHUNK" unlock --force $store
    [ "$rc" -eq 0 ] || fail "unlock --force, answered y, failed"
    grep -q "warning: removing a FRESH lock" "$tmp/force.out" || fail "no warning"
else
    tool_ok force "$S3CHUNK" unlock --force --yes $store
fi
check "the holder notices within a lease and stops writing"
fenced=no
for (( i = 0; i < 25; ++i )); do
    if ! "$VERIFY" --socket "$sock" --write-pattern 0 4096 2 --flush >/dev/null 2>&1; then
        fenced=yes
        break
    fi
    sleep 0.2
done
[ "$fenced" = yes ] ||
    fail "the holder whose lock was removed still accepts writes and flushes after 5 s"
kill_nbdkit "$sock"
tool_ok unlock2 "$S3CHUNK" unlock --yes --force $store

echo "=== 3. destroy ==="
start_nbdkit "$sock" $store lease=3
"$VERIFY" --socket "$sock" --write-pattern 0 $((3 * M)) 3 \
    --write-pattern $((20 * M)) $((M)) 4 --flush
tool_status 1 "the volume is in use: locked by .*stop its nbdkit first" busy "$S3CHUNK" destroy --yes $store
stop_nbdkit "$sock"
if store_can_list; then
    n=$(store_chunk_count vol)
    [ "$n" -eq 64 ] || fail "expected 64 chunk objects, found $n"
    # Leftovers the volume's destroy must take too, and a foreign file it
    # must leave.
    echo probe > "$tmp/vol/lock-probe-0123456789abcdef"
    echo tmp > "$tmp/vol/chunks/0000000000000001.tmp-0123456789abcdef"
    echo mine > "$tmp/vol/keep-me.txt"
    find "$tmp/vol" | sort > "$tmp/files.before"
fi
tool_status 1 "stdin is not a terminal: add --yes" notty2 "$S3CHUNK" destroy $store < /dev/null
if [ "$has_script" = yes ]; then
    on_tty wrong "${id:1:8}" "$S3CHUNK" destroy $store
    [ "$rc" -eq 1 ] && grep -q "not destroyed: the answer was not ${id:0:8}" "$tmp/wrong.out" ||
        fail "destroy went on after a wrong answer"
    grep -q "Type the first 8 characters of the volume id (${id:0:8})" "$tmp/wrong.out" ||
        fail "destroy did not ask for the volume id"
fi
if store_can_list; then
    find "$tmp/vol" | sort > "$tmp/files.after"
    diff "$tmp/files.before" "$tmp/files.after" || fail "a refused destroy deleted something"
fi
tool_ok info1 "$S3CHUNK" info $store
S3CHUNK_PROGRESS_INTERVAL=0 tool_ok destroy "$S3CHUNK" destroy --yes $store
grep -q "^destroyed volume $id: " "$tmp/destroy.out" || fail "destroy did not say so"
grep -q "s3chunk: destroy: 100%, .*objects" "$tmp/destroy.err" || fail "no progress lines"
if store_can_list; then
    grep -q "^left 1 object that s3chunk did not write: keep-me.txt" "$tmp/destroy.out" ||
        fail "destroy did not name the foreign file it left"
    left=$(cd "$tmp/vol" && find . -mindepth 1 ! -name .lock ! -name keep-me.txt)
    [ -z "$left" ] || fail "destroy left: $left"
fi
tool_status 1 "no volume in" gone "$S3CHUNK" info $store
tool_status 1 "no volume in" gone2 "$S3CHUNK" destroy --yes $store
tool_ok recreate "$S3CHUNK" create $store size=16M
start_nbdkit "$sock" $store
"$VERIFY" --socket "$sock" --size $((16 * M)) --expect-zero 0 $((16 * M))
stop_nbdkit "$sock"
tool_ok destroy2 "$S3CHUNK" destroy --yes --quiet $store
[ ! -s "$tmp/destroy2.err" ] || fail "destroy --quiet printed on stderr"

echo "$0: PASS"
