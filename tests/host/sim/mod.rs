//! Crash simulator: drives the core's load sequence, migration engine and
//! host-I/O path over in-memory members with a volatile write cache,
//! concurrent host I/O, member I/O errors and power cuts.
//!
//! It runs the very functions the kernel runs (invariant 8 of the theory):
//! `lifecycle::load` creates the array and assembles it after every power
//! cut or reload (members presented in a shuffled order), the engine
//! migrates, host requests are admitted by `gate::Gate`, split into member
//! I/O by `hostio::for_each_op`, and raid5 writes go through
//! `raid5::write_stripe`. Only the members, the clock and the host are
//! simulated.
//!
//! Every write (the engine's and the host's) goes to a per-member cache that
//! only a flush makes durable. At a crash, cached writes land in one of
//! several ways ([`Outcome`]): none, all, a prefix in issue order, or each
//! sector independently none or any one version; in the last case a
//! superblock sector may also land torn (some 8-byte words new, the others
//! old), which only the superblock's checksum can tell.
//!
//! Host requests are concurrent with the engine: once admitted (with the
//! gate's view of the moment) a request's member I/O runs piece by piece at
//! random moments between the engine's own member I/O, and the request is
//! acknowledged when its last piece is done. When the engine publishes a
//! unit in flight, the requests of the gate's old epoch are run to their end
//! before the engine goes on, as the kernel's drain waits for them.
//!
//! After a power cut the simulator loads the array again, reads the whole
//! volume through the recovered view, finishes the migration (possibly
//! crashing again during recovery), and checks that:
//!
//! - every sector reads back the last write acknowledged before the last
//!   completed host flush, or a later write (or the original data);
//! - reads are stable after recovery and exact for writes made after it;
//! - the array ends clean in the target layout, with consistent copies and
//!   parity and zeros past the source's size (on raid0, which has neither,
//!   whatever the members held there until the host writes it).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use raidmig_core::bitmap::{self, BitmapGeometry, BLOCK_BYTES, REGIONS_PER_BLOCK};
use raidmig_core::engine::{Engine, EngineConfig, EngineError, IoError, MemberIo, Step, Time, Transfer};
use raidmig_core::format::{ArrayState, Superblock};
use raidmig_core::gate::{Admission, Gate};
use raidmig_core::health::Roles;
use raidmig_core::hostio::{for_each_op, Access, MemberOp, Place};
use raidmig_core::layout::{Geometry, Level, MAX_MEMBERS, RESERVED_TAIL_SECTORS};
use raidmig_core::lifecycle::{load, Fresh, LoadError, LoadParams, Recovered};
use raidmig_core::members::ArrayMembers;
use raidmig_core::moved;
use raidmig_core::plan::Migration;
use raidmig_core::prepare::prepared_superblock;
use raidmig_core::reshape::{plan_reshape, start_reshape, ReshapeError, ReshapeRequest};
use raidmig_core::raid5::{buffer_bytes, write_stripe, Raid5Error, StripeIo};
use raidmig_core::route::{route, Route, View};
use raidmig_core::scrub::{ScrubMode, Scrubber};
use raidmig_core::tail::{slot_of, superblock_sector, tail_start, SUPERBLOCK_BYTES, SUPERBLOCK_SECTORS};

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

/// A sector's contents, shared: forking a world at a crash point copies
/// pointers, not data.
type Shared = std::rc::Rc<Block>;

/// One member: durable sectors and the volatile cache over them.
#[derive(Clone, Debug, Default)]
struct Disk {
    durable: HashMap<u64, Shared>,
    cache: HashMap<u64, Shared>,
    /// Writes since the last flush, in issue order, sector by sector.
    pending: Vec<(u64, Shared)>,
    /// The superblock slots, `[start, end)`: a sector there can land torn.
    slots: (u64, u64),
}

impl Disk {
    fn read(&self, sector: u64, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(SECTOR).enumerate() {
            let s = sector + i as u64;
            match self.cache.get(&s).or_else(|| self.durable.get(&s)) {
                Some(b) => chunk.copy_from_slice(&b[..]),
                None => chunk.fill(0),
            }
        }
    }
    fn write(&mut self, sector: u64, buf: &[u8]) {
        for (i, chunk) in buf.chunks(SECTOR).enumerate() {
            let b: Shared = std::rc::Rc::new(chunk.try_into().unwrap());
            self.cache.insert(sector + i as u64, b.clone());
            self.pending.push((sector + i as u64, b));
        }
    }
    fn put(&mut self, sector: u64, b: Block) {
        self.durable.insert(sector, std::rc::Rc::new(b));
    }
    fn flush(&mut self) {
        for (s, b) in self.cache.drain() {
            self.durable.insert(s, b);
        }
        self.pending.clear();
    }
    /// Power cut: cached writes land as `mode` says.
    fn crash(&mut self, mode: Outcome, rng: &mut Rng) -> u64 {
        let mut torn = 0;
        match mode {
            Outcome::LoseAll => {}
            Outcome::KeepAll => {
                for (s, b) in self.cache.drain() {
                    self.durable.insert(s, b);
                }
            }
            Outcome::Prefix => {
                let k = rng.below(self.pending.len() as u64 + 1) as usize;
                for (s, b) in self.pending.drain(..).take(k) {
                    self.durable.insert(s, b);
                }
            }
            Outcome::Mixed => {
                let mut versions: HashMap<u64, Vec<Shared>> = HashMap::new();
                for (s, b) in self.pending.drain(..) {
                    versions.entry(s).or_default().push(b);
                }
                let mut sectors: Vec<u64> = versions.keys().copied().collect();
                sectors.sort_unstable();
                for s in sectors {
                    let v = &versions[&s];
                    let pick = rng.below(v.len() as u64 + 1) as usize;
                    if pick == v.len() {
                        continue;
                    }
                    let mut b = v[pick].clone();
                    if (self.slots.0..self.slots.1).contains(&s) && rng.chance(500) {
                        // A torn sector: each 8-byte word old or new.
                        let old = self.durable.get(&s).map_or([0; SECTOR], |o| **o);
                        let mut mix = *b;
                        for (w, o) in mix.chunks_mut(8).zip(old.chunks(8)) {
                            if rng.chance(500) {
                                w.copy_from_slice(o);
                            }
                        }
                        b = std::rc::Rc::new(mix);
                        torn += 1;
                    }
                    self.durable.insert(s, b);
                }
            }
        }
        self.cache.clear();
        self.pending.clear();
        torn
    }
}

/// How cached writes fare at a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// None lands.
    LoseAll,
    /// All land.
    KeepAll,
    /// The first few land, in the order they were issued.
    Prefix,
    /// Each sector independently: none, or any one version (a superblock
    /// sector possibly torn). A random sample of the combinations.
    Mixed,
}

pub const OUTCOMES: [Outcome; 4] = [Outcome::LoseAll, Outcome::KeepAll, Outcome::Prefix, Outcome::Mixed];

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
/// Not a write: what the members held, any contents (raid0's capacity past
/// the source's end until the host writes it).
const ANY_TAG: u64 = 0;

