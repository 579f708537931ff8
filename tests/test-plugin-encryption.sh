#!/usr/bin/env bash
# s3chunk tests: client-side encryption through nbdkit (and the s3chunk
# tool), on the directory store and (tests/s3/*.s3) the Ceph gateway.
#  1. Bad parameters are refused at start-up: a literal key, a cipher
#     without a key, a key with encryption=none, a short raw key.
#  2. Data written to an encrypted volume reads back after a restart, and
#     no plaintext is found in any stored object, while the same data on an
#     unencrypted volume is found (the control: the grep can fail).
#  3. The key is checked before nbdkit serves: no key, a wrong key, a key
#     for a plain volume; a superblock with its size changed, or replaced
#     by a plain one, is refused.
#  4. Objects tampered with through the store (a flipped byte, two chunks
#     swapped, a truncated one) read as EIO naming the object key.
#  5. s3chunk info / fsck / rekey with and without the key.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/crypt-functions.sh"

requires nbdkit --version
requires nbdcopy --version
requires curl --version
make_tmpdir

sock=$tmp/sock
M=$((1024 * 1024))
enc=$(store_args enc)
plain=$(store_args plain)
printf 'correct horse battery staple\n' > "$tmp/pass"
printf 'a different passphrase\n' > "$tmp/wrong"
head -c 32 /dev/urandom > "$tmp/raw"
head -c 13 /dev/urandom > "$tmp/short"
chmod 600 "$tmp/pass" "$tmp/wrong" "$tmp/raw" "$tmp/short"
marker_file "$tmp/data" 400          # about 1.6 MB: two 1 MiB chunks
size=$(stat -c %s "$tmp/data")

echo "=== 1. parameters refused at start-up ==="
nbdkit_refuses 'refused: a key on the command line' $enc size=16M key=hunter2
grep -q hunter2 "$tmp/refuse.out" && fail "the literal key was echoed"
nbdkit_refuses 'needs a key' $enc size=16M encryption=aes-256-gcm
nbdkit_refuses 'conflicts with encryption=none' $enc size=16M \
    key=+"$tmp/pass" encryption=none
nbdkit_refuses 'expected aes-256-gcm or none' $enc size=16M \
    key=+"$tmp/pass" encryption=rot13
nbdkit_refuses 'expected passphrase' $enc size=16M key=+"$tmp/pass" \
    key-format=base64
nbdkit_refuses 'exactly 32 bytes or 64 hex digits' $enc size=16M \
    key=+"$tmp/short" key-format=raw
nbdkit_refuses 'No such file' $enc size=16M key=+"$tmp/nonexistent"

echo "=== 2. write, restart, read back; no plaintext in the store ==="
start_nbdkit "$sock" $enc size=16M key=+"$tmp/pass"
check "write $size bytes of marker data"
nbdcopy "$tmp/data" "nbd+unix:///?socket=$sock"
stop_nbdkit "$sock"
# The key by file descriptor and by stdin, too.
start_nbdkit "$sock" $enc key=-3 3<"$tmp/pass"
check "read back after restart (key=-3)"
nbdcopy "nbd+unix:///?socket=$sock" "$tmp/back"
cmp -n "$size" "$tmp/data" "$tmp/back" || fail "data differs after restart"
stop_nbdkit "$sock"
timeout 60 "${nbdkit_cmd[@]}" -U - "$PLUGIN" $enc key=- --run 'nbdinfo --size "$uri"' \
    < "$tmp/pass" > "$tmp/stdin.out" 2>&1 || { cat "$tmp/stdin.out"; fail "key=- (stdin)"; }

check "no marker in any object of the encrypted volume"
store_fetch enc "$tmp/objs-enc"
n=$(markers_in "$tmp/objs-enc")
echo "$n object(s) with plaintext markers"
[ "$n" -eq 0 ] || fail "plaintext found in the encrypted volume's objects"
grep -q '^encryption=aes-256-gcm$' "$tmp/objs-enc/superblock" ||
    fail "superblock does not say encryption=aes-256-gcm"

check "control: the same data on an unencrypted volume is found"
start_nbdkit "$sock" $plain size=16M
nbdcopy "$tmp/data" "nbd+unix:///?socket=$sock"
stop_nbdkit "$sock"
store_fetch plain "$tmp/objs-plain"
n=$(markers_in "$tmp/objs-plain")
echo "$n object(s) with plaintext markers"
[ "$n" -ge 2 ] || fail "control: the markers were not found in the plain volume"

echo "=== 3. the key is checked before nbdkit serves ==="
nbdkit_refuses 'volume is encrypted.*give its key' $enc
nbdkit_refuses 'wrong key' $enc key=+"$tmp/wrong"
nbdkit_refuses 'key=\+.*but the volume is not encrypted' $plain key=+"$tmp/pass"
nbdkit_refuses 'created with a passphrase' $enc key=+"$tmp/pass" key-format=raw
obj_get enc superblock "$tmp/sb"
sed 's/^size=.*/size=33554432/' "$tmp/sb" > "$tmp/sb-size"
obj_put enc superblock "$tmp/sb-size"
nbdkit_refuses 'superblock fails authentication' $enc key=+"$tmp/pass"
# A plain superblock with the same id and geometry: encryption turned off.
grep -E '^(s3chunk volume|volume-id|size|chunk-size|codec|level|created)' "$tmp/sb" |
    sed 's/^s3chunk volume$/s3chunk volume\nformat-version=1/' > "$tmp/sb-plain"
