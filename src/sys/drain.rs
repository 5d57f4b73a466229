//! Requests counted in two epochs, and waiting until one epoch has none.
//!
//! The host path counts a request in the current epoch when it is admitted
//! (see the core's `gate`); the request's completion releases it, possibly
//! in interrupt context, so the counts are atomics and the release only
//! notifies a condition variable.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
    time::msecs_to_jiffies,
};

/// Requests running, by epoch.
#[pin_data]
pub(crate) struct Drain {
    counts: [AtomicU32; 2],
    #[pin]
    lock: Mutex<()>,
    #[pin]
    drained: CondVar,
}

impl Drain {
    /// No request counted.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Drain {
            counts: [AtomicU32::new(0), AtomicU32::new(0)],
            lock <- new_mutex!(()),
            drained <- new_condvar!(),
        })
    }

    /// Counts one more request in `epoch`.
    pub(crate) fn enter(&self, epoch: u8) {
        self.counts[epoch as usize & 1].fetch_add(1, Ordering::AcqRel);
    }

    /// A request of `epoch` ended (from its completion, in any context:
    /// notifying a condition variable is safe there).
    pub(crate) fn release(&self, epoch: u8) {
        if self.counts[epoch as usize & 1].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_all();
        }
    }

    /// Waits until no request of `epoch` runs. The releasing side does not
    /// take the lock, so a wake-up can be missed between the check and the
    /// sleep: the short timeout bounds what that costs.
    pub(crate) fn wait_empty(&self, epoch: u8) {
        let mut guard = self.lock.lock();
        while self.counts[epoch as usize & 1].load(Ordering::Acquire) != 0 {
            let _ = self.drained.wait_interruptible_timeout(&mut guard, msecs_to_jiffies(2));
        }
    }
}
