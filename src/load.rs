//! Load time: from module parameters to a running array, or a refusal.
//!
//! The parameters are validated by the core's `config`, the members opened
//! here, and everything else is the core's load sequence
//! ([`lifecycle::load`]): with `level=`, a new array over members that carry
//! no raidmig superblock (a migration of the first member's data, or with
//! `assume_clean=1` an array made directly in its layout); without it, the
//! array assembled from its superblocks in any member order, lagging members
//! brought level, and a unit left in the staging area finished, all before
//! the volume is exposed. Everything is checked before anything is written:
//! a refused load leaves the members as they were.

use crate::{
    array::Array,
    host::set_layout_limits,
    bitmap::BitmapImages,
    members::Slot,
    migrator,
    moved_map::MovedMap,
    raidmig_core::{
        bitmap::{self, BitmapGeometry},
        config::{self, ConfigError},
        engine::{Engine, IoError, MemberIo},
        layout::{Geometry, Level, MAX_MEMBERS, SECTOR_SHIFT},
        lifecycle::{self, Fresh, LoadError, LoadParams, Loaded, Recovered, UNIT_SECTORS},
        prepare::PrepareError,
        route::View,
        tail::SUPERBLOCK_BYTES,
    },
    sys::{
        bio::BioSet,
        disk::{Disk, Limits},
        iobuf::IoBuf,
        kthread::Thread,
        member::Member,
        shim, time,
    },
    sysfs,
};
use core::sync::atomic::AtomicU64;
use kernel::{bindings, fmt, prelude::*, str::CString, sync::Arc};

/// What the module holds while loaded. The migration thread stops (with a
/// checkpoint) before the disk goes: fields drop in order.
pub(crate) struct Running {
    _thread: Thread<Arc<Array>>,
    _disk: Disk<Array>,
}

/// Bytes of the load sequence's buffer: room for the engine's smallest
/// buffer of any layout (17 slices of 4 KiB) and the zero check's reads.
const LOAD_BUFFER_BYTES: usize = 1 << 20;

fn refuse(e: ConfigError) -> Error {
    pr_err!("{}\n", e.message());
    EINVAL
}

/// Member I/O by device index, before the array exists.
struct LoadIo<'a> {
    devs: &'a [Member],
    paths: &'a [&'a str],
    bioset: &'a BioSet,
    region: crate::sys::iobuf::Region<'a>,
    /// The moved-unit map of a migration with the new layout at once,
    /// sized when the load sequence finds (or makes) one.
    moved: MovedMap,
}

impl LoadIo<'_> {
    fn error(&self, op: &str, device: usize, sector: u64, e: Error) -> IoError {
        let path = self.paths.get(device).copied().unwrap_or("?");
        pr_err!("cannot {} member {} at sector {}: error {}\n", op, path, sector, e.to_errno());
        IoError { member: device, errno: e.to_errno() }
    }

    fn dev(&self, device: usize) -> Result<&Member, IoError> {
        self.devs.get(device).ok_or(IoError { member: device, errno: -(bindings::EINVAL as i32) })
    }
}

impl MemberIo for LoadIo<'_> {
    fn read(&mut self, device: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let dev = self.dev(device)?;
        self.region.read(self.bioset, dev, sector, buf).map_err(|e| self.error("read", device, sector, e))
    }

    fn write(&mut self, device: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let dev = self.dev(device)?;
        self.region.write(self.bioset, dev, 0, sector, buf).map_err(|e| self.error("write", device, sector, e))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        for (device, dev) in self.devs.iter().enumerate() {
            self.bioset.sync_flush(dev).map_err(|e| self.error("flush", device, 0, e))?;
        }
        Ok(())
    }

    /// Nothing is exposed yet: no host I/O to tell.
    fn publish(&mut self, _view: &View) {}

    fn checkpoint_requested(&mut self) -> bool {
        false
    }

    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        shim::xor_into(dst, src)
    }

    fn moved_map(&self) -> &[AtomicU64] {
        self.moved.words()
    }

    fn prepare_moved(&mut self, units: u64) -> bool {
        match MovedMap::new(units) {
            Ok(map) => {
                self.moved = map;
                true
            }
            Err(_) => false,
        }
    }
}

