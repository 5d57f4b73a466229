//! raidmig's pure core: layout math, module-parameter validation, the on-disk
//! format, the migration planner and crash recovery.
//!
//! Nothing here touches a device, allocates or depends on the `kernel` crate:
//! the kernel module includes this file as its `raidmig_core` module, and
//! `cargo test` builds it as a `no_std` crate on the host, so both run the very
//! same code. Modules refer to each other through `super::`, which resolves the
//! same way in both builds.
//!
//! Modules, bottom up:
//! - [`layout`]: levels and geometries, logical sector to member locations
//!   and back (md-compatible raid0, raid5 left-symmetric, raid10 near-2).
//! - [`parity`]: XOR helpers and raid5 per-stripe write plans.
//! - [`config`]: module parameters.
//! - [`crc32c`], [`format`]: the reserved tail and the superblock, field by
//!   field.
//! - [`members`], [`assemble`]: array identity, assembly from superblocks.
//! - [`plan`]: units and how each must be copied to survive a power cut.
//! - [`route`]: where host I/O goes while migrating.
//! - [`engine`]: the migration itself, over the [`engine::MemberIo`] trait.
//! - [`prepare`], [`recovery`]: starting a migration, resuming one.
//!
//! In the kernel build `--cfg MODULE` is set and this file is a module, not a
//! crate root, so the crate-level attribute below applies to the host only.
#![cfg_attr(not(MODULE), no_std)]
#![forbid(unsafe_code)]
#![allow(unreachable_pub)]
// The kernel module uses only part of the core at a time.
#![cfg_attr(MODULE, allow(dead_code))]

#[cfg(test)]
extern crate std;

pub mod assemble;
pub mod config;
pub mod crc32c;
pub mod engine;
pub mod format;
pub mod layout;
pub mod members;
pub mod parity;
pub mod plan;
pub mod prepare;
pub mod recovery;
pub mod route;
