//! The migration planner: which units a migration has, and how each one must
//! be copied so that a power cut at any moment loses nothing.
//!
//! A migration rewrites the volume from a *source* layout into a *target*
//! layout over the same members (member `i` of the source is member `i` of the
//! target), front to back, one *unit* at a time. A unit is a whole number of
//! target stripes: `unit_rows` rows of every target member, and the logical
//! sectors those rows hold. The engine copies units in order; the *checkpoint*
//! recorded in the superblocks is the first unit not yet durable in the target
//! layout. Recovery re-copies from the checkpoint on, reading the source, so
//! the source data of every unit at or after the durable checkpoint must stay
//! intact. Writing a unit's rows can break that in two ways, found here by
//! comparing, for every member sector the unit writes, what the target puts
//! there with what the source keeps there:
//!
//! - it overwrites source data of an *earlier* unit that is copied but not yet
//!   checkpointed: a checkpoint (after a flush) must be written first;
//! - it overwrites source data of the unit itself: the unit goes through the
//!   staging area of the reserved tail (indirect copy), whose record in the
//!   superblock lets recovery finish the unit without its source.
//!
//! A sector where the target puts the very logical sector the source holds
//! there (the first chunk of single to raid0, every sector of single to raid1
//! on the first member) is rewritten with the data it already holds and is no
//! hazard. A unit overwriting source data of a *later* unit, or source parity
//! still protecting later units, cannot be made safe by this front-to-back
//! engine; such a unit is refused ([`PlanError::ForwardOverlap`]). That never
//! happens when the source is `single`, nor for any layout gaining members or
//! keeping its shape: the target puts later logical sectors at each member
//! sector than the source. A target bigger than the source is filled with
//! zeros past the source's size, so that parity and copies are consistent
//! everywhere and old contents of new members never leak into the volume.
//!
//! With the new layout in effect at once, a host write may need a unit
//! ahead of the engine moved first, out of order. Its rows may hold source
//! content of earlier units still in the source layout, which must move
//! before it: [`Migration::first_to_move`] walks down that chain (for
//! single to raid5 over three members it halves the unit at each step, so
//! a chain is as long as the unit number's binary digits), from what
//! [`Migration::for_each_overwritten`] finds, the same scan
//! [`Migration::classify`] decides by.

use core::num::{NonZeroU32, NonZeroU64};

use super::tail::STAGING_SECTORS;
use super::layout::{div_ceil, Content, Geometry};

/// Why a migration cannot be planned or a unit cannot be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The target layout is smaller than the source.
    TargetTooSmall,
    /// The source uses members the target does not have, or their chunk rows
    /// differ in data area (the target must cover the source's members).
    MemberMismatch,
    /// The unit is not a whole number of target stripes, or one unit's rows
    /// of one member do not fit the staging area.
    UnitSize,
    /// Unit `unit` would overwrite source data of a later unit.
    ForwardOverlap {
        /// The unit refused.
        unit: u64,
    },
}

impl PlanError {
    /// A sentence for the kernel log.
    pub fn message(self) -> &'static str {
        match self {
            PlanError::TargetTooSmall => "the new layout would be smaller than the volume",
            PlanError::MemberMismatch => "the new layout must keep every member of the old one",
            PlanError::UnitSize => "the migration unit must be whole stripes fitting the 8 MiB staging area",
            PlanError::ForwardOverlap { .. } => {
                "this change of layout would overwrite data not yet moved; it is not supported"
            }
        }
    }
}

/// How one unit is to be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitPlan {
    /// The unit overwrites its own source data: copy it through staging.
    pub indirect: bool,
    /// The latest earlier unit whose source data the unit overwrites: the
    /// durable checkpoint must be past it before the unit is written.
    pub overwrites_unit: Option<u64>,
}

/// A planned migration: source and target layouts and the unit size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    source: Geometry,
    target: Geometry,
    unit_rows: NonZeroU32,
    /// Logical sectors per whole unit (derived from `target` and `unit_rows`).
    unit_sectors: NonZeroU64,
}

