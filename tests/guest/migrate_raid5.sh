#!/usr/bin/env bash
# disks: 3 128M
# bus: sata nvme
# On-line migration of a plain disk in use to raid5 over 3 disks, SATA and NVMe (they zero new capacity differently) (see
# migrate_lib.sh).
. tests/guest/migrate_lib.sh
migrate_test raid5 "${DISKS[0]},${DISKS[1]},${DISKS[2]}"
