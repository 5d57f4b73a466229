#!/usr/bin/env bash
# disks: 2 256M
# Hostile input to the sysfs knobs, and a wall clock that jumps, during a
# throttled migration (single -> raid1).
#   input: every write of a malformed or out-of-range value to a writable
#          knob (action, speed_limit_max_kbps) fails, the value read back is
#          unchanged, and the migration keeps progressing. 18446744073709551615
#          parses as a u64: a limit that large must be refused or handled
#          without overflow in the migration thread.
#   clock: the wall clock is stepped back a day and forward again, 20 times,
#          while units are copied: nothing may compute a negative duration.
# Afterwards the migration reaches clean and the volume holds the first
# disk's original data. Arguments select phases (default: input clock).
. tests/guest/lib.sh

phases=${*:-input clock}
has() { [[ " $phases " == *" $1 "* ]]; }
d0=${DISKS[0]} d1=${DISKS[1]}
data=$(data_area $d0)
say "phases: $phases"

must random_fill $d0 $((data / 2048))M
want=$(head -c $((data * 512)) $d0 | md5sum)

must load members=$d0,$d1 level=raid1
must wait_dev
echo 8192 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
sleep 2
check "migration running" test "$(cat $SYS/state)" = migrating

done_sectors() { local p; p=$(cat $SYS/progress); echo "${p%/*}"; }

# progressing: the progress numerator rises within a few seconds.
progressing() {
  local p0 p1 i
  p0=$(done_sectors)
  for i in $(seq 1 50); do
    sleep 0.1
    p1=$(done_sectors)
    [ "$p1" -gt "$p0" ] && return 0
    [ "$(cat $SYS/state)" = clean ] && return 0
  done
  say "  progress stuck at $p0 (state $(cat $SYS/state))"
  return 1
}

if has input; then
  long=$(head -c 5000 /dev/zero | tr '\0' 1)
  for knob in action speed_limit_max_kbps; do
    before=$(cat $SYS/$knob)
    for v in "" "-1" "abc" "1e3" "18446744073709551615" "99999999999999999999999" "$long" $'\xff\xfe' "start start"; do
      shown=${v:0:24}; [ ${#v} -gt 24 ] && shown="$shown... (${#v} chars)"
      shown=$(printf '%q' "$shown")
      if printf '%s\n' "$v" > $SYS/$knob 2>/dev/null; then
        fail "$knob: write of $shown accepted"
      else
        ok "$knob: write of $shown refused"
      fi
      after=$(cat $SYS/$knob)
      if [ "$after" != "$before" ]; then
        fail "$knob: reads '$after' after the write of $shown, was '$before'"
        echo "$before" > $SYS/$knob 2>/dev/null
      fi
    done
  done
  check "migration still progressing after the bad input" progressing
fi

if has clock; then
  # The wall clock is restored at the end from the monotonic clock.
  real0=$(date +%s.%N) up0=$(cut -d' ' -f1 /proc/uptime)
  copied0=$(done_sectors)
  for i in $(seq 1 20); do
    date -s @$(( $(date +%s) - 86400 )) > /dev/null
    sleep 0.1
    date -s @$(( $(date +%s) + 86400 )) > /dev/null
    sleep 0.3
  done
  date -s @"$(awk -v r=$real0 -v u0=$up0 -v u1="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.3f", r + u1 - u0 }')" > /dev/null
  say "clock stepped back and forth 20 times while $(( $(done_sectors) - copied0 )) sectors were copied"
  check "migration still progressing after the clock steps" progressing
fi

# wait_clean: waits for the state clean while the migration progresses;
# gives up when the progress stands still for 20 s.
wait_clean() {
  local last=-1 since=$SECONDS p
  while [ $((SECONDS - since)) -lt 20 ]; do
    [ "$(cat $SYS/state)" = clean ] && return 0
    p=$(done_sectors)
    [ "$p" != "$last" ] && { last=$p; since=$SECONDS; }
    sleep 1
  done
  say "  progress stuck at $last/$(cat $SYS/progress | cut -d/ -f2), state $(cat $SYS/state)"
  return 1
}
echo 0 > $SYS/speed_limit_max_kbps
check "migration reached clean" wait_clean
[ "$(cat $SYS/state)" = clean ] &&
  check "volume holds the first disk's original data" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
unload_within 60
finish
