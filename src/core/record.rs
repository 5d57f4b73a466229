//! Superblock updates of an array with no migration running (clean or
//! degraded): the record of failed roles. A migration's superblocks are the
//! engine's ([`super::engine::Engine::record_failed`]).
//!
//! Keeps invariants 4 and 9 of the theory (see the crate documentation):
//! a record goes to every role not failed and is flushed before it counts;
//! one that fails on a member is retried with the *same* generation and the
//! grown set of failed roles, so members stay at most one generation apart
//! and assembly trusts the union of the failed sets of the newest
//! generation ([`super::assemble`]).

use super::engine::{IoError, MemberIo, Time};
use super::format::{Rebuild, Superblock};
use super::health::Roles;
use super::members::ArrayMembers;
use super::tail::{slot_of, superblock_sector, SUPERBLOCK_BYTES};

/// The superblock record of a settled array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The newest superblock (role-specific fields are those of whichever
    /// member it was read from; each member gets its own when written).
    pub newest: Superblock,
    /// The newest generation was not written to every member it must reach.
    pending: bool,
}

impl Record {
    /// The record of an array whose newest superblock is `newest`, durable.
    pub fn new(newest: Superblock) -> Record {
        Record { newest, pending: false }
    }

    /// Roles recorded faulty (or being recorded).
    pub fn failed(&self) -> Roles {
        self.newest.failed
    }

    /// Whether the last record is durable on every role not failed.
    pub fn durable(&self) -> bool {
        !self.pending
    }

    /// The role being rebuilt, as recorded (or being recorded).
    pub fn rebuild(&self) -> Option<Rebuild> {
        self.newest.rebuild
    }

    /// Records the roles of `failed` faulty besides those already recorded:
    /// a new generation, or the one left pending by an error again, written
    /// to every role not failed, then flushed. On an error on role `r` the
    /// record stays pending; the caller fails `r` too (if the level survives
    /// it) and calls again. A rebuilding role that fails stops its rebuild.
    pub fn record<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        failed: Roles,
        now: Time,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        let failed = self.newest.failed.union(failed);
        let rebuild = self.newest.rebuild.filter(|r| !failed.contains(r.role));
        self.update(io, members, failed, rebuild, now, buf)
    }

    /// Records exactly `failed` and `rebuild` (a replacement that takes a
    /// failed role, rebuild progress, its end) as [`Record::record`] does.
    /// Roles leave `failed` only to be rebuilt; the caller makes everything
    /// the record claims durable first (the rebuilt rows: a flush).
    pub fn update<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        failed: Roles,
        rebuild: Option<Rebuild>,
        now: Time,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        let buf = buf.get_mut(..SUPERBLOCK_BYTES).ok_or(IoError { member: 0, errno: -22 })?;
        if !self.pending {
            self.newest.generation += 1;
            self.pending = true;
        }
        // A role back in sync: bits may be cleared from now on, so no
        // member that left before may be re-added from them.
        if self.newest.rebuild.is_some_and(|r| rebuild.is_none_or(|n| n.role != r.role) && !failed.contains(r.role)) {
            self.newest.readd_floor = self.newest.generation;
        }
        self.newest.failed = failed;
        self.newest.rebuild = rebuild;
        self.newest.updated_ms = now.wall_ms;
        let slot = slot_of(self.newest.generation);
        for role in (0..members.count).filter(|&r| !self.newest.failed.contains(r)) {
            let sb = Superblock {
                member_uuid: members.uuids[role],
                role,
                device_sectors: members.device_sectors[role],
                ..self.newest
            };
            // Encoding a superblock decoded or built by the core cannot fail.
            let _ = sb.encode(buf);
            io.write(role, superblock_sector(sb.device_sectors, slot), buf)?;
        }
        io.flush()?;
        self.pending = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::assemble::assemble;
    use super::super::format::{ArrayState, FormatError};
    use super::super::layout::{Geometry, Level, RESERVED_TAIL_SECTORS};
    use super::super::route::View;
    use super::*;
    use std::collections::HashMap;
    use std::vec;
    use std::vec::Vec;

    /// Members whose superblock slots are kept; writes to roles in `broken`
    /// fail.
    struct Disks {
        blocks: Vec<HashMap<u64, Vec<u8>>>,
        broken: Roles,
    }

    impl MemberIo for Disks {
        fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            buf.fill(0);
            if let Some(b) = self.blocks[member].get(&sector) {
                buf[..b.len()].copy_from_slice(b);
            }
            Ok(())
        }
        fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
            if self.broken.contains(member) {
                return Err(IoError { member, errno: -5 });
            }
            self.blocks[member].insert(sector, buf.to_vec());
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

    #[test]
    fn a_failure_during_the_record_keeps_the_generation() {
        let n = 4;
        let dev = 8 * 64 + RESERVED_TAIL_SECTORS;
        let layout = Geometry::new(Level::Raid1, n, 8, 8 * 64).unwrap();
        let members =
            ArrayMembers::new([1; 16], 5, &[[2; 16], [3; 16], [4; 16], [5; 16]], &[dev; 4]);
        let newest = Superblock {
            generation: 6,
            array_uuid: [1; 16],
            member_uuid: [2; 16],
            role: 0,
            state: ArrayState::Clean,
            device_sectors: dev,
            created_ms: 5,
            updated_ms: 5,
            layout,
            migration: None,
            failed: Roles::NONE,
            rebuild: None,
            bitmap_region: None,
            readd_floor: 6,
        };
        let mut disks = Disks { blocks: vec![HashMap::new(); n], broken: Roles::one(2) };
        let mut rec = Record::new(newest);
        let mut buf = vec![0u8; SUPERBLOCK_BYTES];
        // Role 1 failed; the record then fails on role 2, which fails too.
        let e = rec.record(&mut disks, &members, Roles::one(1), Time::at(9), &mut buf).unwrap_err();
        assert_eq!(e.member, 2);
        assert!(!rec.durable());
        rec.record(&mut disks, &members, Roles::one(2), Time::at(10), &mut buf).unwrap();
        assert!(rec.durable());
        assert_eq!(rec.newest.generation, 7);
        // What assembly finds: roles 0 and 3 at generation 7 recording both.
        let sbs: Vec<Result<Superblock, FormatError>> = (0..n)
            .map(|r| {
                let at = super::super::tail::superblock_sector(dev, slot_of(7));
                match disks.blocks[r].get(&at) {
                    Some(b) => Superblock::decode(b),
                    None => Err(FormatError::Blank),
                }
            })
            .collect();
        assert!(sbs[1].is_err() && sbs[2].is_err());
        let mut m = members;
        let a = assemble(&[sbs[0], sbs[3]], &mut m).unwrap();
        assert_eq!(a.newest.failed, Roles::one(1).with(2));
        assert_eq!(a.newly_failed, Roles::NONE);
    }
}
