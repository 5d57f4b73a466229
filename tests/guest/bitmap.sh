#!/usr/bin/env bash
# disks: 5 96M
# The write-intent bitmap (1 MiB regions here, bitmap_region_mb=1):
# 1. raid1 over 2: a write into region 5 sets its bit, durably on both
#    members (read from the disks' tails), before the write completes; once
#    the region is quiet the bit is cleared, on disk too.
# 2. What an unclean shutdown leaves (set by hand: region 5's bit set on
#    both members, and the copies differing there): the next load resyncs
#    that region only (dmesg), after which raidmig's check and md's check
#    find no mismatch. raid5 over 3 likewise with a parity block.
# 3. raid5 left dirty and degraded: the load is refused (EUCLEAN) unless
#    force=1.
. tests/guest/lib.sh

BITMAP_OFFSET=2048   # sectors into the reserved tail (src/core/tail.rs)
# bitmap_byte DEV: the byte holding regions 0..7 of DEV's bitmap.
bitmap_byte() {
  local at=$(( $(blockdev --getsz "$1") - RESERVED_TAIL + BITMAP_OFFSET ))
  dd if="$1" bs=512 skip=$at count=1 iflag=direct status=none | od -An -tu1 -N1 | tr -d ' '
}
# set_bit5 DEV: sets region 5's bit on DEV's bitmap (byte 0, bit 5).
set_bit5() {
  local at=$(( $(blockdev --getsz "$1") - RESERVED_TAIL + BITMAP_OFFSET ))
  printf '\x20' | dd of="$1" bs=1 seek=$((at * 512)) conv=notrunc status=none
  sync
}
random_fill /tmp/A 16M
head -c 4096 /dev/urandom > /tmp/junk

d0=${DISKS[0]} d1=${DISKS[1]}
say "--- raid1 over 2: $d0,$d1"
must load members="$d0,$d1" level=raid1 assume_clean=1 bitmap_region_mb=1
must wait_dev
say "bitmap: $(cat $SYS/bitmap)"
check "raid1: no region dirty at first" grep -q ": 0 of 80 dirty" $SYS/bitmap
must dd if=/tmp/A of=/dev/raidmig0 bs=4k count=1 seek=$((5 * 256)) oflag=direct conv=notrunc status=none
check "raid1: region 5 dirty after a write there" grep -q ": 1 of 80 dirty" $SYS/bitmap
check "raid1: region 5's bit on disk on $d0 ($(bitmap_byte $d0))" test "$(bitmap_byte $d0)" = 32
check "raid1: region 5's bit on disk on $d1" test "$(bitmap_byte $d1)" = 32
cleared=no
for i in $(seq 1 30); do grep -q ": 0 of 80 dirty" $SYS/bitmap && { cleared=yes; break; }; sleep 1; done
check "raid1: the bit is cleared once the region is quiet (after $i s)" test $cleared = yes
check "raid1: cleared on disk too" test "$(bitmap_byte $d0)$(bitmap_byte $d1)" = 00
must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
unload_within 60 || finish

# 2. An unclean shutdown's leftovers: region 5 marked, its copies differing.
# Reads of logical 5 MiB take copy 1 (raid1 alternates copies by 1 MiB), and
# the resync copies from the copy reads take: the other copy, the first
# member's, differs.
must set_bit5 "$d0"
must set_bit5 "$d1"
must dd if=/tmp/junk of="$d0" bs=4096 seek=$((5 * 256 + 3)) oflag=direct conv=notrunc status=none
mark=$(dmesg | wc -l)
must load members="$d0,$d1"
must wait_dev
for i in $(seq 1 60); do grep -q "0 to resync" $SYS/bitmap && break; sleep 1; done
new=$(dmesg | tail -n +$((mark + 1)))
say "raid1: $(grep -E 'resync' <<<"$new" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
check "raid1: one dirty region resynced" grep -q "resync of 1 bitmap regions started" <<<"$new"
check "raid1: the differing block rewritten" grep -q "resync finished: 8 mismatched sectors rewritten" <<<"$new"
check "raid1: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=16 iflag=direct status=none | cmp -s - /tmp/A"
echo check > $SYS/action
for i in $(seq 1 120); do [ "$(cat $SYS/action)" = idle ] && break; sleep 0.5; done
check "raid1: check after the resync finds 0" test "$(cat $SYS/mismatch_cnt)" = 0
unload_within 60 || finish

# raid5: a parity block of region 5 wrong, the region marked.
e0=${DISKS[2]} e1=${DISKS[3]} e2=${DISKS[4]}
say "--- raid5 over 3: $e0,$e1,$e2"
must load members="$e0,$e1,$e2" level=raid5 assume_clean=1 bitmap_region_mb=1
must wait_dev
must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
unload_within 60 || finish
# Region 5 is logical 5..6 MiB, member rows from 2.5 MiB (sector 5120):
# row 40 (64 KiB chunks), whose parity is on member 2 - 40 % 3 = 1.
must dd if=/tmp/junk of="$e1" bs=4096 seek=$((5120 / 8)) oflag=direct conv=notrunc status=none
for d in $e0 $e1 $e2; do must set_bit5 "$d"; done
mark=$(dmesg | wc -l)
must load members="$e0,$e1,$e2"
must wait_dev
for i in $(seq 1 60); do grep -q "0 to resync" $SYS/bitmap && break; sleep 1; done
new=$(dmesg | tail -n +$((mark + 1)))
check "raid5: the parity block rewritten by the resync" grep -q "resync finished: 8 mismatched sectors rewritten" <<<"$new"
check "raid5: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=16 iflag=direct status=none | cmp -s - /tmp/A"
cap=$(blockdev --getsz /dev/raidmig0)
unload_within 60 || finish
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --level=5 \
  --layout=left-symmetric --chunk=64 --size=$((cap / 2 / 2)) --raid-devices=3 "$e0" "$e1" "$e2"
md_check "raid5"
must mdadm --stop /dev/md0
must mdadm --zero-superblock "$e0" "$e1" "$e2"
# 3. Dirty and degraded (md's superblock sits past raidmig's, which stay):
# refused, nothing written; force=1 starts it.
for d in $e0 $e1 $e2; do must set_bit5 "$d"; done
before=$(written "$e0" "$e2")
refused "Structure needs cleaning" "raid5 was shut down uncleanly while a member was out of sync" members="$e0,$e2"
check "raid5: the refused load wrote nothing" test "$before" = "$(written "$e0" "$e2")"
must load members="$e0,$e2" force=1
must wait_dev
check "raid5: force=1 starts it degraded" test "$(cat $SYS/state)" = degraded
unload_within 60 || finish
finish
