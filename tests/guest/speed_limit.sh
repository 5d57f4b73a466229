#!/usr/bin/env bash
# disks: 2 256M
# speed_limit_max_kbps holds for units bigger than a second's worth at the
# limit (a migration unit is 4 MiB): raid1 from the first disk, throttled to
# 512 and then 2048 KiB/s, its progress timed over 12 s each; the average
# must stay within the limit (plus one unit, the measurement's granularity)
# and reach at least half of it. The limit lifted, the migration finishes.
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]}
unit_kib=4096
window=12

done_sectors() { local p; p=$(cat $SYS/progress); echo "${p%/*}"; }

must load members=$d0,$d1 level=raid1
must wait_dev
echo 512 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
check "migrating" bash -c "sleep 1; [ \"\$(cat $SYS/state)\" = migrating ]"
for limit in 512 2048; do
  echo $limit > $SYS/speed_limit_max_kbps
  sleep 3   # the sleep owed to the previous limit passes
  p0=$(done_sectors) t0=$(date +%s%N)
  sleep $window
  p1=$(done_sectors) t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  kbps=$(( (p1 - p0) / 2 * 1000 / ms ))
  most=$(( limit + unit_kib * 1000 / ms ))
  say "limit $limit KiB/s: $(( (p1 - p0) / 2 )) KiB in $ms ms = $kbps KiB/s (speed_kbps shows $(cat $SYS/speed_kbps))"
  check "limit $limit: $kbps KiB/s at most $most" test $kbps -le $most
  check "limit $limit: $kbps KiB/s at least $((limit / 2))" test $kbps -ge $((limit / 2))
done
echo 0 > $SYS/speed_limit_max_kbps
check "migration reached clean with the limit lifted" wait_state clean 600
must unload
finish
