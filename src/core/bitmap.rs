//! The write-intent bitmap: one bit per *region* of the volume (64 MiB by
//! default), set and durable on every member in sync before the first write
//! into a clean region, cleared lazily once the region has been quiet and
//! its writes are durable. After an unclean shutdown, only the regions whose
//! bit is set can hold copies or parity that disagree: assembly resyncs
//! those ([`super::scrub`] in repair mode over them) instead of the whole
//! array, as md's bitmap does.
//!
//! Keeps invariant 10 of the theory (see the crate documentation).
//!
//! On disk the bitmap lives in the reserved tail of every member
//! ([`super::tail::BITMAP_OFFSET`], 4 MiB: 32 Mi regions), bit `r` in byte
//! `r / 8`, bit `r % 8`, written in 4 KiB blocks; the superblock says a
//! bitmap is in use and gives the region size (format, flag bit 2).
//!
//! Clearing rule ([`may_clear`]): a region's bit may go only when no write
//! into it is running, none started since the flush that made the earlier
//! ones durable began, it has been quiet for a while (so that busy regions
//! do not flip), and every role is in sync: while a member is missing (or
//! being rebuilt), the bits of what was written meanwhile stay, so that the
//! member, re-added, is rebuilt only there ([`readd_skips`]).
//!
//! At a clean unload every bit of the live image is cleared: a bit set at
//! load means an unclean shutdown, which is what the resync and the refusal
//! of a dirty degraded raid5 rest on. So that a member missing across
//! reloads can still be re-added, the live bits are first merged into the
//! *kept* image ([`keep_at_stop`]), in the second half of the bitmap area,
//! when a role is out of sync; the kept image is zeroed at a clean unload
//! with every role in sync. A re-add skips only regions clear in both
//! images: from the moment a member leaves in sync, every region written
//! since has its bit set in one of them, whatever loads and power cuts
//! come between.

use super::engine::{IoError, MemberIo};
use super::health::{Health, Roles};
use super::layout::SECTOR_SHIFT;
use super::tail::{tail_start, BITMAP_OFFSET, KEPT_OFFSET};

/// Default region, in sectors (64 MiB).
pub const DEFAULT_REGION_SECTORS: u64 = 64 << 11;

/// Smallest region, in sectors (1 MiB): larger than any stripe's data.
pub const MIN_REGION_SECTORS: u64 = 1 << 11;

/// Bytes of one bitmap block (the unit written).
pub const BLOCK_BYTES: usize = 4096;

/// Regions one block holds.
pub const REGIONS_PER_BLOCK: u64 = (BLOCK_BYTES * 8) as u64;

/// Most regions an image (half the bitmap area) holds.
pub const MAX_REGIONS: u64 = (KEPT_OFFSET << SECTOR_SHIFT) * 8;

/// How long a region must be quiet before its bit is cleared, in
/// milliseconds.
pub const QUIET_MS: u64 = 5000;

/// The bitmap of a volume of `capacity` sectors in regions of
/// `region_sectors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapGeometry {
    region_shift: u32,
    regions: u64,
}

impl BitmapGeometry {
    /// The bitmap for `capacity` sectors with regions of `region_sectors`
    /// (a power of two, at least [`MIN_REGION_SECTORS`]); `None` if the
    /// region is not valid or the bitmap area cannot hold the bits.
    pub fn new(capacity: u64, region_sectors: u64) -> Option<BitmapGeometry> {
        if !region_sectors.is_power_of_two() || region_sectors < MIN_REGION_SECTORS {
            return None;
        }
        let region_shift = region_sectors.trailing_zeros();
        let regions = capacity.div_ceil(region_sectors);
        (regions <= MAX_REGIONS).then_some(BitmapGeometry { region_shift, regions })
    }

    /// Sectors per region.
    pub fn region_sectors(&self) -> u64 {
        1 << self.region_shift
    }

    /// Number of regions.
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Bytes of the in-memory image (whole blocks).
    pub fn image_bytes(&self) -> usize {
        (self.regions.div_ceil(REGIONS_PER_BLOCK) as usize).max(1) * BLOCK_BYTES
    }

