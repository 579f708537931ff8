#!/bin/bash
# tests/ceph.sh: a throwaway single-node Ceph cluster with a RADOS Gateway
# (S3) for the test suite and the benchmarks, from Debian's packages
# (ceph-mon ceph-osd radosgw ceph-common).
#
# One monitor, one OSD, one radosgw; no manager, no systemd, auth none,
# everything bound to 127.0.0.1 on free ports.  Every file (config, mon and
# osd data, logs, pid files, admin sockets, run dir) lives under DIR; nothing
# is read from or written to /etc/ceph or /var/lib/ceph.
#
# CLI:
#   tests/ceph.sh start DIR          start a cluster in DIR (created if need
#                                    be, must be empty), print its env lines
#   tests/ceph.sh stop DIR [--rm]    stop the daemons started in DIR (only
#                                    those, by their pid files) and with --rm
#                                    remove DIR
#   tests/ceph.sh env DIR            print the export lines (same as DIR/env)
#   tests/ceph.sh mkbucket DIR NAME  create bucket NAME (S3 PUT, SigV4)
#   tests/ceph.sh ops DIR            count the S3 requests served so far:
#                                    "put_obj 12" ... (by kind, from the ops
#                                    log), "method:GET 40" ..., "status:200 52"
#                                    ... (from the access lines of rgw.log)
#   tests/ceph.sh ops-reset DIR      empty both logs (start a new count)
#   tests/ceph.sh status DIR         list our daemons and whether they run
#
# Sourced (". tests/ceph.sh"): the same as functions, ceph_start DIR,
# ceph_stop DIR [--rm], ceph_env DIR, ceph_mkbucket DIR NAME, ceph_ops DIR,
# ceph_ops_reset DIR, ceph_status DIR; ceph_start also exports the variables below into the
# calling shell.  The functions return non-zero on failure (no exit).
#
# Variables printed by start/env (and written to DIR/env as export lines):
#   S3_ENDPOINT=http://127.0.0.1:PORT  S3_ACCESS_KEY  S3_SECRET_KEY
#   S3_REGION=us-east-1 (radosgw's zonegroup "default" accepts it in SigV4)
#   CEPH_DIR  CEPH_CONF  CEPH_RGW_LOG  CEPH_RGW_OPS_LOG
#
# Environment read by start:
#   CEPH_RGW_PORT          port of the S3 endpoint (default: a free one)
#   CEPH_MON_PORT          port of the monitor (default: a free one)
#   CEPH_OSD_BACKEND       memstore (default) or bluestore
#   CEPH_MEMSTORE_BYTES    memstore size (default 4 GiB; data lives in RAM)
#   CEPH_BLUESTORE_BYTES   size of bluestore's sparse block file (default
#                          64 GiB, allocated as written) in DIR/osd
#   CEPH_START_TIMEOUT     seconds to wait for each step (default 90)
#   CEPH_RGW_DEBUG         debug rgw level (default 1)
#   CEPH_S3_ACCESS_KEY / CEPH_S3_SECRET_KEY  keys of the test user (fixed
#                          defaults; S3_* from the environment are ignored)
#
# Logs (all under DIR/log):
#   mon.a.log osd.0.log rgw.log   the daemons' own logs (debug rgw = 1 puts
#                                 one "beast: ... "METHOD /path HTTP/1.1"
#                                 STATUS ..." access line per request in rgw.log)
#   rgw-ops.log                   the RGW ops log: one JSON object (mostly a
#                                 line; concurrent ones may share a line) per
#                                 S3 request that passed authentication, with
#                                 "operation" (put_obj, get_obj, list_bucket,
#                                 delete_obj, create_bucket, ...), "uri",
#                                 "http_status", "bytes_sent/received",
#                                 "total_time"; `tests/ceph.sh ops DIR`
#                                 counts it
#   mon.a.out osd.0.out rgw.out   the daemons' stdout/stderr
#   admin.log admin.out           ceph / radosgw-admin CLI logs
#
# Requests per kind for a benchmark: `tests/ceph.sh ops-reset DIR` before,
# `tests/ceph.sh ops DIR` after (radosgw appends to its logs, so emptying
# them in place is safe).
#
# S3 requests need SigV4 with an x-amz-content-sha256 header (radosgw
# rejects SigV4 without it): curl --aws-sigv4 "aws:amz:us-east-1:s3"
# --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H "x-amz-content-sha256:
# UNSIGNED-PAYLOAD" ...  Buckets are path-style: $S3_ENDPOINT/BUCKET/KEY.

