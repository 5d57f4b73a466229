//! The migration engine: copies units from the source layout to the target
//! layout in the order of writes, flushes and superblock updates that makes a
//! power cut harmless at any moment.
//!
//! Keeps invariants 1, 2, 3 and 4 of the theory (see the crate
//! documentation): source data at or after the durable checkpoint stays
//! intact, no copied unit is overwritten by host writes before a checkpoint
//! covers it, a unit is in flight for host I/O while its rows change, and
//! members are at most one superblock generation apart; and invariant 9's
//! part for migrations: with a role out of sync nothing is copied, the
//! engine holds at a checkpoint ([`Engine::hold_degraded`]) and a
//! replacement is rebuilt over the checkpointed units (and up to the last
//! unit moved out of order) only ([`Engine::rebuild_extent`]), its progress
//! recorded with the migration;
//! and invariant 10's part for migrations: the capacity past the source's
//! end, with a bitmap, is marked unsynced durably before a checkpoint passes
//! its first unit, else zeroed like a copied unit; and invariant 11: a unit
//! moved out of order is marked only once its rows are durable, and host
//! writes reach it only once the mark is durable on every member.
//!
//! It is synchronous and generic over [`MemberIo`], so the kernel thread runs
//! it with blocking bio I/O and the host simulator runs the very same code over
//! in-memory members with a volatile cache. Unit data moves through one
//! caller-provided buffer; a unit is processed a group of stripes at a time
//! (as many as the buffer holds), and a stripe in slices of its chunks when
//! the buffer is smaller than a stripe (raid5 parity is computed per slice).
//! A group's reads are one batch and its writes another
//! ([`MemberIo::read_all`], [`MemberIo::write_all`]), which the kernel
//! submits together: within a unit copied in place no write overwrites
//! anything the unit still reads, and nothing of the unit counts before the
//! flush that precedes its checkpoint, so their order does not matter (the
//! simulator lands them in random order).
//!
//! Per unit (see [`super::plan`] for the classification):
//!
//! - direct copy: read the unit's logical data from the source, write its
//!   rows in the target layout. The checkpoint is deferred.
//! - indirect copy (the unit overwrites its own source): write the target
//!   rows to the staging areas, flush, record "unit N in staging" (with the
//!   checkpoint at N), flush, copy staging to the unit's rows, flush, record
//!   "staging empty" with the checkpoint at N+1, flush.
//!
//! A checkpoint is a flush, a superblock update on every member, a flush. It
//! is written before a unit whose rows overwrite source data of a copied but
//! not checkpointed unit, when the host asks for one (a write into copied but
//! not checkpointed data), after a configured number of units or milliseconds,
//! on pause and stop, and at the end (which records the array clean).
//!
//! With the new layout in effect at once ([`Engine::moving`]), a step
//! first serves the unit a host request waits for
//! ([`MemberIo::move_requested`]): after a checkpoint of the units copied in
//! order, it moves the first unit of the chain
//! [`Migration::first_to_move`] gives, directly or through staging as in
//! order, flushes, and only then marks it in the moved-unit map on every
//! member, flushed, before memory and host I/O see it moved ([`super::moved`]);
//! the in-order copy skips moved units. A mark that could not be written
//! everywhere is written again before anything else, and until then the
//! unit takes reads only (recovery may take it from its rows or its source,
//! which hold the same data).
//!
//! On an I/O error a step returns it and the engine is *halted* until the
//! next step or [`Engine::unpause`]: memory only ever holds what is durable,
//! the unit in flight is released, and host I/O is routed around what the
//! error left (see [`super::route::Next`]). A superblock update that failed
//! on some member stays pending and is written again, same generation and
//! contents, before anything else (so members never drift more than one
//! generation apart); until then routing keeps the older checkpoint, and a
//! unit being recorded in staging stays unsettled, since recovery may finish
//! it from there.

use core::sync::atomic::AtomicU64;

use super::format::{ArrayState, FormatError, MigrationRecord, Rebuild, Superblock};
use super::health::Roles;
use super::layout::{Content, SECTOR_SHIFT};
use super::members::ArrayMembers;
use super::moved::{self, is_moved};
use super::plan::{Migration, PlanError};
use super::route::{Next, View};
use super::tail::{slot_of, staging_sector, superblock_sector, SUPERBLOCK_BYTES};

/// The time of an engine call. The monotonic clock paces checkpoints (it
/// never steps back); the wall clock only stamps superblocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    /// Milliseconds on a clock that never goes back (since boot, say).
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch, for the superblock's update time.
    pub wall_ms: u64,
}

impl Time {
    /// Both clocks at `ms` (tests).
    pub fn at(ms: u64) -> Time {
        Time { mono_ms: ms, wall_ms: ms }
    }
}

/// A failed member I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError {
    /// The member (role) it failed on.
    pub member: usize,
    /// A negative errno, as the kernel reports it.
    pub errno: i32,
}

/// One member transfer of a batch: `len` bytes (a multiple of 512) at byte
/// `at` of the caller's buffer, from or to `sector` of `member`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// The member (role).
    pub member: usize,
    /// Its first sector.
    pub sector: u64,
    /// Where in the buffer.
    pub at: usize,
    /// How many bytes.
    pub len: usize,
}

/// A range to zero: `sectors` sectors at `sector` of `member`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroRange {
    /// The member (role).
    pub member: usize,
    /// Its first sector.
    pub sector: u64,
    /// How many sectors.
    pub sectors: u64,
}

