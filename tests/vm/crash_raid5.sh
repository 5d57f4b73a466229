#!/usr/bin/env bash
# disks: 3 256M
# Power cuts during a migration to raid5, driven from the host: the guest
# (tests/vm/guest/crash_raid5.sh) makes ext4 with files on the first disk,
# loads raidmig with level=raid5 and starts the migration under a speed limit,
# grows ext4 into the new layout's capacity at once (so that writes land in
# units moved out of order too), with fio passes (crc32c verification, fsync
# at the end) and fsynced file writes running; the host then kills QEMU with
# SIGKILL at a random moment,
# KILLS times in a row on the same disk images. Every later boot loads the
# module with members= only (in another order each time): the migration must
# resume by itself from a checkpoint after the previous boot's, and every file
# and every completed fio pass must read back. A last boot lets the migration
# finish and checks everything once more.
#
# The migration runs at 1 MiB/s so that it lasts through the kills, which
# alone would only ever cut its first hundred MiB. The last boot before the
# final one aims at the end instead: the guest sets the speed that would
# copy the rest of the source's data AIM seconds into its load, and the
# host kills it after 0.6 to 1.5 times AIM, so that the cut lands in the
# last part of the copy or in the units past the source's end (which hold
# no data, but go at the same pace).
#
#   tests/vm/crash_raid5.sh          (RAIDMIG_OUT: log directory; CRASH_SEED,
#                                     KILLS: to repeat or lengthen a run)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. tests/vm/lib/power_cut.sh   # failures, fail, qemu_pid, scan_splats

out=${RAIDMIG_OUT:-$(mktemp -d /var/tmp/raidmig-crash.XXXXXX)}
mkdir -p "$out"
disks=$(mktemp -d /var/tmp/raidmig-crash-disks.XXXXXX)
trap 'rm -rf "$disks"' EXIT
kills=${KILLS:-5}
seed=${CRASH_SEED:-$(( $(date +%s) % 100000 ))}
echo "crash test: $kills kills, seed $seed, logs in $out"

guest() {   # guest BOOT MODE AIM: runs one boot in the background, sets $gpid
  RAIDMIG_OUT=$out setsid bash scripts/guest.sh --disk-dir "$disks" --disks 3 --size 256M -- \
    bash tests/vm/guest/crash_raid5.sh "$1" "$2" "$3" > "$out/boot$1.log" 2>&1 &
  gpid=$!
}

prev=-1
for boot in $(seq 0 "$kills"); do
  mode=crash; [ "$boot" = "$kills" ] && mode=final
  delay=$(awk -v s="$seed" -v b="$boot" 'BEGIN { srand(s * 100 + b); print int(8 + rand() * 18) }')
  aim=0
  if [ "$boot" = $((kills - 1)) ]; then
    aim=$(awk -v s="$seed" -v d="$delay" 'BEGIN { srand(s * 100 + 99); print int(d / (0.6 + rand() * 0.9) + 0.5) }')
  fi
  guest "$boot" "$mode" "$aim"
  if [ $mode = final ]; then
    wait $gpid; rc=$?
    [ $rc = 0 ] || fail "final boot failed (rc $rc, see $out/boot$boot.log)"
  else
    # Wait until the guest has verified everything and runs its load.
    for _ in $(seq 1 600); do
      [ -e "$out/running.$boot" ] && break
      kill -0 $gpid 2>/dev/null || break
      sleep 1
    done
    if [ ! -e "$out/running.$boot" ]; then
      fail "boot $boot did not reach its load phase (see $out/boot$boot.log)"
      kill -9 "$(qemu_pid "$disks")" 2>/dev/null; wait $gpid
      break
    fi
    sleep $delay
    q=$(qemu_pid "$disks")
    if [ -z "$q" ]; then fail "boot $boot: no QEMU to kill"; wait $gpid; break; fi
    echo "boot $boot: SIGKILL to QEMU $delay s into the migration$([ "$aim" = 0 ] || echo ", set to copy the source's data by $aim s")"
    kill -9 "$q"
    wait $gpid 2>/dev/null
    echo "boot $boot: last seen (at most a second before the cut): progress $(tr '\n' ' ' < "$out/seen.$boot" 2>/dev/null)"
  fi
  # The checkpoint this boot resumed from must be after the previous boot's.
  if [ "$boot" -gt 0 ]; then
    cp=$(awk '/^checkpoint/ {print $2}' "$out/load.$boot" 2>/dev/null)
    st=$(awk '/^state/ {print $2}' "$out/load.$boot" 2>/dev/null)
    pr=$(awk '/^progress/ {print $2}' "$out/load.$boot" 2>/dev/null)
    echo "boot $boot: assembled in state $st, checkpoint at sector ${cp:-?}, progress ${pr:-?}"
    if [ -z "$cp" ] || [ "$cp" -le "$prev" ] || [ "$cp" -le 0 ]; then
      fail "boot $boot resumed from checkpoint ${cp:-none}, not after the previous one ($prev)"
    fi
    prev=${cp:-$prev}
  else
    prev=0
  fi
  if [ -e "$out/dmesg.$boot" ] && ! scan_splats "$out/dmesg.$boot"; then
    fail "kernel splat in boot $boot's dmesg"
  fi
done
echo "fio passes completed: $(grep -c done "$out/fio.log" 2>/dev/null), files written: $(wc -l < "$out/new.sums" 2>/dev/null)"
power_cut_end
