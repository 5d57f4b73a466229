//! Preparing a reshape of an assembled array: members added, the chunk
//! changed or the level changed, with the checks to make before anything
//! is written and the superblocks that start it.
//!
//! A reshape is a migration like the first one (see [`super::plan`]): the
//! array's layout is the source, the new one the target, over the same
//! members in the same roles plus the members added after them, each
//! keeping its data area (md's component size). The planner moves data
//! front to back; every pair offered here is one it plans without a
//! forward overlap (checked for each pair by the planner's tests and by
//! the crash simulator). Only a settled array is reshaped: clean, with
//! every member in sync, nothing rebuilding; the shell also refuses while
//! a resync or scrub runs.
//!
//! Keeps invariants 7 and 1 of the theory (see the crate documentation):
//! every check here, every unit planned included, passes before the shell
//! writes anything; the pairs offered are those whose units never
//! overwrite source data of a later unit. The superblocks that start a
//! reshape outrank every earlier one (one generation newer) and record the
//! plan at checkpoint 0, so a power cut right after them resumes the
//! reshape from its start.

use super::bitmap::BitmapGeometry;
use super::engine::{Engine, EngineConfig, MemberIo, Time};
use super::format::{ArrayState, MigrationRecord, Superblock};
use super::health::Roles;
use super::layout::{valid_chunk, Geometry, GeometryError, Level, MAX_MEMBERS, RESERVED_TAIL_SECTORS};
use super::lifecycle::{io_error, read_slots, zero_moved, zero_range, LoadError};
use super::moved;
use super::members::ArrayMembers;
use super::plan::{Migration, PlanError};
use super::prepare::check_unclaimed;
use super::tail::{slot_of, superblock_sector, tail_start, BITMAP_OFFSET, BITMAP_SECTORS, SUPERBLOCK_BYTES};

/// What a reshape asks for: the new level, how many members are added
/// (after the current ones, in the order given), the new chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReshapeRequest {
    /// The level after the reshape.
    pub level: Level,
    /// Members added.
    pub add: usize,
    /// The chunk after the reshape, in sectors.
    pub chunk_sectors: u32,
}

impl ReshapeRequest {
    /// The request for an array of layout `current` (as the `reshape` knob
    /// gives it, [`super::config::parse_reshape`]): the level and chunk
    /// not given stay as they are.
    pub fn new(current: &Geometry, level: Option<Level>, add: usize, chunk_sectors: Option<u32>) -> ReshapeRequest {
        ReshapeRequest {
            level: level.unwrap_or(current.level()),
            add,
            chunk_sectors: chunk_sectors.unwrap_or(current.chunk_sectors()),
        }
    }
}

/// Why a reshape is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshapeError {
    /// The array is migrating, paused, prepared or failed: not settled.
    NotSettled(ArrayState),
    /// A member is failed.
    Degraded,
    /// A replacement is being rebuilt.
    Rebuilding,
    /// The chunk is not a power of two from 4 KiB to 4 MiB.
    Chunk,
    /// The pair of levels (or this way of changing one) is not supported.
    Unsupported,
    /// The request changes nothing.
    Unchanged,
    /// The members added do not suit the pair (see [`ReshapeError::message`]).
    MemberCount,
    /// Added device `device` (index among those added) cannot hold the
    /// data area and the reserved tail.
    TooSmall {
        /// Index among the devices added.
        device: usize,
    },
    /// The new layout cannot be built.
    Geometry(GeometryError),
    /// The array's write-intent bitmap cannot cover the new capacity with
    /// its regions.
    Bitmap,
    /// The reshape cannot be planned (the new layout would be smaller, most
    /// often: a larger chunk that the data area is not a multiple of).
    Plan(PlanError),
}

impl ReshapeError {
    /// A sentence for the kernel log (the shell adds the device path).
    pub fn message(self) -> &'static str {
        match self {
            ReshapeError::NotSettled(_) => "the array is migrating, reshaping, paused or failed: reshape a clean array",
            ReshapeError::Degraded => "the array is degraded: replace the failed member first",
            ReshapeError::Rebuilding => "a member is being rebuilt: wait until the rebuild ends",
            ReshapeError::Chunk => GeometryError::Chunk.message(),
            ReshapeError::Unsupported => {
                "unsupported reshape; supported: members added to raid0, raid5 or raid10; a new chunk for raid0, \
                 raid5 or raid10; raid1 to raid5 or raid10 with members added; raid0 to raid5 with one member \
                 added; raid0 to raid10 with as many members added as it has"
            }
            ReshapeError::Unchanged => "the reshape changes nothing",
            ReshapeError::MemberCount => {
                "wrong number of members added: a new chunk adds none, a grow at least one, raid0 to raid5 \
                 exactly one, raid0 to raid10 as many as raid0 has"
            }
            ReshapeError::TooSmall { .. } => {
                "added device too small: it must hold the data area of a member and the 16 MiB reserved tail"
            }
            ReshapeError::Geometry(e) => e.message(),
            ReshapeError::Bitmap => "the write-intent bitmap's regions cannot cover the new capacity",
            ReshapeError::Plan(e) => e.message(),
        }
    }
}