impl Migration {
    /// Plans a migration from `source` to `target` in units of `unit_rows`
    /// target rows.
    pub fn new(source: Geometry, target: Geometry, unit_rows: u32) -> Result<Migration, PlanError> {
        if target.capacity() < source.capacity() {
            return Err(PlanError::TargetTooSmall);
        }
        if source.members() > target.members() {
            return Err(PlanError::MemberMismatch);
        }
        let rows = unit_rows as u64;
        // `%` rather than `is_multiple_of`, for older kernel toolchains.
        #[allow(clippy::manual_is_multiple_of)]
        let partial_stripe = rows % target.stripe_rows_nonzero() != 0;
        if partial_stripe || rows * target.chunk_sectors() as u64 > STAGING_SECTORS {
            return Err(PlanError::UnitSize);
        }
        let Some(unit_rows) = NonZeroU32::new(unit_rows) else {
            return Err(PlanError::UnitSize);
        };
        // Non-zero: a unit is at least one whole stripe, of at least one chunk.
        let unit_sectors = rows / target.stripe_rows_nonzero() * target.stripe_sectors();
        let Some(unit_sectors) = NonZeroU64::new(unit_sectors) else {
            return Err(PlanError::UnitSize);
        };
        Ok(Migration { source, target, unit_rows, unit_sectors })
    }

    /// The largest unit of `stripes` target stripes or less that fits the
    /// staging area, in rows (at least one stripe, which always fits), made
    /// of whole source stripes too: where the target's chunk is smaller
    /// than the source's, the member rows of one source stripe hold logical
    /// sectors of every target row over them, and a unit that ended inside
    /// them would overwrite source data of the next unit
    /// ([`PlanError::ForwardOverlap`]). So a unit spans a common multiple
    /// of both layouts' stripes in member sectors.
    pub fn unit_rows_for(source: &Geometry, target: &Geometry, stripes: u32) -> u32 {
        // No division here can be by zero nor any product overflow (a
        // panic path in the kernel): non-zero divisors, saturating products.
        let period = |g: &Geometry| {
            let chunk = NonZeroU64::new(1u64.wrapping_shl(g.chunk_shift())).unwrap_or(NonZeroU64::MIN);
            g.stripe_rows_nonzero().saturating_mul(chunk)
        };
        // In target rows: both periods are whole target rows or the
        // target's is a multiple of the source's (chunks are powers of two).
        let step = NonZeroU64::new(lcm(period(target), period(source)) >> target.chunk_shift()).unwrap_or(NonZeroU64::MIN);
        // Steps fitting the staging area (at least one: at most two rows of
        // the largest chunk, which the staging area holds).
        let fit = ((STAGING_SECTORS >> target.chunk_shift()) / step).max(1);
        let rows = (stripes.max(1) as u64).saturating_mul(target.stripe_rows_nonzero().get());
        let wanted = rows.saturating_add(step.get() - 1) / step;
        wanted.min(fit).saturating_mul(step.get()).min(u32::MAX as u64) as u32
    }

    /// The layout migrated from.
    pub fn source(&self) -> Geometry {
        self.source
    }

    /// The layout migrated to.
    pub fn target(&self) -> Geometry {
        self.target
    }

    /// Target rows per unit.
    pub fn unit_rows(&self) -> u32 {
        self.unit_rows.get()
    }

    /// Logical sectors per (whole) unit.
    pub fn unit_sectors(&self) -> u64 {
        self.unit_sectors.get()
    }

    /// Number of units: the whole target, the last one possibly short.
    pub fn units(&self) -> u64 {
        div_ceil(self.target.rows(), self.unit_rows.into())
    }

    /// Size of the volume while migrating: the source's.
    pub fn volume_sectors(&self) -> u64 {
        self.source.capacity()
    }

    /// The unit holding logical sector `logical`.
    pub fn unit_of(&self, logical: u64) -> u64 {
        logical / self.unit_sectors
    }

    /// The logical range `(start, sectors)` of unit `unit`.
    pub fn unit_range(&self, unit: u64) -> (u64, u64) {
        let start = (unit * self.unit_sectors()).min(self.target.capacity());
        let end = ((unit + 1) * self.unit_sectors()).min(self.target.capacity());
        (start, end - start)
    }

