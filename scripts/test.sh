#!/usr/bin/env bash
# Runs all of raidmig's tests, as root, on a Debian 12 machine: installs what
# is missing, builds (or reuses) the test kernel, builds the module, runs the
# host-side tests of the pure core, then the guest tests in QEMU guests
# (several tests per guest, each on fresh disks of its own: see
# tests/guest/batch.sh), then the host-driven VM tests (which kill and
# reboot guests). Prints each test's time (a guest test's own, the boots
# apart) and ends with "N passed, N failed".
#
#   scripts/test.sh               everything
#   scripts/test.sh NAME...       only these guest tests (tests/guest/NAME.sh;
#                                 NAME-sata or NAME-nvme for one bus only),
#                                 host-driven VM tests (tests/vm/NAME.sh) or
#                                 host tests (tests/host/NAME.sh)
#
# A guest test's header says what its guest needs:
#   # disks: N SIZE        N member disks of SIZE (default 3 256M)
#   # bus: sata nvme       run once per bus, as guest-NAME-BUS (default: once
#                          on SATA, as guest-NAME)
#   # memory: SIZE         guest memory (default: scripts/guest.sh's)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"
export PATH=$HOME/.cargo/bin:$PATH

bash scripts/install-deps.sh || exit 1
bash scripts/kernel.sh > /dev/null || { echo "kernel build failed" >&2; exit 1; }
out=/var/tmp/raidmig-test-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
# The module build must be warning-free (compiler and objtool).
make clean > /dev/null 2>&1
make -s > "$out/build.log" 2>&1 || { cat "$out/build.log"; echo "module build failed" >&2; exit 1; }
. tests/guest/splat.sh   # SPLAT_RE, for why()
passed=0 failed=0 failures=()
record() {   # record NAME RC SECONDS
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS  $1 (${3}s)"
  else failed=$((failed + 1)); failures+=("$1"); echo "FAIL  $1 (${3}s, log: $out/$1.log)"; why "$out/$1.log"; fi
}
# why LOG: the lines of a failed test's log that say why (its failed checks,
# splats, panics), so that the summary alone tells it when the logs are gone.
why() {
  grep -a -E -e 'FAIL|panicked at|error(\[E[0-9]+\])?:' -e "$SPLAT_RE" "$1" 2>/dev/null | head -n 12 | cut -c1-200 | sed 's/^/      | /'
  # A hang: what the first task reported waits in (the reliable frames of
  # its stack, innermost first), and the members' SCSI or ATA errors.
  awk '/blocked for more than/ && !n {n = 1; next}
       n && /Call Trace:/ {t = 1; next}
       t && /<\/TASK>/ {exit}
       t && !/ \? / && match($0, / [a-z_][a-zA-Z0-9_.]*\+0x/) {f = f " " substr($0, RSTART + 1, RLENGTH - 4)}
       END {if (f != "") print "first hung task waits in:" f}' "$1" 2>/dev/null | cut -c1-400 | sed 's/^/      | /'
  grep -a -E 'cmd_age=|failed command|exception Emask|timed out' "$1" 2>/dev/null | head -n 4 | cut -c1-200 | sed 's/^/      | /'
  # A guest that ended: its console's last lines.
  awk '/^\[console\]$/ {c = 1; next} c && NF' "$1" 2>/dev/null | tail -n 8 | cut -c1-200 | sed 's/^/      | console: /'
}
run() {      # run NAME CMD...: runs one test, its output in $out/NAME.log
  local name=$1; shift
  local t0=$SECONDS rc
  "$@" > "$out/$name.log" 2>&1
  rc=$?
  record "$name" $rc $((SECONDS - t0))
}

