//! Member failures, degraded service, rebuilds and resyncs under power cuts,
//! run with the core's own code: host requests are split by
//! `hostio::for_each_op` with the `health::Health` of the moment, raid5
//! writes and reconstructed reads go through `raid5`, failures and rebuild
//! positions are recorded by `record::Record` and found again by
//! `assemble::assemble`, rebuilds run `rebuild::Rebuilder`, resyncs
//! `scrub::Scrubber` in repair mode over the regions written since the last
//! clean point (what the write-intent bitmap marks).
//!
//! Members have a volatile cache: a power cut loses every write not yet
//! flushed. The host flushes now and then; a write acknowledged before a
//! flush that completed must survive, one after it may or may not. The
//! oracle checks every sector of the volume after each power cut and
//! recovery, then once more with another member failed (so that rebuilt and
//! resynced rows are read through the redundancy they restore).

use std::collections::{BTreeSet, HashMap};

use raidmig_core::assemble::assemble;
use raidmig_core::engine::{IoError, MemberIo, Time};
use raidmig_core::format::{ArrayState, FormatError, Rebuild, Superblock};
use raidmig_core::health::{condition, Condition, Health, Roles};
use raidmig_core::hostio::{for_each_op, Access, MemberOp, Place};
use raidmig_core::layout::{Geometry, Level, MAX_MEMBERS, RESERVED_TAIL_SECTORS};
use raidmig_core::members::ArrayMembers;
use raidmig_core::prepare::{classify_addition, may_readd};
use raidmig_core::raid5::{buffer_bytes, read_reconstructed, write_stripe, Raid5Error, StripeIo};
use raidmig_core::rebuild::{RebuildError, Rebuilder, RecordPace};
use raidmig_core::record::Record;
use raidmig_core::route::View;
use raidmig_core::scrub::{ScrubError, ScrubMode, Scrubber};
use raidmig_core::tail::{slot_of, superblock_sector, SUPERBLOCK_BYTES};

const SECTOR: usize = 512;

/// Rebuild windows of a few stripes: the arrays here are small.
const SIM_WINDOW: u64 = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A member: durable sectors and a volatile cache; a dead one fails I/O.
#[derive(Clone, Default)]
struct Disk {
    durable: HashMap<u64, [u8; SECTOR]>,
    cache: HashMap<u64, [u8; SECTOR]>,
    dead: bool,
}

impl Disk {
    fn get(&self, s: u64) -> [u8; SECTOR] {
        *self.cache.get(&s).or_else(|| self.durable.get(&s)).unwrap_or(&[0; SECTOR])
    }
}

/// The members by role.
struct Disks {
    d: Vec<Disk>,
}

impl MemberIo for Disks {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let disk = &self.d[member];
        if disk.dead {
            return Err(IoError { member, errno: -5 });
        }
        for (i, c) in buf.chunks_mut(SECTOR).enumerate() {
            c.copy_from_slice(&disk.get(sector + i as u64));
        }
        Ok(())
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let disk = &mut self.d[member];
        if disk.dead {
            return Err(IoError { member, errno: -5 });
        }
        for (i, c) in buf.chunks(SECTOR).enumerate() {
            let mut b = [0u8; SECTOR];
            b.copy_from_slice(c);
            disk.cache.insert(sector + i as u64, b);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        for disk in self.d.iter_mut().filter(|d| !d.dead) {
            let cache = std::mem::take(&mut disk.cache);
            disk.durable.extend(cache);
        }
        Ok(())
    }
    fn publish(&mut self, _view: &View) {}
    fn checkpoint_requested(&mut self) -> bool {
        false
    }
}

/// The content of logical sector `l` written by write `tag`.
fn block(tag: u64, l: u64) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&l.to_le_bytes());
    b[16] = 0xA5;
    b
}

/// The host side of a raid5 stripe operation: request data and results.
struct Stripe<'a> {
    disks: &'a mut Disks,
    tag: u64,
    base: u64,
    out: &'a mut HashMap<u64, [u8; SECTOR]>,
}

