//! Buffers whose member I/O runs with no task waiting for it, and the one
//! work item that takes each buffer's next step once its I/O has ended.
//!
//! A raid5 host write done with synchronous member I/O puts a task to sleep
//! twice per stripe (for the reads, then for the writes): under emulation a
//! context switch costs more than the member I/O, and a queue of small
//! writes made four switches per write against md's fraction of one. Here
//! the request's submission only takes a buffer and returns; the work item
//! below submits its I/O; each bio's end counts down its buffer's I/O, and
//! the end of a buffer's last
//! bio marks the buffer ready and queues one work item, which takes the
//! owner's next step ([`JobOwner::io_ended`]) for every ready buffer at
//! once, as md's raid5d handles every stripe whose I/O ended since it last
//! ran.
//!
//! A batch may instead be quiet ([`Jobs::quiet_batch`]): its bios count
//! against a host request too (which ends when the last has, without a
//! step in between), and its end takes no step, unless a task waits for
//! an idle buffer ([`Jobs::want`]): the owner's step then wakes it.
//!
//! Memory: a buffer's bytes are touched either by bios (while its count of
//! I/O is above zero) or through one [`Lent`] (while it is lent), never
//! both: both are taken by compare-and-swap on the buffer's state word.

use crate::sys::{
    bio::{self, BioSet},
    iobuf::{IoBuf, Region},
    member::Member,
    request::{self, InFlight},
    shim,
    workqueue::Workqueue,
};
use core::{
    cell::UnsafeCell,
    ptr::addr_of_mut,
    sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};
use kernel::{bindings, init, prelude::*, str::CStr, types::Opaque};

/// Where an owner keeps its [`Jobs`]; implemented by [`impl_has_jobs!`].
///
/// # Safety
///
/// `JOBS_OFFSET` must be the offset of a [`Jobs`] field of `Self`.
pub(crate) unsafe trait HasJobs {
    /// The offset of the [`Jobs`] field.
    const JOBS_OFFSET: usize;
}

/// Implements [`HasJobs`] for `$owner` whose [`Jobs`] is field `$field`.
/// The field must be declared first in `$owner`, so that it is dropped
/// (its work drained) before the rest of the owner, which the work uses.
macro_rules! impl_has_jobs {
    ($owner:ty, $field:ident) => {
        // `$field` is a `Jobs`: this does not compile otherwise.
        const _: () = {
            fn _jobs(o: &$owner) -> &$crate::sys::jobs::Jobs {
                &o.$field
            }
        };
        // SAFETY: the offset is that of `$field`, a `Jobs` (checked above).
        unsafe impl $crate::sys::jobs::HasJobs for $owner {
            const JOBS_OFFSET: usize = core::mem::offset_of!($owner, $field);
        }
    };
}
pub(crate) use impl_has_jobs;

/// What owns a [`Jobs`] and takes its buffers' steps.
pub(crate) trait JobOwner: HasJobs + Sync {
    /// The I/O of buffer `index` ended: take its next step (from the work
    /// item, which may sleep; member bios submitted here go out when it
    /// has taken every ready buffer's step).
    fn io_ended(&self, index: usize);
}

/// State word: lent out.
const LENT: u32 = 1 << 31;
/// State word: read into since last lent (its cache lines are stale where
/// that matters).
const READ: u32 = 1 << 30;
/// State word: the last batch is quiet (its end takes no step).
const QUIET: u32 = 1 << 29;
/// State word: bios in flight, and a batch being submitted.
const COUNT: u32 = QUIET - 1;

/// Error word: an error is recorded (role and errno below).
const ERROR: u64 = 1 << 63;

/// One buffer.
struct Buf {
    mem: UnsafeCell<IoBuf>,
    /// Its bytes, for bios (taken when the memory was ours alone: at the
    /// start, or lent to [`Jobs::replace`]).
    base: AtomicPtr<u8>,
    len: AtomicUsize,
    state: AtomicU32,
    /// The first error since last taken: `ERROR | role << 32 | -errno`.
    error: AtomicU64,
}

/// Buffers for asynchronous member I/O, and the work item that takes their
/// steps.
#[pin_data(PinnedDrop)]
pub(crate) struct Jobs {
    #[pin]
    work: Opaque<bindings::work_struct>,
    wq: Workqueue,
    bufs: KVec<Buf>,
    /// A bit per ready buffer.
    ready: [AtomicU64; 2],
    /// Tasks waiting for a buffer to be idle ([`Jobs::want`]).
    wanted: AtomicU32,
}

