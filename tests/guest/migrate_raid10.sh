#!/usr/bin/env bash
# disks: 4 128M
# bus: sata nvme
# On-line migration of a plain disk in use to raid10 over 4 disks, without a
# write-intent bitmap: the migration zeroes the capacity it adds, which SATA
# and NVMe do differently (pages of zeros, write-zeroes). See migrate_lib.sh;
# migrate_raid5 covers the default, a bitmap that takes that capacity as
# regions to resync.
. tests/guest/migrate_lib.sh
migrate_test raid10 "${DISKS[0]},${DISKS[1]},${DISKS[2]},${DISKS[3]}" bitmap_region_mb=0
