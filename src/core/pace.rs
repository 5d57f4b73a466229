//! Pacing of the migration (and of rebuilds, resyncs and scrubs): the speed
//! and time left shown in sysfs, and how long the thread sleeps after a unit
//! to stay under the speed limit.
//!
//! Every computation saturates: any limit and any clock reading give an
//! answer, never an overflow (the limit is bounded when written, see
//! [`super::config::MAX_SPEED_LIMIT_KBPS`], and the clocks are monotonic, but
//! nothing here relies on either).

/// Longest sleep after one unit, in milliseconds: the thread checks its
/// commands at least this often.
pub const MAX_THROTTLE_MS: u64 = 1000;

/// The speed limit kept over any number of units: the time each unit may
/// take at the limit is added to a deadline, and the thread waits until it
/// has passed, in sleeps of at most [`MAX_THROTTLE_MS`] (it checks its
/// commands between them). A single sleep per unit, capped at one second,
/// would let 4 MiB units run at 4 MiB/s under a 1 MiB/s limit. The
/// deadline never lies before the start of the unit that extends it: time
/// spent idle or paused earns no burst later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacer {
    /// Monotonic time (ms) before which nothing more may be moved.
    next_ms: u64,
}

impl Pacer {
    /// A pacer that owes nothing.
    pub const fn new() -> Self {
        Pacer { next_ms: 0 }
    }

    /// Records `bytes` moved by work that started at `start_ms`, under
    /// `limit_kbps` KiB/s (0: no limit, and nothing owed).
    pub fn moved(&mut self, bytes: u64, start_ms: u64, limit_kbps: u64) {
        if limit_kbps == 0 {
            self.next_ms = 0;
            return;
        }
        let allowed = bytes.saturating_mul(1000) / limit_kbps.saturating_mul(1024);
        self.next_ms = self.next_ms.max(start_ms).saturating_add(allowed);
    }

    /// How long to sleep at `now_ms` before moving more under
    /// `limit_kbps` (a limit lifted meanwhile owes nothing): 0 to go on,
    /// never more than [`MAX_THROTTLE_MS`].
    pub fn wait_ms(&self, now_ms: u64, limit_kbps: u64) -> u64 {
        if limit_kbps == 0 {
            return 0;
        }
        self.next_ms.saturating_sub(now_ms).min(MAX_THROTTLE_MS)
    }
}

/// The speed of `bytes` moved in `elapsed_ms`, in KiB/s.
pub fn kbps(bytes: u64, elapsed_ms: u64) -> u64 {
    bytes.saturating_mul(1000) / elapsed_ms.max(1) / 1024
}

/// Seconds left to move `total - done` sectors at `speed_kbps` KiB/s;
/// `None` when nothing moves (no estimate).
pub fn eta_seconds(done: u64, total: u64, speed_kbps: u64) -> Option<u64> {
    if speed_kbps == 0 {
        return None;
    }
    Some((total.saturating_sub(done) / 2).div_ceil(speed_kbps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_never_overflows() {
        assert_eq!(kbps(1 << 20, 1000), 1024);
        assert_eq!(kbps(u64::MAX, 0), u64::MAX / 1024);
    }

    /// Sleeps a thread takes, waking at each sleep's end, until `pacer`
    /// lets it go on at `now`; returns the time it may go on.
    fn sleep_until_allowed(pacer: &Pacer, mut now: u64, limit: u64) -> u64 {
        loop {
            let w = pacer.wait_ms(now, limit);
            if w == 0 {
                return now;
            }
            assert!(w <= MAX_THROTTLE_MS);
            now += w;
        }
    }

    #[test]
    fn units_bigger_than_a_second_at_the_limit_keep_the_limit() {
        // 4 MiB units under 1024 KiB/s, each copied in 100 ms: 16 units
        // take 64 s, not 16 (one second of sleep per unit at most).
        let mut pacer = Pacer::new();
        let mut now = 5_000;
        let start = now;
        for _ in 0..16 {
            now = sleep_until_allowed(&pacer, now, 1024);
            let unit_start = now;
            now += 100;
            pacer.moved(4 << 20, unit_start, 1024);
        }
        now = sleep_until_allowed(&pacer, now, 1024);
        assert_eq!(now - start, 64_000);
        // The same at 100 KiB/s with 1 MiB windows: 10 s 240 ms each.
        let mut pacer = Pacer::new();
        pacer.moved(1 << 20, 0, 100);
        assert_eq!(sleep_until_allowed(&pacer, 0, 100), 10_240);
    }

    #[test]
    fn pacing_owes_nothing_without_a_limit_and_earns_no_burst() {
        let mut pacer = Pacer::new();
        pacer.moved(1 << 30, 0, 1024);
        assert_eq!(pacer.wait_ms(0, 1024), MAX_THROTTLE_MS);
        // The limit lifted: go on at once, and nothing owed after.
        assert_eq!(pacer.wait_ms(0, 0), 0);
        pacer.moved(1 << 20, 0, 0);
        assert_eq!(pacer.wait_ms(0, 1024), 0);
        // Idle for a minute, then two units: the second waits for the first.
        pacer.moved(1 << 20, 60_000, 1024);
        assert_eq!(pacer.wait_ms(60_100, 1024), 900);
        pacer.moved(1 << 20, 61_000, 1024);
        assert_eq!(sleep_until_allowed(&pacer, 61_050, 1024), 62_000);
        // Saturation: any bytes, clock and limit.
        for limit in [1, 1 << 30, u64::MAX] {
            let mut p = Pacer::new();
            p.moved(u64::MAX, u64::MAX, limit);
            p.moved(u64::MAX, 0, limit);
            assert!(p.wait_ms(0, limit) <= MAX_THROTTLE_MS);
        }
    }

    #[test]
    fn time_left() {
        // 100 MiB left at 10 MiB/s.
        assert_eq!(eta_seconds(0, 100 << 11, 10 << 10), Some(10));
        assert_eq!(eta_seconds(100, 100, 5), Some(0));
        assert_eq!(eta_seconds(0, 100, 0), None);
        assert_eq!(eta_seconds(0, u64::MAX, 1), Some(u64::MAX / 2));
        assert_eq!(eta_seconds(u64::MAX, 0, 1), Some(0));
    }
}
