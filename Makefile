# Builds raidmig.ko out of tree.
#
#   make                 the module, against the cached test kernel
#   make KDIR=/path      against another Rust-enabled 6.12 kernel build tree
#   make clean
#
# The host-side tests of the pure core run with `cargo test`; the whole test
# suite (guest included) with scripts/test.sh.

KDIR ?= $(shell bash $(CURDIR)/scripts/kernel.sh --kdir)
LLVM ?= -19
RUSTC ?= /usr/bin/rustc
RUST_LIB_SRC ?= /usr/lib/rustlib/src/rust/library
KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) RUSTC=$(RUSTC) RUST_LIB_SRC=$(RUST_LIB_SRC)

all: modules

modules:
	@test -f $(KDIR)/Module.symvers || { echo "no kernel build at $(KDIR): run scripts/kernel.sh or pass KDIR=" >&2; exit 1; }
	$(KMAKE) modules

clean:
	$(KMAKE) clean

.PHONY: all modules clean
