//! raid5 host writes, one stripe at a time: read what the stripe's plan
//! ([`StripeWrite`]) needs, compute the new parity, write data and parity.
//!
//! Keeps invariant 8 of the theory (see the crate documentation): the kernel
//! and the simulator run this very code over their own member I/O.
//!
//! A stripe is written in slices of chunk offset (parity at an offset
//! depends only on the data at that offset) as long as the buffer allows,
//! at most [`SLICE_SECTORS`], so a write needs one buffer of a size fixed
//! by the member count, whatever the chunk size: [`buffer_bytes`] for the
//! longest slices, [`buffer_bytes_for`] for shorter ones (a small write
//! needs no more than its own length per member). The kernel allocates
//! such buffers when the array is loaded and never allocates on the write
//! path, so writes make progress under memory pressure (swap on the volume
//! included). The caller excludes other writes to the same stripe while one
//! runs (two read-modify-writes would otherwise both start from the old
//! parity).
//!
//! Each slice's reads are submitted together, then its writes
//! ([`StripeIo::read_all`], [`StripeIo::write_all`]): a slice costs two
//! member latencies, whatever the member count.

use super::engine::{IoError, Transfer};
use super::hostio::Place;
use super::health::{condition, Condition, Roles};
use super::layout::{Content, Geometry, Level, Span, MAX_MEMBERS, SECTOR_SHIFT};
use super::parity::{xor_into, StripeWrite, WriteMode};

/// Chunk offset covered by one slice of a stripe write at most, in sectors
/// (64 KiB).
pub const SLICE_SECTORS: u64 = 128;

/// Bytes of buffer a stripe write over `members` members needs to go in
/// slices of `slice` sectors: the old contents and the new data of one
/// slice of every member.
pub const fn buffer_bytes_for(members: usize, slice: u64) -> usize {
    2 * members * ((slice as usize) << SECTOR_SHIFT)
}

/// Bytes of buffer for the longest slices, [`SLICE_SECTORS`].
pub const fn buffer_bytes(members: usize) -> usize {
    buffer_bytes_for(members, SLICE_SECTORS)
}

/// The slice, in sectors, that a buffer of `bytes` allows over `members`
/// members: at most [`SLICE_SECTORS`]; 0 if it is too small for any.
pub const fn slice_sectors(bytes: usize, members: usize) -> u64 {
    let Some(per_window) = bytes.checked_div(members.saturating_mul(2)) else { return 0 };
    let s = (per_window >> SECTOR_SHIFT) as u64;
    if s < SLICE_SECTORS {
        s
    } else {
        SLICE_SECTORS
    }
}

/// Member I/O of one host write, by role.
pub trait StripeIo {
    /// Reads `buf.len()` bytes at `sector` of `member`, waiting for them.
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `sector` of `member`.
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Copies the host request's data, from `offset` sectors into the
    /// request, into `buf`.
    fn host_data(&mut self, offset: u64, buf: &mut [u8]);
    /// Copies `buf` into the host request's data, from `offset` sectors
    /// into the request (a reconstructed read).
    fn to_host(&mut self, offset: u64, buf: &[u8]);
    /// `dst ^= src` over the shorter of the two, as
    /// [`MemberIo::xor_into`](super::engine::MemberIo::xor_into).
    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        xor_into(dst, src)
    }
    /// Reads every transfer of `batch` into its part of `buf` (the parts do
    /// not overlap), waiting for all. The kernel submits them together, so
    /// a slice's reads cost one member latency, not one per member. An
    /// error need not name the member: the caller then reads them again one
    /// by one with [`StripeIo::read`], which does.
    fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
        let mut first = Ok(());
        for t in batch {
            first = first.and(self.read(t.member, t.sector, &mut buf[t.at..t.at + t.len]));
        }
        first
    }
    /// Writes every transfer of `batch` from its part of `buf`, as
    /// [`StripeIo::read_all`] reads them (after an error the caller writes
    /// them again one by one: under the stripe lock, the same write).
    fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
        let mut first = Ok(());
        for t in batch {
            first = first.and(self.write(t.member, t.sector, &buf[t.at..t.at + t.len]));
        }
        first
    }
}

/// The member transfers of one slice, submitted together: at most two
/// reads per member (a reconstruct-write reads around the written range),
/// one write per member.
struct Ios {
    t: [Transfer; 2 * MAX_MEMBERS],
    n: usize,
}

impl Ios {
    fn new() -> Ios {
        Ios { t: [Transfer::default(); 2 * MAX_MEMBERS], n: 0 }
    }

    fn push(&mut self, member: usize, sector: u64, at: usize, len: usize) {
        if let Some(t) = self.t.get_mut(self.n) {
            *t = Transfer { member, sector, at, len };
            self.n += 1;
        }
    }

    fn all(&self) -> &[Transfer] {
        &self.t[..self.n]
    }

    /// Reads the batch into `buf`; after a failure, one by one, for the
    /// error of the first member that fails.
    fn read<S: StripeIo>(&self, io: &mut S, buf: &mut [u8]) -> Result<(), IoError> {
        if self.n == 0 || io.read_all(buf, self.all()).is_ok() {
            return Ok(());
        }
        for t in self.all() {
            io.read(t.member, t.sector, &mut buf[t.at..t.at + t.len])?;
        }
        Ok(())
    }

