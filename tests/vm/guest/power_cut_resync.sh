#!/usr/bin/env bash
# One boot of the power cut test (driven by tests/vm/power_cut_resync.sh).
# Usage: power_cut_resync.sh BOOT. Boot 0 writes until it is killed; boot 1
# assembles, waits for the resync and checks.
#
# What must outlive the kill goes to $RAIDMIG_OUT on the host: jobs.log
# ("start K" before fio job K starts, "done K" after it completed with its
# fsync, "failed K" if fio failed: lib.sh logged), dmesg.BOOT and running.0.
. tests/guest/lib.sh
boot=$1
dump_dmesg() { dmesg > "$OUT/dmesg.$boot"; }

# job K: fio job K writes 2 MiB at its own offset, then fsyncs.
job_args() {   # job_args K: fio options of job K
  echo --name=j$1 --filename=/dev/raidmig0 --offset=$(( $1 % 60 * 2 ))M --size=2M --rw=randwrite \
      --bs=4k --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c --do_verify=0 \
      --randseed=$1 --end_fsync=1 --verify_state_save=0
}

if [ "$boot" = 0 ]; then
  must load members=/dev/sda,/dev/sdb,/dev/sdc level=raid5 assume_clean=1 bitmap_region_mb=1
  must wait_dev
  : > "$OUT/jobs.log"
  k=0
  while :; do
    # Two jobs at once over distinct offsets, so that writes are in flight
    # when the power goes.
    logged $k $((k + 1))
    k=$((k + 2))
    dump_dmesg
    # The host's clock for the power cut starts once a pair completed: the
    # first start of fio in a fresh guest can take longer than the shortest
    # delay before the cut, which then found nothing written nor in flight.
    touch "$OUT/running.0"
  done
fi

mark=$(dmesg | wc -l)
must load members=/dev/sdc,/dev/sda,/dev/sdb
must wait_dev
for i in $(seq 1 300); do grep -q " 0 to resync" $SYS/bitmap && break; sleep 1; done
say "bitmap after the resync: $(cat $SYS/bitmap)"
new=$(dmesg | tail -n +$((mark + 1)))
say "$(grep resync <<<"$new" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
check "the dirty regions were resynced" grep -q "resync finished" <<<"$new"
echo check > $SYS/action
wait_idle 600
check "raidmig's check after the resync: mismatch_cnt $(cat $SYS/mismatch_cnt)" test "$(cat $SYS/mismatch_cnt)" = 0
n=0 args=()
# At each offset, the last job started there holds it, if it completed (a
# job cut by the power cut leaves its offset half written).
for k in $(awk '$1 == "start" {last[$2 % 60] = $2} END {for (o in last) print last[o]}' "$OUT/jobs.log"); do
  grep -qx "done $k" "$OUT/jobs.log" || continue
  n=$((n + 1))
  args+=($(job_args $k))
done
check "no fio job failed before the power cut" bash -c "! grep '^failed' $OUT/jobs.log"
check "$n completed fio jobs verify" verify_jobs /tmp/fio.verify "${args[@]}"
check "a completed job to verify ($n)" test $n -ge 1
cap=$(blockdev --getsz /dev/raidmig0)
unload_within 60 || { dump_dmesg; finish; }
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --level=5 \
  --layout=left-symmetric --chunk=64 --size=$((cap / 2 / 2)) --raid-devices=3 /dev/sda /dev/sdb /dev/sdc
echo check > /sys/block/md0/md/sync_action
sleep 1
for i in $(seq 1 600); do [ "$(cat /sys/block/md0/md/sync_action)" = idle ] && break; sleep 1; done
check "md check mismatch_cnt $(cat /sys/block/md0/md/mismatch_cnt)" test "$(cat /sys/block/md0/md/mismatch_cnt)" = 0
must mdadm --stop /dev/md0
dump_dmesg
finish
