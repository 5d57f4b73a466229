//! A reshape of a running array (sysfs `reshape`): asked for and made
//! ready by the writer of the knob, put in effect by the array thread with
//! the disk's queue frozen.
//!
//! Everything that can be refused is refused by the writer, before anything
//! is written: the core's parse and plan ([`plan_reshape`]: a settled array,
//! a supported pair, added devices large enough, every unit planned), no
//! rebuild, resync or scrub running, the added devices opened exclusively
//! and not the array's already. Every allocation the reshape needs (the new
//! layouts, bitmap and identities, raid5 buffers) is made there as well, so
//! that nothing is allocated while host I/O is held.
//!
//! The array thread, which alone keeps the superblocks of a settled array,
//! takes the request ([`Mailbox::take`]) and, with the queue frozen (no host
//! request in flight, none starting), writes the superblocks that start the
//! reshape ([`start_reshape`]: the added devices checked for a superblock
//! first, and every superblock flushed); only then does it switch the array
//! to them (see `Array::put_reshape_in_effect`). Requests that waited at the
//! frozen queue are routed by the reshape's view from the first.

use crate::{
    bitmap::Bitmap,
    host::Shape,
    members::{Members, Slot, Who},
    moved_map::MovedMap,
    raidmig_core::{
        config::{self, ReshapeSpec},
        engine::{IoError, MemberIo},
        format::Superblock,
        health::Condition,
        layout::{Geometry, Level},
        lifecycle::{self, UNIT_SECTORS},
        members::ArrayMembers,
        moved,
        plan::Migration,
        reshape::{plan_reshape, ReshapeError, ReshapeRequest},
        route::View,
    },
    stripes::Stripes,
    sys::{
        iobuf::{IoBuf, Region},
        member::Member,
        shim,
    },
};
use core::sync::atomic::AtomicU64;
use kernel::{
    bindings, fmt, new_condvar, new_mutex,
    prelude::*,
    str::CString,
    sync::{CondVar, CondVarTimeoutResult, Mutex},
    time::msecs_to_jiffies,
};

/// How long the writer of the knob waits for the array thread to take its
/// request (the thread looks between upkeep steps, at least once a second).
const TAKE_WAIT_MS: u32 = 30_000;

/// A reshape checked and made ready for the array thread.
pub(crate) struct Prepared {
    /// The superblock the plan was made from: the thread starts the
    /// reshape only if it is still the newest.
    pub(crate) newest: Superblock,
    pub(crate) plan: Migration,
    /// The devices added, opened, in the roles after the members.
    pub(crate) added: KVec<KBox<Slot>>,
    /// The identities of every member after the reshape.
    pub(crate) identity: Pin<KBox<ArrayMembers>>,
    /// The layouts requests are routed by during the reshape.
    pub(crate) shape: Pin<KBox<Shape>>,
    /// The write-intent bitmap over the new capacity.
    pub(crate) bitmap: Pin<KBox<Bitmap>>,
    /// raid5 buffers for the new layout (none when the current ones serve).
    pub(crate) buffers: KVec<IoBuf>,
    /// Whether every member takes discards, the added ones included (see
    /// `host::set_layout_limits`).
    pub(crate) members_discard: bool,
    /// The moved-unit map of the reshape, its new layout in effect at once
    /// (empty where its units are more than a map holds).
    pub(crate) moved: Pin<KBox<MovedMap>>,
}

/// What the array needs to be checked against.
pub(crate) struct Current<'a> {
    pub(crate) members: &'a Members,
    /// The array's layout.
    pub(crate) layout: Geometry,
    /// The settled array's newest superblock (`None` while migrating).
    pub(crate) newest: Option<Superblock>,
    /// Why the array cannot be reshaped now, if it cannot (a resync or
    /// scrub running).
    pub(crate) busy: Option<&'static str>,
    /// How the array stands with its members.
    pub(crate) condition: Condition,
}

fn refused(name: &CStr, e: ReshapeError) -> Error {
    pr_err!("{}: reshape refused: {}\n", name, e.message());
    match e {
        ReshapeError::NotSettled(_) | ReshapeError::Degraded | ReshapeError::Rebuilding => EBUSY,
        ReshapeError::TooSmall { .. } => ENOSPC,
        _ => EINVAL,
    }
}

