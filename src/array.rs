//! A running array: what the disk, the migration thread and sysfs share.
//!
//! This is the top of the array logic: it puts together the members, the
//! meeting point of host I/O and the migration, the raid5 stripe table and
//! the migration's control, and hands each request to [`Host`] and the
//! thread to [`migrator::run`]. The parts below it know nothing of each
//! other but what they are given.

use crate::{
    bitmap::{Bitmap, BitmapImages},
    coordination::Coordinator,
    host::{set_layout_limits, Host, Shape},
    members::{Members, RESHAPES_PER_LOAD},
    migrator::{self, Control, Migration, Status},
    moved_map::MovedMap,
    raidmig_core::{
        config::{Command, RemoveTarget},
        format::ArrayState,
        health::{condition, Condition, Health},
        layout::{Geometry, Level},
        lifecycle::Recovered,
        members::ArrayMembers,
        reshape::start_reshape,
    },
    reshaping::{self, Mailbox, Prepared, StartIo},
    spares,
    stripes::Stripes,
    sys::{
        disk::{Capacity, RequestHandler},
        iobuf::IoBuf,
        member::{self, Member},
        jobs::{impl_has_jobs, JobOwner, Jobs},
        once::Latest,
        request::{Disposition, InFlight},
        time,
    },
};
use kernel::{
    fmt,
    prelude::*,
    str::{CStr, CString},
};

/// The members, initialised in a frame of their own.
#[inline(never)]
fn boxed_members(
    name: CString,
    devs: KVec<Option<Member>>,
    paths: KVec<CString>,
    identity: ArrayMembers,
    health: Health,
) -> Result<Pin<KBox<Members>>> {
    KBox::pin_init(Members::new(name, devs, paths, identity, health)?, GFP_KERNEL)
}

/// A running array.
#[pin_data]
pub(crate) struct Array {
    /// First: dropped first, its work drained while the rest is whole.
    #[pin]
    jobs: Jobs,
    /// Boxed: its initializer is large, and the load runs on insmod's stack.
    members: Pin<KBox<Members>>,
    /// The layouts, replaced by a reshape with the queue frozen.
    shape: Latest<Shape, RESHAPES_PER_LOAD>,
    #[pin]
    coord: Coordinator,
    #[pin]
    stripes: Stripes,
    #[pin]
    control: Control,
    #[pin]
    capacity: Capacity,
    /// The write-intent bitmap, replaced by a reshape (a new capacity).
    bitmaps: Latest<Bitmap, RESHAPES_PER_LOAD>,
    /// A reshape asked for, on its way to the array thread.
    #[pin]
    reshape: Mailbox,
    /// The moved-unit map of the migration (empty without one), replaced
    /// by a reshape.
    moved: Latest<MovedMap, RESHAPES_PER_LOAD>,
}

/// How long a reshape waits for the host requests in flight to end before
/// it gives up (nothing written yet).
const FREEZE_MS: u32 = 10_000;

impl Array {
    /// An array named `name` over `devs` (in role order, with their
    /// `paths`; none for a role assembled without its device) as the load
    /// sequence left it in `recovered`, whose engine or record the caller
    /// installs next ([`Control::install`]: moved once, not through the
    /// initializer's layers on the stack); the migration runs at once when
    /// `run`.
    pub(crate) fn new(
        name: CString,
        devs: KVec<Option<Member>>,
        paths: KVec<CString>,
        identity: ArrayMembers,
        recovered: &Recovered,
        bitmap_image: Option<BitmapImages>,
        moved: MovedMap,
        run: bool,
    ) -> Result<impl PinInit<Self, Error>> {
        let bitmap_region = recovered.bitmap_region();
        let view = recovered.view();
        let (source, target) = (recovered.source(), recovered.target());
        let health = recovered.health();
        let (engine, state) = match recovered {
            Recovered::Settled { state, .. } => (None, *state),
            Recovered::Migration(e) => (Some(e), e.state()),
        };
        let failed = engine.is_some_and(|e| e.halted());
        let stats = engine.map(|e| e.stats()).unwrap_or_default();
        let migrating = engine.is_some_and(|e| e.state() != ArrayState::Clean);
        let status = Status { state, failed, running: false, view, stats, speed_kbps: 0, rebuild: None, scrub: None, mismatches: 0, resync: None };
        let raid5 = source.level() == Level::Raid5 || target.level() == Level::Raid5;
        let buffers = Stripes::buffers(raid5.then_some(target.members()))?;
        let count = buffers.len();
        let bitmap = KBox::pin_init(Bitmap::new(&target, bitmap_region, bitmap_image)?, GFP_KERNEL)?;
        Ok(try_pin_init!(Array {
            jobs <- Jobs::new::<Array>(kernel::c_str!("raidmig_stripes"), buffers)?,
            members: boxed_members(name, devs, paths, identity, health)?,
            shape: Latest::new(KBox::pin(Shape { source, target }, GFP_KERNEL)?),
            coord <- Coordinator::new(view),
            stripes <- Stripes::new(count)?,
            control <- Control::new(status, run, migrating),
            capacity <- Capacity::new(),
            bitmaps: Latest::new(bitmap),
            reshape <- Mailbox::new(),
            moved: Latest::new(KBox::pin(moved, GFP_KERNEL)?),
        }))
    }

