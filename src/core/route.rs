//! Host I/O routing during a migration: which parts of a request go to the
//! target layout, which to the source layout or the staging area, which must
//! wait and which must fail.
//!
//! Keeps invariants 2, 3, 5 and 11 of the theory (see the crate
//! documentation): no host write lands in copied units that no checkpoint
//! covers, none lands in the source of a unit being copied, none lands in a
//! unit moved out of order before its mark is durable, and none waits
//! without bound.
//!
//! The engine publishes a [`View`] (small and `Copy`, so the kernel can keep it
//! under a lock and snapshot it per request); [`route`] is a pure function
//! of it and of the moved-unit map ([`super::moved`]), whose bits are only
//! ever set. Logical sectors fall in these bands, front to back, the first
//! that applies:
//!
//! | band | units | reads | writes |
//! |------|-------|-------|--------|
//! | durable | below the checkpoint | target | target |
//! | active | unit `active`, when not [`Next::Untouched`] | per [`Next`] | per [`Next`] |
//! | moved | marked in the map | target | target |
//! | copied, not checkpointed | checkpoint .. copied | target | [`Route::NeedsCheckpoint`] ([`Route::Refuse`] once the engine has stopped on an error) |
//! | not reached | the rest | source; past its end [`Route::Move`] | source, or [`Route::Move`] where the engine moves units |
//!
//! With the new layout in effect at once the volume has the target's
//! capacity from the start, and a host request for a unit not reached
//! waits for the engine to move it out of order ([`View::moving`]; writes
//! anywhere, reads past the source's end, which has nothing to read
//! there); when the engine cannot move units (a role out of sync, an
//! error), they go to the source, which holds every unit not moved, and
//! past its end fail.
//!
//! The active unit is the one the engine works on. While it copies it
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

use core::sync::atomic::AtomicU64;

use super::format::ArrayState;
use super::moved::is_moved;

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
    /// A unit not reached that the engine moves on request: ask for it
    /// ([`View::wanted`]) and retry once it is moved.
    Move,
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
    /// Size of the source layout, in sectors: units not reached hold their
    /// data there, up to its end.
    pub source_sectors: u64,
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
    /// The unit [`View::next`] is about: `copied`, or one being moved out
    /// of order.
    pub active: u64,
    /// What unit `active` is doing.
    pub next: Next,
    /// The engine stopped on an error: it writes no checkpoint until resumed.
    pub halted: bool,
    /// Host requests for units not reached have them moved out of order
    /// ([`Route::Move`]); else they go to the source.
    pub moving: bool,
    /// Set by the host path when a write needs a checkpoint; the engine
    /// polls it and a published checkpoint that advanced clears it.
    pub checkpoint_requested: bool,
    /// Set by the host path: the unit a request waits to have moved. The
    /// engine polls it and ignores it once the unit is moved; the host
    /// side keeps it across publications (the last request sets it).
    pub wanted: Option<u64>,
}

impl View {
    /// The view of an array not migrating: everything in its layout.
    pub fn clean(state: ArrayState, capacity: u64) -> View {
        View {
            state,
            volume_sectors: capacity,
            source_sectors: capacity,
            target_sectors: capacity,
            unit_sectors: capacity.max(1),
            units: 1,
            copied: 1,
            checkpoint: 1,
            active: 1,
            next: Next::Untouched,
            halted: false,
            moving: false,
            checkpoint_requested: false,
            wanted: None,
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
        *self = View { checkpoint_requested: keep || published.checkpoint_requested, wanted: self.wanted, ..*published };
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

/// Cuts the request `[start, start + sectors)` by where its parts go,
/// units moved out of order as marked in `moved` (the migration's map, see
/// [`super::moved`]; empty for a migration without one).
pub fn route<'a>(view: &View, moved: &'a [AtomicU64], start: u64, sectors: u64, write: bool) -> Routes<'a> {
    Routes { view: *view, moved, write, next: start, end: start.saturating_add(sectors) }
}

/// Iterator over the runs of a request; see [`route`].
#[derive(Clone, Debug)]
pub struct Routes<'a> {
    view: View,
    moved: &'a [AtomicU64],
    write: bool,
    next: u64,
    end: u64,
}

