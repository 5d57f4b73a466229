#!/usr/bin/env bash
# disks: 6 256M
# A member I/O error during a migration: a new member sits on a
# device-mapper table with an error range in its data area.
# 1. raid5 (redundant): the write error fails the member (dmesg names it,
#    the role and the sector; `roles` shows it faulty; `state` degraded); the
#    migration holds at a checkpoint while the data stays readable as it
#    was (the new capacity is there from the start, but no unit moves out
#    of order while degraded: a read past the old capacity fails), also
#    after a reload with the member still bad. A
#    replacement added through `add` is rebuilt over the part already
#    migrated (an unload half-way: the next load resumes the rebuild from
#    its recorded position), the migration then resumes by itself and ends
#    clean with the data intact, and md's check over the members finds no
#    mismatch. A
#    replacement for a role is refused while the migration is running with
#    every member in sync (nothing to replace).
# 2. raid0 (no redundancy): failing the member would lose what it holds, so
#    it is kept; the migration stops in state "failed", and once the member
#    is repaired (the error range mapped again) "resume" finishes it.
. tests/guest/lib.sh

bad=$(( 100 * 2048 ))   # 1 MiB of errors at 100 MiB into the member

# bad_member NAME DEV: DEV mapped through NAME with the error range.
bad_member() {
  local sz; sz=$(blockdev --getsz "$2")
  must dmsetup create "$1" <<EOT
0 $bad linear $2 0
$bad 2048 error
$((bad + 2048)) $((sz - bad - 2048)) linear $2 $((bad + 2048))
EOT
}

# 1. raid5.
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]} new=${DISKS[3]}
data=$(data_area $d0)
must random_fill $d0 $((data / 2048))M
want=$(head -c $((data * 512)) $d0 | md5sum)
bad_member bad $d1

mark=$(dmesg | wc -l)
must load members=$d0,/dev/mapper/bad,$d2 level=raid5
must wait_dev
echo start > $SYS/action
sleep 1
check "raid5: no replacement while every member is in sync" bash -c "! echo $new > $SYS/add"
check "raid5: the member failed on the error range: degraded" wait_state degraded 600
new_lines=$(dmesg | tail -n +$((mark + 1)))
line=$(grep -m1 'member /dev/mapper/bad (role 1) failed after a write error at sector' <<<"$new_lines")
say "dmesg: $line"
at=$(sed -n 's/.* at sector \([0-9]*\):.*/\1/p' <<<"$line")
# The failed write starts in the error range or up to one unit (8 MiB at
# most) before it.
check "raid5: dmesg names the member, role and a sector at the error range ($at)" \
  test -n "$at" -a "${at:-0}" -gt $((bad - 16384)) -a "${at:-0}" -lt $((bad + 2048))
check "raid5: roles show it faulty" grep -q "^1 /dev/mapper/bad faulty" $SYS/roles
sleep 2
p=$(cat $SYS/progress)
check "raid5: migration held part way ($p)" test "${p%/*}" -lt "${p#*/}" -a "${p%/*}" -gt 0
check "raid5: volume has the new layout's capacity (at once)" test "$(blockdev --getsz /dev/raidmig0)" = $((2 * data))
check "raid5: the data readable as before" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
# Degraded, no unit moves out of order: a read past the old capacity, of a
# unit not moved, fails rather than wait.
check "raid5: a read past the old capacity fails while degraded" \
  bash -c "! dd if=/dev/raidmig0 of=/dev/null bs=4k count=1 skip=$((data * 512 + (1 << 20))) iflag=direct,skip_bytes status=none"
unload_within 60 || finish

# Reload while the member is still bad: it was recorded faulty, so the
# array assembles degraded without it, the data readable.
must load members=$d0,/dev/mapper/bad,$d2
must wait_dev
check "raid5: reassembled degraded ($(cat $SYS/state))" test "$(cat $SYS/state)" = degraded
check "raid5: data readable after the reload" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"

# A replacement: rebuilt over the migrated part, then the migration
# resumes. An unload half-way through the rebuild: the next load (with the
# replacement among the members) resumes it from its recorded position.
mark=$(dmesg | wc -l)
echo 8192 > $SYS/speed_limit_max_kbps
must bash -c "echo $new > $SYS/add"
sleep 7
say "before the unload: roles: $(tr '\n' ';' < $SYS/roles) progress $(cat $SYS/progress)"
check "raid5: the replacement is rebuilding" grep -q "^1 $new rebuilding" $SYS/roles
unload_within 60 || finish
must load members=$d0,$new,$d2
must wait_dev
new_lines=$(dmesg | tail -n +$((mark + 1)))
from=$(grep -o "rebuilding role 1 onto $new from sector [0-9]*" <<<"$new_lines" | tail -1 | awk '{print $NF}')
check "raid5: the rebuild resumed past the start after the reload (sector ${from:-none})" test "${from:-0}" -gt 0
echo 0 > $SYS/speed_limit_max_kbps
check "raid5: migration finished after the rebuild" wait_state clean 900
new_lines=$(dmesg | tail -n +$((mark + 1)))
say "$(grep -E 'replaces|rebuild|resumed|finished' <<<"$new_lines" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
check "raid5: the replacement was rebuilt" grep -q "rebuild of role 1 onto $new finished" <<<"$new_lines"
check "raid5: the migration resumed by itself" grep -q "migration resumed" <<<"$new_lines"
check "raid5: roles all in sync" test "$(grep -c in_sync $SYS/roles)" = 3
check "raid5: capacity is raid5's" test "$(blockdev --getsz /dev/raidmig0)" = $((2 * data))
check "raid5: data intact after the migration" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
cap=$(blockdev --getsz /dev/raidmig0)
unload_within 60 || finish
must dmsetup remove bad
must mdadm --create /dev/md0 --run --quiet --assume-clean --metadata=1.0 --bitmap=none --level=5 \
  --layout=left-symmetric --chunk=64 --size=$((cap / 2 / 2)) --raid-devices=3 "$d0" "$new" "$d2"
md_check "raid5"
check "raid5: md reads the data" test "$(head -c $((data * 512)) /dev/md0 | md5sum)" = "$want"
must mdadm --stop /dev/md0

# 2. raid0.
e0=${DISKS[4]} e1=${DISKS[5]}
data=$(data_area $e0)
must random_fill $e0 $((data / 2048))M
want=$(head -c $((data * 512)) $e0 | md5sum)
bad_member bad0 $e1
sz=$(blockdev --getsz $e1)
mark=$(dmesg | wc -l)
must load members=$e0,/dev/mapper/bad0 level=raid0
must wait_dev
echo start > $SYS/action
check "raid0: migration failed on the error range" wait_state failed 600
line=$(dmesg | tail -n +$((mark + 1)) | grep -m1 'raidmig: raidmig0: migration .* error .* on member /dev/mapper/bad0')
say "dmesg: $line"
check "raid0: dmesg names the member" test -n "$line"
check "raid0: the member is kept" grep -q "^1 /dev/mapper/bad0 in_sync" $SYS/roles
check "raid0: the data readable as before" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
must dmsetup load bad0 --table "0 $sz linear $e1 0"
must dmsetup resume bad0
echo resume > $SYS/action
for _ in $(seq 1 100); do [ "$(cat $SYS/state)" = failed ] || break; sleep 0.1; done
check "raid0: migration finished after the repair" wait_state clean 900
check "raid0: data intact after the migration" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
unload_within 60 || finish
must dmsetup remove bad0
finish
