//! Property tests of the layouts: round trips between logical sectors and
//! member locations, md compatibility against transliterations of md's own
//! code (drivers/md of Linux 6.12), parity of raid5 write plans, and
//! superblock decoding of arbitrary bytes.

use std::collections::HashSet;

use proptest::prelude::*;
use raidmig_core::crc32c::crc32c;
use raidmig_core::format::Superblock;
use raidmig_core::tail::SUPERBLOCK_BYTES;
use raidmig_core::layout::{Content, Geometry, Level, Location};
use raidmig_core::parity::{xor_into, StripeWrite, WriteMode};

/// raid0.c `map_sector` for a single zone starting at 0 (equal members):
/// returns (member, member sector).
fn md_raid0(raid_disks: u64, chunk_sects: u64, sector: u64) -> (u64, u64) {
    let chunksect_bits = chunk_sects.trailing_zeros();
    let sect_in_chunk = sector & (chunk_sects - 1);
    let sector_shifted = sector >> chunksect_bits;
    let chunk = sector / (raid_disks << chunksect_bits);
    let offset = chunk * chunk_sects + sect_in_chunk;
    (sector_shifted % raid_disks, offset)
}

/// raid5.c `raid5_compute_sector`, level 5, ALGORITHM_LEFT_SYMMETRIC:
/// returns (data member, parity member, member sector).
fn md_raid5(raid_disks: u64, sectors_per_chunk: u64, r_sector: u64) -> (u64, u64, u64) {
    let data_disks = raid_disks - 1;
    let chunk_offset = r_sector % sectors_per_chunk;
    let chunk_number = r_sector / sectors_per_chunk;
    let stripe = chunk_number / data_disks;
    let mut dd_idx = chunk_number % data_disks;
    let stripe2 = stripe;
    let pd_idx = data_disks - stripe2 % raid_disks;
    dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
    (dd_idx, pd_idx, stripe * sectors_per_chunk + chunk_offset)
}

/// raid10.c `__raid10_find_phys` with near_copies 2, far_copies 1: the two
/// (member, member sector) copies.
fn md_raid10(raid_disks: u64, chunk_sectors: u64, sector: u64) -> [(u64, u64); 2] {
    let chunk_shift = chunk_sectors.trailing_zeros();
    let chunk_mask = chunk_sectors - 1;
    let mut chunk = sector >> chunk_shift;
    let mut s = sector & chunk_mask;
    chunk *= 2;
    let mut stripe = chunk;
    let mut dev = stripe % raid_disks;
    stripe /= raid_disks;
    s += stripe << chunk_shift;
    let mut out = [(0, 0); 2];
    for slot in out.iter_mut() {
        *slot = (dev, s);
        dev += 1;
        if dev >= raid_disks {
            dev = 0;
            s += chunk_mask + 1;
        }
    }
    out
}

/// raid10.c `raid10_size` (near 2, far 1) and raid5.c `raid5_size`.
fn md_size(level: Level, raid_disks: u64, chunk: u64, dev_sectors: u64) -> u64 {
    match level {
        Level::Raid10 => ((dev_sectors >> chunk.trailing_zeros()) * raid_disks / 2) << chunk.trailing_zeros(),
        Level::Raid5 => (dev_sectors & !(chunk - 1)) * (raid_disks - 1),
        Level::Raid0 => (dev_sectors & !(chunk - 1)) * raid_disks,
        _ => unreachable!(),
    }
}

fn geometry() -> impl Strategy<Value = Geometry> {
    (0usize..5, 1usize..=16, 3u32..=10, 1u64..=40).prop_filter_map("valid", |(l, n, c, rows)| {
        let level = Level::ALL[l];
        let chunk = 1u32 << c;
        Geometry::new(level, n, chunk, rows * chunk as u64).ok()
    })
}

