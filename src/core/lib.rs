//! raidmig's pure core: layout math, the on-disk format, the migration
//! planner and engine, the load sequence, and every decision about host I/O.
//!
//! Nothing here touches a device, allocates or depends on the `kernel` crate:
//! the kernel module includes this file as its `raidmig_core` module, and
//! `cargo test` builds it as a `no_std` crate on the host, so both run the very
//! same code. Modules refer to each other through `super::`, which resolves the
//! same way in both builds.
//!
//! # Theory
//!
//! A migration rewrites a volume from a *source* layout into a *target*
//! layout over the same members, in place, front to back, one *unit* (a few
//! whole target stripes, about 1 MiB of data) at a time. The picture for a
//! plain disk becoming raid5 over three members (chunks numbered by logical
//! position, `P` parity, one row per line):
//!
//! ```text
//!          source (single)        target (raid5, left-symmetric)
//!          m0    m1    m2          m0    m1    m2
//! row 0    c0    --    --          c0    c1    P
//! row 1    c1    --    --          c3    P     c2
//! row 2    c2    --    --          P     c4    c5
//! row 3    c3    --    --          c6    c7    P
//!  ...                              ...
//!          [tail][tail][tail]      [tail][tail][tail]  reserved: superblocks, staging
//! ```
//!
//! Target row `r` of `m0` holds later chunks than the source kept there, so
//! writing a unit's rows destroys source chunks of *earlier* units, or of the
//! unit itself, never of later ones (a change of layout that would is
//! refused). The *checkpoint*, recorded in a superblock on every member, is
//! the first unit not yet durable in the target layout; recovery after a
//! power cut copies again from there, reading the source. Host I/O goes to
//! the target below the copied units, to the source above, and around the
//! unit being copied ([`route`]). The design keeps these invariants; each
//! file's header names the ones it keeps.
//!
//! 1. **Source intact past the checkpoint.** Every source sector of a unit
//!    at or after the durable checkpoint holds that unit's data, or has only
//!    ever been rewritten with the very same data: a unit's rows are written
//!    only after a durable checkpoint past every earlier unit whose source
//!    they overwrite, and through the staging area if they overwrite their
//!    own source ([`plan`], [`engine`]).
//! 2. **No acknowledged write is lost to a re-copy.** A host write into a
//!    copied unit waits until a checkpoint covers that unit; a host write
//!    into a unit not reached goes to the source, which recovery reads
//!    ([`route`], [`gate`]).
//! 3. **A unit's rows change only while it is in flight.** Before the engine
//!    reads a unit's source or writes its rows, it publishes the unit in
//!    flight and waits for host requests routed by an earlier view to drain;
//!    host requests admitted after that wait for the unit ([`gate`],
//!    [`engine`]).
//! 4. **Members at most one generation apart.** A superblock generation is
//!    written to every member and flushed before the next one is made; one
//!    that failed is written again, same generation, before anything else;
//!    lagging members are written level at load before anything else
//!    ([`engine`], [`lifecycle`]). Generation `g` goes to slot `g % 2`, so a
//!    torn write never destroys the last good generation ([`format`],
//!    [`tail`]).
//! 5. **Nothing waits without bound.** Host I/O waits only for member I/O in
//!    progress or for a checkpoint the engine can still write. After an
//!    error, host I/O is served from an intact copy (the source, or the
//!    staging area of a unit recorded there) or fails; a unit left in
//!    staging is finished before the volume is exposed ([`route`],
//!    [`lifecycle`]).
//! 6. **Staging is repeatable.** A unit is recorded in staging only once it
//!    is complete and durable there, and staging is not written again before
//!    the record "staging empty" is durable, so finishing a staged unit can
//!    be repeated any number of times ([`engine`], [`tail`]).
//! 7. **Nothing is written before the input is valid.** A load checks every
//!    device, the layout and the first device's free tail before the first
//!    superblock is written ([`lifecycle`], [`prepare`], [`config`]); a
//!    reshape checks the array, the request and every unit of its plan
//!    before its first superblock ([`reshape`]).
//! 8. **One decision, one place.** The kernel and the host simulator call the
//!    same functions for the load sequence, host admission, the split of
//!    requests into member I/O, raid5 writes and the migration, so the
//!    simulator's power cuts test what the kernel runs.
//! 9. **A role out of sync is never trusted.** A member that fails (a write
//!    error, a read error it does not answer after, missing or stale at
//!    assembly) is left out of all I/O at once and recorded faulty in the
//!    superblocks of the others before any write that saw it fail is
//!    acknowledged; a faulty or stale member is never assembled as in sync
//!    again. Reads take a copy in sync or reconstruct a raid5 chunk; writes
//!    keep every copy and parity in sync consistent. A replacement is in sync
//!    only below its rebuild position, which is recorded only once the rows
//!    below it are durable, and rows are rebuilt only once every write
//!    admitted before has ended ([`health`], [`hostio`], [`raid5`],
//!    [`assemble`], [`record`], [`rebuild`], [`gate`]). A raid5 stripe
//!    write that loses a member half-way is finished without it, so that
//!    the member's chunk still reconstructs ([`raid5`]). A migration copies
//!    only while every role is in sync (its units write every role): with a
//!    role out of sync it holds at a checkpoint, nothing staged, and a
//!    replacement is rebuilt over the checkpointed units (and up to the
//!    last unit moved out of order) only, which the superblocks record with
//!    the migration ([`engine`]).
//! 10. **Only marked regions can disagree.** A write reaches a region only
//!    once the region's bit is durable on every member in sync; a bit is
//!    cleared only after a flush that followed every write into its region
//!    (and every bit at a clean unload). After a power cut, copies and
//!    parity can differ only in marked regions, which are resynced (a scrub
//!    in repair mode) while their mirrors are read from the copy the resync
//!    copies from; a marked raid5 that is also degraded is not started
//!    unless forced ([`bitmap`], [`scrub`], [`lifecycle`]). A raid5 write
//!    into a region not yet resynced computes its parity from the data
//!    (reconstruct-write), never from the old parity ([`raid5`]). The
//!    capacity a migration adds past its source's end is marked the same
//!    way, durably before the checkpoint passes its first unit, instead of
//!    being zeroed, and resynced once the migration is over ([`engine`]).
//!    While a role
//!    is out of sync no bit is cleared, and a clean unload merges the live
//!    bits into the kept image before clearing them, so a member that left
//!    in sync and comes back as itself, in the same load or a later one,
//!    differs from the others only in regions marked in either image, and
//!    its rebuild copies only those ([`bitmap::readd_skips`],
//!    [`bitmap::keep_at_stop`], [`prepare::may_readd`]).
//! 11. **A unit moved out of order is recorded before it is written to.**
//!    With the new layout in effect at once, the volume has the target's
//!    capacity from the start, and a host write into a unit the engine has
//!    not reached waits while the engine moves it first, out of order. Every
//!    unit whose source content that unit's rows overwrite is moved before
//!    it, down the chain ([`plan::Migration::first_to_move`]), so no unit
//!    still in the source layout loses its source (invariant 1 holds for
//!    every unit not moved); units copied in order are checkpointed first. A
//!    moved unit's rows are durable before its bit in the moved-unit map
//!    is written, on every member, and the bit is durable before any host
//!    write is admitted to the unit or the staging record of a unit moved
//!    through staging is released; recovery takes the union of the
//!    members' maps and copies only units not marked ([`moved`],
//!    [`engine`], [`route`], [`lifecycle`]).
//!
//! # Modules, bottom up
//!
//! - [`layout`]: levels and geometries, logical sector to member locations
//!   and back (md-compatible raid0, raid5 left-symmetric, raid10 near-2).
//! - [`crc32c`], [`tail`], [`format`], [`moved`]: the reserved tail, the
//!   superblock, and the map of units moved out of order.
//! - [`parity`]: XOR and the raid5 per-stripe write plans.
//! - [`plan`]: units and how each must be copied to survive a power cut.
//! - [`config`]: module parameters and sysfs input.
//! - [`members`], [`assemble`], [`prepare`]: array identity, assembly from
//!   superblocks, the checks and first superblocks of a new array.
//! - [`reshape`]: the checks and first superblocks of a reshape of an
//!   assembled array (members added, chunk or level changed).
//! - [`route`]: where host I/O goes while migrating.
//! - [`engine`], [`pace`]: the migration itself, over the [`engine::MemberIo`]
//!   trait, and its speed.
//! - [`lifecycle`]: the load sequence (create, assemble, catch up, finish a
//!   staged unit).
//! - [`gate`]: admission of host requests and the drain of old ones.
//! - [`health`]: failed roles, what each level survives, which copy a read
//!   takes.
//! - [`hostio`], [`raid5`]: a host request as member I/O, and raid5 writes
//!   and reconstructed reads.
//! - [`record`], [`rebuild`]: the superblocks of a settled array (failed
//!   roles, a rebuild's position), and the rebuild of a role onto a
//!   replacement.
//! - [`bitmap`], [`scrub`]: the write-intent bitmap, and the scrub that
//!   checks, repairs and resyncs copies and parity.
//!
//! In the kernel build `--cfg MODULE` is set and this file is a module, not a
//! crate root, so the crate-level attribute below applies to the host only.
#![cfg_attr(not(MODULE), no_std)]
#![forbid(unsafe_code)]
#![allow(unreachable_pub)]
// The kernel module uses only part of the core at a time.
#![cfg_attr(MODULE, allow(dead_code))]

#[cfg(test)]
extern crate std;

pub mod assemble;
pub mod bitmap;
pub mod config;
pub mod crc32c;
pub mod engine;
pub mod format;
pub mod gate;
pub mod health;
pub mod hostio;
pub mod layout;
pub mod lifecycle;
pub mod members;
pub mod moved;
pub mod pace;
pub mod parity;
pub mod plan;
pub mod prepare;
pub mod raid5;
pub mod rebuild;
pub mod record;
pub mod reshape;
pub mod route;
pub mod scrub;
pub mod tail;
