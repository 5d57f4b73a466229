# Sourced inside the migration benchmarks' guests (bench-migration-guest.sh,
# bench-at-once-guest.sh): the module, the members in the order the host
# attached them (A B C D: SATA disks by letter, NVMe namespaces by their
# serial numbers m0, m1, ...), the first member's data area in sectors
# ($data), and the helpers both use.
KO=${RAIDMIG_KO:-./raidmig.ko}   # bench-setup.sh passes the module built for this kernel
SYS=/sys/block/raidmig0/raidmig
# The kernel the figures were measured on (lockdep changes them: bench-setup.sh).
kernel_line() { echo "kernel $(uname -r), lockdep $([ -e /proc/lockdep ] && echo on || echo off)"; }
tail_sectors=$(bash "$(dirname "${BASH_SOURCE[0]}")/reserved-tail.sh")
if [ -b /dev/sda ]; then
  A=/dev/sda B=/dev/sdb C=/dev/sdc D=/dev/sdd
else
  by_serial() { local n; for n in /sys/block/nvme*n1; do [ "$(cat "$n/device/serial" | tr -d ' ')" = "$1" ] && echo "/dev/${n##*/}"; done; }
  A=$(by_serial m0) B=$(by_serial m1) C=$(by_serial m2) D=$(by_serial m3)
fi
data=$(( ($(blockdev --getsz $A) - tail_sectors) / 128 * 128 ))   # sectors

zero_tail() {
  dd if=/dev/zero of="$1" bs=1M seek=$(( ($(blockdev --getsz "$1") - tail_sectors) * 512 )) count=$((tail_sectors / 2048)) \
    oflag=direct,seek_bytes conv=notrunc status=none
}
# rmmod once udev has settled: a change of capacity (a migration's start or
# end) makes udev open the volume for a moment, and rmmod then finds it in
# use.
unload() {
  udevadm settle -t 10 2>/dev/null || true
  for _ in $(seq 50); do rmmod raidmig 2>/dev/null && return 0; sleep 0.1; done
  rmmod raidmig
}
wait_dev() { for _ in $(seq 50); do [ -b /dev/raidmig0 ] && return; sleep 0.1; done; }
now() { date +%s.%N; }
