//! Who is connecting, read the same way on every endpoint: the token from
//! Socket.IO's `auth.token`, else `?token=`, else `Authorization: Bearer`;
//! the session to resume from `auth.session`, else `?session=`, and the
//! last log/signal `seq` the client holds from `auth.last_seq` (`{"logs",
//! "signals"}`), else `?last_logs=`/`?last_signals=`. Then the token is
//! verified and the connection admitted, with one refusal shape for every
//! transport.

use crate::app::AppState;
use crate::observability::metrics;
use crate::session::admission::{self, Admission};
use crate::session::store::ReportedSeq;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use protocol::error_code::ErrorPayload;
use protocol::ErrorCode;
use serde_json::Value;
use std::convert::Infallible;

/// A connection's token and the session it asks to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The JWT (empty when none was given).
    pub token: String,
    /// The session id to resume, if any.
    pub session: Option<String>,
    /// The last log and signal `seq` the client says it has (resume only).
    pub last_seq: ReportedSeq,
}

impl Credentials {
    /// Reads `auth` (Socket.IO's handshake object, when there is one),
    /// then the query string, then the `Authorization` header.
    pub fn read(auth: Option<&Value>, query: Option<&str>, headers: &HeaderMap) -> Credentials {
        let field = |name: &str| {
            auth.and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| query_param(query, name).filter(|s| !s.is_empty()))
        };
        Credentials {
            token: field("token")
                .or_else(|| bearer(headers))
                .unwrap_or_default(),
            session: field("session"),
            last_seq: ReportedSeq {
                logs: reported(auth, query, "logs", "last_logs"),
                signals: reported(auth, query, "signals", "last_signals"),
            },
        }
    }
}

/// A `seq` from `auth.last_seq.<key>` (a number), else `?<param>=`;
/// anything else is as if the client had said nothing.
fn reported(auth: Option<&Value>, query: Option<&str>, key: &str, param: &str) -> Option<u64> {
    let from_auth = auth
        .and_then(|a| a.get("last_seq"))
        .and_then(|l| l.get(key));
    match from_auth {
        Some(v) => v.as_u64(),
        None => query_param(query, param)?.parse().ok(),
    }
}

/// From an HTTP request: the query string and the `Authorization` header.
impl<S: Send + Sync> FromRequestParts<S> for Credentials {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Credentials::read(None, parts.uri.query(), &parts.headers))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Verifies the token and admits the connection; a refusal is counted and
/// says why (its `code` is what Socket.IO clients see).
pub async fn admit(app: &AppState, credentials: &Credentials) -> Result<Admission, ErrorPayload> {
    let verdict = match app.verifier.verify(&credentials.token) {
        Ok(identity) if app.revocations.is_revoked((&identity).into()) => {
            tracing::debug!("connection refused: token revoked");
            Err(ErrorPayload::new(
                ErrorCode::Unauthorized,
                "Authentication failed",
                "token revoked",
            ))
        }
        Ok(identity) => {
            admission::admit(
                &app.sessions,
                identity,
                credentials.session.as_deref(),
                credentials.last_seq,
            )
            .await
        }
        Err(e) => {
            tracing::debug!(error = %e, "connection refused");
            Err(ErrorPayload::new(
                e.code(),
                match e.code() {
                    ErrorCode::TokenExpired => "Token expired",
                    _ => "Authentication failed",
                },
                e.to_string(),
            ))
        }
    };
    if let Err(refusal) = &verdict {
        metrics::auth_refused(refusal.code.as_str());
    }
    verdict
}

/// One query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    #[test]
    fn reads_and_decodes_query_params() {
        let q = Some("EIO=4&token=a%2Bb.c&transport=websocket&session=");
        assert_eq!(query_param(q, "token").as_deref(), Some("a+b.c"));
        assert_eq!(query_param(q, "session").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "token"), None);
    }

    #[test]
    fn auth_then_query_then_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hdr"),
        );
        let auth = json!({"token": "obj", "session": "s1"});
        let c = Credentials::read(Some(&auth), Some("token=q&session=s2"), &headers);
        assert_eq!(c.token, "obj");
        assert_eq!(c.session.as_deref(), Some("s1"));
        let c = Credentials::read(Some(&json!({"token": ""})), Some("token=q"), &headers);
        assert_eq!(c.token, "q");
        assert_eq!(c.session, None);
        let c = Credentials::read(None, Some("token=&session=s2"), &headers);
        assert_eq!(c.token, "hdr");
        assert_eq!(c.session.as_deref(), Some("s2"));
        let c = Credentials::read(Some(&json!("not an object")), None, &HeaderMap::new());
        assert_eq!(c, Credentials::default());
    }

    #[test]
    fn the_reported_position_from_auth_or_the_query() {
        let none = HeaderMap::new();
        let auth = json!({"last_seq": {"logs": 41, "signals": "7"}});
        let c = Credentials::read(Some(&auth), Some("last_signals=9"), &none);
        assert_eq!(c.last_seq.logs, Some(41));
        assert_eq!(c.last_seq.signals, None, "a string is not a seq");
        let c = Credentials::read(None, Some("last_logs=12&last_signals=x"), &none);
        assert_eq!(
            c.last_seq,
            ReportedSeq {
                logs: Some(12),
                signals: None
            }
        );
        let c = Credentials::read(Some(&json!({"last_seq": {"logs": -1}})), None, &none);
        assert_eq!(c.last_seq.logs, None, "negative");
    }
}
