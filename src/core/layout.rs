//! Layouts: where each logical sector of a raidmig volume lives on its members.
//!
//! Every member holds a data area at offset 0 and raidmig's reserved tail
//! (superblocks, staging area, room for a bitmap) after it. The data areas of
//! all members have the same size, a multiple of the chunk size, so that the
//! striped layouts are byte-compatible with Linux md arrays built over the same
//! disks with data offset 0 (`mdadm --build`, or metadata 1.0 whose superblock
//! also sits at the end).
//!
//! md's rules, followed here (drivers/md of Linux 6.12):
//! - raid0 (raid0.c) with equal members is a single zone: logical chunk `c`
//!   lives on member `c % n` at member chunk `c / n`.
//! - raid1 (raid1.c) keeps a full copy on every member at the same sector.
//! - raid5 (raid5.c, `raid5_compute_sector`, `ALGORITHM_LEFT_SYMMETRIC`, md's
//!   default): chunk `c` is data index `c % (n-1)` of stripe `s = c / (n-1)`;
//!   parity sits on member `(n-1) - s % n` and data index `i` on member
//!   `(parity + 1 + i) % n`, all at member chunk `s`.
//! - raid10 near-2 (raid10.c, `__raid10_find_phys` with two near copies, md's
//!   default): copy `k` of chunk `c` is at position `p = 2c + k`, on member
//!   `p % n` at member chunk `p / n`; with an odd member count the two copies of
//!   some chunks straddle two rows. The size is `floor(chunks * n / 2)` chunks
//!   (`raid10_size`), so an odd count with an odd number of rows leaves half a
//!   row unused at the end.
//!
//! A *row* is one chunk on every member at the same member offset; a *stripe*
//! is the smallest run of rows that holds whole chunks (two rows for raid10 with
//! an odd member count, one row otherwise).

use core::num::NonZeroU64;

/// Bytes in a sector, as a shift.
pub const SECTOR_SHIFT: u32 = 9;

/// Size of the reserved tail at the end of every member, in sectors (16 MiB).
///
/// Fixed by the on-disk format; the user's data must end before it on the
/// first member of a migration. What the tail holds is laid out in the format
/// module.
pub const RESERVED_TAIL_SECTORS: u64 = (16 << 20) >> SECTOR_SHIFT;

/// Largest data area per member, in sectors (128 PiB): bounds every sum and
/// product of sizes well below overflow, whatever a superblock says.
pub const MAX_MEMBER_SECTORS: u64 = 1 << 48;

/// Reads of raid1 pick their copy by regions of this many sectors, as a
/// shift (1 MiB): large reads still spread over the members.
pub const READ_REGION_SHIFT: u32 = 11;

/// Most members an array can have.
pub const MAX_MEMBERS: usize = 16;

/// Smallest chunk, in sectors (4 KiB, the page size md also requires).
pub const MIN_CHUNK_SECTORS: u32 = 8;

/// Largest chunk, in sectors (4 MiB): a stripe's share of every member must
/// fit the staging area of the reserved tail.
pub const MAX_CHUNK_SECTORS: u32 = 8192;

/// The RAID level of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One disk, no RAID: the volume is the first member's data area.
    Single,
    /// Striping without redundancy.
    Raid0,
    /// Mirroring: every member holds a full copy.
    Raid1,
    /// Striping with one rotating parity chunk per stripe (left-symmetric).
    Raid5,
    /// Striping with two near copies of every chunk (md's near-2 layout).
    Raid10,
}

impl Level {
    /// Every level, in the order of their on-disk codes.
    pub const ALL: [Level; 5] = [Level::Single, Level::Raid0, Level::Raid1, Level::Raid5, Level::Raid10];

