//! A host request as member I/O: each routed part of a request becomes
//! member ranges, with the request data they carry.
//!
//! Keeps invariant 8 of the theory (see the crate documentation): the kernel
//! turns these operations into bios and the simulator into writes on its
//! members, so both split requests the same way.
//!
//! - Reads go to one copy, [`Geometry::read_copy`]: the same sector always
//!   reads from the same copy whatever the request's size. With members
//!   failed (invariant 9), reads take a copy in sync
//!   ([`super::health::read_copy`]), raid5 reconstructs a chunk whose member
//!   failed, and writes leave failed members out; a range with no copy left
//!   is [`MemberOp::Lost`].
//! - Writes go to every copy; raid5 writes become one stripe operation per
//!   stripe touched, executed by [`super::raid5`].
//! - Discards and write-zeroes become one range per member (not raid5,
//!   whose member ranges interleave parity: the shell does not advertise
//!   them there).
//!
//! A part routed to the staging area (a unit recorded there, see
//! [`super::route::Next::Staged`]) uses the target layout, each member's
//! rows of the unit shifted to that member's staging area, which holds them
//! from its start.

use super::health::{condition, read_copy, Condition, Roles};
use super::layout::{Geometry, MAX_MEMBERS};
use super::route::View;
use super::tail::staging_sector;

/// What the request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read data.
    Read,
    /// Write data.
    Write,
    /// Discard a range.
    Discard,
    /// Write zeroes to a range.
    WriteZeroes,
}

/// Where a layout's member sectors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// At their place in the data area.
    Direct,
    /// In the staging area: the unit whose rows start at target row
    /// `first_row` sits there.
    Staging {
        /// The staged unit's first row.
        first_row: u64,
    },
}

impl Place {
    /// The staging place of the unit `view.active` of a migration to
    /// `target` (whose units are `view.unit_sectors` long).
    pub fn staging(view: &View, target: &Geometry) -> Place {
        let stripes = view.unit_sectors / target.stripe_sectors().max(1);
        Place::Staging { first_row: view.active.saturating_mul(stripes * target.stripe_rows()) }
    }

    /// Where sector `sector` of member `member` (in the layout's terms) is,
    /// given each member's device size (which locates its staging area).
    pub fn sector(&self, g: &Geometry, device_sectors: &[u64; MAX_MEMBERS], member: usize, sector: u64) -> u64 {
        match *self {
            Place::Direct => sector,
            Place::Staging { first_row } => {
                let device = device_sectors.get(member).copied().unwrap_or(0);
                staging_sector(device) + sector - (first_row << g.chunk_shift())
            }
        }
    }
}

/// One member I/O of a host request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// `sectors` of request data, from `offset` sectors into the request,
    /// read from or written to sector `sector` of `member`.
    Data {
        /// The member (role).
        member: usize,
        /// The member sector.
        sector: u64,
        /// Length in sectors.
        sectors: u64,
        /// Where the data sits in the request, in sectors from its start.
        offset: u64,
    },
    /// A member range without data (discard, write zeroes).
    Range {
        /// The member (role).
        member: usize,
        /// The first member sector.
        sector: u64,
        /// Length in sectors.
        sectors: u64,
    },
    /// A raid5 write of logical `[start, start + sectors)`, within one
    /// stripe, whose data sits `offset` sectors into the request: executed
    /// by [`super::raid5::write_stripe`] at the same place.
    Stripe {
        /// First logical sector.
        start: u64,
        /// Length in sectors.
        sectors: u64,
        /// Where the data sits in the request, in sectors from its start.
        offset: u64,
    },
    /// A raid5 read of logical `[start, start + sectors)`, within one chunk
    /// whose member failed, whose data goes `offset` sectors into the
    /// request: reconstructed by [`super::raid5::read_reconstructed`].
    Reconstruct {
        /// First logical sector.
        start: u64,
        /// Length in sectors.
        sectors: u64,
        /// Where the data goes in the request, in sectors from its start.
        offset: u64,
    },
    /// The layout cannot do this (discard or write-zeroes on raid5): fail
    /// the request.
    Unsupported,
    /// Logical `[start, start + sectors)` has no copy left on members in
    /// sync (a failed member of raid0 or single, or more failed than the
    /// level survives): fail the request with an I/O error.
    Lost {
        /// First logical sector.
        start: u64,
        /// Length in sectors.
        sectors: u64,
    },
}

