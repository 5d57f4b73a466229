//! A host request as the driver sees it, and the count of member bios that
//! must finish before it completes.
//!
//! Every request is completed exactly once, by whoever drops the last
//! reference to its [`InFlight`] count: the submitting path holds one
//! reference (a bias) until it has issued all member bios, each member bio
//! holds one until its completion. The first error wins and is what the
//! host sees.
//!
//! What the array must hear from a request's end or a member bio's failure
//! (possibly in interrupt context) goes through [`PduHooks`], which the disk
//! sets per request when blk-mq allocates it, so that no pointer into the
//! array travels with the request.

use core::{
    marker::PhantomData,
    mem::size_of,
    ptr::addr_of_mut,
    sync::atomic::{AtomicU32, AtomicU8, Ordering},
};
use kernel::{bindings, types::Opaque};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read data.
    Read,
    /// Write data.
    Write,
    /// Flush volatile caches (no data).
    Flush,
    /// Discard a range (no data).
    Discard,
    /// Write zeroes to a range (no data).
    WriteZeroes,
    /// Anything else: refused with `BLK_STS_NOTSUPP`.
    Unsupported,
}

const fn bit(b: bindings::req_flag_bits) -> bindings::blk_opf_t {
    1 << b
}

/// `REQ_PREFLUSH`.
pub(crate) const REQ_PREFLUSH: bindings::blk_opf_t = bit(bindings::req_flag_bits___REQ_PREFLUSH);

/// Request flags that member bios inherit from the host request. Durability
/// (FUA) and priority hints keep their meaning on every member.
const INHERITED_FLAGS: bindings::blk_opf_t = bit(bindings::req_flag_bits___REQ_FUA)
    | bit(bindings::req_flag_bits___REQ_SYNC)
    | bit(bindings::req_flag_bits___REQ_META)
    | bit(bindings::req_flag_bits___REQ_PRIO)
    | bit(bindings::req_flag_bits___REQ_IDLE)
    | bit(bindings::req_flag_bits___REQ_NOUNMAP);

const REQ_OP_MASK: bindings::blk_opf_t = (1 << bindings::REQ_OP_BITS) - 1;

/// What becomes of a request whose member bio failed, as the array decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// The request fails with the bio's error.
    Fail,
    /// A read: served again once every member bio has ended, avoiding the
    /// member (its data has a copy elsewhere).
    Retry,
    /// A write whose member the array has failed: the request succeeds if
    /// nothing else fails, but ends only once the failure is recorded
    /// ([`Phase::Record`]).
    Absorbed,
}

/// Which pass over a request the work item makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The first pass: serve it.
    Serve,
    /// A member read failed: serve it again, avoiding [`InFlight::avoid`].
    Retry,
    /// A member failed under a write: wait until the array has recorded the
    /// failure, then end the request (md holds such writes the same way).
    Record,
}

/// Passes over a request before it fails: the first, and a retry per copy
/// a read may still find.
const MAX_ATTEMPTS: u8 = 4;

/// What the array hears from a request's life, called with the raw
/// request (the disk's callbacks find the array through its queue).
pub(crate) struct PduHooks {
    /// The request, counted in `epoch`, ended (any context).
    pub(crate) released: unsafe fn(rq: *mut bindings::request, epoch: u8),
    /// A member bio of the request failed (any context): what becomes of the
    /// request. `redundant` when the bio's data has a copy elsewhere.
    pub(crate) member_failed: unsafe fn(
        rq: *mut bindings::request,
        role: usize,
        sector: u64,
        write: bool,
        redundant: bool,
        errno: i32,
    ) -> Disposition,
    /// Queues the request's work item again (any context).
    pub(crate) requeue: unsafe fn(rq: *mut bindings::request),
    /// The request, a write into bitmap regions `first..=last`
    /// ([`InFlight::mark_regions`]), ended (any context).
    pub(crate) write_ended: unsafe fn(rq: *mut bindings::request, first: u32, last: u32),
}

/// Pdu flag: a member read failed; serve the request again.
const FLAG_RETRY: u8 = 1;
/// Pdu flag: a member failed under a write; end only once recorded.
const FLAG_RECORD: u8 = 2;