// SAFETY: a buffer's memory is reached only through the state word's
// protocol (see the module documentation); the rest is atomics and a
// workqueue, which any thread may use.
unsafe impl Send for Jobs {}
// SAFETY: as above.
unsafe impl Sync for Jobs {}

/// Buffers at most.
pub(crate) const MAX_BUFFERS: usize = 128;

/// The bit of a bio's index that says its data has a copy elsewhere (for a
/// bio counted against a request).
const REDUNDANT_INDEX: u16 = 1 << 15;

/// Lockdep's class for the work item.
struct LockClass(Opaque<bindings::lock_class_key>);
// SAFETY: lock class keys are only used by lockdep, which synchronises itself.
unsafe impl Sync for LockClass {}
static WORK_CLASS: LockClass = LockClass(Opaque::uninit());

impl Jobs {
    /// The buffers `bufs` (at most [`MAX_BUFFERS`]) for an owner `T`, and a
    /// workqueue named `name` for their steps.
    pub(crate) fn new<T: JobOwner>(name: &CStr, bufs: KVec<IoBuf>) -> Result<impl PinInit<Self, Error>> {
        if bufs.len() > MAX_BUFFERS {
            return Err(EINVAL);
        }
        let wq = Workqueue::new(name)?;
        let mut all = KVec::with_capacity(bufs.len(), GFP_KERNEL)?;
        for mut b in bufs {
            let (bytes, _) = b.split();
            let (base, len) = (bytes.as_mut_ptr(), bytes.len());
            let (base, len) = (AtomicPtr::new(base), AtomicUsize::new(len));
            all.push(Buf { mem: UnsafeCell::new(b), base, len, state: AtomicU32::new(0), error: AtomicU64::new(0) }, GFP_KERNEL)?;
        }
        let init = move |slot: *mut Self| {
            // SAFETY: `slot` is valid for writes; the work item is set up
            // before anything can queue it; the key and name are static.
            unsafe {
                addr_of_mut!((*slot).wq).write(wq);
                addr_of_mut!((*slot).bufs).write(all);
                addr_of_mut!((*slot).ready).write([AtomicU64::new(0), AtomicU64::new(0)]);
                addr_of_mut!((*slot).wanted).write(AtomicU32::new(0));
                bindings::init_work_with_key(
                    Opaque::raw_get(addr_of_mut!((*slot).work)),
                    Some(run::<T>),
                    false,
                    kernel::c_str!("raidmig_jobs").as_char_ptr(),
                    WORK_CLASS.0.get(),
                );
            }
            Ok(())
        };
        // SAFETY: the closure initialises every field and cannot fail; the
        // work item is not moved after (pinned).
        Ok(unsafe { init::pin_init_from_closure(init) })
    }

    /// Bytes of buffer `index` (0 if there is none).
    pub(crate) fn bytes(&self, index: usize) -> usize {
        self.bufs.get(index).map_or(0, |b| b.len.load(Ordering::Acquire))
    }

    /// Puts the memory of `buf` in place of buffer `index`'s (a reshape
    /// needs larger ones), once no I/O of it is in flight and nobody holds
    /// it lent; gives the old memory back, or `buf` if the buffer is busy
    /// or there is none.
    pub(crate) fn replace(&self, index: usize, mut buf: IoBuf) -> Result<IoBuf, IoBuf> {
        let Some(lent) = self.lend(index) else { return Err(buf) };
        let b = &self.bufs[index];
        let (bytes, _) = buf.split();
        let (base, len) = (bytes.as_mut_ptr(), bytes.len());
        // SAFETY: lent: no bio uses the memory and nobody else holds a
        // `Lent` of it, so nothing borrows it while it is swapped.
        unsafe { core::mem::swap(&mut *b.mem.get(), &mut buf) };
        b.base.store(base, Ordering::Release);
        b.len.store(len, Ordering::Release);
        drop(lent);
        Ok(buf)
    }

    /// Lends buffer `index` out, if no I/O of it is in flight and it is not
    /// lent already.
    pub(crate) fn lend(&self, index: usize) -> Option<Lent<'_>> {
        let b = self.bufs.get(index)?;
        let mut s = b.state.load(Ordering::Acquire);
        loop {
            if s & (LENT | COUNT) != 0 {
                return None;
            }
            match b.state.compare_exchange(s, LENT, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if s & READ != 0 {
            // SAFETY: the buffer's mapped vmalloc memory; the device is done
            // with it (no I/O in flight).
            unsafe { shim::invalidate_vmap(b.base.load(Ordering::Acquire), b.len.load(Ordering::Acquire)) };
        }
        Some(Lent { jobs: self, index })
    }

    /// Starts a batch of I/O on buffer `index`: `None` if it is lent. Its
    /// step is taken once the batch is dropped and every bio of it (and of
    /// any other batch still in flight on the buffer) has ended; at once
    /// (from the work item) for a batch without I/O.
    pub(crate) fn batch(&self, index: usize) -> Option<Batch<'_>> {
        self.start_batch(index, 0)
    }

