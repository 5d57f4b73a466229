//! A host request on a running array: admitted by the coordinator (with the
//! view to route it by), cut by the core's routing and split into member
//! I/O by the core's [`for_each_op`], turned into bios here.
//!
//! Reads and writes cover one contiguous range. Discards and write-zeroes
//! are taken bio by bio: blk-mq merges discards that are not contiguous
//! into one request when the queue allows several discard segments (NVMe
//! members give 256), and the request's first sector and total length then
//! describe no real range. Such a request is admitted over the hull of its
//! bios.

use crate::{
    coordination::Coordinator,
    members::Members,
    raidmig_core::{
        hostio::{for_each_op, Access, MemberOp, Place},
        layout::Geometry,
        route::{route, Route, View},
    },
    stripes::Stripes,
    sys::{
        bio::{self},
        request::{InFlight, Op, REQ_PREFLUSH},
        shim,
    },
};
use kernel::{bindings, prelude::*};

/// What a host request needs of the array.
pub(crate) struct Host<'a> {
    /// The members.
    pub(crate) members: &'a Members,
    /// The meeting point with the migration.
    pub(crate) coord: &'a Coordinator,
    /// raid5 write buffers and stripe locks.
    pub(crate) stripes: &'a Stripes,
    /// The layout migrated from (the array's own when settled).
    pub(crate) source: &'a Geometry,
    /// The layout migrated to.
    pub(crate) target: &'a Geometry,
}

impl Host<'_> {
    /// Serves a started request; `wake_engine` is called when a write needs
    /// a checkpoint. The request ends when its last member bio does.
    pub(crate) fn process(&self, io: InFlight, wake_engine: impl Fn()) {
        let rq = io.request();
        let access = match rq.op() {
            Op::Flush => return bio::plugged(|| self.flush(&io)),
            Op::Unsupported => return io.fail(shim::sts_notsupp()),
            Op::Read => Access::Read,
            Op::Write => Access::Write,
            Op::Discard => Access::Discard,
            Op::WriteZeroes => Access::WriteZeroes,
        };
        let write = access != Access::Read;
        let ranged = matches!(access, Access::Discard | Access::WriteZeroes);
        let (lo, hi) = if ranged {
            rq.bios().fold((u64::MAX, 0), |(lo, hi), b| (lo.min(b.sector()), hi.max(b.sector() + b.sectors())))
        } else {
            (rq.sector(), rq.sector() + rq.sectors())
        };
        if lo >= hi {
            return;
        }
        let Some(view) = self.coord.admit(&io, lo, hi - lo, write, wake_engine) else {
            pr_err!(
                "{}: {} of sectors {}..{} refused: the migration stopped on an error where they lie\n",
                self.members.name(),
                if write { "write" } else { "read" },
                lo,
                hi
            );
            return io.fail(shim::sts_ioerr());
        };
        bio::plugged(|| {
            if ranged {
                for b in rq.bios() {
                    self.range(&io, &view, access, b.sector(), b.sector(), b.sectors());
                }
            } else {
                self.range(&io, &view, access, rq.sector(), rq.sector(), rq.sectors());
            }
        });
    }

    /// Sends an empty flush to every member.
    fn flush(&self, io: &InFlight) {
        let opf = bindings::req_op_REQ_OP_WRITE | REQ_PREFLUSH;
        for (role, dev) in self.members.devs().iter().enumerate() {
            self.members.bioset().submit_dataless(dev, role, opf, 0, 0, io);
        }
    }

    /// Issues the member I/O of logical `[start, start + sectors)` of the
    /// request, whose data offsets count from `base`.
    fn range(&self, io: &InFlight, view: &View, access: Access, base: u64, start: u64, sectors: u64) {
        let dev = self.members.device_sectors();
        for run in route(view, start, sectors, access != Access::Read) {
            let (g, place) = match run.route {
                Route::Target => (self.target, Place::Direct),
                Route::Source => (self.source, Place::Direct),
                Route::Staging => (self.target, Place::staging(view, self.target)),
                // Admission let nothing else through.
                Route::Wait | Route::NeedsCheckpoint | Route::Refuse => {
                    io.fail(shim::sts_ioerr());
                    continue;
                }
            };
            for_each_op(g, place, dev, access, base, run.start, run.sectors, |op| match op {
                MemberOp::Data { member, sector, sectors, offset } => {
                    self.clone_data(io, member, sector, base + offset, sectors)
                }
                MemberOp::Range { member, sector, sectors } => {
                    let opf = io.request().member_opf();
                    self.members.bioset().submit_dataless(self.members.dev(member), member, opf, sector, sectors, io);
                }
                MemberOp::Stripe { start, sectors, .. } => {
                    if self.stripes.write(self.members, io, g, place, start, sectors).is_err() {
                        io.fail(shim::sts_ioerr());
                    }
                }
                MemberOp::Unsupported => io.fail(shim::sts_notsupp()),
            });
        }
    }

    /// Sends the request's data of logical `[logical, logical + sectors)`
    /// to or from member `member` at `member_sector`, as clones of the
    /// request's bios.
    fn clone_data(&self, io: &InFlight, member: usize, member_sector: u64, logical: u64, sectors: u64) {
        let rq = io.request();
        let opf = rq.member_opf();
        let end = logical + sectors;
        for b in rq.bios() {
            let (b0, b1) = (b.sector(), b.sector() + b.sectors());
            let (lo, hi) = (b0.max(logical), b1.min(end));
            if lo < hi {
                self.members.bioset().submit_clone(
                    self.members.dev(member),
                    member,
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
