//! The load sequence: from the members given at load time to an array that
//! can be exposed to the host, or a refusal. The kernel's load and the host
//! simulator both run this code, over [`MemberIo`].
//!
//! Keeps invariants 4, 5 and 11 of the theory (see the crate
//! documentation): members leave the load at most one generation apart
//! (lagging ones are brought level before anything else is written), no
//! unit is left in flight when the volume is exposed (a unit recorded in
//! staging is finished here, or routed to the staging area if a member
//! error stops that), and a migration with the new layout in effect at once
//! resumes with the union of its members' moved-unit maps, read before
//! anything is written (and zeroed, where a new migration will use them,
//! before its first superblock).
//!
//! With a level (a new array), every device is checked before anything is
//! written: none may belong to a raidmig array, all must be at least as
//! large as the first, the layout must fit, and the first device's tail
//! must be free (its data ends before the reserved tail). Then the first
//! superblocks are written, joining members first and the user's disk last,
//! and flushed.
//!
//! Without a level, the array is assembled from the superblocks in any
//! device order ([`super::assemble`]); members one generation behind are written
//! level with the newest ([`catch_up`]); the state to resume from is taken
//! from the newest superblock; and a unit left in the staging area by a power
//! cut or a member error is finished before the volume is exposed, since a
//! host request for it would otherwise wait for a migration thread that only
//! starts once the volume exists.

use core::sync::atomic::AtomicU64;

use super::assemble::{assemble_with, AssembleError, AssembleErrorKind, Assembly};
use super::engine::{Engine, EngineConfig, EngineError, IoError, MemberIo, Time};
use super::format::{ArrayState, FormatError, Superblock};
use super::bitmap::{any_set, unsafe_dirt_from, BitmapGeometry};
use super::health::{Health, Roles};
use super::record::Record;
use super::layout::{Geometry, GeometryError, Level, MAX_MEMBERS, SECTOR_SHIFT};
use super::members::ArrayMembers;
use super::moved;
use super::prepare::{self, PrepareError};
use super::route::View;
use super::tail::{slot_of, superblock_sector, tail_start, BITMAP_OFFSET, BITMAP_SECTORS, SUPERBLOCK_BYTES};

/// Target data per migration unit, in sectors (4 MiB): big enough that
/// per-unit costs (publishing the unit in flight and draining the requests
/// admitted before, a wait per batch of member I/O, a flush now and then)
/// stay small beside the copy, small enough that a host request waiting for
/// the unit in flight waits for little (about 40 ms at 100 MB/s). Measured
/// (bench-migration.sh) against 1 MiB units: single -> raid1 went from 0.82
/// to 1.03 of its floor; raid0, raid5 and raid10 did not change measurably.
/// Recorded in the superblock: a change here only affects migrations
/// created after it.
pub const UNIT_SECTORS: u64 = 8192;

/// The errno a refusal maps to (the shell turns it into its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// `EINVAL`: a bad request.
    Inval,
    /// `ENOSPC`: a member too small, or a tail that holds data.
    NoSpc,
    /// `EEXIST`: a member of a raidmig array given for a new one, or of
    /// another array.
    Exist,
    /// `EUCLEAN`: damaged or disagreeing superblocks.
    Uclean,
    /// `ESTALE`: a member that missed updates.
    Stale,
    /// `EIO`: a member I/O error.
    Io,
    /// `ENOMEM`: memory the array needs could not be had.
    NoMem,
}

/// What the user asked for (module parameters, already validated).
#[derive(Clone, Copy, Debug)]
pub struct LoadParams {
    /// The new array's level; `None` to assemble from the superblocks.
    pub level: Option<Level>,
    /// Chunk size of a new array, in sectors.
    pub chunk_sectors: u32,
    /// Make a new array directly in its layout (new, empty disks).
    pub assume_clean: bool,
    /// Take the first device's tail even if it holds data.
    pub force: bool,
    /// Start a new migration at once.
    pub start: bool,
    /// Target data per unit of a new migration, in sectors.
    pub unit_sectors: u64,
    /// Region of a new array's write-intent bitmap, in sectors (0: no
    /// bitmap).
    pub bitmap_region_sectors: u64,
    /// The engine's tuning.
    pub engine: EngineConfig,
    /// Put a new migration's layout in effect at once (see
    /// [`super::format::MigrationRecord::at_once`]), where its units fit a
    /// moved-unit map.
    pub at_once: bool,
}

