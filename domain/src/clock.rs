//! The wall clock in the form stored items keep it.

use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch of `t`.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The time `ms` milliseconds after the Unix epoch (the epoch itself when
/// out of range).
pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        assert_eq!(to_ms(from_ms(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(from_ms(i64::MAX), OffsetDateTime::UNIX_EPOCH);
        assert!(now_ms() > 1_700_000_000_000);
    }
}
