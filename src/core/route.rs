//! Host I/O routing during a migration: which parts of a request go to the
//! target layout, which to the source layout or the staging area, which must
//! wait and which must fail.
//!
//! Keeps invariants 2, 3 and 5 of the theory (see the crate documentation):
//! no host write lands in copied units that no checkpoint covers, none lands
//! in the source of a unit being copied, and none waits without bound.
//!
//! The engine publishes a [`View`] (small and `Copy`, so the kernel can keep it
//! under a lock and snapshot it per request); [`route`] is a pure function
//! of it. Logical sectors fall in four bands, front to back:
//!
//! | band | units | reads | writes |
//! |------|-------|-------|--------|
//! | durable | below the checkpoint | target | target |
//! | copied, not checkpointed | checkpoint .. copied | target | [`Route::NeedsCheckpoint`] ([`Route::Refuse`] once the engine has stopped on an error) |
//! | next unit | unit `copied` | per [`Next`] | per [`Next`] |
//! | not reached | after it | source | source |
//!
//! The next unit is the one the engine works on. While it copies it
//! ([`Next::InFlight`]) host I/O there waits; the engine's member I/O always
//! completes or fails, so the wait is bounded. Once the unit sits complete
//! in the staging area with a durable record ([`Next::Staged`]: the engine
//! stopped on an error while finishing it, or was paused), host I/O goes to
//! the staging area, which recovery copies to the unit's rows. While a
//! superblock update that moves the unit (into staging, or out of it) is
//! written but not known to be durable, recovery may take the unit from
//! either place: both hold the same data (no write went in between), reads
//! go to the one that stays valid whichever way the record goes, and writes
//! fail ([`Next::StagingUnrecorded`], [`Next::FinishUnrecorded`]).
//!
//! A write into the second band must not land before a checkpoint covers it:
//! after a crash, recovery would copy that unit again from the source and the
//! acknowledged write would be lost. The host path asks for a checkpoint
//! ([`View::request_checkpoint`]) and waits until the published checkpoint
//! passes the write; the engine, sole writer of superblocks, writes it at its
//! next step.

use super::format::ArrayState;

/// Where a run of a host request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Map through the target layout.
    Target,
    /// Map through the source layout.
    Source,
    /// Map through the target layout, into the staging area of the unit
    /// `View::copied` (see [`super::hostio::Place::Staging`]).
    Staging,
    /// The unit is being copied: retry once the engine publishes again.
    Wait,
    /// A write over copied data that no checkpoint covers yet: request one
    /// and retry once the checkpoint has passed it.
    NeedsCheckpoint,
    /// Cannot be served safely: fail it (the engine stopped on an error).
    Refuse,
}

/// What the unit at `View::copied` is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Not touched yet: its data is in the source layout.
    Untouched,
    /// Being copied by the engine: host I/O waits for it.
    InFlight,
    /// Complete in the staging area, durably recorded: host I/O goes there.
    Staged,
    /// Complete in the staging area, its source untouched, but the record
    /// saying so is not known to be durable: recovery may take the unit from
    /// either place. Reads from the source, writes refused.
    StagingUnrecorded,
    /// Finished in place from the staging area, but the record releasing
    /// the staging area is not known to be durable: recovery may copy
    /// staging over the rows again. Reads from the target, writes refused.
    FinishUnrecorded,
}

/// One run of a routed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed {
    /// Where it goes.
    pub route: Route,
    /// First logical sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// What host I/O needs to know of the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// Array state.
    pub state: ArrayState,
    /// Size of the volume exposed to the host, in sectors.
    pub volume_sectors: u64,
    /// Size of the target layout, in sectors (the volume's once migrated).
    pub target_sectors: u64,
    /// Logical sectors per unit.
    pub unit_sectors: u64,
    /// Number of units.
    pub units: u64,
    /// Units below this are written in the target layout.
    pub copied: u64,
    /// Units below this are durable in the target layout.
    pub checkpoint: u64,
    /// What unit `copied` is doing.
    pub next: Next,
    /// The engine stopped on an error: it writes no checkpoint until resumed.
    pub halted: bool,
    /// Set by the host path when a write needs a checkpoint; the engine
    /// polls it and a published checkpoint that advanced clears it.
    pub checkpoint_requested: bool,
}

impl View {
    /// The view of an array not migrating: everything in its layout.
    pub fn clean(state: ArrayState, capacity: u64) -> View {
        View {
            state,
            volume_sectors: capacity,
            target_sectors: capacity,
            unit_sectors: capacity.max(1),
            units: 1,
            copied: 1,
            checkpoint: 1,
            next: Next::Untouched,
            halted: false,
            checkpoint_requested: false,
        }
    }

    /// Whether the engine is copying unit `copied` now.
    pub fn in_flight(&self) -> bool {
        self.next == Next::InFlight
    }

    /// Asks the engine for a checkpoint (host side).
    pub fn request_checkpoint(&mut self) {
        self.checkpoint_requested = true;
    }

    /// Takes a view the engine publishes into this shared copy, keeping a
    /// pending checkpoint request unless the checkpoint advanced.
    pub fn absorb(&mut self, published: &View) {
        let keep = self.checkpoint_requested && published.checkpoint == self.checkpoint;
        *self = View { checkpoint_requested: keep || published.checkpoint_requested, ..*published };
    }

    /// Migration progress `(done, total)` in target sectors.
    pub fn progress(&self) -> (u64, u64) {
        (self.copied.saturating_mul(self.unit_sectors).min(self.target_sectors), self.target_sectors)
    }

    /// Logical sector where the checkpoint stands.
    pub fn checkpoint_sector(&self) -> u64 {
        self.checkpoint.saturating_mul(self.unit_sectors).min(self.target_sectors)
    }
}