/// Tells why the load was refused, in the words the tests and the README
/// use, and gives the errno.
fn load_error(e: LoadError, paths: &[&str], level: Option<Level>) -> Error {
    let path = |d: usize| paths.get(d).copied().unwrap_or("?");
    match (e, level) {
        (LoadError::Prepare(PrepareError::TooFewMembers | PrepareError::TooManyMembers), Some(l)) => {
            pr_err!("{} takes {} to {} members, {} given\n", l.name(), l.min_members(), l.max_members(), paths.len());
        }
        (LoadError::TailInUse { start, sectors, at }, _) => pr_err!(
            "{}: the last {} sectors (from sector {}) must be free for raidmig's metadata, but sector {} holds data (force=1 overrides)\n",
            path(0),
            sectors,
            start,
            at
        ),
        (LoadError::Assemble(a), _) => {
            let who = e.device().map_or("(members)", path);
            pr_err!("cannot assemble: {}: {}\n", who, a.message());
            if a.kind == crate::raidmig_core::assemble::AssembleErrorKind::NoSuperblock {
                pr_err!("give level= to start a migration from a plain disk\n");
            }
        }
        (LoadError::Io { .. }, _) => {
            pr_err!("member {}: {}\n", e.device().map_or("?", path), e.message());
        }
        _ => match e.device() {
            Some(d) => pr_err!("member {}: {}\n", path(d), e.message()),
            None => pr_err!("{}\n", e.message()),
        },
    }
    shim::errno(e.errno())
}

/// Tells what the load sequence did beyond the ordinary.
fn tell(loaded: &Loaded, paths: &[&str], order: &[u8]) {
    let notes = &loaded.notes;
    let path_of_role = |r: usize| order.get(r).and_then(|&d| paths.get(d as usize)).copied().unwrap_or("?");
    if let Some(at) = notes.forced_over {
        pr_warn!("{}: data at sector {} after the volume is overwritten (force=1)\n", paths[0], at);
    }
    for role in 0..MAX_MEMBERS {
        if notes.caught_up & (1 << role) != 0 {
            pr_info!("raidmig0: member {} was one superblock update behind: brought level\n", path_of_role(role));
        }
    }
    for role in notes.missing.iter() {
        pr_warn!("raidmig0: role {} has no member: assembled degraded, the role recorded faulty\n", role);
    }
    for (device, path) in paths.iter().enumerate() {
        if notes.kicked_devices & (1 << device) != 0 {
            pr_warn!("raidmig0: member {} is not fresh (recorded faulty, or stale): not used\n", path);
        }
    }
    let failed = loaded.array.failed();
    if !failed.is_empty() {
        let target = loaded.array.target();
        pr_warn!(
            "raidmig0: {} degraded: {} of {} members in sync\n",
            target.level().name(),
            target.members() - failed.count(),
            target.members()
        );
    }
    if let Some(unit) = notes.replayed {
        pr_info!("raidmig0: finished unit {} from the staging area\n", unit);
    }
    if let Some((unit, e)) = notes.replay_failed {
        pr_err!(
            "raidmig0: cannot finish unit {} from the staging area: error {} on member {}; its I/O goes to the staging area, the migration is stopped until resumed\n",
            unit,
            e.errno,
            path_of_role(e.member)
        );
    }
}

/// Why the load sequence did not give an array.
enum Failed {
    /// The core refused.
    Load(LoadError),
    /// No memory for its buffers.
    Kernel(Error),
}

/// Runs the core's load sequence over the opened members, its outcome on
/// the heap. A frame of its own (not inlined): insmod's kernel stack holds
/// it, the sequence and the block I/O under it.
#[inline(never)]
fn run_load(
    opened: &[Member],
    paths: &[&str],
    sizes: &[u64],
    params: &LoadParams,
) -> Result<(KBox<Loaded>, MovedMap), Failed> {
    let mut fresh = Fresh { array_uuid: shim::random_uuid(), member_uuids: [[0; 16]; MAX_MEMBERS] };
    for u in fresh.member_uuids[..opened.len()].iter_mut() {
        *u = shim::random_uuid();
    }
    let bioset = KBox::pin_init(BioSet::new(), GFP_KERNEL).map_err(Failed::Kernel)?;
    let mut buf = IoBuf::new(LOAD_BUFFER_BYTES.max(2 * SUPERBLOCK_BYTES)).map_err(Failed::Kernel)?;
    let (bytes, region) = buf.split();
    let mut io = LoadIo { devs: opened, paths, bioset: &bioset, region, moved: MovedMap::empty() };
    let loaded = lifecycle::load(&mut io, sizes, params, &fresh, time::now(), bytes).map_err(Failed::Load)?;
    let loaded = KBox::new(loaded, GFP_KERNEL).map_err(|_| Failed::Kernel(ENOMEM))?;
    Ok((loaded, io.moved))
}

