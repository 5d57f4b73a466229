//! Assembling an array from the superblocks found on the given devices, in
//! any order: role order, disagreement and foreign-array detection.
//!
//! Each device contributes the newest valid of its two slots
//! ([`Superblock::newest`]). The newest generation over all devices wins: the
//! engine writes a generation to every member and flushes before it writes
//! the next, so after a power cut members differ by at most one generation
//! and the newest is the one to trust; members one behind are reported as
//! *lagging* (the next superblock update rewrites them). Anything else that
//! differs is refused.
//!
//! Keeps invariant 9 of the theory: a member that the newest superblocks
//! record faulty, or that missed more than one update, is not fresh and is
//! left out (md "kicks" it); roles left out or missing are failed roles of
//! the assembled array, which assembles *degraded* when its level survives
//! them ([`condition`]) and is refused otherwise.
//!
//! A device whose superblock says it is a hot spare of this array
//! ([`SPARE_ROLE`]) holds no role and takes no part in the generation
//! count: it is handed back as a spare, as md assembles spares.

use super::format::{FormatError, Superblock, SPARE_ROLE};
use super::health::{condition, Condition, Roles};
use super::layout::MAX_MEMBERS;
use super::members::ArrayMembers;

/// Why the devices do not make up an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssembleErrorKind {
    /// No device given.
    NoDevices,
    /// The device has no raidmig superblock.
    NoSuperblock,
    /// The device's superblocks are both invalid.
    Unreadable(FormatError),
    /// The device belongs to another raidmig array.
    Foreign,
    /// More members missing than the level survives.
    WrongCount,
    /// Two devices claim the same role.
    DuplicateRole,
    /// Two devices carry the same member UUID.
    DuplicateMember,
    /// The device's superblock is more than one generation old, and the
    /// array cannot do without it.
    Stale,
    /// The device's superblock disagrees with the newest on the array's shape
    /// or, at the same generation, on its state.
    Disagree,
}

/// An assembly failure and the index (in the order given) of the device it
/// concerns; for [`AssembleErrorKind::WrongCount`] and `NoDevices` the
/// index is the number of devices given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssembleError {
    /// What is wrong.
    pub kind: AssembleErrorKind,
    /// Which device.
    pub device: usize,
}

impl AssembleError {
    /// A sentence for the kernel log (the shell adds the device path).
    pub fn message(&self) -> &'static str {
        match self.kind {
            AssembleErrorKind::NoDevices => "no members given",
            AssembleErrorKind::NoSuperblock => "member has no raidmig superblock",
            AssembleErrorKind::Unreadable(e) => e.message(),
            AssembleErrorKind::Foreign => "member belongs to another raidmig array",
            AssembleErrorKind::WrongCount => "too few members for the level: more are missing than it survives",
            AssembleErrorKind::DuplicateRole => "two members claim the same role",
            AssembleErrorKind::DuplicateMember => "the same member is given twice",
            AssembleErrorKind::Stale => "member's superblock is stale (more than one update behind)",
            AssembleErrorKind::Disagree => "members' superblocks disagree",
        }
    }
}

/// An assembled array (small enough for a kernel stack; the members'
/// identities go to a caller-provided [`ArrayMembers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assembly {
    /// The newest superblock: the array's state.
    pub newest: Superblock,
    /// For each role, the index of the device holding it (`u8::MAX` for a
    /// role assembled without its device).
    pub device_of_role: [u8; MAX_MEMBERS],
    /// Roles whose superblock is one generation behind (bit per role).
    pub lagging: u32,
    /// Roles missing or not fresh that the superblocks do not yet record
    /// faulty: the load records them before anything else is written.
    /// `newest.failed` holds them already.
    pub newly_failed: Roles,
    /// Roles whose device was given but is not used: recorded faulty, or
    /// stale (more than one update behind).
    pub kicked: Roles,
    /// The devices (bit per index in the order given) left out so.
    pub kicked_devices: u32,
    /// The devices (bit per index) that are hot spares of this array.
    pub spare_devices: u32,
}

/// Assembles the array from each given device's superblock (`sbs[i]` for
/// device `i`, in any order), filling `members` with the identities of the
/// members by role.
pub fn assemble(
    sbs: &[Result<Superblock, FormatError>],
    members: &mut ArrayMembers,
) -> Result<Assembly, AssembleError> {
    assemble_with(sbs.len(), |i| sbs[i], members)
}