impl StripeIo for Stripe<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.disks.read(member, sector, buf)
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.disks.write(member, sector, buf)
    }
    fn host_data(&mut self, offset: u64, buf: &mut [u8]) {
        for (i, c) in buf.chunks_mut(SECTOR).enumerate() {
            c.copy_from_slice(&block(self.tag, self.base + offset + i as u64));
        }
    }
    fn to_host(&mut self, offset: u64, buf: &[u8]) {
        for (i, c) in buf.chunks(SECTOR).enumerate() {
            let mut b = [0u8; SECTOR];
            b.copy_from_slice(c);
            self.out.insert(self.base + offset + i as u64, b);
        }
    }
}

/// What every logical sector may hold: the value at the last completed
/// flush, and anything written after it.
struct Oracle {
    allowed: HashMap<u64, Vec<[u8; SECTOR]>>,
    /// Values of writes that failed (EIO to the host): the range may hold
    /// them or not until it is written again.
    undefined: HashMap<u64, Vec<[u8; SECTOR]>>,
}

impl Oracle {
    fn write(&mut self, l: u64, b: [u8; SECTOR]) {
        self.allowed.entry(l).or_insert_with(|| vec![[0; SECTOR]]).push(b);
        self.undefined.remove(&l);
    }
    fn failed_write(&mut self, l: u64, b: [u8; SECTOR]) {
        self.undefined.entry(l).or_default().push(b);
    }
    /// A flush completed: only the last value written stays allowed.
    fn flushed(&mut self) {
        for v in self.allowed.values_mut() {
            let last = *v.last().unwrap();
            *v = vec![last];
        }
    }
    /// After a recovery, what was read becomes the value (a later read must
    /// see the same).
    fn settle(&mut self, l: u64, b: [u8; SECTOR]) {
        self.allowed.insert(l, vec![b]);
        self.undefined.remove(&l);
    }
    fn ok(&self, l: u64, b: &[u8; SECTOR]) -> bool {
        self.undefined.get(&l).is_some_and(|v| v.contains(b))
            || match self.allowed.get(&l) {
                Some(v) => v.contains(b),
                None => *b == [0; SECTOR],
            }
    }
}

struct World {
    g: Geometry,
    disks: Disks,
    members: ArrayMembers,
    record: Record,
    health: Health,
    rebuilder: Option<Rebuilder>,
    oracle: Oracle,
    /// Stripes' logical ranges written since the last clean point (the
    /// write-intent bitmap's regions, at stripe granularity: its live and
    /// kept images together). Clean points come only while every role is in
    /// sync, as bits are cleared only then, in a load or at a clean unload;
    /// power cuts and clean reloads with a role out of sync keep them.
    dirty: BTreeSet<u64>,
    /// The rebuild under way is such a re-add.
    readd: bool,
    /// Identities given to replacements so far.
    uuids_made: u64,
    /// Re-adds done, and windows they skipped.
    readds: u64,
    skipped: u64,
    /// Former members added back and rebuilt in full (not re-addable).
    full_readds: u64,
    /// Loads so far, the load each role last failed in, and re-adds of a
    /// role that failed in an earlier load.
    loads: u64,
    failed_in: [u64; MAX_MEMBERS],
    /// Roles whose member identity the kernel knows: assembled with a
    /// device, or given one since (a role absent at assembly is not).
    known: Roles,
    readds_across: u64,
    rng: Rng,
    tag: u64,
    now: u64,
    name: String,
    log: Vec<String>,
}

const DEV: u64 = 16 * 24 + RESERVED_TAIL_SECTORS;

