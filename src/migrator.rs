//! The migration thread: runs the core's engine step by step while host I/O
//! goes on, obeys the sysfs commands, throttles, and shows what it does.
//!
//! The engine decides everything about order and durability; this file only
//! gives it blocking member I/O ([`KernelIo`]), time, a buffer and a thread,
//! and turns its outcome into state for sysfs and, at the end, a bigger disk.

use crate::{
    array::Array,
    iobuf::{IoBuf, Region},
    kthread,
    raidmig_core::{
        engine::{Engine, EngineConfig, IoError, MemberIo, Stats, Step},
        format::ArrayState,
        route::View,
    },
};
use kernel::{
    bindings, new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
    time::msecs_to_jiffies,
};

/// Bytes of the buffer unit data moves through.
const BUFFER_BYTES: usize = 1 << 20;

/// A command written to sysfs `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Start a prepared migration.
    Start,
    /// Pause (with a checkpoint).
    Pause,
    /// Resume a paused or failed migration.
    Resume,
}

impl Command {
    /// Parses what was written to `action`.
    pub(crate) fn parse(s: &str) -> Option<Command> {
        match s.trim() {
            "start" => Some(Command::Start),
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            _ => None,
        }
    }
}

struct Control {
    command: Option<Command>,
    speed_limit_kbps: u64,
}

/// What sysfs shows of the migration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Status {
    /// The engine's state (or the settled array's).
    pub(crate) state: ArrayState,
    /// Stopped on an error.
    pub(crate) failed: bool,
    /// The thread is copying.
    pub(crate) running: bool,
    /// The routing view.
    pub(crate) view: View,
    /// Engine counters.
    pub(crate) stats: Stats,
    /// Copy speed over the last unit(s).
    pub(crate) speed_kbps: u64,
}

/// The migration thread's shared state.
#[pin_data]
pub(crate) struct Migrator {
    #[pin]
    engine: Mutex<Option<Engine>>,
    #[pin]
    control: Mutex<Control>,
    #[pin]
    wake: CondVar,
    #[pin]
    status: Mutex<Status>,
    run_at_start: bool,
}

impl Migrator {
    /// A migrator over `engine` (none for a settled array); it copies at once
    /// when `run` (a migration found running, or `start=1`).
    pub(crate) fn new(engine: Option<Engine>, status: Status, run: bool) -> impl PinInit<Self> {
        pin_init!(Migrator {
            engine <- new_mutex!(engine),
            control <- new_mutex!(Control { command: None, speed_limit_kbps: 0 }),
            wake <- new_condvar!(),
            status <- new_mutex!(status),
            run_at_start: run,
        })
    }

    /// Queues a command for the thread.
    pub(crate) fn command(&self, c: Command) {
        self.control.lock().command = Some(c);
        self.wake.notify_all();
    }

    /// Wakes the thread (a host write waits for a checkpoint).
    pub(crate) fn wake(&self) {
        self.wake.notify_all();
    }

    /// The throttle, in KiB/s (0: none).
    pub(crate) fn speed_limit_kbps(&self) -> u64 {
        self.control.lock().speed_limit_kbps
    }

    /// Sets the throttle.
    pub(crate) fn set_speed_limit_kbps(&self, kbps: u64) {
        self.control.lock().speed_limit_kbps = kbps;
        self.wake.notify_all();
    }

    /// What sysfs shows.
    pub(crate) fn status(&self) -> Status {
        *self.status.lock()
    }

    /// Sleeps until a command, a wake-up or `ms` milliseconds.
    fn idle(&self, ms: u32) {
        let mut guard = self.control.lock();
        if guard.command.is_none() && !kthread::should_stop() {
            let _ = self.wake.wait_interruptible_timeout(&mut guard, msecs_to_jiffies(ms));
        }
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    // SAFETY: no preconditions.
    let ns = unsafe { bindings::ktime_get_real_fast_ns() };
    ns / 1_000_000
}

/// Blocking member I/O for the engine, by role.
struct KernelIo<'a> {
    array: &'a Array,
    region: Region,
}

impl KernelIo<'_> {
    fn failed(&self, what: &str, member: usize, sector: u64, errno: i32) -> IoError {
        pr_err!(
            "{}: migration {} error {} on member {} (role {}) at sector {}\n",
            self.array.name(),
            what,
            errno,
            self.array.path(member),
            member,
            sector
        );
        IoError { member, errno }
    }
}

impl MemberIo for KernelIo<'_> {
    fn read(&mut self, member: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let m = self.array.member(member);
        self.region.read(self.array.bioset(), m, sector, buf).map_err(|e| self.failed("read", member, sector, e))
    }

    fn write(&mut self, member: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let m = self.array.member(member);
        self.region.write(self.array.bioset(), m, 0, sector, buf).map_err(|e| self.failed("write", member, sector, e))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        for role in 0..self.array.member_count() {
            let m = self.array.member(role);
            self.array.bioset().sync_flush(m).map_err(|e| self.failed("flush", role, 0, e))?;
        }
        Ok(())
    }

    fn publish(&mut self, view: &View) {
        self.array.coordinator().publish(view);
    }

    fn checkpoint_requested(&mut self) -> bool {
        self.array.coordinator().checkpoint_requested()
    }
}

