//! The on-disk superblock, field by field, and its encoding. Where the
//! superblock slots sit in each member's reserved tail is [`super::tail`]'s.
//!
//! # Superblock (4096 bytes, little-endian integers)
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0x000 | 8  | magic, the ASCII bytes `RAIDMIGS` |
//! | 0x008 | 4  | format version, 1 |
//! | 0x00C | 4  | flags: bit 0 migration record valid, bit 1 a unit is in staging, bit 2 a write-intent bitmap is in use, bit 4 the role table holds a role not in sync, bit 5 the new layout is in effect at once (the volume has the target's capacity, units may be moved ahead of the checkpoint and are recorded in the moved-unit map of the tail; set only with bit 0); bit 3 (remote mirror leg) is reserved for later versions; any bit this version does not know makes the superblock unsupported (so a module that does not know failed roles refuses an array that has one rather than trust it) |
//! | 0x010 | 8  | generation, +1 at every update; the valid copy with the highest one wins |
//! | 0x018 | 16 | array UUID, the same on every member |
//! | 0x028 | 16 | member UUID |
//! | 0x038 | 4  | role: this member's index in the array (0 = the first member, which held the data before the migration); 0xFFFFFFFF on a hot spare (a device added to the array, holding no role: the rest of its superblock is the array's at the time it was added) |
//! | 0x03C | 4  | array state: 1 prepared, 2 migrating, 3 paused, 4 clean, 5 failed |
//! | 0x040 | 8  | this member's device size in sectors when the array was made (locates the tail; at most 2^49) |
//! | 0x048 | 8  | creation time, milliseconds since the Unix epoch |
//! | 0x050 | 8  | time of this update, milliseconds since the Unix epoch |
//! | 0x058 | 8  | reserved, zero |
//! | 0x060 | 24 | array layout (see *layout* below): level, member count, chunk, data size per member; the target layout while migrating |
//! | 0x078 | 8  | reserved, zero |
//! | 0x080 | 24 | migration record: source layout |
//! | 0x098 | 24 | migration record: target layout (equal to the array layout) |
//! | 0x0B0 | 4  | migration record: unit size, in target rows (a whole number of stripes) |
//! | 0x0B4 | 4  | reserved, zero |
//! | 0x0B8 | 8  | migration record: number of units |
//! | 0x0C0 | 8  | migration record: checkpoint, the first unit not yet durable in the target layout |
//! | 0x0C8 | 8  | migration record: the unit in staging when flag bit 1 is set (the checkpoint unit, or with flag bit 5 a unit after it being moved out of order), else zero |
//! | 0x0D0 | 16 | role table: one byte per role, 0 in sync, 1 faulty (failed, or missing at assembly: never read, written or trusted again), 2 rebuilding (a replacement, in sync below the rebuild position; at most one role); zero past the member count, all zero when flag bit 4 is clear |
//! | 0x0E0 | 8  | rebuild position: the logical sector below which the rebuilding role is in sync (a multiple of the stripe's data); zero when no role is rebuilding |
//! | 0x0E8 | 8  | re-add floor: the generation from which every role has been continuously out of sync if out of sync now: the last generation at which a role came back in sync (a rebuild ended) or a migration wrote (the bitmap covers no write of a migration); a former member that left in sync at a generation below it is rebuilt in full, never re-added from the bitmap |
//! | 0x0F0 | 16 | reserved, zero |
//! | 0x100 | 8  | write-intent bitmap: region size in sectors (a power of two, at least 2048) when flag bit 2 is set, else zero |
//! | 0x108 | 248 | reserved, zero |
//! | 0x200 | 3580 | reserved for remote mirror legs (version 1: zero) |
//! | 0xFFC | 4  | CRC32C of bytes 0x000..0xFFC |
//!
//! The migration record (0x080..0x0D0) is zero when flag bit 0 is clear.
//!
//! *Layout* (24 bytes): level code (u32: 0 single, 1 raid0, 2 raid1, 3 raid5
//! left-symmetric, 4 raid10 near-2), member count (u32), chunk in sectors
//! (u32), reserved zero (u32), data area per member in sectors (u64, a
//! multiple of the chunk, at most 2^48). Data areas start at sector 0 of every
//! member.

