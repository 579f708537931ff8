#!/usr/bin/env bash
# s3chunk tests: the modes of tests/s3-fault-proxy that model a network
# that lies (hold, partition, drop-then-503), against a tiny upstream that
# records every request it receives and answers 200.  No Ceph, no nbdkit.
#  1. hold: a matching request is held (not forwarded, no answer) and
#     others pass; /__release forwards a held request whose client still
#     waits and relays the answer.
#  2. hold: a held request whose client gave up (curl -m: FIN) or reset
#     its connection (RST) is dropped at release: the upstream never sees
#     it.  /__release?deliver=all forwards it anyway.
#  3. partition: every request is held, whatever method= and path= say.
#  4. drop-then-503: the first matching request reaches the upstream but
#     its answer is dropped; the next --count get 503 SlowDown, unforwarded.
#  5. every request line carries recv/fwd/ans times and the upstream code.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires curl --version
requires /usr/bin/python3 --version
make_tmpdir
PROXY=$abs_top_srcdir/tests/s3-fault-proxy

# The upstream: one line "METHOD PATH TIME" per request received.
cat > "$tmp/upstream.py" <<'EOF'
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[1], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        log.write("%s %s %.3f\n" % (self.command, self.path, time.time()))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    do_GET = do_PUT = do_DELETE = do_POST = do_HEAD = _any
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2] + ".tmp", "w").write("%d\n" % s.server_address[1])
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
s.serve_forever()
EOF
up_log=$tmp/upstream.log
: > "$up_log"
/usr/bin/python3 "$tmp/upstream.py" "$up_log" "$tmp/up.port" &
up_pid=$!
cleanup_fn kill "$up_pid"
for (( i = 0; i < 100; ++i )); do [ -s "$tmp/up.port" ] && break; sleep 0.1; done
[ -s "$tmp/up.port" ] || fail "the upstream did not start"

plog=$tmp/proxy.log
/usr/bin/python3 "$PROXY" --upstream "http://127.0.0.1:$(cat "$tmp/up.port")" \
    --port-file "$tmp/proxy.port" --log "$plog" > /dev/null 2> "$tmp/proxy.err" &
proxy_pid=$!
cleanup_fn kill "$proxy_pid"
for (( i = 0; i < 100; ++i )); do [ -s "$tmp/proxy.port" ] && break; sleep 0.1; done
[ -s "$tmp/proxy.port" ] || { cat "$tmp/proxy.err"; fail "the proxy did not start"; }
P=http://127.0.0.1:$(cat "$tmp/proxy.port")