/// Validates the parameters, opens the members, runs the load sequence and
/// adds /dev/raidmig0.
pub(crate) fn from_params() -> Result<Running> {
    let paths = config::parse_members(shim::members().unwrap_or("")).map_err(refuse)?;
    let level = match shim::level().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(config::parse_level(l).map_err(refuse)?),
    };
    let chunk_sectors = config::chunk_sectors_from_kb(shim::chunk_kb()).map_err(refuse)?;
    let speed_limit_kbps = config::speed_limit_from_param(shim::speed_limit_max_kbps()).map_err(refuse)?;
    let paths = paths.as_slice();
    if let Some(level) = level {
        if paths.len() < level.min_members() || paths.len() > level.max_members() {
            return Err(load_error(LoadError::Prepare(PrepareError::TooFewMembers), paths, Some(level)));
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
    let mut sizes = [0u64; MAX_MEMBERS];
    for (i, m) in opened.iter().enumerate() {
        devs[i] = m.dev();
        sizes[i] = m.sectors();
    }
    if let Some((a, b)) = config::first_duplicate(&devs[..opened.len()]) {
        pr_err!("members {} and {} are the same disk\n", paths[a], paths[b]);
        return Err(EINVAL);
    }

    let params = LoadParams {
        level,
        chunk_sectors,
        assume_clean: shim::assume_clean(),
        force: shim::force(),
        start: shim::start(),
        unit_sectors: UNIT_SECTORS,
        bitmap_region_sectors: u64::from(shim::bitmap_region_mb()) << 11,
        engine: migrator::config(),
        at_once: true,
    };
    let (loaded, moved) = run_load(&opened, paths, &sizes[..opened.len()], &params).map_err(|e| match e {
        Failed::Load(e) => load_error(e, paths, level),
        Failed::Kernel(e) => e,
    })?;
    let bitmap_image = read_bitmap(&loaded, &opened, paths)?;
    start(loaded, opened, paths, bitmap_image, moved, speed_limit_kbps)
}

/// Puts the members in role order, reads the write-intent bitmap, makes the
/// array, adds /dev/raidmig0 and starts the array thread. A frame of its
/// own, off the stack while the load sequence runs.
#[inline(never)]
fn start(
    loaded: KBox<Loaded>,
    opened: KVec<Member>,
    paths: &[&str],
    bitmap_image: Option<BitmapImages>,
    moved: MovedMap,
    speed_limit_kbps: u64,
) -> Result<Running> {
    let n = loaded.members.count;
    tell(&loaded, paths, &loaded.device_of_role[..n]);

    // Members and their paths in role order; a role assembled without its
    // device has none.
    let mut slots: KVec<Option<Member>> = KVec::with_capacity(opened.len(), GFP_KERNEL)?;
    for m in opened {
        slots.push(Some(m), GFP_KERNEL)?;
    }
    let mut members = KVec::with_capacity(n, GFP_KERNEL)?;
    let mut role_paths = KVec::with_capacity(n, GFP_KERNEL)?;
    for &device in loaded.device_of_role[..n].iter() {
        let device = device as usize;
        let member = slots.get_mut(device).and_then(Option::take);
        let path = if member.is_some() { paths[device] } else { "missing" };
        members.push(member, GFP_KERNEL)?;
        role_paths.push(CString::try_from_fmt(fmt!("{}", path))?, GFP_KERNEL)?;
    }
    // Hot spares of the array, kept aside until it exists; devices left out
    // (not fresh) are closed here, with `slots`.
    let mut spares = KVec::new();
    for (device, slot) in slots.iter_mut().enumerate() {
        if loaded.notes.spare_devices & (1 << device) != 0 {
            if let Some(dev) = slot.take() {
                spares.push((device, dev), GFP_KERNEL)?;
            }
        }
    }

    let view = loaded.array.view();
    let target = loaded.array.target();
    let limits = limits_for(members.iter().flatten(), &target)?;
    let name = CString::try_from_fmt(fmt!("raidmig0"))?;
    let state = match &loaded.array {
        Recovered::Settled { state, .. } => *state,
        Recovered::Migration(e) => Engine::state(e),
    };
    let array = new_array(name, members, role_paths, &loaded, bitmap_image, moved, speed_limit_kbps)?;
    for (device, dev) in spares {
        let path = CString::try_from_fmt(fmt!("{}", paths[device]))?;
        let device_sectors = dev.sectors();
        // A spare gets a new identity each load (it holds no data).
        let slot = KBox::new(Slot { dev, path, uuid: shim::random_uuid(), device_sectors }, GFP_KERNEL)?;
        array.members().add_spare(slot)?;
        pr_info!("raidmig0: {} is a hot spare\n", paths[device]);
    }
    let disk = Disk::add(kernel::c_str!("raidmig0"), view.volume_sectors, limits, array.clone(), sysfs::groups())?;
    pr_info!(
        "raidmig0: {} over {} members, chunk {} KiB, {} MiB, {}\n",
        target.level().name(),
        n,
        target.chunk_sectors() / 2,
        view.volume_sectors >> 11,
        state.name()
    );
    let thread = Thread::spawn(kernel::c_str!("raidmig0"), array, |a| a.run_migration())?;
    Ok(Running { _thread: thread, _disk: disk })
}

/// The array itself, initialised in place: a frame of its own (the
/// initializer's temporaries take a few KiB of stack).
#[inline(never)]
fn new_array(
    name: CString,
    members: KVec<Option<Member>>,
    role_paths: KVec<CString>,
    loaded: &Loaded,
    bitmap_image: Option<BitmapImages>,
    moved: MovedMap,
    speed_limit_kbps: u64,
) -> Result<Arc<Array>> {
    let array = Arc::pin_init(
        Array::new(name, members, role_paths, loaded.members, &loaded.array, bitmap_image, moved, loaded.run)?,
        GFP_KERNEL,
    )?;
    array.control().install(loaded.array);
    // Before the array thread starts: the first unit is throttled already.
    array.control().set_speed_limit_kbps(speed_limit_kbps);
    Ok(array)
}

/// The write-intent bitmap of a settled array that keeps one: for each of
/// its live and kept images, the union of the images on its members in
/// sync, read before the volume is exposed, so that the regions an unclean
/// shutdown left dirty are resynced (mirrors from the copy reads take),
/// and a member out of sync can be re-added with only the regions written
/// since it left rebuilt.
#[inline(never)]
fn read_bitmap(loaded: &Loaded, devs: &[Member], paths: &[&str]) -> Result<Option<BitmapImages>> {
    if !matches!(loaded.array, Recovered::Settled { .. }) {
        return Ok(None);
    }
    let target = loaded.array.target();
    let Some(geo) = loaded.array.bitmap_region().and_then(|r| BitmapGeometry::new(target.capacity(), r)) else {
        return Ok(None);
    };
    let out = loaded.array.health().out_of_sync();
    let mut live = KVec::from_elem(0u8, geo.image_bytes(), GFP_KERNEL)?;
    let mut kept = KVec::from_elem(0u8, geo.image_bytes(), GFP_KERNEL)?;
    let bioset = KBox::pin_init(BioSet::new(), GFP_KERNEL)?;
    let step = LOAD_BUFFER_BYTES.min(live.len());
    let mut buf = IoBuf::new(step)?;
    let (bytes, region) = buf.split();
    for role in (0..loaded.members.count).filter(|&r| !out.contains(r)) {
        let device = loaded.device_of_role[role] as usize;
        let Some(dev) = devs.get(device) else { continue };
        let sectors = loaded.members.device_sectors[role];
        for (image, first) in [(&mut live, bitmap::block_sector(sectors, 0)), (&mut kept, bitmap::kept_block_sector(sectors, 0))] {
            for off in (0..image.len()).step_by(step) {
                let n = step.min(image.len() - off);
                region.read(&bioset, dev, first + (off >> SECTOR_SHIFT) as u64, &mut bytes[..n]).inspect_err(|e| {
                    pr_err!("member {}: cannot read its write-intent bitmap: {:?}\n", paths.get(device).copied().unwrap_or("?"), e);
                })?;
                for (d, s) in image[off..off + n].iter_mut().zip(&bytes[..n]) {
                    *d |= *s;
                }
            }
        }
    }
    Ok(Some((live, kept)))
}

/// Queue limits: stacked from the members, hints from the layout, a volatile
/// write cache with FUA, and discard where every member and the layout
/// allow it.
fn limits_for<'a>(members: impl Iterator<Item = &'a Member> + Clone, target: &Geometry) -> Result<Limits> {
    let mut limits = Limits::stacking();
    for m in members.clone() {
        limits.stack_member(m);
    }
    let block = core::num::NonZeroU32::new(limits.logical_block_size()).ok_or(EINVAL)?;
    let chunk_bytes = target.chunk_sectors() << SECTOR_SHIFT;
    if chunk_bytes % block != 0 {
        pr_err!("chunk is smaller than the members' logical block size\n");
        return Err(EINVAL);
    }
    limits.set_write_cache_fua();
    set_layout_limits(&mut limits, target, members.clone().all(Member::supports_discard));
    Ok(limits)
}
