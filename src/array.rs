//! The array: its members, its layouts, and how a host request becomes
//! member I/O.
//!
//! A request is first cut by the migration's routing view (see
//! [`crate::coordination`]) into runs for the target layout and runs for the
//! source layout. Each run is then cut along that layout's chunks: reads go
//! to one copy, writes to every copy, each piece a clone of the host bio
//! pointed at the member that holds it; raid5 writes go through
//! [`crate::raid5_write`]. Flushes go to every member; discards and
//! write-zeroes become one range per member.

use crate::{
    bio::{self, BioSet},
    coordination::Coordinator,
    disk::RequestHandler,
    member::Member,
    migrator::{Migrator, Status},
    raid5_write::{self, StripeLocks},
    raidmig_core::{
        layout::{Geometry, Level},
        members::ArrayMembers,
        recovery::Recovered,
        route::{Route, Routed},
    },
    request::{DataBio, InFlight, Op, REQ_PREFLUSH},
    shim,
};
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::{bindings, prelude::*, str::CString};

/// A running array.
#[pin_data]
pub(crate) struct Array {
    name: CString,
    /// Members and their paths, by role.
    members: KVec<Member>,
    paths: KVec<CString>,
    identity: ArrayMembers,
    source: Geometry,
    target: Geometry,
    #[pin]
    bioset: BioSet,
    #[pin]
    coord: Coordinator,
    #[pin]
    stripes: StripeLocks,
    #[pin]
    migrator: Migrator,
    /// The disk, once added (for its capacity at the end of a migration).
    gendisk: AtomicPtr<bindings::gendisk>,
}

impl Array {
    /// An array named `name` over `members` (in role order), in the state
    /// recovery found; the migration runs at once when `run`.
    pub(crate) fn new(
        name: CString,
        members: KVec<Member>,
        paths: KVec<CString>,
        identity: ArrayMembers,
        recovered: Recovered,
        run: bool,
    ) -> impl PinInit<Self, Error> {
        let view = recovered.view();
        let (source, target, engine, state) = match recovered {
            Recovered::Settled { layout, state } => (layout, layout, None, state),
            Recovered::Migration(e) => (e.plan().source(), e.plan().target(), Some(e), e.state()),
        };
        let stats = engine.map(|e| e.stats()).unwrap_or_default();
        let status = Status { state, failed: false, running: false, view, stats, speed_kbps: 0 };
        try_pin_init!(Array {
            name,
            members,
            paths,
            identity,
            source,
            target,
            bioset <- BioSet::new(),
            coord <- Coordinator::new(view),
            stripes <- StripeLocks::new(),
            migrator <- Migrator::new(engine, status, run),
            gendisk: AtomicPtr::new(core::ptr::null_mut()),
        })
    }

    /// The disk name, for messages.
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// Number of members.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The member of role `role`.
    pub(crate) fn member(&self, role: usize) -> &Member {
        &self.members[role]
    }

    /// The path of the member of role `role`, for messages.
    pub(crate) fn path(&self, role: usize) -> &CStr {
        &self.paths[role]
    }

    /// Identities recorded in the superblocks.
    pub(crate) fn identity(&self) -> &ArrayMembers {
        &self.identity
    }

    /// The layout migrated from (the array's own when settled).
    pub(crate) fn source(&self) -> &Geometry {
        &self.source
    }

    /// The array's layout (migrated to).
    pub(crate) fn target(&self) -> &Geometry {
        &self.target
    }

    /// The bio pool.
    pub(crate) fn bioset(&self) -> &BioSet {
        &self.bioset
    }

    /// The meeting point of host I/O and the migration.
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    /// The migration thread's state.
    pub(crate) fn migrator(&self) -> &Migrator {
        &self.migrator
    }

    /// Records the disk once it is added (null again before it goes).
    pub(crate) fn set_gendisk(&self, disk: *mut bindings::gendisk) {
        self.gendisk.store(disk, Ordering::Release);
    }

    /// Grows the disk to `sectors` and tells user space (a change uevent,
    /// so that resize2fs and friends can follow).
    pub(crate) fn grow(&self, sectors: u64) {
        let disk = self.gendisk.load(Ordering::Acquire);
        if !disk.is_null() {
            // SAFETY: the disk is live while recorded here (see `set_gendisk`).
            unsafe { bindings::set_capacity_and_notify(disk, sectors) };
        }
    }