    /// The regions `[first, last]` that logical `[start, start + sectors)`
    /// touches (`sectors` > 0).
    pub fn regions_of(&self, start: u64, sectors: u64) -> (u64, u64) {
        let last = start.saturating_add(sectors.max(1)) - 1;
        (start >> self.region_shift, (last >> self.region_shift).min(self.regions.saturating_sub(1)))
    }

    /// Logical `[start, end)` of region `r`, within `capacity`.
    pub fn region_range(&self, r: u64, capacity: u64) -> (u64, u64) {
        let start = r << self.region_shift;
        (start.min(capacity), (start + self.region_sectors()).min(capacity))
    }
}

/// Whether region `r`'s bit is set in `image`.
pub fn is_set(image: &[u8], r: u64) -> bool {
    image.get((r / 8) as usize).is_some_and(|b| b & (1 << (r % 8)) != 0)
}

/// Sets or clears region `r`'s bit in `image`; returns whether it changed.
pub fn set(image: &mut [u8], r: u64, on: bool) -> bool {
    let Some(b) = image.get_mut((r / 8) as usize) else { return false };
    let mask = 1u8 << (r % 8);
    let was = *b & mask != 0;
    if on {
        *b |= mask;
    } else {
        *b &= !mask;
    }
    was != on
}

/// The block of the image that holds region `r`'s bit.
pub fn block_of(r: u64) -> usize {
    (r / REGIONS_PER_BLOCK) as usize
}

/// Member sector of block `block` of the live image on a member of
/// `device_sectors`.
pub fn block_sector(device_sectors: u64, block: usize) -> u64 {
    tail_start(device_sectors) + BITMAP_OFFSET + (block as u64) * (BLOCK_BYTES as u64 >> SECTOR_SHIFT)
}

/// Member sector of block `block` of the kept image.
pub fn kept_block_sector(device_sectors: u64, block: usize) -> u64 {
    block_sector(device_sectors, block) + KEPT_OFFSET
}

/// At a clean unload, before the live image is cleared: with a role out of
/// sync (`all_in_sync` false) the live bits are merged into `kept`, else
/// `kept` is zeroed. Returns the blocks of `kept` that changed (those are
/// written, durable, before any live bit is cleared). The images have the
/// same length, at most [`MAX_REGIONS`] bits.
pub fn keep_at_stop(live: &[u8], kept: &mut [u8], all_in_sync: bool) -> ChangedBlocks {
    let mut changed = ChangedBlocks { bits: [0; CHANGED_WORDS], next: 0 };
    for (i, (k, l)) in kept.iter_mut().zip(live).enumerate() {
        let new = if all_in_sync { 0 } else { *k | *l };
        if new != *k {
            *k = new;
            let block = i / BLOCK_BYTES;
            if let Some(w) = changed.bits.get_mut(block / 64) {
                *w |= 1 << (block % 64);
            }
        }
    }
    changed
}

const CHANGED_WORDS: usize = (MAX_REGIONS / REGIONS_PER_BLOCK).div_ceil(64) as usize;

/// The blocks of an image that changed, in order (an iterator that owns
/// its state, so the image can be written while it runs).
#[derive(Clone, Debug)]
pub struct ChangedBlocks {
    bits: [u64; CHANGED_WORDS],
    next: usize,
}

impl Iterator for ChangedBlocks {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        while self.next < CHANGED_WORDS * 64 {
            let b = self.next;
            self.next += 1;
            if self.bits[b / 64] & (1 << (b % 64)) != 0 {
                return Some(b);
            }
        }
        None
    }
}

/// What the clearing rule looks at, per region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionActivity {
    /// Writes into the region running now.
    pub running: u32,
    /// When the last write into it started (monotonic ms).
    pub last_start_ms: u64,
}

/// Whether a set bit may be cleared: see the module documentation.
/// `flush_started_ms` is when the flush that made completed writes durable
/// began.
pub fn may_clear(a: RegionActivity, flush_started_ms: u64, now_ms: u64, all_in_sync: bool) -> bool {
    all_in_sync
        && a.running == 0
        && a.last_start_ms < flush_started_ms
        && now_ms.saturating_sub(a.last_start_ms) >= QUIET_MS
}

