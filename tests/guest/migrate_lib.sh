# On-line migration test, sourced by migrate_LEVEL.sh: ext4 with files on the
# first disk; load with level=; the files readable before the migration;
# migration started with fio (crc32c verification) and file writes running on
# the mounted volume the whole time; the new layout's capacity within a
# second of the start, ext4 grown into it while the migration runs; at the
# end the array is clean, e2fsck -fn is clean, and every file and fio pass checks out,
# also after the array is assembled again from its superblocks.
. tests/guest/lib.sh

MNT=/tmp/m

attr() { cat "$SYS/$1"; }

migrate_test() {   # migrate_test LEVEL MEMBERS [LOAD PARAMETER...]
  local level=$1 members=$2
  local params=("${@:3}")
  local n; n=$(echo "$members" | tr ',' '\n' | wc -l)
  local first=${members%%,*}
  local data; data=$(data_area "$first")

  # The user's disk: ext4 over the data area, with files.
  must mkfs.ext4 -q -F -E nodiscard -b 4096 "$first" $((data / 8))
  mkdir -p $MNT && must mount "$first" $MNT
  mkdir -p $MNT/old
  for i in $(seq 1 12); do head -c $(( (i * 300007) % 3000000 + 1 )) /dev/urandom > $MNT/old/f$i; done
  cp -r /usr/share/doc/fio $MNT/old/doc 2>/dev/null
  (cd $MNT && find old -type f -print0 | sort -z | xargs -0 sha256sum) > /tmp/old.sums
  must umount $MNT
  # The new members are not blank: they hold old data, which the capacity
  # the migration adds must not show as copies or parity that disagree.
  local d; for d in $(echo "$members" | tr ',' ' '); do
    [ "$d" = "$first" ] || must random_fill "$d" $((data / 2048))M
  done

  must load members="$members" level="$level" "${params[@]}"
  must wait_dev
  check "prepared" test "$(attr state)" = prepared
  check "volume has the source's size" test "$(blockdev --getsz /dev/raidmig0)" = $data
  check "level $level from single" test "$(attr level)/$(attr source_level)" = "$level/single"
  must mount /dev/raidmig0 $MNT
  check "files readable before the migration" bash -c "cd $MNT && sha256sum --quiet -c /tmp/old.sums"

  # Load on the volume during the whole migration; throttled at first, so
  # that ext4 grows into the new layout's capacity while it runs.
  load_start
  sleep 3
  local before; before=$(df -k --output=size $MNT | tail -1)
  echo 4096 > $SYS/speed_limit_max_kbps
  local t0=$SECONDS
  echo start > $SYS/action
  local p; p=$(attr progress)
  new_layout_at_once "$level" "${p#*/}"
  check "migration reached clean" wait_state clean 1800
  say "migration took $((SECONDS - t0)) s: $(attr units_done) units, $(attr units_staged) staged, $(attr units_moved) moved out of order, $(attr checkpoint_writes) checkpoint writes"
  sleep 3
  load_stop
  check "fio passes verified during the migration ($(cat /tmp/fio.last))" test ! -e /tmp/fio.failed
  check "files written during the migration ($(wc -l < /tmp/new.sums))" test "$(wc -l < /tmp/new.sums)" -ge 5

  check "idle after the migration and its resync ($(attr action))" wait_idle 1800
  p=$(attr progress)
  check "progress complete ($p)" test "${p%/*}" = "${p#*/}"
  check "capacity is the new layout's" test "$(blockdev --getsz /dev/raidmig0)" = "${p#*/}"
  check "checkpoints deferred ($(attr checkpoint_writes) for $(attr units_done) units)" \
    test "$(attr checkpoint_writes)" -lt "$(attr units_done)"
  check "resize2fs" resize2fs /dev/raidmig0
  if [ "$level" = raid1 ]; then
    # Mirrors: the first member's data stays where it is; nothing overlaps
    # and the capacity stays one data area.
    check "no unit staged for raid1" test "$(attr units_staged)" = 0
    check "raid1 keeps the capacity" test "$(blockdev --getsz /dev/raidmig0)" = $data
  else
    check "staging used for overlapping units" test "$(attr units_staged)" -ge 1
    check "ext4 grew" test "$(df -k --output=size $MNT | tail -1)" -gt "$before"
  fi
  check "files intact" bash -c "cd $MNT && sha256sum --quiet -c /tmp/old.sums && sha256sum --quiet -c /tmp/new.sums"
  must umount $MNT
  check "e2fsck -fn clean" e2fsck -fn /dev/raidmig0
  if [ "$level" != raid0 ]; then
    # Copies and parity agree everywhere, the capacity the migration added
    # included: with a bitmap (the default) the migration marks it unsynced
    # and the resync that follows makes it consistent, while the file
    # system above grows into it; with bitmap_region_mb=0 the migration
    # zeroes it (write-zeroes on NVMe, pages of zeros on SATA).
    if [ "$level" != raid1 ]; then
      if [[ " ${params[*]} " == *" bitmap_region_mb=0 "* ]]; then
        check "no resync without a bitmap" bash -c "! dmesg | grep -q 'raidmig0: resync of'"
      else
        check "the added capacity resynced after the migration" bash -c "dmesg | grep -q 'raidmig0: resync of .* bitmap regions started'"
      fi
    fi
    # A check is refused (EBUSY) while the resync runs.
    local i; for i in $(seq 1 1200); do echo check 2>/dev/null > $SYS/action && break; sleep 0.5; done
    for i in $(seq 1 600); do [ "$(attr action)" = idle ] && break; sleep 0.5; done
    check "scrub after the migration: mismatch_cnt $(attr mismatch_cnt)" test "$(attr mismatch_cnt)" = 0
    check "nothing left to resync ($(attr bitmap))" grep -qE '^none$| 0 to resync$' $SYS/bitmap
    if [ "$level" != raid1 ] && [[ " ${params[*]} " != *" bitmap_region_mb=0 "* ]]; then
      # The joining members' old data was left there by the migration.
      local rewritten
      rewritten=$(dmesg | sed -n 's/.*raidmig0: resync finished: \([0-9]*\) mismatched.*/\1/p' | tail -1)
      check "the resync rewrote the added capacity's old contents ($rewritten sectors)" test "${rewritten:-0}" -gt 0
    fi
  fi
  must unload

  # Once more, assembled from the superblocks (members in another order).
  local reversed; reversed=$(echo "$members" | tr ',' '\n' | tac | paste -sd,)
  must load members="$reversed"
  must wait_dev
  check "assembled clean" test "$(attr state)" = clean
  must mount /dev/raidmig0 $MNT
  check "files intact after assembly" bash -c "cd $MNT && sha256sum --quiet -c /tmp/old.sums && sha256sum --quiet -c /tmp/new.sums"
  local last; last=$(cat /tmp/fio.last)
  if [ -e /tmp/fio.failed ] && grep -qx "$last" /tmp/fio.failed; then last=$((last - 1)); fi
  check "last complete fio pass ($last) verifies" fio_pass "$last" --verify_only
  must umount $MNT
  must unload
  finish
}