    /// The target rows `(first, count)` of unit `unit`.
    pub fn unit_rows_range(&self, unit: u64) -> (u64, u64) {
        let rows = self.unit_rows() as u64;
        let first = (unit * rows).min(self.target.rows());
        let end = ((unit + 1) * rows).min(self.target.rows());
        (first, end - first)
    }

    /// Decides how unit `unit` must be copied, by comparing what the target
    /// writes with what the source holds on every member sector of the unit.
    pub fn classify(&self, unit: u64) -> Result<UnitPlan, PlanError> {
        let mut plan = UnitPlan { indirect: false, overwrites_unit: None };
        let mut forward = false;
        self.for_each_overwritten(unit, |o| {
            if o.last > unit {
                forward = true;
            } else if !o.parity {
                if o.last == unit {
                    plan.indirect = true;
                }
                if o.first < unit {
                    let earlier = o.last.min(unit - 1);
                    plan.overwrites_unit = Some(plan.overwrites_unit.map_or(earlier, |e| e.max(earlier)));
                }
            }
        });
        match forward {
            true => Err(PlanError::ForwardOverlap { unit }),
            false => Ok(plan),
        }
    }

    /// Calls `f` for every piece of source content that writing unit
    /// `unit`'s rows destroys (a member sector where the target puts other
    /// content than the very logical sectors the source holds there), with
    /// the units that content belongs to: those of its logical sectors for
    /// source data, those of its stripe's data for source parity (which
    /// protects them for host writes to units not yet copied; recovery
    /// never reads it). Moving a unit out of order needs every such unit
    /// other than itself in the target layout first: they lose their
    /// source.
    pub fn for_each_overwritten(&self, unit: u64, mut f: impl FnMut(Overwritten)) {
        let (first, count) = self.unit_rows_range(unit);
        let tshift = self.target.chunk_shift();
        let tchunk = self.target.chunk_sectors() as u64;
        let schunk = self.source.chunk_sectors() as u64;
        for member in 0..self.source.members() {
            for row in first..first + count {
                let base = row << tshift;
                let tlogical = match self.target.content(member, base) {
                    Content::Unused => continue,
                    Content::Data { logical, .. } => Some(logical),
                    Content::Parity { .. } => None,
                };
                // Piece by source chunk.
                let mut sector = base;
                let end = base + tchunk;
                while sector < end {
                    let next = ((sector | (schunk - 1)) + 1).min(end);
                    let len = next - sector;
                    match self.source.content(member, sector) {
                        Content::Unused => {}
                        Content::Data { logical, .. } if tlogical.map(|t| t + (sector - base)) == Some(logical) => {}
                        Content::Data { logical, .. } => f(Overwritten {
                            first: self.unit_of(logical),
                            last: self.unit_of(logical + len - 1),
                            parity: false,
                        }),
                        Content::Parity { stripe } => {
                            let stripe_sectors = self.source.stripe_sectors();
                            let data_end = ((stripe + 1) * stripe_sectors).min(self.source.capacity());
                            f(Overwritten {
                                first: self.unit_of(stripe * stripe_sectors),
                                last: self.unit_of(data_end - 1),
                                parity: true,
                            })
                        }
                    }
                    sector = next;
                }
            }
        }
    }

    /// The unit to move first so that unit `unit` can be moved out of order
    /// (a host write into it, with the new layout in effect at once):
    /// `unit` itself when every other unit whose source its rows overwrite
    /// is in the target layout already (`in_target`: below the durable
    /// checkpoint, or moved out of order and recorded durably); else the
    /// same question asked of one of those units that is not, and so on
    /// down. Moving units in the order this gives, each recorded durably
    /// before the next is written, never destroys source content of a unit
    /// still in the source layout. Each step goes to an earlier unit (in a
    /// planned migration no unit overwrites a later one's source), so it
    /// ends; later units met (an unplanned pair) are not followed.
    pub fn first_to_move(&self, unit: u64, in_target: impl Fn(u64) -> bool) -> u64 {
        let mut v = unit;
        loop {
            let mut next = None;
            self.for_each_overwritten(v, |o| {
                let below = o.last.min(v.saturating_sub(1));
                if next.is_none() && v > 0 && o.first <= below {
                    next = (o.first..=below).rev().find(|&w| !in_target(w));
                }
            });
            match next {
                Some(w) => v = w,
                None => return v,
            }
        }
    }
}

