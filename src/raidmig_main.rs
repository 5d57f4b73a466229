// SPDX-License-Identifier: GPL-2.0

//! raidmig: a block device stacked over member disks in a RAID layout,
//! built to turn a plain disk that is in use into a RAID volume on line.
//!
//! `insmod raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64`
//! creates /dev/raidmig0. Each host request is redirected at bio level to
//! the members that hold its sectors.
//!
//! The tree reads top down, with no import loops:
//!
//! - [`load`]: module parameters to a running array (the top).
//! - [`array`], [`sysfs`]: a running array and its knobs.
//! - [`host`], [`migrator`]: a host request as bios; the migration thread.
//! - [`stripes`], [`coordination`], [`members`]: raid5 writes, the meeting
//!   point of host I/O and the migration, the member devices.
//! - [`sys`]: thin safe wrappers over the kernel's C API.
//! - [`raidmig_core`] (`core/`): every decision, pure and allocation-free,
//!   also built and tested on the host by `cargo test`.

use kernel::prelude::*;

mod array;
mod bitmap;
mod coordination;
mod host;
mod load;
mod members;
mod migrator;
mod moved_map;
#[path = "core/lib.rs"]
mod raidmig_core;
mod repair;
mod reshaping;
mod spares;
mod stripes;
mod sys;
mod sysfs;

module! {
    type: RaidMig,
    name: "raidmig",
    author: "raidmig developers",
    description: "On-line migration of a disk in use to RAID",
    license: "GPL",
}

struct RaidMig {
    _array: load::Running,
}

impl kernel::Module for RaidMig {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(RaidMig { _array: load::from_params()? })
    }
}
