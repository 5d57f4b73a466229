//! Crash simulation of the load sequence, the migration engine and the host
//! I/O path (see `sim` for the model): exhaustive crash points and member
//! I/O errors on small configurations, sampled ones on the geometries users
//! run (chunks from 4 KiB to 4 MiB, 2 to 16 members, copy buffers that need
//! many halvings), and proof that deliberately broken variants of the engine
//! are caught.

mod sim;

use raidmig_core::engine::{EngineConfig, Fault};
use raidmig_core::layout::{Geometry, Level};
use sim::{simulate, summary, Crashes, Report, SimConfig};

const TARGETS: [Level; 4] = [Level::Raid0, Level::Raid1, Level::Raid5, Level::Raid10];

fn check(name: &str, total: &Report) {
    println!("{name}: {}", summary(total));
    for f in total.failures.iter().take(5) {
        println!("  {f}");
    }
    assert!(total.failures.is_empty(), "{} failures, first: {}", total.failures.len(), total.failures[0]);
}

/// Single to raid0/1/5/10 over 2 to 5 members, one- and two-stripe units,
/// a power cut at every write with every outcome of the volatile caches.
#[test]
fn exhaustive_crashes_small_configurations() {
    let mut total = Report::default();
    let mut seed = 1;
    for level in TARGETS {
        for members in 2..=5 {
            for unit_stripes in [1, 2] {
                seed += 1;
                let cfg = SimConfig::new(level, members, unit_stripes, seed);
                total.add(&simulate(&cfg, Crashes::Every));
            }
        }
    }
    assert!(total.crash_points > 1000);
    assert!(total.units_staged > 0, "no configuration went through staging");
    assert!(total.reloads > 0, "no unload and reload happened");
    assert!(total.checkpoint_writes < total.units + total.staging_records);
    assert!(total.torn_sectors > 0, "no superblock sector was torn");
    assert!(total.drained > 0, "no host request was drained by the engine");
    check("exhaustive, single to raid0/1/5/10 over 2-5 members", &total);
}

/// The same with a buffer smaller than a stripe (units copied in slices)
/// and with three-stripe units, on striped targets.
#[test]
fn exhaustive_crashes_sliced_buffers() {
    let mut total = Report::default();
    let mut seed = 100;
    for level in [Level::Raid0, Level::Raid5, Level::Raid10] {
        for members in [2, 3, 5] {
            seed += 1;
            let mut cfg = SimConfig::new(level, members, 3, seed);
            cfg.chunk = 16;
            cfg.rows = 9;
            // One 4 KiB slice of every chunk of a stripe, plus parity.
            let stripe_chunks = Geometry::new(level, members, 16, 16 * 9).unwrap().stripe_chunks() as usize;
            cfg.buffer = (stripe_chunks + 1) * 4096;
            total.add(&simulate(&cfg, Crashes::Every));
        }
    }
    check("exhaustive, sliced buffers and 3-stripe units", &total);
}

/// Copy buffers of several stripes: the engine copies a group of stripes
/// per batch of reads and then of writes (the batches land in any order,
/// see the simulator's `write_all`), units of 3 and 5 stripes split into
/// groups of 2 and 3; 16 members give batches larger than the engine's
/// (submitted in parts).
#[test]
fn exhaustive_crashes_multi_stripe_buffers() {
    let mut total = Report::default();
    let mut seed = 200;
    for (level, members, group, unit_stripes) in [
        (Level::Raid0, 3, 2, 3),
        (Level::Raid1, 2, 2, 3),
        (Level::Raid5, 3, 2, 3),
        (Level::Raid5, 4, 3, 5),
        (Level::Raid10, 4, 2, 3),
        (Level::Raid10, 3, 3, 5),
        (Level::Raid10, 16, 3, 5),
        (Level::Raid0, 16, 3, 3),
    ] {
        seed += 1;
        let mut cfg = SimConfig::new(level, members, unit_stripes, seed);
        cfg.chunk = 16;
        cfg.rows = 10;
        let g = Geometry::new(level, members, 16, 16 * 10).unwrap();
        let slots = g.stripe_chunks() as usize + g.level().has_parity() as usize;
        cfg.buffer = group * slots * 16 * 512;
        total.add(&simulate(&cfg, Crashes::Every));
    }
    check("exhaustive, buffers of several stripes", &total);
}