/// Source content a unit's rows overwrite (see
/// [`Migration::for_each_overwritten`]): units `first..=last` lose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overwritten {
    /// The first unit it belongs to.
    pub first: u64,
    /// The last unit it belongs to.
    pub last: u64,
    /// It is source parity (of those units' stripe), not their data.
    pub parity: bool,
}

/// The least common multiple of two non-zero numbers (saturating).
fn lcm(a: NonZeroU64, b: NonZeroU64) -> u64 {
    let (mut x, mut y) = (a.get(), b.get());
    while let Some(d) = NonZeroU64::new(y) {
        (x, y) = (y, x % d);
    }
    // `x` is the greatest common divisor of two non-zero numbers.
    NonZeroU64::new(x).map_or(0, |gcd| (a.get() / gcd).saturating_mul(b.get()))
}

#[cfg(test)]
mod tests {
    use super::super::layout::Level;
    use super::*;

    fn single(rows: u64) -> Geometry {
        Geometry::new(Level::Single, 1, 8, rows * 8).unwrap()
    }

    #[test]
    fn single_to_raid0_two_overwrites_half_way_back() {
        let m = Migration::new(single(16), Geometry::new(Level::Raid0, 2, 8, 16 * 8).unwrap(), 1).unwrap();
        assert_eq!(m.units(), 16);
        assert_eq!(m.unit_sectors(), 16);
        // Unit 0 rewrites chunk 0 in place: no hazard.
        assert_eq!(m.classify(0), Ok(UnitPlan { indirect: false, overwrites_unit: None }));
        // Unit u writes member 0 row u, which holds source chunk u, i.e. unit u / 2.
        for u in 1..16 {
            assert_eq!(m.classify(u), Ok(UnitPlan { indirect: false, overwrites_unit: Some(u / 2) }), "{u}");
        }
    }

    #[test]
    fn self_overlap_needs_staging() {
        // Two rows per unit: row 1 of member 0 holds source chunk 1, same unit.
        let m = Migration::new(single(16), Geometry::new(Level::Raid0, 2, 8, 16 * 8).unwrap(), 2).unwrap();
        assert_eq!(m.classify(0), Ok(UnitPlan { indirect: true, overwrites_unit: None }));
        // raid5 over two members puts parity on member 0 at odd rows.
        let m = Migration::new(single(16), Geometry::new(Level::Raid5, 2, 8, 16 * 8).unwrap(), 1).unwrap();
        assert_eq!(m.classify(0), Ok(UnitPlan { indirect: false, overwrites_unit: None }));
        assert_eq!(m.classify(1), Ok(UnitPlan { indirect: true, overwrites_unit: None }));
        assert_eq!(m.classify(2), Ok(UnitPlan { indirect: false, overwrites_unit: None }));
    }

    #[test]
    fn single_to_raid1_never_overlaps() {
        let m = Migration::new(single(16), Geometry::new(Level::Raid1, 3, 8, 16 * 8).unwrap(), 1).unwrap();
        for u in 0..m.units() {
            assert_eq!(m.classify(u), Ok(UnitPlan { indirect: false, overwrites_unit: None }));
        }
    }

    #[test]
    fn shrinking_width_is_refused() {
        // raid0 over three members to raid5 over the same three, using more of
        // each member: raid5 holds less per row, so row r of the target lands
        // on source rows holding later chunks.
        let s = Geometry::new(Level::Raid0, 3, 8, 16 * 8).unwrap();
        let t = Geometry::new(Level::Raid5, 3, 8, 24 * 8).unwrap();
        let m = Migration::new(s, t, 1).unwrap();
        // Row 0's parity lands on member 2's source chunk 2, which is unit 1's.
        assert_eq!(m.classify(0), Err(PlanError::ForwardOverlap { unit: 0 }));
        // Growing raid0 from two to three members is forward-safe throughout.
        let s = Geometry::new(Level::Raid0, 2, 8, 16 * 8).unwrap();
        let t = Geometry::new(Level::Raid0, 3, 8, 16 * 8).unwrap();
        let m = Migration::new(s, t, 1).unwrap();
        assert!((0..m.units()).all(|u| m.classify(u).is_ok()));
    }

