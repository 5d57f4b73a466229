//! A value set at most once while others may already be reading the cell,
//! and freed only with the cell: what a running array gains (a replacement
//! member) is read on the I/O path without a lock. [`Latest`] builds on it a
//! value replaced a few times over a load (a reshape's new layouts): each
//! version stays until the cell goes, so a reader never sees one freed.

use core::{
    ptr::null_mut,
    sync::atomic::{AtomicPtr, AtomicUsize, Ordering},
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

    /// Stores a pinned `value`, unless the cell holds one already (then it
    /// is given back).
    pub(crate) fn set_pinned(&self, value: Pin<KBox<T>>) -> Result<(), Pin<KBox<T>>> {
        // SAFETY: the value is never moved out of the cell: it is only
        // borrowed, then dropped in place with its box (see `drop`).
        let value = unsafe { Pin::into_inner_unchecked(value) };
        self.set(value).map_err(Into::into)
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

/// A value read without a lock and replaced at most `N` times: every
/// version is kept until the cell is dropped (so a reader holding an older
/// one is never left with freed memory), and readers see the newest set.
/// Who replaces it, and when readers may still hold the older one, is the
/// owner's business (a reshape replaces the layouts with the disk's queue
/// frozen).
pub(crate) struct Latest<T, const N: usize> {
    first: Pin<KBox<T>>,
    later: [Once<T>; N],
    /// How many of `later` are set: the newest is the last of them.
    count: AtomicUsize,
}

impl<T, const N: usize> Latest<T, N> {
    /// A cell holding `first`.
    pub(crate) fn new(first: Pin<KBox<T>>) -> Self {
        Latest { first, later: [const { Once::new() }; N], count: AtomicUsize::new(0) }
    }

    /// The newest version.
    pub(crate) fn get(&self) -> &T {
        let count = self.count.load(Ordering::Acquire);
        // Version `count` was set before `count` was raised to it.
        match count.checked_sub(1).and_then(|i| self.later.get(i)).and_then(Once::get) {
            Some(v) => v,
            None => &self.first,
        }
    }

    /// Whether another version can still be set.
    pub(crate) fn room(&self) -> bool {
        self.count.load(Ordering::Acquire) < N
    }

    /// Makes `next` the newest version (one writer at a time, by the
    /// owner's rule); gives it back when all `N` replacements are used.
    pub(crate) fn set(&self, next: Pin<KBox<T>>) -> Result<(), Pin<KBox<T>>> {
        let count = self.count.load(Ordering::Acquire);
        let Some(slot) = self.later.get(count) else { return Err(next) };
        slot.set_pinned(next)?;
        self.count.store(count + 1, Ordering::Release);
        Ok(())
    }
}
