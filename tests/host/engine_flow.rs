//! The engine's control flow over simple in-memory members: checkpoint
//! triggers (count, time, host request), pause and stop, refusal of an unsafe
//! layout change, and the buffer contract.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use raidmig_core::assemble::assemble;
use raidmig_core::engine::{Engine, EngineConfig, EngineError, IoError, MemberIo, Step, Time, ZeroRange};
use raidmig_core::format::{ArrayState, Superblock};
use raidmig_core::tail::{superblock_sector, SUPERBLOCK_BYTES};
use raidmig_core::layout::{Geometry, Level, RESERVED_TAIL_SECTORS};
use raidmig_core::members::ArrayMembers;
use raidmig_core::moved;
use raidmig_core::plan::{Migration, PlanError};
use raidmig_core::prepare::prepared_superblock;
use raidmig_core::lifecycle::{read_moved, recover, Recovered};
use raidmig_core::route::{Next, View};

/// Members as sparse maps of 512-byte sectors; writes are durable at once.
#[derive(Default)]
struct Mem {
    sectors: Vec<HashMap<u64, [u8; 512]>>,
    shared: Option<View>,
    flushes: u64,
    request: bool,
    /// Fail writes to this member within these sectors.
    fail_writes: Option<(usize, u64, u64)>,
    /// Ranges zeroed with `write_zeroes`.
    zeroed: Vec<(usize, u64, u64)>,
    /// The ranges of each `write_zeroes_all`.
    zero_batches: Vec<Vec<(usize, u64, u64)>>,
    /// Whether `mark_unsynced` takes ranges (a bitmap), and those it took.
    takes_marks: bool,
    marked: Vec<(u64, u64)>,
    /// The moved-unit map, and the unit a host request wants moved.
    moved: Vec<AtomicU64>,
    wanted: Option<u64>,
}

impl MemberIo for Mem {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        for (i, c) in buf.chunks_mut(512).enumerate() {
            c.copy_from_slice(self.sectors[member].get(&(sector + i as u64)).unwrap_or(&[0; 512]));
        }
        Ok(())
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.fail_writes.is_some_and(|(m, lo, hi)| m == member && (lo..hi).contains(&sector)) {
            return Err(IoError { member, errno: -5 });
        }
        for (i, c) in buf.chunks(512).enumerate() {
            self.sectors[member].insert(sector + i as u64, c.try_into().unwrap());
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.flushes += 1;
        Ok(())
    }
    fn publish(&mut self, view: &View) {
        match &mut self.shared {
            Some(s) => s.absorb(view),
            None => self.shared = Some(*view),
        }
    }
    fn checkpoint_requested(&mut self) -> bool {
        std::mem::take(&mut self.request)
    }
    fn write_zeroes_all(&mut self, batch: &[ZeroRange], buf: &mut [u8]) -> Result<(), IoError> {
        self.zero_batches.push(batch.iter().map(|z| (z.member, z.sector, z.sectors)).collect());
        batch.iter().try_for_each(|z| self.write_zeroes(z.member, z.sector, z.sectors, buf))
    }
    fn write_zeroes(&mut self, member: usize, sector: u64, sectors: u64, _buf: &mut [u8]) -> Result<(), IoError> {
        self.zeroed.push((member, sector, sectors));
        for s in sector..sector + sectors {
            self.sectors[member].insert(s, [0; 512]);
        }
        Ok(())
    }
    fn mark_unsynced(&mut self, start: u64, end: u64) -> Result<bool, IoError> {
        if self.takes_marks {
            self.marked.push((start, end));
        }
        Ok(self.takes_marks)
    }
    fn move_requested(&mut self) -> Option<u64> {
        self.wanted
    }
    fn moved_map(&self) -> &[AtomicU64] {
        &self.moved
    }
    fn prepare_moved(&mut self, units: u64) -> bool {
        self.moved = (0..moved::words(units)).map(|_| AtomicU64::new(0)).collect();
        true
    }
}

struct Setup {
    io: Mem,
    members: ArrayMembers,
    plan: Migration,
}

fn setup(source: Geometry, target: Geometry, unit_rows: u32) -> Setup {
    setup_with_bitmap(source, target, unit_rows, None)
}

/// [`setup`] for an array that keeps a bitmap of `region` sectors.
fn setup_with_bitmap(source: Geometry, target: Geometry, unit_rows: u32, region: Option<u64>) -> Setup {
    let plan = Migration::new(source, target, unit_rows).unwrap();
    let n = target.members();
    let sizes: Vec<u64> = (0..n).map(|_| target.member_sectors() + RESERVED_TAIL_SECTORS).collect();
    let uuids: Vec<[u8; 16]> = (0..n).map(|m| [m as u8 + 1; 16]).collect();
    let members = ArrayMembers::new([7; 16], 1, &uuids, &sizes);
    let mut io = Mem { sectors: vec![HashMap::new(); n], ..Mem::default() };
    let mut buf = vec![0u8; SUPERBLOCK_BYTES];
    for (role, &size) in sizes.iter().enumerate() {
        prepared_superblock(&plan, &members, role, 0, region, false).encode(&mut buf).unwrap();
        io.write(role, superblock_sector(size, 1), &buf).unwrap();
    }
    Setup { io, members, plan }
}

fn load(io: &mut Mem, members: &ArrayMembers) -> Superblock {
    let (newest, found) = assemble_all(io, members);
    assert_eq!(&found, members);
    newest
}