    /// The name used in module parameters and sysfs.
    pub fn name(self) -> &'static str {
        match self {
            Level::Single => "single",
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid5 => "raid5",
            Level::Raid10 => "raid10",
        }
    }

    /// Parses a level name as given in module parameters.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The level's code in the on-disk format (its index in [`Level::ALL`]).
    pub fn code(self) -> u32 {
        match self {
            Level::Single => 0,
            Level::Raid0 => 1,
            Level::Raid1 => 2,
            Level::Raid5 => 3,
            Level::Raid10 => 4,
        }
    }

    /// The level of an on-disk code.
    pub fn from_code(code: u32) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.code() == code)
    }

    /// Fewest members the level can be built over (md's minimums: raid5 and
    /// raid10 over two members are valid md arrays).
    pub fn min_members(self) -> usize {
        match self {
            Level::Single => 1,
            Level::Raid0 | Level::Raid1 | Level::Raid5 | Level::Raid10 => 2,
        }
    }

    /// Most members the level can be built over.
    pub fn max_members(self) -> usize {
        match self {
            Level::Single => 1,
            _ => MAX_MEMBERS,
        }
    }

    /// How many members' worth of data areas hold distinct data. For raid10
    /// with an odd member count this rounds down: such an array holds half a
    /// member more (see [`Geometry::capacity`]).
    pub fn data_members(self, members: usize) -> usize {
        match self {
            Level::Single | Level::Raid1 => 1,
            Level::Raid0 => members,
            Level::Raid5 => members - 1,
            Level::Raid10 => members / 2,
        }
    }

    /// How many copies of every data sector the level keeps.
    pub fn copies(self, members: usize) -> usize {
        match self {
            Level::Single | Level::Raid0 | Level::Raid5 => 1,
            Level::Raid1 => members,
            Level::Raid10 => 2,
        }
    }

    /// Whether the level keeps parity (a host write must update it).
    pub fn has_parity(self) -> bool {
        matches!(self, Level::Raid5)
    }
}

/// Whether a chunk of `chunk_sectors` sectors is one raidmig supports: a
/// power of two from [`MIN_CHUNK_SECTORS`] to [`MAX_CHUNK_SECTORS`].
pub fn valid_chunk(chunk_sectors: u32) -> bool {
    chunk_sectors.is_power_of_two() && (MIN_CHUNK_SECTORS..=MAX_CHUNK_SECTORS).contains(&chunk_sectors)
}

/// Why a geometry cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// Fewer or more members than the level allows.
    MemberCount,
    /// The chunk is not a power of two between the smallest and largest chunk.
    Chunk,
    /// The smallest member cannot hold one chunk of data besides the reserved tail.
    TooSmall,
    /// The data area is larger than [`MAX_MEMBER_SECTORS`].
    TooLarge,
}

impl GeometryError {
    /// A sentence for the kernel log.
    pub fn message(self) -> &'static str {
        match self {
            GeometryError::MemberCount => "wrong number of members for the level",
            GeometryError::Chunk => "chunk must be a power of two from 4 KiB to 4 MiB",
            GeometryError::TooSmall => {
                "member too small: it must hold one chunk besides the 16 MiB reserved tail"
            }
            GeometryError::TooLarge => "member data area larger than 128 PiB",
        }
    }
}

/// A place on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Index of the member in the array.
    pub member: usize,
    /// Sector offset from the start of that member.
    pub sector: u64,
}

/// A run of logical sectors that one location run holds contiguously: it
/// never crosses a chunk boundary of a striped layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// First logical sector of the run.
    pub logical: u64,
    /// Length of the run in sectors.
    pub sectors: u64,
}

/// A contiguous range of sectors on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First member sector.
    pub sector: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// What a member sector holds in a layout (the inverse of the mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Copy `copy` of logical sector `logical`.
    Data {
        /// The logical sector.
        logical: u64,
        /// Which copy (0 for unmirrored levels).
        copy: usize,
    },
    /// Parity of raid5 stripe `stripe`, at the same offset in its chunks.
    Parity {
        /// The stripe (equal to the member chunk number).
        stripe: u64,
    },
    /// Nothing: beyond the data area, past the capacity, or a member the
    /// layout does not use.
    Unused,
}

/// `a / d` rounded up; `d` cannot be zero, so there is no panic path.
pub(crate) fn div_ceil(a: u64, d: NonZeroU64) -> u64 {
    a / d + (a % d != 0) as u64
}

/// The shape of an array: level, member count, chunk and data area size.
///
/// The member count and the data chunks per stripe, the divisors of the
/// mappings, are kept as [`NonZeroU64`]: checked once here, so that dividing
/// by them has no panic path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    level: Level,
    members: NonZeroU64,
    chunk_sectors: u32,
    member_sectors: u64,
    /// Data chunks in one stripe (derived from level and members).
    stripe_chunks: NonZeroU64,
}

