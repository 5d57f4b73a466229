#!/usr/bin/env bash
# disks: 4 256M
# Bad load requests are refused with a clear dmesg line and a fitting errno,
# leave no device behind and write nothing to any member; a good load holds
# its members exclusively and rmmod releases them.
. tests/guest/lib.sh

must mkfs.ext4 -q -F /dev/sdd
mkdir -p /tmp/busy && must mount /dev/sdd /tmp/busy
# A member of 16 MiB + 32 KiB: its data area cannot hold one 64 KiB chunk.
truncate -s $((16 * 1024 + 32))K /tmp/small.img
small=$(losetup -f --show /tmp/small.img) || { fail "losetup"; finish; }
ln -sf /dev/sdb /tmp/sdb-alias

before=$(sums /dev/sda /dev/sdb /dev/sdc "$small")

refused "No such device" "cannot open member /dev/nosuchdisk" \
  members=/dev/sda,/dev/nosuchdisk,/dev/sdc level=raid0
refused "Invalid parameters" "members /dev/sda and /dev/sda are the same disk" \
  members=/dev/sda,/dev/sdb,/dev/sda level=raid0
refused "Invalid parameters" "members /dev/sdb and /tmp/sdb-alias are the same disk" \
  members=/dev/sda,/dev/sdb,/tmp/sdb-alias level=raid0
refused "Device or resource busy" "cannot open member /dev/sdd" \
  members=/dev/sda,/dev/sdd level=raid0
refused "No space left on device" "member too small: it must hold one chunk" \
  members="$small",/dev/sda level=raid0
refused "No space left on device" "member $small: member is smaller than the first member" \
  members=/dev/sda,"$small" level=raid0
refused "Invalid parameters" "unknown level" members=/dev/sda,/dev/sdb level=raid7
refused "Invalid parameters" "/dev/sda: member has no raidmig superblock" members=/dev/sda,/dev/sdb
refused "Invalid parameters" "chunk_kb must be a power of two" members=/dev/sda,/dev/sdb level=raid0 chunk_kb=48
refused "Invalid parameters" "chunk_kb must be a power of two" members=/dev/sda,/dev/sdb level=raid0 chunk_kb=2
refused "Invalid parameters" "chunk_kb must be a power of two" members=/dev/sda,/dev/sdb level=raid0 chunk_kb=8192
refused "Invalid parameters" "no members given" level=raid0
refused "Invalid parameters" "empty member path" members=/dev/sda,,/dev/sdb level=raid0
refused "Invalid parameters" "raid0 takes 2 to 16 members, 1 given" members=/dev/sda level=raid0
refused "Invalid parameters" "single takes 1 to 1 members, 2 given" members=/dev/sda,/dev/sdb level=single

after=$(sums /dev/sda /dev/sdb /dev/sdc "$small")
check "refused loads wrote nothing" test "$before" = "$after"

# A good load holds its members: nobody else can open them exclusively.
must load members=/dev/sda,/dev/sdb,/dev/sdc level=raid0
must wait_dev
check "member busy while loaded" bash -c '! mkfs.ext4 -q -F /dev/sdb 2>/dev/null'
# While the volume is open, the module cannot be removed.
exec 7</dev/raidmig0
check "rmmod refused while the volume is open" bash -c '! rmmod raidmig 2>/dev/null'
exec 7<&-
must unload
check "device gone after rmmod" test ! -e /sys/block/raidmig0
check "members released after rmmod" mkfs.ext4 -q -F /dev/sdb

umount /tmp/busy; losetup -d "$small"
finish