fn geometry_and_sector() -> impl Strategy<Value = (Geometry, u64)> {
    geometry().prop_flat_map(|g| (Just(g), 0..g.capacity()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_md(level in prop::sample::select(vec![Level::Raid0, Level::Raid5, Level::Raid10]),
                  n in 2usize..=16, c in 3u32..=12, rows in 1u64..=100, pick in any::<u64>()) {
        let chunk = 1u64 << c;
        let g = Geometry::new(level, n, chunk as u32, rows * chunk).unwrap();
        prop_assert_eq!(g.capacity(), md_size(level, n as u64, chunk, rows * chunk));
        let sector = pick % g.capacity();
        match level {
            Level::Raid0 => {
                let (m, s) = md_raid0(n as u64, chunk, sector);
                prop_assert_eq!(g.locate(sector), Location { member: m as usize, sector: s });
            }
            Level::Raid5 => {
                let (d, p, s) = md_raid5(n as u64, chunk, sector);
                prop_assert_eq!(g.locate(sector), Location { member: d as usize, sector: s });
                prop_assert_eq!(g.parity_location(sector), Some(Location { member: p as usize, sector: s }));
            }
            _ => {
                for (copy, (m, s)) in md_raid10(n as u64, chunk, sector).into_iter().enumerate() {
                    prop_assert_eq!(g.locate_copy(sector, copy), Location { member: m as usize, sector: s });
                }
            }
        }
    }

    #[test]
    fn locate_and_content_round_trip((g, l) in geometry_and_sector()) {
        for copy in 0..g.copies() {
            let at = g.locate_copy(l, copy);
            prop_assert!(at.member < g.members() && at.sector < g.member_sectors());
            prop_assert_eq!(g.content(at.member, at.sector), Content::Data { logical: l, copy });
        }
        if let Some(p) = g.parity_location(l) {
            prop_assert!(p.sector == g.locate(l).sector && p.member != g.locate(l).member);
            prop_assert_eq!(g.content(p.member, p.sector), Content::Parity { stripe: p.sector >> g.chunk_shift() });
        }
    }

    #[test]
    fn content_inverts_any_member_sector(g in geometry(), m in 0usize..16, s in any::<u64>()) {
        let m = m % g.members();
        let s = s % g.member_sectors();
        match g.content(m, s) {
            Content::Data { logical, copy } => prop_assert_eq!(g.locate_copy(logical, copy), Location { member: m, sector: s }),
            Content::Parity { stripe } => {
                let first = (stripe * g.stripe_chunks()) << g.chunk_shift();
                let offset = s & (g.chunk_sectors() as u64 - 1);
                prop_assert_eq!(g.parity_location(first + offset), Some(Location { member: m, sector: s }));
            }
            Content::Unused => prop_assert!(g.level() == Level::Raid10 && g.members() % 2 == 1),
        }
    }

    #[test]
    fn pieces_tile_the_range((g, start) in geometry_and_sector(), len in 1u64..3000) {
        let len = len.min(g.capacity() - start);
        let mut next = start;
        for p in g.pieces(start, len) {
            prop_assert_eq!(p.logical, next);
            prop_assert!(p.sectors > 0);
            next += p.sectors;
            // A piece is one contiguous run on every copy's member.
            for copy in 0..g.copies() {
                let a = g.locate_copy(p.logical, copy);
                let b = g.locate_copy(p.logical + p.sectors - 1, copy);
                prop_assert_eq!(a.member, b.member);
                prop_assert_eq!(b.sector - a.sector, p.sectors - 1);
            }
        }
        prop_assert_eq!(next, start + len);
    }

    /// Random raid5 writes through the write plans (either mode) keep every
    /// parity sector the XOR of its stripe.
    #[test]
    fn raid5_write_plans_keep_parity(n in 2usize..=6, writes in prop::collection::vec((any::<u64>(), 1u64..40, any::<u8>()), 1..20)) {
        let chunk = 8u64;
        let g = Geometry::new(Level::Raid5, n, chunk as u32, chunk * 4).unwrap();
        // One byte stands for a sector: members start all zero (consistent).
        let mut disks = vec![vec![0u8; g.member_sectors() as usize]; n];
        for (start, len, value) in writes {
            let start = start % g.capacity();
            // Cut at stripe boundaries: a plan covers one stripe.
            let end = (start + len).min(g.capacity());
            let mut s = start;
            while s < end {
                let stripe_end = (s / g.stripe_sectors() + 1) * g.stripe_sectors();
                let e = end.min(stripe_end);
                let plan = StripeWrite::plan(&g, s, e - s).unwrap();
                let ps = plan.parity_span();
                let mut parity: Vec<u8> = disks[plan.parity_member][ps.sector as usize..(ps.sector + ps.sectors) as usize].to_vec();
                // Gather what the plan says to read, from the members.
                let reads: Vec<_> = plan.reads().collect();
                match plan.mode {
                    WriteMode::ReadModifyWrite => {
                        for (m, span) in &reads {
                            if *m == plan.parity_member {
                                prop_assert_eq!(*span, ps);
                                continue;
                            }
                            let old = &disks[*m][span.sector as usize..(span.sector + span.sectors) as usize];
                            let at = (span.sector - ps.sector) as usize;
                            let newpart = vec![value; span.sectors as usize];
                            // parity ^= old ^ new
                            xor_into(&mut parity[at..at + span.sectors as usize], old);
                            xor_into(&mut parity[at..at + span.sectors as usize], &newpart);
                        }
                    }
                    WriteMode::ReconstructWrite => {
                        // Build the window of every data member: read parts plus new data.
                        parity.iter_mut().for_each(|b| *b = 0);
                        for m in (0..n).filter(|&m| m != plan.parity_member) {
                            let mut window = disks[m][ps.sector as usize..(ps.sector + ps.sectors) as usize].to_vec();
                            if let Some(c) = plan.covered(m) {
                                let at = (c.sector - ps.sector) as usize;
                                window[at..at + c.sectors as usize].fill(value);
                            }
                            // The reads must cover exactly the uncovered window.
                            let read: u64 = reads.iter().filter(|(r, _)| *r == m).map(|(_, sp)| sp.sectors).sum();
                            prop_assert_eq!(read + plan.covered(m).map_or(0, |c| c.sectors), ps.sectors);
                            xor_into(&mut parity, &window);
                        }
                    }
                }
                for p in g.pieces(s, e - s) {
                    let at = g.locate(p.logical);
                    disks[at.member][at.sector as usize..(at.sector + p.sectors) as usize].fill(value);
                }
                disks[plan.parity_member][ps.sector as usize..(ps.sector + ps.sectors) as usize].copy_from_slice(&parity);
                s = e;
            }
        }
        for row_sector in 0..g.member_sectors() {
            let stripe = row_sector / chunk;
            let pm = g.parity_member(stripe).unwrap();
            let xor = (0..n).filter(|&m| m != pm).fold(0u8, |a, m| a ^ disks[m][row_sector as usize]);
            prop_assert_eq!(disks[pm][row_sector as usize], xor, "sector {}", row_sector);
        }
    }

    /// Any bytes with the magic and a valid checksum decode to a superblock
    /// or an error, never a panic; a decoded one survives a round trip.
    #[test]
    fn superblock_decode_never_panics(mut bytes in prop::collection::vec(any::<u8>(), SUPERBLOCK_BYTES), small in any::<bool>()) {
        bytes[0..8].copy_from_slice(b"RAIDMIGS");
        if small {
            // Make the interesting fields plausible more often.
            bytes[0x008..0x00C].copy_from_slice(&1u32.to_le_bytes());
            bytes[0x00C] &= 3;
            bytes[0x00D..0x010].fill(0);
            bytes[0x060] %= 6;
            bytes[0x061..0x064].fill(0);
            bytes[0x064] %= 5;
            bytes[0x065..0x068].fill(0);
        }
        let crc = crc32c(&bytes[..SUPERBLOCK_BYTES - 4]);
        bytes[SUPERBLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(sb) = Superblock::decode(&bytes) {
            let mut again = vec![0u8; SUPERBLOCK_BYTES];
            sb.encode(&mut again).unwrap();
            prop_assert_eq!(Superblock::decode(&again), Ok(sb));
        }
    }
}

/// Every member sector of small geometries holds at most one thing, and
/// every (logical sector, copy) pair exactly one place.
#[test]
fn every_logical_sector_has_exactly_one_place_per_copy() {
    for level in Level::ALL {
        for n in level.min_members()..=level.max_members().min(7) {
            for rows in 1..=5 {
                let g = Geometry::new(level, n, 8, rows * 8).unwrap();
                let mut seen = HashSet::new();
                let mut parity = 0;
                for m in 0..n {
                    for s in 0..g.member_sectors() {
                        match g.content(m, s) {
                            Content::Data { logical, copy } => {
                                assert!(seen.insert((logical, copy)), "{g:?} {m} {s}")
                            }
                            Content::Parity { .. } => parity += 1,
                            Content::Unused => {}
                        }
                    }
                }
                assert_eq!(seen.len() as u64, g.capacity() * g.copies() as u64, "{g:?}");
                assert!((0..g.capacity()).all(|l| (0..g.copies()).all(|c| seen.contains(&(l, c)))));
                if level == Level::Raid5 {
                    assert_eq!(parity, g.member_sectors());
                }
            }
        }
    }
}
