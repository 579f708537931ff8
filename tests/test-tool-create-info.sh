#!/usr/bin/env bash
# s3chunk tests: the s3chunk command's create and info (and what every
# subcommand shares: --help, --version, the store words, usage errors).
#  1. --help and --version; usage errors exit 2 with one line naming the
#     word; a plugin-only parameter is named as such.
#  2. create writes the superblock asked for and refuses a store that holds
#     a volume (the superblock stays byte for byte) or stray chunk objects.
#  3. info (text and --json) of a new volume: geometry, "not locked", no
#     objects.
#  4. After nbdkit wrote 16 MiB of text and 16 MiB of base64 random data:
#     while it runs, info names it as the fresh lock holder (pid, host);
#     after it stopped, the chunk count, the stored bytes (checked against
#     the object files), the logical bytes and a compression ratio > 1 are
#     exact; objects that are not chunks are counted and named.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

requires nbdkit --version
requires_tool
requires_test_programs
make_tmpdir

K=1024
M=$((1024 * K))
sock=$tmp/sock
store=$(store_args vol)

echo "=== 1. help, version, usage errors ==="
tool_ok version "$S3CHUNK" --version
grep -qx "s3chunk [0-9][0-9.]*" "$tmp/version.out" || fail "--version output"
tool_ok help "$S3CHUNK" --help
for c in create info grow fsck unlock destroy; do
    grep -q "^  $c " "$tmp/help.out" || fail "--help does not list $c"
    tool_ok help-$c "$S3CHUNK" $c --help
    grep -q "^Usage: s3chunk $c" "$tmp/help-$c.out" || fail "$c --help: no usage line"
    grep -q "^dir=PATH" "$tmp/help-$c.out" || fail "$c --help: no store parameters"
done
tool_status 2 "unknown command 'frobnicate'" nocmd "$S3CHUNK" frobnicate dir=$tmp/x
tool_status 2 "" nothing "$S3CHUNK"
tool_status 2 "s3chunk: info: unknown option '--frob'" badopt "$S3CHUNK" info --frob dir=$tmp/x
tool_status 2 "s3chunk: info: unknown parameter 'colour'" badparam "$S3CHUNK" info dir=$tmp/x colour=red
tool_status 2 "cache-size= is a parameter of the nbdkit plugin" pluginparam \
    "$S3CHUNK" info dir=$tmp/x cache-size=1G
tool_status 2 "unexpected word 'extra'" word "$S3CHUNK" info dir=$tmp/x extra
tool_status 2 "no store given" nostore "$S3CHUNK" info
tool_status 2 "prefix=.*are for bucket=" dirprefix "$S3CHUNK" info dir=$tmp/x prefix=p
tool_status 2 "size= is required" nosize "$S3CHUNK" create dir=$tmp/x
tool_status 2 "chunk-size=3M: invalid value" badchunk "$S3CHUNK" create dir=$tmp/x size=1G chunk-size=3M
tool_status 2 "size=1000: invalid value.*multiple of 512" badsize "$S3CHUNK" create dir=$tmp/x size=1000
tool_status 2 "level=3 conflicts with compression=none" conflict \
    "$S3CHUNK" create dir=$tmp/x size=1G compression=none level=3
[ ! -e "$tmp/x" ] || fail "a refused command created $tmp/x"
for n in nocmd badopt badparam pluginparam word nostore nosize badchunk; do
    [ "$(wc -l < "$tmp/$n.err")" -eq 1 ] || fail "$n: not exactly one error line"
done
tool_status 1 "no such directory" missing "$S3CHUNK" info dir=$tmp/missing
mkdir "$tmp/empty"
tool_status 1 "no volume in dir $tmp/empty.*s3chunk create" empty "$S3CHUNK" info dir=$tmp/empty

echo "=== 2. create ==="
tool_ok create "$S3CHUNK" create $store size=1T chunk-size=64K compression=zstd level=3
id=$(sed -n 's/^created volume \([0-9a-f]\{32\}\) in .*/\1/p' "$tmp/create.out")
[ -n "$id" ] || fail "create did not print the volume id"
grep -q "size 1 TiB, chunk size 64 KiB, zstd level 3" "$tmp/create.out" ||
    fail "create did not describe the volume"
