#!/usr/bin/env bash
# s3chunk tests: random parallel I/O from several threads and connections,
# every read checked against a shadow copy; then a clean restart, and the
# whole disk must match the shadow (what the store kept).  Small chunks and
# a small cache force eviction, reloads and writer back-pressure.  Regions
# never written must stay thin: no chunk object, a hole in block status.
#
# S3CHUNK_TEST_OPS (operations per thread, default 700) and
# S3CHUNK_TEST_SEED make longer or reproducible runs.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires_test_programs
make_tmpdir

ops=${S3CHUNK_TEST_OPS:-700}
seed_args=()
[ -z "${S3CHUNK_TEST_SEED:-}" ] || seed_args=(--seed "$S3CHUNK_TEST_SEED")
sock=$tmp/sock

# run_config NAME SIZE CHUNK THREADS CONNECTIONS OPS PLUGIN-PARAM...
run_config ()
{
    local name=$1 size=$2 chunk=$3 threads=$4 conns=$5 ops=$6
    shift 6
    local nchunks=$(( size / chunk ))
    # Never written: chunks 0-2 and the last 8 chunks.
    local area_off=$(( 3 * chunk + 12345 ))
    local area_end=$(( size - 8 * chunk ))
    local first=$(( area_off / chunk )) last=$(( (area_end - 1) / chunk ))

    echo
    echo "=== config $name: size $size, chunk $chunk, $threads threads on" \
         "$conns connections, $* ==="
    start_nbdkit "$sock" $(store_args "$name") size=$size chunk-size=$chunk "$@"

    check "$name: random I/O, every read checked against the shadow"
    "$RANDOM_IO" --socket "$sock" --size "$size" --threads "$threads" \
        --connections "$conns" --ops "$ops" "${seed_args[@]}" \
        --offset $area_off --length $(( area_end - area_off )) \
        --shadow-out "$tmp/$name.shadow"
    stop_nbdkit "$sock"

    if store_can_list; then
        check "$name: chunk objects only for chunks $first..$last (thin)"
        local n bad
        n=$(store_chunk_count "$name")
        bad=$(store_chunks "$name" |
              awk -v f=$first -v l=$last '$1 < f || $1 > l' | head -n 5)
        echo "$n chunk object(s) of $nchunks chunks"
        [ -z "$bad" ] || fail "$name: chunk objects outside the written area: $bad"
        [ "$n" -gt 0 ] || fail "$name: no chunk object at all after writes"
    fi

    check "$name: after a clean restart the disk matches the shadow"
    start_nbdkit "$sock" $(store_args "$name") "$@"
    "$RANDOM_IO" --socket "$sock" --size "$size" --verify-only \
        --shadow-in "$tmp/$name.shadow"
    check "$name: never-written areas are holes in block status"
    "$VERIFY" --socket "$sock" \
        --expect-hole 0 $(( 3 * chunk )) \
        --expect-hole $(( size - 8 * chunk )) $(( 8 * chunk )) \
        --expect-zero 0 $(( 3 * chunk )) \
        --expect-zero $(( size - 8 * chunk )) $(( 8 * chunk ))

    check "$name: more random I/O over the stored volume (loads, RMW)"
    "$RANDOM_IO" --socket "$sock" --threads "$threads" \
        --connections "$conns" --ops $(( ops / 2 )) "${seed_args[@]}" \
        --offset $area_off --length $(( area_end - area_off )) \
        --shadow-in "$tmp/$name.shadow" --shadow-out "$tmp/$name.shadow2"
    stop_nbdkit "$sock"

    check "$name: after a second restart the disk matches the new shadow"
    start_nbdkit "$sock" $(store_args "$name") "$@"
    "$RANDOM_IO" --socket "$sock" --verify-only \
        --shadow-in "$tmp/$name.shadow2"
    stop_nbdkit "$sock"
    rm -f "$tmp/$name.shadow" "$tmp/$name.shadow2"
}

# Many small chunks, zstd, a cache of a quarter of the disk.
run_config zstd-64k $((64 * 1024 * 1024)) $((64 * 1024)) 4 2 $ops \
    cache-size=16M connections=4 upload-delay=0.1
# No compression, uploads at once, one connection per thread.
run_config raw-128k $((48 * 1024 * 1024)) $((128 * 1024)) 4 4 $ops \
    compression=none cache-size=16M connections=2 upload-delay=0
# Default 1M chunks: a 16M cache holds 16 of them, so writers wait for
# uploads (back-pressure); the default upload delay.  Requests are up to 4
# chunks long here: fewer of them.
run_config zstd-1m $((96 * 1024 * 1024)) $((1024 * 1024)) 4 2 $((ops / 4)) \
    level=3 cache-size=16M

echo "$0: PASS"
