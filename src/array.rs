//! The array: its members, its layout, and how a host request becomes
//! member bios.
//!
//! Data requests are cut along the layout's chunk boundaries, each piece a
//! clone of the host bio pointed at the member that holds it. Flushes go to
//! every member; discards and write-zeroes become one range per member.

use crate::{
    bio::{self, BioSet},
    disk::RequestHandler,
    member::Member,
    raidmig_core::layout::Geometry,
    request::{InFlight, Op, REQ_PREFLUSH},
    shim,
};
use kernel::{bindings, prelude::*};

/// A running array.
#[pin_data]
pub(crate) struct Array {
    geometry: Geometry,
    members: KVec<Member>,
    #[pin]
    bioset: BioSet,
}

impl Array {
    /// An array over `members` (in role order) with layout `geometry`.
    pub(crate) fn new(geometry: Geometry, members: KVec<Member>) -> impl PinInit<Self, Error> {
        try_pin_init!(Array { geometry, members, bioset <- BioSet::new() })
    }

    /// Maps every bio of a read or write onto the members.
    fn submit_data(&self, io: &InFlight) {
        let rq = io.request();
        let opf = rq.member_opf();
        for bio in rq.bios() {
            let first = bio.sector();
            for piece in self.geometry.pieces(first, bio.sectors()) {
                let at = self.geometry.locate(piece.logical);
                self.bioset.submit_clone(
                    &self.members[at.member],
                    &bio,
                    piece.logical - first,
                    piece.sectors,
                    at.sector,
                    opf,
                    io,
                );
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

    /// Sends each member its part of a discard or write-zeroes.
    fn submit_range_op(&self, io: &InFlight) {
        let rq = io.request();
        let opf = rq.member_opf();
        for (index, member) in self.members.iter().enumerate() {
            if let Some(span) = self.geometry.member_span(rq.sector(), rq.sectors(), index) {
                self.bioset.submit_dataless(member, opf, span.sector, span.sectors, io);
            }
        }
    }
}

impl RequestHandler for Array {
    fn process(&self, io: InFlight) {
        let rq = io.request();
        let op = rq.op();
        if op != Op::Flush && rq.sector() + rq.sectors() > self.geometry.capacity() {
            // The block layer checks this already; a bug must not become a
            // write outside the data area.
            pr_err!("request beyond capacity: sector {} + {}\n", rq.sector(), rq.sectors());
            io.fail(shim::sts_ioerr());
            return;
        }
        bio::plugged(|| match op {
            Op::Read | Op::Write => self.submit_data(&io),
            Op::Flush => self.submit_flush(&io),
            Op::Discard | Op::WriteZeroes => self.submit_range_op(&io),
            Op::Unsupported => io.fail(shim::sts_notsupp()),
        });
    }
}