impl Routes<'_> {
    /// The route of logical sector `at` and where that route ends (at the
    /// latest), by the table in the file's documentation.
    fn at(&self, at: u64) -> (Route, u64) {
        let v = &self.view;
        let u = v.unit_sectors.max(1);
        let unit = at / u;
        let unit_end = unit.saturating_add(1).saturating_mul(u);
        let moved = |unit: u64| is_moved(self.moved, unit);
        if unit < v.checkpoint {
            return (Route::Target, v.checkpoint.saturating_mul(u));
        }
        if unit == v.active && v.next != Next::Untouched {
            let route = match (v.next, self.write) {
                (Next::StagingUnrecorded, false) => Route::Source,
                (Next::FinishUnrecorded, false) => Route::Target,
                (Next::InFlight, _) => Route::Wait,
                (Next::Staged, _) => Route::Staging,
                (Next::StagingUnrecorded | Next::FinishUnrecorded, true) => Route::Refuse,
                // Not taken: an untouched unit is routed as not reached.
                (Next::Untouched, _) => Route::Source,
            };
            return (route, unit_end);
        }
        if moved(unit) {
            return (Route::Target, unit_end);
        }
        if unit < v.copied {
            let route = match (self.write, v.halted) {
                (false, _) => Route::Target,
                (true, false) => Route::NeedsCheckpoint,
                (true, true) => Route::Refuse,
            };
            // Without a map, the whole band at once.
            let end = if self.moved.is_empty() { v.copied.saturating_mul(u) } else { unit_end };
            return (route, end);
        }
        // Not reached: the source holds it, up to its end.
        let in_source = at < v.source_sectors;
        let route = match (v.moving, self.write, in_source) {
            (true, true, _) | (true, false, false) => Route::Move,
            (false, _, true) | (true, false, true) => Route::Source,
            (false, _, false) => Route::Refuse,
        };
        let end = match (self.moved.is_empty(), in_source) {
            (true, true) => v.source_sectors,
            (true, false) => u64::MAX,
            (false, true) => unit_end.min(v.source_sectors),
            (false, false) => unit_end,
        };
        (route, end)
    }
}

impl Iterator for Routes<'_> {
    type Item = Routed;

    fn next(&mut self) -> Option<Routed> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        let (route, mut stop) = self.at(start);
        // Runs of the same route across units are one.
        while stop < self.end {
            let (r, further) = self.at(stop);
            if r != route || further <= stop {
                break;
            }
            stop = further;
        }
        let stop = stop.min(self.end);
        self.next = stop;
        Some(Routed { route, start, sectors: stop - start })
    }
}