/// The newest superblock of the array on `members`' devices and the members
/// assembly found (a failed role's is left out).
fn assemble_all(io: &mut Mem, members: &ArrayMembers) -> (Superblock, ArrayMembers) {
    let sbs: Vec<_> = (0..members.count)
        .map(|role| {
            let mut slots = Vec::new();
            for slot in 0..2 {
                let mut buf = vec![0u8; SUPERBLOCK_BYTES];
                io.read(role, superblock_sector(members.device_sectors[role], slot), &mut buf).unwrap();
                slots.push(Superblock::decode_slot(&buf, slot));
            }
            Superblock::newest(slots[0], slots[1])
        })
        .collect();
    let mut found = ArrayMembers::new([0; 16], 0, &[], &[]);
    let newest = assemble(&sbs, &mut found).unwrap().newest;
    (newest, found)
}

fn raid1_from_single(rows: u64) -> Setup {
    setup(
        Geometry::new(Level::Single, 1, 8, rows * 8).unwrap(),
        Geometry::new(Level::Raid1, 2, 8, rows * 8).unwrap(),
        1,
    )
}

#[test]
fn count_trigger_and_end() {
    let mut s = raid1_from_single(20);
    let cfg = EngineConfig {
        max_units_between_checkpoints: 4,
        max_ms_between_checkpoints: u64::MAX,
        ..EngineConfig::default()
    };
    let mut e = Engine::resume(&load(&mut s.io, &s.members), cfg, Time::at(0)).unwrap();
    assert_eq!(e.view().state, ArrayState::Prepared);
    let mut buf = vec![0u8; 64 * 1024];
    let mut steps = Vec::new();
    loop {
        let st = e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap();
        steps.push(st);
        if st == Step::Finished {
            break;
        }
    }
    // raid1 never overlaps its source: only the count trigger checkpoints,
    // every 4 units, then the end.
    let checkpoints = steps.iter().filter(|s| **s == Step::Checkpointed).count();
    assert_eq!(steps[0], Step::Copied(0));
    assert_eq!(checkpoints, 4);
    assert_eq!(e.stats().units_done, 20);
    assert_eq!(e.stats().checkpoint_writes, 5);
    let sb = load(&mut s.io, &s.members);
    assert_eq!(sb.state, ArrayState::Clean);
    assert_eq!(sb.migration, None);
    assert_eq!(e.view().volume_sectors, s.plan.target().capacity());
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Idle));
}

#[test]
fn time_trigger_and_host_request() {
    let mut s = raid1_from_single(20);
    let cfg = EngineConfig {
        max_units_between_checkpoints: 1000,
        max_ms_between_checkpoints: 100,
        ..EngineConfig::default()
    };
    let mut e = Engine::resume(&load(&mut s.io, &s.members), cfg, Time::at(0)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(10)), Ok(Step::Copied(0)));
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(50)), Ok(Step::Copied(1)));
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(100)), Ok(Step::Checkpointed));
    assert_eq!(e.view().checkpoint, 2);
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(110)), Ok(Step::Copied(2)));
    s.io.request = true;
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(120)), Ok(Step::Checkpointed));
    assert_eq!(load(&mut s.io, &s.members).migration.unwrap().checkpoint, 3);
    // No request and nothing due: copy on.
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(130)), Ok(Step::Copied(3)));
}

#[test]
fn pause_stop_and_resume() {
    let mut s = raid1_from_single(12);
    let cfg = EngineConfig {
        max_units_between_checkpoints: 1000,
        max_ms_between_checkpoints: u64::MAX,
        ..EngineConfig::default()
    };
    let mut e = Engine::resume(&load(&mut s.io, &s.members), cfg, Time::at(0)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for u in 0..3 {
        assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Copied(u)));
    }
    e.pause(&mut s.io, &s.members, &mut buf, Time::at(5)).unwrap();
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Idle));
    let sb = load(&mut s.io, &s.members);
    assert_eq!((sb.state, sb.migration.unwrap().checkpoint), (ArrayState::Paused, 3));
    assert_eq!(sb.updated_ms, 5);
    e.unpause();
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Copied(3)));
    e.stop(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap();
    // Assemble again, as after an unload: the migration resumes at unit 4.
    let sb = load(&mut s.io, &s.members);
    assert_eq!((sb.state, sb.migration.unwrap().checkpoint), (ArrayState::Migrating, 4));
    let mut found = ArrayMembers::new([0; 16], 0, &[], &[]);
    let a = assemble(&[Ok(sb), Ok(Superblock { role: 1, member_uuid: [2; 16], ..sb })], &mut found).unwrap();
    let Recovered::Migration(mut e2) = recover(&a, cfg, Time::at(0)).unwrap() else { panic!("no migration") };
    assert_eq!(e2.view().copied, 4);
    assert_eq!(e2.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Copied(4)));
}

#[test]
fn unsafe_change_is_refused_and_recorded() {
    // raid0 over three members to raid5 over the same three: row 0's parity
    // would overwrite a chunk of a later unit.
    let mut s = setup(
        Geometry::new(Level::Raid0, 3, 8, 16 * 8).unwrap(),
        Geometry::new(Level::Raid5, 3, 8, 24 * 8).unwrap(),
        1,
    );
    let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(
        e.step(&mut s.io, &s.members, &mut buf, Time::at(0)),
        Err(EngineError::Plan(PlanError::ForwardOverlap { unit: 0 }))
    );
    let sb = load(&mut s.io, &s.members);
    assert_eq!((sb.state, sb.migration.unwrap().checkpoint), (ArrayState::Failed, 0));
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Idle));
}

#[test]
fn buffer_contract() {
    let mut s = setup(
        Geometry::new(Level::Single, 1, 16, 16 * 8).unwrap(),
        Geometry::new(Level::Raid5, 5, 16, 16 * 8).unwrap(),
        1,
    );
    let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
    // Four data chunks and parity, 4 KiB each.
    assert_eq!(e.min_buffer_bytes(), 5 * 4096);
    let mut small = vec![0u8; 5 * 4096 - 512];
    assert_eq!(e.step(&mut s.io, &s.members, &mut small, Time::at(0)), Err(EngineError::BufferTooSmall));
    let mut ok = vec![0u8; 5 * 4096];
    assert_eq!(e.step(&mut s.io, &s.members, &mut ok, Time::at(0)), Ok(Step::Copied(0)));
    assert!(std::mem::size_of::<Engine>() <= 512, "{}", std::mem::size_of::<Engine>());
    assert!(std::mem::size_of::<ArrayMembers>() <= 512);
    assert!(std::mem::size_of::<Superblock>() <= 512);
    assert!(std::mem::size_of::<raidmig_core::assemble::Assembly>() <= 512);
}

