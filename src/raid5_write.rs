//! Host writes on raid5: per stripe, read what the core's plan says,
//! compute the new parity, write data and parity, under a stripe lock.
//!
//! This is the simple, synchronous way (no stripe cache): the request's
//! worker waits for each step. Two writes to the same stripe would otherwise
//! both read old parity and one parity update would be lost, so a stripe is
//! written by one request at a time.

use crate::{
    array::Array,
    iobuf::IoBuf,
    raidmig_core::{
        layout::Geometry,
        parity::{rmw_parity, xor_into, StripeWrite, WriteMode},
    },
    request::InFlight,
    shim,
};
use kernel::{bindings, new_condvar, new_mutex, prelude::*, sync::{CondVar, Mutex}};

/// How many stripes may be written at once.
const SLOTS: usize = 32;

/// The stripes being written.
#[pin_data]
pub(crate) struct StripeLocks {
    #[pin]
    busy: Mutex<[Option<u64>; SLOTS]>,
    #[pin]
    freed: CondVar,
}

/// A locked stripe; unlocked on drop.
struct StripeGuard<'a> {
    locks: &'a StripeLocks,
    slot: usize,
}

impl StripeLocks {
    /// No stripe locked.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(StripeLocks { busy <- new_mutex!([None; SLOTS]), freed <- new_condvar!() })
    }

    fn lock(&self, stripe: u64) -> StripeGuard<'_> {
        let mut busy = self.busy.lock();
        loop {
            if !busy.contains(&Some(stripe)) {
                if let Some(slot) = busy.iter().position(Option::is_none) {
                    busy[slot] = Some(stripe);
                    return StripeGuard { locks: self, slot };
                }
            }
            self.freed.wait(&mut busy);
        }
    }
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        self.locks.busy.lock()[self.slot] = None;
        self.locks.freed.notify_all();
    }
}

/// Writes the logical range `[start, start + sectors)` of the request's data
/// on raid5 geometry `g`, stripe by stripe. Returns a negative errno.
pub(crate) fn write(
    array: &Array,
    locks: &StripeLocks,
    io: &InFlight,
    g: &Geometry,
    start: u64,
    sectors: u64,
) -> Result<(), i32> {
    let end = start + sectors;
    let mut at = start;
    while at < end {
        let stripe = (at >> g.chunk_shift()) / g.stripe_chunks_nonzero();
        let stripe_end = (stripe + 1) * g.stripe_sectors();
        let part = stripe_end.min(end) - at;
        let plan = StripeWrite::plan(g, at, part).ok_or(-(bindings::EINVAL as i32))?;
        let _guard = locks.lock(plan.stripe);
        write_stripe(array, io, g, &plan, at, part)?;
        at += part;
    }
    Ok(())
}

/// Allocates a stripe buffer, waiting for memory rather than failing the
/// write (allocations in the I/O path must not recurse into I/O).
fn buffer(bytes: usize) -> IoBuf {
    loop {
        if let Ok(b) = shim::noio(|| IoBuf::new(bytes)) {
            return b;
        }
        // SAFETY: no preconditions; sleeping is allowed in the worker.
        unsafe { bindings::msleep(10) };
    }
}

