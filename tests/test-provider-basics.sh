#!/usr/bin/env bash
# s3chunk tests: what each provider emulator mode (tests/s3-provider-run)
# must make the plugin do, seen from outside:
#  - the dialect the start-up probe finds (or provider= gives), in the
#    debug log, and "s3chunk info" showing the given one;
#  - aws: racing starters meet 409 ConditionalRequestConflict, exactly one
#    serves;
#  - skew: one warning about the clock, then everything works;
#  - b2: refused, naming the missing feature and lock=none; lock=none then
#    serves and keeps the data; provider=b2 refuses without probing.
S3CHUNK_TEST_VERBOSE=1  # the debug lines say the dialect
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

mode=${S3CHUNK_TEST_PROVIDER:-}
[ -n "$mode" ] ||
    { echo "$0: SKIP: run by tests/s3-provider-run"; exit 77; }
requires nbdkit --version
requires nbdinfo --version
requires_test_programs
make_tmpdir

sock=$tmp/sock
store=$(store_args vol)
emu_log=${S3CHUNK_TEST_EMULATOR_LOG:-/dev/null}

if [ "$mode" = b2 ]; then
    check "probed: refused, naming what is missing and lock=none"
    nbdkit_refuses "the store enforces no conditional write .*add lock=none" \
        $store size=8M
    check "provider=b2: refused, naming B2"
    nbdkit_refuses "Backblaze B2's S3-compatible API has no conditional PutObject.*add lock=none" \
        $store size=8M provider=b2
    check "lock=none: serves, with its warning, and the data comes back"
    start_nbdkit "$sock" $store size=8M chunk-size=65536 lock=none
    grep -q "warning: lock=none: NO VOLUME LOCK" "${_nbdkit_log[$sock]}" ||
        fail "no lock=none warning"
    "$VERIFY" --socket "$sock" --write-pattern 0 200000 3 --flush
    stop_nbdkit "$sock"
    start_nbdkit "$sock" $store lock=none
    "$VERIFY" --socket "$sock" --expect-pattern 0 200000 3
    stop_nbdkit "$sock"
    echo "$0: PASS"
    exit 0
fi

case $mode in
    gcs) want=gcs ;;
    oss) want=oss ;;
    none) want=standard-bare ;;
    *) want=standard ;;
esac
check "the probe finds provider $want"
start_nbdkit "$sock" $store size=8M chunk-size=65536 lease=3
log=${_nbdkit_log[$sock]}
grep -q "conditional writes spelt as provider $want (" "$log" ||
    { grep -i "provider\|dialect" "$log"; fail "not provider $want"; }
"$VERIFY" --socket "$sock" --write-pattern 0 300000 5 --flush
stop_nbdkit "$sock"
if [ "$mode" = skew ]; then
    check "the clock was corrected, and said so once"
    [ "$(grep -c "RequestTimeTooSkewed: this machine's clock is" "$log")" -eq 1 ] ||
        { grep RequestTimeTooSkewed "$log"; fail "not one clock warning"; }
fi

check "provider= given: used without probing, shown by s3chunk info"
given=$want
case $want in standard) given=aws ;; standard-bare) given=ceph ;; esac
start_nbdkit "$sock" $store lease=3 provider=$given
grep -q "conditional writes spelt as provider $given (" \
    "${_nbdkit_log[$sock]}" || fail "provider=$given not used"
"$VERIFY" --socket "$sock" --expect-pattern 0 300000 5
stop_nbdkit "$sock"
"$S3CHUNK" info $store provider=$given >"$tmp/info" ||
    { cat "$tmp/info"; fail "s3chunk info failed"; }
grep -q "^provider: *$given\$" "$tmp/info" || { cat "$tmp/info"; fail "info"; }

if [ "$mode" = aws ]; then
    check "racing starters: 409 ConditionalRequestConflict, one serves"
    : >"$tmp/c0"
    before=$(grep -c -- "-> 409" "$emu_log" || true)
    pids=()
    for (( i = 0; i < 4; ++i )); do
        "${nbdkit_cmd[@]}" -f -U "$sock$i" "$PLUGIN" $store lease=3 \
            >"$tmp/race$i.log" 2>&1 &
        pids+=($!)
    done
    sleep 4
    alive=0
    for (( i = 0; i < 4; ++i )); do
        if kill -0 "${pids[i]}" 2>/dev/null && ! _is_zombie "${pids[i]}"; then
            alive=$((alive + 1)); kill -TERM "${pids[i]}"
        fi
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ "$alive" -eq 1 ] || fail "$alive instances served"
    after=$(grep -c -- "-> 409" "$emu_log" || true)
    echo "409 answers: $((after - before))"
    [ "$after" -gt "$before" ] || fail "no 409 ConditionalRequestConflict seen"
fi
echo "$0: PASS"