/// No epoch recorded.
const NO_EPOCH: u8 = u8::MAX;

/// No bitmap regions recorded.
const NO_REGIONS: (u32, u32) = (u32::MAX, 0);

/// Per-request driver data: the blk-mq "pdu" that follows `struct request`.
#[repr(C)]
struct Pdu {
    /// Hands the request from `queue_rq` to the array's workqueue.
    work: bindings::work_struct,
    pending: AtomicU32,
    status: AtomicU8,
    /// The epoch the request is counted in while it runs against the source
    /// layout or a staging area of a migration, or `NO_EPOCH`.
    epoch: u8,
    /// `FLAG_RETRY`, `FLAG_RECORD`, set by failing member bios.
    flags: AtomicU8,
    /// Roles whose reads failed for this request (bit per role).
    avoid: AtomicU32,
    /// Bitmap regions the request writes into, first and last, or
    /// `NO_REGIONS`; set by the submitting path before member I/O.
    regions: (u32, u32),
    /// Passes made, and the current one; written only by whoever holds the
    /// last reference.
    attempts: u8,
    phase: Phase,
    hooks: &'static PduHooks,
}

/// Bytes of driver data each request carries (`tag_set.cmd_size`).
pub(crate) const PDU_BYTES: u32 = size_of::<Pdu>() as u32;

/// A request handed to the driver by blk-mq and not yet started.
///
/// # Invariants
///
/// `rq` is a request that blk-mq dispatched to this driver, whose pdu has
/// [`PDU_BYTES`] bytes, and that nobody has ended yet.
pub(crate) struct Request {
    rq: *mut bindings::request,
}

impl Request {
    /// Wraps a request passed to `queue_rq`.
    ///
    /// # Safety
    ///
    /// `rq` must be a request just dispatched to `queue_rq` of a tag set whose
    /// `cmd_size` is [`PDU_BYTES`]; the caller gives up the duty to end it.
    pub(crate) unsafe fn from_raw(rq: *mut bindings::request) -> Request {
        // INVARIANT: guaranteed by the caller.
        Request { rq }
    }

    /// The request queue it belongs to.
    pub(crate) fn queue(&self) -> *mut bindings::request_queue {
        // SAFETY: `rq` is valid by the type invariant.
        unsafe { (*self.rq).q }
    }

    /// The operation.
    pub(crate) fn op(&self) -> Op {
        // SAFETY: `rq` is valid by the type invariant.
        let flags = unsafe { (*self.rq).cmd_flags };
        match flags & REQ_OP_MASK {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Unsupported,
        }
    }

    /// First sector (`blk_rq_pos`).
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: `rq` is valid by the type invariant.
        unsafe { (*self.rq).__sector }
    }

    /// Length in sectors (`blk_rq_sectors`).
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: `rq` is valid by the type invariant.
        u64::from(unsafe { (*self.rq).__data_len }) >> 9
    }

    /// The operation and flags a member bio of this request gets.
    /// `REQ_PREFLUSH` is not among them: blk-mq turns it into separate flush
    /// requests because the disk advertises a write cache.
    pub(crate) fn member_opf(&self) -> bindings::blk_opf_t {
        // SAFETY: `rq` is valid by the type invariant.
        let flags = unsafe { (*self.rq).cmd_flags };
        flags & (REQ_OP_MASK | INHERITED_FLAGS)
    }

    /// The bios that carry the request's data, in order.
    pub(crate) fn bios(&self) -> Bios<'_> {
        // SAFETY: `rq` is valid by the type invariant; its bio list is fixed
        // until the request is ended.
        Bios { next: unsafe { (*self.rq).bio }, _rq: PhantomData }
    }

    /// Tells blk-mq the request is being processed and starts counting its
    /// member bios, with one reference held by the caller.
    pub(crate) fn start(self) -> InFlight {
        // SAFETY: `rq` is a dispatched request by the type invariant.
        unsafe { bindings::blk_mq_start_request(self.rq) };
        // SAFETY: the pdu belongs to `rq` and has room for a `Pdu`; nothing
        // else touches it before the request is started.
        let pdu = unsafe { bindings::blk_mq_rq_to_pdu(self.rq) }.cast::<Pdu>();
        // SAFETY: `pdu` is valid and suitably aligned (blk-mq aligns the pdu
        // for any type); its work item was set up by `init_pdu` and is idle.
        unsafe {
            addr_of_mut!((*pdu).pending).write(AtomicU32::new(1));
            addr_of_mut!((*pdu).status).write(AtomicU8::new(0));
            addr_of_mut!((*pdu).epoch).write(NO_EPOCH);
            addr_of_mut!((*pdu).flags).write(AtomicU8::new(0));
            addr_of_mut!((*pdu).avoid).write(AtomicU32::new(0));
            addr_of_mut!((*pdu).regions).write(NO_REGIONS);
            addr_of_mut!((*pdu).attempts).write(1);
            addr_of_mut!((*pdu).phase).write(Phase::Serve);
        }
        // INVARIANT: the pdu is initialised with the caller's reference.
        InFlight { rq: self, pdu }
    }
}

