//! What a host write needs on the redundant layouts: XOR helpers and, for
//! raid5, the per-stripe plan (read-modify-write or reconstruct-write) that
//! says which member ranges to read before data and parity are written.
//!
//! raid1 and raid10 need no plan: a write goes to every copy
//! ([`Geometry::locate_copy`] for `0..copies()`), a read to any one.

use super::layout::{Geometry, Level, Span, MAX_MEMBERS};

/// `dst ^= src` over the shorter of the two, eight bytes at a time.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let x = u64::from_ne_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
            ^ u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        d.copy_from_slice(&x.to_ne_bytes());
    }
    for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d ^= *s;
    }
}

/// How a raid5 stripe write computes its parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Read old data of the written ranges and old parity; parity ^= old ^ new.
    ReadModifyWrite,
    /// Read what the write does not cover; parity = XOR of all data.
    ReconstructWrite,
}

/// A raid5 write within one stripe. Offsets are within the stripe's chunks
/// (member sector = `stripe * chunk + offset`); the *window* is the union of
/// the offsets written on any member, over which parity changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeWrite {
    /// The stripe (member chunk row).
    pub stripe: u64,
    /// Member holding the stripe's parity.
    pub parity_member: usize,
    /// Window start offset in the chunk, in sectors.
    pub window_start: u64,
    /// Window length in sectors.
    pub window_sectors: u64,
    /// Per member, the offsets `[start, end)` the write covers (empty when
    /// `start == end`, always for the parity member).
    cover: [(u32, u32); MAX_MEMBERS],
    members: usize,
    chunk: u64,
    /// The cheaper way to compute parity (fewer sectors read; ties go to
    /// reconstruct-write, as in md).
    pub mode: WriteMode,
}

impl StripeWrite {
    /// Plans the write of logical `[start, start + sectors)`, which must lie
    /// within one stripe of raid5 geometry `g`. `None` for other levels.
    pub fn plan(g: &Geometry, start: u64, sectors: u64) -> Option<StripeWrite> {
        if g.level() != Level::Raid5 || sectors == 0 {
            return None;
        }
        let shift = g.chunk_shift();
        let chunk = g.chunk_sectors() as u64;
        let stripe = (start >> shift) / g.stripe_chunks_nonzero();
        debug_assert_eq!(((start + sectors - 1) >> shift) / g.stripe_chunks_nonzero(), stripe);
        let mut w = StripeWrite {
            stripe,
            parity_member: g.parity_member(stripe)?,
            window_start: chunk,
            window_sectors: 0,
            cover: [(0, 0); MAX_MEMBERS],
            members: g.members(),
            chunk,
            mode: WriteMode::ReconstructWrite,
        };
        let mut window_end = 0;
        for piece in g.pieces(start, sectors) {
            let at = g.locate(piece.logical);
            let lo = at.sector - (stripe << shift);
            let hi = lo + piece.sectors;
            w.cover[at.member] = (lo as u32, hi as u32);
            w.window_start = w.window_start.min(lo);
            window_end = window_end.max(hi);
        }
        w.window_sectors = window_end - w.window_start;
        w.choose_mode();
        Some(w)
    }

    /// The cheaper mode for the current covers and window.
    fn choose_mode(&mut self) {
        let covered: u64 = self.cover[..self.members].iter().map(|&(a, b)| (b - a) as u64).sum();
        let data_members = self.members as u64 - 1;
        let rmw = covered + self.window_sectors;
        let rcw = data_members * self.window_sectors - covered;
        self.mode = if rmw < rcw { WriteMode::ReadModifyWrite } else { WriteMode::ReconstructWrite };
    }

    /// The part of the write at chunk offsets `[from, to)`: parity at an
    /// offset depends only on the data at that offset, so a stripe write can
    /// be done slice by slice with a bounded buffer. `None` if the write has
    /// nothing there.
    pub fn slice(&self, from: u64, to: u64) -> Option<StripeWrite> {
        let lo = self.window_start.max(from);
        let hi = (self.window_start + self.window_sectors).min(to);
        if lo >= hi {
            return None;
        }
        let mut w = *self;
        for c in w.cover[..w.members].iter_mut() {
            let (a, b) = ((c.0 as u64).max(lo), (c.1 as u64).min(hi));
            *c = if a < b { (a as u32, b as u32) } else { (0, 0) };
        }
        w.window_start = lo;
        w.window_sectors = hi - lo;
        w.choose_mode();
        Some(w)
    }

    /// Number of members of the stripe.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The offsets `(start, sectors)` of member `member` the write covers.
    pub fn covered(&self, member: usize) -> Option<Span> {
        let (a, b) = *self.cover.get(member)?;
        (b > a).then_some(Span { sector: (self.stripe * self.chunk) + a as u64, sectors: (b - a) as u64 })
    }

    /// Where parity is written: the window on the parity member.
    pub fn parity_span(&self) -> Span {
        Span { sector: self.stripe * self.chunk + self.window_start, sectors: self.window_sectors }
    }

    /// The member ranges to read before writing, for the chosen mode.
    pub fn reads(&self) -> Reads<'_> {
        Reads { plan: self, member: 0, part: 0 }
    }
}

