//! Crash simulator: drives the real migration engine over in-memory members
//! with a volatile write cache, concurrent host I/O and power cuts.
//!
//! Every write (the engine's and the host's) goes to a per-member cache that
//! only a flush makes durable. At a crash, each cached sector independently
//! keeps its durable contents or takes any one of the versions written to it
//! since the last flush (writes lost, torn, or landed in any order). The
//! simulator then assembles the array from the superblocks alone (members in
//! a shuffled order), recovers, reads the whole volume back through the
//! recovered routing view, finishes the migration (possibly crashing again
//! during recovery), and checks that:
//!
//! - every sector reads back the last write acknowledged before the last
//!   completed host flush, or a later write (or the original data);
//! - reads are stable after recovery and exact for writes made after it;
//! - the array ends clean in the target layout, with consistent copies and
//!   parity and zeros past the source's size.
//!
//! Host writes follow the routing rules: into the unit in flight they wait;
//! over copied but not checkpointed units they request a checkpoint and wait.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use raidmig_core::assemble::assemble;
use raidmig_core::engine::{Engine, EngineConfig, EngineError, IoError, MemberIo, Step};
use raidmig_core::format::{superblock_sector, ArrayState, Superblock, SUPERBLOCK_BYTES};
use raidmig_core::layout::{Geometry, Level, RESERVED_TAIL_SECTORS};
use raidmig_core::members::ArrayMembers;
use raidmig_core::plan::Migration;
use raidmig_core::prepare::prepared_superblock;
use raidmig_core::recovery::{catch_up, recover, Recovered};
use raidmig_core::route::{route, Route, View};

const SECTOR: usize = 512;
type Block = [u8; SECTOR];

/// Deterministic pseudo-random numbers (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// One member: durable sectors and the volatile cache over them.
#[derive(Clone, Debug, Default)]
struct Disk {
    durable: HashMap<u64, Block>,
    cache: HashMap<u64, Block>,
    /// Writes since the last flush, in issue order, sector by sector.
    pending: Vec<(u64, Block)>,
}

impl Disk {
    fn read(&self, sector: u64, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(SECTOR).enumerate() {
            let s = sector + i as u64;
            match self.cache.get(&s).or_else(|| self.durable.get(&s)) {
                Some(b) => chunk.copy_from_slice(b),
                None => chunk.fill(0),
            }
        }
    }
    fn write(&mut self, sector: u64, buf: &[u8]) {
        for (i, chunk) in buf.chunks(SECTOR).enumerate() {
            let b: Block = chunk.try_into().unwrap();
            self.cache.insert(sector + i as u64, b);
            self.pending.push((sector + i as u64, b));
        }
    }
    fn flush(&mut self) {
        for (s, b) in self.cache.drain() {
            self.durable.insert(s, b);
        }
        self.pending.clear();
    }
    /// Power cut: every cached sector keeps its durable contents or takes one
    /// of the versions written since the last flush.
    fn crash(&mut self, mode: Outcome, rng: &mut Rng) {
        match mode {
            Outcome::LoseAll => {}
            Outcome::KeepAll => {
                for (s, b) in self.cache.drain() {
                    self.durable.insert(s, b);
                }
            }
            Outcome::Mixed => {
                let mut versions: HashMap<u64, Vec<Block>> = HashMap::new();
                for (s, b) in self.pending.drain(..) {
                    versions.entry(s).or_default().push(b);
                }
                let mut sectors: Vec<u64> = versions.keys().copied().collect();
                sectors.sort_unstable();
                for s in sectors {
                    let v = &versions[&s];
                    let pick = rng.below(v.len() as u64 + 1) as usize;
                    if pick < v.len() {
                        self.durable.insert(s, v[pick]);
                    }
                }
            }
        }
        self.cache.clear();
        self.pending.clear();
    }
}

/// How cached writes fare at a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// None lands.
    LoseAll,
    /// All land.
    KeepAll,
    /// Each sector independently: none, or any one version.
    Mixed,
}

pub const OUTCOMES: [Outcome; 3] = [Outcome::LoseAll, Outcome::KeepAll, Outcome::Mixed];

