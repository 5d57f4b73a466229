//! Preparing a new migration from a plain disk: the checks to make before
//! anything is written, and the first superblocks.
//!
//! The first member holds the user's data (a plain disk, the `single`
//! source); the others join. The volume keeps the source's size, the first
//! member's data area rounded down to the chunk, until the migration ends;
//! everything after it on the first member (the rounding slack and the
//! reserved tail) must be zero, which [`must_be_zero`] gives to the shell.

use super::health::Roles;
use super::format::{ArrayState, FormatError, MigrationRecord, Superblock, SPARE_ROLE};
use super::tail::{slot_of, SUPERBLOCK_BYTES};
use super::layout::{Geometry, GeometryError, Level, MAX_MEMBERS};
use super::members::ArrayMembers;
use super::plan::{Migration, PlanError};

/// Why a new migration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareError {
    /// Fewer members than the level needs.
    TooFewMembers,
    /// More members than the level or raidmig allows.
    TooManyMembers,
    /// Device `device` is smaller than the first member.
    MemberSmaller {
        /// Index of the device in `members=`.
        device: usize,
    },
    /// The layout cannot be built (chunk, sizes).
    Geometry(GeometryError),
    /// The migration cannot be planned.
    Plan(PlanError),
    /// Device `device` carries a valid raidmig superblock.
    AlreadyMember {
        /// Index of the device in `members=`.
        device: usize,
    },
    /// Device `device` carries a damaged raidmig superblock.
    DamagedSuperblock {
        /// Index of the device in `members=`.
        device: usize,
    },
}

impl PrepareError {
    /// A sentence for the kernel log (the shell adds the device path).
    pub fn message(self) -> &'static str {
        match self {
            PrepareError::TooFewMembers => "too few members for the level",
            PrepareError::TooManyMembers => "too many members for the level",
            PrepareError::MemberSmaller { .. } => "member is smaller than the first member",
            PrepareError::Geometry(e) => e.message(),
            PrepareError::Plan(e) => e.message(),
            PrepareError::AlreadyMember { .. } => "member belongs to a raidmig array already",
            PrepareError::DamagedSuperblock { .. } => {
                "member carries a damaged raidmig superblock; wipe its last 16 MiB first"
            }
        }
    }
}

/// Plans the migration of the first device's data to `level` over all
/// devices (sizes in sectors, in the order given), in units of up to
/// `unit_stripes` target stripes.
pub fn plan_new(
    level: Level,
    chunk_sectors: u32,
    device_sectors: &[u64],
    unit_stripes: u32,
) -> Result<Migration, PrepareError> {
    let n = device_sectors.len();
    if n < level.min_members() {
        return Err(PrepareError::TooFewMembers);
    }
    if n > level.max_members() || n > MAX_MEMBERS {
        return Err(PrepareError::TooManyMembers);
    }
    let first = device_sectors[0];
    if let Some(device) = device_sectors.iter().position(|&d| d < first) {
        return Err(PrepareError::MemberSmaller { device });
    }
    let source =
        Geometry::for_devices(Level::Single, 1, chunk_sectors, first).map_err(PrepareError::Geometry)?;
    let target = Geometry::for_devices(level, n, chunk_sectors, first).map_err(PrepareError::Geometry)?;
    let rows = Migration::unit_rows_for(&source, &target, unit_stripes);
    Migration::new(source, target, rows).map_err(PrepareError::Plan)
}

/// The range `(start, sectors)` of the first member that must read as zeros
/// before anything is written: from the end of the volume (the source's size)
/// to the end of the device, which includes the reserved tail.
pub fn must_be_zero(first_device_sectors: u64, plan: &Migration) -> (u64, u64) {
    let start = plan.volume_sectors().min(first_device_sectors);
    (start, first_device_sectors - start)
}

/// Whether a block read from the range of [`must_be_zero`] is all zeros.
pub fn all_zero(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == 0)
}

/// Checks that device `device` belongs to no raidmig array, from what its
/// two superblock slots decode to. Blank slots or foreign contents (no
/// raidmig magic) are fine: joining members are overwritten.
pub fn check_unclaimed(
    device: usize,
    slot0: &Result<Superblock, FormatError>,
    slot1: &Result<Superblock, FormatError>,
) -> Result<(), PrepareError> {
    for slot in [slot0, slot1] {
        match slot {
            Ok(_) => return Err(PrepareError::AlreadyMember { device }),
            Err(FormatError::Blank | FormatError::BadMagic) => {}
            Err(_) => return Err(PrepareError::DamagedSuperblock { device }),
        }
    }
    Ok(())
}