/// Block I/O on the members, by role, and the link to host I/O.
///
/// Reads and writes are synchronous and may sit in a volatile cache until
/// [`MemberIo::flush`], which must make every completed write of every member
/// durable before it returns. A batch ([`MemberIo::read_all`],
/// [`MemberIo::write_all`]) returns once all of its transfers have ended; they
/// may run at the same time and end in any order, so a caller batches only
/// transfers whose order does not matter for crash safety (writes that a
/// later flush orders, reads into distinct parts of the buffer).
pub trait MemberIo {
    /// Reads `buf.len()` bytes (a multiple of 512) from `sector` of `member`.
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `sector` of `member`.
    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Reads every transfer of `batch` into its part of `buf` (the parts do
    /// not overlap). Every transfer is attempted; the first error is
    /// returned. The kernel submits them together.
    fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
        read_each(self, buf, batch)
    }
    /// Writes every transfer of `batch` from its part of `buf`. Every
    /// transfer is attempted; the first error is returned. The kernel
    /// submits them together.
    fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
        write_each(self, buf, batch)
    }
    /// Writes the transfers of `writes` from their parts of `buf` and reads
    /// those of `reads` into theirs, all at the same time: the caller lets
    /// no read share member sectors or a part of `buf` with any transfer of
    /// the call. Every transfer is attempted; the first error is returned.
    /// By default the writes, then the reads; the kernel submits them
    /// together.
    fn write_read_all(&mut self, buf: &mut [u8], writes: &[Transfer], reads: &[Transfer]) -> Result<(), IoError> {
        let w = self.write_all(buf, writes);
        let r = self.read_all(buf, reads);
        w.and(r)
    }
    /// Flushes the volatile caches of all members.
    fn flush(&mut self) -> Result<(), IoError>;
    /// Publishes the engine's view to host I/O (see [`View::absorb`]). When
    /// the view marks a unit in flight, this must return only once no host
    /// I/O routed by an earlier view into that unit is still running.
    fn publish(&mut self, view: &View);
    /// Whether host I/O asked for a checkpoint since the last publish.
    fn checkpoint_requested(&mut self) -> bool;
    /// The unit a host request waits to have moved out of order, if one
    /// does (with the new layout in effect at once).
    fn move_requested(&mut self) -> Option<u64> {
        None
    }
    /// The moved-unit map of the migration ([`super::moved`]); empty for
    /// one without.
    fn moved_map(&self) -> &[AtomicU64] {
        &[]
    }
    /// Makes the moved-unit map hold `units` units, all clear; false if it
    /// cannot (no memory). Only I/O that resumes migrations holds one.
    fn prepare_moved(&mut self, units: u64) -> bool {
        units == 0
    }
    /// Writes `sectors` zeros at `sector` of `member`. By default in pieces
    /// of `buf` (which it zeroes) through [`MemberIo::write`]; the kernel
    /// asks the member to zero the range itself (write-zeroes where the
    /// device has it, else bios of the zero page: no buffer, no copy).
    fn write_zeroes(&mut self, member: usize, sector: u64, sectors: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let piece = (buf.len() >> SECTOR_SHIFT) as u64;
        if piece == 0 {
            return Err(IoError { member, errno: -22 });
        }
        buf[..(piece.min(sectors) << SECTOR_SHIFT) as usize].fill(0);
        let mut done = 0;
        while done < sectors {
            let n = piece.min(sectors - done);
            self.write(member, sector + done, &buf[..(n << SECTOR_SHIFT) as usize])?;
            done += n;
        }
        Ok(())
    }
    /// Zeroes every range of `batch` as [`MemberIo::write_zeroes`] zeroes
    /// one: every range attempted, the first error returned. The kernel
    /// submits them together, so that members zero at the same time.
    fn write_zeroes_all(&mut self, batch: &[ZeroRange], buf: &mut [u8]) -> Result<(), IoError> {
        zero_each(self, batch, buf)
    }
    /// Marks logical `[start, end)` of the target not yet consistent (its
    /// copies or parity may disagree) in the write-intent bitmap, durable on
    /// every member before it returns, so that the array's resync makes it
    /// consistent once the migration is over. `Ok(false)`: no bitmap takes
    /// it (the default), and the engine zeroes the range instead.
    fn mark_unsynced(&mut self, start: u64, end: u64) -> Result<bool, IoError> {
        let _ = (start, end);
        Ok(false)
    }
    /// `dst ^= src` over the shorter of the two (raid5 parity): the
    /// portable loop of [`super::parity::xor_into`] unless the
    /// implementation has better (the kernel's XOR library).
    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        super::parity::xor_into(dst, src)
    }
}

/// The transfers of `batch` read one after another with [`MemberIo::read`]:
/// every one attempted, the first error returned. What
/// [`MemberIo::read_all`] does by default, and how a batch that failed as a
/// whole is done again to find the transfer that fails.
pub fn read_each<I: MemberIo + ?Sized>(io: &mut I, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
    let mut first = Ok(());
    for t in batch {
        let r = io.read(t.member, t.sector, &mut buf[t.at..t.at + t.len]);
        first = first.and(r);
    }
    first
}

/// The transfers of `batch` written one after another, as [`read_each`]
/// reads them (a write done again is the same write).
pub fn write_each<I: MemberIo + ?Sized>(io: &mut I, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
    let mut first = Ok(());
    for t in batch {
        let r = io.write(t.member, t.sector, &buf[t.at..t.at + t.len]);
        first = first.and(r);
    }
    first
}

/// The ranges of `batch` zeroed one after another with
/// [`MemberIo::write_zeroes`], as [`read_each`] reads: what
/// [`MemberIo::write_zeroes_all`] does by default, and how a batch that
/// failed as a whole is done again to find the range that fails.
pub fn zero_each<I: MemberIo + ?Sized>(io: &mut I, batch: &[ZeroRange], buf: &mut [u8]) -> Result<(), IoError> {
    let mut first = Ok(());
    for z in batch {
        first = first.and(io.write_zeroes(z.member, z.sector, z.sectors, buf));
    }
    first
}

/// Deliberate flaws, for proving that the crash simulator catches them.
/// Only compiled with the `fault-injection` feature, which the kernel build
/// never sets.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Ignore the overlap trigger: overwrite source data of copied but not
    /// checkpointed units without checkpointing first.
    SkipOverlapCheckpoint,
    /// Copy self-overlapping units directly instead of through staging.
    SkipStaging,
    /// Copy a unit without telling host I/O that it is in flight first.
    NoInFlightPublish,
    /// Leave the capacity past the source's end unwritten without marking
    /// it unsynced in the bitmap.
    SkipNewCapacityMark,
    /// Move the unit a host request wants out of order without moving the
    /// units whose source its rows overwrite first.
    MoveWithoutChain,
    /// Mark a unit moved out of order in memory only, its bit never
    /// written to the members.
    VolatileMoveMark,
}

/// Tuning of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Checkpoint at the latest after this many units (at least 1).
    pub max_units_between_checkpoints: u64,
    /// Checkpoint at the latest after this many milliseconds of copying.
    pub max_ms_between_checkpoints: u64,
    /// A deliberate flaw (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fault: Option<Fault>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_units_between_checkpoints: 1024,
            max_ms_between_checkpoints: 5000,
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }
}

/// Counters shown in sysfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Units copied (this run).
    pub units_done: u64,
    /// Of which through the staging area.
    pub units_staged: u64,
    /// Of which moved out of order, for host requests.
    pub units_moved: u64,
    /// Superblock updates (every one records the checkpoint).
    pub checkpoint_writes: u64,
    /// Of which recorded a unit entering staging.
    pub staging_records: u64,
    /// Member flushes issued.
    pub flushes: u64,
}

/// Why the engine stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// A member I/O failed; the engine can be resumed from the superblocks.
    Io(IoError),
    /// The unit cannot be copied safely; the array was marked failed.
    Plan(PlanError),
    /// The buffer is too small (see [`Engine::min_buffer_bytes`]).
    BufferTooSmall,
    /// The superblock has no migration to run.
    NoMigration,
    /// A superblock could not be encoded.
    Format(FormatError),
}

impl EngineError {
    /// A sentence for the kernel log.
    pub fn message(self) -> &'static str {
        match self {
            EngineError::Io(_) => "member I/O error during migration",
            EngineError::Plan(e) => e.message(),
            EngineError::BufferTooSmall => "migration buffer too small",
            EngineError::NoMigration => "no migration recorded",
            EngineError::Format(e) => e.message(),
        }
    }
}