impl World {
    fn new(level: Level, n: usize, seed: u64) -> World {
        let g = Geometry::new(level, n, 16, 16 * 24).unwrap();
        let uuids: Vec<[u8; 16]> = (0..n).map(|r| [r as u8 + 1; 16]).collect();
        let members = ArrayMembers::new([9; 16], 1, &uuids, &vec![DEV; n]);
        let sb = Superblock {
            generation: 1,
            array_uuid: [9; 16],
            member_uuid: uuids[0],
            role: 0,
            state: ArrayState::Clean,
            device_sectors: DEV,
            created_ms: 1,
            updated_ms: 1,
            layout: g,
            migration: None,
            failed: Roles::NONE,
            rebuild: None,
            bitmap_region: None,
            readd_floor: 1,
        };
        let mut w = World {
            g,
            disks: Disks { d: vec![Disk::default(); n] },
            members,
            record: Record::new(sb),
            health: Health::default(),
            rebuilder: None,
            oracle: Oracle { allowed: HashMap::new(), undefined: HashMap::new() },
            dirty: BTreeSet::new(),
            readd: false,
            uuids_made: 0,
            readds: 0,
            skipped: 0,
            full_readds: 0,
            loads: 0,
            failed_in: [0; MAX_MEMBERS],
            known: Roles::first(n),
            readds_across: 0,
            rng: Rng(seed | 1),
            tag: 0,
            now: 0,
            name: format!("{level:?} over {n}, seed {seed}"),
            log: Vec::new(),
        };
        let mut buf = vec![0u8; SUPERBLOCK_BYTES];
        w.record.update(&mut w.disks, &members, Roles::NONE, None, Time::at(1), &mut buf).unwrap();
        w
    }

    fn stripe_of(&self, l: u64) -> u64 {
        l / self.g.stripe_sectors()
    }