obj_put enc superblock "$tmp/sb-plain"
nbdkit_refuses 'not encrypted: refused' $enc key=+"$tmp/pass"
obj_put enc superblock "$tmp/sb"
nbdkit_accepts $enc key=+"$tmp/pass"

echo "=== 4. tampered objects read as EIO naming the key ==="
c0=chunks/0000000000000000 c1=chunks/0000000000000001
obj_get enc $c0 "$tmp/c0"
obj_get enc $c1 "$tmp/c1"
read_fails ()
{
    local what=$1 pattern=$2 log
    start_nbdkit "$sock" $enc key=+"$tmp/pass"
    log=${_nbdkit_log[$sock]}
    if nbdcopy "nbd+unix:///?socket=$sock" "$tmp/back" 2>"$tmp/copy.err"; then
        fail "$what: the read succeeded"
    fi
    stop_nbdkit "$sock" || true
    grep -E -q -- "$pattern" "$log" || { cat "$log"; fail "$what: no message matching '$pattern'"; }
    echo "ok: $what: $(grep -E -- "$pattern" "$log" | head -n 1)"
}
# A byte of ciphertext flipped.
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[200]^=1; open(sys.argv[2],"wb").write(b)' "$tmp/c0" "$tmp/c0-flip"
obj_put enc $c0 "$tmp/c0-flip"
read_fails "flipped byte" "read $c0: authentication failed"
obj_put enc $c0 "$tmp/c0"
# Two chunks swapped.
obj_put enc $c0 "$tmp/c1"
read_fails "chunk 1 under chunk 0's key" "read $c0: object holds chunk 1"
obj_put enc $c0 "$tmp/c0"
# Truncated.
head -c 1000 "$tmp/c1" > "$tmp/c1-short"
obj_put enc $c1 "$tmp/c1-short"
read_fails "truncated" "read $c1: .*(truncated|shorter)"
# The plain volume's chunk planted in the encrypted one.
obj_get plain $c1 "$tmp/p1"
obj_put enc $c1 "$tmp/p1"
read_fails "planted plain object" "read $c1: (an unencrypted chunk object|object belongs to another volume)"
obj_put enc $c1 "$tmp/c1"

echo "=== 5. s3chunk info, fsck, rekey ==="
check "info without the key shows the cipher and KDF, unauthenticated"
"$S3CHUNK" info $enc > "$tmp/info" 2>&1 || { cat "$tmp/info"; fail "info"; }
cat "$tmp/info"
grep -q 'encryption: *aes-256-gcm' "$tmp/info" && grep -q 'scrypt N=131072' "$tmp/info" &&
    grep -q 'NOT authenticated' "$tmp/info" || fail "info output"
"$S3CHUNK" info $enc --key=+"$tmp/pass" | grep -q 'authenticated with the key' ||
    fail "info with the key"
check "fsck with the key: clean; without: headers only, said so"
"$S3CHUNK" fsck -q $enc --key=+"$tmp/pass"
"$S3CHUNK" fsck -q $enc > "$tmp/fsck" 2>&1 || { cat "$tmp/fsck"; fail "fsck without key"; }
grep -q 'only object headers can be checked' "$tmp/fsck" || fail "fsck did not say it checks headers only"
check "fsck with the key finds a flipped byte; without the key it cannot"
obj_put enc $c0 "$tmp/c0-flip"
rc=0; "$S3CHUNK" fsck -q $enc --key=+"$tmp/pass" > "$tmp/fsck" 2>&1 || rc=$?
cat "$tmp/fsck"
[ $rc -eq 1 ] && grep -q "corrupt $c0: authentication failed" "$tmp/fsck" || fail "fsck missed the flip"
"$S3CHUNK" fsck -q $enc > /dev/null 2>&1 || fail "header-only fsck should not see a payload flip"
obj_put enc $c0 "$tmp/c0"
check "rekey to a raw key: chunks untouched, old key refused, new key reads"
"$S3CHUNK" rekey $enc --key=+"$tmp/pass" --new-key=+"$tmp/raw" --new-key-format=raw
obj_get enc $c0 "$tmp/c0-after"
cmp "$tmp/c0" "$tmp/c0-after" || fail "rekey rewrote a chunk"
nbdkit_refuses 'a raw key .* exactly 32 bytes' $enc key=+"$tmp/pass"
start_nbdkit "$sock" $enc key=+"$tmp/raw"
nbdcopy "nbd+unix:///?socket=$sock" "$tmp/back"
cmp -n "$size" "$tmp/data" "$tmp/back" || fail "data differs after rekey"
stop_nbdkit "$sock"
"$S3CHUNK" rekey $enc --key=hunter2 --new-key=+"$tmp/raw" > "$tmp/rk" 2>&1 && fail "literal key accepted"
grep -q 'refused' "$tmp/rk" && ! grep -q hunter2 "$tmp/rk" || fail "rekey literal message"

echo "$0: PASS"
