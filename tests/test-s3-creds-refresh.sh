#!/usr/bin/env bash
# s3chunk tests: temporary credentials rotate under a running volume.
#
# tests/creds-fake-server plays each credential source on 127.0.0.1 (EC2
# IMDSv2, refusing requests without its session token; the container
# endpoint, checking the Authorization header; STS
# AssumeRoleWithWebIdentity; a credential_process; Alibaba ECS RAM role
# metadata) and hands out REAL keys of the gateway's test user, made with
# radosgw-admin key create, each expiring S3_CREDS_TTL (20) s ahead.  With
# credentials-margin=5 the plugin fetches new keys every 9-10 s.  For each
# source, per rotation: a new gateway key is handed out, the plugin picks
# it up in the background, the old key is deleted from the gateway
# (radosgw-admin key rm), and then random I/O (every read checked against
# a shadow, flushes) must still work, as must the lock's renewals
# (lease=6: renewed every 2 s through the sibling store; a renewal signed
# with a deleted key would fence the volume within 4 s).  No error may be
# logged; after a restart with the last key the disk matches the shadow.
# Then startup refusals: a wrong container token, a web identity token STS
# refuses, an unknown source, a disabled or unreachable IMDS, static keys
# with another source, an unknown ECS role: one line naming the source.
#
# The gateway has STS off and ignores x-amz-security-token for plain S3
# keys (checked below), so the fake services hand out a token with each
# key, as the real ones do, and the plugin sends it.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/s3-functions.sh"

s3_start_cluster
TTL=${S3_CREDS_TTL:-20}
ROT=${S3_CREDS_ROTATIONS:-2}
FAKE=$abs_top_srcdir/tests/creds-fake-server
FAKE_LOG=$tmp/fake.log
KEYS=$tmp/keys.json
sock=$tmp/sock
: > "$FAKE_LOG"

# Nothing from the user's own AWS setup may leak in.
export HOME=$tmp/home
mkdir -p "$HOME"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
      AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ROLE_SESSION_NAME \
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
      AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \
      AWS_EC2_METADATA_DISABLED AWS_EC2_METADATA_SERVICE_ENDPOINT \
      AWS_ENDPOINT_URL AWS_ENDPOINT_URL_STS AWS_SHARED_CREDENTIALS_FILE \
      AWS_CONFIG_FILE ALIBABA_CLOUD_ECS_METADATA

rgw_admin ()
{
    timeout 60 radosgw-admin -c "$CEPH_CONF" -n client.admin "$@" \
        2>>"$tmp/admin.err"
}

# new_key: a new S3 key of the test user; prints "ACCESS SECRET".
known=$tmp/known-keys
echo "$S3_ACCESS_KEY" > "$known"
new_key ()
{
    rgw_admin key create --uid=s3chunk-test --key-type=s3 --gen-access-key \
        --gen-secret > "$tmp/key.json" || fail "radosgw-admin key create"
    /usr/bin/python3 - "$tmp/key.json" "$known" <<'EOF'
import json, sys
keys = json.load(open(sys.argv[1]))["keys"]
known = set(open(sys.argv[2]).read().split())
new = [k for k in keys if k["access_key"] not in known]
assert len(new) == 1, "expected one new key, got %d" % len(new)
with open(sys.argv[2], "a") as f:
    f.write(new[0]["access_key"] + "\n")
print(new[0]["access_key"], new[0]["secret_key"])
EOF
}

# key_works ACCESS SECRET: the gateway's answer to a ListBuckets with it.
key_code ()
{
    curl -sS -m 30 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$1:$2" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "${@:3}" \
        -o /dev/null -w '%{http_code}' "$S3_ENDPOINT/"
}

# hand_out ACCESS SECRET: what the fake services give from now on.
hand_out ()
{
    printf '{"AccessKeyId": "%s", "SecretAccessKey": "%s", "Token": "tok-%s", "ttl": %d}\n' \
        "$1" "$2" "$1" "$TTL" > "$KEYS.tmp"
    mv "$KEYS.tmp" "$KEYS"
}

# wait_handout KIND ACCESS: until the plugin has fetched ACCESS (40 s).
wait_handout ()
{
    local i
    for (( i = 0; i < 400; ++i )); do
        grep -q "handout $1 $2" "$FAKE_LOG" && return 0
        sleep 0.1
    done
    tail -n 20 "$FAKE_LOG"
    fail "the plugin did not fetch $2 from $1 within 40 s"
}

check "the gateway ignores x-amz-security-token for plain S3 keys"
read -r AK SK < <(new_key)
expect_eq "ListBuckets with a new key and a token" 200 \
    "$(key_code "$AK" "$SK" -H "x-amz-security-token: tok-$AK")"