CEPH_SH_DEFAULT_ACCESS_KEY=S3CHUNKTESTACCESSKEY
CEPH_SH_DEFAULT_SECRET_KEY=s3chunkTestSecretKey0123456789abcdefghij

_ceph_log() { echo "ceph.sh: $*" >&2; }

# A free TCP port on 127.0.0.1 (the kernel's pick; tiny race until the
# daemon binds it, but the ephemeral allocator rotates, so two runs in
# parallel do not get the same one).
_ceph_free_port() {
    if [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
        return
    fi
    local p i
    for i in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

_ceph_abs() { (cd "$1" && pwd -P); }

# Is the process whose pid is in file $1 one of ours and alive (not a zombie)?
_ceph_pid_alive() {
    local pidfile=$1 dir=$2 pid state
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    # Guard against pid reuse: all our daemons were given -c DIR/ceph.conf.
    tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -- "$dir/ceph.conf" \
        || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    [ "$state" != Z ] && [ -n "$state" ]
}

_ceph_tail_logs() {
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        echo "---- tail of $f ----" >&2
        tail -n 40 "$f" >&2
    done
}

# ceph CLI against the cluster in DIR.
_ceph_cli() {
    local dir=$1; shift
    timeout 60 ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@" \
        2>>"$dir/log/admin.out"
}

# Start daemon NAME (the pid file is DIR/pid/NAME.pid): the daemon runs in
# the foreground (-f) as a background job of this shell, detached from our
# stdin/stdout so that make/test harnesses do not wait on it.
_ceph_spawn() {
    local dir=$1 name=$2; shift 2
    (
        # Close the other inherited descriptors (a caller's pipes, make's
        # jobserver) so nobody waits for EOF on them while the daemon runs.
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec "$@"
    ) </dev/null >>"$dir/log/$name.out" 2>&1 &
    echo $! > "$dir/pid/$name.pid"
}

# Wait (up to CEPH_START_TIMEOUT) for command "$@" to succeed while daemon
# NAME stays alive.  On failure print the logs and return 1.
_ceph_wait() {
    local dir=$1 name=$2 what=$3; shift 3
    local deadline=$(( SECONDS + ${CEPH_START_TIMEOUT:-90} ))
    while :; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! _ceph_pid_alive "$dir/pid/$name.pid" "$dir"; then
            _ceph_log "$name died while waiting for $what"
            _ceph_tail_logs "$dir/log/$name.out" "$dir/log/$name.log"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            _ceph_log "timed out after ${CEPH_START_TIMEOUT:-90}s waiting for $what"
            _ceph_tail_logs "$dir/log/$name.out" "$dir/log/$name.log"
            return 1
        fi
        sleep 0.3
    done
}

_ceph_osd_up() {
    _ceph_cli "$1" osd stat -f json | grep -q '"num_up_osds":1'
}

_ceph_rgw_answers() {
    # Any HTTP answer (anonymous GET / gives 200 with an empty bucket list).
    local code
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1") || return 1
    [ "$code" != 000 ]
}

_ceph_write_conf() {
    local dir=$1 fsid=$2 monport=$3 rgwport=$4 backend=$5
    cat > "$dir/ceph.conf" <<EOF
# Generated by tests/ceph.sh: a throwaway test cluster, not for real data.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$monport]
mon initial members = a
public addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
# auth none cannot do msgr2 "secure" mode (radosgw asks for it with the mons).
ms mon client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.\$pid.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/admin.log
log to stderr = false
err to stderr = true
log to syslog = false
crash dir = $dir/crash
exporter sock dir = $dir/run
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
mon allow pool delete = true
mon max pg per osd = 1000
# Commit map changes at once instead of batching them for a second: each
# pool creation / setting by radosgw waits for one.
paxos propose interval = 0.01
paxos min wait = 0.001

[mon]
mon data = $dir/mon/\$cluster-\$id
log file = $dir/log/mon.\$id.log
mon cluster log file = $dir/log/mon-cluster.log

[osd]
osd data = $dir/osd/\$cluster-\$id
log file = $dir/log/osd.\$id.log
osd objectstore = $backend
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-4294967296}
bluestore block path = $dir/osd/block
bluestore block create = true
bluestore block size = ${CEPH_BLUESTORE_BYTES:-68719476736}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore cache size = 1073741824
bdev enable discard = false
osd memory target = 2147483648
osd max object name len = 1024
osd max object namespace len = 256
osd crush update on start = true

[client.rgw.a]
log file = $dir/log/rgw.log
rgw frontends = beast endpoint=127.0.0.1:$rgwport
rgw data = $dir/rgw
rgw enable ops log = true
rgw ops log rados = false
rgw ops log file path = $dir/log/rgw-ops.log
rgw enable usage log = false
rgw run sync thread = false
debug rgw = ${CEPH_RGW_DEBUG:-1}
EOF
}

_ceph_write_env() {
    local dir=$1 rgwport=$2
    cat > "$dir/env" <<EOF
export S3_ENDPOINT=http://127.0.0.1:$rgwport
export S3_ACCESS_KEY=${CEPH_S3_ACCESS_KEY:-$CEPH_SH_DEFAULT_ACCESS_KEY}
export S3_SECRET_KEY=${CEPH_S3_SECRET_KEY:-$CEPH_SH_DEFAULT_SECRET_KEY}
export S3_REGION=us-east-1
export CEPH_DIR=$dir
export CEPH_CONF=$dir/ceph.conf
export CEPH_RGW_LOG=$dir/log/rgw.log
export CEPH_RGW_OPS_LOG=$dir/log/rgw-ops.log
EOF
}

# Kill whatever we started in DIR, quietly (start failed half-way).
# Returns 2 if a daemon could not bind its port, else 1.
_ceph_abort() {
    ceph_stop "$1" >/dev/null 2>&1
    _ceph_port_clash "$1" && return 2
    return 1
}

# Start a cluster in DIR.  The ports are picked free just before the daemons
# bind them; if one was taken meanwhile (a parallel run), start again on
# fresh ports (up to 3 tries).
ceph_start() {
    local dir=${1:?usage: ceph_start DIR} rc _
    for _ in 1 2 3; do
        _ceph_start_once "$dir"
        rc=$?
        [ $rc = 0 ] && break
        [ $rc = 1 ] && return 1
        # rc 2: a port was taken.
        _ceph_log "a port was taken, starting again on other ports"
        (cd "$dir" && rm -rf log run pid mon osd rgw crash ceph.conf keyring monmap env)
    done
    [ $rc = 0 ] || return 1
    # shellcheck disable=SC1091
    . "$dir/env"
}

_ceph_port_clash() {
    [ -z "${CEPH_MON_PORT:-}${CEPH_RGW_PORT:-}" ] &&
        grep -qsE 'Address already in use|bind unable to bind|failed to bind' \
            "$1"/log/mon.a.log "$1"/log/mon.a.out "$1"/log/rgw.log "$1"/log/rgw.out
}

_ceph_start_once() {
    local dir=$1
    local backend=${CEPH_OSD_BACKEND:-memstore}
    case $backend in
        memstore|bluestore) ;;
        *) _ceph_log "CEPH_OSD_BACKEND must be memstore or bluestore"; return 1 ;;
    esac
    local b
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool curl; do
        if ! command -v "$b" >/dev/null 2>&1; then
            _ceph_log "$b not found (apt-get install ceph-mon ceph-osd radosgw ceph-common curl)"
            return 1
        fi
    done
    mkdir -p "$dir" || return 1
    dir=$(_ceph_abs "$dir") || return 1
    if [ -e "$dir/ceph.conf" ]; then
        _ceph_log "$dir already holds a cluster (stop it, use a fresh dir)"
        return 1
    fi
    mkdir -p "$dir"/{log,run,pid,mon,osd,rgw,crash} || return 1

    local t0=$SECONDS
    local monport=${CEPH_MON_PORT:-$(_ceph_free_port)}
    local rgwport=${CEPH_RGW_PORT:-$(_ceph_free_port)}
    while [ "$rgwport" = "$monport" ]; do rgwport=$(_ceph_free_port); done
    local fsid osduuid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osduuid=$(cat /proc/sys/kernel/random/uuid)

    _ceph_write_conf "$dir" "$fsid" "$monport" "$rgwport" "$backend"
    _ceph_write_env "$dir" "$rgwport"
    local conf=$dir/ceph.conf

    # Keyrings are not used (auth none) but mkfs wants a mon keyring.
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. \
        --cap mon 'allow *' >>"$dir/log/admin.out" 2>&1 &&
    ceph-authtool "$dir/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' \
        >>"$dir/log/admin.out" 2>&1 || {
        _ceph_log "ceph-authtool failed"; _ceph_tail_logs "$dir/log/admin.out"; return 1; }

    # ---- monitor
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport]" \
        "$dir/monmap" >>"$dir/log/admin.out" 2>&1 &&
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$dir/keyring" >>"$dir/log/mon.a.out" 2>&1 || {
        _ceph_log "ceph-mon --mkfs failed"
        _ceph_tail_logs "$dir/log/admin.out" "$dir/log/mon.a.out" "$dir/log/mon.a.log"
        return 1; }
    _ceph_spawn "$dir" mon.a ceph-mon -f -c "$conf" -i a
    _ceph_wait "$dir" mon.a "the monitor" _ceph_cli "$dir" mon stat \
        || { _ceph_abort "$dir"; return; }

    # ---- OSD
    local osdid
    osdid=$(_ceph_cli "$dir" osd new "$osduuid") && [ "$osdid" = 0 ] || {
        _ceph_log "ceph osd new failed (got '$osdid')"
        _ceph_tail_logs "$dir/log/admin.out"; _ceph_abort "$dir"; return 1; }
    mkdir -p "$dir/osd/ceph-0"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osduuid" \
        >>"$dir/log/osd.0.out" 2>&1 || {
        _ceph_log "ceph-osd --mkfs failed"
        _ceph_tail_logs "$dir/log/osd.0.out" "$dir/log/osd.0.log"
        _ceph_abort "$dir"; return 1; }
    _ceph_spawn "$dir" osd.0 ceph-osd -f -c "$conf" -i 0
    _ceph_wait "$dir" osd.0 "the OSD to be up" _ceph_osd_up "$dir" \
        || _ceph_abort "$dir" || return 1

    # ---- RADOS gateway (creates its pools at first start)
    _ceph_spawn "$dir" rgw radosgw -f -c "$conf" -n client.rgw.a
    _ceph_wait "$dir" rgw "radosgw to answer on 127.0.0.1:$rgwport" \
        _ceph_rgw_answers "http://127.0.0.1:$rgwport/" \
        || { _ceph_abort "$dir"; return; }

    # ---- test user
    # shellcheck disable=SC1091
    . "$dir/env"
    timeout 60 radosgw-admin -c "$conf" -n client.admin user create \
        --uid=s3chunk-test --display-name="s3chunk test" \
        --access-key="$S3_ACCESS_KEY" --secret="$S3_SECRET_KEY" \
        >>"$dir/log/admin.out" 2>&1 || {
        _ceph_log "radosgw-admin user create failed"
        _ceph_tail_logs "$dir/log/admin.out"; _ceph_abort "$dir"; return 1; }

    # Check that the keys work: an authenticated ListBuckets.
    local code
    code=$(_ceph_s3 "$dir" GET / -o /dev/null -w '%{http_code}') || code=curl-failed
    if [ "$code" != 200 ]; then
        _ceph_log "authenticated ListBuckets returned $code"
        _ceph_tail_logs "$dir/log/rgw.log"; _ceph_abort "$dir"; return 1
    fi
    echo "$((SECONDS - t0))" > "$dir/start-seconds"
    return 0
}

