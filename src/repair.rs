//! The array thread's upkeep of redundancy: members whose reads failed are
//! probed, failed roles are recorded in the superblocks of the others
//! (writes that saw a member fail are acknowledged only then), a role
//! given a replacement is rebuilt window by window by the core's
//! [`Rebuilder`], its position recorded as it goes, and a scrub (`check`,
//! `repair`) runs window by window by the core's [`Scrubber`].
//!
//! Every decision is the core's (what a window is, what its rows hold, when
//! a position is recorded, what the superblocks say); this file runs it
//! over blocking member I/O, keeps host writes out of the window being
//! rebuilt through the coordinator, and tells dmesg and sysfs.

use crate::{
    members::MAX_CORRECTED_READS,
    migrator::{KernelIo, Migration},
    raidmig_core::{
        engine::{EngineError, IoError, MemberIo, Time},
        format::Rebuild,
        health::Roles,
        layout::Geometry,
        members::ArrayMembers,
        pace,
        config::Command,
        rebuild::{RebuildError, Rebuilder, RecordPace},
        scrub::{ScrubError, ScrubMode, Scrubber},
        tail::{superblock_sector, SUPERBLOCK_BYTES},
    },
    spares,
    sys::{iobuf::IoBuf, time},
};
use kernel::prelude::*;

/// Probes the members whose reads failed, then records in the superblocks
/// what is not in sync (failed roles, a rebuild starting or ended). A member
/// that fails the probe or the record is failed too; writes waiting for the
/// record are woken either way.
pub(crate) fn keep_health(m: &Migration<'_>, buffer: &mut IoBuf) {
    let members = m.members;
    let (bytes, region) = buffer.split();
    let mut io = KernelIo::new(m, region);
    let settled = m.control.engine.lock().is_none();
    if settled {
        spares::take_over(members);
    }
    while let Some((role, sector)) = members.take_bad_read() {
        if settled {
            correct_read(m, role, sector, bytes, &mut io);
        } else {
            members.suspect(role);
        }
    }
    for role in members.take_suspects().iter() {
        // A superblock slot: a read that any working member answers.
        let sector = superblock_sector(members.device_sectors()[role], 0);
        if io.read(role, sector, &mut bytes[..SUPERBLOCK_BYTES]).is_err() {
            (m.fail_member)(role, sector, false);
        }
    }
    for _ in 0..=members.count() {
        let health = members.health();
        let identity = members.identity();
        let now = time::now();
        let r = match m.control.engine.lock().as_mut() {
            Some(engine) => {
                let role = |r: Option<Rebuild>| r.map(|r| r.role);
                let r = if !health.failed.minus(engine.failed()).is_empty() {
                    engine.record_failed(&mut io, &identity, bytes, health.failed, now)
                } else if health.failed != engine.failed() || role(health.rebuild) != role(engine.rebuild()) {
                    // A replacement took a failed role (`add` waits for the
                    // engine to hold settled): its rebuild starts at 0.
                    let rebuild = health.rebuild.map(|r| match engine.rebuild() {
                        Some(old) if old.role == r.role => old,
                        _ => Rebuild { role: r.role, position: 0 },
                    });
                    engine.record_health(&mut io, &identity, bytes, health.failed, rebuild, now)
                } else if health.failed == members.recorded() {
                    return;
                } else {
                    Ok(())
                };
                r.map_err(|e| match e {
                    EngineError::Io(e) => Some(e),
                    _ => None,
                })
            }
            None => match m.control.settled.lock().as_mut() {
                Some(record) => {
                    let role = |r: Option<Rebuild>| r.map(|r| r.role);
                    if health.failed == record.failed() && role(health.rebuild) == role(record.rebuild()) {
                        if health.failed == members.recorded() {
                            return;
                        }
                        Ok(())
                    } else {
                        // A rebuild keeps its recorded position; a new one
                        // starts at 0.
                        let rebuild = health.rebuild.map(|r| match record.rebuild() {
                            Some(old) if old.role == r.role => old,
                            _ => Rebuild { role: r.role, position: 0 },
                        });
                        record.update(&mut io, &identity, health.failed, rebuild, now, bytes).map_err(Some)
                    }
                }
                None => Err(None),
            },
        };
        match r {
            Ok(()) => {
                if health.failed != members.recorded() {
                    pr_info!("{}: member failure recorded in the superblocks of the others\n", members.name());
                }
                members.set_recorded(health.failed, false);
                return;
            }
            Err(Some(e)) => {
                (m.fail_member)(e.member, 0, true);
            }
            Err(None) => break,
        }
    }
    pr_err!("{}: cannot record the failed members: no member left to write to\n", members.name());
    members.set_recorded(members.recorded(), true);
}