use super::crc32c::crc32c;
use super::bitmap::BitmapGeometry;
use super::health::Roles;
use super::layout::{Geometry, GeometryError, Level, MAX_MEMBERS, MAX_MEMBER_SECTORS, RESERVED_TAIL_SECTORS};
use super::plan::Migration;
use super::tail::{slot_of, SUPERBLOCK_BYTES};

/// The role of a hot spare's superblock (a device that holds no role).
pub const SPARE_ROLE: usize = usize::MAX;

const MAGIC: [u8; 8] = *b"RAIDMIGS";
const VERSION: u32 = 1;
const FLAG_MIGRATION: u32 = 1 << 0;
const FLAG_STAGED: u32 = 1 << 1;
const FLAG_BITMAP: u32 = 1 << 2;
const FLAG_ROLES: u32 = 1 << 4;
const FLAG_AT_ONCE: u32 = 1 << 5;
const KNOWN_FLAGS: u32 = FLAG_MIGRATION | FLAG_STAGED | FLAG_BITMAP | FLAG_ROLES | FLAG_AT_ONCE;
const BITMAP_REGION: usize = 0x100;
const ROLE_TABLE: usize = 0x0D0;
const READD_FLOOR: usize = 0x0E8;
const ROLE_FAULTY: u8 = 1;
const ROLE_REBUILDING: u8 = 2;
const REBUILD_POSITION: usize = 0x0E0;

/// A role being rebuilt onto a replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuild {
    /// The role.
    pub role: usize,
    /// The logical sector below which it is in sync.
    pub position: u64,
}
const CRC_OFFSET: usize = SUPERBLOCK_BYTES - 4;

/// The state of an array, as recorded and as shown in sysfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayState {
    /// Superblocks written, migration not started.
    Prepared,
    /// Migration under way (or interrupted: it resumes when assembled).
    Migrating,
    /// Migration paused by the user.
    Paused,
    /// In its layout, no migration.
    Clean,
    /// Stopped on an error; data stays where the record says.
    Failed,
}

impl ArrayState {
    /// Every state.
    pub const ALL: [ArrayState; 5] = [
        ArrayState::Prepared,
        ArrayState::Migrating,
        ArrayState::Paused,
        ArrayState::Clean,
        ArrayState::Failed,
    ];

