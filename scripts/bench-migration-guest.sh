#!/usr/bin/env bash
# Runs inside the migration benchmark guest (see bench-migration.sh).
set -euo pipefail
runtime=${1:-20} rounds=${2:-3}
. "$(dirname "$0")/bench-guest-lib.sh"
res=/tmp/bench
mkdir -p $res
mbps() { python3 -c "import sys; print(f'{$1 * 512 / 1e6 / ($3 - $2):.1f}')"; }
wait_clean() {
  until [ "$(cat $SYS/state)" = clean ]; do
    [ "$(cat $SYS/state)" = failed ] && { echo "migration failed" >&2; exit 1; }
    sleep 0.2
  done
}

# The user's data: the first member's data area, filled.
dd if=/dev/urandom of=$A bs=1M count=$((data / 2048)) oflag=direct status=none

# A raw copy of the data area at the disks' limit: the first member read
# and the second written at once, sequentially, 1 MiB at queue depth 8 each
# (fio); the copy takes as long as the slower of the two. Run in every
# round, as the two copies below.
fio_copy() {
  local t0 t1; t0=$(now)
  fio --bs=1M --iodepth=8 --direct=1 --ioengine=libaio --size=$((data * 512)) --output-format=terse \
      --name=read --filename=$A --rw=read --name=write --filename=$B --rw=write > /dev/null
  t1=$(now)
  mbps $data "$t0" "$t1"
}
# The same copy done by the kernel: md's resync of a raid1 over the two
# (it reads the first member and writes the second), unthrottled.
echo 10000000 > /proc/sys/dev/raid/speed_limit_max
echo 10000000 > /proc/sys/dev/raid/speed_limit_min
md_copy() {
  mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.0 --bitmap=none $A $B > /dev/null 2>&1
  local t0 t1; t0=$(now)
  sleep 0.5
  until [ "$(cat /sys/block/md0/md/sync_action)" = idle ]; do sleep 0.2; done
  t1=$(now)
  local md_sectors=$(( $(cat /sys/block/md0/md/component_size) * 2 ))
  mdadm --stop /dev/md0 > /dev/null 2>&1
  mdadm --zero-superblock $A $B > /dev/null 2>&1
  mbps $md_sectors "$t0" "$t1"
}

# Until the write-intent bitmap has nothing left to resync (the capacity a
# migration to raid5 or raid10 adds is resynced once it is clean).
wait_resynced() { until grep -qE '^none$| 0 to resync$' $SYS/bitmap; do sleep 0.2; done; }