/// Larger configurations, random crash points with seeded randomness,
/// including layouts other than single as the source.
#[test]
fn sampled_crashes_larger_configurations() {
    let heavy = !cfg!(debug_assertions);
    let samples = if heavy { 120 } else { 12 };
    let mut total = Report::default();
    let mut seed = 1000;
    for level in TARGETS {
        for members in [3, 4, 5] {
            seed += 1;
            let mut cfg = SimConfig::new(level, members, 1 + (seed % 4) as u32, seed);
            cfg.chunk = 16;
            cfg.rows = if heavy { 96 } else { 24 };
            cfg.engine = EngineConfig {
                max_units_between_checkpoints: 16,
                max_ms_between_checkpoints: 200,
                ..cfg.engine
            };
            total.add(&simulate(&cfg, Crashes::Sample(samples)));
        }
    }
    // Other pairs the same engine serves: raid0 gaining a member, a chunk
    // size change, raid1 to raid5.
    let rows = if heavy { 64 } else { 16 };
    let others = [
        (Geometry::new(Level::Raid0, 2, 16, 16 * rows).unwrap(), Level::Raid0, 3, 16),
        (Geometry::new(Level::Raid0, 3, 8, 16 * rows).unwrap(), Level::Raid0, 3, 16),
        (Geometry::new(Level::Raid1, 2, 16, 16 * rows).unwrap(), Level::Raid5, 3, 16),
        (Geometry::new(Level::Raid5, 3, 16, 16 * rows).unwrap(), Level::Raid5, 4, 16),
    ];
    for (source, level, members, chunk) in others {
        seed += 1;
        let mut cfg = SimConfig::new(level, members, 1, seed);
        cfg.source = Some(source);
        cfg.chunk = chunk;
        cfg.rows = rows;
        total.add(&simulate(&cfg, Crashes::Sample(samples)));
    }
    assert!(total.crash_points > 0);
    check("sampled, larger configurations", &total);
}

/// A member I/O error at every engine I/O in turn (no power cut), on small
/// configurations of every level: the migration must still end right, with
/// every acknowledged write in place, after the engine is resumed.
#[test]
fn exhaustive_member_errors_small_configurations() {
    let mut total = Report::default();
    let mut seed = 300;
    for level in TARGETS {
        for (members, unit_stripes) in [(2, 2), (3, 1), (4, 2)] {
            seed += 1;
            let mut cfg = SimConfig::new(level, members, unit_stripes, seed);
            cfg.rows = 8;
            cfg.reload = 20;
            total.add(&simulate(&cfg, Crashes::EveryError));
        }
    }
    assert!(total.error_points > 500, "{}", total.error_points);
    assert!(total.host_refused + total.staged_requests > 0, "no request met a halted engine");
    check("every member I/O error, single to raid0/1/5/10", &total);
}

