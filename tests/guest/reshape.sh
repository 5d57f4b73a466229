#!/usr/bin/env bash
# disks: 5 64M
# bus: sata nvme
# On-line reshapes of assembled arrays through the `reshape` knob, each with
# ext4 files and fio (crc32c verification) running through it: every pair of
# levels offered, grows of raid0, raid5 and raid10, and chunk changes both
# ways (on NVMe, two of them: the pair that loses discard, and a grow). Each ends clean with the files and fio's data intact, the queue's
# optimal I/O size the new stripe's (and no discard on raid5), resize2fs
# grows ext4 into the new capacity while the reshape still runs (the new
# layout's capacity is there within a second of the start), a check finds copies and parity in
# agreement, the array assembles again from its superblocks, and md over the
# same members (the outside oracle) shows the same bytes and finds no
# mismatch.
. tests/guest/lib.sh
require_debug_kernel
MNT=/tmp/m
attr() { cat "$SYS/$1"; }

# reshape_test NAME LEVEL CHUNK_KB MEMBERS SPEC IO_OPT MD_ARGS...: an array
# of LEVEL over MEMBERS (comma-separated, made clean over zeroed disks), ext4
# with files on it, reshaped by writing SPEC to the knob under load; IO_OPT
# is the new stripe in bytes; MD_ARGS describe the result to mdadm --create
# (level, layout, chunk).
reshape_test() {
  local name=$1 level=$2 chunk=$3 members=$4 spec=$5 io_opt=$6; shift 6
  local mdargs=("$@")
  local d all=() first=${members%%,*}
  for d in $(echo "$members" | tr ',' ' ') $(sed -n 's/.*add=\([^ ]*\).*/\1/p' <<<"$spec" | tr ',' ' '); do
    all+=("$d")
  done
  local data; data=$(data_area "$first")
  for d in "${all[@]}"; do
    # Members made clean over zeros; the added ones hold old data (which
    # the reshape must not leave as disagreeing copies or parity).
    if [[ ",$members," == *",$d,"* ]]; then must blkdiscard -f -z "$d"; else must random_fill "$d" $((data / 2048))M; zero_tail "$d"; fi
  done
  must load members="$members" level="$level" chunk_kb="$chunk" assume_clean=1
  must wait_dev
  local before_sz; before_sz=$(blockdev --getsz /dev/raidmig0)
  must mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0 /dev/raidmig0
  mkdir -p $MNT && must mount /dev/raidmig0 $MNT
  mkdir -p $MNT/old
  for i in $(seq 1 12); do head -c $(( (i * 300007) % 3000000 + 1 )) /dev/urandom > $MNT/old/f$i; done
  (cd $MNT && find old -type f -print0 | sort -z | xargs -0 sha256sum) > /tmp/old.sums
  load_start
  sleep 2
  local mark; mark=$(dmesg | wc -l)
  # Throttled at first, so that ext4 grows while the reshape runs.
  echo 2048 > $SYS/speed_limit_max_kbps
  check "$name: reshape '$spec' accepted" bash -c "echo '$spec' > $SYS/reshape"
  check "$name: dmesg tells the reshape started" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q 'raidmig0: reshape started'"
  check "$name: level $(attr source_level) -> $(attr level)" test "$(attr source_level)" = "$level"
  check "$name: optimal I/O size is the new stripe's ($(cat /sys/block/raidmig0/queue/optimal_io_size))" \
    test "$(cat /sys/block/raidmig0/queue/optimal_io_size)" = "$io_opt"
  if [ "$(attr level)" = raid5 ]; then
    check "$name: no discard on raid5" test "$(cat /sys/block/raidmig0/queue/discard_max_bytes)" = 0
  fi
  local p; p=$(attr progress)
  new_layout_at_once "$name" "${p#*/}"
  check "$name: reshape reached clean" wait_state clean 1800
  check "$name: units moved out of order for host writes ($(attr units_moved))" test "$(attr units_moved)" -ge 1
  say "$name: $(attr units_done) units, $(attr units_staged) staged, $(attr checkpoint_writes) checkpoint writes"
  sleep 2
  load_stop
  check "$name: fio passes verified during the reshape ($(cat /tmp/fio.last))" test ! -e /tmp/fio.failed
  check "$name: files written during the reshape ($(wc -l < /tmp/new.sums))" test "$(wc -l < /tmp/new.sums)" -ge 3
  check "$name: idle after the reshape and its resync ($(attr action))" wait_idle 1800
  local cap; cap=$(blockdev --getsz /dev/raidmig0)
  p=$(attr progress)
  check "$name: capacity is the new layout's ($before_sz -> $cap)" test "$cap" = "${p#*/}"
  check "$name: resize2fs" resize2fs /dev/raidmig0
  check "$name: files intact" bash -c "cd $MNT && sha256sum --quiet -c /tmp/old.sums && sha256sum --quiet -c /tmp/new.sums"
  must umount $MNT
  check "$name: e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  if [ "$(attr level)" != raid0 ]; then
    echo check > $SYS/action
    for i in $(seq 1 600); do [ "$(attr action)" = idle ] && break; sleep 0.5; done
    check "$name: scrub mismatch_cnt $(attr mismatch_cnt)" test "$(attr mismatch_cnt)" = 0
  fi
  local want; want=$(md5sum < /dev/raidmig0)
  must unload

  # Assembled again from the superblocks, in another order.
  must load members="$(printf '%s\n' "${all[@]}" | tac | paste -sd,)"
  must wait_dev
  check "$name: assembled clean, $(attr level)" test "$(attr state)" = clean
  check "$name: same bytes after assembly" test "$(md5sum < /dev/raidmig0)" = "$want"
  must unload

  # md over the members, with the layout the reshape made.
  local n=${#all[@]} per
  case ${mdargs[0]} in
    --level=0) per=$(( cap / n )) ;;
    --level=5) per=$(( cap / (n - 1) )) ;;
    --level=10) per=$(( cap * 2 / n )) ;;
  esac
  if [ "${mdargs[0]}" = --level=0 ]; then
    # raid0 has no superblock to size it by (mdadm --build, as md_compat):
    # md's stripes over the whole devices begin as raidmig's.
    must mdadm --build /dev/md0 --raid-devices=$n "${mdargs[@]}" "${all[@]}"
    check "$name: md covers raidmig's capacity ($(blockdev --getsz /dev/md0))" test "$(blockdev --getsz /dev/md0)" -ge "$cap"
  else
    must mdadm --create /dev/md0 --run --quiet --metadata=1.0 --assume-clean --bitmap=none \
      --size=$((per / 2)) --raid-devices=$n "${mdargs[@]}" "${all[@]}"
    check "$name: md's size is raidmig's ($(blockdev --getsz /dev/md0))" test "$(blockdev --getsz /dev/md0)" = "$cap"
  fi
  check "$name: md shows the bytes raidmig showed" test "$(head -c $((cap * 512)) /dev/md0 | md5sum)" = "$want"
  [ "${mdargs[0]}" = --level=0 ] || md_check "$name"
  must mdadm --stop /dev/md0
  [ "${mdargs[0]}" = --level=0 ] || must mdadm --zero-superblock "${all[@]}"
}

