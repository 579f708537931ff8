# s3chunk tests: helpers for the encryption tests, on top of
# tests/functions.sh: raw access to a volume's objects on either store (the
# directory, or the S3 bucket of store_args through curl --aws-sigv4), and
# files with distinctive plaintext to look for in the stored objects.

# Straight to the gateway, also behind the provider emulator (which checks
# signatures the way curl does not sign them, and would translate).
_obj_s3_base ()
{
    echo "${S3CHUNK_TEST_GATEWAY:-${S3CHUNK_TEST_ENDPOINT:-${S3_ENDPOINT:-}}}/$S3CHUNK_TEST_BUCKET"
}

_obj_s3_prefix ()
{
    echo "${S3CHUNK_TEST_PREFIX:-s3chunk-tests}/$(basename "$tmp")/$1/"
}

_obj_curl ()
{
    curl -sS -f -m 60 --aws-sigv4 "aws:amz:${S3_REGION:-us-east-1}:s3" \
        --user "${S3CHUNK_TEST_ACCESS_KEY:-${S3_ACCESS_KEY:-}}:${S3CHUNK_TEST_SECRET_KEY:-${S3_SECRET_KEY:-}}" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

# obj_get NAME KEY FILE / obj_put NAME KEY FILE: one object of volume NAME.
obj_get ()
{
    if store_is_s3; then
        _obj_curl -o "$3" "$(_obj_s3_base)/$(_obj_s3_prefix "$1")$2"
    else
        cp "$tmp/$1/$2" "$3"
    fi
}

obj_put ()
{
    if store_is_s3; then
        _obj_curl -X PUT --data-binary "@$3" -o /dev/null \
            "$(_obj_s3_base)/$(_obj_s3_prefix "$1")$2"
    else
        cp "$3" "$tmp/$1/$2.new" && mv "$tmp/$1/$2.new" "$tmp/$1/$2"
    fi
}

# store_fetch NAME DIR: every object of volume NAME, as files under DIR
# (the directory itself is copied; from S3 each object is downloaded).
store_fetch ()
{
    local name=$1 dest=$2 pfx k
    rm -rf "$dest"
    mkdir -p "$dest"
    if store_is_s3; then
        pfx=$(_obj_s3_prefix "$name")
        # The query is signed as sent: encode the prefix's slashes.
        _obj_curl "$(_obj_s3_base)?list-type=2&max-keys=1000&prefix=${pfx//\//%2F}" |
            grep -o '<Key>[^<]*</Key>' | sed 's/<Key>//; s/<\/Key>//' |
            while read -r k; do
                mkdir -p "$dest/$(dirname "${k#"$pfx"}")"
                _obj_curl -o "$dest/${k#"$pfx"}" "$(_obj_s3_base)/$k"
            done
    else
        cp -a "$tmp/$name/." "$dest/"
    fi
    [ -n "$(ls -A "$dest")" ] || fail "store_fetch $name: no objects"
}

# marker_file FILE N: N distinctive lines "S3CHUNK-PLAINTEXT-MARKER-%06d",
# each followed by 4 KiB of random bytes, so that zstd keeps the lines as
# plain literals (no repeats to match, nothing for Huffman coding to gain)
# and a grep of an unencrypted volume's objects finds them.
marker_file ()
{
    local f=$1 n=$2 i
    : > "$f"
    for (( i = 0; i < n; ++i )); do
        printf 'S3CHUNK-PLAINTEXT-MARKER-%06d\n' "$i" >> "$f"
        head -c 4096 /dev/urandom >> "$f"
    done
}

# markers_in DIR: how many stored files hold a marker line.
markers_in ()
{
    grep -r -a -l -F 'S3CHUNK-PLAINTEXT-MARKER-' "$1" | wc -l
}
