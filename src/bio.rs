//! Member bios: clones of host bios redirected to a member, and data-less
//! bios (flush, discard, write zeroes), all counted against their host
//! request's [`InFlight`].
//!
//! Clones share the host bio's pages (no copy): a clone is cut down to one
//! piece of the layout with `bio_trim` and pointed at the member sector.

use crate::{
    member::Member,
    request::{self, DataBio, InFlight},
    shim,
};
use core::ptr::addr_of_mut;
use kernel::{bindings, error::to_result, init, prelude::*, types::Opaque};

/// Bios kept in reserve so that member I/O makes progress under memory
/// pressure.
const POOL_BIOS: u32 = 64;

/// The array's own bio pool.
#[pin_data(PinnedDrop)]
pub(crate) struct BioSet {
    #[pin]
    raw: Opaque<bindings::bio_set>,
}

// SAFETY: a `bio_set` is internally synchronised (mempools).
unsafe impl Send for BioSet {}
// SAFETY: as above.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// Initialises a bio set. Clones share the host bio's vectors; the
    /// migration's synchronous bios need vectors of their own. A rescuer lets
    /// allocations make progress while the allocating task holds earlier bios
    /// on its `bio_list`.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        let init = |slot: *mut Self| {
            // SAFETY: `slot` is valid for writes.
            let raw = unsafe { Opaque::raw_get(addr_of_mut!((*slot).raw)) };
            // SAFETY: `raw` is valid for writes. `bioset_init` expects zeroed
            // memory (it leaves the unused bvec pool alone, and
            // `bioset_exit` tears down whatever is not zero); it cleans up
            // after itself on failure.
            to_result(unsafe {
                raw.write(core::mem::zeroed());
                bindings::bioset_init(
                    raw,
                    POOL_BIOS,
                    0,
                    (bindings::BIOSET_NEED_RESCUER | bindings::BIOSET_NEED_BVECS) as i32,
                )
            })
        };
        // SAFETY: the closure fully initialises `*slot` when it returns Ok and
        // leaves nothing behind otherwise; a `bio_set` is not moved after init.
        unsafe { init::pin_init_from_closure(init) }
    }

    fn raw(&self) -> *mut bindings::bio_set {
        self.raw.get()
    }

    /// Submits the part `[skip, skip + sectors)` (relative to the bio's first
    /// sector) of host bio `src` to `member` at `member_sector`.
    pub(crate) fn submit_clone(
        &self,
        member: &Member,
        src: &DataBio<'_>,
        skip: u64,
        sectors: u64,
        member_sector: u64,
        opf: bindings::blk_opf_t,
        io: &InFlight,
    ) {
        // SAFETY: `src` is a live bio of a request being processed; the bio
        // set is initialised. With a sleeping allocation from a mempool the
        // allocation cannot fail.
        let bio = unsafe {
            bindings::bio_alloc_clone(member.raw_bdev(), src.raw(), shim::gfp_noio(), self.raw())
        };
        // SAFETY: `bio` is a fresh clone covering `src` entirely, and
        // `[skip, skip + sectors)` lies within it.
        unsafe {
            bindings::bio_trim(bio, skip, sectors);
            (*bio).bi_opf = opf;
            (*bio).bi_iter.bi_sector = member_sector;
        }
        submit(bio, io);
    }

    /// Submits a bio without data to `member`: a flush when `sectors` is 0,
    /// otherwise a discard or write-zeroes of `[sector, sector + sectors)`.
    pub(crate) fn submit_dataless(
        &self,
        member: &Member,
        opf: bindings::blk_opf_t,
        sector: u64,
        sectors: u64,
        io: &InFlight,
    ) {
        // SAFETY: the bio set is initialised; a sleeping mempool allocation
        // cannot fail.
        let bio = unsafe {
            bindings::bio_alloc_bioset(member.raw_bdev(), 0, opf, shim::gfp_noio(), self.raw())
        };
        // SAFETY: `bio` is fresh and ours; the size fits because a request's
        // length (and so each member's part of it) fits in 32 bits of bytes.
        unsafe {
            (*bio).bi_iter.bi_sector = sector;
            (*bio).bi_iter.bi_size = (sectors << 9) as u32;
        }
        submit(bio, io);
    }
}

