//! The reserved tail of every member: where superblocks and the staging
//! area live.
//!
//! The last [`RESERVED_TAIL_SECTORS`] sectors (16 MiB) of every member device
//! belong to raidmig, wherever the data area ends; member `m`'s tail starts at
//! `device_sectors(m) - RESERVED_TAIL_SECTORS`. Offsets below are in 512-byte
//! sectors from the start of the tail:
//!
//! | offset | sectors | bytes | what |
//! |-------:|--------:|------:|------|
//! | 0      | 8       | 4 KiB | superblock slot 0 (even generations) |
//! | 8      | 8       | 4 KiB | superblock slot 1 (odd generations) |
//! | 16     | 2032    | ~1 MiB | reserved, zero |
//! | 2048   | 4096    | 2 MiB | write-intent bitmap: the live image (zero when the array keeps none) |
//! | 6144   | 4096    | 2 MiB | write-intent bitmap: the kept image, regions written while a role was out of sync, carried across clean shutdowns for a re-add (zero when the array keeps none) |
//! | 10240  | 6144    | 3 MiB | moved-unit map of a migration with the new layout in effect at once: bit `u % 8` of byte `u / 8` set once unit `u` is moved ahead of the checkpoint ([`super::moved`]); zero otherwise |
//! | 16384  | 16384   | 8 MiB | staging area: this member's rows of the unit in staging |
//!
//! A superblock update writes generation `g` to slot `g % 2` of every member,
//! so a torn write never touches the other slot, which keeps generation `g-1`.
//!
//! The staging area of member `m` holds, for the unit recorded as staged,
//! exactly what member `m` holds in the target layout for that unit's rows
//! (data, copies, parity), row after row from offset 0; finishing the unit is a
//! plain copy of it to the unit's rows on every member, which can be repeated.

use super::layout::{MAX_CHUNK_SECTORS, RESERVED_TAIL_SECTORS};

/// Bytes in a superblock (one slot).
pub const SUPERBLOCK_BYTES: usize = 4096;
/// Sectors in a superblock slot.
pub const SUPERBLOCK_SECTORS: u64 = 8;
/// Offset of the write-intent bitmap region in the tail, in sectors.
pub const BITMAP_OFFSET: u64 = 2048;
/// Size of the write-intent bitmap region, in sectors: the live image, then
/// the kept image, half each.
pub const BITMAP_SECTORS: u64 = 8192;
/// Offset of the kept image within the bitmap region, in sectors.
pub const KEPT_OFFSET: u64 = BITMAP_SECTORS / 2;
/// Offset of the moved-unit map in the tail, in sectors.
pub const MOVED_OFFSET: u64 = 10240;
/// Size of the moved-unit map region, in sectors (3 MiB).
pub const MOVED_SECTORS: u64 = 6144;
/// Offset of the staging area in the tail, in sectors.
pub const STAGING_OFFSET: u64 = 16384;
/// Size of the staging area, in sectors (8 MiB).
pub const STAGING_SECTORS: u64 = 16384;

// The regions of the tail do not overlap and fit in it.
const _: () = assert!(BITMAP_OFFSET >= 2 * SUPERBLOCK_SECTORS);
const _: () = assert!(BITMAP_OFFSET + BITMAP_SECTORS <= MOVED_OFFSET);
const _: () = assert!(MOVED_OFFSET + MOVED_SECTORS <= STAGING_OFFSET);
const _: () = assert!(STAGING_OFFSET + STAGING_SECTORS == RESERVED_TAIL_SECTORS);
// A unit of one stripe of the largest chunk fits the staging area, even for
// raid10 over an odd member count (two rows per stripe).
const _: () = assert!(2 * MAX_CHUNK_SECTORS as u64 <= STAGING_SECTORS);

/// First sector of the reserved tail of a member of `device_sectors` sectors.
pub fn tail_start(device_sectors: u64) -> u64 {
    device_sectors.saturating_sub(RESERVED_TAIL_SECTORS)
}

/// The slot generation `generation` is written to.
pub fn slot_of(generation: u64) -> usize {
    (generation % 2) as usize
}

/// Member sector of superblock slot `slot` (0 or 1).
pub fn superblock_sector(device_sectors: u64, slot: usize) -> u64 {
    tail_start(device_sectors) + slot as u64 * SUPERBLOCK_SECTORS
}

/// Member sector of the start of the staging area.
pub fn staging_sector(device_sectors: u64) -> u64 {
    tail_start(device_sectors) + STAGING_OFFSET
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offsets() {
        let dev = 1 << 30;
        assert_eq!(superblock_sector(dev, 0), dev - RESERVED_TAIL_SECTORS);
        assert_eq!(superblock_sector(dev, 1), dev - RESERVED_TAIL_SECTORS + 8);
        assert_eq!(staging_sector(dev) + STAGING_SECTORS, dev);
        assert_eq!(slot_of(7), 1);
        assert_eq!(slot_of(8), 0);
    }
}
