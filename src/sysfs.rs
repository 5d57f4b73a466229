//! /sys/block/raidmigN/raidmig/: the migration's knobs and gauges.
//!
//! | file | access | content |
//! |------|--------|---------|
//! | action | rw | write `start`, `pause`, `resume` (a migration), `check`, `repair`, `idle` (a scrub); reads `migrate`, `rebuild`, `resync`, `check`, `repair`, `pause` or `idle` |
//! | mismatch_cnt | r | sectors the last scrub found mismatched (md's) |
//! | bitmap | r | `none`, or the write-intent bitmap: region size, dirty regions, regions left to resync |
//! | state | r | `prepared`, `migrating`, `paused`, `clean`, `degraded` (members failed, every sector held) or `failed` (more failed than the level survives, or the migration stopped on an error) |
//! | level, source_level | r | layout migrated to, and from |
//! | chunk_kb | r | chunk size of the target layout |
//! | members | r | member devices, in role order |
//! | roles | r | one line per role: role, device (`missing` if none), `in_sync`, `faulty` or `rebuilding` (with the logical sector up to which it is rebuilt) |
//! | remove | w | a device path: a hot spare is dropped, a faulty member's device released (a member in sync is refused); `failed`: every faulty member's |
//! | add | w | a device path: it replaces the lowest failed role (and is rebuilt; during a migration, over the part migrated, then the migration resumes), or becomes a hot spare |
//! | spares | r | the hot spares, one path per line |
//! | progress | r | `DONE/TOTAL`, target sectors (of the rebuild, resync or scrub while one runs: `action` names it) |
//! | checkpoint | r | logical sector up to which the target layout is durable |
//! | units_done, units_staged, units_moved, checkpoint_writes | r | engine counters (this load); units_moved: moved out of order for host requests (the new layout in effect at once) |
//! | speed_kbps | r | copy speed (of the migration, rebuild, resync or scrub) |
//! | eta_seconds | r | time left at that speed, or `none` |
//! | speed_limit_max_kbps | rw | throttle, 0 for none |
//! | reshape | rw | write `level=`, `add=`, `chunk_kb=` (a reshape of a clean array, see `reshaping`); reads the migration under way (`raid5 over 3, chunk 64 KiB -> raid5 over 4, chunk 64 KiB`) or `none` |
//!
//! The attribute group is handed to `device_add_disk`, so the files exist
//! exactly as long as the disk does. What is written is validated by the
//! core (`config::parse_command`, `config::parse_speed_limit`): anything out
//! of range, negative, empty, non-numeric, overlong or not UTF-8 gets EINVAL
//! and changes nothing.
//!
//! This file holds the static attribute tables the kernel reads through raw
//! pointers, hence its few `unsafe` blocks; what the files show and accept
//! is plain safe Rust ([`show_attr`], [`store_attr`]).

use crate::{
    array::Array,
    raidmig_core::{
        config,
        format::ArrayState,
        health::{self, RoleState},
        layout::Geometry,
        pace,
        scrub::ScrubMode,
    },
};
use core::{cell::UnsafeCell, fmt::Write, mem::MaybeUninit, ptr::addr_of};
use kernel::{bindings, prelude::*};

type ShowFn = unsafe extern "C" fn(*mut bindings::device, *mut bindings::device_attribute, *mut u8) -> isize;
type StoreFn =
    unsafe extern "C" fn(*mut bindings::device, *mut bindings::device_attribute, *const u8, usize) -> isize;

/// The array behind a disk's device.
///
/// # Safety
///
/// `dev` must be the device of a live raidmig disk (true in its sysfs
/// callbacks: the files go before the disk).
unsafe fn array_of<'a>(dev: *mut bindings::device) -> &'a Array {
    let offset = core::mem::offset_of!(bindings::block_device, bd_device);
    // SAFETY: a disk's device is the `bd_device` of its whole-disk block
    // device (`dev_to_bdev`), whose disk's queue data is the array.
    unsafe {
        let bdev = dev.cast::<u8>().sub(offset).cast::<bindings::block_device>();
        &*(*(*(*bdev).bd_disk).queue).queuedata.cast::<Array>()
    }
}

/// Formats into a sysfs page.
struct Page {
    buf: *mut u8,
    len: usize,
}

