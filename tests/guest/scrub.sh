#!/usr/bin/env bash
# disks: 11 96M
# Scrub (`check`, `repair`, as md's sync_action): raid1 over 2, raid5 over 3,
# raid10 over 4, made clean with 16 MiB of data A. A check of the clean array
# finds mismatch_cnt 0. Then 4 KiB of role 1 (a copy, or raid5 parity) are
# overwritten behind raidmig's back; after a reload a check finds 8
# mismatched sectors and writes nothing; a repair rewrites them; a second
# check finds 0, A reads back (a repair rewrites the copies reads do not
# take, so what a read returns never changes), and md's own check over the
# members agrees.
# A check of raid0 is refused (EINVAL): nothing to compare.
. tests/guest/lib.sh

random_fill /tmp/A 16M
head -c 4096 /dev/urandom > /tmp/junk

next=0
for layout in "raid1 2 --level=1" "raid5 3 --level=5 --layout=left-symmetric --chunk=64" \
              "raid10 4 --level=10 --layout=n2 --chunk=64"; do
  set -- $layout
  level=$1 n=$2; shift 2
  mdargs=("$@")
  devs=("${DISKS[@]:$next:$n}")
  next=$((next + n))
  members=$(IFS=,; echo "${devs[*]}")
  say "--- $level over $n: $members"
  must load members="$members" level="$level" chunk_kb=64 assume_clean=1
  must wait_dev
  must dd if=/tmp/A of=/dev/raidmig0 bs=1M oflag=direct status=none
  check "$level: a check of the clean array finds 0" test "$(scrub check)" = 0
  unload_within 60 || finish

  # 4 KiB of role 1: raid1 copy 1 at member sector 4096 (logical 2 MiB,
  # whose reads take copy 0: raid1 alternates copies by 1 MiB); at member
  # sector 2048 raid5 parity (row 16 of three members), raid10 copy 1 of
  # chunk 32 (reads take copy 0 there).
  seek=256; [ "$level" = raid1 ] && seek=512
  must dd if=/tmp/junk of="${devs[1]}" bs=4096 seek=$seek oflag=direct conv=notrunc status=none
  before=$(written "${devs[@]}")
  must load members="$members"
  must wait_dev
  found=$(scrub check)
  check "$level: check finds the 8 damaged sectors ($found)" test "$found" = 8
  check "$level: check wrote nothing" test "$before" = "$(written "${devs[@]}")"
  mark=$(dmesg | wc -l)
  found=$(scrub repair)
  check "$level: repair rewrites them ($found)" test "$found" = 8
  check "$level: dmesg tells the repair" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q 'repair finished: 8 mismatched sectors'"
  check "$level: a second check finds 0" test "$(scrub check)" = 0
  check "$level: A reads back" bash -c "dd if=/dev/raidmig0 bs=1M count=16 iflag=direct status=none | cmp -s - /tmp/A"
  cap=$(blockdev --getsz /dev/raidmig0)
  unload_within 60 || finish
  case $level in
    raid1) per=$cap ;;
    raid5) per=$(( cap / (n - 1) )) ;;
    raid10) per=$(( cap * 2 / n )) ;;
  esac
  must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none \
    --size=$((per / 2)) --raid-devices=$n "${mdargs[@]}" "${devs[@]}"
  md_check "$level"
  must mdadm --stop /dev/md0
  must mdadm --zero-superblock "${devs[@]}"
done

d0=${DISKS[$next]} d1=${DISKS[$((next + 1))]}
must load members="$d0,$d1" level=raid0 assume_clean=1
must wait_dev
if echo check > $SYS/action 2>/dev/null; then fail "raid0: a check was taken"; else ok "raid0: check refused"; fi
check "raid0: dmesg says why" bash -c "dmesg | grep -q 'raid0 has no redundancy to scrub'"
unload_within 60 || finish
finish
