//! The moved-unit map: which units a migration with the new layout in
//! effect at once has moved out of order, ahead of its checkpoint.
//!
//! Keeps invariant 11 of the theory (see the crate documentation): a unit
//! is marked moved only once its rows are durable in the target layout, and
//! its bit is durable on every member in sync before any host write lands
//! in it; bits are only ever set during a migration, so a member whose
//! write of a bit was torn by a power cut holds a subset of the others',
//! and the union of the members' maps is the map.
//!
//! On disk the map sits in every member's reserved tail at [`MOVED_OFFSET`]
//! (see [`super::tail`]): bit `u % 8` of byte `u / 8` is unit `u`. Only the
//! blocks a migration's units need are used; they are zeroed before the
//! first superblock of a migration that keeps a map is written, so bits of
//! an earlier migration never count. In memory the shell keeps the map in
//! 64-bit atomic words (bit `u % 64` of word `u / 64`: the same bytes in
//! little-endian order), set by the engine and read by host requests
//! without a lock.

use core::sync::atomic::{AtomicU64, Ordering};

use super::tail::{tail_start, MOVED_OFFSET, MOVED_SECTORS};

/// Bytes in one block of the map, the unit of its writes.
pub const BLOCK_BYTES: usize = 4096;
/// Sectors in one block of the map.
pub const BLOCK_SECTORS: u64 = (BLOCK_BYTES >> 9) as u64;
/// Units one block maps.
pub const UNITS_PER_BLOCK: u64 = BLOCK_BYTES as u64 * 8;
/// The most units a map can hold (about 24 million: 24 TiB of 1 MiB
/// units); a migration with more units keeps no map and makes its new
/// capacity usable only at its end.
pub const MAX_UNITS: u64 = MOVED_SECTORS / BLOCK_SECTORS * UNITS_PER_BLOCK;

const WORD_BITS: u64 = 64;
const WORDS_PER_BLOCK: usize = BLOCK_BYTES / 8;

/// Words of memory a map of `units` units takes.
pub fn words(units: u64) -> usize {
    (units.saturating_add(WORD_BITS - 1) / WORD_BITS) as usize
}

/// Blocks of the tail a map of `units` units uses.
pub fn blocks(units: u64) -> u64 {
    units.saturating_add(UNITS_PER_BLOCK - 1) / UNITS_PER_BLOCK
}

/// The block holding unit `unit`'s bit.
pub fn block_of(unit: u64) -> u64 {
    unit / UNITS_PER_BLOCK
}

/// Member sector of block `block` of the map on a member of
/// `device_sectors` sectors.
pub fn block_sector(device_sectors: u64, block: u64) -> u64 {
    tail_start(device_sectors) + MOVED_OFFSET + block * BLOCK_SECTORS
}

/// Whether unit `unit` is marked moved in `map` (false past its end: a
/// migration without a map moves nothing out of order).
pub fn is_moved(map: &[AtomicU64], unit: u64) -> bool {
    let word = (unit / WORD_BITS) as usize;
    map.get(word).is_some_and(|w| w.load(Ordering::Acquire) & (1 << (unit % WORD_BITS)) != 0)
}

/// Marks unit `unit` moved in memory (its bit durable on the members
/// first: [`encode_block`] with it set, written, flushed).
pub fn set_moved(map: &[AtomicU64], unit: u64) {
    if let Some(w) = map.get((unit / WORD_BITS) as usize) {
        w.fetch_or(1 << (unit % WORD_BITS), Ordering::Release);
    }
}

/// The last unit marked moved, if any.
pub fn last_moved(map: &[AtomicU64]) -> Option<u64> {
    map.iter().enumerate().rev().find_map(|(i, w)| {
        let word = w.load(Ordering::Acquire);
        (word != 0).then(|| i as u64 * WORD_BITS + (WORD_BITS - 1 - word.leading_zeros() as u64))
    })
}