/// [`assemble`] over `n` devices whose superblocks `sb_of(i)` gives, as
/// often as it is asked (the load decodes them again from their bytes
/// rather than keep sixteen on the kernel stack).
pub fn assemble_with(
    n: usize,
    sb_of: impl Fn(usize) -> Result<Superblock, FormatError>,
    members: &mut ArrayMembers,
) -> Result<Assembly, AssembleError> {
    let err = |kind, device| Err(AssembleError { kind, device });
    if n == 0 {
        return err(AssembleErrorKind::NoDevices, 0);
    }
    let mut newest: Option<Superblock> = None;
    for i in 0..n {
        match &sb_of(i) {
            Err(FormatError::Blank) => return err(AssembleErrorKind::NoSuperblock, i),
            Err(e) => return err(AssembleErrorKind::Unreadable(*e), i),
            Ok(sb) if sb.role == SPARE_ROLE => {}
            Ok(sb) => {
                if newest.is_none_or(|n| sb.generation > n.generation) {
                    newest = Some(*sb);
                }
            }
        }
    }
    // Only spares: no member to assemble from.
    let Some(newest) = newest else { return err(AssembleErrorKind::WrongCount, n) };
    let layout = newest.layout;
    // Every superblock of the newest generation is trusted for the roles it
    // records faulty: a record retried after a further failure keeps its
    // generation and grows the set, and a power cut may leave some members
    // with the first attempt.
    let mut failed = Roles::NONE;
    let mut rebuild = newest.rebuild;
    for sb in (0..n).filter_map(|i| sb_of(i).ok()).filter(|sb| sb.role != SPARE_ROLE) {
        if sb.generation == newest.generation {
            failed = failed.union(sb.failed);
            // Likewise the lowest rebuild position recorded is surely durable.
            if let (Some(r), Some(o)) = (&mut rebuild, sb.rebuild) {
                r.position = r.position.min(o.position);
            }
        }
    }
    let rebuild = rebuild.filter(|r| !failed.contains(r.role));
    *members = ArrayMembers::new(newest.array_uuid, newest.created_ms, &[], &[]);
    members.count = layout.members();
    let mut device_of_role = [u8::MAX; MAX_MEMBERS];
    let mut lagging = 0u32;
    let mut kicked = Roles::NONE;
    let mut kicked_devices = 0u32;
    let mut spare_devices = 0u32;
    let mut stale_device = None;
    for (i, sb) in (0..n).filter_map(|i| sb_of(i).ok().map(|sb| (i, sb))) {
        if sb.array_uuid != newest.array_uuid {
            return err(AssembleErrorKind::Foreign, i);
        }
        let duplicate = (0..i).any(|j| matches!(sb_of(j), Ok(o) if o.member_uuid == sb.member_uuid));
        if sb.role == SPARE_ROLE {
            if duplicate {
                return err(AssembleErrorKind::DuplicateMember, i);
            }
            spare_devices |= 1 << i;
            continue;
        }
        let shape_agrees = sb.layout == layout
            && sb.created_ms == newest.created_ms
            && match (&sb.migration, &newest.migration) {
                (Some(a), Some(b)) => a.plan == b.plan,
                _ => true,
            };
        if !shape_agrees {
            return err(AssembleErrorKind::Disagree, i);
        }
        if device_of_role[sb.role] != u8::MAX || kicked.contains(sb.role) {
            return err(AssembleErrorKind::DuplicateRole, i);
        }
        if duplicate {
            return err(AssembleErrorKind::DuplicateMember, i);
        }
        // Not fresh: recorded faulty, or missed more than the update a power
        // cut can interrupt. Its data is not trusted (md kicks such members).
        if failed.contains(sb.role) || sb.generation + 1 < newest.generation {
            if !failed.contains(sb.role) && stale_device.is_none() {
                stale_device = Some(i);
            }
            kicked = kicked.with(sb.role);
            kicked_devices |= 1 << i;
            continue;
        }
        if sb.generation == newest.generation {
            if sb.state != newest.state || sb.migration != newest.migration {
                return err(AssembleErrorKind::Disagree, i);
            }
        } else {
            lagging |= 1 << sb.role;
        }
        // At most MAX_MEMBERS devices get here (roles are distinct).
        device_of_role[sb.role] = i as u8;
        members.set_from(&sb);
    }
    let absent = Roles::first(layout.members()).minus(Roles((0..MAX_MEMBERS).fold(0, |m, r| {
        m | if device_of_role[r] != u8::MAX { 1 << r } else { 0 }
    })));
    // A rebuilding role is not in sync everywhere: it does not count.
    let rebuild = rebuild.filter(|r| !absent.contains(r.role));
    let out = failed.union(absent).union(rebuild.map_or(Roles::NONE, |r| Roles::one(r.role)));
    if condition(&layout, out) == Condition::Failed {
        return match stale_device {
            Some(device) => err(AssembleErrorKind::Stale, device),
            None => err(AssembleErrorKind::WrongCount, n),
        };
    }
    Ok(Assembly {
        newest: Superblock { failed: failed.union(absent), rebuild, ..newest },
        device_of_role,
        lagging,
        newly_failed: absent.minus(failed),
        kicked,
        kicked_devices,
        spare_devices,
    })
}

