//! The migration thread: runs the core's engine step by step while host I/O
//! goes on, obeys the sysfs commands, throttles, and shows what it does.
//!
//! The engine decides everything about order and durability, and the core's
//! `pace` the throttle's arithmetic; this file only gives the engine
//! blocking member I/O ([`KernelIo`]), time, a buffer and a thread, and
//! turns its outcome into state for sysfs and, at the end, a bigger disk.

use crate::{
    bitmap::Bitmap,
    coordination::Coordinator,
    repair,
    members::{Members, Who, RESHAPES_PER_LOAD},
    moved_map::MovedMap,
    raidmig_core::{
        config::Command,
        engine::{read_each, write_each, zero_each, Engine, EngineConfig, IoError, MemberIo, Stats, Step, Transfer, ZeroRange},
        lifecycle::Recovered,
        format::ArrayState,
        health::{condition, Condition, Roles},
        moved::is_moved,
        pace,
        record::Record,
        route::View,
        scrub::ScrubMode,
    },
    sys::{
        disk::Capacity,
        iobuf::{IoBuf, Region},
        kthread,
        once::Latest,
        shim, time,
    },
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
    time::msecs_to_jiffies,
};

/// Bytes of the buffer unit data moves through: a whole 4 MiB unit of data
/// for most layouts (raid5's parity takes a second group of stripes), so
/// that a unit is copied in one or two groups of stripes, each read and
/// written in batches of up to 32 member transfers.
const BUFFER_BYTES: usize = 4 << 20;

struct Commands {
    command: Option<Command>,
    speed_limit_kbps: u64,
}

/// What sysfs shows of the migration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Status {
    /// The engine's state (or the settled array's).
    pub(crate) state: ArrayState,
    /// Stopped on an error, until resumed.
    pub(crate) failed: bool,
    /// The thread is copying.
    pub(crate) running: bool,
    /// The routing view.
    pub(crate) view: View,
    /// Engine counters.
    pub(crate) stats: Stats,
    /// Copy speed over the last unit(s) (or rebuild windows).
    pub(crate) speed_kbps: u64,
    /// A rebuild under way: the role, and logical sectors done of how many.
    pub(crate) rebuild: Option<(usize, u64, u64)>,
    /// A scrub under way: check or repair, logical sectors done of how many.
    pub(crate) scrub: Option<(ScrubMode, u64, u64)>,
    /// Sectors the last (or current) scrub found mismatched.
    pub(crate) mismatches: u64,
    /// A resync under way: logical sectors done in the current region, and
    /// the volume's size.
    pub(crate) resync: Option<(u64, u64)>,
}

/// The migration's shared state: the engine, the commands for the thread,
/// and what sysfs shows.
#[pin_data]
pub(crate) struct Control {
    #[pin]
    pub(crate) engine: Mutex<Option<Engine>>,
    /// The superblock record of an array without a migration.
    #[pin]
    pub(crate) settled: Mutex<Option<Record>>,
    #[pin]
    commands: Mutex<Commands>,
    #[pin]
    wake: CondVar,
    #[pin]
    status: Mutex<Status>,
    run_at_start: bool,
    /// A migration is recorded: until it finishes, I/O goes to its source
    /// layout too.
    migrating: AtomicBool,
}

impl Control {
    /// Control without an engine or record yet ([`Control::install`] puts
    /// them in before the thread starts); the thread copies at once when
    /// `run` (a migration found running, or `start=1`); `migrating`: a
    /// migration is recorded.
    pub(crate) fn new(status: Status, run: bool, migrating: bool) -> impl PinInit<Self> {
        pin_init!(Control {
            engine <- new_mutex!(None),
            settled <- new_mutex!(None),
            commands <- new_mutex!(Commands { command: None, speed_limit_kbps: 0 }),
            wake <- new_condvar!(),
            status <- new_mutex!(status),
            run_at_start: run,
            migrating: AtomicBool::new(migrating),
        })
    }