/// What the shell draws at random for a new array.
#[derive(Clone, Copy, Debug)]
pub struct Fresh {
    /// The array's UUID.
    pub array_uuid: [u8; 16],
    /// Member UUIDs, by role.
    pub member_uuids: [[u8; 16]; MAX_MEMBERS],
}

/// Why a load is refused. Nothing was written unless the variant says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The new array cannot be made (device index inside, where it applies).
    Prepare(PrepareError),
    /// The first device holds data at sector `at` within the range
    /// `[start, start + sectors)` that must be free.
    TailInUse {
        /// First sector that must be free.
        start: u64,
        /// How many sectors must be free.
        sectors: u64,
        /// The first sector that is not zero.
        at: u64,
    },
    /// The devices do not make up an array.
    Assemble(AssembleError),
    /// Device `device` is not the size its superblock records.
    SizeChanged {
        /// Index of the device in the order given.
        device: usize,
    },
    /// An I/O error on device `device` (in the order given); writes may
    /// have happened before it (first superblocks, catch-up).
    Io {
        /// Index of the device in the order given.
        device: usize,
        /// The negative errno.
        errno: i32,
    },
    /// The recorded migration cannot be resumed.
    Engine(EngineError),
    /// The bitmap region is not a power of two of at least 1 MiB, or too
    /// small for the array's size.
    BadBitmapRegion,
    /// A raid5 shut down uncleanly (bitmap bits set) is also degraded: its
    /// parity cannot be trusted (`force` starts it anyway).
    DirtyDegraded,
    /// The moved-unit map of a migration with the new layout in effect at
    /// once could not be allocated.
    NoMemory,
}

impl LoadError {
    /// A sentence for the kernel log (the shell adds the device path where
    /// [`LoadError::device`] names one).
    pub fn message(&self) -> &'static str {
        match self {
            LoadError::Prepare(e) => e.message(),
            LoadError::TailInUse { .. } => "the reserved tail at the end of the first member holds data",
            LoadError::Assemble(e) => e.message(),
            LoadError::SizeChanged { .. } => "member changed size since it joined the array",
            LoadError::Io { .. } => "member I/O error while loading",
            LoadError::Engine(e) => e.message(),
            LoadError::DirtyDegraded => {
                "raid5 was shut down uncleanly while a member was out of sync where it was written: that parity cannot be trusted to rebuild the member (force=1 starts it anyway)"
            }
            LoadError::BadBitmapRegion => {
                "bitmap region must be a power of two of at least 1 MiB, and large enough for the array"
            }
            LoadError::NoMemory => "no memory for the migration's moved-unit map",
        }
    }

    /// The device concerned, as an index in the order given.
    pub fn device(&self) -> Option<usize> {
        match *self {
            LoadError::Prepare(
                PrepareError::MemberSmaller { device }
                | PrepareError::AlreadyMember { device }
                | PrepareError::DamagedSuperblock { device },
            ) => Some(device),
            LoadError::TailInUse { .. } => Some(0),
            LoadError::Assemble(e) => match e.kind {
                AssembleErrorKind::NoDevices | AssembleErrorKind::WrongCount => None,
                _ => Some(e.device),
            },
            LoadError::SizeChanged { device } | LoadError::Io { device, .. } => Some(device),
            _ => None,
        }
    }

    /// The errno to report.
    pub fn errno(&self) -> Errno {
        match self {
            LoadError::Prepare(PrepareError::MemberSmaller { .. })
            | LoadError::Prepare(PrepareError::Geometry(GeometryError::TooSmall))
            | LoadError::TailInUse { .. } => Errno::NoSpc,
            LoadError::Prepare(PrepareError::AlreadyMember { .. }) => Errno::Exist,
            LoadError::Prepare(PrepareError::DamagedSuperblock { .. }) => Errno::Uclean,
            LoadError::Prepare(_) => Errno::Inval,
            LoadError::Assemble(e) => match e.kind {
                AssembleErrorKind::Unreadable(_) | AssembleErrorKind::Disagree => Errno::Uclean,
                AssembleErrorKind::Foreign => Errno::Exist,
                AssembleErrorKind::Stale => Errno::Stale,
                _ => Errno::Inval,
            },
            LoadError::SizeChanged { .. } | LoadError::Engine(_) | LoadError::BadBitmapRegion => Errno::Inval,
            LoadError::Io { .. } => Errno::Io,
            LoadError::DirtyDegraded => Errno::Uclean,
            LoadError::NoMemory => Errno::NoMem,
        }
    }
}

