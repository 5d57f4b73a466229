//! Load time: from module parameters to a running array, or a refusal.
//!
//! With `level=`, the members carry no raidmig superblock and the first one
//! holds the user's data: a migration is prepared (or, with
//! `assume_clean=1`, a new array is made directly in its layout). Without
//! `level=`, the array is assembled from the superblocks, in any member
//! order, and an interrupted migration resumes by itself.
//!
//! Everything is checked before anything is written: a refused load leaves
//! the members as they were.

use crate::{
    array::Array,
    bio::BioSet,
    disk::{Disk, Limits},
    iobuf::IoBuf,
    kthread::Thread,
    member::Member,
    migrator::{self, now_ms},
    raidmig_core::{
        assemble::{assemble, AssembleErrorKind},
        config::{self, ConfigError},
        engine::{Engine, EngineError},
        format::{superblock_sector, ArrayState, FormatError, Superblock, SUPERBLOCK_BYTES},
        layout::{Geometry, GeometryError, Level, MAX_MEMBERS, SECTOR_SHIFT},
        members::ArrayMembers,
        prepare::{self, PrepareError},
        recovery::{self, Recovered},
    },
    shim, sysfs,
};
use kernel::{bindings, fmt, prelude::*, str::CString, sync::Arc};

/// What the module holds while loaded. Dropping it stops the migration
/// thread (which checkpoints) before the disk goes.
pub(crate) struct Running {
    thread: Thread<Arc<Array>>,
    _disk: Disk<Array>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The disk goes after the thread: the thread must not grow it then.
        self.thread.data().set_gendisk(core::ptr::null_mut());
    }
}

/// Target data per migration unit (1 MiB).
const UNIT_SECTORS: u64 = 2048;

fn refuse(e: ConfigError) -> Error {
    pr_err!("{}\n", e.message());
    EINVAL
}

/// Member I/O before the array exists.
struct LoadIo {
    bioset: Pin<KBox<BioSet>>,
    buf: IoBuf,
}

impl LoadIo {
    fn new() -> Result<LoadIo> {
        Ok(LoadIo { bioset: KBox::pin_init(BioSet::new(), GFP_KERNEL)?, buf: IoBuf::new(1 << 20)? })
    }

    /// Reads `len` bytes at `sector` of `m` into the buffer's start.
    fn read(&mut self, m: &Member, path: &str, sector: u64, len: usize) -> Result<&[u8]> {
        let (bytes, region) = self.buf.split();
        let buf = &mut bytes[..len];
        region.read(&self.bioset, m, sector, buf).map_err(|e| {
            pr_err!("cannot read member {} at sector {}: error {}\n", path, sector, e);
            EIO
        })?;
        Ok(buf)
    }

    /// Both superblock slots of `m`.
    fn slots(
        &mut self,
        m: &Member,
        path: &str,
    ) -> Result<(Result<Superblock, FormatError>, Result<Superblock, FormatError>)> {
        let buf = self.read(m, path, superblock_sector(m.sectors(), 0), 2 * SUPERBLOCK_BYTES)?;
        let (a, b) = buf.split_at(SUPERBLOCK_BYTES);
        Ok((Superblock::decode_slot(a, 0), Superblock::decode_slot(b, 1)))
    }

    /// Writes `sb` to its slot on `m`.
    fn write_superblock(&mut self, m: &Member, path: &str, sb: &Superblock) -> Result {
        let (bytes, region) = self.buf.split();
        let buf = &mut bytes[..SUPERBLOCK_BYTES];
        sb.encode(buf).map_err(|e| {
            pr_err!("cannot encode superblock: {}\n", e.message());
            EINVAL
        })?;
        let sector = superblock_sector(m.sectors(), crate::raidmig_core::format::slot_of(sb.generation));
        region.write(&self.bioset, m, 0, sector, buf).map_err(|e| {
            pr_err!("cannot write superblock to {}: error {}\n", path, e);
            EIO
        })
    }

