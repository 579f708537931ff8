#!/usr/bin/env bash
# s3chunk tests: damaged chunk objects, through the plugin (directory
# store: objects are files under DIR/chunks/).  A volume is filled with
# random data and stopped; then objects are damaged behind its back:
#   a bit flipped in the payload, a bit flipped in the header, truncated,
#   cut to its header, emptied, another chunk's object copied over it, an
#   object of another volume (same index) copied over it, foreign files
#   under the key (small, and larger than any object can be); and a
#   directory where an object was (EIO or zeroes, never other bytes).
# After a restart (which must succeed: a damaged chunk does not take the
# volume down):
#   - every read touching a damaged chunk fails with EIO (a whole-chunk
#     read, a 512-byte read inside it, a read spanning a good chunk and the
#     damaged one), and nbdkit's log names the key;
#   - nbdcopy of the whole disk fails;
#   - a partial write into a damaged chunk fails (read-modify-write must
#     not fill the rest of the chunk with made-up bytes);
#   - every other chunk reads back exactly, never wrong bytes;
#   - a stray file and a chunk key beyond the end of the volume do not
#     stop it from opening;
#   - a whole-chunk write over a damaged chunk repairs it.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires nbdcopy --version
make_tmpdir
requires_test_programs
store_can_list || { echo "$0: SKIP: needs the directory store"; exit 77; }
sock=$tmp/sock
C=65536
N=128                                   # chunks: an 8 MiB disk
vol=(chunk-size=64K cache-size=16M)

key () { printf 'chunks/%016x' "$1"; }
obj () { echo "$tmp/vol/$(key "$1")"; }

check "a volume full of random data (and a second volume for foreign objects)"
head -c $((N * C)) /dev/urandom > "$tmp/data"
start_nbdkit "$sock" dir="$tmp/vol" size=$((N * C)) "${vol[@]}"
"$VERIFY" --socket "$sock" --write-file "$tmp/data" 0 --flush
stop_nbdkit "$sock"
start_nbdkit "$sock" dir="$tmp/other" size=$((N * C)) "${vol[@]}"
"$VERIFY" --socket "$sock" --write-pattern 0 $((N * C)) 9 --flush
stop_nbdkit "$sock"
[ "$(store_chunk_count vol)" -eq $N ] ||
    fail "expected $N chunk objects, found $(store_chunk_count vol)"

