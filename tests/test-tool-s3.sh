#!/usr/bin/env bash
# s3chunk tests: the s3chunk command on S3 (a throwaway Ceph RADOS Gateway,
# tests/ceph.sh), with the plugin's own store words.
#  1. Credentials as the plugin takes them: secret-key=+FILE, secret-key=-
#     (a line on stdin); a wrong secret fails with one line that does not
#     show it.
#  2. create under a prefix; refused a second time; info (--json) of the
#     S3 store.
#  3. After nbdkit wrote data: the chunk count and the stored bytes agree
#     with the bucket's own listing; fsck is clean.
#  4. fsck names a garbage object, a chunk copied over another key, a key
#     beyond the end, a foreign key and a stray lock probe (exit 1).
#  5. grow; unlock of a stale lock after kill -9; destroy deletes exactly
#     the volume's objects: a foreign key under the prefix and a second
#     volume under another prefix stay.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"
source "$abs_top_srcdir/tests/tool-functions.sh"

requires_tool
s3_start_cluster

unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
      AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_REGION AWS_DEFAULT_REGION
export HOME=$tmp/home
mkdir -p "$HOME"

K=1024
M=$((1024 * K))
sock=$tmp/sock
P=tools/vol1
printf '%s\n' "$S3_SECRET_KEY" > "$tmp/secret"
chmod 600 "$tmp/secret"
store="bucket=$S3_BUCKET endpoint=$S3_ENDPOINT access-key=$S3_ACCESS_KEY secret-key=+$tmp/secret prefix=$P"

# bucket_objects PREFIX: "KEY SIZE" lines of the bucket's listing.
bucket_objects ()
{
    s3_request GET "/$S3_BUCKET?list-type=2&max-keys=1000&prefix=${1//\//%2F}" |
        /usr/bin/python3 -c '
import re, sys
x = sys.stdin.read()
for c in re.findall(r"<Contents>(.*?)</Contents>", x, re.S):
    print(re.search(r"<Key>(.*?)</Key>", c).group(1),
          re.search(r"<Size>(.*?)</Size>", c).group(1))'
}

put_object () { s3_request PUT "/$S3_BUCKET/$1" --data-binary "@$2" -o /dev/null; }
get_object () { s3_request GET "/$S3_BUCKET/$1" -o "$2"; }

echo "=== 1. credentials ==="
tool_status 1 "" wrong "$S3CHUNK" info bucket=$S3_BUCKET endpoint=$S3_ENDPOINT \
    access-key=$S3_ACCESS_KEY secret-key=not-the-secret-at-all prefix=$P
[ "$(wc -l < "$tmp/wrong.err")" -eq 1 ] || fail "a wrong secret gave more than one line"
grep -q -i "credentials\|signature\|secret" "$tmp/wrong.err" || fail "the error does not say what is wrong"
! grep -qF "$S3_SECRET_KEY" "$tmp/wrong.out" "$tmp/wrong.err" || fail "the secret was printed"

echo "=== 2. create and info ==="
tool_ok create "$S3CHUNK" create $store size=1T chunk-size=64K level=3
id=$(sed -n 's/^created volume \([0-9a-f]*\) .*/\1/p' "$tmp/create.out")
grep -q "in s3://$S3_BUCKET/$P at $S3_ENDPOINT" "$tmp/create.out" || fail "create does not name the store"
tool_status 1 "a volume exists in s3://$S3_BUCKET/$P" again "$S3CHUNK" create $store size=1G
tool_ok create2 "$S3CHUNK" create $(s3_args tools/vol2) size=1G
check "secret-key=- reads a line on stdin"
rc=0
printf '%s\n' "$S3_SECRET_KEY" | "$S3CHUNK" info --json bucket=$S3_BUCKET \
    endpoint=$S3_ENDPOINT access-key=$S3_ACCESS_KEY secret-key=- prefix=$P \
    > "$tmp/info0.json" || rc=$?
[ "$rc" -eq 0 ] || fail "info with secret-key=- failed"
[ "$(json_get "$tmp/info0.json" 'j["store_kind"], j["bucket"], j["prefix"], j["volume_id"]')" = \
  "('s3', '$S3_BUCKET', '$P', '$id')" ] || fail "info --json of the S3 store: $(cat "$tmp/info0.json")"
[ "$(json_get "$tmp/info0.json" 'j["size"], j["chunk_size"], j["level"], j["chunk_objects"]')" = \
  "(1099511627776, 65536, 3, 0)" ] || fail "info --json geometry"