impl From<IoError> for EngineError {
    fn from(e: IoError) -> EngineError {
        EngineError::Io(e)
    }
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Finished a unit left in staging by an interrupted run.
    Replayed(u64),
    /// Wrote a checkpoint.
    Checkpointed,
    /// Copied a unit.
    Copied(u64),
    /// Moved a unit out of order, for a host request waiting for it (or for
    /// a unit it needs moved first: see [`Migration::first_to_move`]).
    Moved(u64),
    /// Finished the migration: the array is clean in the target layout.
    Finished,
    /// Nothing to do: paused, clean or failed.
    Idle,
}

/// What one superblock update records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    state: ArrayState,
    failed: Roles,
    rebuild: Option<Rebuild>,
    checkpoint: u64,
    staged: Option<u64>,
    time: Time,
}

/// Transfers a batch holds before it is submitted.
const BATCH: usize = 64;

/// Member transfers gathered to be submitted together: writes first, then
/// reads, submitted as one batch ([`MemberIo::write_read_all`]) when full
/// or when the caller says. The engine leaves a group's writes in the batch
/// and adds the next group's reads, so that they run at the same time.
struct Batch {
    t: [Transfer; BATCH],
    n: usize,
    /// The first `writes` transfers are writes.
    writes: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch { t: [Transfer::default(); BATCH], n: 0, writes: 0 }
    }

    /// Adds a read into `buf` (the batch is submitted when full).
    fn read<I: MemberIo>(&mut self, io: &mut I, buf: &mut [u8], t: Transfer) -> Result<(), IoError> {
        self.t[self.n] = t;
        self.n += 1;
        if self.n == BATCH {
            self.submit(io, buf)
        } else {
            Ok(())
        }
    }

    /// Adds a write from `buf` (reads added before are submitted first;
    /// the batch is submitted when full).
    fn write<I: MemberIo>(&mut self, io: &mut I, buf: &mut [u8], t: Transfer) -> Result<(), IoError> {
        if self.n > self.writes {
            self.submit(io, buf)?;
        }
        self.t[self.n] = t;
        self.n += 1;
        self.writes += 1;
        if self.n == BATCH {
            self.submit(io, buf)
        } else {
            Ok(())
        }
    }

    /// Submits what the batch holds and waits for it.
    fn submit<I: MemberIo>(&mut self, io: &mut I, buf: &mut [u8]) -> Result<(), IoError> {
        let n = core::mem::take(&mut self.n);
        let w = core::mem::take(&mut self.writes);
        match (w, n) {
            (_, 0) => Ok(()),
            (0, n) => io.read_all(buf, &self.t[..n]),
            (w, n) if w == n => io.write_all(buf, &self.t[..n]),
            (w, n) => io.write_read_all(buf, &self.t[..w], &self.t[w..n]),
        }
    }
}

/// The migration engine; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    plan: Migration,
    config: EngineConfig,
    state: ArrayState,
    /// Roles recorded faulty: never written, superblocks included.
    failed: Roles,
    /// A replacement being rebuilt over the copied part (see
    /// [`Engine::rebuild_extent`]); the migration waits for it.
    rebuild: Option<Rebuild>,
    /// The write-intent bitmap's region, carried for when the array settles.
    bitmap_region: Option<u64>,
    /// The capacity past the source's end is marked unsynced in the bitmap
    /// (durably): its units need no writing (see [`Engine::copy_rows`]).
    new_capacity_marked: bool,
    generation: u64,
    copied: u64,
    checkpoint: u64,
    /// A unit sits in staging, recorded, and must be finished first: the
    /// checkpoint unit, or one being moved out of order.
    staged: Option<u64>,
    /// The new layout is in effect at once: the volume has the target's
    /// capacity, host requests get units moved out of order
    /// ([`super::moved`]).
    at_once: bool,
    /// The unit in flight, when `in_flight`.
    active: u64,
    /// A unit moved out of order (directly: its rows durable, its source
    /// intact) whose bit in the map could not be written everywhere: some
    /// members may have it, so recovery may take the unit from its rows or
    /// copy it again from its source. Written again before anything else;
    /// until then host reads take its rows and writes fail.
    unrecorded_move: Option<u64>,
    /// A superblock update that failed on some member: it is written again,
    /// same generation and contents, before anything else, and memory takes
    /// it only then (until then memory keeps what is surely durable, and a
    /// unit it puts in staging stays in flight).
    pending: Option<Record>,
    in_flight: bool,
    /// Stopped on an I/O error, until the next step or unpause.
    halted: bool,
    units_since_checkpoint: u64,
    last_checkpoint_ms: u64,
    stats: Stats,
}

impl Engine {
    /// An engine resuming the migration recorded in `sb` (the newest
    /// superblock of the assembled array). Nothing is written until the
    /// first [`Engine::step`], which finishes a staged unit if there is one.
    pub fn resume(sb: &Superblock, config: EngineConfig, now: Time) -> Result<Engine, EngineError> {
        let record = sb.migration.ok_or(EngineError::NoMigration)?;
        let state = sb.state;
        Ok(Engine {
            plan: record.plan,
            config,
            state,
            failed: sb.failed,
            rebuild: sb.rebuild,
            bitmap_region: sb.bitmap_region,
            new_capacity_marked: false,
            generation: sb.generation,
            copied: record.checkpoint,
            checkpoint: record.checkpoint,
            staged: record.staged,
            at_once: record.at_once,
            active: record.checkpoint,
            unrecorded_move: None,
            pending: None,
            in_flight: false,
            halted: false,
            units_since_checkpoint: 0,
            last_checkpoint_ms: now.mono_ms,
            stats: Stats::default(),
        })
    }

    /// The smallest buffer [`Engine::step`] accepts for this migration: one
    /// 4 KiB slice of every chunk of a target stripe plus one for parity.
    pub fn min_buffer_bytes(&self) -> usize {
        ((self.plan.target().stripe_chunks() as usize + 1) * 8) << SECTOR_SHIFT
    }