/// The contents the simulator writes to logical sector `logical` for write
/// `tag` (tag 2: the user's original data, tag 1: zeros).
fn pattern(tag: u64, logical: u64) -> Block {
    let mut b = [0u8; SECTOR];
    if tag == ZERO_TAG {
        return b;
    }
    b[0..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&logical.to_le_bytes());
    let mut x = tag.wrapping_mul(0x2545_F491_4F6C_DD1D)
        ^ logical.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ 0x5DEE_CE66_D1CE_B00C;
    for chunk in b[16..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    b
}

const ORIGINAL_TAG: u64 = 2;
const ZERO_TAG: u64 = 1;

/// Which write a sector holds, if it is one of ours.
fn decode_tag(b: &Block, logical: u64) -> Option<u64> {
    if b.iter().all(|&x| x == 0) {
        return Some(ZERO_TAG);
    }
    let tag = u64::from_le_bytes(b[0..8].try_into().unwrap());
    (pattern(tag, logical) == *b).then_some(tag)
}

/// One version in a sector's history: what it may hold (one tag, or any of
/// several after a crash) and when the write was acknowledged.
#[derive(Clone, Debug)]
struct Entry {
    tags: Vec<u64>,
    ack: Option<u64>,
}

/// What the host has written and when it was acknowledged and flushed.
#[derive(Clone, Debug)]
struct HostModel {
    history: Vec<Vec<Entry>>,
    clock: u64,
    /// Writes acknowledged at or before this clock are durable.
    durable_clock: u64,
    next_tag: u64,
    queue: Vec<(u64, u64, u64)>,
    writes: u64,
    deferred: u64,
    flushes: u64,
    reads: u64,
}

impl HostModel {
    fn new(volume: u64, target: u64) -> HostModel {
        let history = (0..target)
            .map(|l| {
                vec![Entry { tags: vec![if l < volume { ORIGINAL_TAG } else { ZERO_TAG }], ack: Some(0) }]
            })
            .collect();
        HostModel {
            history,
            clock: 1,
            durable_clock: 0,
            next_tag: 3,
            queue: Vec::new(),
            writes: 0,
            deferred: 0,
            flushes: 0,
            reads: 0,
        }
    }

    /// The tags sector `l` may hold after a power cut now.
    fn allowed_after_crash(&self, l: u64) -> Vec<u64> {
        let h = &self.history[l as usize];
        let floor = h.iter().rposition(|e| e.ack.is_some_and(|a| a <= self.durable_clock)).unwrap_or(0);
        let mut tags: Vec<u64> = h[floor..].iter().flat_map(|e| e.tags.iter().copied()).collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// Power cut: each sector's history becomes "any of the allowed tags".
    fn crash(&mut self) {
        for l in 0..self.history.len() as u64 {
            let tags = self.allowed_after_crash(l);
            self.history[l as usize] = vec![Entry { tags, ack: Some(0) }];
        }
        self.clock = 1;
        self.durable_clock = 0;
        self.queue.clear();
    }

    fn latest(&self, l: u64) -> &[u64] {
        &self.history[l as usize].last().unwrap().tags
    }

    fn pin(&mut self, l: u64, tag: u64) {
        let e = self.history[l as usize].last_mut().unwrap();
        e.tags = vec![tag];
    }
}

/// Knobs of a simulated migration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub level: Level,
    pub members: usize,
    pub chunk: u32,
    pub rows: u64,
    pub unit_stripes: u32,
    /// Buffer size in bytes (0: one full stripe plus parity).
    pub buffer: usize,
    pub engine: EngineConfig,
    /// Per mille chance of a host write / flush / read before each engine I/O.
    pub host_write: u64,
    pub host_flush: u64,
    pub host_read: u64,
    /// Per mille chance, after a step, of a pause / of an unload and reload.
    pub pause: u64,
    pub reload: u64,
    /// Per mille chance that an engine I/O fails without a power cut.
    pub io_errors: u64,
    pub seed: u64,
    /// Source layout (default: single over the first member).
    pub source: Option<Geometry>,
}

impl SimConfig {
    pub fn new(level: Level, members: usize, unit_stripes: u32, seed: u64) -> SimConfig {
        SimConfig {
            level,
            members,
            chunk: 8,
            rows: 12,
            unit_stripes,
            buffer: 0,
            engine: EngineConfig {
                max_units_between_checkpoints: 6,
                max_ms_between_checkpoints: 40,
                ..EngineConfig::default()
            },
            host_write: 60,
            host_flush: 25,
            host_read: 40,
            pause: 30,
            reload: 40,
            io_errors: 10,
            seed,
            source: None,
        }
    }

    pub fn name(&self) -> String {
        let src = match self.source {
            Some(g) => format!("{}x{}/c{}", g.level().name(), g.members(), g.chunk_sectors()),
            None => "single".into(),
        };
        format!(
            "{src} -> {}x{} c{} rows{} unit{} buf{} seed{}",
            self.level.name(),
            self.members,
            self.chunk,
            self.rows,
            self.unit_stripes,
            self.buffer,
            self.seed
        )
    }
}

/// Counts over a simulation.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub crash_points: u64,
    pub nested_crashes: u64,
    pub writes: u64,
    pub units: u64,
    pub units_staged: u64,
    pub checkpoint_writes: u64,
    pub staging_records: u64,
    pub host_writes: u64,
    pub host_deferred: u64,
    pub host_flushes: u64,
    pub reloads: u64,
    pub io_errors: u64,
    pub failures: Vec<String>,
}

impl Report {
    pub fn add(&mut self, o: &Report) {
        self.crash_points += o.crash_points;
        self.nested_crashes += o.nested_crashes;
        self.writes += o.writes;
        self.units += o.units;
        self.units_staged += o.units_staged;
        self.checkpoint_writes += o.checkpoint_writes;
        self.staging_records += o.staging_records;
        self.host_writes += o.host_writes;
        self.host_deferred += o.host_deferred;
        self.host_flushes += o.host_flushes;
        self.reloads += o.reloads;
        self.io_errors += o.io_errors;
        self.failures.extend(o.failures.iter().cloned());
    }
}

