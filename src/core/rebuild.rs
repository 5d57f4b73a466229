//! Rebuilding a role onto a replacement: the role's rows, window after
//! window front to back, computed from the members in sync (the other copy
//! for raid1 and raid10, the XOR of the rest of the stripe for raid5).
//!
//! Keeps invariants 4 and 9 of the theory (see the crate documentation):
//! the rebuilding role is read only below its *position*, which the
//! superblocks record only after the rows below it are flushed; a power cut
//! resumes the rebuild from the recorded position, and rows rebuilt past it
//! are simply rebuilt again.
//!
//! Host writes and the rebuild keep out of each other's way through the
//! gate's repair window ([`super::gate::Gate::set_repair`]): a window is
//! copied only once every write admitted before it was set has ended, and
//! writes into it wait. Writes below the position reach the replacement;
//! writes at or above it leave it out ([`super::health::Health`]), and the
//! rebuild copies what they wrote when it gets there.
//!
//! Windows are whole stripes (logical ranges whose rows the role holds), so
//! that a raid5 stripe is never half rebuilt under a host write.

use super::engine::{IoError, MemberIo, Time};
use super::format::Rebuild;
use super::health::Roles;
use super::layout::{Content, Geometry, SECTOR_SHIFT};

/// Logical data per rebuild window, in sectors (1 MiB), rounded up to whole
/// stripes.
pub const WINDOW_SECTORS: u64 = 2048;

/// Why a window cannot be rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildError {
    /// A member I/O failed.
    Io(IoError),
    /// Part of the window has no copy left on members in sync.
    Lost,
    /// The buffer cannot hold one sector of every member.
    BufferTooSmall,
}

impl From<IoError> for RebuildError {
    fn from(e: IoError) -> RebuildError {
        RebuildError::Io(e)
    }
}

/// When the rebuild position is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPace {
    /// At the latest after this many windows.
    pub windows: u64,
    /// At the latest after this many milliseconds.
    pub ms: u64,
}

impl Default for RecordPace {
    fn default() -> RecordPace {
        RecordPace { windows: 256, ms: 5000 }
    }
}

/// A rebuild under way; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilder {
    g: Geometry,
    role: usize,
    /// Logical sector where the rebuild ends: the capacity, or during a
    /// migration the end of the part already in the target layout.
    end: u64,
    /// Logical data per window, before rounding up to whole stripes.
    window: u64,
    /// Logical sector up to which the role's rows are copied (not
    /// necessarily durable).
    copied: u64,
    /// The position the superblocks record.
    recorded: u64,
    windows_since_record: u64,
    last_record_ms: u64,
}

impl Rebuilder {
    /// The rebuild of `r` in layout `g`, from its recorded position.
    pub fn new(g: Geometry, r: Rebuild, now: Time) -> Rebuilder {
        Rebuilder::within(g, r, g.capacity(), now)
    }

    /// The rebuild of `r` in layout `g` up to logical sector `end` (whole
    /// stripes: a migration's checkpointed units), from its recorded position.
    pub fn within(g: Geometry, r: Rebuild, end: u64, now: Time) -> Rebuilder {
        let end = end.min(g.capacity());
        let at = r.position.min(end);
        Rebuilder {
            g,
            role: r.role,
            end,
            window: WINDOW_SECTORS,
            copied: at,
            recorded: at,
            windows_since_record: 0,
            last_record_ms: now.mono_ms,
        }
    }

    /// The same rebuild in windows of `sectors` of logical data (rounded up
    /// to whole stripes): simulations over small arrays.
    pub fn with_window(mut self, sectors: u64) -> Rebuilder {
        self.window = sectors.max(1);
        self
    }

    /// Where the rebuild ends.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The role being rebuilt.
    pub fn role(&self) -> usize {
        self.role
    }

    /// Logical sector up to which the role's rows are copied.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// The position last recorded.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Whether every row is copied.
    pub fn copied_all(&self) -> bool {
        self.copied >= self.end
    }

    /// The next window to copy, `[start, end)` logical, whole stripes.
    pub fn next_window(&self) -> Option<(u64, u64)> {
        let cap = self.end;
        if self.copied >= cap {
            return None;
        }
        let stripe = self.g.stripe_sectors().max(1);
        let len = self.window.div_ceil(stripe) * stripe;
        Some((self.copied, self.copied.saturating_add(len).min(cap)))
    }