/// A superblock update that fails on one member stays pending: routing does
/// not rely on it (a unit it puts in staging stays in flight), and the next
/// step writes the same generation again before going on.
#[test]
fn failed_superblock_update_is_retried_at_the_same_generation() {
    // single to raid0 over two members, two-row units: unit 0 goes through
    // staging.
    let mut s = setup(
        Geometry::new(Level::Single, 1, 8, 8 * 8).unwrap(),
        Geometry::new(Level::Raid0, 2, 8, 8 * 8).unwrap(),
        2,
    );
    let tail = s.members.device_sectors[1] - RESERVED_TAIL_SECTORS;
    let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
    let gen0 = e.generation();
    let mut buf = vec![0u8; 64 * 1024];
    // Member 1's two superblock slots refuse writes; its staging area works.
    s.io.fail_writes = Some((1, tail, tail + 16));
    let r = e.step(&mut s.io, &s.members, &mut buf, Time::at(0));
    assert!(matches!(r, Err(EngineError::Io(IoError { member: 1, .. }))), "{r:?}");
    let v = e.view();
    assert_eq!((v.copied, v.checkpoint, v.next), (0, 0, Next::StagingUnrecorded));
    assert!(e.halted());
    // Member 0 got the record "unit 0 in staging"; member 1 did not.
    assert_eq!(e.generation(), gen0 + 1);
    s.io.fail_writes = None;
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Replayed(0)));
    // Same generation rewritten, then "staging empty" as the next one.
    assert_eq!(e.generation(), gen0 + 2);
    let sb = load(&mut s.io, &s.members);
    assert_eq!(
        (sb.generation, sb.migration.unwrap().checkpoint, sb.migration.unwrap().staged),
        (gen0 + 2, 1, None)
    );
    assert_eq!(e.view().copied, 1);
    // A failing checkpoint: memory keeps the old one, routing stays safe.
    s.io.fail_writes = Some((1, tail, tail + 16));
    assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)), Ok(Step::Copied(1)));
    s.io.request = true;
    assert!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).is_err());
    assert_eq!((e.view().checkpoint, e.view().copied), (1, 2));
    s.io.fail_writes = None;
    assert!(e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).is_ok());
    assert_eq!(e.view().checkpoint, 2);
    while e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap() != Step::Finished {}
    assert_eq!(load(&mut s.io, &s.members).state, ArrayState::Clean);
    assert_eq!(e.stats().units_staged, 1);
}

