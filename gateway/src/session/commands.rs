//! The answers to a client's events: `subscribe`, `unsubscribe`,
//! `heartbeat` and `refresh`, each with the `error` events its bad parts
//! deserve.

use crate::session::client::Client;
use protocol::{Channel, ErrorCode};
use serde_json::{json, Value};
use std::collections::HashSet;

impl Client {
    pub(super) fn subscribe(&self, data: Option<&Value>) -> Value {
        let names = match channel_list(data) {
            Ok(names) => names,
            Err(details) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid subscribe payload",
                    details,
                )
            }
        };
        let wanted = self.vet(names);
        let mut joined = self.joined();
        let joining: Vec<Channel> = wanted
            .iter()
            .copied()
            .filter(|c| !std::mem::replace(&mut joined[c.index()], true))
            .collect();
        let mut payload =
            json!({ "channels": wanted.iter().map(|c| c.name()).collect::<Vec<_>>() });
        // Held across the join so that nothing written meanwhile is counted
        // before the session's starting point.
        let mut delivery = self.delivery();
        self.handles.rooms.join(
            &self.identity.account,
            &joining,
            self.id,
            &self.outbox,
            |starts| {
                // Where each log or signal channel starts (`live_after`:
                // every entry after it comes live, so a dashboard can read
                // what came before with no gap and no overlap). The reply
                // goes out before the snapshots and any live frame.
                let mut live_after = serde_json::Map::new();
                for &(channel, last) in starts {
                    // Entries up to the join are not this session's.
                    delivery.start_at(channel, last, last);
                    live_after.insert(channel.name().to_owned(), last.into());
                }
                if !live_after.is_empty() {
                    payload["live_after"] = Value::Object(live_after);
                }
                self.reply("subscribed", &payload);
            },
        );
        payload
    }

    pub(super) fn unsubscribe(&self, data: Option<&Value>) -> Value {
        let names = match channel_list(data) {
            Ok(names) => names,
            Err(details) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid unsubscribe payload",
                    details,
                )
            }
        };
        let leaving = self.vet(names);
        {
            let mut joined = self.joined();
            for channel in &leaving {
                if std::mem::take(&mut joined[channel.index()]) {
                    self.handles
                        .rooms
                        .leave(&self.identity.account, *channel, self.id);
                }
            }
        }
        let payload = json!({ "channels": leaving.iter().map(|c| c.name()).collect::<Vec<_>>() });
        self.reply("unsubscribed", &payload);
        payload
    }

    pub(super) fn heartbeat(&self, data: Option<&Value>) -> Value {
        let client_timestamp = match data {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Object(map)) => match map.get("timestamp") {
                None | Some(Value::Null) => Value::Null,
                Some(ts @ Value::Number(_)) => ts.clone(),
                Some(_) => {
                    return self.error(
                        ErrorCode::InvalidPayload,
                        "Invalid heartbeat payload",
                        "`timestamp` must be a number (epoch milliseconds)",
                    )
                }
            },
            Some(_) => {
                return self.error(
                    ErrorCode::InvalidPayload,
                    "Invalid heartbeat payload",
                    "expected {\"timestamp\": <epoch ms>}",
                )
            }
        };
        let payload = json!({
            "timestamp": protocol::time::now_epoch_ms(),
            "client_timestamp": client_timestamp,
        });
        self.reply("heartbeat_ack", &payload);
        payload
    }

    /// Renews the connection in place with a new token of the same user
    /// and account: `refreshed {expires_at}`. A token that does not verify,
    /// or is someone else's, gets `UNAUTHORIZED` and changes nothing: the
    /// old one runs until it expires. The channels stay those joined.
    pub(super) fn refresh(&self, data: Option<&Value>) -> Value {
        let Some(token) = data.and_then(|d| d.get("token")).and_then(Value::as_str) else {
            return self.error(
                ErrorCode::InvalidPayload,
                "Invalid refresh payload",
                "expected {\"token\": \"<JWT>\"}",
            );
        };
        match self.handles.verifier.verify(token) {
            Ok(renewed)
                if renewed.user == self.identity.user
                    && renewed.account == self.identity.account =>
            {
                self.expires_at.send_replace(renewed.expires_at);
                let payload = json!({ "expires_at": super::client::rfc3339(renewed.expires_at) });
                self.reply("refreshed", &payload);
                payload
            }
            Ok(_) => self.error(
                ErrorCode::Unauthorized,
                "Refresh refused",
                "the token is for another user or account; the current one stays until it expires",
            ),
            Err(e) => self.error(
                ErrorCode::Unauthorized,
                "Refresh refused",
                format!("{e}; the current token stays until it expires"),
            ),
        }
    }

    /// Known, allowed channels in request order without repeats. Each
    /// distinct rejected name gets one `error` (`UNKNOWN_CHANNEL` or
    /// `FORBIDDEN_CHANNEL`), the first [`MAX_CHANNEL_ERRORS`] of them; the
    /// rest are counted in one summary, so one request never answers with
    /// thousands of frames.
    fn vet(&self, names: &[Value]) -> Vec<Channel> {
        let mut ok = Vec::new();
        let mut rejected: HashSet<&Value> = HashSet::new();
        let mut unreported = 0usize;
        for name in names {
            let text = name.as_str().unwrap_or_default();
            let verdict = match text.parse::<Channel>() {
                Ok(c) if self.identity.may_see(c) => {
                    if !ok.contains(&c) {
                        ok.push(c)
                    }
                    continue;
                }
                Ok(c) => (
                    ErrorCode::ForbiddenChannel,
                    "Channel not allowed",
                    format!("your token does not allow `{c}`"),
                ),
                Err(_) => (
                    ErrorCode::UnknownChannel,
                    "Unknown channel",
                    format!(
                        "{} is not one of quotes, positions, orders, logs, signals, account",
                        truncate(&name.to_string())
                    ),
                ),
            };
            if !rejected.insert(name) {
                continue;
            }
            if rejected.len() > MAX_CHANNEL_ERRORS {
                unreported += 1;
                continue;
            }
            let (code, error, details) = verdict;
            self.error(code, error, details);
        }
        if unreported > 0 {
            self.error(
                ErrorCode::UnknownChannel,
                "More channels rejected",
                format!(
                    "and {} more channel names that are unknown or not allowed",
                    thousands(unreported)
                ),
            );
        }
        ok
    }
}

/// Rejected channel names answered one by one in a request; the rest get
/// one summary `error`.
const MAX_CHANNEL_ERRORS: usize = 6;

/// `4994` → `4,994`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `{"channels": [...]}` → the list, or why not.
pub(crate) fn channel_list(data: Option<&Value>) -> Result<&[Value], String> {
    match data {
        Some(Value::Object(map)) => match map.get("channels") {
            Some(Value::Array(list)) => Ok(list),
            Some(_) => Err("`channels` must be a list of channel names".into()),
            None => Err("expected {\"channels\": [...]}".into()),
        },
        _ => Err("expected {\"channels\": [...]}".into()),
    }
}

/// Client-supplied text echoed in errors is cut short.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