/// Plans the reshape `req` of the settled array whose newest superblock is
/// `newest`, with added devices of `added_sectors` sectors each (as many as
/// `req.add`), in units of up to `unit_stripes` target stripes.
pub fn plan_reshape(
    newest: &Superblock,
    req: ReshapeRequest,
    added_sectors: &[u64],
    unit_stripes: u32,
) -> Result<Migration, ReshapeError> {
    match newest.state {
        ArrayState::Clean => {}
        s => return Err(ReshapeError::NotSettled(s)),
    }
    if newest.migration.is_some() {
        return Err(ReshapeError::NotSettled(newest.state));
    }
    if newest.failed != Roles::NONE {
        return Err(ReshapeError::Degraded);
    }
    if newest.rebuild.is_some() {
        return Err(ReshapeError::Rebuilding);
    }
    // Before the pair's checks, which compare chunks.
    if !valid_chunk(req.chunk_sectors) {
        return Err(ReshapeError::Chunk);
    }
    let source = newest.layout;
    let n = source.members();
    let chunk_changed = req.chunk_sectors != source.chunk_sectors() && source.level() != Level::Raid1;
    use Level::*;
    // The pairs, and the members each may add.
    let adds_ok = match (source.level(), req.level) {
        (Raid0 | Raid5 | Raid10, l) if l == source.level() => {
            if req.add == 0 && !chunk_changed {
                return Err(ReshapeError::Unchanged);
            }
            // One change at a time: members added, or a new chunk.
            (req.add == 0) == chunk_changed
        }
        (Raid1, Raid5) | (Raid1, Raid10) => req.add >= 1,
        (Raid0, Raid5) => req.add == 1 && !chunk_changed,
        (Raid0, Raid10) => req.add == n && !chunk_changed,
        _ => return Err(ReshapeError::Unsupported),
    };
    if !adds_ok || added_sectors.len() != req.add || n + req.add > MAX_MEMBERS {
        return Err(ReshapeError::MemberCount);
    }
    let member_sectors = source.member_sectors();
    if let Some(device) = added_sectors.iter().position(|&d| d < member_sectors.saturating_add(RESERVED_TAIL_SECTORS)) {
        return Err(ReshapeError::TooSmall { device });
    }
    let target = Geometry::new(req.level, n + req.add, req.chunk_sectors, member_sectors).map_err(ReshapeError::Geometry)?;
    if newest.bitmap_region.is_some_and(|r| BitmapGeometry::new(target.capacity(), r).is_none()) {
        return Err(ReshapeError::Bitmap);
    }
    let rows = Migration::unit_rows_for(&source, &target, unit_stripes);
    let plan = Migration::new(source, target, rows).map_err(ReshapeError::Plan)?;
    // Every unit planned now, not half-way: a pair that cannot be copied
    // front to back is refused before anything is written.
    for unit in 0..plan.units() {
        plan.classify(unit).map_err(ReshapeError::Plan)?;
    }
    Ok(plan)
}

/// The superblock of member `role` that starts reshape `plan` of the array
/// whose newest superblock is `newest`: one generation newer, the new
/// layout, the migration at checkpoint 0, migrating (the request to reshape
/// is the start: a power cut before the first checkpoint resumes it at the
/// next load, as one after it does). `members` holds every member, those added
/// included (their identities drawn by the shell).
pub fn reshape_superblock(
    newest: &Superblock,
    plan: &Migration,
    members: &ArrayMembers,
    role: usize,
    now_ms: u64,
    at_once: bool,
) -> Superblock {
    Superblock {
        generation: newest.generation + 1,
        member_uuid: members.uuids[role],
        role,
        state: ArrayState::Migrating,
        device_sectors: members.device_sectors[role],
        updated_ms: now_ms,
        layout: plan.target(),
        migration: Some(MigrationRecord { plan: *plan, checkpoint: 0, staged: None, at_once }),
        failed: Roles::NONE,
        rebuild: None,
        ..*newest
    }
}

