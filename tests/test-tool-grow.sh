#!/usr/bin/env bash
# s3chunk tests: s3chunk grow.
#  1. On a served volume (a live nbdkit holds the lock) grow asks that
#     nbdkit (test-plugin-grow-live.sh tests the rest): one that does not
#     answer within --wait is reported, naming it, the request is
#     withdrawn and the superblock is untouched.
#  2. Offline: a smaller size is refused, the same size does nothing, a
#     larger one (as "SIZE" or "size=SIZE") grows the superblock; the
#     lock is released afterwards; nbdkit then serves the new size with
#     the old data intact and the new space zero.
#  3. A stale lock (nbdkit killed with SIGKILL) blocks grow only while it
#     is fresh; once stale, grow takes it over and releases it, and nbdkit
#     starts at once.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

requires nbdkit --version
requires nbdinfo --version
requires_tool
requires_test_programs
make_tmpdir

K=1024
M=$((1024 * K))
sock=$tmp/sock
store=$(store_args vol)
chunk=$((64 * K))

size_of () { "$S3CHUNK" info --json $store > "$tmp/size.json" && json_get "$tmp/size.json" 'j["size"]'; }
superblock_sum ()
{
    if store_can_list; then sha256sum < "$tmp/vol/superblock"; else size_of; fi
}

tool_ok create "$S3CHUNK" create $store size=64M chunk-size=64K
id=$(sed -n 's/^created volume \([0-9a-f]*\) .*/\1/p' "$tmp/create.out")

echo "=== 1. a served volume whose nbdkit does not answer in time ==="
# lease=60: the first renewal that looks for the request is 20 s away.
start_nbdkit "$sock" $store lease=60
pid=$(cat "$sock.pid")
"$VERIFY" --socket "$sock" --size $((64 * M)) \
    --write-pattern 1000 $((chunk + 5)) 1 \
    --write-pattern $((64 * M - 100000)) 100000 2 --flush
sum=$(superblock_sum)
tool_status 1 "the serving nbdkit \($(hostname), pid $pid\) did not apply the request within 2 s.*not grown" \
    live "$S3CHUNK" grow --wait=2 $store 128M
[ "$(superblock_sum)" = "$sum" ] || fail "an unanswered grow changed the superblock"
if store_can_list; then
    [ ! -e "$tmp/vol/grow-request" ] || fail "the unanswered request was not withdrawn"
fi
[ "$(nbdinfo --size "nbd+unix:///?socket=$sock")" -eq $((64 * M)) ] ||
    fail "the running nbdkit's size changed"
"$VERIFY" --socket "$sock" --expect-pattern $((64 * M - 100000)) 100000 2
stop_nbdkit "$sock"

echo "=== 2. offline ==="
tool_status 1 "32 MiB is smaller than the volume \(64 MiB" smaller "$S3CHUNK" grow $store size=32M
tool_status 0 "is 64 MiB already: nothing to do" same "$S3CHUNK" grow $store 64M
tool_status 2 "1000: invalid value.*multiple of 512" odd "$S3CHUNK" grow $store 1000
tool_status 2 "no size given" nosize "$S3CHUNK" grow $store
tool_status 2 "more than one size" twosizes "$S3CHUNK" grow $store 128M size=256M
[ "$(superblock_sum)" = "$sum" ] || fail "a refused grow changed the superblock"
tool_ok grow1 "$S3CHUNK" grow $store 128M
grep -q "grew volume $id from 64 MiB to 128 MiB" "$tmp/grow1.out" || fail "grow message"
[ "$(size_of)" -eq $((128 * M)) ] || fail "info does not show 128M"
tool_ok grow2 "$S3CHUNK" grow $store size=200M
[ "$(size_of)" -eq $((200 * M)) ] || fail "info does not show 200M"
[ "$(json_get "$tmp/size.json" 'j["lock"]')" = null ] || fail "grow left its lock behind"
[ "$(json_get "$tmp/size.json" 'j["volume_id"]')" = "$id" ] || fail "the volume id changed"

check "nbdkit serves 200M, old data intact, new space zero and a hole"
start_nbdkit "$sock" $store
[ "$(nbdinfo --size "nbd+unix:///?socket=$sock")" -eq $((200 * M)) ] ||
    fail "nbdkit does not serve the grown size"
"$VERIFY" --socket "$sock" --size $((200 * M)) \
    --expect-zero 0 1000 \
    --expect-pattern 1000 $((chunk + 5)) 1 \
    --expect-pattern $((64 * M - 100000)) 100000 2 \
    --expect-zero $((64 * M)) $((136 * M)) \
    --expect-hole $((64 * M)) $((136 * M)) \
    --write-pattern $((200 * M - 4096)) 4096 3 --flush
stop_nbdkit "$sock"

echo "=== 3. a stale lock does not block grow ==="
start_nbdkit "$sock" $store lease=6
pid=$(cat "$sock.pid")
kill_nbdkit "$sock"
# grow sees a fresh lock and asks its holder, which is dead: it says so
# once the lock goes stale instead of waiting its whole --wait.
tool_status 1 "served the volume \($(hostname), pid $pid\) stopped renewing its lock.*not grown" \
    fresh "$S3CHUNK" grow $store 256M
[ "$(size_of)" -eq $((200 * M)) ] || fail "grow went ahead under a fresh lock"
wait_lock_stale $store
tool_status 0 "took over the stale lock of host .*pid $pid" stale "$S3CHUNK" grow $store 256M
[ "$(size_of)" -eq $((256 * M)) ] || fail "grow did not grow past a stale lock"
[ "$(json_get "$tmp/size.json" 'j["lock"]')" = null ] || fail "grow left the lock behind"
check "nbdkit starts at once (no lock to wait for) and serves 256M"
start_nbdkit "$sock" $store
"$VERIFY" --socket "$sock" --size $((256 * M)) \
    --expect-pattern 1000 $((chunk + 5)) 1 \
    --expect-pattern $((200 * M - 4096)) 4096 3 \
    --expect-zero $((200 * M)) $((56 * M))
stop_nbdkit "$sock"

echo "$0: PASS"
