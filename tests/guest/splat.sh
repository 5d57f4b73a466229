# What counts as a kernel splat in a guest's dmesg. Sourced by lib.sh in the
# guest and by the host's self-test of this scanner.

SPLAT_RE='BUG:|WARNING:|Oops|kernel BUG at|general protection fault|Call Trace:|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|bad unlock balance|DEBUG_LOCKS_WARN_ON|trying to register non-static key|turning off the locking correctness validator|sleeping function called from invalid context|scheduling while atomic|blocked for more than [0-9]+ seconds|rcu: INFO|self-detected stall|UBSAN|Kernel panic'

# scan_splats FILE: succeeds when FILE has no splat, else prints the splat
# lines and fails.
scan_splats() {
  ! grep -E "$SPLAT_RE" "$1"
}
