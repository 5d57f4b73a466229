//! The members of a running array, by role: the devices, their paths, the
//! identities recorded in their superblocks, the bio pool, and what goes
//! wrong on them, told in dmesg with the member's path and the sector.
//!
//! A role may have no device (assembled without it) and a member may fail
//! while the array runs: failed roles are marked here from any context
//! ([`Members::fail`]), never get I/O again, and the array thread records
//! them in the superblocks of the others ([`Members::set_recorded`]); a
//! write that saw a member fail ends only once that record is durable
//! ([`Members::wait_recorded`]), so that no acknowledged write relies on a
//! member the next assembly could trust.
//!
//! Messages about host I/O errors are rate-limited (a failing disk would
//! otherwise flood the log from interrupt context); the migration's own
//! errors are rare and always told.

use crate::{
    raidmig_core::{
        engine::{IoError, Transfer, ZeroRange},
        format::Rebuild,
        health::{Health, Roles},
        layout::MAX_MEMBERS,
        members::ArrayMembers,
    },
    sys::{
        bio::{zero_out_all, BioSet},
        iobuf::Region,
        member::Member,
        once::{Latest, Once},
        time,
    },
};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    bindings, new_condvar, new_mutex,
    prelude::*,
    str::CString,
    sync::{CondVar, Mutex},
};

/// Devices a role can have over one load: the one it was loaded with, then
/// replacements.
pub(crate) const SLOTS: usize = 4;

/// Reshapes one load can start: each gives the members a new identity
/// (and the array new layouts), every version kept until the unload (see
/// [`Latest`]).
pub(crate) const RESHAPES_PER_LOAD: usize = 8;

/// No role is being rebuilt.
const NO_REBUILD: u32 = u32::MAX;

/// Failed member reads waiting for the array thread to correct them; more
/// at once make the member suspect instead (it is probed).
const BAD_READS: usize = 16;

/// Corrected read errors after which a member is failed (md's
/// `max_corr_read_errors`).
pub(crate) const MAX_CORRECTED_READS: u32 = 20;

/// A device holding a role, and the identity its superblock carries.
pub(crate) struct Slot {
    /// The device.
    pub(crate) dev: Member,
    /// Its path, for messages.
    pub(crate) path: CString,
    /// Its member UUID.
    pub(crate) uuid: [u8; 16],
    /// Its size in sectors (locates its tail).
    pub(crate) device_sectors: u64,
}

/// What goes wrong on the members, counted from any context.
struct Troubles {
    /// Host I/O error messages: the window's start, printed and suppressed.
    window_start_ms: AtomicU64,
    printed: AtomicU32,
    suppressed: AtomicU32,
    /// Roles whose reads failed since the array thread last probed them.
    suspects: AtomicU32,
    /// Failed member reads to correct: `(role + 1) << 56 | sector`, 0 free.
    bad_reads: [AtomicU64; BAD_READS],
    /// Read errors corrected since the load, by role.
    corrected: [AtomicU32; MAX_MEMBERS],
}

/// What the superblocks record of failed roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recorded {
    /// Roles recorded faulty, durably.
    roles: Roles,
    /// No record is possible any more (no member left to write it to):
    /// writes waiting for one fail.
    broken: bool,
}

/// Whose synchronous member I/O it is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// A host request (a raid5 write): rate-limited messages.
    Host,
    /// The migration thread.
    Migration,
}

/// Host I/O error messages allowed per window.
const MESSAGES_PER_WINDOW: u32 = 10;
/// The window, in milliseconds.
const WINDOW_MS: u64 = 5000;