/// Writes block `block` of `map` into `buf` ([`BLOCK_BYTES`] long), with
/// unit `also`'s bit set too if it lies in that block.
pub fn encode_block(map: &[AtomicU64], block: u64, also: Option<u64>, buf: &mut [u8]) {
    let first = block as usize * WORDS_PER_BLOCK;
    for (i, bytes) in buf.chunks_exact_mut(8).take(WORDS_PER_BLOCK).enumerate() {
        let mut word = map.get(first + i).map_or(0, |w| w.load(Ordering::Acquire));
        if let Some(u) = also.filter(|&u| (u / WORD_BITS) as usize == first + i) {
            word |= 1 << (u % WORD_BITS);
        }
        bytes.copy_from_slice(&word.to_le_bytes());
    }
}

/// Adds the bits of block `block`, read from a member into `buf`, to
/// `map`; bits past the map's `units` are ignored. Returns how many units
/// the block marks.
pub fn merge_block(map: &[AtomicU64], units: u64, block: u64, buf: &[u8]) -> u64 {
    let first = block as usize * WORDS_PER_BLOCK;
    let mut marked = 0;
    for (i, bytes) in buf.chunks_exact(8).take(WORDS_PER_BLOCK).enumerate() {
        let index = first + i;
        let Some(w) = map.get(index) else { break };
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        let mut word = u64::from_le_bytes(b);
        let base = index as u64 * WORD_BITS;
        if base + WORD_BITS > units {
            let keep = units.saturating_sub(base);
            word &= if keep == 0 { 0 } else { u64::MAX >> (WORD_BITS - keep) };
        }
        marked += word.count_ones() as u64;
        w.fetch_or(word, Ordering::Release);
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn map(units: u64) -> Vec<AtomicU64> {
        (0..words(units)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn bits_round_trip_through_blocks() {
        let units = UNITS_PER_BLOCK + 100;
        let m = map(units);
        assert_eq!(blocks(units), 2);
        for u in [0, 7, 8, 63, 64, UNITS_PER_BLOCK - 1, UNITS_PER_BLOCK, units - 1] {
            set_moved(&m, u);
        }
        let mut buf = [0u8; BLOCK_BYTES];
        encode_block(&m, 0, None, &mut buf);
        // Bit u % 8 of byte u / 8.
        assert_eq!(buf[0], 0x81);
        assert_eq!(buf[1], 0x01);
        assert_eq!(buf[7], 0x80);
        assert_eq!(buf[8], 0x01);
        assert_eq!(buf[BLOCK_BYTES - 1], 0x80);
        let back = map(units);
        assert_eq!(merge_block(&back, units, 0, &buf), 6);
        encode_block(&m, 1, None, &mut buf);
        assert_eq!(merge_block(&back, units, 1, &buf), 2);
        for u in 0..units {
            assert_eq!(is_moved(&back, u), is_moved(&m, u), "unit {u}");
        }
    }

    #[test]
    fn also_sets_one_more_bit_and_stray_bits_are_ignored() {
        let m = map(100);
        let mut buf = [0u8; BLOCK_BYTES];
        encode_block(&m, 0, Some(70), &mut buf);
        assert!(!is_moved(&m, 70), "memory only takes the bit once it is durable");
        assert_eq!(buf[70 / 8], 1 << (70 % 8));
        // Bits past the map's units, as a torn or foreign block may hold.
        buf.fill(0xFF);
        assert_eq!(merge_block(&m, 100, 0, &buf), 100);
        assert!(is_moved(&m, 99) && !is_moved(&m, 100) && !is_moved(&m, 1 << 40));
        assert_eq!(last_moved(&m), Some(99));
        let fresh = map(100);
        assert_eq!(last_moved(&fresh), None);
        set_moved(&fresh, 64);
        assert_eq!(last_moved(&fresh), Some(64));
        assert_eq!(block_sector(1 << 30, 1), tail_start(1 << 30) + MOVED_OFFSET + 8);
    }
}