    fn flush(&self, m: &Member, path: &str) -> Result {
        self.bioset.sync_flush(m).map_err(|e| {
            pr_err!("cannot flush {}: error {}\n", path, e);
            EIO
        })
    }

    /// The first non-zero sector in `[start, start + sectors)` of `m`.
    fn first_nonzero(&mut self, m: &Member, path: &str, start: u64, sectors: u64) -> Result<Option<u64>> {
        let mut at = start;
        while at < start + sectors {
            let n = (start + sectors - at).min(2048);
            let buf = self.read(m, path, at, (n << SECTOR_SHIFT) as usize)?;
            if let Some(i) = buf.iter().position(|&b| b != 0) {
                return Ok(Some(at + (i >> SECTOR_SHIFT) as u64));
            }
            at += n;
        }
        Ok(None)
    }
}

/// "Structure needs cleaning": a damaged or inconsistent superblock.
fn euclean() -> Error {
    Error::from_errno(-(bindings::EUCLEAN as i32))
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    // SAFETY: `u` is valid for 16 bytes.
    unsafe { bindings::get_random_bytes(u.as_mut_ptr().cast(), u.len()) };
    u
}

fn prepare_error(e: PrepareError, paths: &[&str]) -> Error {
    let path = |d: usize| paths.get(d).copied().unwrap_or("?");
    match e {
        PrepareError::MemberSmaller { device } => {
            pr_err!("member {}: {}\n", path(device), e.message());
            ENOSPC
        }
        PrepareError::AlreadyMember { device } => {
            pr_err!("member {}: {}\n", path(device), e.message());
            EEXIST
        }
        PrepareError::DamagedSuperblock { device } => {
            pr_err!("member {}: {}\n", path(device), e.message());
            euclean()
        }
        PrepareError::Geometry(GeometryError::TooSmall) => {
            pr_err!("{}\n", e.message());
            ENOSPC
        }
        _ => {
            pr_err!("{}\n", e.message());
            EINVAL
        }
    }
}

/// Prepares a new array of `level` over `members` (none has a superblock):
/// a migration of the first member's data, or with `assume_clean` an array
/// made directly in its layout. Returns its identity and state.
fn create(
    io: &mut LoadIo,
    members: &[Member],
    paths: &[&str],
    level: Level,
    chunk_sectors: u32,
) -> Result<(ArrayMembers, Recovered, bool)> {
    let n = members.len();
    let mut sizes = [0u64; MAX_MEMBERS];
    for (s, m) in sizes.iter_mut().zip(members) {
        *s = m.sectors();
    }
    let sizes = &sizes[..n];
    for (i, m) in members.iter().enumerate() {
        let (a, b) = io.slots(m, paths[i])?;
        prepare::check_unclaimed(i, &a, &b).map_err(|e| prepare_error(e, paths))?;
    }
    let stripe = Geometry::for_devices(level, n, chunk_sectors, sizes[0]).map(|g| g.stripe_sectors()).unwrap_or(1);
    let unit_stripes = (UNIT_SECTORS / stripe.max(1)).clamp(1, 1 << 16) as u32;
    let plan = prepare::plan_new(level, chunk_sectors, sizes, unit_stripes).map_err(|e| prepare_error(e, paths))?;
    let assume_clean = shim::assume_clean();
    // A single layout migrates to itself: the data is in place already.
    let clean = assume_clean || level == Level::Single;
    if !assume_clean {
        let (start, sectors) = prepare::must_be_zero(sizes[0], &plan);
        if let Some(at) = io.first_nonzero(&members[0], paths[0], start, sectors)? {
            if shim::force() {
                pr_warn!("{}: data at sector {} after the volume is overwritten (force=1)\n", paths[0], at);
            } else {
                pr_err!(
                    "{}: the last {} sectors (from sector {}) must be free for raidmig's metadata, but sector {} holds data (force=1 overrides)\n",
                    paths[0], sectors, start, at
                );
                return Err(ENOSPC);
            }
        }
    }

    let mut uuids = [[0u8; 16]; MAX_MEMBERS];
    for u in uuids[..n].iter_mut() {
        *u = random_uuid();
    }
    let now = now_ms();
    let identity = ArrayMembers::new(random_uuid(), now, &uuids[..n], sizes);
    let first = |role: usize| {
        let sb = prepare::prepared_superblock(&plan, &identity, role, now);
        if clean {
            Superblock { state: ArrayState::Clean, migration: None, ..sb }
        } else {
            sb
        }
    };
    // Joining members first, the first member (the user's data) last.
    for role in Iterator::chain(1..n, 0..1) {
        io.write_superblock(&members[role], paths[role], &first(role))?;
    }
    for (m, p) in members.iter().zip(paths) {
        io.flush(m, p)?;
    }
    let recovered = if clean {
        Recovered::Settled { layout: plan.target(), state: ArrayState::Clean }
    } else {
        Recovered::Migration(Engine::resume(&first(0), migrator::config(), now).map_err(engine_error)?)
    };
    Ok((identity, recovered, !clean && shim::start()))
}

