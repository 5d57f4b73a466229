//! raid5 host writes, and reads of a failed member's chunks, in the kernel,
//! one request per stripe at a time under a stripe lock, several stripes at
//! once, with buffers allocated when the array is loaded.
//!
//! A write that one slice of a stripe covers with every member in sync (the
//! core's [`SliceWrite`]: every small write) runs with no task waiting for
//! it: [`Stripes::start`] takes its stripe and a buffer from the request's
//! submission; the [`Jobs`] work item submits its reads, and when they have
//! ended, computes its parity and submits its writes
//! ([`Stripes::io_ended`]), which the request counts as its member bios:
//! it ends with the last, and the stripe and buffer are free again. Every
//! other stripe write, and a write whose reads failed, runs the core's
//! [`write_stripe`] over synchronous member I/O (each slice's reads
//! submitted together, then its writes) from the request's work item, as
//! do reads of a failed member's chunks ([`read_reconstructed`]).
//!
//! No allocation happens on these paths, so a raid5 write makes progress
//! under memory pressure (swap on the volume included): it waits at most
//! for a stripe lock or a buffer, both held only by writes that are
//! themselves doing member I/O.
//!
//! Memory, sized at load: [`LARGE`] buffers of [`buffer_bytes`]`(members)`
//! for writes of any length (slices of 64 KiB: 8 x 2 x 64 KiB = 1 MiB per
//! member) and [`SMALL`] buffers of slices of [`SMALL_SLICE`] sectors for
//! small writes (64 x 2 x 4 KiB = 512 KiB per member): 1.5 MiB per member,
//! and up to 72 stripe writes in flight (a queue of 4 KiB random writes at
//! depth 64 never waits for a buffer). md's default stripe cache holds 256
//! stripes of 4 KiB per member, 1 MiB per member. A request takes a buffer
//! of its own kind if one is free, else one of the other kind rather than
//! wait (a long write in short slices is slower, not wrong). An array that
//! writes no raid5 holds one page per buffer (288 KiB), replaced by real
//! buffers when a reshape makes it raid5 or grows a raid5.

use crate::{
    members::{Members, Who},
    raidmig_core::{
        engine::{IoError, Transfer},
        health::Roles,
        hostio::Place,
        layout::Geometry,
        raid5::{
            buffer_bytes, buffer_bytes_for, read_reconstructed, write_stripe, write_unsynced_stripe, Raid5Error, SliceWrite,
            StripeIo,
        },
    },
    sys::{
        iobuf::{IoBuf, Region},
        jobs::Jobs,
        request::InFlight,
        shim,
    },
};
use kernel::{
    bindings, new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
};

/// Buffers for writes of any length (slices of the core's 64 KiB at most).
pub(crate) const LARGE: usize = 8;
/// Buffers for small writes.
pub(crate) const SMALL: usize = 64;
/// Bytes of a buffer held in place for a reshape to raid5.
const PLACEHOLDER_BYTES: usize = 4096;
/// The slice of a small write's buffer, in sectors (4 KiB): a request that
/// long or shorter takes a small buffer first.
pub(crate) const SMALL_SLICE: u64 = 8;

/// Where a stripe write or a reconstructed read goes: logical
/// `[start, start + sectors)`, within one stripe of raid5 layout `g` at
/// `place`, with the roles of `failed` gone; `unsynced` where the range is
/// dirty at load and not yet resynced (its parity may not match its data:
/// written as a reconstruct-write; false for reads).
#[derive(Clone, Copy)]
pub(crate) struct StripePart {
    pub(crate) g: Geometry,
    pub(crate) place: Place,
    pub(crate) failed: Roles,
    pub(crate) start: u64,
    pub(crate) sectors: u64,
    pub(crate) unsynced: bool,
}

impl StripePart {
    /// The stripe it lies in.
    fn stripe(&self) -> u64 {
        (self.start >> self.g.chunk_shift()) / self.g.stripe_chunks_nonzero()
    }

    /// Its slice write from the buffer of `bytes` bytes, for request `io`
    /// (see [`SliceWrite::plan`]).
    fn slice_write(&self, members: &Members, io: &InFlight, bytes: usize) -> Option<SliceWrite> {
        let base = io.request().sector();
        let dev = members.device_sectors();
        SliceWrite::plan(&self.g, self.place, &dev, self.failed, base, self.start, self.sectors, bytes, self.unsynced)
    }
}

/// A write running with no task waiting for it (see the module
/// documentation): what its steps are planned from, again at each step.
struct Running {
    /// The request, held until the write's last step.
    io: InFlight,
    part: StripePart,
    fua: bindings::blk_opf_t,
    /// Its first step is taken (its reads submitted).
    started: bool,
}