    /// Installs what the load sequence recovered: the migration's engine,
    /// or a settled array's superblock record.
    pub(crate) fn install(&self, recovered: Recovered) {
        match recovered {
            Recovered::Migration(e) => *self.engine.lock() = Some(e),
            Recovered::Settled { record, .. } => *self.settled.lock() = Some(record),
        }
    }

    /// Queues a command for the thread.
    pub(crate) fn command(&self, c: Command) {
        self.commands.lock().command = Some(c);
        self.wake.notify_all();
    }

    /// Wakes the thread (a host write waits for a checkpoint).
    pub(crate) fn wake(&self) {
        self.wake.notify_all();
    }

    /// The throttle, in KiB/s (0: none).
    pub(crate) fn speed_limit_kbps(&self) -> u64 {
        self.commands.lock().speed_limit_kbps
    }

    /// Sets the throttle (validated by the caller).
    pub(crate) fn set_speed_limit_kbps(&self, kbps: u64) {
        self.commands.lock().speed_limit_kbps = kbps;
        self.wake.notify_all();
    }

    /// What sysfs shows.
    pub(crate) fn status(&self) -> Status {
        *self.status.lock()
    }

    /// Whether a migration is recorded (running, paused or stopped). Any
    /// context.
    pub(crate) fn migrating(&self) -> bool {
        self.migrating.load(Ordering::Acquire)
    }

    /// A reshape starts: I/O goes to its source layout too from now on
    /// (with the disk's queue frozen; [`Control::install_reshape`] follows).
    pub(crate) fn set_migrating(&self) {
        self.migrating.store(true, Ordering::Release);
    }

    /// A reshape put `engine` in place of the settled array's record (the
    /// array thread, once the queue is thawed: the locks taken here are
    /// taken before the disk's elsewhere).
    pub(crate) fn install_reshape(&self, engine: Engine) {
        *self.settled.lock() = None;
        {
            let mut s = self.status.lock();
            s.state = engine.state();
            s.view = engine.view();
            s.stats = engine.stats();
        }
        *self.engine.lock() = Some(engine);
    }

    /// Shows a rebuild's progress (or its end, with `None`) and speed.
    pub(crate) fn show_rebuild(&self, rebuild: Option<(usize, u64, u64)>, speed_kbps: u64) {
        let mut s = self.status.lock();
        s.rebuild = rebuild;
        s.speed_kbps = speed_kbps;
    }

    /// Shows a resync's progress (or its end, with `None`).
    pub(crate) fn show_resync(&self, progress: Option<(u64, u64)>) {
        self.status.lock().resync = progress;
    }

    /// Shows a scrub's progress (or its end, with `None`), its mismatches
    /// and speed.
    pub(crate) fn show_scrub(&self, scrub: Option<(ScrubMode, u64, u64)>, mismatches: u64, speed_kbps: u64) {
        let mut s = self.status.lock();
        s.scrub = scrub;
        s.mismatches = mismatches;
        s.speed_kbps = speed_kbps;
    }

    /// Sleeps until a command, a wake-up or `ms` milliseconds.
    pub(crate) fn idle(&self, ms: u64) {
        let mut guard = self.commands.lock();
        if guard.command.is_none() && !kthread::should_stop() {
            let _ = self.wake.wait_interruptible_timeout(&mut guard, msecs_to_jiffies(ms.min(1000) as u32));
        }
    }
}

/// The engine configuration from the module parameters.
pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        max_units_between_checkpoints: shim::checkpoint_units().max(1) as u64,
        max_ms_between_checkpoints: shim::checkpoint_ms() as u64,
    }
}