/// The first superblock (generation 1, written to slot 1) of member `role`
/// of a prepared migration, with a write-intent bitmap of regions of
/// `bitmap_region` sectors if given, the new layout in effect at once if
/// `at_once`.
pub fn prepared_superblock(
    plan: &Migration,
    members: &ArrayMembers,
    role: usize,
    now_ms: u64,
    bitmap_region: Option<u64>,
    at_once: bool,
) -> Superblock {
    Superblock {
        generation: 1,
        array_uuid: members.array_uuid,
        member_uuid: members.uuids[role],
        role,
        state: ArrayState::Prepared,
        device_sectors: members.device_sectors[role],
        created_ms: members.created_ms,
        updated_ms: now_ms,
        layout: plan.target(),
        migration: Some(MigrationRecord { plan: *plan, checkpoint: 0, staged: None, at_once }),
        failed: Roles::NONE,
        rebuild: None,
        bitmap_region,
        readd_floor: 1,
    }
}

/// The two superblock slots a device gets when it becomes a hot spare of
/// the settled array whose newest superblock is `newest`: the array's
/// superblock with the spare's identity, size and [`SPARE_ROLE`] in the
/// slot of its generation, the other slot zeroed (so that nothing a former
/// life left there outranks it). `buf` holds both slots, slot 0 first, as
/// they lie on the device ([`SUPERBLOCK_BYTES`] each). The next load that
/// is given the device hands it back as a spare ([`super::assemble`]).
pub fn spare_slots(newest: &Superblock, member_uuid: [u8; 16], device_sectors: u64, buf: &mut [u8]) -> Result<(), FormatError> {
    if buf.len() < 2 * SUPERBLOCK_BYTES {
        return Err(FormatError::BadDeviceSize);
    }
    let sb = Superblock {
        member_uuid,
        role: SPARE_ROLE,
        device_sectors,
        migration: None,
        failed: Roles::NONE,
        rebuild: None,
        ..*newest
    };
    let (a, b) = buf[..2 * SUPERBLOCK_BYTES].split_at_mut(SUPERBLOCK_BYTES);
    let (mine, other) = if slot_of(sb.generation) == 0 { (a, b) } else { (b, a) };
    other.fill(0);
    sb.encode(mine)
}

/// Why a device cannot join a running array (as a replacement or a spare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// It cannot hold the data area and the reserved tail.
    TooSmall,
    /// It carries the superblock of another raidmig array.
    OtherArray,
    /// It carries a damaged raidmig superblock.
    Damaged,
}

impl AddError {
    /// A sentence for the kernel log (the shell adds the device path).
    pub fn message(self) -> &'static str {
        match self {
            AddError::TooSmall => "device too small: it must hold the data area and the 16 MiB reserved tail",
            AddError::OtherArray => "device belongs to another raidmig array",
            AddError::Damaged => "device carries a damaged raidmig superblock; wipe its last 16 MiB first",
        }
    }
}

/// What a device offered to the array was, as its superblock tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addition {
    /// Blank, or of no array: rebuilt in full.
    Fresh,
    /// A member of this array: its role and identity when it last wrote,
    /// and whether it was in sync then (not a replacement whose rebuild had
    /// not ended: past its rebuild position it holds nothing valid).
    Former {
        /// The role it held.
        role: usize,
        /// Its identity.
        member_uuid: [u8; 16],
        /// In sync when it last wrote its superblock.
        in_sync: bool,
        /// The generation of that superblock.
        generation: u64,
    },
}

/// Checks a device of `device_sectors` offered to the array `array_uuid`,
/// whose data areas are `member_sectors` long, from what its superblock
/// slots decode to, and tells what it was. A former member of this array
/// is welcome; one of another array is not.
pub fn classify_addition(
    device_sectors: u64,
    slot0: &Result<Superblock, FormatError>,
    slot1: &Result<Superblock, FormatError>,
    array_uuid: &[u8; 16],
    member_sectors: u64,
) -> Result<Addition, AddError> {
    check_addition(device_sectors, slot0, slot1, array_uuid, member_sectors)?;
    Ok(match Superblock::newest(*slot0, *slot1) {
        Ok(sb) => Addition::Former {
            role: sb.role,
            member_uuid: sb.member_uuid,
            in_sync: !sb.failed.contains(sb.role) && sb.rebuild.is_none_or(|r| r.role != sb.role),
            generation: sb.generation,
        },
        Err(_) => Addition::Fresh,
    })
}

