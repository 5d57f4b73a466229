//! Admission of host requests while the engine migrates: a request goes
//! ahead with a snapshot of the routing view, waits for the engine to
//! publish again, or fails.
//!
//! Keeps invariants 2, 3, 5 and 11 of the theory (see the crate
//! documentation). A request for a unit the engine moves on request
//! ([`super::route::Route::Move`]) records the unit in the view
//! ([`super::route::View::wanted`]) and waits: each move ends with a
//! publication that wakes the waiters, and the request that finds its unit
//! still not moved asks again, so every wait ends with a unit moved.
//!
//! The kernel keeps one [`Gate`] under a lock shared by host requests and
//! the migration thread; the simulator keeps one too. A request that touches
//! the source layout or the staging area is counted in the gate's current
//! *epoch* until it ends (the shell does the counting, with atomics that
//! completions can release from any context). When the engine publishes a
//! unit in flight, [`Gate::publish`] flips the epoch and returns the old one:
//! the engine must not touch the unit before every request of the old epoch
//! has ended. Requests admitted after the flip see the unit in flight and
//! wait instead, so nothing routed by an older view can reach a unit while
//! the engine reads its source or rewrites its rows.
//!
//! A rebuild (or any background repair of a settled array) uses the same
//! epochs with a *repair window*: while one is set, every write is counted;
//! [`Gate::set_repair`] flips the epoch, and the repair touches the window
//! only once the old epoch has drained, while writes into the window wait
//! (invariant 9: nothing written under an older health reaches rows being
//! rebuilt).

use core::sync::atomic::AtomicU64;

use super::route::{route, Route, View};

/// What a host request may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, routed by `view`; when `epoch` is set the request is counted
    /// in that epoch until it ends.
    Go {
        /// The view to route every part of the request with.
        view: View,
        /// The epoch to count the request in, if it touches the source or
        /// the staging area.
        epoch: Option<u8>,
    },
    /// Part of it is in flight: wait for the engine to publish again.
    Wait,
    /// A write over copied units that no checkpoint covers: a checkpoint was
    /// requested (wake the engine), wait for it to be published.
    WaitCheckpoint,
    /// Part of it lies in a unit the engine moves on request: the move was
    /// requested (wake the engine), wait for it to be published.
    WaitMove,
    /// It cannot be served safely: fail it.
    Refuse,
}

/// The view host requests are admitted by, and the drain epoch.
#[derive(Clone, Copy, Debug)]
pub struct Gate {
    view: View,
    epoch: u8,
    /// Logical `[start, end)` a repair works on, if one runs.
    repair: Option<(u64, u64)>,
}

impl Gate {
    /// A gate starting with `view` (the engine's first, or a settled
    /// array's).
    pub fn new(view: View) -> Gate {
        Gate { view, epoch: 0, repair: None }
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// Host side: whether `[start, start + sectors)` may go now, units
    /// moved out of order as marked in `moved`.
    pub fn admit(&mut self, moved: &[AtomicU64], start: u64, sectors: u64, write: bool) -> Admission {
        let (mut wait, mut checkpoint, mut refuse, mut counted) = (false, false, false, false);
        let mut wanted = None;
        for run in route(&self.view, moved, start, sectors, write) {
            match run.route {
                Route::Target => {}
                Route::Source | Route::Staging => counted = true,
                Route::Wait => wait = true,
                Route::NeedsCheckpoint => checkpoint = true,
                Route::Refuse => refuse = true,
                Route::Move => wanted = wanted.or(Some(run.start / self.view.unit_sectors.max(1))),
            }
        }
        if refuse {
            return Admission::Refuse;
        }
        if checkpoint {
            self.view.request_checkpoint();
            return Admission::WaitCheckpoint;
        }
        if let Some(unit) = wanted {
            self.view.wanted = Some(unit);
            return Admission::WaitMove;
        }
        if let Some((a, b)) = self.repair {
            if write && start < b && start.saturating_add(sectors) > a {
                wait = true;
            }
            counted |= write;
        }
        if wait {
            return Admission::Wait;
        }
        Admission::Go { view: self.view, epoch: counted.then_some(self.epoch) }
    }

    /// Repair side: sets (or with `None` ends) the window a repair works on.
    /// Setting one returns the epoch whose requests must end before the
    /// repair touches it.
    pub fn set_repair(&mut self, window: Option<(u64, u64)>) -> Option<u8> {
        self.repair = window;
        window.map(|_| {
            let old = self.epoch;
            self.epoch ^= 1;
            old
        })
    }

    /// Engine side: takes a published view. When it puts a unit in flight,
    /// returns the epoch whose requests must end before the engine goes on.
    pub fn publish(&mut self, view: &View) -> Option<u8> {
        self.view.absorb(view);
        if view.in_flight() {
            let old = self.epoch;
            self.epoch ^= 1;
            Some(old)
        } else {
            None
        }
    }

    /// Engine side: whether a host write waits for a checkpoint.
    pub fn checkpoint_requested(&self) -> bool {
        self.view.checkpoint_requested
    }

    /// Engine side: the unit a host request last asked to have moved.
    pub fn move_requested(&self) -> Option<u64> {
        self.view.wanted
    }
}

#[cfg(test)]
mod tests {
    use super::super::route::{test_view as view, Next};
    use super::*;

