#!/usr/bin/env bash
# s3chunk tests: xfs through the kernel (nbdfuse + loop device) on the
# plugin: mkfs, a tree of files, umount and a clean stop; then restart,
# xfs_repair -n, mount and verify every checksum, link count and permission.
# Root only (skips otherwise).  See run_e2e in functions.sh.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

skip_if_valgrind "(too slow through the kernel)"
run_e2e xfs
