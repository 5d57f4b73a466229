//! Scrubbing (md's `check` and `repair`): every stripe of an array in sync
//! is read, window after window; copies that differ from the copy reads
//! take ([`Geometry::read_copy`]), or parity that differs from the XOR of
//! the data, are counted (`mismatch_cnt`, in 512-byte sectors by 4 KiB
//! block as md counts) and, when repairing, rewritten from that copy or the
//! data. A repair (and the resync, which is one) thus never changes what a
//! read returns: copies a power cut left unequal, wherever they lie,
//! converge on what the host was reading.
//!
//! Keeps invariant 9 of the theory (see the crate documentation): a scrub
//! runs only while every role is in sync, and host writes keep out of the
//! window being scrubbed through the gate's repair window, so a copy or
//! parity is compared and rewritten only while nothing else writes it.

use super::engine::{IoError, MemberIo, Transfer};
use super::layout::{Content, Geometry, Level, MAX_MEMBERS, READ_REGION_SHIFT, SECTOR_SHIFT};

/// Sectors of a raid1 read region (see [`Geometry::read_copy`]).
const READ_REGION_SECTORS: u64 = 1 << READ_REGION_SHIFT;

/// Logical data per scrub window, in sectors (1 MiB), rounded up to whole
/// stripes.
pub const WINDOW_SECTORS: u64 = 2048;

/// Bytes compared at once: a mismatch counts this block's sectors.
const BLOCK_BYTES: usize = 4096;

/// What a scrub does about a mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubMode {
    /// Count it.
    Check,
    /// Count it and rewrite the copy or parity.
    Repair,
}

/// Why a window cannot be scrubbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubError {
    /// A member I/O failed.
    Io(IoError),
    /// The buffer cannot hold a 4 KiB block of every member and a scratch
    /// block.
    BufferTooSmall,
    /// The level has nothing to compare (single, raid0).
    NoRedundancy,
}

impl From<IoError> for ScrubError {
    fn from(e: IoError) -> ScrubError {
        ScrubError::Io(e)
    }
}

/// A scrub under way; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scrubber {
    g: Geometry,
    mode: ScrubMode,
    done: u64,
    end: u64,
    mismatches: u64,
}

impl Scrubber {
    /// A scrub of layout `g` from the start; `None` for a level without
    /// redundancy.
    pub fn new(g: Geometry, mode: ScrubMode) -> Option<Scrubber> {
        Scrubber::range(g, mode, 0, g.capacity())
    }

    /// A scrub of logical `[start, end)` only (a resync of a dirty bitmap
    /// region), widened to whole stripes.
    pub fn range(g: Geometry, mode: ScrubMode, start: u64, end: u64) -> Option<Scrubber> {
        let stripe = g.stripe_sectors().max(1);
        let cap = g.capacity();
        let (start, end) = ((start / stripe) * stripe, end.div_ceil(stripe).saturating_mul(stripe).min(cap));
        matches!(g.level(), Level::Raid1 | Level::Raid5 | Level::Raid10).then_some(Scrubber {
            g,
            mode,
            done: start.min(end),
            end,
            mismatches: 0,
        })
    }

    /// Check or repair.
    pub fn mode(&self) -> ScrubMode {
        self.mode
    }

    /// Logical sectors scrubbed.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Sectors found mismatched (md's `mismatch_cnt`).
    pub fn mismatches(&self) -> u64 {
        self.mismatches
    }

    /// Whether every stripe is scrubbed.
    pub fn finished(&self) -> bool {
        self.done >= self.end
    }

    /// The next window, `[start, end)` logical, whole stripes.
    pub fn next_window(&self) -> Option<(u64, u64)> {
        let cap = self.end;
        if self.done >= cap {
            return None;
        }
        let stripe = self.g.stripe_sectors().max(1);
        let len = WINDOW_SECTORS.div_ceil(stripe) * stripe;
        Some((self.done, self.done.saturating_add(len).min(cap)))
    }