    /// Starts a quiet batch on buffer `index` (see the module
    /// documentation): `None` if it is lent.
    pub(crate) fn quiet_batch(&self, index: usize) -> Option<Batch<'_>> {
        self.start_batch(index, QUIET)
    }

    fn start_batch(&self, index: usize, quiet: u32) -> Option<Batch<'_>> {
        let b = self.bufs.get(index)?;
        let mut s = b.state.load(Ordering::Acquire);
        loop {
            if s & LENT != 0 {
                return None;
            }
            match b.state.compare_exchange(s, ((s & !QUIET) | quiet) + 1, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => return Some(Batch { jobs: self, index }),
                Err(now) => s = now,
            }
        }
    }

    /// Whether buffer `index` has no I/O in flight and is not lent.
    pub(crate) fn idle(&self, index: usize) -> bool {
        self.bufs.get(index).is_some_and(|b| b.state.load(Ordering::SeqCst) & (LENT | COUNT) == 0)
    }

    /// Counts the caller among the tasks that wait for a buffer to be idle
    /// while the guard lives: the end of a quiet batch then takes its
    /// buffer's step, so that the owner can wake them. Taken before looking
    /// at [`Jobs::idle`], it cannot miss an end: either the look sees the
    /// buffer idle, or the end sees the caller waiting.
    pub(crate) fn want(&self) -> Wanted<'_> {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        Wanted(self)
    }

    /// The first error of buffer `index`'s I/O since last taken:
    /// `(role, errno)`.
    pub(crate) fn take_error(&self, index: usize) -> Option<(usize, i32)> {
        let e = self.bufs.get(index)?.error.swap(0, Ordering::AcqRel);
        (e & ERROR != 0).then(|| (((e >> 32) & 0xffff) as usize, -((e & 0xffff_ffff) as i32)))
    }

    fn record_error(&self, index: usize, role: usize, errno: i32) {
        if let Some(b) = self.bufs.get(index) {
            let e = ERROR | ((role as u64 & 0xffff) << 32) | u64::from(errno.unsigned_abs());
            let _ = b.error.compare_exchange(0, e, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Counts down one I/O (or a batch's own count) of buffer `index`; the
    /// last makes it ready, after a quiet batch only if a task waits.
    fn put(&self, index: usize) {
        let Some(b) = self.bufs.get(index) else { return };
        let prev = b.state.fetch_sub(1, Ordering::SeqCst);
        if prev & COUNT == 1 && (prev & QUIET == 0 || self.wanted.load(Ordering::SeqCst) > 0) {
            self.ready[index / 64].fetch_or(1 << (index % 64), Ordering::AcqRel);
            // SAFETY: the work item was initialised by `new`; the workqueue
            // lives as long as `self`, whose drop drains it. Any context.
            unsafe { bindings::queue_work_on(bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32, self.wq.raw(), self.work.get()) };
        }
    }
}

/// A task waiting for an idle buffer (see [`Jobs::want`]).
pub(crate) struct Wanted<'a>(&'a Jobs);

impl Drop for Wanted<'_> {
    fn drop(&mut self) {
        self.0.wanted.fetch_sub(1, Ordering::SeqCst);
    }
}

#[pinned_drop]
impl PinnedDrop for Jobs {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised by `new`. A step queued is taken (its owner,
        // declared after, is still whole); no bio is in flight any more (the
        // owner ends its users, and so their I/O, before it is dropped).
        unsafe { bindings::flush_work(self.work.get()) };
    }
}

/// A buffer lent out: its bytes are the holder's alone.
pub(crate) struct Lent<'a> {
    jobs: &'a Jobs,
    index: usize,
}

impl Lent<'_> {
    /// The bytes, and the region token of synchronous member I/O on them.
    pub(crate) fn split(&mut self) -> (&mut [u8], Region<'_>) {
        let b = &self.jobs.bufs[self.index];
        // SAFETY: lent: no bio uses the memory and nobody else holds a
        // `Lent` of it (see the module documentation); `&mut self` keeps
        // this the only borrow.
        unsafe { (*b.mem.get()).split() }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.jobs.bufs[self.index].state.store(0, Ordering::Release);
    }
}

/// A batch of asynchronous I/O on one buffer (see [`Jobs::batch`]).
pub(crate) struct Batch<'a> {
    jobs: &'a Jobs,
    index: usize,
}