    /// Member sectors of the role that hold logical `[start, end)` (whole
    /// stripes, or up to the capacity).
    fn member_range(&self, start: u64, end: u64) -> (u64, u64) {
        let stripe = self.g.stripe_sectors().max(1);
        let rows = self.g.stripe_rows();
        let shift = self.g.chunk_shift();
        let first = (start / stripe) * rows;
        let last = (end.div_ceil(stripe) * rows).min(self.g.rows());
        (first << shift, last << shift)
    }

    /// Copies the role's rows of the next window from the members not in
    /// `failed`, and returns the window. Nothing is durable before a flush.
    pub fn copy_window<I: MemberIo>(
        &mut self,
        io: &mut I,
        failed: Roles,
        buf: &mut [u8],
    ) -> Result<(u64, u64), RebuildError> {
        let Some((start, end)) = self.next_window() else { return Ok((self.copied, self.copied)) };
        let (m0, m1) = self.member_range(start, end);
        let n = self.g.members();
        let chunk = self.g.chunk_sectors() as u64;
        let per_slice = ((buf.len() >> SECTOR_SHIFT) / n) as u64;
        if per_slice == 0 {
            return Err(RebuildError::BufferTooSmall);
        }
        let failed = failed.minus(Roles::one(self.role));
        let mut x = m0;
        while x < m1 {
            let len = per_slice.min(chunk - x % chunk).min(m1 - x);
            let bytes = (len << SECTOR_SHIFT) as usize;
            match self.g.content(self.role, x) {
                Content::Unused => {}
                Content::Data { logical, copy } if self.g.copies() > 1 => {
                    let source = (0..self.g.copies())
                        .filter(|&c| c != copy)
                        .map(|c| self.g.locate_copy(logical, c))
                        .find(|l| !failed.contains(l.member))
                        .ok_or(RebuildError::Lost)?;
                    let b = &mut buf[..bytes];
                    io.read(source.member, source.sector, b)?;
                    io.write(self.role, x, b)?;
                }
                // raid5, data or parity: the XOR of every other member.
                _ => {
                    if (0..n).any(|m| m != self.role && failed.contains(m)) {
                        return Err(RebuildError::Lost);
                    }
                    let (acc, rest) = buf.split_at_mut(bytes);
                    let tmp = &mut rest[..bytes];
                    acc.fill(0);
                    for m in (0..n).filter(|&m| m != self.role) {
                        io.read(m, x, tmp)?;
                        io.xor_into(acc, tmp);
                    }
                    io.write(self.role, x, acc)?;
                }
            }
            x += len;
        }
        self.copied = end;
        self.windows_since_record += 1;
        Ok((start, end))
    }

    /// Passes over the next window without copying it: its rows on the
    /// role already hold what the others hold (a re-added member, whose
    /// bitmap regions there are clean). Returns the window.
    pub fn skip_window(&mut self) -> Option<(u64, u64)> {
        let (start, end) = self.next_window()?;
        self.copied = end;
        self.windows_since_record += 1;
        Some((start, end))
    }

    /// Whether the copied rows should be flushed and their position
    /// recorded now: at the end, or as `pace` says.
    pub fn record_due(&self, now: Time, pace: RecordPace) -> bool {
        self.copied > self.recorded
            && (self.copied_all()
                || self.windows_since_record >= pace.windows.max(1)
                || now.mono_ms.saturating_sub(self.last_record_ms) >= pace.ms)
    }

