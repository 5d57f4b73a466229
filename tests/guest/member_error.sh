#!/usr/bin/env bash
# disks: 12 96M
# Member errors from a device-mapper table under role 1 of a clean array
# (raid1 over 3, raid5 over 3, raid10 over 4), with 16 MiB of data A:
# 1. a bad 4 KiB block on the member (dm-dust: its reads fail until it is
#    written; its contents damaged underneath): reads of A are served from
#    the redundancy (the right bytes, no error), the block is rewritten from
#    the other members (md's read-error correction: dmesg tells it, the
#    member's contents are right again), and the member stays in sync;
# 2. the whole member fails while fio writes and verifies behind A: fio's
#    verify passes, A reads back, `state` is `degraded`, `roles` shows the
#    member faulty, dmesg names it.
# Then raid0 over 2, whose member 1 fails: I/O that needs it fails with EIO
# at once, I/O on member 0 still works, `state` is `failed`.
. tests/guest/lib.sh

# table NAME DEV: maps DEV linearly again.
table() {
  dmsetup load "$1" --table "0 $(blockdev --getsz "$2") linear $2 0" && dmsetup resume "$1"
}

random_fill /tmp/A 16M
next=0
for layout in "raid1 3" "raid5 3" "raid10 4"; do
  set -- $layout
  level=$1 n=$2
  devs=("${DISKS[@]:$next:$n}")
  next=$((next + n))
  bad=${devs[1]}
  must dmsetup create m1 --table "0 $(blockdev --getsz "$bad") dust $bad 0 512"
  members=$(IFS=,; echo "${devs[0]},/dev/mapper/m1${devs[2]:+,${devs[*]:2}}")
  say "--- $level over $n: members $members"
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none

  # 1. A bad 4 KiB on role 1: member sectors 2176..2184 (row 17 of 64 KiB
  #    chunks), which hold data of A that reads take from role 1 at every
  #    level (raid1: 1 MiB region 1; raid5: data, parity is on role 0;
  #    raid10: the copy read of its chunk). dm-dust bad blocks: reads fail
  #    until the blocks are written (a drive remapping them), and the
  #    contents underneath are damaged. Reads are served from the
  #    redundancy, and the range is rewritten from the other members (md's
  #    read-error correction).
  good=$(dd if="$bad" bs=512 skip=2176 count=8 iflag=direct status=none | md5sum)
  must dd if=/dev/urandom of="$bad" bs=512 seek=2176 count=8 oflag=direct conv=notrunc status=none
  mark=$(dmesg | wc -l)
  for b in $(seq 2176 2183); do must dmsetup message m1 0 addbadblock $b; done
  must dmsetup message m1 0 enable
  check "$level: A reads back with a bad block on role 1" \
    bash -c "dd if=/dev/raidmig0 bs=1M count=16 iflag=direct status=none | cmp -s - /tmp/A"
  for i in $(seq 1 20); do dmesg | tail -n +$((mark + 1)) | grep -q "corrected: rewritten" && break; sleep 0.5; done
  new=$(dmesg | tail -n +$((mark + 1)))
  check "$level: dmesg tells the read error" grep -q "read error .* on member /dev/mapper/m1 (role 1)" <<<"$new"
  check "$level: dmesg tells the correction" grep -q "read error at sector 2[0-9]* of member /dev/mapper/m1 (role 1) corrected" <<<"$new"
  check "$level: the member stays in sync" grep -q "^1 /dev/mapper/m1 in_sync" $SYS/roles
  check "$level: state clean" test "$(cat $SYS/state)" = clean
  check "$level: the bad block was rewritten right" \
    test "$(dd if="$bad" bs=512 skip=2176 count=8 iflag=direct status=none | md5sum)" = "$good"

  # 2. The whole member fails while fio writes and verifies past A.
  must table m1 "$bad"
  mark=$(dmesg | wc -l)
  fio_verify "$level" /dev/raidmig0 --rw=randwrite --bs=4k --iodepth=8 --offset=16M --size=8M &
  fio_pid=$!
  sleep 3
  must dmsetup load m1 --table "0 $(blockdev --getsz "$bad") error"
  must dmsetup resume m1
  wait $fio_pid
  check "$level: state degraded" wait_state degraded 20
  check "$level: role 1 shown faulty" grep -q "^1 /dev/mapper/m1 faulty" $SYS/roles
  new=$(dmesg | tail -n +$((mark + 1)))
  check "$level: dmesg names the failed member" grep -q "member /dev/mapper/m1 (role 1) failed" <<<"$new"
  check "$level: A reads back degraded" \
    bash -c "dd if=/dev/raidmig0 bs=1M count=16 iflag=direct status=none | cmp -s - /tmp/A"
  unload_within 60 || finish
  must dmsetup remove m1
done

# raid0: no redundancy.
d0=${DISKS[$next]} d1=${DISKS[$((next + 1))]}
must dmsetup create m1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
say "--- raid0 over 2: members $d0,/dev/mapper/m1"
must load members="$d0,/dev/mapper/m1" level=raid0 chunk_kb=64 assume_clean=1
must wait_dev
must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
must dmsetup load m1 --table "0 $(blockdev --getsz "$d1") error"
must dmsetup resume m1
# Chunk 0 (the first 64 KiB) is on member 0, chunk 1 on member 1.
check "raid0: a read on member 0 works" \
  bash -c "dd if=/dev/raidmig0 bs=64k count=1 iflag=direct status=none | cmp -s - <(head -c 65536 /tmp/A)"
if dd if=/dev/raidmig0 of=/dev/null bs=64k skip=1 count=1 iflag=direct status=none 2>/dev/null; then
  fail "raid0: a read on the failed member succeeded"
else
  ok "raid0: a read on the failed member fails"
fi
if dd if=/dev/zero of=/dev/raidmig0 bs=64k seek=1 count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
  fail "raid0: a write on the failed member succeeded"
else
  ok "raid0: a write on the failed member fails"
fi
check "raid0: state failed" test "$(cat $SYS/state)" = failed
check "raid0: a read on member 0 still works" \
  bash -c "dd if=/dev/raidmig0 bs=64k count=1 iflag=direct status=none | cmp -s - <(head -c 65536 /tmp/A)"
unload_within 60 || finish
must dmsetup remove m1
finish
