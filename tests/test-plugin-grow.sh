#!/usr/bin/env bash
# s3chunk tests: growing a volume with a larger size=.  The old data stays,
# the new space reads as zeroes (and is a hole), the new size sticks when
# size= is left out, and a smaller size= is refused with a reason.  A volume
# whose size is not a multiple of the chunk size grows through its partial
# last chunk.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires_test_programs
make_tmpdir

sock=$tmp/sock
K=1024
M=$((1024 * 1024))
chunk=$((64 * K))
store=$(store_args vol)

check "create 32M, write at the start and at the very end"
start_nbdkit "$sock" $store size=32M chunk-size=64K
"$VERIFY" --socket "$sock" --size $((32 * M)) \
    --write-pattern 1000 $((chunk + 5)) 1 \
    --write-pattern $((32 * M - 100000)) 100000 2
stop_nbdkit "$sock"

check "restart with size=64M: the disk is 64M, old data intact"
start_nbdkit "$sock" $store size=64M
"$VERIFY" --socket "$sock" --size $((64 * M)) \
    --expect-zero 0 1000 \
    --expect-pattern 1000 $((chunk + 5)) 1 \
    --expect-pattern $((32 * M - 100000)) 100000 2 \
    --expect-zero $((1000 + chunk + 5)) $((32 * M - 100000 - 1000 - chunk - 5))
check "the new space reads as zeroes and is a hole"
"$VERIFY" --socket "$sock" \
    --expect-zero $((32 * M)) $((32 * M)) \
    --expect-hole $((32 * M)) $((32 * M))
check "write across the old end and at the new end"
"$VERIFY" --socket "$sock" \
    --write-pattern $((32 * M - 10)) 20 3 \
    --write-pattern $((64 * M - 5000)) 5000 4
stop_nbdkit "$sock"

check "restart without size=: still 64M, everything intact"
start_nbdkit "$sock" $store
"$VERIFY" --socket "$sock" --size $((64 * M)) \
    --expect-pattern 1000 $((chunk + 5)) 1 \
    --expect-pattern $((32 * M - 100000)) $((100000 - 10)) 2 \
    --expect-pattern $((32 * M - 10)) 20 3 \
    --expect-zero $((32 * M + 10)) $((32 * M - 5000 - 10)) \
    --expect-pattern $((64 * M - 5000)) 5000 4
stop_nbdkit "$sock"

check "restart with the same size=64M: accepted, nothing changes"
start_nbdkit "$sock" $store size=64M
"$VERIFY" --socket "$sock" --size $((64 * M)) \
    --expect-pattern $((64 * M - 5000)) 5000 4
stop_nbdkit "$sock"

check "restart with size=16M (shrink): refused, saying why"
nbdkit_refuses 'size=.*smaller.*(shrink|destroy|data)' $store size=16M
check "after the refused shrink the volume is still 64M and intact"
start_nbdkit "$sock" $store
"$VERIFY" --socket "$sock" --size $((64 * M)) \
    --expect-pattern $((32 * M - 10)) 20 3 \
    --expect-pattern $((64 * M - 5000)) 5000 4
stop_nbdkit "$sock"

echo "=== a size that is not a multiple of the chunk size ==="
store2=$(store_args odd)
odd=$((8 * M + 512))
check "create $odd bytes (a 512-byte last chunk), fill the last chunk"
start_nbdkit "$sock" $store2 size=$odd chunk-size=64K
"$VERIFY" --socket "$sock" --size $odd \
    --write-pattern $((8 * M - 1000)) 1512 5 --flush
"$VERIFY" --socket "$sock" --save "$tmp/odd.before" 0 $odd
stop_nbdkit "$sock"

check "grow to 9M: the old last chunk's tail and the new space read as zeroes"
start_nbdkit "$sock" $store2 size=9M
"$VERIFY" --socket "$sock" --size $((9 * M)) \
    --expect-pattern $((8 * M - 1000)) 1512 5 \
    --expect-zero $odd $((9 * M - odd)) \
    --expect-hole $((8 * M + chunk)) $((M - chunk))
check "random I/O across the old end, then restart and verify"
"$RANDOM_IO" --socket "$sock" --threads 2 --ops 400 \
    --offset $((7 * M)) --length $((2 * M)) \
    --shadow-in "$tmp/odd.before" --shadow-out "$tmp/odd.after"
stop_nbdkit "$sock"
start_nbdkit "$sock" $store2
"$RANDOM_IO" --socket "$sock" --size $((9 * M)) --verify-only \
    --shadow-in "$tmp/odd.after"
stop_nbdkit "$sock"

echo "$0: PASS"
