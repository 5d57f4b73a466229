#!/usr/bin/env bash
# Runs inside the benchmark guest (see bench.sh); prints the table.
set -euo pipefail
runtime=${1:-15}
res=/tmp/bench
mkdir -p $res
tail_mb=$(( $(bash "$(dirname "$0")/reserved-tail.sh") / 2048 ))

# job NAME DEV RW BS DEPTH: one time-based fio run, JSON to $res/NAME.json
job() {
  fio --name="$1" --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --direct=1 \
      --ioengine=libaio --runtime="$runtime" --time_based --ramp_time=2 \
      --size=600M --randrepeat=0 --output-format=json > "$res/$1.json"
}
suite() {   # suite TAG DEV
  job "$1-randread" "$2" randread 4k 32
  job "$1-randwrite" "$2" randwrite 4k 32
  job "$1-seqread" "$2" read 1M 8
  job "$1-seqwrite" "$2" write 1M 8
}
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
wait_dev() { for _ in $(seq 50); do [ -b /dev/raidmig0 ] && return; sleep 0.1; done; }
# level LEVEL N: md, then raidmig, over the first N members, chunk 64 KiB,
# both made clean without a resync; md without a bitmap (mdadm's default
# below 100 GB), raidmig with its default write-intent bitmap.
level() {
  local level=$1 n=$2 devs
  devs=$(echo /dev/sd{a,b,c,d} | cut -d' ' -f1-"$n")
  wipe $devs
  # (raid0 has neither a resync nor a bitmap, raid1 no chunk: mdadm
  # refuses those options.)
  local opts="--assume-clean --bitmap=none --chunk=64"
  [ "$level" = raid0 ] && opts="--chunk=64"
  [ "$level" = raid1 ] && opts="--assume-clean --bitmap=none"
  [ "$level" = raid10 ] && opts+=" --layout=n2"
  mdadm --create /dev/md0 --run --level="$level" --raid-devices="$n" --metadata=1.0 \
    $opts $devs > /tmp/mdadm.out 2>&1 || { cat /tmp/mdadm.out >&2; exit 1; }
  suite "md-$level" /dev/md0
  mdadm --stop /dev/md0 > /dev/null 2>&1
  wipe $devs
  insmod ./raidmig.ko members="$(echo $devs | tr ' ' ,)" level="$level" chunk_kb=64 assume_clean=1
  wait_dev
  suite "raidmig-$level" /dev/raidmig0
  rmmod raidmig
}

suite raw /dev/sda
level raid0 3
level raid1 2
level raid10 4
level raid5 3
# What the write-intent bitmap costs: raid5 over the same three, 4k random
# writes at iodepth 32, with the default bitmap and without one.
for b in 64 0; do
  wipe /dev/sda /dev/sdb /dev/sdc
  insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid5 chunk_kb=64 assume_clean=1 bitmap_region_mb=$b
  wait_dev
  job "bitmap$b-randwrite" /dev/raidmig0 randwrite 4k 32
  rmmod raidmig
done

python3 - "$res" <<'PY'
import json, sys
res = sys.argv[1]
def get(tag, kind):
    j = json.load(open(f"{res}/{tag}-{kind}.json"))["jobs"][0]
    side = j["read"] if "read" in kind else j["write"]
    return side["iops"] if kind.startswith("rand") else side["bw_bytes"] / 1e6
kinds = [("randread", "4k rr IOPS"), ("randwrite", "4k rw IOPS"),
         ("seqread", "1M read MB/s"), ("seqwrite", "1M write MB/s")]
# Targets of issue 9: raidmig / md at least 0.95 (raid5 writes: at least 1).
levels = [("raid0", 3, [0.95] * 4), ("raid1", 2, [0.95] * 4), ("raid10", 4, [0.95] * 4),
          ("raid5", 3, [0.95, 1.0, 0.95, 1.0])]
raw = [get("raw", k) for k, _ in kinds]
print()
print("clean arrays, chunk 64 KiB, queue depth 32 (4k) and 8 (1M); one guest, software emulation: read the ratios")
print(f"{'target':<22}" + "".join(f"{h:>15}" for _, h in kinds))
print(f"{'raw member (sda)':<22}" + "".join(f"{v:>15.1f}" for v in raw))
for level, n, goal in levels:
    md = [get(f"md-{level}", k) for k, _ in kinds]
    rm = [get(f"raidmig-{level}", k) for k, _ in kinds]
    print(f"{f'md {level} x{n}':<22}" + "".join(f"{v:>15.1f}" for v in md))
    print(f"{f'raidmig {level} x{n}':<22}" + "".join(f"{v:>15.1f}" for v in rm))
    print(f"{'  raidmig / md':<22}" + "".join(f"{r / m:>15.2f}" for r, m in zip(rm, md)))
    print(f"{'  target':<22}" + "".join(f"{g:>15.2f}" for g in goal))
    print(f"{'  raidmig / raw':<22}" + "".join(f"{r / w:>15.2f}" for r, w in zip(rm, raw)))
with_bm, without = get("bitmap64", "randwrite"), get("bitmap0", "randwrite")
print()
print(f"{'raidmig raid5 x3':<32}{'4k randwrite IOPS':>20}")
print(f"{'with bitmap (64 MiB regions)':<32}{with_bm:>20.1f}")
print(f"{'without bitmap':<32}{without:>20.1f}")
print(f"{'with / without (target 0.9)':<32}{with_bm / without:>20.2f}")
PY