/// A member failing during a migration, as the kernel's thread handles it:
/// the engine halts on the write error, the failure is recorded, the engine
/// holds at a settled point (a unit left in staging finished on the roles
/// in sync, copied units checkpointed) and copies nothing while a role is
/// out of sync; a replacement is recorded rebuilding and rebuilt over the
/// checkpointed part only ([`Engine::rebuild_extent`]), with an unload and
/// reassembly half-way through the rebuild; then the migration resumes and
/// finishes. Every logical sector must hold the source's data, and the
/// redundancy must agree (raid5 parity, raid1 and raid10 copies), for every
/// level and for a failure at each unit (direct copies, and the staged units
/// of raid5's indirect start). With the new layout in effect at once, units
/// moved out of order before the failure are rebuilt too (the extent
/// reaches the last one moved).
#[test]
fn member_failure_during_migration_is_rebuilt_and_resumed() {
    use raidmig_core::format::Rebuild;
    use raidmig_core::health::Roles;
    use raidmig_core::rebuild::Rebuilder;

    let rows = 24u64;
    let (mut cases, mut staged_cases, mut moved_cases) = (0, 0, 0);
    for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 3), (Level::Raid5, 4), (Level::Raid10, 4), (Level::Raid10, 3)] {
        for fail_at in 0..6u64 {
            for (role, at_once) in (1..n).flat_map(|r| [(r, false), (r, true)]) {
                let source = Geometry::new(Level::Single, 1, 8, rows * 8).unwrap();
                let target = Geometry::new(level, n, 8, rows * 8).unwrap();
                let mut s = setup(source, target, target.stripe_rows() as u32);
                let what = format!("{level:?} over {n}, role {role} fails at unit {fail_at}, at once {at_once}");
                if at_once {
                    let mut sb = vec![0u8; SUPERBLOCK_BYTES];
                    for (r, &size) in s.members.device_sectors[..n].iter().enumerate() {
                        prepared_superblock(&s.plan, &s.members, r, 0, None, true).encode(&mut sb).unwrap();
                        s.io.write(r, superblock_sector(size, 1), &sb).unwrap();
                    }
                    assert!(s.io.prepare_moved(s.plan.units()));
                }
                // The source's data: every logical sector tagged.
                let tag = |l: u64| {
                    let mut b = [0u8; 512];
                    b[..8].copy_from_slice(&l.to_le_bytes());
                    b[8] = 0xA5;
                    b
                };
                for l in 0..source.capacity() {
                    s.io.sectors[0].insert(l, tag(l));
                }
                let cfg = EngineConfig { max_units_between_checkpoints: 3, max_ms_between_checkpoints: u64::MAX, ..EngineConfig::default() };
                let mut e = Engine::resume(&load(&mut s.io, &s.members), cfg, Time::at(0)).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut units = 0;
                while units < fail_at {
                    match e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap() {
                        Step::Copied(_) | Step::Replayed(_) => units += 1,
                        Step::Finished => break,
                        _ => {}
                    }
                }
                if at_once {
                    // A host write near the end has its unit (and its
                    // chain) moved out of order first.
                    let wanted = e.plan().units() - 2;
                    s.io.wanted = Some(wanted);
                    while !moved::is_moved(&s.io.moved, wanted) {
                        e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap();
                    }
                    s.io.wanted = None;
                }
                // The role's data rows start failing writes (staging, in the
                // tail, still takes them: a staged unit is then left half
                // finished).
                s.io.fail_writes = Some((role, 0, target.member_sectors()));
                let mut halted = false;
                for _ in 0..4 {
                    match e.step(&mut s.io, &s.members, &mut buf, Time::at(0)) {
                        Err(EngineError::Io(err)) => {
                            assert_eq!(err.member, role, "{what}");
                            halted = true;
                            break;
                        }
                        Ok(Step::Finished) => break,
                        Ok(_) => {}
                        Err(other) => panic!("{what}: {other:?}"),
                    }
                }
                if !halted {
                    continue;
                }
                assert!(e.halted(), "{what}");
                cases += 1;
                staged_cases += e.staged() as u32;
                // The thread records the failure, then holds.
                e.record_failed(&mut s.io, &s.members, &mut buf, Roles::one(role), Time::at(1)).unwrap();
                assert!(!e.whole(), "{what}");
                e.hold_degraded(&mut s.io, &s.members, &mut buf, Time::at(1)).unwrap();
                assert!(e.settled_for_rebuild(), "{what}");
                assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(2)), Ok(Step::Idle), "{what}: copies while degraded");
                let checkpoint = e.view().checkpoint;
                assert!(e.view().copied == checkpoint && !e.staged(), "{what}");
                let sb = assemble_all(&mut s.io, &s.members).0;
                assert_eq!((sb.failed, sb.migration.unwrap().checkpoint), (Roles::one(role), checkpoint), "{what}");
                // A replacement: an empty disk with an identity of its own.
                s.io.fail_writes = None;
                s.io.sectors[role] = HashMap::new();
                s.members.uuids[role] = [0x70 + role as u8; 16];
                e.record_health(&mut s.io, &s.members, &mut buf, Roles::NONE, Some(Rebuild { role, position: 0 }), Time::at(3)).unwrap();
                let extent = e.rebuild_extent(&s.io.moved);
                let reach = moved::last_moved(&s.io.moved).map_or(checkpoint, |u| checkpoint.max(u + 1));
                assert_eq!(extent, (reach * e.plan().unit_sectors()).min(target.capacity()), "{what}");
                moved_cases += (reach > checkpoint) as u32;
                let mut rb = Rebuilder::within(target, e.rebuild().unwrap(), extent, Time::at(3));
                let mut windows = 0;
                while !rb.copied_all() {
                    rb.copy_window(&mut s.io, Roles::NONE, &mut buf).unwrap();
                    windows += 1;
                    if windows == 2 {
                        // Recorded half-way, then an unload and a new
                        // assembly: the rebuild resumes where recorded.
                        let at = rb.copied();
                        e.record_health(&mut s.io, &s.members, &mut buf, Roles::NONE, Some(Rebuild { role, position: at }), Time::at(4)).unwrap();
                        let sb = assemble_all(&mut s.io, &s.members).0;
                        assert_eq!(sb.rebuild, Some(Rebuild { role, position: at }), "{what}");
                        e = Engine::resume(&sb, cfg, Time::at(4)).unwrap();
                        if at_once {
                            // The load reads the map back from the members.
                            assert!(s.io.prepare_moved(e.plan().units()));
                            let in_sync = Roles::first(n).minus(Roles::one(role));
                            read_moved(&mut s.io, &s.members, in_sync, e.plan().units(), &mut buf).unwrap();
                        }
                        assert_eq!((e.rebuild(), e.rebuild_extent(&s.io.moved)), (Some(Rebuild { role, position: at }), extent), "{what}");
                        assert_eq!(e.step(&mut s.io, &s.members, &mut buf, Time::at(4)), Ok(Step::Idle), "{what}");
                        rb = Rebuilder::within(target, e.rebuild().unwrap(), e.rebuild_extent(&s.io.moved), Time::at(4));
                    }
                }
                e.record_health(&mut s.io, &s.members, &mut buf, Roles::NONE, None, Time::at(5)).unwrap();
                assert!(e.whole(), "{what}");
                // The migration resumes and finishes.
                e.unpause();
                let mut finished = false;
                for _ in 0..10 * e.plan().units() + 10 {
                    if e.step(&mut s.io, &s.members, &mut buf, Time::at(6)).unwrap() == Step::Finished {
                        finished = true;
                        break;
                    }
                }
                assert!(finished, "{what}: the migration did not finish");
                // Every logical sector, from every copy, holds the source's data.
                let mut b = vec![0u8; 512];
                for l in 0..target.capacity() {
                    let want = if l < source.capacity() { tag(l) } else { [0u8; 512] };
                    for c in 0..target.copies() {
                        let at = target.locate_copy(l, c);
                        s.io.read(at.member, at.sector, &mut b).unwrap();
                        assert!(b[..] == want[..], "{what}: logical {l} copy {c} on member {} differs", at.member);
                    }
                }
                if level == Level::Raid5 {
                    for x in 0..target.member_sectors() {
                        let mut acc = [0u8; 512];
                        for m in 0..n {
                            s.io.read(m, x, &mut b).unwrap();
                            acc.iter_mut().zip(&b).for_each(|(a, v)| *a ^= v);
                        }
                        assert!(acc.iter().all(|&v| v == 0), "{what}: parity wrong at member sector {x}");
                    }
                }
            }
        }
    }
    assert!(cases >= 120 && staged_cases > 0 && moved_cases > 0, "{cases} failures, {staged_cases} in staging, {moved_cases} with units moved past the checkpoint");
}

