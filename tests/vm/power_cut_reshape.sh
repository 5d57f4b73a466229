#!/usr/bin/env bash
# Power cuts during a reshape, driven from the host, for a raid5 grow
# (3 -> 4 members) and a raid5 chunk change (64 -> 128 KiB): the first boot
# (tests/vm/guest/power_cut_reshape.sh) starts the reshape throttled under
# ext4 (grown into the new capacity at once) with fsynced file writes and
# fio passes; the host kills QEMU with SIGKILL at a random moment, CUTS
# times in a row (default 3), each boot after the first assembling from
# the superblocks, checking that the reshape resumed by itself and that
# every fsynced file and completed fio pass reads back, and writing again;
# the last boot lets the reshape end, and raidmig's check and md's (over
# the same members, as the outside oracle) find no mismatch.
#
#   tests/vm/power_cut_reshape.sh [grow|chunk...]   (RAIDMIG_OUT: log directory; CRASH_SEED; CUTS)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. tests/vm/lib/power_cut.sh

power_cut_begin "during a reshape"
export CUTS=${CUTS:-3}
for pair in ${*:-grow chunk}; do
  power_cut reshape-$pair 4 128M tests/vm/guest/power_cut_reshape.sh $pair
done
power_cut_end
