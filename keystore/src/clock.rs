//! Time as stored (Unix milliseconds) and as shown (RFC 3339, UTC).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g. `2026-11-29T00:37:36.123Z`.
pub fn format_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let ms = parse_rfc3339("2030-01-02T03:04:05.678+01:00").expect("valid");
        assert_eq!(format_rfc3339(ms), "2030-01-02T02:04:05.678Z");
        assert_eq!(parse_rfc3339("2030-01-02"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
        assert!(now_ms() > 1_700_000_000_000);
    }
}