impl Write for Page {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = (bindings::PAGE_SIZE - 1).saturating_sub(self.len);
        let n = s.len().min(room);
        // SAFETY: sysfs pages are PAGE_SIZE bytes; `len + n` stays below.
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), self.buf.add(self.len), n) };
        self.len += n;
        if n < s.len() {
            return Err(core::fmt::Error);
        }
        Ok(())
    }
}

/// Whether the array thread has regions to resync that it takes up next:
/// no migration, every member in sync, regions not yet resynced.
fn resync_pending(a: &Array) -> bool {
    !a.control().migrating() && a.members().health().out_of_sync().is_empty() && a.bitmap().unsynced_count() > 0
}

/// Writes attribute `K` of `a` to `out`.
fn show_attr<const K: usize>(a: &Array, out: &mut Page) -> core::fmt::Result {
    let s = a.control().status();
    match K {
        ACTION => {
            let action = if s.running {
                "migrate"
            } else if s.rebuild.is_some() {
                "rebuild"
            // Regions left to resync once a migration has ended, every
            // member in sync: the thread takes them up on its next round
            // (not "idle" before it does).
            } else if s.resync.is_some() || resync_pending(a) {
                "resync"
            } else if let Some((mode, _, _)) = s.scrub {
                if mode == ScrubMode::Check {
                    "check"
                } else {
                    "repair"
                }
            } else if s.state == ArrayState::Paused && !s.failed {
                "pause"
            } else {
                "idle"
            };
            writeln!(out, "{action}")
        }
        STATE => writeln!(out, "{}", health::state_name(s.state, s.failed, a.condition())),
        LEVEL => writeln!(out, "{}", a.target().level().name()),
        SOURCE_LEVEL => writeln!(out, "{}", a.source().level().name()),
        CHUNK_KB => writeln!(out, "{}", a.target().chunk_sectors() / 2),
        RESHAPE if a.control().migrating() => {
            let shape = |g: Geometry| (g.level().name(), g.members(), g.chunk_sectors() / 2);
            let ((l0, n0, c0), (l1, n1, c1)) = (shape(a.source()), shape(a.target()));
            writeln!(out, "{l0} over {n0}, chunk {c0} KiB -> {l1} over {n1}, chunk {c1} KiB")
        }
        RESHAPE => writeln!(out, "none"),
        MEMBERS => {
            let m = a.members();
            for role in 0..m.count() {
                let sep = if role == 0 { "" } else { "," };
                write!(out, "{sep}{}", m.path(role))?;
            }
            writeln!(out)
        }
        ROLES => {
            let m = a.members();
            let health = m.health();
            for role in 0..m.count() {
                match health.rebuild.filter(|r| r.role == role) {
                    Some(r) => writeln!(out, "{role} {} {} {}", m.path(role), RoleState::Rebuilding.name(), r.position)?,
                    None => {
                        let state = if health.failed.contains(role) { RoleState::Faulty } else { RoleState::InSync };
                        writeln!(out, "{role} {} {}", m.path(role), state.name())?;
                    }
                }
            }
            Ok(())
        }
        SPARES => {
            let mut r = Ok(());
            a.members().for_each_spare(|p| r = r.and_then(|()| writeln!(out, "{}", p)));
            r
        }
        PROGRESS if s.rebuild.is_some() => {
            let (_, done, total) = s.rebuild.unwrap_or_default();
            writeln!(out, "{done}/{total}")
        }
        PROGRESS if s.resync.is_some() => match s.resync {
            Some((done, total)) => writeln!(out, "{done}/{total}"),
            None => Ok(()),
        },
        PROGRESS if s.scrub.is_some() => match s.scrub {
            Some((_, done, total)) => writeln!(out, "{done}/{total}"),
            None => Ok(()),
        },
        MISMATCH_CNT => writeln!(out, "{}", s.mismatches),
        ETA => {
            // Of what runs: a migration, a rebuild, a resync or a scrub.
            let (done, total) = match (s.rebuild, s.resync, s.scrub) {
                (Some((_, d, t)), _, _) | (_, Some((d, t)), _) | (_, _, Some((_, d, t))) => (d, t),
                _ if s.running => s.view.progress(),
                _ => (0, 0),
            };
            match pace::eta_seconds(done, total, s.speed_kbps).filter(|_| total > done) {
                Some(secs) => writeln!(out, "{secs}"),
                None => writeln!(out, "none"),
            }
        }
        BITMAP => match a.bitmap().geometry().filter(|_| a.bitmap().active()) {
            Some(g) => writeln!(
                out,
                "{} KiB regions: {} of {} dirty, {} to resync",
                g.region_sectors() / 2,
                a.bitmap().dirty_count(),
                g.regions(),
                a.bitmap().unsynced_count()
            ),
            None => writeln!(out, "none"),
        },
        PROGRESS => {
            let (done, total) = s.view.progress();
            writeln!(out, "{done}/{total}")
        }
        CHECKPOINT => writeln!(out, "{}", s.view.checkpoint_sector()),
        UNITS_DONE => writeln!(out, "{}", s.stats.units_done),
        UNITS_STAGED => writeln!(out, "{}", s.stats.units_staged),
        UNITS_MOVED => writeln!(out, "{}", s.stats.units_moved),
        CHECKPOINT_WRITES => writeln!(out, "{}", s.stats.checkpoint_writes),
        SPEED => writeln!(out, "{}", s.speed_kbps),
        SPEED_LIMIT => writeln!(out, "{}", a.control().speed_limit_kbps()),
        _ => Ok(()),
    }
}