    /// Scrubs the next window and returns it.
    ///
    /// The window's member range is read in steps that `buf` holds: each
    /// step reads the same member sectors of every member in one batch
    /// (the kernel submits them together), compares them piece by piece
    /// (a piece lies in one chunk and, on raid1, one read region), and
    /// writes what a repair rewrites in one batch before the next step's
    /// reads. `buf` holds a scratch slice (the XOR of raid5 data, or a
    /// raid10 copy that lies past the step, read on its own) and one slice
    /// per member.
    pub fn scrub_window<I: MemberIo>(&mut self, io: &mut I, buf: &mut [u8]) -> Result<(u64, u64), ScrubError> {
        let Some((start, end)) = self.next_window() else { return Ok((self.done, self.done)) };
        let g = self.g;
        let stripe = g.stripe_sectors().max(1);
        let rows = g.stripe_rows();
        let shift = g.chunk_shift();
        let m0 = ((start / stripe) * rows) << shift;
        let m1 = ((end.div_ceil(stripe) * rows).min(g.rows())) << shift;
        let n = g.members();
        if !matches!(g.level(), Level::Raid1 | Level::Raid5 | Level::Raid10) {
            return Err(ScrubError::NoRedundancy);
        }
        // Sectors per slice, whole 4 KiB blocks.
        let per = (((buf.len() >> SECTOR_SHIFT) / (n + 1)) as u64) & !7;
        if per == 0 {
            return Err(ScrubError::BufferTooSmall);
        }
        let chunk = g.chunk_sectors() as u64;
        let mut x = m0;
        while x < m1 {
            let len = per.min(m1 - x);
            let mut step = Step { x, len, per, writes: Writes { batch: [Transfer::default(); WRITES], len: 0 } };
            let mut batch = [Transfer::default(); MAX_MEMBERS];
            for (m, t) in batch.iter_mut().enumerate().take(n) {
                *t = Transfer { member: m, sector: x, at: step.at(m, x), len: (len << SECTOR_SHIFT) as usize };
            }
            io.read_all(buf, &batch[..n])?;
            let mut y = x;
            while y < x + len {
                let mut plen = (x + len - y).min(chunk - y % chunk);
                if g.level() == Level::Raid1 {
                    // Member sector is logical sector: one read region at a time.
                    plen = plen.min(READ_REGION_SECTORS - y % READ_REGION_SECTORS);
                }
                if g.level() == Level::Raid5 {
                    self.parity_piece(io, &mut step, (y, plen), buf)?;
                } else {
                    self.copies_piece(io, &mut step, (y, plen), buf)?;
                }
                y += plen;
            }
            step.writes.flush(io, buf)?;
            x += len;
        }
        self.done = end;
        Ok((start, end))
    }

    /// raid5: parity at member sectors `[y, y + len)` against the XOR of
    /// the data, all in the step's slices.
    fn parity_piece<I: MemberIo>(&mut self, io: &mut I, step: &mut Step, (y, len): (u64, u64), buf: &mut [u8]) -> Result<(), ScrubError> {
        let n = self.g.members();
        let Some(p) = (0..n).find(|&m| matches!(self.g.content(m, y), Content::Parity { .. })) else { return Ok(()) };
        let bytes = (len << SECTOR_SHIFT) as usize;
        let (scratch, slices) = buf.split_at_mut(step.scratch_bytes());
        let want = &mut scratch[..bytes];
        want.fill(0);
        let base = step.scratch_bytes();
        for m in (0..n).filter(|&m| m != p) {
            let at = step.at(m, y) - base;
            io.xor_into(want, &slices[at..at + bytes]);
        }
        let at = step.at(p, y) - base;
        if self.count(want, &slices[at..at + bytes]) && self.mode == ScrubMode::Repair {
            slices[at..at + bytes].copy_from_slice(want);
            step.writes.push(io, buf, Transfer { member: p, sector: y, at: at + base, len: bytes })?;
        }
        Ok(())
    }