/// Iterator over the bios of a request.
pub(crate) struct Bios<'a> {
    next: *mut bindings::bio,
    _rq: PhantomData<&'a Request>,
}

impl<'a> Iterator for Bios<'a> {
    type Item = DataBio<'a>;

    fn next(&mut self) -> Option<DataBio<'a>> {
        if self.next.is_null() {
            return None;
        }
        let bio = self.next;
        // SAFETY: `bio` is a bio of the request, valid while the request is.
        self.next = unsafe { (*bio).bi_next };
        Some(DataBio { bio, _rq: PhantomData })
    }
}

/// One bio of a host request, borrowed for cloning.
pub(crate) struct DataBio<'a> {
    bio: *mut bindings::bio,
    _rq: PhantomData<&'a Request>,
}

impl DataBio<'_> {
    /// First sector.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: the bio is valid while the request is; blk-mq does not
        // advance it before the request is ended.
        unsafe { (*self.bio).bi_iter.bi_sector }
    }

    /// Length in sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: as in `sector`.
        u64::from(unsafe { (*self.bio).bi_iter.bi_size }) >> 9
    }

    /// The raw bio, for the clone in the bio wrapper.
    pub(crate) fn raw(&self) -> *mut bindings::bio {
        self.bio
    }

    /// Copies `buf.len()` bytes of the bio's data, from `skip` sectors into
    /// it, into `buf`. Does nothing if the range is not within the bio.
    pub(crate) fn copy_out(&self, skip: u64, buf: &mut [u8]) {
        if skip.saturating_add((buf.len() >> 9) as u64) > self.sectors() {
            return;
        }
        // SAFETY: the bio is alive while the request is, holds the range
        // (checked), and nobody writes its pages while the request runs.
        unsafe { crate::sys::shim::copy_from_bio(self.bio, (skip << 9) as u32, buf) }
    }

    /// Copies `buf` into the bio's data, from `skip` sectors into it (a
    /// read served from a reconstruction). Does nothing if the range is not
    /// within the bio.
    pub(crate) fn copy_in(&self, skip: u64, buf: &[u8]) {
        if skip.saturating_add((buf.len() >> 9) as u64) > self.sectors() {
            return;
        }
        // SAFETY: the bio is alive while the request is and holds the range
        // (checked); a read request's pages are the driver's to fill until
        // the request ends, and this pass is the only one filling them here.
        unsafe { crate::sys::shim::copy_to_bio(self.bio, (skip << 9) as u32, buf) }
    }
}

/// A started request whose member bios are being counted. Dropping it
/// releases the submitter's reference.
///
/// # Invariants
///
/// `pdu` is the initialised pdu of `rq`, which is started and not ended
/// while any reference (this one included) is outstanding.
pub(crate) struct InFlight {
    rq: Request,
    pdu: *mut Pdu,
}

