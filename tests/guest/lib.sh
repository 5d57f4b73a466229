# Shared helpers for guest tests (sourced inside the guest, from the
# repository's directory). Every test ends with `finish`, which fails the
# test on any kernel splat in dmesg.

set -uo pipefail
REPO=$(pwd)
KO=${RAIDMIG_KO:-$REPO/raidmig.ko}   # scripts/guest.sh passes RAIDMIG_KO on
BUS=${RAIDMIG_BUS:-sata}              # the members' bus: sata or nvme
OUT=${RAIDMIG_OUT:-/tmp}
TEST_NAME=$(basename "$0" .sh)
FAILURES=0
STUCK=0   # tasks left stuck by deadline()

. "$REPO/tests/guest/splat.sh"

# One stream for the console (separate streams can overwrite each other in
# the host's log), and every verdict also in $OUT/$TEST_NAME.results, with
# the seconds since the test began (where its time goes, without a fork).
exec 2>&1
T0=${EPOCHREALTIME/./}
say() {
  local t=$(( (${EPOCHREALTIME/./} - T0) / 100000 ))
  echo "[$TEST_NAME $((t / 10)).$((t % 10))] $*" | tee -a "$OUT/$TEST_NAME.results"
}
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
  if [ "$STUCK" -gt 0 ]; then
    # A stuck task can block the guest's orderly power-off (its sync waits
    # for a disk's open mutex; a CPU spinning on a lock stops the shutdown):
    # reset at once, without sync, shortly after the exit status has been
    # handed over.
    say "$STUCK task(s) stuck: the guest resets by sysrq in 20 s (QEMU runs with -no-reboot, so it ends)"
    setsid -f bash -c 'sleep 20; echo b > /proc/sysrq-trigger' > /dev/null 2>&1 < /dev/null
  fi
  if [ "$FAILURES" -eq 0 ]; then say "PASS"; exit 0; fi
  say "FAILED ($FAILURES)"; exit 1
}

# Runs CMD..., requiring success; a failure ends the test at once.
must() {
  "$@" || { fail "command failed: $*"; finish; }
}

load() { insmod "$KO" "$@"; }

# unload_within SECONDS: rmmod, after udev has settled, must complete within
# SECONDS (a task stuck in the module's exit cannot be killed: deadline).
# Records ok or the failure with the stuck task's stack; fails then.
unload_within() {
  udevadm settle -t 10 2>/dev/null
  deadline "$1" rmmod raidmig
  case $? in
    0) ok "rmmod completed"; return 0 ;;
    124) fail "rmmod did not complete in $1 s: $(stuck)" ;;
    *) fail "rmmod failed: $(lsmod | grep -w raidmig)" ;;
  esac
  return 1
}

# unload: rmmod, once udev has let go of the volume (its probes of a new
# /dev/raidmig0 hold it open for a moment; rmmod fails while they do).
unload() {
  local i
  udevadm settle -t 10 2>/dev/null
  for i in $(seq 1 50); do
    rmmod raidmig 2>/dev/null && return 0
    sleep 0.1
  done
  rmmod raidmig
}

# Waits for /dev/raidmig0 to appear (udev may lag behind insmod).
wait_dev() {
  local i
  for i in $(seq 1 50); do [ -b /dev/raidmig0 ] && return 0; sleep 0.1; done
  return 1
}

# written DEVS...: one line per device with the sectors written to it and
# discarded on it so far (the block layer's counters in its stat file; write
# zeroes count as writes). Unchanged across an operation: the operation
# wrote nothing there, not even the bytes that were there already, and
# costs no read of the device as a checksum of it does.
written() {
  local d
  for d in "$@"; do
    echo "$d $(awk '{print $7, $14}' "/sys/class/block/$(basename "$(readlink -f "$d")")/stat")"
  done
}

# random_fill TARGET BYTES: BYTES (a number, or with K, M or G) of
# pseudo-random data at the start of TARGET, a device or a file (created if
# missing). shred's generator runs four times as fast as /dev/urandom in the
# emulated guest (56 against 13 MB/s). On a device the writes are synced and
# its page cache dropped, as dd oflag=direct would leave it: what reads it
# later through the cache sees what raidmig wrote since, not stale pages.
random_fill() {
  [ -e "$1" ] || : > "$1" || return 1
  shred -n 1 -s "$2" "$1" || return 1
  [ ! -b "$1" ] || blockdev --flushbufs "$1"
}

