//! Devices added to a running array through sysfs: checked (the core's
//! `check_addition`: size, another array's superblock), then a replacement
//! for a failed role, rebuilt by the array thread, or a hot spare that takes
//! over at once when a member fails.
//!
//! Nothing is written to a replacement here: the array thread records it
//! in every superblock (the device's included) before it rebuilds anything
//! onto it. A hot spare gets a spare's superblock (the core's
//! `spare_slots`), with FUA, before it is taken: a later load given the
//! device holds it as a spare again, as mdadm assembles spares.

use crate::{
    members::{Members, Slot},
    raidmig_core::{
        layout::Geometry,
        prepare::{classify_addition, may_readd, spare_slots, AddError},
        tail::{superblock_sector, SUPERBLOCK_BYTES},
        format::Superblock,
    },
    sys::{iobuf::IoBuf, member::Member, shim},
};
use kernel::{bindings, fmt, prelude::*, str::CString};

const FUA: bindings::blk_opf_t = 1 << bindings::req_flag_bits___REQ_FUA;

/// Opens and checks the device at `path` for the array over `members` in
/// layout `g`, and makes it the replacement of the lowest failed role when
/// no rebuild runs, or a hot spare (recorded on it when the array is
/// settled, `newest` its superblock). `wake` wakes the array thread.
pub(crate) fn add(
    members: &Members,
    g: &Geometry,
    has_bitmap: bool,
    newest: Option<Superblock>,
    path: &str,
    wake: impl Fn(),
) -> Result {
    let name = members.name();
    let cpath = CString::try_from_fmt(fmt!("{}", path))?;
    let dev = Member::open(&cpath).inspect_err(|e| {
        pr_err!("{}: cannot add {}: cannot open it exclusively: {:?}\n", name, path, e);
    })?;
    if members.holds_device(dev.dev()) {
        pr_err!("{}: cannot add {}: it is a member or spare of this array already\n", name, path);
        return Err(EEXIST);
    }
    let identity = members.identity();
    let mut buf = IoBuf::new(2 * SUPERBLOCK_BYTES)?;
    let (bytes, region) = buf.split();
    let sectors = dev.sectors();
    region.read(members.bioset(), &dev, superblock_sector(sectors, 0), bytes).inspect_err(|_| {
        pr_err!("{}: cannot add {}: it cannot be read\n", name, path);
    })?;
    let (a, b) = bytes.split_at(SUPERBLOCK_BYTES);
    let (a, b) = (Superblock::decode_slot(a, 0), Superblock::decode_slot(b, 1));
    let addition = match classify_addition(sectors, &a, &b, &identity.array_uuid, g.member_sectors()) {
        Ok(addition) => addition,
        Err(e) => {
            pr_err!("{}: cannot add {}: {}\n", name, path, e.message());
            return Err(match e {
                AddError::TooSmall => ENOSPC,
                AddError::OtherArray => EEXIST,
                AddError::Damaged => Error::from_errno(-(kernel::bindings::EUCLEAN as i32)),
            });
        }
    };
    let health = members.health();
    let role = health.failed.iter().next().filter(|_| health.rebuild.is_none());
    // A member that left in sync, back as itself (in this load or a later
    // one): only what was written since it left is rebuilt (the bitmap kept
    // it).
    let readd_floor = newest.map_or(u64::MAX, |n| n.readd_floor);
    let readd = role.is_some_and(|r| may_readd(addition, r, &identity.uuids[r], readd_floor, has_bitmap));
    let uuid = match role {
        Some(r) if readd => identity.uuids[r],
        _ => shim::random_uuid(),
    };
    let slot = KBox::new(Slot { dev, path: cpath, uuid, device_sectors: sectors }, GFP_KERNEL)?;
    match role {
        Some(role) => {
            if members.replace(role, slot).is_err() {
                pr_err!("{}: cannot add {}: role {} had too many devices since the load\n", name, path, role);
                return Err(EBUSY);
            }
            if readd {
                members.start_readd(role);
                pr_info!("{}: {} re-added to role {}: only what was written since it left is rebuilt\n", name, path, role);
            } else {
                members.start_rebuild(role);
                pr_info!("{}: {} replaces role {}: it is rebuilt\n", name, path, role);
            }
        }
        None => {
            if let Some(newest) = newest {
                let sector = superblock_sector(slot.device_sectors, 0);
                spare_slots(&newest, slot.uuid, slot.device_sectors, bytes).map_err(|_| EINVAL)?;
                region.write(members.bioset(), &slot.dev, FUA, sector, &bytes[..2 * SUPERBLOCK_BYTES]).inspect_err(|_| {
                    pr_err!("{}: cannot add {}: its spare superblock cannot be written\n", name, path);
                })?;
            }
            members.add_spare(slot)?;
            pr_info!("{}: {} added as a hot spare\n", name, path);
        }
    }
    wake();
    Ok(())
}

/// When a role failed and no rebuild runs, gives it a hot spare, if there
/// is one (the array thread, before it records the health).
pub(crate) fn take_over(members: &Members) {
    let health = members.health();
    let Some(role) = health.failed.iter().next().filter(|_| health.rebuild.is_none()) else { return };
    let Some(spare) = members.take_spare() else { return };
    let path = CString::try_from_fmt(fmt!("{}", &*spare.path)).ok();
    match members.replace(role, spare) {
        Ok(()) => {
            members.start_rebuild(role);
            if let Some(p) = path {
                pr_info!("{}: hot spare {} takes over role {}: it is rebuilt\n", members.name(), &*p, role);
            }
        }
        Err(spare) => {
            pr_err!("{}: role {} had too many devices since the load: spare kept\n", members.name(), role);
            let _ = members.add_spare(spare);
        }
    }
}