/// Whether a sector holding `got` holds one of `want`.
fn allowed(want: &[u64], got: Option<u64>) -> bool {
    want.contains(&ANY_TAG) || got.is_some_and(|t| want.contains(&t))
}

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
    /// Writes waiting to be admitted: (start, sectors, tag).
    queue: Vec<(u64, u64, u64)>,
    writes: u64,
    deferred: u64,
    refused: u64,
    flushes: u64,
    reads: u64,
}

impl HostModel {
    /// Sectors below `volume` hold the original data, the rest up to
    /// `target` zeros (`zeroed`) or anything.
    fn new(volume: u64, target: u64, zeroed: bool) -> HostModel {
        let past = if zeroed { ZERO_TAG } else { ANY_TAG };
        let history = (0..target)
            .map(|l| vec![Entry { tags: vec![if l < volume { ORIGINAL_TAG } else { past }], ack: Some(0) }])
            .collect();
        HostModel {
            history,
            clock: 1,
            durable_clock: 0,
            next_tag: 3,
            queue: Vec::new(),
            writes: 0,
            deferred: 0,
            refused: 0,
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

    /// What sector `l` may hold now: its latest write, or, while that is
    /// not acknowledged, anything since the latest acknowledged one.
    fn readable(&self, l: u64) -> Vec<u64> {
        let h = &self.history[l as usize];
        let from = h.iter().rposition(|e| e.ack.is_some()).unwrap_or(0);
        let mut tags: Vec<u64> = h[from..].iter().flat_map(|e| e.tags.iter().copied()).collect();
        tags.sort_unstable();
        tags.dedup();
        tags
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
    /// Per mille chance of a new host write / flush / read, and of running
    /// one piece of a host request in flight, before each engine I/O.
    pub host_write: u64,
    pub host_flush: u64,
    pub host_read: u64,
    pub host_progress: u64,
    /// Longest host request, in chunks.
    pub host_chunks: u64,
    /// Per mille chance, after a step, of a pause / of an unload and reload.
    pub pause: u64,
    pub reload: u64,
    /// Per mille chance that an engine I/O fails without a power cut.
    pub io_errors: u64,
    pub seed: u64,
    /// Write-intent bitmap region in sectors (0: no bitmap). The capacity a
    /// migration adds is then marked unsynced instead of zeroed, and the
    /// end of the run resyncs the marked regions, as the kernel's thread
    /// does, before the copies and parity are checked.
    pub bitmap: u64,
    /// Source layout (default: single over the first member, made by the
    /// load sequence; other sources get prepared superblocks written
    /// directly, for the layout pairs the kernel does not start yet).
    pub source: Option<Geometry>,
    /// The new layout in effect at once: the volume has the target's
    /// capacity from the start and host I/O over all of it has units moved
    /// out of order.
    pub at_once: bool,
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
            host_progress: 300,
            host_chunks: 2,
            pause: 30,
            reload: 40,
            io_errors: 10,
            seed,
            bitmap: 0,
            source: None,
            at_once: false,
        }
    }

    pub fn name(&self) -> String {
        let src = match self.source {
            Some(g) => format!("{}x{}/c{}", g.level().name(), g.members(), g.chunk_sectors()),
            None => "single".into(),
        };
        format!(
            "{src} -> {}x{} c{} rows{} unit{} buf{} bitmap{}{} seed{}",
            self.level.name(),
            self.members,
            self.chunk,
            self.rows,
            self.unit_stripes,
            self.buffer,
            self.bitmap,
            if self.at_once { " at-once" } else { "" },
            self.seed
        )
    }
}

/// Counts over a simulation.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub crash_points: u64,
    pub error_points: u64,
    pub nested_crashes: u64,
    pub torn_sectors: u64,
    pub writes: u64,
    pub units: u64,
    pub units_staged: u64,
    pub checkpoint_writes: u64,
    pub staging_records: u64,
    pub host_writes: u64,
    pub host_deferred: u64,
    pub host_refused: u64,
    pub host_flushes: u64,
    pub host_reads: u64,
    /// Host requests still running when the engine put a unit in flight,
    /// run to their end by the drain.
    pub drained: u64,
    /// Host requests routed to a staging area.
    pub staged_requests: u64,
    pub reloads: u64,
    pub io_errors: u64,
    /// Arrays made through the core's reshape checks and superblocks
    /// (`plan_reshape`, `reshape_superblock`).
    pub reshaped: u64,
    /// Units moved out of order for host requests.
    pub units_moved: u64,
    /// Host writes past the source's end acknowledged (the new layout in
    /// effect at once).
    pub writes_past_source: u64,
    pub failures: Vec<String>,
}

impl Report {
    pub fn add(&mut self, o: &Report) {
        self.crash_points += o.crash_points;
        self.error_points += o.error_points;
        self.nested_crashes += o.nested_crashes;
        self.torn_sectors += o.torn_sectors;
        self.writes += o.writes;
        self.units += o.units;
        self.units_staged += o.units_staged;
        self.checkpoint_writes += o.checkpoint_writes;
        self.staging_records += o.staging_records;
        self.host_writes += o.host_writes;
        self.host_deferred += o.host_deferred;
        self.host_refused += o.host_refused;
        self.host_flushes += o.host_flushes;
        self.host_reads += o.host_reads;
        self.drained += o.drained;
        self.staged_requests += o.staged_requests;
        self.reloads += o.reloads;
        self.io_errors += o.io_errors;
        self.reshaped += o.reshaped;
        self.units_moved += o.units_moved;
        self.writes_past_source += o.writes_past_source;
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
    /// No power cut: a member I/O error at every engine I/O of the main run,
    /// each explored to the end.
    EveryError,
}

/// A host request in flight: admitted, part of its member I/O maybe done.
#[derive(Clone, Debug)]
struct HostReq {
    /// The write's tag, or `None` for a read.
    tag: Option<u64>,
    start: u64,
    sectors: u64,
    epoch: Option<u8>,
    /// Member I/O still to do, in its layout and place.
    ops: Vec<(Geometry, Place, MemberOp)>,
    /// Target rows whose copies or parity the write changes.
    rows: Vec<u64>,
}

/// The simulated machine: members, host model and the gate.
#[derive(Clone)]
struct World {
    disks: Vec<Disk>,
    source: Geometry,
    target: Geometry,
    plan: Migration,
    members: ArrayMembers,
    gate: Gate,
    host: HostModel,
    reqs: Vec<HostReq>,
    rng: Rng,
    cfg: SimConfig,
    now: u64,
    /// Target rows written by the host since the last flush.
    dirty_rows: HashSet<u64>,
    /// Target rows whose copies or parity a crash may have left unequal.
    exempt_rows: HashSet<u64>,
    writes: u64,
    /// Engine I/O calls (reads, writes, flushes) of this run.
    engine_ios: u64,
    /// Main run: crash-explore at these write numbers.
    explore_at: HashSet<u64>,
    explore_every: bool,
    /// Fail engine I/O number n (counted over the whole run) once.
    error_at: Option<u64>,
    /// Recovery run: fail (power cut) at this write number.
    fail_at: Option<u64>,
    failed: bool,
    in_host: bool,
    /// Engine I/O is under way (transient errors may be injected).
    engine_io: bool,
    /// Whether the volume is exposed to the host (not between a power cut
    /// and the end of a load).
    exposed: bool,
    /// A live read that returned the wrong data.
    live_failure: Option<String>,
    /// Print every event (debugging).
    pub trace: bool,
    report: Report,
    /// The moved-unit map the load sequence or a reshape's start sized.
    moved: MovedMap,
}

/// The moved-unit map, copied with the world when it forks.
#[derive(Debug, Default)]
struct MovedMap(Vec<AtomicU64>);

impl Clone for MovedMap {
    fn clone(&self) -> MovedMap {
        MovedMap(self.0.iter().map(|w| AtomicU64::new(w.load(Ordering::Relaxed))).collect())
    }
}

/// The load sequence's I/O: devices in a shuffled order over the roles.
struct Devices<'a> {
    w: &'a mut World,
    role_of_device: Vec<usize>,
}

