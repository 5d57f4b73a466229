#!/usr/bin/env bash
# disks: 4 64M
# Bad load requests are refused with a clear dmesg line and a fitting errno,
# leave no device behind and write nothing to any member; a good load holds
# its members exclusively and rmmod releases them.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]}

must mkfs.ext4 -q -F $d3
mkdir -p /tmp/busy && must mount $d3 /tmp/busy
# A member of 16 MiB + 32 KiB: its data area cannot hold one 64 KiB chunk.
truncate -s $((16 * 1024 + 32))K /tmp/small.img
small=$(losetup -f --show /tmp/small.img) || { fail "losetup"; finish; }
ln -sf $d1 /tmp/sdb-alias

before=$(written $d0 $d1 $d2 "$small")

refused "No such device" "cannot open member /dev/nosuchdisk" \
  members=$d0,/dev/nosuchdisk,$d2 level=raid0
refused "Invalid parameters" "members $d0 and $d0 are the same disk" \
  members=$d0,$d1,$d0 level=raid0
refused "Invalid parameters" "members $d1 and /tmp/sdb-alias are the same disk" \
  members=$d0,$d1,/tmp/sdb-alias level=raid0
refused "Device or resource busy" "cannot open member $d3" \
  members=$d0,$d3 level=raid0
refused "No space left on device" "member too small: it must hold one chunk" \
  members="$small",$d0 level=raid0
refused "No space left on device" "member $small: member is smaller than the first member" \
  members=$d0,"$small" level=raid0
refused "Invalid parameters" "unknown level" members=$d0,$d1 level=raid7
refused "Invalid parameters" "$d0: member has no raidmig superblock" members=$d0,$d1
refused "Invalid parameters" "chunk_kb must be a power of two" members=$d0,$d1 level=raid0 chunk_kb=48
refused "Invalid parameters" "chunk_kb must be a power of two" members=$d0,$d1 level=raid0 chunk_kb=2
refused "Invalid parameters" "chunk_kb must be a power of two" members=$d0,$d1 level=raid0 chunk_kb=8192
refused "Invalid parameters" "speed_limit_max_kbps must be at most" members=$d0,$d1 level=raid0 speed_limit_max_kbps=1073741825
refused "Invalid parameters" "no members given" level=raid0
refused "Invalid parameters" "empty member path" members=$d0,,$d1 level=raid0
refused "Invalid parameters" "raid0 takes 2 to 16 members, 1 given" members=$d0 level=raid0
refused "Invalid parameters" "single takes 1 to 1 members, 2 given" members=$d0,$d1 level=single

after=$(written $d0 $d1 $d2 "$small")
check "refused loads wrote nothing" test "$before" = "$after"

# A good load holds its members: nobody else can open them exclusively.
must load members=$d0,$d1,$d2 level=raid0
must wait_dev
check "member busy while loaded" bash -c "! mkfs.ext4 -q -F $d1 2>/dev/null"
# While the volume is open, the module cannot be removed.
exec 7</dev/raidmig0
check "rmmod refused while the volume is open" bash -c '! rmmod raidmig 2>/dev/null'
exec 7<&-
must unload
check "device gone after rmmod" test ! -e /sys/block/raidmig0
check "members released after rmmod" mkfs.ext4 -q -F $d1

umount /tmp/busy; losetup -d "$small"
finish
