#!/usr/bin/env bash
# s3chunk tests: ext4 through the kernel on an ENCRYPTED volume (the test
# of test-e2e-ext4.sh with key=+FILE at every start: mkfs, a tree of files,
# restart, e2fsck, every checksum), plus files of distinctive plaintext;
# then no object in the store holds any of it.  The control: the same
# file on an unencrypted volume is found by the same grep.  Root only.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/crypt-functions.sh"

skip_if_valgrind "(too slow through the kernel)"
requires nbdcopy --version
requires curl --version

keydir=$(mktemp -d "${TMPDIR:-/tmp}/s3chunk-e2e-key.XXXXXX")
cleanup_fn rm -rf "$keydir"
printf 'an e2e test passphrase\n' > "$keydir/pass"
chmod 600 "$keydir/pass"
marker_file "$keydir/markers" 600

e2e_populate_extra ()
{
    cp "$keydir/markers" "$1/markers-1"
    cp "$keydir/markers" "$1/big/markers-2"
    grep -a -c 'S3CHUNK-PLAINTEXT-MARKER-' "$1/markers-1"
}
run_e2e ext4 key=+"$keydir/pass"

echo "=== no plaintext in the encrypted volume's objects ==="
store_fetch vol "$tmp/objs-enc"
grep -q '^encryption=aes-256-gcm$' "$tmp/objs-enc/superblock" ||
    fail "the volume is not encrypted"
n=$(markers_in "$tmp/objs-enc")
echo "$(find "$tmp/objs-enc" -type f | wc -l) objects fetched, $n with markers"
[ "$n" -eq 0 ] || fail "plaintext markers found in $n encrypted object(s)"
# Nor the compressible text of populate_tree (found raw only if not
# compressed, so this one is a weaker check; the markers are the real one).
! grep -r -a -q -F 's3chunk end-to-end test: a compressible line' "$tmp/objs-enc" ||
    fail "populate_tree's text found in the encrypted objects"

echo "=== control: the same markers on an unencrypted volume are found ==="
sock=$tmp/sock-plain
start_nbdkit "$sock" $(store_args plain) size=64M
nbdcopy "$keydir/markers" "nbd+unix:///?socket=$sock"
stop_nbdkit "$sock"
store_fetch plain "$tmp/objs-plain"
n=$(markers_in "$tmp/objs-plain")
echo "$n unencrypted object(s) with markers"
[ "$n" -ge 2 ] || fail "control: markers not found on the unencrypted volume"
echo "$0: PASS"