impl InFlight {
    /// Queues the request's work item on `wq`; the work function takes the
    /// request back with [`InFlight::from_work`]. (The same is done for a
    /// further pass by [`PduHooks::requeue`].)
    ///
    /// # Safety
    ///
    /// `wq` must be a live workqueue that is destroyed only after the request
    /// has ended.
    pub(crate) unsafe fn queue_on(self, wq: *mut bindings::workqueue_struct) {
        let work = self.work();
        // The reference travels with the work item.
        core::mem::forget(self);
        // SAFETY: the work item was initialised by `init_pdu` and is idle
        // (each request is dispatched once at a time); `wq` is live.
        unsafe { bindings::queue_work_on(bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32, wq, work) };
    }

    fn work(&self) -> *mut bindings::work_struct {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { addr_of_mut!((*self.pdu).work) }
    }

    /// Takes back a request queued with [`InFlight::queue_on`] or
    /// [`queue_raw`].
    ///
    /// # Safety
    ///
    /// `work` must be the work item of a request queued by `queue_on` or
    /// `queue_raw`, and this must be called once per queueing.
    pub(crate) unsafe fn from_work(work: *mut bindings::work_struct) -> InFlight {
        // `work` is the first field of the `#[repr(C)]` pdu.
        let pdu = work.cast::<Pdu>();
        // SAFETY: the pdu follows its request.
        let rq = unsafe { bindings::blk_mq_rq_from_pdu(pdu.cast()) };
        // INVARIANT: the reference given up by `queue_on` is taken over here.
        InFlight { rq: Request { rq }, pdu }
    }

    /// Another reference to the request, as a member bio holds: the
    /// request does not end before it is dropped (from any context).
    pub(crate) fn hold(&self) -> InFlight {
        self.add_bio();
        // INVARIANT: `add_bio` took the reference the new value gives up.
        InFlight { rq: Request { rq: self.rq.rq }, pdu: self.pdu }
    }

    /// The request; the reference this holds keeps it alive.
    pub(crate) fn request(&self) -> &Request {
        &self.rq
    }

    /// Takes a reference for one more member bio; the returned token goes to
    /// [`bio_finished`] exactly once, when that bio completes.
    pub(crate) fn add_bio(&self) -> *mut core::ffi::c_void {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { &(*self.pdu).pending }.fetch_add(1, Ordering::Relaxed);
        self.pdu.cast()
    }

    /// Records that the request is counted in `epoch`: its end releases it
    /// through [`PduHooks::released`]. Called at most once, by the
    /// submitting path, before any member bio is issued.
    pub(crate) fn count_in(&self, epoch: u8) {
        // SAFETY: `pdu` is valid by the type invariant, and only the
        // submitting path (this one) writes this field before member bios
        // exist.
        unsafe { (*self.pdu).epoch = epoch };
    }

    /// Records a failure that happened before a member bio was issued.
    pub(crate) fn fail(&self, status: bindings::blk_status_t) {
        // SAFETY: `pdu` is valid by the type invariant.
        record_status(unsafe { &*self.pdu }, status);
    }

    /// Records that the request writes into bitmap regions
    /// `first..=last`: its end is told through [`PduHooks::write_ended`].
    /// Called at most once, by the submitting path, before any member bio
    /// is issued.
    pub(crate) fn mark_regions(&self, first: u32, last: u32) {
        // SAFETY: `pdu` is valid by the type invariant; only the submitting
        // path (this one) writes this field, before member bios exist.
        unsafe { (*self.pdu).regions = (first, last) };
    }

    /// The pass this is.
    pub(crate) fn phase(&self) -> Phase {
        // SAFETY: `pdu` is valid; the phase changes only while no reference
        // but the changer's exists.
        unsafe { (*self.pdu).phase }
    }

    /// Roles whose reads failed for this request (bit per role).
    pub(crate) fn avoid(&self) -> u32 {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { &(*self.pdu).avoid }.load(Ordering::Acquire)
    }

    /// Serves the request again once this pass ends, leaving out `role`
    /// (a read whose member failed since the request was split).
    pub(crate) fn retry_without(&self, role: usize) {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { &(*self.pdu).avoid }.fetch_or(1u32.checked_shl(role as u32).unwrap_or(0), Ordering::AcqRel);
        self.defer();
    }

