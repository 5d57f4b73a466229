# Shared helpers for guest tests (sourced inside the guest, from the
# repository's directory). Every test ends with `finish`, which fails the
# test on any kernel splat in dmesg.

set -uo pipefail
REPO=$(pwd)
KO=$REPO/raidmig.ko
OUT=${RAIDMIG_OUT:-/tmp}
TEST_NAME=$(basename "$0" .sh)
FAILURES=0

. "$REPO/tests/guest/splat.sh"

# One stream for the console (separate streams can overwrite each other in
# the host's log), and every verdict also in $OUT/$TEST_NAME.results.
exec 2>&1
say() { echo "[$TEST_NAME] $*" | tee -a "$OUT/$TEST_NAME.results"; }
fail() { say "FAIL: $*"; FAILURES=$((FAILURES + 1)); }
ok() { say "ok: $*"; }

# check DESCRIPTION COMMAND...: runs COMMAND, records a failure if it fails.
check() {
  local what=$1; shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

# The guest kernel must be the lockdep test kernel, or the splat check is moot.
require_debug_kernel() {
  [ -e /proc/lockdep ] || { fail "kernel without lockdep"; finish; }
}

finish() {
  dmesg > "$OUT/$TEST_NAME.dmesg" 2>/dev/null || dmesg > "/tmp/$TEST_NAME.dmesg"
  if ! scan_splats "$OUT/$TEST_NAME.dmesg"; then
    fail "kernel splat in dmesg (see $TEST_NAME.dmesg)"
  fi
  if [ "$FAILURES" -eq 0 ]; then say "PASS"; exit 0; fi
  say "FAILED ($FAILURES)"; exit 1
}

# Runs CMD..., requiring success; a failure ends the test at once.
must() {
  "$@" || { fail "command failed: $*"; finish; }
}

load() { insmod "$KO" "$@"; }

unload() { rmmod raidmig; }

# Waits for /dev/raidmig0 to appear (udev may lag behind insmod).
wait_dev() {
  local i
  for i in $(seq 1 50); do [ -b /dev/raidmig0 ] && return 0; sleep 0.1; done
  return 1
}

# sums DEVS...: one checksum line per device (whole contents).
sums() { local d; for d in "$@"; do echo "$d $(md5sum < "$d" | cut -d' ' -f1)"; done; }

# fio_verify NAME DEV ARGS...: a fio write+verify job with crc32c checks;
# fails the test if fio reports an error or a verify failure.
fio_verify() {
  local name=$1 dev=$2; shift 2
  if fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio \
       --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse \
       --terse-version=3 --minimal --verify_state_save=0 --aux-path=/tmp "$@" > "$OUT/$TEST_NAME.fio.$name" 2>&1; then
    # Field 5 of terse v3 output is the job's error code.
    local err; err=$(awk -F';' 'NR==1 {print $5}' "$OUT/$TEST_NAME.fio.$name")
    [ "$err" = 0 ] && { ok "fio $name"; return 0; }
  fi
  fail "fio $name (see $TEST_NAME.fio.$name)"; cat "$OUT/$TEST_NAME.fio.$name"
  return 1
}

# member_flushes DEV: completed flush requests of DEV (diskstats field 15).
member_flushes() { awk -v d="$(basename "$1")" '$3 == d {print $19}' /proc/diskstats; }

require_debug_kernel

SYS=/sys/block/raidmig0/raidmig
RESERVED_TAIL=32768   # sectors at the end of every member (README)

# zero_tail DEV: erases raidmig's reserved tail (the last 16 MiB) of DEV, as
# an administrator would before reusing a former member.
zero_tail() {
  dd if=/dev/zero of="$1" bs=512 seek=$(( $(blockdev --getsz "$1") - RESERVED_TAIL )) \
    count=$RESERVED_TAIL oflag=direct conv=notrunc status=none
}

# data_area DEV: the data area, in sectors, of DEV as the first member with
# 64 KiB chunks: all but the reserved tail, in whole chunks.
data_area() { echo $(( ($(blockdev --getsz "$1") - RESERVED_TAIL) / 128 * 128 )); }

# wait_state STATE SECONDS: waits for the array's state; gives up early at
# "failed" unless that is the state awaited.
wait_state() {
  local i st
  for i in $(seq 1 "$2"); do
    st=$(cat $SYS/state)
    [ "$st" = "$1" ] && return 0
    [ "$st" = failed ] && return 1
    sleep 1
  done
  return 1
}

# refused ERRNO_TEXT DMESG_TEXT PARAMS...: insmod with PARAMS must fail with
# ERRNO_TEXT (insmod prints EINVAL as "Invalid parameters", other errnos with
# strerror()), log a raidmig line matching DMESG_TEXT, and leave no device or
# module behind.
refused() {
  local errtext=$1 msg=$2; shift 2
  local mark out new
  mark=$(dmesg | wc -l)
  if out=$(insmod "$KO" "$@" 2>&1); then fail "accepted: $*"; unload; return; fi
  new=$(dmesg | tail -n +$((mark + 1)))
  if ! grep -q "$errtext" <<<"$out"; then fail "$* -> '$out', wanted '$errtext'"; return; fi
  if ! grep -q "raidmig: .*$msg" <<<"$new"; then fail "$*: no dmesg line '$msg' in: $new"; return; fi
  if [ -e /sys/block/raidmig0 ] || grep -qw raidmig /proc/modules; then fail "$*: left a device or module"; return; fi
  ok "refused ($errtext): $* -- $(grep -m1 "raidmig: .*$msg" <<<"$new" | sed 's/^\[[^]]*\] //')"
}