fn write_stripe(
    array: &Array,
    io: &InFlight,
    g: &Geometry,
    plan: &StripeWrite,
    start: u64,
    sectors: u64,
) -> Result<(), i32> {
    let members = g.members();
    let window = (plan.window_sectors << 9) as usize;
    let row = plan.stripe * g.chunk_sectors() as u64 + plan.window_start;
    // Two areas of one window per member: current contents, new data.
    let mut buf = buffer(2 * members * window);
    let (bytes, region) = buf.split();
    let (cur, new) = bytes.split_at_mut(members * window);
    let offset = |sector: u64| ((sector - row) << 9) as usize;
    let bs = array.bioset();

    for (member, span) in plan.reads() {
        let at = offset(span.sector);
        let len = (span.sectors << 9) as usize;
        region.read(bs, array.member(member), span.sector, &mut cur[member * window + at..][..len])?;
    }
    // The new data, from the host bios, in place on each member's window.
    for piece in g.pieces(start, sectors) {
        let loc = g.locate(piece.logical);
        let at = member_window(new, loc.member, window, offset(loc.sector), piece.sectors);
        copy_request_data(io, piece.logical, at);
    }
    let parity = plan.parity_member;
    match plan.mode {
        WriteMode::ReadModifyWrite => {
            for m in (0..members).filter(|&m| m != parity) {
                if let Some(span) = plan.covered(m) {
                    let (a, len) = (offset(span.sector), (span.sectors << 9) as usize);
                    let (p, o, n) = three(cur, new, parity, m, window, a, len);
                    rmw_parity(p, o, n);
                }
            }
        }
        WriteMode::ReconstructWrite => {
            // The written ranges take their new data, then parity is the XOR
            // of every data member's window.
            for m in (0..members).filter(|&m| m != parity) {
                if let Some(span) = plan.covered(m) {
                    let (a, len) = (offset(span.sector), (span.sectors << 9) as usize);
                    let src = &new[m * window + a..][..len];
                    for (d, s) in cur[m * window + a..][..len].iter_mut().zip(src) {
                        *d = *s;
                    }
                }
            }
            let (before, rest) = cur.split_at_mut(parity * window);
            let (p, after) = rest.split_at_mut(window);
            p.fill(0);
            for chunk in Iterator::chain(before.chunks(window), after.chunks(window)) {
                xor_into(p, chunk);
            }
        }
    }
    let fua = io.request().member_opf() & FUA;
    for m in (0..members).filter(|&m| m != parity) {
        if let Some(span) = plan.covered(m) {
            let (a, len) = (offset(span.sector), (span.sectors << 9) as usize);
            region.write(bs, array.member(m), fua, span.sector, &new[m * window + a..][..len])?;
        }
    }
    let ps = plan.parity_span();
    region.write(bs, array.member(parity), fua, ps.sector, &cur[parity * window..][..window])
}

const FUA: bindings::blk_opf_t = 1 << bindings::req_flag_bits___REQ_FUA;

fn member_window(area: &mut [u8], member: usize, window: usize, at: usize, sectors: u64) -> &mut [u8] {
    &mut area[member * window + at..][..(sectors << 9) as usize]
}

/// The parity window's `[a, a + len)` in `cur`, and member `m`'s old and new
/// data over the same range.
#[allow(clippy::too_many_arguments)]
fn three<'a>(
    cur: &'a mut [u8],
    new: &'a [u8],
    parity: usize,
    m: usize,
    window: usize,
    a: usize,
    len: usize,
) -> (&'a mut [u8], &'a [u8], &'a [u8]) {
    let (lo, hi) = (parity.min(m), parity.max(m));
    let (first, second) = cur.split_at_mut(hi * window);
    let (p, o) = if parity < m {
        (&mut first[lo * window + a..][..len], &second[a..][..len])
    } else {
        (&mut second[a..][..len], &first[lo * window + a..][..len])
    };
    (p, o, &new[m * window + a..][..len])
}

/// Copies the request's data of logical sectors `[logical, +dst.len()/512)`
/// into `dst`.
fn copy_request_data(io: &InFlight, logical: u64, dst: &mut [u8]) {
    let end = logical + (dst.len() >> 9) as u64;
    for bio in io.request().bios() {
        let (b0, b1) = (bio.sector(), bio.sector() + bio.sectors());
        let (lo, hi) = (b0.max(logical), b1.min(end));
        if lo < hi {
            let out = &mut dst[((lo - logical) << 9) as usize..][..((hi - lo) << 9) as usize];
            // SAFETY: the bio belongs to the request, alive while `io` is, and
            // holds `[lo, hi)` at `lo - b0` sectors in.
            unsafe { shim::copy_from_bio(bio.raw(), ((lo - b0) << 9) as u32, out) };
        }
    }
}
