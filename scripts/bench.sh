#!/usr/bin/env bash
# Benchmark (not a test): from one guest run, 4k random read/write IOPS at
# iodepth 32 and 1M sequential read/write MB/s for one raw member and, over
# the same disks with a 64 KiB chunk, md and raidmig raid0 (3 members),
# raid1 (2), raid10 (4, near-2) and raid5 (3, left-symmetric), with the
# raidmig/md ratios beside issue 9's targets; then raidmig raid5's 4k random
# write IOPS with its write-intent bitmap and without one. Guests run under
# software emulation on a shared host, whose speed drifts: md and raidmig
# run side by side on two halves of every disk, alternately, in ROUNDS
# short rounds (see bench-guest.sh); compare the ratios, not the absolute
# figures.
#
#   scripts/bench.sh [--runtime SECONDS] [--rounds ROUNDS] [--levels L1,L2] [--kernel bench|test]
#   (default 5 s, 4 rounds, every level: raid0,raid1,raid10,raid5, the
#   benchmark kernel: the test kernel without lockdep, see bench-setup.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export PATH=$HOME/.cargo/bin:$PATH
runtime=5 rounds=4 levels=raid0,raid1,raid10,raid5 kernel=bench
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
. scripts/bench-setup.sh
bench_setup "$kernel"
bench_disks 1024
bash scripts/guest.sh --kernel "$guest_kernel" --disks 4 --disk-dir "$disks" -- bash scripts/bench-guest.sh "$runtime" "$rounds" "$levels"
