#!/usr/bin/env bash
# One boot of the reshape power cut test (driven by tests/vm/power_cut_reshape.sh,
# which kills the first boot at random). Usage: power_cut_reshape.sh BOOT PAIR
#
# PAIR: grow (raid5 over 3 disks, a fourth added) or chunk (raid5 over 3,
# 64 KiB -> 128 KiB). Boot 0 makes the array clean over zeroed disks, ext4
# with files on it, starts the reshape throttled to 1 MiB/s and writes
# (fsynced files, fio passes with crc32c) until killed. Boot 1 assembles from
# the superblocks: the reshape resumes by itself from its checkpoint, every
# file and completed fio pass reads back, it ends clean, resize2fs grows
# ext4, raidmig's check and md's (over the same members) find no mismatch
# and md shows the same bytes.
#
# What must outlive the kill goes to $RAIDMIG_OUT: old.sums, new.sums (a
# line once the file is fsynced), fio.log ("done K" once pass K completed),
# dmesg.BOOT, running.0.
. tests/guest/lib.sh
boot=$1 pair=$2
MNT=/tmp/m
mkdir -p $MNT
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]}
case $pair in
  grow) members=$d0,$d1,$d2 spec="add=$d3" all="$d0 $d1 $d2 $d3" chunk=64 ;;
  chunk) members=$d0,$d1,$d2 spec="chunk_kb=128" all="$d0 $d1 $d2" chunk=128 ;;
  *) fail "unknown pair $pair"; finish ;;
esac

dump_dmesg() { dmesg > "$OUT/dmesg.$boot"; }
. tests/vm/lib/passes.sh
BEFORE="the reshape" PASS_SIZE=2M

if [ "$boot" = 0 ]; then
  for d in $d0 $d1 $d2; do must blkdiscard -f -z $d; done
  [ "$pair" != grow ] || must random_fill $d3 100M
  must load members=$members level=raid5 chunk_kb=64 assume_clean=1
  must wait_dev
  must mkfs.ext4 -q -F -E nodiscard /dev/raidmig0
  must mount /dev/raidmig0 $MNT
  mkdir -p $MNT/old $MNT/new $MNT/fio
  for i in $(seq 1 16); do head -c $(( (i * 700001) % 4000000 + 1 )) /dev/urandom > $MNT/old/f$i; done
  (cd $MNT && find old -type f -print0 | sort -z | xargs -0 sha256sum) > "$OUT/old.sums"
  sync
  : > "$OUT/new.sums"; : > "$OUT/fio.log"
  echo 1024 > $SYS/speed_limit_max_kbps
  check "reshape '$spec' started" bash -c "echo '$spec' > $SYS/reshape"
  check "migrating" test "$(cat $SYS/state)" = migrating
  ( while :; do dump_dmesg; sleep 1; done ) &
  ( k=1; while :; do fio_pass $k && echo "done $k" >> "$OUT/fio.log"; k=$((k + 1)); done ) &
  ( i=0; while :; do
      f=new/w$i
      head -c 200000 /dev/urandom > $MNT/$f && sync $MNT/$f && (cd $MNT && sha256sum $f) >> "$OUT/new.sums"
      i=$((i + 1)); done ) &
  touch "$OUT/running.0"
  sleep infinity
fi

# Boot 1: every member named, in another order.
must load members=$(echo $all | tr ' ' '\n' | tac | paste -sd,)
must wait_dev
say "assembled: state $(cat $SYS/state), checkpoint $(cat $SYS/checkpoint), progress $(cat $SYS/progress), $(cat $SYS/reshape)"
check "the reshape resumed by itself" test "$(cat $SYS/state)" = migrating
dump_dmesg
must mount /dev/raidmig0 $MNT
verify_all
for i in $(seq 1 900); do
  case "$(cat $SYS/state)" in clean|failed) break ;; esac
  sleep 1
done
check "reshape reached clean" test "$(cat $SYS/state)" = clean
check "idle after the reshape and its resync ($(cat $SYS/action))" wait_idle 900
check "resize2fs" resize2fs /dev/raidmig0
verify_all
must umount $MNT
check "e2fsck -fn clean" e2fsck -fn /dev/raidmig0
echo check > $SYS/action
for i in $(seq 1 600); do [ "$(cat $SYS/action)" = idle ] && break; sleep 0.5; done
check "scrub mismatch_cnt $(cat $SYS/mismatch_cnt)" test "$(cat $SYS/mismatch_cnt)" = 0
cap=$(blockdev --getsz /dev/raidmig0)
want=$(md5sum < /dev/raidmig0)
must unload
n=$(echo $all | wc -w)
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --level=5 \
  --layout=left-symmetric --chunk=$chunk --size=$((cap / (n - 1) / 2)) --raid-devices=$n $all
check "md's size is raidmig's" test "$(blockdev --getsz /dev/md0)" = "$cap"
check "md shows the bytes raidmig showed" test "$(md5sum < /dev/md0)" = "$want"
md_check "$pair"
must mdadm --stop /dev/md0
dump_dmesg
finish