    /// A host write of `[start, start + len)`, split with the health of the
    /// moment; a member error fails the member and is recorded before the
    /// write counts as acknowledged.
    fn host_write(&mut self, start: u64, len: u64) -> bool {
        self.tag += 1;
        let tag = self.tag;
        self.log.push(format!("write tag {tag} {start}+{len} health {:?}", self.health));
        let g = self.g;
        for s in self.stripe_of(start)..=self.stripe_of(start + len - 1) {
            self.dirty.insert(s);
        }
        let failed_write = |w: &mut World| {
            for l in start..start + len {
                w.oracle.failed_write(l, block(tag, l));
            }
            false
        };
        for attempt in 0..3 {
            let mut failed_on = None;
            let mut newly_failed = Vec::new();
            let health = self.health;
            let dev = self.members.device_sectors;
            let mut ok = true;
            health.for_each_part(start, len, |part, n, gone| {
                let mut ops = Vec::new();
                for_each_op(&g, Place::Direct, &dev, gone, Access::Write, start, part, n, |op| ops.push(op));
                for op in ops {
                    match op {
                        MemberOp::Data { member, sector, sectors, offset } => {
                            let mut buf = vec![0u8; sectors as usize * SECTOR];
                            for (i, c) in buf.chunks_mut(SECTOR).enumerate() {
                                c.copy_from_slice(&block(tag, start + offset + i as u64));
                            }
                            if let Err(e) = self.disks.write(member, sector, &buf) {
                                failed_on = Some(e.member);
                            }
                        }
                        MemberOp::Stripe { start: s, sectors, .. } => {
                            let mut buf = vec![0u8; buffer_bytes(g.members())];
                            let mut out = HashMap::new();
                            let mut io = Stripe { disks: &mut self.disks, tag, base: start, out: &mut out };
                            match write_stripe(&mut io, &g, Place::Direct, &dev, gone, start, s, sectors, &mut buf) {
                                Ok(()) => {}
                                // Written, consistent without it: fail it,
                                // no retry.
                                Err(Raid5Error::MemberFailed(e)) => newly_failed.push(e.member),
                                Err(Raid5Error::Io(e)) => failed_on = Some(e.member),
                                Err(e) => panic!("raid5 write: {e:?}"),
                            }
                        }
                        MemberOp::Lost { .. } => ok = false,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            });
            for m in newly_failed {
                self.fail(m);
            }
            if condition(&g, self.health.out_of_sync()) == Condition::Failed {
                return failed_write(self);
            }
            match failed_on {
                None if ok => {
                    for l in start..start + len {
                        self.oracle.write(l, block(tag, l));
                    }
                    return true;
                }
                None => return failed_write(self),
                Some(m) => {
                    let _ = attempt;
                    self.fail(m);
                    if condition(&g, self.health.out_of_sync()) == Condition::Failed {
                        return failed_write(self);
                    }
                }
            }
        }
        failed_write(self)
    }

    /// Fails role `m` and records it (a rebuild of it stops).
    fn fail(&mut self, m: usize) {
        self.log.push(format!("fail {m}"));
        self.failed_in[m] = self.loads;
        self.health.failed = self.health.failed.with(m);
        if self.health.rebuild.is_some_and(|r| r.role == m) {
            self.health.rebuild = None;
            self.rebuilder = None;
        }
        let mut buf = vec![0u8; SUPERBLOCK_BYTES];
        for _ in 0..4 {
            match self.record.update(&mut self.disks, &self.members, self.health.failed, self.health.rebuild, Time::at(self.now), &mut buf) {
                Ok(()) => return,
                Err(e) => self.health.failed = self.health.failed.with(e.member),
            }
        }
    }

    fn host_flush(&mut self) {
        self.log.push("flush".into());
        self.disks.flush().unwrap();
        self.oracle.flushed();
    }

    /// Reads logical sector `l` as the host would.
    fn read(&mut self, l: u64) -> Option<[u8; SECTOR]> {
        let g = self.g;
        let dev = self.members.device_sectors;
        let mut result = None;
        let health = self.health;
        health.for_each_part(l, 1, |part, n, gone| {
            let mut ops = Vec::new();
            for_each_op(&g, Place::Direct, &dev, gone, Access::Read, l, part, n, |op| ops.push(op));
            for op in ops {
                match op {
                    MemberOp::Data { member, sector, .. } => {
                        let mut b = [0u8; SECTOR];
                        if self.disks.read(member, sector, &mut b).is_ok() {
                            result = Some(b);
                        }
                    }
                    MemberOp::Reconstruct { start, sectors, .. } => {
                        let mut buf = vec![0u8; buffer_bytes(g.members())];
                        let mut out = HashMap::new();
                        let mut io = Stripe { disks: &mut self.disks, tag: 0, base: l, out: &mut out };
                        if read_reconstructed(&mut io, &g, Place::Direct, &dev, gone, l, start, sectors, &mut buf).is_ok() {
                            result = out.get(&l).copied();
                        }
                    }
                    _ => {}
                }
            }
        });
        result
    }

    /// Adds a replacement for the lowest failed role: a fresh disk (or,
    /// `fresh` false, the one it has, as it is), the record first, then the
    /// rebuild from 0.
    fn replace(&mut self, fresh: bool) {
        let Some(role) = self.health.failed.iter().next() else { return };
        if self.health.rebuild.is_some() {
            return;
        }
        self.log.push(format!("replace {role}"));
        if fresh {
            self.disks.d[role] = Disk::default();
        }
        // A new identity of its own (never one a member had).
        self.uuids_made += 1;
        let mut uuid = [0x40u8; 16];
        uuid[..8].copy_from_slice(&self.uuids_made.to_le_bytes());
        self.members.uuids[role] = uuid;
        self.health.failed = self.health.failed.minus(Roles::one(role));
        self.health.rebuild = Some(Rebuild { role, position: 0 });
        self.readd = false;
        self.known = self.known.with(role);
        let mut buf = vec![0u8; SUPERBLOCK_BYTES];
        self.record
            .update(&mut self.disks, &self.members, self.health.failed, self.health.rebuild, Time::at(self.now), &mut buf)
            .unwrap();
        self.rebuilder = Some(Rebuilder::new(self.g, Rebuild { role, position: 0 }, Time::at(self.now)).with_window(SIM_WINDOW));
    }

    /// The lowest failed role gets its own disk back (its volatile cache
    /// lost as it dropped off). Whether only what was written since it left
    /// is rebuilt (the stripes written since the last clean point, as the
    /// kernel's re-add rebuilds only the regions its bitmap marks) or all of
    /// it is the core's decision, from the disk's own superblock, as the
    /// kernel's `add` decides.
    fn readd(&mut self) {
        let Some(role) = self.health.failed.iter().next() else { return };
        if self.health.rebuild.is_some() {
            return;
        }
        self.disks.d[role].dead = false;
        self.disks.d[role].cache.clear();
        let mut slots = Vec::new();
        for slot in 0..2 {
            let mut b = vec![0u8; SUPERBLOCK_BYTES];
            self.disks.read(role, superblock_sector(DEV, slot), &mut b).unwrap();
            slots.push(Superblock::decode_slot(&b, slot));
        }
        let addition = classify_addition(DEV, &slots[0], &slots[1], &self.members.array_uuid, self.g.member_sectors())
            .expect("its own disk is welcome back");
        let recorded = if self.known.contains(role) { self.members.uuids[role] } else { [0; 16] };
        if !may_readd(addition, role, &recorded, self.record.newest.readd_floor, true) {
            // Rebuilt in full, as a replacement (the kernel gives it a new
            // identity), over whatever it holds.
            self.log.push(format!("re-add {role} refused: rebuilt in full"));
            self.full_readds += 1;
            self.replace(false);
            return;
        }
        self.log.push(format!("re-add {role}"));
        self.known = self.known.with(role);
        if self.failed_in[role] != self.loads {
            self.readds_across += 1;
        }
        self.health.failed = self.health.failed.minus(Roles::one(role));
        self.health.rebuild = Some(Rebuild { role, position: 0 });
        self.readd = true;
        self.readds += 1;
        let mut buf = vec![0u8; SUPERBLOCK_BYTES];
        self.record
            .update(&mut self.disks, &self.members, self.health.failed, self.health.rebuild, Time::at(self.now), &mut buf)
            .unwrap();
        self.rebuilder = Some(Rebuilder::new(self.g, Rebuild { role, position: 0 }, Time::at(self.now)).with_window(SIM_WINDOW));
    }

    /// One rebuild window (the gate keeps host writes out of it: here the
    /// steps do not interleave within a window); records the position when
    /// due and the end. A re-add skips windows with no dirty stripe.
    fn rebuild_step(&mut self) {
        let stripe = self.g.stripe_sectors();
        let Some(rb) = self.rebuilder.as_mut() else { return };
        let mut buf = vec![0u8; 4096 * MAX_MEMBERS];
        let clean = |w: &(u64, u64), dirty: &BTreeSet<u64>| dirty.range(w.0 / stripe..w.1.div_ceil(stripe)).next().is_none();
        if self.readd && rb.next_window().is_some_and(|w| clean(&w, &self.dirty)) {
            let (_, end) = rb.skip_window().unwrap();
            self.skipped += 1;
            if let Some(r) = self.health.rebuild.as_mut() {
                r.position = end;
            }
        } else {
        match rb.copy_window(&mut self.disks, self.health.failed, &mut buf) {
            Ok((_, end)) => {
                if let Some(r) = self.health.rebuild.as_mut() {
                    r.position = end;
                }
            }
            Err(RebuildError::Io(e)) => return self.fail(e.member),
            Err(e) => panic!("rebuild: {e:?}"),
        }
        }
        let now = Time::at(self.now);
        let rb = self.rebuilder.as_mut().unwrap();
        if rb.record_due(now, RecordPace { windows: 2, ms: 1 << 40 }) || rb.copied_all() {
            let done = rb.copied_all();
            let position = rb.copied();
            let role = rb.role();
            self.disks.flush().unwrap();
            let rebuild = (!done).then_some(Rebuild { role, position });
            let mut sbuf = vec![0u8; SUPERBLOCK_BYTES];
            self.record.update(&mut self.disks, &self.members, self.health.failed, rebuild, now, &mut sbuf).unwrap();
            rb.recorded_at(position, now);
            if done {
                self.health.rebuild = None;
                self.rebuilder = None;
                self.readd = false;
            }
        }
    }

    /// A power cut: every volatile write is lost. Then the load: assembly
    /// from the superblocks, a rebuild resumed from its recorded position,
    /// and a resync of what was written since the last clean point.
    fn power_cut_and_recover(&mut self) {
        self.log.push(format!("power cut, health {:?}", self.health));
        for d in self.disks.d.iter_mut() {
            d.cache.clear();
        }
        let n = self.g.members();
        let mut sbs: Vec<Result<Superblock, FormatError>> = Vec::new();
        let alive: Vec<usize> = (0..n).filter(|&r| !self.disks.d[r].dead).collect();
        for r in alive {
            let mut slots = Vec::new();
            for slot in 0..2 {
                let mut b = vec![0u8; SUPERBLOCK_BYTES];
                self.disks.read(r, superblock_sector(DEV, slot), &mut b).unwrap();
                slots.push(Superblock::decode_slot(&b, slot));
            }
            sbs.push(Superblock::newest(slots[0], slots[1]));
        }
        let mut members = self.members;
        let a = assemble(&sbs, &mut members).unwrap_or_else(|e| {
            let brief: Vec<String> = sbs
                .iter()
                .map(|r| match r {
                    Ok(sb) => format!("role {} gen {} failed {:?} rebuild {:?}", sb.role, sb.generation, sb.failed, sb.rebuild),
                    Err(e) => format!("{e:?}"),
                })
                .collect();
            panic!("assembly after a power cut: {e:?}; health {:?}; dead {:?}; superblocks {brief:?}", self.health, self.disks.d.iter().map(|d| d.dead).collect::<Vec<_>>())
        });
        let _ = slot_of;
        self.record = Record::new(a.newest);
        self.health = Health { failed: a.newest.failed, rebuild: a.newest.rebuild };
        if !a.newly_failed.is_empty() {
            let mut buf = vec![0u8; SUPERBLOCK_BYTES];
            self.record.record(&mut self.disks, &members, a.newly_failed, Time::at(self.now), &mut buf).unwrap();
        }
        self.rebuilder = self.health.rebuild.map(|r| Rebuilder::new(self.g, r, Time::at(self.now)).with_window(SIM_WINDOW));
        // A new load: a rebuild resumes in full.
        self.readd = false;
        self.loads += 1;
        self.known = Roles((0..n).fold(0, |m, r| m | if a.device_of_role[r] != u8::MAX { 1 << r } else { 0 }));
        for r in a.newly_failed.iter() {
            self.failed_in[r] = self.loads;
        }
        // Resync what was written since the last clean point, if every role
        // is in sync (else it is resynced once the rebuild ends, below).
        if self.health.out_of_sync().is_empty() {
            self.resync();
        }
        // Whatever reads back now is what the volume holds: it must be one
        // of the allowed values, and stays so.
        for l in 0..self.g.capacity() {
            let b = self.read(l).expect("readable after recovery");
            assert!(
                self.oracle.ok(l, &b),
                "{}: sector {l} after a power cut holds tag {} of sector {}, allowed {:?}; health {:?}; log {:#?}",
                self.name,
                b[0],
                u64::from_le_bytes(b[8..16].try_into().unwrap()),
                self.oracle.allowed.get(&l).map(|v| v.iter().map(|x| x[0]).collect::<Vec<_>>()),
                self.health,
                &self.log[self.log.len().saturating_sub(30)..]
            );
            self.oracle.settle(l, b);
        }
    }

    /// A clean unload and a load: everything flushed; with every role in
    /// sync the bits go (what a crash left unsynced is resynced, which the
    /// kernel does at the next load), else they are kept for a re-add.
    fn clean_reload(&mut self) {
        self.log.push("clean reload".into());
        self.host_flush();
        if self.health.out_of_sync().is_empty() {
            self.resync();
        }
        self.power_cut_and_recover();
    }

    /// A resync (the write-intent bitmap's, at stripe granularity).
    fn resync(&mut self) {
        self.log.push(format!("resync {:?}", self.dirty));
        let stripe = self.g.stripe_sectors();
        let dirty: Vec<u64> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut buf = vec![0u8; 4096 * (MAX_MEMBERS + 1)];
        for (i, &s) in dirty.iter().enumerate() {
            let Some(mut sc) = Scrubber::range(self.g, ScrubMode::Repair, s * stripe, (s + 1) * stripe) else { continue };
            while !sc.finished() {
                if let Err(e) = sc.scrub_window(&mut self.disks, &mut buf) {
                    // A member died: it is failed, the rest stays dirty
                    // (resynced once a replacement is rebuilt).
                    let ScrubError::Io(e) = e else { panic!("resync: {e:?}") };
                    self.dirty.extend(&dirty[i..]);
                    self.fail(e.member);
                    return;
                }
            }
        }
        self.disks.flush().unwrap();
    }

    /// Everything reads back as the oracle allows; then again with another
    /// member failed, where the level survives it.
    fn verify(&mut self, what: &str) {
        for l in 0..self.g.capacity() {
            let b = self.read(l).unwrap_or_else(|| panic!("{what}: sector {l} unreadable"));
            assert!(self.oracle.ok(l, &b), "{what}: sector {l} holds {:?}", &b[..17]);
        }
    }
}

/// One random story; returns the re-adds done, the windows they skipped,
/// the former members rebuilt in full and the re-adds across loads.
fn run(level: Level, n: usize, seed: u64) -> (u64, u64, u64, u64) {
    let mut w = World::new(level, n, seed);
    let cap = w.g.capacity();
    let mut cuts = 0;
    for step in 0..400u64 {
        w.now = step;
        match w.rng.below(100) {
            0..=54 => {
                // While a role is out of sync, writes often stay in the
                // first third (so that a re-add finds clean stripes to skip).
                let span = if !w.health.out_of_sync().is_empty() && w.rng.below(2) == 0 { cap / 3 } else { cap - 8 };
                let start = w.rng.below(span);
                let len = 1 + w.rng.below(40).min(cap - start - 1);
                w.host_write(start, len);
            }
            55..=64 => w.host_flush(),
            65..=68 if w.health.out_of_sync().is_empty() && !w.disks.d.iter().any(|d| d.dead) => {
                // A member dies.
                let m = w.rng.below(n as u64) as usize;
                w.disks.d[m].dead = true;
                w.log.push(format!("dies {m}"));
            }
            65..=68 if w.health.failed.is_empty() && w.rng.below(2) == 0 => {
                // The member being rebuilt dies (the others are in sync).
                if let Some(r) = w.health.rebuild {
                    w.disks.d[r.role].dead = true;
                    w.log.push(format!("dies {} while rebuilt", r.role));
                }
            }
            69..=76 => {
                // Its replacement arrives (a dead member found by a write
                // was failed and recorded).
                for m in 0..n {
                    if w.disks.d[m].dead && !w.health.failed.contains(m) {
                        w.fail(m);
                    }
                }
                if w.health.failed.iter().any(|m| w.disks.d[m].dead) {
                    let role = w.health.failed.iter().next().unwrap();
                    if w.rng.below(2) == 0 {
                        // The same disk comes back.
                        w.readd();
                    } else {
                        w.disks.d[role].dead = false;
                        w.replace(true);
                    }
                }
            }
            77..=92 => w.rebuild_step(),
            93..=96 => {
                w.power_cut_and_recover();
                cuts += 1;
                w.verify("after a power cut");
            }
            _ => {
                w.clean_reload();
                w.verify("after a clean reload");
            }
        }
        if w.rebuilder.is_none() && w.health.out_of_sync().is_empty() && !w.dirty.is_empty() && step % 50 == 0 {
            // A clean point: everything flushed and resynced.
            w.host_flush();
            w.resync();
        }
    }
    // Finish: replace anything failed, rebuild to the end, resync.
    for m in 0..n {
        if w.disks.d[m].dead && !w.health.failed.contains(m) {
            w.fail(m);
        }
    }
    for _ in 0..n {
        for m in 0..n {
            if w.disks.d[m].dead {
                w.disks.d[m].dead = false;
            }
        }
        w.replace(true);
        while w.rebuilder.is_some() {
            w.rebuild_step();
        }
    }
    w.host_flush();
    w.resync();
    w.verify("at the end");
    // The rebuilt and resynced redundancy must hold: any one member lost.
    for lost in 0..n {
        let mut h = Health::default();
        h.failed = Roles::one(lost);
        if condition(&w.g, h.failed) == Condition::Failed {
            continue;
        }
        let saved = w.health;
        w.health = h;
        w.verify(&format!("at the end, role {lost} lost"));
        w.health = saved;
    }
    assert!(cuts > 0 || seed == 0);
    (w.readds, w.skipped, w.full_readds, w.readds_across)
}

#[test]
fn failures_rebuilds_and_resyncs_survive_power_cuts() {
    let (mut readds, mut skipped, mut full, mut across) = (0, 0, 0, 0);
    for seed in 1..=12u64 {
        for (level, n) in [(Level::Raid1, 2), (Level::Raid1, 3), (Level::Raid5, 3), (Level::Raid5, 4), (Level::Raid10, 4), (Level::Raid10, 3)] {
            let (r, k, f, a) = run(level, n, seed);
            across += a;
            readds += r;
            skipped += k;
            full += f;
        }
    }
    eprintln!("{readds} re-adds ({across} of a role failed in an earlier load), {skipped} windows skipped, {full} former members rebuilt in full");
    // Members came back and were re-added, skipping clean stripes; others
    // (a replacement that died before its rebuild ended, or one that failed
    // in an earlier load) were rebuilt in full.
    assert!(readds > 20 && across > 10 && skipped > 20 && full > 5, "{readds} re-adds ({across} across loads), {skipped} windows skipped, {full} in full");
}

/// A replacement that dies before its rebuild ends and is then added back
/// holds nothing valid past its rebuild position: it must be rebuilt in
/// full, not as a re-add that skips the regions not written since (its
/// identity is the role's, but it was never in sync).
#[test]
fn replacement_that_died_during_its_rebuild_is_rebuilt_in_full() {
    for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 3), (Level::Raid10, 4)] {
        let mut w = World::new(level, n, 7);
        let cap = w.g.capacity();
        for start in (0..cap).step_by(32) {
            w.host_write(start, 32.min(cap - start));
        }
        w.host_flush();
        w.resync();
        assert!(w.dirty.is_empty());
        // Role 1 dies and is failed by a write; a fresh disk replaces it.
        w.disks.d[1].dead = true;
        w.host_write(0, 8);
        assert!(w.health.failed.contains(1));
        w.replace(true);
        w.rebuild_step();
        let position = w.health.rebuild.expect("rebuild under way").position;
        assert!(position > 0 && position < cap);
        // It dies in turn, a write fails it, and it is added back.
        w.disks.d[1].dead = true;
        w.host_write(0, 8);
        assert!(w.health.failed.contains(1) && w.health.rebuild.is_none());
        w.host_flush();
        w.readd();
        while w.rebuilder.is_some() {
            w.rebuild_step();
        }
        assert_eq!(w.full_readds, 1, "{level:?}: a replacement that never was in sync was re-added");
        let mut h = Health::default();
        for lost in (0..n).filter(|&r| r != 1) {
            h.failed = Roles::one(lost);
            if condition(&w.g, h.failed) == Condition::Failed {
                continue;
            }
            w.health = h;
            w.verify(&format!("{level:?}: role {lost} lost after the rebuild"));
        }
    }
}

