// SPDX-License-Identifier: GPL-2.0

//! raidmig: a block device stacked over member disks in a RAID layout,
//! built to turn a plain disk that is in use into a RAID volume on line.
//!
//! `insmod raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64`
//! creates /dev/raidmig0. Each host request is redirected at bio level to
//! the members that hold its sectors.
//!
//! The layout math and every other decision that needs no kernel lives in
//! the pure core (`core/`), which is also built and tested on the host.

use kernel::prelude::*;

mod array;
mod bio;
mod coordination;
mod disk;
mod iobuf;
mod kthread;
mod load;
mod member;
mod migrator;
mod raid5_write;
#[path = "core/lib.rs"]
mod raidmig_core;
mod request;
mod shim;
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