/// Which writes of the main run to crash at.
#[derive(Clone, Debug)]
pub enum Crashes {
    /// None: a plain run.
    None,
    /// Every write, each with every outcome.
    Every,
    /// `count` writes drawn at random, each with a random outcome.
    Sample(u64),
}

/// The simulated machine: members, host model and routing view.
#[derive(Clone)]
struct World {
    disks: Vec<Disk>,
    source: Geometry,
    target: Geometry,
    plan: Migration,
    members: ArrayMembers,
    shared: View,
    host: HostModel,
    rng: Rng,
    cfg: SimConfig,
    now: u64,
    /// Target rows written by the host since the last flush.
    dirty_rows: HashSet<u64>,
    /// Target rows whose copies or parity a crash may have left unequal.
    exempt_rows: HashSet<u64>,
    writes: u64,
    /// Main run: crash-explore at these write numbers.
    explore_at: HashSet<u64>,
    explore_every: bool,
    /// Recovery run: fail (power cut) at this write number.
    fail_at: Option<u64>,
    failed: bool,
    depth: u32,
    in_host: bool,
    /// Engine I/O is under way (transient errors may be injected).
    engine_io: bool,
    /// Whether the volume is exposed to the host (not between a power cut
    /// and the end of recovery).
    exposed: bool,
    /// A live read that returned the wrong data.
    live_failure: Option<String>,
    /// Print every event (debugging).
    pub trace: bool,
    report: Report,
}

impl World {
    fn new(cfg: &SimConfig) -> World {
        let chunk = cfg.chunk;
        let data = cfg.rows * chunk as u64;
        let target = Geometry::new(cfg.level, cfg.members, chunk, data).unwrap();
        let source = cfg.source.unwrap_or_else(|| Geometry::new(Level::Single, 1, chunk, data).unwrap());
        let rows = Migration::unit_rows_for(&target, cfg.unit_stripes);
        let plan = Migration::new(source, target, rows).unwrap();
        // Members differ a little in size; all hold the data area and tail.
        let sizes: Vec<u64> = (0..cfg.members as u64).map(|m| data + RESERVED_TAIL_SECTORS + m * 3).collect();
        let uuids: Vec<[u8; 16]> = (0..cfg.members).map(|m| [m as u8 + 0x10; 16]).collect();
        let members = ArrayMembers::new([0xAB; 16], 1000, &uuids, &sizes);
        let mut w = World {
            disks: vec![Disk::default(); cfg.members],
            source,
            target,
            plan,
            members,
            shared: View::clean(ArrayState::Clean, 0),
            host: HostModel::new(source.capacity(), target.capacity()),
            rng: Rng::new(cfg.seed),
            cfg: cfg.clone(),
            now: 0,
            dirty_rows: HashSet::new(),
            exempt_rows: HashSet::new(),
            writes: 0,
            explore_at: HashSet::new(),
            explore_every: false,
            fail_at: None,
            failed: false,
            depth: 0,
            in_host: false,
            exposed: true,
            engine_io: false,
            live_failure: None,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            report: Report::default(),
        };
        // The user's data in the source layout; junk on the joining members'
        // data areas (old contents that must never show).
        for l in 0..source.capacity() {
            for c in 0..source.copies() {
                let at = source.locate_copy(l, c);
                w.disks[at.member].durable.insert(at.sector, pattern(ORIGINAL_TAG, l));
            }
        }
        if source.level().has_parity() {
            for l in 0..source.capacity() {
                let p = source.parity_location(l).unwrap();
                let mut acc = [0u8; SECTOR];
                raid5_parity(&w.disks, &source, p.member, p.sector, &mut acc);
                w.disks[p.member].durable.insert(p.sector, acc);
            }
        }
        for m in 0..cfg.members {
            for s in 0..data {
                if source.content(m, s) == raidmig_core::layout::Content::Unused {
                    w.disks[m].durable.insert(s, pattern(0xDEAD_0000 + m as u64, s));
                }
            }
        }
        // Prepared superblocks, durable before anything else.
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        for role in 0..cfg.members {
            let sb = prepared_superblock(&plan, &w.members, role, 0);
            sb.encode(&mut buf).unwrap();
            let at = superblock_sector(w.members.device_sectors[role], 1);
            w.disks[role].write(at, &buf);
            w.disks[role].flush();
        }
        w
    }

    fn layout_read(&mut self, g: &Geometry, copy: usize, start: u64, buf: &mut [u8]) {
        let sectors = (buf.len() / SECTOR) as u64;
        for p in g.pieces(start, sectors) {
            let at = g.locate_copy(p.logical, copy % g.copies());
            let from = ((p.logical - start) as usize) * SECTOR;
            self.disks[at.member].read(at.sector, &mut buf[from..from + p.sectors as usize * SECTOR]);
        }
    }