hand_out "$AK" "$SK"

/usr/bin/python3 "$FAKE" --keys "$KEYS" --port-file "$tmp/fake.port" \
    --log "$FAKE_LOG" --web-identity-token "$tmp/jwt" \
    2> "$tmp/fake.err" &
fake_pid=$!
stop_fake () { kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null; }
cleanup_fn stop_fake
for (( i = 0; i < 100; ++i )); do
    [ -s "$tmp/fake.port" ] && break
    sleep 0.1
done
[ -s "$tmp/fake.port" ] || { cat "$tmp/fake.err"; fail "the fake server did not start"; }
F=http://127.0.0.1:$(cat "$tmp/fake.port")
echo "fake credential services at $F"
echo "header.payload.signature-$$" > "$tmp/jwt"
echo "container-auth-secret" > "$tmp/auth"

check "the fake IMDS refuses a request without its session token"
expect_eq "GET the role without a token" 401 \
    "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' \
       "$F/latest/meta-data/iam/security-credentials/")"

# rotate KIND NAME PLUGIN-ARGS...: a volume on source KIND through ROT
# rotations, as described at the top.
rotate ()
{
    local kind=$1 name=$2 ak sk old_ak old_sk r log n
    shift 2
    echo
    echo "=== $name: credentials from $kind ==="
    read -r ak sk < <(new_key)
    hand_out "$ak" "$sk"
    start_nbdkit "$sock" -v bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" \
        prefix="creds-$name" size=64M lease=6 status-interval=3 \
        credentials-margin=5 upload-delay=0.1 "$@"
    log=${_nbdkit_log[$sock]}
    grep -q "access key $ak from" "$log" ||
        { grep "s3 credentials" "$log"; fail "$name: not started with $ak"; }
    "$RANDOM_IO" --socket "$sock" --size 64M --threads 4 --ops 150 \
        --seed 1 --shadow-out "$tmp/$name.shadow" > /dev/null

    for (( r = 1; r <= ROT; ++r )); do
        old_ak=$ak old_sk=$sk
        read -r ak sk < <(new_key)
        hand_out "$ak" "$sk"
        check "$name rotation $r: the plugin fetches $ak in the background"
        # I/O while the refresh comes.
        while ! grep -q "handout $kind $ak" "$FAKE_LOG"; do
            "$RANDOM_IO" --socket "$sock" --size 64M --threads 4 --ops 60 \
                --shadow-in "$tmp/$name.shadow" \
                --shadow-out "$tmp/$name.shadow" > /dev/null
        done
        wait_handout "$kind" "$ak"
        # Requests signed with the old keys just before finish.
        sleep 2
        check "$name rotation $r: the old key $old_ak is deleted from the gateway"
        rgw_admin key rm --uid=s3chunk-test --key-type=s3 \
            --access-key="$old_ak" > /dev/null || fail "radosgw-admin key rm"
        expect_eq "ListBuckets with the deleted key" 403 \
            "$(key_code "$old_ak" "$old_sk")"
        check "$name rotation $r: I/O and flushes with only $ak left"
        "$RANDOM_IO" --socket "$sock" --size 64M --threads 4 --ops 150 \
            --shadow-in "$tmp/$name.shadow" \
            --shadow-out "$tmp/$name.shadow" > /dev/null
        # Two lease periods with only the new key: the renewals go on.
        sleep 6
        ! grep -q "lock is lost\|read-only\|fenced" "$log" ||
            { grep "lock\|fence" "$log" | tail; fail "$name: the volume fenced itself"; }
    done
    check "$name: the status line names the source and the key"
    grep "status (running)" "$log" | tail -n 1 | grep -o "credentials: .*" |
        grep "access key $ak" ||
        { grep "status (" "$log" | tail -n 2; fail "$name: status line"; }
    stop_nbdkit "$sock" || fail "$name: nbdkit failed at exit"
    check "$name: nothing went wrong in the log"
    ! grep -E "error:|refresh failed|renewal failed|s3 credentials.*expired|outcome unknown" "$log" ||
        fail "$name: errors in the log"
    n=$(grep -c "s3 credentials: refreshed from" "$log")
    expect_ge "$name: refreshes" "$ROT" "$n"
    ! grep -q "$sk\|$old_sk" "$log" || fail "$name: a secret key is in the log"
    check "$name: after a restart with the last key, the disk matches the shadow"
    start_nbdkit "$sock" bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" \
        prefix="creds-$name" access-key="$ak" secret-key="$sk"
    "$RANDOM_IO" --socket "$sock" --size 64M --verify-only \
        --shadow-in "$tmp/$name.shadow"
    stop_nbdkit "$sock"
    LAST_AK=$ak LAST_SK=$sk
}

