#!/usr/bin/env bash
# disks: 3 128M
# A power cut during random writes on a clean raid5, driven from the host:
# the first boot (tests/vm/guest/power_cut_resync.sh) makes a raid5 over 3
# disks with a write-intent bitmap of 1 MiB regions and runs fio random 4k
# writes over it at queue depth 16 (and fsync'd files' worth of data
# recorded as they complete); the host kills QEMU with SIGKILL in the middle.
# The second boot assembles the array: the regions the bitmap marks are
# resynced (dmesg), raidmig's own check then finds mismatch_cnt 0, every
# write fio completed with an fsync reads back, and md, created over the
# same disks, finds mismatch_cnt 0 in its check. Without a resync, md's
# check finds stripes whose parity disagrees with the data.
#
#   tests/vm/power_cut_resync.sh     (RAIDMIG_OUT: log directory; CRASH_SEED)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. tests/guest/splat.sh

out=${RAIDMIG_OUT:-$(mktemp -d /var/tmp/raidmig-cut.XXXXXX)}
mkdir -p "$out"
disks=$(mktemp -d /var/tmp/raidmig-cut-disks.XXXXXX)
trap 'rm -rf "$disks"' EXIT
seed=${CRASH_SEED:-$(( $(date +%s) % 100000 ))}
echo "power cut test: seed $seed, logs in $out"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

guest() {   # guest BOOT: runs one boot in the background, sets $gpid
  setsid bash scripts/guest.sh --disk-dir "$disks" --disks 3 --size 128M -- \
    bash tests/vm/guest/power_cut_resync.sh "$1" > "$out/boot$1.log" 2>&1 &
  gpid=$!
}
qemu_pid() {
  local p
  for p in $(pgrep -f "file=$disks/m0.img"); do
    case "$(cat /proc/$p/comm 2>/dev/null)" in qemu-system*) echo "$p"; return ;; esac
  done
}

guest 0
for _ in $(seq 1 600); do
  [ -e "$out/running.0" ] && break
  kill -0 $gpid 2>/dev/null || break
  sleep 1
done
if [ ! -e "$out/running.0" ]; then
  fail "boot 0 did not start its writes (see $out/boot0.log)"
  kill -9 "$(qemu_pid)" 2>/dev/null; wait $gpid
else
  delay=$(awk -v s="$seed" 'BEGIN { srand(s); print int(6 + rand() * 10) }')
  sleep "$delay"
  q=$(qemu_pid)
  if [ -z "$q" ]; then fail "boot 0: no QEMU to kill"; else
    echo "boot 0: SIGKILL to QEMU $delay s into the writes"
    kill -9 "$q"
  fi
  wait $gpid 2>/dev/null
  guest 1
  wait $gpid; rc=$?
  [ $rc = 0 ] || fail "boot 1 failed (rc $rc, see $out/boot1.log)"
fi
for b in 0 1; do
  if [ -e "$out/dmesg.$b" ] && ! scan_splats "$out/dmesg.$b"; then fail "kernel splat in boot $b's dmesg"; fi
done
grep -h '^\[power_cut' "$out/boot1.log" 2>/dev/null
[ $failures = 0 ] && { echo "PASS"; exit 0; }
echo "FAILED ($failures)"; exit 1
