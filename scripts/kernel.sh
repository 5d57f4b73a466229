#!/usr/bin/env bash
# Builds the Rust-enabled test kernel from Debian's linux-source-6.12 with
# qemu/raidmig.config, and caches it outside the repository.
#
#   scripts/kernel.sh            build (or reuse) the kernel, print its build dir
#   scripts/kernel.sh --kdir     print the build dir for the current key, build nothing
#   scripts/kernel.sh --bench [--kdir]   (options in any order)
#                                the same for the benchmark kernel: the test
#                                kernel's config with qemu/bench.config over it
#                                (no lockdep; see that file)
#
# The cache key covers the kernel source version, the config fragment, this
# recipe and the toolchain (rustc, clang, bindgen), so a change to any of them
# builds a new kernel and an unchanged set reuses the old one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/versions.sh"
export PATH=$HOME/.cargo/bin:$PATH

bench=0 kdir_only=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    --kdir) kdir_only=1 ;;
    *) echo "kernel.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
fragment=$top/qemu/raidmig.config
if [ $bench = 1 ]; then
  # One fragment: raidmig.config without the options bench.config sets,
  # then bench.config (so that the check below reads one value per option).
  overrides=$(grep -o '^# CONFIG_[A-Z0-9_]* is not set\|^CONFIG_[A-Z0-9_]*=' "$top/qemu/bench.config" |
    sed 's/^# \(CONFIG_[A-Z0-9_]*\) is not set/\1/; s/=$//')
  merged=$(mktemp /tmp/raidmig-bench-config.XXXXXX)
  trap 'rm -f "$merged"' EXIT
  { grep -v -w -F "$overrides" "$fragment"; cat "$top/qemu/bench.config"; } > "$merged"
  fragment=$merged
fi
recipe_version=1

cache_key() {
  {
    echo "recipe $recipe_version"
    dpkg-query -W -f='${Version}\n' "$KERNEL_SOURCE_PKG"
    cat "$fragment"
    "$KRUSTC" --version
    "clang$LLVM_SUFFIX" --version | head -1
    bindgen --version
  } | sha256sum | cut -c1-16
}

kver=$(dpkg-query -W -f='${Version}' "$KERNEL_SOURCE_PKG" 2>/dev/null || echo none)
dir=$RAIDMIG_CACHE/kernel-${kver%%-*}-$(cache_key 2>/dev/null || echo nokey)

if [ $kdir_only = 1 ]; then
  echo "$dir/build"
  exit 0
fi

if [ -f "$dir/build/.raidmig-complete" ]; then
  echo "[kernel] reusing cached kernel $dir" >&2
  echo "$dir/build"
  exit 0
fi

mkdir -p "$RAIDMIG_CACHE"
exec 9>"$RAIDMIG_CACHE/.lock"
flock 9
if [ -f "$dir/build/.raidmig-complete" ]; then echo "$dir/build"; exit 0; fi

kmake() {
  make -C "$dir/src" O="$dir/build" LLVM="$LLVM_SUFFIX" RUSTC="$KRUSTC" \
    RUST_LIB_SRC="$KRUST_LIB_SRC" BINDGEN=bindgen "$@"
}

echo "[kernel] building kernel in $dir (about 10 minutes on 2 cores)" >&2
rm -rf "$dir"
mkdir -p "$dir/build"
tarball=$(ls /usr/src/linux-source-6.12.tar.xz)
tar -xf "$tarball" -C "$dir"
mv "$dir"/linux-source-6.12 "$dir/src"

kmake tinyconfig >&2
kmake rustavailable >&2
"$dir/src/scripts/kconfig/merge_config.sh" -m -O "$dir/build" "$dir/build/.config" "$fragment" >&2
kmake olddefconfig >&2

# merge_config silently drops options whose dependencies are not met, and
# another option may select one the fragment turns off: refuse both.
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y) grep -qx "$line" "$dir/build/.config" || { echo "[kernel] not set: $line" >&2; missing=1; } ;;
    "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}
      ! grep -q "^$sym=" "$dir/build/.config" || { echo "[kernel] still set: $sym" >&2; missing=1; } ;;
  esac
done < "$fragment"
[ $missing = 0 ] || { echo "[kernel] config fragment not fully applied" >&2; exit 1; }

kmake -j"$(( $(nproc) + 1 ))" all >&2
touch "$dir/build/.raidmig-complete"
# Old kernels under other keys are left for the user to remove (see README).
echo "$dir/build"
