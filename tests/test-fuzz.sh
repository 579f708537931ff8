#!/usr/bin/env bash
# s3chunk tests: the libFuzzer targets (fuzz/), each run for a bounded time
# (S3CHUNK_FUZZ_SECONDS, default 15) from the seed corpus in fuzz/corpus/:
# fuzz-codec (codec_decode on arbitrary bytes: never a crash, success only
# for a valid object) and fuzz-s3-xml (the S3 XML parsers).  A crash, a
# leak, a sanitizer report or a broken promise fails the test and prints
# the input that did it (hex), also kept as fuzz/crash-* in the build tree.
# Skips when configure found no clang with -fsanitize=fuzzer.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

skip_if_valgrind "(the targets carry their own sanitizers)"
make_tmpdir
secs=${S3CHUNK_FUZZ_SECONDS:-15}
seed=${S3CHUNK_FUZZ_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 + 1 ))}
echo "$0: libFuzzer seed $seed (replay with S3CHUNK_FUZZ_SEED=$seed)"

for t in codec s3-xml; do
    bin=$abs_top_builddir/fuzz/fuzz-$t
    if [ ! -x "$bin" ]; then
        echo "$0: SKIP: $bin not built (no clang with -fsanitize=fuzzer?" \
             "install clang and libclang-rt-14-dev, re-run configure)"
        exit 77
    fi
done

for t in codec s3-xml; do
    bin=$abs_top_builddir/fuzz/fuzz-$t
    corpus=$abs_top_srcdir/fuzz/corpus/$t
    [ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || fail "no seed corpus in $corpus"
    mkdir -p "$tmp/new-$t"
    check "fuzz-$t: the seed corpus, then $secs s of fuzzing"
    rc=0
    # New inputs go to $tmp (the corpus in the source tree is read only).
    # ASAN_OPTIONS from the environment would also apply: set ours.
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -seed="$seed" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$tmp/crash-$t-" \
        "$tmp/new-$t" "$corpus" > "$tmp/fuzz-$t.log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done|INFO: seed corpus' \
        "$tmp/fuzz-$t.log" || true
    if [ "$rc" -ne 0 ] || ls "$tmp"/crash-"$t"-* >/dev/null 2>&1; then
        tail -n 60 "$tmp/fuzz-$t.log"
        for a in "$tmp"/crash-"$t"-*; do
            [ -e "$a" ] || continue
            mkdir -p "$abs_top_builddir/fuzz"
            cp "$a" "$abs_top_builddir/fuzz/"
            echo "$0: the input ($(stat -c %s "$a") bytes), kept as" \
                 "fuzz/$(basename "$a"); replay: fuzz/fuzz-$t fuzz/$(basename "$a")"
            od -A d -t x1 "$a" | head -n 64
        done
        fail "fuzz-$t failed (status $rc, seed $seed)"
    fi
    echo "ok: fuzz-$t: $(grep -c . <(ls "$tmp/new-$t")) new corpus inputs, no failure"
done
echo "$0: PASS"