    /// The write-intent bitmap.
    pub(crate) fn bitmap(&self) -> &Bitmap {
        self.bitmaps.get()
    }

    /// The members.
    pub(crate) fn members(&self) -> &Members {
        &self.members
    }

    /// The layout migrated from (the array's own when settled).
    pub(crate) fn source(&self) -> Geometry {
        self.shape.get().source
    }

    /// The array's layout (migrated to).
    pub(crate) fn target(&self) -> Geometry {
        self.shape.get().target
    }

    /// The migration's control and status.
    pub(crate) fn control(&self) -> &Control {
        &self.control
    }

    /// How the array stands with its failed members (a role being rebuilt
    /// is not in sync yet).
    pub(crate) fn condition(&self) -> Condition {
        let failed = self.members.health().out_of_sync();
        let shape = self.shape.get();
        let source = if self.control.migrating() { condition(&shape.source, failed) } else { Condition::Optimal };
        match (source, condition(&shape.target, failed)) {
            (Condition::Failed, _) | (_, Condition::Failed) => Condition::Failed,
            (Condition::Optimal, Condition::Optimal) => Condition::Optimal,
            _ => Condition::Degraded,
        }
    }

    /// Fails member `role` after an error at `sector` (any context): told
    /// once, and the array thread woken to record it. Returns whether the
    /// array still holds every sector.
    pub(crate) fn fail_member(&self, role: usize, sector: u64, write: bool) -> bool {
        let newly = self.members.fail(role);
        let cond = self.condition();
        if newly {
            pr_err!(
                "{}: member {} (role {}) failed after a {} error at sector {}: {}\n",
                self.members.name(),
                self.members.path(role),
                role,
                if write { "write" } else { "read" },
                sector,
                match cond {
                    Condition::Failed => "array failed, data on it is lost",
                    _ => "array degraded, served by the other members",
                }
            );
            self.control.wake();
        }
        cond != Condition::Failed
    }

    /// Adds the device at `path` as a replacement for a failed role, or as
    /// a hot spare (sysfs `add`). During a migration, only as the
    /// replacement of a failed role once the engine holds still (its
    /// checkpointed units are then rebuilt onto it and the migration
    /// resumes), and not for a role of the source: what it held that was
    /// not copied yet has no other copy.
    pub(crate) fn add_device(&self, path: &str) -> Result {
        let name = self.members.name();
        let engine = self.control.engine.lock();
        if let Some(e) = engine.as_ref() {
            let failed = e.failed();
            let Some(role) = failed.iter().next() else {
                if e.halted() {
                    pr_err!(
                        "{}: cannot add {}: the migration stopped on an error of a member that holds the only copy of its data: repair it and resume\n",
                        name,
                        path
                    );
                } else {
                    pr_err!("{}: cannot add {}: a migration is under way (a replacement is taken only for a failed member)\n", name, path);
                }
                return Err(EBUSY);
            };
            if e.rebuild().is_some() || !e.settled_for_rebuild() {
                pr_err!("{}: cannot add {}: the migration is not held yet (try again)\n", name, path);
                return Err(EBUSY);
            }
            if role < self.source().members() && e.view().checkpoint < e.plan().units() {
                pr_err!("{}: cannot add {}: role {} held source data not yet copied, which is lost\n", name, path, role);
                return Err(EIO);
            }
        }
        // The engine stays locked until the replacement is in place: it
        // holds still meanwhile.
        // The bitmap marks host writes only once settled: no re-add during a
        // migration.
        let has_bitmap = self.bitmap().active() && engine.is_none();
        let newest = if engine.is_none() { self.control.settled.lock().map(|r| r.newest) } else { None };
        spares::add(&self.members, &self.target(), has_bitmap, newest, path, || self.control.wake())
    }