/// Checks the reshape `spec` asks of the array `cur`, opens the devices it
/// adds and allocates what it needs. Refusals are told in dmesg with the
/// errno returned; nothing is written.
pub(crate) fn prepare(cur: &Current<'_>, spec: &ReshapeSpec<'_>) -> Result<KBox<Prepared>> {
    let members = cur.members;
    let name = members.name();
    if let Some(why) = cur.busy {
        pr_err!("{}: reshape refused: {}\n", name, why);
        return Err(EBUSY);
    }
    let Some(newest) = cur.newest else {
        return Err(refused(name, ReshapeError::NotSettled(crate::raidmig_core::format::ArrayState::Migrating)));
    };
    if cur.condition != Condition::Optimal || !members.health().out_of_sync().is_empty() {
        return Err(refused(name, ReshapeError::Degraded));
    }
    if members.health().rebuild.is_some() {
        return Err(refused(name, ReshapeError::Rebuilding));
    }
    if !members.can_reshape() {
        pr_err!("{}: reshape refused: {} reshapes were started since the load: unload and load the array first\n", name, crate::members::RESHAPES_PER_LOAD);
        return Err(EBUSY);
    }
    let n = cur.layout.members();
    let paths = spec.added();
    let request = ReshapeRequest::new(&cur.layout, spec.level, paths.len(), spec.chunk_sectors);

    // The added devices, opened exclusively: in use elsewhere (mounted, an
    // md member) is refused by the open.
    let block = (0..n).filter_map(|r| members.dev(r)).map(Member::logical_block_size).max().unwrap_or(512);
    let mut added: KVec<KBox<Slot>> = KVec::with_capacity(paths.len(), GFP_KERNEL)?;
    for path in paths {
        let cpath = CString::try_from_fmt(fmt!("{}", path))?;
        let dev = Member::open(&cpath).inspect_err(|e| {
            pr_err!("{}: reshape refused: cannot open {} exclusively: {:?}\n", name, path, e);
        })?;
        if members.holds_device(dev.dev()) || added.iter().any(|s| s.dev.dev() == dev.dev()) {
            pr_err!("{}: reshape refused: {} is a member or spare of this array already, or given twice\n", name, path);
            return Err(EEXIST);
        }
        if dev.logical_block_size() > block {
            pr_err!(
                "{}: reshape refused: {} has {}-byte logical blocks, larger than the array's {} bytes\n",
                name,
                path,
                dev.logical_block_size(),
                block
            );
            return Err(EINVAL);
        }
        let device_sectors = dev.sectors();
        added.push(KBox::new(Slot { dev, path: cpath, uuid: shim::random_uuid(), device_sectors }, GFP_KERNEL)?, GFP_KERNEL)?;
    }
    let mut sizes = [0u64; crate::raidmig_core::layout::MAX_MEMBERS];
    for (s, a) in sizes.iter_mut().zip(added.iter()) {
        *s = a.device_sectors;
    }
    let stripe = Geometry::new(request.level, n + paths.len(), request.chunk_sectors, cur.layout.member_sectors())
        .map_or(1, |g| g.stripe_sectors());
    let unit_stripes = lifecycle::unit_stripes(stripe, UNIT_SECTORS);
    let plan = match plan_reshape(&newest, request, &sizes[..added.len()], unit_stripes) {
        Ok(plan) => plan,
        Err(ReshapeError::TooSmall { device }) => {
            let path = paths.get(device).copied().unwrap_or("?");
            pr_err!("{}: reshape refused: {}: {}\n", name, path, ReshapeError::TooSmall { device }.message());
            return Err(ENOSPC);
        }
        Err(e) => return Err(refused(name, e)),
    };

    let mut identity = members.identity();
    identity.count = n + added.len();
    for (i, a) in added.iter().enumerate() {
        identity.uuids[n + i] = a.uuid;
        identity.device_sectors[n + i] = a.device_sectors;
    }
    let target = plan.target();
    let shape = KBox::pin(Shape { source: plan.source(), target }, GFP_KERNEL)?;
    let bitmap = KBox::pin_init(Bitmap::new(&target, newest.bitmap_region, None)?, GFP_KERNEL)?;
    // raid5 buffers sized for the new member count (the source's, if raid5,
    // has fewer members: a reshape never drops one).
    let buffers = match target.level() {
        Level::Raid5 => Stripes::buffers(Some(target.members()))?,
        _ => KVec::new(),
    };
    let members_discard = (0..n).filter_map(|r| members.dev(r)).all(Member::supports_discard)
        && added.iter().all(|s| s.dev.supports_discard());
    let moved = match plan.units() <= moved::MAX_UNITS {
        true => MovedMap::new(plan.units())?,
        false => MovedMap::empty(),
    };
    let identity = KBox::pin(identity, GFP_KERNEL)?;
    let moved = KBox::pin(moved, GFP_KERNEL)?;
    Ok(KBox::new(
        Prepared { newest, plan, added, identity, shape, bitmap, buffers, members_discard, moved },
        GFP_KERNEL,
    )?)
}

/// Parses a write to the knob (refusals told in dmesg).
pub(crate) fn parse<'a>(name: &CStr, input: &'a [u8]) -> Result<ReshapeSpec<'a>> {
    config::parse_reshape(input).map_err(|e| {
        pr_err!("{}: {}\n", name, e.message());
        EINVAL
    })
}

/// Where a request waits for the array thread, and its outcome.
enum State {
    Empty,
    Waiting(KBox<Prepared>),
    Taken,
    Done(Result),
}

/// The request of a reshape handed from the knob's writer to the array
/// thread, one at a time.
#[pin_data]
pub(crate) struct Mailbox {
    #[pin]
    state: Mutex<State>,
    #[pin]
    changed: CondVar,
}