    /// The name shown in sysfs.
    pub fn name(self) -> &'static str {
        match self {
            ArrayState::Prepared => "prepared",
            ArrayState::Migrating => "migrating",
            ArrayState::Paused => "paused",
            ArrayState::Clean => "clean",
            ArrayState::Failed => "failed",
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u32 {
        match self {
            ArrayState::Prepared => 1,
            ArrayState::Migrating => 2,
            ArrayState::Paused => 3,
            ArrayState::Clean => 4,
            ArrayState::Failed => 5,
        }
    }

    /// The state of an on-disk code.
    pub fn from_code(code: u32) -> Option<ArrayState> {
        ArrayState::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// Why a superblock slot cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The buffer is not [`SUPERBLOCK_BYTES`] long.
    BufferSize,
    /// All zeros: never written.
    Blank,
    /// No raidmig magic: not a raidmig superblock.
    BadMagic,
    /// The checksum does not match: torn or damaged.
    BadChecksum,
    /// A format version this code does not read.
    UnsupportedVersion,
    /// Flags this version does not know.
    UnsupportedFlags,
    /// Level, member count, chunk or data size invalid.
    BadLayout,
    /// The role is not below the member count.
    BadRole,
    /// Unknown array state.
    BadState,
    /// The device size cannot hold the data area and the reserved tail.
    BadDeviceSize,
    /// The migration record is inconsistent.
    BadMigration,
    /// The role table holds an unknown code, or a role past the member count.
    BadRoleTable,
    /// The bitmap's region size is not valid for the array.
    BadBitmap,
    /// The generation does not belong in the slot it was read from.
    WrongSlot,
}

impl FormatError {
    /// A sentence for the kernel log.
    pub fn message(self) -> &'static str {
        match self {
            FormatError::BufferSize => "superblock buffer is not 4096 bytes",
            FormatError::Blank => "no superblock (blank)",
            FormatError::BadMagic => "not a raidmig superblock",
            FormatError::BadChecksum => "superblock checksum mismatch (torn or damaged)",
            FormatError::UnsupportedVersion => "unsupported superblock format version",
            FormatError::UnsupportedFlags => "superblock uses features this version does not support",
            FormatError::BadLayout => "superblock has an invalid layout",
            FormatError::BadRole => "superblock role is not below the member count",
            FormatError::BadState => "superblock has an unknown array state",
            FormatError::BadDeviceSize => "superblock device size cannot hold the data area and tail",
            FormatError::BadMigration => "superblock migration record is inconsistent",
            FormatError::BadRoleTable => "superblock role table is invalid",
            FormatError::BadBitmap => "superblock bitmap descriptor is invalid",
            FormatError::WrongSlot => "superblock generation does not match its slot",
        }
    }
}

/// A migration in progress, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationRecord {
    /// Source and target layouts and unit size.
    pub plan: Migration,
    /// First unit not yet durable in the target layout.
    pub checkpoint: u64,
    /// The unit that sits, complete, in the staging areas, if one does:
    /// the checkpoint unit, or with `at_once` a unit after it being moved
    /// out of order.
    pub staged: Option<u64>,
    /// The new layout is in effect at once: the volume has the target's
    /// capacity and units are moved out of order where host I/O needs them,
    /// recorded in the moved-unit map ([`super::moved`]).
    pub at_once: bool,
}

/// The decoded contents of one superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Update counter; the newest valid copy wins.
    pub generation: u64,
    /// Identifies the array; the same on all members.
    pub array_uuid: [u8; 16],
    /// Identifies this member.
    pub member_uuid: [u8; 16],
    /// This member's index in the array.
    pub role: usize,
    /// Array state.
    pub state: ArrayState,
    /// This member's device size in sectors.
    pub device_sectors: u64,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
    /// Time of this update (ms since the epoch).
    pub updated_ms: u64,
    /// The array's layout (the target one while migrating).
    pub layout: Geometry,
    /// The migration under way, if any.
    pub migration: Option<MigrationRecord>,
    /// Roles recorded faulty.
    pub failed: Roles,
    /// The role being rebuilt, if any (not among `failed`).
    pub rebuild: Option<Rebuild>,
    /// The write-intent bitmap's region size in sectors, if the array has
    /// one.
    pub bitmap_region: Option<u64>,
    /// The re-add floor (see the table above): a former member whose own
    /// superblock is older left before the bitmap's cover began.
    pub readd_floor: u64,
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_layout(buf: &mut [u8], at: usize, g: &Geometry) {
    put_u32(buf, at, g.level().code());
    put_u32(buf, at + 4, g.members() as u32);
    put_u32(buf, at + 8, g.chunk_sectors());
    put_u32(buf, at + 12, 0);
    put_u64(buf, at + 16, g.member_sectors());
}

fn get_layout(buf: &[u8], at: usize) -> Result<Geometry, FormatError> {
    let level = Level::from_code(get_u32(buf, at)).ok_or(FormatError::BadLayout)?;
    let members = get_u32(buf, at + 4) as usize;
    let chunk = get_u32(buf, at + 8);
    let sectors = get_u64(buf, at + 16);
    let g =
        Geometry::new(level, members, chunk, sectors).map_err(|_: GeometryError| FormatError::BadLayout)?;
    if g.member_sectors() != sectors {
        return Err(FormatError::BadLayout);
    }
    Ok(g)
}

