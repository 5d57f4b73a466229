#!/usr/bin/env bash
# Boots the test kernel in a QEMU guest (software emulation) with fresh SATA
# member disks and runs one command in it, from the repository's directory.
#
#   scripts/guest.sh [--disks N] [--size SIZE] [--keep-disks DIR] [--memory M] -- CMD...
#
# The guest sees the host's root file system read-only (virtme-ng), the disks
# as /dev/sda, /dev/sdb, ... on an AHCI controller, and $RAIDMIG_OUT (a host
# directory, writable) for logs. The exit status is the command's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/versions.sh"
export PATH=$HOME/.cargo/bin:$PATH

disks=3 size=256M memory=2G disk_dir="" append=()
while [ $# -gt 0 ]; do
  case "$1" in
    --disks) disks=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --disk-dir) disk_dir=$2; shift 2 ;;   # reuse (or create) images in DIR
    --append) append+=(--append "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "guest.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "guest.sh: no command" >&2; exit 2; }

kdir=$(bash "$here/kernel.sh" --kdir)
kernel=$kdir/arch/x86/boot/bzImage
[ -f "$kernel" ] || { echo "guest.sh: no kernel at $kernel (run scripts/kernel.sh)" >&2; exit 1; }

out=${RAIDMIG_OUT:-$(mktemp -d /var/tmp/raidmig-out.XXXXXX)}
mkdir -p "$out"
fresh=0
if [ -z "$disk_dir" ]; then
  disk_dir=$(mktemp -d /var/tmp/raidmig-disks.XXXXXX)
  fresh=1
fi
mkdir -p "$disk_dir"

# One AHCI controller has 6 ports; a second one takes the rest.
qopts="-device ahci,id=ahci0 -device ahci,id=ahci1"
for i in $(seq 0 $((disks - 1))); do
  img=$disk_dir/m$i.img
  [ -f "$img" ] || truncate -s "$size" "$img"
  qopts+=" -drive if=none,id=m$i,file=$img,format=raw,cache=none,aio=native,discard=unmap"
  qopts+=" -device ide-hd,drive=m$i,bus=ahci$((i / 6)).$((i % 6)),serial=m$i"
done

cd "$top"
set +e
verbose=()
[ -n "${GUEST_VERBOSE:-}" ] && verbose=(--verbose)   # kernel console on stdout
RAIDMIG_OUT=$out vng --run "$kernel" --disable-kvm --disable-microvm "${verbose[@]}" \
  --cpus 2 --memory "$memory" --rwdir "$out" "${append[@]}" \
  --qemu-opts="$qopts" --exec "RAIDMIG_OUT=$out $*"
rc=$?
set -e
[ $fresh = 1 ] && rm -rf "$disk_dir"
exit $rc
