//! Load time: from module parameters to a running array, or a refusal.
//!
//! Everything is checked before the disk appears, and nothing is written
//! to any member here: a refused load leaves the members as they were.

use crate::{
    array::Array,
    disk::{Disk, Limits},
    member::Member,
    raidmig_core::{
        config::{self, ConfigError},
        layout::{Geometry, GeometryError, Level, SECTOR_SHIFT},
    },
    shim,
};
use kernel::{fmt, prelude::*, str::CString, sync::Arc};

/// What the module holds while loaded.
pub(crate) struct Running {
    _disk: Disk<Array>,
}

fn refuse(e: ConfigError) -> Error {
    pr_err!("{}\n", e.message());
    EINVAL
}

/// Validates the parameters, opens the members and adds /dev/raidmig0.
pub(crate) fn from_params() -> Result<Running> {
    let paths = config::parse_members(shim::members().unwrap_or("")).map_err(refuse)?;
    let level: Level = config::parse_level(shim::level().unwrap_or("")).map_err(refuse)?;
    let chunk_sectors = config::chunk_sectors_from_kb(shim::chunk_kb()).map_err(refuse)?;
    let paths = paths.as_slice();
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

    let mut members = KVec::with_capacity(paths.len(), GFP_KERNEL)?;
    for path in paths {
        let cpath = CString::try_from_fmt(fmt!("{}", path))?;
        let member = Member::open(&cpath).map_err(|e| {
            pr_err!("cannot open member {}: {:?}\n", path, e);
            e
        })?;
        members.push(member, GFP_KERNEL)?;
    }

    let mut devs = [0u32; crate::raidmig_core::layout::MAX_MEMBERS];
    for (d, m) in devs.iter_mut().zip(members.iter()) {
        *d = m.dev();
    }
    if let Some((a, b)) = config::first_duplicate(&devs[..members.len()]) {
        pr_err!("members {} and {} are the same disk\n", paths[a], paths[b]);
        return Err(EINVAL);
    }

    let smallest = members.iter().map(Member::sectors).min().unwrap_or(0);
    let geometry = Geometry::for_devices(level, members.len(), chunk_sectors, smallest).map_err(|e| {
        pr_err!("{}\n", e.message());
        match e {
            GeometryError::TooSmall => ENOSPC,
            _ => EINVAL,
        }
    })?;

    let mut limits = Limits::stacking();
    for m in members.iter() {
        limits.stack_member(m);
    }
    let block = core::num::NonZeroU32::new(limits.logical_block_size()).ok_or(EINVAL)?;
    if (geometry.chunk_sectors() << SECTOR_SHIFT) % block != 0 {
        pr_err!("chunk is smaller than the members' logical block size\n");
        return Err(EINVAL);
    }
    let chunk_bytes = geometry.chunk_sectors() << SECTOR_SHIFT;
    let stripe_bytes = u32::try_from(geometry.stripe_sectors() << SECTOR_SHIFT).unwrap_or(0);
    limits.set_io_hints(chunk_bytes, stripe_bytes);
    limits.set_write_cache_fua();
    if !members.iter().all(Member::supports_discard) {
        limits.disable_discard();
    }

    let capacity = geometry.capacity();
    let array = Arc::pin_init(Array::new(geometry, members), GFP_KERNEL)?;
    let disk = Disk::add(kernel::c_str!("raidmig0"), capacity, limits, array)?;
    pr_info!(
        "raidmig0: {} over {} members, chunk {} KiB, {} MiB\n",
        level.name(),
        paths.len(),
        chunk_bytes >> 10,
        capacity >> (20 - SECTOR_SHIFT)
    );
    Ok(Running { _disk: disk })
}
