#!/usr/bin/env bash
# Runs inside the migration benchmark guest (see bench-migration.sh).
set -euo pipefail
runtime=${1:-20}
KO=./raidmig.ko
SYS=/sys/block/raidmig0/raidmig
res=/tmp/bench
mkdir -p $res
tail_sectors=$(bash "$(dirname "$0")/reserved-tail.sh")
data=$(( ($(blockdev --getsz /dev/sda) - tail_sectors) / 128 * 128 ))   # sectors

zero_tail() {
  dd if=/dev/zero of="$1" bs=1M seek=$(( ($(blockdev --getsz "$1") - tail_sectors) * 512 )) count=$((tail_sectors / 2048)) \
    oflag=direct,seek_bytes conv=notrunc status=none
}
wait_dev() { for _ in $(seq 50); do [ -b /dev/raidmig0 ] && return; sleep 0.1; done; }
now() { date +%s.%N; }
mbps() { python3 -c "import sys; print(f'{$1 * 512 / 1e6 / ($3 - $2):.1f}')"; }
wait_clean() {
  until [ "$(cat $SYS/state)" = clean ]; do
    [ "$(cat $SYS/state)" = failed ] && { echo "migration failed" >&2; exit 1; }
    sleep 0.2
  done
}

# The user's data: the first member's data area, filled.
dd if=/dev/urandom of=/dev/sda bs=1M count=$((data / 2048)) oflag=direct status=none

# A raw sequential copy of the data area from one member to another.
t0=$(now)
dd if=/dev/sda of=/dev/sdb bs=1M count=$((data / 2048)) iflag=direct oflag=direct status=none
t1=$(now)
raw=$(mbps $data "$t0" "$t1")
echo "raw copy: $raw MB/s"

# migrate LEVEL MEMBERS: an idle migration from start to clean.
migrate() {
  local d; for d in ${2//,/ }; do zero_tail "$d"; done
  insmod $KO members="$2" level="$1" chunk_kb=64
  wait_dev
  local t0 t1; t0=$(now)
  echo start > $SYS/action
  wait_clean
  t1=$(now)
  echo "$1 $(mbps $data "$t0" "$t1") $(cat $SYS/units_done) $(cat $SYS/units_staged) $(cat $SYS/checkpoint_writes)" | tee -a $res/migrations
  rmmod raidmig
}
: > $res/migrations
migrate raid0 /dev/sda,/dev/sdb,/dev/sdc
migrate raid5 /dev/sda,/dev/sdb,/dev/sdc
migrate raid10 /dev/sda,/dev/sdb,/dev/sdc,/dev/sdd

# 4k random reads on the volume: idle (prepared, not started), then while a
# migration to raid5 runs.
randread() {
  fio --name=rr --filename=/dev/raidmig0 --rw=randread --bs=4k --iodepth=32 --direct=1 \
      --ioengine=libaio --runtime="$runtime" --time_based --ramp_time=2 --randrepeat=0 \
      --output-format=json | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}
for d in /dev/sda /dev/sdb /dev/sdc; do zero_tail $d; done
insmod $KO members=/dev/sda,/dev/sdb,/dev/sdc level=raid5 chunk_kb=64
wait_dev
idle=$(randread)
echo "idle randread: $idle IOPS"
echo start > $SYS/action
p0=$(cut -d/ -f1 $SYS/progress); t0=$(now)
busy=$(randread)
p1=$(cut -d/ -f1 $SYS/progress); t1=$(now)
state_after=$(cat $SYS/state)
total=$(cut -d/ -f2 $SYS/progress)
# As for the idle rows: the user's data area over the time, here the share
# of the migration done while the load ran.
under_load=$(python3 -c "print(f'{($p1 - $p0) / $total * $data * 512 / 1e6 / ($t1 - $t0):.1f}')")
wait_clean
rmmod raidmig

python3 - "$raw" "$idle" "$busy" "$under_load" "$state_after" "$data" "$res/migrations" <<'PY'
import sys
raw, idle, busy, under_load, state, data, migrations = sys.argv[1:]
raw = float(raw)
print()
print(f"migration of a {int(data) * 512 >> 20} MiB data area (one guest, software emulation: read the ratios)")
print(f"{'what':<44}{'MB/s':>10}{'/ raw copy':>12}{'units':>8}{'staged':>8}{'ckpts':>8}")
print(f"{'raw sequential copy sda -> sdb (dd 1M)':<44}{raw:>10.1f}{1:>12.2f}")
for line in open(migrations):
    level, mb, units, staged, ck = line.split()
    print(f"{'migration single -> ' + level + ' (idle)':<44}{float(mb):>10.1f}{float(mb) / raw:>12.2f}{units:>8}{staged:>8}{ck:>8}")
print(f"{'migration single -> raid5 under 4k randread':<44}{float(under_load):>10.1f}{float(under_load) / raw:>12.2f}")
print()
print(f"{'host 4k random read, iodepth 32':<44}{'IOPS':>10}{'/ idle':>12}")
print(f"{'idle volume (raid5 prepared)':<44}{float(idle):>10.0f}{1:>12.2f}")
print(f"{'during the migration to raid5':<44}{float(busy):>10.0f}{float(busy) / float(idle):>12.2f}")
if state != "migrating":
    print(f"note: the migration was '{state}' when the loaded run ended (it finished early)")
PY