    /// Writes logical data through a layout, every copy and the parity.
    fn layout_write(&mut self, g: &Geometry, start: u64, buf: &[u8], is_target: bool) -> Result<(), IoError> {
        let sectors = (buf.len() / SECTOR) as u64;
        let shift = g.chunk_shift();
        // Rows of every copy and parity are dirty before the first write: a
        // power cut may strike between any two of them.
        if is_target {
            for p in g.pieces(start, sectors) {
                let mut places: Vec<u64> =
                    (0..g.copies()).map(|c| g.locate_copy(p.logical, c).sector).collect();
                places.extend(g.parity_location(p.logical).map(|l| l.sector));
                for s in places {
                    for row in (s >> shift)..=((s + p.sectors - 1) >> shift) {
                        self.dirty_rows.insert(row);
                    }
                }
            }
        }
        for p in g.pieces(start, sectors) {
            let from = ((p.logical - start) as usize) * SECTOR;
            let bytes = &buf[from..from + p.sectors as usize * SECTOR];
            for c in 0..g.copies() {
                let at = g.locate_copy(p.logical, c);
                self.disk_write(at.member, at.sector, bytes)?;
            }
            if let Some(par) = g.parity_location(p.logical) {
                let mut pbuf = vec![0u8; p.sectors as usize * SECTOR];
                for i in 0..p.sectors {
                    let mut acc = [0u8; SECTOR];
                    raid5_parity(&self.disks, g, par.member, par.sector + i, &mut acc);
                    pbuf[i as usize * SECTOR..(i as usize + 1) * SECTOR].copy_from_slice(&acc);
                }
                self.disk_write(par.member, par.sector, &pbuf)?;
            }
        }
        Ok(())
    }