# sums DEVS...: one checksum line per device (whole contents).
sums() { local d; for d in "$@"; do echo "$d $(md5sum < "$d" | cut -d' ' -f1)"; done; }

# fio_pass K [ARGS...]: one write+verify pass (crc32c) over $MNT/fio.dat,
# seed K: what load_start runs over and over.
fio_pass() {
  fio --name=pass$1 --filename=$MNT/fio.dat --size=16M --rw=randwrite --bs=4k \
      --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 \
      --verify_fatal=1 --randseed=$1 --end_fsync=1 --verify_state_save=0 \
      --aux-path=/tmp --output=/tmp/fio.pass$1 "${@:2}" > /dev/null 2>&1
}

# load_start: load on the file system mounted at $MNT until load_stop: fio
# passes one after the other (a failed one recorded in /tmp/fio.failed, the
# last in /tmp/fio.last) and files of 300000 random bytes under $MNT/new,
# each checksum in /tmp/new.sums once written.
load_start() {
  rm -f /tmp/stop /tmp/fio.failed /tmp/new.sums /tmp/fio.last
  mkdir -p $MNT/new
  ( k=1; while [ ! -e /tmp/stop ]; do fio_pass $k || echo $k >> /tmp/fio.failed; echo $k > /tmp/fio.last; k=$((k + 1)); done ) &
  LOAD_PIDS=$!
  ( i=0; while [ ! -e /tmp/stop ]; do
      head -c 300000 /dev/urandom > $MNT/new/w$i && (cd $MNT && sha256sum new/w$i) >> /tmp/new.sums
      i=$((i + 1)); done ) &
  LOAD_PIDS="$LOAD_PIDS $!"
}

# load_stop: ends load_start's load once its current pass and file are done.
load_stop() {
  touch /tmp/stop
  wait $LOAD_PIDS
}

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

# fio_verify_seq TAG DEV ARGS...: several fio write+verify jobs as
# fio_verify runs one, in one fio process (a start of fio costs a second or
# more in the emulated guest), one after the other (each a stonewall). ARGS
# holds the jobs, each starting with its --name=; options before the first
# --name= apply to all. Each job passes ("fio NAME") or fails on its own;
# fails too unless every job reported.
fio_verify_seq() {
  local tag=$1 dev=$2 a args=() names=() out; shift 2
  out="$OUT/$TEST_NAME.fio.$tag"
  for a in "$@"; do
    args+=("$a")
    case "$a" in --name=*) args+=(--stonewall); names+=("${a#--name=}") ;; esac
  done
  fio --filename="$dev" --direct=1 --ioengine=libaio --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --output-format=terse --terse-version=3 --verify_state_save=0 --aux-path=/tmp "${args[@]}" > "$out" 2>&1
  local rc=$? n err bad=0
  for n in "${names[@]}"; do
    # Terse v3: field 3 is the job's name, field 5 its error code.
    err=$(awk -F';' -v n="$n" '$3 == n {print $5; exit}' "$out")
    if [ "$err" = 0 ]; then ok "fio $n"; else fail "fio $n (error ${err:-none reported}, see $TEST_NAME.fio.$tag)"; bad=1; fi
  done
  [ "$rc" = 0 ] && [ $bad = 0 ] && return 0
  [ $bad = 1 ] || fail "fio $tag: rc $rc (see $TEST_NAME.fio.$tag)"
  cat "$out"
  return 1
}

# verify_jobs OUTPUT JOB_ARGS...: verifies fio jobs already written, all in
# one fio process (one thread per job, all at once: the jobs must cover
# disjoint ranges). JOB_ARGS is each job's options as it was written, each
# job starting with its --name=. Starting fio takes a second or more in an
# emulated guest, so one process per job costs minutes when there are
# dozens. Every job gets --verify_only and --do_verify=1 (its own
# --do_verify=0 is dropped: with it fio reads nothing and verifies nothing).
# Returns non-zero and prints the failing jobs' lines unless every job read
# its data back and verified.
verify_jobs() {
  local output=$1 a args=() names=0; shift
  for a in "$@"; do
    case "$a" in
      --do_verify=0) ;;
      --name=*) args+=("$a" --verify_only --do_verify=1); names=$((names + 1)) ;;
      *) args+=("$a") ;;
    esac
  done
  fio --thread --aux-path=/tmp --output="$output" "${args[@]}" > /dev/null 2>&1
  local rc=$? jobs reads bad
  # Per job: "NAME: (groupid=..., jobs=1): err= N: ..." and a "read:" line.
  jobs=$(grep -c '(groupid=.*err=' "$output")
  reads=$(grep -c '^ *read: IOPS' "$output")
  bad=$(grep '(groupid=.*err=' "$output" | grep -v 'err= *0:')
  [ "$rc" = 0 ] && [ -z "$bad" ] && [ "$jobs" = $names ] && [ "$reads" = $names ] && return 0
  echo "fio rc $rc, $jobs of $names jobs reported, $reads read; failing: ${bad:-none named}"
  return 1
}