/// The state an array resumes in.
#[derive(Clone, Copy, Debug)]
pub enum Recovered {
    /// No migration: the array is in `layout`, in `state` (clean or failed).
    Settled {
        /// The array's layout.
        layout: Geometry,
        /// Its state.
        state: ArrayState,
        /// Its superblock record.
        record: Record,
    },
    /// A migration to run (or paused, or failed with its record).
    Migration(Engine),
}

impl Recovered {
    /// The view host I/O starts with.
    pub fn view(&self) -> View {
        match self {
            Recovered::Settled { layout, state, .. } => View::clean(*state, layout.capacity()),
            Recovered::Migration(e) => e.view(),
        }
    }

    /// The layout the array is in (migrated to).
    pub fn target(&self) -> Geometry {
        match self {
            Recovered::Settled { layout, .. } => *layout,
            Recovered::Migration(e) => e.plan().target(),
        }
    }

    /// Roles recorded faulty.
    pub fn failed(&self) -> Roles {
        match self {
            Recovered::Settled { record, .. } => record.failed(),
            Recovered::Migration(e) => e.failed(),
        }
    }

    /// The write-intent bitmap's region, if the array keeps one.
    pub fn bitmap_region(&self) -> Option<u64> {
        match self {
            Recovered::Settled { record, .. } => record.newest.bitmap_region,
            Recovered::Migration(e) => e.bitmap_region(),
        }
    }

    /// What is not in sync, as recorded.
    pub fn health(&self) -> Health {
        match self {
            Recovered::Settled { record, .. } => Health { failed: record.failed(), rebuild: record.rebuild() },
            Recovered::Migration(e) => Health { failed: e.failed(), rebuild: e.rebuild() },
        }
    }

    /// Records the roles of `failed` faulty besides those already recorded
    /// ([`Record::record`], [`Engine::record_failed`]). `buf` must hold at
    /// least [`SUPERBLOCK_BYTES`].
    pub fn record_failed<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        failed: Roles,
        now: Time,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        match self {
            Recovered::Settled { record, .. } => record.record(io, members, failed, now, buf),
            Recovered::Migration(e) => e.record_failed(io, members, buf, failed, now).map_err(|e| match e {
                EngineError::Io(e) => e,
                _ => IoError { member: 0, errno: -22 },
            }),
        }
    }

    /// The layout migrated from (the array's own when settled).
    pub fn source(&self) -> Geometry {
        match self {
            Recovered::Settled { layout, .. } => *layout,
            Recovered::Migration(e) => e.plan().source(),
        }
    }
}