/// Cuts the request `[start, start + sectors)` by where its parts go.
pub fn route(view: &View, start: u64, sectors: u64, write: bool) -> Routes {
    let u = view.unit_sectors;
    let durable = view.checkpoint.saturating_mul(u);
    let copied = view.copied.saturating_mul(u);
    let next_end = view.copied.saturating_add(1).saturating_mul(u);
    let second = match (write, view.halted) {
        (false, _) => Route::Target,
        (true, false) => Route::NeedsCheckpoint,
        (true, true) => Route::Refuse,
    };
    let next = match (view.next, write) {
        (Next::Untouched, _) | (Next::StagingUnrecorded, false) => Route::Source,
        (Next::FinishUnrecorded, false) => Route::Target,
        (Next::InFlight, _) => Route::Wait,
        (Next::Staged, _) => Route::Staging,
        (Next::StagingUnrecorded | Next::FinishUnrecorded, true) => Route::Refuse,
    };
    Routes {
        bands: [(Route::Target, durable), (second, copied), (next, next_end), (Route::Source, u64::MAX)],
        band: 0,
        next: start,
        end: start + sectors,
    }
}

/// Iterator over the runs of a request; see [`route`].
#[derive(Clone, Debug)]
pub struct Routes {
    /// Each band's route and end (exclusive), in order.
    bands: [(Route, u64); 4],
    band: usize,
    next: u64,
    end: u64,
}

impl Iterator for Routes {
    type Item = Routed;

    fn next(&mut self) -> Option<Routed> {
        while self.next < self.end && self.band < self.bands.len() {
            let (route, band_end) = self.bands[self.band];
            if self.next >= band_end {
                self.band += 1;
                continue;
            }
            let stop = band_end.min(self.end);
            let run = Routed { route, start: self.next, sectors: stop - self.next };
            self.next = stop;
            return Some(run);
        }
        None
    }
}

/// A view for unit tests: a migration of 200 units of 10 sectors, 7
/// copied, 4 checkpointed, the next one in state `next`.
#[cfg(test)]
pub(crate) fn test_view(next: Next) -> View {
    View {
        state: ArrayState::Migrating,
        volume_sectors: 1000,
        target_sectors: 2000,
        unit_sectors: 10,
        units: 200,
        copied: 7,
        checkpoint: 4,
        next,
        halted: false,
        checkpoint_requested: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        test_view(Next::InFlight)
    }

    fn collect(r: Routes) -> std::vec::Vec<Routed> {
        r.collect()
    }

    #[test]
    fn bands_in_order() {
        let v = view();
        let w = collect(route(&v, 35, 50, true));
        assert_eq!(
            w,
            [
                Routed { route: Route::Target, start: 35, sectors: 5 },
                Routed { route: Route::NeedsCheckpoint, start: 40, sectors: 30 },
                Routed { route: Route::Wait, start: 70, sectors: 10 },
                Routed { route: Route::Source, start: 80, sectors: 5 },
            ]
        );
        let r = collect(route(&v, 35, 50, false));
        assert_eq!(r[1], Routed { route: Route::Target, start: 40, sectors: 30 });
        let idle = View { next: Next::Untouched, ..v };
        let r = collect(route(&idle, 65, 10, false));
        assert_eq!(
            r,
            [
                Routed { route: Route::Target, start: 65, sectors: 5 },
                Routed { route: Route::Source, start: 70, sectors: 5 }
            ]
        );
        assert_eq!(collect(route(&v, 10, 0, true)), []);
    }

    #[test]
    fn next_unit_and_halted_engine() {
        let staged = View { next: Next::Staged, ..view() };
        for write in [false, true] {
            assert!(collect(route(&staged, 70, 10, write)).iter().all(|r| r.route == Route::Staging));
        }
        let unrecorded = View { next: Next::StagingUnrecorded, ..view() };
        assert_eq!(collect(route(&unrecorded, 70, 10, false))[0].route, Route::Source);
        assert_eq!(collect(route(&unrecorded, 70, 10, true))[0].route, Route::Refuse);
        let finishing = View { next: Next::FinishUnrecorded, ..view() };
        assert_eq!(collect(route(&finishing, 70, 10, false))[0].route, Route::Target);
        assert_eq!(collect(route(&finishing, 70, 10, true))[0].route, Route::Refuse);
        // Stopped on an error: writes that would need a checkpoint fail
        // instead of waiting for one that will not come; reads go on.
        let halted = View { halted: true, next: Next::Untouched, ..view() };
        assert_eq!(collect(route(&halted, 45, 5, true))[0].route, Route::Refuse);
        assert_eq!(collect(route(&halted, 45, 5, false))[0].route, Route::Target);
        assert_eq!(collect(route(&halted, 75, 5, true))[0].route, Route::Source);
    }

    #[test]
    fn clean_is_all_target() {
        let v = View::clean(ArrayState::Clean, 5000);
        assert_eq!(
            collect(route(&v, 0, 5000, true)),
            [Routed { route: Route::Target, start: 0, sectors: 5000 }]
        );
        assert_eq!(v.progress(), (5000, 5000));
    }

    #[test]
    fn request_kept_until_checkpoint_advances() {
        let mut shared = view();
        shared.request_checkpoint();
        shared.absorb(&View { copied: 8, next: Next::Untouched, ..view() });
        assert!(shared.checkpoint_requested);
        assert_eq!(shared.copied, 8);
        shared.absorb(&View { checkpoint: 8, copied: 8, next: Next::Untouched, ..view() });
        assert!(!shared.checkpoint_requested);
        assert_eq!(shared.checkpoint_sector(), 80);
        assert_eq!(shared.progress(), (80, 2000));
    }
}
