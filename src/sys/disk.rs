//! The blk-mq disk that the host sees: a tag set, a `gendisk` and the
//! request handler they call.
//!
//! 6.12's `kernel::block::mq` cannot set tag set flags, queue limits beyond
//! block sizes, cache features or queue data, so this is a small wrapper of
//! its own over the C API.
//!
//! `queue_rq` first offers a request to the handler's
//! [`RequestHandler::submit`], which maps it to member bios there and then
//! when nothing has to wait: the common case, a request on a settled array
//! or away from the unit being copied, served without a hop to another
//! task (the cost md and dm-linear never pay). The tag set is blocking
//! (`BLK_MQ_F_BLOCKING`), so `queue_rq` runs in process context and may
//! sleep in the member bios' mempool, whose rescuer keeps allocations going
//! while earlier bios wait on the submitter's `bio_list`. What must wait for
//! I/O (a bitmap bit to write, a unit being copied, raid5's synchronous
//! stripe I/O) must not wait there: member bios submitted from inside
//! `submit_bio` only leave when `queue_rq` returns. Such a request goes to
//! the disk's workqueue, and its work item does the rest in a clean context
//! with a plug of its own; a request that waits blocks only its own worker.
//!
//! When blk-mq runs the queue from kblockd (as it does for a plug flushed
//! because its task went to sleep: 2000 times in a minute of swapping to
//! the volume, measured), every request goes to the disk's workqueue
//! untried. kblockd shares the per-CPU high-priority worker pool
//! with `system_highpri_wq`, where libata issues a cache flush deferred
//! behind NCQ commands; a `queue_rq` that sleeps there for a member's tags
//! (which free only once that flush has gone) takes a worker the flush
//! needs, and under memory pressure no new worker can be made (see
//! [`super::workqueue`]). dm's request-based targets never sleep in
//! `queue_rq` for the same reason; md, bio-based, is never run by kblockd.

use crate::sys::{
    member::Member,
    workqueue::Workqueue,
    request::{self, Disposition, InFlight, PduHooks, Request, PDU_BYTES},
    shim,
};
use core::{marker::PhantomData, ptr::addr_of_mut, ptr::NonNull};
use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    init, new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    time::msecs_to_jiffies,
    types::Opaque,
};

/// What the disk calls for every request.
pub(crate) trait RequestHandler: Send + Sync {
    /// Serves a started request from `queue_rq` if that needs no waiting
    /// but for memory (see the module documentation), or hands it back for
    /// [`RequestHandler::process`] on the workqueue.
    fn submit(&self, io: InFlight) -> Option<InFlight>;
    /// Processes a started request, from the disk's workqueue; the request
    /// ends when the last reference to it (`io` included) is gone. May
    /// sleep.
    fn process(&self, io: InFlight);
    /// A request counted in `epoch` ([`InFlight::count_in`]) ended. Any
    /// context: must not sleep.
    fn released(&self, epoch: u8);
    /// A member bio of a request failed: what becomes of the request.
    /// `redundant` when the bio's data has a copy elsewhere. Any context:
    /// must not sleep.
    fn member_failed(&self, role: usize, sector: u64, write: bool, redundant: bool, errno: i32) -> Disposition;
    /// A write into bitmap regions `first..=last` ended. Any context: must
    /// not sleep.
    fn write_ended(&self, first: u32, last: u32);
    /// Where the disk records itself for capacity changes.
    fn capacity(&self) -> &Capacity;
}

/// The capacity of the disk, changeable while the disk lives: the disk
/// records itself here when added and clears it before it goes, under the
/// lock that changes take.
#[pin_data]
pub(crate) struct Capacity {
    #[pin]
    disk: Mutex<Option<NonNull<bindings::gendisk>>>,
}

// SAFETY: the pointer is only used under the mutex, while the disk lives.
unsafe impl Send for Capacity {}
// SAFETY: as above.
unsafe impl Sync for Capacity {}