    #[test]
    fn admission_by_band() {
        let mut g = Gate::new(view(Next::Untouched));
        // Durable target only: not counted.
        assert_eq!(g.admit(&[], 0, 40, true), Admission::Go { view: view(Next::Untouched), epoch: None });
        // The source: counted in the current epoch.
        assert!(matches!(g.admit(&[], 70, 20, false), Admission::Go { epoch: Some(0), .. }));
        // A write over copied, not checkpointed units asks for a checkpoint.
        assert_eq!(g.admit(&[], 45, 5, true), Admission::WaitCheckpoint);
        assert!(g.checkpoint_requested());
        // Reads there go on.
        assert!(matches!(g.admit(&[], 45, 5, false), Admission::Go { epoch: None, .. }));
    }

    #[test]
    fn in_flight_flips_the_epoch() {
        let mut g = Gate::new(view(Next::Untouched));
        assert!(matches!(g.admit(&[], 75, 1, false), Admission::Go { epoch: Some(0), .. }));
        // Publishing unit 7 in flight: requests of epoch 0 must drain.
        assert_eq!(g.publish(&view(Next::InFlight)), Some(0));
        assert_eq!(g.admit(&[], 75, 1, false), Admission::Wait);
        // Later units are counted in the new epoch.
        assert!(matches!(g.admit(&[], 85, 1, false), Admission::Go { epoch: Some(1), .. }));
        assert_eq!(g.publish(&View { copied: 8, ..view(Next::Untouched) }), None);
        assert_eq!(g.publish(&View { copied: 8, ..view(Next::InFlight) }), Some(1));
    }

    #[test]
    fn repair_window_holds_writes_and_counts_them() {
        let mut g = Gate::new(View::clean(super::super::format::ArrayState::Clean, 1000));
        assert_eq!(g.admit(&[], 0, 8, true), Admission::Go { view: g.view(), epoch: None });
        assert_eq!(g.set_repair(Some((100, 200))), Some(0));
        assert_eq!(g.admit(&[], 150, 8, true), Admission::Wait);
        assert_eq!(g.admit(&[], 96, 8, true), Admission::Wait);
        // Reads, and writes outside, go; writes are counted in the new epoch.
        assert!(matches!(g.admit(&[], 150, 8, false), Admission::Go { epoch: None, .. }));
        assert!(matches!(g.admit(&[], 200, 8, true), Admission::Go { epoch: Some(1), .. }));
        assert_eq!(g.set_repair(Some((200, 300))), Some(1));
        assert!(matches!(g.admit(&[], 150, 8, true), Admission::Go { epoch: Some(0), .. }));
        assert_eq!(g.set_repair(None), None);
        assert!(matches!(g.admit(&[], 250, 8, true), Admission::Go { epoch: None, .. }));
    }

    #[test]
    fn staged_unit_is_counted_and_unsettled_writes_refused() {
        let mut g = Gate::new(view(Next::Staged));
        assert!(matches!(g.admit(&[], 72, 4, true), Admission::Go { epoch: Some(0), .. }));
        g.publish(&view(Next::StagingUnrecorded));
        assert_eq!(g.admit(&[], 72, 4, true), Admission::Refuse);
        assert!(matches!(g.admit(&[], 72, 4, false), Admission::Go { epoch: Some(0), .. }));
    }
}
