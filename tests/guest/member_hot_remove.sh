#!/usr/bin/env bash
# disks: 10 96M
# bus: sata nvme
# A member hot-removed from a clean array in use (raid1 over 3, raid5 over 3,
# raid10 over 4, with ext4 and 40 files): every file still reads back, new
# files can be written and fsync'd, `state` reads `degraded`, `roles` shows
# the member faulty, dmesg names it; after an unload the array assembles
# degraded from the remaining members (dmesg says so) and every file,
# old and new, reads back. The removal is the SCSI device's own
# (`echo 1 > .../device/delete`), as when a SATA disk is pulled, or on NVMe
# the PCI function's (`.../device/device/remove`), as a hot-unplug. Then
# `echo failed > remove` releases it, as `mdadm --remove ... failed` does.
. tests/guest/lib.sh

mnt=/tmp/mnt
mkdir -p "$mnt"

# files DIR FIRST LAST: files FIRST..LAST of assorted sizes, fsync'd.
files() {
  local i
  for i in $(seq "$2" "$3"); do
    head -c $(( (i * 7919) % 200000 + 1 )) /dev/urandom > "$1/f$i"
  done
  sync -f "$1"
}

# sysfs_delete DEV: removes the disk DEV from the guest (its SCSI device, or
# its NVMe controller's PCI function).
sysfs_delete() {
  local name; name=$(basename "$1")
  if [ "$BUS" = nvme ]; then
    echo 1 > "/sys/block/$name/device/device/remove"
  else
    echo 1 > "/sys/block/$name/device/delete"
  fi
}

next=0
for layout in "raid1 3" "raid5 3" "raid10 4"; do
  set -- $layout
  level=$1 n=$2
  devs=("${DISKS[@]:$next:$n}")
  next=$((next + n))
  members=$(IFS=,; echo "${devs[*]}")
  victim=${devs[1]}
  rest=$(IFS=,; echo "${devs[0]}${devs[2]:+,${devs[*]:2}}")
  say "--- $level over $n: members $members, role 1 ($victim) will be removed"
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  must mkfs.ext4 -q -F /dev/raidmig0
  must mount /dev/raidmig0 "$mnt"
  mkdir -p "$mnt/d"
  files "$mnt/d" 1 40
  (cd "$mnt/d" && md5sum f*) > /tmp/sums
  mark=$(dmesg | wc -l)

  must sysfs_delete "$victim"
  echo 3 > /proc/sys/vm/drop_caches
  check "$level: 40 files read back with role 1 removed" bash -c "cd $mnt/d && md5sum --quiet -c /tmp/sums"
  if (files "$mnt/d" 41 50 && cd "$mnt/d" && md5sum f4[1-9] f50 >> /tmp/sums); then
    ok "$level: 10 new files written and fsync'd"
  else
    fail "$level: new files could not be written"
  fi
  check "$level: state degraded" wait_state degraded 20
  say "$level: state $(cat $SYS/state); roles: $(tr '\n' ';' < $SYS/roles)"
  check "$level: role 1 shown faulty" grep -q "^1 $victim faulty" $SYS/roles
  check "$level: roles 0 shown in sync" grep -q "^0 ${devs[0]} in_sync" $SYS/roles
  new=$(dmesg | tail -n +$((mark + 1)))
  check "$level: dmesg names the failed member" grep -q "member $victim (role 1) failed" <<<"$new"
  check "$level: dmesg tells the record" grep -q "member failure recorded in the superblocks of the others" <<<"$new"
  # The pulled disk has no device node left: md's `failed` keyword removes
  # it, releasing what the array held of it, while the filesystem is in use.
  check "$level: 'failed' written to remove" bash -c "echo failed > $SYS/remove"
  check "$level: role 1 shown removed" grep -q "^1 removed faulty" $SYS/roles
  echo 3 > /proc/sys/vm/drop_caches
  check "$level: all 50 files read back" bash -c "cd $mnt/d && md5sum --quiet -c /tmp/sums"
  must umount "$mnt"
  unload_within 60 || finish

  mark=$(dmesg | wc -l)
  must load members="$rest"
  must wait_dev
  new=$(dmesg | tail -n +$((mark + 1)))
  say "$level: reassembled: $(grep raidmig <<<"$new" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
  check "$level: dmesg says degraded" grep -q "degraded" <<<"$new"
  check "$level: state degraded after reassembly" test "$(cat $SYS/state)" = degraded
  check "$level: role 1 missing and faulty" grep -q "^1 missing faulty" $SYS/roles
  must mount /dev/raidmig0 "$mnt"
  check "$level: all 50 files read back after reassembly" bash -c "cd $mnt/d && md5sum --quiet -c /tmp/sums"
  must umount "$mnt"
  check "$level: e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  unload_within 60 || finish
done
finish