impl Batch<'_> {
    /// Reads (`write` false) or writes (with extra flags `opf_flags`, such
    /// as FUA) `len` bytes at `at` of the buffer from or to `sector` of
    /// `member` (of role `role`). With `io`, each bio also counts against
    /// that request, which takes its failure as a member bio's
    /// (`redundant`: its data has a copy elsewhere). `EINVAL` if that is not
    /// within the buffer or not whole sectors.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit(
        &self,
        bs: &BioSet,
        member: &Member,
        role: usize,
        write: bool,
        opf_flags: bindings::blk_opf_t,
        sector: u64,
        at: usize,
        len: usize,
        io: Option<(&InFlight, bool)>,
    ) -> Result {
        let b = &self.jobs.bufs[self.index];
        if at.checked_add(len).is_none_or(|end| end > b.len.load(Ordering::Acquire)) || len % 512 != 0 {
            return Err(EINVAL);
        }
        if !write {
            b.state.fetch_or(READ, Ordering::AcqRel);
        }
        let private = core::ptr::from_ref(self.jobs).cast_mut().cast();
        let redundant = io.is_some_and(|(_, r)| r);
        // SAFETY: `[at, at + len)` lies in the buffer's vmalloc memory
        // (checked), which lives as long as `self.jobs`; the batch holds the
        // buffer's count above zero, so nobody lends it until every bio has
        // ended (each counts itself in before it is submitted); the end
        // function takes `private` as the `Jobs`, which outlives its bios,
        // and a token as one of `io`'s references, each given up once.
        unsafe {
            bs.submit_async(
                member,
                role,
                (self.index as u16) | if redundant { REDUNDANT_INDEX } else { 0 },
                write,
                opf_flags,
                sector,
                b.base.load(Ordering::Acquire).wrapping_add(at),
                len,
                async_bio_done,
                private,
                || {
                    b.state.fetch_add(1, Ordering::AcqRel);
                    io.map_or(core::ptr::null_mut(), |(io, _)| io.add_bio())
                },
            )
        };
        Ok(())
    }

    /// Records an error of the batch for `role` (a member gone before its
    /// I/O could be submitted), as a failed bio would.
    pub(crate) fn fail(&self, role: usize) {
        self.jobs.record_error(self.index, role, -(bindings::EIO as i32));
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.jobs.put(self.index);
    }
}

/// The end of an asynchronous buffer bio: records its error, counts it
/// down.
///
/// # Safety
///
/// Called by the block layer for a bio submitted by [`Batch::submit`].
unsafe extern "C" fn async_bio_done(bio: *mut bindings::bio) {
    // SAFETY: the bio was built by `submit_async` and has ended.
    let end = unsafe { bio::async_bio_ended(bio) };
    // SAFETY: `private` is the `Jobs` that submitted it, alive while its
    // bios are in flight.
    let jobs = unsafe { &*end.private.cast::<Jobs>() };
    let index = end.index & !(REDUNDANT_INDEX as usize);
    if end.token.is_null() {
        if end.errno != 0 {
            jobs.record_error(index, end.role, end.errno);
        }
        jobs.put(index);
        return;
    }
    // The buffer is idle before the request may end.
    jobs.put(index);
    let mut status = end.status;
    let redundant = end.index & REDUNDANT_INDEX as usize != 0;
    // SAFETY: the token is a reference to the request taken for this bio
    // (`add_bio`), given up here, once.
    unsafe {
        if status != 0 && !request::bio_failed(end.token, end.role, end.sector, end.write, redundant, end.errno) {
            status = 0;
        }
        request::bio_finished(end.token, status);
    }
}

/// The work item: takes the step of every ready buffer, until none is.
///
/// # Safety
///
/// Runs for the work item of a `Jobs` initialised by `Jobs::new::<T>` as
/// the field of a `T` at `T::JOBS_OFFSET`.
unsafe extern "C" fn run<T: JobOwner>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `work` field of a pinned `Jobs` (an `Opaque`
    // is laid out as its contents), which is the field of a `T` at
    // `JOBS_OFFSET` (guaranteed by the caller); both outlive the work.
    let (jobs, owner) = unsafe {
        let jobs = work.cast::<u8>().sub(core::mem::offset_of!(Jobs, work)).cast::<Jobs>();
        (&*jobs, &*jobs.cast::<u8>().sub(T::JOBS_OFFSET).cast::<T>())
    };
    bio::plugged(|| loop {
        let mut any = false;
        for (w, word) in jobs.ready.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                any = true;
                owner.io_ended(w * 64 + bit);
            }
        }
        if !any {
            break;
        }
    });
}