impl Capacity {
    /// No disk yet.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Capacity { disk <- new_mutex!(None) })
    }

    /// Sets the disk's capacity to `sectors` and sends a change uevent (so
    /// that resize2fs and friends can follow). Nothing if the disk is gone.
    pub(crate) fn grow(&self, sectors: u64) {
        let disk = self.disk.lock();
        if let Some(d) = *disk {
            // SAFETY: recorded by `Disk::add` and cleared, under this lock,
            // before the disk is deleted.
            unsafe { bindings::set_capacity_and_notify(d.as_ptr(), sectors) };
        }
    }

    /// Waits until every host request started so far has ended (the queue
    /// frozen, then thawed at once), at most `ms` milliseconds; returns
    /// whether they all ended. New requests wait meanwhile. True at once
    /// without a disk (nothing to wait for).
    pub(crate) fn quiesce(&self, ms: u32) -> bool {
        self.frozen(ms, |_| ()).is_some()
    }

    /// Runs `f` with the disk's queue frozen: every host request started
    /// so far has ended, and new ones wait until `f` returns. `None` (and
    /// `f` not run) if the requests in flight did not end within `ms`
    /// milliseconds. Without a disk `f` runs at once (there are no
    /// requests). `f` must not allocate memory that reclaim could get by
    /// writing to this disk, nor change its capacity.
    pub(crate) fn frozen<R>(&self, ms: u32, f: impl FnOnce(&Frozen<'_>) -> R) -> Option<R> {
        let disk = self.disk.lock();
        let Some(d) = *disk else { return Some(f(&Frozen(PhantomData))) };
        // SAFETY: the disk lives while recorded (see `grow`), and so does
        // its queue; a freeze started here is ended here.
        unsafe {
            let q = (*d.as_ptr()).queue;
            bindings::blk_freeze_queue_start(q);
            let frozen = bindings::blk_mq_freeze_queue_wait_timeout(q, msecs_to_jiffies(ms) as _) > 0;
            let mut f = Some(f);
            let r = if frozen { f.take().map(|f| f(&Frozen(PhantomData))) } else { None };
            bindings::blk_mq_unfreeze_queue(q);
            // What `f` holds, if it did not run, goes once the queue thaws.
            drop(f);
            r
        }
    }
}

impl Capacity {
    /// Changes the live disk's queue limits with `f` (a reshape's new
    /// layout: I/O hints, discard), the queue frozen while they are
    /// applied. Nothing without a disk.
    pub(crate) fn update_limits(&self, f: impl FnOnce(&mut Limits)) -> Result {
        let disk = self.disk.lock();
        let Some(d) = *disk else { return Ok(()) };
        // SAFETY: `queue_limits` is plain data, valid when zeroed.
        let mut lim = Limits { raw: unsafe { core::mem::zeroed() } };
        // SAFETY: the disk lives while recorded (see `grow`), and so does
        // its queue; the update started here is committed here, which
        // releases its lock.
        unsafe {
            let q = (*d.as_ptr()).queue;
            shim::limits_start_update(q, &mut lim.raw);
            f(&mut lim);
            to_result(bindings::queue_limits_commit_update_frozen(q, &mut lim.raw))
        }
    }
}

/// Proof that the disk's queue is frozen (see [`Capacity::frozen`]): no
/// host request is in flight, and none starts, while it lives.
pub(crate) struct Frozen<'a>(PhantomData<&'a Capacity>);

struct Hooks<H>(PhantomData<H>);

impl<H: RequestHandler> Hooks<H> {
    const HOOKS: PduHooks =
        PduHooks { released: released::<H>, member_failed: member_failed::<H>, requeue, write_ended: write_ended::<H> };
}

/// The handler of a request's queue.
///
/// # Safety
///
/// `rq` must be a live request of a queue created by [`Disk::add`] over `H`.
unsafe fn handler<'a, H: RequestHandler>(rq: *mut bindings::request) -> &'a H {
    // SAFETY: the queue data is the handler, which outlives the queue's
    // requests (see `Disk`).
    unsafe { &*(*(*rq).q).queuedata.cast::<H>() }
}

/// # Safety
///
/// As for [`handler`].
unsafe fn released<H: RequestHandler>(rq: *mut bindings::request, epoch: u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { handler::<H>(rq) }.released(epoch);
}

/// # Safety
///
/// As for [`handler`].
unsafe fn member_failed<H: RequestHandler>(
    rq: *mut bindings::request,
    role: usize,
    sector: u64,
    write: bool,
    redundant: bool,
    errno: i32,
) -> Disposition {
    // SAFETY: guaranteed by the caller.
    unsafe { handler::<H>(rq) }.member_failed(role, sector, write, redundant, errno)
}

/// # Safety
///
/// As for [`handler`].
unsafe fn write_ended<H: RequestHandler>(rq: *mut bindings::request, first: u32, last: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { handler::<H>(rq) }.write_ended(first, last);
}

/// Queues a request's work item again, on the workqueue of its hardware
/// context (as `queue_rq` did).
///
/// # Safety
///
/// `rq` must be a started request of a queue created by [`Disk::add`],
/// handing its only reference to the work item.
unsafe fn requeue(rq: *mut bindings::request) {
    // SAFETY: `init_hctx` set the driver data to the workqueue, which lives
    // until every request is gone.
    unsafe { request::queue_raw(rq, (*(*rq).mq_hctx).driver_data.cast()) };
}

