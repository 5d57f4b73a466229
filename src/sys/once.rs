//! A value set at most once while others may already be reading the cell,
//! and freed only with the cell: what a running array gains (a replacement
//! member) is read on the I/O path without a lock.

use core::{
    ptr::null_mut,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::prelude::*;

/// A cell that is empty or holds a value for the rest of its life.
///
/// # Invariants
///
/// `ptr` is null or comes from `KBox::into_raw`, and once not null it never
/// changes until the cell is dropped.
pub(crate) struct Once<T> {
    ptr: AtomicPtr<T>,
}

// SAFETY: the cell hands out shared references to its value from any thread
// and drops it in whichever thread drops the cell.
unsafe impl<T: Send + Sync> Send for Once<T> {}
// SAFETY: as above; setting is a single atomic exchange.
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Once<T> {
    /// An empty cell.
    pub(crate) const fn new() -> Self {
        Once { ptr: AtomicPtr::new(null_mut()) }
    }

    /// Stores `value`, unless the cell holds one already (then it is given
    /// back).
    pub(crate) fn set(&self, value: KBox<T>) -> Result<(), KBox<T>> {
        let raw = KBox::into_raw(value);
        match self.ptr.compare_exchange(null_mut(), raw, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            // SAFETY: `raw` came from `into_raw` just above and was not stored.
            Err(_) => Err(unsafe { KBox::from_raw(raw) }),
        }
    }

    /// The value, if set.
    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: by the invariant a non-null pointer is a live `KBox`
        // allocation that stays until the cell (borrowed here) is dropped.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

impl<T> Drop for Once<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: by the invariant `p` came from `into_raw`; nobody else
            // holds a reference once the cell is being dropped.
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}