impl MemberIo for Devices<'_> {
    fn read(&mut self, device: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let role = self.role_of_device[device];
        self.w.read(role, sector, buf).map_err(|e| IoError { member: device, ..e })
    }
    fn write(&mut self, device: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let role = self.role_of_device[device];
        self.w.write(role, sector, buf).map_err(|e| IoError { member: device, ..e })
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.w.flush()
    }
    fn publish(&mut self, view: &View) {
        self.w.publish(view)
    }
    fn checkpoint_requested(&mut self) -> bool {
        self.w.checkpoint_requested()
    }
    fn move_requested(&mut self) -> Option<u64> {
        self.w.move_requested()
    }
    fn moved_map(&self) -> &[AtomicU64] {
        self.w.moved_map()
    }
    fn prepare_moved(&mut self, units: u64) -> bool {
        self.w.prepare_moved(units)
    }
}

/// A host write's raid5 stripe I/O on the simulated members.
struct Stripes<'a> {
    w: &'a mut World,
    tag: u64,
    base: u64,
}

impl StripeIo for Stripes<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.w.disks[member].read(sector, buf);
        Ok(())
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.w.disk_write(member, sector, buf)
    }
    fn host_data(&mut self, offset: u64, buf: &mut [u8]) {
        for (i, b) in buf.chunks_mut(SECTOR).enumerate() {
            b.copy_from_slice(&pattern(self.tag, self.base + offset + i as u64));
        }
    }
    fn to_host(&mut self, _offset: u64, _buf: &[u8]) {
        unreachable!("no member fails in this simulation: nothing is reconstructed");
    }
}

enum RunError {
    PowerCut,
    Fail(String),
}

impl World {
    /// `0..n` in a random order (Fisher-Yates).
    fn shuffled(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }

    fn new(cfg: &SimConfig) -> World {
        let chunk = cfg.chunk;
        let data = cfg.rows * chunk as u64;
        let target = Geometry::new(cfg.level, cfg.members, chunk, data).unwrap();
        let source = cfg.source.unwrap_or_else(|| Geometry::new(Level::Single, 1, chunk, data).unwrap());
        let rows = Migration::unit_rows_for(&source, &target, cfg.unit_stripes);
        let plan = Migration::new(source, target, rows).unwrap();
        // Members differ a little in size; all hold the data area and tail.
        let sizes: Vec<u64> = (0..cfg.members as u64).map(|m| data + RESERVED_TAIL_SECTORS + m * 3).collect();
        let uuids: Vec<[u8; 16]> = (0..cfg.members).map(|m| [m as u8 + 0x10; 16]).collect();
        let members = ArrayMembers::new([0xAB; 16], 1000, &uuids, &sizes);
        let disks = sizes
            .iter()
            .map(|&s| Disk { slots: (tail_start(s), tail_start(s) + 2 * SUPERBLOCK_SECTORS), ..Disk::default() })
            .collect();
        let mut w = World {
            disks,
            source,
            target,
            plan,
            members,
            gate: Gate::new(View::clean(ArrayState::Clean, 0)),
            host: HostModel::new(source.capacity(), target.capacity(), target.redundant() && cfg.bitmap == 0),
            reqs: Vec::new(),
            rng: Rng::new(cfg.seed),
            cfg: cfg.clone(),
            now: 0,
            dirty_rows: HashSet::new(),
            exempt_rows: HashSet::new(),
            writes: 0,
            engine_ios: 0,
            explore_at: HashSet::new(),
            explore_every: false,
            error_at: None,
            fail_at: None,
            failed: false,
            in_host: false,
            exposed: false,
            engine_io: false,
            live_failure: None,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            report: Report::default(),
            moved: MovedMap::default(),
        };
        // The user's data in the source layout; junk on the joining members'
        // data areas (old contents that must never show).
        for l in 0..source.capacity() {
            for c in 0..source.copies() {
                let at = source.locate_copy(l, c);
                w.disks[at.member].put(at.sector, pattern(ORIGINAL_TAG, l));
            }
        }
        if source.level().has_parity() {
            for l in 0..source.capacity() {
                let p = source.parity_location(l).unwrap();
                let mut acc = [0u8; SECTOR];
                raid5_parity(&w.disks, &source, p.member, p.sector, &mut acc);
                w.disks[p.member].put(p.sector, acc);
            }
        }
        for m in 0..cfg.members {
            for s in 0..data {
                if source.content(m, s) == raidmig_core::layout::Content::Unused {
                    w.disks[m].put(s, pattern(0xDEAD_0000 + m as u64, s));
                }
            }
        }
        w
    }

