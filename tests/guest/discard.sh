#!/usr/bin/env bash
# disks: 3 256M
# Discard passes through to members that support it: a discard of a range
# across many chunks becomes one range per member, the members' discard
# counters add up to the range, and data around it is untouched.
. tests/guest/lib.sh

if [ "$(cat /sys/block/sda/queue/discard_max_bytes)" = 0 ]; then
  fail "members do not support discard in this guest"; finish
fi
must load members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
check "discard advertised" test "$(cat /sys/block/raidmig0/queue/discard_max_bytes)" -gt 0
fio_verify before /dev/raidmig0 --rw=write --bs=64k --size=8M --iodepth=8
fio_verify after /dev/raidmig0 --rw=write --bs=64k --offset=40M --size=8M --iodepth=8
discarded() { local d s=0; for d in sda sdb sdc; do s=$((s + $(awk -v d=$d '$3 == d {print $17}' /proc/diskstats))); done; echo $s; }
d0=$(discarded)
# 32 MiB minus 12 KiB starting 4 KiB into a chunk: partial chunks at both ends.
must blkdiscard -o $((8 * 1048576 + 4096)) -l $((32 * 1048576 - 12288)) /dev/raidmig0
d1=$(discarded)
check "members discarded exactly the range ($((d1 - d0)) sectors)" test $((d1 - d0)) = $(((32 * 1048576 - 12288) / 512))
fio_verify before /dev/raidmig0 --rw=write --bs=64k --size=8M --iodepth=8 --verify_only
fio_verify after /dev/raidmig0 --rw=write --bs=64k --offset=40M --size=8M --iodepth=8 --verify_only
must unload
finish
