#!/usr/bin/env bash
# disks: 3 64M
# raid0 is byte-compatible with md: what raidmig writes, md (mdadm --build,
# no metadata, same chunk) reads back byte for byte, and the other way round.
# raidmig's superblocks sit in the members' last 16 MiB, past the compared
# range, and survive md's use of the disks.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]}

members="$d0 $d1 $d2"
must load members=$d0,$d1,$d2 level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
cap=$(blockdev --getsize64 /dev/raidmig0)
must random_fill /tmp/pattern $((cap >> 20))M
must dd if=/tmp/pattern of=/dev/raidmig0 bs=1M oflag=direct status=none
must unload

must mdadm --build /dev/md0 --level=0 --chunk=64 --raid-devices=3 $members
check "md reads what raidmig wrote" cmp -n "$cap" /tmp/pattern /dev/md0
must random_fill /tmp/pattern $((cap >> 20))M
must dd if=/tmp/pattern of=/dev/md0 bs=1M count=$((cap >> 20)) oflag=direct status=none
must mdadm --stop /dev/md0

must load members=$d0,$d1,$d2
must wait_dev
check "raidmig reads what md wrote" cmp /tmp/pattern /dev/raidmig0
must unload
finish
