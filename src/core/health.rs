//! Member health: which roles have failed, whether the level still holds
//! every sector then, and which copy a read takes.
//!
//! Keeps invariant 9 of the theory (see the crate documentation): a failed
//! role is never read or written again, and is never trusted again once the
//! superblocks of the others record it.
//!
//! What a level survives (md's rules, drivers/md of Linux 6.12):
//! - single and raid0: nothing; any failed member loses data.
//! - raid1: all members but one.
//! - raid5: one member, whichever; its chunks are the XOR of the others'.
//! - raid10 near-2: any set of members that holds no two copies of a chunk.
//!   The copies of chunk `c` are on members `2c % n` and `(2c + 1) % n`: with
//!   an even member count the pairs `(0, 1), (2, 3), …`, with an odd count
//!   every two neighbours `(m, m + 1 mod n)` (`raid10.c`, `_enough`).

use super::format::{ArrayState, Rebuild};
use super::layout::{Geometry, Level, MAX_MEMBERS};

/// A set of roles, one bit per role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles(pub u32);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);

    /// Roles `0..count`.
    pub fn first(count: usize) -> Roles {
        Roles(if count >= 32 { u32::MAX } else { (1u32 << count) - 1 })
    }

    /// Just `role`.
    pub fn one(role: usize) -> Roles {
        Roles(if role < MAX_MEMBERS { 1 << role } else { 0 })
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: usize) -> bool {
        role < 32 && self.0 & (1 << role) != 0
    }

    /// The set with `role` added.
    pub fn with(self, role: usize) -> Roles {
        Roles(self.0 | Roles::one(role).0)
    }

    /// Both sets.
    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    /// Roles of `self` not in `other`.
    pub fn minus(self, other: Roles) -> Roles {
        Roles(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of roles in the set.
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The roles in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_MEMBERS).filter(move |&r| self.contains(r))
    }
}

/// What is not in sync: the failed roles, and a role being rebuilt onto a
/// replacement, in sync only below its rebuild position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Roles failed (no device, or one that failed): never read or written.
    pub failed: Roles,
    /// The role being rebuilt: read and written below its position, left out
    /// at and above it (the rebuild fills it in).
    pub rebuild: Option<Rebuild>,
}

impl Health {
    /// Every role not in sync everywhere.
    pub fn out_of_sync(&self) -> Roles {
        match self.rebuild {
            Some(r) => self.failed.with(r.role),
            None => self.failed,
        }
    }

    /// Calls `f(start, sectors, gone)` for the parts of logical
    /// `[start, start + sectors)` below and at or above the rebuild position,
    /// with the roles I/O must leave out there.
    pub fn for_each_part(&self, start: u64, sectors: u64, mut f: impl FnMut(u64, u64, Roles)) {
        let end = start.saturating_add(sectors);
        match self.rebuild {
            Some(r) if r.position > start && r.position < end => {
                f(start, r.position - start, self.failed);
                f(r.position, end - r.position, self.out_of_sync());
            }
            Some(r) if r.position <= start => f(start, sectors, self.out_of_sync()),
            _ => f(start, sectors, self.failed),
        }
    }
}

/// How an array stands with its failed roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Every member in sync.
    Optimal,
    /// Some members failed, every sector still has a copy (or parity).
    Degraded,
    /// More members failed than the level survives: some sectors are lost.
    Failed,
}

/// Whether `g`'s level still holds every sector with the roles in `failed`
/// gone, and whether any are gone.
pub fn condition(g: &Geometry, failed: Roles) -> Condition {
    let n = g.members();
    let failed = Roles(failed.0 & Roles::first(n).0);
    if failed.is_empty() {
        return Condition::Optimal;
    }
    let survives = match g.level() {
        Level::Single | Level::Raid0 => false,
        Level::Raid1 => failed.count() < n,
        Level::Raid5 => failed.count() == 1,
        Level::Raid10 => !failed.iter().any(|m| {
            let partner = (m + 1) % n;
            (n % 2 == 1 || m % 2 == 0) && partner != m && failed.contains(partner)
        }),
    };
    if survives {
        Condition::Degraded
    } else {
        Condition::Failed
    }
}

/// The copy of logical sector `logical` that a read takes with the roles in
/// `failed` gone: the usual one ([`Geometry::read_copy`]) if its member is
/// in sync, else the next copy whose member is; `None` when no copy is left
/// (raid5 then reconstructs it from the rest of its stripe).
pub fn read_copy(g: &Geometry, logical: u64, failed: Roles) -> Option<usize> {
    let copies = g.copies();
    let first = g.read_copy(logical);
    // `first + k` is below twice the copies: wrap without a division (whose
    // panic path the kernel's objtool does not follow).
    (0..copies)
        .map(|k| if first + k >= copies { first + k - copies } else { first + k })
        .find(|&c| !failed.contains(g.locate_copy(logical, c).member))
}

/// The array's state as shown in sysfs: `failed` when more members failed
/// than the level survives or the migration stopped on an error,
/// `degraded` when members failed but every sector is held, else the
/// recorded state.
pub fn state_name(state: ArrayState, halted: bool, cond: Condition) -> &'static str {
    match cond {
        Condition::Failed => "failed",
        Condition::Degraded => "degraded",
        Condition::Optimal if halted => "failed",
        Condition::Optimal => state.name(),
    }
}