/// A buffer's use: the stripe written with it, or free (`None`); the write
/// running on it without a waiting task while its reads are in flight or
/// its parity computed; whether its writes are in flight (the stripe and
/// buffer are free again once the buffer is idle: no step is taken for
/// them, the request ends with its last write).
#[derive(Default)]
struct Entry {
    stripe: Option<u64>,
    job: Option<Running>,
    writing: bool,
}

/// Stripe locks of a raid5 array, one per buffer of its [`Jobs`].
#[pin_data]
pub(crate) struct Stripes {
    #[pin]
    slots: Mutex<KVec<Entry>>,
    #[pin]
    freed: CondVar,
}

/// A stripe locked with a buffer by a waiting task; both go back on drop.
struct Slot<'a> {
    stripes: &'a Stripes,
    index: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.stripes.release(self.index);
    }
}

impl Stripes {
    /// The stripe table over `buffers` buffers (see [`Stripes::buffers`]).
    pub(crate) fn new(buffers: usize) -> Result<impl PinInit<Self>> {
        let mut slots = KVec::with_capacity(buffers, GFP_KERNEL)?;
        for _ in 0..buffers {
            slots.push(Entry::default(), GFP_KERNEL)?;
        }
        Ok(pin_init!(Stripes { slots <- new_mutex!(slots), freed <- new_condvar!() }))
    }

