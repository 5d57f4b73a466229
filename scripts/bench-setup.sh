# Sourced by bench.sh and bench-migration.sh: installs what is missing and
# builds the kernel the benchmark boots and the module for it.
#
#   bench_setup KERNEL      KERNEL: bench (default of both scripts) or test
#
# The benchmark kernel is the test kernel without lockdep and the other lock
# and list checks (qemu/bench.config), as on the kernels users run; `test`
# measures on the tests' debug kernel instead. A module is built for one
# kernel only, so the one for the benchmark kernel is built from a copy of
# the sources of this checkout, beside it in the cache: the checkout's own
# raidmig.ko stays the test kernel's. Sets guest_kernel (guest.sh's
# --kernel) and exports RAIDMIG_KO, which the guest scripts load.
bench_setup() {
  local kernel=$1 kdir kob
  bash scripts/install-deps.sh > /dev/null
  case "$kernel" in
    test)
      bash scripts/kernel.sh > /dev/null
      make -s
      RAIDMIG_KO=$PWD/raidmig.ko ;;
    bench)
      kdir=$(bash scripts/kernel.sh --bench)
      kob=$(dirname "$kdir")/raidmig
      rm -rf "$kob"
      mkdir -p "$kob"
      tar --exclude='*.o' --exclude='.*.cmd' --exclude='*.ko' --exclude='*.mod*' \
        -cf - Kbuild Makefile src | tar -C "$kob" -xf -
      make -s -C "$kob" KDIR="$kdir"
      RAIDMIG_KO=$kob/raidmig.ko ;;
    *) echo "--kernel must be bench or test, not '$kernel'" >&2; exit 2 ;;
  esac
  guest_kernel=$kernel
  export RAIDMIG_KO
}

# bench_disks SIZE_MB: four allocated (not sparse) member images of SIZE_MB
# each, so that reads cost what reads of data cost, in a directory removed
# at exit; sets disks to it.
bench_disks() {
  disks=$(mktemp -d /var/tmp/raidmig-bench.XXXXXX)
  trap 'rm -rf "$disks"' EXIT
  local i
  for i in 0 1 2 3; do dd if=/dev/zero of="$disks/m$i.img" bs=1M count="$1" status=none; done
}
