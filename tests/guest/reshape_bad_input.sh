#!/usr/bin/env bash
# disks: 5 128M
# Bad reshape requests are refused with a dmesg line and a fitting errno,
# and write nothing to any member or device given: words the knob does not
# take, an unsupported pair (the supported ones named), a chunk that is not
# a power of two from 4 KiB to 4 MiB, the wrong number of members added, an
# added device too small, one in use, one that is a member already, one
# that belongs to another raidmig array, a reshape while one runs, and a
# reshape of a degraded array.
. tests/guest/lib.sh
require_debug_kernel
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} d3=${DISKS[3]} d4=${DISKS[4]}

# knob_refused ERRNO_TEXT DMESG_TEXT INPUT: writing INPUT to `reshape` fails
# with ERRNO_TEXT (strerror) and logs a raidmig0 line matching DMESG_TEXT.
knob_refused() {
  local errtext=$1 msg=$2 input=$3 mark out new
  mark=$(dmesg | wc -l)
  if out=$(bash -c "echo '$input' > $SYS/reshape" 2>&1); then fail "accepted: '$input'"; return; fi
  new=$(dmesg | tail -n +$((mark + 1)))
  if ! grep -q "$errtext" <<<"$out"; then fail "'$input' -> '$out', wanted '$errtext'"; return; fi
  if ! grep -q "raidmig0: .*$msg" <<<"$new"; then fail "'$input': no dmesg line '$msg' in: $new"; return; fi
  ok "refused ($errtext): '$input' -- $(grep -m1 "raidmig0: .*$msg" <<<"$new" | sed 's/^\[[^]]*\] //')"
}

# Disk 4 belongs to another raidmig array (made and unloaded); a device of
# 64 MiB is too small to join; disk 3 is mounted (in use).
must load members=$d4,$d2 level=raid1 assume_clean=1
must unload
must blkdiscard -f -z $d2
truncate -s 64M /tmp/small.img
small=$(losetup -f --show /tmp/small.img) || { fail "losetup"; finish; }
must mkfs.ext4 -q -F $d3
mkdir -p /tmp/busy && must mount $d3 /tmp/busy

# raid0 over disks 0 and 1: no bitmap, so nothing writes to the members
# while no host I/O runs.
must load members=$d0,$d1 level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
disks="$d0 $d1 $d2 $d4 $small"
before=$(written $disks)
knob_refused "Invalid argument" "reshape takes words level=LEVEL" "stripes=4"
knob_refused "Invalid argument" "reshape takes words level=LEVEL" "level=raid5 level=raid0"
knob_refused "Invalid argument" "unknown level" "level=raid6"
knob_refused "Invalid argument" "unsupported reshape; supported: " "level=raid1"
knob_refused "Invalid argument" "chunk_kb must be a power of two" "chunk_kb=48"
knob_refused "Invalid argument" "chunk_kb must be a power of two" "chunk_kb=8192"
knob_refused "Invalid argument" "wrong number of members added" "level=raid5 add=$d2,$d4"
knob_refused "Invalid argument" "wrong number of members added" "add=$d2 chunk_kb=128"
knob_refused "Invalid argument" "the reshape changes nothing" "chunk_kb=64"
knob_refused "No space left on device" "$small: added device too small" "add=$small"
knob_refused "Device or resource busy" "cannot open $d3 exclusively" "add=$d3"
knob_refused "File exists" "$d1 is a member or spare of this array already" "add=$d1"
knob_refused "File exists" "$d4: member belongs to a raidmig array already" "add=$d4"
after=$(written $disks)
check "refused reshapes wrote nothing" test "$before" = "$after"
check "the array is as it was ($(cat $SYS/level), $(cat $SYS/state), $(cat $SYS/members))" \
  test "$(cat $SYS/level)/$(cat $SYS/source_level)/$(cat $SYS/state)/$(cat $SYS/members)" = "raid0/raid0/clean/$d0,$d1"

# A reshape while one runs (held back by the speed limit).
echo 1024 > $SYS/speed_limit_max_kbps
check "a grow starts" bash -c "echo add=$d2 > $SYS/reshape"
knob_refused "Device or resource busy" "reshape a clean array" "chunk_kb=128"
echo 0 > $SYS/speed_limit_max_kbps
check "the grow ends clean" wait_state clean 600
must unload

# A degraded raid1 (its second member missing at assembly).
must blkdiscard -f -z $d0
must blkdiscard -f -z $d1
must load members=$d0,$d1 level=raid1 assume_clean=1
must unload
must load members=$d0
must wait_dev
knob_refused "Device or resource busy" "degraded" "level=raid5 add=$d2"
must unload

umount /tmp/busy
losetup -d "$small"
finish
