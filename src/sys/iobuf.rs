//! Buffers for synchronous member I/O (the migration, the load sequence and
//! raid5 writes): vmalloc memory, so that a buffer of any size is one
//! allocation and its pages can be handed to bios.

use crate::sys::{bio::BioSet, member::Member};
use core::marker::PhantomData;
use kernel::prelude::*;

/// A zeroed vmalloc buffer.
pub(crate) struct IoBuf {
    mem: VVec<u8>,
}

impl IoBuf {
    /// Allocates `bytes` (rounded up to whole sectors).
    pub(crate) fn new(bytes: usize) -> Result<IoBuf> {
        let bytes = (bytes + 511) & !511;
        Ok(IoBuf { mem: VVec::from_elem(0u8, bytes, GFP_KERNEL)? })
    }

    /// The memory, and a token that lets member I/O check that slices of it
    /// are this buffer's vmalloc memory. Both borrow the buffer, so the
    /// token cannot outlive it.
    pub(crate) fn split(&mut self) -> (&mut [u8], Region<'_>) {
        let region = Region { base: self.mem.as_ptr() as usize, len: self.mem.len(), _buf: PhantomData };
        (self.mem.as_mut_slice(), region)
    }
}

/// The address range of an [`IoBuf`], valid while the buffer is borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    base: usize,
    len: usize,
    _buf: PhantomData<&'a ()>,
}

impl Region<'_> {
    fn holds(&self, buf: &[u8]) -> bool {
        let start = buf.as_ptr() as usize;
        start >= self.base && start + buf.len() <= self.base + self.len && buf.len() % 512 == 0
    }

    /// Reads `buf.len()` bytes at `sector` of `member` into `buf`, a slice of
    /// this region's buffer.
    pub(crate) fn read(&self, bs: &BioSet, member: &Member, sector: u64, buf: &mut [u8]) -> Result {
        if !self.holds(buf) {
            return Err(EINVAL);
        }
        // SAFETY: `buf` is vmalloc memory of this region (checked), alive
        // while the region's buffer is borrowed, and borrowed exclusively
        // for the duration of the call.
        unsafe { bs.sync_io(member, false, 0, sector, buf.as_mut_ptr(), buf.len()) }
    }

    /// Writes `buf`, a slice of this region's buffer, at `sector` of
    /// `member`, with extra request flags `opf_flags` (such as FUA).
    pub(crate) fn write(
        &self,
        bs: &BioSet,
        member: &Member,
        opf_flags: kernel::bindings::blk_opf_t,
        sector: u64,
        buf: &[u8],
    ) -> Result {
        if !self.holds(buf) {
            return Err(EINVAL);
        }
        // SAFETY: as in `read`; a write only reads the memory.
        unsafe { bs.sync_io(member, true, opf_flags, sector, buf.as_ptr().cast_mut(), buf.len()) }
    }

    /// Reads the ranges `(member, sector, at, len)` of `buf`, a slice of
    /// this region's buffer (`at` counted from its start; the ranges do not
    /// overlap), all submitted together, waiting for all. An error says
    /// that one failed, not which.
    pub(crate) fn read_batch<'m>(
        &self,
        bs: &BioSet,
        buf: &mut [u8],
        ranges: impl Iterator<Item = (&'m Member, u64, usize, usize)> + Clone,
    ) -> Result {
        let disjoint = ranges.clone().enumerate().all(|(i, (_, _, a, la))| {
            ranges.clone().skip(i + 1).all(|(_, _, b, lb)| a + la <= b || b + lb <= a)
        });
        if !self.holds_all(buf, ranges.clone()) || !disjoint {
            return Err(EINVAL);
        }
        let base = buf.as_mut_ptr();
        // SAFETY: every range lies in `buf` (checked), vmalloc memory of
        // this region (checked), alive while the region's buffer is borrowed
        // and borrowed exclusively for the call; the ranges do not overlap
        // (checked).
        unsafe { bs.sync_io_batch(0, ranges.map(move |(m, sector, at, len)| (m, sector, base.wrapping_add(at), len, false))) }
    }

    /// Writes the ranges `(member, sector, at, len)` of `buf`, as
    /// [`Region::read_batch`] reads them, with extra request flags
    /// `opf_flags` (such as FUA).
    pub(crate) fn write_batch<'m>(
        &self,
        bs: &BioSet,
        opf_flags: kernel::bindings::blk_opf_t,
        buf: &[u8],
        ranges: impl Iterator<Item = (&'m Member, u64, usize, usize)> + Clone,
    ) -> Result {
        if !self.holds_all(buf, ranges.clone()) {
            return Err(EINVAL);
        }
        let base = buf.as_ptr().cast_mut();
        // SAFETY: as in `read_batch`; a write only reads the memory.
        unsafe { bs.sync_io_batch(opf_flags, ranges.map(move |(m, sector, at, len)| (m, sector, base.wrapping_add(at), len, true))) }
    }

    /// Writes the ranges `writes` of `buf` and reads the ranges `reads`
    /// into it, `(member, sector, at, len)` as [`Region::read_batch`] takes
    /// them, all submitted together: no range read may overlap another
    /// range of either list in `buf` (checked).
    pub(crate) fn write_read_batch<'m>(
        &self,
        bs: &BioSet,
        buf: &mut [u8],
        writes: impl Iterator<Item = (&'m Member, u64, usize, usize)> + Clone,
        reads: impl Iterator<Item = (&'m Member, u64, usize, usize)> + Clone,
    ) -> Result {
        let apart = |(a, la): (usize, usize), (b, lb): (usize, usize)| a + la <= b || b + lb <= a;
        let disjoint = reads.clone().enumerate().all(|(i, (_, _, a, la))| {
            reads.clone().skip(i + 1).all(|(_, _, b, lb)| apart((a, la), (b, lb)))
                && writes.clone().all(|(_, _, b, lb)| apart((a, la), (b, lb)))
        });
        if !self.holds_all(buf, reads.clone()) || !self.holds_all(buf, writes.clone()) || !disjoint {
            return Err(EINVAL);
        }
        let base = buf.as_mut_ptr();
        let all = Iterator::chain(
            writes.map(move |(m, sector, at, len)| (m, sector, base.wrapping_add(at), len, true)),
            reads.map(move |(m, sector, at, len)| (m, sector, base.wrapping_add(at), len, false)),
        );
        // SAFETY: every range lies in `buf` (checked), vmalloc memory of
        // this region (checked), alive while the region's buffer is borrowed
        // and borrowed exclusively for the call; no range read overlaps
        // another range (checked).
        unsafe { bs.sync_io_batch(0, all) }
    }

    /// Whether `buf` is this region's and every range lies in it.
    fn holds_all<'m>(&self, buf: &[u8], mut ranges: impl Iterator<Item = (&'m Member, u64, usize, usize)>) -> bool {
        let fits = |at: usize, len: usize| at.checked_add(len).is_some_and(|end| end <= buf.len()) && len % 512 == 0;
        self.holds(buf) && ranges.all(|(_, _, at, len)| fits(at, len))
    }
}