    /// raid1 and raid10: the data whose first copy is at member sectors
    /// `[y, y + len)` of some member: every copy against the one reads
    /// take (the piece lies in one chunk and, on raid1, one read region, so
    /// that copy is the same over it). A copy outside the step (raid10 over
    /// an odd number of members puts one on the next row) is read into the
    /// scratch slice and, when repaired, written at once. The piece's copy
    /// 0 is in the step, so with raid10's two copies at most one is outside
    /// (raid1's copies all lie at the same sector).
    fn copies_piece<I: MemberIo>(&mut self, io: &mut I, step: &mut Step, (y, len): (u64, u64), buf: &mut [u8]) -> Result<(), ScrubError> {
        let n = self.g.members();
        let bytes = (len << SECTOR_SHIFT) as usize;
        for m in 0..n {
            let Content::Data { logical, copy: 0 } = self.g.content(m, y) else { continue };
            let reference = self.g.read_copy(logical);
            let r = self.g.locate_copy(logical, reference);
            // Where the reference is: its slice, or the scratch slice.
            let r_inside = step.holds(r.sector, len);
            let r_at = if r_inside {
                step.at(r.member, r.sector)
            } else {
                io.read(r.member, r.sector, &mut buf[..bytes])?;
                0
            };
            for c in (0..self.g.copies()).filter(|&c| c != reference) {
                let l = self.g.locate_copy(logical, c);
                let inside = step.holds(l.sector, len);
                let l_at = if inside {
                    step.at(l.member, l.sector)
                } else if r_inside {
                    io.read(l.member, l.sector, &mut buf[..bytes])?;
                    0
                } else {
                    // Two copies outside the step: no layout has them (see
                    // above), and the scratch slice holds one.
                    return Err(ScrubError::BufferTooSmall);
                };
                if self.count(&buf[r_at..r_at + bytes], &buf[l_at..l_at + bytes]) && self.mode == ScrubMode::Repair {
                    if inside {
                        buf.copy_within(r_at..r_at + bytes, l_at);
                        step.writes.push(io, buf, Transfer { member: l.member, sector: l.sector, at: l_at, len: bytes })?;
                    } else {
                        io.write(l.member, l.sector, &buf[r_at..r_at + bytes])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts the 4 KiB blocks where `a` and `b` differ; whether any does.
    fn count(&mut self, a: &[u8], b: &[u8]) -> bool {
        let differ = a.chunks(BLOCK_BYTES).zip(b.chunks(BLOCK_BYTES)).filter(|(x, y)| x != y).count() as u64;
        self.mismatches += differ * (BLOCK_BYTES as u64 >> SECTOR_SHIFT);
        differ > 0
    }
}

/// One step of a window: member sectors `[x, x + len)` of every member,
/// member `m`'s at sector `(1 + m) * per` of the buffer, after the
/// scratch slice, and the rewrites of a repair waiting to be written.
struct Step {
    x: u64,
    len: u64,
    per: u64,
    writes: Writes,
}

impl Step {
    /// Bytes of the scratch slice.
    fn scratch_bytes(&self) -> usize {
        (self.per << SECTOR_SHIFT) as usize
    }

    /// Where member sector `sector` of `member` is in the buffer.
    fn at(&self, member: usize, sector: u64) -> usize {
        (((1 + member as u64) * self.per + (sector - self.x)) << SECTOR_SHIFT) as usize
    }

    /// Whether member sectors `[sector, sector + len)` are in the step.
    fn holds(&self, sector: u64, len: u64) -> bool {
        sector >= self.x && sector + len <= self.x + self.len
    }
}

/// Rewrites a step holds back, written together.
const WRITES: usize = 16;

/// A repair's rewrites of a step, from the step's slices: written in one
/// batch when the step ends (or when [`WRITES`] are waiting).
struct Writes {
    batch: [Transfer; WRITES],
    len: usize,
}

impl Writes {
    fn push<I: MemberIo>(&mut self, io: &mut I, buf: &[u8], t: Transfer) -> Result<(), IoError> {
        if self.len == WRITES {
            self.flush(io, buf)?;
        }
        self.batch[self.len] = t;
        self.len += 1;
        Ok(())
    }

    fn flush<I: MemberIo>(&mut self, io: &mut I, buf: &[u8]) -> Result<(), IoError> {
        let n = core::mem::take(&mut self.len);
        if n > 0 {
            io.write_all(buf, &self.batch[..n])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::route::View;
    use super::*;
    use super::super::parity::xor_into;
    use std::vec;
    use std::vec::Vec;

    struct Disks {
        data: Vec<Vec<u8>>,
        writes: usize,
    }

    impl MemberIo for Disks {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            let at = (sector << SECTOR_SHIFT) as usize;
            buf.copy_from_slice(&self.data[member][at..at + buf.len()]);
            Ok(())
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
            self.writes += 1;
            let at = (sector << SECTOR_SHIFT) as usize;
            self.data[member][at..at + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), IoError> {
            Ok(())
        }
        fn publish(&mut self, _view: &View) {}
        fn checkpoint_requested(&mut self) -> bool {
            false
        }
    }

    /// A consistent array of `g`: every copy equal, parity the XOR.
    fn consistent(g: &Geometry) -> Vec<Vec<u8>> {
        let n = g.members();
        let bytes = (g.member_sectors() << SECTOR_SHIFT) as usize;
        let mut data = vec![vec![0u8; bytes]; n];
        for l in 0..g.capacity() {
            for c in 0..g.copies() {
                let loc = g.locate_copy(l, c);
                let at = (loc.sector << SECTOR_SHIFT) as usize;
                data[loc.member][at..at + 512].fill((l * 7 + 3) as u8);
            }
        }
        if g.level() == Level::Raid5 {
            for row in 0..g.member_sectors() {
                let p = g.parity_member(row >> g.chunk_shift()).unwrap();
                let at = (row << SECTOR_SHIFT) as usize;
                let mut v = [0u8; 512];
                for m in (0..n).filter(|&m| m != p) {
                    xor_into(&mut v, &data[m][at..at + 512]);
                }
                data[p][at..at + 512].copy_from_slice(&v);
            }
        }
        data
    }

    fn run(s: &mut Scrubber, disks: &mut Disks) {
        run_with(s, disks, 8192 * 6);
    }

    fn run_with(s: &mut Scrubber, disks: &mut Disks, buf_bytes: usize) {
        let mut buf = vec![0u8; buf_bytes];
        while !s.finished() {
            s.scrub_window(disks, &mut buf).unwrap();
        }
    }

    #[test]
    fn every_buffer_size_finds_and_repairs_the_same() {
        // From one 4 KiB block per slice (steps cut every chunk, and a
        // raid10 copy on the next row lies outside its step) to whole
        // windows in one step.
        for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 3), (Level::Raid5, 5), (Level::Raid10, 3), (Level::Raid10, 4)] {
            let g = Geometry::new(level, n, 16, 16 * 40).unwrap();
            let good = consistent(&g);
            let mut bad = good.clone();
            // Damage one block in each of a few rows on every member; skip
            // the copies reads take (they are the reference).
            let mut damaged = 0;
            for (i, row) in [0u64, 1, 7, 8, 15, 16, 31].iter().enumerate() {
                let victim = i % n;
                let sector = row * 16 + 8;
                if let Content::Data { logical, copy } = g.content(victim, sector) {
                    if g.copies() > 1 && copy == g.read_copy(logical) {
                        continue;
                    }
                }
                bad[victim][(sector << SECTOR_SHIFT) as usize] ^= 0x5a;
                damaged += 8;
            }
            assert!(damaged > 0);
            for blocks in [1, 2, 3, 5, 64] {
                let bytes = (n + 1) * 4096 * blocks;
                let mut disks = Disks { data: bad.clone(), writes: 0 };
                let mut s = Scrubber::new(g, ScrubMode::Check).unwrap();
                run_with(&mut s, &mut disks, bytes);
                assert_eq!((s.mismatches(), disks.writes), (damaged, 0), "{level:?}/{n} check, {blocks} blocks");
                let mut s = Scrubber::new(g, ScrubMode::Repair).unwrap();
                run_with(&mut s, &mut disks, bytes);
                assert_eq!(s.mismatches(), damaged, "{level:?}/{n} repair, {blocks} blocks");
                let mut again = Scrubber::new(g, ScrubMode::Check).unwrap();
                run_with(&mut again, &mut disks, bytes);
                assert_eq!(again.mismatches(), 0, "{level:?}/{n}: repaired, {blocks} blocks");
                if level != Level::Raid5 {
                    assert_eq!(disks.data, good, "{level:?}/{n}: copies repaired to the reference, {blocks} blocks");
                }
            }
            let mut s = Scrubber::new(g, ScrubMode::Check).unwrap();
            let mut tiny = vec![0u8; (n + 1) * 4096 - 512];
            assert_eq!(s.scrub_window(&mut Disks { data: good.clone(), writes: 0 }, &mut tiny), Err(ScrubError::BufferTooSmall));
        }
    }

    #[test]
    fn check_counts_and_repair_fixes_every_damage() {
        for (level, n) in [(Level::Raid1, 2), (Level::Raid1, 3), (Level::Raid5, 3), (Level::Raid5, 4), (Level::Raid10, 4), (Level::Raid10, 3)] {
            let g = Geometry::new(level, n, 16, 16 * 40).unwrap();
            let good = consistent(&g);
            // A clean array: nothing found, nothing written.
            let mut disks = Disks { data: good.clone(), writes: 0 };
            let mut s = Scrubber::new(g, ScrubMode::Repair).unwrap();
            run(&mut s, &mut disks);
            assert_eq!((s.mismatches(), disks.writes), (0, 0), "{level:?}/{n}");
            // Damage two 4 KiB blocks on different members (not the copy
            // reads take of raid1/raid10 data: it is the reference).
            for member in 0..n {
                let mut bad = good.clone();
                let victim = (member + 1) % n;
                let sector = 8 * 16 + 8;
                if let Content::Data { logical, copy } = g.content(victim, sector) {
                    if g.copies() > 1 && copy == g.read_copy(logical) {
                        continue;
                    }
                }
                bad[victim][(sector << SECTOR_SHIFT) as usize] ^= 0xff;
                let mut disks = Disks { data: bad.clone(), writes: 0 };
                let mut s = Scrubber::new(g, ScrubMode::Check).unwrap();
                run(&mut s, &mut disks);
                assert_eq!(s.mismatches(), 8, "{level:?}/{n} damage on {victim}");
                assert_eq!(disks.writes, 0, "check writes nothing");
                let mut s = Scrubber::new(g, ScrubMode::Repair).unwrap();
                run(&mut s, &mut disks);
                assert_eq!(s.mismatches(), 8);
                // Consistent again: a check finds nothing. Copies come from
                // the copy reads take, raid5 parity from the data (as md: a
                // damaged data block stays as it is, its parity follows).
                let mut again = Scrubber::new(g, ScrubMode::Check).unwrap();
                run(&mut again, &mut disks);
                assert_eq!(again.mismatches(), 0, "{level:?}/{n}: repaired");
                let parity_hit = matches!(g.content(victim, sector), Content::Parity { .. });
                if level != Level::Raid5 || parity_hit {
                    assert_eq!(disks.data, good, "{level:?}/{n}: repaired to the reference");
                }
            }
        }
        assert!(Scrubber::new(Geometry::new(Level::Raid0, 2, 16, 160).unwrap(), ScrubMode::Check).is_none());
    }

    #[test]
    fn a_range_covers_its_whole_stripes_only() {
        let g = Geometry::new(Level::Raid5, 4, 16, 16 * 40).unwrap();
        let stripe = g.stripe_sectors();
        let mut bad = consistent(&g);
        // Damage parity in stripes 3 and 30.
        for row in [3u64, 30] {
            let p = g.parity_member(row).unwrap();
            bad[p][((row * 16) << SECTOR_SHIFT) as usize] ^= 1;
        }
        let mut disks = Disks { data: bad, writes: 0 };
        let mut s = Scrubber::range(g, ScrubMode::Repair, 3 * stripe + 5, 4 * stripe - 1).unwrap();
        assert_eq!(s.next_window(), Some((3 * stripe, 4 * stripe)));
        run(&mut s, &mut disks);
        assert_eq!(s.mismatches(), 8);
        let mut all = Scrubber::new(g, ScrubMode::Check).unwrap();
        run(&mut all, &mut disks);
        assert_eq!(all.mismatches(), 8, "stripe 30 left alone");
    }
}