impl Mailbox {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Mailbox { state <- new_mutex!(State::Empty), changed <- new_condvar!() })
    }

    /// Hands `p` to the array thread (woken by `wake`) and waits for the
    /// outcome. `EBUSY` if another reshape request is under way, or if the
    /// thread did not take it within 30 s (then withdrawn, as on a signal:
    /// `EINTR`); once taken, the outcome is waited for.
    pub(crate) fn post(&self, name: &CStr, p: KBox<Prepared>, wake: impl Fn()) -> Result {
        let mut s = self.state.lock();
        if !matches!(*s, State::Empty) {
            pr_err!("{}: reshape refused: another reshape request is being started\n", name);
            return Err(EBUSY);
        }
        *s = State::Waiting(p);
        wake();
        let mut waited_ms = 0u32;
        loop {
            match &*s {
                State::Done(_) => break,
                // Taken: the thread ends it within the freeze's bound.
                State::Taken => {
                    self.changed.wait(&mut s);
                    continue;
                }
                State::Waiting(_) if waited_ms >= TAKE_WAIT_MS => {
                    *s = State::Empty;
                    pr_err!("{}: reshape not started: the array thread did not take it\n", name);
                    return Err(EBUSY);
                }
                _ => {}
            }
            match self.changed.wait_interruptible_timeout(&mut s, msecs_to_jiffies(1000)) {
                CondVarTimeoutResult::Signal { .. } if matches!(*s, State::Waiting(_)) => {
                    // Not taken yet: withdrawn, nothing was written.
                    *s = State::Empty;
                    return Err(EINTR);
                }
                CondVarTimeoutResult::Timeout => waited_ms += 1000,
                _ => {}
            }
        }
        match core::mem::replace(&mut *s, State::Empty) {
            State::Done(r) => r,
            _ => Err(EINVAL),
        }
    }

    /// The array thread's side: the request waiting, if any.
    pub(crate) fn take(&self) -> Option<KBox<Prepared>> {
        let mut s = self.state.lock();
        match core::mem::replace(&mut *s, State::Taken) {
            State::Waiting(p) => Some(p),
            other => {
                *s = other;
                None
            }
        }
    }

    /// The array thread stops (unload): a request still waiting is refused
    /// at once (`ENODEV`) rather than after the writer's wait.
    pub(crate) fn cancel(&self) {
        let mut s = self.state.lock();
        if matches!(*s, State::Waiting(_)) {
            *s = State::Done(Err(ENODEV));
            self.changed.notify_all();
        }
    }

    /// The array thread's side: the outcome of the request it took.
    pub(crate) fn finish(&self, r: Result) {
        *self.state.lock() = State::Done(r);
        self.changed.notify_all();
    }
}

/// Member I/O by role for the start of a reshape: the members' own, and
/// the added devices (roles from `n` on), which are not members yet.
pub(crate) struct StartIo<'a> {
    pub(crate) members: &'a Members,
    pub(crate) added: &'a [KBox<Slot>],
    pub(crate) n: usize,
    pub(crate) region: Region<'a>,
    /// The reshape's moved-unit map, allocated beforehand.
    pub(crate) moved: &'a MovedMap,
}

impl StartIo<'_> {
    fn added(&self, role: usize) -> Result<&Member, IoError> {
        let e = IoError { member: role, errno: -(bindings::EINVAL as i32) };
        role.checked_sub(self.n).and_then(|i| self.added.get(i)).map(|s| &s.dev).ok_or(e)
    }

    fn error(&self, role: usize, sector: u64, e: Error) -> IoError {
        let path = role.checked_sub(self.n).and_then(|i| self.added.get(i)).map_or(self.members.path(role), |s| &s.path);
        pr_err!("{}: reshape: I/O error {} on {} at sector {}\n", self.members.name(), e.to_errno(), path, sector);
        IoError { member: role, errno: e.to_errno() }
    }
}

impl MemberIo for StartIo<'_> {
    fn read(&mut self, role: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if role < self.n {
            return self.members.read(Who::Migration, &self.region, role, sector, buf);
        }
        let dev = self.added(role)?;
        self.region.read(self.members.bioset(), dev, sector, buf).map_err(|e| self.error(role, sector, e))
    }

    fn write(&mut self, role: usize, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if role < self.n {
            return self.members.write(Who::Migration, &self.region, role, 0, sector, buf);
        }
        let dev = self.added(role)?;
        self.region.write(self.members.bioset(), dev, 0, sector, buf).map_err(|e| self.error(role, sector, e))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.members.flush_all(Who::Migration)?;
        for (i, s) in self.added.iter().enumerate() {
            self.members.bioset().sync_flush(&s.dev).map_err(|e| self.error(self.n + i, 0, e))?;
        }
        Ok(())
    }

    /// The queue is frozen: no host request to tell.
    fn publish(&mut self, _view: &View) {}

    fn checkpoint_requested(&mut self) -> bool {
        false
    }

    fn xor_into(&mut self, dst: &mut [u8], src: &[u8]) {
        shim::xor_into(dst, src)
    }

    fn moved_map(&self) -> &[AtomicU64] {
        self.moved.words()
    }

    /// Nothing is allocated with the queue frozen: the map was, when the
    /// reshape was made ready (new, so clear).
    fn prepare_moved(&mut self, units: u64) -> bool {
        self.moved.holds(units)
    }
}
