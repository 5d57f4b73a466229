#!/usr/bin/env bash
# disks: 2 256M
# speed_limit_max_kbps holds for units bigger than a second's worth at the
# limit (a migration unit is 4 MiB): raid1 from the first disk, started at
# load with the limit as a module parameter (512 KiB/s), assembled again
# with another (2048), then throttled through sysfs (512); its progress is
# timed over 12 s each time, and the average must stay within the limit
# (plus one unit, the measurement's granularity) and reach at least half of
# it. The limit lifted, the migration finishes.
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]}
unit_kib=4096
window=12

done_sectors() { local p; p=$(cat $SYS/progress); echo "${p%/*}"; }

# measure LIMIT HOW: the migration's average speed over the window.
measure() {
  local limit=$1 how=$2 p0 t0 p1 t1 ms kbps most
  check "$how: speed_limit_max_kbps reads $limit" test "$(cat $SYS/speed_limit_max_kbps)" = $limit
  p0=$(done_sectors) t0=$(date +%s%N)
  sleep $window
  p1=$(done_sectors) t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  kbps=$(( (p1 - p0) / 2 * 1000 / ms ))
  most=$(( limit + unit_kib * 1000 / ms ))
  say "$how, limit $limit KiB/s: $(( (p1 - p0) / 2 )) KiB in $ms ms = $kbps KiB/s (speed_kbps shows $(cat $SYS/speed_kbps))"
  check "$how, limit $limit: $kbps KiB/s at most $most" test $kbps -le $most
  check "$how, limit $limit: $kbps KiB/s at least $((limit / 2))" test $kbps -ge $((limit / 2))
}

# The limit in effect from the first unit: nothing copied at full speed
# before a write to sysfs could come.
must load members=$d0,$d1 level=raid1 start=1 speed_limit_max_kbps=512
must wait_dev
check "migrating" bash -c "sleep 1; [ \"\$(cat $SYS/state)\" = migrating ]"
p=$(done_sectors)
check "started at the limit: $p sectors copied at load + 1 s" test "$p" -le $(( (unit_kib + 2 * 512) * 2 ))
measure 512 "module parameter"
must unload

# A migration resumed at assembly takes the parameter too.
must load members=$d1,$d0 speed_limit_max_kbps=2048
must wait_dev
check "resumed migrating" test "$(cat $SYS/state)" = migrating
measure 2048 "at assembly"

echo 512 > $SYS/speed_limit_max_kbps
sleep 3   # the sleep owed to the previous limit passes
measure 512 sysfs
echo 0 > $SYS/speed_limit_max_kbps
check "migration reached clean with the limit lifted" wait_state clean 600
must unload
finish