/// Members with a volatile write cache: writes are durable only after a
/// flush, and the power can be cut at the `cut_at`-th write or flush (that
/// I/O and everything unflushed are lost; I/O fails until the power comes
/// back).
#[derive(Default)]
struct CutMem {
    durable: Vec<HashMap<u64, [u8; 512]>>,
    cache: Vec<HashMap<u64, [u8; 512]>>,
    ops: u64,
    cut_at: Option<u64>,
    cut: bool,
    /// Fail writes to this member's data rows (a dying disk).
    dead: Option<(usize, u64)>,
}

impl CutMem {
    fn op(&mut self) -> Result<(), IoError> {
        if self.cut {
            return Err(IoError { member: 0, errno: -5 });
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.cut = true;
            self.cache.iter_mut().for_each(HashMap::clear);
            return Err(IoError { member: 0, errno: -5 });
        }
        Ok(())
    }

    fn power_on(&mut self) {
        self.cut = false;
        self.cut_at = None;
    }
}

impl MemberIo for CutMem {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if self.cut {
            return Err(IoError { member, errno: -5 });
        }
        for (i, c) in buf.chunks_mut(512).enumerate() {
            let s = sector + i as u64;
            let v = self.cache[member].get(&s).or_else(|| self.durable[member].get(&s));
            c.copy_from_slice(v.unwrap_or(&[0; 512]));
        }
        Ok(())
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.op()?;
        if self.dead.is_some_and(|(m, end)| m == member && sector < end) {
            return Err(IoError { member, errno: -5 });
        }
        for (i, c) in buf.chunks(512).enumerate() {
            self.cache[member].insert(sector + i as u64, c.try_into().unwrap());
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.op()?;
        for (d, c) in self.durable.iter_mut().zip(self.cache.iter_mut()) {
            d.extend(c.drain());
        }
        Ok(())
    }
    fn publish(&mut self, _: &View) {}
    fn checkpoint_requested(&mut self) -> bool {
        false
    }
}

/// The newest superblock on the members' devices after a power cut, and the
/// identities assembly found (sizes as set up: a role whose device has no
/// superblock yet keeps its size).
fn assemble_after_cut(io: &mut CutMem, setup: &ArrayMembers) -> (Superblock, ArrayMembers) {
    let sbs: Vec<_> = (0..setup.count)
        .map(|role| {
            let mut slots = Vec::new();
            for slot in 0..2 {
                let mut buf = vec![0u8; SUPERBLOCK_BYTES];
                io.read(role, superblock_sector(setup.device_sectors[role], slot), &mut buf).unwrap();
                slots.push(Superblock::decode_slot(&buf, slot));
            }
            Superblock::newest(slots[0], slots[1])
        })
        // A replacement whose record was lost has no superblock: left out,
        // as an administrator leaves it out of `members=` (and adds it
        // again).
        .filter(|sb| sb.is_ok())
        .collect();
    let mut found = ArrayMembers::new([0; 16], 0, &[], &[]);
    let newest = assemble(&sbs, &mut found).unwrap_or_else(|e| panic!("assembly after a cut: {e:?}")).newest;
    found.device_sectors = setup.device_sectors;
    (newest, found)
}

