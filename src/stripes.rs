//! raid5 host writes, and reads of a failed member's chunks, in the kernel:
//! the core's [`write_stripe`] and [`read_reconstructed`] over synchronous
//! member I/O (each slice's reads submitted together, then its writes),
//! one request per stripe at a time under a stripe lock, several stripes at
//! once, with buffers allocated when the array is loaded.
//!
//! No allocation happens on this path, so a raid5 write makes progress under
//! memory pressure (swap on the volume included): it waits at most for a
//! stripe lock or a buffer, both held only by writes that are themselves
//! doing member I/O.
//!
//! Memory, sized at load: [`LARGE`] buffers of [`buffer_bytes`]`(members)`
//! for writes of any length (slices of 64 KiB: 8 x 2 x 64 KiB = 1 MiB per
//! member) and [`SMALL`] buffers of slices of [`SMALL_SLICE`] sectors for
//! small writes (64 x 2 x 4 KiB = 512 KiB per member): 1.5 MiB per member,
//! and up to 72 stripe writes in flight (a queue of 4 KiB random writes at
//! depth 64 never waits for a buffer). md's default stripe cache holds 256
//! stripes of 4 KiB per member, 1 MiB per member. A request takes a buffer
//! of its own kind if one is free, else one of the other kind rather than
//! wait (a long write in short slices is slower, not wrong).

use crate::{
    members::{Members, Who},
    raidmig_core::{
        engine::{IoError, Transfer},
        hostio::Place,
        layout::Geometry,
        health::Roles,
        raid5::{buffer_bytes, buffer_bytes_for, read_reconstructed, write_stripe, write_unsynced_stripe, Raid5Error, StripeIo},
    },
    sys::{
        iobuf::{IoBuf, Region},
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
/// The slice of a small write's buffer, in sectors (4 KiB): a request that
/// long or shorter takes a small buffer first.
pub(crate) const SMALL_SLICE: u64 = 8;

/// Stripe locks and write buffers of a raid5 array.
#[pin_data]
pub(crate) struct Stripes {
    /// For each buffer: the stripe being written with it, or free (`None`),
    /// and the buffer itself.
    #[pin]
    slots: Mutex<KVec<(Option<u64>, Option<IoBuf>)>>,
    #[pin]
    freed: CondVar,
}

/// A stripe locked with a buffer; both go back on drop.
struct Slot<'a> {
    stripes: &'a Stripes,
    index: usize,
    buf: Option<IoBuf>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut slots = self.stripes.slots.lock();
        slots[self.index] = (None, self.buf.take());
        drop(slots);
        self.stripes.freed.notify_all();
    }
}

impl Stripes {
    /// The stripe table over `buffers` (see [`Stripes::buffers`]).
    pub(crate) fn new(buffers: KVec<(Option<u64>, Option<IoBuf>)>) -> impl PinInit<Self> {
        pin_init!(Stripes { slots <- new_mutex!(buffers), freed <- new_condvar!() })
    }

    /// Buffers for raid5 writes over `members` members, or none when the
    /// array writes no raid5 (`raid5` false): the [`LARGE`] ones first,
    /// then the [`SMALL`] ones.
    pub(crate) fn buffers(members: usize, raid5: bool) -> Result<KVec<(Option<u64>, Option<IoBuf>)>> {
        let mut v = KVec::with_capacity(if raid5 { LARGE + SMALL } else { 0 }, GFP_KERNEL)?;
        if raid5 {
            for i in 0..LARGE + SMALL {
                let bytes = if i < LARGE { buffer_bytes(members) } else { buffer_bytes_for(members, SMALL_SLICE) };
                v.push((None, Some(IoBuf::new(bytes)?)), GFP_KERNEL)?;
            }
        }
        Ok(v)
    }

    /// Waits until no write holds `stripe` and a buffer is free; takes both,
    /// a buffer of the kind a request of `sectors` sectors goes best with
    /// if one is free.
    fn lock(&self, stripe: u64, sectors: u64) -> Result<Slot<'_>, Raid5Error> {
        let mut slots = self.slots.lock();
        if slots.is_empty() {
            return Err(Raid5Error::BufferTooSmall);
        }
        let all = slots.len();
        let large = LARGE.min(all);
        loop {
            if !slots.iter().any(|(s, _)| *s == Some(stripe)) {
                let (mine, other) = if sectors <= SMALL_SLICE { (large..all, 0..large) } else { (0..large, large..all) };
                if let Some(index) = Iterator::chain(mine, other).find(|&i| slots[i].0.is_none()) {
                    let buf = slots[index].1.take();
                    slots[index].0 = Some(stripe);
                    return Ok(Slot { stripes: self, index, buf });
                }
            }
            self.freed.wait(&mut slots);
        }
    }

    /// Writes logical `[start, start + sectors)`, within one stripe of raid5
    /// layout `g` at `place`, from the data of request `io`, with the roles
    /// of `failed` gone; as a reconstruct-write where the range is
    /// `unsynced` (its parity may not match its data).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &self,
        members: &Members,
        io: &InFlight,
        g: &Geometry,
        place: Place,
        failed: Roles,
        start: u64,
        sectors: u64,
        unsynced: bool,
    ) -> Result<(), Raid5Error> {
        let stripe = (start >> g.chunk_shift()) / g.stripe_chunks_nonzero();
        let mut slot = self.lock(stripe, sectors)?;
        let Some(buf) = slot.buf.as_mut() else { return Err(Raid5Error::BufferTooSmall) };
        let (bytes, region) = buf.split();
        let fua = io.request().member_opf() & FUA;
        let mut sio = KernelStripe { members, io, region, fua };
        let base = io.request().sector();
        let write = if unsynced { write_unsynced_stripe } else { write_stripe };
        write(&mut sio, g, place, &members.device_sectors(), failed, base, start, sectors, bytes)
    }

    /// Reads logical `[start, start + sectors)`, within one chunk of raid5
    /// layout `g` at `place` whose member is in `failed`, into request `io`:
    /// reconstructed from the rest of the stripe, under the stripe lock (a
    /// write of the stripe would otherwise change it half-way).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_reconstructed(
        &self,
        members: &Members,
        io: &InFlight,
        g: &Geometry,
        place: Place,
        failed: Roles,
        start: u64,
        sectors: u64,
    ) -> Result<(), Raid5Error> {
        let stripe = (start >> g.chunk_shift()) / g.stripe_chunks_nonzero();
        let mut slot = self.lock(stripe, sectors)?;
        let Some(buf) = slot.buf.as_mut() else { return Err(Raid5Error::BufferTooSmall) };
        let (bytes, region) = buf.split();
        let mut sio = KernelStripe { members, io, region, fua: 0 };
        let base = io.request().sector();
        read_reconstructed(&mut sio, g, place, &members.device_sectors(), failed, base, start, sectors, bytes)
    }
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