/// Iterator over `(member, member range)` reads of a [`StripeWrite`].
#[derive(Clone, Debug)]
pub struct Reads<'a> {
    plan: &'a StripeWrite,
    member: usize,
    part: u8,
}

impl Iterator for Reads<'_> {
    type Item = (usize, Span);

    fn next(&mut self) -> Option<(usize, Span)> {
        let p = self.plan;
        let base = p.stripe * p.chunk;
        let (ws, we) = (p.window_start, p.window_start + p.window_sectors);
        while self.member < p.members {
            let m = self.member;
            let part = self.part;
            self.part += 1;
            if self.part == 2 {
                self.part = 0;
                self.member += 1;
            }
            let (a, b) = (p.cover[m].0 as u64, p.cover[m].1 as u64);
            let range = match (p.mode, m == p.parity_member, part) {
                (WriteMode::ReadModifyWrite, true, 0) => (ws, we),
                (WriteMode::ReadModifyWrite, false, 0) => (a, b),
                (WriteMode::ReconstructWrite, false, 0) if a == b => (ws, we),
                (WriteMode::ReconstructWrite, false, 0) => (ws, a),
                (WriteMode::ReconstructWrite, false, 1) if a != b => (b, we),
                _ => continue,
            };
            if range.1 > range.0 {
                return Some((m, Span { sector: base + range.0, sectors: range.1 - range.0 }));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn g() -> Geometry {
        Geometry::new(Level::Raid5, 4, 8, 8 * 4).unwrap()
    }

    #[test]
    fn small_write_is_read_modify_write() {
        // Over four members one sector costs two reads either way: md's tie
        // goes to reconstruct-write.
        assert_eq!(StripeWrite::plan(&g(), 2, 1).unwrap().mode, WriteMode::ReconstructWrite);
        // Over five, read the old sector and the parity.
        let five = Geometry::new(Level::Raid5, 5, 8, 8 * 4).unwrap();
        let w = StripeWrite::plan(&five, 2, 1).unwrap();
        assert_eq!(w.mode, WriteMode::ReadModifyWrite);
        assert_eq!(w.parity_member, 4);
        let reads: Vec<_> = w.reads().collect();
        assert_eq!(reads, [(0, Span { sector: 2, sectors: 1 }), (4, Span { sector: 2, sectors: 1 })]);
        assert_eq!(w.parity_span(), Span { sector: 2, sectors: 1 });
    }

    #[test]
    fn wide_write_is_reconstruct_write() {
        // Stripe 1 (parity on member 2): chunks 3, 4, 5 on members 3, 0, 1.
        // Write chunk 3 fully and chunk 4 from offset 0 to 4.
        let w = StripeWrite::plan(&g(), 24, 12).unwrap();
        assert_eq!(w.parity_member, 2);
        assert_eq!(w.mode, WriteMode::ReconstructWrite);
        assert_eq!(w.covered(3), Some(Span { sector: 8, sectors: 8 }));
        assert_eq!(w.covered(0), Some(Span { sector: 8, sectors: 4 }));
        let reads: Vec<_> = w.reads().collect();
        assert_eq!(reads, [(0, Span { sector: 12, sectors: 4 }), (1, Span { sector: 8, sectors: 8 })]);
        assert!(StripeWrite::plan(&Geometry::new(Level::Raid0, 2, 8, 64).unwrap(), 0, 1).is_none());
    }

    #[test]
    fn slices_partition_the_write() {
        let five = Geometry::new(Level::Raid5, 5, 16, 16 * 4).unwrap();
        // Chunk 0 from offset 3, chunks 1 and 2 whole, chunk 3 up to 5.
        let w = StripeWrite::plan(&five, 3, 16 * 3 + 2).unwrap();
        let mut covered = [0u64; 5];
        for from in (0..16).step_by(4) {
            let Some(s) = w.slice(from, from + 4) else { continue };
            assert!(s.window_start >= from && s.window_start + s.window_sectors <= from + 4);
            for (m, c) in covered.iter_mut().enumerate() {
                *c += s.covered(m).map_or(0, |span| span.sectors);
            }
        }
        for (m, c) in covered.iter().enumerate() {
            assert_eq!(*c, w.covered(m).map_or(0, |span| span.sectors), "member {m}");
        }
        assert_eq!(w.slice(16, 20), None);
    }

    #[test]
    fn xor_helpers() {
        let mut p = [0b1010u8, 0xff];
        xor_into(&mut p, &[0b0110, 0x0f]);
        assert_eq!(p, [0b1100, 0xf0]);
        // A read-modify-write: parity ^= old ^ new.
        xor_into(&mut p, &[0b1100, 0x00]);
        xor_into(&mut p, &[0b0001, 0x01]);
        assert_eq!(p, [0b0001, 0xf1]);
        let a: Vec<u8> = (0..37).collect();
        let mut b: Vec<u8> = (0..37).map(|i| i * 3).collect();
        xor_into(&mut b, &a);
        assert!(b.iter().enumerate().all(|(i, &x)| x == (i as u8 * 3) ^ i as u8));
    }
}
