#!/usr/bin/env bash
# s3chunk tests: zero and trim.  Whole chunks lose their object (thin
# provisioning gives the space back) and become holes in block status;
# partial zero/trim reads as zeroes while the rest of the chunk keeps its
# data; FUA zero and trim are durable without a flush (kill -9); an
# all-zero chunk written as data is no object either.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires_test_programs
make_tmpdir

sock=$tmp/sock
K=1024
M=$((1024 * 1024))
chunk=$((64 * K))
size=$((16 * M))
store=$(store_args vol)
# Uploads only when a flush or FUA asks: what the store holds is then
# exactly what was flushed.
params=(upload-delay=60 cache-size=16M)

c () { echo $(( $1 * chunk )); }

# expect_chunks DESCRIPTION INDEX...: the store holds exactly these chunk
# objects.
expect_chunks ()
{
    local what=$1 want got
    shift
    if ! store_can_list; then
        echo "skipped (store cannot be listed): $what"
        return 0
    fi
    want=$(printf '%s\n' "$@" | sed '/^$/d' | sort -n | tr '\n' ' ')
    got=$(store_chunks vol | tr '\n' ' ')
    if [ "$want" != "$got" ]; then
        echo "$0: FAIL: $what"
        echo "  expected chunk objects: ${want:-none}"
        echo "  store has:              ${got:-none}"
        exit 1
    fi
    echo "ok: $what: chunk objects ${got:-none}"
}

start_nbdkit "$sock" $store size=$size chunk-size=64K "${params[@]}"

check "write chunks 0-15 in full, flush: 16 objects"
"$VERIFY" --socket "$sock" --write-pattern 0 $(c 16) 1 --flush
expect_chunks "after writing chunks 0-15" $(seq 0 15)
"$VERIFY" --socket "$sock" --expect-data 0 $(c 16) --expect-hole $(c 16) $((size - $(c 16)))

check "trim whole chunks 2-5, flush: their objects are deleted"
"$VERIFY" --socket "$sock" --trim $(c 2) $(c 4) --flush
expect_chunks "after trimming chunks 2-5" 0 1 $(seq 6 15)
"$VERIFY" --socket "$sock" \
    --expect-pattern 0 $(c 2) 1 \
    --expect-zero $(c 2) $(c 4) \
    --expect-pattern $(c 6) $(c 10) 1 \
    --expect-hole $(c 2) $(c 4) \
    --expect-data 0 $(c 2) \
    --expect-data $(c 6) $(c 10)

check "partial trim inside chunk 6: zeroes there, the rest keeps its data"
"$VERIFY" --socket "$sock" --trim $(( $(c 6) + 100 )) 900 --flush \
    --expect-pattern $(c 6) 100 1 \
    --expect-zero $(( $(c 6) + 100 )) 900 \
    --expect-pattern $(( $(c 6) + 1000 )) $(( chunk - 1000 )) 1 \
    --expect-data $(c 6) $chunk
expect_chunks "chunk 6 keeps its object" 0 1 $(seq 6 15)

check "trim from inside chunk 7 to inside chunk 10: 8 and 9 disappear"
"$VERIFY" --socket "$sock" --trim $(( $(c 7) + 500 )) $(( $(c 3) - 200 )) --flush \
    --expect-pattern $(c 7) 500 1 \
    --expect-zero $(( $(c 7) + 500 )) $(( $(c 3) - 200 )) \
    --expect-pattern $(( $(c 10) + 300 )) $(( chunk - 300 )) 1 \
    --expect-hole $(c 8) $(c 2) \
    --expect-data $(c 7) $chunk \
    --expect-data $(c 10) $chunk
expect_chunks "after the unaligned trim" 0 1 6 7 10 11 12 13 14 15

check "zero with FUA (no flush): whole chunk 11 loses its object at once"
"$VERIFY" --socket "$sock" --fua --zero $(c 11) $chunk
expect_chunks "after FUA zero of chunk 11" 0 1 6 7 10 12 13 14 15
check "zero with FUA of part of chunk 12, trim with FUA of chunk 13"
"$VERIFY" --socket "$sock" \
    --fua --zero $(( $(c 12) + 4096 )) 8192 \
    --fua --trim $(c 13) $chunk
expect_chunks "after FUA trim of chunk 13" 0 1 6 7 10 12 14 15
kill_nbdkit "$sock"

check "after kill -9 the FUA zero and trim are in the store"
start_nbdkit "$sock" $store $(takeover_args) "${params[@]}"
"$VERIFY" --socket "$sock" \
    --expect-zero $(c 11) $chunk \
    --expect-pattern $(c 12) 4096 1 \
    --expect-zero $(( $(c 12) + 4096 )) 8192 \
    --expect-pattern $(( $(c 12) + 12288 )) $(( chunk - 12288 )) 1 \
    --expect-zero $(c 13) $chunk \
    --expect-hole $(c 11) $chunk \
    --expect-hole $(c 13) $chunk \
    --expect-data $(c 12) $chunk

check "trim of never-written chunks: still holes, no object"
"$VERIFY" --socket "$sock" --trim $(c 100) $(c 10) --zero $(( $(c 120) + 7 )) 1000 \
    --flush --expect-hole $(c 100) $(c 10) --expect-zero $(c 100) $(c 30)
expect_chunks "after trimming never-written chunks" 0 1 6 7 10 12 14 15

check "an all-zero chunk written as data, flushed: no object"
head -c $chunk /dev/zero > "$tmp/zeroes"
"$VERIFY" --socket "$sock" --write-file "$tmp/zeroes" $(c 14) --flush \
    --expect-zero $(c 14) $chunk
expect_chunks "after writing zeroes over chunk 14" 0 1 6 7 10 12 15
check "a chunk zeroed in two halves, flushed: no object"
"$VERIFY" --socket "$sock" \
    --zero $(c 15) $(( chunk / 2 )) \
    --zero $(( $(c 15) + chunk / 2 )) $(( chunk / 2 )) --flush \
    --expect-zero $(c 15) $chunk
expect_chunks "after zeroing chunk 15 in halves" 0 1 6 7 10 12
stop_nbdkit "$sock"

check "after a clean restart: holes where trimmed, data where kept"
start_nbdkit "$sock" $store "${params[@]}"
"$VERIFY" --socket "$sock" \
    --expect-pattern 0 $(c 2) 1 \
    --expect-zero $(c 2) $(c 4) \
    --expect-hole $(c 2) $(c 4) \
    --expect-hole $(c 8) $(c 2) \
    --expect-hole $(c 13) $(( size - $(c 13) )) \
    --expect-data 0 $(c 2)

check "trim the whole disk: every object goes"
"$VERIFY" --socket "$sock" --trim 0 $size --flush \
    --expect-zero 0 $size --expect-hole 0 $size
expect_chunks "after trimming the whole disk"
stop_nbdkit "$sock"

echo "$0: PASS"
