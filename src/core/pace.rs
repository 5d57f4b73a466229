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

/// How long to sleep after copying `bytes` in `elapsed_ms`, to average at
/// most `limit_kbps` KiB/s (0: no limit).
pub fn throttle_ms(bytes: u64, elapsed_ms: u64, limit_kbps: u64) -> u64 {
    if limit_kbps == 0 {
        return 0;
    }
    let allowed = bytes.saturating_mul(1000) / limit_kbps.saturating_mul(1024);
    allowed.saturating_sub(elapsed_ms).min(MAX_THROTTLE_MS)
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
    fn throttle_and_speed_never_overflow() {
        assert_eq!(throttle_ms(1 << 20, 10, 0), 0);
        // 1 MiB at 1024 KiB/s: one second, minus what the copy took.
        assert_eq!(throttle_ms(1 << 20, 100, 1024), 900);
        assert_eq!(throttle_ms(1 << 20, 5000, 1024), 0);
        assert_eq!(throttle_ms(1 << 30, 0, 1), MAX_THROTTLE_MS);
        for limit in [1, 1 << 30, u64::MAX] {
            for elapsed in [0, 1, u64::MAX] {
                assert!(throttle_ms(u64::MAX, elapsed, limit) <= MAX_THROTTLE_MS);
            }
        }
        assert_eq!(kbps(1 << 20, 1000), 1024);
        assert_eq!(kbps(u64::MAX, 0), u64::MAX / 1024);
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
