//! The members of a running array, by role: the devices, their paths, the
//! identities recorded in their superblocks, the bio pool, and what goes
//! wrong on them, told in dmesg with the member's path and the sector.
//!
//! Messages about host I/O errors are rate-limited (a failing disk would
//! otherwise flood the log from interrupt context); the migration's own
//! errors are rare and always told.

use crate::{
    raidmig_core::{engine::IoError, layout::MAX_MEMBERS, members::ArrayMembers},
    sys::{bio::BioSet, iobuf::Region, member::Member, time},
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{bindings, prelude::*, str::CString};

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
    devs: KVec<Member>,
    paths: KVec<CString>,
    identity: ArrayMembers,
    #[pin]
    bioset: BioSet,
    window_start_ms: AtomicU64,
    printed: AtomicU32,
    suppressed: AtomicU32,
}

impl Members {
    /// The array `name` over `devs` with their `paths`, in role order, with
    /// the identities of `identity`.
    pub(crate) fn new(
        name: CString,
        devs: KVec<Member>,
        paths: KVec<CString>,
        identity: ArrayMembers,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Members {
            name,
            devs,
            paths,
            identity,
            bioset <- BioSet::new(),
            window_start_ms: AtomicU64::new(0),
            printed: AtomicU32::new(0),
            suppressed: AtomicU32::new(0),
        })
    }

    /// The array's name, for messages.
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// Number of members.
    pub(crate) fn count(&self) -> usize {
        self.devs.len()
    }

    /// The member of role `role`.
    pub(crate) fn dev(&self, role: usize) -> &Member {
        &self.devs[role]
    }

    /// All members, by role.
    pub(crate) fn devs(&self) -> &[Member] {
        &self.devs
    }

    /// The path of the member of role `role`.
    pub(crate) fn path(&self, role: usize) -> &CStr {
        self.paths.get(role).map_or(kernel::c_str!("?"), |p| &**p)
    }

    /// Identities recorded in the superblocks.
    pub(crate) fn identity(&self) -> &ArrayMembers {
        &self.identity
    }

    /// Each member's device size (which locates its reserved tail), by role.
    pub(crate) fn device_sectors(&self) -> &[u64; MAX_MEMBERS] {
        &self.identity.device_sectors
    }

    /// The bio pool.
    pub(crate) fn bioset(&self) -> &BioSet {
        &self.bioset
    }

    /// A host request's member bio failed (any context): one rate-limited
    /// line naming the member and the sector.
    pub(crate) fn host_error(&self, role: usize, sector: u64, write: bool, errno: i32) {
        let now = time::now().mono_ms;
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW_MS
            && self.window_start_ms.compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.printed.store(0, Ordering::Relaxed);
            let lost = self.suppressed.swap(0, Ordering::Relaxed);
            if lost > 0 {
                pr_err!("{}: {} more member I/O error messages suppressed\n", &*self.name, lost);
            }
        }
        if self.printed.fetch_add(1, Ordering::Relaxed) >= MESSAGES_PER_WINDOW {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.tell_error("", role, sector, write, errno);
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
        let dev = self.devs.get(role).ok_or(IoError { member: role, errno: -(bindings::EINVAL as i32) })?;
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
        let dev = self.devs.get(role).ok_or(IoError { member: role, errno: -(bindings::EINVAL as i32) })?;
        region
            .write(&self.bioset, dev, opf_flags, sector, buf)
            .map_err(|e| self.sync_error(who, true, role, sector, e))
    }

    /// Flushes every member's volatile cache, waiting.
    pub(crate) fn flush_all(&self, who: Who) -> Result<(), IoError> {
        for (role, dev) in self.devs.iter().enumerate() {
            self.bioset.sync_flush(dev).map_err(|e| {
                pr_err!("{}: flush error {} on member {} (role {})\n", &*self.name, e.to_errno(), self.path(role), role);
                let _ = who;
                IoError { member: role, errno: e.to_errno() }
            })?;
        }
        Ok(())
    }
}