/// What happened on the way, for the kernel log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadNotes {
    /// A new array was made (first superblocks written).
    pub created: bool,
    /// With `force`: the first sector of the first device's tail range that
    /// held data (now overwritten).
    pub forced_over: Option<u64>,
    /// Roles whose superblock lagged one generation and was brought level
    /// (bit per role).
    pub caught_up: u32,
    /// A unit left in staging that was finished.
    pub replayed: Option<u64>,
    /// Roles assembled without a device (given fewer members than the
    /// array has), now recorded faulty.
    pub missing: Roles,
    /// Roles whose device was given but left out: recorded faulty before,
    /// or stale (more than one update behind).
    pub kicked: Roles,
    /// The devices so left out (bit per index in the order given).
    pub kicked_devices: u32,
    /// The devices that are hot spares of the array (bit per index).
    pub spare_devices: u32,
    /// A unit left in staging that could not be finished, and the error:
    /// host I/O to it goes to the staging area and the engine is halted.
    pub replay_failed: Option<(u64, IoError)>,
}

/// An array ready to be exposed.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// For each role, the index of the device (in the order given).
    pub device_of_role: [u8; MAX_MEMBERS],
    /// Identities of the members, by role.
    pub members: ArrayMembers,
    /// Where the array stands.
    pub array: Recovered,
    /// Whether the migration thread should copy at once.
    pub run: bool,
    /// What happened.
    pub notes: LoadNotes,
}

/// Runs the load sequence over `io`, whose members are the devices in the
/// order given (their sizes in `device_sectors`). `buf` must hold at least
/// the engine's minimum buffer and two superblocks per device; `fresh` gives
/// the identities of a new array.
pub fn load<I: MemberIo>(
    io: &mut I,
    device_sectors: &[u64],
    params: &LoadParams,
    fresh: &Fresh,
    now: Time,
    buf: &mut [u8],
) -> Result<Loaded, LoadError> {
    if buf.len() < 2 * SUPERBLOCK_BYTES {
        return Err(LoadError::Engine(EngineError::BufferTooSmall));
    }
    match params.level {
        Some(level) => create(io, device_sectors, level, params, fresh, now, buf),
        None => assemble_devices(io, device_sectors, params, now, buf),
    }
}

pub(crate) fn io_error(e: IoError) -> LoadError {
    LoadError::Io { device: e.member, errno: e.errno }
}

/// Stripes of `stripe_sectors` in a migration unit of about `unit_sectors`
/// (at least one, at most 65536): the unit size a migration and a reshape
/// are planned with.
pub fn unit_stripes(stripe_sectors: u64, unit_sectors: u64) -> u32 {
    (unit_sectors / stripe_sectors.max(1)).clamp(1, 1 << 16) as u32
}

/// Both superblock slots of device `device`.
pub(crate) fn read_slots<I: MemberIo>(
    io: &mut I,
    device: usize,
    device_sectors: u64,
    buf: &mut [u8],
) -> Result<(Result<Superblock, FormatError>, Result<Superblock, FormatError>), LoadError> {
    let both = &mut buf[..2 * SUPERBLOCK_BYTES];
    io.read(device, superblock_sector(device_sectors, 0), both).map_err(io_error)?;
    let (a, b) = both.split_at(SUPERBLOCK_BYTES);
    Ok((Superblock::decode_slot(a, 0), Superblock::decode_slot(b, 1)))
}

/// The first sector in `[start, start + sectors)` of `device` that is not
/// all zeros.
fn first_nonzero<I: MemberIo>(
    io: &mut I,
    device: usize,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
) -> Result<Option<u64>, LoadError> {
    let per_read = ((buf.len() >> SECTOR_SHIFT) as u64).min(2048);
    let mut at = start;
    while at < start + sectors {
        let n = (start + sectors - at).min(per_read);
        let bytes = &mut buf[..(n << SECTOR_SHIFT) as usize];
        io.read(device, at, bytes).map_err(io_error)?;
        if let Some(i) = bytes.iter().position(|&b| b != 0) {
            return Ok(Some(at + (i >> SECTOR_SHIFT) as u64));
        }
        at += n;
    }
    Ok(None)
}