    /// Units of `m` copied through staging, or the first refused.
    fn staged_units(m: &Migration) -> Result<u64, PlanError> {
        (0..m.units()).try_fold(0, |n, u| m.classify(u).map(|p| n + p.indirect as u64))
    }

    /// The reshapes of an assembled array (members added, chunk changed,
    /// level changed) are front-to-back pairs: planned with units from
    /// `unit_rows_for`, no unit overwrites source data of a later one.
    #[test]
    fn reshapes_plan_front_to_back() {
        use Level::*;
        let data = 8192; // sectors per member
        let pairs = [
            (Raid0, 2, Raid0, 3),
            (Raid0, 3, Raid0, 5),
            (Raid5, 3, Raid5, 4),
            (Raid5, 3, Raid5, 6),
            (Raid10, 2, Raid10, 3),
            (Raid10, 4, Raid10, 5),
            (Raid10, 4, Raid10, 6),
            (Raid1, 2, Raid5, 3),
            (Raid1, 2, Raid5, 4),
            (Raid0, 2, Raid5, 3),
            (Raid0, 3, Raid5, 4),
            (Raid0, 2, Raid10, 4),
            (Raid5, 3, Raid0, 3),
            (Raid1, 2, Raid10, 4),
        ];
        for (sl, sn, tl, tn) in pairs {
            for chunk in [8, 128] {
                let s = Geometry::new(sl, sn, chunk, data).unwrap();
                let t = Geometry::new(tl, tn, chunk, data).unwrap();
                for stripes in [1, 4] {
                    let m = Migration::new(s, t, Migration::unit_rows_for(&s, &t, stripes)).unwrap();
                    assert!(staged_units(&m).is_ok(), "{sl:?} x{sn} -> {tl:?} x{tn}, chunk {chunk}, {stripes} stripes");
                }
            }
        }
        // A chunk change on the same members: every unit overwrites its own
        // source, so every unit goes through staging.
        for (level, n) in [(Raid0, 3), (Raid5, 3), (Raid5, 4), (Raid10, 3), (Raid10, 4)] {
            for from in [8, 16, 128, 1024, 8192] {
                for to in [8, 16, 128, 1024, 8192] {
                    if from == to {
                        continue;
                    }
                    // Four rows of the largest chunk: whole stripes of both.
                    let s = Geometry::new(level, n, from, 4 * 8192).unwrap();
                    let t = Geometry::new(level, n, to, 4 * 8192).unwrap();
                    let rows = Migration::unit_rows_for(&s, &t, 1);
                    let m = Migration::new(s, t, rows).unwrap();
                    assert_eq!(staged_units(&m), Ok(m.units()), "{level:?} x{n}, chunk {from} -> {to}");
                    // One row fewer (when the unit is more than a stripe)
                    // ends inside a source chunk: refused.
                    if from > to && rows as u64 > t.stripe_rows() && rows as u64 * to as u64 > from as u64 {
                        let m = Migration::new(s, t, rows - t.stripe_rows() as u32).unwrap();
                        assert!(
                            matches!(staged_units(&m), Err(PlanError::ForwardOverlap { .. })),
                            "{level:?} x{n}, chunk {from} -> {to}"
                        );
                    }
                }
            }
        }
    }

