#!/usr/bin/env bash
# One boot of the reshape power cut test (driven by tests/vm/power_cut_reshape.sh,
# which kills every boot but the last at random). Usage: power_cut_reshape.sh BOOT PAIR
#
# PAIR: grow (raid5 over 3 disks, a fourth added) or chunk (raid5 over 3,
# 64 KiB -> 128 KiB). Boot 0 makes the array clean over zeroed disks, ext4
# with files on it, starts the reshape throttled to 1 MiB/s, grows ext4
# into the new layout's capacity (there at once) and writes (fsynced files,
# fio passes with crc32c) until killed. Each later boot assembles from the
# superblocks (members in another order): the reshape resumes by itself
# from its checkpoint, every file and completed fio pass reads back; all
# but the last write again until killed. The last lets the reshape end
# clean, and raidmig's check and md's (over the same members) find no
# mismatch and md shows the same bytes.
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

cuts=$(cat "$OUT/cuts" 2>/dev/null || echo 1)
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
  # The new layout in effect at once: ext4 grows into it now, so that the
  # writes below land in units moved out of order too.
  check "resize2fs while the reshape runs" resize2fs /dev/raidmig0
else
  # Every member named, in another order each boot.
  case $((boot % 2)) in
    1) order=$(echo $all | tr ' ' '\n' | tac | paste -sd,) ;;
    0) order=$(echo $all | tr ' ' '\n' | sed -n '2,$p;1p' | paste -sd,) ;;
  esac
  must load members=$order speed_limit_max_kbps=1024
  must wait_dev
  say "assembled: state $(cat $SYS/state), checkpoint $(cat $SYS/checkpoint), progress $(cat $SYS/progress), moved $(cat $SYS/units_moved), $(cat $SYS/reshape)"
  check "boot $boot: the reshape resumed by itself" test "$(cat $SYS/state)" = migrating
  dump_dmesg
  must mount /dev/raidmig0 $MNT
  verify_all
fi

if [ "$boot" -lt "$cuts" ]; then
  [ "$FAILURES" = 0 ] || finish
  ( while :; do dump_dmesg; sleep 1; done ) &
  ( k=$(( boot * 1000 + 1 )); while :; do fio_pass $k && echo "done $k" >> "$OUT/fio.log"; k=$((k + 1)); done ) &
  ( i=0; while :; do
      f=new/b${boot}w$i
      head -c 200000 /dev/urandom > $MNT/$f && sync $MNT/$f && (cd $MNT && sha256sum $f) >> "$OUT/new.sums"
      i=$((i + 1)); done ) &
  touch "$OUT/running.$boot"
  sleep infinity
fi

# The last boot: the reshape runs to its end.
echo 0 > $SYS/speed_limit_max_kbps
for i in $(seq 1 900); do
  case "$(cat $SYS/state)" in clean|failed) break ;; esac
  sleep 1
done
check "reshape reached clean" test "$(cat $SYS/state)" = clean
check "idle after the reshape and its resync ($(cat $SYS/action))" wait_idle 900
check "resize2fs (nothing left to grow)" resize2fs /dev/raidmig0
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