    /// Buffers for raid5 writes over `raid5_members` members (the
    /// [`LARGE`] ones first, then the [`SMALL`] ones), or placeholders of
    /// one page when the array writes no raid5: a reshape to raid5 puts
    /// real ones in their place (see [`Jobs::replace`]), so the buffers,
    /// and the stripe slots that go with them, are always as many.
    pub(crate) fn buffers(raid5_members: Option<usize>) -> Result<KVec<IoBuf>> {
        let mut v = KVec::with_capacity(LARGE + SMALL, GFP_KERNEL)?;
        for i in 0..LARGE + SMALL {
            let bytes = match raid5_members {
                Some(n) if i < LARGE => buffer_bytes(n),
                Some(n) => buffer_bytes_for(n, SMALL_SLICE),
                // Placeholders a reshape to raid5 replaces.
                None => PLACEHOLDER_BYTES,
            };
            v.push(IoBuf::new(bytes)?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Takes a free buffer for a write of `sectors` sectors of `stripe`, if
    /// no write holds the stripe: one of its own kind if there is, else one
    /// of the other kind.
    fn take_slot(slots: &mut [Entry], jobs: &Jobs, stripe: u64, sectors: u64) -> Option<usize> {
        // Held, or its I/O in flight (a write's, once its stripe is free
        // again as soon as it ends).
        let busy = |i: usize, e: &Entry| (e.stripe.is_some() && !e.writing) || !jobs.idle(i);
        if slots.iter().enumerate().any(|(i, e)| e.stripe == Some(stripe) && busy(i, e)) {
            return None;
        }
        let all = slots.len();
        let large = LARGE.min(all);
        let (mine, other) = if sectors <= SMALL_SLICE { (large..all, 0..large) } else { (0..large, large..all) };
        let index = Iterator::chain(mine, other).find(|&i| !busy(i, &slots[i]))?;
        slots[index] = Entry { stripe: Some(stripe), job: None, writing: false };
        Some(index)
    }

    /// Waits until no write holds `stripe` and a buffer is free; takes both
    /// (see [`Stripes::take_slot`]).
    fn lock(&self, jobs: &Jobs, stripe: u64, sectors: u64) -> Result<Slot<'_>, Raid5Error> {
        // Counted before looking: the end of a write that frees them wakes
        // this task (see `io_ended`).
        let _want = jobs.want();
        let mut slots = self.slots.lock();
        if slots.is_empty() {
            return Err(Raid5Error::BufferTooSmall);
        }
        loop {
            if let Some(index) = Self::take_slot(&mut slots, jobs, stripe, sectors) {
                return Ok(Slot { stripes: self, index });
            }
            self.freed.wait(&mut slots);
        }
    }

    /// Frees buffer `index` and its stripe.
    fn release(&self, index: usize) {
        let mut slots = self.slots.lock();
        if let Some(e) = slots.get_mut(index) {
            *e = Entry::default();
        }
        drop(slots);
        self.freed.notify_all();
    }

    /// Starts the write of `part` from the data of request `io` without
    /// waiting (see the module documentation), if it is one slice with
    /// every member in sync and its stripe and a buffer are free. Returns
    /// `false` otherwise: the caller then has it done by [`Stripes::write`]
    /// from the request's work item.
    pub(crate) fn start(&self, members: &Members, jobs: &Jobs, io: &InFlight, part: &StripePart) -> bool {
        let mut slots = self.slots.lock();
        let Some(index) = Self::take_slot(&mut slots, jobs, part.stripe(), part.sectors) else { return false };
        if part.slice_write(members, io, jobs.bytes(index)).is_none() {
            slots[index] = Entry::default();
            return false;
        }
        // Its member I/O goes from the work item, not from here: this runs
        // on the submitting task's CPU, where member I/O (an exit to the
        // emulator per command) holds up the host's next submissions; md
        // too leaves a stripe's member I/O to its raid5d. Measured, 4k
        // random writes at depth 32 over 3: 28403 writes in 8 s with the
        // reads submitted here, 35791 from the work item.
        let Some(kick) = jobs.batch(index) else {
            slots[index] = Entry::default();
            return false;
        };
        let fua = io.request().member_opf() & FUA;
        slots[index].job = Some(Running { io: io.hold(), part: *part, fua, started: false });
        drop(slots);
        // With no I/O: its end takes the first step.
        drop(kick);
        true
    }

    /// Ends `job` on buffer `index` without writing: the whole request is
    /// served again from its work item, through [`Stripes::write`].
    fn abandon(&self, index: usize, job: Running) {
        job.io.defer();
        self.release(index);
        drop(job);
    }

    /// Puts `job` back on buffer `index` and submits its reads: its next
    /// step is taken once all have ended. A member gone since the plan
    /// counts as a failed read.
    fn read(&self, members: &Members, jobs: &Jobs, index: usize, job: Running, plan: &SliceWrite) {
        // Lent to nobody: only a step lends it, and that step is this one.
        let Some(b) = jobs.batch(index) else { return self.abandon(index, job) };
        // Back before any bio goes: its end may take the next step at once.
        self.slots.lock()[index].job = Some(job);
        for t in plan.reads() {
            let ok = members
                .dev(t.member)
                .is_some_and(|d| b.submit(members.bioset(), d, t.member, false, 0, t.sector, t.at, t.len, None).is_ok());
            if !ok {
                b.fail(t.member);
            }
        }
    }

    /// With `job`'s reads in buffer `index`: computes its parity and
    /// submits its writes, which the request counts as its member bios (it
    /// ends with the last, and takes their failures as those of any member
    /// write: a member that loses one is failed, the stripe being whole and
    /// consistent without it, and the request ends once that is recorded).
    /// The stripe and buffer are free again when the writes have ended.
    fn compute_and_write(&self, members: &Members, jobs: &Jobs, index: usize, job: Running, plan: &SliceWrite) {
        {
            // Its I/O has ended (this step runs after it).
            let Some(mut lent) = jobs.lend(index) else { return self.abandon(index, job) };
            let (bytes, region) = lent.split();
            let mut sio = KernelStripe { members, io: &job.io, region, fua: job.fua };
            plan.compute(&mut sio, bytes);
        }
        let Some(b) = jobs.quiet_batch(index) else { return self.abandon(index, job) };
        self.slots.lock()[index].writing = true;
        let redundant = job.part.g.redundant();
        for t in plan.writes() {
            let written = members.dev(t.member).is_some_and(|d| {
                b.submit(members.bioset(), d, t.member, true, job.fua, t.sector, t.at, t.len, Some((&job.io, redundant)))
                    .is_ok()
            });
            // A member failed since the plan: the stripe is written
            // without it, as a failed write leaves it.
            if !written {
                if redundant {
                    job.io.await_record();
                } else {
                    job.io.fail(shim::sts_ioerr());
                }
            }
        }
    }

    /// The I/O of buffer `index` has ended: the next step of the write
    /// running on it. First: its reads (for a full stripe, parity and
    /// writes). After its reads: parity and writes; a failed read
    /// has the whole request done again from its work item (nothing is
    /// written yet; [`Stripes::write`] then writes around the member). With
    /// no write whose I/O has ended (the end of a write's writes, taken only
    /// while a task waits for a stripe or a buffer): those tasks look again.
    pub(crate) fn io_ended(&self, members: &Members, jobs: &Jobs, index: usize) {
        let mut slots = self.slots.lock();
        // A write's reads in flight, on a buffer whose earlier writes ended
        // while a task waited: their own end takes the step.
        let job = if jobs.idle(index) { slots.get_mut(index).and_then(|e| e.job.take()) } else { None };
        let Some(job) = job else {
            drop(slots);
            self.freed.notify_all();
            return;
        };
        drop(slots);
        // Planned again at each step: the plan is a function of what `job`
        // holds.
        let Some(plan) = job.part.slice_write(members, &job.io, jobs.bytes(index)) else { return self.abandon(index, job) };
        match (job.started, jobs.take_error(index)) {
            (false, _) if plan.reads().next().is_none() => self.compute_and_write(members, jobs, index, job, &plan),
            (false, _) => self.read(members, jobs, index, Running { started: true, ..job }, &plan),
            (true, None) => self.compute_and_write(members, jobs, index, job, &plan),
            (true, Some((role, errno))) => {
                members.host_error(role, sector_of(role, plan.reads()), false, errno);
                self.abandon(index, job);
            }
        }
    }

    /// Writes `part` from the data of request `io`, waiting for its member
    /// I/O.
    pub(crate) fn write(&self, members: &Members, jobs: &Jobs, io: &InFlight, part: &StripePart) -> Result<(), Raid5Error> {
        let slot = self.lock(jobs, part.stripe(), part.sectors)?;
        let Some(mut lent) = jobs.lend(slot.index) else { return Err(Raid5Error::BufferTooSmall) };
        let (bytes, region) = lent.split();
        let fua = io.request().member_opf() & FUA;
        let mut sio = KernelStripe { members, io, region, fua };
        let base = io.request().sector();
        let write = if part.unsynced { write_unsynced_stripe } else { write_stripe };
        let StripePart { g, place, failed, start, sectors, .. } = *part;
        write(&mut sio, &g, place, &members.device_sectors(), failed, base, start, sectors, bytes)
    }

    /// Reads `part`, within one chunk whose member is in `part.failed`, into
    /// request `io`: reconstructed from the rest of the stripe, under the
    /// stripe lock (a write of the stripe would otherwise change it
    /// half-way).
    pub(crate) fn read_reconstructed(
        &self,
        members: &Members,
        jobs: &Jobs,
        io: &InFlight,
        part: &StripePart,
    ) -> Result<(), Raid5Error> {
        let slot = self.lock(jobs, part.stripe(), part.sectors)?;
        let Some(mut lent) = jobs.lend(slot.index) else { return Err(Raid5Error::BufferTooSmall) };
        let (bytes, region) = lent.split();
        let mut sio = KernelStripe { members, io, region, fua: 0 };
        let base = io.request().sector();
        let StripePart { g, place, failed, start, sectors, .. } = *part;
        read_reconstructed(&mut sio, &g, place, &members.device_sectors(), failed, base, start, sectors, bytes)
    }
}

/// The member sector of role `role`'s transfer in `batch` (for a message).
fn sector_of(role: usize, mut batch: impl Iterator<Item = Transfer>) -> u64 {
    batch.find(|t| t.member == role).map_or(0, |t| t.sector)
}

const FUA: bindings::blk_opf_t = 1 << bindings::req_flag_bits___REQ_FUA;

/// The error of a batch that failed as a whole (the member is a guess: the
/// core does the batch again transfer by transfer to learn it).
fn batch_failed(batch: &[Transfer]) -> IoError {
    IoError { member: batch.first().map_or(0, |t| t.member), errno: -(bindings::EIO as i32) }
}

/// The member I/O of one stripe write.
struct KernelStripe<'a> {
    members: &'a Members,
    io: &'a InFlight,
    region: Region<'a>,
    fua: bindings::blk_opf_t,
}

impl StripeIo for KernelStripe<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.members.read(Who::Host, &self.region, member, sector, buf)
    }

    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.members.write(Who::Host, &self.region, member, self.fua, sector, buf)
    }

    fn host_data(&mut self, offset: u64, buf: &mut [u8]) {
        let rq = self.io.request();
        let first = rq.sector() + offset;
        let end = first + (buf.len() >> 9) as u64;
        for bio in rq.bios() {
            let (b0, b1) = (bio.sector(), bio.sector() + bio.sectors());
            let (lo, hi) = (b0.max(first), b1.min(end));
            if lo < hi {
                let out = &mut buf[((lo - first) << 9) as usize..((hi - first) << 9) as usize];
                bio.copy_out(lo - b0, out);
            }
        }
    }

    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        shim::xor_into(dst, src)
    }

    // A failed batch does not say which member failed: the core then does
    // its transfers one by one through `read` and `write`, which tell.
    fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
        match self.members.read_batch(&self.region, buf, batch) {
            true => Ok(()),
            false => Err(batch_failed(batch)),
        }
    }

    fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
        match self.members.write_batch(&self.region, self.fua, buf, batch) {
            true => Ok(()),
            false => Err(batch_failed(batch)),
        }
    }

    fn to_host(&mut self, offset: u64, buf: &[u8]) {
        let rq = self.io.request();
        let first = rq.sector() + offset;
        let end = first + (buf.len() >> 9) as u64;
        for bio in rq.bios() {
            let (b0, b1) = (bio.sector(), bio.sector() + bio.sectors());
            let (lo, hi) = (b0.max(first), b1.min(end));
            if lo < hi {
                bio.copy_in(lo - b0, &buf[((lo - first) << 9) as usize..((hi - first) << 9) as usize]);
            }
        }
    }
}
