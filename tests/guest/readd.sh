#!/usr/bin/env bash
# disks: 10 160M
# A member that went missing for a while and comes back is re-added with
# only the regions written meanwhile rebuilt (the write-intent bitmap kept
# them, md's bitmap-based re-add): raid1 over 2 and raid5 over 3 with 1 MiB
# regions, 64 MiB of data A; role 1 (a device-mapper linear device) fails
# under an error table; 3 MiB of B are written degraded; the member's table
# is restored, the member removed (`remove`) and added again (`add`): dmesg
# says it is re-added, the rebuild copies only a few windows and skips the
# rest, the array ends clean, A with B over it reads back, and raidmig's
# check (copies, parity) finds no mismatch.
# Across loads, as md re-adds a member missing at assembly: after B the
# array is unloaded (cleanly) and loaded again with the member given back
# (recorded faulty: left out), 2 MiB of C are written, then it is added: B's
# regions (kept across the unload) and C's are rebuilt, nothing else.
. tests/guest/lib.sh

random_fill /tmp/A 64M
head -c 3M /dev/urandom > /tmp/B
head -c 2M /dev/urandom > /tmp/C
cp /tmp/A /tmp/AB
dd if=/tmp/B of=/tmp/AB bs=1M seek=20 conv=notrunc status=none
cp /tmp/AB /tmp/ABC
dd if=/tmp/C of=/tmp/ABC bs=1M seek=40 conv=notrunc status=none

readd() {   # readd LEVEL within|across MEMBERS...: the scenario over a level
  local level=$1 when=$2; shift 2
  local d0=$1 d1=$2 members new_lines copied skipped want=/tmp/AB
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
  local mark
  if [ "$when" = within ]; then
    must bash -c "echo /dev/mapper/r1 > $SYS/remove"
    must dmsetup load r1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
    must dmsetup resume r1
  else
    unload_within 60 || finish
    must dmsetup load r1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
    must dmsetup resume r1
    mark=$(dmesg | wc -l)
    must load members="$members"
    must wait_dev
    check "$level: loaded again without the member that failed ($(cat $SYS/state))" test "$(cat $SYS/state)" = degraded
    check "$level: dmesg says the member is left out" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q '/dev/mapper/r1 is not fresh'"
    must dd if=/tmp/C of=/dev/raidmig0 bs=1M seek=40 oflag=direct conv=notrunc status=none
    want=/tmp/ABC
  fi
  mark=$(dmesg | wc -l)
  must bash -c "echo /dev/mapper/r1 > $SYS/add"
  check "$level: clean after the re-add" wait_state clean 300
  new_lines=$(dmesg | tail -n +$((mark + 1)))
  say "$level: $(grep -E 're-add|rebuild' <<<"$new_lines" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
  check "$level: dmesg says re-added" grep -q "/dev/mapper/r1 re-added to role 1" <<<"$new_lines"
  copied=$(sed -n 's/.*re-add of role 1: \([0-9]*\) windows copied, \([0-9]*\) skipped.*/\1/p' <<<"$new_lines")
  skipped=$(sed -n 's/.*re-add of role 1: \([0-9]*\) windows copied, \([0-9]*\) skipped.*/\2/p' <<<"$new_lines")
  check "$level: only the regions written meanwhile were copied ($copied copied, $skipped skipped)" \
    test -n "$copied" -a "${copied:-99}" -le $([ "$when" = within ] && echo 6 || echo 10) -a "${skipped:-0}" -gt 50
  check "$level: A with B$([ "$when" = across ] && echo ' and C') over it reads back" bash -c "head -c 64M /dev/raidmig0 | cmp -s - $want"
  echo check > $SYS/action
  sleep 1
  for i in $(seq 1 300); do [ "$(cat $SYS/action)" = idle ] && break; sleep 1; done
  check "$level: check after the re-add: mismatch_cnt $(cat $SYS/mismatch_cnt)" test "$(cat $SYS/mismatch_cnt)" = 0
  unload_within 60 || finish
  must dmsetup remove r1
}

readd raid1 within "${DISKS[0]}" "${DISKS[1]}"
readd raid5 within "${DISKS[2]}" "${DISKS[3]}" "${DISKS[4]}"
readd raid1 across "${DISKS[5]}" "${DISKS[6]}"
readd raid5 across "${DISKS[7]}" "${DISKS[8]}" "${DISKS[9]}"
finish