    /// A write to a member: the crash point of the simulation.
    fn disk_write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.writes += 1;
        if self.fail_at == Some(self.writes) {
            self.failed = true;
        }
        if self.failed {
            return Err(IoError { member, errno: -5 });
        }
        self.disks[member].write(sector, buf);
        if self.trace {
            println!("  w#{} m{member} s{sector} n{}", self.writes, buf.len() / SECTOR);
        }
        let only = std::env::var("SIM_AT").ok().and_then(|v| v.parse::<u64>().ok());
        if (self.explore_every || self.explore_at.contains(&self.writes))
            && only.is_none_or(|a| a == self.writes)
        {
            self.explore();
        }
        Ok(())
    }

    /// Forks the world at this instant, cuts its power and checks recovery.
    fn explore(&mut self) {
        // The fork's randomness depends only on the seed and the crash point,
        // so one crash point can be replayed alone (SIM_AT).
        let mut point_rng = Rng::new(self.cfg.seed.wrapping_mul(1_000_003) ^ self.writes);
        let outcomes: Vec<Outcome> =
            if self.explore_every { OUTCOMES.to_vec() } else { vec![OUTCOMES[point_rng.below(3) as usize]] };
        for outcome in outcomes {
            let mut fork = self.clone();
            fork.explore_at.clear();
            fork.explore_every = false;
            fork.engine_io = false;
            fork.report = Report::default();
            fork.rng = Rng::new(point_rng.next());
            fork.power_cut(outcome);
            // Sometimes cut the power again during recovery.
            if fork.rng.chance(300) {
                fork.fail_at = Some(fork.writes + 1 + fork.rng.below(40));
            }
            let where_ = format!("write {} ({outcome:?})", self.writes);
            if let Err(e) = fork.recover_and_finish() {
                self.report.failures.push(format!("{}: crash at {where_}: {e}", self.cfg.name()));
            }
            self.report.crash_points += 1;
            self.report.nested_crashes += fork.report.nested_crashes;
        }
    }

    fn power_cut(&mut self, outcome: Outcome) {
        if self.trace {
            println!(
                "  POWER CUT {outcome:?} at write {} dirty {:?} exempt {:?}",
                self.writes, self.dirty_rows, self.exempt_rows
            );
        }
        for d in &mut self.disks {
            d.crash(outcome, &mut self.rng);
        }
        self.host.crash();
        self.exempt_rows.extend(self.dirty_rows.drain());
        self.in_host = false;
        self.exposed = false;
    }

    /// Host activity at a random instant.
    fn host_activity(&mut self) -> Result<(), IoError> {
        if self.in_host || !self.exposed {
            return Ok(());
        }
        self.in_host = true;
        let r = self.host_activity_inner();
        self.in_host = false;
        r
    }

    fn host_activity_inner(&mut self) -> Result<(), IoError> {
        self.retry_queue()?;
        if self.rng.chance(self.cfg.host_write) {
            let volume = self.shared.volume_sectors;
            let start = self.rng.below(volume);
            let len = 1 + self.rng.below((2 * self.cfg.chunk as u64).min(volume - start));
            let tag = self.host.next_tag;
            self.host.next_tag += 1;
            self.host.writes += 1;
            let overlaps = self.host.queue.iter().any(|&(s, n, _)| s < start + len && start < s + n);
            if overlaps || !self.try_write(start, len, tag)? {
                self.host.deferred += 1;
                self.host.queue.push((start, len, tag));
            }
        }
        if self.rng.chance(self.cfg.host_flush) {
            self.host_flush()?;
        }
        if self.rng.chance(self.cfg.host_read) {
            let volume = self.shared.volume_sectors;
            let start = self.rng.below(volume);
            let len = 1 + self.rng.below((2 * self.cfg.chunk as u64).min(volume - start));
            if let Err(e) = self.check_read(start, len) {
                self.live_failure = Some(format!("live read: {e}"));
                return Err(IoError { member: 0, errno: -1 });
            }
        }
        Ok(())
    }

    fn retry_queue(&mut self) -> Result<(), IoError> {
        while let Some(&(start, len, tag)) = self.host.queue.first() {
            if !self.try_write(start, len, tag)? {
                break;
            }
            self.host.queue.remove(0);
        }
        Ok(())
    }

    fn host_flush(&mut self) -> Result<(), IoError> {
        let started = self.host.clock;
        if self.trace {
            println!("  host flush");
        }
        self.flush_all();
        // Writes acknowledged before the flush began (ack < started) are durable.
        self.host.durable_clock = self.host.durable_clock.max(started - 1);
        self.host.flushes += 1;
        Ok(())
    }

    fn flush_all(&mut self) {
        for d in &mut self.disks {
            d.flush();
        }
        self.dirty_rows.clear();
    }

    /// Executes a host write if routing lets all of it go now.
    fn try_write(&mut self, start: u64, len: u64, tag: u64) -> Result<bool, IoError> {
        let view = self.shared;
        if start + len > view.volume_sectors {
            return Ok(true); // the volume shrank? never; drop defensively
        }
        let mut blocked = false;
        for r in route(&view, start, len, true) {
            match r.route {
                Route::Wait => blocked = true,
                Route::NeedsCheckpoint => {
                    blocked = true;
                    self.shared.request_checkpoint();
                }
                _ => {}
            }
        }
        if blocked {
            return Ok(false);
        }
        for l in start..start + len {
            self.host.history[l as usize].push(Entry { tags: vec![tag], ack: None });
        }
        if self.trace {
            println!(
                "  host write tag {tag} [{start}, +{len}) view c{} k{} f{}",
                view.copied, view.checkpoint, view.in_flight
            );
        }
        for r in route(&view, start, len, true) {
            let mut buf = vec![0u8; r.sectors as usize * SECTOR];
            for i in 0..r.sectors {
                let l = r.start + i;
                buf[i as usize * SECTOR..(i as usize + 1) * SECTOR].copy_from_slice(&pattern(tag, l));
            }
            match r.route {
                Route::Target => {
                    let g = self.target;
                    self.layout_write(&g, r.start, &buf, true)?
                }
                Route::Source => {
                    let g = self.source;
                    self.layout_write(&g, r.start, &buf, false)?
                }
                _ => unreachable!(),
            }
        }
        let ack = self.host.clock;
        self.host.clock += 1;
        for l in start..start + len {
            self.host.history[l as usize].last_mut().unwrap().ack = Some(ack);
        }
        Ok(true)
    }

    /// Reads through the routing view; every sector must hold its latest
    /// write (one of the allowed ones right after a crash).
    fn check_read(&mut self, start: u64, len: u64) -> Result<(), String> {
        self.host.reads += 1;
        let view = self.shared;
        for r in route(&view, start, len, false) {
            let g = match r.route {
                Route::Target => self.target,
                Route::Source => self.source,
                _ => continue,
            };
            // Copies of rows a power cut caught mid-write may differ until a
            // resync (not the migration's business): read the first there.
            let shift = g.chunk_shift();
            let torn = r.route == Route::Target
                && (r.start..r.start + r.sectors).any(|l| {
                    (0..g.copies()).any(|c| self.exempt_rows.contains(&(g.locate_copy(l, c).sector >> shift)))
                });
            let copy = if torn { 0 } else { self.rng.below(g.copies() as u64) as usize };
            let mut buf = vec![0u8; r.sectors as usize * SECTOR];
            self.layout_read(&g, copy, r.start, &mut buf);
            for i in 0..r.sectors {
                let l = r.start + i;
                let b: Block = buf[i as usize * SECTOR..(i as usize + 1) * SECTOR].try_into().unwrap();
                let got = decode_tag(&b, l);
                let want = self.host.latest(l);
                if !got.is_some_and(|t| want.contains(&t)) {
                    return Err(format!(
                        "sector {l} ({:?}) holds {got:?}, expected one of {want:?}",
                        r.route
                    ));
                }
            }
        }
        Ok(())
    }

    /// After a power cut: reads every routable sector once and pins what it
    /// holds (it must be allowed); later reads must return exactly that.
    fn pin_volume(&mut self, pinned: &mut [bool]) -> Result<(), String> {
        let view = self.shared;
        for r in route(&view, 0, view.volume_sectors, false) {
            let g = match r.route {
                Route::Target => self.target,
                Route::Source => self.source,
                _ => continue,
            };
            for l in r.start..r.start + r.sectors {
                if pinned[l as usize] {
                    continue;
                }
                let mut b = [0u8; SECTOR];
                self.layout_read(&g, 0, l, &mut b);
                let got = decode_tag(&b, l);
                let want = self.host.latest(l).to_vec();
                match got {
                    Some(t) if want.contains(&t) => self.host.pin(l, t),
                    _ => {
                        return Err(format!(
                            "after recovery sector {l} ({:?}) holds {got:?}, allowed {want:?}",
                            r.route
                        ))
                    }
                }
                pinned[l as usize] = true;
            }
        }
        Ok(())
    }

    fn read_superblocks(&self) -> Vec<Result<Superblock, raidmig_core::format::FormatError>> {
        let mut out = Vec::new();
        for (role, d) in self.disks.iter().enumerate() {
            let dev = self.members.device_sectors[role];
            let mut slots = Vec::new();
            for slot in 0..2 {
                let mut buf = vec![0u8; SUPERBLOCK_BYTES];
                d.read(superblock_sector(dev, slot), &mut buf);
                slots.push(Superblock::decode_slot(&buf, slot));
            }
            out.push(Superblock::newest(slots[0], slots[1]));
        }
        out
    }

    /// Assembles from the superblocks alone (members shuffled), recovers,
    /// checks the volume, finishes the migration and checks the result.
    fn recover_and_finish(&mut self) -> Result<(), String> {
        let mut pinned = vec![false; self.target.capacity() as usize];
        loop {
            let sbs = self.read_superblocks();
            // Present the members in a shuffled order.
            let n = sbs.len();
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
            let shuffled: Vec<_> = order.iter().map(|&i| sbs[i]).collect();
            let mut found = ArrayMembers::new([0; 16], 0, &[], &[]);
            let a = assemble(&shuffled, &mut found)
                .map_err(|e| format!("assembly failed: {} ({:?})", e.message(), e))?;
            for role in 0..n {
                if order[a.device_of_role[role] as usize] != role {
                    return Err(format!("assembly put device {} at role {role}", a.device_of_role[role]));
                }
            }
            if found != self.members {
                return Err("assembly got other member identities".into());
            }
            let recovered = recover(&a, self.cfg.engine, self.now).map_err(|e| format!("recover: {e:?}"))?;
            // The volume is exposed with the recovered view from here on.
            self.shared = recovered.view();
            self.exposed = true;
            let mut sb_buf = vec![0u8; SUPERBLOCK_BYTES];
            match catch_up(self, &a, &found, &mut sb_buf) {
                Ok(()) => {}
                Err(EngineError::Io(_)) if self.failed => {
                    self.nested_power_cut();
                    continue;
                }
                Err(e) => return Err(format!("catch-up: {e:?}")),
            }
            if self.trace {
                println!(
                    "  recovered gen {} {:?}",
                    a.newest.generation,
                    a.newest.migration.map(|m| (m.checkpoint, m.staged))
                );
            }
            pinned.iter_mut().for_each(|p| *p = false);
            self.pin_volume(&mut pinned)?;
            let mut engine = match recovered {
                Recovered::Settled { layout, state } => {
                    if layout != self.target || state != ArrayState::Clean {
                        return Err(format!("settled in {layout:?} {state:?}"));
                    }
                    return self.verify_final();
                }
                Recovered::Migration(e) => e,
            };
            match self.run_engine(&mut engine, Some(&mut pinned)) {
                Ok(()) => return self.verify_final(),
                Err(RunError::PowerCut) => self.nested_power_cut(),
                Err(RunError::Fail(e)) => return Err(e),
            }
        }
    }

    /// A power cut during recovery.
    fn nested_power_cut(&mut self) {
        self.report.nested_crashes += 1;
        self.failed = false;
        self.fail_at = None;
        let outcome = OUTCOMES[self.rng.below(3) as usize];
        self.power_cut(outcome);
    }

    /// Runs the engine to the end, with host I/O between and during steps.
    fn run_engine(
        &mut self,
        engine: &mut Engine,
        mut pinned: Option<&mut Vec<bool>>,
    ) -> Result<(), RunError> {
        let size = if self.cfg.buffer == 0 {
            (self.target.stripe_chunks() as usize + 1) * self.cfg.chunk as usize * SECTOR
        } else {
            self.cfg.buffer
        }
        .max(SUPERBLOCK_BYTES);
        let mut buf = vec![0u8; size];
        let members = self.members;
        self.shared.absorb(&engine.view());
        for _ in 0..100_000 {
            self.now += 1 + self.rng.below(4);
            self.engine_io = true;
            let step = engine.step(self, &members, &mut buf, self.now);
            self.engine_io = false;
            if self.trace {
                println!("  step {step:?}");
            }
            if self.failed {
                return Err(RunError::PowerCut);
            }
            if let Some(e) = self.live_failure.take() {
                return Err(RunError::Fail(e));
            }
            let step = match step {
                // The kernel thread would retry after an I/O error.
                Err(EngineError::Io(_)) => Step::Checkpointed,
                other => other.map_err(|e| RunError::Fail(format!("engine: {e:?}")))?,
            };
            if let Some(p) = pinned.as_deref_mut() {
                self.pin_volume(p).map_err(RunError::Fail)?;
            }
            self.host_activity().map_err(|_| self.run_failure())?;
            match step {
                Step::Finished => {
                    self.add_stats(engine);
                    // Host writes still waiting go now, to the clean array.
                    self.retry_queue().map_err(|_| self.run_failure())?;
                    return Ok(());
                }
                // Paused (by us, or found paused after a power cut): the
                // user resumes it sooner or later.
                Step::Idle if engine.state() == ArrayState::Paused => {
                    if self.rng.chance(400) {
                        engine.unpause();
                    }
                }
                // A pause or stop that wrote the pending record of the end.
                Step::Idle if engine.state() == ArrayState::Clean => {
                    self.add_stats(engine);
                    self.retry_queue().map_err(|_| self.run_failure())?;
                    return Ok(());
                }
                Step::Idle => {
                    return Err(RunError::Fail(format!("engine idle in state {:?}", engine.state())))
                }
                _ => {
                    if self.rng.chance(self.cfg.pause) {
                        self.engine_io = true;
                        let r = engine.pause(self, &members, &mut buf, self.now);
                        self.engine_io = false;
                        self.check_engine_call(r)?;
                    } else if self.rng.chance(self.cfg.reload) {
                        // Module unload and load: stop, assemble, resume.
                        self.engine_io = true;
                        let r = engine.stop(self, &members, &mut buf, self.now);
                        self.engine_io = false;
                        self.check_engine_call(r)?;
                        let sbs = self.read_superblocks();
                        let mut found = ArrayMembers::new([0; 16], 0, &[], &[]);
                        let a = assemble(&sbs, &mut found)
                            .map_err(|e| RunError::Fail(format!("reload: {e:?}")))?;
                        let mut sb_buf = vec![0u8; SUPERBLOCK_BYTES];
                        let r = catch_up(self, &a, &found, &mut sb_buf);
                        self.check_engine_call(r)?;
                        self.add_stats(engine);
                        match recover(&a, self.cfg.engine, self.now) {
                            Ok(Recovered::Migration(e)) => *engine = e,
                            // The stop wrote the pending record of the end.
                            Ok(Recovered::Settled { state: ArrayState::Clean, .. })
                                if engine.state() == ArrayState::Clean =>
                            {
                                self.shared.absorb(&engine.view());
                                self.retry_queue().map_err(|_| self.run_failure())?;
                                return Ok(());
                            }
                            other => return Err(RunError::Fail(format!("reload found {other:?}"))),
                        }
                        self.shared.absorb(&engine.view());
                        self.report.reloads += 1;
                    }
                }
            }
        }
        Err(RunError::Fail("engine did not finish".into()))
    }

    /// Whether this engine I/O fails without a power cut (the engine then
    /// returns an error and the simulated kernel thread tries again).
    fn transient_error(&mut self) -> bool {
        if self.engine_io && self.rng.chance(self.cfg.io_errors) {
            self.report.io_errors += 1;
            if self.trace {
                println!("  transient I/O error");
            }
            return true;
        }
        false
    }

    fn add_stats(&mut self, engine: &Engine) {
        let s = engine.stats();
        self.report.units += s.units_done;
        self.report.units_staged += s.units_staged;
        self.report.checkpoint_writes += s.checkpoint_writes;
        self.report.staging_records += s.staging_records;
    }

    fn check_engine_call(&mut self, r: Result<(), EngineError>) -> Result<(), RunError> {
        if self.failed {
            return Err(RunError::PowerCut);
        }
        if let Some(e) = self.live_failure.take() {
            return Err(RunError::Fail(e));
        }
        match r {
            Ok(()) | Err(EngineError::Io(_)) => Ok(()),
            Err(e) => Err(RunError::Fail(format!("engine: {e:?}"))),
        }
    }

    fn run_failure(&mut self) -> RunError {
        if self.failed {
            RunError::PowerCut
        } else if let Some(e) = self.live_failure.take() {
            RunError::Fail(e)
        } else {
            RunError::Fail("host I/O failed".into())
        }
    }

    /// The end state: clean superblocks, every sector as expected through the
    /// target layout on every copy, parity consistent, zeros past the source.
    fn verify_final(&mut self) -> Result<(), String> {
        self.retry_queue().map_err(|e| format!("late host write failed: {e:?}"))?;
        if !self.host.queue.is_empty() {
            return Err("host writes still waiting after the end".into());
        }
        let sbs = self.read_superblocks();
        let mut gens = HashSet::new();
        for (role, sb) in sbs.iter().enumerate() {
            let sb = sb.as_ref().map_err(|e| format!("member {role} superblock: {}", e.message()))?;
            if sb.state != ArrayState::Clean || sb.migration.is_some() || sb.layout != self.target {
                return Err(format!("member {role} ends {:?} with record {:?}", sb.state, sb.migration));
            }
            gens.insert(sb.generation);
        }
        if gens.len() != 1 {
            return Err(format!("members end at generations {gens:?}"));
        }
        let g = self.target;
        let shift = g.chunk_shift();
        for l in 0..g.capacity() {
            let want = self.host.latest(l).to_vec();
            for c in 0..g.copies() {
                let at = g.locate_copy(l, c);
                if c > 0 && self.exempt_rows.contains(&(at.sector >> shift)) {
                    continue;
                }
                let mut b = [0u8; SECTOR];
                self.disks[at.member].read(at.sector, &mut b);
                let got = decode_tag(&b, l);
                if !got.is_some_and(|t| want.contains(&t)) {
                    return Err(format!(
                        "final: sector {l} copy {c} at {at:?} holds {got:?}, expected {want:?}"
                    ));
                }
            }
            if let Some(p) = g.parity_location(l) {
                if !self.exempt_rows.contains(&(p.sector >> shift)) {
                    let mut want_p = [0u8; SECTOR];
                    raid5_parity(&self.disks, &g, p.member, p.sector, &mut want_p);
                    let mut got_p = [0u8; SECTOR];
                    self.disks[p.member].read(p.sector, &mut got_p);
                    if want_p != got_p {
                        return Err(format!("final: parity of sector {l} at {p:?} is wrong"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// XOR of the data sectors of a raid5 row at `sector`, all members but the
/// parity member.
fn raid5_parity(disks: &[Disk], g: &Geometry, parity_member: usize, sector: u64, acc: &mut Block) {
    acc.fill(0);
    for (m, d) in disks.iter().enumerate().take(g.members()) {
        if m == parity_member {
            continue;
        }
        let mut b = [0u8; SECTOR];
        d.read(sector, &mut b);
        for (a, x) in acc.iter_mut().zip(b.iter()) {
            *a ^= x;
        }
    }
}

enum RunError {
    PowerCut,
    Fail(String),
}

impl MemberIo for World {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if self.failed {
            return Err(IoError { member, errno: -5 });
        }
        self.host_activity()?;
        if self.transient_error() {
            return Err(IoError { member, errno: -5 });
        }
        self.disks[member].read(sector, buf);
        Ok(())
    }

    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.failed {
            return Err(IoError { member, errno: -5 });
        }
        self.host_activity()?;
        if self.transient_error() {
            // A failed write may still have reached the disk.
            if self.rng.chance(500) {
                self.disk_write(member, sector, buf)?;
            }
            return Err(IoError { member, errno: -5 });
        }
        self.disk_write(member, sector, buf)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if self.failed {
            return Err(IoError { member: 0, errno: -5 });
        }
        self.host_activity()?;
        if self.transient_error() {
            return Err(IoError { member: 0, errno: -5 });
        }
        if self.trace {
            println!("  flush");
        }
        self.flush_all();
        Ok(())
    }

    fn publish(&mut self, view: &View) {
        self.shared.absorb(view);
    }

    fn checkpoint_requested(&mut self) -> bool {
        self.shared.checkpoint_requested
    }
}

/// Runs one migration, exploring crashes as asked; returns the counts.
pub fn simulate(cfg: &SimConfig, crashes: Crashes) -> Report {
    let mut w = World::new(cfg);
    let mut total_writes = 0;
    if let Crashes::Sample(count) = crashes {
        // A dry run counts the writes to draw crash points from.
        let mut dry = World::new(cfg);
        let sb = dry.read_superblocks()[0].unwrap();
        let mut e = Engine::resume(&sb, cfg.engine, 0).unwrap();
        let _ = dry.run_engine(&mut e, None);
        total_writes = dry.writes.max(1);
        for _ in 0..count {
            let at = 1 + w.rng.below(total_writes);
            w.explore_at.insert(at);
        }
    }
    w.explore_every = matches!(crashes, Crashes::Every);
    let sb = w.read_superblocks()[0].unwrap();
    let mut engine = Engine::resume(&sb, cfg.engine, 0).unwrap();
    w.shared = engine.view();
    let result = w.run_engine(&mut engine, None);
    let mut report = std::mem::take(&mut w.report);
    match result {
        Ok(()) => {
            if let Err(e) = w.verify_final() {
                report.failures.push(format!("{}: uncrashed run: {e}", cfg.name()));
            }
        }
        Err(RunError::Fail(e)) => report.failures.push(format!("{}: uncrashed run: {e}", cfg.name())),
        Err(RunError::PowerCut) => report.failures.push(format!("{}: unexpected power cut", cfg.name())),
    }
    report.writes = w.writes.max(total_writes);
    report.host_writes = w.host.writes;
    report.host_deferred = w.host.deferred;
    report.host_flushes = w.host.flushes;
    report
}

/// A one-line summary of a report.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let per_unit = r.units + r.staging_records;
    let _ = write!(
        s,
        "crash points explored: {} (+{} nested during recovery); units copied: {} ({} through staging); \
         checkpoint writes: {} vs {} with one per unit (saved {}); host writes {} ({} deferred), host flushes {}, unload/reload {}, transient I/O errors {}; failures: {}",
        r.crash_points,
        r.nested_crashes,
        r.units,
        r.units_staged,
        r.checkpoint_writes,
        per_unit,
        per_unit as i64 - r.checkpoint_writes as i64,
        r.host_writes,
        r.host_deferred,
        r.host_flushes,
        r.reloads,
        r.io_errors,
        r.failures.len()
    );
    s
}