# _ceph_s3 DIR METHOD PATH [curl args...]: one SigV4-signed request.
_ceph_s3() {
    local dir=$1 method=$2 path=$3; shift 3
    (
        # shellcheck disable=SC1091
        . "$dir/env" || exit 1
        curl -sS -m 60 -X "$method" \
            --aws-sigv4 "aws:amz:$S3_REGION:s3" \
            --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
            -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
            "$@" "$S3_ENDPOINT$path"
    )
}

ceph_mkbucket() {
    local dir=${1:?usage: ceph_mkbucket DIR NAME} name=${2:?usage: ceph_mkbucket DIR NAME}
    dir=$(_ceph_abs "$dir") || return 1
    local out code
    out=$(mktemp) || return 1
    code=$(_ceph_s3 "$dir" PUT "/$name" -o "$out" -w '%{http_code}') || code=curl-failed
    if [ "$code" != 200 ]; then
        _ceph_log "creating bucket $name: HTTP $code"
        cat "$out" >&2; echo >&2
        rm -f "$out"
        return 1
    fi
    rm -f "$out"
}

ceph_env() {
    local dir=${1:?usage: ceph_env DIR}
    if [ ! -f "$dir/env" ]; then
        _ceph_log "no cluster in $dir"
        return 1
    fi
    cat "$dir/env"
}

