#!/usr/bin/env bash
# disks: 6 128M
# Bad requests to start or assemble a migration are refused with a clear
# dmesg line and a fitting errno, and write nothing: too few members for the
# level, a member smaller than the first, a first member whose reserved tail
# holds data, a member of another raidmig array, members of two arrays,
# a stale superblock and a member missing where the level (raid0) cannot do
# without them, superblocks that disagree. force=1
# then overrides the non-zero tail.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]} d4=${DISKS[4]} d5=${DISKS[5]}


# Array A: raid1 over disks 2 and 3, made clean.
must load members=$d2,$d3 level=raid1 assume_clean=1
must unload
# Array B: a migration to raid0 (which survives no missing member) over disks
# 4 and 5; the slots of disk 5 saved, then the migration runs a while so that
# B's superblocks move two generations on.
must load members=$d4,$d5 level=raid0 checkpoint_ms=200
must wait_dev
dd if=$d5 of=/tmp/sdf.slots bs=512 skip=$(( $(blockdev --getsz $d5) - RESERVED_TAIL )) count=16 iflag=direct 2>/dev/null
echo 4096 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
sleep 4
echo pause > $SYS/action
sleep 1
say "array B: state $(cat $SYS/state), $(cat $SYS/checkpoint_writes) checkpoint writes"
check "array B moved on by two generations or more" test "$(cat $SYS/checkpoint_writes)" -ge 2
must unload
# Put disk 5 back two or more generations: a stale member.
must dd if=/tmp/sdf.slots of=$d5 bs=512 seek=$(( $(blockdev --getsz $d5) - RESERVED_TAIL )) oflag=direct conv=notrunc status=none
# Disk 3: its newest slot gives another creation time than disk 2's, at the same
# generation.
gen() {   # gen DEV SLOT: the generation in DEV's slot SLOT
  dd if="$1" bs=512 skip=$(( $(blockdev --getsz "$1") - RESERVED_TAIL + 8 * $2 )) count=1 iflag=direct 2>/dev/null |
    od -An -tu8 -j16 -N8 | tr -d ' '
}
g0=$(gen $d3 0) g1=$(gen $d3 1)
newest=0; [ "${g1:-0}" -gt "${g0:-0}" ] && newest=1
must python3 tests/guest/sbedit.py $d3 $newest 0x48 8 12345

# The user's disk: data in the last MiB of its reserved tail.
printf 'user data' | dd of=$d0 bs=512 seek=$(( $(blockdev --getsz $d0) - 2048 )) oflag=direct conv=notrunc status=none
# A member of 64 MiB, smaller than the first.
truncate -s 64M /tmp/small.img
small=$(losetup -f --show /tmp/small.img) || { fail "losetup"; finish; }

disks="$d0 $d1 $d2 $d3 $d4 $d5 $small"
before=$(written $disks)

refused "Invalid parameters" "raid5 takes 2 to 16 members, 1 given" members=$d0 level=raid5
refused "Invalid parameters" "raid1 takes 2 to 16 members, 1 given" members=$d0 level=raid1
refused "No space left on device" "member $small: member is smaller than the first member" \
  members=$d0,$d1,$small level=raid5
refused "No space left on device" "$d0: the last [0-9]* sectors .* must be free for raidmig's metadata" \
  members=$d0,$d1 level=raid1
refused "File exists" "member $d2: member belongs to a raidmig array already" \
  members=$d0,$d1,$d2 level=raid5
refused "File exists" "member belongs to a raidmig array already" \
  members=$d2,$d1 level=raid0 force=1
refused "File exists" "member belongs to another raidmig array" members=$d2,$d4
refused "Stale file handle" "cannot assemble: $d5: member's superblock is stale" members=$d4,$d5
refused "Structure needs cleaning" "members' superblocks disagree" members=$d2,$d3
refused "Invalid parameters" "too few members for the level" members=$d4

after=$(written $disks)
check "refused loads wrote nothing" test "$before" = "$after"

# force=1: the tail is taken over, with a warning.
mark=$(dmesg | wc -l)
if load members=$d0,$d1 level=raid1 force=1; then
  ok "force=1 accepted"
  check "force=1 warns about the overwritten data" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q 'raidmig: $d0: data at sector .* is overwritten (force=1)'"
  check "force=1 array prepared" test "$(cat $SYS/state)" = prepared
  must unload
else
  fail "force=1 refused"
fi
losetup -d "$small"
finish