    /// The migration.
    pub fn plan(&self) -> &Migration {
        &self.plan
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The array state.
    pub fn state(&self) -> ArrayState {
        self.state
    }

    /// The last superblock generation written or loaded.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the last step stopped on an I/O error (until the next step
    /// or [`Engine::unpause`]).
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Whether a unit sits in the staging area, recorded, to be finished
    /// first.
    pub fn staged(&self) -> bool {
        self.staged.is_some()
    }

    /// Whether the new layout is in effect at once (see
    /// [`super::format::MigrationRecord::at_once`]).
    pub fn at_once(&self) -> bool {
        self.at_once
    }

    /// What host I/O routing needs now.
    pub fn view(&self) -> View {
        if self.state == ArrayState::Clean {
            let mut v = View::clean(ArrayState::Clean, self.plan.target().capacity());
            v.unit_sectors = self.plan.unit_sectors();
            v.units = self.plan.units();
            v.copied = self.plan.units();
            v.checkpoint = self.plan.units();
            return v;
        }
        let (next, active) = if self.in_flight {
            (Next::InFlight, self.active)
        } else if let Some(unit) = self.unrecorded_move {
            (Next::FinishUnrecorded, unit)
        } else {
            match (self.pending.map(|r| r.staged), self.staged) {
                // A record that moves the unit is not known to be durable.
                (Some(Some(unit)), None) => (Next::StagingUnrecorded, unit),
                (Some(None), Some(unit)) => (Next::FinishUnrecorded, unit),
                // Recorded in staging, durably: its source may be half
                // overwritten, staging holds it whole.
                (_, Some(unit)) => (Next::Staged, unit),
                _ => (Next::Untouched, self.copied),
            }
        };
        let target = self.plan.target().capacity();
        View {
            state: self.state,
            volume_sectors: if self.at_once && self.state != ArrayState::Prepared { target } else { self.plan.volume_sectors() },
            source_sectors: self.plan.source().capacity(),
            target_sectors: target,
            unit_sectors: self.plan.unit_sectors(),
            units: self.plan.units(),
            copied: self.copied,
            checkpoint: self.checkpoint,
            active,
            next,
            halted: self.halted,
            moving: self.moving(),
            checkpoint_requested: false,
            wanted: None,
        }
    }

    /// Whether host requests for units not moved yet have them moved out of
    /// order (they wait for the engine to do it): with the new layout in
    /// effect at once, the migration started (a pause stops the background
    /// copy, not these moves), every role in sync (a move writes every
    /// role) and the engine not stopped on an error. Otherwise such
    /// requests go to the source, which holds every unit not moved, and
    /// past its end fail.
    pub fn moving(&self) -> bool {
        self.at_once
            && self.whole()
            && !self.halted
            && matches!(self.state, ArrayState::Migrating | ArrayState::Paused)
    }

    /// The superblock of member `role` for the current state (the one last
    /// recorded, or being recorded).
    pub fn superblock(&self, members: &ArrayMembers, role: usize, now: Time) -> Superblock {
        let record = self.pending.unwrap_or(Record {
            state: self.state,
            failed: self.failed,
            rebuild: self.rebuild,
            checkpoint: self.checkpoint,
            staged: self.staged,
            time: now,
        });
        self.superblock_of(members, role, &record)
    }

    fn superblock_of(&self, members: &ArrayMembers, role: usize, record: &Record) -> Superblock {
        let migration = (record.state != ArrayState::Clean).then_some(MigrationRecord {
            plan: self.plan,
            checkpoint: record.checkpoint,
            staged: record.staged,
            at_once: self.at_once,
        });
        Superblock {
            generation: self.generation,
            array_uuid: members.array_uuid,
            member_uuid: members.uuids[role],
            role,
            state: record.state,
            device_sectors: members.device_sectors[role],
            created_ms: members.created_ms,
            updated_ms: record.time.wall_ms,
            layout: self.plan.target(),
            migration,
            failed: record.failed,
            rebuild: record.rebuild,
            bitmap_region: self.bitmap_region,
            // The bitmap covers nothing a migration writes: no member that
            // leaves during one may be re-added from it.
            readd_floor: self.generation,
        }
    }

    /// Does the next piece of work: finish a staged unit, write a due
    /// checkpoint, copy one unit, or finish the migration.
    ///
    /// On an error nothing recorded is lost: memory keeps only what is
    /// durable, the unit in flight is released (host I/O routes around it,
    /// see [`Next`]), the engine is halted, and a later step, or recovery,
    /// starts the unit again.
    pub fn step<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<Step, EngineError> {
        self.halted = false;
        let r = self.step_inner(io, members, buf, now);
        self.after(io, &r);
        r
    }

    /// After a step or replay: on an I/O error the engine halts and host I/O
    /// learns where the data is now.
    fn after<I: MemberIo, T>(&mut self, io: &mut I, r: &Result<T, EngineError>) {
        if let Err(EngineError::Io(_)) = r {
            self.halted = true;
        }
        if r.is_err() {
            self.in_flight = false;
            io.publish(&self.view());
        }
    }

    /// Finishes a unit left in the staging area by an interrupted run,
    /// whatever the state (the load sequence does this before the volume is
    /// exposed, so that no host request ever waits for a migration thread
    /// that is not running yet). Returns the unit finished, if there was one.
    /// On an I/O error the engine halts and host I/O to the unit goes to the
    /// staging area.
    pub fn replay_staged<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<Option<u64>, EngineError> {
        self.halted = false;
        let r = self.replay_inner(io, members, buf, now);
        self.after(io, &r);
        r
    }

    fn replay_inner<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<Option<u64>, EngineError> {
        if self.pending.is_some() {
            self.write_pending(io, members, buf)?;
        }
        let Some(unit) = self.staged else { return Ok(None) };
        if buf.len() < SUPERBLOCK_BYTES {
            return Err(EngineError::BufferTooSmall);
        }
        self.set_in_flight(io, unit);
        self.finish_staged(io, members, buf, unit, now)?;
        self.in_flight = false;
        io.publish(&self.view());
        Ok(Some(unit))
    }

    fn step_inner<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<Step, EngineError> {
        if self.pending.is_some() {
            self.write_pending(io, members, buf)?;
            if self.state == ArrayState::Clean {
                return Ok(Step::Finished);
            }
        }
        match self.state {
            ArrayState::Migrating => {}
            // The first step starts the migration (recorded at the first
            // superblock update).
            ArrayState::Prepared if !self.at_once => self.state = ArrayState::Migrating,
            // With the new layout in effect at once the volume takes the
            // target's capacity now: recorded first, so that the load after
            // a power cut exposes it too (no unit moves before).
            ArrayState::Prepared => {
                self.state = ArrayState::Migrating;
                self.write_checkpoint(io, members, buf, now, ArrayState::Migrating)?;
                return Ok(Step::Checkpointed);
            }
            // Paused, units host requests wait for are still moved.
            ArrayState::Paused if self.moving() => {}
            _ => return Ok(Step::Idle),
        }
        if !self.whole() {
            // Units write every role: the migration waits for the
            // replacement's rebuild (see [`Engine::hold_degraded`]).
            return Ok(Step::Idle);
        }
        if buf.len() < self.min_buffer_bytes().max(SUPERBLOCK_BYTES) {
            return Err(EngineError::BufferTooSmall);
        }
        if let Some(unit) = self.unrecorded_move {
            self.record_move(io, members, buf)?;
            return Ok(Step::Moved(unit));
        }
        if let Some(staged) = self.staged {
            let unit = self.replay_inner(io, members, buf, now)?;
            return Ok(Step::Replayed(unit.unwrap_or(staged)));
        }
        if let Some(wanted) = self.wanted(io) {
            // Units copied in order but not checkpointed still need their
            // source (recovery copies them again): a move may overwrite it.
            if self.copied > self.checkpoint {
                self.write_checkpoint(io, members, buf, now, self.state)?;
                return Ok(Step::Checkpointed);
            }
            let map = io.moved_map();
            let first = self.plan.first_to_move(wanted, |u| u < self.checkpoint || is_moved(map, u));
            #[cfg(feature = "fault-injection")]
            let first = if self.config.fault == Some(Fault::MoveWithoutChain) { wanted } else { first };
            self.move_unit(io, members, buf, first, now)?;
            return Ok(Step::Moved(first));
        }
        if self.state == ArrayState::Paused {
            return Ok(Step::Idle);
        }
        // Units moved out of order are in the target layout, durably.
        while self.copied < self.plan.units() && is_moved(io.moved_map(), self.copied) {
            self.copied += 1;
        }
        if self.copied == self.plan.units() {
            self.flush(io)?;
            self.commit(io, members, buf, now, ArrayState::Clean, self.copied, None)?;
            return Ok(Step::Finished);
        }
        if self.checkpoint_due(io, now) {
            self.write_checkpoint(io, members, buf, now, self.state)?;
            return Ok(Step::Checkpointed);
        }
        let unit = self.copied;
        let plan = match self.plan.classify(unit) {
            Ok(p) => p,
            Err(e) => {
                // Nothing of this unit was written: record where things stand.
                self.write_checkpoint(io, members, buf, now, ArrayState::Failed)?;
                return Err(EngineError::Plan(e));
            }
        };
        #[cfg(feature = "fault-injection")]
        let plan = match self.config.fault {
            Some(Fault::SkipOverlapCheckpoint) => super::plan::UnitPlan { overwrites_unit: None, ..plan },
            Some(Fault::SkipStaging) => super::plan::UnitPlan { indirect: false, ..plan },
            _ => plan,
        };
        if !plan.indirect && plan.overwrites_unit.is_some_and(|u| u >= self.checkpoint) {
            self.write_checkpoint(io, members, buf, now, self.state)?;
        }
        self.in_flight = true;
        self.active = unit;
        #[cfg(feature = "fault-injection")]
        let publish = self.config.fault != Some(Fault::NoInFlightPublish);
        #[cfg(not(feature = "fault-injection"))]
        let publish = true;
        if publish {
            io.publish(&self.view());
        }
        if plan.indirect {
            self.copy_rows(io, members, buf, unit, true)?;
            self.flush(io)?;
            // The unit's own source may be overwritten only once this record
            // is durable: until then recovery copies it again from the source.
            self.commit(io, members, buf, now, self.state, unit, Some(unit))?;
            self.stats.staging_records += 1;
            self.finish_staged(io, members, buf, unit, now)?;
        } else {
            self.copy_rows(io, members, buf, unit, false)?;
            self.units_since_checkpoint += 1;
            self.stats.units_done += 1;
        }
        self.copied = unit + 1;
        self.in_flight = false;
        io.publish(&self.view());
        Ok(Step::Copied(unit))
    }

    /// Whether the next step writes a checkpoint rather than copy a unit:
    /// units are copied past the last one, and a host request waits for it,
    /// or enough units or time went by since. A thread that paces the
    /// migration still steps when one is due.
    pub fn checkpoint_due<I: MemberIo>(&self, io: &mut I, now: Time) -> bool {
        self.copied > self.checkpoint
            && (io.checkpoint_requested()
                || self.units_since_checkpoint >= self.config.max_units_between_checkpoints.max(1)
                || now.mono_ms.saturating_sub(self.last_checkpoint_ms) >= self.config.max_ms_between_checkpoints)
    }

    /// Pauses: checkpoints and records the array paused; steps then idle.
    /// A superblock update left pending by an error is written first (it may
    /// be the one recording the end: check [`Engine::state`]). A unit in the
    /// staging area stays there, recorded, and host I/O to it goes there
    /// until the migration resumes and finishes it.
    pub fn pause<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<(), EngineError> {
        let r = self.pause_inner(io, members, buf, now);
        // What the pause made durable (or not) changes what host I/O may do.
        io.publish(&self.view());
        r
    }

    fn pause_inner<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<(), EngineError> {
        self.write_pending(io, members, buf)?;
        self.record_move(io, members, buf)?;
        if matches!(self.state, ArrayState::Migrating | ArrayState::Prepared) {
            self.write_checkpoint(io, members, buf, now, ArrayState::Paused)?;
        }
        Ok(())
    }

    /// Resumes a paused migration, or one halted by an error (the next step
    /// records it migrating again at its next checkpoint).
    pub fn unpause(&mut self) {
        if self.state == ArrayState::Paused {
            self.state = ArrayState::Migrating;
        }
        self.halted = false;
    }

    /// The write-intent bitmap's region, for when the array settles.
    pub fn bitmap_region(&self) -> Option<u64> {
        self.bitmap_region
    }

    /// Roles recorded faulty (or being recorded).
    pub fn failed(&self) -> Roles {
        self.pending.map_or(self.failed, |p| p.failed)
    }

    /// Records the roles of `failed` faulty besides those already recorded,
    /// with the state and checkpoint last recorded: a new generation, or the
    /// pending one again with the grown set (so members stay at most one
    /// generation apart), written to every role not failed.
    pub fn record_failed<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        failed: Roles,
        now: Time,
    ) -> Result<(), EngineError> {
        match &mut self.pending {
            Some(p) => p.failed = p.failed.union(failed),
            None => {
                self.generation += 1;
                self.pending = Some(Record {
                    state: self.state,
                    failed: self.failed.union(failed),
                    rebuild: self.rebuild,
                    checkpoint: self.checkpoint,
                    staged: self.staged,
                    time: now,
                });
            }
        }
        if let Some(p) = &mut self.pending {
            // A rebuilding role that fails stops its rebuild.
            p.rebuild = p.rebuild.filter(|r| !p.failed.contains(r.role));
        }
        self.write_pending(io, members, buf)
    }