    /// The superblocks now record `position` (after a flush of the rows
    /// below it).
    pub fn recorded_at(&mut self, position: u64, now: Time) {
        self.recorded = position;
        self.windows_since_record = 0;
        self.last_record_ms = now.mono_ms;
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;
    use super::super::layout::Level;

    #[test]
    fn skipped_windows_advance_without_io() {
        let g = Geometry::new(Level::Raid1, 2, 128, 8 * WINDOW_SECTORS).unwrap();
        let mut rb = Rebuilder::new(g, Rebuild { role: 1, position: 0 }, Time::at(0));
        let (s, e) = rb.next_window().unwrap();
        assert_eq!(rb.skip_window(), Some((s, e)));
        assert_eq!(rb.copied(), e);
        assert!(rb.record_due(Time::at(0), RecordPace { windows: 1, ms: u64::MAX }));
        while rb.skip_window().is_some() {}
        assert!(rb.copied_all());
        assert_eq!(rb.skip_window(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Level;
    use super::super::route::View;
    use super::*;
    use super::super::parity::xor_into;
    use std::vec;
    use std::vec::Vec;

    /// Members in memory.
    struct Disks {
        data: Vec<Vec<u8>>,
        reads_of: Roles,
    }

    impl MemberIo for Disks {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            self.reads_of = self.reads_of.with(member);
            let at = (sector << SECTOR_SHIFT) as usize;
            buf.copy_from_slice(&self.data[member][at..at + buf.len()]);
            Ok(())
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
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

    /// Members holding a consistent array of `g` with pseudo-random data.
    fn consistent(g: &Geometry) -> Vec<Vec<u8>> {
        let n = g.members();
        let bytes = (g.member_sectors() << SECTOR_SHIFT) as usize;
        let mut data = vec![vec![0u8; bytes]; n];
        let mut x = 0x9e3779b97f4a7c15u64;
        for l in 0..g.capacity() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for c in 0..g.copies() {
                let loc = g.locate_copy(l, c);
                let at = (loc.sector << SECTOR_SHIFT) as usize;
                data[loc.member][at..at + 512].fill(x as u8);
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

    #[test]
    fn rebuilds_every_role_of_every_level() {
        for (level, n) in [(Level::Raid1, 2), (Level::Raid1, 3), (Level::Raid5, 3), (Level::Raid5, 4), (Level::Raid10, 3), (Level::Raid10, 4)] {
            // Rows of 16 sectors, 37 rows: windows end mid-array and the
            // last stripe of raid10 over 3 is half a stripe.
            let g = Geometry::new(level, n, 16, 16 * 37).unwrap();
            let good = consistent(&g);
            for role in 0..n {
                let mut disks = Disks { data: good.clone(), reads_of: Roles::NONE };
                disks.data[role].fill(0xEE);
                let mut r = Rebuilder::new(g, Rebuild { role, position: 0 }, Time::at(0));
                // A buffer smaller than a chunk of every member: slices.
                let mut buf = vec![0u8; 512 * 2 * n];
                let mut windows = 0;
                while !r.copied_all() {
                    let (s, e) = r.copy_window(&mut disks, Roles::NONE, &mut buf).unwrap();
                    assert!(e > s);
                    windows += 1;
                }
                assert!(windows >= 1);
                assert!(!disks.reads_of.contains(role), "{level:?}/{n}: the rebuilt role was read");
                // Every sector the layout uses is as it was (raid10 over
                // an odd count leaves the unused half row alone).
                for sector in 0..g.member_sectors() {
                    if g.content(role, sector) == Content::Unused {
                        continue;
                    }
                    let at = (sector << SECTOR_SHIFT) as usize;
                    assert_eq!(disks.data[role][at..at + 512], good[role][at..at + 512], "{level:?}/{n} role {role} sector {sector}");
                }
            }
        }
    }

    #[test]
    fn windows_are_whole_stripes_and_resume_from_the_record() {
        let g = Geometry::new(Level::Raid5, 4, 16, 16 * 400).unwrap();
        let stripe = g.stripe_sectors();
        let mut r = Rebuilder::new(g, Rebuild { role: 1, position: 5 * stripe }, Time::at(0));
        let (s, e) = r.next_window().unwrap();
        assert_eq!(s, 5 * stripe);
        assert_eq!(e % stripe, 0);
        assert!(e - s >= WINDOW_SECTORS);
        let pace = RecordPace { windows: 2, ms: 1000 };
        let mut disks = Disks { data: consistent(&g), reads_of: Roles::NONE };
        let mut buf = vec![0u8; 1 << 16];
        assert!(!r.record_due(Time::at(0), pace));
        r.copy_window(&mut disks, Roles::NONE, &mut buf).unwrap();
        assert!(!r.record_due(Time::at(10), pace));
        assert!(r.record_due(Time::at(1000), pace));
        r.copy_window(&mut disks, Roles::NONE, &mut buf).unwrap();
        assert!(r.record_due(Time::at(10), pace));
        r.recorded_at(r.copied(), Time::at(10));
        assert!(!r.record_due(Time::at(20), pace));
        // A second failure during the rebuild: raid5 has nothing left.
        assert_eq!(r.copy_window(&mut disks, Roles::one(2), &mut buf), Err(RebuildError::Lost));
    }
}