/// Queue limits under construction, stacked from the members.
pub(crate) struct Limits {
    raw: bindings::queue_limits,
}

impl Limits {
    /// Limits that inherit everything from the members stacked onto them.
    pub(crate) fn stacking() -> Limits {
        // SAFETY: `queue_limits` is plain data, valid when zeroed.
        let mut raw: bindings::queue_limits = unsafe { core::mem::zeroed() };
        // SAFETY: `raw` is a valid `queue_limits`.
        unsafe { bindings::blk_set_stacking_limits(&mut raw) };
        Limits { raw }
    }

    /// Narrows the limits to what `member` accepts (block sizes, transfer
    /// sizes, alignment, discard).
    pub(crate) fn stack_member(&mut self, member: &Member) {
        // SAFETY: `raw` is valid; the member's block device is open; the
        // prefix is a NUL-terminated static string.
        unsafe {
            bindings::queue_limits_stack_bdev(&mut self.raw, member.raw_bdev(), 0, kernel::c_str!("raidmig").as_char_ptr())
        };
    }

    /// Sets the I/O size hints: `io_min` (a chunk) and `io_opt` (a stripe).
    pub(crate) fn set_io_hints(&mut self, io_min_bytes: u32, io_opt_bytes: u32) {
        self.raw.io_min = io_min_bytes;
        self.raw.io_opt = io_opt_bytes;
    }

    /// Advertises a volatile write cache and FUA, whatever the members have:
    /// the host's flushes and FUA writes are then always handed to the
    /// driver, which sends them on to every member concerned.
    pub(crate) fn set_write_cache_fua(&mut self) {
        self.raw.features |= shim::feat_write_cache_fua();
    }

    /// Turns discard and write-zeroes off (not every member supports them,
    /// or the layout cannot map them to member ranges).
    pub(crate) fn disable_discard(&mut self) {
        self.raw.max_hw_discard_sectors = 0;
        self.raw.max_user_discard_sectors = 0;
        self.raw.max_write_zeroes_sectors = 0;
    }

    /// The logical block size, once stacked.
    pub(crate) fn logical_block_size(&self) -> u32 {
        self.raw.logical_block_size
    }
}

/// A static lock class for the disk's lockdep map.
struct LockClass(Opaque<bindings::lock_class_key>);
// SAFETY: lock class keys are only used by lockdep, which synchronises itself.
unsafe impl Sync for LockClass {}
static DISK_LOCK_CLASS: LockClass = LockClass(Opaque::uninit());

/// The lock class of our flush queue's lock. A member's flush completion
/// (under the member's flush queue lock) may complete our flush request,
/// which takes ours: a fixed nesting, upper inside lower, that lockdep would
/// otherwise report as recursion because all flush queues share one class by
/// default. nvme-loop does the same.
static FLUSH_LOCK_CLASS: LockClass = LockClass(Opaque::uninit());

/// `block_device_operations` with `owner` set, so that an open disk holds
/// a reference on the module and `rmmod` refuses while it is in use.
struct Fops(bindings::block_device_operations);
// SAFETY: never written after compile time; the block layer only reads it.
unsafe impl Sync for Fops {}

// `struct module` has a field bindgen renders as an empty struct; it is
// only ever handled by address here.
#[allow(improper_ctypes)]
extern "C" {
    static __this_module: Opaque<bindings::module>;
}

