//! How host I/O and the migration engine keep out of each other's way.
//!
//! The engine publishes the core's routing [`View`]; host requests are cut
//! by it ([`route`]) under a mutex and either go ahead, or wait: for the unit
//! being copied, or for a checkpoint that covers a write into copied but not
//! yet checkpointed data. The engine is the only writer of superblocks, so a
//! host write that needs a checkpoint asks for one and waits for the engine
//! to publish it.
//!
//! Before the engine copies a unit it must also know that no host request
//! routed earlier (by a view without that unit in flight) still runs against
//! the source layout, or the copy could miss a write or overwrite what a read
//! is about to return. Requests that touch the source layout are counted in
//! one of two epochs; publishing a unit in flight flips the epoch and waits
//! until the old one has drained. Requests admitted after the flip see the
//! unit in flight and wait instead.

use crate::{raidmig_core::route::{route, Route, Routed, View}, request::InFlight};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
    time::msecs_to_jiffies,
};

/// Host requests running against the source layout, by epoch.
#[pin_data]
pub(crate) struct Drain {
    counts: [AtomicU32; 2],
    #[pin]
    lock: Mutex<()>,
    #[pin]
    drained: CondVar,
}

impl Drain {
    fn new() -> impl PinInit<Self> {
        pin_init!(Drain {
            counts: [AtomicU32::new(0), AtomicU32::new(0)],
            lock <- new_mutex!(()),
            drained <- new_condvar!(),
        })
    }

    /// A request of `epoch` ended (called from its completion, possibly in
    /// interrupt context: notifying a condition variable is safe there).
    pub(crate) fn release(&self, epoch: u8) {
        if self.counts[epoch as usize & 1].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_all();
        }
    }

    /// Waits until no request of `epoch` runs. The releasing side does not
    /// take the lock, so a wake-up can be missed between the check and the
    /// sleep: the short timeout bounds what that costs.
    fn wait_empty(&self, epoch: u8) {
        let mut guard = self.lock.lock();
        while self.counts[epoch as usize & 1].load(Ordering::Acquire) != 0 {
            let _ = self.drained.wait_interruptible_timeout(&mut guard, msecs_to_jiffies(2));
        }
    }
}

struct Shared {
    view: View,
    epoch: u8,
    /// Set when the engine cannot write checkpoints any more: writes that
    /// need one fail instead of waiting forever.
    refuse_checkpoint_waits: bool,
}

/// Why a host request cannot be admitted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckpointUnavailable;

/// The runs of an admitted request (a request is cut in at most four).
pub(crate) type Runs = [Option<Routed>; 4];

/// The meeting point of host I/O and the engine.
#[pin_data]
pub(crate) struct Coordinator {
    #[pin]
    shared: Mutex<Shared>,
    #[pin]
    changed: CondVar,
    #[pin]
    drain: Drain,
}

impl Coordinator {
    /// Starts with `view` (the engine's first, or a clean array's).
    pub(crate) fn new(view: View) -> impl PinInit<Self> {
        pin_init!(Coordinator {
            shared <- new_mutex!(Shared { view, epoch: 0, refuse_checkpoint_waits: false }),
            changed <- new_condvar!(),
            drain <- Drain::new(),
        })
    }

    /// The current view.
    pub(crate) fn view(&self) -> View {
        self.shared.lock().view
    }

    /// Host side: waits until `[start, start + sectors)` can be routed, then
    /// returns its runs. If a run goes to the source layout, the request is
    /// counted in the current epoch until it ends. `ask_checkpoint` is called
    /// when a write needs a checkpoint (to wake the engine if it idles).
    pub(crate) fn admit(
        &self,
        io: &InFlight,
        start: u64,
        sectors: u64,
        write: bool,
        ask_checkpoint: impl Fn(),
    ) -> Result<Runs, CheckpointUnavailable> {
        let mut guard = self.shared.lock();
        loop {
            let mut runs: Runs = [None; 4];
            let (mut wait, mut checkpoint, mut source) = (false, false, false);
            for (slot, run) in runs.iter_mut().zip(route(&guard.view, start, sectors, write)) {
                match run.route {
                    Route::Wait => wait = true,
                    Route::NeedsCheckpoint => checkpoint = true,
                    Route::Source => source = true,
                    Route::Target => {}
                }
                *slot = Some(run);
            }
            if checkpoint && guard.refuse_checkpoint_waits {
                return Err(CheckpointUnavailable);
            }
            if checkpoint {
                guard.view.request_checkpoint();
                ask_checkpoint();
            }
            if wait || checkpoint {
                self.changed.wait(&mut guard);
                continue;
            }
            if source {
                let epoch = guard.epoch;
                self.drain.counts[epoch as usize].fetch_add(1, Ordering::AcqRel);
                io.release_on_end(&self.drain, epoch);
            }
            return Ok(runs);
        }
    }

    /// Engine side: takes the engine's view. When it puts a unit in flight,
    /// returns only once host requests admitted before have left the source.
    pub(crate) fn publish(&self, view: &View) {
        let old_epoch = {
            let mut guard = self.shared.lock();
            guard.view.absorb(view);
            let old = guard.epoch;
            if view.in_flight {
                guard.epoch ^= 1;
            }
            old
        };
        self.changed.notify_all();
        if view.in_flight {
            self.drain.wait_empty(old_epoch);
        }
    }

    /// Engine side: whether a host write waits for a checkpoint.
    pub(crate) fn checkpoint_requested(&self) -> bool {
        self.shared.lock().view.checkpoint_requested
    }

    /// Engine side: from now on, writes that need a checkpoint fail (`true`)
    /// or wait (`false`); waiting ones are woken to find out.
    pub(crate) fn refuse_checkpoint_waits(&self, refuse: bool) {
        self.shared.lock().refuse_checkpoint_waits = refuse;
        self.changed.notify_all();
    }
}
