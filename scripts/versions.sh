# Pinned versions of everything raidmig's build and tests depend on.
# Sourced by the other scripts; change a pin here and the kernel cache key follows.

KERNEL_SOURCE_PKG=linux-source-6.12
KERNEL_SOURCE_VERSION=6.12.117-1~deb12u1
RUSTC_WEB_VERSION=1.96.0+dfsg1-1~deb12u2
LLVM_SUFFIX=-19
BINDGEN_VERSION=0.73.2
VIRTME_NG_VERSION=1.42

# The kernel is built with Debian's rustc-web, not the rustup toolchain on PATH.
KRUSTC=/usr/bin/rustc
KRUST_LIB_SRC=/usr/lib/rustlib/src/rust/library
export LIBCLANG_PATH=/usr/lib/llvm${LLVM_SUFFIX}/lib

# Where built kernels are cached, outside the repository.
RAIDMIG_CACHE=${RAIDMIG_CACHE:-/var/cache/raidmig}
