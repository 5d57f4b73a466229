#!/usr/bin/env bash
# disks: 9 96M
# 1. A rebuild interrupted by an unload resumes where it was recorded: raid5
#    over 3 with 32 MiB of data A, role 1 failed, a replacement added with
#    the rebuild throttled; the module is unloaded half-way; reloaded with
#    the replacement among the members, the rebuild resumes from a position
#    past 0 (dmesg) and ends clean; A reads back; md check finds no mismatch.
# 2. A hot spare added in advance takes over at once: raid1 over 2 with a
#    spare, kept across a reload (given with the members, it is a spare
#    again, as mdadm assembles spares); role 0 fails under a write; the
#    spare is rebuilt without anyone asking, and the array ends clean with A
#    intact.
# `remove` releases a faulty member's device (device-mapper can then take it
# down), the device a spare took over from, and a spare; it refuses a member
# in sync and a device that is not the array's.
. tests/guest/lib.sh

random_fill /tmp/A 32M
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} new=${DISKS[3]}
must dmsetup create m1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
must load members="$d0,/dev/mapper/m1,$d2" level=raid5 chunk_kb=64 assume_clean=1
must wait_dev
must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
must dmsetup load m1 --table "0 $(blockdev --getsz "$d1") error"
must dmsetup resume m1
must dd if=/tmp/A of=/dev/raidmig0 bs=1M count=1 oflag=direct conv=notrunc status=none
check "raid5: degraded" wait_state degraded 20
# The faulty member removed (md's --remove): its device is released at
# once, so device-mapper can take its table down; a member in sync is not.
check "raid5: a member in sync is not removed" bash -c "! echo $d0 > $SYS/remove"
must bash -c "echo /dev/mapper/m1 > $SYS/remove"
check "raid5: the removed member's device is free" dmsetup remove m1
check "raid5: roles show it removed ($(sed -n 2p $SYS/roles))" grep -q "^1 removed faulty" $SYS/roles
echo 4096 > $SYS/speed_limit_max_kbps
must bash -c "echo $new > $SYS/add"
# 160 MiB of volume at 4 MiB/s: well under way after 6 s, far from done.
sleep 6
say "before the unload: progress $(cat $SYS/progress), roles: $(tr '\n' ';' < $SYS/roles)"
check "raid5: rebuilding before the unload" grep -q "^1 $new rebuilding" $SYS/roles
check "raid5: speed and time left shown ($(cat $SYS/speed_kbps) KiB/s, $(cat $SYS/eta_seconds) s)" \
  bash -c "grep -Eqx '[1-9][0-9]*' $SYS/speed_kbps && grep -Eqx '[0-9]+' $SYS/eta_seconds"
unload_within 60 || finish

mark=$(dmesg | wc -l)
must load members="$d0,$new,$d2"
must wait_dev
new_lines=$(dmesg | tail -n +$((mark + 1)))
from=$(grep -o "rebuilding role 1 onto $new from sector [0-9]*" <<<"$new_lines" | awk '{print $NF}')
say "after the reload: ${from:+resumed from sector $from}; roles: $(tr '\n' ';' < $SYS/roles)"
check "raid5: the rebuild resumed past the start (sector ${from:-none})" test "${from:-0}" -gt 0
check "raid5: clean after the resumed rebuild" wait_state clean 300
check "raid5: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=32 iflag=direct status=none | cmp -s - /tmp/A"
cap=$(blockdev --getsz /dev/raidmig0)
unload_within 60 || finish
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --level=5 \
  --layout=left-symmetric --chunk=64 --size=$((cap / 2 / 2)) --raid-devices=3 "$d0" "$new" "$d2"
md_check "raid5"
must mdadm --stop /dev/md0
must mdadm --zero-superblock "$d0" "$new" "$d2"

# 2. A hot spare.
e0=${DISKS[4]} e1=${DISKS[5]} spare=${DISKS[6]}
must dmsetup create m0 --table "0 $(blockdev --getsz "$e0") linear $e0 0"
must load members="/dev/mapper/m0,$e1" level=raid1 assume_clean=1
must wait_dev
must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
must bash -c "echo $spare > $SYS/add"
check "raid1: the spare is listed" grep -qx "$spare" $SYS/spares
check "raid1: still clean with a spare" test "$(cat $SYS/state)" = clean
# The spare is recorded on it: a load given it holds it as a spare again.
unload_within 60 || finish
mark=$(dmesg | wc -l)
must load members="/dev/mapper/m0,$e1,$spare"
must wait_dev
check "raid1: a spare again after a reload ($(cat $SYS/spares))" grep -qx "$spare" $SYS/spares
check "raid1: dmesg names the spare at load" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q '$spare is a hot spare'"
check "raid1: clean after the reload with a spare" test "$(cat $SYS/state)" = clean
mark=$(dmesg | wc -l)
must dmsetup load m0 --table "0 $(blockdev --getsz "$e0") error"
must dmsetup resume m0
must dd if=/tmp/A of=/dev/raidmig0 bs=1M count=1 oflag=direct conv=notrunc status=none
check "raid1: clean again, the spare rebuilt" wait_state clean 120
new_lines=$(dmesg | tail -n +$((mark + 1)))
check "raid1: dmesg tells the take-over" grep -q "hot spare $spare takes over role 0" <<<"$new_lines"
check "raid1: role 0 is the spare, in sync" grep -q "^0 $spare in_sync" $SYS/roles
check "raid1: no spare left" test -z "$(cat $SYS/spares)"
check "raid1: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=32 iflag=direct status=none | cmp -s - /tmp/A"
# The device the spare took over from is removed and released; a spare
# added and removed again is free for anyone.
must bash -c "echo /dev/mapper/m0 > $SYS/remove"
check "raid1: the replaced device is free" dmsetup remove m0
spare2=${DISKS[7]}
must bash -c "echo $spare2 > $SYS/add"
check "raid1: a second spare listed" grep -qx "$spare2" $SYS/spares
must bash -c "echo $spare2 > $SYS/remove"
check "raid1: the spare removed" test -z "$(cat $SYS/spares)"
check "raid1: the removed spare is free (opened exclusively)" python3 -c "import os; os.close(os.open('$spare2', os.O_RDWR | os.O_EXCL))"
check "raid1: removing a device that is not the array's fails" bash -c "! echo ${DISKS[8]} > $SYS/remove"
unload_within 60 || finish
finish
