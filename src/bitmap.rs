//! The write-intent bitmap of a running array: which regions may hold copies
//! or parity that disagree after a power cut. The core's `bitmap` says where
//! the bits are and when one may be cleared; this file keeps them.
//!
//! - A write first counts itself in each region it touches; a region whose
//!   bit is not yet durable gets it set in the image and the image's block
//!   written, with FUA, to every member in sync before the write goes on
//!   (under the image's mutex, so blocks are written in the order of the
//!   image's changes). The count drops when the request ends (any context).
//! - The array thread clears quiet regions' bits (and every bit at a clean
//!   unload): it flushes every member,
//!   then, for regions still quiet and not written since the flush began,
//!   drops the "durable" mark first and the bit only if no write counted
//!   itself meanwhile, and writes the blocks. A write that finds the mark
//!   gone takes the mutex and sets the bit again.
//! - Regions dirty at load are *unsynced* until the thread has resynced them
//!   (a scrub in repair mode over the region); reads of raid1 and raid10
//!   there take the copy they always take, which the resync copies from,
//!   and raid5 writes there are reconstruct-writes. So is the capacity a migration
//!   adds past its source's end: marked unsynced (durably) by the
//!   migration instead of zeroed, and resynced once it is over.
//!
//! Memory: per region, a write count, a start time and three bits: with the
//! default 64 MiB regions, 12 bytes per 64 MiB of volume (192 KiB for 1 TiB).

use crate::{
    members::{Members, Who},
    raidmig_core::{
        bitmap::{self, BitmapGeometry, RegionActivity, BLOCK_BYTES},
        layout::Geometry,
    },
    sys::{iobuf::IoBuf, time},
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{bindings, new_mutex, prelude::*, sync::Mutex};

const FUA: bindings::blk_opf_t = 1 << bindings::req_flag_bits___REQ_FUA;

/// The on-disk images (live and kept, see the core's `bitmap`) and the
/// buffer their blocks are written from.
struct Image {
    bytes: KVec<u8>,
    kept: KVec<u8>,
    buf: IoBuf,
}

/// The live and kept images as read at load (each the union over the
/// members in sync).
pub(crate) type BitmapImages = (KVec<u8>, KVec<u8>);

/// One bit per region, set and tested from any context.
struct Bits(KVec<AtomicU64>);

impl Bits {
    fn new(regions: u64) -> Result<Bits> {
        let mut v = KVec::with_capacity(regions.div_ceil(64) as usize, GFP_KERNEL)?;
        for _ in 0..regions.div_ceil(64) {
            v.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Bits(v))
    }
    fn get(&self, r: u64) -> bool {
        self.0.get((r / 64) as usize).is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (r % 64)) != 0)
    }
    fn set(&self, r: u64, on: bool) {
        if let Some(w) = self.0.get((r / 64) as usize) {
            if on {
                w.fetch_or(1 << (r % 64), Ordering::SeqCst);
            } else {
                w.fetch_and(!(1 << (r % 64)), Ordering::SeqCst);
            }
        }
    }
}

/// A running array's bitmap (or none).
#[pin_data]
pub(crate) struct Bitmap {
    geo: Option<BitmapGeometry>,
    #[pin]
    image: Mutex<Option<Image>>,
    /// Regions whose bit is durable on every member in sync.
    marked: Bits,
    /// Regions dirty at load and not yet resynced.
    unsynced: Bits,
    running: KVec<AtomicU32>,
    last_start_ms: KVec<AtomicU64>,
}

