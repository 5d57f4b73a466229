//! Thin safe wrappers over the kernel's C API: the only place with `unsafe`
//! code and raw `bindings::` calls (besides the sysfs tables). Everything
//! above is safe Rust over these types, and nothing here makes a decision
//! about the array: that is the core's.
//!
//! - [`shim`]: module parameters and static inline helpers from `shim.c`.
//! - [`member`]: a member block device, opened exclusively.
//! - [`iobuf`]: vmalloc buffers for synchronous member I/O.
//! - [`bio`]: member bios (clones of host bios, data-less bios, synchronous
//!   and asynchronous buffer I/O) and their completion.
//! - [`jobs`]: buffers whose member I/O runs with no task waiting, and the
//!   work item that takes their next steps.
//! - [`workqueue`]: a workqueue for work that memory reclaim may wait for.
//! - [`drain`]: counts of requests in two epochs, and waiting for one to
//!   empty.
//! - [`request`]: a blk-mq request and the count of its member bios.
//! - [`disk`]: the blk-mq disk, its tag set and queue limits.
//! - [`kthread`]: a kernel thread.
//! - [`once`]: a cell set at most once and read without a lock.
//! - [`time`]: the clocks.

pub(crate) mod bio;
pub(crate) mod disk;
pub(crate) mod drain;
pub(crate) mod iobuf;
pub(crate) mod jobs;
pub(crate) mod kthread;
pub(crate) mod member;
pub(crate) mod once;
pub(crate) mod request;
pub(crate) mod shim;
pub(crate) mod time;
pub(crate) mod workqueue;