/// Makes sectors `[start, start + sectors)` of `device` read as zeros,
/// writing only where they do not already (a joining disk's tail may hold
/// whatever its former life left there).
pub(crate) fn zero_range<I: MemberIo>(
    io: &mut I,
    device: usize,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
) -> Result<(), LoadError> {
    let end = start + sectors;
    let per_write = ((buf.len() >> SECTOR_SHIFT) as u64).min(2048);
    while let Some(at) = first_nonzero(io, device, start, sectors, buf)? {
        let mut at = at & !7;
        while at < end {
            let n = (end - at).min(per_write);
            let bytes = &mut buf[..(n << SECTOR_SHIFT) as usize];
            bytes.fill(0);
            io.write(device, at, bytes).map_err(io_error)?;
            at += n;
        }
    }
    Ok(())
}

/// A new array of `level` over the devices (in role order): a migration of
/// the first device's data, or a clean array.
#[allow(clippy::too_many_arguments)]
// Not inlined (nor `assemble_devices`): `load` runs on the kernel stack of
// insmod, under block I/O as deep as device-mapper and lockdep make it, so
// only one of the two frames may be there at a time.
#[inline(never)]
fn create<I: MemberIo>(
    io: &mut I,
    device_sectors: &[u64],
    level: Level,
    params: &LoadParams,
    fresh: &Fresh,
    now: Time,
    buf: &mut [u8],
) -> Result<Loaded, LoadError> {
    let n = device_sectors.len();
    if n < level.min_members() {
        return Err(LoadError::Prepare(PrepareError::TooFewMembers));
    }
    if n > level.max_members() || n > MAX_MEMBERS {
        return Err(LoadError::Prepare(PrepareError::TooManyMembers));
    }
    for (device, &sectors) in device_sectors.iter().enumerate() {
        let (a, b) = read_slots(io, device, sectors, buf)?;
        prepare::check_unclaimed(device, &a, &b).map_err(LoadError::Prepare)?;
    }
    let stripe = Geometry::for_devices(level, n, params.chunk_sectors, device_sectors[0])
        .map(|g| g.stripe_sectors())
        .unwrap_or(1)
        .max(1);
    let unit_stripes = unit_stripes(stripe, params.unit_sectors);
    let plan = prepare::plan_new(level, params.chunk_sectors, device_sectors, unit_stripes)
        .map_err(LoadError::Prepare)?;
    let mut notes = LoadNotes { created: true, ..LoadNotes::default() };
    // A single layout migrates to itself: the data is in place already.
    let clean = params.assume_clean || level == Level::Single;
    if !params.assume_clean {
        let (start, sectors) = prepare::must_be_zero(device_sectors[0], &plan);
        if let Some(at) = first_nonzero(io, 0, start, sectors, buf)? {
            if !params.force {
                return Err(LoadError::TailInUse { start, sectors, at });
            }
            notes.forced_over = Some(at);
        }
    }

    let members = ArrayMembers::new(fresh.array_uuid, now.wall_ms, &fresh.member_uuids[..n], device_sectors);
    // A bitmap only where it has a use (a level with redundancy) and fits.
    let target = plan.target();
    let bitmap_region = (params.bitmap_region_sectors != 0 && target.redundant())
        .then_some(params.bitmap_region_sectors);
    if bitmap_region.is_some_and(|r| BitmapGeometry::new(target.capacity(), r).is_none()) {
        return Err(LoadError::BadBitmapRegion);
    }
    let at_once = params.at_once && !clean && plan.units() <= moved::MAX_UNITS;
    let first = |role: usize| {
        let sb = prepare::prepared_superblock(&plan, &members, role, now.wall_ms, bitmap_region, at_once);
        if clean {
            Superblock { state: ArrayState::Clean, migration: None, ..sb }
        } else {
            sb
        }
    };
    // The bitmap area (both images) starts zero on every member: bits a
    // former life left there would read as an unclean shutdown, or as
    // regions to rebuild on a re-add.
    if bitmap_region.is_some() {
        for (device, &sectors) in device_sectors.iter().enumerate() {
            zero_range(io, device, tail_start(sectors) + BITMAP_OFFSET, BITMAP_SECTORS, buf)?;
        }
    }
    if at_once {
        if !io.prepare_moved(plan.units()) {
            return Err(LoadError::NoMemory);
        }
        zero_moved(io, device_sectors, plan.units(), buf)?;
    }
    // Joining members first, the first member (the user's data) last: a
    // cut in between leaves the user's disk without a superblock.
    let sb_buf = &mut buf[..SUPERBLOCK_BYTES];
    for role in Iterator::chain(1..n, 0..1) {
        let sb = first(role);
        sb.encode(sb_buf).map_err(|e| LoadError::Engine(EngineError::Format(e)))?;
        let sector = superblock_sector(device_sectors[role], slot_of(sb.generation));
        io.write(role, sector, sb_buf).map_err(io_error)?;
    }
    io.flush().map_err(io_error)?;
    let array = if clean {
        Recovered::Settled { layout: plan.target(), state: ArrayState::Clean, record: Record::new(first(0)) }
    } else {
        Recovered::Migration(Engine::resume(&first(0), params.engine, now).map_err(LoadError::Engine)?)
    };
    let mut device_of_role = [0u8; MAX_MEMBERS];
    for (i, d) in device_of_role.iter_mut().enumerate() {
        *d = i as u8;
    }
    Ok(Loaded { device_of_role, members, array, run: !clean && params.start, notes })
}

