#!/usr/bin/env bash
# Boots the test kernel in a QEMU guest (software emulation) with fresh
# member disks and runs one command in it, from the repository's directory.
#
#   scripts/guest.sh [--disks N] [--size SIZE] [--sizes "SIZE..."] [--bus sata|nvme]
#                    [--disk-dir DIR] [--memory M] [--append ARG] [--console FILE]
#                    [--kernel test|bench] -- CMD...
#
# --kernel bench boots the benchmark kernel (scripts/kernel.sh --bench)
# instead of the test kernel; RAIDMIG_KO must then name a module built for
# it (scripts/bench-setup.sh).
#
# --sizes gives one size per disk (and so their number) instead of --disks
# and --size.
#
# CMD is one shell command line (a single argument) or a command and its
# arguments (several, each passed as one word).
#
# The guest sees the host's root file system read-only (virtme-ng), this
# checkout read-only at its own path (shared explicitly: virtme-ng gives the
# guest fresh tmpfs on /tmp and /var/tmp, which would hide a checkout there),
# the disks as /dev/sda, /dev/sdb, ... on AHCI controllers (--bus sata, the
# default) or as NVMe namespaces with serial numbers m0, m1, ... (--bus nvme),
# and $RAIDMIG_OUT (a host directory, writable) for logs. Guest tests find the
# disks with `member N` (tests/guest/lib.sh). RAIDMIG_KO, when set, names the
# module the guest tests load instead of the checkout's raidmig.ko.
#
# --console FILE keeps the guest kernel's console (messages of level warning
# and above, from the first line of the boot) in FILE, with the command's
# stderr and virtme-ng's own messages: a guest that panics or dies while
# booting leaves its last words there, where it would otherwise end in
# silence. (Only warnings and worse: every console line is written to an
# emulated UART, slowly, in whatever context printed it.)
#
# Guests run one at a time on this machine: each waits for an exclusive lock
# (/var/lock/raidmig-guest.lock) before booting. The lock belongs to this
# script's process alone, so it is released when the script ends, also when
# QEMU is killed. The exit status is the command's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/versions.sh"
export PATH=$HOME/.cargo/bin:$PATH

disks=3 size=256M sizes="" memory=2G disk_dir="" append=() bus=sata console="" kflavour=()
while [ $# -gt 0 ]; do
  case "$1" in
    --disks) disks=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --bus) bus=$2; shift 2 ;;
    --disk-dir) disk_dir=$2; shift 2 ;;   # reuse (or create) images in DIR
    --append) append+=(--append "$2"); shift 2 ;;
    --console) console=$2; shift 2 ;;
    --kernel) case "$2" in test) kflavour=() ;; bench) kflavour=(--bench) ;;
                *) echo "guest.sh: --kernel must be test or bench, not '$2'" >&2; exit 2 ;; esac; shift 2 ;;
    --) shift; break ;;
    *) echo "guest.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "guest.sh: no command" >&2; exit 2; }
case "$bus" in sata|nvme) ;; *) echo "guest.sh: --bus must be sata or nvme, not '$bus'" >&2; exit 2 ;; esac

kdir=$(bash "$here/kernel.sh" "${kflavour[@]}" --kdir)
kernel=$kdir/arch/x86/boot/bzImage
[ -f "$kernel" ] || { echo "guest.sh: no kernel at $kernel (run scripts/kernel.sh)" >&2; exit 1; }