    /// Makes the array: through the load sequence for a single source (as
    /// the kernel does), else by writing prepared superblocks directly.
    /// Returns the engine to run.
    fn create(&mut self) -> Result<Engine, String> {
        if let Some(source) = self.cfg.source {
            // A settled array of the source layout, reshaped through the
            // core's checks and superblocks, as the shell does; pairs the
            // shell does not offer get prepared superblocks directly.
            let settled = Superblock {
                state: ArrayState::Clean,
                layout: source,
                migration: None,
                ..prepared_superblock(&self.plan, &self.members, 0, 0, self.bitmap_region(), false)
            };
            let req = ReshapeRequest {
                level: self.target.level(),
                add: self.cfg.members - source.members(),
                chunk_sectors: self.target.chunk_sectors(),
            };
            let added = &self.members.device_sectors[source.members()..self.cfg.members];
            let reshape = match plan_reshape(&settled, req, added, self.cfg.unit_stripes) {
                Ok(plan) if plan == self.plan => {
                    self.report.reshaped += 1;
                    true
                }
                Ok(plan) => return Err(format!("the core planned {plan:?}, not {:?}", self.plan)),
                Err(ReshapeError::Unsupported) => false,
                Err(e) => return Err(format!("reshape refused: {e:?}")),
            };
            let e = if reshape {
                // The core's start: added members checked, then every
                // superblock written and flushed.
                let mut buf = vec![0u8; self.buffer_size()];
                let order: Vec<usize> = (0..self.cfg.members).collect();
                let (plan, members, engine, at_once) = (self.plan, self.members, self.cfg.engine, self.cfg.at_once);
                start_reshape(&mut Devices { w: self, role_of_device: order }, &settled, &plan, &members, engine, at_once, Time::at(0), &mut buf)
                    .map_err(|e| format!("start_reshape: {} ({e:?})", e.message()))?
            } else {
                let mut buf = [0u8; SUPERBLOCK_BYTES];
                for role in 0..self.cfg.members {
                    let sb = prepared_superblock(&self.plan, &self.members, role, 0, self.bitmap_region(), self.cfg.at_once);
                    sb.encode(&mut buf).unwrap();
                    let at = superblock_sector(self.members.device_sectors[role], slot_of(sb.generation));
                    self.disks[role].write(at, &buf);
                    self.disks[role].flush();
                }
                let sb = self.read_superblocks()[0].unwrap();
                let e = Engine::resume(&sb, self.cfg.engine, Time::at(0)).map_err(|e| format!("{e:?}"))?;
                self.prepare_moved(e.plan().units());
                e
            };
            self.gate = Gate::new(e.view());
            self.exposed = true;
            return Ok(e);
        }
        let mut fresh = Fresh { array_uuid: self.members.array_uuid, member_uuids: [[0; 16]; MAX_MEMBERS] };
        fresh.member_uuids[..self.cfg.members].copy_from_slice(&self.members.uuids[..self.cfg.members]);
        let params = LoadParams {
            level: Some(self.cfg.level),
            chunk_sectors: self.cfg.chunk,
            assume_clean: false,
            force: false,
            start: true,
            unit_sectors: self.cfg.unit_stripes as u64 * self.target.stripe_sectors(),
            bitmap_region_sectors: self.cfg.bitmap,
            engine: self.cfg.engine,
            at_once: self.cfg.at_once,
        };
        let sizes: Vec<u64> = self.members.device_sectors[..self.cfg.members].to_vec();
        let mut buf = vec![0u8; self.buffer_size()];
        let order: Vec<usize> = (0..self.cfg.members).collect();
        let loaded = load(
            &mut Devices { w: self, role_of_device: order },
            &sizes,
            &params,
            &fresh,
            Time { mono_ms: 0, wall_ms: 1000 },
            &mut buf,
        )
        .map_err(|e| format!("create: {} ({e:?})", e.message()))?;
        if loaded.members != self.members || loaded.array.target() != self.target {
            return Err(format!("create made {:?}", loaded.array.target()));
        }
        let Recovered::Migration(e) = loaded.array else { return Err("create made no migration".into()) };
        if *e.plan() != self.plan {
            return Err(format!("create planned {:?}", e.plan()));
        }
        self.gate = Gate::new(e.view());
        self.exposed = true;
        Ok(e)
    }

    /// The bitmap region the array records (a level with redundancy only,
    /// as the load sequence decides).
    fn bitmap_region(&self) -> Option<u64> {
        (self.cfg.bitmap != 0 && self.target.redundant()).then_some(self.cfg.bitmap)
    }

    fn buffer_size(&self) -> usize {
        let stripe = (self.target.stripe_chunks() as usize + 1) * self.cfg.chunk as usize * SECTOR;
        let b = if self.cfg.buffer == 0 { stripe } else { self.cfg.buffer };
        b.max(2 * SUPERBLOCK_BYTES)
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
            if self.explore_every { OUTCOMES.to_vec() } else { vec![OUTCOMES[point_rng.below(4) as usize]] };
        for outcome in outcomes {
            let mut fork = self.fork();
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
            self.report.torn_sectors += fork.report.torn_sectors;
        }
    }

    /// A copy of the world that explores nothing itself.
    fn fork(&self) -> World {
        let mut fork = self.clone();
        fork.explore_at.clear();
        fork.explore_every = false;
        fork.engine_io = false;
        fork.report = Report::default();
        fork
    }

    fn power_cut(&mut self, outcome: Outcome) {
        if self.trace {
            println!(
                "  POWER CUT {outcome:?} at write {} dirty {:?} exempt {:?}",
                self.writes, self.dirty_rows, self.exempt_rows
            );
        }
        for d in &mut self.disks {
            self.report.torn_sectors += d.crash(outcome, &mut self.rng);
        }
        self.host.crash();
        for r in self.reqs.drain(..) {
            self.exempt_rows.extend(r.rows);
        }
        self.exempt_rows.extend(self.dirty_rows.drain());
        self.in_host = false;
        self.exposed = false;
    }