    /// Serves the request again from its work item once this pass ends:
    /// what this pass issued is issued again (a retry, or a pass from
    /// `queue_rq` that met a part needing synchronous member I/O).
    pub(crate) fn defer(&self) {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { &(*self.pdu).flags }.fetch_or(FLAG_RETRY, Ordering::AcqRel);
    }

    /// A member failed under this write (synchronous member I/O): the
    /// request ends only once the failure is recorded.
    pub(crate) fn await_record(&self) {
        // SAFETY: `pdu` is valid by the type invariant.
        unsafe { &(*self.pdu).flags }.fetch_or(FLAG_RECORD, Ordering::AcqRel);
    }
}

// SAFETY: a reference to a started request may be used and given up from
// any thread (the count is atomic; the last one ends the request or queues
// its work item, both allowed in any context).
unsafe impl Send for InFlight {}

impl Drop for InFlight {
    fn drop(&mut self) {
        // SAFETY: the submitter's reference is given up here, once.
        unsafe { put(self.pdu) };
    }
}

/// Queues the work item of `rq` on `wq` for another pass.
///
/// # Safety
///
/// `rq` must be a started request of our tag set whose only reference is
/// the one given up to the work item here (see `put`); `wq` must be live
/// until the request ends.
pub(crate) unsafe fn queue_raw(rq: *mut bindings::request, wq: *mut bindings::workqueue_struct) {
    // SAFETY: the pdu of `rq` was set up by `init_pdu`; its work item is idle
    // (its last pass has returned or is returning: queueing a running item
    // again is allowed).
    unsafe {
        let pdu = bindings::blk_mq_rq_to_pdu(rq).cast::<Pdu>();
        bindings::queue_work_on(
            bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32,
            wq,
            addr_of_mut!((*pdu).work),
        );
    }
}