    /// The role being rebuilt, as recorded (or being recorded).
    pub fn rebuild(&self) -> Option<Rebuild> {
        self.pending.map_or(self.rebuild, |p| p.rebuild)
    }

    /// Whether every role is in sync: the migration copies only then (its
    /// units write every role).
    pub fn whole(&self) -> bool {
        self.failed().is_empty() && self.rebuild().is_none()
    }

    /// Whether a failed role may be given a replacement now: the copied
    /// part is settled (every copied unit checkpointed, nothing in
    /// staging, no record pending), so that the rebuild's extent stays put.
    pub fn settled_for_rebuild(&self) -> bool {
        self.pending.is_none()
            && self.staged.is_none()
            && self.unrecorded_move.is_none()
            && !self.in_flight
            && self.copied == self.checkpoint
    }

    /// The logical sectors a rebuild covers during a migration: the
    /// checkpointed units, the only part the target layout holds (the rest
    /// is still the source's, whose roles the rebuild does not touch), and
    /// up to the last unit moved out of order as `moved` marks them (units
    /// not moved in between are rebuilt for nothing: a replacement holds
    /// none of the source, and the migration writes their rows again).
    pub fn rebuild_extent(&self, moved: &[AtomicU64]) -> u64 {
        if self.state == ArrayState::Clean {
            return self.plan.target().capacity();
        }
        let end = moved::last_moved(moved).map_or(self.checkpoint, |u| self.checkpoint.max(u + 1));
        end.saturating_mul(self.plan.unit_sectors()).min(self.plan.target().capacity())
    }