/// The same story as [`member_failure_during_migration_is_rebuilt_and_resumed`]
/// with the power cut at every write or flush in turn (a sample of them on
/// the larger layouts): after each cut the array is assembled from what is
/// durable and the thread's procedure goes on from there (the failure
/// recorded or met again, the engine held, a replacement added again if its
/// record was lost, the rebuild resumed from its recorded position, the
/// migration resumed). At the end every sector holds the source's data.
#[test]
fn member_failure_during_migration_survives_power_cuts() {
    use raidmig_core::format::Rebuild;
    use raidmig_core::health::Roles;
    use raidmig_core::rebuild::Rebuilder;

    let rows = 16u64;
    let mut cuts_run = 0u64;
    for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 3), (Level::Raid10, 4), (Level::Raid5, 4)] {
        let role = n - 1;
        let source = Geometry::new(Level::Single, 1, 8, rows * 8).unwrap();
        let target = Geometry::new(level, n, 8, rows * 8).unwrap();
        let fail_at = 3u64;
        let tag = |l: u64| {
            let mut b = [0u8; 512];
            b[..8].copy_from_slice(&l.to_le_bytes());
            b[8] = 0x5A;
            b
        };
        // One run of the story; `cut_at`: the I/O the power goes at. Returns
        // the I/Os done by the end (without a cut: all of them).
        let run = |cut_at: Option<u64>| -> u64 {
            let what = format!("{level:?} over {n}, role {role} fails at unit {fail_at}, power cut at I/O {cut_at:?}");
            let s = setup(source, target, target.stripe_rows() as u32);
            let sizes = s.members;
            let mut io = CutMem { durable: s.io.sectors.clone(), cache: vec![HashMap::new(); n], ..CutMem::default() };
            for l in 0..source.capacity() {
                io.durable[0].insert(l, tag(l));
            }
            let cfg = EngineConfig { max_units_between_checkpoints: 2, max_ms_between_checkpoints: u64::MAX, ..EngineConfig::default() };
            let mut members = sizes;
            let mut e = Engine::resume(&assemble_after_cut(&mut io, &members).0, cfg, Time::at(0)).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut copied_units = 0u64;
            let mut rb: Option<Rebuilder> = None;
            let mut next_uuid = 0x80u8;
            io.cut_at = cut_at;
            let mut cycles = 0;
            for _ in 0..100_000 {
                if io.cut {
                    io.power_on();
                    cycles += 1;
                    let (sb, found) = assemble_after_cut(&mut io, &sizes);
                    members = found;
                    e = Engine::resume(&sb, cfg, Time::at(0)).unwrap();
                    rb = None;
                    continue;
                }
                if copied_units == fail_at && io.dead.is_none() && !e.failed().contains(role) && e.rebuild().is_none() && e.state() != ArrayState::Clean {
                    // The disk starts dying (once).
                    io.dead = Some((role, target.member_sectors()));
                    copied_units += 1;
                }
                if !e.whole() {
                    if e.rebuild().is_none() {
                        if !e.settled_for_rebuild() {
                            let _ = e.hold_degraded(&mut io, &members, &mut buf, Time::at(1));
                            continue;
                        }
                        // A replacement: a blank disk, an identity of its own.
                        io.dead = None;
                        io.durable[role].clear();
                        io.cache[role].clear();
                        members.uuids[role] = [next_uuid; 16];
                        next_uuid += 1;
                        let _ = e.record_health(&mut io, &members, &mut buf, Roles::NONE, Some(Rebuild { role, position: 0 }), Time::at(2));
                        continue;
                    }
                    let r = e.rebuild().unwrap();
                    let b = rb.get_or_insert_with(|| Rebuilder::within(target, r, e.rebuild_extent(&[]), Time::at(3)));
                    if b.copied_all() {
                        if io.flush().is_ok() && e.record_health(&mut io, &members, &mut buf, Roles::NONE, None, Time::at(4)).is_ok() {
                            rb = None;
                            e.unpause();
                        }
                        continue;
                    }
                    if b.copy_window(&mut io, Roles::NONE, &mut buf).is_err() {
                        continue;
                    }
                    let at = b.copied();
                    if io.flush().is_ok()
                        && e.record_health(&mut io, &members, &mut buf, Roles::NONE, Some(Rebuild { role, position: at }), Time::at(4)).is_ok()
                    {
                        b.recorded_at(at, Time::at(4));
                    }
                    continue;
                }
                match e.step(&mut io, &members, &mut buf, Time::at(5)) {
                    Ok(Step::Finished) => break,
                    Ok(Step::Copied(_)) => copied_units += 1,
                    Ok(_) => {}
                    Err(EngineError::Io(err)) if !io.cut => {
                        assert_eq!(err.member, role, "{what}");
                        let _ = e.record_failed(&mut io, &members, &mut buf, Roles::one(role), Time::at(6));
                    }
                    Err(EngineError::Io(_)) => {}
                    Err(other) => panic!("{what}: {other:?}"),
                }
            }
            assert_eq!(e.state(), ArrayState::Clean, "{what}: not finished");
            if let Some(k) = cut_at {
                assert!(cycles == 1 || io.ops < k, "{what}: {cycles} power cycles");
            }
            io.cut_at = None;
            io.flush().unwrap();
            let mut b = vec![0u8; 512];
            for l in 0..target.capacity() {
                let want = if l < source.capacity() { tag(l) } else { [0u8; 512] };
                for c in 0..target.copies() {
                    let at = target.locate_copy(l, c);
                    io.read(at.member, at.sector, &mut b).unwrap();
                    assert!(b[..] == want[..], "{what}: logical {l} copy {c} on member {} differs", at.member);
                }
            }
            if level == Level::Raid5 {
                for x in 0..target.member_sectors() {
                    let mut acc = [0u8; 512];
                    for m in 0..n {
                        io.read(m, x, &mut b).unwrap();
                        acc.iter_mut().zip(&b).for_each(|(a, v)| *a ^= v);
                    }
                    assert!(acc.iter().all(|&v| v == 0), "{what}: parity wrong at member sector {x}");
                }
            }
            io.ops
        };
        let total = run(None);
        let stride = (total / 150).max(1);
        for k in (1..=total).step_by(stride as usize) {
            run(Some(k));
            cuts_run += 1;
        }
    }
    assert!(cuts_run > 300, "{cuts_run} cuts");
}

/// A new array starts with a zero bitmap area on every member (both
/// images), whatever a joining disk's former life left there: stale bits
/// would read as an unclean shutdown at the next load, or as regions to
/// rebuild on a re-add. Nothing else of a joining disk's tail is touched
/// before its superblock.
#[test]
fn creation_zeroes_the_bitmap_area() {
    use raidmig_core::lifecycle::{load as load_array, Fresh, LoadParams};
    use raidmig_core::tail::{tail_start, BITMAP_OFFSET, BITMAP_SECTORS, KEPT_OFFSET};
    let dev = 64 * 2048 + RESERVED_TAIL_SECTORS;
    let mut io = Mem { sectors: vec![HashMap::new(); 2], ..Mem::default() };
    let tail = tail_start(dev);
    let garbage = [0x5Au8; 512];
    for s in [BITMAP_OFFSET, BITMAP_OFFSET + 7, BITMAP_OFFSET + KEPT_OFFSET + 100, BITMAP_OFFSET + BITMAP_SECTORS - 1] {
        io.sectors[1].insert(tail + s, garbage);
    }
    // Past the bitmap area (the staging area): left as it is.
    io.sectors[1].insert(tail + BITMAP_OFFSET + BITMAP_SECTORS, garbage);
    let params = LoadParams {
        level: Some(Level::Raid1),
        chunk_sectors: 128,
        assume_clean: false,
        force: false,
        start: false,
        unit_sectors: 2048,
        bitmap_region_sectors: 2048,
        engine: EngineConfig::default(),
        at_once: false,
    };
    let fresh = Fresh { array_uuid: [4; 16], member_uuids: [[5; 16]; 16] };
    let mut buf = vec![0u8; 256 * 1024];
    load_array(&mut io, &[dev, dev], &params, &fresh, Time::at(1), &mut buf).unwrap();
    for m in 0..2 {
        for s in BITMAP_OFFSET..BITMAP_OFFSET + BITMAP_SECTORS {
            assert!(io.sectors[m].get(&(tail + s)).is_none_or(|b| b.iter().all(|&x| x == 0)), "member {m} sector {s} of the tail");
        }
    }
    assert_eq!(io.sectors[1].get(&(tail + BITMAP_OFFSET + BITMAP_SECTORS)), Some(&garbage));
}

