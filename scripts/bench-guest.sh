#!/usr/bin/env bash
# Runs inside the benchmark guest (see bench.sh); prints the table.
set -euo pipefail
runtime=${1:-20}
res=/tmp/bench
mkdir -p $res

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

suite raw /dev/sda
mdadm --build /dev/md0 --level=0 --chunk=64 --raid-devices=3 /dev/sda /dev/sdb /dev/sdc > /dev/null 2>&1
suite md /dev/md0
mdadm --stop /dev/md0 > /dev/null 2>&1
insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64 assume_clean=1
for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
suite raidmig /dev/raidmig0
rmmod raidmig
# What the write-intent bitmap costs: raid5 over the same three, 4k random
# writes at iodepth 32, with the default bitmap and without one.
for b in 64 0; do
  # The previous array's superblocks go with its reserved tails.
  for d in /dev/sda /dev/sdb /dev/sdc; do
    dd if=/dev/zero of=$d bs=1M count=16 seek=$(( $(blockdev --getsize64 $d) / 1048576 - 16 )) oflag=direct status=none
  done
  insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid5 chunk_kb=64 assume_clean=1 bitmap_region_mb=$b
  for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
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
kinds = [("randread", "4k randread IOPS"), ("randwrite", "4k randwrite IOPS"),
         ("seqread", "1M read MB/s"), ("seqwrite", "1M write MB/s")]
rows = [("raw member (sda)", "raw"), ("md raid0 x3", "md"), ("raidmig raid0 x3", "raidmig")]
print()
print(f"{'target':<20}" + "".join(f"{h:>20}" for _, h in kinds))
vals = {}
for label, tag in rows:
    vals[tag] = [get(tag, k) for k, _ in kinds]
    print(f"{label:<20}" + "".join(f"{v:>20.1f}" for v in vals[tag]))
print(f"{'raidmig / md':<20}" + "".join(f"{r / m:>20.2f}" for r, m in zip(vals['raidmig'], vals['md'])))
print(f"{'raidmig / raw':<20}" + "".join(f"{r / m:>20.2f}" for r, m in zip(vals['raidmig'], vals['raw'])))
with_bm, without = get("bitmap64", "randwrite"), get("bitmap0", "randwrite")
print()
print(f"{'raidmig raid5 x3':<32}{'4k randwrite IOPS':>20}")
print(f"{'with bitmap (64 MiB regions)':<32}{with_bm:>20.1f}")
print(f"{'without bitmap':<32}{without:>20.1f}")
print(f"{'with / without':<32}{with_bm / without:>20.2f}")
PY
