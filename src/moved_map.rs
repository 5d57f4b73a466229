//! The moved-unit map of a migration with the new layout in effect at once,
//! in memory: one bit per unit in atomic words (the core's
//! [`crate::raidmig_core::moved`] says what they mean and how they reach
//! the members), sized when the migration is loaded or a reshape is made
//! ready, read by host requests without a lock and set by the array
//! thread.

use core::sync::atomic::AtomicU64;
use kernel::prelude::*;

use crate::raidmig_core::moved;

/// A map of a migration's units, all clear at first.
pub(crate) struct MovedMap {
    words: KVVec<AtomicU64>,
}

impl MovedMap {
    /// A map of no unit: a migration without one (or none at all).
    pub(crate) fn empty() -> Self {
        MovedMap { words: KVVec::new() }
    }

    /// A clear map of `units` units (vmalloc'ed where kmalloc cannot: up
    /// to 3 MiB for the largest).
    pub(crate) fn new(units: u64) -> Result<Self> {
        let n = moved::words(units);
        let mut words = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            words.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(MovedMap { words })
    }

    /// Whether it holds `units` units.
    pub(crate) fn holds(&self, units: u64) -> bool {
        self.words.len() == moved::words(units)
    }

    /// The words, for the core.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        &self.words
    }
}
