#!/usr/bin/env bash
# disks: 4 128M
# md as an outside oracle for migrated arrays: a plain disk of random data is
# migrated to raid5 (3 members) and to raid10 (4 members), joining disks
# holding random data too, while writes go on; once the resync of the
# capacity the migration added is over, md is created over the members with the same geometry
# (metadata 1.0 at the end, data at offset 0, --size = raidmig's data area per
# member, --assume-clean) and must show the same bytes as /dev/raidmig0 did,
# and md's own consistency check must find no mismatch.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]}

# oracle LEVEL MD_LEVEL_ARGS... -- DEVICES...
oracle() {
  local level=$1; shift
  local mdargs=() devs=()
  while [ "$1" != -- ]; do mdargs+=("$1"); shift; done; shift
  devs=("$@")
  local n=${#devs[@]} first=${devs[0]}
  local data; data=$(data_area "$first")

  # Old data on every member (joining ones included: the capacity the
  # migration adds must end consistent), tails free.
  local d; for d in "${devs[@]}"; do
    must blkdiscard -f "$d"
    must random_fill "$d" $((data * 512))
  done
  must load members="$(IFS=,; echo "${devs[*]}")" level=$level chunk_kb=64
  must wait_dev
  # Writes through the volume while the migration runs, on both sides of
  # the watermark.
  fio --name=w --filename=/dev/raidmig0 --direct=1 --ioengine=libaio --rw=randwrite \
      --bs=4k --iodepth=4 --size=$((data * 512)) --time_based --runtime=600 --randseed=7 \
      --output=/tmp/fio.w > /dev/null 2>&1 &
  local w=$!
  sleep 1
  echo start > $SYS/action
  check "$level: migration reached clean" wait_state clean 900
  kill $w; wait $w 2>/dev/null
  must sync
  # The capacity the migration added is resynced (bitmap regions) before
  # md, which is told the array is clean, takes the members.
  local t; for t in $(seq 1 1200); do grep -q ' 0 to resync$' $SYS/bitmap && break; sleep 0.5; done
  check "$level: resync over ($(cat $SYS/bitmap))" grep -q ' 0 to resync$' $SYS/bitmap
  local cap; cap=$(blockdev --getsz /dev/raidmig0)
  local per
  case $level in
    raid5) per=$(( cap / (n - 1) )) ;;
    raid10) per=$(( cap * 2 / n )) ;;
  esac
  check "$level: data area per member is the source's ($per = $data sectors)" test "$per" = "$data"
  local want; want=$(md5sum < /dev/raidmig0)
  say "$level: $cap sectors, $(cat $SYS/units_done) units, $(cat $SYS/units_staged) staged, $(cat $SYS/checkpoint_writes) checkpoint writes"
  must unload

  # md over the members themselves: metadata 1.0 puts md's superblock in
  # raidmig's reserved tail, past the data both compare.
  local i
  must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none \
    --chunk=64 --size=$((per / 2)) --raid-devices=$n "${mdargs[@]}" "${devs[@]}"
  check "$level: md's size is raidmig's ($(blockdev --getsz /dev/md0))" test "$(blockdev --getsz /dev/md0)" = "$cap"
  check "$level: md shows the bytes raidmig showed" test "$(md5sum < /dev/md0)" = "$want"
  md_check "$level"
  must mdadm --stop /dev/md0
  # (Else udev may assemble md again from the members when they change.)
  must mdadm --zero-superblock "${devs[@]}"
}

oracle raid5 --level=5 --layout=left-symmetric -- $d0 $d1 $d2
oracle raid10 --level=10 --layout=n2 -- $d0 $d1 $d2 $d3
finish