unsafe extern "C" fn show<const K: usize>(
    dev: *mut bindings::device,
    _attr: *mut bindings::device_attribute,
    buf: *mut u8,
) -> isize {
    // SAFETY: called by sysfs for our disk's device.
    let a = unsafe { array_of(dev) };
    let mut page = Page { buf, len: 0 };
    let _ = show_attr::<K>(a, &mut page);
    page.len as isize
}

/// Takes a write of `input` to attribute `K` of `a`; changes nothing unless
/// the input is valid (`EINVAL` otherwise, or what the change met).
fn store_attr<const K: usize>(a: &Array, input: &[u8]) -> Result {
    let invalid = |e: config::ConfigError| {
        pr_err!("{}: {}\n", a.members().name(), e.message());
        EINVAL
    };
    match K {
        ACTION => a.command(config::parse_command(input).map_err(invalid)?),
        SPEED_LIMIT => {
            config::parse_speed_limit(input).map(|v| a.control().set_speed_limit_kbps(v)).map_err(invalid)
        }
        ADD => a.add_device(config::parse_device_path(input).map_err(invalid)?),
        REMOVE => a.remove(config::parse_remove(input).map_err(invalid)?),
        RESHAPE => a.reshape(input),
        _ => Err(EINVAL),
    }
}