#[cfg(test)]
mod tests {
    use super::super::format::{ArrayState, MigrationRecord};
    use super::super::layout::{Geometry, Level, RESERVED_TAIL_SECTORS};
    use super::super::format::Rebuild;
    use super::super::health::Roles;
    use super::super::plan::Migration;
    use super::*;

    fn sb(role: usize, generation: u64) -> Superblock {
        let source = Geometry::new(Level::Single, 1, 8, 800).unwrap();
        let target = Geometry::new(Level::Raid5, 3, 8, 800).unwrap();
        Superblock {
            generation,
            array_uuid: [9; 16],
            member_uuid: [role as u8 + 1; 16],
            role,
            state: ArrayState::Migrating,
            device_sectors: 800 + RESERVED_TAIL_SECTORS + role as u64,
            created_ms: 5,
            updated_ms: 6,
            layout: target,
            migration: Some(MigrationRecord {
                plan: Migration::new(source, target, 1).unwrap(),
                checkpoint: generation,
                staged: None,
                at_once: false,
            }),
            failed: Roles::NONE,
            rebuild: None,
            bitmap_region: None,
            readd_floor: 0,
        }
    }

    #[test]
    fn any_order_and_lagging() {
        let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
        let a = assemble(&[Ok(sb(2, 10)), Ok(sb(0, 9)), Ok(sb(1, 10))], &mut members).unwrap();
        assert_eq!(a.device_of_role[..3], [1, 2, 0]);
        assert_eq!(a.newest.generation, 10);
        assert_eq!(a.lagging, 1);
        assert_eq!(members.device_sectors[2], 800 + RESERVED_TAIL_SECTORS + 2);
        assert_eq!(members.uuids[1], [2; 16]);
        assert_eq!(members.count, 3);
    }

    #[test]
    fn degraded_when_the_level_survives() {
        let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
        // Role 1 missing: raid5 over 3 survives it, and the load records it.
        let a = assemble(&[Ok(sb(2, 10)), Ok(sb(0, 10))], &mut members).unwrap();
        assert_eq!(a.device_of_role[..3], [1, u8::MAX, 0]);
        assert_eq!((a.newest.failed, a.newly_failed, a.kicked), (Roles::one(1), Roles::one(1), Roles::NONE));
        // A stale member is left out (not fresh), not trusted.
        let a = assemble(&[Ok(sb(0, 10)), Ok(sb(1, 8)), Ok(sb(2, 10))], &mut members).unwrap();
        assert_eq!((a.device_of_role[1], a.kicked, a.newly_failed), (u8::MAX, Roles::one(1), Roles::one(1)));
        // A member the newest generation records faulty is left out, even
        // when its own superblock is recent and says nothing of it; one
        // superblock of that generation is enough.
        let mut recorded = sb(0, 11);
        recorded.failed = Roles::one(2);
        let a = assemble(&[Ok(recorded), Ok(sb(1, 11)), Ok(sb(2, 10))], &mut members).unwrap();
        assert_eq!((a.kicked, a.newly_failed, a.newest.failed), (Roles::one(2), Roles::NONE, Roles::one(2)));
        assert_eq!(a.lagging, 0);
        // A replacement being rebuilt is a member; the lowest position of
        // the newest generation counts; without its device it is failed.
        let mut rb = sb(1, 12);
        rb.rebuild = Some(Rebuild { role: 2, position: 64 });
        let mut rb2 = sb(0, 12);
        rb2.rebuild = Some(Rebuild { role: 2, position: 48 });
        let a = assemble(&[Ok(rb), Ok(rb2), Ok(sb(2, 12))], &mut members).unwrap();
        assert_eq!(a.newest.rebuild, Some(Rebuild { role: 2, position: 48 }));
        assert_eq!(a.newest.failed, Roles::NONE);
        let a = assemble(&[Ok(rb), Ok(rb2)], &mut members).unwrap();
        assert_eq!((a.newest.rebuild, a.newly_failed), (None, Roles::one(2)));
        // Rebuilding and another member missing: raid5 cannot count on it.
        assert_eq!(assemble(&[Ok(rb), Ok(sb(2, 12))], &mut members).unwrap_err().kind, AssembleErrorKind::WrongCount);
        // Two gone: raid5 does not survive it.
        assert_eq!(
            assemble(&[Ok(recorded), Ok(sb(2, 11))], &mut members).unwrap_err().kind,
            AssembleErrorKind::WrongCount
        );
    }