    /// Writes the batch from `buf`; after a failure, one by one: the first
    /// member that fails is kept in `failed_write` (if it holds none yet),
    /// another is a [`SliceError::Second`].
    fn write<S: StripeIo>(&self, io: &mut S, buf: &[u8], failed_write: &mut Option<IoError>) -> Result<(), SliceError> {
        if self.n == 0 || io.write_all(buf, self.all()).is_ok() {
            return Ok(());
        }
        for t in self.all() {
            match io.write(t.member, t.sector, &buf[t.at..t.at + t.len]) {
                Ok(()) => {}
                Err(e) if failed_write.is_none() => *failed_write = Some(e),
                Err(e) => return Err(SliceError::Second(e)),
            }
        }
        Ok(())
    }
}

/// Why a stripe write did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raid5Error {
    /// A member I/O failed.
    Io(IoError),
    /// The buffer is too small for slices of one sector (see
    /// [`slice_sectors`]).
    BufferTooSmall,
    /// The range is empty, not raid5, or not within one stripe.
    BadRange,
    /// More members failed than raid5 survives.
    Lost,
    /// Member `e.member` failed during the write; the stripe is written,
    /// consistent without it: fail the member, do not write again.
    MemberFailed(IoError),
}

impl From<IoError> for Raid5Error {
    fn from(e: IoError) -> Raid5Error {
        Raid5Error::Io(e)
    }
}

/// [`write_stripe`] where the stripe's parity may not match its data: a
/// range the write-intent bitmap had dirty at load and the resync has not
/// reached (a write cut by a crash may have left it so). Always a
/// reconstruct-write, as md forces ahead of its resync position: parity
/// is computed from the data, so the range written is consistent at once
/// and a member lost before the resync does not take the write with it (a
/// read-modify-write would carry the old mismatch into the new parity).
#[allow(clippy::too_many_arguments)]
pub fn write_unsynced_stripe<S: StripeIo>(
    io: &mut S,
    g: &Geometry,
    place: Place,
    device_sectors: &[u64; MAX_MEMBERS],
    failed: Roles,
    base: u64,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
) -> Result<(), Raid5Error> {
    write_stripe_as(io, g, place, device_sectors, failed, base, start, sectors, buf, true)
}

/// Writes logical `[start, start + sectors)`, which lies within one stripe
/// of raid5 layout `g` at `place`, taking its data from a host request that
/// starts at logical sector `base`, with the roles of `failed` gone.
///
/// A member that fails during the write is left out from there on: a read
/// error before a slice is written makes that slice (and the rest) a
/// degraded write; a write error lets the slice's other writes go on, since
/// its parity already is the XOR of the data every member is to hold. The
/// stripe is then complete and consistent without that member, and the
/// caller gets [`Raid5Error::MemberFailed`]: it fails the member and does
/// not write again. (Stopping half-way instead would leave new data beside
/// old parity, and reconstructing the failed member from that gives
/// garbage: the crash simulator found it.)
#[allow(clippy::too_many_arguments)]
pub fn write_stripe<S: StripeIo>(
    io: &mut S,
    g: &Geometry,
    place: Place,
    device_sectors: &[u64; MAX_MEMBERS],
    failed: Roles,
    base: u64,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
) -> Result<(), Raid5Error> {
    write_stripe_as(io, g, place, device_sectors, failed, base, start, sectors, buf, false)
}

/// [`write_stripe`], reconstruct-write forced (`unsynced`) or not.
#[allow(clippy::too_many_arguments)]
fn write_stripe_as<S: StripeIo>(
    io: &mut S,
    g: &Geometry,
    place: Place,
    device_sectors: &[u64; MAX_MEMBERS],
    failed: Roles,
    base: u64,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
    unsynced: bool,
) -> Result<(), Raid5Error> {
    let plan = StripeWrite::plan(g, start, sectors).ok_or(Raid5Error::BadRange)?;
    let n = plan.members();
    let slice = slice_sectors(buf.len(), n);
    if slice == 0 {
        return Err(Raid5Error::BufferTooSmall);
    }
    let failed = Roles(failed.0 & Roles::first(n).0);
    if condition(g, failed) == Condition::Failed {
        return Err(Raid5Error::Lost);
    }
    let mut lost = failed.iter().next();
    let mut newly = None;
    let ctx = Ctx { g, plan: &plan, place, device_sectors, base };
    let mut from = plan.window_start;
    let end = plan.window_start + plan.window_sectors;
    while from < end {
        let to = (from + slice).min(end);
        let Some(mut s) = plan.slice(from, to) else { break };
        if unsynced {
            s.mode = WriteMode::ReconstructWrite;
        }
        from = to;
        loop {
            let r = match lost {
                None => ctx.normal_slice(io, &s, buf),
                Some(l) => ctx.degraded_slice(io, &s, l, buf),
            };
            match (r, lost) {
                (Ok(()), _) => break,
                // Nothing of this slice written yet: again, without it.
                (Err(SliceError::Read(e)), None) => {
                    lost = Some(e.member);
                    newly = Some(e);
                }
                // Written whole, without it.
                (Err(SliceError::Write(e)), None) => {
                    lost = Some(e.member);
                    newly = Some(e);
                    break;
                }
                (Err(SliceError::Read(e) | SliceError::Write(e) | SliceError::Second(e)), _) => {
                    return Err(Raid5Error::Io(e))
                }
            }
        }
    }
    match newly {
        Some(e) => Err(Raid5Error::MemberFailed(e)),
        None => Ok(()),
    }
}

/// How a slice of a stripe write went wrong.
enum SliceError {
    /// A read failed: nothing of the slice was written.
    Read(IoError),
    /// One write failed: every other write of the slice was made.
    Write(IoError),
    /// A second member failed in the slice.
    Second(IoError),
}

