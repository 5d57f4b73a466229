#!/usr/bin/env bash
# Runs several guest tests in one guest, one after the other, each on disks
# of its own, so that a test run pays for one boot instead of one per test
# (a boot costs about 30 s under software emulation). scripts/test.sh plans
# the batches and reads their outcome.
#
#   batch.sh LABEL DIR SCRIPT BASE COUNT [LABEL DIR SCRIPT BASE COUNT]...
#
# For each test: SCRIPT runs in a session of its own with RAIDMIG_OUT set to
# $RAIDMIG_OUT/DIR and the guest's disks BASE to BASE+COUNT-1 as its disks 0
# to COUNT-1 (`member N`, DISKS in lib.sh); its output goes to
# $RAIDMIG_OUT/LABEL.log. Then the guest is put back as a fresh guest would
# be (the test's processes killed, swap off, file systems under /tmp
# unmounted, md, loop and device-mapper devices removed, the module
# unloaded, /tmp emptied) and dmesg, once more scanned for splats, is
# cleared, so that each test sees only its own messages. The outcome,
# "LABEL STATUS SECONDS", is appended to $RAIDMIG_OUT/batch.status.
#
# The batch stops after the first test that fails or leaves the guest in a
# state it cannot undo (a module that will not unload): later tests would
# run on a guest that is not fresh. scripts/test.sh runs the tests that have
# no outcome yet in a new guest.
set -u
cd "$(dirname "$0")/../.."
. tests/guest/splat.sh
out=${RAIDMIG_OUT:-/tmp}
status=$out/batch.status

repo=$(pwd)
# shared PATH: PATH is, holds or lies inside the checkout or the output
# directory (shared with the host, perhaps under /tmp): never touched.
shared() {
  local p
  for p in "$repo" "$out"; do
    case "$p/" in "$1"/*) return 0 ;; esac
    case "$1/" in "$p"/*) return 0 ;; esac
  done
  return 1
}

# reset: puts the guest back as fresh; prints why and fails when it cannot.
reset() {
  local m
  swapoff -a 2>/dev/null
  for m in $(awk '$2 ~ "^/tmp/" {print $2}' /proc/mounts | sort -r); do
    shared "$m" && continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  mdadm --stop --scan > /dev/null 2>&1
  losetup -D 2>/dev/null
  dmsetup remove_all 2>/dev/null
  if grep -qw '^raidmig' /proc/modules; then
    udevadm settle -t 10 2>/dev/null
    for _ in $(seq 1 20); do timeout 60 rmmod raidmig 2>/dev/null && break; sleep 0.5; done
    if grep -qw '^raidmig' /proc/modules; then
      echo "raidmig cannot be unloaded after the test"
      return 1
    fi
  fi
  for m in /tmp/* /tmp/.[!.]*; do
    [ -e "$m" ] || [ -L "$m" ] || continue
    shared "$m" && continue
    rm -rf "$m" 2>/dev/null
  done
  return 0
}

while [ $# -ge 5 ]; do
  label=$1 dir=$2 script=$3 base=$4 count=$5
  shift 5
  mkdir -p "$out/$dir"
  log=$out/$label.log
  t0=$SECONDS
  echo "batch: $label ($script, disks $base to $((base + count - 1)))"
  RAIDMIG_OUT=$out/$dir RAIDMIG_DISK_BASE=$base RAIDMIG_DISKS=$count \
    setsid bash "$script" > "$log" 2>&1 < /dev/null &
  pid=$!
  wait $pid
  rc=$?
  # Whatever the test left running in its session.
  kill -KILL -- -$pid 2>/dev/null
  sleep 0.5
  why=$(reset) || { echo "[batch] FAIL: $why" >> "$log"; rc=1; }
  dmesg > "$out/$dir/after-reset.dmesg"
  if ! scan_splats "$out/$dir/after-reset.dmesg" > /dev/null; then
    echo "[batch] FAIL: kernel splat in dmesg after the test ended (see $dir/after-reset.dmesg)" >> "$log"
    rc=1
  fi
  dmesg -C
  echo "$label $rc $((SECONDS - t0))" >> "$status"
  echo "batch: $label status $rc in $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || exit 1
done
[ $# -eq 0 ] || { echo "batch.sh: arguments must come in fives" >&2; exit 2; }
exit 0