/// What the migration thread works with.
pub(crate) struct Migration<'a> {
    /// The members.
    pub(crate) members: &'a Members,
    /// The meeting point with host I/O.
    pub(crate) coord: &'a Coordinator,
    /// The engine and its commands.
    pub(crate) control: &'a Control,
    /// The disk's capacity, grown at the end.
    pub(crate) capacity: &'a Capacity,
    /// The write-intent bitmap (a reshape puts a new one in place).
    pub(crate) bitmaps: &'a Latest<Bitmap, RESHAPES_PER_LOAD>,
    /// The moved-unit map of the migration (a reshape puts a new one in
    /// place).
    pub(crate) moved: &'a Latest<MovedMap, RESHAPES_PER_LOAD>,
    /// Fails a member after an error at a sector (write or not): returns
    /// whether the array still holds every sector.
    pub(crate) fail_member: &'a dyn Fn(usize, u64, bool) -> bool,
    /// Puts a reshape asked for through sysfs in effect, with the thread's
    /// buffer: whether there was one (started or refused).
    pub(crate) reshape: &'a dyn Fn(&mut IoBuf) -> bool,
}

impl<'a> Migration<'a> {
    /// The write-intent bitmap in effect.
    pub(crate) fn bitmap(&self) -> &'a Bitmap {
        self.bitmaps.get()
    }

    /// The moved-unit map in effect.
    pub(crate) fn moved(&self) -> &'a [AtomicU64] {
        self.moved.get().words()
    }
}

/// Blocking member I/O for the engine and the repairs, by role. It
/// remembers where a write first failed, so that the migration thread fails
/// that member, as md fails a member on a write error (a read error only
/// stops the migration: the source has no other copy of what is not copied
/// yet); the repairs take their errors from the results alone. A batch that
/// fails as a whole is done again one transfer at a time, which finds the
/// failing member and sector.
pub(crate) struct KernelIo<'a> {
    members: &'a Members,
    coord: &'a Coordinator,
    region: Region<'a>,
    /// Takes the capacity the migration adds past the source's end as
    /// regions to resync (see the engine's `copy_rows`).
    bitmap: &'a Bitmap,
    /// The moved-unit map of the migration.
    moved: &'a [AtomicU64],
    fail_member: &'a dyn Fn(usize, u64, bool) -> bool,
    /// The first write that failed since last taken: role and sector.
    pub(crate) write_error: Option<(usize, u64)>,
}

impl<'a> KernelIo<'a> {
    /// Member I/O for `m`'s thread through the buffer of `region`.
    pub(crate) fn new(m: &Migration<'a>, region: Region<'a>) -> Self {
        KernelIo {
            members: m.members,
            coord: m.coord,
            region,
            bitmap: m.bitmap(),
            moved: m.moved(),
            fail_member: m.fail_member,
            write_error: None,
        }
    }
}

impl MemberIo for KernelIo<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.members.read(Who::Migration, &self.region, member, sector, buf)
    }

    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        // The first failure of a batch is the one recorded.
        self.members.write(Who::Migration, &self.region, member, 0, sector, buf).inspect_err(|_| {
            self.write_error.get_or_insert((member, sector));
        })
    }

    fn read_all(&mut self, buf: &mut [u8], batch: &[Transfer]) -> Result<(), IoError> {
        if self.members.read_batch(&self.region, buf, batch) {
            return Ok(());
        }
        read_each(self, buf, batch)
    }

    fn write_all(&mut self, buf: &[u8], batch: &[Transfer]) -> Result<(), IoError> {
        if self.members.write_batch(&self.region, 0, buf, batch) {
            return Ok(());
        }
        write_each(self, buf, batch)
    }

    fn write_read_all(&mut self, buf: &mut [u8], writes: &[Transfer], reads: &[Transfer]) -> Result<(), IoError> {
        if self.members.write_read_batch(&self.region, buf, writes, reads) {
            return Ok(());
        }
        let w = write_each(self, buf, writes);
        w.and(read_each(self, buf, reads))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.members.flush_all(Who::Migration)
    }

    fn publish(&mut self, view: &View) {
        self.coord.publish(view);
    }

    fn checkpoint_requested(&mut self) -> bool {
        self.coord.checkpoint_requested()
    }

    fn move_requested(&mut self) -> Option<u64> {
        self.coord.move_requested()
    }

    fn moved_map(&self) -> &[AtomicU64] {
        self.moved
    }

    fn write_zeroes(&mut self, member: usize, sector: u64, sectors: u64, _buf: &mut [u8]) -> Result<(), IoError> {
        self.members.write_zeroes(Who::Migration, member, sector, sectors).inspect_err(|_| {
            self.write_error.get_or_insert((member, sector));
        })
    }

    fn write_zeroes_all(&mut self, batch: &[ZeroRange], buf: &mut [u8]) -> Result<(), IoError> {
        if self.members.write_zeroes_batch(batch) {
            return Ok(());
        }
        zero_each(self, batch, buf)
    }

    fn mark_unsynced(&mut self, start: u64, end: u64) -> Result<bool, IoError> {
        // An error only when no member took the bits (those whose write
        // failed are failed); the migration then stops where it is.
        self.bitmap.mark_unsynced(self.members, self.fail_member, start, end).map_err(|_| IoError { member: 0, errno: -5 })
    }

    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        shim::xor_into(dst, src)
    }
}