    /// Removes what `target` names (sysfs `remove`, md's `--remove`): see
    /// [`Array::remove_device`]; `failed` releases the device of every
    /// faulty role (also one whose device node is gone).
    pub(crate) fn remove(&self, target: RemoveTarget<'_>) -> Result {
        let path = match target {
            RemoveTarget::Path(p) => return self.remove_device(p),
            RemoveTarget::Failed => kernel::c_str!("failed"),
        };
        let failed = self.members.failed();
        let mut devs = KVec::new();
        for role in failed.iter() {
            if let Some(dev) = self.members.current_device(role) {
                self.members.request_removal(role, dev);
                devs.push((role, dev), GFP_KERNEL)?;
            }
        }
        self.control.wake();
        self.wait_released(path, &devs)
    }

    /// Waits up to 10 s for the array thread to release `devs`.
    fn wait_released(&self, path: &CStr, devs: &[(usize, u32)]) -> Result {
        let name = self.members.name();
        for _ in 0..100 {
            if devs.iter().all(|&(_, dev)| self.members.device_released(dev)) {
                for &(role, _) in devs {
                    pr_info!("{}: faulty member of role {} removed: its device is released\n", name, role);
                }
                return Ok(());
            }
            time::sleep_ms(100);
        }
        pr_err!("{}: {} not released yet: host I/O did not drain (it is released when it does)\n", name, path);
        Err(EBUSY)
    }

    /// Removes the device at `path`: a hot spare is dropped; a faulty
    /// member's device (or one a replacement took over from) is released by
    /// the array thread (once its failure is recorded and every host request
    /// started before has ended), waited for here up to 10 s. A member in
    /// sync is refused (`EBUSY`), a device that is neither `ENODEV`.
    pub(crate) fn remove_device(&self, path: &str) -> Result {
        let name = self.members.name();
        let cpath = CString::try_from_fmt(fmt!("{}", path))?;
        let dev = member::lookup(&cpath).inspect_err(|_| {
            pr_err!("{}: cannot remove {}: no such block device\n", name, path);
        })?;
        if self.members.remove_spare(dev) {
            pr_info!("{}: hot spare {} removed\n", name, path);
            return Ok(());
        }
        let Some((role, current)) = self.members.role_of_device(dev) else {
            pr_err!("{}: cannot remove {}: not a member or spare of this array\n", name, path);
            return Err(ENODEV);
        };
        if current && !self.members.failed().contains(role) {
            pr_err!("{}: cannot remove {}: role {} is not faulty (only a faulty member or a spare is removed)\n", name, path, role);
            return Err(EBUSY);
        }
        self.members.request_removal(role, dev);
        self.control.wake();
        self.wait_released(&cpath, &[(role, dev)])
    }

    /// Takes a command written to `action`. A scrub (`check`, `repair`)
    /// needs every member in sync, no migration or resync and a level with
    /// redundancy: otherwise `EBUSY` (or `EINVAL`), with a dmesg line.
    pub(crate) fn command(&self, c: Command) -> Result {
        let name = self.members.name();
        if matches!(c, Command::Check | Command::Repair) {
            if self.control.migrating() {
                pr_err!("{}: no scrub during a migration\n", name);
                return Err(EBUSY);
            }
            if !self.target().redundant() {
                pr_err!("{}: {} has no redundancy to scrub\n", name, self.target().level().name());
                return Err(EINVAL);
            }
            if !self.members.health().out_of_sync().is_empty() {
                pr_err!("{}: no scrub while a member is not in sync\n", name);
                return Err(EBUSY);
            }
            // The thread would take the command only after the resync, and
            // drop it: refused, as md refuses a check during a resync.
            if self.bitmap().unsynced_count() > 0 {
                pr_err!("{}: no scrub during a resync ({} regions left)\n", name, self.bitmap().unsynced_count());
                return Err(EBUSY);
            }
        }
        self.control.command(c);
        Ok(())
    }