impl Geometry {
    /// Builds a geometry whose data area per member is `member_sectors`
    /// rounded down to a whole number of chunks.
    pub fn new(
        level: Level,
        members: usize,
        chunk_sectors: u32,
        member_sectors: u64,
    ) -> Result<Geometry, GeometryError> {
        if members < level.min_members() || members > level.max_members() {
            return Err(GeometryError::MemberCount);
        }
        // Every level's minimum member count gives at least one member and
        // one data chunk per stripe: these checks never fail after the one
        // above, they only give the divisors their non-zero type.
        let Some(count) = NonZeroU64::new(members as u64) else {
            return Err(GeometryError::MemberCount);
        };
        let stripe_chunks = match level {
            Level::Raid10 => members as u64 * Geometry::stripe_rows_of(level, members).get() / 2,
            _ => level.data_members(members) as u64,
        };
        let Some(stripe_chunks) = NonZeroU64::new(stripe_chunks) else {
            return Err(GeometryError::MemberCount);
        };
        if !valid_chunk(chunk_sectors) {
            return Err(GeometryError::Chunk);
        }
        let member_sectors = member_sectors & !(chunk_sectors as u64 - 1);
        if member_sectors == 0 {
            return Err(GeometryError::TooSmall);
        }
        if member_sectors > MAX_MEMBER_SECTORS {
            return Err(GeometryError::TooLarge);
        }
        Ok(Geometry { level, members: count, chunk_sectors, member_sectors, stripe_chunks })
    }

    /// Builds the geometry for members whose smallest has `device_sectors`
    /// sectors in all: the data area is what is left before the reserved tail.
    pub fn for_devices(
        level: Level,
        members: usize,
        chunk_sectors: u32,
        device_sectors: u64,
    ) -> Result<Geometry, GeometryError> {
        let data = device_sectors.saturating_sub(RESERVED_TAIL_SECTORS);
        Geometry::new(level, members, chunk_sectors, data)
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.members.get() as usize
    }

    /// Chunk size in sectors.
    pub fn chunk_sectors(&self) -> u32 {
        self.chunk_sectors
    }

    /// Data area of each member in sectors (a multiple of the chunk).
    pub fn member_sectors(&self) -> u64 {
        self.member_sectors
    }

    /// Number of rows (member chunks) in each member's data area.
    pub fn rows(&self) -> u64 {
        self.member_sectors >> self.chunk_shift()
    }

    /// Logical size of the volume in sectors.
    pub fn capacity(&self) -> u64 {
        match self.level {
            Level::Raid10 => (self.rows() * self.members.get() / 2) << self.chunk_shift(),
            _ => self.member_sectors * self.level.data_members(self.members()) as u64,
        }
    }

    /// Rows in one stripe: the smallest run of rows holding whole chunks.
    pub fn stripe_rows(&self) -> u64 {
        self.stripe_rows_nonzero().get()
    }

    /// [`Geometry::stripe_rows`], as a divisor.
    pub fn stripe_rows_nonzero(&self) -> NonZeroU64 {
        Geometry::stripe_rows_of(self.level, self.members())
    }

    fn stripe_rows_of(level: Level, members: usize) -> NonZeroU64 {
        const TWO: NonZeroU64 = NonZeroU64::MIN.saturating_add(1);
        if level == Level::Raid10 && members % 2 == 1 {
            TWO
        } else {
            NonZeroU64::MIN
        }
    }

    /// Data sectors in one full stripe (the optimal I/O size).
    pub fn stripe_sectors(&self) -> u64 {
        self.stripe_chunks() << self.chunk_shift()
    }

    /// Data chunks in one stripe.
    pub fn stripe_chunks(&self) -> u64 {
        self.stripe_chunks.get()
    }

    /// [`Geometry::stripe_chunks`], as a divisor.
    pub fn stripe_chunks_nonzero(&self) -> NonZeroU64 {
        self.stripe_chunks
    }

    /// How many copies of each data sector the layout keeps.
    pub fn copies(&self) -> usize {
        self.level.copies(self.members())
    }

    /// Whether the layout keeps its data twice (copies or parity): a member
    /// may fail without losing any, and copies or parity must agree.
    pub fn redundant(&self) -> bool {
        self.copies() > 1 || self.level.has_parity()
    }

