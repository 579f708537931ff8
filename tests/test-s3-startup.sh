#!/usr/bin/env bash
# s3chunk tests: nbdkit with bucket= against a real Ceph RADOS Gateway.
#  1. Every broken setup stops nbdkit at start-up (before it serves), fast,
#     with one message that says what is wrong: a wrong secret, an unknown
#     access key, a missing bucket, an unreachable endpoint, no volume and
#     no size=, a bad bucket name, dir= with bucket=, half a key pair, a
#     missing profile.
#  2. Credentials from every source work (nbdkit serves, data is written,
#     flushed and read back across restarts of the same volume): the
#     parameters, secret-key=+FILE, secret-key=-FD (nbdkit reads "-" only
#     from a terminal),
#     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the shared credentials file
#     with profile= (which skips the environment), AWS_PROFILE, the config
#     file.
#  3. The secret never appears in nbdkit's output, even with -v, except in
#     the line where nbdkit itself echoes a secret-key= given literally.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

s3_start_cluster

# Only what each case gives counts: no credentials or region from the
# caller's environment or home directory.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
      AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_REGION AWS_DEFAULT_REGION \
      AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN \
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
      AWS_EC2_METADATA_DISABLED AWS_EC2_METADATA_SERVICE_ENDPOINT
export HOME=$tmp/home
mkdir -p "$HOME"

B=$S3_BUCKET
E=$S3_ENDPOINT
AK=$S3_ACCESS_KEY
SK=$S3_SECRET_KEY
sock=$tmp/sock

# refuses_fast MAX_SECONDS PATTERN PARAM...: nbdkit_refuses, within
# MAX_SECONDS, with exactly one error line, never showing the secret.
refuses_fast ()
{
    local max=$(( $1 * S3_SLOW )) t0=$SECONDS n
    shift
    nbdkit_refuses "$@"
    [ $((SECONDS - t0)) -le "$max" ] ||
        fail "refusing took $((SECONDS - t0)) s (more than $max s): ${*:2}"
    n=$(grep -c 'error:' "$tmp/refuse.out" || true)
    [ "$n" -eq 1 ] || { cat "$tmp/refuse.out"; fail "$n error lines, expected 1"; }
    ! grep -qF -- "$SK" "$tmp/refuse.out" || fail "the secret key is in the output"
}

echo "=== 1. broken setups are refused at start-up ==="
check "a wrong secret key"
refuses_fast 10 'credentials refused.*secret key.*does not match' \
    bucket=$B endpoint=$E access-key=$AK secret-key=not-the-secret prefix=v size=64M
check "an unknown access key"
refuses_fast 10 'access key NOSUCHACCESSKEY0000 .*is unknown' \
    bucket=$B endpoint=$E access-key=NOSUCHACCESSKEY0000 secret-key=$SK prefix=v size=64M
check "a bucket that does not exist"
refuses_fast 10 'bucket no-such-bucket does not exist' \
    bucket=no-such-bucket endpoint=$E access-key=$AK secret-key=$SK prefix=v size=64M
check "an unreachable endpoint (gives up after retry-time)"
refuses_fast 15 'endpoint http://127\.0\.0\.1:1 is unreachable.*([Cc]onnect|refused)' \
    bucket=$B endpoint=http://127.0.0.1:1 access-key=$AK secret-key=$SK \
    prefix=v size=64M retry-time=3
check "no volume under the prefix and no size="
refuses_fast 10 'no volume here.*give size=' \
    bucket=$B endpoint=$E access-key=$AK secret-key=$SK prefix=empty
check "a bad bucket name"
refuses_fast 5 'bucket=Bad_Bucket: invalid bucket name' \
    bucket=Bad_Bucket endpoint=$E access-key=$AK secret-key=$SK size=64M
check "dir= and bucket= together"
refuses_fast 5 'dir= and bucket= both given' \
    dir=$tmp/vol bucket=$B endpoint=$E access-key=$AK secret-key=$SK size=64M
check "access-key= without secret-key="
refuses_fast 5 'access-key= and secret-key= go together' \
    bucket=$B endpoint=$E access-key=$AK size=64M
check "a profile that is not in the credentials file"
printf '[other]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$AK" "$SK" > "$tmp/creds-other"
AWS_SHARED_CREDENTIALS_FILE=$tmp/creds-other \
    refuses_fast 5 'profile "nosuch" not found' \
    bucket=$B endpoint=$E profile=nosuch size=64M
check "no credentials at all, instance metadata off"
AWS_EC2_METADATA_DISABLED=true \
    refuses_fast 5 'credentials: none found' bucket=$B endpoint=$E size=64M
check "no credentials at all: the chain ends at instance metadata, named"
# (here no metadata service answers: refused, or a 2 s connect timeout)
refuses_fast 8 'credentials: EC2 instance metadata \(IMDSv2\) http://169.254.169.254: PUT' \
    bucket=$B endpoint=$E size=64M
# Nothing was created by the refused starts.
expect_eq "objects under the refused prefixes" 0 "$(s3_keys v/ | wc -l)"

echo "=== 2. credentials from every source work ==="
# One volume, restarted with each source in turn: each run checks what the
# previous one wrote and writes its own pattern 2 MiB further.
M=$((1024 * 1024))
n=0
logs=()

