#!/usr/bin/env bash
# Benchmark (not a test) of the migration, from one guest run: migration
# throughput (single -> raid0, raid1, raid5, raid10) against a raw copy
# between two members and against its floor (issue 9), and host 4k random
# read IOPS during a migration against the same load on the idle volume.
# Guests run under software emulation: compare the ratios, not the absolute
# figures.
#
#   scripts/bench-migration.sh [--size MEMBER_SIZE] [--runtime SECONDS] [--rounds N] [--bus sata|nvme]
#                              [--kernel bench|test]
#
# --size: each member's size (default 2560M, four image files of that size
# under /var/tmp): large enough that the migration to raid5 outlasts the
# loaded run, whose figures are otherwise those of an idle volume (the
# table says so). --bus nvme: members that zero new capacity with
# write-zeroes (no data sent), where SATA members are sent pages of zeros.
# --kernel: the benchmark kernel (default: the test kernel without lockdep,
# see bench-setup.sh) or the test kernel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export PATH=$HOME/.cargo/bin:$PATH
size_mb=2560 runtime=20 rounds=3 bus=sata kernel=bench
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mb=${2%M}; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bus) bus=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    *) echo "bench-migration.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
. scripts/bench-setup.sh
bench_setup "$kernel"
bench_disks "$size_mb"
bash scripts/guest.sh --kernel "$guest_kernel" --disks 4 --bus "$bus" --disk-dir "$disks" -- bash scripts/bench-migration-guest.sh "$runtime" "$rounds"