fn record_status(pdu: &Pdu, status: bindings::blk_status_t) {
    if status != 0 {
        // First error wins; later ones are dropped.
        let _ = pdu.status.compare_exchange(0, status, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Sets up a request's pdu when blk-mq allocates the request: its work item
/// runs `func`, its end and failures go to `hooks`.
///
/// # Safety
///
/// `rq` must be a request being initialised by blk-mq (`init_request`) of a
/// tag set whose `cmd_size` is [`PDU_BYTES`]; the hooks must be sound for
/// any request of that tag set.
pub(crate) unsafe fn init_pdu(rq: *mut bindings::request, func: bindings::work_func_t, hooks: &'static PduHooks) {
    static WORK_CLASS: LockClass = LockClass(Opaque::uninit());
    // SAFETY: the pdu belongs to `rq` and is not in use yet; the lock class
    // key and the name are static.
    unsafe {
        let pdu = bindings::blk_mq_rq_to_pdu(rq).cast::<Pdu>();
        addr_of_mut!((*pdu).hooks).write(hooks);
        addr_of_mut!((*pdu).epoch).write(NO_EPOCH);
        addr_of_mut!((*pdu).flags).write(AtomicU8::new(0));
        addr_of_mut!((*pdu).avoid).write(AtomicU32::new(0));
        addr_of_mut!((*pdu).regions).write(NO_REGIONS);
        addr_of_mut!((*pdu).attempts).write(1);
        addr_of_mut!((*pdu).phase).write(Phase::Serve);
        bindings::init_work_with_key(
            addr_of_mut!((*pdu).work),
            func,
            false,
            kernel::c_str!("raidmig_request").as_char_ptr(),
            WORK_CLASS.0.get(),
        );
    }
}

/// A static lockdep class key.
struct LockClass(Opaque<bindings::lock_class_key>);
// SAFETY: lock class keys are only used by lockdep, which synchronises itself.
unsafe impl Sync for LockClass {}

/// Gives up one reference; the last one ends the request, or hands it to
/// its work item again for another pass (a retry after a failed member
/// read, or the wait for a member failure to be recorded).
///
/// # Safety
///
/// `pdu` must be the pdu of a started request and the caller must own one
/// reference to it.
unsafe fn put(pdu: *mut Pdu) {
    // SAFETY: the caller's reference keeps the request alive.
    let p = unsafe { &*pdu };
    if p.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let mut status = p.status.load(Ordering::Acquire);
    let flags = p.flags.swap(0, Ordering::AcqRel);
    // A request that fails anyway neither retries nor waits for a record:
    // nothing is acknowledged.
    let next = if status != 0 {
        None
    } else if flags & FLAG_RETRY != 0 {
        if p.attempts < MAX_ATTEMPTS {
            // A record still due outlives the retry.
            p.flags.fetch_or(flags & FLAG_RECORD, Ordering::AcqRel);
            Some(Phase::Retry)
        } else {
            status = crate::sys::shim::sts_ioerr();
            None
        }
    } else if flags & FLAG_RECORD != 0 {
        Some(Phase::Record)
    } else {
        None
    };
    // SAFETY: the pdu follows its request.
    let rq = unsafe { bindings::blk_mq_rq_from_pdu(pdu.cast()) };
    if p.epoch != NO_EPOCH {
        // Released before another pass too: the pass is admitted again, and
        // the migration thread, which records failures, may be waiting for
        // this epoch to drain.
        // SAFETY: the request is alive until it is ended below; the hooks
        // were set for its tag set.
        unsafe { (p.hooks.released)(rq, p.epoch) };
    }
    match next {
        Some(phase) => {
            // SAFETY: this was the last reference: nobody else uses the pdu;
            // the new one travels with the work item.
            unsafe {
                (*pdu).epoch = NO_EPOCH;
                (*pdu).phase = phase;
                (*pdu).attempts = (*pdu).attempts.saturating_add(1);
                p.pending.store(1, Ordering::Release);
                (p.hooks.requeue)(rq);
            }
        }
        None => {
            if p.regions != NO_REGIONS {
                // SAFETY: the request is alive until it is ended below; the
                // hooks were set for its tag set.
                unsafe { (p.hooks.write_ended)(rq, p.regions.0, p.regions.1) };
            }
            // SAFETY: this was the last reference: nobody else uses the pdu
            // or the request any more, and it is ended exactly once, here.
            unsafe { bindings::blk_mq_end_request(rq, status) }
        }
    }
}

/// Reports the failure of a member bio (before [`bio_finished`] for it);
/// returns whether the request takes the error.
///
/// # Safety
///
/// `token` must come from [`InFlight::add_bio`], its reference not yet given
/// up.
pub(crate) unsafe fn bio_failed(
    token: *mut core::ffi::c_void,
    role: usize,
    sector: u64,
    write: bool,
    redundant: bool,
    errno: i32,
) -> bool {
    let pdu = token.cast::<Pdu>();
    // SAFETY: the token's reference keeps the request and its pdu alive.
    let (p, disposition) = unsafe {
        let rq = bindings::blk_mq_rq_from_pdu(pdu.cast());
        (&*pdu, ((*pdu).hooks.member_failed)(rq, role, sector, write, redundant, errno))
    };
    match disposition {
        Disposition::Fail => true,
        Disposition::Retry => {
            p.avoid.fetch_or(1u32.checked_shl(role as u32).unwrap_or(0), Ordering::AcqRel);
            p.flags.fetch_or(FLAG_RETRY, Ordering::AcqRel);
            false
        }
        Disposition::Absorbed => {
            p.flags.fetch_or(FLAG_RECORD, Ordering::AcqRel);
            false
        }
    }
}

/// Accounts the completion of a member bio.
///
/// # Safety
///
/// `token` must come from [`InFlight::add_bio`] and be used once.
pub(crate) unsafe fn bio_finished(token: *mut core::ffi::c_void, status: bindings::blk_status_t) {
    let pdu = token.cast::<Pdu>();
    // SAFETY: the token carries a reference, so the pdu is alive.
    record_status(unsafe { &*pdu }, status);
    // SAFETY: the token's reference is given up here, once.
    unsafe { put(pdu) };
}