# Count the S3 requests radosgw served: "OPERATION COUNT" lines from the
# ops log (requests that passed authentication: put_obj, get_obj, ...),
# then "method:METHOD COUNT" and "status:CODE COUNT" lines from the beast
# access lines of rgw.log (every request, also the rejected ones).
ceph_ops() {
    local dir=${1:?usage: ceph_ops DIR}
    /usr/bin/python3 - "$dir/log/rgw-ops.log" "$dir/log/rgw.log" \
        "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" <<'EOF'
import collections, os, re, sys
sys.path.insert(0, sys.argv[3])
from rgwlog import entries
ops = collections.Counter(); meth = collections.Counter(); st = collections.Counter()
for obj in entries(sys.argv[1]):
    ops[obj.get("operation", "?")] += 1
access = re.compile(r' beast: \S+ .*?"([A-Z]+) \S+ HTTP/[0-9.]+" (\d{3}) ')
if os.path.exists(sys.argv[2]):
    with open(sys.argv[2], encoding="utf-8", errors="replace") as f:
        for line in f:
            m = access.search(line)
            if m:
                meth[m.group(1)] += 1
                st[m.group(2)] += 1
for k, v in sorted(ops.items()):
    print(k, v)
for k, v in sorted(meth.items()):
    print("method:" + k, v)
for k, v in sorted(st.items()):
    print("status:" + k, v)
EOF
}