/// The geometries users run: chunks of 4 KiB, 64 KiB, 512 KiB and 4 MiB,
/// 2 to 16 members, and copy buffers of one 4 KiB slice per chunk, which the
/// engine reaches by halving its slice many times (a 4 MiB chunk: ten).
#[test]
fn sampled_crashes_realistic_geometries() {
    let heavy = !cfg!(debug_assertions);
    let samples = if heavy { 24 } else { 3 };
    let mut total = Report::default();
    let mut seed = 5000;
    // (level, members, chunk in sectors, rows)
    let shapes = [
        (Level::Raid5, 16, 8, 6),
        (Level::Raid10, 16, 8, 4),
        (Level::Raid0, 16, 128, 2),
        (Level::Raid1, 2, 128, 24),
        (Level::Raid5, 8, 128, 4),
        (Level::Raid10, 5, 1024, 3),
        (Level::Raid5, 3, 1024, 4),
        (Level::Raid0, 2, 8192, 2),
        (Level::Raid5, 3, 8192, 2),
        (Level::Raid10, 3, 8192, 2),
    ];
    for (level, members, chunk, rows) in shapes {
        seed += 1;
        let mut cfg = SimConfig::new(level, members, 1, seed);
        cfg.chunk = chunk;
        cfg.rows = rows;
        let stripe_chunks = Geometry::new(level, members, chunk, chunk as u64 * rows).unwrap().stripe_chunks();
        // One 4 KiB slice of every chunk of a stripe, plus parity.
        cfg.buffer = (stripe_chunks as usize + 1) * 4096;
        cfg.host_chunks = 1;
        if chunk >= 1024 {
            // Thousands of engine I/Os per unit: host requests and injected
            // errors per engine I/O are scaled down, or no unit would ever
            // complete (member errors are explored exhaustively above).
            cfg.host_write = 4;
            cfg.host_read = 3;
            cfg.host_flush = 2;
            cfg.io_errors = 0;
        }
        cfg.engine = EngineConfig { max_units_between_checkpoints: 3, max_ms_between_checkpoints: 100, ..cfg.engine };
        let r = simulate(&cfg, Crashes::Sample(samples));
        println!("{}: {} crash points, {} units", cfg.name(), r.crash_points, r.units);
        total.add(&r);
    }
    assert!(total.units_staged > 0);
    check("sampled, realistic geometries", &total);
}

/// The reshapes of an assembled array (issue order: members added, chunk
/// changed, level changed), through the same engine: sampled power cuts on
/// small geometries, and on realistic chunks for a chunk change both ways
/// and a raid5 grow. Units come from the planner's `unit_rows_for`, whole
/// stripes of both layouts (a chunk shrink needs more than one target
/// stripe per unit); every unit of a chunk change goes through staging.
#[test]
fn sampled_crashes_reshape_pairs() {
    use Level::*;
    let heavy = !cfg!(debug_assertions);
    let samples = if heavy { 60 } else { 6 };
    let mut total = Report::default();
    let mut seed = 7000;
    // (source level, members, chunk; target level, members, chunk; member
    // data area in sectors)
    let pairs = [
        (Raid0, 3, 16, Raid0, 5, 16, 768),
        (Raid5, 3, 16, Raid5, 5, 16, 768),
        (Raid10, 4, 16, Raid10, 5, 16, 768),
        (Raid10, 2, 16, Raid10, 3, 16, 768),
        (Raid0, 3, 16, Raid0, 3, 32, 768),
        (Raid0, 3, 32, Raid0, 3, 16, 768),
        (Raid5, 3, 16, Raid5, 3, 32, 768),
        (Raid5, 3, 32, Raid5, 3, 16, 768),
        (Raid10, 4, 16, Raid10, 4, 32, 768),
        (Raid10, 3, 32, Raid10, 3, 16, 768),
        (Raid1, 2, 16, Raid5, 4, 16, 768),
        (Raid0, 2, 16, Raid5, 3, 16, 768),
        (Raid0, 2, 16, Raid10, 4, 16, 768),
        (Raid5, 3, 16, Raid0, 3, 16, 768),
        (Raid1, 2, 16, Raid10, 4, 16, 768),
        // 64 KiB to 512 KiB and back, 4 KiB to 64 KiB, a raid5 grow with
        // 64 KiB chunks.
        (Raid5, 4, 128, Raid5, 4, 1024, 4096),
        (Raid5, 4, 1024, Raid5, 4, 128, 4096),
        (Raid10, 3, 8, Raid10, 3, 128, 512),
        (Raid5, 3, 128, Raid5, 4, 128, 2048),
    ];
    for (sl, sn, sc, tl, tn, tc, data) in pairs {
        seed += 1;
        let mut cfg = SimConfig::new(tl, tn, 1, seed);
        cfg.source = Some(Geometry::new(sl, sn, sc, data).unwrap());
        cfg.chunk = tc;
        cfg.rows = data / tc as u64;
        if data > 1024 {
            // Longer units: fewer host requests per engine I/O, so that
            // units complete (as in the realistic geometries above).
            cfg.host_write = 10;
            cfg.host_read = 8;
            cfg.host_flush = 4;
            cfg.io_errors = 2;
        }
        let r = simulate(&cfg, Crashes::Sample(samples));
        println!("{}: {} crash points, {} units ({} staged)", cfg.name(), r.crash_points, r.units, r.units_staged);
        assert!(r.crash_points > 0 && r.units > 0, "{}: nothing explored", cfg.name());
        // Made through the core's reshape checks and superblocks, as the
        // shell makes them; raid5 -> raid0 is not offered yet.
        let offered = !(sl == Raid5 && tl == Raid0);
        assert_eq!(r.reshaped > 0, offered, "{}: made through plan_reshape", cfg.name());
        total.add(&r);
    }
    assert!(total.units_staged > 0);
    check("sampled, reshape pairs", &total);
}

