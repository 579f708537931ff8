#!/usr/bin/env bash
# s3chunk tests: crash consistency of xfs on the plugin (nbdfuse + loop).
# A workload (tests/fsync-workload.c) writes, replaces, deletes and appends
# files, fsyncing each and journaling (outside the volume) what each fsync
# promised; nbdkit is killed with SIGKILL at a random moment, five times
# (S3CHUNK_CRASH_ROUNDS); after each kill the volume is restarted with
# force-unlock=true, the log replayed (mount, umount), checked with
# xfs_repair -n and every journaled byte compared.  The seed is printed;
# S3CHUNK_CRASH_SEED=N replays the plan.  Root only.
source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$abs_top_srcdir/tests/robust-functions.sh"

run_crash_fs xfs