/// The members of an array.
#[pin_data]
pub(crate) struct Members {
    name: CString,
    /// Each role's devices, for every role an array can have (a reshape
    /// adds roles while the array runs): the last one set is the role's.
    roles: KVec<[Once<Slot>; SLOTS]>,
    /// The identities recorded at load, or by the reshape since (those of
    /// roles without a device stay as recorded), with the member count.
    base: Latest<ArrayMembers, RESHAPES_PER_LOAD>,
    /// The role being rebuilt (`NO_REBUILD`: none) and its position.
    rebuild_role: AtomicU32,
    rebuild_pos: AtomicU64,
    #[pin]
    bioset: BioSet,
    /// Failed roles (bit per role): a superset of what is recorded.
    failed: AtomicU32,
    /// Error messages and read errors, counted from any context.
    t: Troubles,
    #[pin]
    recorded: Mutex<Recorded>,
    #[pin]
    recorded_changed: CondVar,
    /// Hot spares: devices added while no role needed one, kept open until
    /// a member fails.
    #[pin]
    spares: Mutex<KVec<Option<KBox<Slot>>>>,
    /// Faulty roles whose device is to be released (sysfs `remove`), by the
    /// array thread.
    removals: AtomicU32,
    /// The device each removal is for.
    removal_devs: [AtomicU32; MAX_MEMBERS],
    /// The rebuild under way is a re-add (only dirty regions are copied).
    readd: AtomicBool,
}

impl Members {
    /// The array `name` over `devs` with their `paths`, in role order (a
    /// role assembled without its device has none), with the identities of
    /// `identity`, and the health the superblocks record.
    pub(crate) fn new(
        name: CString,
        devs: KVec<Option<Member>>,
        paths: KVec<CString>,
        identity: ArrayMembers,
        health: Health,
    ) -> Result<impl PinInit<Self, Error>> {
        let mut roles = KVec::with_capacity(MAX_MEMBERS, GFP_KERNEL)?;
        for (role, (dev, path)) in devs.into_iter().zip(paths).enumerate() {
            let slots: [Once<Slot>; SLOTS] = [const { Once::new() }; SLOTS];
            if let Some(dev) = dev {
                let slot = Slot {
                    dev,
                    path,
                    uuid: identity.uuids[role],
                    device_sectors: identity.device_sectors[role],
                };
                let _ = slots[0].set(KBox::new(slot, GFP_KERNEL)?);
            }
            roles.push(slots, GFP_KERNEL)?;
        }
        while roles.len() < MAX_MEMBERS {
            roles.push([const { Once::new() }; SLOTS], GFP_KERNEL)?;
        }
        let base = Latest::new(KBox::pin(identity, GFP_KERNEL)?);
        let failed_roles = health.failed;
        let (rebuild_role, rebuild_pos) = health.rebuild.map_or((NO_REBUILD, 0), |r| (r.role as u32, r.position));
        Ok(try_pin_init!(Members {
            name,
            roles,
            base,
            rebuild_role: AtomicU32::new(rebuild_role),
            rebuild_pos: AtomicU64::new(rebuild_pos),
            bioset <- BioSet::new(),
            failed: AtomicU32::new(failed_roles.0),
            t: Troubles {
                window_start_ms: AtomicU64::new(0),
                printed: AtomicU32::new(0),
                suppressed: AtomicU32::new(0),
                suspects: AtomicU32::new(0),
                bad_reads: [const { AtomicU64::new(0) }; BAD_READS],
                corrected: [const { AtomicU32::new(0) }; MAX_MEMBERS],
            },
            recorded <- new_mutex!(Recorded { roles: failed_roles, broken: false }),
            recorded_changed <- new_condvar!(),
            spares <- new_mutex!(KVec::new()),
            removals: AtomicU32::new(0),
            removal_devs: [const { AtomicU32::new(0) }; MAX_MEMBERS],
            readd: AtomicBool::new(false),
        }))
    }

    /// The role's device and identity, if it has one.
    pub(crate) fn slot(&self, role: usize) -> Option<&Slot> {
        self.roles.get(role)?.iter().rev().find_map(Once::get)
    }

    /// Gives role `role` the device of `slot` (a replacement, to be
    /// rebuilt); refused when the role had too many devices this load.
    pub(crate) fn replace(&self, role: usize, slot: KBox<Slot>) -> Result<(), KBox<Slot>> {
        let Some(slots) = self.roles.get(role) else { return Err(slot) };
        let Some(free) = slots.iter().position(|s| s.get().is_none()) else { return Err(slot) };
        slots[free].set(slot)
    }