# logged K...: fio jobs K... at once, in one fio process, logged in
# $OUT/jobs.log for a power-cut test: "start K" before, "done K" once all
# completed with their fsync, "failed K" if fio failed. The caller defines
# job_args K, the options of job K starting with its --name=.
logged() {
  local k args=() word=done
  for k in "$@"; do echo "start $k"; args+=($(job_args $k)); done >> "$OUT/jobs.log"; sync "$OUT/jobs.log"
  fio --thread --aux-path=/tmp --output=/tmp/fio.logged "${args[@]}" > /dev/null 2>&1 || word=failed
  for k in "$@"; do echo "$word $k"; done >> "$OUT/jobs.log"; sync "$OUT/jobs.log"
}

# scrub ACTION: runs a scrub to its end; prints mismatch_cnt.
scrub() {
  echo "$1" > $SYS/action || return 1
  if wait_idle 150; then cat $SYS/mismatch_cnt; else echo timeout; fi
}

# member_flushes DEV: completed flush requests of DEV (diskstats field 15).
member_flushes() { awk -v d="$(basename "$1")" '$3 == d {print $19}' /proc/diskstats; }

require_debug_kernel

# member N: the device path of this test's disk N (0-based): the guest's disk
# RAIDMIG_DISK_BASE + N (the host's image of that number; tests/guest/batch.sh
# gives each test of a batch its own disks). SATA: the disk whose serial is
# that number (mK), by udev's link or the serial in sysfs. NVMe: the
# namespace of the controller whose serial is mK.
DISK_BASE=${RAIDMIG_DISK_BASE:-0}
member() {
  local n=$(( DISK_BASE + $1 )) i c ns s
  for i in $(seq 1 50); do
    if [ "$BUS" = nvme ]; then
      for c in /sys/class/nvme/*; do
        s=$(tr -d ' ' < "$c/serial" 2>/dev/null) || continue
        [ "$s" = "m$n" ] || continue
        # The namespace's block device: its head (multipath) or itself.
        for ns in /sys/block/nvme*n*; do
          [ -e "$ns" ] || continue
          s=$(tr -d ' ' < "$ns/device/serial" 2>/dev/null) || continue
          [ "$s" = "m$n" ] && { echo "/dev/$(basename "$ns")"; return 0; }
        done
      done
    else
      ns=$(readlink -f "/dev/disk/by-id/ata-QEMU_HARDDISK_m$n" 2>/dev/null)
      if [ -n "$ns" ] && [ -b "$ns" ]; then echo "$ns"; return 0; fi
      # Without udev's link: the serial the disk reports (SCSI VPD page
      # 0x80, after its 4-byte header).
      for ns in /sys/block/sd*; do
        s=$(tail -c +5 "$ns/device/vpd_pg80" 2>/dev/null | tr -d ' \0') || continue
        [ "$s" = "m$n" ] && { echo "/dev/$(basename "$ns")"; return 0; }
      done
    fi
    sleep 0.1
  done
  echo "member: no disk $n on $BUS" >&2
  echo /dev/null-disk$n
  return 1
}

# DISKS: this test's disks, by number
# (RAIDMIG_DISKS of them, from scripts/guest.sh or batch.sh; else as
# many as the bus shows).
if [ -z "${RAIDMIG_DISKS:-}" ]; then
  if [ "$BUS" = nvme ]; then RAIDMIG_DISKS=$(ls -d /sys/class/nvme/nvme* 2>/dev/null | wc -l)
  else RAIDMIG_DISKS=$(ls -d /sys/block/sd* 2>/dev/null | wc -l); fi
fi
DISKS=()
for _i in $(seq 0 $(( RAIDMIG_DISKS - 1 ))); do DISKS+=("$(member "$_i")"); done
unset _i

SYS=/sys/block/raidmig0/raidmig
# Sectors at the end of every member that raidmig reserves (src/core/layout.rs).
RESERVED_TAIL=$(bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/reserved-tail.sh") || exit 1
export RESERVED_TAIL

# zero_tail DEV: erases raidmig's reserved tail (the last 16 MiB) of DEV, as
# an administrator would before reusing a former member.
zero_tail() {   # (in 1 MiB writes: 512-byte ones take minutes under emulation)
  dd if=/dev/zero of="$1" bs=1M seek=$(( ($(blockdev --getsz "$1") - RESERVED_TAIL) * 512 )) \
    count=$((RESERVED_TAIL / 2048)) oflag=direct,seek_bytes conv=notrunc status=none
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

# new_layout_at_once NAME CAP: a migration (or reshape) just started, its
# throttle low: the volume has CAP sectors, the new layout's capacity,
# within a second, and the ext4 mounted at $MNT grows into it with
# resize2fs while the migration still runs; the throttle is then lifted.
new_layout_at_once() {
  local name=$1 cap=$2 i
  for i in $(seq 1 20); do
    [ "$(blockdev --getsz /dev/raidmig0)" = "$cap" ] && [ "$(cat $SYS/state)" != prepared ] && break
    sleep 0.05
  done
  check "$name: capacity is the new layout's within a second ($(blockdev --getsz /dev/raidmig0) of $cap)" \
    test "$(blockdev --getsz /dev/raidmig0)" = "$cap"
  check "$name: still migrating when ext4 grows ($(cat $SYS/state), $(cat $SYS/progress))" test "$(cat $SYS/state)" = migrating
  check "$name: resize2fs while the migration runs" resize2fs /dev/raidmig0
  check "$name: ext4 takes the new capacity ($(df -k --output=size $MNT | tail -1) KiB of $((cap / 2)))" \
    test "$(df -k --output=size $MNT | tail -1)" -gt $((cap / 2 * 8 / 10))
  echo 0 > $SYS/speed_limit_max_kbps
}

# wait_idle SECONDS: waits until nothing runs on the array (action reads
# idle): a migration that reached clean is followed by a resync of the
# capacity it added, and progress shows that resync's figures while it runs.
wait_idle() {
  local i
  for i in $(seq 1 "$1"); do
    [ "$(cat $SYS/action)" = idle ] && return 0
    sleep 1
  done
  return 1
}

# md_check LABEL: md's own check of /dev/md0 (md as the outside oracle) runs
# to its end and finds every copy and parity consistent: checks that it
# finished within 600 s, that it was a check that ran (md's last_sync_action)
# and that its mismatch_cnt is 0.
md_check() {
  local md=/sys/block/md0/md i
  echo check > $md/sync_action
  sleep 1
  for i in $(seq 1 600); do [ "$(cat $md/sync_action)" = idle ] && break; sleep 1; done
  check "$1: md check finished" test "$(cat $md/sync_action)" = idle
  check "$1: md check ran ($(cat $md/last_sync_action))" test "$(cat $md/last_sync_action)" = check
  check "$1: md check mismatch_cnt $(cat $md/mismatch_cnt)" test "$(cat $md/mismatch_cnt)" = 0
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

# deadline SECONDS CMD...: runs CMD (a program, not a shell function) in the
# background and waits for it at most SECONDS. Returns CMD's status, or 124
# when it is still running then; it is left running (a task stuck in D state
# cannot be killed), its pid in DL_PID, and stuck() describes it.
deadline() {
  local end=$((SECONDS + $1)); shift
  "$@" &
  DL_PID=$!
  while running $DL_PID; do
    [ $SECONDS -lt $end ] || { STUCK=$((STUCK + 1)); return 124; }
    sleep 0.2
  done
  wait $DL_PID
}

# running PID: PID (a child) has not ended yet.
running() {
  local st=
  read -r _ _ st _ 2>/dev/null < /proc/$1/stat
  [ -n "$st" ] && [ "$st" != Z ]
}

# stuck: the state, wait channel and kernel stack of the task deadline() gave
# up on.
stuck() {
  local p=$DL_PID
  local st=
  read -r _ _ st _ 2>/dev/null < /proc/$p/stat
  echo "pid $p state $st wchan $(cat /proc/$p/wchan 2>/dev/null)"
  [ -r /proc/$p/stack ] && sed 's/^/    /' /proc/$p/stack 2>/dev/null | head -20
}
