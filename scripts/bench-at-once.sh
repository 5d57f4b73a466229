#!/usr/bin/env bash
# Benchmark (not a test) of the new layout in effect at once (issue 10),
# from one guest run: for a migration from a plain disk to raid5 over three
# members and for a raid5 grow from three members to four, the time from
# the start to the first successful write past the old capacity, and 4k
# random write latency (p50, p99, at queue depth 1) into units not moved
# yet (each first write there moves its unit, and the units its rows
# overwrite the source of, first) against the same writes into units
# already moved, during the same migration. Guests run under software
# emulation: compare the two latencies, not the absolute figures.
#
#   scripts/bench-at-once.sh [--size MEMBER_SIZE] [--runtime SECONDS] [--bus sata|nvme] [--kernel bench|test]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export PATH=$HOME/.cargo/bin:$PATH
size_mb=1024 runtime=10 bus=sata kernel=bench
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mb=${2%M}; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --bus) bus=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    *) echo "bench-at-once.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
. scripts/bench-setup.sh
bench_setup "$kernel"
bench_disks "$size_mb"
bash scripts/guest.sh --kernel "$guest_kernel" --disks 4 --bus "$bus" --disk-dir "$disks" -- bash scripts/bench-at-once-guest.sh "$runtime"
