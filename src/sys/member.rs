//! A member disk: a block device opened exclusively for the array's lifetime.
//!
//! The exclusive open is what makes a member "ours": while it is held, nobody
//! can mount it, add it to md or open it for us a second time, and an attempt
//! to use a member that someone else holds fails with `EBUSY`.

use crate::sys::shim;
use kernel::{bindings, error::from_err_ptr, prelude::*, str::CStr};

/// The holder of every member's exclusive claim (one array per module load).
static HOLDER: u8 = 0;

/// An exclusively opened member block device.
///
/// # Invariants
///
/// `file` is a block device file opened by `bdev_file_open_by_path` and not
/// yet released, and `bdev` is its block device.
pub(crate) struct Member {
    file: *mut bindings::file,
    bdev: *mut bindings::block_device,
}

// SAFETY: the block device file and block device may be used from any thread;
// `Member` only reads immutable or internally synchronised fields of them.
unsafe impl Send for Member {}
// SAFETY: as above.
unsafe impl Sync for Member {}

impl Member {
    /// Opens `path` for reading and writing, exclusively.
    pub(crate) fn open(path: &CStr) -> Result<Member> {
        // SAFETY: `path` is NUL-terminated; the holder is a static whose
        // address outlives every claim; no holder operations are given.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_path(
                path.as_char_ptr(),
                shim::open_rw_excl(),
                core::ptr::addr_of!(HOLDER).cast_mut().cast(),
                core::ptr::null(),
            )
        })
        // insmod reports ENOENT as "Unknown symbol in module": say "No such
        // device" for a member path that does not exist.
        .map_err(|e| if e == ENOENT { ENODEV } else { e })?;
        // SAFETY: `file` is an open block device file.
        let bdev = unsafe { bindings::file_bdev(file) };
        // INVARIANT: `file` was just opened and `bdev` is its block device.
        Ok(Member { file, bdev })
    }

    /// The raw block device, for building bios in the bio wrapper.
    pub(crate) fn raw_bdev(&self) -> *mut bindings::block_device {
        self.bdev
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: `bdev` is valid by the type invariant; `bd_nr_sectors` is
        // what `bdev_nr_sectors()` reads.
        unsafe { (*self.bdev).bd_nr_sectors }
    }

    /// Device number, to tell whether two paths name the same disk.
    pub(crate) fn dev(&self) -> u32 {
        // SAFETY: `bdev` is valid by the type invariant and `bd_dev` is
        // constant while it is open.
        unsafe { (*self.bdev).bd_dev }
    }

    /// Whether the member accepts discards.
    pub(crate) fn supports_discard(&self) -> bool {
        // SAFETY: `bdev` and its queue are valid by the type invariant; this
        // is what `bdev_max_discard_sectors()` reads.
        unsafe { (*(*self.bdev).bd_queue).limits.max_discard_sectors > 0 }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `file` is open; it is released once.
        unsafe { bindings::bdev_fput(self.file) };
    }
}