ctl () { curl -sS -m 10 "$P/$1"; }
upstream_saw () { grep -c "^$1 $2 " "$up_log" || true; }
stat_of () { ctl "__stats?format=text" | awk -v k="$1" '$1 == k { n = $2 } END { print n + 0 }'; }
# wait_held N: until N requests are held now (10 s).
wait_held ()
{
    for (( i = 0; i < 100; ++i )); do
        [ "$(stat_of held)" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "expected $1 held request(s), $(stat_of held) are"
}

echo "=== 1. hold: held until release, others pass ==="
ctl "__fault?mode=hold&method=PUT&path=/b/k1" > /dev/null
curl -sS -m 30 -X PUT --data-binary one -o "$tmp/a1.out" -w '%{http_code}\n' \
    "$P/b/k1" > "$tmp/a1.code" &
c1=$!
wait_held 1
check "another request passes while k1 is held"
[ "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -X PUT --data-binary x "$P/b/k2")" = 200 ] ||
    fail "PUT k2 did not pass"
sleep 1
[ "$(upstream_saw PUT /b/k1)" = 0 ] || fail "the held PUT reached the upstream"
kill -0 "$c1" || fail "the held client got an answer"
check "mode=none does not release it"
ctl "__fault?mode=none" > /dev/null
sleep 0.5
[ "$(upstream_saw PUT /b/k1)" = 0 ] || fail "mode=none released the held PUT"
check "release: forwarded, answered"
[ "$(ctl __release)" = '{"released": 1}' ] || fail "release did not count 1"
wait "$c1" || fail "the released client failed"
[ "$(cat "$tmp/a1.code")" = 200 ] || fail "released answer $(cat "$tmp/a1.code")"
[ "$(upstream_saw PUT /b/k1)" = 1 ] || fail "the released PUT did not reach the upstream once"
grep -q 'HELD PUT /b/k1 recv=' "$plog" || fail "no HELD line"
grep -E 'PUT /b/k1 fault=hold status=200 .* recv=[0-9.]+ fwd=[0-9.]+ ans=[0-9.]+ up=200 held=[0-9.]+$' "$plog" ||
    fail "no request line with times for the released PUT"
echo ok

echo "=== 2. hold: a client that gave up is dropped at release ==="
ctl "__fault?mode=hold&method=PUT" > /dev/null
check "curl -m 1 (gives up, closes) and a client that resets"
curl -sS -m 1 -X PUT --data-binary two "$P/b/gave-up" > /dev/null 2>&1 || true
/usr/bin/python3 - "$(cat "$tmp/proxy.port")" <<'EOF'
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"PUT /b/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
time.sleep(0.5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
EOF
curl -sS -m 30 -X PUT --data-binary three -o /dev/null "$P/b/waits" &
c3=$!
wait_held 3
sleep 0.5
ctl __release > /dev/null
wait "$c3" || fail "the waiting client failed"
sleep 0.5
expect () { [ "$2" = "$3" ] || fail "$1: expected $2, got $3"; echo "ok: $1 = $3"; }
expect "upstream PUTs of the client that gave up" 0 "$(upstream_saw PUT /b/gave-up)"
expect "upstream PUTs of the client that reset" 0 "$(upstream_saw PUT /b/reset)"
expect "upstream PUTs of the waiting client" 1 "$(upstream_saw PUT /b/waits)"
grep -q 'PUT /b/gave-up fault=hold status=- .* fwd=- ans=- up=- held=[0-9.]* dropped=client-closed gone=' "$plog" ||
    fail "the dropped (closed) request is not logged as dropped"
grep -q 'PUT /b/reset fault=hold status=- .* fwd=- ans=- up=- held=[0-9.]* dropped=client-reset gone=' "$plog" ||
    fail "the dropped (reset) request is not logged as dropped"
expect "proxy: dropped" 2 "$(stat_of dropped)"
check "deliver=all forwards even what the client gave up"
curl -sS -m 1 -X PUT --data-binary four "$P/b/late" > /dev/null 2>&1 || true
wait_held 1
ctl "__release?deliver=all" > /dev/null
sleep 1
expect "upstream PUTs of the given-up request, deliver=all" 1 "$(upstream_saw PUT /b/late)"
grep -q 'PUT /b/late .* up=200 held=[0-9.]* delivered-anyway=client-closed' "$plog" ||
    fail "deliver=all not logged"

echo "=== 3. partition: everything is held ==="
ctl "__fault?mode=partition&method=PUT&path=nothing-matches" > /dev/null
curl -sS -m 30 -o /dev/null "$P/b/get1" &
c4=$!
curl -sS -m 30 -o /dev/null -X DELETE "$P/b/del1" &
c5=$!
wait_held 2
expect "upstream requests during the partition" 0 \
    "$(grep -c ' /b/get1 \| /b/del1 ' "$up_log" || true)"
ctl "__fault?mode=none" > /dev/null
ctl __release > /dev/null
wait "$c4" && wait "$c5" || fail "released clients failed"
expect "upstream GET after release" 1 "$(upstream_saw GET /b/get1)"
expect "upstream DELETE after release" 1 "$(upstream_saw DELETE /b/del1)"

echo "=== 4. drop-then-503 ==="
ctl "__fault?mode=drop-then-503&count=2&method=PUT&path=/b/amb" > /dev/null
codes=
for i in 1 2 3 4; do
    codes+=" $(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X PUT \
        --data-binary "v$i" "$P/b/amb" 2>/dev/null || true)"
done
echo "client saw:$codes"
expect "codes the client saw (000: no answer)" " 000 503 503 200" "$codes"
expect "upstream PUTs (the dropped one and the last)" 2 "$(upstream_saw PUT /b/amb)"
grep -q 'PUT /b/amb fault=drop status=- .* fwd=[0-9.]* ans=[0-9.]* up=200' "$plog" ||
    fail "the dropped PUT is not logged with its upstream answer"
expect "proxy: fault:drop" 1 "$(stat_of fault:drop)"
expect "proxy: fault:503" 2 "$(stat_of fault:503)"

echo "=== 5. times ==="
# fwd <= ans, recv <= fwd on every forwarded request.
awk '/ fwd=[0-9]/ {
        for (i = 1; i <= NF; ++i) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (v["recv"] > v["fwd"] || v["fwd"] > v["ans"]) { print; bad = 1 }
        n++
     }
     END { print n " forwarded request lines"; exit bad }' "$plog" ||
    fail "times out of order"

echo "$0: PASS"