/// Member I/O by role over I/O by device, once assembly knows the roles.
pub struct ByRole<'a, I: MemberIo> {
    io: &'a mut I,
    device_of_role: [u8; MAX_MEMBERS],
}

impl<'a, I: MemberIo> ByRole<'a, I> {
    /// Role `r` is device `device_of_role[r]` of `io`.
    pub fn new(io: &'a mut I, device_of_role: [u8; MAX_MEMBERS]) -> Self {
        ByRole { io, device_of_role }
    }

    fn device(&self, role: usize) -> usize {
        self.device_of_role.get(role).map_or(usize::MAX, |&d| d as usize)
    }

    /// An error of the underlying I/O names a device: make it name the role.
    fn role_error(&self, role: usize, e: IoError) -> IoError {
        IoError { member: role, ..e }
    }
}

impl<I: MemberIo> MemberIo for ByRole<'_, I> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let d = self.device(member);
        self.io.read(d, sector, buf).map_err(|e| self.role_error(member, e))
    }

    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let d = self.device(member);
        self.io.write(d, sector, buf).map_err(|e| self.role_error(member, e))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.io.flush()
    }

    fn publish(&mut self, view: &View) {
        self.io.publish(view)
    }

    fn checkpoint_requested(&mut self) -> bool {
        self.io.checkpoint_requested()
    }

    fn write_zeroes(&mut self, member: usize, sector: u64, sectors: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let d = self.device(member);
        self.io.write_zeroes(d, sector, sectors, buf).map_err(|e| self.role_error(member, e))
    }

    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        self.io.xor_into(dst, src)
    }

    fn move_requested(&mut self) -> Option<u64> {
        self.io.move_requested()
    }

    fn moved_map(&self) -> &[AtomicU64] {
        self.io.moved_map()
    }

    fn prepare_moved(&mut self, units: u64) -> bool {
        self.io.prepare_moved(units)
    }
}

