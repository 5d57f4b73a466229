#!/usr/bin/env bash
# disks: 2 128M
# raid1 whose copies diverge after a failed write: raid1 (made clean) over the
# first disk and the second behind a device-mapper table. Pattern A is
# written over the first 4 MiB; then a 64 KiB range R (1 MiB .. 1 MiB + 64 KiB,
# one chunk; member sectors 2048..2176) of the second member gives I/O errors
# while pattern B is written over R, so the write fails on one copy only.
# With the member mapped again, the copies of R differ (B on the first disk,
# A on the second). Whatever it serves, a read of R must give the same bytes
# whatever the request's shape: 4 KiB reads at each 4 KiB of R, a 1 MiB read
# from 512 KiB, a 128 KiB read from R - 64 KiB, a 2 MiB read from 0.
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]}
sz1=$(blockdev --getsz $d1)
R=$((1024 * 1024)) RL=65536

must dmsetup create div --table "0 $sz1 linear $d1 0"
must load members=$d0,/dev/mapper/div level=raid1 assume_clean=1
must wait_dev
head -c $((4 * 1048576)) /dev/urandom > /tmp/A
head -c $RL /dev/urandom > /tmp/B
must dd if=/tmp/A of=/dev/raidmig0 bs=1M count=4 oflag=direct conv=notrunc status=none

must dmsetup suspend div
must dmsetup load div <<EOT
0 2048 linear $d1 0
2048 128 error
2176 $((sz1 - 2176)) linear $d1 2176
EOT
must dmsetup resume div
if dd if=/tmp/B of=/dev/raidmig0 bs=64k seek=$((R / RL)) count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
  say "write of B over R acknowledged despite the failing copy"
else
  say "write of B over R failed (as expected with one copy failing)"
fi
must dmsetup load div --table "0 $sz1 linear $d1 0"
must dmsetup resume div

# The members' copies of R, for the record.
dd if=$d0 bs=512 skip=2048 count=128 iflag=direct status=none > /tmp/m0
dd if=$d1 bs=512 skip=2048 count=128 iflag=direct status=none > /tmp/m1
head -c $((R + RL)) /tmp/A | tail -c $RL > /tmp/AR
which_copy() {   # which_copy FILE: A, B or other
  if cmp -s "$1" /tmp/AR; then echo A; elif cmp -s "$1" /tmp/B; then echo B; else echo other; fi
}
say "member copies of R: first disk $(which_copy /tmp/m0), second disk $(which_copy /tmp/m1)"

# rd OFFSET LENGTH FILE: an O_DIRECT read of the volume in one request.
rd() { dd if=/dev/raidmig0 of="$3" bs="$2" skip="$1" count=1 iflag=direct,skip_bytes status=none; }
# R as seen in each shape.
: > /tmp/s4k
for off in $(seq $R 4096 $((R + RL - 4096))); do
  must rd $off 4096 /tmp/blk
  cat /tmp/blk >> /tmp/s4k
done
must rd $((512 * 1024)) 1048576 /tmp/big && tail -c +$((512 * 1024 + 1)) /tmp/big | head -c $RL > /tmp/s1m
must rd $((R - RL)) 131072 /tmp/mid && tail -c $RL /tmp/mid > /tmp/s128k
must rd 0 $((2 * 1048576)) /tmp/all && tail -c +$((R + 1)) /tmp/all | head -c $RL > /tmp/s2m
for s in s4k s1m s128k s2m; do say "read shape $s saw copy $(which_copy /tmp/$s) of R"; done
for s in s1m s128k s2m; do check "R reads the same as 4 KiB reads and as a $s read" cmp /tmp/s4k /tmp/$s; done
# Per 4 KiB block: the same bytes in every shape.
differ=0
for i in $(seq 0 15); do
  b=""
  for s in s4k s1m s128k s2m; do b+="$(tail -c +$((i * 4096 + 1)) /tmp/$s | head -c 4096 | md5sum | cut -c1-8) "; done
  [ "$(tr ' ' '\n' <<<"$b" | sort -u | grep -c .)" = 1 ] || { differ=$((differ + 1)); say "  block $i of R by shape (s4k s1m s128k s2m): $b"; }
done
check "every 4 KiB block of R reads the same in every shape ($differ of 16 differ)" test $differ = 0
# Repeated reads are stable.
must rd $((R - RL)) 131072 /tmp/mid2
check "a repeated read gives the same bytes" cmp /tmp/mid /tmp/mid2
must unload
dmsetup remove div
finish
