#!/usr/bin/env bash
# s3chunk tests: durability across restarts.
#  1. Everything written before a flush survives kill -9 (no clean
#     shutdown); so does a FUA write, zero or trim without any flush.
#  2. Writes never flushed (nor FUA) survive SIGTERM: the plugin flushes on
#     exit.
#  3. kill -9 during uploads leaves every chunk old or new, never torn.
# A long upload-delay keeps unflushed data in memory, so a flush that does
# not wait for it would lose it at kill -9.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires_test_programs
make_tmpdir

sock=$tmp/sock
K=1024
M=$((1024 * 1024))
size=$((32 * M))
chunk=$((64 * K))
store=$(store_args vol)
slow=(cache-size=16M upload-delay=60)

echo "=== 1. flushed data survives kill -9 ==="
start_nbdkit "$sock" $store size=$size chunk-size=$chunk "${slow[@]}"
check "write patterns (unaligned, multi-chunk, the last byte), flush"
"$VERIFY" --socket "$sock" \
    --write-pattern 0 100000 1 \
    --write-pattern $((M - 1)) $((3 * chunk + 17)) 2 \
    --write-pattern $((4 * M)) $((2 * M)) 3 \
    --write-pattern $((size - 70000)) 70000 4 \
    --flush
kill_nbdkit "$sock"

start_nbdkit "$sock" $store $(takeover_args) "${slow[@]}"
check "after kill -9 every flushed byte reads back"
"$VERIFY" --socket "$sock" --size $size \
    --expect-pattern 0 100000 1 \
    --expect-zero 100000 $((M - 1 - 100000)) \
    --expect-pattern $((M - 1)) $((3 * chunk + 17)) 2 \
    --expect-zero $((M + 3 * chunk + 16)) $((3 * M - 3 * chunk - 16)) \
    --expect-pattern $((4 * M)) $((2 * M)) 3 \
    --expect-zero $((6 * M)) $((size - 70000 - 6 * M)) \
    --expect-pattern $((size - 70000)) 70000 4

check "random I/O from 4 threads ends with a flush, then kill -9"
"$VERIFY" --socket "$sock" --save "$tmp/before" 0 $size
"$RANDOM_IO" --socket "$sock" --threads 4 --connections 2 --ops 800 \
    --offset $((8 * M)) --length $((16 * M)) \
    --shadow-in "$tmp/before" --shadow-out "$tmp/after"
kill_nbdkit "$sock"
start_nbdkit "$sock" $store $(takeover_args) "${slow[@]}"
check "after kill -9 the disk matches the flushed shadow"
"$RANDOM_IO" --socket "$sock" --verify-only --shadow-in "$tmp/after"

check "FUA write, zero and trim, without flush, then kill -9"
"$VERIFY" --socket "$sock" \
    --fua --write-pattern $((2 * M + 5)) $((chunk + 7)) 5 \
    --fua --zero $((4 * M + 1000)) $((2 * chunk)) \
    --fua --trim $((5 * M)) $((4 * chunk))
kill_nbdkit "$sock"
start_nbdkit "$sock" $store $(takeover_args) "${slow[@]}"
check "after kill -9 the FUA requests are in the store"
"$VERIFY" --socket "$sock" \
    --expect-pattern $((2 * M + 5)) $((chunk + 7)) 5 \
    --expect-pattern $((4 * M)) 1000 3 \
    --expect-zero $((4 * M + 1000)) $((2 * chunk)) \
    --expect-pattern $((4 * M + 1000 + 2 * chunk)) \
                     $((M - 1000 - 2 * chunk)) 3 \
    --expect-zero $((5 * M)) $((4 * chunk)) \
    --expect-pattern $((5 * M + 4 * chunk)) $((M - 4 * chunk)) 3

echo "=== 2. unflushed data survives a clean stop (SIGTERM) ==="
check "write, zero and trim without flush, stop with SIGTERM"
"$VERIFY" --socket "$sock" \
    --write-pattern 50000 $((M + 3)) 6 \
    --write-pattern $((size - 2 * chunk - 1)) $((2 * chunk + 1)) 7 \
    --write-pattern $((4 * M)) $((4 * chunk)) 3 \
    --zero $((4 * M)) $((chunk + 1)) \
    --trim $((4 * M + chunk + 1)) $((3 * chunk - 1))
stop_nbdkit "$sock"
start_nbdkit "$sock" $store "${slow[@]}"
check "after SIGTERM and restart every write reads back"
"$VERIFY" --socket "$sock" \
    --expect-pattern 0 50000 1 \
    --expect-pattern 50000 $((M + 3)) 6 \
    --expect-pattern $((size - 2 * chunk - 1)) $((2 * chunk + 1)) 7 \
    --expect-zero $((4 * M)) $((4 * chunk)) \
    --expect-pattern $((4 * M + 4 * chunk)) $((M - 4 * chunk)) 3
check "no unflushed-writes warning after a client that only read"
log=${_nbdkit_log[$sock]}
stop_nbdkit "$sock"
! grep -q 'with writes it had not flushed' "$log" ||
    fail "a warning about unflushed writes, though the client only read"
check "SIGTERM while a client is connected with unflushed writes: warned, stored"
start_nbdkit "$sock" $store "${slow[@]}"
log=${_nbdkit_log[$sock]}
"$VERIFY" --socket "$sock" --write-pattern $((3 * M)) 4096 8 --sleep 4 \
    > "$tmp/held.out" 2>&1 &
held=$!
for (( i = 0; i < 100; ++i )); do
    grep -q 'wrote' "$tmp/held.out" && break
    sleep 0.1
done
# nbdkit 1.32 does not call .close for a connection still open when it
# quits: the warning must come from the shutdown itself.
stop_nbdkit "$sock"
wait "$held" || true
grep -q 'nbdkit was stopped while a client was connected with writes it had not flushed' "$log" ||
    fail "no warning that a connected client had unflushed writes at SIGTERM"
start_nbdkit "$sock" $store "${slow[@]}"
"$VERIFY" --socket "$sock" --expect-pattern $((3 * M)) 4096 8
check "random I/O from 4 threads without any flush or FUA, then SIGTERM"
"$VERIFY" --socket "$sock" --save "$tmp/before" 0 $size
"$RANDOM_IO" --socket "$sock" --threads 4 --connections 2 --ops 800 \
    --no-flush --offset $((8 * M)) --length $((16 * M)) \
    --shadow-in "$tmp/before" --shadow-out "$tmp/after"
stop_nbdkit "$sock"
start_nbdkit "$sock" $store "${slow[@]}"
check "after SIGTERM and restart the disk matches the shadow"
"$RANDOM_IO" --socket "$sock" --verify-only --shadow-in "$tmp/after"
stop_nbdkit "$sock"

echo "=== 3. kill -9 during uploads: chunks old or new, never torn ==="
fast=(cache-size=16M upload-delay=0 connections=4)
start_nbdkit "$sock" $store "${fast[@]}"
check "write 8M of pattern 8, flush, overwrite with pattern 9, kill -9"
"$VERIFY" --socket "$sock" \
    --write-pattern $((16 * M)) $((8 * M)) 8 --flush \
    --write-pattern $((16 * M)) $((8 * M)) 9
kill_nbdkit "$sock"
start_nbdkit "$sock" $store $(takeover_args) "${fast[@]}"
check "every chunk of the range holds all of pattern 8 or all of 9"
"$VERIFY" --socket "$sock" \
    --expect-either $((16 * M)) $((8 * M)) 8 9 $chunk
stop_nbdkit "$sock"

echo "$0: PASS"