unsafe extern "C" fn store<const K: usize>(
    dev: *mut bindings::device,
    _attr: *mut bindings::device_attribute,
    buf: *const u8,
    count: usize,
) -> isize {
    // SAFETY: called by sysfs for our disk's device; `buf` holds `count`
    // bytes.
    let (a, input) = unsafe { (array_of(dev), core::slice::from_raw_parts(buf, count)) };
    match store_attr::<K>(a, input) {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

const ACTION: usize = 0;
const STATE: usize = 1;
const LEVEL: usize = 2;
const SOURCE_LEVEL: usize = 3;
const CHUNK_KB: usize = 4;
const MEMBERS: usize = 5;
const PROGRESS: usize = 6;
const CHECKPOINT: usize = 7;
const UNITS_DONE: usize = 8;
const UNITS_STAGED: usize = 9;
const CHECKPOINT_WRITES: usize = 10;
const SPEED: usize = 11;
const SPEED_LIMIT: usize = 12;
const ROLES: usize = 13;
const ADD: usize = 14;
const SPARES: usize = 15;
const MISMATCH_CNT: usize = 16;
const BITMAP: usize = 17;
const ETA: usize = 18;
const REMOVE: usize = 19;
const RESHAPE: usize = 20;
const UNITS_MOVED: usize = 21;
const N: usize = 22;

const fn attr(name: &'static CStr, show: ShowFn, store: Option<StoreFn>) -> bindings::device_attribute {
    // SAFETY: an attribute is valid zeroed (no lockdep key: a static one).
    let mut a: bindings::device_attribute = unsafe { MaybeUninit::zeroed().assume_init() };
    a.attr.name = name.as_char_ptr();
    a.attr.mode = if store.is_some() { 0o644 } else { 0o444 };
    a.show = Some(show);
    a.store = store;
    a
}

/// Statics that the kernel reads through raw pointers (and lockdep may
/// annotate): kept writable and shared.
#[repr(transparent)]
struct Shared<T>(UnsafeCell<T>);
// SAFETY: written only by the kernel's sysfs/lockdep code, which serialises.
unsafe impl<T> Sync for Shared<T> {}

static ATTRS: Shared<[bindings::device_attribute; N]> = Shared(UnsafeCell::new([
    attr(kernel::c_str!("action"), show::<ACTION>, Some(store::<ACTION>)),
    attr(kernel::c_str!("state"), show::<STATE>, None),
    attr(kernel::c_str!("level"), show::<LEVEL>, None),
    attr(kernel::c_str!("source_level"), show::<SOURCE_LEVEL>, None),
    attr(kernel::c_str!("chunk_kb"), show::<CHUNK_KB>, None),
    attr(kernel::c_str!("members"), show::<MEMBERS>, None),
    attr(kernel::c_str!("progress"), show::<PROGRESS>, None),
    attr(kernel::c_str!("checkpoint"), show::<CHECKPOINT>, None),
    attr(kernel::c_str!("units_done"), show::<UNITS_DONE>, None),
    attr(kernel::c_str!("units_staged"), show::<UNITS_STAGED>, None),
    attr(kernel::c_str!("checkpoint_writes"), show::<CHECKPOINT_WRITES>, None),
    attr(kernel::c_str!("speed_kbps"), show::<SPEED>, None),
    attr(kernel::c_str!("speed_limit_max_kbps"), show::<SPEED_LIMIT>, Some(store::<SPEED_LIMIT>)),
    attr(kernel::c_str!("roles"), show::<ROLES>, None),
    attr(kernel::c_str!("add"), show::<ADD>, Some(store::<ADD>)),
    attr(kernel::c_str!("spares"), show::<SPARES>, None),
    attr(kernel::c_str!("mismatch_cnt"), show::<MISMATCH_CNT>, None),
    attr(kernel::c_str!("bitmap"), show::<BITMAP>, None),
    attr(kernel::c_str!("eta_seconds"), show::<ETA>, None),
    attr(kernel::c_str!("remove"), show::<REMOVE>, Some(store::<REMOVE>)),
    attr(kernel::c_str!("reshape"), show::<RESHAPE>, Some(store::<RESHAPE>)),
    attr(kernel::c_str!("units_moved"), show::<UNITS_MOVED>, None),
]));

const fn attr_ptr(i: usize) -> *mut bindings::attribute {
    // `attr` is the first field of a `device_attribute`.
    addr_of!(ATTRS).cast::<bindings::device_attribute>().cast_mut().wrapping_add(i).cast()
}

static ATTR_PTRS: Shared<[*mut bindings::attribute; N + 1]> = Shared(UnsafeCell::new([
    attr_ptr(0),
    attr_ptr(1),
    attr_ptr(2),
    attr_ptr(3),
    attr_ptr(4),
    attr_ptr(5),
    attr_ptr(6),
    attr_ptr(7),
    attr_ptr(8),
    attr_ptr(9),
    attr_ptr(10),
    attr_ptr(11),
    attr_ptr(12),
    attr_ptr(13),
    attr_ptr(14),
    attr_ptr(15),
    attr_ptr(16),
    attr_ptr(17),
    attr_ptr(18),
    attr_ptr(19),
    attr_ptr(20),
    attr_ptr(21),
    core::ptr::null_mut(),
]));

static GROUP: Shared<bindings::attribute_group> = Shared(UnsafeCell::new({
    // SAFETY: a group is valid zeroed (no callbacks, no binary attributes).
    let mut g: bindings::attribute_group = unsafe { MaybeUninit::zeroed().assume_init() };
    g.name = kernel::c_str!("raidmig").as_char_ptr();
    g.attrs = addr_of!(ATTR_PTRS).cast::<*mut bindings::attribute>().cast_mut();
    g
}));

static GROUPS: Shared<[*const bindings::attribute_group; 2]> =
    Shared(UnsafeCell::new([addr_of!(GROUP).cast::<bindings::attribute_group>(), core::ptr::null()]));

/// The NULL-terminated list of attribute groups for `device_add_disk`.
pub(crate) fn groups() -> *mut *const bindings::attribute_group {
    GROUPS.0.get().cast()
}
