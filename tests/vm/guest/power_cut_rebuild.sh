#!/usr/bin/env bash
# One boot of the power cut during a rebuild (driven by
# tests/vm/power_cut_rebuild.sh). Usage: power_cut_rebuild.sh BOOT LEVEL
# (raid1 over 2 or raid5 over 3, a fourth disk as the replacement).
# Boot 0 fills the volume with fio jobs, fails role 1 under a dm error
# target, adds the replacement with the rebuild throttled and writes until it
# is killed; boot 1 assembles with the replacement, checks that the rebuild
# resumed from its recorded position, waits for it and the resync, and
# checks the data (every completed fio job), raidmig's check and md's.
#
# What must outlive the kill goes to $RAIDMIG_OUT on the host: jobs.log
# ("start K" before fio job K starts, "done K" after it completed with its
# fsync, "failed K" if fio failed), dmesg.BOOT and running.0.
. tests/guest/lib.sh
boot=$1 level=$2
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]} new=${DISKS[4]}
case $level in
  raid1) span=40 old="$d0,/dev/mapper/m1" now="$d0,$new" md="--level=1 --raid-devices=2 $d0 $new" ;;
  raid5) span=60 old="$d0,/dev/mapper/m1,$d2" now="$d0,$new,$d2"
         md="--level=5 --layout=left-symmetric --chunk=64 --raid-devices=3 $d0 $new $d2" ;;
  raid10) span=60 old="$d0,/dev/mapper/m1,$d2,$d3" now="$d0,$new,$d2,$d3"
         md="--level=10 --layout=n2 --chunk=64 --raid-devices=4 $d0 $new $d2 $d3" ;;
esac
dump_dmesg() { dmesg > "$OUT/dmesg.$boot"; }

# job K: fio job K writes 2 MiB at its own offset, then fsyncs. The
# first SPAN jobs fill the volume sequentially; the rest write at random.
job_args() {   # job_args K: fio options of job K
  local rw=randwrite bs=4k
  [ "$1" -lt $span ] && rw=write bs=256k
  echo --name=j$1 --filename=/dev/raidmig0 --offset=$(( $1 % span * 2 ))M --size=2M --rw=$rw \
      --bs=$bs --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c --do_verify=0 \
      --randseed=$1 --end_fsync=1 --verify_state_save=0
}
if [ "$boot" = 0 ]; then
  must dmsetup create m1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
  must load members="$old" level=$level assume_clean=1 bitmap_region_mb=1
  must wait_dev
  : > "$OUT/jobs.log"
  for k in $(seq 0 10 $((span - 1))); do logged $(seq $k $((k + 9))); done
  must dmsetup load m1 --table "0 $(blockdev --getsz "$d1") error"
  must dmsetup resume m1
  logged $span
  check "degraded once role 1 fails" wait_state degraded 30
  echo 2048 > $SYS/speed_limit_max_kbps
  must bash -c "echo $new > $SYS/add"
  check "rebuilding" grep -q "^1 $new rebuilding" $SYS/roles
  dump_dmesg
  touch "$OUT/running.0"
  k=$((span + 1))
  while :; do
    logged $k $((k + 1))
    k=$((k + 2))
    dump_dmesg
  done
fi

mark=$(dmesg | wc -l)
if ! load members="$now"; then
  # raid5 only: where a write was in flight above the rebuild position, the
  # parity may disagree with the data and was all there was to rebuild
  # from; md refuses such a dirty degraded start too.
  new_lines=$(dmesg | tail -n +$((mark + 1)))
  check "$level: refused with a reason: $(grep -o 'raid5 was shut down uncleanly[^:]*' <<<"$new_lines")" \
    bash -c "[ $level = raid5 ] && grep -q 'shut down uncleanly while a member was out of sync' <<<'$new_lines'"
  must load members="$now" force=1
fi
must wait_dev
new_lines=$(dmesg | tail -n +$((mark + 1)))
from=$(grep -o "rebuilding role 1 onto $new from sector [0-9]*" <<<"$new_lines" | awk '{print $NF}')
say "$level after the power cut: ${from:+rebuild resumed from sector $from}; roles: $(tr '\n' ';' < $SYS/roles)"
check "$level: the rebuild resumed past the start (sector ${from:-none})" test "${from:-0}" -gt 0
echo 0 > $SYS/speed_limit_max_kbps
check "$level: clean after the resumed rebuild" wait_state clean 600
for i in $(seq 1 300); do grep -q " 0 to resync" $SYS/bitmap && break; sleep 1; done
say "bitmap after the resync: $(cat $SYS/bitmap)"
echo check > $SYS/action
sleep 1
wait_idle 600
check "$level: raidmig's check after the rebuild: mismatch_cnt $(cat $SYS/mismatch_cnt)" test "$(cat $SYS/mismatch_cnt)" = 0
n=0 args=()
# At each offset, the last job started there holds it, if it completed.
for k in $(awk -v s=$span '$1 == "start" {last[$2 % s] = $2} END {for (o in last) print last[o]}' "$OUT/jobs.log"); do
  grep -qx "done $k" "$OUT/jobs.log" || continue
  n=$((n + 1))
  args+=($(job_args $k))
done
check "$level: no fio job failed before the power cut" bash -c "! grep '^failed' $OUT/jobs.log"
check "$level: $n completed fio jobs verify" verify_jobs /tmp/fio.verify "${args[@]}"
check "$level: more than half the offsets hold a completed job ($n)" test $n -gt $((span / 2))
cap=$(blockdev --getsz /dev/raidmig0)
unload_within 60 || { dump_dmesg; finish; }
per=$cap
[ $level = raid1 ] || per=$((cap / 2))
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --size=$((per / 2)) $md
echo check > /sys/block/md0/md/sync_action
sleep 1
for i in $(seq 1 600); do [ "$(cat /sys/block/md0/md/sync_action)" = idle ] && break; sleep 1; done
check "$level: md check mismatch_cnt $(cat /sys/block/md0/md/mismatch_cnt)" test "$(cat /sys/block/md0/md/mismatch_cnt)" = 0
must mdadm --stop /dev/md0
dump_dmesg
finish
