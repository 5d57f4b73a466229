#!/usr/bin/env bash
# One boot of the crash test (driven by tests/vm/crash_raid5.sh, which kills
# this guest at random). Usage: crash_raid5.sh BOOT crash|final [AIM]
#
# AIM (seconds, 0 for none): once everything is verified, the speed limit is
# set so that what is left of the source's data would be copied in AIM
# seconds of the load, which the host cuts near then.
#
# Everything that must outlive a kill goes to $RAIDMIG_OUT on the host:
# old.sums and new.sums (file checksums, a line only after the file was
# fsynced), fio.log ("done K" once pass K completed with its fsync, "gone K"
# before its file is removed), load.BOOT (state and checkpoint at assembly),
# dmesg.BOOT and seen.BOOT (progress and action; both refreshed every
# second) and running.BOOT (everything verified, load started).
. tests/guest/lib.sh
boot=$1 mode=$2 aim=${3:-0}
MNT=/tmp/m
mkdir -p $MNT

dump_dmesg() { dmesg > "$OUT/dmesg.$boot"; }

. tests/vm/lib/passes.sh
BEFORE="the migration"

if [ "$boot" = 0 ]; then
  data=$(data_area /dev/sda)
  must mkfs.ext4 -q -F -E nodiscard -b 4096 /dev/sda $((data / 8))
  must mount /dev/sda $MNT
  mkdir -p $MNT/old $MNT/new $MNT/fio
  for i in $(seq 1 16); do head -c $(( (i * 700001) % 4000000 + 1 )) /dev/urandom > $MNT/old/f$i; done
  (cd $MNT && find old -type f -print0 | sort -z | xargs -0 sha256sum) > "$OUT/old.sums"
  must umount $MNT
  : > "$OUT/new.sums"; : > "$OUT/fio.log"
  must load members=/dev/sda,/dev/sdb,/dev/sdc level=raid5 speed_limit_max_kbps=1024
  must wait_dev
  check "prepared" test "$(cat $SYS/state)" = prepared
else
  # Members in another order at every boot.
  case $((boot % 3)) in
    0) members=/dev/sda,/dev/sdb,/dev/sdc ;;
    1) members=/dev/sdc,/dev/sda,/dev/sdb ;;
    2) members=/dev/sdb,/dev/sdc,/dev/sda ;;
  esac
  # The migration resumes by itself at load: slow from its first unit on,
  # so that it lasts through all the kills (and, in the last boot, until
  # where it resumed from is recorded: unthrottled, what is left takes
  # less than a second).
  must load members=$members speed_limit_max_kbps=1024
  must wait_dev
  { echo "state $(cat $SYS/state)"; echo "checkpoint $(cat $SYS/checkpoint)"; echo "progress $(cat $SYS/progress)"; } > "$OUT/load.$boot"
  say "assembled: $(tr '\n' ' ' < "$OUT/load.$boot")"
fi
dump_dmesg
must mount /dev/raidmig0 $MNT
verify_all

if [ "$mode" = final ]; then
  echo 0 > $SYS/speed_limit_max_kbps
  [ "$(cat $SYS/state)" = paused ] && echo resume > $SYS/action
  for i in $(seq 1 900); do
    case "$(cat $SYS/state)" in clean|failed) break ;; esac
    sleep 1
  done
  check "migration reached clean" test "$(cat $SYS/state)" = clean
  check "idle after the migration and its resync ($(cat $SYS/action))" wait_idle 900
  p=$(cat $SYS/progress)
  check "progress complete ($p)" test "${p%/*}" = "${p#*/}"
  check "resize2fs" resize2fs /dev/raidmig0
  verify_all
  must umount $MNT
  check "e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  must unload
  finish
fi

# A crash boot: verified so far; now migrate under load until killed.
[ "$FAILURES" = 0 ] || finish
if [ "$boot" = 0 ]; then
  echo start > $SYS/action
  # The migration thread takes the command up asynchronously.
  for _ in $(seq 1 100); do [ "$(cat $SYS/state)" = prepared ] || break; sleep 0.1; done
  # The new layout in effect at once: ext4 grows into it now, so that the
  # writes below land in units moved out of order too.
  check "resize2fs while the migration runs" resize2fs /dev/raidmig0
fi
st=$(cat $SYS/state)
[ "$st" = migrating ] || { fail "boot $boot: state $st, not migrating"; finish; }
if [ "$aim" != 0 ]; then
  # Aimed at the end of the source's data: past it the migration copies
  # nothing, though at the same pace, so the cut lands late in the copy
  # or among those units.
  p=$(cat $SYS/progress) end=$(data_area /dev/sda)
  left=$(( end - ${p%/*} )); [ $left -gt 0 ] || left=0
  kbps=$(( left / 2 / aim + 1 ))
  echo "$kbps" > $SYS/speed_limit_max_kbps
  say "progress $p, source data up to $end: speed limit $kbps KiB/s to copy the rest in $aim s"
fi
( while :; do dump_dmesg; cat $SYS/progress $SYS/action > "$OUT/seen.$boot"; sleep 1; done ) &
( k=$(( boot * 1000 + 1 )); while :; do
    if fio_pass $k; then
      echo "done $k" >> "$OUT/fio.log"
      if [ -e $MNT/fio/p$((k - 2)) ]; then echo "gone $((k - 2))" >> "$OUT/fio.log"; rm -f $MNT/fio/p$((k - 2)); fi
    fi
    k=$((k + 1)); done ) &
( i=0; while :; do
    f=new/b${boot}w$i
    head -c 200000 /dev/urandom > $MNT/$f && sync $MNT/$f && (cd $MNT && sha256sum $f) >> "$OUT/new.sums"
    i=$((i + 1)); done ) &
touch "$OUT/running.$boot"
sleep infinity