ceph_ops_reset() {
    local dir=${1:?usage: ceph_ops_reset DIR} f
    for f in "$dir/log/rgw-ops.log" "$dir/log/rgw.log"; do
        if [ -f "$f" ]; then : > "$f" || return 1; fi
    done
}

ceph_status() {
    local dir=${1:?usage: ceph_status DIR}
    dir=$(_ceph_abs "$dir") || return 1
    local f name rc=0
    for f in "$dir"/pid/*.pid; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .pid)
        if _ceph_pid_alive "$f" "$dir"; then
            echo "$name running pid $(cat "$f")"
        else
            echo "$name not running"; rc=1
        fi
    done
    return $rc
}

# _ceph_stop_group DIR TIMEOUT PIDFILE...: SIGTERM the live ones, wait up to
# TIMEOUT seconds, SIGKILL what is left, wait for it to vanish.
_ceph_stop_group() {
    local dir=$1 timeout=$2; shift 2
    local f pids=() files=()
    for f in "$@"; do
        if _ceph_pid_alive "$f" "$dir"; then
            pids+=("$(cat "$f")"); files+=("$f")
        fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$(( SECONDS + timeout )) left i sig=TERM
    while :; do
        left=0
        for i in "${!files[@]}"; do
            _ceph_pid_alive "${files[$i]}" "$dir" && left=$((left + 1))
        done
        [ "$left" = 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            if [ $sig = KILL ]; then
                _ceph_log "$left daemon(s) still there after SIGKILL"
                return 1
            fi
            for i in "${!files[@]}"; do
                if _ceph_pid_alive "${files[$i]}" "$dir"; then
                    _ceph_log "$(basename "${files[$i]}" .pid) did not stop on SIGTERM, killing"
                    kill -KILL "${pids[$i]}" 2>/dev/null || true
                fi
            done
            sig=KILL
            deadline=$(( SECONDS + 10 ))
        fi
        sleep 0.1
    done
    # Reap them if they were children of this shell (sourced use).
    for i in "${pids[@]}"; do wait "$i" 2>/dev/null || true; done
    return 0
}

# Stop the daemons started in DIR: SIGTERM, wait up to CEPH_STOP_TIMEOUT
# (default 20 s), then SIGKILL.  Only pids from DIR/pid/*.pid whose command
# line names DIR/ceph.conf are signalled.  radosgw goes first (it hangs in
# shutdown without its OSD), then the OSD, the monitor last (an OSD waits
# for the monitor to acknowledge its shutdown).
ceph_stop() {
    local dir=${1:?usage: ceph_stop DIR [--rm]} rm=${2:-}
    if [ ! -d "$dir" ]; then
        return 0
    fi
    dir=$(_ceph_abs "$dir") || return 1
    local t=${CEPH_STOP_TIMEOUT:-20} rc=0 f rgw=() osd=() mon=()
    for f in "$dir"/pid/*.pid; do
        [ -e "$f" ] || continue
        case $(basename "$f") in
            mon.*) mon+=("$f") ;;
            rgw*) rgw+=("$f") ;;
            *) osd+=("$f") ;;
        esac
    done
    _ceph_stop_group "$dir" "$t" "${rgw[@]}" || rc=1
    _ceph_stop_group "$dir" "$t" "${osd[@]}" || rc=1
    _ceph_stop_group "$dir" "$t" "${mon[@]}" || rc=1
    [ $rc = 0 ] || return 1
    rm -f "$dir"/pid/*.pid
    if [ "$rm" = --rm ]; then
        rm -rf -- "$dir"
    fi
    return 0
}

# ---------------------------------------------------------------- CLI
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cmd=${1:-}
    case $cmd in
        start)
            [ $# -eq 2 ] || { echo "usage: $0 start DIR" >&2; exit 2; }
            ceph_start "$2" || exit 1
            cat "$2/env"
            ;;
        stop)
            [ $# -ge 2 ] || { echo "usage: $0 stop DIR [--rm]" >&2; exit 2; }
            ceph_stop "$2" "${3:-}" || exit 1
            ;;
        env)
            [ $# -eq 2 ] || { echo "usage: $0 env DIR" >&2; exit 2; }
            ceph_env "$2" || exit 1
            ;;
        mkbucket)
            [ $# -eq 3 ] || { echo "usage: $0 mkbucket DIR NAME" >&2; exit 2; }
            ceph_mkbucket "$2" "$3" || exit 1
            ;;
        ops)
            [ $# -eq 2 ] || { echo "usage: $0 ops DIR" >&2; exit 2; }
            ceph_ops "$2" || exit 1
            ;;
        ops-reset)
            [ $# -eq 2 ] || { echo "usage: $0 ops-reset DIR" >&2; exit 2; }
            ceph_ops_reset "$2" || exit 1
            ;;
        status)
            [ $# -eq 2 ] || { echo "usage: $0 status DIR" >&2; exit 2; }
            ceph_status "$2" || exit 1
            ;;
        *)
            echo "usage: $0 start|stop|env|mkbucket|ops|ops-reset|status DIR [...]" >&2
            exit 2
            ;;
    esac
fi