impl BioSet {
    /// Reads (`write` false) or writes `[start, start + len)` of a buffer at
    /// `sector` of `member`, waiting for completion; `opf_flags` are added to
    /// the operation (e.g. FUA). Returns the negative errno of a failure.
    ///
    /// The buffer is given by address because it is the caller's vmalloc
    /// memory (see `IoBuf`), whose pages are found with `vmalloc_to_page`.
    ///
    /// # Safety
    ///
    /// `[start, start + len)` must lie in vmalloc memory that stays valid and
    /// is not otherwise accessed until this returns; `len` a multiple of 512.
    pub(crate) unsafe fn sync_io(
        &self,
        member: &Member,
        write: bool,
        opf_flags: bindings::blk_opf_t,
        mut sector: u64,
        mut start: *mut u8,
        mut len: usize,
    ) -> Result<(), i32> {
        let op = if write { bindings::req_op_REQ_OP_WRITE } else { bindings::req_op_REQ_OP_READ };
        while len > 0 {
            // SAFETY: the bio set is initialised and has vectors; a sleeping
            // mempool allocation cannot fail.
            let bio = unsafe {
                bindings::bio_alloc_bioset(
                    member.raw_bdev(),
                    bindings::BIO_MAX_VECS as u16,
                    op | opf_flags,
                    shim::gfp_noio(),
                    self.raw(),
                )
            };
            // SAFETY: `bio` is fresh and ours.
            unsafe { (*bio).bi_iter.bi_sector = sector };
            let mut added = 0usize;
            while added < len {
                let addr = start.wrapping_add(added);
                let offset = addr as usize & (PAGE_SIZE - 1);
                let piece = (PAGE_SIZE - offset).min(len - added);
                // SAFETY: `addr` lies in the caller's vmalloc memory.
                let page = unsafe { bindings::vmalloc_to_page(addr.cast()) };
                // SAFETY: `page` holds `[offset, offset + piece)` of the buffer.
                if unsafe { bindings::bio_add_page(bio, page, piece as u32, offset as u32) } != piece as i32 {
                    break;
                }
                added += piece;
            }
            // SAFETY: `bio` is complete; `submit_bio_wait` returns once it
            // has ended, after which it is ours to put.
            let ret = unsafe {
                let ret = bindings::submit_bio_wait(bio);
                bindings::bio_put(bio);
                ret
            };
            if ret != 0 {
                return Err(ret);
            }
            sector += (added >> 9) as u64;
            start = start.wrapping_add(added);
            len -= added;
        }
        Ok(())
    }

    /// Flushes `member`'s volatile cache, waiting for completion.
    pub(crate) fn sync_flush(&self, member: &Member) -> Result<(), i32> {
        // SAFETY: the bio set is initialised; a sleeping mempool allocation
        // cannot fail; the bio is ours again after `submit_bio_wait`.
        let ret = unsafe {
            let bio = bindings::bio_alloc_bioset(
                member.raw_bdev(),
                0,
                bindings::req_op_REQ_OP_WRITE | request::REQ_PREFLUSH,
                shim::gfp_noio(),
                self.raw(),
            );
            let ret = bindings::submit_bio_wait(bio);
            bindings::bio_put(bio);
            ret
        };
        if ret != 0 {
            return Err(ret);
        }
        Ok(())
    }
}

const PAGE_SIZE: usize = bindings::PAGE_SIZE;

#[pinned_drop]
impl PinnedDrop for BioSet {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: the bio set was initialised and all its bios have been
        // freed: the array outlives every request.
        unsafe { bindings::bioset_exit(self.raw.get()) };
    }
}

/// Sets the completion of a freshly built member bio and submits it.
fn submit(bio: *mut bindings::bio, io: &InFlight) {
    // SAFETY: `bio` is a fresh bio that nobody else references yet; after
    // `submit_bio` it belongs to the block layer until `member_bio_done`.
    unsafe {
        (*bio).bi_private = io.add_bio();
        (*bio).bi_end_io = Some(member_bio_done);
        bindings::submit_bio(bio);
    }
}

/// Completion of a member bio: account it against its host request.
unsafe extern "C" fn member_bio_done(bio: *mut bindings::bio) {
    // SAFETY: called once by the block layer for a bio built by `submit`.
    unsafe {
        let token = (*bio).bi_private;
        let status = (*bio).bi_status;
        bindings::bio_put(bio);
        request::bio_finished(token, status);
    }
}

/// Runs `f` under a block plug, so that consecutive member bios it submits
/// to the same member can be merged before they reach that member's queue.
/// Called from the array's workqueue, where the task has no plug of its own.
pub(crate) fn plugged<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `blk_plug` is plain data; `blk_start_plug` initialises it.
    let mut plug: bindings::blk_plug = unsafe { core::mem::zeroed() };
    // SAFETY: the plug lives on this stack frame until `blk_finish_plug`.
    unsafe { bindings::blk_start_plug(&mut plug) };
    let r = f();
    // SAFETY: started above, finished once.
    unsafe { bindings::blk_finish_plug(&mut plug) };
    r
}