fn engine_error(e: EngineError) -> Error {
    pr_err!("{}\n", e.message());
    EINVAL
}

/// Assembles the array from the members' superblocks; returns the members'
/// order by role, the identity and the state to resume from.
fn assemble_from_superblocks(
    io: &mut LoadIo,
    members: &[Member],
    paths: &[&str],
) -> Result<([u8; MAX_MEMBERS], ArrayMembers, Recovered, bool)> {
    let mut sbs = [Err(FormatError::Blank); MAX_MEMBERS];
    for (i, m) in members.iter().enumerate() {
        let (a, b) = io.slots(m, paths[i])?;
        sbs[i] = Superblock::newest(a, b);
    }
    let mut identity = ArrayMembers::new([0; 16], 0, &[], &[]);
    let assembly = assemble(&sbs[..members.len()], &mut identity).map_err(|e| {
        let path = paths.get(e.device).copied().unwrap_or("(members)");
        pr_err!("cannot assemble: {}: {}\n", path, e.message());
        match e.kind {
            AssembleErrorKind::NoSuperblock => {
                pr_err!("give level= to start a migration from a plain disk\n");
                EINVAL
            }
            AssembleErrorKind::Unreadable(_) | AssembleErrorKind::Disagree => euclean(),
            AssembleErrorKind::Foreign => EEXIST,
            AssembleErrorKind::Stale => Error::from_errno(-(bindings::ESTALE as i32)),
            _ => EINVAL,
        }
    })?;
    for (i, m) in members.iter().enumerate() {
        if sbs[i].as_ref().is_ok_and(|sb| sb.device_sectors != m.sectors()) {
            pr_err!("member {} changed size since it joined the array\n", paths[i]);
            return Err(EINVAL);
        }
    }
    let recovered = recovery::recover(&assembly, migrator::config(), now_ms()).map_err(engine_error)?;
    let run = matches!(&recovered, Recovered::Migration(e) if e.state() == ArrayState::Migrating);
    Ok((assembly.device_of_role, identity, recovered, run))
}