/// The new layout in effect at once: the volume has the target's capacity
/// from the start, host requests over all of it have units moved out of
/// order (with the units their rows overwrite the source of), recorded in
/// the moved-unit map; a power cut at sampled writes, member errors, pauses
/// and reloads. Every acknowledged write, past the source's end included,
/// must survive, and the array must end in the target layout.
#[test]
fn sampled_crashes_with_the_new_layout_at_once() {
    use Level::*;
    let heavy = !cfg!(debug_assertions);
    let samples = if heavy { 60 } else { 6 };
    let mut total = Report::default();
    let mut seed = 9000;
    // (source level, members, chunk; target level, members, chunk)
    let pairs = [
        (Single, 1, 8, Raid0, 3, 8),
        (Single, 1, 8, Raid1, 2, 8),
        (Single, 1, 8, Raid5, 3, 8),
        (Single, 1, 8, Raid10, 4, 8),
        (Raid0, 3, 16, Raid0, 5, 16),
        (Raid5, 3, 16, Raid5, 5, 16),
        (Raid10, 4, 16, Raid10, 5, 16),
        (Raid5, 3, 16, Raid5, 3, 32),
        (Raid5, 3, 32, Raid5, 3, 16),
        (Raid0, 2, 16, Raid5, 3, 16),
        (Raid1, 2, 16, Raid5, 4, 16),
        (Raid1, 2, 16, Raid10, 4, 16),
        (Raid0, 2, 16, Raid10, 4, 16),
    ];
    for (sl, sn, sc, tl, tn, tc) in pairs {
        for bitmap in [0, 2048] {
            seed += 1;
            let mut cfg = SimConfig::new(tl, tn, 1, seed);
            let data = if sl == Single { 96 } else { 768 };
            if sl != Single {
                cfg.source = Some(Geometry::new(sl, sn, sc, data).unwrap());
            }
            cfg.chunk = tc;
            cfg.rows = data / tc as u64;
            cfg.at_once = true;
            cfg.bitmap = if tl != Raid0 { bitmap } else { 0 };
            // Writes everywhere, most of them ahead of the engine.
            cfg.host_write = 120;
            let r = simulate(&cfg, Crashes::Sample(samples));
            println!(
                "{}: {} crash points, {} units ({} moved out of order), {} writes past the source",
                cfg.name(),
                r.crash_points,
                r.units,
                r.units_moved,
                r.writes_past_source
            );
            assert!(r.crash_points > 0 && r.units > 0, "{}: nothing explored", cfg.name());
            total.add(&r);
        }
    }
    // Realistic geometries: 64 KiB to 512 KiB chunks, a raid5 grow with
    // 64 KiB chunks, a plain disk to raid5 with 64 KiB chunks; longer
    // units, so fewer host requests per engine I/O.
    let realistic = [
        (Raid5, 4, 128, Raid5, 4, 1024, 4096),
        (Raid5, 3, 128, Raid5, 4, 128, 2048),
        (Single, 1, 128, Raid5, 3, 128, 2048),
    ];
    for (sl, sn, sc, tl, tn, tc, data) in realistic {
        seed += 1;
        let mut cfg = SimConfig::new(tl, tn, 1, seed);
        if sl != Single {
            cfg.source = Some(Geometry::new(sl, sn, sc, data).unwrap());
        }
        cfg.chunk = tc;
        cfg.rows = data / tc as u64;
        cfg.at_once = true;
        cfg.bitmap = 2048;
        cfg.host_write = 30;
        cfg.host_read = 8;
        cfg.host_flush = 4;
        cfg.io_errors = 2;
        let r = simulate(&cfg, Crashes::Sample(samples / 3));
        println!("{}: {} crash points, {} units ({} moved out of order)", cfg.name(), r.crash_points, r.units, r.units_moved);
        assert!(r.crash_points > 0 && r.units > 0, "{}: nothing explored", cfg.name());
        total.add(&r);
    }
    assert!(total.units_moved > 0, "no unit was moved out of order");
    assert!(total.writes_past_source > 0, "no write past the source's end");
    check("sampled, the new layout at once", &total);
}