/// What every slice of one stripe write shares.
struct Ctx<'a> {
    g: &'a Geometry,
    plan: &'a StripeWrite,
    place: Place,
    device_sectors: &'a [u64; MAX_MEMBERS],
    base: u64,
}

impl Ctx<'_> {
    fn at(&self, member: usize, sector: u64) -> u64 {
        self.place.sector(self.g, self.device_sectors, member, sector)
    }

    /// A slice with every member in sync: read-modify-write or
    /// reconstruct-write, as the plan chose, through the steps of a
    /// [`SliceWrite`].
    fn normal_slice<S: StripeIo>(&self, io: &mut S, s: &StripeWrite, buf: &mut [u8]) -> Result<(), SliceError> {
        let job = SliceWrite::of_slice(self.g, *s, self.place, self.device_sectors, self.base);
        let (mut reads, mut writes) = (Ios::new(), Ios::new());
        job.reads().for_each(|t| reads.push(t.member, t.sector, t.at, t.len));
        job.writes().for_each(|t| writes.push(t.member, t.sector, t.at, t.len));
        reads.read(io, buf).map_err(SliceError::Read)?;
        job.compute(io, buf);
        let mut failed_write = None;
        writes.write(io, buf, &mut failed_write)?;
        failed_write.map_or(Ok(()), |e| Err(SliceError::Write(e)))
    }

    /// A slice with member `lost` gone: every other member's window is
    /// read; a lost data member's window is rebuilt as the XOR of the
    /// others; the new data goes over the windows; parity is the XOR of the
    /// data windows; the data and parity of members in sync are written.
    /// With the parity member lost, only the data is written.
    fn degraded_slice<S: StripeIo>(&self, io: &mut S, s: &StripeWrite, lost: usize, buf: &mut [u8]) -> Result<(), SliceError> {
        let (g, n) = (self.g, s.members());
        let row = self.plan.stripe << g.chunk_shift();
        let parity = s.parity_member;
        let first = row + s.window_start;
        let w = (s.window_sectors << SECTOR_SHIFT) as usize;
        let cur = &mut buf[..n * w];
        let range = |sector: u64, sectors: u64| {
            let a = ((sector - first) << SECTOR_SHIFT) as usize;
            a..a + (sectors << SECTOR_SHIFT) as usize
        };
        if lost != parity {
            let mut reads = Ios::new();
            for m in (0..n).filter(|&m| m != lost) {
                reads.push(m, self.at(m, first), m * w, w);
            }
            reads.read(io, cur).map_err(SliceError::Read)?;
            rebuild_window(io, cur, lost, w);
        }
        for m in (0..n).filter(|&m| m != parity) {
            if let Some(span) = s.covered(m) {
                if let Content::Data { logical, .. } = g.content(m, span.sector) {
                    io.host_data(logical - self.base, &mut cur[m * w..][range(span.sector, span.sectors)]);
                }
            }
        }
        let mut writes = Ios::new();
        for m in (0..n).filter(|&m| m != parity && m != lost) {
            if let Some(span) = s.covered(m) {
                let r = range(span.sector, span.sectors);
                writes.push(m, self.at(m, span.sector), m * w + r.start, r.len());
            }
        }
        if lost != parity {
            rebuild_window(io, cur, parity, w);
            writes.push(parity, self.at(parity, first), parity * w, w);
        }
        // Any write error here is a second member gone.
        writes.write(io, cur, &mut Some(IoError { member: lost, errno: 0 }))
    }
}

/// A stripe write that one slice covers, with every member of the stripe
/// in sync, as three steps with no waiting inside any: read
/// ([`SliceWrite::reads`]), compute ([`SliceWrite::compute`]), write
/// ([`SliceWrite::writes`]). The kernel takes each step from one work item
/// when the member I/O of the one before has ended, as md's raid5d handles
/// a stripe once its reads are in, so no task sleeps through a stripe's
/// member I/O. [`write_stripe`] runs
/// every slice with every member in sync through the same steps, so the
/// simulators test what the kernel runs either way.
///
/// Transfers are placed in a buffer of `2 * members * window` bytes: the
/// old contents of every member's window, then the new data of every
/// member's window; parity is computed into its old window.
#[derive(Clone, Copy, Debug)]
pub struct SliceWrite {
    g: Geometry,
    s: StripeWrite,
    place: Place,
    device_sectors: [u64; MAX_MEMBERS],
    base: u64,
}

