#!/usr/bin/env bash
# disks: 3 128M
# A unit left in the staging area by a member failure. single -> raid5 over
# three disks with 64 KiB chunks: unit 0 (1 MiB of data, 8 rows per member)
# overwrites its own source, so it is copied through the staging area in the
# members' reserved tails. The third member sits on a device-mapper table
# whose first 2048 sectors (its rows of unit 0) give I/O errors: the copy of
# unit 0 from staging to its rows fails: the member is failed (as md fails
# a member on a write error) and the migration stops at its checkpoint,
# degraded, with unit 0 recorded in staging.
#   io:     host I/O to unit 0 must end promptly: a read returns the original
#           data (from staging) or EIO; a 4 KiB write succeeds or fails with
#           EIO, and if it succeeded it reads back and survives to the end;
#           rmmod completes.
#   reload: a load with members only, the member still failing, must return
#           (the partition scan reads unit 0: it must not wait for a
#           migration thread that only starts after the disk is added), and
#           unit 0 must read back as it was.
#   repair: with the member mapped again, a load must return promptly and
#           leave the member out (recorded faulty: never trusted again by
#           itself); added back through sysfs, it is rebuilt, the migration
#           resumes by itself and ends clean, and the whole original data
#           area (with the 4 KiB write, if acknowledged) reads back.
# Arguments select phases (default: io reload repair), to look at one defect
# alone.
. tests/guest/lib.sh

phases=${*:-io reload repair}
has() { [[ " $phases " == *" $1 "* ]]; }
d0=${DISKS[0]} d1=${DISKS[1]} d2=${DISKS[2]}
data=$(data_area $d0)
sz2=$(blockdev --getsz $d2)
say "phases: $phases; members $d0 $d1 $d2 (behind dm 'bad2'); data area $data sectors"

# The user's data, and a copy of it to compare against.
must random_fill $d0 $((data / 2048))M
must dd if=$d0 of=/tmp/orig bs=1M count=$((data / 2048)) iflag=direct status=none
must dmsetup create bad2 <<EOT
0 2048 error
2048 $((sz2 - 2048)) linear $d2 2048
EOT

# volume_reads BYTES SECONDS: reads the first BYTES of the volume (O_DIRECT)
# within SECONDS and compares them with the expected data; status 124 when
# the read did not return, 1 on a read error or a difference (printed).
volume_reads() {
  local rc out
  rm -f /tmp/vol
  deadline "$2" dd if=/dev/raidmig0 of=/tmp/vol bs=64k count=$(($1 / 65536)) iflag=direct status=none
  rc=$?
  [ $rc = 0 ] || { [ $rc = 124 ] && return 124; say "  read failed (dd status $rc)"; return 1; }
  out=$(cmp /tmp/vol <(head -c "$1" /tmp/orig) 2>&1)
  [ -z "$out" ] || { say "  $out"; return 1; }
}


mark=$(dmesg | wc -l)
must load members=$d0,$d1,/dev/mapper/bad2 level=raid5 chunk_kb=64
must wait_dev
echo start > $SYS/action
check "migration stopped, degraded, on the member's rows of unit 0" wait_state degraded 120
line=$(dmesg | tail -n +$((mark + 1)) | grep -m1 'raidmig: .* error .* on member /dev/mapper/bad2')
say "dmesg: $line"
check "dmesg names the failing member" test -n "$line"
say "after the failure: state $(cat $SYS/state), progress $(cat $SYS/progress), units_staged $(cat $SYS/units_staged), checkpoint $(cat $SYS/checkpoint)"

