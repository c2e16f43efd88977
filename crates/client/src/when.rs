//! Times for people: a millisecond timestamp as a UTC date and time (RFC 3339), as the CLI's
//! tables and sentences show them. `--json` keeps the raw milliseconds.

/// `ms` since the epoch as `2026-12-07T12:01:02.345Z`; one word, so tables stay columns.
pub fn utc(ms: u64) -> String {
    let t = i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t.hour(), t.minute(), t.second(), t.millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_as_utc_dates_leap_days_included() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }
}