if store_can_list; then
    check "the superblock holds what was asked"
    sb=$tmp/vol/superblock
    for l in "volume-id=$id" size=1099511627776 chunk-size=65536 codec=zstd level=3; do
        grep -qx "$l" "$sb" || fail "superblock lacks $l"
    done
    sum=$(sha256sum < "$sb")
fi
tool_status 1 "a volume exists in .* already" again "$S3CHUNK" create $store size=2T
if store_can_list; then
    [ "$(sha256sum < "$sb")" = "$sum" ] || fail "a refused create changed the superblock"
fi
tool_ok nozstd "$S3CHUNK" create $(store_args raw) size=1G compression=none
grep -q "no compression" "$tmp/nozstd.out" || fail "compression=none"
tool_ok rawinfo "$S3CHUNK" info --json $(store_args raw)
[ "$(json_get "$tmp/rawinfo.out" 'j["codec"], j["level"], j["chunk_size"]')" = \
  "('none', 0, 1048576)" ] || fail "volume raw: $(cat "$tmp/rawinfo.out")"
if store_can_list; then
    check "create refuses a store holding chunk objects without a superblock"
    mkdir -p "$tmp/stray/chunks"
    echo junk > "$tmp/stray/chunks/0000000000000000"
    tool_status 1 "holds chunk objects but no volume" stray "$S3CHUNK" create dir=$tmp/stray size=1G
    [ ! -e "$tmp/stray/superblock" ] || fail "create wrote a superblock beside stray chunks"
fi

echo "=== 3. info of the new volume ==="
tool_ok info0 "$S3CHUNK" info $store
for l in "volume id: *$id" "size: *1 TiB \(1099511627776 bytes\)" \
         "chunk size: *64 KiB \(65536 bytes\), 16777216 chunks" \
         "compression: *zstd level 3" "format version: *1" \
         "lock: *not locked" "chunk objects: *0 " "created: *20[0-9-]+ [0-9:]+ UTC"; do
    grep -E -q "^$l" "$tmp/info0.out" || fail "info lacks '$l'"
done
tool_ok json0 "$S3CHUNK" info --json $store
[ "$(json_get "$tmp/json0.out" 'j["volume_id"]')" = "$id" ] || fail "json volume_id"
[ "$(json_get "$tmp/json0.out" 'j["size"]')" = 1099511627776 ] || fail "json size"
[ "$(json_get "$tmp/json0.out" 'j["chunk_size"]')" = 65536 ] || fail "json chunk_size"
[ "$(json_get "$tmp/json0.out" 'j["codec"] + str(j["level"])')" = zstd3 ] || fail "json codec"
[ "$(json_get "$tmp/json0.out" 'j["lock"]')" = null ] || fail "json lock"
[ "$(json_get "$tmp/json0.out" 'j["chunk_objects"], j["stored_bytes"], j["compression_ratio"]')" = \
  "(0, 0, None)" ] || fail "json: objects of an empty volume"
[ "$(json_get "$tmp/json0.out" 'j["format_version"]')" = 1 ] || fail "json format_version"

echo "=== 4. info after nbdkit wrote data ==="
yes "s3chunk info test: a line of compressible log text, 0123456789" |
    head -c $((16 * M)) > "$tmp/text"
head -c $((12 * M)) /dev/urandom | base64 -w 76 | head -c $((16 * M)) > "$tmp/b64"
start_nbdkit "$sock" $store lease=60
pid=$(cat "$sock.pid")
"$VERIFY" --socket "$sock" --write-file "$tmp/text" 0 \
    --write-file "$tmp/b64" $((100 * M)) --flush
check "while nbdkit runs, info names it as the holder of a fresh lock"
tool_ok live "$S3CHUNK" info $store
grep -E -q "^lock: *host $(hostname) \(pid $pid, s3chunk [^)]*\), taken at .* UTC, last renewed [0-9]+ s ago, lease 60 s: fresh" \
    "$tmp/live.out" || fail "info does not show the holder"