/// Whether a former member of role `role` may be re-added to failed role
/// `failed_role` with only the regions written since it left rebuilt: the
/// same role, in sync when it left (a replacement that failed during its
/// rebuild is rebuilt in full), left at or after the array's re-add floor
/// `readd_floor` (from then on its role has been out of sync without a
/// break, so no bit was cleared and no migration wrote: the bitmap, kept
/// across loads, holds every region written since; see
/// [`super::bitmap`]), the identity recorded for the role if the array
/// knows it (`recorded_uuid`, zero when the role was absent at assembly),
/// and a bitmap.
pub fn may_readd(addition: Addition, failed_role: usize, recorded_uuid: &[u8; 16], readd_floor: u64, has_bitmap: bool) -> bool {
    matches!(addition, Addition::Former { role, member_uuid, in_sync: true, generation }
        if role == failed_role
            && generation >= readd_floor
            && (member_uuid == *recorded_uuid || *recorded_uuid == [0; 16]))
        && has_bitmap
}

/// Checks a device of `device_sectors` offered to the array `array_uuid`,
/// whose data areas are `member_sectors` long, from what its superblock
/// slots decode to. A former member of this array is welcome; one of
/// another array is not.
pub fn check_addition(
    device_sectors: u64,
    slot0: &Result<Superblock, FormatError>,
    slot1: &Result<Superblock, FormatError>,
    array_uuid: &[u8; 16],
    member_sectors: u64,
) -> Result<(), AddError> {
    if device_sectors < member_sectors.saturating_add(super::layout::RESERVED_TAIL_SECTORS) {
        return Err(AddError::TooSmall);
    }
    for slot in [slot0, slot1] {
        match slot {
            Ok(sb) if sb.array_uuid != *array_uuid => return Err(AddError::OtherArray),
            Ok(_) | Err(FormatError::Blank | FormatError::BadMagic) => {}
            Err(_) => return Err(AddError::Damaged),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::format::Rebuild;
    use super::super::layout::RESERVED_TAIL_SECTORS;
    use super::*;

    const T: u64 = RESERVED_TAIL_SECTORS;

    #[test]
    fn a_former_member_is_readded_only_as_itself_within_the_load() {
        let sb = prepared_sb();
        let d = T + 1000;
        let blank = Err(FormatError::Blank);
        let former = classify_addition(d, &Ok(Superblock { role: 1, member_uuid: [3; 16], ..sb }), &blank, &sb.array_uuid, 1000);
        assert_eq!(former, Ok(Addition::Former { role: 1, member_uuid: [3; 16], in_sync: true, generation: 1 }));
        assert_eq!(classify_addition(d, &blank, &blank, &sb.array_uuid, 1000), Ok(Addition::Fresh));
        let f = former.unwrap();
        let g = prepared_sb().generation;
        assert!(may_readd(f, 1, &[3; 16], g, true));
        assert!(may_readd(f, 1, &[0; 16], g, true), "identity not known (absent at assembly)");
        assert!(!may_readd(f, 0, &[3; 16], g, true), "another role");
        assert!(!may_readd(f, 1, &[9; 16], g, true), "the role was replaced since");
        assert!(!may_readd(f, 1, &[3; 16], g + 1, true), "left before a role came back in sync");
        assert!(!may_readd(f, 1, &[3; 16], g, false), "no bitmap");
        assert!(!may_readd(Addition::Fresh, 1, &[3; 16], g, true));
        // A replacement whose rebuild had not ended when it left.
        let rebuilding = Superblock { role: 1, member_uuid: [3; 16], rebuild: Some(Rebuild { role: 1, position: 64 }), ..sb };
        let r = classify_addition(d, &Ok(rebuilding), &blank, &sb.array_uuid, 1000).unwrap();
        assert_eq!(r, Addition::Former { role: 1, member_uuid: [3; 16], in_sync: false, generation: 1 });
        assert!(!may_readd(r, 1, &[3; 16], 0, true), "never in sync");
        // Another role's rebuild says nothing against it.
        let other = Superblock { rebuild: Some(Rebuild { role: 2, position: 64 }), ..rebuilding };
        let o = classify_addition(d, &Ok(other), &blank, &sb.array_uuid, 1000).unwrap();
        assert!(may_readd(o, 1, &[3; 16], 0, true));
    }

    fn prepared_sb() -> Superblock {
        let d = T + 1000;
        let plan = plan_new(Level::Raid1, 128, &[d, d], 1).unwrap();
        let members = ArrayMembers::new([1; 16], 0, &[[2; 16], [3; 16]], &[d, d]);
        prepared_superblock(&plan, &members, 1, 42, None, false)
    }

    #[test]
    fn spare_slots_decode_as_a_spare_of_the_array() {
        let clean = Superblock { migration: None, state: ArrayState::Clean, generation: 12, ..prepared_sb() };
        for generation in [12, 13] {
            let newest = Superblock { generation, ..clean };
            let mut buf = [0xEEu8; 2 * SUPERBLOCK_BYTES];
            spare_slots(&newest, [8; 16], clean.device_sectors + 64, &mut buf).unwrap();
            let (a, b) = buf.split_at(SUPERBLOCK_BYTES);
            let (a, b) = (Superblock::decode_slot(a, 0), Superblock::decode_slot(b, 1));
            let sb = Superblock::newest(a, b).unwrap();
            assert_eq!((sb.role, sb.member_uuid, sb.generation, sb.array_uuid), (SPARE_ROLE, [8; 16], generation, clean.array_uuid));
            assert!([a, b].iter().filter(|s| s.is_err()).count() == 1, "the other slot is blank");
            // Offered again later (say, after a reload): welcome, not a re-add.
            let add = classify_addition(clean.device_sectors + 64, &a, &b, &clean.array_uuid, clean.layout.member_sectors()).unwrap();
            assert!(!may_readd(add, 1, &[8; 16], 0, true));
        }
    }

    #[test]
    fn additions() {
        let blank = Err(FormatError::Blank);
        let ours = Ok(Superblock { array_uuid: [5; 16], ..prepared_sb() });
        let theirs = Ok(Superblock { array_uuid: [6; 16], ..prepared_sb() });
        let need = 1000 + T;
        assert_eq!(check_addition(need, &blank, &blank, &[5; 16], 1000), Ok(()));
        assert_eq!(check_addition(need - 1, &blank, &blank, &[5; 16], 1000), Err(AddError::TooSmall));
        assert_eq!(check_addition(need, &ours, &blank, &[5; 16], 1000), Ok(()));
        assert_eq!(check_addition(need, &blank, &theirs, &[5; 16], 1000), Err(AddError::OtherArray));
        assert_eq!(
            check_addition(need, &Err(FormatError::BadChecksum), &blank, &[5; 16], 1000),
            Err(AddError::Damaged)
        );
        for e in [AddError::TooSmall, AddError::OtherArray, AddError::Damaged] {
            assert!(!e.message().is_empty());
        }
    }

    #[test]
    fn plans_and_refusals() {
        let d = T + 1000;
        let m = plan_new(Level::Raid5, 128, &[d, d + 5, d], 4).unwrap();
        assert_eq!(m.source().capacity(), 896);
        assert_eq!(m.target().capacity(), 2 * 896);
        assert_eq!(m.unit_rows(), 4);
        assert_eq!(must_be_zero(d, &m), (896, T + 104));
        assert!(all_zero(&[0; 512]) && !all_zero(&[0, 0, 1]));
        assert_eq!(plan_new(Level::Raid5, 128, &[d], 1), Err(PrepareError::TooFewMembers));
        assert_eq!(
            plan_new(Level::Raid0, 128, &[d, d - 1, d], 1),
            Err(PrepareError::MemberSmaller { device: 1 })
        );
        assert_eq!(
            plan_new(Level::Raid0, 128, &[T + 100, T + 100], 1),
            Err(PrepareError::Geometry(GeometryError::TooSmall))
        );
        assert_eq!(plan_new(Level::Raid0, 128, &[d; 17], 1), Err(PrepareError::TooManyMembers));
        assert_eq!(plan_new(Level::Raid1, 128, &[d, d], 1).unwrap().target().capacity(), 896);
    }

    #[test]
    fn unclaimed_devices() {
        let blank = Err(FormatError::Blank);
        let junk = Err(FormatError::BadMagic);
        assert_eq!(check_unclaimed(1, &blank, &junk), Ok(()));
        assert_eq!(
            check_unclaimed(2, &blank, &Err(FormatError::BadChecksum)),
            Err(PrepareError::DamagedSuperblock { device: 2 })
        );
        let d = T + 1000;
        let plan = plan_new(Level::Raid1, 128, &[d, d], 1).unwrap();
        let members = ArrayMembers::new([1; 16], 0, &[[2; 16], [3; 16]], &[d, d]);
        let sb = prepared_superblock(&plan, &members, 1, 42, None, false);
        assert_eq!(check_unclaimed(3, &Ok(sb), &blank), Err(PrepareError::AlreadyMember { device: 3 }));
        let mut buf = [0u8; 4096];
        sb.encode(&mut buf).unwrap();
        assert_eq!(Superblock::decode_slot(&buf, 1), Ok(sb));
    }
}