/// Assembles the array from the devices' superblocks, brings lagging
/// members level, and finishes a unit left in staging.
#[inline(never)]
fn assemble_devices<I: MemberIo>(
    io: &mut I,
    device_sectors: &[u64],
    params: &LoadParams,
    now: Time,
    buf: &mut [u8],
) -> Result<Loaded, LoadError> {
    let n = device_sectors.len().min(MAX_MEMBERS);
    // Both slots of every device, side by side in `buf`, decoded when
    // assembly asks (sixteen decoded superblocks would take 4 KiB of
    // kernel stack).
    let per_device = 2 * SUPERBLOCK_BYTES;
    if buf.len() < n * per_device {
        return Err(LoadError::Engine(EngineError::BufferTooSmall));
    }
    for (device, &sectors) in device_sectors.iter().enumerate().take(n) {
        let both = &mut buf[device * per_device..][..per_device];
        io.read(device, superblock_sector(sectors, 0), both).map_err(io_error)?;
    }
    let raw: &[u8] = buf;
    let sb_of = |device: usize| {
        let (a, b) = raw[device * per_device..][..per_device].split_at(SUPERBLOCK_BYTES);
        Superblock::newest(Superblock::decode_slot(a, 0), Superblock::decode_slot(b, 1))
    };
    let mut members = ArrayMembers::new([0; 16], 0, &[], &[]);
    let assembly = assemble_with(n, sb_of, &mut members).map_err(LoadError::Assemble)?;
    if let Some(device) =
        (0..n).find(|&d| sb_of(d).is_ok_and(|sb| sb.device_sectors != device_sectors[d]))
    {
        return Err(LoadError::SizeChanged { device });
    }
    let device_of_role = assembly.device_of_role;
    let mut io = ByRole::new(io, device_of_role);
    // Before anything is written: a raid5 shut down uncleanly is refused
    // when a member is out of sync where its bits are set (md's dirty
    // degraded start), unless forced.
    let newest = &assembly.newest;
    if let (Some(region), None) = (newest.bitmap_region, &newest.migration) {
        let health = Health { failed: newest.failed, rebuild: newest.rebuild };
        let layout = newest.layout;
        let from = unsafe_dirt_from(layout.level().has_parity(), &health, region);
        if let (Some(from), false, Some(geo)) = (from, params.force, BitmapGeometry::new(layout.capacity(), region)) {
            let in_sync = Roles::first(layout.members()).minus(health.out_of_sync());
            let dirty = any_set(&mut io, in_sync, &members.device_sectors[..], &geo, from, buf)
                .map_err(|e| LoadError::Io { device: device_of_role[e.member.min(MAX_MEMBERS - 1)] as usize, errno: e.errno })?;
            if dirty {
                return Err(LoadError::DirtyDegraded);
            }
        }
    }
    let device_error = |e: EngineError| match e {
        EngineError::Io(e) => {
            LoadError::Io { device: device_of_role[e.member.min(MAX_MEMBERS - 1)] as usize, errno: e.errno }
        }
        other => LoadError::Engine(other),
    };
    catch_up(&mut io, &assembly, &members, buf).map_err(device_error)?;
    let mut notes = LoadNotes {
        caught_up: assembly.lagging,
        missing: assembly.newly_failed.minus(assembly.kicked),
        kicked: assembly.kicked,
        kicked_devices: assembly.kicked_devices,
        spare_devices: assembly.spare_devices,
        ..LoadNotes::default()
    };
    let mut array = recover(&assembly, params.engine, now).map_err(LoadError::Engine)?;
    if let Recovered::Migration(engine) = &array {
        if engine.at_once() {
            let units = engine.plan().units();
            if !io.prepare_moved(units) {
                return Err(LoadError::NoMemory);
            }
            let in_sync = Roles::first(members.count).minus(engine.failed()).minus(assembly.newly_failed);
            read_moved(&mut io, &members, in_sync, units, buf).map_err(|e| device_error(EngineError::Io(e)))?;
        }
    }
    // Roles missing or not fresh are recorded faulty before anything else:
    // a member that comes back later must not pass for one in sync.
    if !assembly.newly_failed.is_empty() {
        array
            .record_failed(&mut io, &members, assembly.newly_failed, now, buf)
            .map_err(|e| device_error(EngineError::Io(e)))?;
    }
    let mut run = false;
    if let Recovered::Migration(engine) = &mut array {
        let unit = engine.view().checkpoint;
        match engine.replay_staged(&mut io, &members, buf, now) {
            Ok(replayed) => notes.replayed = replayed,
            Err(EngineError::Io(e)) => {
                notes.replay_failed = Some((unit, IoError { member: e.member, errno: e.errno }))
            }
            Err(e) => return Err(LoadError::Engine(e)),
        }
        // With a role out of sync the engine cannot copy: a replacement is
        // rebuilt first (the thread resumes the migration then); host I/O is
        // served degraded meanwhile.
        run = engine.state() == ArrayState::Migrating && !engine.halted() && engine.whole();
    }
    Ok(Loaded { device_of_role, members, array, run, notes })
}