/// Releases the devices `remove` asked for (a faulty role's, once its
/// failure is recorded, or one a replacement took over from): after every
/// host request started so far has ended (the queue frozen and thawed),
/// none can still have a bio on them. A failure not recorded yet, or a
/// drain that timed out, is tried again at the next round.
pub(crate) fn release_removed(m: &Migration<'_>) {
    let members = m.members;
    for (role, dev) in members.take_removals() {
        let Some((_, current)) = members.role_of_device(dev) else { continue };
        if (current && !members.recorded().contains(role)) || !m.capacity.quiesce(5000) {
            members.request_removal(role, dev);
            continue;
        }
        members.release(role, dev);
    }
}

/// md's read-error correction: the window around member sector `sector` of
/// `role`, whose read failed and was served from the redundancy, is written
/// again onto `role` from the other members (the core's rebuilder over that
/// one window, host writes held out of it), then read back. A member that
/// does not take it, or has had too many corrected errors, is failed.
fn correct_read(m: &Migration<'_>, role: usize, sector: u64, bytes: &mut [u8], io: &mut KernelIo<'_>) {
    let members = m.members;
    let health = members.health();
    if !health.out_of_sync().is_empty() {
        // Rows of a role being rebuilt, or an array already degraded: the
        // member is only probed.
        members.suspect(role);
        return;
    }
    let Some(g) = m.control.settled.lock().as_ref().map(|r| r.newest.layout) else { return };
    let stripe = g.stripe_sectors().max(1);
    let row = sector >> g.chunk_shift();
    let start = (row / g.stripe_rows()) * stripe;
    let mut rb = Rebuilder::new(g, Rebuild { role, position: start.min(g.capacity()) }, time::now());
    let Some((s, e)) = rb.next_window() else { return };
    m.coord.set_repair(Some((s, e)));
    let r = rb.copy_window(io, health.failed, bytes);
    m.coord.set_repair(Some((e, e)));
    let verified = r.is_ok() && io.read(role, sector & !7, &mut bytes[..4096]).is_ok();
    if !verified {
        pr_err!("{}: read error at sector {} of member {} could not be corrected\n", members.name(), sector, members.path(role));
        (m.fail_member)(role, sector, true);
        return;
    }
    let n = members.corrected(role);
    pr_info!(
        "{}: read error at sector {} of member {} (role {}) corrected: rewritten from the other members ({} so far)\n",
        members.name(),
        sector,
        members.path(role),
        role,
        n
    );
    if n > MAX_CORRECTED_READS {
        pr_err!("{}: member {} had more than {} read errors corrected: failed\n", members.name(), members.path(role), MAX_CORRECTED_READS);
        (m.fail_member)(role, sector, false);
    }
}

/// A rebuild in the thread: the core's rebuilder and its speed.
#[derive(Default)]
pub(crate) struct Rebuilding {
    rebuilder: Option<Rebuilder>,
    since_ms: u64,
    bytes: u64,
    pacer: pace::Pacer,
    /// Windows copied and skipped (a re-add skips clean regions).
    copied: u64,
    skipped: u64,
}

/// Ends the rebuild in the thread (its role failed, or it is done): host
/// writes no longer wait for a window.
fn drop_rebuild(m: &Migration<'_>, state: &mut Rebuilding) {
    if state.rebuilder.take().is_some() {
        m.coord.set_repair(None);
        m.control.show_rebuild(None, 0);
    }
}

