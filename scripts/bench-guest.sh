#!/usr/bin/env bash
# Runs inside the benchmark guest (see bench.sh); prints the table.
#
# Guests run under software emulation on a shared host, and the same fio
# run gives figures that drift by half over a minute. So md and raidmig are
# measured side by side, both arrays present at once: every disk is cut
# into two equal partitions, md takes the first ones and raidmig the second
# ones, and each workload runs ROUNDS times on md then on raidmig, a few
# seconds each. The table gives the median of each array's rounds and the
# median of the per-round ratios, which only drift within a round spoils.
set -euo pipefail
runtime=${1:-5}
rounds=${2:-5}
# The levels to measure (all by default), e.g. "raid5" while working on it.
only=${3:-raid0,raid1,raid10,raid5}
wanted() { [[ ",$only," == *",$1,"* ]]; }
res=/tmp/bench
# The kernel the figures were measured on (lockdep changes them: bench-setup.sh).
kernel_line() { echo "kernel $(uname -r), lockdep $([ -e /proc/lockdep ] && echo on || echo off)"; }
KO=${RAIDMIG_KO:-./raidmig.ko}   # bench-setup.sh passes the module built for this kernel
mkdir -p $res
tail_mb=$(( $(bash "$(dirname "$0")/reserved-tail.sh") / 2048 ))
disks=(/dev/sda /dev/sdb /dev/sdc /dev/sdd)

# Two equal partitions per disk: PART 1 for md, PART 2 for raidmig (an MBR
# written here: the guest has no partitioning tool but blockdev).
for d in "${disks[@]}"; do
  half=$(( ($(blockdev --getsz "$d") - 4096) / 2 / 2048 * 2048 ))
  python3 - "$d" "$half" <<'PY'
import struct, sys
dev, half = sys.argv[1], int(sys.argv[2])
entry = lambda start: struct.pack("<B3sB3sII", 0, b"\0" * 3, 0x83, b"\0" * 3, start, half)
mbr = bytearray(512)
mbr[446:478] = entry(2048) + entry(2048 + half)
mbr[510:512] = b"\x55\xaa"
with open(dev, "r+b") as f:
    f.write(mbr)
PY
  blockdev --rereadpt "$d"
done
udevadm settle
part() { echo "$1$2"; }   # part /dev/sda 1 -> /dev/sda1

# fio runs on the last CPU: the AHCI controller's interrupts all land on
# CPU 0, and a 4k job that shares that CPU with them does about half the
# IOPS of one beside it (measured here: 4800 against 8700 on the same
# volume), so a job the scheduler put on either CPU gave figures that
# jumped by a factor of two between runs.
fio_cpu=$(( $(nproc) - 1 ))
# job NAME DEV RW BS DEPTH: one time-based fio run, JSON to $res/NAME.json
job() {
  fio --name="$1" --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --direct=1 --cpus_allowed=$fio_cpu \
      --ioengine=libaio --runtime="$runtime" --time_based --ramp_time=1 \
      --size=360M --randrepeat=0 --output-format=json > "$res/$1.json"
}
kinds=("randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8")
# Whatever the previous array left: md's superblock (metadata 1.0, at the
# end), raidmig's reserved tail.
wipe() {
  local d
  for d in "$@"; do
    mdadm --zero-superblock "$d" > /dev/null 2>&1 || true
    dd if=/dev/zero of="$d" bs=1M count="$tail_mb" seek=$(( $(blockdev --getsize64 "$d") / 1048576 - tail_mb )) \
      oflag=direct status=none
  done
}
# rmmod once udev has settled: a change of capacity (a migration's end)
# makes udev open the volume for a moment, and rmmod then finds it in use.
unload() {
  udevadm settle -t 10 2>/dev/null || true
  for _ in $(seq 50); do rmmod raidmig 2>/dev/null && return 0; sleep 0.1; done
  rmmod raidmig
}
wait_dev() { for _ in $(seq 50); do [ -b /dev/raidmig0 ] && return; sleep 0.1; done; }

# The raw member: the first partition of sda, before any array.
for r in $(seq "$rounds"); do
  for k in "${kinds[@]}"; do set -- $k; job "raw-$1-$r" /dev/sda1 $k; done
done

# level LEVEL N: md over the first partitions of the first N disks and
# raidmig over their second partitions, chunk 64 KiB, both made clean
# without a resync; md without a bitmap (mdadm's default below 100 GB),
# raidmig with its default write-intent bitmap. Rounds alternate md and
# raidmig for each workload.
level() {
  local level=$1 n=$2 d mdparts=() rmparts=()
  for d in "${disks[@]:0:$n}"; do mdparts+=("$(part "$d" 1)"); rmparts+=("$(part "$d" 2)"); done
  wipe "${mdparts[@]}" "${rmparts[@]}"
  # (raid0 has neither a resync nor a bitmap, raid1 no chunk: mdadm
  # refuses those options.)
  local opts="--assume-clean --bitmap=none --chunk=64"
  [ "$level" = raid0 ] && opts="--chunk=64"
  [ "$level" = raid1 ] && opts="--assume-clean --bitmap=none"
  [ "$level" = raid10 ] && opts+=" --layout=n2"
  mdadm --create /dev/md0 --run --level="$level" --raid-devices="$n" --metadata=1.0 \
    $opts "${mdparts[@]}" > /tmp/mdadm.out 2>&1 || { cat /tmp/mdadm.out >&2; exit 1; }
  insmod "$KO" members="$(IFS=,; echo "${rmparts[*]}")" level="$level" chunk_kb=64 assume_clean=1
  wait_dev
  for k in "${kinds[@]}"; do
    set -- $k
    for r in $(seq "$rounds"); do
      job "md-$level-$1-$r" /dev/md0 $k
      job "raidmig-$level-$1-$r" /dev/raidmig0 $k
    done
  done
  mdadm --stop /dev/md0 > /dev/null 2>&1
  unload
}