    /// Records exactly `failed` and `rebuild` (a replacement taking a failed
    /// role, its progress, its end) with the state and checkpoint last
    /// recorded, as [`Engine::record_failed`] does. Only while the copied
    /// part is settled ([`Engine::settled_for_rebuild`]); the caller makes
    /// the rebuilt rows durable first.
    pub fn record_health<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        failed: Roles,
        rebuild: Option<Rebuild>,
        now: Time,
    ) -> Result<(), EngineError> {
        // A replacement taking a role gets the moved-unit map first: its
        // own tail holds whatever a former life left there, and any member
        // in sync may be the one a later load reads the map from.
        let new_role = rebuild.map(|r| r.role).filter(|&r| self.rebuild().map(|o| o.role) != Some(r));
        if let Some(role) = new_role.filter(|_| self.at_once) {
            self.write_map(io, members, buf, role)?;
        }
        match &mut self.pending {
            Some(p) => {
                p.failed = failed;
                p.rebuild = rebuild;
            }
            None => {
                self.generation += 1;
                self.pending = Some(Record {
                    state: self.state,
                    failed,
                    rebuild,
                    checkpoint: self.checkpoint,
                    staged: self.staged,
                    time: now,
                });
            }
        }
        self.write_pending(io, members, buf)
    }

    /// With a role out of sync the migration cannot copy (its units write
    /// every role): it holds at a settled point instead, so that a
    /// replacement can be rebuilt over the copied part. A record left
    /// pending is written, a unit left in staging is finished on the roles
    /// in sync (the failed role's rows of it are the rebuild's), and copied
    /// units are checkpointed. Repeatable; does nothing once settled.
    pub fn hold_degraded<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<(), EngineError> {
        let r = self.hold_inner(io, members, buf, now);
        self.after(io, &r);
        r
    }

    fn hold_inner<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<(), EngineError> {
        self.write_pending(io, members, buf)?;
        self.record_move(io, members, buf)?;
        if let Some(unit) = self.staged {
            self.set_in_flight(io, unit);
            self.finish_staged(io, members, buf, unit, now)?;
            self.in_flight = false;
            io.publish(&self.view());
        }
        if matches!(self.state, ArrayState::Migrating | ArrayState::Paused) && self.copied > self.checkpoint {
            let state = self.state;
            self.write_checkpoint(io, members, buf, now, state)?;
        }
        Ok(())
    }

    /// Checkpoints before the engine is dropped (module unload), after any
    /// superblock update left pending by an error; the migration resumes
    /// when the array is assembled again.
    pub fn stop<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
    ) -> Result<(), EngineError> {
        self.write_pending(io, members, buf)?;
        self.record_move(io, members, buf)?;
        if self.state == ArrayState::Migrating && self.copied > self.checkpoint {
            self.write_checkpoint(io, members, buf, now, self.state)?;
        }
        Ok(())
    }

    fn flush<I: MemberIo>(&mut self, io: &mut I) -> Result<(), IoError> {
        self.stats.flushes += 1;
        io.flush()
    }

    /// Makes every copied unit durable and records it, with `state` (a unit
    /// in staging stays recorded there: then nothing is copied past it).
    fn write_checkpoint<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
        state: ArrayState,
    ) -> Result<(), EngineError> {
        self.flush(io)?;
        self.commit(io, members, buf, now, state, self.copied, self.staged)
    }

    /// Records `state`, `checkpoint` and `staged` in a new superblock
    /// generation; memory takes them only once that is durable, so routing
    /// never relies on a record that a failed write did not make.
    #[allow(clippy::too_many_arguments)]
    fn commit<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        now: Time,
        state: ArrayState,
        checkpoint: u64,
        staged: Option<u64>,
    ) -> Result<(), EngineError> {
        if self.pending.is_some() {
            self.write_pending(io, members, buf)?;
        }
        self.generation += 1;
        self.pending = Some(Record { state, failed: self.failed, rebuild: self.rebuild, checkpoint, staged, time: now });
        self.write_pending(io, members, buf)
    }

    /// Writes the pending record as the current generation to every member,
    /// then flushes so that nothing after it can land first, and applies it.
    /// On failure it stays pending: retried with the same generation and
    /// contents, members never drift more than one generation apart.
    fn write_pending<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
    ) -> Result<(), EngineError> {
        let Some(record) = self.pending else { return Ok(()) };
        let slot = slot_of(self.generation);
        let sb_buf = buf.get_mut(..SUPERBLOCK_BYTES).ok_or(EngineError::BufferTooSmall)?;
        for role in (0..self.plan.target().members()).filter(|&r| !record.failed.contains(r)) {
            self.superblock_of(members, role, &record).encode(sb_buf).map_err(EngineError::Format)?;
            io.write(role, superblock_sector(members.device_sectors[role], slot), sb_buf)?;
        }
        self.flush(io)?;
        self.pending = None;
        if self.staged.is_some() && record.staged.is_none() {
            // "Staging empty": the staged unit is in place.
            self.stats.units_done += 1;
            self.stats.units_staged += 1;
        }
        self.state = record.state;
        self.failed = record.failed;
        self.rebuild = record.rebuild;
        self.checkpoint = record.checkpoint;
        self.staged = record.staged;
        self.copied = self.copied.max(record.checkpoint);
        self.stats.checkpoint_writes += 1;
        self.units_since_checkpoint = 0;
        self.last_checkpoint_ms = record.time.mono_ms;
        io.publish(&self.view());
        Ok(())
    }

    /// Copies the staged unit's rows from every member's staging area to
    /// their place, flushes and records staging empty. Repeatable: staging
    /// is not written again before that record is durable.
    fn finish_staged<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        unit: u64,
        now: Time,
    ) -> Result<(), EngineError> {
        let target = self.plan.target();
        let chunk = target.chunk_sectors() as u64;
        let (first, count) = self.plan.unit_rows_range(unit);
        let step = ((buf.len() >> SECTOR_SHIFT) as u64).min(chunk) & !7;
        if step == 0 {
            return Err(EngineError::BufferTooSmall);
        }
        // Failed roles are left out: their rows of the unit are rebuilt.
        for member in (0..target.members()).filter(|&m| !self.failed.contains(m)) {
            let staging = staging_sector(members.device_sectors[member]);
            for row in first..first + count {
                if target.content(member, row * chunk) == Content::Unused {
                    continue;
                }
                let mut off = 0;
                while off < chunk {
                    let len = step.min(chunk - off);
                    let bytes = &mut buf[..(len << SECTOR_SHIFT) as usize];
                    io.read(member, staging + (row - first) * chunk + off, bytes)?;
                    io.write(member, row * chunk + off, bytes)?;
                    off += len;
                }
            }
        }
        self.flush(io)?;
        if unit == self.checkpoint {
            return self.commit(io, members, buf, now, self.state, unit + 1, None);
        }
        // Moved out of order: staging is released only once the map says
        // the unit is moved, else recovery would copy it again from a
        // source its own rows overwrote.
        self.write_moved(io, members, buf, unit)?;
        self.commit(io, members, buf, now, self.state, self.checkpoint, None)
    }

    /// Publishes unit `unit` in flight (the shell returns once the host
    /// requests admitted before have ended).
    fn set_in_flight<I: MemberIo>(&mut self, io: &mut I, unit: u64) {
        self.in_flight = true;
        self.active = unit;
        io.publish(&self.view());
    }

    /// The unit a host request waits to have moved, if the engine moves
    /// units now and that one is not moved yet.
    fn wanted<I: MemberIo>(&self, io: &mut I) -> Option<u64> {
        let unit = io.move_requested()?;
        let open = self.moving() && unit >= self.copied && unit < self.plan.units();
        (open && !is_moved(io.moved_map(), unit)).then_some(unit)
    }

    /// Moves unit `unit` out of order: every unit whose source its rows
    /// overwrite is in the target layout already (durable below the
    /// checkpoint, or moved), so only its own source can be at stake. A
    /// unit that overwrites it goes through the staging area as in order;
    /// either way its bit in the moved-unit map is made durable after its
    /// rows and before anything can write to it.
    fn move_unit<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        unit: u64,
        now: Time,
    ) -> Result<(), EngineError> {
        let plan = self.plan.classify(unit).map_err(EngineError::Plan)?;
        self.set_in_flight(io, unit);
        if plan.indirect {
            self.copy_rows(io, members, buf, unit, true)?;
            self.flush(io)?;
            self.commit(io, members, buf, now, self.state, self.checkpoint, Some(unit))?;
            self.stats.staging_records += 1;
            self.finish_staged(io, members, buf, unit, now)?;
        } else {
            self.copy_rows(io, members, buf, unit, false)?;
            self.flush(io)?;
            self.unrecorded_move = Some(unit);
            self.write_moved(io, members, buf, unit)?;
            self.unrecorded_move = None;
            self.stats.units_done += 1;
        }
        self.stats.units_moved += 1;
        self.in_flight = false;
        io.publish(&self.view());
        Ok(())
    }

    /// Writes the bit of a unit moved whose mark could not be written
    /// everywhere ([`Engine::unrecorded_move`]) again, if there is one.
    fn record_move<I: MemberIo>(&mut self, io: &mut I, members: &ArrayMembers, buf: &mut [u8]) -> Result<(), EngineError> {
        if let Some(unit) = self.unrecorded_move {
            self.write_moved(io, members, buf, unit)?;
            self.unrecorded_move = None;
            self.stats.units_done += 1;
            io.publish(&self.view());
        }
        Ok(())
    }

    /// Writes the whole moved-unit map to role `role`, flushed.
    fn write_map<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        role: usize,
    ) -> Result<(), EngineError> {
        let bytes = buf.get_mut(..moved::BLOCK_BYTES).ok_or(EngineError::BufferTooSmall)?;
        for block in 0..moved::blocks(self.plan.units()) {
            moved::encode_block(io.moved_map(), block, None, bytes);
            io.write(role, moved::block_sector(members.device_sectors[role], block), bytes)?;
        }
        self.flush(io)?;
        Ok(())
    }

    /// Marks unit `unit` moved: its block of the map, with its bit set, on
    /// every role in sync, flushed; memory takes the bit only then.
    fn write_moved<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        unit: u64,
    ) -> Result<(), EngineError> {
        #[cfg(feature = "fault-injection")]
        if self.config.fault == Some(Fault::VolatileMoveMark) {
            moved::set_moved(io.moved_map(), unit);
            return Ok(());
        }
        let block = moved::block_of(unit);
        let bytes = buf.get_mut(..moved::BLOCK_BYTES).ok_or(EngineError::BufferTooSmall)?;
        moved::encode_block(io.moved_map(), block, Some(unit), bytes);
        for role in (0..self.plan.target().members()).filter(|&r| !self.failed.contains(r)) {
            io.write(role, moved::block_sector(members.device_sectors[role], block), bytes)?;
        }
        self.flush(io)?;
        moved::set_moved(io.moved_map(), unit);
        Ok(())
    }

    /// Whether the source holds logical `[logical, logical + sectors)` at
    /// `[sector, sector + sectors)` of `member` already: within one source
    /// chunk, contents are linear, so checking both ends suffices.
    fn in_place(&self, member: usize, sector: u64, logical: u64, sectors: u64) -> bool {
        let source = self.plan.source();
        let last = sector + sectors - 1;
        let same_chunk = source.level() == super::layout::Level::Single
            || source.level() == super::layout::Level::Raid1
            || (sector >> source.chunk_shift()) == (last >> source.chunk_shift());
        let holds = |s: u64, l: u64| matches!(source.content(member, s), Content::Data { logical, .. } if logical == l);
        same_chunk && holds(sector, logical) && holds(last, logical + sectors - 1)
    }

    /// Writes unit `unit`'s target rows, built from the source, either in
    /// place or (`to_staging`) into every member's staging area.
    fn copy_rows<I: MemberIo>(
        &mut self,
        io: &mut I,
        members: &ArrayMembers,
        buf: &mut [u8],
        unit: u64,
        to_staging: bool,
    ) -> Result<(), EngineError> {
        let target = self.plan.target();
        let source = self.plan.source();
        // Capacity past the source's end. Without copies or parity there is
        // nothing to keep consistent: it keeps what the members held, as a
        // new md raid0 does. With them and a bitmap, it is marked unsynced,
        // durably, before the checkpoint passes its first unit, and the
        // array's resync makes it consistent in the background once the
        // migration is over (as md resyncs what a grow adds): the migration
        // writes none of it. Without a bitmap, zeros make it consistent here.
        let redundant = target.redundant();
        if !to_staging && self.zero_unit(unit) {
            if !redundant || self.new_capacity_marked {
                return Ok(());
            }
            #[cfg(feature = "fault-injection")]
            if self.config.fault == Some(Fault::SkipNewCapacityMark) && self.bitmap_region.is_some() {
                self.new_capacity_marked = true;
                return Ok(());
            }
            if self.bitmap_region.is_some() && io.mark_unsynced(source.capacity(), target.capacity())? {
                self.new_capacity_marked = true;
                return Ok(());
            }
            return self.zero_rows(io, buf, unit);
        }
        let shift = target.chunk_shift();
        let chunk = target.chunk_sectors() as u64;
        let stripe_rows = target.stripe_rows_nonzero();
        let stripe_chunks = target.stripe_chunks();
        let parity = target.level().has_parity();
        let slots = target.stripe_chunks_nonzero().saturating_add(parity as u64);
        // The buffer in two halves where it holds at least a 4 KiB slice of
        // every slot in each: a group's writes (from one half) go out with
        // the next group's reads (into the other), the disks busy with both
        // at once. Safe because a unit copied directly overwrites none of
        // its own source (else it goes through staging, whose writes land
        // in the reserved tail), and nothing is checkpointed before the
        // unit's flush orders its writes.
        let fit_all = (buf.len() as u64 >> SECTOR_SHIFT) / slots;
        let halves: u64 = if fit_all / 2 >= 8 { 2 } else { 1 };
        // Slice: the largest power of two of sectors, at most a chunk, such
        // that one slice of every slot fits a half.
        let fit = fit_all / halves;
        let mut slice = chunk;
        while slice > fit {
            slice >>= 1;
        }
        if slice < 8 {
            return Err(EngineError::BufferTooSmall);
        }
        let slice_bytes = (slice << SECTOR_SHIFT) as usize;
        // Stripes per group: as many as a half holds once slices are whole
        // chunks.
        let group = if slice == chunk { (fit / chunk).max(1) } else { 1 };
        let half_bytes = ((fit * slots.get()) << SECTOR_SHIFT) as usize;
        let capacity_chunks = target.capacity() >> shift;
        let (first, count) = self.plan.unit_rows_range(unit);
        let end = first + count;
        let mut batch = Batch::new();
        let mut phase = 0u64;
        let mut row = first;
        while row < end {
            let stripe0 = row / stripe_rows;
            let stripes = group.min((end - 1) / stripe_rows - stripe0 + 1);
            let mut off = 0;
            while off < chunk {
                let half = if phase % halves == 1 { half_bytes } else { 0 };
                let slot_bytes = |s: u64, k: u64| half + ((s * slots.get() + k) as usize) * slice_bytes;
                if halves == 1 {
                    // One half: the last group's writes read the buffer
                    // these reads fill.
                    batch.submit(io, buf)?;
                }
                // Gather this slice of every data chunk of the group's
                // stripes.
                for s in 0..stripes {
                    let stripe = stripe0 + s;
                    for k in 0..stripe_chunks {
                        let c = stripe * stripe_chunks + k;
                        let base = slot_bytes(s, k);
                        if c >= capacity_chunks {
                            continue;
                        }
                        let logical = (c << shift) + off;
                        let have = source.capacity().saturating_sub(logical).min(slice);
                        buf[base + (have << SECTOR_SHIFT) as usize..base + slice_bytes].fill(0);
                        if have > 0 {
                            // The copy host reads use: what the host saw is
                            // what the target gets.
                            for piece in source.read_pieces(logical, have) {
                                let at = source.locate_copy(piece.logical, source.read_copy(piece.logical));
                                let from = ((piece.logical - logical) << SECTOR_SHIFT) as usize;
                                let len = (piece.sectors << SECTOR_SHIFT) as usize;
                                let t = Transfer { member: at.member, sector: at.sector, at: base + from, len };
                                batch.read(io, buf, t)?;
                            }
                        }
                    }
                }
                // With the last group's writes, if any.
                batch.submit(io, buf)?;
                if parity {
                    for s in 0..stripes {
                        let (data, rest) = buf.split_at_mut(slot_bytes(s, stripe_chunks));
                        let p = &mut rest[..slice_bytes];
                        // The first data chunk copied, the others XORed in:
                        // one pass over the parity fewer than zeroing it
                        // first (parity is most of a raid5 migration's CPU
                        // time under emulation).
                        let chunk = |k: u64| slot_bytes(s, k)..slot_bytes(s, k) + slice_bytes;
                        p.copy_from_slice(&data[chunk(0)]);
                        for k in 1..stripe_chunks {
                            io.xor_into(p, &data[chunk(k)]);
                        }
                    }
                }
                // Write every member's share of these rows.
                for s in 0..stripes {
                    let stripe = stripe0 + s;
                    let rows = row.max(stripe * stripe_rows.get())..((stripe + 1) * stripe_rows.get()).min(end);
                    for member in 0..target.members() {
                        for r in rows.clone() {
                            let slot = match target.content(member, r << shift) {
                                Content::Unused => continue,
                                // Already there: the source keeps these very
                                // logical sectors at this place (the first
                                // member of single to raid1, say). Host writes
                                // to them went there too until now.
                                Content::Data { logical, .. }
                                    if !to_staging
                                        && self.in_place(member, (r << shift) + off, logical + off, slice) =>
                                {
                                    continue
                                }
                                // New capacity on raid0: left as it is.
                                Content::Data { logical, .. } if !redundant && logical >= source.capacity() => continue,
                                Content::Data { logical, .. } => (logical >> shift) - stripe * stripe_chunks,
                                Content::Parity { .. } => stripe_chunks,
                            };
                            let sector = if to_staging {
                                staging_sector(members.device_sectors[member]) + (r - first) * chunk + off
                            } else {
                                (r << shift) + off
                            };
                            let t = Transfer { member, sector, at: slot_bytes(s, slot), len: slice_bytes };
                            batch.write(io, buf, t)?;
                        }
                    }
                }
                // Left in the batch: they go out with the next reads.
                off += slice;
                phase += 1;
            }
            row = ((stripe0 + stripes) * stripe_rows.get()).min(end);
        }
        batch.submit(io, buf)?;
        Ok(())
    }

    /// Whether unit `unit` holds nothing of the source: every data sector
    /// its rows hold on any member lies past the source's end (capacity the
    /// new layout adds). Its target content is whatever the members hold on
    /// raid0; on a layout with copies or parity, zeros (parity included),
    /// or, with a bitmap, anything consistent once the resync has passed.
    fn zero_unit(&self, unit: u64) -> bool {
        let target = self.plan.target();
        let end_of_source = self.plan.source().capacity();
        let shift = target.chunk_shift();
        let (first, count) = self.plan.unit_rows_range(unit);
        (first..first + count).all(|r| {
            (0..target.members()).all(|m| match target.content(m, r << shift) {
                Content::Data { logical, .. } => logical >= end_of_source,
                Content::Parity { .. } | Content::Unused => true,
            })
        })
    }

    /// Writes a zero unit ([`Engine::zero_unit`]): on every member, each
    /// run of its rows that the target uses is zeroed in one request,
    /// nothing read, nothing computed, the members' requests submitted
    /// together. Like a copied unit's writes, these are made durable by the
    /// flush before the unit's checkpoint.
    fn zero_rows<I: MemberIo>(&mut self, io: &mut I, buf: &mut [u8], unit: u64) -> Result<(), EngineError> {
        let target = self.plan.target();
        let shift = target.chunk_shift();
        let (first, count) = self.plan.unit_rows_range(unit);
        let end = first + count;
        let mut batch = [ZeroRange::default(); BATCH];
        let mut n = 0;
        for member in 0..target.members() {
            let used = |r: u64| !matches!(target.content(member, r << shift), Content::Unused);
            let mut r = first;
            while r < end {
                if !used(r) {
                    r += 1;
                    continue;
                }
                let run = r;
                while r < end && used(r) {
                    r += 1;
                }
                batch[n] = ZeroRange { member, sector: run << shift, sectors: (r - run) << shift };
                n += 1;
                if n == BATCH {
                    io.write_zeroes_all(&batch[..core::mem::take(&mut n)], buf)?;
                }
            }
        }
        if n > 0 {
            io.write_zeroes_all(&batch[..n], buf)?;
        }
        Ok(())
    }
}