    /// Keeps `slot` as a hot spare.
    pub(crate) fn add_spare(&self, slot: KBox<Slot>) -> Result {
        let mut spares = self.spares.lock();
        match spares.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(slot),
            None => spares.push(Some(slot), GFP_KERNEL).map_err(|_| ENOMEM)?,
        }
        Ok(())
    }

    /// Takes a hot spare, if there is one.
    pub(crate) fn take_spare(&self) -> Option<KBox<Slot>> {
        self.spares.lock().iter_mut().find_map(Option::take)
    }

    /// Whether the device numbered `dev` is a member (any slot not
    /// released: a replaced device stays held until the unload) or a spare.
    pub(crate) fn holds_device(&self, dev: u32) -> bool {
        let held = |s: &Slot| s.dev.dev() == dev && !s.dev.released();
        self.roles.iter().any(|slots| slots.iter().filter_map(Once::get).any(held))
            || self.spares.lock().iter().flatten().any(|s| s.dev.dev() == dev)
    }

    /// The role one of whose devices (not released) is the one numbered
    /// `dev`, and whether it is the role's current device (else a replacement
    /// took over from it).
    pub(crate) fn role_of_device(&self, dev: u32) -> Option<(usize, bool)> {
        let held = |s: &Slot| s.dev.dev() == dev && !s.dev.released();
        (0..self.roles.len()).find_map(|role| {
            let current = self.slot(role).is_some_and(held);
            (current || self.roles[role].iter().filter_map(Once::get).any(held)).then_some((role, current))
        })
    }

    /// Drops the hot spare numbered `dev`, releasing its device; returns
    /// whether there was one (no I/O ever goes to a spare).
    pub(crate) fn remove_spare(&self, dev: u32) -> bool {
        let mut spares = self.spares.lock();
        match spares.iter_mut().find(|s| s.as_ref().is_some_and(|s| s.dev.dev() == dev)) {
            Some(s) => {
                drop(s.take());
                true
            }
            None => false,
        }
    }

    /// Asks the array thread to release device `dev` of role `role` (its
    /// faulty current device, or one a replacement took over from).
    pub(crate) fn request_removal(&self, role: usize, dev: u32) {
        if let Some(d) = self.removal_devs.get(role) {
            d.store(dev, Ordering::Release);
            self.removals.fetch_or(Roles::one(role).0, Ordering::AcqRel);
        }
    }

    /// The removals asked for, taken: roles and devices.
    pub(crate) fn take_removals(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let roles = Roles(self.removals.swap(0, Ordering::AcqRel));
        roles.iter().map(|role| (role, self.removal_devs[role].load(Ordering::Acquire)))
    }

    /// The device number of role `role`'s current device, if it has one
    /// not released.
    pub(crate) fn current_device(&self, role: usize) -> Option<u32> {
        self.slot(role).filter(|s| !s.dev.released()).map(|s| s.dev.dev())
    }

    /// Whether device `dev` is one of the array's and released (or not
    /// there at all).
    pub(crate) fn device_released(&self, dev: u32) -> bool {
        self.role_of_device(dev).is_none()
    }

    /// Releases device `dev` of role `role`: the array thread's, once the
    /// role's failure is recorded and every host request started before it
    /// failed has ended. Returns whether it did.
    pub(crate) fn release(&self, role: usize, dev: u32) -> bool {
        let Some(slots) = self.roles.get(role) else { return false };
        let current = self.slot(role).map(|s| s as *const Slot);
        let Some(s) = slots.iter().filter_map(Once::get).find(|s| s.dev.dev() == dev && !s.dev.released()) else {
            return false;
        };
        if current == Some(s as *const Slot) && !self.failed().contains(role) {
            return false;
        }
        // SAFETY: the device is out of use: either the role's current one
        // with the role failed (`dev()` no longer hands it out, and a failed
        // role leaves the failed set only with a new device, `replace` then
        // `start_rebuild`, which `slot` then returns), or an earlier one a
        // replacement took over from (never handed out again). The caller,
        // the array thread, holds no I/O of its own on it and waited for
        // every host request started before it went out of use to end (host
        // bios end before their request). What reads a released slot
        // afterwards uses only its device number and path.
        unsafe { s.dev.release() };
        true
    }

    /// The paths of the hot spares, for sysfs.
    pub(crate) fn for_each_spare(&self, mut f: impl FnMut(&CStr)) {
        for s in self.spares.lock().iter().flatten() {
            f(&s.path);
        }
    }

    /// What is not in sync: failed roles, and the role being rebuilt.
    pub(crate) fn health(&self) -> Health {
        // Failed first: a rebuild is published before its role leaves the
        // failed set (see `start_rebuild`), so a role is never seen in sync
        // on its way from failed to rebuilding.
        let failed = self.failed();
        let role = self.rebuild_role.load(Ordering::Acquire);
        let rebuild = (role != NO_REBUILD)
            .then(|| Rebuild { role: role as usize, position: self.rebuild_pos.load(Ordering::Acquire) });
        Health { failed, rebuild: rebuild.filter(|r| !failed.contains(r.role)) }
    }

    /// Role `role`, failed, is now rebuilt from the start onto its device.
    pub(crate) fn start_rebuild(&self, role: usize) {
        self.begin_rebuild(role, false);
    }

    /// Publishes the rebuild of failed role `role` (a re-add or not) before
    /// the role leaves the failed set.
    fn begin_rebuild(&self, role: usize, readd: bool) {
        self.readd.store(readd, Ordering::Release);
        self.rebuild_pos.store(0, Ordering::Release);
        self.rebuild_role.store(role as u32, Ordering::Release);
        self.failed.fetch_and(!Roles::one(role).0, Ordering::AcqRel);
    }

    /// The role being rebuilt is in sync below `position`.
    pub(crate) fn set_rebuild_position(&self, position: u64) {
        self.rebuild_pos.store(position, Ordering::Release);
    }

    /// Role `role`, failed, gets its own former device back: rebuilt from
    /// the start, but only where the bitmap marks writes since it left.
    pub(crate) fn start_readd(&self, role: usize) {
        self.begin_rebuild(role, true);
    }

    /// Whether the rebuild under way is a re-add.
    pub(crate) fn readd(&self) -> bool {
        self.readd.load(Ordering::Acquire)
    }

    /// The rebuild ended: its role is in sync everywhere (`done`), or it
    /// failed (then the role is in the failed set already).
    pub(crate) fn end_rebuild(&self) {
        self.readd.store(false, Ordering::Release);
        self.rebuild_role.store(NO_REBUILD, Ordering::Release);
    }

    /// Failed roles (recorded or not yet).
    pub(crate) fn failed(&self) -> Roles {
        Roles(self.failed.load(Ordering::Acquire))
    }

    /// Fails role `role` (any context); returns whether it was in sync until
    /// now. The caller tells why and wakes the array thread to record it.
    pub(crate) fn fail(&self, role: usize) -> bool {
        let bit = Roles::one(role).0;
        self.failed.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// A read of role `role` failed (any context): the array thread probes
    /// the member.
    pub(crate) fn suspect(&self, role: usize) {
        self.t.suspects.fetch_or(Roles::one(role).0, Ordering::AcqRel);
    }

    /// A read of `sector` of role `role` failed and was served from the
    /// redundancy (any context): queued for the array thread to rewrite
    /// from the others; with the queue full, the member is probed instead.
    pub(crate) fn bad_read(&self, role: usize, sector: u64) {
        let entry = ((role as u64 + 1) << 56) | (sector & ((1 << 56) - 1));
        if !self.t.bad_reads.iter().any(|slot| slot.compare_exchange(0, entry, Ordering::AcqRel, Ordering::Relaxed).is_ok()) {
            self.suspect(role);
        }
    }

    /// Takes one failed read to correct: its role and member sector.
    pub(crate) fn take_bad_read(&self) -> Option<(usize, u64)> {
        self.t.bad_reads.iter().find_map(|slot| {
            let e = slot.swap(0, Ordering::AcqRel);
            (e != 0).then(|| (((e >> 56) - 1) as usize, e & ((1 << 56) - 1)))
        })
    }

    /// Counts a corrected read error of role `role`; returns the count.
    pub(crate) fn corrected(&self, role: usize) -> u32 {
        self.t.corrected.get(role).map_or(0, |c| c.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Takes the roles to probe.
    pub(crate) fn take_suspects(&self) -> Roles {
        Roles(self.t.suspects.swap(0, Ordering::AcqRel)).minus(self.failed())
    }

    /// Roles durably recorded faulty.
    pub(crate) fn recorded(&self) -> Roles {
        self.recorded.lock().roles
    }

    /// The array thread recorded `roles` faulty (durably), or found that no
    /// record is possible any more (`broken`): wakes the writes waiting.
    pub(crate) fn set_recorded(&self, roles: Roles, broken: bool) {
        *self.recorded.lock() = Recorded { roles, broken };
        self.recorded_changed.notify_all();
    }

    /// Waits until every failed role is recorded; false if it cannot be.
    pub(crate) fn wait_recorded(&self) -> bool {
        let mut r = self.recorded.lock();
        loop {
            if r.broken {
                return false;
            }
            if self.failed().minus(r.roles).is_empty() {
                return true;
            }
            self.recorded_changed.wait(&mut r);
        }
    }

    /// The array's name, for messages.
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// Number of members.
    pub(crate) fn count(&self) -> usize {
        self.base.get().count
    }

    /// Gives role `role`, past the members, the device of `slot` (a
    /// member a reshape adds; the role counts once [`Members::set_identity`]
    /// says so). Refused for a role that has a device.
    pub(crate) fn add_role(&self, role: usize, slot: KBox<Slot>) -> Result<(), KBox<Slot>> {
        match self.roles.get(role) {
            Some(slots) if role >= self.count() && self.slot(role).is_none() => slots[0].set(slot),
            _ => Err(slot),
        }
    }

    /// Whether the members can take another identity this load.
    pub(crate) fn can_reshape(&self) -> bool {
        self.base.room()
    }

    /// The identities a reshape records (the members it adds included):
    /// from now on the array has `id.count` members.
    pub(crate) fn set_identity(&self, id: Pin<KBox<ArrayMembers>>) -> Result {
        self.base.set(id).map_err(|_| EBUSY)
    }

    /// The device of role `role`, unless the role has none or has failed
    /// (a role being rebuilt has its replacement).
    pub(crate) fn dev(&self, role: usize) -> Option<&Member> {
        if self.failed().contains(role) {
            return None;
        }
        self.slot(role).map(|s| &s.dev)
    }

    /// Roles with a device that has not failed, and their devices.
    pub(crate) fn in_sync(&self) -> impl Iterator<Item = (usize, &Member)> {
        (0..self.count()).filter_map(|role| self.dev(role).map(|d| (role, d)))
    }

    /// The path of the member of role `role` (`missing` without a device,
    /// `removed` once released).
    pub(crate) fn path(&self, role: usize) -> &CStr {
        match self.slot(role) {
            None => kernel::c_str!("missing"),
            Some(s) if s.dev.released() => kernel::c_str!("removed"),
            Some(s) => &s.path,
        }
    }

    /// Identities recorded in the superblocks.
    pub(crate) fn identity(&self) -> ArrayMembers {
        let mut id = *self.base.get();
        for role in 0..id.count {
            if let Some(s) = self.slot(role) {
                id.uuids[role] = s.uuid;
                id.device_sectors[role] = s.device_sectors;
            }
        }
        id
    }

    /// Each member's device size (which locates its reserved tail), by role.
    pub(crate) fn device_sectors(&self) -> [u64; MAX_MEMBERS] {
        self.identity().device_sectors
    }

    /// The bio pool.
    pub(crate) fn bioset(&self) -> &BioSet {
        &self.bioset
    }

    /// Host I/O to logical `[start, start + sectors)` failed because no
    /// member in sync holds it: one rate-limited line.
    pub(crate) fn lost(&self, start: u64, sectors: u64) {
        if self.may_tell() {
            pr_err!(
                "{}: I/O to sectors {}..{} failed: no member in sync holds them\n",
                &*self.name,
                start,
                start + sectors
            );
        }
    }

    /// A host request's member bio failed (any context): one rate-limited
    /// line naming the member and the sector.
    pub(crate) fn host_error(&self, role: usize, sector: u64, write: bool, errno: i32) {
        if self.may_tell() {
            self.tell_error("", role, sector, write, errno);
        }
    }

    /// Whether a rate-limited host I/O message may be printed now.
    fn may_tell(&self) -> bool {
        let now = time::now().mono_ms;
        let start = self.t.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW_MS
            && self.t.window_start_ms.compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.t.printed.store(0, Ordering::Relaxed);
            let lost = self.t.suppressed.swap(0, Ordering::Relaxed);
            if lost > 0 {
                pr_err!("{}: {} more member I/O error messages suppressed\n", &*self.name, lost);
            }
        }
        if self.t.printed.fetch_add(1, Ordering::Relaxed) >= MESSAGES_PER_WINDOW {
            self.t.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// One line for a member I/O error: what failed (`what`: "" for host
    /// I/O, "migration " for the migration's), the member and the sector.
    fn tell_error(&self, what: &str, role: usize, sector: u64, write: bool, errno: i32) {
        pr_err!(
            "{}: {}{} error {} on member {} (role {}) at sector {}\n",
            &*self.name,
            what,
            if write { "write" } else { "read" },
            errno,
            self.path(role),
            role,
            sector
        );
    }

    /// An error of synchronous member I/O, told and turned into the core's
    /// error.
    fn sync_error(&self, who: Who, write: bool, role: usize, sector: u64, e: Error) -> IoError {
        let errno = e.to_errno();
        match who {
            Who::Host => self.host_error(role, sector, write, errno),
            Who::Migration => self.tell_error("migration ", role, sector, write, errno),
        }
        IoError { member: role, errno }
    }

    /// Reads `buf` (a slice of `region`'s buffer) at `sector` of member
    /// `role`, waiting; an error is told as one of `who`.
    pub(crate) fn read(
        &self,
        who: Who,
        region: &Region<'_>,
        role: usize,
        sector: u64,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        let dev = self.dev(role).ok_or(IoError { member: role, errno: -(bindings::EIO as i32) })?;
        region.read(&self.bioset, dev, sector, buf).map_err(|e| self.sync_error(who, false, role, sector, e))
    }

    /// Writes `buf` (a slice of `region`'s buffer) at `sector` of member
    /// `role` with extra flags `opf_flags`, waiting.
    pub(crate) fn write(
        &self,
        who: Who,
        region: &Region<'_>,
        role: usize,
        opf_flags: bindings::blk_opf_t,
        sector: u64,
        buf: &[u8],
    ) -> Result<(), IoError> {
        let dev = self.dev(role).ok_or(IoError { member: role, errno: -(bindings::EIO as i32) })?;
        region
            .write(&self.bioset, dev, opf_flags, sector, buf)
            .map_err(|e| self.sync_error(who, true, role, sector, e))
    }

    /// Zeroes `sectors` sectors at `sector` of `role` (see
    /// [`Member::zero_out`]), waiting; errors as [`Members::write`]'s.
    pub(crate) fn write_zeroes(&self, who: Who, role: usize, sector: u64, sectors: u64) -> Result<(), IoError> {
        let dev = self.dev(role).ok_or(IoError { member: role, errno: -(bindings::EIO as i32) })?;
        dev.zero_out(sector, sectors).map_err(|e| self.sync_error(who, true, role, sector, e))
    }

    /// Zeroes the ranges of `batch`, submitted together, waiting for all.
    /// Whether all of them succeeded: after a failure the caller zeroes
    /// them again one by one ([`Members::write_zeroes`]), which finds and
    /// tells the member that fails (or falls back to zero-page writes where
    /// a member's write-zeroes failed).
    pub(crate) fn write_zeroes_batch(&self, batch: &[ZeroRange]) -> bool {
        self.batch_devices(batch.iter().map(|z| z.member)).is_some_and(|devs| {
            zero_out_all(batch.iter().filter_map(|z| Some((devs[z.member]?, z.sector, z.sectors)))).is_ok()
        })
    }

    /// The devices of the roles of a batch, looked up once (a role may
    /// fail meanwhile: the batch then still has the device it started
    /// with), or `None` if one has none.
    fn batch_devices(&self, roles: impl Iterator<Item = usize>) -> Option<[Option<&Member>; MAX_MEMBERS]> {
        let mut devs = [None; MAX_MEMBERS];
        for role in roles {
            let d = devs.get_mut(role)?;
            if d.is_none() {
                *d = Some(self.dev(role)?);
            }
        }
        Some(devs)
    }

    /// Reads the transfers of `batch` into `buf` (a slice of `region`'s
    /// buffer), submitted together, waiting for all. Whether all of them
    /// succeeded: after a failure the caller does them again one by one
    /// ([`read`](Members::read)), which finds and tells the member that fails.
    pub(crate) fn read_batch(&self, region: &Region<'_>, buf: &mut [u8], batch: &[Transfer]) -> bool {
        self.batch_devices(batch.iter().map(|t| t.member)).is_some_and(|devs| {
            let ranges = batch.iter().filter_map(|t| Some((devs[t.member]?, t.sector, t.at, t.len)));
            region.read_batch(&self.bioset, buf, ranges).is_ok()
        })
    }

    /// Writes the transfers of `batch` from `buf`, as
    /// [`Members::read_batch`] reads them, with extra request flags
    /// `opf_flags` (such as FUA).
    pub(crate) fn write_batch(
        &self,
        region: &Region<'_>,
        opf_flags: bindings::blk_opf_t,
        buf: &[u8],
        batch: &[Transfer],
    ) -> bool {
        self.batch_devices(batch.iter().map(|t| t.member)).is_some_and(|devs| {
            let ranges = batch.iter().filter_map(|t| Some((devs[t.member]?, t.sector, t.at, t.len)));
            region.write_batch(&self.bioset, opf_flags, buf, ranges).is_ok()
        })
    }

    /// Writes the transfers of `writes` from `buf` and reads those of
    /// `reads` into it, as [`Members::read_batch`] and
    /// [`Members::write_batch`] do, all submitted together. Whether all of
    /// them succeeded.
    pub(crate) fn write_read_batch(&self, region: &Region<'_>, buf: &mut [u8], writes: &[Transfer], reads: &[Transfer]) -> bool {
        self.batch_devices(Iterator::chain(writes.iter(), reads).map(|t| t.member)).is_some_and(|devs| {
            let range = move |t: &Transfer| Some((devs[t.member]?, t.sector, t.at, t.len));
            region.write_read_batch(&self.bioset, buf, writes.iter().filter_map(range), reads.iter().filter_map(range)).is_ok()
        })
    }

    /// Flushes the volatile cache of every member in sync, waiting.
    pub(crate) fn flush_all(&self, who: Who) -> Result<(), IoError> {
        for (role, dev) in self.in_sync() {
            self.bioset.sync_flush(dev).map_err(|e| {
                pr_err!("{}: flush error {} on member {} (role {})\n", &*self.name, e.to_errno(), self.path(role), role);
                let _ = who;
                IoError { member: role, errno: e.to_errno() }
            })?;
        }
        Ok(())
    }
}

