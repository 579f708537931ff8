#!/usr/bin/env bash
# s3chunk tests: one writer, even when the network lies
# (docs/ARCHITECTURE.md rule 6: past its write deadline a holder sends
# nothing that can change an object, and aborts what is under way).
#
# Instance A talks to the gateway through tests/s3-fault-proxy (proxy A),
# instance B, the taker, through a second proxy that only logs (proxy B).
# Both proxies stamp every request with the wall-clock time it was
# forwarded and answered, on the same machine's clock, so the order of A's
# and B's requests is seen from the store's side.  lease=6: A renews every
# 2 s and must stop writing 4 s after its last renewal was sent; B takes
# the lock only once the store's clock says 6 s passed without renewal.
#
#  a. Partition.  A writes P1 to chunks 0-3 and flushes.  A rewrites chunk
#     2 with P2 and its upload is caught in the network (proxy A: hold),
#     then proxy A holds everything (partition: the renewals too).  A must
#     fence itself (writes and flushes fail with EIO, reads of cached
#     chunks work).  B takes the stale lock, writes P3 to chunk 2, flushes.
#     The network heals: proxy A forwards what A still waits for.
#  b. Suspend.  The same, but A is frozen (SIGSTOP) for longer than the
#     lease while its upload of chunk 2 (P2) is held in the network, with
#     a partial write of chunk 5 dirty in its cache; B takes over, writes
#     P3 to chunk 2; then A resumes (SIGCONT), and only then does the
#     network deliver what A still waits for.  (Delivering it while A is
#     frozen would be a middlebox that keeps what its sender cannot take
#     back: no sender can prevent that -- /__release?deliver=all shows
#     it -- and the lease/3 margin is all that covers it.)
# After each: A and B stop, a fresh instance reads the volume straight on
# the gateway.  Checks: chunk 2 holds B's P3 (not A's P2), the other
# chunks P1, chunk 5 zeroes (b: A never flushed it); and proxy A's log
# shows no request of A that can change a chunk (PUT, DELETE, POST
# ?delete) forwarded, or answered, after B's first mutating request
# reached the gateway, and no renewal of A's accepted (2xx) after it.
# Patterns are nbd-verify seeds: P1=11 P2=12 P3=13, chunk 5: 15.
# S3CHUNK_PARTITION_DELIVER=all makes proxy A deliver even what A gave up
# (reset): the residual risk; expected to fail whatever the plugin does.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

requires nbdinfo --version
s3_start_cluster
s3_start_proxy
PA=$S3_PROXY_URL
LOGA=$S3_PROXY_LOG
M=$((1024 * 1024))
LEASE=6
params=(size=16M chunk-size=1M lease=$LEASE retry-time=60 request-timeout=30
        upload-delay=3)
sockA=$tmp/sockA sockB=$tmp/sockB sockC=$tmp/sockC
bad=()

# Proxy B: mode none, for its log.
LOGB=$tmp/proxy-b.log
/usr/bin/python3 "$S3_PROXY" --upstream "$S3_ENDPOINT" \
    --port-file "$tmp/proxyb.port" --log "$LOGB" > /dev/null 2> "$tmp/proxyb.err" &
proxyb_pid=$!
cleanup_fn kill "$proxyb_pid"
for (( i = 0; i < 100; ++i )); do [ -s "$tmp/proxyb.port" ] && break; sleep 0.1; done
[ -s "$tmp/proxyb.port" ] || { cat "$tmp/proxyb.err"; fail "proxy B did not start"; }
PB=http://127.0.0.1:$(cat "$tmp/proxyb.port")

# At exit, before nbdkit stops: wake a frozen A and let held requests go,
# so that nothing hangs.
wake_a () { [ -z "${pidA:-}" ] || kill -CONT "$pidA" 2>/dev/null; }
release_all () { curl -sS -m 5 -o /dev/null "$PA/__release" 2>/dev/null; return 0; }
cleanup_fn release_all
cleanup_fn wake_a

