//! Member bios: clones of host bios redirected to a member, and data-less
//! bios (flush, discard, write zeroes), all counted against their host
//! request's [`InFlight`]; and synchronous member I/O on vmalloc buffers.
//!
//! Clones share the host bio's pages (no copy): a clone is cut down to one
//! piece of the layout with `bio_trim` and pointed at the member sector.
//! Every member bio of a host request carries a [`BioTag`] in the bio set's
//! front pad, so that its completion can say which member and sector failed.

use crate::sys::{
    member::Member,
    request::{self, DataBio, InFlight},
    shim,
};
use core::{mem::size_of, ptr::addr_of_mut};
use kernel::{bindings, error::to_result, init, prelude::*, types::Opaque};

/// What a member bio of a host request carries just before it (the bio
/// set's front pad): where it was sent, for the message if it fails.
#[repr(C)]
struct BioTag {
    role: u32,
    flags: u32,
    sector: u64,
    /// An asynchronous buffer bio's request token, or null.
    token: *mut core::ffi::c_void,
}

/// [`BioTag`] flag: the bio writes (data, discard, flush).
const TAG_WRITE: u32 = 1;
/// [`BioTag`] flag: what the bio carries has a copy elsewhere (a mirror, or
/// raid5 parity), so its failure need not fail the request.
const TAG_REDUNDANT: u32 = 2;
/// [`BioTag`] flags: the bits above hold the index of the buffer of an
/// asynchronous buffer bio ([`BioSet::submit_async`]).
const TAG_INDEX_SHIFT: u32 = 16;

/// Bytes in front of every bio of the set: a multiple of 8, so the bio after
/// it stays aligned.
const FRONT_PAD: u32 = size_of::<BioTag>() as u32;
const _: () = assert!(FRONT_PAD % 8 == 0);

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
                    FRONT_PAD,
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
    /// sector) of host bio `src` to `member` (of role `role`) at
    /// `member_sector`; `redundant` when its data has a copy elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit_clone(
        &self,
        member: &Member,
        role: usize,
        redundant: bool,
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
        // SAFETY: `bio` comes from this bio set, with its front pad.
        unsafe { submit(bio, role, redundant, io) };
    }

    /// Submits a bio without data to `member` (of role `role`): a flush
    /// when `sectors` is 0, otherwise a discard or write-zeroes of
    /// `[sector, sector + sectors)`; `redundant` as for clones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit_dataless(
        &self,
        member: &Member,
        role: usize,
        redundant: bool,
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
        // SAFETY: `bio` comes from this bio set, with its front pad.
        unsafe { submit(bio, role, redundant, io) };
    }
}

