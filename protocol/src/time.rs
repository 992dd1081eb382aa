//! Timestamps as the spec writes them: RFC 3339, UTC, with a `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as an RFC 3339 UTC string with millisecond precision.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch.
pub fn now_epoch_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_utc_rfc3339() {
        let s = super::now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert!(chrono::DateTime::parse_from_rfc3339(&s).is_ok());
    }
}
