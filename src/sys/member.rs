//! A member disk: a block device opened exclusively for the array's lifetime.
//!
//! The exclusive open is what makes a member "ours": while it is held, nobody
//! can mount it, add it to md or open it for us a second time, and an attempt
//! to use a member that someone else holds fails with `EBUSY`.

use crate::sys::shim;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    prelude::*,
    str::CStr,
};

/// The holder of every member's exclusive claim (one array per module load).
static HOLDER: u8 = 0;

/// An exclusively opened member block device.
///
/// # Invariants
///
/// Until `released` is set, `file` is a block device file opened by
/// `bdev_file_open_by_path` and `bdev` is its block device; `dev` is its
/// device number. Once `released` is set (by [`Member::release`], whose
/// caller guarantees it), only [`Member::dev`] and [`Member::released`] are
/// called.
pub(crate) struct Member {
    file: *mut bindings::file,
    bdev: *mut bindings::block_device,
    dev: u32,
    released: AtomicBool,
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
        // SAFETY: `bdev` is the open file's block device; `bd_dev` is
        // constant while it is open.
        let dev = unsafe { (*bdev).bd_dev };
        // INVARIANT: `file` was just opened, `bdev` is its block device and
        // `dev` its number.
        Ok(Member { file, bdev, dev, released: AtomicBool::new(false) })
    }

    /// Closes the device before the member goes (a faulty member removed
    /// from the array): someone else may open it from then on.
    ///
    /// # Safety
    ///
    /// No bio built from this member is in flight, and none of its methods
    /// but [`Member::dev`] and [`Member::released`] is called from now on.
    pub(crate) unsafe fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            // SAFETY: `file` is open (not released before, by the swap);
            // the caller guarantees that nothing uses it any more.
            unsafe { bindings::bdev_fput(self.file) };
        }
    }

    /// Whether the device was released.
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// The raw block device, for building bios in the bio wrapper.
    pub(crate) fn raw_bdev(&self) -> *mut bindings::block_device {
        self.bdev
    }

    /// Zeroes `sectors` sectors from `sector`, waiting: write-zeroes where
    /// the device has it (it may deallocate the range, which then reads as
    /// zeros), else writes of the zero page (`blkdev_issue_zeroout`).
    pub(crate) fn zero_out(&self, sector: u64, sectors: u64) -> Result {
        // SAFETY: `bdev` is valid by the type invariant; the call sleeps
        // until the range is written, as the callers (the migration thread)
        // may.
        to_result(unsafe { bindings::blkdev_issue_zeroout(self.bdev, sector, sectors, shim::gfp_noio(), 0) })
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: `bdev` is valid by the type invariant; `bd_nr_sectors` is
        // what `bdev_nr_sectors()` reads.
        unsafe { (*self.bdev).bd_nr_sectors }
    }

    /// Device number, to tell whether two paths name the same disk (also
    /// once released).
    pub(crate) fn dev(&self) -> u32 {
        self.dev
    }

    /// The device's logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: `bdev` and its queue are valid by the type invariant; this
        // is what `bdev_logical_block_size()` reads.
        unsafe { (*(*self.bdev).bd_queue).limits.logical_block_size }
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
        // SAFETY: nothing uses the member any more (it goes); if not
        // released yet, `file` is open by the type invariant.
        unsafe { self.release() };
    }
}

/// The device number of the block device at `path`, without opening it
/// (a member's device is held exclusively).
pub(crate) fn lookup(path: &CStr) -> Result<u32> {
    let mut dev: bindings::dev_t = 0;
    // SAFETY: `path` is NUL-terminated; `dev` is a valid place to write.
    let r = unsafe { bindings::lookup_bdev(path.as_char_ptr(), &mut dev) };
    if r < 0 {
        return Err(Error::from_errno(r));
    }
    Ok(dev)
}