/// The capacity a migration adds past the source's end is zeroed in place
/// (one request per member and unit, nothing read or computed), over old
/// contents of the new members, and the raid5 parity is consistent there.
#[test]
fn capacity_past_the_source_is_zeroed() {
    let rows = 16u64;
    let source = Geometry::new(Level::Single, 1, 8, rows * 8).unwrap();
    let target = Geometry::new(Level::Raid5, 3, 8, rows * 8).unwrap();
    let mut s = setup(source, target, 1);
    let data = |x: u64| [(x as u8) ^ 0x5a; 512];
    for x in 0..rows * 8 {
        s.io.write(0, x, &data(x)).unwrap();
        s.io.write(1, x, &[0xa5; 512]).unwrap();
        s.io.write(2, x, &[0x3c; 512]).unwrap();
    }
    let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap() != Step::Finished {}
    let mut sector = [0u8; 512];
    for l in 0..target.capacity() {
        let at = target.locate_copy(l, 0);
        s.io.read(at.member, at.sector, &mut sector).unwrap();
        let want = if l < source.capacity() { data(l) } else { [0; 512] };
        assert_eq!(sector, want, "logical sector {l}");
    }
    for x in 0..rows * 8 {
        let mut acc = [0u8; 512];
        for m in 0..3 {
            s.io.read(m, x, &mut sector).unwrap();
            acc.iter_mut().zip(sector).for_each(|(a, b)| *a ^= b);
        }
        assert_eq!(acc, [0; 512], "parity of member sector {x}");
    }
    // Units are one stripe (8 sectors per member); the second half holds
    // no source data: 8 units of 3 members, each zeroed in one request,
    // a unit's 3 requests submitted together.
    let half = rows * 8 / 2;
    let want: Vec<_> = (half / 8..rows).flat_map(|r| (0..3).map(move |m| (m, r * 8, 8))).collect();
    assert_eq!(s.io.zeroed, want);
    let batches: Vec<_> = (half / 8..rows).map(|r| (0..3).map(|m| (m, r * 8, 8)).collect::<Vec<_>>()).collect();
    assert_eq!(s.io.zero_batches, batches);
}

/// raid0 has no copies or parity to keep consistent: the capacity it adds
/// past the source's end is not written at all (md does not zero a new
/// raid0 either), and reads what the members held there.
#[test]
fn raid0_leaves_the_capacity_past_the_source_as_it_was() {
    let rows = 16u64;
    let source = Geometry::new(Level::Single, 1, 8, rows * 8).unwrap();
    let target = Geometry::new(Level::Raid0, 3, 8, rows * 8).unwrap();
    let mut s = setup(source, target, 1);
    let old = |m: usize, x: u64| [(x as u8) ^ (0x5a + m as u8); 512];
    for m in 0..3 {
        for x in 0..rows * 8 {
            s.io.write(m, x, &old(m, x)).unwrap();
        }
    }
    let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap() != Step::Finished {}
    let mut sector = [0u8; 512];
    for l in 0..target.capacity() {
        let at = target.locate(l);
        s.io.read(at.member, at.sector, &mut sector).unwrap();
        // The source's data where it was; past its end, untouched.
        let want = if l < source.capacity() { old(0, l) } else { old(at.member, at.sector) };
        assert_eq!(sector, want, "logical sector {l}");
    }
    assert_eq!(s.io.zeroed, vec![]);
}

/// With a write-intent bitmap, the capacity a migration adds to a layout
/// with copies or parity is not written at all: it is marked unsynced in
/// the bitmap (once, from the source's end to the new end) before any
/// checkpoint passes its first unit, and the array's resync makes it
/// consistent afterwards. A member I/O that keeps no bitmap (`mark_unsynced`
/// says no) gets the zeros instead.
#[test]
fn capacity_past_the_source_is_marked_unsynced_with_a_bitmap() {
    let rows = 16u64;
    let source = Geometry::new(Level::Single, 1, 8, rows * 8).unwrap();
    for target in [Geometry::new(Level::Raid5, 3, 8, rows * 8).unwrap(), Geometry::new(Level::Raid10, 4, 8, rows * 8).unwrap()] {
        for takes_marks in [true, false] {
            let mut s = setup_with_bitmap(source, target, 1, Some(2048));
            s.io.takes_marks = takes_marks;
            let data = |x: u64| [(x as u8) ^ 0x5a; 512];
            let junk = |m: usize, x: u64| [(x as u8) ^ (0xa5 + m as u8); 512];
            for x in 0..rows * 8 {
                s.io.write(0, x, &data(x)).unwrap();
                for m in 1..target.members() {
                    s.io.write(m, x, &junk(m, x)).unwrap();
                }
            }
            let mut e = Engine::resume(&load(&mut s.io, &s.members), EngineConfig::default(), Time::at(0)).unwrap();
            let first_new_unit = (0..s.plan.units())
                .find(|&u| {
                    let (r, n) = s.plan.unit_rows_range(u);
                    (r..r + n).all(|r| {
                        (0..target.members()).all(|m| match target.content(m, r * 8) {
                            raidmig_core::layout::Content::Data { logical, .. } => logical >= source.capacity(),
                            _ => true,
                        })
                    })
                })
                .unwrap();
            assert!(first_new_unit < s.plan.units(), "{target:?}: the test needs units past the source");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let step = e.step(&mut s.io, &s.members, &mut buf, Time::at(0)).unwrap();
                let sb = load(&mut s.io, &s.members);
                let checkpoint = sb.migration.map_or(s.plan.units(), |m| m.checkpoint);
                if takes_marks && checkpoint > first_new_unit {
                    assert_eq!(s.io.marked, vec![(source.capacity(), target.capacity())], "{target:?}: marked before the checkpoint passed");
                }
                if step == Step::Finished {
                    break;
                }
            }
            let mut sector = [0u8; 512];
            let mut untouched = 0;
            for l in 0..target.capacity() {
                for c in 0..target.copies() {
                    let at = target.locate_copy(l, c);
                    s.io.read(at.member, at.sector, &mut sector).unwrap();
                    if l < source.capacity() {
                        assert_eq!(sector, data(l), "{target:?}: logical sector {l} copy {c}");
                    } else if takes_marks {
                        let (r, _) = s.plan.unit_rows_range(first_new_unit);
                        if at.sector >= r * 8 {
                            let old = if at.member == 0 { data(at.sector) } else { junk(at.member, at.sector) };
                            assert_eq!(sector, old, "{target:?}: new capacity at {at:?} was written");
                            untouched += 1;
                        }
                    } else {
                        assert_eq!(sector, [0; 512], "{target:?}: logical sector {l} copy {c} not zeroed");
                    }
                }
            }
            if takes_marks {
                assert!(untouched >= (s.plan.units() - first_new_unit) * 8, "{target:?}: {untouched} sectors left as they were");
                assert_eq!(s.io.zeroed, vec![], "{target:?}: nothing zeroed");
            } else {
                assert!(s.io.marked.is_empty());
                assert!(!s.io.zeroed.is_empty(), "{target:?}: zeroed without a bitmap to mark");
            }
        }
    }
}

