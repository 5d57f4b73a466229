//! Layouts: where each logical sector of a raidmig volume lives on its members.
//!
//! Every member holds a data area at offset 0 and raidmig's reserved tail
//! (superblocks, staging area, room for a bitmap) after it. The data areas of
//! all members have the same size, a multiple of the chunk size, so that the
//! striped layouts are byte-compatible with Linux md arrays built over the same
//! disks with data offset 0 (`mdadm --build`, or metadata 1.0 whose superblock
//! also sits at the end).
//!
//! md's rules, followed here:
//! - raid0 (drivers/md/raid0.c) with equal members is a single zone: logical
//!   chunk `c` lives on member `c % n` at member chunk `c / n`.

/// Bytes in a sector, as a shift.
pub const SECTOR_SHIFT: u32 = 9;

/// Size of the reserved tail at the end of every member, in sectors (16 MiB).
///
/// Fixed by the on-disk format; the user's data must end before it on the
/// first member of a migration. What the tail holds is laid out in the format
/// module.
pub const RESERVED_TAIL_SECTORS: u64 = (16 << 20) >> SECTOR_SHIFT;

/// Most members an array can have.
pub const MAX_MEMBERS: usize = 16;

/// Smallest chunk, in sectors (4 KiB, the page size md also requires).
pub const MIN_CHUNK_SECTORS: u32 = 8;

/// Largest chunk, in sectors (4 MiB): a chunk per member must fit the staging
/// area of the reserved tail.
pub const MAX_CHUNK_SECTORS: u32 = 8192;

/// The RAID level of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One disk, no RAID: the volume is the first member's data area.
    Single,
    /// Striping without redundancy.
    Raid0,
}

impl Level {
    /// Every level, in the order of their on-disk codes.
    pub const ALL: [Level; 2] = [Level::Single, Level::Raid0];

    /// The name used in module parameters and sysfs.
    pub fn name(self) -> &'static str {
        match self {
            Level::Single => "single",
            Level::Raid0 => "raid0",
        }
    }

    /// Parses a level name as given in module parameters.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Fewest members the level can be built over.
    pub fn min_members(self) -> usize {
        match self {
            Level::Single => 1,
            Level::Raid0 => 2,
        }
    }

    /// Most members the level can be built over.
    pub fn max_members(self) -> usize {
        match self {
            Level::Single => 1,
            _ => MAX_MEMBERS,
        }
    }

    /// How many members' worth of data areas hold distinct data.
    pub fn data_members(self, members: usize) -> usize {
        match self {
            Level::Single => 1,
            Level::Raid0 => members,
        }
    }
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

/// The shape of an array: level, member count, chunk and data area size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    level: Level,
    members: usize,
    chunk_sectors: u32,
    member_sectors: u64,
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
        if !chunk_sectors.is_power_of_two()
            || !(MIN_CHUNK_SECTORS..=MAX_CHUNK_SECTORS).contains(&chunk_sectors)
        {
            return Err(GeometryError::Chunk);
        }
        let member_sectors = member_sectors & !(chunk_sectors as u64 - 1);
        if member_sectors == 0 {
            return Err(GeometryError::TooSmall);
        }
        Ok(Geometry { level, members, chunk_sectors, member_sectors })
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
        self.members
    }

    /// Chunk size in sectors.
    pub fn chunk_sectors(&self) -> u32 {
        self.chunk_sectors
    }

    /// Data area of each member in sectors (a multiple of the chunk).
    pub fn member_sectors(&self) -> u64 {
        self.member_sectors
    }

    /// Logical size of the volume in sectors.
    pub fn capacity(&self) -> u64 {
        self.member_sectors * self.level.data_members(self.members) as u64
    }

    /// Data sectors in one full stripe (the optimal I/O size).
    pub fn stripe_sectors(&self) -> u64 {
        self.chunk_sectors as u64 * self.level.data_members(self.members) as u64
    }

    fn chunk_shift(&self) -> u32 {
        self.chunk_sectors.trailing_zeros()
    }

    /// Whether runs must be cut at chunk boundaries.
    fn is_striped(&self) -> bool {
        !matches!(self.level, Level::Single)
    }

    /// Where the (only) data copy of logical sector `logical` lives.
    ///
    /// `logical` must be below [`Geometry::capacity`].
    pub fn locate(&self, logical: u64) -> Location {
        debug_assert!(logical < self.capacity());
        match self.level {
            Level::Single => Location { member: 0, sector: logical },
            Level::Raid0 => {
                let shift = self.chunk_shift();
                let chunk = logical >> shift;
                let offset = logical & (self.chunk_sectors as u64 - 1);
                let n = self.members as u64;
                Location { member: (chunk % n) as usize, sector: ((chunk / n) << shift) + offset }
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
    /// (single and raid0): the range a discard or write-zeroes of the logical
    /// range becomes on that member. `None` if the member holds none of it.
    pub fn member_span(&self, start: u64, sectors: u64, member: usize) -> Option<Span> {
        if sectors == 0 || member >= self.members {
            return None;
        }
        let end = start + sectors;
        match self.level {
            Level::Single => Some(Span { sector: start, sectors }),
            Level::Raid0 => {
                let shift = self.chunk_shift();
                let chunk = self.chunk_sectors as u64;
                let n = self.members as u64;
                let m = member as u64;
                let (first, last) = (start >> shift, (end - 1) >> shift);
                // First and last chunks of the range that live on this member.
                let c1 = first + (m + n - first % n) % n;
                if c1 > last {
                    return None;
                }
                let c2 = last - (last % n + n - m) % n;
                let lo = ((c1 / n) << shift) + if c1 == first { start & (chunk - 1) } else { 0 };
                let hi = ((c2 / n) << shift) + if c2 == last { ((end - 1) & (chunk - 1)) + 1 } else { chunk };
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

    #[test]
    fn member_span_matches_pieces() {
        for n in 2..=5 {
            let g = raid0(n);
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
                            let l = g.locate(p.logical);
                            if l.member == m {
                                lo = lo.min(l.sector);
                                hi = hi.max(l.sector + p.sectors);
                                total += p.sectors;
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
    }

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
        }
        assert_eq!(Level::from_name("raid6"), None);
    }
}
