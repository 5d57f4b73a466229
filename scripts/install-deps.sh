#!/usr/bin/env bash
# Installs what building and testing raidmig needs on a Debian 12 machine, as root.
# Idempotent: anything already present at the pinned version is left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

log() { echo "[install-deps] $*"; }

[ "$(id -u)" = 0 ] || { echo "install-deps: must run as root" >&2; exit 1; }

debs=(
  "$KERNEL_SOURCE_PKG=$KERNEL_SOURCE_VERSION"
  "rustc-web=$RUSTC_WEB_VERSION" "rust-web-src=$RUSTC_WEB_VERSION"
  clang$LLVM_SUFFIX lld$LLVM_SUFFIX llvm$LLVM_SUFFIX libclang$LLVM_SUFFIX-dev
  bc bison flex libelf-dev libssl-dev cpio xz-utils lz4 make
  qemu-system-x86 udev
  fio mdadm e2fsprogs util-linux kmod stress-ng
)
missing=()
for d in "${debs[@]}"; do
  name=${d%%=*}; want=${d#*=}
  have=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$name" 2>/dev/null || true)
  case "$have" in
    ii*) [ "$d" = "$name" ] || [ "${have#ii }" = "$want" ] || [ "${have:3}" = "$want" ] || missing+=("$d") ;;
    *) missing+=("$d") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -q
  # mdadm's package would otherwise start monitoring services and rebuild initramfs.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# bindgen-cli, pinned, built with the machine's cargo.
export PATH=$HOME/.cargo/bin:$PATH
if ! bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
  log "cargo install bindgen-cli $BINDGEN_VERSION"
  cargo install --locked bindgen-cli --version "$BINDGEN_VERSION"
fi

# virtme-ng, pinned, from PyPI.
if ! vng --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
  log "pip install virtme-ng==$VIRTME_NG_VERSION"
  python3 -m pip install -q "virtme-ng==$VIRTME_NG_VERSION"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
log "all dependencies present"
