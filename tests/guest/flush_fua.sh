#!/usr/bin/env bash
# disks: 4 256M
# Flush and FUA reach the members: an fsync of /dev/raidmig0 flushes every
# member, and a FUA write stays FUA on the one member it lands on and only
# there. Member 1 is a dm-log-writes device over disk 1 logging to
# disk 3, which records each write with its flags.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]}

sz=$(blockdev --getsz $d1)
must dmsetup create rmlog --table "0 $sz log-writes $d1 $d3"
must load members=$d0,/dev/mapper/rmlog,$d2 level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
# Only what follows this mark counts (making the array wrote superblocks).
must dmsetup message rmlog 0 mark test-start
check "queue advertises FUA" test "$(cat /sys/block/raidmig0/queue/fua)" = 1

a0=$(member_flushes $d0); c0=$(member_flushes $d2)
# 4 KiB into logical chunk 1 is member 1, member sector 8: a plain write.
must dd if=/dev/urandom of=/dev/raidmig0 bs=4k count=1 seek=17 oflag=direct status=none
# Logical chunk 4 is member 1's second chunk (member sector 128): O_DSYNC
# direct writes are FUA writes.
must dd if=/dev/urandom of=/dev/raidmig0 bs=4k count=1 seek=64 oflag=direct,dsync status=none
# An fsync of the block device is an empty flush to every member.
must python3 -c 'import os; fd = os.open("/dev/raidmig0", os.O_RDWR); os.fsync(fd)'
a1=$(member_flushes $d0); c1=$(member_flushes $d2)
check "flush reached member 0 ($a0 -> $a1)" test "$a1" -gt "$a0"
check "flush reached member 2 ($c0 -> $c1)" test "$c1" -gt "$c0"

must unload
must dmsetup remove rmlog
python3 tests/guest/logwrites.py $d3 test-start > "$OUT/flush_fua.log"
cat "$OUT/flush_fua.log"
check "plain write logged without FUA" grep -qx "8 8 -" "$OUT/flush_fua.log"
check "FUA write logged with FUA" grep -qx "128 8 FUA" "$OUT/flush_fua.log"
check "no other data write on member 1" test "$(grep -vc -e ' FLUSH$' -e ' MARK$' -e '^8 8 -$' -e '^128 8 FUA$' "$OUT/flush_fua.log")" = 0
check "flush logged on member 1" grep -q " FLUSH$" "$OUT/flush_fua.log"
finish