/// Calls `f` with each member I/O that the part `[start, start + sectors)`
/// of a request starting at logical sector `base` becomes, in layout `g` at
/// `place`, with the roles in `failed` gone. Data offsets count from `base`.
#[allow(clippy::too_many_arguments)]
pub fn for_each_op(
    g: &Geometry,
    place: Place,
    device_sectors: &[u64; MAX_MEMBERS],
    failed: Roles,
    access: Access,
    base: u64,
    start: u64,
    sectors: u64,
    mut f: impl FnMut(MemberOp),
) {
    if sectors == 0 {
        return;
    }
    let at = |member: usize, sector: u64| place.sector(g, device_sectors, member, sector);
    let failed = Roles(failed.0 & Roles::first(g.members()).0);
    let lost = condition(g, failed) == Condition::Failed;
    match access {
        Access::Read => {
            for p in g.read_pieces(start, sectors) {
                match read_copy(g, p.logical, failed) {
                    Some(copy) => {
                        let l = g.locate_copy(p.logical, copy);
                        f(MemberOp::Data {
                            member: l.member,
                            sector: at(l.member, l.sector),
                            sectors: p.sectors,
                            offset: p.logical - base,
                        });
                    }
                    None if g.level().has_parity() && !lost => f(MemberOp::Reconstruct {
                        start: p.logical,
                        sectors: p.sectors,
                        offset: p.logical - base,
                    }),
                    None => f(MemberOp::Lost { start: p.logical, sectors: p.sectors }),
                }
            }
        }
        Access::Write if g.level().has_parity() && lost => f(MemberOp::Lost { start, sectors }),
        Access::Write if g.level().has_parity() => {
            let stripe = g.stripe_sectors().max(1);
            let end = start + sectors;
            let mut s = start;
            while s < end {
                let stop = ((s / stripe) + 1).saturating_mul(stripe).min(end);
                f(MemberOp::Stripe { start: s, sectors: stop - s, offset: s - base });
                s = stop;
            }
        }
        Access::Write => {
            for p in g.pieces(start, sectors) {
                if read_copy(g, p.logical, failed).is_none() {
                    f(MemberOp::Lost { start: p.logical, sectors: p.sectors });
                    continue;
                }
                for copy in 0..g.copies() {
                    let l = g.locate_copy(p.logical, copy);
                    if failed.contains(l.member) {
                        continue;
                    }
                    f(MemberOp::Data {
                        member: l.member,
                        sector: at(l.member, l.sector),
                        sectors: p.sectors,
                        offset: p.logical - base,
                    });
                }
            }
        }
        Access::Discard | Access::WriteZeroes => {
            if g.level().has_parity() {
                f(MemberOp::Unsupported);
                return;
            }
            // Without redundancy a range on a failed member is lost; with it,
            // failed members are left out.
            let redundant = g.copies() > 1;
            for member in 0..g.members() {
                if let Some(span) = g.member_span(start, sectors, member) {
                    if !failed.contains(member) {
                        f(MemberOp::Range { member, sector: at(member, span.sector), sectors: span.sectors });
                    } else if !redundant || lost {
                        f(MemberOp::Lost { start, sectors });
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Level;
    use super::super::tail::STAGING_OFFSET;
    use super::*;
    use std::vec::Vec;

    fn ops(g: &Geometry, place: Place, access: Access, start: u64, sectors: u64) -> Vec<MemberOp> {
        let mut v = Vec::new();
        let dev = [1u64 << 20; MAX_MEMBERS];
        for_each_op(g, place, &dev, Roles::NONE, access, start, start, sectors, |op| v.push(op));
        v
    }

    #[test]
    fn raid1_reads_are_stable_per_sector() {
        let g = Geometry::new(Level::Raid1, 2, 128, 1 << 14).unwrap();
        // Whatever request covers sector 2048 + 5, it is read from copy 1.
        for (start, len) in [(2053, 1), (0, 4096), (2000, 100), (2048, 2048)] {
            let found = ops(&g, Place::Direct, Access::Read, start, len).into_iter().find_map(|op| match op {
                MemberOp::Data { member, sector, sectors, .. } if (sector..sector + sectors).contains(&2053) => {
                    Some(member)
                }
                _ => None,
            });
            assert_eq!(found, Some(1), "request {start}+{len}");
        }
        assert_eq!(g.read_copy(0), 0);
        assert_eq!(g.read_copy(4096), 0);
    }

    #[test]
    fn writes_go_to_every_copy_and_raid5_by_stripe() {
        let g = Geometry::new(Level::Raid10, 4, 8, 64).unwrap();
        let w = ops(&g, Place::Direct, Access::Write, 4, 8);
        // Chunk 0's tail and chunk 1's head, two copies each.
        assert_eq!(w.len(), 4);
        let g5 = Geometry::new(Level::Raid5, 3, 8, 64).unwrap();
        let w = ops(&g5, Place::Direct, Access::Write, 10, 30);
        assert_eq!(
            w,
            [
                MemberOp::Stripe { start: 10, sectors: 6, offset: 0 },
                MemberOp::Stripe { start: 16, sectors: 16, offset: 6 },
                MemberOp::Stripe { start: 32, sectors: 8, offset: 22 },
            ]
        );
        assert_eq!(ops(&g5, Place::Direct, Access::Discard, 0, 8), [MemberOp::Unsupported]);
    }

    #[test]
    fn staging_shifts_each_member_to_its_staging_area() {
        let g = Geometry::new(Level::Raid0, 2, 8, 8 * 64).unwrap();
        let dev = 1u64 << 20;
        let tail = dev - super::super::layout::RESERVED_TAIL_SECTORS;
        // The unit of rows 4..: logical chunk 8 is row 4 of member 0.
        let place = Place::Staging { first_row: 4 };
        let w = ops(&g, place, Access::Write, 8 * 8 + 3, 2);
        assert_eq!(w, [MemberOp::Data { member: 0, sector: tail + STAGING_OFFSET + 3, sectors: 2, offset: 0 }]);
        let view = View { copied: 2, active: 2, unit_sectors: 32, ..View::clean(super::super::format::ArrayState::Migrating, 0) };
        assert_eq!(Place::staging(&view, &g), Place::Staging { first_row: 4 });
    }

    fn degraded_ops(g: &Geometry, failed: Roles, access: Access, start: u64, sectors: u64) -> Vec<MemberOp> {
        let mut v = Vec::new();
        let dev = [1u64 << 20; MAX_MEMBERS];
        for_each_op(g, Place::Direct, &dev, failed, access, start, start, sectors, |op| v.push(op));
        v
    }

    fn members_touched(ops: &[MemberOp]) -> Roles {
        ops.iter().fold(Roles::NONE, |r, op| match *op {
            MemberOp::Data { member, .. } | MemberOp::Range { member, .. } => r.with(member),
            _ => r,
        })
    }

    #[test]
    fn failed_members_are_never_touched() {
        for (level, n) in [(Level::Raid1, 2), (Level::Raid1, 3), (Level::Raid10, 4), (Level::Raid10, 3), (Level::Raid5, 4)] {
            let g = Geometry::new(level, n, 8, 8 * 16).unwrap();
            for lost in 0..n {
                let failed = Roles::one(lost);
                for access in [Access::Read, Access::Write, Access::Discard] {
                    for (start, len) in [(0, g.capacity()), (3, 17), (8, 8)] {
                        let ops = degraded_ops(&g, failed, access, start, len);
                        assert!(!members_touched(&ops).contains(lost), "{level:?} {access:?} lost {lost}");
                        assert!(!ops.iter().any(|op| matches!(op, MemberOp::Lost { .. })));
                        // Every sector read is served once: a copy or a
                        // reconstruction.
                        if access == Access::Read {
                            let served: u64 = ops
                                .iter()
                                .map(|op| match *op {
                                    MemberOp::Data { sectors, .. } | MemberOp::Reconstruct { sectors, .. } => sectors,
                                    _ => 0,
                                })
                                .sum();
                            assert_eq!(served, len);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn without_redundancy_io_on_a_failed_member_is_lost() {
        let g = Geometry::new(Level::Raid0, 2, 8, 8 * 16).unwrap();
        let failed = Roles::one(1);
        // Chunk 0 is on member 0: still served; chunk 1 is lost.
        assert!(matches!(degraded_ops(&g, failed, Access::Read, 0, 8)[..], [MemberOp::Data { member: 0, .. }]));
        assert_eq!(degraded_ops(&g, failed, Access::Read, 8, 8), [MemberOp::Lost { start: 8, sectors: 8 }]);
        assert_eq!(degraded_ops(&g, failed, Access::Write, 8, 8), [MemberOp::Lost { start: 8, sectors: 8 }]);
        assert!(degraded_ops(&g, failed, Access::Discard, 0, 16).contains(&MemberOp::Lost { start: 0, sectors: 16 }));
        let r5 = Geometry::new(Level::Raid5, 3, 8, 8 * 16).unwrap();
        let two = Roles::one(0).with(2);
        assert_eq!(degraded_ops(&r5, two, Access::Write, 0, 4), [MemberOp::Lost { start: 0, sectors: 4 }]);
        let r1 = Geometry::new(Level::Raid1, 2, 8, 8 * 16).unwrap();
        assert_eq!(degraded_ops(&r1, Roles(3), Access::Write, 0, 4), [MemberOp::Lost { start: 0, sectors: 4 }]);
    }
}
