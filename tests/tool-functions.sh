# s3chunk tests: helpers for the tests of the s3chunk command
# (tests/test-tool-*.sh and the e2e tests that use it), on top of
# tests/functions.sh (source that first).
#
#   S3CHUNK                the command (default $abs_top_builddir/tools/s3chunk)
#   tool_run NAME CMD...   run CMD, stdout in $tmp/NAME.out, stderr in
#                          $tmp/NAME.err, status in $rc (never exits)
#   tool_ok NAME CMD...    the same, and fail unless the status is 0
#   tool_status N PATTERN NAME CMD...
#                          fail unless the status is N and stdout+stderr
#                          match the extended regex PATTERN
#   json_get FILE EXPR     print the Python expression EXPR over the JSON
#                          object j read from FILE

S3CHUNK=${S3CHUNK:-$abs_top_builddir/tools/s3chunk}

requires_tool ()
{
    if [ ! -x "$S3CHUNK" ]; then
        echo "$0: $S3CHUNK is missing: run make first"
        exit 1
    fi
    requires /usr/bin/python3 --version
}

tool_run ()
{
    local name=$1
    shift
    rc=0
    echo "\$ ${*/#secret-key=*/secret-key=...}" | sed "s|$S3CHUNK|s3chunk|"
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    sed 's/^/  | /' "$tmp/$name.out" "$tmp/$name.err" | head -n 40
    echo "  (exit status $rc)"
}

tool_ok ()
{
    tool_run "$@"
    [ "$rc" -eq 0 ] || fail "'${*:2}' exited with status $rc"
}

tool_status ()
{
    local want=$1 pattern=$2
    shift 2
    tool_run "$@"
    [ "$rc" -eq "$want" ] || fail "'${*:2}' exited with status $rc, expected $want"
    if [ -n "$pattern" ]; then
        cat "$tmp/$1.out" "$tmp/$1.err" | grep -E -q -- "$pattern" ||
            fail "'${*:2}': no output line matches '$pattern'"
    fi
}

json_get ()
{
    /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list)) or v is None else
      str(v).lower() if isinstance(v, bool) else v)' "$1" "$2"
}

# wait_lock_stale STORE-WORDS...: until 's3chunk info' says the lock is
# stale (at most 15 s).
wait_lock_stale ()
{
    local i
    for (( i = 0; i < 30; ++i )); do
        "$S3CHUNK" info --json "$@" > "$tmp/stale.json" 2>/dev/null || true
        if [ "$(json_get "$tmp/stale.json" 'j["lock"] and j["lock"]["fresh"]')" = false ]; then
            return 0
        fi
        sleep 0.5
    done
    fail "the lock did not become stale within 15 s"
}
