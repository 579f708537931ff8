#!/usr/bin/env bash
# s3chunk tests: s3chunk fsck on a directory store.
#  1. A clean volume: exit 0, "clean", every chunk object counted.
#  2. Damage of every kind, each named on its own line, exit 1, nothing
#     changed by fsck: a flipped byte, a truncated object, an empty one,
#     another chunk's object copied over a key, another volume's object, a
#     chunk key beyond the end of the volume, a foreign file, a stray
#     *.tmp-* file of an unfinished write, a stray lock-probe-* object, an
#     invalid lock object.  The same answer with one thread and with eight.
#  3. Progress: plain lines when stderr is not a terminal, a bar on a
#     terminal (through script(1)), none with --quiet.
#  4. Exit 2 when it cannot check: no volume, a bad option.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

requires nbdkit --version
requires_tool
requires_test_programs
make_tmpdir
if ! store_can_list; then
    echo "$0: SKIP: damages object files of a directory store"
    exit 77
fi

K=1024
M=$((1024 * K))
sock=$tmp/sock
vol=$tmp/vol
ch=$vol/chunks

key () { printf '%s/%016x' "$ch" "$1"; }

echo "=== 1. a clean volume ==="
tool_ok create "$S3CHUNK" create dir=$vol size=8M chunk-size=64K
start_nbdkit "$sock" dir=$vol
# 40 chunks of random data, then 8 of zeroes (no objects), then 4 more.
"$VERIFY" --socket "$sock" --write-pattern 0 $((40 * 64 * K)) 1 \
    --write-pattern $((48 * 64 * K)) $((4 * 64 * K)) 2 --flush
stop_nbdkit "$sock"
[ "$(store_chunk_count vol)" -eq 44 ] || fail "expected 44 chunk objects"
tool_ok clean "$S3CHUNK" fsck dir=$vol
grep -E -q "^fsck: 44 chunk objects \([0-9.]+ [KM]iB stored\) checked in [0-9:]+: clean$" \
    "$tmp/clean.out" || fail "no clean summary"
[ "$(wc -l < "$tmp/clean.out")" -eq 2 ] || fail "a clean fsck printed more than 2 lines"

echo "=== 2. damage of every kind ==="
check "build a second volume to steal an object from"
tool_ok create2 "$S3CHUNK" create dir=$tmp/other size=8M chunk-size=64K
start_nbdkit "$sock" dir=$tmp/other
"$VERIFY" --socket "$sock" --write-pattern 0 $((16 * 64 * K)) 3 --flush
stop_nbdkit "$sock"

# 3: one byte flipped in the payload
printf '\xa5' | dd of="$(key 3)" bs=1 seek=30000 conv=notrunc status=none
# 5: truncated in the middle; 6: empty
truncate -s 20000 "$(key 5)"
: > "$(key 6)"
# 9: holds chunk 7
cp "$(key 7)" "$(key 9)"
# 11: another volume's chunk 11
cp "$tmp/other/chunks/000000000000000b" "$(key 11)"
# a chunk key beyond the end (the volume has 128 chunks)
cp "$(key 1)" "$(key 128)"
# foreign, stray temporary, stray probe, invalid lock
echo "not ours" > "$vol/README.txt"
head -c 1000 /dev/urandom > "$(key 2).tmp-0123456789abcdef"
echo "probe 1" > "$vol/lock-probe-00112233aabbccdd"
echo "garbage" > "$vol/lock"
find "$vol" -type f -exec sha256sum {} + | sort > "$tmp/before.sums"

for threads in 1 8; do
    check "fsck --threads=$threads finds and names each problem"
    tool_status 1 "" bad$threads "$S3CHUNK" fsck --threads=$threads dir=$vol
    out=$tmp/bad$threads.out
    for l in "corrupt chunks/0000000000000003: .*checksum" \
             "corrupt chunks/0000000000000005: .*(truncated|payload)" \
             "corrupt chunks/0000000000000006: .*shorter than a chunk header" \
             "corrupt chunks/0000000000000009: object holds chunk 7, not chunk 9" \
             "corrupt chunks/000000000000000b: object belongs to another volume" \
             "beyond-end chunks/0000000000000080: chunk 128, but the volume has 128 chunks" \
             "foreign README.txt: not an object s3chunk writes" \
             "stray chunks/0000000000000002.tmp-0123456789abcdef: temporary file" \
             "stray lock-probe-00112233aabbccdd: left by an interrupted lock check" \
             "corrupt lock: not a valid lock object: .*bad first line" \
             "^fsck: 44 chunk objects .* checked in [0-9:]+: 6 corrupt, 1 beyond the end, 1 foreign, 2 stray$" \
             "^fsck changed nothing"; do
        grep -E -q -- "^$l|$l" "$out" || fail "fsck -j$threads: no line matches '$l'"
    done
    # Nothing else is reported: 12 problem lines exactly.
    n=$(grep -c -E '^(corrupt|unreadable|beyond-end|foreign|stray) ' "$out")
    [ "$n" -eq 10 ] || fail "fsck -j$threads reported $n problems, expected 10"
    grep -E -q "corrupt chunks/00000000000000(0[012478ac-f]|[12][0-9a-f]|3[0-3])" "$out" &&
        fail "an intact chunk was reported"
    find "$vol" -type f -exec sha256sum {} + | sort > "$tmp/after.sums"
    cmp -s "$tmp/before.sums" "$tmp/after.sums" || fail "fsck changed the store"
done
diff <(grep -v '^fsck:' "$tmp/bad1.out") <(grep -v '^fsck:' "$tmp/bad8.out") ||
    fail "the report depends on the number of threads"

echo "=== 3. progress ==="
check "plain progress lines when stderr is not a terminal"
S3CHUNK_PROGRESS_INTERVAL=0 tool_status 1 "" plain "$S3CHUNK" fsck -j1 dir=$vol
grep -E -q "^s3chunk: fsck: 100%, 44/44 objects, .*problems" "$tmp/plain.err" ||
    fail "no plain progress line at 100%"
[ "$(grep -c $'\r' "$tmp/plain.err")" -eq 0 ] || fail "carriage returns in a log"
check "no progress with --quiet"
S3CHUNK_PROGRESS_INTERVAL=0 tool_status 1 "" quiet "$S3CHUNK" fsck --quiet dir=$vol
[ ! -s "$tmp/quiet.err" ] || fail "--quiet printed on stderr"
if script --version >/dev/null 2>&1; then
    check "a bar on a terminal"
    S3CHUNK_PROGRESS_INTERVAL=0 script -qec "$S3CHUNK fsck -j1 dir=$vol" \
        /dev/null > "$tmp/tty.out" 2>&1 < /dev/null || true
    grep -a -q $'\r\033\[Kfsck \[#*\.*\] *[0-9]*% [0-9]*/44 objects' "$tmp/tty.out" ||
        { cat -v "$tmp/tty.out" | head; fail "no progress bar on a terminal"; }
fi

echo "=== 4. cannot check: exit 2 ==="
tool_status 2 "no volume in" novol "$S3CHUNK" fsck dir=$tmp
tool_status 2 "unknown option" badopt "$S3CHUNK" fsck --repair dir=$vol
tool_status 2 "threads=0" badthreads "$S3CHUNK" fsck --threads=0 dir=$vol

echo "$0: PASS"