/// Validates the parameters, opens the members and adds /dev/raidmig0.
pub(crate) fn from_params() -> Result<Running> {
    let paths = config::parse_members(shim::members().unwrap_or("")).map_err(refuse)?;
    let level = match shim::level().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(config::parse_level(l).map_err(refuse)?),
    };
    let chunk_sectors = config::chunk_sectors_from_kb(shim::chunk_kb()).map_err(refuse)?;
    let paths = paths.as_slice();
    if let Some(level) = level {
        if paths.len() < level.min_members() || paths.len() > level.max_members() {
            pr_err!(
                "{} takes {} to {} members, {} given\n",
                level.name(),
                level.min_members(),
                level.max_members(),
                paths.len()
            );
            return Err(EINVAL);
        }
    }

    let mut opened = KVec::with_capacity(paths.len(), GFP_KERNEL)?;
    for path in paths {
        let cpath = CString::try_from_fmt(fmt!("{}", path))?;
        let member = Member::open(&cpath).map_err(|e| {
            pr_err!("cannot open member {}: {:?}\n", path, e);
            e
        })?;
        opened.push(member, GFP_KERNEL)?;
    }
    let mut devs = [0u32; MAX_MEMBERS];
    for (d, m) in devs.iter_mut().zip(opened.iter()) {
        *d = m.dev();
    }
    if let Some((a, b)) = config::first_duplicate(&devs[..opened.len()]) {
        pr_err!("members {} and {} are the same disk\n", paths[a], paths[b]);
        return Err(EINVAL);
    }

    let mut io = LoadIo::new()?;
    let (order, identity, recovered, run) = match level {
        Some(level) => {
            let (identity, recovered, run) = create(&mut io, &opened, paths, level, chunk_sectors)?;
            let mut order = [0u8; MAX_MEMBERS];
            for (i, o) in order.iter_mut().enumerate() {
                *o = i as u8;
            }
            (order, identity, recovered, run)
        }
        None => assemble_from_superblocks(&mut io, &opened, paths)?,
    };
    drop(io);

    // Members and their paths in role order.
    let n = opened.len();
    let mut slots: KVec<Option<Member>> = KVec::with_capacity(n, GFP_KERNEL)?;
    for m in opened {
        slots.push(Some(m), GFP_KERNEL)?;
    }
    let mut members = KVec::with_capacity(n, GFP_KERNEL)?;
    let mut role_paths = KVec::with_capacity(n, GFP_KERNEL)?;
    for &device in order[..n].iter() {
        let device = device as usize;
        members.push(slots[device].take().ok_or(EINVAL)?, GFP_KERNEL)?;
        role_paths.push(CString::try_from_fmt(fmt!("{}", paths[device]))?, GFP_KERNEL)?;
    }

    let view = recovered.view();
    let target = match &recovered {
        Recovered::Settled { layout, .. } => *layout,
        Recovered::Migration(e) => e.plan().target(),
    };
    let limits = limits_for(&members, &target)?;
    let name = CString::try_from_fmt(fmt!("raidmig0"))?;
    let array = Arc::pin_init(Array::new(name, members, role_paths, identity, recovered, run), GFP_KERNEL)?;
    let disk = Disk::add(kernel::c_str!("raidmig0"), view.volume_sectors, limits, array.clone(), sysfs::groups())?;
    array.set_gendisk(disk.raw());
    let status = array.migrator().status();
    pr_info!(
        "raidmig0: {} over {} members, chunk {} KiB, {} MiB, {}\n",
        target.level().name(),
        n,
        target.chunk_sectors() / 2,
        view.volume_sectors >> 11,
        status.state.name()
    );
    let thread = Thread::spawn(kernel::c_str!("raidmig0"), array, |a| migrator::run(a))?;
    Ok(Running { thread, _disk: disk })
}

/// Queue limits: stacked from the members, hints from the layout, a volatile
/// write cache with FUA, and discard where every member and the layout
/// allow it.
fn limits_for(members: &[Member], target: &Geometry) -> Result<Limits> {
    let mut limits = Limits::stacking();
    for m in members {
        limits.stack_member(m);
    }
    let block = core::num::NonZeroU32::new(limits.logical_block_size()).ok_or(EINVAL)?;
    let chunk_bytes = target.chunk_sectors() << SECTOR_SHIFT;
    if chunk_bytes % block != 0 {
        pr_err!("chunk is smaller than the members' logical block size\n");
        return Err(EINVAL);
    }
    let stripe_bytes = u32::try_from(target.stripe_sectors() << SECTOR_SHIFT).unwrap_or(0);
    limits.set_io_hints(chunk_bytes, stripe_bytes);
    limits.set_write_cache_fua();
    // raid5 has no discard: a range of a member mixes data and parity.
    if target.level() == Level::Raid5 || !members.iter().all(Member::supports_discard) {
        limits.disable_discard();
    }
    Ok(limits)
}
