#!/usr/bin/env bash
# s3chunk tests: every bad parameter is refused when nbdkit starts, with a
# message naming the parameter; volume geometry fixed at creation cannot be
# changed by a later start; --help lists every parameter.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
requires nbdinfo --version
make_tmpdir

# Keep the S3 hook simple here: parameter checks are store-independent,
# and the volume checks below use a directory.
dir=$tmp/vol

# Every check runs; the failures are listed at the end.
failures=()
refuses () { nbdkit_refuses "$@" || failures+=("refuses $*"); }
accepts () { nbdkit_accepts "$@" || failures+=("accepts $*"); }

check "malformed or out-of-range values are refused, naming the parameter"
refuses 'no store given.*dir=' size=1M
refuses "unknown parameter 'foo'" dir=$dir size=1M foo=bar
refuses "unknown parameter 'chunksize'" dir=$dir size=1M chunksize=1M
refuses 'size=abc: invalid' dir=$dir size=abc
refuses 'size=1X: invalid' dir=$dir size=1X
refuses 'size=-1: invalid' dir=$dir size=-1
refuses 'size=0: invalid' dir=$dir size=0
refuses 'size=: invalid' dir=$dir size=
refuses 'size=1000: invalid.*multiple of 512' dir=$dir size=1000
refuses 'size=2E: invalid' dir=$dir size=2E
refuses 'size=99999999999999999999999: invalid' \
               dir=$dir size=99999999999999999999999
refuses 'chunk-size=3M: invalid.*power of two' dir=$dir size=1M chunk-size=3M
refuses 'chunk-size=32K: invalid' dir=$dir size=1M chunk-size=32K
refuses 'chunk-size=128M: invalid' dir=$dir size=1M chunk-size=128M
refuses 'chunk-size=0: invalid' dir=$dir size=1M chunk-size=0
refuses 'level=0: invalid' dir=$dir size=1M level=0
refuses 'level=20: invalid' dir=$dir size=1M level=20
refuses 'level=x: invalid' dir=$dir size=1M level=x
refuses 'compression=lz4: invalid' dir=$dir size=1M compression=lz4
refuses 'level=3.*compression=none' dir=$dir size=1M level=3 compression=none
refuses 'level=3.*compression=none' dir=$dir size=1M compression=none level=3
refuses 'cache-size=1M: invalid' dir=$dir size=1M cache-size=1M
refuses 'cache-size=lots: invalid' dir=$dir size=1M cache-size=lots
refuses 'connections=0: invalid' dir=$dir size=1M connections=0
refuses 'connections=257: invalid' dir=$dir size=1M connections=257
refuses 'connections=-1: invalid' dir=$dir size=1M connections=-1
refuses 'upload-delay=x: invalid' dir=$dir size=1M upload-delay=x
refuses 'upload-delay=-1: invalid' dir=$dir size=1M upload-delay=-1
refuses 'upload-delay=2h: invalid' dir=$dir size=1M upload-delay=2h

check "none of the refused starts created a volume"
if [ -e "$dir" ]; then
    ls -lR "$dir"
    echo "$0: FAIL: a refused start left $dir behind"
    failures+=("refused starts create nothing")
fi

check "a missing volume without size= is refused and says to give size="
# A user who starts nbdkit on a new path without size= must learn that
# size= creates the volume, not only that the directory is missing.
refuses 'size=' dir=$tmp/missing
mkdir "$tmp/empty"
refuses 'give size=' dir=$tmp/empty
touch "$tmp/file"
refuses "$tmp/file.*(directory|Not a directory)" dir=$tmp/file size=1M

check "valid parameters are accepted (suffixes, fractional delay)"
accepts dir=$dir size=64M chunk-size=64K compression=zstd level=3 \
               cache-size=16M connections=1 upload-delay=500ms
nbdinfo_size=$("${nbdkit_cmd[@]}" -U - --run 'nbdinfo --size "$uri"' \
                   "$PLUGIN" dir=$dir) || true
if [ "$nbdinfo_size" = 67108864 ]; then
    echo "ok: reopened without size=: 67108864 bytes"
else
    echo "$0: FAIL: reopened volume has size '$nbdinfo_size', expected 67108864"
    failures+=("reopen keeps the size")
fi
accepts dir=$tmp/raw size=1G chunk-size=64M compression=none \
               upload-delay=0
accepts dir=$tmp/odd size=1536 chunk-size=64K

check "geometry fixed at creation cannot be changed later"
refuses 'chunk-size.*differs|chunk size' dir=$dir chunk-size=128K
refuses 'chunk-size.*differs|chunk size' dir=$dir chunk-size=1M
refuses 'level.*differs|compression' dir=$dir level=5
refuses 'level.*differs|compression' dir=$dir compression=none
refuses 'level.*differs|compression' dir=$tmp/raw compression=zstd
check "the same geometry given again is accepted"
accepts dir=$dir chunk-size=64K level=3 compression=zstd