    /// log2 of the chunk size in sectors.
    pub fn chunk_shift(&self) -> u32 {
        self.chunk_sectors.trailing_zeros()
    }

    fn chunk_mask(&self) -> u64 {
        self.chunk_sectors as u64 - 1
    }

    /// Whether runs must be cut at chunk boundaries.
    fn is_striped(&self) -> bool {
        !matches!(self.level, Level::Single | Level::Raid1)
    }

    /// Where the first data copy of logical sector `logical` lives (the only
    /// one for single, raid0 and raid5).
    ///
    /// `logical` must be below [`Geometry::capacity`].
    pub fn locate(&self, logical: u64) -> Location {
        self.locate_copy(logical, 0)
    }

    /// Where copy `copy` (below [`Geometry::copies`]) of logical sector
    /// `logical` (below [`Geometry::capacity`]) lives.
    pub fn locate_copy(&self, logical: u64, copy: usize) -> Location {
        debug_assert!(logical < self.capacity());
        debug_assert!(copy < self.copies());
        let shift = self.chunk_shift();
        let chunk = logical >> shift;
        let offset = logical & self.chunk_mask();
        let n = self.members;
        match self.level {
            Level::Single => Location { member: 0, sector: logical },
            Level::Raid1 => Location { member: copy, sector: logical },
            Level::Raid0 => {
                Location { member: (chunk % n) as usize, sector: ((chunk / n) << shift) + offset }
            }
            Level::Raid5 => {
                // n - 1 data chunks per stripe.
                let data = self.stripe_chunks;
                let stripe = chunk / data;
                let index = chunk % data;
                let parity = data.get() - stripe % n;
                let member = (parity + 1 + index) % n;
                Location { member: member as usize, sector: (stripe << shift) + offset }
            }
            Level::Raid10 => {
                let position = chunk * 2 + copy as u64;
                Location { member: (position % n) as usize, sector: ((position / n) << shift) + offset }
            }
        }
    }

    /// The copy a read of logical sector `logical` uses: a function of the
    /// sector alone (raid1: its 1 MiB region; raid10: its chunk), so that a
    /// sector reads the same whatever the request, even where a write that
    /// failed on one copy left the copies different; the migration engine
    /// reads a mirrored source the same way.
    ///
    /// raid10 alternates copies so that every member serves reads: with an
    /// even member count, by row of chunk pairs (`2c / n`: with the chunk's
    /// parity instead, over four members only two of them would ever be
    /// read); with an odd count, by the chunk's parity.
    pub fn read_copy(&self, logical: u64) -> usize {
        let copies = self.copies() as u64;
        let n = self.members;
        let unit = match self.level {
            Level::Raid1 => logical >> READ_REGION_SHIFT,
            Level::Raid10 if n.get() % 2 == 0 => 2 * (logical >> self.chunk_shift()) / n,
            Level::Raid10 => logical >> self.chunk_shift(),
            _ => 0,
        };
        unit.checked_rem(copies).unwrap_or(0) as usize
    }

    /// Runs of `[start, start + sectors)` that each map to one contiguous
    /// member range of the copy [`Geometry::read_copy`] picks: pieces, cut
    /// also at read regions for raid1.
    pub fn read_pieces(&self, start: u64, sectors: u64) -> Pieces {
        let mut p = self.pieces(start, sectors);
        if self.level == Level::Raid1 {
            p.boundary = 1 << READ_REGION_SHIFT;
        }
        p
    }

    /// For raid5, the parity member of stripe (member chunk) `stripe`.
    pub fn parity_member(&self, stripe: u64) -> Option<usize> {
        match self.level {
            Level::Raid5 => {
                let n = self.members;
                Some((n.get() - 1 - stripe % n) as usize)
            }
            _ => None,
        }
    }

    /// For raid5, where the parity protecting logical sector `logical` lives
    /// (same offset in the stripe's parity chunk); `None` for other levels.
    pub fn parity_location(&self, logical: u64) -> Option<Location> {
        debug_assert!(logical < self.capacity());
        let shift = self.chunk_shift();
        let stripe = (logical >> shift) / self.stripe_chunks;
        self.parity_member(stripe)
            .map(|member| Location { member, sector: (stripe << shift) + (logical & self.chunk_mask()) })
    }

