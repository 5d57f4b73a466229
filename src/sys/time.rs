//! The clocks: a monotonic one that paces the migration (it never steps
//! back, whatever `date -s` does) and the wall clock that stamps superblocks.

use crate::raidmig_core::engine::Time;
use kernel::bindings;

/// Both clocks now.
pub(crate) fn now() -> Time {
    // SAFETY: both are NMI-safe readers without preconditions.
    let (mono, wall) = unsafe { (bindings::ktime_get_mono_fast_ns(), bindings::ktime_get_real_fast_ns()) };
    Time { mono_ms: mono / 1_000_000, wall_ms: wall / 1_000_000 }
}

/// Sleeps `ms` milliseconds (process context).
pub(crate) fn sleep_ms(ms: u32) {
    // SAFETY: called from process context (a sysfs write, a kernel thread).
    unsafe { bindings::msleep(ms) };
}
