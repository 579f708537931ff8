#!/usr/bin/env bash
# s3chunk tests: requests at and beyond the edges of the disk and
# zero-length requests, sent with libnbd's strict mode off so that the
# server's own answers are checked (tests/nbd-edges.c): EINVAL beyond the
# end (ENOSPC for writes), refused writes change nothing, zero-length
# requests are answered and leave the connection working, and 64 MiB
# requests (nbdkit's largest, four times the cache) work.  On a disk of
# whole chunks and on one whose last chunk is partial.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

requires nbdkit --version
make_tmpdir
requires_test_programs
EDGES=$abs_top_builddir/tests/nbd-edges
[ -x "$EDGES" ] || fail "$EDGES is missing: run make check"
sock=$tmp/sock

check "100 MiB of 64 KiB chunks, 16 MiB cache"
start_nbdkit "$sock" $(store_args whole) size=100M chunk-size=64K cache-size=16M
"$EDGES" --socket "$sock"
stop_nbdkit "$sock"

check "5 MiB + 1536 bytes: the last 64 KiB chunk is partial"
start_nbdkit "$sock" $(store_args partial) size=$((5 * 1024 * 1024 + 1536)) \
    chunk-size=64K cache-size=16M
"$EDGES" --socket "$sock"
check "the tail written at the edge survives a restart"
"$VERIFY" --socket "$sock" --write-pattern $((5 * 1024 * 1024)) 1536 3 --flush
stop_nbdkit "$sock"
start_nbdkit "$sock" $(store_args partial) cache-size=16M
"$VERIFY" --socket "$sock" --size $((5 * 1024 * 1024 + 1536)) \
    --expect-pattern $((5 * 1024 * 1024)) 1536 3
stop_nbdkit "$sock"
echo "$0: PASS"