impl SliceWrite {
    /// The steps of the write of logical `[start, start + sectors)`, within
    /// one stripe of raid5 layout `g` at `place`, from a host request that
    /// starts at logical sector `base`, with the roles of `failed` gone, in
    /// a buffer of `buf_bytes`; as a reconstruct-write where `unsynced` (see
    /// [`write_unsynced_stripe`]). `None` where it is not one slice with
    /// every member in sync: [`write_stripe`] does those.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        g: &Geometry,
        place: Place,
        device_sectors: &[u64; MAX_MEMBERS],
        failed: Roles,
        base: u64,
        start: u64,
        sectors: u64,
        buf_bytes: usize,
        unsynced: bool,
    ) -> Option<SliceWrite> {
        if start.checked_add(sectors)? > g.capacity() {
            return None;
        }
        let mut s = StripeWrite::plan(g, start, sectors)?;
        let n = s.members();
        if failed.0 & Roles::first(n).0 != 0 || s.window_sectors > slice_sectors(buf_bytes, n) {
            return None;
        }
        if unsynced {
            s.mode = WriteMode::ReconstructWrite;
        }
        Some(SliceWrite::of_slice(g, s, place, device_sectors, base))
    }

    /// Whether a host write of logical `[start, start + sectors)` of `g` can
    /// be one slice write with a buffer of the longest slices: one stripe,
    /// its window no longer than [`SLICE_SECTORS`]. The kernel starts only
    /// such requests without a waiting task; it has longer ones written
    /// from the request's work item, stripe by stripe, rather than start
    /// some of their stripes, find no buffer for the next, and write the
    /// whole request again.
    pub fn fits(g: &Geometry, start: u64, sectors: u64) -> bool {
        let stripe = g.stripe_sectors();
        if sectors == 0 || stripe == 0 || start / stripe != (start + sectors - 1) / stripe {
            return false;
        }
        StripeWrite::plan(g, start, sectors).is_some_and(|s| s.window_sectors <= SLICE_SECTORS)
    }

    /// The steps of slice `s` (at `place`, from a host request that starts
    /// at logical sector `base`).
    fn of_slice(g: &Geometry, s: StripeWrite, place: Place, device_sectors: &[u64; MAX_MEMBERS], base: u64) -> SliceWrite {
        SliceWrite { g: *g, s, place, device_sectors: *device_sectors, base }
    }

    /// The bytes of one member's window in the buffer.
    fn window(&self) -> usize {
        (self.s.window_sectors << SECTOR_SHIFT) as usize
    }

    /// The transfer of `span` of member `member`, whose window starts at
    /// byte `window_at` of the buffer.
    fn transfer(&self, member: usize, span: Span, window_at: usize) -> Transfer {
        let first = (self.s.stripe << self.g.chunk_shift()) + self.s.window_start;
        Transfer {
            member,
            sector: self.place.sector(&self.g, &self.device_sectors, member, span.sector),
            at: window_at + ((span.sector - first) << SECTOR_SHIFT) as usize,
            len: (span.sectors << SECTOR_SHIFT) as usize,
        }
    }

    /// What to read into the buffer first (nothing for a full stripe).
    pub fn reads(&self) -> impl Iterator<Item = Transfer> + '_ {
        let w = self.window();
        self.s.reads().map(move |(m, span)| self.transfer(m, span, m * w))
    }

    /// What to write from the buffer once [`SliceWrite::compute`] is done:
    /// data (from the new windows, after the `n * w` bytes of the old) and
    /// parity, submitted together (they are ordered only by a later flush,
    /// as separate writes were).
    pub fn writes(&self) -> impl Iterator<Item = Transfer> + '_ {
        let (n, w, parity) = (self.s.members(), self.window(), self.s.parity_member);
        let data = (0..n)
            .filter(move |&m| m != parity)
            .filter_map(move |m| self.s.covered(m).map(|span| self.transfer(m, span, n * w + m * w)));
        Iterator::chain(data, core::iter::once(self.transfer(parity, self.s.parity_span(), parity * w)))
    }

    /// Bytes of buffer the steps use.
    pub fn buffer_bytes(&self) -> usize {
        2 * self.s.members() * self.window()
    }

    /// With the reads in `buf`: takes the new data from the host request
    /// and computes the new parity, read-modify-write or reconstruct-write
    /// as planned.
    pub fn compute<S: StripeIo>(&self, io: &mut S, buf: &mut [u8]) {
        let (g, s, n) = (&self.g, &self.s, self.s.members());
        let first = (s.stripe << g.chunk_shift()) + s.window_start;
        let w = self.window();
        let (cur, rest) = buf.split_at_mut(n * w);
        let new = &mut rest[..n * w];
        let range = |sector: u64, sectors: u64| {
            let a = ((sector - first) << SECTOR_SHIFT) as usize;
            a..a + (sectors << SECTOR_SHIFT) as usize
        };
        let parity = s.parity_member;
        // The new data, from the host request, in each member's window.
        for m in (0..n).filter(|&m| m != parity) {
            if let Some(span) = s.covered(m) {
                if let Content::Data { logical, .. } = g.content(m, span.sector) {
                    let r = range(span.sector, span.sectors);
                    io.host_data(logical - self.base, &mut new[m * w..][r]);
                }
            }
        }
        match s.mode {
            WriteMode::ReadModifyWrite => {
                for m in (0..n).filter(|&m| m != parity) {
                    if let Some(span) = s.covered(m) {
                        let r = range(span.sector, span.sectors);
                        let (p, old) = two_windows(cur, parity, m, w);
                        // parity ^= old ^ new.
                        io.xor_into(&mut p[r.clone()], &old[r.clone()]);
                        io.xor_into(&mut p[r.clone()], &new[m * w..][r]);
                    }
                }
            }
            WriteMode::ReconstructWrite => {
                // The written ranges take their new data, then parity is the
                // XOR of every data member's window.
                for m in (0..n).filter(|&m| m != parity) {
                    if let Some(span) = s.covered(m) {
                        let r = range(span.sector, span.sectors);
                        cur[m * w..][r.clone()].copy_from_slice(&new[m * w..][r]);
                    }
                }
                rebuild_window(io, cur, parity, w);
            }
        }
    }
}

/// Sets window `lost` of `cur` (windows of `w` bytes, one per member) to
/// the XOR of all the others.
fn rebuild_window<I: StripeIo + ?Sized>(io: &mut I, cur: &mut [u8], lost: usize, w: usize) {
    let (before, after) = cur.split_at_mut(lost * w);
    let (x, after) = after.split_at_mut(w);
    x.fill(0);
    for window in Iterator::chain(before.chunks(w), after.chunks(w)) {
        io.xor_into(x, window);
    }
}