impl Superblock {
    /// Writes the superblock into `buf` (exactly [`SUPERBLOCK_BYTES`] long),
    /// checksum included.
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), FormatError> {
        if buf.len() != SUPERBLOCK_BYTES {
            return Err(FormatError::BufferSize);
        }
        buf.fill(0);
        buf[0..8].copy_from_slice(&MAGIC);
        put_u32(buf, 0x008, VERSION);
        let mut flags = 0;
        if let Some(m) = &self.migration {
            flags |= FLAG_MIGRATION;
            if m.staged.is_some() {
                flags |= FLAG_STAGED;
            }
            if m.at_once {
                flags |= FLAG_AT_ONCE;
            }
        }
        let failed = Roles(self.failed.0 & Roles::first(self.layout.members()).0);
        if !failed.is_empty() {
            flags |= FLAG_ROLES;
            for role in failed.iter() {
                buf[ROLE_TABLE + role] = ROLE_FAULTY;
            }
        }
        if let Some(r) = self.rebuild.filter(|r| r.role < self.layout.members() && !failed.contains(r.role)) {
            flags |= FLAG_ROLES;
            buf[ROLE_TABLE + r.role] = ROLE_REBUILDING;
            put_u64(buf, REBUILD_POSITION, r.position);
        }
        if let Some(region) = self.bitmap_region {
            flags |= FLAG_BITMAP;
            put_u64(buf, BITMAP_REGION, region);
        }
        put_u32(buf, 0x00C, flags);
        put_u64(buf, READD_FLOOR, self.readd_floor);
        put_u64(buf, 0x010, self.generation);
        buf[0x018..0x028].copy_from_slice(&self.array_uuid);
        buf[0x028..0x038].copy_from_slice(&self.member_uuid);
        put_u32(buf, 0x038, if self.role == SPARE_ROLE { u32::MAX } else { self.role as u32 });
        put_u32(buf, 0x03C, self.state.code());
        put_u64(buf, 0x040, self.device_sectors);
        put_u64(buf, 0x048, self.created_ms);
        put_u64(buf, 0x050, self.updated_ms);
        put_layout(buf, 0x060, &self.layout);
        if let Some(m) = &self.migration {
            put_layout(buf, 0x080, &m.plan.source());
            put_layout(buf, 0x098, &m.plan.target());
            put_u32(buf, 0x0B0, m.plan.unit_rows());
            put_u64(buf, 0x0B8, m.plan.units());
            put_u64(buf, 0x0C0, m.checkpoint);
            put_u64(buf, 0x0C8, m.staged.unwrap_or(0));
        }
        let crc = crc32c(&buf[..CRC_OFFSET]);
        put_u32(buf, CRC_OFFSET, crc);
        Ok(())
    }

    /// Reads and validates a superblock from `buf`. Any contents give a
    /// superblock or an error, never a panic.
    pub fn decode(buf: &[u8]) -> Result<Superblock, FormatError> {
        if buf.len() != SUPERBLOCK_BYTES {
            return Err(FormatError::BufferSize);
        }
        if buf[0..8] != MAGIC {
            return Err(if buf.iter().all(|&b| b == 0) { FormatError::Blank } else { FormatError::BadMagic });
        }
        if crc32c(&buf[..CRC_OFFSET]) != get_u32(buf, CRC_OFFSET) {
            return Err(FormatError::BadChecksum);
        }
        if get_u32(buf, 0x008) != VERSION {
            return Err(FormatError::UnsupportedVersion);
        }
        let flags = get_u32(buf, 0x00C);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::UnsupportedFlags);
        }
        let layout = get_layout(buf, 0x060)?;
        let role = match get_u32(buf, 0x038) {
            u32::MAX => SPARE_ROLE,
            r if (r as usize) < layout.members() => r as usize,
            _ => return Err(FormatError::BadRole),
        };
        let state = ArrayState::from_code(get_u32(buf, 0x03C)).ok_or(FormatError::BadState)?;
        let device_sectors = get_u64(buf, 0x040);
        if device_sectors < layout.member_sectors().saturating_add(RESERVED_TAIL_SECTORS)
            || device_sectors > 2 * MAX_MEMBER_SECTORS
        {
            return Err(FormatError::BadDeviceSize);
        }
        let migration = if flags & FLAG_MIGRATION != 0 {
            let source = get_layout(buf, 0x080).map_err(|_| FormatError::BadMigration)?;
            let target = get_layout(buf, 0x098).map_err(|_| FormatError::BadMigration)?;
            if target != layout
                || source.member_sectors().saturating_add(RESERVED_TAIL_SECTORS) > device_sectors
                    && role < source.members()
            {
                return Err(FormatError::BadMigration);
            }
            let plan =
                Migration::new(source, target, get_u32(buf, 0x0B0)).map_err(|_| FormatError::BadMigration)?;
            let checkpoint = get_u64(buf, 0x0C0);
            let staged = flags & FLAG_STAGED != 0;
            let at_once = flags & FLAG_AT_ONCE != 0;
            let staged_unit = get_u64(buf, 0x0C8);
            let consistent = get_u64(buf, 0x0B8) == plan.units()
                && checkpoint <= plan.units()
                && (!at_once || plan.units() <= super::moved::MAX_UNITS)
                && if staged {
                    (staged_unit == checkpoint || at_once && staged_unit > checkpoint) && staged_unit < plan.units()
                } else {
                    staged_unit == 0
                }
                && matches!(
                    state,
                    ArrayState::Prepared | ArrayState::Migrating | ArrayState::Paused | ArrayState::Failed
                );
            if !consistent {
                return Err(FormatError::BadMigration);
            }
            Some(MigrationRecord { plan, checkpoint, staged: staged.then_some(staged_unit), at_once })
        } else {
            if flags & (FLAG_STAGED | FLAG_AT_ONCE) != 0 || !matches!(state, ArrayState::Clean | ArrayState::Failed) {
                return Err(FormatError::BadMigration);
            }
            None
        };
        let mut failed = Roles::NONE;
        let mut rebuild = None;
        let table = flags & FLAG_ROLES != 0;
        for (role, &code) in buf[ROLE_TABLE..ROLE_TABLE + MAX_MEMBERS].iter().enumerate() {
            match code {
                0 => {}
                ROLE_FAULTY if role < layout.members() && table => failed = failed.with(role),
                ROLE_REBUILDING if role < layout.members() && table && rebuild.is_none() => {
                    rebuild = Some(Rebuild { role, position: get_u64(buf, REBUILD_POSITION) })
                }
                _ => return Err(FormatError::BadRoleTable),
            }
        }
        match rebuild {
            Some(r) if r.position > layout.capacity() => return Err(FormatError::BadRoleTable),
            None if get_u64(buf, REBUILD_POSITION) != 0 => return Err(FormatError::BadRoleTable),
            _ => {}
        }
        let region = get_u64(buf, BITMAP_REGION);
        let bitmap_region = if flags & FLAG_BITMAP != 0 {
            if BitmapGeometry::new(layout.capacity(), region).is_none() {
                return Err(FormatError::BadBitmap);
            }
            Some(region)
        } else if region != 0 {
            return Err(FormatError::BadBitmap);
        } else {
            None
        };
        let mut array_uuid = [0u8; 16];
        array_uuid.copy_from_slice(&buf[0x018..0x028]);
        let mut member_uuid = [0u8; 16];
        member_uuid.copy_from_slice(&buf[0x028..0x038]);
        Ok(Superblock {
            generation: get_u64(buf, 0x010),
            array_uuid,
            member_uuid,
            role,
            state,
            device_sectors,
            created_ms: get_u64(buf, 0x048),
            updated_ms: get_u64(buf, 0x050),
            layout,
            migration,
            failed,
            rebuild,
            bitmap_region,
            readd_floor: get_u64(buf, READD_FLOOR),
        })
    }

    /// Decodes the superblock read from slot `slot`, checking that its
    /// generation belongs there.
    pub fn decode_slot(buf: &[u8], slot: usize) -> Result<Superblock, FormatError> {
        let sb = Superblock::decode(buf)?;
        if slot_of(sb.generation) != slot {
            return Err(FormatError::WrongSlot);
        }
        Ok(sb)
    }

    /// The newest valid of a member's two slots. If neither is valid: `Blank`
    /// when both are blank (the device has no superblock), else the error of
    /// a slot that is not blank.
    pub fn newest(
        slot0: Result<Superblock, FormatError>,
        slot1: Result<Superblock, FormatError>,
    ) -> Result<Superblock, FormatError> {
        match (slot0, slot1) {
            (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(FormatError::Blank), Err(e)) | (Err(e), Err(_)) => Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        let source = Geometry::new(Level::Single, 1, 128, 128 * 100).unwrap();
        let target = Geometry::new(Level::Raid5, 3, 128, 128 * 100).unwrap();
        Superblock {
            generation: 7,
            array_uuid: [1; 16],
            member_uuid: [2; 16],
            role: 2,
            state: ArrayState::Migrating,
            device_sectors: 128 * 100 + RESERVED_TAIL_SECTORS + 5,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_500,
            layout: target,
            migration: Some(MigrationRecord {
                plan: Migration::new(source, target, 2).unwrap(),
                checkpoint: 9,
                staged: Some(9),
                at_once: false,
            }),
            failed: Roles::NONE,
            rebuild: None,
            bitmap_region: None,
            readd_floor: 3,
        }
    }

    #[test]
    fn round_trip_and_crc_position() {
        let sb = sample();
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        sb.encode(&mut buf).unwrap();
        assert_eq!(&buf[0..8], b"RAIDMIGS");
        assert_eq!(get_u32(&buf, 0xFFC), crc32c(&buf[..0xFFC]));
        assert_eq!(Superblock::decode(&buf), Ok(sb));
        assert_eq!(Superblock::decode_slot(&buf, 1), Ok(sb));
        assert_eq!(Superblock::decode_slot(&buf, 0), Err(FormatError::WrongSlot));
        let clean = Superblock { migration: None, state: ArrayState::Clean, ..sb };
        clean.encode(&mut buf).unwrap();
        assert_eq!(Superblock::decode(&buf), Ok(clean));
        assert!(buf[0x080..0x0D0].iter().all(|&b| b == 0));
    }

    #[test]
    fn at_once_records_a_staged_unit_past_the_checkpoint() {
        let base = sample();
        let m = base.migration.unwrap();
        let sb = Superblock { migration: Some(MigrationRecord { staged: Some(12), at_once: true, ..m }), ..base };
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        sb.encode(&mut buf).unwrap();
        assert_eq!(get_u32(&buf, 0x00C) & (FLAG_AT_ONCE | FLAG_STAGED), FLAG_AT_ONCE | FLAG_STAGED);
        assert_eq!(get_u64(&buf, 0x0C8), 12);
        assert_eq!(Superblock::decode(&buf), Ok(sb));
        // Without the flag a staged unit is the checkpoint's, and never one
        // before it or past the last.
        let refused = |staged: Option<u64>, at_once: bool| {
            let sb = Superblock { migration: Some(MigrationRecord { staged, at_once, ..m }), ..base };
            let mut buf = [0u8; SUPERBLOCK_BYTES];
            sb.encode(&mut buf).unwrap();
            Superblock::decode(&buf) == Err(FormatError::BadMigration)
        };
        assert!(refused(Some(12), false));
        assert!(refused(Some(8), true));
        assert!(refused(Some(m.plan.units()), true));
        assert!(!refused(Some(9), false) && !refused(Some(9), true) && !refused(None, true));
        // The flag without a migration record is refused.
        let clean = Superblock { migration: None, state: ArrayState::Clean, ..base };
        clean.encode(&mut buf).unwrap();
        let flags = get_u32(&buf, 0x00C) | FLAG_AT_ONCE;
        put_u32(&mut buf, 0x00C, flags);
        let crc = crc32c(&buf[..CRC_OFFSET]);
        put_u32(&mut buf, CRC_OFFSET, crc);
        assert_eq!(Superblock::decode(&buf), Err(FormatError::BadMigration));
    }

    #[test]
    fn spare_role() {
        let spare = Superblock { role: SPARE_ROLE, migration: None, state: ArrayState::Clean, ..sample() };
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        spare.encode(&mut buf).unwrap();
        assert_eq!(get_u32(&buf, 0x038), u32::MAX);
        assert_eq!(Superblock::decode(&buf), Ok(spare));
        // Any other role past the member count is refused.
        put_u32(&mut buf, 0x038, u32::MAX - 1);
        let crc = crc32c(&buf[..0xFFC]);
        put_u32(&mut buf, 0xFFC, crc);
        assert_eq!(Superblock::decode(&buf), Err(FormatError::BadRole));
    }

    #[test]
    fn role_table() {
        let sb = Superblock { failed: Roles::one(1), ..sample() };
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        sb.encode(&mut buf).unwrap();
        assert_eq!(get_u32(&buf, 0x00C) & FLAG_ROLES, FLAG_ROLES);
        assert_eq!(&buf[0x0D0..0x0D4], [0, 1, 0, 0]);
        assert_eq!(Superblock::decode(&buf), Ok(sb));
        // No failed role: the flag is clear and the table zero, as version 1
        // without the table wrote it.
        sample().encode(&mut buf).unwrap();
        assert_eq!(get_u32(&buf, 0x00C) & FLAG_ROLES, 0);
        assert!(buf[0x0D0..0x0E8].iter().all(|&b| b == 0) && buf[0x0F0..0x100].iter().all(|&b| b == 0));
        assert_eq!(get_u64(&buf, 0x0E8), sample().readd_floor);
        // A role past the member count is not recorded.
        Superblock { failed: Roles::one(5), ..sample() }.encode(&mut buf).unwrap();
        assert_eq!(Superblock::decode(&buf).map(|s| s.failed), Ok(Roles::NONE));
        // Damaged tables are refused.
        let patch = |at: usize, v: u8, flag: bool| {
            let mut b = [0u8; SUPERBLOCK_BYTES];
            sb.encode(&mut b).unwrap();
            b[at] = v;
            if !flag {
                let flags = get_u32(&b, 0x00C) & !FLAG_ROLES;
                put_u32(&mut b, 0x00C, flags);
            }
            let crc = crc32c(&b[..CRC_OFFSET]);
            put_u32(&mut b, CRC_OFFSET, crc);
            Superblock::decode(&b)
        };
        assert_eq!(patch(0x0D0 + 1, 7, true), Err(FormatError::BadRoleTable));
        assert_eq!(patch(0x0D0 + 3, 1, true), Err(FormatError::BadRoleTable));
        assert_eq!(patch(0x0D0 + 1, 1, false), Err(FormatError::BadRoleTable));
        // A rebuilding role and its position.
        let rb = Superblock { failed: Roles::one(0), rebuild: Some(Rebuild { role: 2, position: 384 }), ..sample() };
        rb.encode(&mut buf).unwrap();
        assert_eq!(&buf[0x0D0..0x0D4], [1, 0, 2, 0]);
        assert_eq!(get_u64(&buf, 0x0E0), 384);
        assert_eq!(Superblock::decode(&buf), Ok(rb));
        // Two rebuilding roles, or a position past the capacity: refused.
        let patch_rb = |at: usize, v: u8, pos: u64| {
            let mut b = [0u8; SUPERBLOCK_BYTES];
            rb.encode(&mut b).unwrap();
            b[at] = v;
            put_u64(&mut b, 0x0E0, pos);
            let crc = crc32c(&b[..CRC_OFFSET]);
            put_u32(&mut b, CRC_OFFSET, crc);
            Superblock::decode(&b)
        };
        assert_eq!(patch_rb(0x0D0 + 1, 2, 384), Err(FormatError::BadRoleTable));
        assert_eq!(patch_rb(0x0D0 + 1, 0, 1 << 40), Err(FormatError::BadRoleTable));
        assert_eq!(patch_rb(0x0D0 + 2, 0, 384), Err(FormatError::BadRoleTable));
    }

    #[test]
    fn bitmap_descriptor() {
        let sb = Superblock { bitmap_region: Some(2048), ..sample() };
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        sb.encode(&mut buf).unwrap();
        assert_eq!(get_u32(&buf, 0x00C) & FLAG_BITMAP, FLAG_BITMAP);
        assert_eq!(get_u64(&buf, 0x100), 2048);
        assert_eq!(Superblock::decode(&buf), Ok(sb));
        for (flag, region) in [(true, 1000u64), (true, 0), (false, 2048)] {
            let mut b = [0u8; SUPERBLOCK_BYTES];
            sb.encode(&mut b).unwrap();
            put_u64(&mut b, 0x100, region);
            if !flag {
                let f = get_u32(&b, 0x00C) & !FLAG_BITMAP;
                put_u32(&mut b, 0x00C, f);
            }
            let crc = crc32c(&b[..CRC_OFFSET]);
            put_u32(&mut b, CRC_OFFSET, crc);
            assert_eq!(Superblock::decode(&b), Err(FormatError::BadBitmap), "{flag} {region}");
        }
    }

    #[test]
    fn distinct_errors() {
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        assert_eq!(Superblock::decode(&buf), Err(FormatError::Blank));
        assert_eq!(Superblock::decode(&buf[..100]), Err(FormatError::BufferSize));
        buf[5] = 1;
        assert_eq!(Superblock::decode(&buf), Err(FormatError::BadMagic));
        let sb = sample();
        sb.encode(&mut buf).unwrap();
        buf[0x100] ^= 1;
        assert_eq!(Superblock::decode(&buf), Err(FormatError::BadChecksum));
        // Patch a field and fix the checksum: each check must fire.
        let cases: [(usize, u32, FormatError); 8] = [
            (0x008, 2, FormatError::UnsupportedVersion),
            (0x00C, 1 << 3 | 3, FormatError::UnsupportedFlags),
            (0x060, 9, FormatError::BadLayout),
            (0x068, 96, FormatError::BadLayout),
            (0x038, 3, FormatError::BadRole),
            (0x03C, 0, FormatError::BadState),
            (0x0C0, 9999, FormatError::BadMigration),
            (0x00C, 2, FormatError::BadMigration),
        ];
        for (at, value, want) in cases {
            sb.encode(&mut buf).unwrap();
            put_u32(&mut buf, at, value);
            let crc = crc32c(&buf[..CRC_OFFSET]);
            put_u32(&mut buf, CRC_OFFSET, crc);
            assert_eq!(Superblock::decode(&buf), Err(want), "field {at:#x}");
            assert!(!want.message().is_empty());
        }
        for device_sectors in [128 * 100, u64::MAX] {
            Superblock { device_sectors, ..sb }.encode(&mut buf).unwrap();
            assert_eq!(Superblock::decode(&buf), Err(FormatError::BadDeviceSize));
        }
    }

    #[test]
    fn newest_valid_slot_wins() {
        let a = sample();
        let b = Superblock { generation: 8, ..a };
        assert_eq!(Superblock::newest(Ok(b), Ok(a)), Ok(b));
        assert_eq!(Superblock::newest(Ok(a), Ok(b)), Ok(b));
        assert_eq!(Superblock::newest(Err(FormatError::BadChecksum), Ok(a)), Ok(a));
        assert_eq!(Superblock::newest(Ok(a), Err(FormatError::Blank)), Ok(a));
        assert_eq!(
            Superblock::newest(Err(FormatError::Blank), Err(FormatError::Blank)),
            Err(FormatError::Blank)
        );
        assert_eq!(
            Superblock::newest(Err(FormatError::Blank), Err(FormatError::BadChecksum)),
            Err(FormatError::BadChecksum)
        );
        assert_eq!(
            Superblock::newest(Err(FormatError::BadMagic), Err(FormatError::Blank)),
            Err(FormatError::BadMagic)
        );
    }
}