/// Whether the array keeps every sector with the roles of `failed` lost:
/// the copied part in the target layout, the rest in the source's.
fn survives(engine: &Engine, failed: Roles) -> bool {
    let plan = engine.plan();
    condition(&plan.target(), failed) != Condition::Failed && condition(&plan.source(), failed) != Condition::Failed
}

/// Copy speed, measured over windows of at least 2 s that end with a unit
/// (a paced unit may take longer than a window: the speed shown stays until
/// the next one lands, and drops to 0 only after 10 s without one).
struct Speed {
    since_ms: u64,
    bytes: u64,
    shown_kbps: u64,
}

impl Speed {
    fn at(now: u64) -> Self {
        Speed { since_ms: now, bytes: 0, shown_kbps: 0 }
    }

    /// The speed to show at `now`.
    fn update(&mut self, now: u64) -> u64 {
        let elapsed = now.saturating_sub(self.since_ms);
        if elapsed > 2000 && (self.bytes > 0 || elapsed > 10_000) {
            self.shown_kbps = pace::kbps(self.bytes, elapsed);
            self.since_ms = now;
            self.bytes = 0;
        }
        self.shown_kbps
    }
}

/// The thread body: runs until the thread is stopped.
pub(crate) fn run(m: &Migration<'_>) {
    let c = m.control;
    let name = m.members.name();
    let mut buffer = match IoBuf::new(BUFFER_BYTES) {
        Ok(b) => Some(b),
        Err(_) => {
            pr_err!("{}: no memory for the migration buffer; migration disabled\n", name);
            None
        }
    };
    let mut running = c.run_at_start && buffer.is_some();
    let mut speed = Speed::at(time::now().mono_ms);
    let mut pacer = pace::Pacer::new();
    let mut rebuild = repair::Rebuilding::default();
    let mut scrub = repair::Scrubbing::default();
    let mut resync = repair::Resyncing::default();
    // The migration was stopped by a member failure: it resumes by itself
    // once a replacement is rebuilt.
    let mut resume_when_whole = c.engine.lock().as_ref().is_some_and(|e| !e.whole() && e.state() == ArrayState::Migrating);
    // The disk's capacity, as added: a migration that puts its new layout
    // in effect at once grows it when it starts.
    let mut capacity = m.coord.view().volume_sectors;
    loop {
        if let Some(buf) = buffer.as_mut() {
            repair::keep_health(m, buf);
        }
        repair::release_removed(m);
        let mut guard = c.engine.lock();
        let (Some(engine), Some(buf)) = (guard.as_mut(), buffer.as_mut()) else {
            drop(guard);
            if kthread::should_stop() {
                repair::stop(m, &mut rebuild, buffer.as_mut());
                return;
            }
            // A reshape asked for starts a migration: taken before upkeep,
            // which refuses to start while one waits.
            if buffer.as_mut().is_some_and(|buf| (m.reshape)(buf)) {
                continue;
            }
            let command = c.commands.lock().command.take();
            // No migration: the array's own upkeep; a rebuild first.
            let pause_ms = match buffer.as_mut() {
                Some(buf) => repair::rebuild_step(m, &mut rebuild, buf)
                    .or_else(|| repair::resync_step(m, &mut resync, buf))
                    .or_else(|| repair::scrub_step(m, &mut scrub, command, buf)),
                None => None,
            };
            m.bitmap().clear_quiet(m.members, m.fail_member);
            c.idle(pause_ms.unwrap_or(1000));
            continue;
        };
        let (bytes, region) = buf.split();
        let mut io = KernelIo::new(m, region);
        let members = &m.members.identity();

        if kthread::should_stop() {
            // Unload: checkpoint what is copied; the next load resumes.
            if let Err(e) = engine.stop(&mut io, members, bytes, time::now()) {
                pr_err!("{}: checkpoint at unload failed: {}\n", name, e.message());
            }
            drop(guard);
            repair::stop(m, &mut rebuild, buffer.as_mut());
            return;
        }

        if !engine.whole() {
            // A role out of sync: the engine holds at a settled point, the
            // replacement (once added) is rebuilt over the copied part, and
            // the migration then resumes by itself.
            if running || engine.state() == ArrayState::Migrating {
                resume_when_whole = true;
            }
            running = false;
            if !engine.settled_for_rebuild() {
                if let Err(e) = engine.hold_degraded(&mut io, members, bytes, time::now()) {
                    pr_err!("{}: migration held degraded: {}\n", name, e.message());
                }
            }
            {
                let mut s = c.status.lock();
                s.state = engine.state();
                s.failed = false;
                s.running = false;
                s.view = m.coord.view();
                s.stats = engine.stats();
            }
            let lost_write = io.write_error.filter(|&(role, _)| survives(engine, m.members.failed().with(role)));
            drop(guard);
            if let Some((role, sector)) = lost_write {
                (m.fail_member)(role, sector, true);
            }
            let pause_ms = buffer.as_mut().and_then(|buf| repair::rebuild_step(m, &mut rebuild, buf));
            c.idle(pause_ms.unwrap_or(1000));
            continue;
        }
        if resume_when_whole {
            resume_when_whole = false;
            if engine.state() == ArrayState::Migrating {
                engine.unpause();
                running = true;
                pr_info!("{}: every member in sync again: migration resumed\n", name);
            }
        }

        let command = c.commands.lock().command.take();
        match command {
            // A migration made ready at load, or a reshape just started
            // (recorded migrating from its first superblock).
            Some(Command::Start)
                if engine.state() == ArrayState::Prepared || (engine.state() == ArrayState::Migrating && !engine.halted()) =>
            {
                running = true
            }
            Some(Command::Pause) => {
                running = false;
                if let Err(e) = engine.pause(&mut io, members, bytes, time::now()) {
                    pr_err!("{}: pause failed: {}\n", name, e.message());
                }
            }
            Some(Command::Resume) if engine.halted() || engine.state() == ArrayState::Paused => {
                engine.unpause();
                running = true;
                pr_info!("{}: migration resumed\n", name);
            }
            _ => {}
        }

        let mut throttle_ms = 0u64;
        let mut finished = false;
        // A host request waits for a unit to be moved out of order: served
        // paused or throttled too (the request waits for it).
        let wanted = engine.moving() && m.coord.move_requested().is_some_and(|u| !is_moved(m.moved(), u));
        if running || wanted {
            if engine.state() == ArrayState::Prepared {
                pr_info!("{}: migration started\n", name);
            }
            let t0 = time::now();
            let owed_ms = pacer.wait_ms(t0.mono_ms, c.speed_limit_kbps());
            let step = if owed_ms > 0 && !wanted && !engine.checkpoint_due(&mut io, t0) {
                // Under the speed limit: no unit before the time owed has
                // passed (a due checkpoint is still written).
                throttle_ms = owed_ms;
                None
            } else {
                Some(engine.step(&mut io, members, bytes, t0))
            };
            match step {
                None => {}
                Some(Ok(Step::Copied(_)) | Ok(Step::Replayed(_))) => {
                    let unit_bytes = engine.plan().unit_sectors() << 9;
                    speed.bytes = speed.bytes.saturating_add(unit_bytes);
                    let limit = c.speed_limit_kbps();
                    pacer.moved(unit_bytes, t0.mono_ms, limit);
                    throttle_ms = pacer.wait_ms(time::now().mono_ms, limit);
                }
                // Moves are for host requests: not paced.
                Some(Ok(Step::Checkpointed)) | Some(Ok(Step::Moved(_))) => {}
                Some(Ok(Step::Finished)) => {
                    running = false;
                    finished = true;
                    let target = engine.plan().target().capacity();
                    if target != capacity {
                        m.capacity.grow(target);
                        capacity = target;
                    }
                    pr_info!(
                        "{}: migration finished: {} over {} members, {} MiB\n",
                        name,
                        engine.plan().target().level().name(),
                        m.members.count(),
                        target >> 11
                    );
                }
                Some(Ok(Step::Idle)) => running = false,
                Some(Err(e)) => {
                    pr_err!("{}: migration stopped: {}\n", name, e.message());
                    running = false;
                    // A member that lost a write is failed where the array
                    // survives it (recorded by the next round's upkeep; the
                    // engine then holds degraded). Without redundancy it is
                    // kept: failing it would lose what it holds, and the
                    // migration resumes once it is repaired.
                    let lost_write = io.write_error.take().filter(|&(role, _)| survives(engine, m.members.failed().with(role)));
                    if let Some((role, sector)) = lost_write {
                        (m.fail_member)(role, sector, true);
                    } else if engine.stop(&mut io, members, bytes, time::now()).is_err() {
                        // Make what was copied durable if the members still
                        // allow it, the array still recorded migrating, so
                        // that the next load retries (as md resumes a
                        // reshape); the engine's view tells host I/O what it
                        // can no longer do.
                        pr_err!("{}: no checkpoint possible: writes to copied units fail until resumed\n", name);
                    }
                }
            }
        } else if m.coord.checkpoint_requested() {
            // Idle: nothing copied is left without a checkpoint, so a request
            // cannot be due to us; publish to wake any waiter.
            io.publish(&engine.view());
        }

        // The new layout's capacity, at once: the engine's view says so
        // from its start (a change uevent tells resize2fs and friends).
        let volume = engine.view().volume_sectors;
        if volume != capacity {
            m.capacity.grow(volume);
            pr_info!("{}: capacity {} MiB, the new layout's, in effect now\n", name, volume >> 11);
            capacity = volume;
        }
        let now = time::now().mono_ms;
        {
            let mut s = c.status.lock();
            s.state = engine.state();
            s.failed = engine.halted();
            s.running = running;
            s.view = m.coord.view();
            s.stats = engine.stats();
            s.speed_kbps = if running { speed.update(now) } else { 0 };
        }
        if !running {
            speed = Speed::at(now);
        }
        if finished {
            // The array is settled: its superblocks are kept by a record
            // from now on (failures, rebuilds).
            let sb = engine.superblock(members, 0, time::now());
            *c.settled.lock() = Some(Record::new(sb));
            *guard = None;
            c.migrating.store(false, Ordering::Release);
        }
        drop(guard);

        if !running && !wanted {
            c.idle(1000);
        } else if throttle_ms > 0 {
            c.idle(throttle_ms);
        }
    }
}