    /// Calls `f(bio, skip, start, sectors)` for each part of the request's
    /// bios within `[start, start + sectors)`, `skip` being where the part
    /// starts in its bio.
    fn bio_parts(io: &InFlight, start: u64, sectors: u64, mut f: impl FnMut(&DataBio<'_>, u64, u64, u64)) {
        let end = start + sectors;
        for bio in io.request().bios() {
            let (b0, b1) = (bio.sector(), bio.sector() + bio.sectors());
            let (lo, hi) = (b0.max(start), b1.min(end));
            if lo < hi {
                f(&bio, lo - b0, lo, hi - lo);
            }
        }
    }

    fn read_run(&self, io: &InFlight, g: &Geometry, run: &Routed) {
        let opf = io.request().member_opf();
        let copies = g.copies() as u64;
        Self::bio_parts(io, run.start, run.sectors, |bio, skip, start, sectors| {
            for piece in g.pieces(start, sectors) {
                // Spread reads over the copies, a chunk at a time.
                let copy = (piece.logical >> g.chunk_shift()).checked_rem(copies).unwrap_or(0);
                let at = g.locate_copy(piece.logical, copy as usize);
                let skip = skip + piece.logical - start;
                self.bioset.submit_clone(&self.members[at.member], bio, skip, piece.sectors, at.sector, opf, io);
            }
        });
    }

    fn write_run(&self, io: &InFlight, g: &Geometry, run: &Routed) {
        if g.level() == Level::Raid5 {
            if let Err(errno) = raid5_write::write(self, &self.stripes, io, g, run.start, run.sectors) {
                pr_err!("{}: raid5 write failed: error {}\n", self.name(), errno);
                io.fail(shim::sts_ioerr());
            }
            return;
        }
        let opf = io.request().member_opf();
        Self::bio_parts(io, run.start, run.sectors, |bio, skip, start, sectors| {
            for piece in g.pieces(start, sectors) {
                let skip = skip + piece.logical - start;
                for copy in 0..g.copies() {
                    let at = g.locate_copy(piece.logical, copy);
                    self.bioset.submit_clone(&self.members[at.member], bio, skip, piece.sectors, at.sector, opf, io);
                }
            }
        });
    }

    fn range_run(&self, io: &InFlight, g: &Geometry, run: &Routed) {
        let opf = io.request().member_opf();
        for (role, member) in self.members.iter().enumerate() {
            if let Some(span) = g.member_span(run.start, run.sectors, role) {
                self.bioset.submit_dataless(member, opf, span.sector, span.sectors, io);
            }
        }
    }

    /// Sends an empty flush to every member.
    fn submit_flush(&self, io: &InFlight) {
        let opf = bindings::req_op_REQ_OP_WRITE | REQ_PREFLUSH;
        for member in self.members.iter() {
            self.bioset.submit_dataless(member, opf, 0, 0, io);
        }
    }
}

impl RequestHandler for Array {
    fn process(&self, io: InFlight) {
        let op = io.request().op();
        let (start, sectors) = (io.request().sector(), io.request().sectors());
        match op {
            Op::Flush => return bio::plugged(|| self.submit_flush(&io)),
            Op::Unsupported => return io.fail(shim::sts_notsupp()),
            Op::Read | Op::Write | Op::Discard | Op::WriteZeroes => {}
        }
        let write = op != Op::Read;
        let runs = match self.coord.admit(&io, start, sectors, write, || self.migrator.wake()) {
            Ok(runs) => runs,
            Err(_) => {
                pr_err!("{}: write refused: the migration cannot checkpoint\n", self.name());
                return io.fail(shim::sts_ioerr());
            }
        };
        bio::plugged(|| {
            for run in runs.iter().flatten() {
                let g = if run.route == Route::Target { &self.target } else { &self.source };
                match op {
                    Op::Read => self.read_run(&io, g, run),
                    Op::Write => self.write_run(&io, g, run),
                    _ => self.range_run(&io, g, run),
                }
            }
        });
    }
}