impl Bitmap {
    /// The bitmap of layout `g` with regions of `region` sectors (none if
    /// `None`), starting from `loaded`, the live and kept images read from
    /// the members: the live image's set bits are durable and their regions
    /// unsynced.
    pub(crate) fn new(
        g: &Geometry,
        region: Option<u64>,
        loaded: Option<BitmapImages>,
    ) -> Result<impl PinInit<Self, Error>> {
        let geo = region.and_then(|r| BitmapGeometry::new(g.capacity(), r));
        let regions = geo.map_or(0, |b| b.regions());
        let marked = Bits::new(regions)?;
        let unsynced = Bits::new(regions)?;
        let mut running = KVec::with_capacity(regions as usize, GFP_KERNEL)?;
        let mut last_start_ms = KVec::with_capacity(regions as usize, GFP_KERNEL)?;
        for _ in 0..regions {
            running.push(AtomicU32::new(0), GFP_KERNEL)?;
            last_start_ms.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        let image = match geo {
            Some(b) => {
                let (mut bytes, mut kept) = match loaded {
                    Some(v) => v,
                    None => (KVec::new(), KVec::new()),
                };
                for v in [&mut bytes, &mut kept] {
                    let missing = b.image_bytes().saturating_sub(v.len());
                    v.extend_with(missing, 0, GFP_KERNEL)?;
                }
                for r in bitmap::dirty(&bytes, regions) {
                    marked.set(r, true);
                    unsynced.set(r, true);
                }
                Some(Image { bytes, kept, buf: IoBuf::new(BLOCK_BYTES)? })
            }
            None => None,
        };
        Ok(try_pin_init!(Bitmap {
            geo,
            image <- new_mutex!(image),
            marked,
            unsynced,
            running,
            last_start_ms,
        }))
    }

    /// Whether the array keeps a bitmap.
    pub(crate) fn active(&self) -> bool {
        self.geo.is_some()
    }

    /// The geometry, if the array keeps a bitmap.
    pub(crate) fn geometry(&self) -> Option<BitmapGeometry> {
        self.geo
    }

    /// A write of logical `[start, start + sectors)` begins: counted in its
    /// regions, whose bits are made durable first where they are not.
    /// Returns the regions to give to [`Bitmap::end_write`] when the write
    /// ends, or an error when no member could record a bit (then nothing
    /// is counted). Process context.
    pub(crate) fn start_write(
        &self,
        members: &Members,
        fail_member: &dyn Fn(usize, u64, bool) -> bool,
        start: u64,
        sectors: u64,
    ) -> Result<Option<(u32, u32)>> {
        let Some(geo) = self.geo else { return Ok(None) };
        if sectors == 0 {
            return Ok(None);
        }
        let (first, last) = geo.regions_of(start, sectors);
        self.count(first, last);
        for r in first..=last {
            if !self.marked.get(r) {
                if let Err(e) = self.mark(members, fail_member, r) {
                    self.end_write(first as u32, last as u32);
                    return Err(e);
                }
            }
        }
        Ok(Some((first as u32, last as u32)))
    }

    /// [`Bitmap::start_write`] for a write that must not wait (from
    /// `queue_rq`): counted only if every region it touches is marked
    /// durable already. `None`: not counted, a bit must be written first.
    /// `Some` holds what `start_write` returns.
    pub(crate) fn try_start_write(&self, start: u64, sectors: u64) -> Option<Option<(u32, u32)>> {
        let Some(geo) = self.geo else { return Some(None) };
        if sectors == 0 {
            return Some(None);
        }
        let (first, last) = geo.regions_of(start, sectors);
        // Counted before the marks are looked at, as `start_write` does: a
        // clear that drops a mark after this sees the count and keeps it.
        self.count(first, last);
        if (first..=last).all(|r| self.marked.get(r)) {
            Some(Some((first as u32, last as u32)))
        } else {
            self.end_write(first as u32, last as u32);
            None
        }
    }

    /// Counts a starting write in regions `first..=last`.
    fn count(&self, first: u64, last: u64) {
        let now = time::now().mono_ms;
        for r in first..=last {
            self.running[r as usize].fetch_add(1, Ordering::SeqCst);
            self.last_start_ms[r as usize].store(now, Ordering::SeqCst);
        }
    }

    /// Sets region `r`'s bit and writes its block to every member in sync.
    fn mark(&self, members: &Members, fail_member: &dyn Fn(usize, u64, bool) -> bool, r: u64) -> Result {
        let mut guard = self.image.lock();
        let Some(image) = guard.as_mut() else { return Ok(()) };
        if self.marked.get(r) {
            return Ok(());
        }
        bitmap::set(&mut image.bytes, r, true);
        write_block(members, fail_member, image, Half::Live, bitmap::block_of(r))?;
        self.marked.set(r, true);
        Ok(())
    }

    /// A write counted in regions `first..=last` ended (any context).
    pub(crate) fn end_write(&self, first: u32, last: u32) {
        for r in first..=last {
            if let Some(c) = self.running.get(r as usize) {
                c.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Clears the bits of regions quiet long enough (the array thread),
    /// unless a role is out of sync (its re-add rebuilds from the bits).
    /// Flushes every member first.
    pub(crate) fn clear_quiet(&self, members: &Members, fail_member: &dyn Fn(usize, u64, bool) -> bool) {
        let all_in_sync = members.health().out_of_sync().is_empty();
        self.clear(members, fail_member, time::now().mono_ms, all_in_sync);
    }

    /// Whether a re-added member's rebuild may skip logical `[start, end)`
    /// (no bit set there in either image); false without a bitmap.
    pub(crate) fn readd_skips(&self, start: u64, end: u64) -> bool {
        let Some(geo) = self.geo else { return false };
        let guard = self.image.lock();
        guard.as_ref().is_some_and(|image| bitmap::readd_skips(&geo, &image.bytes, &image.kept, start, end))
    }

    /// At unload (no write runs any more): clears every bit whose region
    /// is resynced, after a flush, so that a clean shutdown leaves nothing
    /// to resync (and a set bit at the next load means a crash). With a
    /// role out of sync the bits are merged into the kept image first, made
    /// durable before any is cleared, for the role's re-add after the next
    /// load; with every role in sync the kept image is zeroed.
    pub(crate) fn clear_at_stop(&self, members: &Members, fail_member: &dyn Fn(usize, u64, bool) -> bool) {
        let all_in_sync = members.health().out_of_sync().is_empty();
        {
            let mut guard = self.image.lock();
            let Some(image) = guard.as_mut() else { return };
            let Image { bytes, kept, .. } = &mut *image;
            for block in bitmap::keep_at_stop(bytes, kept, all_in_sync) {
                // Written with FUA: durable before any live bit goes.
                if write_block(members, fail_member, image, Half::Kept, block).is_err() {
                    pr_err!("{}: cannot record the bitmap kept for a re-add: bits left set\n", members.name());
                    return;
                }
            }
        }
        self.clear(members, fail_member, u64::MAX, true);
    }

    /// Clears the bits of regions quiet at `now` (monotonic ms; `u64::MAX`:
    /// every region without a running write).
    fn clear(&self, members: &Members, fail_member: &dyn Fn(usize, u64, bool) -> bool, now: u64, all_in_sync: bool) {
        let Some(geo) = self.geo else { return };
        let quiet = |r: u64| RegionActivity {
            running: self.running[r as usize].load(Ordering::SeqCst),
            last_start_ms: self.last_start_ms[r as usize].load(Ordering::SeqCst),
        };
        let candidate = |r: u64, flush_ms: u64| {
            self.marked.get(r) && !self.unsynced.get(r) && bitmap::may_clear(quiet(r), flush_ms, now, all_in_sync)
        };
        if !(0..geo.regions()).any(|r| candidate(r, now)) {
            return;
        }
        let flush_started = time::now().mono_ms;
        if members.flush_all(Who::Migration).is_err() {
            return;
        }
        let mut guard = self.image.lock();
        let Some(image) = guard.as_mut() else { return };
        let mut dirty_block = None::<usize>;
        for r in 0..geo.regions() {
            if !candidate(r, flush_started) {
                continue;
            }
            // Drop the mark before looking at the count one last time: a
            // write counted before sees the mark and goes on (and is seen
            // here); one counted after finds no mark and waits for the lock.
            self.marked.set(r, false);
            if self.running[r as usize].load(Ordering::SeqCst) != 0 {
                self.marked.set(r, true);
                continue;
            }
            bitmap::set(&mut image.bytes, r, false);
            let block = bitmap::block_of(r);
            if dirty_block.is_some_and(|b| b != block) {
                let _ = write_block(members, fail_member, image, Half::Live, dirty_block.unwrap_or(0));
            }
            dirty_block = Some(block);
        }
        if let Some(b) = dirty_block {
            let _ = write_block(members, fail_member, image, Half::Live, b);
        }
    }

    /// Marks the regions of logical `[start, end)` unsynced, as if dirty at
    /// load: their bits set and durable on every member in sync (each block
    /// written once, with FUA) before they count as marked, so that the
    /// thread resyncs them after a clean unload or a power cut as well. The
    /// capacity a migration adds past its source's end comes here instead of
    /// being zeroed. `Ok(false)` without a bitmap (the caller zeroes);
    /// an error when no member took a block.
    pub(crate) fn mark_unsynced(
        &self,
        members: &Members,
        fail_member: &dyn Fn(usize, u64, bool) -> bool,
        start: u64,
        end: u64,
    ) -> Result<bool> {
        let Some(geo) = self.geo else { return Ok(false) };
        if end <= start {
            return Ok(true);
        }
        let (first, last) = geo.regions_of(start, end - start);
        let mut guard = self.image.lock();
        let Some(image) = guard.as_mut() else { return Ok(false) };
        for r in first..=last {
            bitmap::set(&mut image.bytes, r, true);
        }
        // The regions are contiguous, so are their blocks: each written once.
        for b in bitmap::block_of(first)..=bitmap::block_of(last) {
            write_block(members, fail_member, image, Half::Live, b)?;
        }
        for r in first..=last {
            self.marked.set(r, true);
            self.unsynced.set(r, true);
        }
        Ok(true)
    }

    /// Whether logical `[start, start + sectors)` touches a region not yet
    /// resynced (any context).
    pub(crate) fn unsynced(&self, start: u64, sectors: u64) -> bool {
        let Some(geo) = self.geo else { return false };
        let (first, last) = geo.regions_of(start, sectors.max(1));
        (first..=last).any(|r| self.unsynced.get(r))
    }

    /// The first region not yet resynced.
    pub(crate) fn next_unsynced(&self) -> Option<u64> {
        let geo = self.geo?;
        (0..geo.regions()).find(|&r| self.unsynced.get(r))
    }

    /// Region `r` is resynced.
    pub(crate) fn resynced(&self, r: u64) {
        self.unsynced.set(r, false);
    }

    /// Regions whose bit is set (durably).
    pub(crate) fn dirty_count(&self) -> u64 {
        self.geo.map_or(0, |g| (0..g.regions()).filter(|&r| self.marked.get(r)).count() as u64)
    }

    /// Regions not yet resynced.
    pub(crate) fn unsynced_count(&self) -> u64 {
        self.geo.map_or(0, |g| (0..g.regions()).filter(|&r| self.unsynced.get(r)).count() as u64)
    }
}

/// Which of the two images.
#[derive(Clone, Copy)]
enum Half {
    Live,
    Kept,
}

/// Writes block `block` of the live or kept image to every member in sync,
/// with FUA. A member whose write fails is failed; an error only if none
/// took it.
fn write_block(
    members: &Members,
    fail_member: &dyn Fn(usize, u64, bool) -> bool,
    image: &mut Image,
    half: Half,
    block: usize,
) -> Result {
    let Image { bytes, kept, buf } = image;
    let (out, region) = buf.split();
    let from = block * BLOCK_BYTES;
    let src = match half {
        Half::Live => bytes.get(from..from + BLOCK_BYTES),
        Half::Kept => kept.get(from..from + BLOCK_BYTES),
    };
    let Some(src) = src else { return Err(EINVAL) };
    out[..BLOCK_BYTES].copy_from_slice(src);
    let identity = members.identity();
    let mut written = 0;
    for role in 0..members.count() {
        if members.dev(role).is_none() {
            continue;
        }
        let sector = match half {
            Half::Live => bitmap::block_sector(identity.device_sectors[role], block),
            Half::Kept => bitmap::kept_block_sector(identity.device_sectors[role], block),
        };
        match members.write(Who::Migration, &region, role, FUA, sector, &out[..BLOCK_BYTES]) {
            Ok(()) => written += 1,
            Err(e) => {
                fail_member(e.member, sector, true);
            }
        }
    }
    if written == 0 {
        return Err(EIO);
    }
    Ok(())
}