static FOPS: Fops = Fops(bindings::block_device_operations {
    // SAFETY: `__this_module` is this module's `struct module`, which lives
    // as long as the module's code and data.
    owner: unsafe { __this_module.get() },
    // SAFETY: every other field is an optional callback or a pointer, for
    // which zero means "none".
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

struct Vtable<H>(PhantomData<H>);

impl<H: RequestHandler> Vtable<H> {
    const OPS: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(queue_rq::<H>),
        init_hctx: Some(init_hctx),
        init_request: Some(init_request::<H>),
        // SAFETY: every other field is an optional callback, for which zero
        // means "none".
        ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
    };
}

/// The blk-mq entry point (process context: the tag set is blocking):
/// starts the request and offers it to the handler, or queues its work item
/// on the disk's workqueue (the hardware context's driver data).
///
/// # Safety
///
/// Called by blk-mq for a queue created by [`Disk::add`] with handler `H`.
unsafe extern "C" fn queue_rq<H: RequestHandler>(
    hctx: *mut bindings::blk_mq_hw_ctx,
    bd: *const bindings::blk_mq_queue_data,
) -> bindings::blk_status_t {
    // SAFETY: `bd->rq` was dispatched to us, a live request of a queue
    // created by `Disk::add` over `H` whose tag set's `cmd_size` is
    // `PDU_BYTES`.
    let (io, handler) = unsafe { (Request::from_raw((*bd).rq).start(), handler::<H>((*bd).rq)) };
    // Run by kblockd (blk-mq's run or requeue work item of this queue):
    // straight to our workqueue (see the module documentation). Other work
    // items (writeback's, on an unbound workqueue) are served here as any
    // task is.
    // SAFETY: `hctx` and its queue are live while a request of theirs is
    // dispatched; only the addresses of their work items are taken.
    let from_kblockd = unsafe {
        let work = bindings::current_work();
        !work.is_null()
            && (work == addr_of_mut!((*hctx).run_work.work)
                || work == addr_of_mut!((*(*hctx).queue).requeue_work.work))
    };
    let io = if from_kblockd { Some(io) } else { handler.submit(io) };
    if let Some(io) = io {
        // SAFETY: `init_hctx` set the driver data to the workqueue, which
        // `Disk` destroys only after the disk, and so every request, is gone.
        unsafe { io.queue_on((*hctx).driver_data.cast()) };
    }
    bindings::BLK_STS_OK as bindings::blk_status_t
}

/// The work item of a request: hands it to the handler.
///
/// # Safety
///
/// Runs for a request queued by `queue_rq` on a queue whose `queuedata` is
/// an `H` (see [`Disk::add`]).
unsafe extern "C" fn run_request<H: RequestHandler>(work: *mut bindings::work_struct) {
    // SAFETY: queued once by `queue_rq`; the handler outlives the disk's
    // requests.
    unsafe {
        let io = InFlight::from_work(work);
        let handler = &*(*io.request().queue()).queuedata.cast::<H>();
        handler.process(io);
    }
}

/// Sets up each request's pdu once, when blk-mq allocates it.
///
/// # Safety
///
/// Called by blk-mq for a request of our tag set.
unsafe extern "C" fn init_request<H: RequestHandler>(
    _set: *mut bindings::blk_mq_tag_set,
    rq: *mut bindings::request,
    _hctx_idx: core::ffi::c_uint,
    _numa_node: core::ffi::c_uint,
) -> core::ffi::c_int {
    // SAFETY: `rq` is being initialised and its pdu has `PDU_BYTES`; the
    // hooks find the handler `H` through the request's queue.
    unsafe { request::init_pdu(rq, Some(run_request::<H>), &Hooks::<H>::HOOKS) };
    0
}

/// Sets up a hardware context: its driver data is the workqueue (the tag
/// set's driver data), and its flush queue lock gets our own lock class.
///
/// # Safety
///
/// Called by blk-mq with a hardware context being set up.
unsafe extern "C" fn init_hctx(
    hctx: *mut bindings::blk_mq_hw_ctx,
    data: *mut core::ffi::c_void,
    _index: core::ffi::c_uint,
) -> core::ffi::c_int {
    // SAFETY: `hctx` and its flush queue are initialised; the key is static.
    unsafe {
        (*hctx).driver_data = data;
        bindings::blk_mq_hctx_set_fq_lock_class(hctx, FLUSH_LOCK_CLASS.0.get());
    }
    0
}

/// A blk-mq tag set.
#[pin_data(PinnedDrop)]
struct TagSet {
    #[pin]
    raw: Opaque<bindings::blk_mq_tag_set>,
}

impl TagSet {
    fn new<H: RequestHandler>(queue_depth: u32, wq: *mut bindings::workqueue_struct) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Self| {
            // SAFETY: `slot` is valid for writes.
            let raw = unsafe { Opaque::raw_get(addr_of_mut!((*slot).raw)) };
            // SAFETY: a zeroed tag set is valid (integers and pointers); the
            // fields blk-mq needs are set before allocation.
            unsafe {
                raw.write(core::mem::zeroed());
                (*raw).ops = &Vtable::<H>::OPS;
                (*raw).nr_hw_queues = 1;
                (*raw).nr_maps = 1;
                (*raw).queue_depth = queue_depth;
                (*raw).numa_node = bindings::NUMA_NO_NODE;
                (*raw).cmd_size = PDU_BYTES;
                // No I/O scheduler by default, as md and dm-linear: the
                // members' own queues schedule; one here only delays and
                // reorders what they would (blk-mq still merges in the plug).
                // Blocking: `queue_rq` serves requests itself and may sleep
                // for memory (see the module documentation).
                (*raw).flags = bindings::BLK_MQ_F_SHOULD_MERGE
                    | bindings::BLK_MQ_F_NO_SCHED_BY_DEFAULT
                    | bindings::BLK_MQ_F_BLOCKING;
                (*raw).driver_data = wq.cast();
                to_result(bindings::blk_mq_alloc_tag_set(raw))
            }
        };
        // SAFETY: the closure fully initialises `*slot` on success and leaves
        // nothing allocated on failure; the tag set does not move after init.
        unsafe { init::pin_init_from_closure(init) }
    }
}

