#!/usr/bin/env bash
# Host-side self-test of the guest splat scanner (tests/guest/splat.sh): it
# must flag each kind of splat the test kernel can print and pass a clean log.
set -u
. "$(dirname "$0")/../guest/splat.sh"
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
fails=0
clean='[    1.234567] raidmig: raidmig0: raid0 over 3 members, chunk 64 KiB, 720 MiB
[    2.000000] EXT4-fs (raidmig0): mounted filesystem with ordered data mode
[    3.000000] sd 0:0:0:0: [sda] Write cache: enabled, read cache: enabled
[    0.166410] rcu: 	RCU lockdep checking is enabled.
[    0.170000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar'
printf '%s\n' "$clean" > "$tmp"
scan_splats "$tmp" > /dev/null || { echo "FAIL: clean log flagged"; fails=1; }
while IFS= read -r splat; do
  printf '%s\n%s\n' "$clean" "$splat" > "$tmp"
  if scan_splats "$tmp" > /dev/null; then echo "FAIL: not flagged: $splat"; fails=1; fi
done <<'SPLATS'
[   12.345678] BUG: sleeping function called from invalid context at block/blk-core.c:123
[   12.345678] WARNING: CPU: 1 PID: 42 at drivers/block/raidmig.c:1 raidmig_thing+0x1/0x2
[   12.345678] WARNING: possible circular locking dependency detected
[   12.345678] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.345678] Oops: general protection fault, probably for non-canonical address
[   12.345678] kernel BUG at block/bio.c:100!
[   12.345678] INFO: task kworker/0:1:50 blocked for more than 120 seconds.
[   12.345678] BUG: scheduling while atomic: fio/77/0x00000002
[   12.345678] rcu: INFO: rcu_preempt self-detected stall on CPU
[   12.345678] INFO: trying to register non-static key.
[   12.345678] WARNING: suspicious RCU usage
[   12.345678] DEBUG_LOCKS_WARN_ON(1)
[   12.345678] turning off the locking correctness validator.
SPLATS
[ $fails = 0 ] && echo "splat scanner: all cases flagged, clean log passed"
exit $fails