wrote=0
if has io; then
  # Defect: unit 0 stays in flight and host I/O to it waits for ever.
  deadline 30 dd if=/dev/raidmig0 of=/tmp/r0 bs=64k count=1 iflag=direct status=none
  rc=$?
  case $rc in
    0) check "read of unit 0 (failed member) returns the original data" cmp /tmp/r0 <(head -c 65536 /tmp/orig) ;;
    124) fail "read of unit 0 did not return in 30 s: $(stuck)" ;;
    *) ok "read of unit 0 failed with an error (dd status $rc), promptly" ;;
  esac
  head -c 4096 /dev/urandom > /tmp/pat
  deadline 30 dd if=/tmp/pat of=/dev/raidmig0 bs=4k seek=16 count=1 oflag=direct conv=notrunc status=none
  rc=$?
  case $rc in
    0)
      ok "4 KiB write into unit 0 acknowledged"
      wrote=1
      dd if=/tmp/pat of=/tmp/orig bs=4k seek=16 count=1 conv=notrunc status=none
      deadline 30 dd if=/dev/raidmig0 of=/tmp/w0 bs=4k skip=16 count=1 iflag=direct status=none
      case $? in
        0) check "acknowledged write into unit 0 reads back" cmp /tmp/w0 /tmp/pat ;;
        124) fail "read back of the write did not return in 30 s: $(stuck)" ;;
        *) fail "read back of the acknowledged write failed" ;;
      esac ;;
    124) fail "4 KiB write into unit 0 did not return in 30 s: $(stuck)" ;;
    *) ok "4 KiB write into unit 0 failed with an error (dd status $rc), promptly" ;;
  esac
fi
unload_within 60 || finish

if has reload; then
  # Defect: insmod waits for ever in add_disk (its partition scan reads unit
  # 0, which waits for the migration thread, started after add_disk).
  mark=$(dmesg | wc -l)
  deadline 60 insmod "$KO" members=$d0,$d1,/dev/mapper/bad2
  rc=$?
  [ $rc = 124 ] && { fail "load with the member still failing did not return in 60 s: $(stuck)"; finish; }
  if [ $rc = 0 ]; then
    ok "load with the member still failing returned"
    must wait_dev
    sleep 2
    say "reloaded: state $(cat $SYS/state), progress $(cat $SYS/progress); dmesg: $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"
    volume_reads 1048576 60
    case $? in
      0) ok "unit 0 reads back as it was (member still failing)" ;;
      124) fail "read of unit 0 after the reload did not return in 60 s: $(stuck)"; finish ;;
      *) fail "unit 0 differs after the reload (member still failing)" ;;
    esac
    unload_within 60 || finish
  else
    fail "load with the member still failing refused (insmod status $rc): $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"
  fi
fi

if has repair; then
  must dmsetup load bad2 --table "0 $sz2 linear $d2 0"
  must dmsetup resume bad2
  mark=$(dmesg | wc -l)
  # Defect: the same wait in add_disk, with a healthy member too.
  deadline 60 insmod "$KO" members=$d0,$d1,/dev/mapper/bad2
  rc=$?
  [ $rc = 124 ] && { fail "load after the repair did not return in 60 s: $(stuck)"; finish; }
  [ $rc = 0 ] || { fail "load after the repair refused (insmod status $rc): $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"; finish; }
  ok "load after the repair returned"
  must wait_dev
  check "member recorded faulty is left out after the repair ($(cat $SYS/state))" test "$(cat $SYS/state)" = degraded
  must bash -c "echo /dev/mapper/bad2 > $SYS/add"
  st=
  for _ in $(seq 1 50); do st=$(cat $SYS/state); [ "$st" != degraded ] && break; sleep 0.1; done
  check "added back: rebuilding or migrating ($st)" test "$st" = rebuilding -o "$st" = migrating -o "$st" = clean
  check "migration resumed by itself and reached clean after the rebuild" wait_state clean 300
  say "after the repair: state $(cat $SYS/state), progress $(cat $SYS/progress), units_staged $(cat $SYS/units_staged)"
  check "capacity is raid5's" test "$(blockdev --getsz /dev/raidmig0)" = $((2 * data))
  volume_reads $((data * 512)) 120
  case $? in
    0) ok "whole original data area reads back$([ $wrote = 1 ] && echo ', with the acknowledged write')" ;;
    124) fail "read of the volume did not return in 120 s: $(stuck)"; finish ;;
    *) fail "data area differs after the migration$([ $wrote = 1 ] && echo ' (the acknowledged write patched in)')" ;;
  esac
  unload_within 60 || finish
fi
dmsetup remove bad2
finish