echo "=== 3. after nbdkit wrote data ==="
yes "s3chunk on S3: a compressible line of text 0123456789" | head -c $((16 * M)) > "$tmp/text"
head -c $((4 * M)) /dev/urandom > "$tmp/random"
start_nbdkit "$sock" $(s3_args $P) lease=3
pid=$(cat "$sock.pid")
"$VERIFY" --socket "$sock" --write-file "$tmp/text" 0 \
    --write-file "$tmp/random" $((16 * M)) --flush
tool_ok live "$S3CHUNK" info --json $store
[ "$(json_get "$tmp/live.out" 'j["lock"]["pid"], j["lock"]["fresh"]')" = "($pid, True)" ] ||
    fail "info does not show nbdkit as the fresh holder"
stop_nbdkit "$sock"
tool_ok info1 "$S3CHUNK" info --json $store
bucket_objects "$P/chunks/" > "$tmp/listing"
n=$(json_get "$tmp/info1.out" 'j["chunk_objects"]')
stored=$(json_get "$tmp/info1.out" 'j["stored_bytes"]')
[ "$n" -eq 320 ] || fail "expected 320 chunk objects, info says $n"
[ "$n" -eq "$(wc -l < "$tmp/listing")" ] || fail "info and the bucket disagree on the count"
[ "$stored" -eq "$(awk '{ s += $2 } END { print s }' "$tmp/listing")" ] ||
    fail "stored bytes disagree with the bucket listing"
[ "$(json_get "$tmp/info1.out" 'j["compression_ratio"] > 1.2 and j["lock"] is None')" = true ] ||
    fail "ratio or lock after the stop"
tool_ok fsck1 "$S3CHUNK" fsck $store
grep -q "^fsck: 320 chunk objects .*: clean$" "$tmp/fsck1.out" || fail "fsck is not clean"

echo "=== 4. fsck finds damage on S3 ==="
head -c 5000 /dev/urandom > "$tmp/garbage"
put_object "$P/chunks/0000000000000003" "$tmp/garbage"
get_object "$P/chunks/0000000000000007" "$tmp/c7"
put_object "$P/chunks/0000000000000009" "$tmp/c7"
put_object "$P/chunks/00000000ffffffff" "$tmp/c7"
echo "notes" > "$tmp/notes"
put_object "$P/notes.txt" "$tmp/notes"
put_object "$P/lock-probe-0123456789abcdef" "$tmp/notes"
tool_status 1 "" fsck2 "$S3CHUNK" fsck $store
for l in "corrupt chunks/0000000000000003: " \
         "corrupt chunks/0000000000000009: object holds chunk 7, not chunk 9" \
         "beyond-end chunks/00000000ffffffff: " \
         "foreign notes.txt: " \
         "stray lock-probe-0123456789abcdef: " \
         "^fsck: 320 chunk objects .*: 2 corrupt, 1 beyond the end, 1 foreign, 1 stray$"; do
    grep -E -q -- "$l" "$tmp/fsck2.out" || fail "fsck on S3: no line matches '$l'"
done

echo "=== 5. grow, unlock, destroy ==="
tool_ok grow "$S3CHUNK" grow $store 2T
tool_ok info2 "$S3CHUNK" info --json $store
[ "$(json_get "$tmp/info2.out" 'j["size"]')" -eq $((2 * 1024 * 1024 * M)) ] || fail "grow on S3"
start_nbdkit "$sock" $(s3_args $P) lease=6
pid=$(cat "$sock.pid")
kill_nbdkit "$sock"
tool_status 1 "holder looks alive" fresh "$S3CHUNK" unlock --yes $store
wait_lock_stale $store
tool_status 0 "lock removed" unlock "$S3CHUNK" unlock --yes $store
bucket_objects "tools/" | sort > "$tmp/before-destroy"
tool_ok destroy "$S3CHUNK" destroy --yes $store
grep -q "^left 1 object that s3chunk did not write: notes.txt" "$tmp/destroy.out" ||
    fail "destroy did not name the foreign object"
bucket_objects "$P/" > "$tmp/after-destroy"
[ "$(cut -d' ' -f1 "$tmp/after-destroy")" = "$P/notes.txt" ] ||
    fail "destroy left: $(cat "$tmp/after-destroy")"
[ "$(grep -c '^tools/vol2/' "$tmp/before-destroy")" -ge 1 ] || fail "vol2 has no superblock?"
bucket_objects "tools/vol2/" > "$tmp/vol2-after"
diff <(grep '^tools/vol2/' "$tmp/before-destroy") <(sort "$tmp/vol2-after") ||
    fail "destroy of vol1 touched vol2"
tool_status 1 "no volume in" gone "$S3CHUNK" info $store

echo "$0: PASS"
