#!/usr/bin/env bash
# disks: 6 96M
# A member lost during a migration from a plain disk to raid1:
# 1. the new member (role 1) fails: the migration stops, dmesg names the
#    member, `roles` shows it faulty, and every sector of the volume still
#    reads back as the plain disk had it (from the source, or the copied
#    part's first copy); a replacement added then is rebuilt over the copied
#    part, the migration resumes by itself and ends clean, the data intact;
# 2. the source disk (role 0) fails: that is a real loss where the data was
#    not copied yet: reads there fail with EIO at once (never hang), reads of
#    the copied part are served by the new member, `state` reads `failed`,
#    dmesg names the member. rmmod completes in both cases.
#    A replacement for the source is refused (what it held that was not
#    copied yet has no other copy: the member is to be repaired).
. tests/guest/lib.sh

# source_with_data DEV: random data over DEV's data area (its tail stays
# zero), kept in /tmp/src.
source_with_data() {
  local data; data=$(data_area "$1")
  random_fill /tmp/src $((data * 512))
  must dd if=/tmp/src of="$1" bs=1M oflag=direct conv=notrunc status=none
}

# 1. The new member fails.
d0=${DISKS[0]} d1=${DISKS[1]}
source_with_data "$d0"
must dmsetup create m1 --table "0 $(blockdev --getsz "$d1") linear $d1 0"
must load members="$d0,/dev/mapper/m1" level=raid1
must wait_dev
echo 8192 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
sleep 3
say "before the failure: progress $(cat $SYS/progress)"
mark=$(dmesg | wc -l)
must dmsetup load m1 --table "0 $(blockdev --getsz "$d1") error"
must dmsetup resume m1
for i in $(seq 1 30); do [ "$(cat $SYS/action)" != migrate ] && break; sleep 1; done
new=$(dmesg | tail -n +$((mark + 1)))
say "after the failure: action $(cat $SYS/action), state $(cat $SYS/state), roles: $(tr '\n' ';' < $SYS/roles)"
check "new member lost: the migration stopped" test "$(cat $SYS/action)" != migrate
check "new member lost: dmesg names it" grep -q "error -5 on member /dev/mapper/m1 (role 1)" <<<"$new"
check "new member lost: the whole volume reads back" timeout 120 cmp -s /dev/raidmig0 /tmp/src
check "new member lost: roles show it faulty" grep -q "^1 /dev/mapper/m1 faulty" $SYS/roles
check "new member lost: state degraded" test "$(cat $SYS/state)" = degraded
mark=$(dmesg | wc -l)
must bash -c "echo ${DISKS[4]} > $SYS/add"
echo 0 > $SYS/speed_limit_max_kbps
check "new member replaced: the migration finished" wait_state clean 600
new=$(dmesg | tail -n +$((mark + 1)))
say "after the replacement: $(grep -E 'replaces|rebuild|resumed|finished' <<<"$new" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"
check "new member replaced: the migration resumed by itself" grep -q "migration resumed" <<<"$new"
check "new member replaced: the volume reads back" timeout 120 cmp -s /dev/raidmig0 /tmp/src
check "new member replaced: the replacement holds the copy" \
  bash -c "head -c $(stat -c %s /tmp/src) ${DISKS[4]} | cmp -s - /tmp/src"
unload_within 60 || finish
must dmsetup remove m1

# 2. The source fails.
d2=${DISKS[2]} d3=${DISKS[3]}
source_with_data "$d2"
must dmsetup create m0 --table "0 $(blockdev --getsz "$d2") linear $d2 0"
must load members="/dev/mapper/m0,$d3" level=raid1
must wait_dev
echo 8192 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
sleep 3
progress=$(cat $SYS/progress)
copied=${progress%/*}
say "before the failure: progress $progress"
mark=$(dmesg | wc -l)
must dmsetup load m0 --table "0 $(blockdev --getsz "$d2") error"
must dmsetup resume m0
# The last MiB of the volume is not copied yet: lost, EIO at once.
size=$(blockdev --getsz /dev/raidmig0)
deadline 30 dd if=/dev/raidmig0 of=/dev/null bs=1M skip=$(( size / 2048 - 1 )) count=1 iflag=direct status=none
rc=$?
case $rc in
  124) fail "source lost: a read of the part not copied hangs: $(stuck)" ;;
  0) fail "source lost: a read of the part not copied succeeded" ;;
  *) ok "source lost: a read of the part not copied fails (rc $rc)" ;;
esac
for i in $(seq 1 30); do [ "$(cat $SYS/state)" = failed ] && break; sleep 1; done
check "source lost: state failed" test "$(cat $SYS/state)" = failed
new=$(dmesg | tail -n +$((mark + 1)))
check "source lost: dmesg names the member" grep -q "error -5 on member /dev/mapper/m0 (role 0)" <<<"$new"
out=$(bash -c "echo ${DISKS[5]} > $SYS/add" 2>&1)
check "source lost: a replacement for it is refused ($out)" test -n "$out"
check "source lost: dmesg says why" bash -c "dmesg | tail -n +$((mark + 1)) | grep -q 'cannot add ${DISKS[5]}: the migration stopped on an error of a member that holds the only copy'"
# The first MiB was copied before the failure: the new member serves it.
if [ "${copied:-0}" -ge 2048 ]; then
  check "source lost: the copied part reads back from the new member" \
    bash -c "timeout 60 dd if=/dev/raidmig0 bs=1M count=1 iflag=direct status=none | cmp -s - <(head -c 1048576 /tmp/src)"
else
  say "too little copied before the failure to read the copied part ($copied sectors)"
fi
unload_within 60 || finish
must dmsetup remove m0
finish