# migrate LEVEL MEMBERS SHARE: an idle migration from start to clean (the
# rate), then the resync of the capacity it added (its time, after).
migrate() {
  local d; for d in ${2//,/ }; do zero_tail "$d"; done
  insmod $KO members="$2" level="$1" chunk_kb=64
  wait_dev
  local t0 t1 t2; t0=$(now)
  echo start > $SYS/action
  wait_clean
  t1=$(now)
  wait_resynced
  t2=$(now)
  echo "$round $1 $3 $(mbps $data "$t0" "$t1") $(cat $SYS/units_done) $(cat $SYS/units_staged) $(cat $SYS/checkpoint_writes) $(python3 -c "print($t1 - $t0, $t2 - $t1)")" | tee -a $res/migrations
  unload
}
# 4k random reads on the volume: idle (prepared, not started) for as long
# as this round's idle migration to raid5 took (at least 3 s, at most
# RUNTIME), then during a whole migration to raid5: the load starts first,
# the migration once its reads flow, and the load stops when the migration
# is clean. Both figures span the same time: the host's IOPS and the
# migration's rate (the user's data area over its duration). The host's
# IOPS are the reads the volume completed in that time (its own counters in
# /sys/block/raidmig0/stat: the migration's member I/O does not pass through
# them), so the load can be stopped with a plain signal and nothing depends
# on how fio reports a run it did not end by itself.
reads_done() { awk '{print $1}' /sys/block/raidmig0/stat; }
iops() { python3 -c "print(round(($2 - $1) / ($4 - $3)))"; }
# randread_load: 4k random reads at queue depth 32 until stopped, on the
# last CPU, as bench-guest.sh runs fio (why: there), within the user's data
# area: the capacity the migration adds (in effect at once) holds nothing to
# read, and a read there has its unit moved first (bench-at-once.sh
# measures that).
randread_load() {
  fio --name=rr --filename=/dev/raidmig0 --rw=randread --bs=4k --iodepth=32 --direct=1 --cpus_allowed=$(( $(nproc) - 1 )) \
      --size=$((data * 512)) --ioengine=libaio --randrepeat=0 --runtime=3600 --time_based --output=/dev/null &
  load=$!
  # fio takes seconds to start here: wait until its reads flow.
  local r=$(reads_done)
  until [ $(( $(reads_done) - r )) -ge 2000 ]; do sleep 0.1; done
}
# stop_load: ends the load. A load that does not end within a minute of
# SIGINT while the volume or a member still has I/O in flight has reads
# that never completed: the in-flight counts and the stacks of every
# blocked task go to the console, and the benchmark fails. With no I/O in
# flight anywhere it is fio that did not stop (seen once in a dozen loaded
# runs, after the volume grew at the migration's end): its state is
# printed, it is killed, and the run goes on.
stop_load() {
  pkill -INT -x fio || true
  local i; for i in $(seq 120); do kill -0 $load 2>/dev/null || { wait $load || true; return 0; }; sleep 0.5; done
  local busy=0 d p
  echo "fio did not end 60 s after SIGINT; raidmig0 in flight (reads writes): $(cat /sys/block/raidmig0/inflight)" >&2
  [ "$(awk '{print $1 + $2}' /sys/block/raidmig0/inflight)" = 0 ] || busy=1
  for d in /sys/block/sd? /sys/block/nvme*n1; do
    [ -e "$d" ] || continue
    echo "${d##*/} in flight: $(cat $d/inflight)" >&2
    [ "$(awk '{print $1 + $2}' $d/inflight)" = 0 ] || busy=1
  done
  for p in $(pgrep -x fio); do echo "fio $p: state $(awk '{print $3}' /proc/$p/stat) wchan $(cat /proc/$p/wchan)" >&2; done
  if [ $busy = 0 ]; then
    echo "no I/O in flight: fio killed" >&2
    pkill -KILL -x fio || true
    wait $load || true
    return 0
  fi
  echo w > /proc/sysrq-trigger
  dmesg | tail -200 >&2
  exit 1
}
# loaded: the idle load, then the migration to raid5 under it; appends
# "round idle-IOPS busy-IOPS MB/s seconds" to $res/loaded.
loaded() {
  local load_s r0 r1 t0 t1 idle busy d
  load_s=$(awk -v r=$round '$1 == r && $2 == "raid5" {t = int($8); print (t < 3 ? 3 : (t > '"$runtime"' ? '"$runtime"' : t))}' $res/migrations)
  for d in $A $B $C; do zero_tail $d; done
  insmod $KO members=$A,$B,$C level=raid5 chunk_kb=64
  wait_dev
  randread_load
  r0=$(reads_done) t0=$(now)
  sleep "$load_s"
  r1=$(reads_done) t1=$(now)
  stop_load
  idle=$(iops "$r0" "$r1" "$t0" "$t1")
  randread_load
  r0=$(reads_done) t0=$(now)
  echo start > $SYS/action
  wait_clean
  r1=$(reads_done) t1=$(now)
  stop_load
  busy=$(iops "$r0" "$r1" "$t0" "$t1")
  echo "$round $idle $busy $(mbps $data "$t0" "$t1") $(python3 -c "print(round($t1 - $t0, 1))")" | tee -a $res/loaded
  wait_resynced
  unload
}

: > $res/migrations
: > $res/raw
: > $res/loaded
# The floor (issue 9): the source disk reads all the data once and writes
# its own share of the new layout, so it moves (1 + share) of the data; the
# floor is the raw copy rate divided by that. share: raid1 0 (the data is
# in place), raid0 over k 1/k, raid5 over k 1/(k-1), raid10 near-2 over k 2/k.
# Rounds alternate the raw copies and the migrations: on a shared host the
# same copy drifts by half between minutes, so each round's migrations are
# set against that round's raw copy, and the table gives medians.
for round in $(seq 1 "$rounds"); do
  echo "$round $(fio_copy) $(md_copy)" | tee -a $res/raw
  migrate raid0 $A,$B,$C 1/3
  migrate raid1 $A,$B 0
  migrate raid5 $A,$B,$C 1/2
  migrate raid10 $A,$B,$C,$D 2/4
  loaded
done

python3 - "$data" "$res/migrations" "$res/raw" "$res/loaded" "$(kernel_line)" <<'PY'
import sys
from fractions import Fraction
from statistics import median
data, migrations, raws, loaded, kernel_line = sys.argv[1:]
fio_of, md_of = {}, {}
for line in open(raws):
    r, fio, md = line.split()
    fio_of[int(r)], md_of[int(r)] = float(fio), float(md)
rows = {}
for line in open(migrations):
    rnd, level, share, mb, units, staged, ck, secs, resync = line.split()
    rows.setdefault(level, []).append((int(rnd), Fraction(share), float(mb), units, staged, ck, float(secs), float(resync)))
# A round's raw copy: the fastest copy of the data area from the first
# member to the second measured in it: fio, md's resync, or raidmig's own
# single -> raid1 (a plain copy, nothing else). Neither of the first two
# reaches the disks' limit here, so raid1 may set the floor for all.
raid1_of = {r[0]: r[2] for r in rows.get('raid1', [])}
raw_of = {r: max(fio_of[r], md, raid1_of.get(r, 0)) for r, md in md_of.items()}
raw = median(raw_of.values())
rounds = lambda d: ', '.join(f'{v:.0f}' for v in d.values())
spread = lambda v: f"({min(v):.2f}-{max(v):.2f})"
print()
print(f"migration of a {int(data) * 512 >> 20} MiB data area, {len(raw_of)} rounds (one guest, software emulation: read the ratios)")
print(kernel_line)
print(f"{'what':<42}{'MB/s':>8}{'/ raw':>7}{'floor':>8}{'/ floor':>9}{'target':>8}{'units':>7}{'staged':>7}{'ckpts':>7}{'s':>7}{'resync s':>9}")
for name, of in (('fio, 1M qd8', fio_of), ('md resync', md_of)):
    v = median(of.values())
    print(f"{'raw copy member 0 -> 1 (' + name + ')':<42}{v:>8.1f}{v / raw:>7.2f}   (rounds: {rounds(of)})")
print(f"{'raw copy (the fastest copy in each round)':<42}{raw:>8.1f}{1:>7.2f}   (rounds: {rounds(raw_of)})")
print("(a round's raw copy: the fastest of fio, md's resync and raidmig's single -> raid1, which")
print(" is a plain copy; floor: raw / (1 + the source's share of the writes), medians;")
print(" / floor: the median of each round's rate over that round's floor, and their range;")
print(" s: the migration's time to clean; resync s: then, the resync of the capacity it added)")
floor_of = lambda share, r: raw_of[r] / (1 + float(share))
shares = {}
for level, rs in rows.items():
    share = rs[0][1]
    shares[level] = share
    floor = raw / (1 + float(share))
    mb = median(r[2] for r in rs)
    ratios = [r[2] / floor_of(share, r[0]) for r in rs]
    units, staged, ck = rs[-1][3:6]
    secs = median(r[6] for r in rs)
    resync = median(r[7] for r in rs)
    print(f"{'single -> ' + level + ' (idle)':<42}{mb:>8.1f}{mb / raw:>7.2f}{floor:>8.1f}{median(ratios):>9.2f}{0.9:>8.2f}{units:>7}{staged:>7}{ck:>7}{secs:>7.1f}{resync:>9.1f}"
          f"  {spread(ratios)}")
ld = [(int(r), float(i), float(b), float(mb), float(t)) for r, i, b, mb, t in (l.split() for l in open(loaded))]
mb = median(x[3] for x in ld)
ratios = [x[3] / floor_of(shares['raid5'], x[0]) for x in ld]
floor = raw / (1 + float(shares['raid5']))
print(f"{'single -> raid5 under 4k randread qd32':<42}{mb:>8.1f}{mb / raw:>7.2f}{floor:>8.1f}{median(ratios):>9.2f}{0.5:>8.2f}"
      f"{'':>21}{median(x[4] for x in ld):>7.1f}{'':>9}  {spread(ratios)}")
print()
host = [x[2] / x[1] for x in ld]
print(f"{'host 4k random read, iodepth 32':<42}{'IOPS':>8}{'/ idle':>9}{'target':>8}")
print(f"{'idle volume (raid5 prepared)':<42}{median(x[1] for x in ld):>8.0f}{1:>9.2f}")
print(f"{'during the migration to raid5':<42}{median(x[2] for x in ld):>8.0f}{median(host):>9.2f}{0.7:>8.2f}  {spread(host)}")
print("(IOPS: reads the volume completed during the whole loaded migration, and idle before it for as")
print(" long as that round's idle migration to raid5 took; / idle: the median of the rounds' ratios)")
PY
