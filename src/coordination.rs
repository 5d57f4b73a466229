//! How host I/O and the migration thread keep out of each other's way: the
//! core's [`Gate`] under a mutex, a condition variable for requests that
//! wait, and the [`Drain`] of requests admitted by an older view.
//!
//! Every decision (which request goes, waits, asks for a checkpoint or
//! fails; which epoch must drain) is the gate's; this file only sleeps and
//! wakes. A request waits only while the engine copies the unit it touches
//! (member I/O that completes or fails), for a checkpoint the engine can
//! still write, or for a unit the engine moves out of order while it can
//! (the new layout in effect at once): once the engine has stopped on an
//! error, the gate refuses instead, or routes to the source.

use crate::{
    raidmig_core::{
        gate::{Admission, Gate},
        route::View,
    },
    sys::{drain::Drain, request::InFlight},
};
use core::sync::atomic::AtomicU64;
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
};

/// The meeting point of host I/O and the engine.
#[pin_data]
pub(crate) struct Coordinator {
    #[pin]
    gate: Mutex<Gate>,
    #[pin]
    changed: CondVar,
    #[pin]
    drain: Drain,
}

impl Coordinator {
    /// Starts with `view` (the engine's first, or a settled array's).
    pub(crate) fn new(view: View) -> impl PinInit<Self> {
        pin_init!(Coordinator {
            gate <- new_mutex!(Gate::new(view)),
            changed <- new_condvar!(),
            drain <- Drain::new(),
        })
    }

    /// The current view.
    pub(crate) fn view(&self) -> View {
        self.gate.lock().view()
    }

    /// Host side: waits until `[start, start + sectors)` may go (units moved
    /// out of order as `moved` marks them), then returns the view to route
    /// it with, or `None` if it must fail. A request that touches the
    /// source layout or a staging area is counted in the current epoch
    /// until it ends. `wake_engine` is called when a write needs a
    /// checkpoint or a unit moved.
    pub(crate) fn admit(
        &self,
        io: &InFlight,
        moved: &[AtomicU64],
        start: u64,
        sectors: u64,
        write: bool,
        wake_engine: impl Fn(),
    ) -> Option<View> {
        let mut gate = self.gate.lock();
        loop {
            match gate.admit(moved, start, sectors, write) {
                Admission::Go { view, epoch } => {
                    self.count_in(io, epoch);
                    return Some(view);
                }
                Admission::Wait => self.changed.wait(&mut gate),
                Admission::WaitCheckpoint | Admission::WaitMove => {
                    wake_engine();
                    self.changed.wait(&mut gate);
                }
                Admission::Refuse => return None,
            }
        }
    }

    /// Host side, from `queue_rq`: the view to route
    /// `[start, start + sectors)` with if it may go now (counted as by
    /// [`Coordinator::admit`]); `None` if it would wait or fail, which the
    /// request's work item then does through `admit`.
    pub(crate) fn try_admit(&self, io: &InFlight, moved: &[AtomicU64], start: u64, sectors: u64, write: bool) -> Option<View> {
        match self.gate.lock().admit(moved, start, sectors, write) {
            Admission::Go { view, epoch } => {
                self.count_in(io, epoch);
                Some(view)
            }
            Admission::Wait | Admission::WaitCheckpoint | Admission::WaitMove | Admission::Refuse => None,
        }
    }

    /// Counts an admitted request in `epoch`, if the gate gave one.
    fn count_in(&self, io: &InFlight, epoch: Option<u8>) {
        if let Some(epoch) = epoch {
            self.drain.enter(epoch);
            io.count_in(epoch);
        }
    }

    /// A request counted in `epoch` ended (any context).
    pub(crate) fn released(&self, epoch: u8) {
        self.drain.release(epoch);
    }

    /// Engine side: takes the engine's view. When it puts a unit in flight,
    /// returns only once host requests admitted before have ended.
    pub(crate) fn publish(&self, view: &View) {
        let old = self.gate.lock().publish(view);
        self.changed.notify_all();
        if let Some(epoch) = old {
            self.drain.wait_empty(epoch);
        }
    }

    /// Repair side: sets the window a rebuild works on (or with `None`
    /// ends the repair). Setting one returns only once the host writes
    /// admitted before have ended; writes into the window wait until it
    /// moves on.
    pub(crate) fn set_repair(&self, window: Option<(u64, u64)>) {
        let old = self.gate.lock().set_repair(window);
        self.changed.notify_all();
        if let Some(epoch) = old {
            self.drain.wait_empty(epoch);
        }
    }

    /// Engine side: whether a host write waits for a checkpoint.
    pub(crate) fn checkpoint_requested(&self) -> bool {
        self.gate.lock().checkpoint_requested()
    }

    /// Engine side: the unit a host request last asked to have moved.
    pub(crate) fn move_requested(&self) -> Option<u64> {
        self.gate.lock().move_requested()
    }
}