    /// Moving units out of order in the order `first_to_move` gives
    /// never writes a unit's rows while another unit whose source they
    /// overwrite is still in the source layout; `classify` agrees with
    /// `for_each_overwritten`; single -> raid5 over 3 chains halve.
    #[test]
    fn out_of_order_moves_in_chains() {
        use Level::*;
        let data = 16 * 64;
        let pairs = [
            (Geometry::new(Single, 1, 16, data).unwrap(), Geometry::new(Raid5, 3, 16, data).unwrap()),
            (Geometry::new(Single, 1, 16, data).unwrap(), Geometry::new(Raid0, 4, 16, data).unwrap()),
            (Geometry::new(Single, 1, 16, data).unwrap(), Geometry::new(Raid10, 3, 16, data).unwrap()),
            (Geometry::new(Raid0, 2, 16, data).unwrap(), Geometry::new(Raid0, 3, 16, data).unwrap()),
            (Geometry::new(Raid5, 3, 16, data).unwrap(), Geometry::new(Raid5, 5, 16, data).unwrap()),
            (Geometry::new(Raid5, 3, 32, data).unwrap(), Geometry::new(Raid5, 3, 16, data).unwrap()),
            (Geometry::new(Raid1, 2, 16, data).unwrap(), Geometry::new(Raid5, 4, 16, data).unwrap()),
            (Geometry::new(Raid0, 2, 16, data).unwrap(), Geometry::new(Raid10, 4, 16, data).unwrap()),
        ];
        for (s, t) in pairs {
            let m = Migration::new(s, t, Migration::unit_rows_for(&s, &t, 1)).unwrap();
            let units = m.units();
            for u in 0..units {
                let mut hits = [0u64; 3];
                m.for_each_overwritten(u, |o| {
                    assert!(o.first <= o.last && o.last <= u, "{s:?} -> {t:?}: unit {u} overwrites {o:?}");
                    hits[0] += (!o.parity && o.last == u) as u64;
                    hits[1] = hits[1].max(if !o.parity && o.first < u { o.last.min(u - 1) + 1 } else { 0 });
                });
                let plan = m.classify(u).unwrap();
                assert_eq!((plan.indirect, plan.overwrites_unit), (hits[0] > 0, hits[1].checked_sub(1)));
            }
            // Host writes in a scattered order, the watermark at 0: every
            // unit moved only once the units it overwrites are moved.
            let mut moved = [false; 256];
            let mut order = 0u64;
            for i in 0..units {
                let u = (i * 37 + 11) % units;
                if moved[u as usize] {
                    // Moved already, in the chain of an earlier write.
                    continue;
                }
                let mut steps = 0;
                loop {
                    let v = m.first_to_move(u, |w| moved[w as usize]);
                    m.for_each_overwritten(v, |o| {
                        for w in o.first..=o.last {
                            assert!(w == v || moved[w as usize], "{s:?} -> {t:?}: moving {v} before {w}");
                        }
                    });
                    assert!(!moved[v as usize]);
                    moved[v as usize] = true;
                    order += 1;
                    steps += 1;
                    if v == u {
                        break;
                    }
                    assert!(steps <= units, "no end");
                }
            }
            assert!(moved[..units as usize].iter().all(|&b| b) && order == units);
        }
        // single -> raid5 over 3, one stripe per unit: unit u's rows on the
        // first member hold source chunk u, of unit u / 2: the chain from u
        // down to 0 halves at each step.
        let (s, t) = (pairs[0].0, pairs[0].1);
        let m = Migration::new(s, t, 1).unwrap();
        for u in [1u64, 5, 17, 63] {
            let mut moved = [false; 64];
            let mut chain = 0;
            loop {
                let v = m.first_to_move(u, |w| moved[w as usize]);
                moved[v as usize] = true;
                chain += 1;
                if v == u {
                    break;
                }
            }
            assert_eq!(chain, 64 - u.leading_zeros() as u64 + 1, "unit {u}");
        }
    }

    #[test]
    fn bad_plans_refused() {
        let t = Geometry::new(Level::Raid0, 2, 8, 8 * 8).unwrap();
        assert_eq!(Migration::new(single(17), t, 1), Err(PlanError::TargetTooSmall));
        let r10 = Geometry::new(Level::Raid10, 3, 8, 16 * 8).unwrap();
        assert_eq!(Migration::new(single(16), r10, 1), Err(PlanError::UnitSize));
        assert!(Migration::new(single(16), r10, 2).is_ok());
        let big = Geometry::new(Level::Raid0, 2, 8192, 8192 * 4).unwrap();
        assert_eq!(
            Migration::new(Geometry::new(Level::Single, 1, 8192, 8192 * 4).unwrap(), big, 3),
            Err(PlanError::UnitSize)
        );
        let one = Geometry::new(Level::Single, 1, 8192, 8192 * 4).unwrap();
        assert_eq!(Migration::unit_rows_for(&one, &big, 8), 2);
        assert_eq!(Migration::unit_rows_for(&single(16), &r10, 3), 6);
    }
}