/// Does the next piece of a rebuild, if one is due: copies a window, records
/// the position when due, records the role in sync at the end. Returns how
/// long to pause (the throttle), or `None` when there is nothing to do.
pub(crate) fn rebuild_step(m: &Migration<'_>, state: &mut Rebuilding, buffer: &mut IoBuf) -> Option<u64> {
    let members = m.members;
    let health = members.health();
    let Some(target) = health.rebuild else {
        drop_rebuild(m, state);
        return None;
    };
    // Only once the record holds the rebuild (`keep_health` writes it first,
    // with the replacement's identity): from its recorded position.
    let (g, end, recorded) = rebuild_frame(m)?;
    let Some(recorded) = recorded.filter(|r| r.role == target.role) else { return Some(100) };
    let now = time::now();
    if state.rebuilder.is_none_or(|rb| rb.role() != target.role) {
        state.rebuilder = Some(Rebuilder::within(g, recorded, end, now));
        state.since_ms = now.mono_ms;
        state.bytes = 0;
        state.copied = 0;
        state.skipped = 0;
        members.set_rebuild_position(recorded.position);
        pr_info!(
            "{}: rebuilding role {} onto {} from sector {}\n",
            members.name(),
            target.role,
            members.path(target.role),
            recorded.position
        );
    }
    let limit = m.control.speed_limit_kbps();
    let owed_ms = state.pacer.wait_ms(now.mono_ms, limit);
    if owed_ms > 0 {
        return Some(owed_ms);
    }
    let started_ms = now.mono_ms;
    let rb = state.rebuilder.as_mut()?;
    let (bytes, region) = buffer.split();
    let mut io = KernelIo::new(m, region);
    let mut window_bytes = 0;
    if let Some((start, end)) = rb.next_window() {
        // Writes admitted before now end first; writes into the window wait.
        m.coord.set_repair(Some((start, end)));
        // A re-added member holds already what it held when it failed: only
        // regions the bitmap marks (written since) are copied. The marks are
        // final for this window: writes into it wait, those before ended.
        let skip = members.readd() && m.bitmap().readd_skips(start, end);
        let r = if skip {
            rb.skip_window();
            state.skipped += 1;
            Ok((start, end))
        } else {
            state.copied += 1;
            rb.copy_window(&mut io, health.failed, bytes)
        };
        match r {
            Ok(_) => {
                members.set_rebuild_position(end);
                m.coord.set_repair(Some((end, end)));
                if !skip {
                    window_bytes = (end - start) << 9;
                }
            }
            Err(e) => {
                let why = match e {
                    RebuildError::Io(e) => {
                        (m.fail_member)(e.member, 0, true);
                        "member I/O error"
                    }
                    RebuildError::Lost => "no member in sync holds part of it",
                    RebuildError::BufferTooSmall => "buffer too small",
                };
                pr_err!("{}: rebuild of role {} stopped: {}\n", members.name(), target.role, why);
                if !members.failed().contains(target.role) {
                    (m.fail_member)(target.role, start, true);
                }
                drop_rebuild(m, state);
                return None;
            }
        }
    }
    let pace_cfg = RecordPace::default();
    if rb.record_due(now, pace_cfg) || rb.copied_all() {
        let position = rb.copied();
        let done = rb.copied_all();
        let identity = members.identity();
        let rebuild = (!done).then_some(Rebuild { role: target.role, position });
        let r = io.flush().and_then(|()| record_rebuild(m, &mut io, &identity, health.failed, rebuild, now, bytes));
        match r {
            Ok(()) => rb.recorded_at(position, now),
            Err(e) => {
                (m.fail_member)(e.member, 0, true);
                return Some(100);
            }
        }
        if done {
            let readd = members.readd();
            members.end_rebuild();
            pr_info!("{}: rebuild of role {} onto {} finished\n", members.name(), target.role, members.path(target.role));
            if readd {
                pr_info!(
                    "{}: re-add of role {}: {} windows copied, {} skipped (clean in the bitmap)\n",
                    members.name(),
                    target.role,
                    state.copied,
                    state.skipped
                );
            }
            drop_rebuild(m, state);
            return None;
        }
    }
    let now = time::now();
    state.bytes = state.bytes.saturating_add(window_bytes);
    let elapsed = now.mono_ms.saturating_sub(state.since_ms);
    m.control.show_rebuild(Some((target.role, rb.copied(), rb.end())), pace::kbps(state.bytes, elapsed));
    if elapsed > 2000 {
        state.since_ms = now.mono_ms;
        state.bytes = 0;
    }
    state.pacer.moved(window_bytes, started_ms, limit);
    Some(state.pacer.wait_ms(now.mono_ms, limit))
}

/// What a rebuild works over: the layout, where it ends, and the rebuild
/// the superblocks record. During a migration: the target layout, up to
/// the end of the checkpointed units (the engine holds them still while a
/// role is out of sync); settled: the whole array.
fn rebuild_frame(m: &Migration<'_>) -> Option<(Geometry, u64, Option<Rebuild>)> {
    if let Some(e) = m.control.engine.lock().as_ref() {
        return Some((e.plan().target(), e.rebuild_extent(m.moved()), e.rebuild()));
    }
    let settled = m.control.settled.lock();
    let record = settled.as_ref()?;
    Some((record.newest.layout, record.newest.layout.capacity(), record.rebuild()))
}

