#!/usr/bin/env bash
# disks: 5 160M
# A member that went missing for a while and comes back is re-added with
# only the regions written meanwhile rebuilt (the write-intent bitmap kept
# them, md's bitmap-based re-add): raid1 over 2 and raid5 over 3 with 1 MiB
# regions, 64 MiB of data A; role 1 (a device-mapper linear device) fails
# under an error table; 3 MiB of B are written degraded; the member's table
# is restored, the member removed (`remove`) and added again (`add`): dmesg
# says it is re-added, the rebuild copies only a few windows and skips the
# rest, the array ends clean, A with B over it reads back, and raidmig's
# check (copies, parity) finds no mismatch.
. tests/guest/lib.sh

head -c 64M /dev/urandom > /tmp/A
head -c 3M /dev/urandom > /tmp/B
cp /tmp/A /tmp/AB
dd if=/tmp/B of=/tmp/AB bs=1M seek=20 conv=notrunc status=none

readd() {   # readd LEVEL MEMBERS...: the scenario over a level
  local level=$1; shift
  local d0=$1 d1=$2 members new_lines copied skipped
  members="$d0,/dev/mapper/r1${3:+,$3}"
  must dmsetup create r1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
  must load members="$members" level=$level chunk_kb=64 assume_clean=1 bitmap_region_mb=1
  must wait_dev
  must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
  # A's regions go quiet and their bits are cleared first.
  for i in $(seq 1 60); do grep -q ": 0 of " $SYS/bitmap && break; sleep 1; done
  check "$level: bitmap clean before the failure ($(cat $SYS/bitmap))" grep -q ": 0 of " $SYS/bitmap
  must dmsetup load r1 --table "0 $(blockdev --getsz "$d1") error"
  must dmsetup resume r1
  dd if=/tmp/B of=/dev/raidmig0 bs=1M seek=20 oflag=direct conv=notrunc status=none
  check "$level: degraded" wait_state degraded 20
  # The disk is back.
  must bash -c "echo /dev/mapper/r1 > $SYS/remove"
  must dmsetup load r1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
  must dmsetup resume r1
  local mark; mark=$(dmesg | wc -l)
  must bash -c "echo /dev/mapper/r1 > $SYS/add"
  check "$level: clean after the re-add" wait_state clean 300
  new_lines=$(dmesg | tail -n +$((mark + 1)))
  say "$level: $(grep -E 're-add|rebuild' <<<"$new_lines" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
  check "$level: dmesg says re-added" grep -q "/dev/mapper/r1 re-added to role 1" <<<"$new_lines"
  copied=$(sed -n 's/.*re-add of role 1: \([0-9]*\) windows copied, \([0-9]*\) skipped.*/\1/p' <<<"$new_lines")
  skipped=$(sed -n 's/.*re-add of role 1: \([0-9]*\) windows copied, \([0-9]*\) skipped.*/\2/p' <<<"$new_lines")
  check "$level: only the regions written meanwhile were copied ($copied copied, $skipped skipped)" \
    test -n "$copied" -a "${copied:-99}" -le 6 -a "${skipped:-0}" -gt 50
  check "$level: A with B over it reads back" bash -c "head -c 64M /dev/raidmig0 | cmp -s - /tmp/AB"
  echo check > $SYS/action
  sleep 1
  for i in $(seq 1 300); do [ "$(cat $SYS/action)" = idle ] && break; sleep 1; done
  check "$level: check after the re-add: mismatch_cnt $(cat $SYS/mismatch_cnt)" test "$(cat $SYS/mismatch_cnt)" = 0
  unload_within 60 || finish
  must dmsetup remove r1
}

readd raid1 "${DISKS[0]}" "${DISKS[1]}"
readd raid5 "${DISKS[2]}" "${DISKS[3]}" "${DISKS[4]}"
finish
