#!/usr/bin/env bash
# disks: 3 128M
# bus: sata nvme
# On-line migration of a plain disk in use to raid5 over 3 disks, SATA and
# NVMe, with the default write-intent bitmap: the capacity the migration adds
# is marked unsynced and resynced after it, while the file system grows into
# it (see migrate_lib.sh; migrate_raid10 covers the zeroing without a bitmap).
. tests/guest/migrate_lib.sh
migrate_test raid5 "${DISKS[0]},${DISKS[1]},${DISKS[2]}"
