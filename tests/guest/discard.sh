#!/usr/bin/env bash
# disks: 4 64M
# bus: sata nvme
# Discard passes through to members that support it: a discard of a range
# across many chunks becomes one range per member, the members' discard
# counters add up to the range, and data around it is untouched.
# Merged discards: ext4 mounted with -o discard issues one discard per freed
# extent at a journal commit; where the queue takes several discard segments
# per request (NVMe: max_discard_segments 256), blk-mq merges discards of
# ranges that are not contiguous into one request. Only the freed ranges may
# be discarded: after deleting every other file, the files left must read
# back, for raid1 and raid10. ext4 issues its discards one at a time
# (synchronously), so the same is done once more with 16 discards of 4 KiB
# submitted at once through io_uring (uring_discard.py, one block plug):
# the data between them must stay.
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]}
say "bus $BUS: members ${DISKS[*]}"
if [ "$(cat /sys/block/$(basename $d0)/queue/discard_max_bytes)" = 0 ]; then
  fail "members do not support discard in this guest"; finish
fi
say "member max_discard_segments: $(cat /sys/block/$(basename $d0)/queue/max_discard_segments)"
must load members=$d0,$d1,$d2 level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
check "discard advertised" test "$(cat /sys/block/raidmig0/queue/discard_max_bytes)" -gt 0
say "raid0 max_discard_segments: $(cat /sys/block/raidmig0/queue/max_discard_segments)"
fio_verify before /dev/raidmig0 --rw=write --bs=64k --size=8M --iodepth=8
fio_verify after /dev/raidmig0 --rw=write --bs=64k --offset=40M --size=8M --iodepth=8
discarded() { local d s=0; for d in "$@"; do s=$((s + $(awk -v d=$(basename $d) '$3 == d {print $17}' /proc/diskstats))); done; echo $s; }
s0=$(discarded $d0 $d1 $d2)
# 32 MiB minus 12 KiB starting 4 KiB into a chunk: partial chunks at both ends.
must blkdiscard -o $((8 * 1048576 + 4096)) -l $((32 * 1048576 - 12288)) /dev/raidmig0
s1=$(discarded $d0 $d1 $d2)
check "members discarded exactly the range ($((s1 - s0)) sectors)" test $((s1 - s0)) = $(((32 * 1048576 - 12288) / 512))
fio_verify before /dev/raidmig0 --rw=write --bs=64k --size=8M --iodepth=8 --verify_only
fio_verify after /dev/raidmig0 --rw=write --bs=64k --offset=40M --size=8M --iodepth=8 --verify_only
must unload
for d in $d0 $d1 $d2; do must zero_tail $d; done

MNT=/tmp/m
mkdir -p $MNT
# merged_discards LEVEL MEMBERS: ext4 -o discard on a fresh array; 64 files
# of 4 KiB, every other one deleted; the other 32 must read back.
merged_discards() {
  local level=$1 members=$2 i st0 st1
  say "--- merged discards: $level over $members"
  must load members="$members" level="$level" assume_clean=1
  must wait_dev
  say "$level max_discard_segments: $(cat /sys/block/raidmig0/queue/max_discard_segments)"
  must mkfs.ext4 -q -F -E nodiscard /dev/raidmig0
  must mount -o discard /dev/raidmig0 $MNT
  # (One process for the 64 files, f00 to f63: each process costs ~50 ms
  # under emulation.)
  head -c $((64 * 4096)) /dev/urandom | (cd $MNT && split -b 4096 -d -a 2 - f)
  sync
  (cd $MNT && md5sum f*) > /tmp/all.sums
  st0=$(awk '$3 == "raidmig0" {print $15, $16, $17}' /proc/diskstats)
  (cd $MNT && rm f?[02468])
  sync
  sleep 2
  st1=$(awk '$3 == "raidmig0" {print $15, $16, $17}' /proc/diskstats)
  # discards completed, merged, sectors (diskstats fields 12 to 14)
  set -- $st0 $st1
  say "$level: volume discards after the deletes: $(( $4 - $1 )) requests, $(( $5 - $2 )) merged, $(( $6 - $3 )) sectors"
  must umount $MNT
  echo 3 > /proc/sys/vm/drop_caches
  must mount /dev/raidmig0 $MNT
  grep -v ' f[0-9]*[02468]$' /tmp/all.sums > /tmp/kept.sums
  check "$level: the 32 files kept read back after discards of the deleted ones" \
    bash -c "cd $MNT && md5sum --quiet -c /tmp/kept.sums"
  say "$level: files kept that read back wrong: $(cd $MNT && md5sum -c /tmp/kept.sums 2>/dev/null | grep -c FAILED)"
  must umount $MNT
  check "$level: e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  must unload
  for i in ${members//,/ }; do must zero_tail $i; done
}
# uring_discards LEVEL MEMBERS: 1 MiB of data, then 16 discards of 4 KiB,
# one per 64 KiB, submitted at once; the other 60 KiB of each 64 KiB must
# read back.
uring_discards() {
  local level=$1 members=$2 k st0 st1 bad=0 zeroed=0 ranges=()
  say "--- discards submitted at once (io_uring): $level over $members"
  must load members="$members" level="$level" assume_clean=1
  must wait_dev
  head -c 1048576 /dev/urandom > /tmp/pat
  must dd if=/tmp/pat of=/dev/raidmig0 bs=1M count=1 oflag=direct conv=notrunc status=none
  for k in $(seq 0 15); do ranges+=($((k * 65536)):4096); done
  st0=$(awk '$3 == "raidmig0" {print $15, $16, $17}' /proc/diskstats)
  python3 tests/guest/uring_discard.py /dev/raidmig0 "${ranges[@]}" > /tmp/uring.out 2>&1 ||
    fail "$level: io_uring discards: $(tr '\n' '|' < /tmp/uring.out)"
  st1=$(awk '$3 == "raidmig0" {print $15, $16, $17}' /proc/diskstats)
  set -- $st0 $st1
  say "$level: $(head -1 /tmp/uring.out); volume discards: $(( $4 - $1 )) requests, $(( $5 - $2 )) merged, $(( $6 - $3 )) sectors"
  must dd if=/dev/raidmig0 of=/tmp/vol bs=1M count=1 iflag=direct status=none
  # Per 64 KiB: the 60 KiB after the discarded 4 KiB against the pattern
  # (damaged), and the discarded 4 KiB against zeros (zeroed).
  read -r bad zeroed < <(python3 -c '
import sys
v = open("/tmp/vol", "rb").read(); p = open("/tmp/pat", "rb").read()
bad = sum(v[k * 65536 + 4096:(k + 1) * 65536] != p[k * 65536 + 4096:(k + 1) * 65536] for k in range(16))
zeroed = sum(v[k * 65536:k * 65536 + 4096] == bytes(4096) for k in range(16))
print(bad, zeroed)')
  say "$level: discarded ranges reading zeros: $zeroed of 16"
  check "$level: data between discards submitted at once intact ($bad of 16 gaps damaged)" test $bad = 0
  must unload
  for k in ${members//,/ }; do must zero_tail $k; done
}
merged_discards raid1 $d0,$d1
uring_discards raid1 $d0,$d1
merged_discards raid10 $d0,$d1,$d2,$d3
uring_discards raid10 $d0,$d1,$d2,$d3
finish