tool_ok livejson "$S3CHUNK" info --json $store
[ "$(json_get "$tmp/livejson.out" 'j["lock"]["pid"], j["lock"]["fresh"], j["lock"]["lease"]')" = \
  "($pid, True, 60)" ] || fail "json lock while running"
[ "$(json_get "$tmp/livejson.out" 'j["lock"]["host"]')" = "$(hostname)" ] || fail "json lock host"
stop_nbdkit "$sock"

check "after the stop: exact counts and sizes"
tool_ok info1 "$S3CHUNK" info --json $store
n=$(json_get "$tmp/info1.out" 'j["chunk_objects"]')
stored=$(json_get "$tmp/info1.out" 'j["stored_bytes"]')
logical=$(json_get "$tmp/info1.out" 'j["logical_bytes"]')
ratio=$(json_get "$tmp/info1.out" 'j["compression_ratio"]')
echo "chunks $n, stored $stored, logical $logical, ratio $ratio"
[ "$n" -eq 512 ] || fail "expected 512 chunk objects (32 MiB in 64 KiB chunks), info says $n"
[ "$logical" -eq $((512 * 64 * K)) ] || fail "logical bytes $logical"
[ "$(json_get "$tmp/info1.out" 'j["lock"]')" = null ] || fail "still locked after a clean stop"
if store_can_list; then
    [ "$n" -eq "$(store_chunk_count vol)" ] || fail "info and the directory disagree on the count"
    real=$(find "$tmp/vol/chunks" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
    [ "$stored" -eq "$real" ] || fail "stored bytes $stored, the files hold $real"
fi
# Text compresses ~100x, base64 of random data by 4/3: overall well over 2.
/usr/bin/python3 -c "import sys; r = float('$ratio'); l, s = $logical, $stored
sys.exit(0 if r > 2 and abs(r - l / s) < 0.001 else 1)" ||
    fail "compression ratio $ratio (logical $logical / stored $stored)"
tool_ok info1t "$S3CHUNK" info $store
grep -E -q "^chunk objects: *512 " "$tmp/info1t.out" || fail "text: chunk objects"
grep -E -q "^stored bytes: .*\($stored bytes\)" "$tmp/info1t.out" || fail "text: stored bytes"
grep -E -q "^logical bytes: *32 MiB \($logical bytes\)" "$tmp/info1t.out" || fail "text: logical bytes"
grep -E -q "^compression ratio: *[0-9]+\.[0-9][0-9]$" "$tmp/info1t.out" || fail "text: ratio"

if store_can_list; then
    check "objects that are not chunks are counted and named"
    echo hello > "$tmp/vol/notes \"quoted\".txt"
    echo probe > "$tmp/vol/lock-probe-0123456789abcdef"
    cp "$tmp/vol/chunks/0000000000000001" "$tmp/vol/chunks/0000000010000000"
    tool_ok info2 "$S3CHUNK" info --json $store
    [ "$(json_get "$tmp/info2.out" 'j["other_objects"], j["foreign_objects"], j["lock_probe_objects"], j["beyond_end_objects"]')" = \
      "(3, 1, 1, 1)" ] || fail "other objects miscounted"
    [ "$(json_get "$tmp/info2.out" '"notes \"quoted\".txt" in j["other_keys"]')" = true ] ||
        fail "the foreign key is not listed (or badly escaped)"
    [ "$(json_get "$tmp/info2.out" 'j["chunk_objects"]')" = 512 ] || fail "a beyond-the-end chunk was counted"
    tool_ok info2t "$S3CHUNK" info $store
    grep -E -q "^other objects: *3 \(1 beyond the end, 1 stray lock probe, 1 not s3chunk's" \
        "$tmp/info2t.out" || fail "text: other objects"
    grep -q "chunks/0000000010000000 (beyond the end)" "$tmp/info2t.out" || fail "text: beyond key"
fi

echo "$0: PASS"
