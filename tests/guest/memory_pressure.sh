#!/usr/bin/env bash
# disks: 3 256M
# memory: 512M
# Swapping to a raidmig volume under memory pressure: raid5 (made clean) over
# three disks, ext4 on it, a 192 MiB swap file in it, then stress-ng's vm
# stressors take 96 MiB more than the available memory for 60 s, so that
# the kernel swaps. raid5
# writes need memory of their own (read-modify-write of a stripe) while the
# kernel is short of it: stress-ng must end in time with status 0, swap must
# have been used, no task may hang, and the file system must stay clean.
# Argument "plain": the same on the first disk alone, without raidmig (a
# control for the guest and the emulator).
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]}
MNT=/tmp/m
if [ "${1:-}" = plain ]; then
  dev=$d0
else
  dev=/dev/raidmig0
  must load members=$d0,$d1,$d2 level=raid5 assume_clean=1
  must wait_dev
fi
say "swap file on ext4 on $dev"
must mkfs.ext4 -q -F $dev
mkdir -p $MNT
must mount $dev $MNT
must fallocate -l 192M $MNT/swap
chmod 600 $MNT/swap
must mkswap -q $MNT/swap
if ! swapon $MNT/swap 2>/tmp/swapon.err; then
  # A file system that refuses preallocated swap files: write it out.
  say "swapon of a fallocated file refused ($(cat /tmp/swapon.err)); writing it out"
  rm -f $MNT/swap
  must dd if=/dev/zero of=$MNT/swap bs=1M count=192 status=none
  chmod 600 $MNT/swap
  must mkswap -q $MNT/swap
  must swapon $MNT/swap
fi
echo 30 > /proc/sys/kernel/hung_task_timeout_secs
# Every hung task reported (not only the first 10); the watchdog adds a list
# of all blocked tasks at the first report (the holders of what they wait for).
echo -1 > /proc/sys/kernel/hung_task_warnings
say "memory: $(awk '/MemTotal|MemFree|SwapTotal|SwapFree/ {printf "%s %s kB; ", $1, $2}' /proc/meminfo)"

pswpout() { awk '$1 == "pswpout" {print $2}' /proc/vmstat; }
out0=$(pswpout)
min_free=$(awk '/SwapTotal/ {print $2}' /proc/meminfo)
t0=$SECONDS
# Two workers that together want 96 MiB more than is available (stress-ng
# splits --vm-bytes between its workers).
want=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) + 96 * 1024 ))
say "stress-ng: 2 vm workers of $((want / 2048)) MiB each"
# The script itself may stall in reclaim along with everything else: an
# mlocked watchdog records the failure and resets the guest then.
python3 tests/guest/watchdog.py 330 "$OUT/$TEST_NAME.results" \
  "[$TEST_NAME] FAIL: guest stuck for 330 s after stress-ng started (no progress in memory reclaim); reset by the watchdog" &
wdog=$!
stress-ng --vm 2 --vm-bytes ${want}k --vm-keep --timeout 60s --metrics-brief > /tmp/stress.log 2>&1 &
spid=$!
# Watch swap use while stress-ng runs; give up on it after 240 s.
while running $spid && [ $((SECONDS - t0)) -lt 240 ]; do
  f=$(awk '/SwapFree/ {print $2}' /proc/meminfo)
  [ "$f" -lt "$min_free" ] && min_free=$f
  sleep 1
done
if running $spid; then
  STUCK=$((STUCK + 1))
  fail "stress-ng still running after 240 s (state $(awk '{print $3}' /proc/$spid/stat), wchan $(cat /proc/$spid/wchan 2>/dev/null))"
  ps -eo pid,stat,wchan:32,comm | awk '$2 ~ /D/'
  kill $wdog
  finish
fi
wait $spid
rc=$?
kill $wdog
took=$((SECONDS - t0))
sed 's/^/    /' /tmp/stress.log | tail -n 8
out1=$(pswpout)
used=$(( $(awk '/SwapTotal/ {print $2}' /proc/meminfo) - min_free ))
say "stress-ng took $took s, status $rc; pages swapped out: $((out1 - out0)); most swap in use: $used kB"
check "stress-ng ended with status 0" test "$rc" = 0
# (pswpout stays 0 on a kernel without VM event counters: the swap in use
# is what counts.)
check "swap was used (up to $used kB)" test "$used" -gt 0
t1=$SECONDS
check "swapoff" swapoff $MNT/swap
say "swapoff took $((SECONDS - t1)) s"
must umount $MNT
check "e2fsck -fn clean" e2fsck -fn $dev
[ $dev != /dev/raidmig0 ] || unload_within 60
finish
