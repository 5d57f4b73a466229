#!/usr/bin/env bash
# disks: 3 128M
# A power cut during random writes on a clean raid5, driven from the host:
# the first boot (tests/vm/guest/power_cut_resync.sh) makes a raid5 over 3
# disks with a write-intent bitmap of 1 MiB regions and runs fio random 4k
# writes over it at queue depth 16 (and fsync'd files' worth of data
# recorded as they complete); the host kills QEMU with SIGKILL in the middle.
# The second boot assembles the array: the regions the bitmap marks are
# resynced (dmesg), raidmig's own check then finds mismatch_cnt 0, every
# write fio completed with an fsync reads back, and md, created over the
# same disks, finds mismatch_cnt 0 in its check. Without a resync, md's
# check finds stripes whose parity disagrees with the data.
#
#   tests/vm/power_cut_resync.sh     (RAIDMIG_OUT: log directory; CRASH_SEED)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. tests/vm/lib/power_cut.sh

power_cut_begin "test"
power_cut raid5 3 128M tests/vm/guest/power_cut_resync.sh
power_cut_end
