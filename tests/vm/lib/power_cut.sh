# Shared by the host-driven power cut tests (sourced from tests/vm/NAME.sh;
# crash_raid5.sh takes its verdict counting and qemu_pid):
# boots a guest, kills its QEMU with SIGKILL at a random moment while it
# writes, boots it again over the same disks and collects the verdicts.
#
# power_cut TAG DISKS SIZE GUEST_SCRIPT [ARGS...]: boot B runs
# `GUEST_SCRIPT B ARGS`; each of the first $CUTS boots (default 1) must
# touch $RAIDMIG_OUT/running.B once its writes run, and the host kills its
# QEMU 6 to 15 s later (from CRASH_SEED and B); boot $CUTS, the last, runs
# to completion. The guest reads the number of cuts in $RAIDMIG_OUT/cuts.
# Logs in $out/TAG. Counts failures in $failures; the caller sets $out and
# $seed.

. tests/guest/splat.sh
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# qemu_pid DIR: the QEMU process of the guest whose disks are in DIR (not
# vng, whose arguments match too).
qemu_pid() {
  local p
  for p in $(pgrep -f "file=$1/m0.img"); do
    case "$(cat /proc/$p/comm 2>/dev/null)" in qemu-system*) echo "$p"; return ;; esac
  done
}

power_cut() {
  local tag=$1 n=$2 size=$3 script=$4
  shift 4
  local dir=$out/$tag disks gpid delay q rc b cuts=${CUTS:-1} cut=1
  mkdir -p "$dir"
  echo "$cuts" > "$dir/cuts"
  disks=$(mktemp -d /var/tmp/raidmig-cut-disks.XXXXXX)
  # guest BOOT [ARGS]: runs one boot in the background, sets gpid.
  guest() {
    RAIDMIG_OUT=$dir setsid bash scripts/guest.sh --disk-dir "$disks" --disks "$n" --size "$size" -- \
      bash "$script" "$@" > "$dir/boot$1.log" 2>&1 &
    gpid=$!
  }
  for b in $(seq 0 $((cuts - 1))); do
    guest "$b" "$@"
    for _ in $(seq 1 600); do
      [ -e "$dir/running.$b" ] && break
      kill -0 $gpid 2>/dev/null || break
      sleep 1
    done
    if [ ! -e "$dir/running.$b" ]; then
      fail "$tag: boot $b did not start its writes (see $dir/boot$b.log)"
      kill -9 "$(qemu_pid "$disks")" 2>/dev/null; wait $gpid
      cut=0
      break
    fi
    delay=$(awk -v s="$seed" -v b="$b" 'BEGIN { srand(s * 100 + b); print int(6 + rand() * 10) }')
    sleep "$delay"
    q=$(qemu_pid "$disks")
    if [ -z "$q" ]; then fail "$tag: boot $b: no QEMU to kill (see $dir/boot$b.log)"; cut=0; break; fi
    echo "$tag: boot $b: SIGKILL to QEMU $delay s into the writes"
    kill -9 "$q"
    wait $gpid 2>/dev/null
  done
  if [ $cut = 1 ]; then
    guest "$cuts" "$@"
    wait $gpid; rc=$?
    [ $rc = 0 ] || fail "$tag: boot $cuts failed (rc $rc, see $dir/boot$cuts.log)"
  fi
  for b in $(seq 0 "$cuts"); do
    if [ -e "$dir/dmesg.$b" ] && ! scan_splats "$dir/dmesg.$b"; then fail "$tag: kernel splat in boot $b's dmesg"; fi
  done
  grep -h '^\[power_cut' "$dir"/boot*.log 2>/dev/null
  rm -rf "$disks"
}

# power_cut_begin WHAT: the log directory ($RAIDMIG_OUT, or a new one) in
# $out and the seed ($CRASH_SEED, or from the clock) in $seed, told.
power_cut_begin() {
  out=${RAIDMIG_OUT:-$(mktemp -d /var/tmp/raidmig-cut.XXXXXX)}
  mkdir -p "$out"
  seed=${CRASH_SEED:-$(( $(date +%s) % 100000 ))}
  echo "power cut $1: seed $seed, logs in $out"
}

# power_cut_end: the verdict, as output and exit status.
power_cut_end() {
  [ $failures = 0 ] && { echo "PASS"; exit 0; }
  echo "FAILED ($failures)"; exit 1
}