# flip_bit FILE OFFSET
flip_bit ()
{
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\$(printf '%03o' $(( b ^ 0x10 )))" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

check "damage objects"
declare -A damage
size_of () { stat -c %s "$(obj "$1")"; }
damage[3]="bit flip in the payload"
flip_bit "$(obj 3)" $(( 64 + ( $(size_of 3) - 64 ) / 2 ))
damage[10]="bit flip in the header (chunk index field)"
flip_bit "$(obj 10)" 33
damage[17]="truncated by 100 bytes"
truncate -s $(( $(size_of 17) - 100 )) "$(obj 17)"
damage[24]="cut to its 64-byte header"
truncate -s 64 "$(obj 24)"
damage[31]="empty"
: > "$(obj 31)"
damage[40]="chunk 41's object copied over it"
cp "$(obj 41)" "$(obj 40)"
damage[55]="another volume's chunk 55 copied over it"
cp "$tmp/other/$(key 55)" "$(obj 55)"
damage[70]="a foreign file under the key, larger than any object"
yes "not a chunk object" | head -c 70000 > "$(obj 70)"
damage[80]="a foreign file under the key, 1000 bytes"
yes "not a chunk object" | head -c 1000 > "$(obj 80)"
# Not in the list: a directory where chunk 99's object was (checked apart).
rm "$(obj 99)" && mkdir "$(obj 99)"
for c in "${!damage[@]}"; do echo "  chunk $c: ${damage[$c]}"; done
# Harmless strays: a file that is not a chunk key, a key beyond the end.
echo stray > "$tmp/vol/chunks/not-a-chunk"
cp "$(obj 5)" "$tmp/vol/$(key $((N + 1000)))"

check "the volume still opens"
start_nbdkit "$sock" dir="$tmp/vol" "${vol[@]}"
log=${_nbdkit_log[$sock]}

failures=()
bad () { echo "$0: FAIL: $*"; failures+=("$*"); }

# reads_fail WHAT OFF LEN: the read must fail with EIO.
reads_fail ()
{
    local rc=0
    "$VERIFY" --socket "$sock" --save "$tmp/out" "$2" "$3" > "$tmp/v.out" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$1: read at $2+$3 succeeded"
    elif ! grep -q 'Input/output error' "$tmp/v.out"; then
        bad "$1: read at $2+$3 failed without EIO: $(cat "$tmp/v.out")"
    fi
}

check "reads of a damaged chunk fail with EIO; nbdkit names the key"
for c in "${!damage[@]}"; do
    what="chunk $c (${damage[$c]})"
    reads_fail "$what, whole" $((c * C)) $C
    reads_fail "$what, 512 bytes inside" $((c * C + 4096)) 512
    reads_fail "$what, spanning from the chunk before" $((c * C - 1000)) 2000
    reads_fail "$what, again (no bad bytes cached)" $((c * C)) $C
    if grep -q "$(key "$c")" "$log"; then
        echo "ok: $what: EIO; log: $(grep -m 1 "$(key "$c")" "$log")"
    else
        bad "$what: nbdkit's log does not name $(key "$c")"
    fi
done

check "a directory where chunk 99's object was: EIO or zeroes, never other bytes"
# The directory store does not list it, so it may count as no object at
# all, like a deleted one; what it must never give is other bytes.
rc=0
"$VERIFY" --socket "$sock" --expect-zero $((99 * C)) $C > "$tmp/v.out" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
    echo "ok: chunk 99 reads as zeroes (no object)"
elif grep -q 'Input/output error' "$tmp/v.out"; then
    echo "ok: chunk 99 fails with EIO"
else
    bad "chunk 99 (a directory): $(cat "$tmp/v.out")"
fi

check "nbdcopy of the whole disk fails"
# One request at a time: nbdkit 1.32 (Debian 12) aborts when a client that
# has several reads queued hangs up after the first error (fixed upstream
# in 1.34, nbdkit commit 9d82aa4f), which nbdcopy does.
rc=0
nbdcopy --connections=1 --requests=1 "nbd+unix:///?socket=$sock" \
    "$tmp/copy.img" > "$tmp/nbdcopy.out" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
    bad "nbdcopy of a disk with damaged chunks succeeded"
else
    echo "ok: nbdcopy failed: $(head -n 1 "$tmp/nbdcopy.out")"
fi

check "a partial write into a damaged chunk fails"
for c in 3 40 70; do
    rc=0
    "$VERIFY" --socket "$sock" --write-pattern $((c * C + 100)) 100 5 --flush \
        > "$tmp/v.out" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || bad "chunk $c: a 100-byte write into the damaged chunk succeeded"
done

check "every other chunk reads back exactly"
good=0
for (( c = 0; c < N; ++c )); do
    [ -z "${damage[$c]:-}" ] && [ "$c" -ne 99 ] || continue
    if ! "$VERIFY" --socket "$sock" --save "$tmp/out" $((c * C)) $C > "$tmp/v.out" 2>&1; then
        bad "chunk $c (undamaged): $(cat "$tmp/v.out")"
    elif ! cmp -s "$tmp/out" <(tail -c +$((c * C + 1)) "$tmp/data" | head -c $C); then
        bad "chunk $c (undamaged) reads back WRONG BYTES"
    else
        good=$((good + 1))
    fi
done
echo "ok: $good undamaged chunks read back exactly"

check "a whole-chunk write repairs a damaged chunk"
"$VERIFY" --socket "$sock" --write-pattern $((17 * C)) $C 7 --flush \
    --expect-pattern $((17 * C)) $C 7 ||
    bad "a whole-chunk write over a damaged chunk failed"
stop_nbdkit "$sock" || bad "nbdkit did not stop cleanly"
start_nbdkit "$sock" dir="$tmp/vol" "${vol[@]}"
"$VERIFY" --socket "$sock" --expect-pattern $((17 * C)) $C 7 ||
    bad "the repaired chunk did not survive a restart"
reads_fail "chunk 3 after the restart" $((3 * C)) $C
stop_nbdkit "$sock" || bad "nbdkit did not stop cleanly"

if [ ${#failures[@]} -gt 0 ]; then
    echo "$0: ${#failures[@]} check(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "$0: PASS"