/// What a role is, as shown per role in sysfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleState {
    /// Holds its part of the layout, up to date.
    InSync,
    /// Failed (an error, or missing at assembly): neither read nor written.
    Faulty,
    /// A replacement being rebuilt: in sync below the rebuild position.
    Rebuilding,
}

impl RoleState {
    /// The name shown in sysfs (md's words).
    pub fn name(self) -> &'static str {
        match self {
            RoleState::InSync => "in_sync",
            RoleState::Faulty => "faulty",
            RoleState::Rebuilding => "rebuilding",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(level: Level, n: usize) -> Geometry {
        Geometry::new(level, n, 8, 8 * 64).unwrap()
    }

    /// Whether every logical sector keeps a copy, by brute force over the
    /// layout: the definition `condition` must agree with.
    fn every_sector_kept(g: &Geometry, failed: Roles) -> bool {
        (0..g.capacity()).all(|l| {
            let home = g.locate(l).member;
            (0..g.copies()).any(|c| !failed.contains(g.locate_copy(l, c).member))
                // raid5: the XOR of every other member of the stripe.
                || g.level() == Level::Raid5 && (0..g.members()).all(|m| m == home || !failed.contains(m))
        })
    }

    #[test]
    fn condition_matches_the_layout_for_every_failed_set() {
        for level in [Level::Raid0, Level::Raid1, Level::Raid5, Level::Raid10] {
            for n in 2..=7 {
                let geo = g(level, n);
                for bits in 1..(1u32 << n) {
                    let failed = Roles(bits);
                    let want = if every_sector_kept(&geo, failed) { Condition::Degraded } else { Condition::Failed };
                    assert_eq!(condition(&geo, failed), want, "{level:?} over {n}, failed {bits:#b}");
                }
                assert_eq!(condition(&geo, Roles::NONE), Condition::Optimal);
            }
        }
        assert_eq!(condition(&Geometry::new(Level::Single, 1, 8, 64).unwrap(), Roles::one(0)), Condition::Failed);
        // Roles past the member count are not members.
        assert_eq!(condition(&g(Level::Raid5, 3), Roles::one(5)), Condition::Optimal);
    }

    #[test]
    fn reads_take_a_surviving_copy() {
        for (level, n) in [(Level::Raid1, 3), (Level::Raid10, 4), (Level::Raid10, 5)] {
            let geo = g(level, n);
            for bits in 0..(1u32 << n) {
                let failed = Roles(bits);
                for l in 0..geo.capacity() {
                    match read_copy(&geo, l, failed) {
                        Some(c) => {
                            assert!(!failed.contains(geo.locate_copy(l, c).member));
                            if failed.is_empty() {
                                assert_eq!(c, geo.read_copy(l));
                            }
                        }
                        None => assert_eq!(condition(&geo, failed), Condition::Failed),
                    }
                }
            }
        }
        let r5 = g(Level::Raid5, 3);
        let lost = r5.locate(0).member;
        assert_eq!(read_copy(&r5, 0, Roles::one(lost)), None);
        assert_eq!(read_copy(&r5, 0, Roles::one((lost + 1) % 3)), Some(0));
    }

    #[test]
    fn parts_split_at_the_rebuild_position() {
        let h = Health { failed: Roles::one(0), rebuild: Some(Rebuild { role: 2, position: 100 }) };
        let mut parts = std::vec::Vec::new();
        h.for_each_part(90, 20, |s, n, r| parts.push((s, n, r)));
        assert_eq!(parts, [(90, 10, Roles::one(0)), (100, 10, Roles::one(0).with(2))]);
        parts.clear();
        h.for_each_part(0, 100, |s, n, r| parts.push((s, n, r)));
        h.for_each_part(100, 1, |s, n, r| parts.push((s, n, r)));
        assert_eq!(parts, [(0, 100, Roles::one(0)), (100, 1, Roles::one(0).with(2))]);
        assert_eq!(Health::default().out_of_sync(), Roles::NONE);
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(ArrayState::Clean, false, Condition::Optimal), "clean");
        assert_eq!(state_name(ArrayState::Clean, false, Condition::Degraded), "degraded");
        assert_eq!(state_name(ArrayState::Migrating, false, Condition::Failed), "failed");
        assert_eq!(state_name(ArrayState::Migrating, true, Condition::Optimal), "failed");
        assert_eq!(state_name(ArrayState::Paused, false, Condition::Optimal), "paused");
    }

    #[test]
    fn role_sets() {
        let r = Roles::NONE.with(3).with(0).with(40);
        assert_eq!(r.iter().collect::<std::vec::Vec<_>>(), [0, 3]);
        assert_eq!(r.count(), 2);
        assert!(r.minus(Roles::one(3)).contains(0));
        assert!(!r.minus(Roles::one(3)).contains(3));
        assert_eq!(Roles::first(3), Roles(0b111));
        assert_eq!(Roles::first(32), Roles(u32::MAX));
    }
}