# inside DIR PARENT: DIR is PARENT or below it.
inside() { case "$1/" in "$2"/*) return 0 ;; *) return 1 ;; esac; }

out=${RAIDMIG_OUT:-$(mktemp -d /var/tmp/raidmig-out.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# What the guest must see besides the host's root: the output directory
# (writable) and this checkout (read-only), each at its host path. virtme-ng
# mounts every --rwdir before every --rodir, so an output directory inside
# the checkout makes the checkout writable instead (else the read-only mount
# would hide the output directory).
[ "$top" != / ] || { echo "guest.sh: refusing to run from a checkout at /" >&2; exit 2; }
shares=()
if inside "$out" "$top"; then
  shares+=(--rwdir "$top")
else
  shares+=(--rwdir "$out" --rodir "$top")
fi
genv="export RAIDMIG_OUT=$(printf %q "$out") RAIDMIG_BUS=$bus"
if [ -n "${RAIDMIG_KO:-}" ]; then
  [ -r "$RAIDMIG_KO" ] || { echo "guest.sh: RAIDMIG_KO=$RAIDMIG_KO is not readable" >&2; exit 2; }
  ko=$(cd "$(dirname "$RAIDMIG_KO")" && pwd)/$(basename "$RAIDMIG_KO")
  kodir=$(dirname "$ko")
  inside "$kodir" "$top" || inside "$kodir" "$out" || shares+=(--rodir "$kodir")
  genv+=" RAIDMIG_KO=$(printf %q "$ko")"
fi

fresh=0
if [ -z "$disk_dir" ]; then
  disk_dir=$(mktemp -d /var/tmp/raidmig-disks.XXXXXX)
  fresh=1
fi
mkdir -p "$disk_dir"

# One size per disk.
if [ -n "$sizes" ]; then
  read -r -a size_of <<<"$sizes"
  disks=${#size_of[@]}
else
  size_of=()
  for i in $(seq 0 $((disks - 1))); do size_of+=("$size"); done
fi
[ "$disks" -ge 1 ] || { echo "guest.sh: no disks" >&2; exit 2; }
genv+=" RAIDMIG_DISKS=$disks"
qopts=""
# SATA: one AHCI controller has 6 ports; as many controllers as needed.
if [ "$bus" = sata ]; then
  for c in $(seq 0 $(( (disks - 1) / 6 ))); do qopts+=" -device ahci,id=ahci$c"; done
fi
for i in $(seq 0 $((disks - 1))); do
  img=$disk_dir/m$i.img
  [ -f "$img" ] || truncate -s "${size_of[$i]}" "$img"
  qopts+=" -drive if=none,id=m$i,file=$img,format=raw,cache=none,aio=native,discard=unmap"
  if [ "$bus" = nvme ]; then
    qopts+=" -device nvme,drive=m$i,serial=m$i"
  else
    qopts+=" -device ide-hd,drive=m$i,bus=ahci$((i / 6)).$((i % 6)),serial=m$i"
  fi
done

# The command: one argument is a shell command line as it is; several are
# quoted word by word.
if [ $# -eq 1 ]; then cmd=$1; else cmd=$(printf '%q ' "$@"); fi

cd "$top"
verbose=()
[ -n "${GUEST_VERBOSE:-}" ] && verbose=(--verbose)   # kernel console on stderr
if [ -n "$console" ]; then
  : > "$console"
  verbose=(--verbose --append loglevel=5)
  exec 8>>"$console"
else
  exec 8>&2
fi

# One guest at a time: wait for the lock on fd 9, which vng and QEMU do not
# inherit (9>&- below), so that the lock goes with this process.
exec 9>/var/lock/raidmig-guest.lock
if ! flock -n 9; then
  echo "guest.sh: waiting for another guest to finish (/var/lock/raidmig-guest.lock)" >&2
  flock 9
fi

# --force-9p: the shares are 9p in the end anyway (virtiofsd cannot serve
# them here), but without it virtme-ng first waits 3 s per share for a
# virtiofsd that never comes up: 9 s of every boot.
set +e
RAIDMIG_OUT=$out vng --run "$kernel" --disable-kvm --disable-microvm --force-9p "${verbose[@]}" \
  --cpus 2 --memory "$memory" "${shares[@]}" "${append[@]}" \
  --qemu-opts="$qopts" \
  --exec "$genv; $cmd" 2>&8 8>&- 9>&-
rc=$?
set -e
flock -u 9
[ $fresh = 1 ] && rm -rf "$disk_dir"
exit $rc
