//! A host request on a running array: admitted by the coordinator (with the
//! view to route it by), cut by the core's routing and split into member
//! I/O by the core's [`for_each_op`], turned into bios here.
//!
//! Two passes serve a request: [`Host::submit`], from `queue_rq`, when
//! nothing has to wait (the gate lets it go at once, its bitmap regions are
//! marked, no member is out of sync where raid5 is involved; a raid5 stripe
//! write is started there without waiting, see [`Stripes::start`]), and
//! [`Host::process`], from the disk's workqueue, for the rest and for every
//! later pass (retries, recording a failure). Both route and split alike;
//! only the second may wait for member I/O.
//!
//! Reads and writes cover one contiguous range. Discards and write-zeroes
//! are taken bio by bio: blk-mq merges discards that are not contiguous
//! into one request when the queue allows several discard segments (NVMe
//! members give 256), and the request's first sector and total length then
//! describe no real range. Such a request is admitted over the hull of its
//! bios.
//!
//! Member failures (invariant 9 of the core's theory): requests are split
//! with the array's failed roles left out, and, on a pass after a failed
//! member read, the roles that failed it for this request. A member write
//! that fails where the data has a copy elsewhere fails the member; the
//! request then ends only once the array thread has recorded that
//! ([`Phase::Record`]).

use crate::{
    bitmap::Bitmap,
    coordination::Coordinator,
    members::Members,
    raidmig_core::{
        health::Roles,
        hostio::{for_each_op, Access, MemberOp, Place},
        layout::{Geometry, Level, SECTOR_SHIFT},
        raid5::{Raid5Error, SliceWrite},
        route::{route, Route, View},
    },
    stripes::{StripePart, Stripes},
    sys::{
        bio::{self},
        disk::Limits,
        jobs::Jobs,
        request::{InFlight, Op, Phase, REQ_PREFLUSH},
        shim,
    },
};
use core::sync::atomic::AtomicU64;
use kernel::{bindings, prelude::*};

/// The layouts requests are routed by: migrated from and to (both the
/// array's own when nothing was ever migrated).
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// The layout migrated from.
    pub(crate) source: Geometry,
    /// The layout migrated to: the array's.
    pub(crate) target: Geometry,
}

/// Sets what the queue's limits owe to `target`, the array's layout: its
/// chunk and stripe as I/O hints, and no discard (nor write-zeroes) where
/// not every member takes them (`members_discard` false) or the layout
/// cannot map them to member ranges (raid5: a range of a member mixes data
/// and parity). At load, and at the start of a reshape.
pub(crate) fn set_layout_limits(limits: &mut Limits, target: &Geometry, members_discard: bool) {
    let chunk_bytes = target.chunk_sectors() << SECTOR_SHIFT;
    let stripe_bytes = u32::try_from(target.stripe_sectors() << SECTOR_SHIFT).unwrap_or(0);
    limits.set_io_hints(chunk_bytes, stripe_bytes);
    if target.level() == Level::Raid5 || !members_discard {
        limits.disable_discard();
    }
}

/// What a host request needs of the array.
pub(crate) struct Host<'a> {
    /// The members.
    pub(crate) members: &'a Members,
    /// raid5 buffers, and the steps of writes running without a waiting
    /// task.
    pub(crate) jobs: &'a Jobs,
    /// The meeting point with the migration.
    pub(crate) coord: &'a Coordinator,
    /// raid5 stripe locks, and the writes running on the buffers.
    pub(crate) stripes: &'a Stripes,
    /// The layout migrated from (the array's own when settled).
    pub(crate) source: &'a Geometry,
    /// The layout migrated to.
    pub(crate) target: &'a Geometry,
    /// The write-intent bitmap.
    pub(crate) bitmap: &'a Bitmap,
    /// The moved-unit map of the migration (empty without one).
    pub(crate) moved: &'a [AtomicU64],
    /// No migration is recorded: the bitmap is kept.
    pub(crate) settled: bool,
    /// Fails a member after an error of synchronous member I/O (raid5):
    /// returns whether the array still holds every sector without it.
    pub(crate) fail_member: &'a dyn Fn(usize, u64, bool) -> bool,
}

