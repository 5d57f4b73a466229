//! raid5 host writes, one stripe at a time: read what the stripe's plan
//! ([`StripeWrite`]) needs, compute the new parity, write data and parity.
//!
//! Keeps invariant 8 of the theory (see the crate documentation): the kernel
//! and the simulator run this very code over their own member I/O.
//!
//! A stripe is written in slices of at most [`SLICE_SECTORS`] of chunk
//! offset (parity at an offset depends only on the data at that offset), so
//! a write needs one buffer of [`buffer_bytes`], whatever the chunk size: the
//! kernel allocates a few such buffers when the array is loaded and never
//! allocates on the write path, so writes make progress under memory
//! pressure (swap on the volume included). The caller excludes other writes
//! to the same stripe while one runs (two read-modify-writes would otherwise
//! both start from the old parity).

use super::engine::IoError;
use super::hostio::Place;
use super::health::{condition, Condition, Roles};
use super::layout::{Content, Geometry, Level, MAX_MEMBERS, SECTOR_SHIFT};
use super::parity::{xor_into, StripeWrite, WriteMode};

/// Chunk offset covered by one slice of a stripe write, in sectors (64 KiB).
pub const SLICE_SECTORS: u64 = 128;

/// Bytes of buffer a stripe write over `members` members needs: the old
/// contents and the new data of one slice of every member.
pub const fn buffer_bytes(members: usize) -> usize {
    2 * members * ((SLICE_SECTORS as usize) << SECTOR_SHIFT)
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
}

/// Why a stripe write did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raid5Error {
    /// A member I/O failed.
    Io(IoError),
    /// The buffer is smaller than [`buffer_bytes`].
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
    let plan = StripeWrite::plan(g, start, sectors).ok_or(Raid5Error::BadRange)?;
    let n = plan.members();
    if buf.len() < buffer_bytes(n) {
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
        let to = (from + SLICE_SECTORS).min(end);
        let Some(s) = plan.slice(from, to) else { break };
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

    /// Writes `data` at `sector` of `member`; the first failure is kept in
    /// `failed_write` and the next ones are fatal.
    fn write<S: StripeIo>(
        &self,
        io: &mut S,
        member: usize,
        sector: u64,
        data: &[u8],
        failed_write: &mut Option<IoError>,
    ) -> Result<(), SliceError> {
        match io.write(member, self.at(member, sector), data) {
            Ok(()) => Ok(()),
            Err(e) if failed_write.is_none() => {
                *failed_write = Some(e);
                Ok(())
            }
            Err(e) => Err(SliceError::Second(e)),
        }
    }

    /// A slice with every member in sync: read-modify-write or
    /// reconstruct-write, as the plan chose.
    fn normal_slice<S: StripeIo>(&self, io: &mut S, s: &StripeWrite, buf: &mut [u8]) -> Result<(), SliceError> {
        let (g, n) = (self.g, s.members());
        let row = self.plan.stripe << g.chunk_shift();
        let w = (s.window_sectors << SECTOR_SHIFT) as usize;
        let (cur, rest) = buf.split_at_mut(n * w);
        let new = &mut rest[..n * w];
        let first = row + s.window_start;
        let range = |sector: u64, sectors: u64| {
            let a = ((sector - first) << SECTOR_SHIFT) as usize;
            a..a + (sectors << SECTOR_SHIFT) as usize
        };
        for (m, span) in s.reads() {
            let r = range(span.sector, span.sectors);
            io.read(m, self.at(m, span.sector), &mut cur[m * w..][r]).map_err(SliceError::Read)?;
        }
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
        let mut failed_write = None;
        for m in (0..n).filter(|&m| m != parity) {
            if let Some(span) = s.covered(m) {
                self.write(io, m, span.sector, &new[m * w..][range(span.sector, span.sectors)], &mut failed_write)?;
            }
        }
        self.write(io, parity, first, &cur[parity * w..][..w], &mut failed_write)?;
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
            for m in (0..n).filter(|&m| m != lost) {
                io.read(m, self.at(m, first), &mut cur[m * w..][..w]).map_err(SliceError::Read)?;
            }
            rebuild_window(io, cur, lost, w);
        }
        for m in (0..n).filter(|&m| m != parity) {
            if let Some(span) = s.covered(m) {
                if let Content::Data { logical, .. } = g.content(m, span.sector) {
                    io.host_data(logical - self.base, &mut cur[m * w..][range(span.sector, span.sectors)]);
                }
            }
        }
        // Any write error here is a second member gone.
        let mut failed_write = Some(IoError { member: lost, errno: 0 });
        for m in (0..n).filter(|&m| m != parity && m != lost) {
            if let Some(span) = s.covered(m) {
                self.write(io, m, span.sector, &cur[m * w..][range(span.sector, span.sectors)], &mut failed_write)?;
            }
        }
        if lost != parity {
            rebuild_window(io, cur, parity, w);
            self.write(io, parity, first, &cur[parity * w..][..w], &mut failed_write)?;
        }
        Ok(())
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
    if buf.len() < buffer_bytes(n) {
        return Err(Raid5Error::BufferTooSmall);
    }
    let lost = g.locate(start);
    if condition(g, failed) == Condition::Failed || !failed.contains(lost.member) {
        return Err(Raid5Error::Lost);
    }
    let at = |member: usize, sector: u64| place.sector(g, device_sectors, member, sector);
    let mut done = 0;
    while done < sectors {
        let len = (sectors - done).min(SLICE_SECTORS);
        let w = (len << SECTOR_SHIFT) as usize;
        let cur = &mut buf[..n * w];
        for m in (0..n).filter(|&m| m != lost.member) {
            io.read(m, at(m, lost.sector + done), &mut cur[m * w..][..w])?;
        }
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

    #[test]
    fn parity_stays_consistent_for_every_write_shape() {
        for members in [3, 4, 5] {
            // A chunk of four slices: writes cross slice boundaries.
            let chunk = 4 * SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 2).unwrap();
            let mut mem = Mem { disks: vec![HashMap::new(); members], data: 0, read_back: HashMap::new(), broken: None };
            let dev = [1u64 << 30; MAX_MEMBERS];
            let mut buf = vec![0u8; buffer_bytes(members)];
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

    #[test]
    fn refuses_what_it_cannot_do() {
        let g = Geometry::new(Level::Raid5, 3, 8, 64).unwrap();
        let mut mem = Mem { disks: vec![HashMap::new(); 3], data: 0, read_back: HashMap::new(), broken: None };
        let dev = [1u64 << 30; MAX_MEMBERS];
        let mut small = vec![0u8; buffer_bytes(3) - 512];
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
    /// back (from its member, or reconstructed) as last written.
    #[test]
    fn degraded_writes_and_reads_keep_every_sector() {
        for members in [3, 4, 5] {
            let chunk = 2 * SLICE_SECTORS as u32;
            let g = Geometry::new(Level::Raid5, members, chunk, chunk as u64 * 3).unwrap();
            let dev = [1u64 << 30; MAX_MEMBERS];
            let mut buf = vec![0u8; buffer_bytes(members)];
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