/// A view for unit tests: a migration of 200 units of 10 sectors, 7
/// copied, 4 checkpointed, the next one in state `next`.
#[cfg(test)]
pub(crate) fn test_view(next: Next) -> View {
    View {
        state: ArrayState::Migrating,
        volume_sectors: 1000,
        source_sectors: 1000,
        target_sectors: 2000,
        unit_sectors: 10,
        units: 200,
        copied: 7,
        checkpoint: 4,
        active: 7,
        next,
        halted: false,
        moving: false,
        checkpoint_requested: false,
        wanted: None,
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
        let w = collect(route(&v, &[], 35, 50, true));
        assert_eq!(
            w,
            [
                Routed { route: Route::Target, start: 35, sectors: 5 },
                Routed { route: Route::NeedsCheckpoint, start: 40, sectors: 30 },
                Routed { route: Route::Wait, start: 70, sectors: 10 },
                Routed { route: Route::Source, start: 80, sectors: 5 },
            ]
        );
        let r = collect(route(&v, &[], 35, 50, false));
        // Runs of one route are one, across bands.
        assert_eq!(r[0], Routed { route: Route::Target, start: 35, sectors: 35 });
        let idle = View { next: Next::Untouched, ..v };
        let r = collect(route(&idle, &[], 65, 10, false));
        assert_eq!(
            r,
            [
                Routed { route: Route::Target, start: 65, sectors: 5 },
                Routed { route: Route::Source, start: 70, sectors: 5 }
            ]
        );
        assert_eq!(collect(route(&v, &[], 10, 0, true)), []);
    }

    #[test]
    fn next_unit_and_halted_engine() {
        let staged = View { next: Next::Staged, ..view() };
        for write in [false, true] {
            assert!(collect(route(&staged, &[], 70, 10, write)).iter().all(|r| r.route == Route::Staging));
        }
        let unrecorded = View { next: Next::StagingUnrecorded, ..view() };
        assert_eq!(collect(route(&unrecorded, &[], 70, 10, false))[0].route, Route::Source);
        assert_eq!(collect(route(&unrecorded, &[], 70, 10, true))[0].route, Route::Refuse);
        let finishing = View { next: Next::FinishUnrecorded, ..view() };
        assert_eq!(collect(route(&finishing, &[], 70, 10, false))[0].route, Route::Target);
        assert_eq!(collect(route(&finishing, &[], 70, 10, true))[0].route, Route::Refuse);
        // Stopped on an error: writes that would need a checkpoint fail
        // instead of waiting for one that will not come; reads go on.
        let halted = View { halted: true, next: Next::Untouched, ..view() };
        assert_eq!(collect(route(&halted, &[], 45, 5, true))[0].route, Route::Refuse);
        assert_eq!(collect(route(&halted, &[], 45, 5, false))[0].route, Route::Target);
        assert_eq!(collect(route(&halted, &[], 75, 5, true))[0].route, Route::Source);
    }

    #[test]
    fn units_moved_out_of_order_and_the_rest_ahead() {
        use core::sync::atomic::AtomicU64;
        // The new layout at once: the volume is the target's 2000 sectors,
        // the source ends at 1000; units 9 and 150 are moved.
        let map: std::vec::Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        crate::moved::set_moved(&map, 9);
        crate::moved::set_moved(&map, 150);
        let v = View { volume_sectors: 2000, moving: true, next: Next::Untouched, ..view() };
        // Writes ahead of the engine wait for a move; moved units take them.
        assert_eq!(
            collect(route(&v, &map, 80, 30, true)),
            [
                Routed { route: Route::Move, start: 80, sectors: 10 },
                Routed { route: Route::Target, start: 90, sectors: 10 },
                Routed { route: Route::Move, start: 100, sectors: 10 },
            ]
        );
        // Reads ahead take the source up to its end, then wait for a move.
        assert_eq!(
            collect(route(&v, &map, 990, 30, false)),
            [
                Routed { route: Route::Source, start: 990, sectors: 10 },
                Routed { route: Route::Move, start: 1000, sectors: 20 },
            ]
        );
        assert_eq!(collect(route(&v, &map, 1500, 10, false))[0].route, Route::Target);
        // A moved unit in the copied band is durable: writes go ahead.
        crate::moved::set_moved(&map, 5);
        assert_eq!(collect(route(&v, &map, 50, 10, true))[0].route, Route::Target);
        assert_eq!(collect(route(&v, &map, 60, 10, true))[0].route, Route::NeedsCheckpoint);
        // A unit being moved out of order waits, whatever the map says.
        let moving = View { active: 9, next: Next::InFlight, ..v };
        assert_eq!(collect(route(&moving, &map, 90, 10, true))[0].route, Route::Wait);
        // When the engine cannot move units, writes go to the source, and
        // past its end fail.
        let stuck = View { moving: false, ..v };
        assert_eq!(collect(route(&stuck, &map, 80, 10, true))[0].route, Route::Source);
        assert_eq!(collect(route(&stuck, &map, 1200, 10, true))[0].route, Route::Refuse);
        assert_eq!(collect(route(&stuck, &map, 1200, 10, false))[0].route, Route::Refuse);
    }

    #[test]
    fn a_move_request_waits_and_names_its_unit() {
        use crate::gate::{Admission, Gate};
        use core::sync::atomic::AtomicU64;
        let map: std::vec::Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let mut g = Gate::new(View { volume_sectors: 2000, moving: true, next: Next::Untouched, ..view() });
        assert_eq!(g.admit(&map, 1232, 8, true), Admission::WaitMove);
        assert_eq!(g.move_requested(), Some(123));
        // Kept across the engine's publications until another asks.
        g.publish(&View { copied: 8, ..g.view() });
        assert_eq!(g.move_requested(), Some(123));
        crate::moved::set_moved(&map, 123);
        assert!(matches!(g.admit(&map, 1232, 8, true), Admission::Go { epoch: None, .. }));
        // Reads from the source are counted for the drain.
        assert!(matches!(g.admit(&map, 500, 8, false), Admission::Go { epoch: Some(_), .. }));
    }

    #[test]
    fn clean_is_all_target() {
        let v = View::clean(ArrayState::Clean, 5000);
        assert_eq!(
            collect(route(&v, &[], 0, 5000, true)),
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