/// Whether a rebuild of a re-added member may skip logical `[start, end)`:
/// none of its regions' bits is set in the live image `live` nor in the
/// kept image `kept`. Only for a member that left in sync: bits are kept
/// from its departure on (see the clearing rule), so a clean region holds
/// on it what it held when it left, which is what the others hold.
pub fn readd_skips(geo: &BitmapGeometry, live: &[u8], kept: &[u8], start: u64, end: u64) -> bool {
    if end <= start {
        return true;
    }
    let (first, last) = geo.regions_of(start, end - start);
    !(first..=last).any(|r| is_set(live, r) || is_set(kept, r))
}

/// Whether the bit of any region from `from` on is set on any of `roles`
/// (bitmaps of members in sync, read block by block through `buf`, at
/// least one block).
pub fn any_set<I: MemberIo>(
    io: &mut I,
    roles: Roles,
    device_sectors: &[u64],
    geo: &BitmapGeometry,
    from: u64,
    buf: &mut [u8],
) -> Result<bool, IoError> {
    let buf = buf.get_mut(..BLOCK_BYTES).ok_or(IoError { member: 0, errno: -22 })?;
    let blocks = geo.image_bytes() / BLOCK_BYTES;
    for role in roles.iter() {
        let device = device_sectors.get(role).copied().unwrap_or(0);
        for block in 0..blocks {
            let first = block as u64 * REGIONS_PER_BLOCK;
            let last = (first + REGIONS_PER_BLOCK).min(geo.regions());
            if last <= from {
                continue;
            }
            io.read(role, block_sector(device, block), buf)?;
            if (first.max(from)..last).any(|r| is_set(buf, r - first)) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The first region whose dirt would make a start unsafe: with parity, a
/// stripe written when the power went may hold data and parity that
/// disagree, and where a member is out of sync that parity is all there is
/// to rebuild it from, so md refuses a dirty degraded start. With a role
/// failed, that is every region; with only a rebuild under way, the regions
/// reaching its position or beyond (below it every member is in sync and
/// the resync recomputes the parity). None: no dirt can make it unsafe
/// (no parity, or nothing out of sync).
pub fn unsafe_dirt_from(parity: bool, health: &Health, region_sectors: u64) -> Option<u64> {
    if !parity {
        return None;
    }
    if !health.failed.is_empty() {
        return Some(0);
    }
    // A region [r * size, (r + 1) * size) reaches the position when
    // (r + 1) * size > position. Positions are stripe-aligned, so a
    // region ending at or below it has only stripes wholly below it.
    health.rebuild.map(|r| r.position / region_sectors.max(1))
}

/// The dirty regions of `image`, in order.
pub fn dirty(image: &[u8], regions: u64) -> impl Iterator<Item = u64> + '_ {
    (0..regions).filter(move |&r| is_set(image, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::format::Rebuild;

    #[test]
    fn geometry_and_bits() {
        let g = BitmapGeometry::new(1000 * DEFAULT_REGION_SECTORS + 5, DEFAULT_REGION_SECTORS).unwrap();
        assert_eq!(g.regions(), 1001);
        assert_eq!(g.image_bytes(), BLOCK_BYTES);
        assert_eq!(g.regions_of(0, 1), (0, 0));
        assert_eq!(g.regions_of(DEFAULT_REGION_SECTORS - 1, 2), (0, 1));
        assert_eq!(g.regions_of(1000 * DEFAULT_REGION_SECTORS, 5), (1000, 1000));
        assert_eq!(g.region_range(1000, 1000 * DEFAULT_REGION_SECTORS + 5).1, 1000 * DEFAULT_REGION_SECTORS + 5);
        assert!(BitmapGeometry::new(1 << 40, 1000).is_none());
        assert!(BitmapGeometry::new(1 << 40, 1024).is_none());
        // 4 MiB of bits with 1 MiB regions: 32 TiB.
        assert!(BitmapGeometry::new(MAX_REGIONS * MIN_REGION_SECTORS, MIN_REGION_SECTORS).is_some());
        assert!(BitmapGeometry::new(MAX_REGIONS * MIN_REGION_SECTORS + 1, MIN_REGION_SECTORS).is_none());
        let mut image = [0u8; BLOCK_BYTES];
        assert!(set(&mut image, 9, true));
        assert!(!set(&mut image, 9, true));
        assert!(is_set(&image, 9) && !is_set(&image, 8));
        assert_eq!(image[1], 2);
        assert_eq!(dirty(&image, 100).collect::<std::vec::Vec<_>>(), [9]);
        assert!(set(&mut image, 9, false));
        assert!(!is_set(&image, 9));
        assert_eq!(block_of(REGIONS_PER_BLOCK), 1);
        assert_eq!(block_sector(1 << 30, 1), (1 << 30) - super::super::layout::RESERVED_TAIL_SECTORS + BITMAP_OFFSET + 8);
        assert_eq!(kept_block_sector(1 << 30, 1), block_sector(1 << 30, 1) + 4096);
    }

    #[test]
    fn readd_skips_only_regions_clear_in_both_images() {
        let g = BitmapGeometry::new(100 * MIN_REGION_SECTORS, MIN_REGION_SECTORS).unwrap();
        let mut live = [0u8; BLOCK_BYTES];
        let mut kept = [0u8; BLOCK_BYTES];
        set(&mut live, 3, true);
        set(&mut kept, 7, true);
        let r = MIN_REGION_SECTORS;
        assert!(readd_skips(&g, &live, &kept, 0, 3 * r));
        assert!(!readd_skips(&g, &live, &kept, 0, 3 * r + 1));
        assert!(!readd_skips(&g, &live, &kept, 3 * r + 5, 3 * r + 6));
        assert!(readd_skips(&g, &live, &kept, 4 * r, 7 * r));
        assert!(!readd_skips(&g, &live, &kept, 4 * r, 10 * r), "set in the kept image only");
        assert!(readd_skips(&g, &live, &kept, 8 * r, 10 * r));
        assert!(readd_skips(&g, &live, &kept, 5, 5));
    }

    /// The first blocks an iterator yields (at most four), and how many.
    fn first4(it: impl Iterator<Item = usize>) -> ([usize; 4], usize) {
        let mut out = [usize::MAX; 4];
        let mut n = 0;
        for b in it {
            if let Some(o) = out.get_mut(n) {
                *o = b;
            }
            n += 1;
        }
        (out, n)
    }

    #[test]
    fn kept_image_carries_live_bits_while_a_role_is_out_of_sync() {
        let mut live = [0u8; 3 * BLOCK_BYTES];
        let mut kept = [0u8; 3 * BLOCK_BYTES];
        set(&mut live, 5, true);
        set(&mut live, 2 * REGIONS_PER_BLOCK + 1, true);
        let (changed, n) = first4(keep_at_stop(&live, &mut kept, false));
        assert_eq!(changed[..n], [0, 2]);
        assert!(is_set(&kept, 5) && is_set(&kept, 2 * REGIONS_PER_BLOCK + 1));
        // Merged, never replaced: a later load's bits add to them.
        let mut later = [0u8; 3 * BLOCK_BYTES];
        set(&mut later, REGIONS_PER_BLOCK + 9, true);
        set(&mut later, 5, true);
        let (changed, n) = first4(keep_at_stop(&later, &mut kept, false));
        assert_eq!(changed[..n], [1]);
        assert!(is_set(&kept, 5) && is_set(&kept, REGIONS_PER_BLOCK + 9) && is_set(&kept, 2 * REGIONS_PER_BLOCK + 1));
        assert_eq!(keep_at_stop(&later, &mut kept, false).count(), 0, "nothing new: nothing to write");
        // Every role in sync again: the kept image goes.
        let (changed, n) = first4(keep_at_stop(&later, &mut kept, true));
        assert_eq!(changed[..n], [0, 1, 2]);
        assert!(kept.iter().all(|&b| b == 0));
        assert_eq!(keep_at_stop(&live, &mut kept, true).count(), 0);
    }

    #[test]
    fn dirt_is_unsafe_where_parity_must_rebuild_a_member() {
        let clean = Health::default();
        assert_eq!(unsafe_dirt_from(true, &clean, 2048), None);
        let failed = Health { failed: Roles::one(1), rebuild: None };
        assert_eq!(unsafe_dirt_from(true, &failed, 2048), Some(0));
        assert_eq!(unsafe_dirt_from(false, &failed, 2048), None);
        let rebuilding = Health { failed: Roles::NONE, rebuild: Some(Rebuild { role: 2, position: 5 * 2048 }) };
        // Regions 0..4 end at or below the position; region 5 starts there.
        assert_eq!(unsafe_dirt_from(true, &rebuilding, 2048), Some(5));
        let mid = Health { failed: Roles::NONE, rebuild: Some(Rebuild { role: 2, position: 5 * 2048 + 256 }) };
        assert_eq!(unsafe_dirt_from(true, &mid, 2048), Some(5));
        let both = Health { failed: Roles::one(0), rebuild: Some(Rebuild { role: 2, position: 5 * 2048 }) };
        assert_eq!(unsafe_dirt_from(true, &both, 2048), Some(0));
    }

    /// One member's bitmap image, block by block; every read counted.
    struct OneBitmap {
        image: std::vec::Vec<u8>,
        device: u64,
        reads: usize,
    }

    impl MemberIo for OneBitmap {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            assert_eq!(member, 0);
            let block = ((sector - block_sector(self.device, 0)) / 8) as usize;
            buf[..BLOCK_BYTES].copy_from_slice(&self.image[block * BLOCK_BYTES..][..BLOCK_BYTES]);
            self.reads += 1;
            Ok(())
        }
        fn write(&mut self, _: usize, _: u64, _: &[u8]) -> Result<(), IoError> {
            unreachable!()
        }
        fn flush(&mut self) -> Result<(), IoError> {
            Ok(())
        }
        fn publish(&mut self, _: &super::super::route::View) {}
        fn checkpoint_requested(&mut self) -> bool {
            false
        }
    }

    #[test]
    fn any_set_looks_from_the_given_region() {
        let regions = 3 * REGIONS_PER_BLOCK;
        let g = BitmapGeometry::new(regions * MIN_REGION_SECTORS, MIN_REGION_SECTORS).unwrap();
        let mut io = OneBitmap { image: std::vec![0; g.image_bytes()], device: 1 << 40, reads: 0 };
        let mut buf = [0u8; BLOCK_BYTES];
        let dev = [1u64 << 40];
        assert!(!any_set(&mut io, Roles::one(0), &dev, &g, 0, &mut buf).unwrap());
        assert_eq!(io.reads, 3);
        // A bit in the second block: seen from any region up to it, not past it.
        let r = REGIONS_PER_BLOCK + 7;
        set(&mut io.image[BLOCK_BYTES..], 7, true);
        for (from, seen) in [(0, true), (REGIONS_PER_BLOCK, true), (r, true), (r + 1, false), (2 * REGIONS_PER_BLOCK, false)] {
            io.reads = 0;
            assert_eq!(any_set(&mut io, Roles::one(0), &dev, &g, from, &mut buf).unwrap(), seen, "from {from}");
            // Blocks wholly below `from` are not read.
            assert!(io.reads <= 3 - (from / REGIONS_PER_BLOCK) as usize, "from {from}: {} reads", io.reads);
        }
    }

    #[test]
    fn clearing_rule() {
        let quiet = RegionActivity { running: 0, last_start_ms: 100 };
        assert!(may_clear(quiet, 200, 100 + QUIET_MS, true));
        // A role out of sync keeps every bit (a re-add rebuilds from them).
        assert!(!may_clear(quiet, 200, 100 + QUIET_MS, false));
        // A write running, one started after the flush began, or too
        // recent: the bit stays.
        assert!(!may_clear(RegionActivity { running: 1, ..quiet }, 200, 100 + QUIET_MS, true));
        assert!(!may_clear(quiet, 100, 100 + QUIET_MS, true));
        assert!(!may_clear(quiet, 200, 100 + QUIET_MS - 1, true));
    }
}