impl BioSet {
    /// Reads (`write` false) or writes `[start, start + len)` of a buffer at
    /// `sector` of `member`, waiting for completion; `opf_flags` are added to
    /// the operation (e.g. FUA).
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
        sector: u64,
        start: *mut u8,
        len: usize,
    ) -> Result {
        let op = if write { bindings::req_op_REQ_OP_WRITE } else { bindings::req_op_REQ_OP_READ };
        // SAFETY: the caller's range is vmalloc memory: its cache lines go
        // out before the device touches the pages.
        unsafe { shim::flush_vmap(start, len) };
        // SAFETY: as above.
        let r = unsafe { self.sync_io_pages(member, op | opf_flags, sector, start, len) };
        if !write {
            // SAFETY: as above; the device wrote the pages: drop stale lines.
            unsafe { shim::invalidate_vmap(start, len) };
        }
        r
    }

    /// The bios of [`BioSet::sync_io`], one after another.
    ///
    /// # Safety
    ///
    /// As for [`BioSet::sync_io`].
    unsafe fn sync_io_pages(
        &self,
        member: &Member,
        opf: bindings::blk_opf_t,
        mut sector: u64,
        mut start: *mut u8,
        mut len: usize,
    ) -> Result {
        while len > 0 {
            // SAFETY: guaranteed by the caller.
            let (bio, added) = unsafe { self.buffer_bio(member, opf, sector, start, len) };
            // SAFETY: `bio` is complete; `submit_bio_wait` returns once it
            // has ended, after which it is ours to put.
            let ret = unsafe {
                let ret = bindings::submit_bio_wait(bio);
                bindings::bio_put(bio);
                ret
            };
            if ret != 0 {
                return Err(Error::from_errno(ret));
            }
            sector += (added >> 9) as u64;
            start = start.wrapping_add(added);
            len -= added;
        }
        Ok(())
    }

    /// A bio for the first part of `[start, start + len)` that fits one
    /// bio (up to `BIO_MAX_VECS` pages), at `sector` of `member`, and the
    /// bytes it holds.
    ///
    /// # Safety
    ///
    /// As for [`BioSet::sync_io`].
    unsafe fn buffer_bio(
        &self,
        member: &Member,
        opf: bindings::blk_opf_t,
        sector: u64,
        start: *mut u8,
        len: usize,
    ) -> (*mut bindings::bio, usize) {
        // SAFETY: the bio set is initialised and has vectors; a sleeping
        // mempool allocation cannot fail.
        let bio = unsafe {
            bindings::bio_alloc_bioset(member.raw_bdev(), bindings::BIO_MAX_VECS as u16, opf, shim::gfp_noio(), self.raw())
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
        (bio, added)
    }

    /// Reads or writes (`write` true, with extra request flags `opf_flags`,
    /// such as FUA) several ranges of a buffer, each at a sector of a
    /// member, all submitted before waiting: the bios are chained as
    /// `blk_next_bio` chains a discard's, so that the last one ends when all
    /// have. Returns an error if any failed (not which one). Each bio is
    /// submitted before the next is allocated, so the mempool always gets
    /// its elements back.
    ///
    /// # Safety
    ///
    /// Every range `(member, sector, start, len, write)` must be as for
    /// [`BioSet::sync_io`], and the memory a read fills must not overlap any
    /// other range of the batch.
    pub(crate) unsafe fn sync_io_batch<'m>(
        &self,
        opf_flags: bindings::blk_opf_t,
        ranges: impl Iterator<Item = (&'m Member, u64, *mut u8, usize, bool)> + Clone,
    ) -> Result {
        for (_, _, start, len, _) in ranges.clone() {
            // SAFETY: as in `sync_io`.
            unsafe { shim::flush_vmap(start, len) };
        }
        let mut last: *mut bindings::bio = core::ptr::null_mut();
        plugged(|| {
            for (member, mut sector, mut start, mut len, write) in ranges.clone() {
                let op = if write { bindings::req_op_REQ_OP_WRITE | opf_flags } else { bindings::req_op_REQ_OP_READ };
                while len > 0 {
                    // SAFETY: guaranteed by the caller.
                    let (bio, added) = unsafe { self.buffer_bio(member, op, sector, start, len) };
                    if !last.is_null() {
                        // SAFETY: `last` is complete and not yet submitted:
                        // chained to `bio` and submitted, it ends into
                        // `bio`, which then ends only after it (what
                        // `bio_chain_and_submit`, not exported, does).
                        unsafe {
                            bindings::bio_chain(last, bio);
                            bindings::submit_bio(last);
                        }
                    }
                    last = bio;
                    sector += (added >> 9) as u64;
                    start = start.wrapping_add(added);
                    len -= added;
                }
            }
        });
        if last.is_null() {
            return Ok(());
        }
        // SAFETY: `last` is complete; it ends once every bio chained to it
        // has; it is ours to put after `submit_bio_wait`.
        let ret = unsafe {
            let ret = bindings::submit_bio_wait(last);
            bindings::bio_put(last);
            ret
        };
        for (_, _, start, len, write) in ranges {
            if !write {
                // SAFETY: as in `sync_io`.
                unsafe { shim::invalidate_vmap(start, len) };
            }
        }
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }

    /// Reads (`write` false) or writes `[start, start + len)` of a buffer at
    /// `sector` of `member` (of role `role`) without waiting: each bio is
    /// tagged with `role`, `index` and the token `count` returns before it is
    /// submitted (see [`async_bio_ended`]), and ends in `end_io` with
    /// `private`. `opf_flags` are added to a write (e.g. FUA).
    ///
    /// # Safety
    ///
    /// `[start, start + len)` must be vmalloc memory that stays valid, and
    /// that nothing else accesses, until every bio has ended; `len` a
    /// multiple of 512; `end_io` must end each bio with
    /// [`async_bio_ended`], and be sound for `private` and the tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn submit_async(
        &self,
        member: &Member,
        role: usize,
        index: u16,
        write: bool,
        opf_flags: bindings::blk_opf_t,
        mut sector: u64,
        mut start: *mut u8,
        mut len: usize,
        end_io: unsafe extern "C" fn(*mut bindings::bio),
        private: *mut core::ffi::c_void,
        mut count: impl FnMut() -> *mut core::ffi::c_void,
    ) {
        let op = if write { bindings::req_op_REQ_OP_WRITE | opf_flags } else { bindings::req_op_REQ_OP_READ };
        // SAFETY: as in `sync_io`.
        unsafe { shim::flush_vmap(start, len) };
        while len > 0 {
            // SAFETY: guaranteed by the caller.
            let (bio, added) = unsafe { self.buffer_bio(member, op, sector, start, len) };
            // SAFETY: `bio` is fresh, from this set (with its front pad), and
            // complete; after `submit_bio` it belongs to the block layer
            // until `end_io`.
            unsafe {
                let tag = bio.cast::<u8>().sub(FRONT_PAD as usize).cast::<BioTag>();
                tag.write(BioTag {
                    role: role as u32,
                    flags: if write { TAG_WRITE } else { 0 } | (u32::from(index) << TAG_INDEX_SHIFT),
                    sector,
                    token: count(),
                });
                (*bio).bi_private = private;
                (*bio).bi_end_io = Some(end_io);
                bindings::submit_bio(bio);
            }
            sector += (added >> 9) as u64;
            start = start.wrapping_add(added);
            len -= added;
        }
    }

    /// Flushes `member`'s volatile cache, waiting for completion.
    pub(crate) fn sync_flush(&self, member: &Member) -> Result {
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
            return Err(Error::from_errno(ret));
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

/// Tags a freshly built member bio, sets its completion and submits it.
///
/// # Safety
///
/// `bio` must be fresh, allocated from a [`BioSet`] (with its front pad).
unsafe fn submit(bio: *mut bindings::bio, role: usize, redundant: bool, io: &InFlight) {
    // SAFETY: nobody else references `bio` yet; its front pad holds a tag;
    // after `submit_bio` it belongs to the block layer until
    // `member_bio_done`.
    unsafe {
        let tag = bio.cast::<u8>().sub(FRONT_PAD as usize).cast::<BioTag>();
        tag.write(BioTag {
            role: role as u32,
            // `op_is_write`: data-out operations have odd numbers.
            flags: if (*bio).bi_opf & 1 != 0 { TAG_WRITE } else { 0 }
                | if redundant { TAG_REDUNDANT } else { 0 },
            sector: (*bio).bi_iter.bi_sector,
            token: core::ptr::null_mut(),
        });
        (*bio).bi_private = io.add_bio();
        (*bio).bi_end_io = Some(member_bio_done);
        bindings::submit_bio(bio);
    }
}

/// Completion of a member bio: account it against its host request, and
/// report a failure with the member and sector it went to (the request
/// takes the error unless the array serves it otherwise).
unsafe extern "C" fn member_bio_done(bio: *mut bindings::bio) {
    // SAFETY: called once by the block layer for a bio built by `submit`,
    // whose front pad holds its tag.
    unsafe {
        let token = (*bio).bi_private;
        let status = (*bio).bi_status;
        let tag = &*bio.cast::<u8>().sub(FRONT_PAD as usize).cast::<BioTag>();
        let (role, sector) = (tag.role as usize, tag.sector);
        let (write, redundant) = (tag.flags & TAG_WRITE != 0, tag.flags & TAG_REDUNDANT != 0);
        bindings::bio_put(bio);
        let mut status = status;
        if status != 0 {
            let errno = bindings::blk_status_to_errno(status);
            if !request::bio_failed(token, role, sector, write, redundant, errno) {
                status = 0;
            }
        }
        request::bio_finished(token, status);
    }
}

/// How an asynchronous buffer bio ([`BioSet::submit_async`]) ended, for
/// its `end_io`, which calls this once.
pub(crate) struct AsyncEnd {
    /// The bio's `private`.
    pub(crate) private: *mut core::ffi::c_void,
    /// Its buffer's index, role, member sector and token.
    pub(crate) index: usize,
    pub(crate) role: usize,
    pub(crate) sector: u64,
    pub(crate) token: *mut core::ffi::c_void,
    /// Whether it wrote.
    pub(crate) write: bool,
    /// Its status, and as an errno (0 on success).
    pub(crate) status: bindings::blk_status_t,
    pub(crate) errno: i32,
}

/// What an asynchronous buffer bio was sent with and how it ended; the bio
/// is put.
///
/// # Safety
///
/// `bio` must be a bio built by [`BioSet::submit_async`] that has ended.
pub(crate) unsafe fn async_bio_ended(bio: *mut bindings::bio) -> AsyncEnd {
    // SAFETY: the bio has ended and is ours; its front pad holds its tag.
    unsafe {
        let private = (*bio).bi_private;
        let status = (*bio).bi_status;
        let tag = &*bio.cast::<u8>().sub(FRONT_PAD as usize).cast::<BioTag>();
        let end = AsyncEnd {
            private,
            index: (tag.flags >> TAG_INDEX_SHIFT) as usize,
            role: tag.role as usize,
            sector: tag.sector,
            token: tag.token,
            write: tag.flags & TAG_WRITE != 0,
            status,
            errno: if status != 0 { bindings::blk_status_to_errno(status) } else { 0 },
        };
        bindings::bio_put(bio);
        end
    }
}

/// Runs `f` under a block plug of its own, the task's plug (if any) set
/// aside meanwhile: for member bios submitted from `queue_rq`, which blk-mq
/// may call while it flushes the submitting task's plug. Member requests
/// added to that plug would be issued by, and could make recursive, the
/// flush that is running our `queue_rq`; in a plug of their own they are
/// issued when `f` is done, to the members' queues only.
pub(crate) fn plugged_apart<R>(f: impl FnOnce() -> R) -> R {
    let outer = shim::plug_take();
    let r = plugged(f);
    // SAFETY: taken above on this task; `plugged` finished its plug.
    unsafe { shim::plug_restore(outer) };
    r
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

/// Zeroes the ranges `(member, sector, sectors)`, all submitted before
/// waiting, as [`Member::zero_out`] zeroes one (write-zeroes where the
/// member has it, else bios of the zero page): the chains that
/// `__blkdev_issue_zeroout` builds for each range are chained into one, as
/// it chains its own bios, so that the last bio ends when all have. Returns
/// an error if any failed (not which one).
pub(crate) fn zero_out_all<'m>(ranges: impl Iterator<Item = (&'m Member, u64, u64)>) -> Result {
    let mut last: *mut bindings::bio = core::ptr::null_mut();
    let mut ret = 0;
    plugged(|| {
        for (member, sector, sectors) in ranges {
            // SAFETY: the member's block device is open while `member` is
            // borrowed; `last` is null or the unsubmitted last bio of the
            // chain built so far, which the call chains to its first bio
            // and submits; the allocations sleep (this runs in the
            // migration thread, which may).
            ret = unsafe {
                bindings::__blkdev_issue_zeroout(member.raw_bdev(), sector, sectors, shim::gfp_noio(), &mut last, 0)
            };
            if ret != 0 {
                break;
            }
        }
    });
    if !last.is_null() {
        // SAFETY: `last` is complete and ends once every bio chained to it
        // has; it is ours to put after `submit_bio_wait`.
        let r = unsafe {
            let r = bindings::submit_bio_wait(last);
            bindings::bio_put(last);
            r
        };
        if ret == 0 {
            ret = r;
        }
    }
    to_result(ret)
}
