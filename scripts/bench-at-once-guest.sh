#!/usr/bin/env bash
# Runs inside the guest of bench-at-once.sh (see there).
set -euo pipefail
runtime=${1:-10}
. "$(dirname "$0")/bench-guest-lib.sh"
# Writes one 4 KiB block at sector $1 until one succeeds; prints the time
# from $2 to that success, in milliseconds.
first_write_ms() {
  until dd if=/dev/urandom of=/dev/raidmig0 bs=4k count=1 seek=$(( $1 * 512 )) oflag=direct,seek_bytes conv=notrunc status=none 2>/dev/null; do
    sleep 0.01
  done
  python3 -c "print(round(($(now) - $2) * 1000))"
}
# lat FROM TO: 4k random writes at queue depth 1 over logical sectors
# [FROM, TO) for the runtime; prints p50 and p99 completion latency in us.
lat() {
  fio --name=lat --filename=/dev/raidmig0 --rw=randwrite --bs=4k --iodepth=1 --direct=1 --ioengine=libaio \
      --offset=$(( $1 * 512 )) --size=$(( ($2 - $1) * 512 )) --runtime="$runtime" --time_based --randrepeat=0 \
      --output-format=json --output=/tmp/lat.json > /dev/null
  python3 -c "
import json
j = json.load(open('/tmp/lat.json'))['jobs'][0]['write']
p = j['clat_ns']['percentile']
print(round(p['50.000000'] / 1000), round(p['99.000000'] / 1000), j['total_ios'])"
}
# case NAME OLD_CAP START...: START makes the new layout's migration begin
# (throttled to a crawl); the first write past OLD_CAP is timed from then;
# the engine then runs unthrottled to about a third and is throttled again;
# latency into units it moved, then into units far ahead (not moved).
run_case() {
  local name=$1 old=$2; shift 2
  echo 1024 > $SYS/speed_limit_max_kbps 2>/dev/null || true
  local t0; t0=$(now)
  "$@"
  local first; first=$(first_write_ms $((old + 2048)) "$t0")
  local cap; cap=$(blockdev --getsz /dev/raidmig0)
  # Unthrottled until a third is copied (progress, not the checkpoint,
  # which moves only every few seconds), then throttled to a crawl.
  echo 0 > $SYS/speed_limit_max_kbps
  local p
  while p=$(cat $SYS/progress) && [ "${p%/*}" -lt $((cap / 3)) ]; do
    [ "$(cat $SYS/state)" = clean ] && break
    sleep 0.05
  done
  echo 1 > $SYS/speed_limit_max_kbps
  sleep 6   # a checkpoint (every 5 s at most) covers what was copied
  [ "$(cat $SYS/state)" = migrating ] || echo "$name: the migration ended before the latency runs" >&2
  local moved_before; moved_before=$(cat $SYS/units_moved)
  local ck; ck=$(cat $SYS/checkpoint)
  read -r m50 m99 mn < <(lat 0 $((ck / 2)))
  read -r u50 u99 un < <(lat $((cap * 2 / 3)) "$cap")
  local moved; moved=$(( $(cat $SYS/units_moved) - moved_before ))
  printf '%-26s %9s %8s %8s %6s %8s %8s %6s %6s\n' "$name" "$first" "$m50" "$m99" "$mn" "$u50" "$u99" "$un" "$moved" | tee -a /tmp/at-once
  echo 0 > $SYS/speed_limit_max_kbps
  until [ "$(cat $SYS/state)" = clean ]; do sleep 0.5; done
}
start_migration() { echo start > $SYS/action; }
start_grow() { echo "add=$D" > $SYS/reshape; }

: > /tmp/at-once
# A plain disk to raid5 over three.
dd if=/dev/urandom of=$A bs=1M count=$((data / 2048)) oflag=direct status=none
for d in $A $B $C; do zero_tail $d; done
insmod $KO members=$A,$B,$C level=raid5 chunk_kb=64
wait_dev
run_case "single -> raid5 x3" "$data" start_migration
unload
# raid5 over three grown to four: a clean array filled, then the grow.
for d in $A $B $C $D; do zero_tail $d; done
insmod $KO members=$A,$B,$C level=raid5 chunk_kb=64 assume_clean=1
wait_dev
old=$(blockdev --getsz /dev/raidmig0)
dd if=/dev/urandom of=/dev/raidmig0 bs=1M count=$((old / 2048)) oflag=direct status=none
run_case "raid5 x3 -> x4 (reshape)" "$old" start_grow
unload

echo
echo "The new layout in effect at once: $(kernel_line), members $((data / 2048)) MiB data each, $(nproc) CPUs"
echo "first write: ms from the start to the first successful 4 KiB write past the old capacity"
echo "latency: 4k random writes at queue depth 1 for ${runtime}s during the migration (throttled), us"
printf '%-26s %9s %8s %8s %6s %8s %8s %6s %6s\n' "" "first" "moved" "" "" "unmoved" "" "" "units"
printf '%-26s %9s %8s %8s %6s %8s %8s %6s %6s\n' "case" "write ms" "p50" "p99" "ios" "p50" "p99" "ios" "moved"
cat /tmp/at-once
