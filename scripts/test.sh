#!/usr/bin/env bash
# Runs all of raidmig's tests, as root, on a Debian 12 machine: installs what
# is missing, builds (or reuses) the test kernel, builds the module, runs the
# host-side tests of the pure core, then every guest test in its own QEMU
# guest with fresh SATA disks, then the host-driven VM tests (which kill and
# reboot guests). Ends with "N passed, N failed", and prints each test's
# time.
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
passed=0 failed=0 failures=()
record() {   # record NAME RC SECONDS
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS  $1 (${3}s)"
  else failed=$((failed + 1)); failures+=("$1"); echo "FAIL  $1 (${3}s, log: $out/$1.log)"; fi
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
  run host-core cargo test --release -j1
  run host-splat-scanner bash tests/host/splat_scanner.sh
  # A checkout anywhere (also under /tmp or /var/tmp) runs guests.
  run host-clone-paths bash tests/host/clone_paths.sh
  set -- $(cd tests/guest && ls *.sh | grep -vx -e lib.sh -e splat.sh -e migrate_lib.sh | sed 's/\.sh$//') \
         $(cd tests/vm && ls *.sh | sed 's/\.sh$//')
fi

guest_test() {   # guest_test NAME [BUS]: one guest test on one bus, or on each it declares
  local name=$1 only=${2:-} script=tests/guest/$1.sh disks size memory buses bus
  read -r _ _ disks size _ < <(grep -m1 '^# disks:' "$script"; echo)
  read -r _ _ memory _ < <(grep -m1 '^# memory:' "$script"; echo)
  buses=$(grep -m1 '^# bus:' "$script" | cut -d: -f2)
  if [ -z "$buses" ]; then
    [ -z "$only" ] || [ "$only" = sata ] || { record "$name-$only" 1 0; echo "$name runs on SATA only" > "$out/$name-$only.log"; return; }
    mkdir -p "$out/$name"
    RAIDMIG_OUT=$out/$name run "guest-$name" timeout 3600 \
      bash scripts/guest.sh --disks "${disks:-3}" --size "${size:-256M}" ${memory:+--memory "$memory"} -- bash "$script"
    return
  fi
  for bus in $buses; do
    [ -z "$only" ] || [ "$only" = "$bus" ] || continue
    mkdir -p "$out/$name-$bus"
    RAIDMIG_OUT=$out/$name-$bus run "guest-$name-$bus" timeout 3600 \
      bash scripts/guest.sh --bus "$bus" --disks "${disks:-3}" --size "${size:-256M}" ${memory:+--memory "$memory"} -- bash "$script"
  done
}

for name in "$@"; do
  if [ -f "tests/guest/$name.sh" ]; then
    # A guest test: one guest with fresh disks runs the whole script.
    guest_test "$name"
  elif [ -f "tests/guest/${name%-*}.sh" ] && { [ "${name##*-}" = sata ] || [ "${name##*-}" = nvme ]; }; then
    guest_test "${name%-*}" "${name##*-}"
  elif [ -f "tests/vm/$name.sh" ]; then
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
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
