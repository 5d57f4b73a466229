#!/usr/bin/env bash
# disks: 4 128M
# bus: sata nvme
# On-line migration of a plain disk in use to raid10 over 4 disks, SATA and NVMe (they zero new capacity differently) (see
# migrate_lib.sh).
. tests/guest/migrate_lib.sh
migrate_test raid10 "${DISKS[0]},${DISKS[1]},${DISKS[2]},${DISKS[3]}"
