#!/usr/bin/env bash
# A power cut during a rebuild, driven from the host, for raid5 over 3,
# raid1 over 2 and raid10 over 4: the first boot (tests/vm/guest/power_cut_rebuild.sh) fills
# the volume, fails role 1, adds a replacement with the rebuild throttled
# and runs fio random writes; the host kills QEMU with SIGKILL in the middle
# of the rebuild. The second boot assembles with the replacement: the
# rebuild resumes from its recorded position (raid5 is refused first, as md
# refuses a dirty degraded start, if the power went while a stripe above that
# position was being written, and then forced), ends clean, every fio job
# that completed reads back, and raidmig's and md's checks find no mismatch.
#
#   tests/vm/power_cut_rebuild.sh [LEVEL...]   (RAIDMIG_OUT: log directory; CRASH_SEED)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. tests/vm/lib/power_cut.sh

power_cut_begin "during a rebuild"
for level in ${*:-raid5 raid1 raid10}; do
  power_cut $level 5 128M tests/vm/guest/power_cut_rebuild.sh $level
done
power_cut_end