/// Reads logical `[start, start + sectors)`, which lies within one chunk of
/// raid5 layout `g` at `place` whose member is in `failed`, into the host
/// request that starts at logical sector `base`: the XOR of the same
/// offsets of every other member of the stripe, slice by slice.
#[allow(clippy::too_many_arguments)]
pub fn read_reconstructed<S: StripeIo>(
    io: &mut S,
    g: &Geometry,
    place: Place,
    device_sectors: &[u64; MAX_MEMBERS],
    failed: Roles,
    base: u64,
    start: u64,
    sectors: u64,
    buf: &mut [u8],
) -> Result<(), Raid5Error> {
    let n = g.members();
    let chunk = g.chunk_sectors() as u64;
    if g.level() != Level::Raid5 || sectors == 0 || start % chunk + sectors > chunk || start + sectors > g.capacity() {
        return Err(Raid5Error::BadRange);
    }
    let slice = slice_sectors(buf.len(), n);
    if slice == 0 {
        return Err(Raid5Error::BufferTooSmall);
    }
    let lost = g.locate(start);
    if condition(g, failed) == Condition::Failed || !failed.contains(lost.member) {
        return Err(Raid5Error::Lost);
    }
    let at = |member: usize, sector: u64| place.sector(g, device_sectors, member, sector);
    let mut done = 0;
    while done < sectors {
        let len = (sectors - done).min(slice);
        let w = (len << SECTOR_SHIFT) as usize;
        let cur = &mut buf[..n * w];
        let mut reads = Ios::new();
        for m in (0..n).filter(|&m| m != lost.member) {
            reads.push(m, at(m, lost.sector + done), m * w, w);
        }
        reads.read(io, cur)?;
        rebuild_window(io, cur, lost.member, w);
        io.to_host(start + done - base, &cur[lost.member * w..][..w]);
        done += len;
    }
    Ok(())
}

