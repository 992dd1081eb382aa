//! Error codes sent in `error` events and `connect_error` messages
//! (contract section 9).

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthorized,
    TokenExpired,
    InvalidPayload,
    PayloadTooLarge,
    UnknownChannel,
    ForbiddenChannel,
    RateLimited,
    UpstreamUnavailable,
    /// A resume could not replay everything missed (contract section 11).
    ResumeGap,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnknownChannel => "UNKNOWN_CHANNEL",
            ErrorCode::ForbiddenChannel => "FORBIDDEN_CHANNEL",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::ResumeGap => "RESUME_GAP",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` event payload: `{"error", "details", "code"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorPayload {
    pub error: String,
    pub details: String,
    pub code: ErrorCode,
}

impl ErrorPayload {
    pub fn new(code: ErrorCode, error: impl Into<String>, details: impl Into<String>) -> Self {
        ErrorPayload {
            error: error.into(),
            details: details.into(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::TokenExpired,
            ErrorCode::InvalidPayload,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnknownChannel,
            ErrorCode::ForbiddenChannel,
            ErrorCode::RateLimited,
            ErrorCode::UpstreamUnavailable,
            ErrorCode::ResumeGap,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