# EC2 IMDSv2, found by the chain (nothing else configured), moved by
# AWS_EC2_METADATA_SERVICE_ENDPOINT.
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$F
rotate imds imds
unset AWS_EC2_METADATA_SERVICE_ENDPOINT
expect_eq "requests without the IMDSv2 token" 1 \
    "$(grep -c 'refused imds no-token' "$FAKE_LOG")"

check "s3chunk info names the source and the key id"
AWS_EC2_METADATA_SERVICE_ENDPOINT=$F "$S3CHUNK" info bucket="$S3_BUCKET" \
    endpoint="$S3_ENDPOINT" prefix=creds-imds credentials=imds \
    > "$tmp/info.out" 2>&1 || { cat "$tmp/info.out"; fail "s3chunk info"; }
grep "^credentials: *imds (EC2 instance metadata (IMDSv2) $F" "$tmp/info.out" ||
    { cat "$tmp/info.out"; fail "s3chunk info: no credentials line"; }
! grep -q "$LAST_SK" "$tmp/info.out" || fail "s3chunk info shows the secret"

# The container endpoint (EKS Pod Identity's shape: FULL_URI on loopback,
# the Authorization token from a file).
export AWS_CONTAINER_CREDENTIALS_FULL_URI=$F/container/credentials
export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$tmp/auth
rotate container container credentials=container
check "a wrong container Authorization token: refused at startup, named"
echo wrong > "$tmp/auth.bad"
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$tmp/auth.bad nbdkit_refuses \
    "container credentials $F/container/credentials.*HTTP 401.*InvalidToken" \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" prefix=creds-container
unset AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE

# STS AssumeRoleWithWebIdentity, unsigned, at AWS_ENDPOINT_URL_STS.
export AWS_WEB_IDENTITY_TOKEN_FILE=$tmp/jwt
export AWS_ROLE_ARN=arn:aws:iam::123456789012:role/s3chunk-test
export AWS_ROLE_SESSION_NAME=s3chunk-test-session
export AWS_ENDPOINT_URL_STS=$F/sts
rotate sts web-identity
grep -q "handout sts .* session s3chunk-test-session" "$FAKE_LOG" ||
    fail "AWS_ROLE_SESSION_NAME was not sent"
check "a web identity token STS refuses: refused at startup, named"
echo "not-the-token" > "$tmp/jwt.bad"
AWS_WEB_IDENTITY_TOKEN_FILE=$tmp/jwt.bad nbdkit_refuses \
    "web identity .*AssumeRoleWithWebIdentity: HTTP 400: InvalidIdentityToken" \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" prefix=creds-web-identity
unset AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ROLE_SESSION_NAME \
      AWS_ENDPOINT_URL_STS

# credential_process in a profile of the config file.
export AWS_CONFIG_FILE=$tmp/aws-config
printf '[profile rotating]\ncredential_process = /usr/bin/python3 %s --process --keys %s --log %s\n' \
    "$FAKE" "$KEYS" "$FAKE_LOG" > "$AWS_CONFIG_FILE"
rotate process process profile=rotating
unset AWS_CONFIG_FILE

# Alibaba ECS RAM role metadata: its own token headers, the role asked.
rotate alibaba ecs-ram-role credentials=ecs-ram-role metadata-endpoint="$F"
expect_eq "requests without the ECS metadata token" 0 \
    "$(grep -c 'refused alibaba' "$FAKE_LOG")"

check "refusals at startup"
nbdkit_refuses "credentials=ssh: invalid value" bucket="$S3_BUCKET" \
    endpoint="$S3_ENDPOINT" credentials=ssh
AWS_EC2_METADATA_DISABLED=true nbdkit_refuses \
    "credentials=imds, but AWS_EC2_METADATA_DISABLED=true" \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" credentials=imds
nbdkit_refuses \
    "EC2 instance metadata \(IMDSv2\) http://127.0.0.1:1: PUT http://127.0.0.1:1/latest/api/token: " \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" credentials=imds \
    metadata-endpoint=http://127.0.0.1:1
nbdkit_refuses "static credentials, but credentials=imds" \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" credentials=imds \
    access-key=A secret-key=B
nbdkit_refuses "ECS instance RAM role metadata $F, role other-role: GET .*HTTP 404" \
    bucket="$S3_BUCKET" endpoint="$S3_ENDPOINT" \
    credentials=ecs-ram-role:other-role metadata-endpoint="$F"

echo "$0: PASS"