/// The original member of a role comes back after a replacement took the
/// role, was rebuilt in full (every role in sync again, so bits were
/// cleared since) and failed in turn, and after a reload (the array does
/// not know the role's identity any more). It must be rebuilt in full: it
/// left before the array's re-add floor.
#[test]
fn original_member_back_after_its_replacement_failed_is_rebuilt_in_full() {
    for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 3), (Level::Raid10, 4)] {
        let mut w = World::new(level, n, 11);
        let cap = w.g.capacity();
        for start in (0..cap).step_by(32) {
            w.host_write(start, 32.min(cap - start));
        }
        w.host_flush();
        w.resync();
        // Role 1's original disk drops off and is put on the shelf.
        w.disks.d[1].dead = true;
        w.host_write(0, 8);
        assert!(w.health.failed.contains(1));
        let mut original = w.disks.d[1].clone();
        original.dead = false;
        original.cache.clear();
        // A replacement, rebuilt to the end; every role in sync, writes
        // everywhere, a clean point (bits cleared).
        w.replace(true);
        while w.rebuilder.is_some() {
            w.rebuild_step();
        }
        for start in (0..cap).step_by(32) {
            w.host_write(start, 16.min(cap - start));
        }
        w.host_flush();
        w.resync();
        assert!(w.dirty.is_empty());
        // The replacement dies; a reload; the original disk is added back.
        w.disks.d[1].dead = true;
        w.host_write(0, 8);
        assert!(w.health.failed.contains(1));
        w.clean_reload();
        w.disks.d[1] = original;
        w.disks.d[1].dead = true;
        w.readd();
        while w.rebuilder.is_some() {
            w.rebuild_step();
        }
        assert_eq!(w.full_readds, 1, "{level:?}: a member from before the replacement was re-added from the bitmap");
        let mut h = Health::default();
        for lost in (0..n).filter(|&r| r != 1) {
            h.failed = Roles::one(lost);
            if condition(&w.g, h.failed) == Condition::Failed {
                continue;
            }
            w.health = h;
            w.verify(&format!("{level:?}: role {lost} lost after the rebuild"));
        }
    }
}