    /// What member sector `sector` of member `member` holds: the inverse of
    /// [`Geometry::locate_copy`] and [`Geometry::parity_location`]. Total: any
    /// input gives an answer, out-of-range ones [`Content::Unused`].
    pub fn content(&self, member: usize, sector: u64) -> Content {
        if member >= self.members() || sector >= self.member_sectors {
            return Content::Unused;
        }
        let shift = self.chunk_shift();
        let row = sector >> shift;
        let offset = sector & self.chunk_mask();
        let d = self.members;
        let n = d.get();
        let m = member as u64;
        match self.level {
            Level::Single => Content::Data { logical: sector, copy: 0 },
            Level::Raid1 => Content::Data { logical: sector, copy: member },
            Level::Raid0 => Content::Data { logical: ((row * n + m) << shift) + offset, copy: 0 },
            Level::Raid5 => {
                let parity = n - 1 - row % d;
                if m == parity {
                    return Content::Parity { stripe: row };
                }
                let index = (m + n - parity - 1) % d;
                let chunk = row * (n - 1) + index;
                Content::Data { logical: (chunk << shift) + offset, copy: 0 }
            }
            Level::Raid10 => {
                let position = row * n + m;
                let logical = ((position / 2) << shift) + offset;
                if logical >= self.capacity() {
                    return Content::Unused;
                }
                Content::Data { logical, copy: (position % 2) as usize }
            }
        }
    }

    /// Cuts `[start, start + sectors)` into runs that each map to one
    /// contiguous member range; the range must lie within the capacity.
    pub fn pieces(&self, start: u64, sectors: u64) -> Pieces {
        debug_assert!(start + sectors <= self.capacity());
        let boundary = if self.is_striped() { self.chunk_sectors as u64 } else { 0 };
        Pieces { next: start, end: start + sectors, boundary }
    }

    /// The part of member `member` that holds data of the logical range
    /// `[start, start + sectors)`, for layouts where that part is contiguous
    /// and holds nothing else (single, raid0, raid1, raid10): the range a
    /// discard or write-zeroes of the logical range becomes on that member.
    /// `None` if the member holds none of it, and always for raid5, whose
    /// member ranges interleave parity (a discard must go through the write
    /// path there).
    pub fn member_span(&self, start: u64, sectors: u64, member: usize) -> Option<Span> {
        if sectors == 0 || member >= self.members() {
            return None;
        }
        let end = start + sectors;
        let shift = self.chunk_shift();
        let chunk = self.chunk_sectors as u64;
        let d = self.members;
        let n = d.get();
        let m = member as u64;
        let (first, last) = (start >> shift, (end - 1) >> shift);
        let head = start & (chunk - 1);
        let tail = ((end - 1) & (chunk - 1)) + 1;
        match self.level {
            Level::Single => (member == 0).then_some(Span { sector: start, sectors }),
            Level::Raid1 => Some(Span { sector: start, sectors }),
            Level::Raid5 => None,
            Level::Raid0 => {
                // First and last chunks of the range that live on this member.
                let c1 = first + (m + n - first % d) % d;
                if c1 > last {
                    return None;
                }
                let c2 = last - (last % d + n - m) % d;
                let lo = ((c1 / d) << shift) + if c1 == first { head } else { 0 };
                let hi = ((c2 / d) << shift) + if c2 == last { tail } else { chunk };
                Some(Span { sector: lo, sectors: hi - lo })
            }
            Level::Raid10 => {
                // Row r of member m holds chunk (r*n + m) / 2, which grows with
                // r: the rows holding chunks first..=last are contiguous.
                let r1 = div_ceil((2 * first).saturating_sub(m), d);
                if 2 * last + 1 < m {
                    return None;
                }
                let r2 = (2 * last + 1 - m) / d;
                if r1 > r2 {
                    return None;
                }
                let (c1, c2) = ((r1 * n + m) / 2, (r2 * n + m) / 2);
                let lo = (r1 << shift) + if c1 == first { head } else { 0 };
                let hi = (r2 << shift) + if c2 == last { tail } else { chunk };
                Some(Span { sector: lo, sectors: hi - lo })
            }
        }
    }
}