/// What a data request asks: its access and the logical hull `[lo, hi)`
/// it is admitted over.
struct Ask {
    access: Access,
    lo: u64,
    hi: u64,
}

/// Discards and write-zeroes are taken bio by bio (see the module
/// documentation).
fn ranged(access: Access) -> bool {
    matches!(access, Access::Discard | Access::WriteZeroes)
}

impl Ask {
    fn write(&self) -> bool {
        self.access != Access::Read
    }
}

/// How the members' bios of a pass are issued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// From the workqueue: synchronous member I/O (raid5) allowed.
    Work,
    /// From `queue_rq`: nothing may wait for I/O; a part that would is
    /// deferred to the workqueue with the whole request.
    Inline,
}

impl Host<'_> {
    /// Serves a started request from `queue_rq` when that needs no waiting
    /// for I/O or for the migration: on the first pass, a read or write that
    /// the gate lets go at once, whose bitmap regions are marked, and that is
    /// not raid5 I/O while a member is out of sync. A raid5 stripe write that
    /// cannot start without waiting has the whole request served again from
    /// the workqueue. Returns the request, untouched, otherwise.
    pub(crate) fn submit(&self, io: InFlight) -> Option<InFlight> {
        if io.phase() != Phase::Serve {
            return Some(io);
        }
        let Some(ask) = self.ask(&io) else {
            if io.request().op() == Op::Flush {
                bio::plugged_apart(|| self.flush(&io));
            }
            return None;
        };
        let parity = self.source.level().has_parity() || self.target.level().has_parity();
        if parity && !self.members.health().out_of_sync().is_empty() {
            return Some(io);
        }
        // raid5 writes longer than one slice write go stripe by stripe from
        // the workqueue (see SliceWrite::fits).
        let slice = |g: &Geometry| !g.level().has_parity() || SliceWrite::fits(g, ask.lo, ask.hi - ask.lo);
        if ask.write() && !(slice(self.source) && slice(self.target)) {
            return Some(io);
        }
        let regions = if ask.write() && self.settled {
            match self.bitmap.try_start_write(ask.lo, ask.hi - ask.lo) {
                Some(regions) => regions,
                None => return Some(io),
            }
        } else {
            None
        };
        let Some(view) = self.coord.try_admit(&io, self.moved, ask.lo, ask.hi - ask.lo, ask.write()) else {
            if let Some((first, last)) = regions {
                self.bitmap.end_write(first, last);
            }
            return Some(io);
        };
        if let Some((first, last)) = regions {
            io.mark_regions(first, last);
        }
        bio::plugged_apart(|| self.issue(&io, &view, &ask, Pass::Inline));
        None
    }

    /// Serves a started request from the workqueue; `wake_engine` is called
    /// when a write needs a checkpoint. The request ends when its last
    /// member bio does.
    pub(crate) fn process(&self, io: InFlight, wake_engine: impl Fn()) {
        if io.phase() == Phase::Record {
            if !self.members.wait_recorded() {
                pr_err!("{}: a member failure could not be recorded: write failed\n", self.members.name());
                io.fail(shim::sts_ioerr());
            }
            return;
        }
        let Some(ask) = self.ask(&io) else {
            if io.request().op() == Op::Flush {
                bio::plugged(|| self.flush(&io));
            }
            return;
        };
        let (lo, hi, write) = (ask.lo, ask.hi, ask.write());
        let Some(view) = self.coord.admit(&io, self.moved, lo, hi - lo, write, wake_engine) else {
            pr_err!(
                "{}: {} of sectors {}..{} refused: the migration stopped on an error where they lie\n",
                self.members.name(),
                if write { "write" } else { "read" },
                lo,
                hi
            );
            return io.fail(shim::sts_ioerr());
        };
        if write && self.settled && io.phase() == Phase::Serve {
            match self.bitmap.start_write(self.members, self.fail_member, lo, hi - lo) {
                Ok(Some((first, last))) => io.mark_regions(first, last),
                Ok(None) => {}
                Err(_) => {
                    pr_err!("{}: write of sectors {}..{} failed: no member took its bitmap bit\n", self.members.name(), lo, hi);
                    return io.fail(shim::sts_ioerr());
                }
            }
        }
        bio::plugged(|| self.issue(&io, &view, &ask, Pass::Work));
    }

    /// The access and extent of a data request; `None` for a flush (left to
    /// the caller), an unsupported operation (failed here) or an empty one.
    fn ask(&self, io: &InFlight) -> Option<Ask> {
        let rq = io.request();
        let access = match rq.op() {
            Op::Flush => return None,
            Op::Unsupported => {
                io.fail(shim::sts_notsupp());
                return None;
            }
            Op::Read => Access::Read,
            Op::Write => Access::Write,
            Op::Discard => Access::Discard,
            Op::WriteZeroes => Access::WriteZeroes,
        };
        let (lo, hi) = if ranged(access) {
            rq.bios().fold((u64::MAX, 0), |(lo, hi), b| (lo.min(b.sector()), hi.max(b.sector() + b.sectors())))
        } else {
            (rq.sector(), rq.sector() + rq.sectors())
        };
        (lo < hi).then_some(Ask { access, lo, hi })
    }

    /// Issues an admitted request's member I/O.
    fn issue(&self, io: &InFlight, view: &View, ask: &Ask, pass: Pass) {
        let rq = io.request();
        if ranged(ask.access) {
            for b in rq.bios() {
                self.range(io, view, ask.access, b.sector(), b.sector(), b.sectors(), pass);
            }
        } else {
            self.range(io, view, ask.access, rq.sector(), rq.sector(), rq.sectors(), pass);
        }
    }

    /// Sends an empty flush to every member in sync.
    fn flush(&self, io: &InFlight) {
        let opf = bindings::req_op_REQ_OP_WRITE | REQ_PREFLUSH;
        let redundant = self.target.redundant();
        for (role, dev) in self.members.in_sync() {
            self.members.bioset().submit_dataless(dev, role, redundant, opf, 0, 0, io);
        }
    }

    /// Issues the member I/O of logical `[start, start + sectors)` of the
    /// request, whose data offsets count from `base`. Each part leaves out
    /// the roles not in sync there (failed, a rebuilding role at or above
    /// its position) and those whose reads failed for this request.
    #[allow(clippy::too_many_arguments)]
    fn range(&self, io: &InFlight, view: &View, access: Access, base: u64, start: u64, sectors: u64, pass: Pass) {
        let dev = self.members.device_sectors();
        let health = self.members.health();
        let avoid = Roles(io.avoid());
        for run in route(view, self.moved, start, sectors, access != Access::Read) {
            let (g, place) = match run.route {
                Route::Target => (self.target, Place::Direct),
                Route::Source => (self.source, Place::Direct),
                Route::Staging => (self.target, Place::staging(view, self.target)),
                // Admission let nothing else through.
                Route::Wait | Route::NeedsCheckpoint | Route::Refuse | Route::Move => {
                    io.fail(shim::sts_ioerr());
                    continue;
                }
            };
            let redundant = g.redundant();
            health.for_each_part(run.start, run.sectors, |part, len, gone| {
                let gone = gone.union(avoid);
                // Where mirrors may differ (a region not yet resynced), reads
                // take the copy they always take, which the resync copies from.
                for_each_op(g, place, &dev, gone, access, base, part, len, |op| match op {
                    MemberOp::Data { member, sector, sectors, offset } => {
                        self.clone_data(io, member, redundant, sector, base + offset, sectors)
                    }
                    MemberOp::Range { member, sector, sectors } => match self.members.dev(member) {
                        Some(d) => {
                            let opf = io.request().member_opf();
                            self.members.bioset().submit_dataless(d, member, redundant, opf, sector, sectors, io);
                        }
                        None if redundant => {}
                        None => io.fail(shim::sts_ioerr()),
                    },
                    // Started without waiting where the whole request is one
                    // slice write (see SliceWrite::fits) and a buffer is
                    // free; otherwise from `queue_rq` the request is served
                    // again from the workqueue, and there written waiting
                    // for member I/O (always so on a later pass, which may
                    // follow a failed read of a write started without
                    // waiting).
                    MemberOp::Stripe { start, sectors, .. } => {
                        // Dirty at load, or capacity a migration added
                        // (written by the host as soon as the new layout is
                        // in effect), not yet resynced: parity may not match
                        // the data there (see write_unsynced_stripe).
                        let unsynced = self.bitmap.unsynced(start, sectors);
                        let part = StripePart { g: *g, place, failed: gone, start, sectors, unsynced };
                        let rq = io.request();
                        let eligible = (pass == Pass::Inline || io.phase() == Phase::Serve)
                            && SliceWrite::fits(g, rq.sector(), rq.sectors());
                        let started = eligible && self.stripes.start(self.members, self.jobs, io, &part);
                        match (started, pass) {
                            (true, _) => {}
                            (false, Pass::Inline) => io.defer(),
                            (false, Pass::Work) => self.write_stripe(io, &part),
                        }
                    }
                    // A member lost since `submit` looked: reconstruction
                    // waits for member I/O, which `queue_rq` must not.
                    MemberOp::Reconstruct { .. } if pass == Pass::Inline => io.defer(),
                    MemberOp::Reconstruct { start, sectors, .. } => {
                        let part = StripePart { g: *g, place, failed: gone, start, sectors, unsynced: false };
                        if self.stripes.read_reconstructed(self.members, self.jobs, io, &part).is_err() {
                            io.fail(shim::sts_ioerr());
                        }
                    }
                    MemberOp::Lost { start, sectors } => {
                        self.members.lost(start, sectors);
                        io.fail(shim::sts_ioerr());
                    }
                    MemberOp::Unsupported => io.fail(shim::sts_notsupp()),
                });
            });
        }
    }

    /// A raid5 write of `part`, waiting for its member I/O. A member that
    /// fails during the write is left out of the rest of it (the core
    /// writes the stripe whole and consistent without it) and failed; the
    /// request then waits for the failure to be recorded. A second member
    /// lost fails it.
    fn write_stripe(&self, io: &InFlight, part: &StripePart) {
        let start = part.start;
        match self.stripes.write(self.members, self.jobs, io, part) {
            Ok(()) => {}
            // Written whole and consistent without the member: fail it.
            Err(Raid5Error::MemberFailed(e)) => {
                if (self.fail_member)(e.member, start, true) {
                    io.await_record();
                } else {
                    io.fail(shim::sts_ioerr());
                }
            }
            Err(Raid5Error::Io(e)) => {
                (self.fail_member)(e.member, start, true);
                io.fail(shim::sts_ioerr());
            }
            Err(_) => io.fail(shim::sts_ioerr()),
        }
    }

    /// Sends the request's data of logical `[logical, logical + sectors)`
    /// to or from member `member` at `member_sector`, as clones of the
    /// request's bios.
    fn clone_data(&self, io: &InFlight, member: usize, redundant: bool, member_sector: u64, logical: u64, sectors: u64) {
        let Some(dev) = self.members.dev(member) else {
            // Failed since the split: a read is served again without it, a
            // write leaves it out if the data has a copy elsewhere.
            if !redundant {
                io.fail(shim::sts_ioerr());
            } else if io.request().op() == Op::Read {
                io.retry_without(member);
            } else {
                io.await_record();
            }
            return;
        };
        let rq = io.request();
        let opf = rq.member_opf();
        let end = logical + sectors;
        for b in rq.bios() {
            let (b0, b1) = (b.sector(), b.sector() + b.sectors());
            let (lo, hi) = (b0.max(logical), b1.min(end));
            if lo < hi {
                self.members.bioset().submit_clone(
                    dev,
                    member,
                    redundant,
                    &b,
                    lo - b0,
                    hi - lo,
                    member_sector + (lo - logical),
                    opf,
                    io,
                );
            }
        }
    }
}
