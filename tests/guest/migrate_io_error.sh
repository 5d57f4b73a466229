#!/usr/bin/env bash
# disks: 3 256M
# A member I/O error during a migration: the second member sits on a
# device-mapper table with an error range in its data area. The migration
# must stop in state "failed" with a dmesg line naming the member and the
# sector, every byte of the volume must stay readable as it was, and a reload
# must still assemble the array. Once the member is repaired (the error range
# mapped again), "resume" finishes the migration with the data intact.
. tests/guest/lib.sh
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]}

data=$(data_area $d0)
sz=$(blockdev --getsz $d1)
bad=$(( 100 * 2048 ))     # 1 MiB of errors at 100 MiB into the member

must dd if=/dev/urandom of=$d0 bs=1M count=$((data / 2048)) oflag=direct status=none
want=$(head -c $((data * 512)) $d0 | md5sum)
must dmsetup create bad <<EOT
0 $bad linear $d1 0
$bad 2048 error
$((bad + 2048)) $((sz - bad - 2048)) linear $d1 $((bad + 2048))
EOT

mark=$(dmesg | wc -l)
must load members=$d0,/dev/mapper/bad,$d2 level=raid5
must wait_dev
echo start > $SYS/action
check "migration failed on the error range" wait_state failed 600
line=$(dmesg | tail -n +$((mark + 1)) | grep -m1 'raidmig: raidmig0: migration .* error .* on member /dev/mapper/bad')
say "dmesg: $line"
at=$(sed -n 's/.* at sector \([0-9]*\)$/\1/p' <<<"$line")
# The failed write starts in the error range or up to one unit (8 MiB at
# most) before it.
check "dmesg names the member and a sector at the error range ($at)" \
  test -n "$at" -a "${at:-0}" -gt $((bad - 16384)) -a "${at:-0}" -lt $((bad + 2048))
p=$(cat $SYS/progress)
check "migration stopped part way ($p)" test "${p%/*}" -lt "${p#*/}" -a "${p%/*}" -gt 0
check "volume still has the source's size" test "$(blockdev --getsz /dev/raidmig0)" = $data
check "every byte of the volume readable as before" test "$(md5sum < /dev/raidmig0)" = "$want"
must unload

# Reload while the member is still bad: the array assembles (paused by the
# failure, or failing again if it resumes) and the data stays readable.
must load members=$d2,/dev/mapper/bad,$d0
must wait_dev
[ "$(cat $SYS/state)" = migrating ] && wait_state failed 600
st=$(cat $SYS/state)
check "reassembled, stopped ($st)" test "$st" = paused -o "$st" = failed
check "data readable after the reload" test "$(md5sum < /dev/raidmig0)" = "$want"

# Repair the member (map the range again) and resume.
must dmsetup load bad --table "0 $sz linear $d1 0"
must dmsetup resume bad
echo resume > $SYS/action
# The migration thread takes the command up asynchronously.
for _ in $(seq 1 100); do [ "$(cat $SYS/state)" = failed ] || [ "$(cat $SYS/state)" = paused ] || break; sleep 0.1; done
check "migration finished after the repair" wait_state clean 900
check "capacity is raid5's" test "$(blockdev --getsz /dev/raidmig0)" = $((2 * data))
check "data intact after the migration" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
must unload
dmsetup remove bad
finish
