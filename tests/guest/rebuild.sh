#!/usr/bin/env bash
# disks: 12 96M
# A replacement rebuilt while host writes go on: raid1 over 2, raid5 over 3
# and raid10 over 4, made clean with 24 MiB of data A, role 1 behind a
# device-mapper table. Role 1 fails (its table turns to errors under a
# write); a new disk is written to `add` while fio writes and verifies
# elsewhere; `roles` shows it rebuilding, `action` reads `rebuild`; the
# array comes back to `clean` with every role in sync, fio's verify passes,
# A reads back; then md, created over the members as they now are (the
# replacement in role 1), shows the same bytes and its `check` finds
# mismatch_cnt 0. Bad additions are refused with nothing written: a device
# too small, one in use (held by device-mapper), a member of this array, a
# path that is not one.
# SATA only: the rebuild's member reads and writes go through the same
# member I/O (KernelIo in migrator.rs, over sys/bio.rs) as a migration's
# units, which migrate_raid5 and migrate_raid10 run on NVMe too, and the
# block layer splits them to each member's queue limits.
. tests/guest/lib.sh

random_fill /tmp/A 24M
next=0
for layout in "raid1 2 --level=1" "raid5 3 --level=5 --layout=left-symmetric --chunk=64" \
              "raid10 4 --level=10 --layout=n2 --chunk=64"; do
  set -- $layout
  level=$1 n=$2; shift 2
  mdargs=("$@")
  devs=("${DISKS[@]:$next:$n}")
  new=${DISKS[$((next + n))]}
  next=$((next + n + 1))
  bad=${devs[1]}
  must dmsetup create m1 --table "0 $(blockdev --getsz "$bad") linear $bad 0"
  members=$(IFS=,; echo "${devs[0]},/dev/mapper/m1${devs[2]:+,${devs[*]:2}}")
  say "--- $level over $n: members $members, replacement $new"
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none

  # Role 1 fails under a write.
  must dmsetup load m1 --table "0 $(blockdev --getsz "$bad") error"
  must dmsetup resume m1
  must dd if=/tmp/A of=/dev/raidmig0 bs=1M count=1 oflag=direct conv=notrunc status=none
  check "$level: degraded after role 1 failed" wait_state degraded 20

  if [ "$level" = raid1 ]; then
    # Bad additions first (raid1's turn): nothing written to them.
    truncate -s 64M /tmp/small.img
    small=$(losetup -f --show /tmp/small.img)
    before=$(sums "$small" "${devs[0]}" "$new")
    if echo "$small" > $SYS/add 2>/dev/null; then fail "a device too small was added"; else ok "a device too small is refused"; fi
    # In use: the replacement held by a device-mapper table.
    must dmsetup create held --table "0 $(blockdev --getsz "$new") linear $new 0"
    if echo "$new" > $SYS/add 2>/dev/null; then fail "a device in use was added"; else ok "a device in use is refused"; fi
    must dmsetup remove held
    if echo "${devs[0]}" > $SYS/add 2>/dev/null; then fail "a member was added again"; else ok "a member of this array is refused"; fi
    if echo "not-a-path" > $SYS/add 2>/dev/null; then fail "a bad path was taken"; else ok "a bad path is refused"; fi
    check "refused additions wrote nothing" test "$before" = "$(sums "$small" "${devs[0]}" "$new")"
    check "dmesg says why: in use" bash -c "dmesg | grep -q 'cannot add $new: cannot open it exclusively'"
    check "dmesg says why: too small" bash -c "dmesg | grep -q 'cannot add $small: device too small'"
    check "dmesg says why: a member already" bash -c "dmesg | grep -q 'cannot add ${devs[0]}: it is a member'"
    losetup -d "$small"
  fi

  echo 16384 > $SYS/speed_limit_max_kbps
  fio_verify "$level" /dev/raidmig0 --rw=randwrite --bs=4k --iodepth=8 --offset=32M --size=8M &
  fio_pid=$!
  sleep 1
  mark=$(dmesg | wc -l)
  check "$level: $new taken by add" bash -c "echo $new > $SYS/add"
  sleep 1
  say "$level: action $(cat $SYS/action), progress $(cat $SYS/progress), roles: $(tr '\n' ';' < $SYS/roles)"
  check "$level: role 1 is $new, rebuilding or rebuilt" grep -Eq "^1 $new (rebuilding|in_sync)" $SYS/roles
  wait $fio_pid
  check "$level: clean again after the rebuild" wait_state clean 300
  check "$level: every role in sync" test "$(grep -c ' in_sync$' $SYS/roles)" = "$n"
  new_lines=$(dmesg | tail -n +$((mark + 1)))
  check "$level: dmesg tells the replacement" grep -q "$new replaces role 1" <<<"$new_lines"
  check "$level: dmesg tells the end of the rebuild" grep -q "rebuild of role 1 onto $new finished" <<<"$new_lines"
  check "$level: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=24 iflag=direct status=none | cmp -s - /tmp/A"
  cap=$(blockdev --getsz /dev/raidmig0)
  want=$(md5sum < /dev/raidmig0)
  unload_within 60 || finish
  must dmsetup remove m1

  # md over the members as they are now.
  case $level in
    raid1) per=$cap ;;
    raid5) per=$(( cap / (n - 1) )) ;;
    raid10) per=$(( cap * 2 / n )) ;;
  esac
  now=("${devs[0]}" "$new" "${devs[@]:2}")
  must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none \
    --size=$((per / 2)) --raid-devices=$n "${mdargs[@]}" "${now[@]}"
  check "$level: md shows the bytes raidmig showed" test "$(md5sum < /dev/md0)" = "$want"
  md_check "$level"
  must mdadm --stop /dev/md0
  must mdadm --zero-superblock "${now[@]}"
done
finish