    #[test]
    fn spares_are_handed_back_and_take_no_part() {
        let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
        // A spare added at an older generation, given first.
        let spare = Superblock { role: SPARE_ROLE, member_uuid: [9; 16], generation: 3, ..sb(0, 3) };
        let a = assemble(&[Ok(spare), Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(sb(2, 10))], &mut members).unwrap();
        assert_eq!(a.spare_devices, 0b1);
        assert_eq!(&a.device_of_role[..3], &[1, 2, 3]);
        assert_eq!((a.lagging, a.kicked_devices, a.newly_failed), (0, 0, Roles::NONE));
        assert_eq!(a.newest.generation, 10);
        // A spare does not stand in for a missing member.
        let a = assemble(&[Ok(sb(0, 10)), Ok(spare), Ok(sb(2, 10))], &mut members).unwrap();
        assert_eq!((a.spare_devices, a.newly_failed), (0b10, Roles::one(1)));
        // A spare of another array, or the same spare twice, is refused; so
        // are spares alone.
        let foreign = Superblock { array_uuid: [7; 16], ..spare };
        let kind = |sbs: &[Result<Superblock, FormatError>]| {
            let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
            assemble(sbs, &mut members).map(|_| ()).unwrap_err().kind
        };
        assert_eq!(kind(&[Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(foreign)]), AssembleErrorKind::Foreign);
        assert_eq!(kind(&[Ok(sb(0, 10)), Ok(spare), Ok(spare)]), AssembleErrorKind::DuplicateMember);
        assert_eq!(kind(&[Ok(spare)]), AssembleErrorKind::WrongCount);
    }

    #[test]
    fn refusals() {
        let kind = |sbs: &[Result<Superblock, FormatError>]| {
            let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
            assemble(sbs, &mut members).map(|_| ()).unwrap_err()
        };
        let mut foreign = sb(1, 10);
        foreign.array_uuid = [7; 16];
        assert_eq!(
            kind(&[Ok(sb(0, 10)), Ok(foreign), Ok(sb(2, 10))]),
            AssembleError { kind: AssembleErrorKind::Foreign, device: 1 }
        );
        assert_eq!(kind(&[Ok(sb(1, 10))]).kind, AssembleErrorKind::WrongCount);
        assert_eq!(
            kind(&[Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(sb(1, 10))]).kind,
            AssembleErrorKind::DuplicateRole
        );
        let mut twin = sb(2, 10);
        twin.member_uuid = [1; 16];
        assert_eq!(kind(&[Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(twin)]).kind, AssembleErrorKind::DuplicateMember);
        assert_eq!(
            kind(&[Ok(sb(0, 10)), Ok(sb(1, 8)), Ok(sb(2, 7))]),
            AssembleError { kind: AssembleErrorKind::Stale, device: 1 }
        );
        let mut other = sb(2, 10);
        other.state = ArrayState::Paused;
        assert_eq!(kind(&[Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(other)]).kind, AssembleErrorKind::Disagree);
        let mut shape = sb(2, 9);
        shape.layout = Geometry::new(Level::Raid5, 3, 16, 800).unwrap();
        assert_eq!(kind(&[Ok(sb(0, 10)), Ok(sb(1, 10)), Ok(shape)]).kind, AssembleErrorKind::Disagree);
        assert_eq!(
            kind(&[Ok(sb(0, 10)), Err(FormatError::Blank), Ok(sb(2, 10))]).kind,
            AssembleErrorKind::NoSuperblock
        );
        assert_eq!(
            kind(&[Ok(sb(0, 10)), Err(FormatError::BadChecksum)]).kind,
            AssembleErrorKind::Unreadable(FormatError::BadChecksum)
        );
        assert_eq!(kind(&[]).kind, AssembleErrorKind::NoDevices);
        for k in [AssembleErrorKind::Foreign, AssembleErrorKind::Stale, AssembleErrorKind::Disagree] {
            assert!(!AssembleError { kind: k, device: 0 }.message().is_empty());
        }
    }
}