now () { date +%s.%N | cut -c1-14; }
since () { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
proxy_held () { proxy_stat held; }
wait_held ()
{
    for (( i = 0; i < 200; ++i )); do
        [ "$(proxy_held)" -ge 1 ] && return 0
        sleep 0.1
    done
    fail "no request of A held within 20 s"
}

# expect_eio WHAT VERIFY-ARGS...: the command must fail with EIO, in a
# bounded time (it must not wait for the network).
expect_eio ()
{
    local what=$1 rc=0 t0=$SECONDS
    shift
    timeout 90 "$VERIFY" --socket "$sockA" "$@" > "$tmp/eio.out" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        cat "$tmp/eio.out"; echo "FAIL: A accepted a $what after it lost the lock"
        bad+=("A accepted a $what")
    elif ! grep -q 'Input/output error' "$tmp/eio.out"; then
        cat "$tmp/eio.out"; echo "FAIL: A's $what failed, but not with EIO (rc $rc)"
        bad+=("A's $what: not EIO")
    else
        echo "ok: A's $what fails with EIO ($((SECONDS - t0)) s)"
    fi
}

# start_b VOL: start B on VOL through proxy B, once the store says A's
# lock is stale (B is refused while it is fresh: try again, 60 s at most).
start_b ()
{
    local vol=$1 t
    for (( t = 0; t < 30; ++t )); do
        if start_nbdkit "$sockB" $(s3_args "$vol/" "$PB") "${params[@]}" \
                > "$tmp/startb.out" 2>&1; then
            cat "$tmp/startb.out"
            grep "took over the stale lock" "${_nbdkit_log[$sockB]}" ||
                fail "B started without taking over A's lock"
            return 0
        fi
        grep -q 'the volume is in use' "$tmp/startb.out" ||
            { cat "$tmp/startb.out"; fail "B did not start"; }
        echo "B refused (A's lock still fresh by the store's clock), again in 2 s"
        sleep 2
    done
    fail "B could not take A's lock within 60 s"
}

# first_mutation LOG VOL: the time B's first request that can change an
# object of VOL was forwarded.
first_mutation ()
{
    /usr/bin/python3 - "$1" "/$S3_BUCKET/$2/" <<'EOF'
import sys
t = None
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 5 or not f[1].startswith("seq=") or \
            f[3] not in ("PUT", "DELETE", "POST") or \
            not f[4].startswith(sys.argv[2]):
        continue
    kv = dict(x.split("=", 1) for x in f[5:] if "=" in x)
    if kv.get("fwd", "-") != "-":
        v = float(kv["fwd"])
        t = v if t is None or v < t else t
print("%.3f" % t if t is not None else "none")
EOF
}

# a_after LOG VOL TB: A's requests after TB that changed, or may have
# changed, an object of VOL; prints them, exits 1 if any.
a_after ()
{
    /usr/bin/python3 - "$1" "/$S3_BUCKET/$2/" "/$S3_BUCKET?delete" "$3" <<'EOF'
import sys
log, pfx, mdel, tb = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
bad = 0
for line in open(log):
    f = line.split()
    if len(f) < 5 or not f[1].startswith("seq=") or \
            f[3] not in ("PUT", "DELETE", "POST"):
        continue
    path = f[4]
    if not (path.startswith(pfx) or path.startswith(mdel)):
        continue
    kv = dict(x.split("=", 1) for x in f[5:] if "=" in x)
    if kv.get("fwd", "-") == "-":
        continue                        # never reached the gateway
    fwd = float(kv["fwd"])
    ans = float(kv["ans"]) if kv.get("ans", "-") != "-" else None
    if path == pfx + "lock":
        # A's renewals are conditional on A's own etag: after B's
        # takeover the gateway must refuse them.
        if fwd >= tb and kv.get("up", "-").startswith("2"):
            print("A's lock write accepted after B's first write "
                  "(%+.3f s): %s" % (fwd - tb, line.rstrip()))
            bad = 1
        continue
    if fwd >= tb or ans is None or ans >= tb:
        print("A's %s forwarded %+.3f s after B's first write, answered "
              "%s: %s" % (f[3], fwd - tb,
                          "never" if ans is None else "%+.3f s" % (ans - tb),
                          line.rstrip()))
        bad = 1
sys.exit(bad)
EOF
}

# stop_a: A is fenced; losing its unflushed writes is expected, so not
# stop_nbdkit (which fails on "could not be stored").
stop_a ()
{
    local rc=0
    kill -TERM "$pidA"
    _wait_exit "$pidA" 90 || rc=$?
    unset "_nbdkit_pid[$sockA]"
    echo "A exited with status $rc"
    grep -E 'could not be stored' "$logA" || true
    pidA=
}

# verify_store VOL WHAT EXTRA-VERIFY-ARGS...: a fresh instance straight on
# the gateway; chunk 2 must hold B's P3, chunks 0, 1, 3 A's P1.
verify_store ()
{
    local vol=$1 what=$2
    shift 2
    start_nbdkit "$sockC" $(s3_args "$vol/") "${params[@]}"
    if "$VERIFY" --socket "$sockC" --expect-pattern $((2 * M)) $M 13; then
        echo "ok: $what: chunk 2 holds B's data (P3)"
    else
        if "$VERIFY" --socket "$sockC" --expect-pattern $((2 * M)) $M 12 2>/dev/null; then
            echo "FAIL: $what: chunk 2 holds A's P2: A's write landed after B's and overwrote it"
        else
            echo "FAIL: $what: chunk 2 holds neither B's P3 nor A's P2"
        fi
        bad+=("$what: chunk 2 lost B's data")
    fi
    "$VERIFY" --socket "$sockC" --expect-pattern 0 $((2 * M)) 11 \
        --expect-pattern $((3 * M)) $M 11 "$@" ||
        bad+=("$what: other chunks")
    stop_nbdkit "$sockC"
}

report_a_log ()
{
    echo "A's lock and fence messages:"
    grep -E 'lock:|fenc|failed state' "$logA" | sed 's/^/    /' | head -n 20
}

# --------------------------------------------------------------------------
run ()
{
    local scenario=$1 vol=$2 tpart t_b t_rel tstop
    echo
    echo "=== $scenario: A writes P1 to chunks 0-3 and flushes ==="
    proxy_rule "mode=none"
    start_nbdkit "$sockA" $(s3_args "$vol/" "$PA") "${params[@]}"
    pidA=${_nbdkit_pid[$sockA]}
    logA=${_nbdkit_log[$sockA]}
    "$VERIFY" --socket "$sockA" --write-pattern 0 $((4 * M)) 11 --flush

    echo "=== $scenario: A rewrites chunk 2 (P2); its upload is held in the network ==="
    proxy_stats_reset
    proxy_rule "mode=hold&method=PUT&path=/$vol/chunks/0000000000000002\$"
    "$VERIFY" --socket "$sockA" --write-pattern $((2 * M)) $M 12
    wait_held
    grep "HELD PUT /$S3_BUCKET/$vol/chunks/0000000000000002" "$LOGA" | tail -n 1

    if [ "$scenario" = partition ]; then
        proxy_rule "mode=partition"
        tpart=$(now)
        echo "partition from $tpart"
        check "A fences itself within the lease (its renewals are held)"
        for (( i = 0; i < 10 * (LEASE + 10); ++i )); do
            grep -q "the volume lock is lost" "$logA" && break
            sleep 0.1
        done
        grep -q "the volume lock is lost" "$logA" ||
            { echo "FAIL: A did not fence itself"; bad+=("partition: A did not fence"); }
        echo "A fenced after about $(since "$tpart") s of partition"
        expect_eio write --write-pattern 4096 8192 99
        expect_eio flush --flush
        check "A still serves reads of what it caches (no request needed)"
        timeout 60 "$VERIFY" --socket "$sockA" --expect-pattern 0 $((2 * M)) 11 \
            --expect-pattern $((2 * M)) $M 12 --expect-pattern $((3 * M)) $M 11 ||
            bad+=("partition: A's reads")
        # Lease + margin since the partition began (B retries anyway).
        sleep 3
    else
        "$VERIFY" --socket "$sockA" --write-pattern $((5 * M + 4096)) 8192 15
        kill -STOP "$pidA"
        tstop=$(now)
        echo "A stopped (SIGSTOP) at $tstop, chunk 5 dirty in its cache"
        sleep $((LEASE + 2))
    fi

    echo "=== $scenario: B takes the stale lock, writes P3 to chunk 2, flushes ==="
    start_b "$vol"
    "$VERIFY" --socket "$sockB" --expect-pattern 0 $((2 * M)) 11 \
        --expect-pattern $((3 * M)) $M 11 --expect-zero $((5 * M)) $M \
        --write-pattern $((2 * M)) $M 13 --flush
    t_b=$(first_mutation "$LOGB" "$vol")
    echo "B's first mutating request reached the gateway at $t_b;" \
        "its PUT of chunk 2:"
    grep "PUT /$S3_BUCKET/$vol/chunks/0000000000000002 " "$LOGB" | tail -n 1

    if [ "$scenario" = suspend ]; then
        kill -CONT "$pidA"
        echo "A resumed (SIGCONT) at $(now), stopped for $(since "$tstop") s"
        sleep 3
    fi
    echo "=== $scenario: the network heals: proxy A forwards what is held ==="
    proxy_rule "mode=none"
    t_rel=$(now)
    curl -sS -m 10 "$PA/__release?deliver=${S3CHUNK_PARTITION_DELIVER:-open}"
    sleep 5
    echo "proxy A: released $(proxy_stat released), dropped $(proxy_stat dropped)"
    echo "A's requests after the heal ($t_rel):"
    awk -v t="$t_rel" -v p="/$S3_BUCKET/$vol/" '/ seq=/ && !/ HELD / {
            for (i = 1; i <= NF; ++i) if ($i ~ /^fwd=/) {
                split($i, kv, "="); if (kv[2] != "-" && kv[2] + 0 >= t) { print "    " $0; next } }
        } / dropped=/ && index($0, " " p) { print "    " $0 }' "$LOGA" | tail -n 20

    if [ "$scenario" = suspend ]; then
        check "A, resumed, has fenced itself"
        grep -q "the volume lock is lost" "$logA" ||
            { echo "FAIL: A did not fence itself after SIGCONT"; bad+=("suspend: A did not fence"); }
        expect_eio write --write-pattern 4096 8192 99
        expect_eio flush --flush
        timeout 60 "$VERIFY" --socket "$sockA" --expect-pattern 0 $((2 * M)) 11 ||
            bad+=("suspend: A's reads")
    fi
    report_a_log

    echo "=== $scenario: stop A, stop B, read the store ==="
    stop_a
    stop_nbdkit "$sockB"
    if [ "$scenario" = suspend ]; then
        verify_store "$vol" "$scenario" --expect-zero $((5 * M)) $M
    else
        verify_store "$vol" "$scenario"
    fi
    check "$scenario: no request of A changed an object after B's first write ($t_b)"
    if a_after "$LOGA" "$vol" "$t_b"; then
        echo "ok: none"
    else
        bad+=("$scenario: A wrote after B's first write")
    fi
}

run partition part-a
run suspend part-b

[ ${#bad[@]} -eq 0 ] || fail "$(printf '%s; ' "${bad[@]}")"
echo "$0: PASS"
