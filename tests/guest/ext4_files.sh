#!/usr/bin/env bash
# disks: 3 128M
# ext4 on /dev/raidmig0 (single, then raid0 made with assume_clean=1): files
# written, checksummed, read back after an unmount, a module reload and
# assembly from the superblocks, and e2fsck -fn clean.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]}

mnt=/tmp/mnt
mkdir -p "$mnt"
for layout in "single $d0" "raid0 $d1,$d2,$d0"; do
  set -- $layout
  level=$1 members=$2
  say "--- level=$level"
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  must mkfs.ext4 -q -F /dev/raidmig0
  must mount /dev/raidmig0 "$mnt"
  mkdir -p "$mnt/tree"
  for i in $(seq 1 40); do
    head -c $(( (i * 7919) % 300000 + 1 )) /dev/urandom > "$mnt/tree/small$i"
  done
  for i in 1 2 3; do random_fill "$mnt/big$i" $((i * 8))M; done
  cp -r /usr/share/doc/fio "$mnt/tree/doc" 2>/dev/null || true
  (cd "$mnt" && find . -type f ! -name lost+found -print0 | sort -z | xargs -0 sha256sum) > /tmp/sums
  check "files written ($(wc -l < /tmp/sums))" test "$(wc -l < /tmp/sums)" -ge 43
  must umount "$mnt"
  must unload
  must load members="$members"
  must wait_dev
  must mount /dev/raidmig0 "$mnt"
  check "checksums after reload" bash -c "cd $mnt && sha256sum --quiet -c /tmp/sums"
  must umount "$mnt"
  check "e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  must unload
  # The next layout reuses these disks: erase this array's superblocks.
  for d in ${members//,/ }; do must zero_tail "$d"; done
done
finish