/// Zeroes the blocks of the moved-unit map a migration of `units` units
/// uses on every device (bits an earlier migration left there must not
/// count).
pub(crate) fn zero_moved<I: MemberIo>(
    io: &mut I,
    device_sectors: &[u64],
    units: u64,
    buf: &mut [u8],
) -> Result<(), LoadError> {
    let sectors = moved::blocks(units) * moved::BLOCK_SECTORS;
    for (device, &size) in device_sectors.iter().enumerate() {
        zero_range(io, device, moved::block_sector(size, 0), sectors, buf)?;
    }
    Ok(())
}

/// Reads the moved-unit map of a migration of `units` units from every
/// role of `roles` into the map `io` holds: the union of theirs (a bit is
/// set on every member before it counts, and a torn write sets it on some
/// only, after the unit's rows are durable: see [`super::moved`]).
pub fn read_moved<I: MemberIo>(
    io: &mut I,
    members: &ArrayMembers,
    roles: Roles,
    units: u64,
    buf: &mut [u8],
) -> Result<(), IoError> {
    let bytes = buf.get_mut(..moved::BLOCK_BYTES).ok_or(IoError { member: 0, errno: -22 })?;
    for role in roles.iter() {
        for block in 0..moved::blocks(units) {
            io.read(role, moved::block_sector(members.device_sectors[role], block), bytes)?;
            moved::merge_block(io.moved_map(), units, block, bytes);
        }
    }
    Ok(())
}

/// The state to resume from, given the assembled array.
pub fn recover(assembly: &Assembly, config: EngineConfig, now: Time) -> Result<Recovered, EngineError> {
    let sb = &assembly.newest;
    match sb.migration {
        None => Ok(Recovered::Settled { layout: sb.layout, state: sb.state, record: Record::new(*sb) }),
        Some(_) => Engine::resume(sb, config, now).map(Recovered::Migration),
    }
}

/// Brings lagging members level with the newest superblock (same
/// generation, their own identity), then flushes; does nothing when no member
/// lags. A power cut during a superblock update leaves some members one
/// generation behind; writing them level before any new update means that
/// however often the power fails, members never drift more than one
/// generation apart, and a bigger gap is a member that truly missed updates
/// (refused by assembly). `buf` must hold at least [`SUPERBLOCK_BYTES`].
pub fn catch_up<I: MemberIo>(
    io: &mut I,
    assembly: &Assembly,
    members: &ArrayMembers,
    buf: &mut [u8],
) -> Result<(), EngineError> {
    if assembly.lagging == 0 {
        return Ok(());
    }
    let buf = buf.get_mut(..SUPERBLOCK_BYTES).ok_or(EngineError::BufferTooSmall)?;
    let newest = &assembly.newest;
    let slot = slot_of(newest.generation);
    for role in 0..members.count {
        if assembly.lagging & (1 << role) == 0 {
            continue;
        }
        let sb = Superblock {
            member_uuid: members.uuids[role],
            role,
            device_sectors: members.device_sectors[role],
            ..*newest
        };
        sb.encode(buf).map_err(EngineError::Format)?;
        io.write(role, superblock_sector(sb.device_sectors, slot), buf).map_err(EngineError::Io)?;
    }
    io.flush().map_err(EngineError::Io)
}