    /// Takes a write to `reshape`: checks it, makes it ready, hands it to
    /// the array thread and waits until the thread has started it (or
    /// refused: see [`reshaping`]).
    pub(crate) fn reshape(&self, input: &[u8]) -> Result {
        let name = self.members.name();
        let spec = reshaping::parse(name, input)?;
        let busy = self.reshape_busy();
        let newest = if self.control.migrating() { None } else { self.control.settled.lock().map(|r| r.newest) };
        let cur = reshaping::Current { members: &self.members, layout: self.target(), newest, busy, condition: self.condition() };
        let p = reshaping::prepare(&cur, &spec)?;
        self.reshape.post(name, p, || self.control.wake())
    }

    /// What keeps a reshape from starting besides the superblock's state
    /// and the members' health: a scrub or a resync running.
    fn reshape_busy(&self) -> Option<&'static str> {
        if self.control.status().scrub.is_some() {
            Some("a scrub is running: wait until it ends")
        } else if self.bitmap().unsynced_count() > 0 {
            Some("a resync is running: wait until it ends")
        } else {
            None
        }
    }

    /// The array thread's side of a reshape: puts the request waiting, if
    /// any, in effect. Returns whether there was one.
    fn put_reshape_in_effect(&self, buf: &mut IoBuf) -> bool {
        let Some(p) = self.reshape.take() else { return false };
        let r = self.start_reshape(p, buf);
        self.reshape.finish(r);
        true
    }

    /// Starts reshape `p`, checked again now that the thread holds still:
    /// with the queue frozen, the superblocks that start it are written
    /// (the core's [`start_reshape`]) and, once durable, the array becomes
    /// the reshape's: roles added, identities, layouts, bitmap and raid5
    /// buffers replaced, the engine installed with its view published.
    /// Then the thread runs it.
    fn start_reshape(&self, p: KBox<Prepared>, buf: &mut IoBuf) -> Result {
        let name = self.members.name();
        let newest = self.control.settled.lock().map(|r| r.newest);
        let busy = self.reshape_busy().is_some();
        if self.control.migrating() || newest != Some(p.newest) || busy || self.condition() != Condition::Optimal {
            pr_err!("{}: reshape not started: the array changed since it was asked for (try again)\n", name);
            return Err(EAGAIN);
        }
        let Prepared { newest, plan, added, identity, shape, bitmap, buffers, members_discard, moved } = KBox::into_inner(p);
        // The new layout's I/O hints, and no discard where it cannot map
        // them: set before the switch (a discard refused early costs
        // nothing; one reaching raid5 would fail).
        let target = plan.target();
        self.capacity
            .update_limits(|l| set_layout_limits(l, &target, members_discard))
            .inspect_err(|e| pr_err!("{}: reshape not started: queue limits refused: {:?}\n", name, e))?;
        let n = newest.layout.members();
        let (bytes, region) = buf.split();
        // Devices a role could not take, closed after the freeze.
        let mut unused = KVec::with_capacity(added.len(), GFP_KERNEL)?;
        let outcome = self.capacity.frozen(FREEZE_MS, move |_frozen| {
            let started = {
                let mut io = StartIo { members: &self.members, added: &added, n, region, moved: &moved };
                start_reshape(&mut io, &newest, &plan, &identity, migrator::config(), true, time::now(), bytes)
            };
            // Devices are closed only once the queue is thawed: closing
            // takes a disk's open mutex, which is taken before queues are
            // entered elsewhere.
            let engine = match started {
                Ok(engine) => engine,
                Err(e) => {
                    let path = e.device().and_then(|r| r.checked_sub(n)).and_then(|i| added.get(i)).map(|s| &*s.path);
                    pr_err!("{}: reshape not started: {}: {}\n", name, path.unwrap_or(kernel::c_str!("members")), e.message());
                    return Err((crate::sys::shim::errno(e.errno()), added));
                }
            };
            // Durable: the array is the reshape's from here on.
            for (i, slot) in added.into_iter().enumerate() {
                if let Err(slot) = self.members.add_role(n + i, slot) {
                    pr_err!("{}: role {} cannot take {}: it runs without a device\n", name, n + i, &*slot.path);
                    // Room for every added device is reserved: no allocation.
                    let _ = unused.push(slot, GFP_NOWAIT);
                }
            }
            let _ = self.members.set_identity(identity);
            let _ = self.shape.set(shape);
            let _ = self.bitmaps.set(bitmap);
            let _ = self.moved.set(moved);
            for (i, mut b) in buffers.into_iter().enumerate() {
                // Idle once the requests have ended; a step of the work item
                // may still hold one for a moment.
                for _ in 0..1000 {
                    match self.jobs.replace(i, b) {
                        Ok(_) => break,
                        Err(back) => {
                            b = back;
                            time::sleep_ms(1);
                        }
                    }
                }
            }
            // Requests held at the queue go by the reshape's view. Only
            // atomics and the gate's mutex here: the engine's and the
            // status' are taken before the disk's elsewhere.
            self.coord.publish(&engine.view());
            self.control.set_migrating();
            Ok((engine, unused))
        });
        match outcome {
            None => {
                pr_err!("{}: reshape not started: host I/O did not drain within {} s\n", name, FREEZE_MS / 1000);
                Err(EBUSY)
            }
            Some(Err((e, added))) => {
                drop(added);
                Err(e)
            }
            Some(Ok((engine, unused))) => {
                drop(unused);
                self.control.install_reshape(engine);
                pr_info!(
                    "{}: reshape started: {} over {} members, chunk {} KiB -> {} over {} members, chunk {} KiB\n",
                    name,
                    plan.source().level().name(),
                    plan.source().members(),
                    plan.source().chunk_sectors() / 2,
                    target.level().name(),
                    target.members(),
                    target.chunk_sectors() / 2
                );
                self.control.command(Command::Start);
                Ok(())
            }
        }
    }

    /// The migration thread's body.
    pub(crate) fn run_migration(&self) {
        migrator::run(&Migration {
            members: &self.members,
            coord: &self.coord,
            control: &self.control,
            capacity: &self.capacity,
            bitmaps: &self.bitmaps,
            moved: &self.moved,
            fail_member: &|role, sector, write| self.fail_member(role, sector, write),
            reshape: &|buf| self.put_reshape_in_effect(buf),
        });
        self.reshape.cancel();
    }
}