/// Copying a unit without publishing it in flight first lets host requests
/// routed by an older view reach its source while it is read, and its rows
/// while they change: the simulator must notice.
#[test]
fn broken_engine_without_in_flight_publish_is_caught() {
    let mut total_bad = Report::default();
    for seed in 0..6 {
        let mut cfg = SimConfig::new(Level::Raid5, 3, 2, 900 + seed);
        cfg.host_write = 250;
        cfg.host_read = 150;
        cfg.io_errors = 0;
        let good = simulate(&cfg, Crashes::None);
        assert!(good.failures.is_empty(), "{}", good.failures[0]);
        cfg.engine.fault = Some(Fault::NoInFlightPublish);
        total_bad.add(&simulate(&cfg, Crashes::None));
    }
    println!("without publishing the unit in flight: {}", summary(&total_bad));
    assert!(!total_bad.failures.is_empty(), "the simulator missed a broken engine");
}

/// Skipping the overlap trigger lets a unit overwrite source data that
/// recovery still needs: the simulator must notice.
#[test]
fn broken_engine_without_overlap_checkpoint_is_caught() {
    let mut cfg = SimConfig::new(Level::Raid0, 2, 1, 7);
    cfg.engine = EngineConfig {
        max_units_between_checkpoints: 1000,
        max_ms_between_checkpoints: 1_000_000,
        ..cfg.engine
    };
    cfg.host_write = 0;
    // Sanity: the correct engine passes this very configuration.
    let good = simulate(&cfg, Crashes::Every);
    assert!(good.failures.is_empty(), "{}", good.failures[0]);
    cfg.engine.fault = Some(Fault::SkipOverlapCheckpoint);
    let bad = simulate(&cfg, Crashes::Every);
    println!("without the overlap trigger: {}", summary(&bad));
    assert!(!bad.failures.is_empty(), "the simulator missed a broken engine");
}

/// Copying self-overlapping units directly, without staging, must be caught.
#[test]
fn broken_engine_without_staging_is_caught() {
    let mut cfg = SimConfig::new(Level::Raid0, 2, 2, 8);
    cfg.host_write = 0;
    let good = simulate(&cfg, Crashes::Every);
    assert!(good.failures.is_empty(), "{}", good.failures[0]);
    assert!(good.units_staged > 0);
    cfg.engine.fault = Some(Fault::SkipStaging);
    let bad = simulate(&cfg, Crashes::Every);
    println!("without staging: {}", summary(&bad));
    assert!(!bad.failures.is_empty(), "the simulator missed a broken engine");
}