/// Records `failed` and `rebuild` in the superblocks: through the engine
/// during a migration (its record carries the checkpoint), else through the
/// settled array's record.
#[allow(clippy::too_many_arguments)]
fn record_rebuild(
    m: &Migration<'_>,
    io: &mut KernelIo<'_>,
    identity: &ArrayMembers,
    failed: Roles,
    rebuild: Option<Rebuild>,
    now: Time,
    bytes: &mut [u8],
) -> Result<(), IoError> {
    if let Some(e) = m.control.engine.lock().as_mut() {
        return e.record_health(io, identity, bytes, failed, rebuild, now).map_err(|e| match e {
            EngineError::Io(e) => e,
            _ => IoError { member: 0, errno: -22 },
        });
    }
    match m.control.settled.lock().as_mut() {
        Some(record) => record.update(io, identity, failed, rebuild, now, bytes),
        None => Ok(()),
    }
}

/// At unload: records how far a rebuild got, so that the next load resumes
/// there, and clears the write-intent bitmap (nothing writes any more).
pub(crate) fn stop(m: &Migration<'_>, state: &mut Rebuilding, buffer: Option<&mut IoBuf>) {
    m.bitmap().clear_at_stop(m.members, m.fail_member);
    let (Some(rb), Some(buffer)) = (state.rebuilder, buffer) else { return };
    let members = m.members;
    let health = members.health();
    if rb.copied() > rb.recorded() && health.rebuild.is_some_and(|r| r.role == rb.role()) {
        let (bytes, region) = buffer.split();
        let mut io = KernelIo::new(m, region);
        let identity = members.identity();
        let rebuild = Some(Rebuild { role: rb.role(), position: rb.copied() });
        let now: Time = time::now();
        let r = io.flush().and_then(|()| record_rebuild(m, &mut io, &identity, health.failed, rebuild, now, bytes));
        if r.is_err() {
            pr_err!("{}: could not record the rebuild position at unload\n", members.name());
        }
    }
}

/// A scrub in the thread.
#[derive(Default)]
pub(crate) struct Scrubbing {
    scrubber: Option<Scrubber>,
    since_ms: u64,
    bytes: u64,
    pacer: pace::Pacer,
}

/// Starts or stops a scrub on `command` (the caller checked that the array
/// may scrub), then scrubs the next window of one under way, unless a
/// member is out of sync (a failure stops it). Returns how long to pause,
/// or `None` when there is nothing to do.
pub(crate) fn scrub_step(
    m: &Migration<'_>,
    state: &mut Scrubbing,
    command: Option<Command>,
    buffer: &mut IoBuf,
) -> Option<u64> {
    let members = m.members;
    let name = members.name();
    let g = m.control.settled.lock().as_ref()?.newest.layout;
    let mode = match command {
        Some(Command::Check) => Some(ScrubMode::Check),
        Some(Command::Repair) => Some(ScrubMode::Repair),
        _ => None,
    };
    if command == Some(Command::Idle) && state.scrubber.take().is_some() {
        pr_info!("{}: scrub stopped\n", name);
        m.coord.set_repair(None);
        m.control.show_scrub(None, 0, 0);
    }
    if let Some(mode) = mode {
        if state.scrubber.is_none() {
            state.scrubber = Scrubber::new(g, mode);
            state.since_ms = time::now().mono_ms;
            state.bytes = 0;
            pr_info!("{}: {} started\n", name, if mode == ScrubMode::Check { "check" } else { "repair" });
        }
    }
    let sc = state.scrubber.as_mut()?;
    if !members.health().out_of_sync().is_empty() {
        pr_err!("{}: scrub stopped: a member is not in sync\n", name);
        state.scrubber = None;
        m.coord.set_repair(None);
        m.control.show_scrub(None, 0, 0);
        return None;
    }
    let limit = m.control.speed_limit_kbps();
    let started_ms = time::now().mono_ms;
    let owed_ms = state.pacer.wait_ms(started_ms, limit);
    if owed_ms > 0 {
        return Some(owed_ms);
    }
    let (bytes, region) = buffer.split();
    let mut io = KernelIo::new(m, region);
    let Some((start, end)) = sc.next_window() else { return None };
    m.coord.set_repair(Some((start, end)));
    let r = sc.scrub_window(&mut io, bytes);
    m.coord.set_repair(Some((end, end)));
    let what = if sc.mode() == ScrubMode::Check { "check" } else { "repair" };
    if let Err(e) = r {
        if let ScrubError::Io(e) = e {
            (m.fail_member)(e.member, 0, sc.mode() == ScrubMode::Repair);
        }
        pr_err!("{}: {} stopped at sector {} on an I/O error\n", name, what, start);
        state.scrubber = None;
        m.coord.set_repair(None);
        m.control.show_scrub(None, 0, 0);
        return None;
    }
    let now = time::now().mono_ms;
    state.bytes = state.bytes.saturating_add((end - start) << 9);
    let elapsed = now.saturating_sub(state.since_ms);
    let speed = pace::kbps(state.bytes, elapsed);
    if sc.finished() {
        pr_info!("{}: {} finished: {} mismatched sectors\n", name, what, sc.mismatches());
        m.control.show_scrub(None, sc.mismatches(), 0);
        state.scrubber = None;
        m.coord.set_repair(None);
        return None;
    }
    m.control.show_scrub(Some((sc.mode(), sc.done(), g.capacity())), sc.mismatches(), speed);
    if elapsed > 2000 {
        state.since_ms = now;
        state.bytes = 0;
    }
    state.pacer.moved((end - start) << 9, started_ms, limit);
    Some(state.pacer.wait_ms(now, limit))
}

