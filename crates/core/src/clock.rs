//! The wall clock as every layer reads it: whole seconds (and milliseconds)
//! since the Unix epoch.
//!
//! Records that cross the wire or outlive the process (tombstones, leases,
//! share expiries, delete-request timestamps) carry Unix seconds, so every
//! layer must read the clock the same way. A clock set before 1970 reads as
//! 0 rather than failing: callers compare timestamps, and an absurd clock
//! already makes every comparison fail safe (expired, too far from now).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_secs() -> u64 {
    unix_secs_at(SystemTime::now())
}

/// `t` as seconds since the Unix epoch (0 if before it).
pub fn unix_secs_at(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_reads_as_zero() {
        assert_eq!(unix_secs_at(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(unix_secs_at(UNIX_EPOCH + Duration::from_secs(5)), 5);
    }

    #[test]
    fn seconds_and_millis_agree() {
        let (s, ms) = (unix_secs(), unix_millis());
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{s} s vs {ms} ms");
    }
}