# serve_and_check WHAT NBDKIT-ARGS...: start nbdkit -v, check the previous
# patterns, write and flush a new one, stop (SIGTERM, clean).
serve_and_check ()
{
    local what=$1 i
    shift
    check "credentials from $what"
    start_nbdkit "$sock" -v "$@"
    logs+=("${_nbdkit_log[$sock]}")
    grep -q "s3 credentials: access key $AK from" "${_nbdkit_log[$sock]}" ||
        fail "no 'access key ... from' debug line"
    grep "s3 credentials: access key" "${_nbdkit_log[$sock]}" | head -n 1
    args=()
    for (( i = 1; i <= n; ++i )); do
        args+=(--expect-pattern $((i * 2 * M)) $((M + 100)) "$i")
    done
    n=$((n + 1))
    "$VERIFY" --socket "$sock" --size $((64 * M)) "${args[@]}" \
        --write-pattern $((n * 2 * M)) $((M + 100)) $n --flush \
        --expect-pattern $((n * 2 * M)) $((M + 100)) $n
    stop_nbdkit "$sock"
}

serve_and_check "access-key= and secret-key= parameters" \
    bucket=$B endpoint=$E prefix=creds access-key=$AK secret-key=$SK size=64M
expect_ge "objects of the volume in the bucket" 3 "$(s3_keys creds/ | wc -l)"
s3_keys creds/ | grep -qx 'creds/superblock' || fail "no creds/superblock object"

printf '%s\n' "$SK" > "$tmp/secret"
chmod 600 "$tmp/secret"
serve_and_check "secret-key=+FILE" \
    bucket=$B endpoint=$E prefix=creds access-key=$AK secret-key=+$tmp/secret

check "secret-key=-FD (read from a file descriptor)"
"${nbdkit_cmd[@]}" -U - \
    --run "$VERIFY --socket \$unixsocket --expect-pattern $((2 * M)) $((M + 100)) 1" \
    "$PLUGIN" bucket=$B endpoint=$E prefix=creds access-key=$AK secret-key=-7 \
    7< "$tmp/secret" > "$tmp/fd.out" 2>&1 ||
    { cat "$tmp/fd.out"; fail "secret-key=-7 did not work"; }
echo "ok"

export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK
serve_and_check "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" \
    bucket=$B endpoint=$E prefix=creds
grep -q "access key $AK from environment" "${logs[-1]}" ||
    fail "the credentials did not come from the environment"

# A credentials file whose default profile is wrong: only profile= (or
# AWS_PROFILE) picks the right one.  profile= skips the environment, so
# wrong keys there must not matter.
cat > "$tmp/credentials" <<EOF
[default]
aws_access_key_id = NOSUCHACCESSKEY0000
aws_secret_access_key = wrong

[s3test]
aws_access_key_id = $AK
aws_secret_access_key = $SK
EOF
export AWS_SHARED_CREDENTIALS_FILE=$tmp/credentials
export AWS_ACCESS_KEY_ID=NOSUCHACCESSKEY0000 AWS_SECRET_ACCESS_KEY=wrong
serve_and_check "AWS_SHARED_CREDENTIALS_FILE with profile= (environment skipped)" \
    bucket=$B endpoint=$E prefix=creds profile=s3test
grep -q "$tmp/credentials" "${logs[-1]}" ||
    fail "the credentials did not come from the credentials file"

check "without profile=, the (wrong) environment wins and is refused"
refuses_fast 10 'access key NOSUCHACCESSKEY0000 .*is unknown' \
    bucket=$B endpoint=$E prefix=creds
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

check "without profile= or environment, the (wrong) default profile is used"
refuses_fast 10 'access key NOSUCHACCESSKEY0000 .*is unknown' \
    bucket=$B endpoint=$E prefix=creds

export AWS_PROFILE=s3test
serve_and_check "AWS_PROFILE and the credentials file" \
    bucket=$B endpoint=$E prefix=creds
unset AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE

cat > "$tmp/config" <<EOF
[profile cfgtest]
region = us-east-1
aws_access_key_id = $AK
aws_secret_access_key = $SK
EOF
export AWS_CONFIG_FILE=$tmp/config
serve_and_check "the config file ([profile NAME])" \
    bucket=$B endpoint=$E prefix=creds profile=cfgtest
unset AWS_CONFIG_FILE

echo "=== 3. the secret is never logged ==="
check "no nbdkit -v log holds the secret (but nbdkit's own echo of a literal secret-key=)"
for log in "${logs[@]}" "$tmp/fd.out"; do
    if grep -F -- "$SK" "$log" | grep -v 'config key=secret-key, value=' | grep -q .; then
        grep -nF -- "$SK" "$log" | head -n 5
        fail "the secret key is in $log"
    fi
done
# The +FILE, environment and file sources never put it on a line at all.
for log in "${logs[@]:1}"; do
    ! grep -qF -- "$SK" "$log" || fail "the secret key is in $log"
done
echo "ok: ${#logs[@]} logs checked"

check "a refused secret is not logged with -v either"
rc=0
"${nbdkit_cmd[@]}" -v -U - --run true "$PLUGIN" bucket=$B endpoint=$E \
    prefix=creds access-key=$AK secret-key=+$tmp/wrong-secret \
    > "$tmp/wrong.out" 2>&1 || rc=$?
# (the file does not exist yet: that refusal must not show it either)
[ "$rc" -ne 0 ] || fail "nbdkit accepted a missing secret file"
echo "the-wrong-secret-value" > "$tmp/wrong-secret"
rc=0
"${nbdkit_cmd[@]}" -v -U - --run true "$PLUGIN" bucket=$B endpoint=$E \
    prefix=creds access-key=$AK secret-key=+$tmp/wrong-secret \
    > "$tmp/wrong.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "nbdkit accepted a wrong secret"
grep -q 'secret key.*does not match' "$tmp/wrong.out" || { cat "$tmp/wrong.out"; fail "no message"; }
! grep -qF -e the-wrong-secret-value -e "$SK" "$tmp/wrong.out" ||
    fail "a secret is in the -v output of a refused start"
echo "ok"

echo "$0: PASS"