/// With the new layout at once, a broken engine that moves the unit a host
/// request wants without the units its rows overwrite the source of, or
/// that keeps a moved unit's mark in memory only, loses data the host was
/// told is safe: the simulator must notice each.
#[test]
fn broken_engines_moving_out_of_order_are_caught() {
    for fault in [Fault::MoveWithoutChain, Fault::VolatileMoveMark] {
        let mut good = Report::default();
        let mut bad = Report::default();
        for seed in 0..4 {
            let mut cfg = SimConfig::new(Level::Raid5, 3, 1, 9500 + seed);
            cfg.source = Some(Geometry::new(Level::Raid5, 3, 16, 768).unwrap());
            cfg.chunk = 16;
            cfg.rows = 48;
            cfg.members = 5;
            cfg.at_once = true;
            cfg.host_write = 120;
            good.add(&simulate(&cfg, Crashes::Sample(40)));
            cfg.engine.fault = Some(fault);
            bad.add(&simulate(&cfg, Crashes::Sample(40)));
        }
        assert!(good.units_moved > 0);
        check("the same without the fault", &good);
        println!("{fault:?}: {}", summary(&bad));
        println!("  first: {}", bad.failures.first().map_or("", String::as_str));
        assert!(!bad.failures.is_empty(), "the simulator missed a broken engine ({fault:?})");
    }
}

/// Replays one configuration with tracing (run with SIM_TRACE=1 SIM_AT=n).
#[test]
#[ignore]
fn trace_one() {
    let level = match std::env::var("SIM_LEVEL").as_deref() {
        Ok("raid1") => Level::Raid1,
        Ok("raid5") => Level::Raid5,
        Ok("raid10") => Level::Raid10,
        _ => Level::Raid0,
    };
    let members = std::env::var("SIM_MEMBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let unit = std::env::var("SIM_UNIT").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let seed = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut cfg = SimConfig::new(level, members, unit, seed);
    cfg.buffer = env("SIM_BUFFER", 0) as usize;
    cfg.chunk = env("SIM_CHUNK", 8) as u32;
    cfg.rows = env("SIM_ROWS", 12);
    cfg.engine.max_units_between_checkpoints = env("SIM_MAX_UNITS", 6);
    cfg.engine.max_ms_between_checkpoints = env("SIM_MAX_MS", 40);
    let crashes = match env("SIM_SAMPLE", 0) {
        0 => Crashes::Every,
        n => Crashes::Sample(n),
    };
    let r = simulate(&cfg, crashes);
    check("traced configuration", &r);
}



/// With a write-intent bitmap, the capacity a migration adds to raid5 and
/// raid10 is marked unsynced instead of zeroed, and resynced once the
/// migration is over (the run's end resyncs the regions the members' bitmap
/// marks, with the core's scrubber, as the kernel's thread does): a power
/// cut at every write, the bitmap's included, with every outcome.
#[test]
fn exhaustive_crashes_with_a_bitmap() {
    let mut total = Report::default();
    let mut seed = 300;
    for level in [Level::Raid1, Level::Raid5, Level::Raid10] {
        for members in 2..=5 {
            for unit_stripes in [1, 2] {
                seed += 1;
                let mut cfg = SimConfig::new(level, members, unit_stripes, seed);
                cfg.bitmap = 2048;
                total.add(&simulate(&cfg, Crashes::Every));
            }
        }
    }
    assert!(total.crash_points > 1000);
    check("exhaustive with a bitmap, single to raid1/5/10 over 2-5 members", &total);
}

/// Leaving the added capacity unwritten without marking it in the bitmap
/// leaves raid5 parity and raid10 copies that disagree there: the
/// simulator must notice.
#[test]
fn broken_engine_without_new_capacity_mark_is_caught() {
    for (level, members) in [(Level::Raid5, 3), (Level::Raid10, 4)] {
        let mut cfg = SimConfig::new(level, members, 1, 9);
        cfg.bitmap = 2048;
        cfg.host_write = 0;
        let good = simulate(&cfg, Crashes::Every);
        assert!(good.failures.is_empty(), "{}", good.failures[0]);
        cfg.engine.fault = Some(Fault::SkipNewCapacityMark);
        let bad = simulate(&cfg, Crashes::Every);
        println!("{level:?} without the mark: {}", summary(&bad));
        assert!(!bad.failures.is_empty(), "the simulator missed a broken engine on {level:?}");
    }
}