#[pinned_drop]
impl PinnedDrop for TagSet {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: allocated in `new`; its queues are gone (the disk is
        // dropped first).
        unsafe { bindings::blk_mq_free_tag_set(self.raw.get()) };
    }
}

/// A disk added to the system, serving requests through `H`.
///
/// # Invariants
///
/// `gendisk` was allocated over `tagset` with queue data pointing to
/// `handler`, and added with `device_add_disk`.
pub(crate) struct Disk<H: RequestHandler> {
    gendisk: *mut bindings::gendisk,
    // Dropped after `gendisk` is deleted (see `Drop`), then the handler.
    _tagset: Pin<KBox<TagSet>>,
    _workqueue: Workqueue,
    handler: Arc<H>,
}

// SAFETY: the gendisk may be deleted from any thread; the handler is Send + Sync.
unsafe impl<H: RequestHandler> Send for Disk<H> {}
// SAFETY: `&Disk` only allows operations the block layer synchronises.
unsafe impl<H: RequestHandler> Sync for Disk<H> {}

impl<H: RequestHandler> Disk<H> {
    /// Creates `name` (at most 31 bytes) with `capacity` sectors and the given
    /// limits, and makes it visible. Requests start arriving at once.
    /// `groups` is a NULL-terminated list of sysfs attribute groups for the
    /// disk's device (static, or living as long as the disk).
    pub(crate) fn add(
        name: &CStr,
        capacity: u64,
        mut limits: Limits,
        handler: Arc<H>,
        groups: *mut *const bindings::attribute_group,
    ) -> Result<Self> {
        let workqueue = Workqueue::new(name)?;
        let tagset = KBox::try_pin_init(TagSet::new::<H>(128, workqueue.raw()), GFP_KERNEL)?;
        // SAFETY: the tag set is initialised; `limits.raw` is valid and only
        // read; the handler outlives the queue (see the type invariant); the
        // lock class key is static.
        let gendisk = from_err_ptr(unsafe {
            bindings::__blk_mq_alloc_disk(
                tagset.raw.get(),
                &mut limits.raw,
                core::ptr::from_ref::<H>(&handler).cast_mut().cast(),
                DISK_LOCK_CLASS.0.get(),
            )
        })?;
        let name = name.as_bytes_with_nul();
        // SAFETY: `gendisk` is fresh and not visible yet, so it is ours alone.
        let disk_name = unsafe { &mut (*gendisk).disk_name };
        if name.len() > disk_name.len() {
            // SAFETY: allocated above and never added.
            unsafe { bindings::put_disk(gendisk) };
            return Err(EINVAL);
        }
        for (d, s) in disk_name.iter_mut().zip(name) {
            *d = *s as _;
        }
        // SAFETY: as above; `FOPS` is static.
        unsafe {
            (*gendisk).fops = &FOPS.0;
            bindings::set_capacity(gendisk, capacity);
        }
        // SAFETY: `gendisk` is fully set up.
        if let Err(e) = to_result(unsafe {
            bindings::device_add_disk(core::ptr::null_mut(), gendisk, groups)
        }) {
            // SAFETY: allocated above and not added.
            unsafe { bindings::put_disk(gendisk) };
            return Err(e);
        }
        *handler.capacity().disk.lock() = NonNull::new(gendisk);
        // INVARIANT: allocated over `tagset` with `handler` as queue data, added.
        Ok(Disk { gendisk, _tagset: tagset, _workqueue: workqueue, handler })
    }
}

impl<H: RequestHandler> Drop for Disk<H> {
    fn drop(&mut self) {
        *self.handler.capacity().disk.lock() = None;
        // SAFETY: by the type invariant the disk was added; deleting it waits
        // for requests in flight to end, after which nothing calls the
        // handler; the last reference is dropped once, here.
        unsafe {
            bindings::del_gendisk(self.gendisk);
            bindings::put_disk(self.gendisk);
        }
    }
}