/// The engine configuration from the module parameters.
pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        max_units_between_checkpoints: crate::shim::checkpoint_units().max(1) as u64,
        max_ms_between_checkpoints: crate::shim::checkpoint_ms() as u64,
    }
}

/// Copy speed, measured over what was copied since the last reset.
struct Speed {
    since_ms: u64,
    bytes: u64,
}

impl Speed {
    fn kbps(&self, now: u64) -> u64 {
        let ms = now.saturating_sub(self.since_ms).max(1);
        self.bytes.saturating_mul(1000) / ms / 1024
    }
}

/// The thread body: runs until the thread is stopped.
pub(crate) fn run(array: &Array) {
    let m = array.migrator();
    let mut buffer = match IoBuf::new(BUFFER_BYTES) {
        Ok(b) => Some(b),
        Err(_) => {
            pr_err!("{}: no memory for the migration buffer; migration disabled\n", array.name());
            None
        }
    };
    let mut running = m.run_at_start && buffer.is_some();
    let mut failed = false;
    let mut speed = Speed { since_ms: now_ms(), bytes: 0 };
    loop {
        let mut guard = m.engine.lock();
        let Some(engine) = guard.as_mut() else {
            drop(guard);
            if kthread::should_stop() {
                return;
            }
            m.control.lock().command = None;
            m.idle(1000);
            continue;
        };
        let Some(buf) = buffer.as_mut() else {
            drop(guard);
            if kthread::should_stop() {
                return;
            }
            m.idle(1000);
            continue;
        };
        let (bytes, region) = buf.split();
        let mut io = KernelIo { array, region };
        let members = array.identity();

        if kthread::should_stop() {
            // Unload: checkpoint what is copied; the next load resumes.
            if let Err(e) = engine.stop(&mut io, members, bytes, now_ms()) {
                pr_err!("{}: checkpoint at unload failed: {}\n", array.name(), e.message());
            }
            return;
        }

        let command = m.control.lock().command.take();
        match command {
            Some(Command::Start) if engine.state() == ArrayState::Prepared => running = true,
            Some(Command::Pause) => {
                running = false;
                if let Err(e) = engine.pause(&mut io, members, bytes, now_ms()) {
                    pr_err!("{}: pause failed: {}\n", array.name(), e.message());
                }
            }
            Some(Command::Resume) if failed || engine.state() == ArrayState::Paused => {
                engine.unpause();
                failed = false;
                array.coordinator().refuse_checkpoint_waits(false);
                running = true;
                pr_info!("{}: migration resumed\n", array.name());
            }
            _ => {}
        }

        let mut throttle_ms = 0u64;
        if running {
            if engine.state() == ArrayState::Prepared {
                pr_info!("{}: migration started\n", array.name());
            }
            let t0 = now_ms();
            match engine.step(&mut io, members, bytes, t0) {
                Ok(Step::Copied(_)) | Ok(Step::Replayed(_)) => {
                    let unit_bytes = engine.plan().unit_sectors() << 9;
                    speed.bytes += unit_bytes;
                    let limit = m.speed_limit_kbps();
                    if limit > 0 {
                        // Time this unit may take at the limit, minus what it took.
                        let allowed = unit_bytes * 1000 / (limit * 1024);
                        throttle_ms = allowed.saturating_sub(now_ms() - t0).min(1000);
                    }
                }
                Ok(Step::Checkpointed) => {}
                Ok(Step::Finished) => {
                    running = false;
                    let capacity = engine.plan().target().capacity();
                    array.grow(capacity);
                    pr_info!(
                        "{}: migration finished: {} over {} members, {} MiB\n",
                        array.name(),
                        engine.plan().target().level().name(),
                        array.member_count(),
                        capacity >> 11
                    );
                }
                Ok(Step::Idle) => running = false,
                Err(e) => {
                    pr_err!("{}: migration stopped: {}\n", array.name(), e.message());
                    running = false;
                    failed = true;
                    // Make what was copied durable if the members still allow
                    // it; otherwise writes that need a checkpoint fail.
                    if engine.pause(&mut io, members, bytes, now_ms()).is_err() {
                        array.coordinator().refuse_checkpoint_waits(true);
                    }
                }
            }
        } else if array.coordinator().checkpoint_requested() && !failed {
            // Idle (prepared, paused): nothing is copied but not durable, so a
            // request cannot be due to us; publish to wake any waiter.
            io.publish(&engine.view());
        }

        let now = now_ms();
        {
            let mut s = m.status.lock();
            s.state = engine.state();
            s.failed = failed;
            s.running = running;
            s.view = array.coordinator().view();
            s.stats = engine.stats();
            if running {
                s.speed_kbps = speed.kbps(now);
            } else {
                s.speed_kbps = 0;
            }
        }
        if now.saturating_sub(speed.since_ms) > 2000 {
            speed = Speed { since_ms: now, bytes: 0 };
        }
        drop(guard);

        if !running {
            m.idle(1000);
        } else if throttle_ms > 0 {
            m.idle(throttle_ms as u32);
        }
    }
}