    // ---------------------------------------------------------------- host

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
        if !self.reqs.is_empty() && self.rng.chance(self.cfg.host_progress) {
            let i = self.rng.below(self.reqs.len() as u64) as usize;
            self.progress(i)?;
        }
        let volume = self.gate.view().volume_sectors;
        let longest = self.cfg.host_chunks * self.cfg.chunk as u64;
        if self.rng.chance(self.cfg.host_write) {
            let start = self.rng.below(volume);
            let len = 1 + self.rng.below(longest.min(volume - start));
            let tag = self.host.next_tag;
            self.host.next_tag += 1;
            self.host.writes += 1;
            if self.busy(start, len, true) || !self.submit(start, len, Some(tag))? {
                self.host.deferred += 1;
                self.host.queue.push((start, len, tag));
            }
        }
        if self.rng.chance(self.cfg.host_flush) {
            self.host_flush();
        }
        if self.rng.chance(self.cfg.host_read) {
            let start = self.rng.below(volume);
            let len = 1 + self.rng.below(longest.min(volume - start));
            if !self.busy(start, len, false) {
                self.submit(start, len, None)?;
            }
        }
        Ok(())
    }

    /// Whether a request over `[start, start + len)` would overlap one in
    /// flight or waiting that it must not run beside (a write beside
    /// anything, a read beside a write).
    fn busy(&self, start: u64, len: u64, write: bool) -> bool {
        let overlaps = |s: u64, n: u64| s < start + len && start < s + n;
        self.host.queue.iter().any(|&(s, n, _)| overlaps(s, n))
            || self.reqs.iter().any(|r| (write || r.tag.is_some()) && overlaps(r.start, r.sectors))
    }

    fn retry_queue(&mut self) -> Result<(), IoError> {
        while let Some(&(start, len, tag)) = self.host.queue.first() {
            let clash = self.reqs.iter().any(|r| r.start < start + len && start < r.start + r.sectors);
            if clash || !self.submit(start, len, Some(tag))? {
                break;
            }
            self.host.queue.remove(0);
        }
        Ok(())
    }

    fn host_flush(&mut self) {
        let started = self.host.clock;
        if self.trace {
            println!("  host flush");
        }
        self.flush_all();
        // Writes acknowledged before the flush began (ack < started) are durable.
        self.host.durable_clock = self.host.durable_clock.max(started - 1);
        self.host.flushes += 1;
    }

    fn flush_all(&mut self) {
        for d in &mut self.disks {
            d.flush();
        }
        self.dirty_rows.clear();
    }

    /// Offers a request to the gate; once admitted it runs with the gate's
    /// view of this moment. Returns whether it was admitted (or refused:
    /// then it is done, and failed).
    fn submit(&mut self, start: u64, sectors: u64, tag: Option<u64>) -> Result<bool, IoError> {
        let (view, epoch) = match self.gate.admit(&self.moved.0, start, sectors, tag.is_some()) {
            Admission::Go { view, epoch } => (view, epoch),
            Admission::Wait | Admission::WaitCheckpoint | Admission::WaitMove => return Ok(false),
            Admission::Refuse => {
                // Failed to the host: the sectors keep what they held.
                self.host.refused += 1;
                return Ok(true);
            }
        };
        let access = if tag.is_some() { Access::Write } else { Access::Read };
        let mut ops = Vec::new();
        let dev = self.members.device_sectors;
        for run in route(&view, &self.moved.0, start, sectors, tag.is_some()) {
            let (g, place) = match run.route {
                Route::Target => (self.target, Place::Direct),
                Route::Source => (self.source, Place::Direct),
                Route::Staging => {
                    self.report.staged_requests += 1;
                    (self.target, Place::staging(&view, &self.target))
                }
                other => panic!("admitted request routed {other:?}"),
            };
            for_each_op(&g, place, &dev, Roles::NONE, access, start, run.start, run.sectors, |op| ops.push((g, place, op)));
        }
        let mut rows = Vec::new();
        if let Some(tag) = tag {
            for l in start..start + sectors {
                self.host.history[l as usize].push(Entry { tags: vec![tag], ack: None });
            }
            // Rows of every copy and parity are dirty from the first write
            // to the flush after the last: a power cut may strike between
            // any two of them.
            let g = self.target;
            let shift = g.chunk_shift();
            for run in route(&view, &self.moved.0, start, sectors, true) {
                if matches!(run.route, Route::Target | Route::Staging) {
                    for p in g.pieces(run.start, run.sectors) {
                        let mut places: Vec<u64> =
                            (0..g.copies()).map(|c| g.locate_copy(p.logical, c).sector).collect();
                        places.extend(g.parity_location(p.logical).map(|l| l.sector));
                        for s in places {
                            rows.extend((s >> shift)..=((s + p.sectors - 1) >> shift));
                        }
                    }
                }
            }
        } else {
            self.host.reads += 1;
        }
        if self.trace {
            println!(
                "  host {} tag {tag:?} [{start}, +{sectors}) view c{} k{} {:?} epoch {epoch:?}",
                if tag.is_some() { "write" } else { "read" },
                view.copied,
                view.checkpoint,
                view.next
            );
        }
        self.reqs.push(HostReq { tag, start, sectors, epoch, ops, rows });
        Ok(true)
    }

    /// Runs one piece of request `i`'s member I/O; completes it after its last.
    fn progress(&mut self, i: usize) -> Result<(), IoError> {
        if let Some((g, place, op)) = self.reqs[i].ops.pop() {
            let (tag, base) = (self.reqs[i].tag, self.reqs[i].start);
            self.dirty_rows.extend(self.reqs[i].rows.iter().copied());
            self.run_op(tag, base, &g, place, op)?;
        }
        if self.reqs[i].ops.is_empty() {
            let r = self.reqs.remove(i);
            if let Some(tag) = r.tag {
                let _ = tag;
                if r.start + r.sectors > self.source.capacity() {
                    self.report.writes_past_source += 1;
                }
                let ack = self.host.clock;
                self.host.clock += 1;
                for l in r.start..r.start + r.sectors {
                    self.host.history[l as usize].last_mut().unwrap().ack = Some(ack);
                }
            }
        }
        Ok(())
    }

    /// Runs every request of `epoch` to its end (the engine waits for them).
    fn drain(&mut self, epoch: u8) -> Result<(), IoError> {
        while let Some(i) = self.reqs.iter().position(|r| r.epoch == Some(epoch)) {
            self.report.drained += 1;
            while i < self.reqs.len() && self.reqs[i].epoch == Some(epoch) && !self.reqs[i].ops.is_empty() {
                self.progress(i)?;
            }
            if i < self.reqs.len() && self.reqs[i].epoch == Some(epoch) {
                self.progress(i)?;
            }
        }
        Ok(())
    }

    /// Runs every request in flight to its end.
    fn finish_requests(&mut self) -> Result<(), IoError> {
        while !self.reqs.is_empty() {
            self.progress(0)?;
        }
        Ok(())
    }

    fn run_op(&mut self, tag: Option<u64>, base: u64, g: &Geometry, place: Place, op: MemberOp) -> Result<(), IoError> {
        match (op, tag) {
            (MemberOp::Data { member, sector, sectors, offset }, Some(tag)) => {
                let mut buf = vec![0u8; sectors as usize * SECTOR];
                for (i, b) in buf.chunks_mut(SECTOR).enumerate() {
                    b.copy_from_slice(&pattern(tag, base + offset + i as u64));
                }
                self.disk_write(member, sector, &buf)
            }
            (MemberOp::Data { member, sector, sectors, offset }, None) => {
                let mut buf = vec![0u8; sectors as usize * SECTOR];
                self.disks[member].read(sector, &mut buf);
                for (i, b) in buf.chunks(SECTOR).enumerate() {
                    let l = base + offset + i as u64;
                    let got = decode_tag(b.try_into().unwrap(), l);
                    let want = self.host.readable(l);
                    if !allowed(&want, got) && self.live_failure.is_none() {
                        self.live_failure =
                            Some(format!("live read: sector {l} ({place:?}) holds {got:?}, expected one of {want:?}"));
                    }
                }
                Ok(())
            }
            (MemberOp::Stripe { start, sectors, .. }, Some(tag)) => {
                let dev = self.members.device_sectors;
                let mut buf = vec![0u8; buffer_bytes(g.members())];
                let g = *g;
                let r = write_stripe(&mut Stripes { w: self, tag, base }, &g, place, &dev, Roles::NONE, base, start, sectors, &mut buf);
                match r {
                    Ok(()) => Ok(()),
                    // Member failures are not modelled here: a failed
                    // member write fails the host request (the stripe is
                    // written whole without that member, which stays in
                    // sync with old data: what a failed write may leave).
                    Err(Raid5Error::Io(e) | Raid5Error::MemberFailed(e)) => Err(e),
                    Err(e) => panic!("raid5 write: {e:?}"),
                }
            }
            (op, t) => panic!("unexpected host op {op:?} for {t:?}"),
        }
    }

    /// Reads logical `[start, start + sectors)` now, routed by the gate's
    /// view, as the host would.
    fn read_now(&self, start: u64, sectors: u64) -> Vec<(u64, Option<u64>, Route)> {
        let view = self.gate.view();
        let dev = self.members.device_sectors;
        let mut out = Vec::new();
        for run in route(&view, &self.moved.0, start, sectors, false) {
            let (g, place) = match run.route {
                Route::Target => (self.target, Place::Direct),
                Route::Source => (self.source, Place::Direct),
                Route::Staging => (self.target, Place::staging(&view, &self.target)),
                _ => continue,
            };
            for_each_op(&g, place, &dev, Roles::NONE, Access::Read, start, run.start, run.sectors, |op| {
                if let MemberOp::Data { member, sector, sectors, offset } = op {
                    let mut buf = vec![0u8; sectors as usize * SECTOR];
                    self.disks[member].read(sector, &mut buf);
                    for (i, b) in buf.chunks(SECTOR).enumerate() {
                        let l = start + offset + i as u64;
                        out.push((l, decode_tag(b.try_into().unwrap(), l), run.route));
                    }
                }
            });
        }
        out
    }

    /// After a load: reads every routable sector once and pins what it
    /// holds (it must be allowed); later reads must return exactly that.
    fn pin_volume(&mut self, pinned: &mut [bool]) -> Result<(), String> {
        let volume = self.gate.view().volume_sectors;
        for (l, got, route) in self.read_now(0, volume) {
            // A sector under a write still in flight changes when it ends:
            // pinned later.
            if pinned[l as usize] || self.host.history[l as usize].last().unwrap().ack.is_none() {
                continue;
            }
            let want = self.host.latest(l).to_vec();
            match got {
                Some(t) if want.contains(&t) => self.host.pin(l, t),
                // Not one of ours, never written: nothing to pin.
                _ if allowed(&want, got) => {}
                _ => return Err(format!("after recovery sector {l} ({route:?}) holds {got:?}, allowed {want:?}")),
            }
            pinned[l as usize] = true;
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

    // ------------------------------------------------------------ lifecycle

    /// Loads the array from its superblocks, as after a reboot or an
    /// rmmod: the load sequence over the members in a shuffled order.
    fn reload(&mut self) -> Result<Recovered, String> {
        let n = self.cfg.members;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let sizes: Vec<u64> = order.iter().map(|&r| self.members.device_sectors[r]).collect();
        let params = LoadParams {
            level: None,
            chunk_sectors: self.cfg.chunk,
            assume_clean: false,
            force: false,
            start: false,
            unit_sectors: 0,
            bitmap_region_sectors: 0,
            engine: self.cfg.engine,
            at_once: self.cfg.at_once,
        };
        let fresh = Fresh { array_uuid: [0; 16], member_uuids: [[0; 16]; MAX_MEMBERS] };
        // The load holds both superblock slots of every member at once.
        let mut buf = vec![0u8; self.buffer_size().max(n * 2 * SUPERBLOCK_BYTES)];
        self.exposed = false;
        let now = Time::at(self.now);
        let mut attempts = 0;
        let loaded = loop {
            // Member I/O errors may strike the load too: it is refused, and
            // the administrator loads again.
            self.engine_io = true;
            let r = load(&mut Devices { w: self, role_of_device: order.clone() }, &sizes, &params, &fresh, now, &mut buf);
            self.engine_io = false;
            match r {
                Ok(l) => break l,
                Err(LoadError::Io { .. }) if self.failed => return Err(POWER_CUT.into()),
                Err(LoadError::Io { .. }) if attempts < 20 => attempts += 1,
                Err(e) => return Err(format!("load: {} ({e:?})", e.message())),
            }
        };
        for role in 0..n {
            if order[loaded.device_of_role[role] as usize] != role {
                return Err(format!("assembly put device {} at role {role}", loaded.device_of_role[role]));
            }
        }
        if loaded.members != self.members {
            return Err("assembly got other member identities".into());
        }
        if self.trace {
            println!("  loaded {:?} notes {:?}", loaded.array.view(), loaded.notes);
        }
        self.gate = Gate::new(loaded.array.view());
        self.exposed = true;
        Ok(loaded.array)
    }

    /// Loads the array after a power cut, checks the volume, finishes the
    /// migration and checks the result.
    fn recover_and_finish(&mut self) -> Result<(), String> {
        let mut pinned = vec![false; self.target.capacity() as usize];
        loop {
            let recovered = match self.reload() {
                Ok(r) => r,
                Err(e) if e == POWER_CUT => {
                    self.nested_power_cut();
                    continue;
                }
                Err(e) => return Err(e),
            };
            pinned.iter_mut().for_each(|p| *p = false);
            self.pin_volume(&mut pinned)?;
            let run = match recovered {
                Recovered::Settled { layout, state, .. } => {
                    if layout != self.target || state != ArrayState::Clean {
                        return Err(format!("settled in {layout:?} {state:?}"));
                    }
                    Ok(())
                }
                Recovered::Migration(mut e) => self.run_engine(&mut e, Some(&mut pinned)),
            };
            match run.and_then(|()| self.settle()) {
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
        let outcome = OUTCOMES[self.rng.below(4) as usize];
        self.power_cut(outcome);
    }

    /// Runs the engine to the end, with host I/O between and during steps.
    fn run_engine(&mut self, engine: &mut Engine, mut pinned: Option<&mut Vec<bool>>) -> Result<(), RunError> {
        let mut buf = vec![0u8; self.buffer_size()];
        let members = self.members;
        self.publish(&engine.view());
        for _ in 0..100_000 {
            self.now += 1 + self.rng.below(4);
            self.engine_io = true;
            let step = engine.step(self, &members, &mut buf, Time::at(self.now));
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
                Err(EngineError::Io(_)) => {
                    // The kernel thread stops with a checkpoint (or, later,
                    // the user pauses); the host goes on meanwhile; the user
                    // resumes later.
                    if self.rng.chance(500) {
                        self.engine_io = true;
                        let r = if self.rng.chance(700) {
                            engine.stop(self, &members, &mut buf, Time::at(self.now))
                        } else {
                            engine.pause(self, &members, &mut buf, Time::at(self.now))
                        };
                        self.engine_io = false;
                        self.check_engine_call(r)?;
                    }
                    for _ in 0..3 {
                        self.host_activity().map_err(|_| self.run_failure())?;
                    }
                    engine.unpause();
                    Step::Checkpointed
                }
                other => other.map_err(|e| RunError::Fail(format!("engine: {e:?}")))?,
            };
            if let Some(p) = pinned.as_deref_mut() {
                self.pin_volume(p).map_err(RunError::Fail)?;
            }
            self.host_activity().map_err(|_| self.run_failure())?;
            match step {
                Step::Finished => {
                    self.add_stats(engine);
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
                    return Ok(());
                }
                Step::Idle => {
                    return Err(RunError::Fail(format!("engine idle in state {:?}", engine.state())))
                }
                _ => {
                    if self.rng.chance(self.cfg.pause) {
                        self.engine_io = true;
                        let r = engine.pause(self, &members, &mut buf, Time::at(self.now));
                        self.engine_io = false;
                        self.check_engine_call(r)?;
                    } else if self.rng.chance(self.cfg.reload) {
                        // Module unload and load: nobody has the volume
                        // open (rmmod refuses otherwise), so host I/O has
                        // ended; the engine stops with a checkpoint, the
                        // load sequence runs.
                        self.finish_requests().map_err(|_| self.run_failure())?;
                        self.exposed = false;
                        self.engine_io = true;
                        let r = engine.stop(self, &members, &mut buf, Time::at(self.now));
                        self.engine_io = false;
                        self.check_engine_call(r)?;
                        self.add_stats(engine);
                        let queued = std::mem::take(&mut self.host.queue);
                        let recovered = match self.reload() {
                            Ok(r) => r,
                            Err(e) if e == POWER_CUT => return Err(RunError::PowerCut),
                            Err(e) => return Err(RunError::Fail(format!("reload: {e}"))),
                        };
                        self.host.queue = queued;
                        self.report.reloads += 1;
                        match recovered {
                            Recovered::Migration(e) => *engine = e,
                            // The record of the end was written (by the stop,
                            // or by a step whose flush then failed).
                            Recovered::Settled { state: ArrayState::Clean, .. }
                                if engine.view().copied == engine.plan().units() =>
                            {
                                return Ok(());
                            }
                            other => return Err(RunError::Fail(format!("reload found {other:?}"))),
                        }
                    }
                }
            }
        }
        Err(RunError::Fail("engine did not finish".into()))
    }

    /// Whether this engine I/O fails without a power cut (the engine then
    /// returns an error and the simulated kernel thread tries again).
    fn transient_error(&mut self) -> bool {
        if !self.engine_io {
            return false;
        }
        self.engine_ios += 1;
        if self.error_at == Some(self.engine_ios) {
            self.error_at = None;
            self.report.io_errors += 1;
            if self.trace {
                println!("  injected I/O error at engine I/O {}", self.engine_ios);
            }
            return true;
        }
        if self.rng.chance(self.cfg.io_errors) {
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
        self.report.units_moved += s.units_moved;
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

    /// Runs the host requests still in flight or waiting to their end.
    fn settle(&mut self) -> Result<(), RunError> {
        for _ in 0..10_000 {
            self.finish_requests().map_err(|_| self.run_failure())?;
            if self.host.queue.is_empty() {
                break;
            }
            self.retry_queue().map_err(|_| self.run_failure())?;
        }
        if !self.host.queue.is_empty() {
            return Err(RunError::Fail("host writes still waiting after the end".into()));
        }
        if let Some(e) = self.live_failure.take() {
            return Err(RunError::Fail(e));
        }
        Ok(())
    }

    /// The end state: clean superblocks, every sector as expected through the
    /// target layout on every copy, parity consistent, zeros past the source.
    /// Host requests must have settled.
    fn verify_final(&mut self) -> Result<(), String> {
        if !self.reqs.is_empty() || !self.host.queue.is_empty() {
            return Err("host requests left at the end".into());
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
        let resynced = self.resync_marked_regions()?;
        let exempt = |w: &World, row: u64| w.exempt_rows.contains(&row) && !resynced.contains(&(row << shift));
        for l in 0..g.capacity() {
            let want = self.host.latest(l).to_vec();
            let first = g.locate_copy(l, 0);
            let mut b0 = [0u8; SECTOR];
            self.disks[first.member].read(first.sector, &mut b0);
            for c in 0..g.copies() {
                let at = g.locate_copy(l, c);
                // Copies a crash left unequal (no resync yet): the one reads
                // use must be right.
                if c != g.read_copy(l) && exempt(self, at.sector >> shift) {
                    continue;
                }
                let mut b = [0u8; SECTOR];
                self.disks[at.member].read(at.sector, &mut b);
                let got = decode_tag(&b, l);
                if !allowed(&want, got) {
                    return Err(format!("final: sector {l} copy {c} at {at:?} holds {got:?}, expected {want:?}"));
                }
                // Copies agree byte for byte, where any contents would do
                // (capacity the migration added) as well.
                if c > 0 && b != b0 && !exempt(self, at.sector >> shift) {
                    return Err(format!("final: sector {l} copy {c} at {at:?} differs from copy 0 at {first:?}"));
                }
            }
            if let Some(p) = g.parity_location(l) {
                if !exempt(self, p.sector >> shift) {
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

impl World {
    /// What the kernel's thread does once the migration is over: every
    /// region set in the live bitmap of the members (their union) is
    /// scrubbed in repair mode, with the core's scrubber. Returns the
    /// member sectors of the target rows so covered (row starts).
    fn resync_marked_regions(&mut self) -> Result<HashSet<u64>, String> {
        let mut rows = HashSet::new();
        let Some(region) = self.bitmap_region() else { return Ok(rows) };
        let g = self.target;
        let geo = BitmapGeometry::new(g.capacity(), region).ok_or("no bitmap geometry")?;
        let mut image = vec![0u8; geo.image_bytes()];
        for m in 0..g.members() {
            let mut b = vec![0u8; geo.image_bytes()];
            self.disks[m].read(bitmap::block_sector(self.members.device_sectors[m], 0), &mut b);
            image.iter_mut().zip(&b).for_each(|(i, x)| *i |= x);
        }
        // The scrubber takes a 4 KiB slice per member and one more.
        let mut buf = vec![0u8; self.buffer_size().max((g.members() + 1) * 4096)];
        for r in bitmap::dirty(&image, geo.regions()) {
            let (start, end) = geo.region_range(r, g.capacity());
            let Some(mut sc) = Scrubber::range(g, ScrubMode::Repair, start, end) else { continue };
            let mut io = Resync { disks: &mut self.disks };
            while sc.next_window().is_some() {
                sc.scrub_window(&mut io, &mut buf).map_err(|e| format!("resync of region {r}: {e:?}"))?;
            }
            for l in start..end {
                for c in 0..g.copies() {
                    rows.insert(g.locate_copy(l, c).sector >> g.chunk_shift() << g.chunk_shift());
                }
                if let Some(p) = g.parity_location(l) {
                    rows.insert(p.sector >> g.chunk_shift() << g.chunk_shift());
                }
            }
        }
        Ok(rows)
    }
}

/// The members as the resync at the end sees them: no power cut, no error.
struct Resync<'a> {
    disks: &'a mut [Disk],
}

impl MemberIo for Resync<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.disks[member].read(sector, buf);
        Ok(())
    }
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.disks[member].write(sector, buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.disks.iter_mut().for_each(Disk::flush);
        Ok(())
    }
    fn publish(&mut self, _: &View) {}
    fn checkpoint_requested(&mut self) -> bool {
        false
    }
}

const POWER_CUT: &str = "power cut";

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

    /// The kernel submits a batch's transfers together: they land in any
    /// order, each one a moment for a power cut or an error, and every one
    /// is attempted after another failed.
    fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
        let mut first = Ok(());
        for i in self.shuffled(batch.len()) {
            let t = batch[i];
            let r = self.read(t.member, t.sector, &mut buf[t.at..t.at + t.len]);
            first = first.and(r);
        }
        first
    }

    fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
        let mut first = Ok(());
        for i in self.shuffled(batch.len()) {
            let t = batch[i];
            let r = self.write(t.member, t.sector, &buf[t.at..t.at + t.len]);
            first = first.and(r);
        }
        first
    }

    /// Writes and reads of one batch run at the same time: they land in
    /// any order, each a moment for a power cut or an error. A read that
    /// shares member sectors with a write of its batch would return what
    /// the order decides: the engine must never issue one (a failure).
    fn write_read_all(&mut self, buf: &mut [u8], writes: &[Transfer], reads: &[Transfer]) -> Result<(), IoError> {
        let sectors = |t: &Transfer| t.sector..t.sector + (t.len / SECTOR) as u64;
        let clash = writes.iter().find_map(|w| {
            reads.iter().find(|r| r.member == w.member && sectors(r).start < sectors(w).end && sectors(w).start < sectors(r).end).map(|r| (*w, *r))
        });
        if let Some((w, r)) = clash {
            self.live_failure.get_or_insert(format!("a batch reads {r:?} while it writes {w:?}"));
        }
        let mut first = Ok(());
        for i in self.shuffled(writes.len() + reads.len()) {
            let r = match writes.get(i) {
                Some(t) => self.write(t.member, t.sector, &buf[t.at..t.at + t.len]),
                None => {
                    let t = reads[i - writes.len()];
                    self.read(t.member, t.sector, &mut buf[t.at..t.at + t.len])
                }
            };
            first = first.and(r);
        }
        first
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
        if let Some(old) = self.gate.publish(view) {
            // The engine waits for the old epoch's requests: they run to
            // their end now. A power cut while they do stops everything.
            let _ = self.drain(old);
        }
    }

    fn checkpoint_requested(&mut self) -> bool {
        self.gate.checkpoint_requested()
    }

    fn move_requested(&mut self) -> Option<u64> {
        self.gate.move_requested()
    }

    fn moved_map(&self) -> &[AtomicU64] {
        &self.moved.0
    }

    fn prepare_moved(&mut self, units: u64) -> bool {
        self.moved = MovedMap((0..moved::words(units)).map(|_| AtomicU64::new(0)).collect());
        true
    }

    /// The live bitmap's blocks holding the regions of `[start, end)` get
    /// their bits, on every member, each written with FUA: a moment for a
    /// power cut or an error, durable once written.
    fn mark_unsynced(&mut self, start: u64, end: u64) -> Result<bool, IoError> {
        let Some(region) = self.bitmap_region() else { return Ok(false) };
        if self.failed {
            return Err(IoError { member: 0, errno: -5 });
        }
        self.host_activity()?;
        if self.transient_error() {
            return Err(IoError { member: 0, errno: -5 });
        }
        let geo = BitmapGeometry::new(self.target.capacity(), region).expect("the load sequence checked it");
        let (first, last) = geo.regions_of(start, end - start);
        for m in 0..self.cfg.members {
            for block in bitmap::block_of(first)..=bitmap::block_of(last) {
                let at = bitmap::block_sector(self.members.device_sectors[m], block);
                let mut b = vec![0u8; BLOCK_BYTES];
                self.disks[m].read(at, &mut b);
                let base = block as u64 * REGIONS_PER_BLOCK;
                for r in (first..=last).filter(|&r| bitmap::block_of(r) == block) {
                    bitmap::set(&mut b, r - base, true);
                }
                self.disk_write(m, at, &b)?;
                for (i, s) in b.chunks(SECTOR).enumerate() {
                    self.disks[m].put(at + i as u64, s.try_into().unwrap());
                }
            }
        }
        Ok(true)
    }
}

/// Builds the world, makes the array and runs the migration to its end,
/// exploring what the world is set up to explore; returns the world.
fn main_run(cfg: &SimConfig, setup: impl FnOnce(&mut World)) -> (World, Result<(), String>) {
    let mut w = World::new(cfg);
    let mut engine = match w.create() {
        Ok(e) => e,
        Err(e) => return (w, Err(e)),
    };
    setup(&mut w);
    let result = match w.run_engine(&mut engine, None).and_then(|()| w.settle()) {
        Ok(()) => w.verify_final(),
        Err(RunError::Fail(e)) => Err(e),
        Err(RunError::PowerCut) => Err("unexpected power cut".into()),
    };
    (w, result)
}

/// Runs one migration, exploring crashes or errors as asked; returns the
/// counts.
pub fn simulate(cfg: &SimConfig, crashes: Crashes) -> Report {
    let mut report = Report::default();
    if let Crashes::EveryError = crashes {
        // One member I/O error at each engine I/O in turn, no power cut: a
        // deterministic run replayed with the error injected there.
        let cfg = SimConfig { io_errors: 0, ..cfg.clone() };
        let (dry, result) = main_run(&cfg, |_| {});
        if let Err(e) = result {
            report.failures.push(format!("{}: run without errors: {e}", cfg.name()));
        }
        report.add(&dry.report);
        for k in 1..=dry.engine_ios {
            let (w, result) = main_run(&cfg, |w| w.error_at = Some(k));
            if let Err(e) = result {
                report.failures.push(format!("{}: error at engine I/O {k}: {e}", cfg.name()));
            }
            report.error_points += 1;
            report.add(&Report { failures: Vec::new(), ..w.report });
        }
        return report;
    }
    let mut total_writes = 0;
    let mut at = HashSet::new();
    if let Crashes::Sample(count) = crashes {
        // A dry run counts the writes to draw crash points from.
        let (dry, _) = main_run(cfg, |_| {});
        total_writes = dry.writes.max(1);
        let mut rng = Rng::new(cfg.seed ^ 0x5A5A);
        for _ in 0..count {
            at.insert(1 + rng.below(total_writes));
        }
    }
    let every = matches!(crashes, Crashes::Every);
    let (w, result) = main_run(cfg, |w| {
        w.explore_at = at;
        w.explore_every = every;
    });
    if let Err(e) = result {
        report.failures.push(format!("{}: uncrashed run: {e}", cfg.name()));
    }
    report.add(&w.report);
    report.writes = w.writes.max(total_writes);
    report.host_writes = w.host.writes;
    report.host_deferred = w.host.deferred;
    report.host_refused = w.host.refused;
    report.host_flushes = w.host.flushes;
    report.host_reads = w.host.reads;
    report
}

/// A one-line summary of a report.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let per_unit = r.units + r.staging_records;
    let _ = write!(
        s,
        "crash points explored: {} (+{} nested during recovery, {} torn superblock sectors); error points: {}; \
         units copied: {} ({} through staging); checkpoint writes: {} vs {} with one per unit (saved {}); \
         host writes {} ({} deferred, {} refused), reads {}, flushes {}, drained by the engine {}, \
         routed to staging {}; unload/reload {}, member I/O errors {}; failures: {}",
        r.crash_points,
        r.nested_crashes,
        r.torn_sectors,
        r.error_points,
        r.units,
        r.units_staged,
        r.checkpoint_writes,
        per_unit,
        per_unit as i64 - r.checkpoint_writes as i64,
        r.host_writes,
        r.host_deferred,
        r.host_refused,
        r.host_reads,
        r.host_flushes,
        r.drained,
        r.staged_requests,
        r.reloads,
        r.io_errors,
        r.failures.len()
    );
    s
}