/// A resync in the thread: the bitmap regions dirty at load or added by a
/// migration, one after the other, each scrubbed in repair mode (mirrors
/// from the copy reads take, raid5 parity from the data).
#[derive(Default)]
pub(crate) struct Resyncing {
    region: Option<(u64, Scrubber)>,
    started: bool,
    mismatches: u64,
    pacer: pace::Pacer,
}

/// Resyncs the next window of a dirty region, if one is left and every
/// member is in sync. Returns how long to pause, or `None` when there is
/// nothing to do.
pub(crate) fn resync_step(m: &Migration<'_>, state: &mut Resyncing, buffer: &mut IoBuf) -> Option<u64> {
    let members = m.members;
    let name = members.name();
    let bm = m.bitmap();
    if !members.health().out_of_sync().is_empty() {
        return None;
    }
    let g = m.control.settled.lock().as_ref()?.newest.layout;
    let geo = bm.geometry()?;
    if state.region.is_none() {
        let Some(r) = bm.next_unsynced() else {
            if state.started {
                pr_info!("{}: resync finished: {} mismatched sectors rewritten\n", name, state.mismatches);
                state.started = false;
                m.coord.set_repair(None);
                m.control.show_resync(None);
            }
            return None;
        };
        if !state.started {
            pr_info!(
                "{}: resync of {} bitmap regions started (left dirty by an unclean shutdown, or added by a migration)\n",
                name,
                bm.unsynced_count()
            );
            state.started = true;
            state.mismatches = 0;
        }
        let (start, end) = geo.region_range(r, g.capacity());
        match Scrubber::range(g, ScrubMode::Repair, start, end) {
            Some(s) => state.region = Some((r, s)),
            None => {
                bm.resynced(r);
                return Some(0);
            }
        }
    }
    let limit = m.control.speed_limit_kbps();
    let started_ms = time::now().mono_ms;
    let owed_ms = state.pacer.wait_ms(started_ms, limit);
    if owed_ms > 0 {
        return Some(owed_ms);
    }
    let (r, sc) = state.region.as_mut()?;
    let (bytes, region) = buffer.split();
    let mut io = KernelIo::new(m, region);
    if let Some((start, end)) = sc.next_window() {
        m.coord.set_repair(Some((start, end)));
        let res = sc.scrub_window(&mut io, bytes);
        state.pacer.moved((end - start) << 9, started_ms, limit);
        m.coord.set_repair(Some((end, end)));
        if let Err(e) = res {
            if let ScrubError::Io(e) = e {
                (m.fail_member)(e.member, start, true);
            }
            pr_err!("{}: resync stopped at sector {} on an I/O error\n", name, start);
            state.region = None;
            m.coord.set_repair(None);
            m.control.show_resync(None);
            return None;
        }
        m.control.show_resync(Some((sc.done(), g.capacity())));
    }
    if sc.finished() {
        state.mismatches += sc.mismatches();
        bm.resynced(*r);
        state.region = None;
    }
    Some(state.pacer.wait_ms(time::now().mono_ms, limit))
}