check "a size smaller than the volume is refused, saying why"
refuses 'size=.*smaller.*(shrink|destroy|data)' dir=$dir size=32M
refuses 'size=.*smaller' dir=$dir size=67108352
accepts dir=$dir size=64M

check "nbdkit $PLUGIN --help lists every parameter"
"${nbdkit_cmd[@]}" "$PLUGIN" --help >"$tmp/help" 2>&1
for p in dir size chunk-size compression level cache-size connections \
         upload-delay; do
    if grep -q "^ *$p=" "$tmp/help"; then
        echo "ok: --help lists $p="
    else
        echo "$0: FAIL: --help does not list $p="
        failures+=("--help lists $p=")
    fi
done
check "the man page documents every parameter"
pod=$abs_top_srcdir/plugin/nbdkit-s3chunk-plugin.pod
for p in dir size chunk-size compression level cache-size connections \
         upload-delay; do
    if grep -q "^=item B<$p=" "$pod"; then
        echo "ok: the man page documents $p="
    else
        echo "$0: FAIL: $pod does not document $p="
        failures+=("man page documents $p=")
    fi
done

check "a damaged or foreign superblock stops nbdkit at start-up, naming it"
# (The volume $dir exists from above; each case edits a copy of its
# superblock and puts the original back.)
sb=$dir/superblock
cp "$sb" "$tmp/superblock.orig"
sb_refuses ()
{
    local pattern=$1
    shift
    "$@"
    refuses "$pattern" dir=$dir
    rm -rf "$sb"
    cp "$tmp/superblock.orig" "$sb"
}
sb_refuses 'superblock has format version 3.*reads versions 1 and 2' \
    sed -i 's/^format-version=1$/format-version=3/' "$sb"
sb_refuses 'superblock.*format-version' \
    sed -i 's/^format-version=1$/format-version=x/' "$sb"
sb_refuses 'superblock.*not an s3chunk superblock' \
    eval 'head -c 300 /dev/urandom > "$sb"'
sb_refuses 'superblock.*not an s3chunk superblock' \
    eval 'printf "s3chunk volume\nformat-version=1\n\0\n" > "$sb"'
sb_refuses 'superblock.*not an s3chunk superblock' eval ': > "$sb"'
sb_refuses 'superblock.*missing fields' eval 'head -n 4 "$tmp/superblock.orig" > "$sb"'
sb_refuses 'superblock.*unknown superblock field "colour"' \
    eval 'echo colour=blue >> "$sb"'
sb_refuses 'superblock.*(larger than|too large)' \
    eval 'yes x=y | head -c 5000 >> "$sb"'
sb_refuses 'superblock.*bad size' sed -i 's/^size=.*/size=1000/' "$sb"
sb_refuses 'superblock.*bad chunk-size' sed -i 's/^chunk-size=.*/chunk-size=3145728/' "$sb"
sb_refuses 'superblock.*unknown codec' sed -i 's/^codec=.*/codec=lz4/' "$sb"
sb_refuses 'superblock.*codec and level disagree' sed -i 's/^level=.*/level=0/' "$sb"
sb_refuses 'superblock.*volume-id' sed -i 's/^volume-id=.*/volume-id=xyz/' "$sb"
sb_refuses 'superblock' eval 'rm "$sb" && mkdir "$sb"'
check "after all that, the untouched volume still opens"
accepts dir=$dir

check "bucket names S3 would reject are refused before any request"
for b in ab Bad_Bucket a..b -ab ab- .ab bucket_name 'my bucket' \
         "$(printf 'a%.0s' {1..64})" 192.168.1.1 xn--bucket bucket-s3alias; do
    refuses "bucket=$b: invalid bucket name" bucket="$b" \
        endpoint=http://127.0.0.1:1 access-key=a secret-key=b size=1M
done

check "conflicting parameters are refused"
refuses 'dir= and bucket= both given' dir=$tmp/c bucket=abc size=1M
refuses 'are for bucket=, not dir=' dir=$tmp/c prefix=p size=1M
refuses 'are for bucket=, not dir=' dir=$tmp/c endpoint=http://127.0.0.1:1 size=1M
refuses 'are for bucket=, not dir=' dir=$tmp/c access-key=a secret-key=b size=1M
refuses 'access-key= and secret-key= go together' bucket=abc access-key=a size=1M
refuses 'access-key= and secret-key= go together' bucket=abc secret-key=b size=1M
refuses 'force-unlock=true conflicts with lock=none' dir=$tmp/c size=1M \
    lock=none force-unlock=true
[ ! -e "$tmp/c" ] || failures+=("a refused start created $tmp/c")

if [ ${#failures[@]} -gt 0 ]; then
    echo "$0: ${#failures[@]} check(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "$0: PASS"