/// The new layout at once: a unit a host request wants is moved out of
/// order after the units its rows overwrite the source of, each marked on
/// every member once its rows are written and flushed; the in-order copy
/// skips them; a replacement taking a role gets the whole map before its
/// rebuild is recorded.
#[test]
fn units_moved_out_of_order_are_marked_and_skipped() {
    let source = Geometry::new(Level::Single, 1, 8, 8 * 32).unwrap();
    let target = Geometry::new(Level::Raid5, 3, 8, 8 * 32).unwrap();
    let mut s = setup(source, target, 1);
    let mut buf = vec![0u8; SUPERBLOCK_BYTES];
    for (role, &size) in s.members.device_sectors[..3].iter().enumerate() {
        prepared_superblock(&s.plan, &s.members, role, 0, None, true).encode(&mut buf).unwrap();
        s.io.write(role, superblock_sector(size, 1), &buf).unwrap();
    }
    let sb = load(&mut s.io, &s.members);
    let mut e = Engine::resume(&sb, EngineConfig::default(), Time::at(0)).unwrap();
    assert!(e.at_once());
    assert!(s.io.prepare_moved(s.plan.units()));
    let mut buf = vec![0u8; 1 << 20];
    // The first step starts the migration; unit 30 is wanted.
    s.io.wanted = Some(30);
    let mut order = Vec::new();
    while !moved::is_moved(&s.io.moved, 30) {
        let flushes = s.io.flushes;
        match e.step(&mut s.io, &s.members, &mut buf, Time::at(1)).unwrap() {
            Step::Moved(u) => {
                order.push(u);
                assert!(s.io.flushes >= flushes + 2, "rows flushed, then the mark");
                // Marked on every member.
                for role in 0..3 {
                    let mut block = vec![0u8; moved::BLOCK_BYTES];
                    s.io.read(role, moved::block_sector(s.members.device_sectors[role], 0), &mut block).unwrap();
                    assert_eq!(block[(u / 8) as usize] & (1 << (u % 8)), 1 << (u % 8), "unit {u} on role {role}");
                }
            }
            Step::Checkpointed => {}
            other => panic!("{other:?}"),
        }
    }
    // single -> raid5 over 3: unit u's rows hold source chunks of units
    // about u/2 down, so the chain goes 30 <- 15 <- 7 <- 3 <- 1.
    assert_eq!(order.last(), Some(&30));
    assert!(order.len() > 2, "moved {order:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "moved {order:?}");
    // A replacement for role 2 holding junk in its map area gets the map.
    let junk = vec![0xA5u8; moved::BLOCK_BYTES];
    let at = moved::block_sector(s.members.device_sectors[2], 0);
    s.io.write(2, at, &junk).unwrap();
    use raidmig_core::format::Rebuild;
    use raidmig_core::health::Roles;
    e.record_failed(&mut s.io, &s.members, &mut buf, Roles::one(2), Time::at(2)).unwrap();
    let rebuild = Some(Rebuild { role: 2, position: 0 });
    e.record_health(&mut s.io, &s.members, &mut buf, Roles::NONE, rebuild, Time::at(3)).unwrap();
    let (mut got, mut want) = (vec![0u8; moved::BLOCK_BYTES], vec![0u8; moved::BLOCK_BYTES]);
    s.io.read(2, at, &mut got).unwrap();
    moved::encode_block(&s.io.moved, 0, None, &mut want);
    assert_eq!(got, want, "the replacement holds the map");
    e.record_health(&mut s.io, &s.members, &mut buf, Roles::NONE, None, Time::at(4)).unwrap();
    // The rest in order, moved units skipped.
    s.io.wanted = None;
    let mut copied = Vec::new();
    loop {
        match e.step(&mut s.io, &s.members, &mut buf, Time::at(5)).unwrap() {
            Step::Copied(u) => copied.push(u),
            Step::Finished => break,
            _ => {}
        }
    }
    assert!(order.iter().all(|u| !copied.contains(u)), "copied {copied:?} again after moving {order:?}");
    assert_eq!(copied.len() + order.len(), s.plan.units() as usize);
}
