//! The answers to a client's events: `subscribe`, `unsubscribe` and
//! `heartbeat`, each with the `error` events its bad parts deserve.

use crate::session::client::Client;
use protocol::{Channel, ErrorCode};
use serde_json::{json, Value};

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
        let payload = json!({ "channels": wanted.iter().map(|c| c.name()).collect::<Vec<_>>() });
        // The reply goes out before the snapshots the joins queue.
        self.reply("subscribed", &payload);
        let mut joined = self.joined();
        for channel in wanted {
            if !joined[channel.index()] {
                joined[channel.index()] = true;
                // Held across the join so that nothing written meanwhile
                // is counted before the session's starting point.
                let mut delivery = self.delivery();
                let last =
                    self.handles
                        .rooms
                        .join(&self.identity.account, channel, self.id, &self.outbox);
                if !channel.is_state() {
                    // Entries up to the join are not this session's.
                    delivery.start_at(channel, last);
                }
            }
        }
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

    /// Known, allowed channels in request order without repeats; one
    /// `error` event for each name that is unknown or not allowed.
    fn vet(&self, names: &[Value]) -> Vec<Channel> {
        let mut ok = Vec::new();
        for name in names {
            let text = name.as_str().unwrap_or_default();
            match text.parse::<Channel>() {
                Ok(c) if !self.identity.may_see(c) => {
                    self.error(
                        ErrorCode::ForbiddenChannel,
                        "Channel not allowed",
                        format!("your token does not allow `{c}`"),
                    );
                }
                Ok(c) => {
                    if !ok.contains(&c) {
                        ok.push(c)
                    }
                }
                Err(_) => {
                    self.error(
                        ErrorCode::UnknownChannel,
                        "Unknown channel",
                        format!(
                            "{} is not one of quotes, positions, orders, logs, signals, account",
                            truncate(&name.to_string())
                        ),
                    );
                }
            }
        }
        ok
    }
}

/// `{"channels": [...]}` → the list, or why not.
fn channel_list(data: Option<&Value>) -> Result<&[Value], String> {
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
pub(super) fn truncate(s: &str) -> String {
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
