#!/usr/bin/env bash
# disks: 3 256M
# bus: sata nvme
# fio write+verify (crc32c) through /dev/raidmig0, for level single over one
# member, raid0 and raid5 over three (made directly in their layout:
# assume_clean=1): 4k, 64k and 1M blocks, blocks that straddle chunk
# boundaries, and 4k blocks at depth 32 within eight raid5 stripes (writes of
# one stripe meet in flight); then the same data verified again after the
# module is unloaded and the array assembled again from its superblocks, so
# it must have reached the members; raid5's parity is then checked by a
# scrub.
. tests/guest/lib.sh

run_jobs() {   # run_jobs MODE (write or verify): the jobs in one fio process
  local extra=()
  [ "$1" = verify ] && extra=(--verify_only)
  # Six regions in the first 122 MiB of the smallest volume (single, 240 MiB).
  fio_verify_seq "$level-$1" /dev/raidmig0 "${extra[@]}" \
    --name=rand4k --rw=randwrite --bs=4k --size=12M --iodepth=32 \
    --name=rand64k --rw=randwrite --bs=64k --offset=12M --size=20M --iodepth=16 \
    --name=seq1m --rw=write --bs=1M --offset=32M --size=32M --iodepth=4 \
    --name=straddle96k --rw=randwrite --bs=96k --offset=$((64 * 1024 + 32))k --size=$((191 * 96))k --iodepth=16 \
    --name=straddle1m --rw=write --bs=1M --offset=$((84 * 1024 + 4))k --size=20M --iodepth=4 \
    --name=mixed --rw=randwrite --bsrange=4k-1m --blockalign=4k --offset=106M --size=16M --iodepth=8 \
    --name=samestripe --rw=randwrite --bs=4k --offset=124M --size=1M --iodepth=32
  # 96 KiB blocks (straddle96k: in random order, each at a multiple of
  # 96 KiB past a point 32 KiB into a chunk) always cross a 64 KiB chunk
  # boundary; 1 MiB blocks starting 4 KiB into a chunk (straddle1m) cut
  # partial chunks at both ends; samestripe's 4k blocks at depth 32 meet in
  # eight raid5 stripes.
}

say "bus $BUS: members ${DISKS[*]}"
all3="${DISKS[0]},${DISKS[1]},${DISKS[2]}"
for layout in "single ${DISKS[0]}" "raid0 $all3" "raid5 $all3"; do
  set -- $layout
  level=$1 members=$2
  say "--- level=$level members=$members"
  # raid5 made with assume_clean over zeroes: its parity is right from the
  # start (not over what raid0 left), so the scrub's count is the writes'.
  if [ "$level" = raid5 ]; then
    for d in ${members//,/ }; do must dd if=/dev/zero of="$d" bs=1M count=256 oflag=direct status=none; done
  fi
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  member_sz=$(( (256 * 2048 - RESERVED_TAIL) / 128 * 128 ))
  n=$(echo "$members" | tr ',' '\n' | wc -l)
  [ "$level" = raid5 ] && n=$((n - 1))
  check "capacity is $n data areas" test "$(blockdev --getsz /dev/raidmig0)" = $((member_sz * n))
  check "write cache advertised" grep -qx "write back" /sys/block/raidmig0/queue/write_cache
  check "fua advertised" test "$(cat /sys/block/raidmig0/queue/fua)" = 1
  check "io_min is the chunk" test "$(cat /sys/block/raidmig0/queue/minimum_io_size)" = 65536
  check "io_opt is the stripe" test "$(cat /sys/block/raidmig0/queue/optimal_io_size)" = $((65536 * n))
  run_jobs write
  must unload
  must load members="$members"
  must wait_dev
  run_jobs verify
  [ "$level" = raid5 ] && check "raid5: the scrub finds parity consistent" test "$(scrub check)" = 0
  must unload
  for d in ${members//,/ }; do must zero_tail "$d"; done
done
finish