/// Starts reshape `plan` of the array whose newest superblock is `newest`
/// over `members` (those added included, in roles after the current ones):
/// checks that no added device carries a raidmig superblock (reads only),
/// then zeroes the added devices' bitmap areas where the array keeps a
/// bitmap (bits a former life left there would read as dirty regions),
/// writes every member's [`reshape_superblock`], the added members first,
/// flushes, and returns the engine that runs the reshape. A cut before the
/// flush leaves some members one generation behind, which the next
/// assembly brings level (nothing has moved at checkpoint 0). Errors name
/// the member by role. With `at_once` (and units that fit a moved-unit
/// map) the new layout is in effect at once: the map `io` holds is sized
/// and its blocks on every member zeroed before the superblocks.
#[allow(clippy::too_many_arguments)]
pub fn start_reshape<I: MemberIo>(
    io: &mut I,
    newest: &Superblock,
    plan: &Migration,
    members: &ArrayMembers,
    config: EngineConfig,
    at_once: bool,
    now: Time,
    buf: &mut [u8],
) -> Result<Engine, LoadError> {
    let at_once = at_once && plan.units() <= moved::MAX_UNITS;
    let (n, all) = (newest.layout.members(), plan.target().members());
    if buf.len() < 2 * SUPERBLOCK_BYTES {
        return Err(LoadError::Engine(super::engine::EngineError::BufferTooSmall));
    }
    for role in n..all {
        let (a, b) = read_slots(io, role, members.device_sectors[role], buf)?;
        check_unclaimed(role, &a, &b).map_err(LoadError::Prepare)?;
    }
    if newest.bitmap_region.is_some() {
        for role in n..all {
            let sectors = members.device_sectors[role];
            zero_range(io, role, tail_start(sectors) + BITMAP_OFFSET, BITMAP_SECTORS, buf)?;
        }
    }
    if at_once {
        if !io.prepare_moved(plan.units()) {
            return Err(LoadError::NoMemory);
        }
        zero_moved(io, &members.device_sectors[..all], plan.units(), buf)?;
    }
    let sb_buf = &mut buf[..SUPERBLOCK_BYTES];
    for role in Iterator::chain(n..all, 0..n) {
        let sb = reshape_superblock(newest, plan, members, role, now.wall_ms, at_once);
        sb.encode(sb_buf).map_err(|e| LoadError::Engine(super::engine::EngineError::Format(e)))?;
        let sector = superblock_sector(members.device_sectors[role], slot_of(sb.generation));
        io.write(role, sector, sb_buf).map_err(io_error)?;
    }
    io.flush().map_err(io_error)?;
    Engine::resume(&reshape_superblock(newest, plan, members, 0, now.wall_ms, at_once), config, now).map_err(LoadError::Engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    const DATA: u64 = 64 * 128; // member data area, sectors

    /// A settled array's superblock (the format's sample, clean, with a
    /// bitmap).
    fn clean(level: Level, members: usize, chunk: u32) -> Superblock {
        let layout = Geometry::new(level, members, chunk, DATA).unwrap();
        let state = ArrayState::Clean;
        Superblock { state, layout, migration: None, bitmap_region: Some(4096), ..crate::format::tests::sample() }
    }

    fn req(level: Level, add: usize, chunk_sectors: u32) -> ReshapeRequest {
        ReshapeRequest { level, add, chunk_sectors }
    }

    const DEV: u64 = DATA + RESERVED_TAIL_SECTORS;

    #[test]
    fn every_supported_pair_plans() {
        let ok = [
            (clean(Raid0, 2, 128), req(Raid0, 1, 128)),
            (clean(Raid0, 3, 128), req(Raid0, 2, 128)),
            (clean(Raid5, 3, 128), req(Raid5, 1, 128)),
            (clean(Raid10, 4, 128), req(Raid10, 1, 128)),
            (clean(Raid0, 3, 128), req(Raid0, 0, 256)),
            (clean(Raid5, 3, 128), req(Raid5, 0, 32)),
            (clean(Raid10, 4, 128), req(Raid10, 0, 1024)),
            (clean(Raid1, 2, 128), req(Raid5, 1, 128)),
            (clean(Raid1, 2, 128), req(Raid5, 2, 64)),
            (clean(Raid0, 2, 128), req(Raid5, 1, 128)),
            (clean(Raid0, 2, 128), req(Raid10, 2, 128)),
            (clean(Raid1, 2, 128), req(Raid10, 2, 128)),
        ];
        for (sb, r) in ok {
            let plan = plan_reshape(&sb, r, &[DEV; MAX_MEMBERS][..r.add], 4).unwrap();
            assert_eq!(plan.source(), sb.layout);
            assert_eq!(plan.target().level(), r.level);
            assert_eq!(plan.target().members(), sb.layout.members() + r.add);
            assert!(plan.target().capacity() >= sb.layout.capacity());
            // The superblocks that start it: newer, migrating, at 0.
            let count = r.add + sb.layout.members();
            let members = ArrayMembers::new([1; 16], 1, &[[9; 16]; MAX_MEMBERS][..count], &[DEV; MAX_MEMBERS][..count]);
            let new = reshape_superblock(&sb, &plan, &members, 1, 50, false);
            assert_eq!((new.generation, new.state, new.role, new.layout), (8, ArrayState::Migrating, 1, plan.target()));
            assert_eq!(new.migration.map(|m| (m.checkpoint, m.staged)), Some((0, None)));
            assert_eq!((new.array_uuid, new.bitmap_region, new.readd_floor), (sb.array_uuid, sb.bitmap_region, 3));
        }
    }

    #[test]
    fn what_is_not_given_stays() {
        let g = clean(Raid5, 3, 128).layout;
        assert_eq!(ReshapeRequest::new(&g, None, 1, None), req(Raid5, 1, 128));
        assert_eq!(ReshapeRequest::new(&g, Some(Raid0), 0, Some(64)), req(Raid0, 0, 64));
    }

    #[test]
    fn refusals_name_the_reason() {
        let r5 = clean(Raid5, 3, 128);
        let grow = req(Raid5, 1, 128);
        let refused = |sb: &Superblock, r: ReshapeRequest, added: &[u64]| plan_reshape(sb, r, added, 4).unwrap_err();
        for state in [ArrayState::Migrating, ArrayState::Paused, ArrayState::Prepared, ArrayState::Failed] {
            assert_eq!(refused(&Superblock { state, ..r5 }, grow, &[DEV]), ReshapeError::NotSettled(state));
        }
        assert_eq!(refused(&Superblock { failed: Roles::one(2), ..r5 }, grow, &[DEV]), ReshapeError::Degraded);
        let rebuild = Some(crate::format::Rebuild { role: 2, position: 0 });
        assert_eq!(refused(&Superblock { rebuild, ..r5 }, grow, &[DEV]), ReshapeError::Rebuilding);
        for chunk in [0, 4, 12, 16384] {
            assert_eq!(refused(&r5, req(Raid5, 1, chunk), &[DEV]), ReshapeError::Chunk);
        }
        assert_eq!(refused(&r5, req(Raid5, 0, 128), &[]), ReshapeError::Unchanged);
        assert_eq!(refused(&r5, req(Raid1, 0, 128), &[]), ReshapeError::Unsupported);
        assert_eq!(refused(&r5, req(Raid10, 1, 128), &[DEV]), ReshapeError::Unsupported);
        // Members and chunk at once; raid0 -> raid5 with two added.
        assert_eq!(refused(&r5, req(Raid5, 1, 256), &[DEV]), ReshapeError::MemberCount);
        assert_eq!(refused(&clean(Raid0, 2, 128), req(Raid5, 2, 128), &[DEV, DEV]), ReshapeError::MemberCount);
        assert_eq!(refused(&clean(Raid0, 2, 128), req(Raid10, 1, 128), &[DEV]), ReshapeError::MemberCount);
        assert_eq!(refused(&r5, grow, &[]), ReshapeError::MemberCount);
        assert_eq!(refused(&r5, req(Raid5, 14, 128), &[DEV; 14]), ReshapeError::MemberCount);
        assert_eq!(refused(&r5, req(Raid5, 2, 128), &[DEV, DEV - 1]), ReshapeError::TooSmall { device: 1 });
        // A chunk the data area is not a multiple of: the new layout would
        // be smaller than the volume.
        let odd = Superblock { layout: Geometry::new(Raid0, 2, 128, DATA + 128).unwrap(), ..clean(Raid0, 2, 128) };
        assert_eq!(refused(&odd, req(Raid0, 0, 256), &[]), ReshapeError::Plan(PlanError::TargetTooSmall));
        for e in [ReshapeError::Unsupported, ReshapeError::MemberCount, ReshapeError::Degraded] {
            assert!(!e.message().is_empty());
        }
    }

    /// Members as sectors written (unwritten ones read as zeros), with
    /// the writes counted.
    #[derive(Default)]
    struct Disks {
        sectors: std::collections::HashMap<(usize, u64), std::vec::Vec<u8>>,
        writes: usize,
    }

    impl MemberIo for Disks {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), crate::engine::IoError> {
            for (i, s) in buf.chunks_mut(512).enumerate() {
                match self.sectors.get(&(member, sector + i as u64)) {
                    Some(b) => s.copy_from_slice(b),
                    None => s.fill(0),
                }
            }
            Ok(())
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), crate::engine::IoError> {
            self.writes += 1;
            for (i, s) in buf.chunks(512).enumerate() {
                self.sectors.insert((member, sector + i as u64), s.to_vec());
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), crate::engine::IoError> {
            Ok(())
        }
        fn publish(&mut self, _view: &crate::route::View) {}
        fn checkpoint_requested(&mut self) -> bool {
            false
        }
    }

    fn newest_of(disks: &mut Disks, role: usize, dev: u64) -> Superblock {
        let mut buf = [0u8; 2 * SUPERBLOCK_BYTES];
        let (a, b) = read_slots(disks, role, dev, &mut buf).unwrap();
        Superblock::newest(a, b).unwrap()
    }

    #[test]
    fn a_reshape_starts_with_every_superblock_newer() {
        let sb = clean(Raid5, 3, 128);
        let plan = plan_reshape(&sb, req(Raid5, 2, 128), &[DEV; 2], 4).unwrap();
        let members = ArrayMembers::new([1; 16], 1, &[[9; 16]; 5], &[DEV; 5]);
        let config = EngineConfig::default();
        let mut buf = std::vec![0u8; 1 << 20];

        // An added device that is a member of an array is refused before
        // anything is written.
        let mut disks = Disks::default();
        let other = reshape_superblock(&sb, &plan, &members, 4, 0, false);
        let mut block = [0u8; SUPERBLOCK_BYTES];
        other.encode(&mut block).unwrap();
        disks.write(4, superblock_sector(DEV, slot_of(other.generation)), &block).unwrap();
        let e = start_reshape(&mut disks, &sb, &plan, &members, config, false, Time::at(7), &mut buf).unwrap_err();
        assert_eq!(e, LoadError::Prepare(crate::prepare::PrepareError::AlreadyMember { device: 4 }));
        assert_eq!(disks.writes, 1, "nothing written after the refusal");

        // Blank added devices, a bitmap area with bits of a former life.
        let mut disks = Disks::default();
        disks.write(3, tail_start(DEV) + BITMAP_OFFSET + 5, &[0xff; 512]).unwrap();
        let engine = start_reshape(&mut disks, &sb, &plan, &members, config, false, Time::at(7), &mut buf).unwrap();
        assert_eq!((engine.state(), engine.generation(), *engine.plan()), (ArrayState::Migrating, sb.generation + 1, plan));
        for role in 0..5 {
            let got = newest_of(&mut disks, role, DEV);
            assert_eq!(got, reshape_superblock(&sb, &plan, &members, role, Time::at(7).wall_ms, false), "role {role}");
        }
        let mut area = std::vec![0u8; 512];
        disks.read(3, tail_start(DEV) + BITMAP_OFFSET + 5, &mut area).unwrap();
        assert!(area.iter().all(|&b| b == 0), "the added member's bitmap area is zeroed");
    }

    #[test]
    fn a_bitmap_that_cannot_cover_the_new_capacity_is_refused() {
        // The smallest region over an array whose capacity needs more bits
        // than the bitmap area holds after the grow.
        let region = crate::bitmap::MIN_REGION_SECTORS;
        let max = crate::bitmap::MAX_REGIONS * region;
        let data = (max / 2) & !127;
        let layout = Geometry::new(Raid0, 2, 128, data).unwrap();
        let sb = Superblock { layout, bitmap_region: Some(region), ..clean(Raid0, 2, 128) };
        let dev = data + RESERVED_TAIL_SECTORS;
        assert!(BitmapGeometry::new(layout.capacity(), region).is_some());
        assert_eq!(plan_reshape(&sb, req(Raid0, 1, 128), &[dev], 1 << 16).unwrap_err(), ReshapeError::Bitmap);
    }
}
