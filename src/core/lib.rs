//! raidmig's pure core: layout math, module-parameter validation, the on-disk
//! format, the migration planner and crash recovery.
//!
//! Nothing here touches a device, allocates or depends on the `kernel` crate:
//! the kernel module includes this file as its `raidmig_core` module, and
//! `cargo test` builds it as a `no_std` crate on the host, so both run the very
//! same code. Modules refer to each other through `super::`, which resolves the
//! same way in both builds.
//!
//! In the kernel build `--cfg MODULE` is set and this file is a module, not a
//! crate root, so the crate-level attribute below applies to the host only.
#![cfg_attr(not(MODULE), no_std)]
#![forbid(unsafe_code)]
#![allow(unreachable_pub)]

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