d=("${DISKS[@]}")
K=1024
reshape_test raid0-to-raid5 raid0 64 "${d[0]},${d[1]}" "level=raid5 add=${d[2]}" $((128 * K)) \
  --level=5 --layout=left-symmetric --chunk=64
reshape_test raid5-grow raid5 64 "${d[0]},${d[1]},${d[2]}" "add=${d[3]}" $((192 * K)) \
  --level=5 --layout=left-symmetric --chunk=64
if [ "$BUS" = sata ]; then
  reshape_test raid10-chunk raid10 64 "${d[0]},${d[1]},${d[2]},${d[3]}" "chunk_kb=128" $((256 * K)) \
    --level=10 --layout=n2 --chunk=128
  reshape_test raid0-grow raid0 64 "${d[0]},${d[1]}" "add=${d[2]},${d[3]}" $((256 * K)) --level=0 --chunk=64
  reshape_test raid1-to-raid5 raid1 64 "${d[0]},${d[1]}" "level=raid5 add=${d[2]}" $((128 * K)) \
    --level=5 --layout=left-symmetric --chunk=64
  reshape_test raid1-to-raid10 raid1 64 "${d[0]},${d[1]}" "level=raid10 add=${d[2]},${d[3]}" $((128 * K)) \
    --level=10 --layout=n2 --chunk=64
  reshape_test raid0-to-raid10 raid0 64 "${d[0]},${d[1]}" "level=raid10 add=${d[2]},${d[3]}" $((128 * K)) \
    --level=10 --layout=n2 --chunk=64
  reshape_test raid10-grow raid10 64 "${d[0]},${d[1]},${d[2]},${d[3]}" "add=${d[4]}" $((320 * K)) \
    --level=10 --layout=n2 --chunk=64
  reshape_test raid5-chunk raid5 64 "${d[0]},${d[1]},${d[2]}" "chunk_kb=32" $((64 * K)) \
    --level=5 --layout=left-symmetric --chunk=32
  reshape_test raid0-chunk raid0 64 "${d[0]},${d[1]},${d[2]}" "chunk_kb=256" $((768 * K)) --level=0 --chunk=256
fi
finish