for l in "raid0 3" "raid1 2" "raid10 4" "raid5 3"; do
  set -- $l
  if wanted "$1"; then level "$1" "$2"; fi
done
# What the write-intent bitmap costs: raid5 over the second partitions, 4k
# random writes at iodepth 32, alternately with the default bitmap and
# without one (two arrays cannot share the partitions: each round makes
# them again).
wanted raid5 && for r in $(seq "$rounds"); do
  for b in 64 0; do
    wipe /dev/sda2 /dev/sdb2 /dev/sdc2
    insmod "$KO" members=/dev/sda2,/dev/sdb2,/dev/sdc2 level=raid5 chunk_kb=64 assume_clean=1 bitmap_region_mb=$b
    wait_dev
    job "bitmap$b-randwrite-$r" /dev/raidmig0 randwrite 4k 32
    unload
  done
done

python3 - "$res" "$rounds" "$runtime" "$only" "$(kernel_line)" <<'PY'
import json, statistics, sys
res, rounds, runtime, only = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
kernel_line = sys.argv[5]
def get(tag, kind, r):
    j = json.load(open(f"{res}/{tag}-{kind}-{r}.json"))["jobs"][0]
    side = j["read"] if "read" in kind else j["write"]
    return side["iops"] if kind.startswith("rand") else side["bw_bytes"] / 1e6
def series(tag, kind):
    return [get(tag, kind, r) for r in range(1, rounds + 1)]
med = statistics.median
kinds = [("randread", "4k rr IOPS"), ("randwrite", "4k rw IOPS"),
         ("read", "1M read MB/s"), ("write", "1M write MB/s")]
# Targets of issue 9: raidmig / md at least 0.95 (raid5 writes: at least 1).
levels = [("raid0", 3, [0.95] * 4), ("raid1", 2, [0.95] * 4), ("raid10", 4, [0.95] * 4),
          ("raid5", 3, [0.95, 1.0, 0.95, 1.0])]
raw = [med(series("raw", k)) for k, _ in kinds]
print()
print(f"clean arrays, chunk 64 KiB, queue depth 32 (4k) and 8 (1M); one guest, software emulation;")
print(f"{rounds} rounds of {runtime} s alternating md and raidmig: medians, and the median of the per-round ratios")
print(kernel_line)
print(f"{'':<22}" + "".join(f"{h:>15}" for _, h in kinds))
print(f"{'raw member (sda1)':<22}" + "".join(f"{v:>15.1f}" for v in raw))
for level, n, goal in levels:
    if level not in only:
        continue
    md = [series(f"md-{level}", k) for k, _ in kinds]
    rm = [series(f"raidmig-{level}", k) for k, _ in kinds]
    per_round = [[r / m for r, m in zip(a, b)] for a, b in zip(rm, md)]
    ratio = [med(x) for x in per_round]
    print(f"{f'md {level} x{n}':<22}" + "".join(f"{med(v):>15.1f}" for v in md))
    print(f"{f'raidmig {level} x{n}':<22}" + "".join(f"{med(v):>15.1f}" for v in rm))
    print(f"{'  raidmig / md':<22}" + "".join(f"{x:>15.2f}" for x in ratio))
    print(f"{'    rounds: min-max':<22}" + "".join(f"{f'{min(x):.2f}-{max(x):.2f}':>15}" for x in per_round))
    print(f"{'  target':<22}" + "".join(f"{g:>15.2f}" for g in goal))
    print(f"{'  meets target':<22}" + "".join(f"{'yes' if x >= g else 'NO':>15}" for x, g in zip(ratio, goal)))
if "raid5" not in only:
    sys.exit(0)
with_bm, without = series("bitmap64", "randwrite"), series("bitmap0", "randwrite")
print()
print(f"{'raidmig raid5 x3':<32}{'4k randwrite IOPS':>20}")
print(f"{'with bitmap (64 MiB regions)':<32}{med(with_bm):>20.1f}")
print(f"{'without bitmap':<32}{med(without):>20.1f}")
bm_ratio = [a / b for a, b in zip(with_bm, without)]
print(f"{'with / without (target 0.9)':<32}{med(bm_ratio):>20.2f}")
print(f"{'  rounds: min-max':<32}{f'{min(bm_ratio):.2f}-{max(bm_ratio):.2f}':>20}")
PY