/// Iterator over the [`Piece`]s of a logical range; see [`Geometry::pieces`].
#[derive(Clone, Debug)]
pub struct Pieces {
    next: u64,
    end: u64,
    /// Chunk size for striped layouts, 0 where runs need no cutting.
    boundary: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.next >= self.end {
            return None;
        }
        let limit = if self.boundary == 0 {
            self.end
        } else {
            let next_boundary = (self.next | (self.boundary - 1)) + 1;
            next_boundary.min(self.end)
        };
        let piece = Piece { logical: self.next, sectors: limit - self.next };
        self.next = limit;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raid0(n: usize) -> Geometry {
        Geometry::new(Level::Raid0, n, 128, 128 * 10).unwrap()
    }

    #[test]
    fn raid10_reads_use_every_member() {
        for n in 2..=8 {
            let g = Geometry::new(Level::Raid10, n, 8, 8 * 64).unwrap();
            let mut reads = std::vec![0u64; n];
            for c in 0..g.capacity() / 8 {
                reads[g.locate_copy(c * 8, g.read_copy(c * 8)).member] += 1;
            }
            let (lo, hi) = (reads.iter().min().unwrap(), reads.iter().max().unwrap());
            assert!(*lo > 0 && hi - lo <= 2, "raid10 over {n}: reads per member {reads:?}");
        }
    }

    #[test]
    fn raid0_follows_md_single_zone() {
        let g = raid0(3);
        assert_eq!(g.capacity(), 3 * 1280);
        // Chunk 4 is on member 1, second chunk row.
        assert_eq!(g.locate(4 * 128 + 5), Location { member: 1, sector: 128 + 5 });
        assert_eq!(g.locate(0), Location { member: 0, sector: 0 });
        assert_eq!(g.locate(3 * 1280 - 1), Location { member: 2, sector: 1279 });
    }

    #[test]
    fn pieces_cut_at_chunk_boundaries() {
        let g = raid0(3);
        let mut it = g.pieces(100, 300);
        assert_eq!(it.next(), Some(Piece { logical: 100, sectors: 28 }));
        assert_eq!(it.next(), Some(Piece { logical: 128, sectors: 128 }));
        assert_eq!(it.next(), Some(Piece { logical: 256, sectors: 128 }));
        assert_eq!(it.next(), Some(Piece { logical: 384, sectors: 16 }));
        assert_eq!(it.next(), None);
        assert_eq!(g.pieces(0, 0).count(), 0);
    }

    #[test]
    fn single_is_identity_and_uncut() {
        let g = Geometry::new(Level::Single, 1, 128, 1000).unwrap();
        assert_eq!(g.member_sectors(), 896);
        assert_eq!(g.pieces(0, 896).count(), 1);
        assert_eq!(g.locate(77), Location { member: 0, sector: 77 });
    }

    /// md's left-symmetric table for four members (chunks by row, P parity).
    #[test]
    fn raid5_left_symmetric_table() {
        let g = Geometry::new(Level::Raid5, 4, 8, 8 * 8).unwrap();
        // Row r, member m -> chunk number, or None for parity.
        let table: [[Option<u64>; 4]; 4] = [
            [Some(0), Some(1), Some(2), None],
            [Some(4), Some(5), None, Some(3)],
            [Some(8), None, Some(6), Some(7)],
            [None, Some(9), Some(10), Some(11)],
        ];
        for (row, line) in table.iter().enumerate() {
            for (member, want) in line.iter().enumerate() {
                let sector = row as u64 * 8 + 3;
                match want {
                    Some(chunk) => {
                        assert_eq!(g.locate(chunk * 8 + 3), Location { member, sector });
                        assert_eq!(
                            g.content(member, sector),
                            Content::Data { logical: chunk * 8 + 3, copy: 0 }
                        );
                    }
                    None => {
                        assert_eq!(g.parity_member(row as u64), Some(member));
                        assert_eq!(g.content(member, sector), Content::Parity { stripe: row as u64 });
                    }
                }
            }
        }
        assert_eq!(g.capacity(), 3 * 64);
        assert_eq!(g.parity_location(9 * 8 + 1), Some(Location { member: 0, sector: 3 * 8 + 1 }));
    }