run module-build-warnings bash -c "! grep -i -e warning -e error '$out/build.log'"
if [ $# -eq 0 ]; then
  run host-core cargo test --release
  run host-splat-scanner bash tests/host/splat_scanner.sh
  run host-stack-frames bash tests/host/stack_frames.sh
  # A checkout under /tmp or /var/tmp runs guests (virtme-ng gives the guest
  # fresh tmpfs there; elsewhere, as under /root or /srv, the guest sees the
  # host's files: `bash tests/host/clone_paths.sh` alone checks those too).
  run host-clone-paths bash tests/host/clone_paths.sh /var/tmp /tmp
  set -- $(cd tests/guest && ls *.sh | grep -vx -e lib.sh -e splat.sh -e migrate_lib.sh -e batch.sh | sed 's/\.sh$//') \
         $(cd tests/vm && ls *.sh | sed 's/\.sh$//')
fi

# Guest tests run in batches: one guest for several tests, each on disks of
# its own (tests/guest/batch.sh), as long as they want the same bus and
# memory and the batch has at most MAX_BATCH_DISKS disks (taken first fit;
# 48 SATA disks are 8 AHCI controllers; each disk adds about half a second
# to the boot, as udev probes it, against some 20 s for a boot). NVMe disks
# are PCI devices each, and a guest's PCI bus has room for about 20 of them.
MAX_BATCH_DISKS=48
MAX_NVME_BATCH_DISKS=16
guest_runs=()   # "LABEL DIR SCRIPT COUNT SIZE BUS MEMORY", in the order asked
others=()       # host-driven VM tests and host tests, run after the guests
plan_guest_test() {   # plan_guest_test NAME [BUS]: one guest test on one bus, or on each it declares
  local name=$1 only=${2:-} script=tests/guest/$1.sh disks size memory buses bus label dir
  read -r _ _ disks size _ < <(grep -m1 '^# disks:' "$script"; echo)
  read -r _ _ memory _ < <(grep -m1 '^# memory:' "$script"; echo)
  buses=$(grep -m1 '^# bus:' "$script" | cut -d: -f2)
  if [ -z "$buses" ]; then
    if [ -n "$only" ] && [ "$only" != sata ]; then
      record "$name-$only" 1 0; echo "$name runs on SATA only" > "$out/$name-$only.log"; return
    fi
    guest_runs+=("guest-$name $name $script ${disks:-3} ${size:-256M} sata ${memory:--}")
    return
  fi
  for bus in $buses; do
    [ -z "$only" ] || [ "$only" = "$bus" ] || continue
    guest_runs+=("guest-$name-$bus $name-$bus $script ${disks:-3} ${size:-256M} $bus ${memory:--}")
  done
}

# run_batches BUS MEMORY: every planned guest test for BUS and MEMORY, in as
# few guests as the disk limit allows. A test without an outcome ended its
# guest (a crash or a reset): it fails, and the tests after it run in a new
# guest.
batch_no=0
run_batches() {
  local bus=$1 memory=$2 run remaining=() take sizes args base i label dir script count size b m max=$MAX_BATCH_DISKS
  [ "$bus" = nvme ] && max=$MAX_NVME_BATCH_DISKS
  for run in "${guest_runs[@]}"; do
    read -r label dir script count size b m <<<"$run"
    [ "$b" = "$bus" ] && [ "$m" = "$memory" ] && remaining+=("$run")
  done
  while [ ${#remaining[@]} -gt 0 ]; do
    take=() sizes="" args=() base=0
    for run in "${remaining[@]}"; do
      read -r label dir script count size b m <<<"$run"
      # First fit: every test, in order, that still fits.
      [ ${#take[@]} -eq 0 ] || [ $((base + count)) -le $max ] || continue
      take+=("$run")
      for i in $(seq 1 "$count"); do sizes+=" $size"; done
      args+=("$label" "$dir" "$script" "$base" "$count")
      base=$((base + count))
    done
    batch_no=$((batch_no + 1))
    local blog=$out/batch-$batch_no.log t0=$SECONDS
    rm -f "$out/batch.status"
    echo "      batch $batch_no: ${#take[@]} test(s) on $bus, $base disk(s), memory ${memory/-/default}"
    local try rc
    for try in 1 2; do
      RAIDMIG_OUT=$out timeout $((600 + 900 * ${#take[@]})) bash scripts/guest.sh --bus "$bus" --sizes "${sizes# }" \
        $( [ "$memory" = - ] || echo "--memory $memory" ) --console "${blog%.log}.console" \
        -- bash tests/guest/batch.sh "${args[@]}" > "$blog" 2>&1
      rc=$?
      # A guest that ended before its command started ran no test: no test
      # failed, and the batch is booted once more (said here, both guests'
      # logs kept). A guest that ended during a test is that test's failure.
      [ $try = 1 ] && [ ! -e "$out/batch.status" ] && ! grep -q '^batch: ' "$blog" || break
      mv "$blog" "${blog%.log}.try1.log"; mv "${blog%.log}.console" "${blog%.log}.try1.console"
      echo "      batch $batch_no: the guest ended (status $rc) before its command started: booting it once more" \
        "(console: ${blog%.log}.try1.console)"
      tail -n 5 "${blog%.log}.try1.console" | cut -c1-200 | sed 's/^/      | console: /'
    done
    local spent=0 st secs done_n=0
    for run in "${take[@]}"; do
      read -r label dir script count size b m <<<"$run"
      done_n=$((done_n + 1))
      if read -r _ st secs < <(awk -v l="$label" '$1 == l' "$out/batch.status" 2>/dev/null) && [ -n "$st" ]; then
        record "$label" "$st" "$secs"
        spent=$((spent + secs))
        [ "$st" = 0 ] || break
      else
        { echo "the guest ended during this test (batch log: $blog; guest console: ${blog%.log}.console)"
          tail -n 30 "$blog"; echo "[console]"; tail -n 60 "${blog%.log}.console"; } >> "$out/$label.log"
        record "$label" 1 0
        break
      fi
    done
    # The tests of this batch that have an outcome leave the queue; the
    # others wait for the next guest, in their order.
    local left=() r
    for r in "${remaining[@]}"; do
      for run in "${take[@]:0:$done_n}"; do [ "$r" = "$run" ] && continue 2; done
      left+=("$r")
    done
    remaining=("${left[@]}")
    echo "      batch $batch_no: guest boot, resets and shutdown $((SECONDS - t0 - spent)) s"
  done
}

for name in "$@"; do
  if [ -f "tests/guest/$name.sh" ]; then
    plan_guest_test "$name"
  elif [ -f "tests/guest/${name%-*}.sh" ] && { [ "${name##*-}" = sata ] || [ "${name##*-}" = nvme ]; }; then
    plan_guest_test "${name%-*}" "${name##*-}"
  else
    others+=("$name")
  fi
done

# Batches: SATA, then NVMe, then tests that need their own memory size.
# ("-", the default memory, sorts first.)
for key in $(for run in "${guest_runs[@]}"; do read -r _ _ _ _ _ b m <<<"$run"; echo "$m:$b"; done |
             sort -u -t: -k1,1 -k2,2r); do
  run_batches "${key#*:}" "${key%%:*}"
done

for name in "${others[@]}"; do
  if [ -f "tests/vm/$name.sh" ]; then
    # A host-driven test: the script boots (and kills) guests itself.
    mkdir -p "$out/$name"
    RAIDMIG_OUT=$out/$name run "vm-$name" timeout 3600 bash "tests/vm/$name.sh"
  elif [ -f "tests/host/$name.sh" ]; then
    run "host-${name//_/-}" bash "tests/host/$name.sh"
  else
    record "$name" 1 0; echo "no such test: $name" > "$out/$name.log"
  fi
done

echo "logs: $out"
echo "total time: $((SECONDS / 60)) min $((SECONDS % 60)) s"
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