/// Member `p`'s and member `m`'s windows of `cur` (`p != m`), the first
/// mutable.
fn two_windows(cur: &mut [u8], p: usize, m: usize, w: usize) -> (&mut [u8], &[u8]) {
    if p < m {
        let (lo, hi) = cur.split_at_mut(m * w);
        (&mut lo[p * w..][..w], &hi[..w])
    } else {
        let (lo, hi) = cur.split_at_mut(p * w);
        (&mut hi[..w], &lo[m * w..][..w])
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Level;
    use super::*;
    use std::collections::HashMap;
    use std::vec;
    use std::vec::Vec;

    /// Members as maps of sectors to one byte repeated.
    struct Mem {
        disks: Vec<HashMap<u64, u8>>,
        data: u8,
        read_back: HashMap<u64, u8>,
        /// Writes to this member fail.
        broken: Option<usize>,
    }

    impl StripeIo for Mem {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            for (i, c) in buf.chunks_mut(512).enumerate() {
                c.fill(*self.disks[member].get(&(sector + i as u64)).unwrap_or(&0));
            }
            Ok(())
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
            if self.broken == Some(member) {
                return Err(IoError { member, errno: -5 });
            }
            for (i, c) in buf.chunks(512).enumerate() {
                self.disks[member].insert(sector + i as u64, c[0]);
            }
            Ok(())
        }
        fn host_data(&mut self, offset: u64, buf: &mut [u8]) {
            for (i, c) in buf.chunks_mut(512).enumerate() {
                c.fill(self.data.wrapping_add((offset + i as u64) as u8));
            }
        }
        fn to_host(&mut self, offset: u64, buf: &[u8]) {
            for (i, c) in buf.chunks(512).enumerate() {
                self.read_back.insert(offset + i as u64, c[0]);
            }
        }
    }

    /// [`Mem`], recording how I/O reaches it: each batch, and each
    /// transfer made alone, with the members it went to.
    struct Batched<'a> {
        mem: &'a mut Mem,
        calls: Vec<(&'static str, Vec<usize>)>,
    }

    impl StripeIo for Batched<'_> {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            self.calls.push(("read", vec![member]));
            self.mem.read(member, sector, buf)
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
            self.calls.push(("write", vec![member]));
            self.mem.write(member, sector, buf)
        }
        fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
            self.calls.push(("read_all", batch.iter().map(|t| t.member).collect()));
            batch.iter().try_for_each(|t| self.mem.read(t.member, t.sector, &mut buf[t.at..t.at + t.len]))
        }
        fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
            self.calls.push(("write_all", batch.iter().map(|t| t.member).collect()));
            batch.iter().try_for_each(|t| self.mem.write(t.member, t.sector, &buf[t.at..t.at + t.len]))
        }
        fn host_data(&mut self, offset: u64, buf: &mut [u8]) {
            self.mem.host_data(offset, buf)
        }
        fn to_host(&mut self, offset: u64, buf: &[u8]) {
            self.mem.to_host(offset, buf)
        }
    }

    /// A slice's reads are submitted together, then its writes: two member
    /// latencies per slice whatever the member count, not one per transfer.
    #[test]
    fn a_slice_reads_together_then_writes_together() {
        let chunk = SLICE_SECTORS as u32;
        let g = Geometry::new(Level::Raid5, 3, chunk, chunk as u64 * 8).unwrap();
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut buf = vec![0u8; buffer_bytes(3)];
        let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 1, read_back: HashMap::new(), broken: None };
        let plan = StripeWrite::plan(&g, 0, 8).unwrap();
        let (parity, data) = (plan.parity_member, g.locate(0).member);
        let reads: Vec<usize> = plan.reads().map(|(m, _)| m).collect();
        assert!(!reads.is_empty());
        let mut io = Batched { mem: &mut mem, calls: Vec::new() };
        // A small write: what the plan reads (the rest of the window over 3
        // members), then one data member and parity written.
        write_stripe(&mut io, &g, Place::Direct, &dev, Roles::NONE, 0, 0, 8, &mut buf).unwrap();
        assert_eq!(io.calls, vec![("read_all", reads), ("write_all", vec![data, parity])]);
        // A full stripe: nothing read, data and parity written together.
        io.calls.clear();
        write_stripe(&mut io, &g, Place::Direct, &dev, Roles::NONE, 0, 0, g.stripe_sectors(), &mut buf).unwrap();
        let others: Vec<usize> = (0..3).filter(|&m| m != parity).collect();
        assert_eq!(io.calls, vec![("write_all", [others.clone(), vec![parity]].concat())]);
        // The other data member gone: the rest of the window read together,
        // data and the new parity written together.
        let gone = others.iter().copied().find(|&m| m != data).unwrap();
        io.calls.clear();
        write_stripe(&mut io, &g, Place::Direct, &dev, Roles::one(gone), 0, 0, 8, &mut buf).unwrap();
        let live: Vec<usize> = (0..3).filter(|&m| m != gone).collect();
        assert_eq!(io.calls, vec![("read_all", live.clone()), ("write_all", vec![data, parity])]);
        // A read of the data member gone: the others read together.
        io.calls.clear();
        let l = (0..g.stripe_sectors()).find(|&l| g.locate(l).member == gone).unwrap();
        read_reconstructed(&mut io, &g, Place::Direct, &dev, Roles::one(gone), l, l, 8, &mut buf).unwrap();
        let rest: Vec<usize> = (0..3).filter(|&m| m != gone).collect();
        assert_eq!(io.calls, vec![("read_all", rest)]);
    }

    /// A batch that fails is done again transfer by transfer, which names
    /// the member that fails: a write error fails that member only, and the
    /// stripe is left consistent without it.
    #[test]
    fn a_failed_batch_is_done_again_one_by_one() {
        let chunk = SLICE_SECTORS as u32;
        let g = Geometry::new(Level::Raid5, 3, chunk, chunk as u64 * 8).unwrap();
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut buf = vec![0u8; buffer_bytes(3)];
        let plan = StripeWrite::plan(&g, 0, 8).unwrap();
        let (parity, data) = (plan.parity_member, g.locate(0).member);
        let reads: Vec<usize> = plan.reads().map(|(m, _)| m).collect();
        let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 1, read_back: HashMap::new(), broken: Some(parity) };
        let mut io = Batched { mem: &mut mem, calls: Vec::new() };
        let r = write_stripe(&mut io, &g, Place::Direct, &dev, Roles::NONE, 0, 0, 8, &mut buf);
        assert_eq!(r, Err(Raid5Error::MemberFailed(IoError { member: parity, errno: -5 })));
        assert_eq!(
            io.calls,
            vec![
                ("read_all", reads),
                ("write_all", vec![data, parity]),
                ("write", vec![data]),
                ("write", vec![parity]),
            ]
        );
        assert_eq!(mem.disks[data].get(&0), Some(&1));
    }

    /// With buffers for the longest slices and for short ones (a chunk of
    /// 4 or 64 slices).
    #[test]
    fn parity_stays_consistent_for_every_write_shape() {
        for (members, slice) in [3, 4, 5].into_iter().flat_map(|m| [(m, SLICE_SECTORS), (m, 8)]) {
            // A chunk of four slices: writes cross slice boundaries.
            let chunk = 4 * SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 2).unwrap();
            let mut mem = Mem { disks: vec![HashMap::new(); members], data: 0, read_back: HashMap::new(), broken: None };
            let dev = [1u64 << 30; MAX_MEMBERS];
            let mut buf = vec![0u8; buffer_bytes_for(members, slice)];
            assert_eq!(slice_sectors(buf.len(), members), slice);
            let stripe = g.stripe_sectors();
            for (k, (start, len)) in
                [(0, 1), (5, 300), (0, stripe), (chunk as u64 - 3, 7), (stripe + 100, stripe - 200)]
                    .into_iter()
                    .enumerate()
            {
                mem.data = 17 * (k as u8 + 1);
                let mut at = start;
                while at < start + len {
                    let stop = ((at / stripe + 1) * stripe).min(start + len);
                    write_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, start, at, stop - at, &mut buf).unwrap();
                    at = stop;
                }
                // Every data sector written reads back; parity is the XOR.
                for l in start..start + len {
                    let loc = g.locate(l);
                    let want = mem.data.wrapping_add((l - start) as u8);
                    assert_eq!(mem.disks[loc.member].get(&loc.sector), Some(&want));
                }
                for row in 0..g.member_sectors() {
                    let x = (0..members).fold(0u8, |x, m| x ^ mem.disks[m].get(&row).unwrap_or(&0));
                    assert_eq!(x, 0, "row {row} after write {k} over {members}");
                }
            }
        }
    }

    /// The steps of a [`SliceWrite`], run one by one as the kernel runs
    /// them from bio completions (reads, then compute, then writes, with
    /// the buffer left alone in between), leave every member as
    /// [`write_stripe`] does; a write that needs two slices, or with a
    /// member of the stripe gone, is not planned as one.
    #[test]
    fn slice_write_steps_run_apart_write_what_write_stripe_writes() {
        for members in [3, 4, 5] {
            let chunk = 4 * SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 4).unwrap();
            let dev = [1u64 << 30; MAX_MEMBERS];
            let fresh = || Mem { disks: vec![HashMap::new(); members], data: 0, read_back: HashMap::new(), broken: None };
            let (mut by_steps, mut whole) = (fresh(), fresh());
            let stripe = g.stripe_sectors();
            let bytes = buffer_bytes(members);
            let mut shapes = 0;
            for (k, (start, len, unsynced)) in [
                (0, 1, false),
                (3, 8, false),
                (chunk as u64 + 100, 28, false),
                (stripe + 7, 100, true),
                (2 * stripe + 5, 60, false),
                (3 * stripe, 8, true),
            ]
            .into_iter()
            .enumerate()
            {
                by_steps.data = 31 * (k as u8 + 1);
                whole.data = by_steps.data;
                let job = SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, start, start, len, bytes, unsynced).unwrap();
                assert!(job.buffer_bytes() <= bytes);
                // A buffer left as a previous write left it: the steps must
                // not depend on its contents.
                let mut buf = vec![0xa5u8; bytes];
                for t in job.reads() {
                    by_steps.read(t.member, t.sector, &mut buf[t.at..t.at + t.len]).unwrap();
                }
                job.compute(&mut by_steps, &mut buf);
                for t in job.writes() {
                    by_steps.write(t.member, t.sector, &buf[t.at..t.at + t.len]).unwrap();
                }
                let mut buf = vec![0u8; bytes];
                let write = if unsynced { write_unsynced_stripe } else { write_stripe };
                write(&mut whole, &g, Place::Direct, &dev, Roles::NONE, start, start, len, &mut buf).unwrap();
                assert_eq!(by_steps.disks, whole.disks, "write {k} over {members}");
                for l in start..start + len {
                    let loc = g.locate(l);
                    assert_eq!(by_steps.disks[loc.member].get(&loc.sector), Some(&by_steps.data.wrapping_add((l - start) as u8)));
                }
                shapes += 1;
            }
            assert_eq!(shapes, 6);
            // Two slices (a window wider than SLICE_SECTORS, also that of
            // a write across two chunks' boundary), a member gone, past the
            // end: not one slice write.
            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, 0, 0, SLICE_SECTORS + 1, bytes, false).is_none());
            let across = chunk as u64 - 4;
            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, across, across, 8, bytes, false).is_none());
            let small = buffer_bytes_for(members, 8);
            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, 0, 0, 9, small, false).is_none());
            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, 0, 0, 8, small, false).is_some());
            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles(1 << 1), 0, 0, 8, bytes, false).is_none());
            // What `fits` admits is planned with the longest slices.
            for (start, len) in [(0, 8), (3, 125), (chunk as u64 + 100, 28), (0, stripe), (across, 8), (stripe - 4, 8), (0, 129)] {
                let one_stripe = start / stripe == (start + len - 1) / stripe;
                let planned = one_stripe
                    && SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, start, start, len, bytes, false).is_some();
                assert_eq!(SliceWrite::fits(&g, start, len), planned, "{start}+{len} over {members}");
            }
            assert!(SliceWrite::fits(&g, 0, 8) && !SliceWrite::fits(&g, stripe - 4, 8) && !SliceWrite::fits(&g, 0, 0));

            assert!(SliceWrite::plan(&g, Place::Direct, &dev, Roles::NONE, 0, g.capacity() - 4, 8, bytes, false).is_none());
        }
    }

    /// A stripe whose parity does not match its data (a write cut by a
    /// crash, not yet resynced): a small write there, then its member lost.
    /// Written as unsynced, it reads back; a read-modify-write would have
    /// kept the mismatch in the new parity.
    #[test]
    fn a_write_where_parity_is_stale_survives_the_loss_of_its_member() {
        for members in [3, 4, 5] {
            let chunk = SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 4).unwrap();
            let dev = [1u64 << 30; MAX_MEMBERS];
            let mut buf = vec![0u8; buffer_bytes(members)];
            let mut mem = Mem { disks: vec![HashMap::new(); members], data: 0, read_back: HashMap::new(), broken: None };
            // Old data everywhere, consistent parity, then the parity of row 0
            // made stale (as if a write to another member was cut).
            mem.data = 9;
            write_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, 0, 0, g.stripe_sectors(), &mut buf).unwrap();
            let parity = StripeWrite::plan(&g, 0, 1).unwrap().parity_member;
            let stale = mem.disks[parity][&0] ^ 0x77;
            mem.disks[parity].insert(0, stale);
            // A one-sector write to logical sector 0.
            mem.data = 200;
            write_unsynced_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, 0, 0, 1, &mut buf).unwrap();
            let lost = g.locate(0).member;
            mem.read_back.clear();
            read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one(lost), 0, 0, 1, &mut buf).unwrap();
            assert_eq!(mem.read_back.get(&0), Some(&200), "over {members}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let g = Geometry::new(Level::Raid5, 3, 8, 64).unwrap();
        let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 0, read_back: HashMap::new(), broken: None };
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut small = vec![0u8; buffer_bytes_for(3, 1) - 1];
        assert_eq!(slice_sectors(small.len(), 3), 0);
        assert_eq!(
            write_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, 0, 0, 4, &mut small),
            Err(Raid5Error::BufferTooSmall)
        );
        let r0 = Geometry::new(Level::Raid0, 3, 8, 64).unwrap();
        let mut buf = vec![0u8; buffer_bytes(3)];
        assert_eq!(write_stripe(&mut mem, &r0, Place::Direct, &dev, Roles::NONE, 0, 0, 4, &mut buf), Err(Raid5Error::BadRange));
    }

    /// Degraded: with any one member failed, writes of every shape keep
    /// what the survivors hold consistent, and every logical sector reads
    /// back (from its member, or reconstructed) as last written; with
    /// buffers for the longest slices and for short ones.
    #[test]
    fn degraded_writes_and_reads_keep_every_sector() {
        for (members, slice) in [3, 4, 5].into_iter().flat_map(|m| [(m, SLICE_SECTORS), (m, 8)]) {
            let chunk = 2 * SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 3).unwrap();
            let dev = [1u64 << 30; MAX_MEMBERS];
            let mut buf = vec![0u8; buffer_bytes_for(members, slice)];
            let stripe = g.stripe_sectors();
            let chunk = chunk as u64;
            for lost in 0..members {
                let mut mem = Mem { disks: vec![HashMap::new(); members], data: 0, read_back: HashMap::new(), broken: None };
                // What the host last wrote, by logical sector.
                let mut want: HashMap<u64, u8> = HashMap::new();
                let writes = [(0, stripe), (5, 300), (chunk - 3, 7), (stripe + 100, stripe - 200), (2 * stripe, 1)];
                for (k, (start, len)) in writes.into_iter().enumerate() {
                    // The member fails after the first write (which found
                    // every member in sync).
                    let failed = if k == 0 { Roles::NONE } else { Roles::one(lost) };
                    if k == 1 {
                        // What a failed disk holds no longer matters.
                        mem.disks[lost].clear();
                    }
                    mem.data = 31 * (k as u8 + 1);
                    let mut at = start;
                    while at < start + len {
                        let stop = ((at / stripe + 1) * stripe).min(start + len);
                        write_stripe(&mut mem, &g, Place::Direct, &dev, failed, start, at, stop - at, &mut buf).unwrap();
                        at = stop;
                    }
                    for l in start..start + len {
                        want.insert(l, mem.data.wrapping_add((l - start) as u8));
                    }
                }
                for (&l, &v) in &want {
                    let loc = g.locate(l);
                    if loc.member != lost {
                        assert_eq!(mem.disks[loc.member].get(&loc.sector), Some(&v), "sector {l}");
                        continue;
                    }
                    mem.read_back.clear();
                    read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one(lost), l, l, 1, &mut buf)
                        .unwrap();
                    assert_eq!(mem.read_back.get(&0), Some(&v), "sector {l} of lost member {lost} over {members}");
                }
                // Whole-chunk reconstruction too.
                let c = (0..g.capacity() / chunk).find(|c| g.locate(c * chunk).member == lost).unwrap();
                mem.read_back.clear();
                read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one(lost), c * chunk, c * chunk, chunk, &mut buf)
                    .unwrap();
                for i in 0..chunk {
                    let v = want.get(&(c * chunk + i)).copied().unwrap_or(0);
                    assert_eq!(mem.read_back.get(&i), Some(&v));
                }
            }
        }
    }

    #[test]
    fn degraded_refusals() {
        let g = Geometry::new(Level::Raid5, 3, 8, 64).unwrap();
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 0, read_back: HashMap::new(), broken: None };
        let mut buf = vec![0u8; buffer_bytes(3)];
        let two = Roles::one(0).with(1);
        assert_eq!(write_stripe(&mut mem, &g, Place::Direct, &dev, two, 0, 0, 4, &mut buf), Err(Raid5Error::Lost));
        let home = g.locate(0).member;
        assert_eq!(
            read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one((home + 1) % 3), 0, 0, 4, &mut buf),
            Err(Raid5Error::Lost)
        );
        assert_eq!(
            read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one(home), 0, 4, 8, &mut buf),
            Err(Raid5Error::BadRange)
        );
    }

    /// A member whose write fails half-way through a stripe write: the
    /// stripe is written whole without it, and every sector of that member,
    /// written or not, reconstructs as it should (new data where written,
    /// the old elsewhere).
    #[test]
    fn a_member_failing_during_a_write_leaves_the_stripe_consistent() {
        let g = Geometry::new(Level::Raid5, 3, 16, 16 * 4).unwrap();
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut buf = vec![0u8; buffer_bytes(3)];
        for victim in 0..3 {
            let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 40, read_back: HashMap::new(), broken: None };
            // Old contents: the whole stripe 0 written (logical 0..32).
            write_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, 0, 0, 32, &mut buf).unwrap();
            let old: Vec<u8> = (0..32).map(|l| 40u8.wrapping_add(l as u8)).collect();
            // New data over logical 8..24: the second half of chunk 0 and
            // the first half of chunk 1, each member covered in part.
            mem.data = 90;
            mem.broken = Some(victim);
            let r = write_stripe(&mut mem, &g, Place::Direct, &dev, Roles::NONE, 8, 8, 16, &mut buf);
            assert_eq!(r, Err(Raid5Error::MemberFailed(IoError { member: victim, errno: -5 })), "victim {victim}");
            mem.broken = None;
            for l in 0..32u64 {
                let want = if (8..24).contains(&l) { 90u8.wrapping_add((l - 8) as u8) } else { old[l as usize] };
                let loc = g.locate(l);
                let got = if loc.member == victim {
                    mem.read_back.clear();
                    read_reconstructed(&mut mem, &g, Place::Direct, &dev, Roles::one(victim), l, l, 1, &mut buf).unwrap();
                    mem.read_back[&0]
                } else {
                    mem.disks[loc.member][&loc.sector]
                };
                assert_eq!(got, want, "victim {victim}, sector {l}");
            }
        }
    }
}