    /// md's near-2 table for three members (raid10 man page):
    /// `A1 A1 A2 / A2 A3 A3 / A4 A4 A5 / A5 A6 A6`.
    #[test]
    fn raid10_near2_three_members_table() {
        let g = Geometry::new(Level::Raid10, 3, 8, 8 * 5).unwrap();
        let table: [[u64; 3]; 4] = [[0, 0, 1], [1, 2, 2], [3, 3, 4], [4, 5, 5]];
        for (row, line) in table.iter().enumerate() {
            for (member, chunk) in line.iter().enumerate() {
                match g.content(member, row as u64 * 8) {
                    Content::Data { logical, .. } => assert_eq!(logical, chunk * 8),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(g.locate_copy(8, 0), Location { member: 2, sector: 0 });
        assert_eq!(g.locate_copy(8, 1), Location { member: 0, sector: 8 });
        // Five rows of three members hold 7.5 chunks: md keeps 7.
        assert_eq!(g.capacity(), 7 * 8);
        assert_eq!(g.content(2, 4 * 8), Content::Unused);
        assert_eq!(g.stripe_rows(), 2);
        assert_eq!(g.stripe_sectors(), 3 * 8);
    }

    #[test]
    fn content_inverts_every_copy() {
        for level in Level::ALL {
            for n in level.min_members()..=level.max_members().min(5) {
                let g = Geometry::new(level, n, 8, 8 * 7).unwrap();
                for logical in 0..g.capacity() {
                    for copy in 0..g.copies() {
                        let l = g.locate_copy(logical, copy);
                        assert_eq!(g.content(l.member, l.sector), Content::Data { logical, copy });
                    }
                }
            }
        }
    }

    #[test]
    fn member_span_matches_pieces() {
        for (level, n) in (2..=5).flat_map(|n| [(Level::Raid0, n), (Level::Raid1, n), (Level::Raid10, n)]) {
            let g = Geometry::new(level, n, 128, 128 * 10).unwrap();
            for start in (0..g.capacity()).step_by(37) {
                for len in [1u64, 5, 127, 128, 129, 300, 1000] {
                    if start + len > g.capacity() {
                        continue;
                    }
                    for m in 0..n {
                        let mut lo = u64::MAX;
                        let mut hi = 0;
                        let mut total = 0;
                        for p in g.pieces(start, len) {
                            for copy in 0..g.copies() {
                                let l = g.locate_copy(p.logical, copy);
                                if l.member == m {
                                    lo = lo.min(l.sector);
                                    hi = hi.max(l.sector + p.sectors);
                                    total += p.sectors;
                                }
                            }
                        }
                        let span = g.member_span(start, len, m);
                        if total == 0 {
                            assert_eq!(span, None);
                        } else {
                            // Contiguous: the hull holds exactly the mapped sectors.
                            assert_eq!(hi - lo, total);
                            assert_eq!(span, Some(Span { sector: lo, sectors: total }));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn geometry_rejects_bad_input() {
        assert_eq!(Geometry::new(Level::Raid0, 1, 128, 1 << 20), Err(GeometryError::MemberCount));
        assert_eq!(Geometry::new(Level::Single, 2, 128, 1 << 20), Err(GeometryError::MemberCount));
        assert_eq!(Geometry::new(Level::Raid0, 3, 96, 1 << 20), Err(GeometryError::Chunk));
        assert_eq!(Geometry::new(Level::Raid0, 3, 4, 1 << 20), Err(GeometryError::Chunk));
        assert_eq!(Geometry::new(Level::Raid0, 3, 16384, 1 << 20), Err(GeometryError::Chunk));
        assert_eq!(Geometry::new(Level::Raid0, 3, 128, 127), Err(GeometryError::TooSmall));
        assert_eq!(
            Geometry::for_devices(Level::Raid0, 3, 128, RESERVED_TAIL_SECTORS + 127),
            Err(GeometryError::TooSmall)
        );
        assert!(Geometry::for_devices(Level::Raid0, 3, 128, RESERVED_TAIL_SECTORS + 128).is_ok());
        assert_eq!(
            Geometry::new(Level::Raid0, 3, 128, MAX_MEMBER_SECTORS + 128),
            Err(GeometryError::TooLarge)
        );
        assert!(Geometry::new(Level::Raid0, 3, 128, MAX_MEMBER_SECTORS).is_ok());
    }

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
        }
        assert_eq!(Level::from_name("raid6"), None);
        for l in Level::ALL {
            assert_eq!(Level::from_code(l.code()), Some(l));
            assert_eq!(Level::ALL[l.code() as usize], l);
        }
        assert_eq!(Level::from_code(5), None);
    }
}