impl Array {
    /// Runs `f` with what a host request needs of the array.
    fn with_host<R>(&self, f: impl FnOnce(&Host<'_>) -> R) -> R {
        let shape = self.shape.get();
        f(&Host {
            members: &self.members,
            jobs: &self.jobs,
            coord: &self.coord,
            stripes: &self.stripes,
            source: &shape.source,
            target: &shape.target,
            bitmap: self.bitmap(),
            moved: self.moved.get().words(),
            settled: !self.control.migrating(),
            fail_member: &|role, sector, write| self.fail_member(role, sector, write),
        })
    }
}

impl_has_jobs!(Array, jobs);

impl JobOwner for Array {
    fn io_ended(&self, index: usize) {
        self.stripes.io_ended(&self.members, &self.jobs, index);
    }
}

impl RequestHandler for Array {
    fn submit(&self, io: InFlight) -> Option<InFlight> {
        self.with_host(|host| host.submit(io))
    }

    fn process(&self, io: InFlight) {
        self.with_host(|host| host.process(io, || self.control.wake()));
    }

    fn released(&self, epoch: u8) {
        self.coord.released(epoch);
    }

    fn write_ended(&self, first: u32, last: u32) {
        self.bitmap().end_write(first, last);
    }

    fn member_failed(&self, role: usize, sector: u64, write: bool, redundant: bool, errno: i32) -> Disposition {
        self.members.host_error(role, sector, write, errno);
        if !write {
            // Served again from the redundancy; the array thread rewrites
            // the range from the others (or checks whether the member still
            // answers).
            if redundant {
                self.members.bad_read(role, sector);
                self.control.wake();
                return Disposition::Retry;
            }
            return Disposition::Fail;
        }
        // A member that loses a write is out of sync: failed, also without
        // redundancy (where the state then says the array failed).
        if self.fail_member(role, sector, true) && redundant {
            Disposition::Absorbed
        } else {
            Disposition::Fail
        }
    }

    fn capacity(&self) -> &Capacity {
        &self.capacity
    }
}
