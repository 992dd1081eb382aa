//! NATS transport (async-nats). The client reconnects by itself forever, so
//! a NATS restart is a pause, not a crash; subscriptions are restored by the
//! client on reconnect. Given several servers (a cluster), it connects to
//! one of them and moves to another when that one dies.

use crate::{BusError, BusHealth, BusMessage, Headers, Subscription};
use async_nats::connection::State;
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// One URL or a comma-separated list of servers (see [`server_addrs`]).
    pub url: String,
    /// Shown in `nats server report connections`.
    pub name: String,
}

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    /// Counts (re)connections, so readers can reopen what a server restart
    /// broke (JetStream consumers) instead of waiting for it to time out.
    connections: watch::Receiver<u64>,
}

impl NatsBus {
    /// Connects, waiting for the first server for at most `wait`; after that
    /// the client keeps retrying in the background on its own.
    pub async fn connect(opts: &NatsOptions) -> Result<Self, BusError> {
        let servers = server_addrs(&opts.url)?;
        let (connected_tx, connections) = watch::channel(0u64);
        let connected_tx = Arc::new(connected_tx);
        let mut options = async_nats::ConnectOptions::new();
        // async-nats does not read credentials from the URLs themselves.
        match credentials(&servers).map_err(|reason| BusError::Connect {
            url: redact(&opts.url),
            reason,
        })? {
            Some(Credentials::UserPassword(user, password)) => {
                options = options.user_and_password(user, password)
            }
            Some(Credentials::Token(token)) => options = options.token(token),
            None => {}
        }
        let client = options
            .name(&opts.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100 * attempt as u64).min(2_000))
            })
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        connected_tx.send_modify(|n| *n += 1);
                    }
                    tracing::info!(%event, "nats connection event");
                }
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect {
                url: redact(&opts.url),
                reason: e.to_string(),
            })?;
        Ok(NatsBus {
            client,
            connections,
        })
    }

    /// Changes every time the client (re)connects to a server.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub async fn publish(
        &self,
        subject: String,
        payload: Bytes,
        headers: Headers,
    ) -> Result<(), BusError> {
        let map = to_header_map(&headers);
        let result = match map {
            Some(map) => {
                self.client
                    .publish_with_headers(subject.clone(), map, payload)
                    .await
            }
            None => self.client.publish(subject.clone(), payload).await,
        };
        result.map_err(|e| BusError::Publish {
            subject,
            reason: e.to_string(),
        })
    }

    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let sub = self
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| BusError::Subscribe {
                subject: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(sub
            .map(|m| BusMessage {
                subject: m.subject.to_string(),
                payload: m.payload,
                headers: from_header_map(m.headers.as_ref()),
                seq: None,
                pending: None,
            })
            .boxed())
    }

    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Publish {
            subject: "(flush)".into(),
            reason: e.to_string(),
        })
    }

    pub fn health(&self) -> BusHealth {
        match self.client.connection_state() {
            State::Connected => BusHealth::Up,
            State::Pending | State::Disconnected => BusHealth::Down,
        }
    }
}

/// Parses `NATS_URL`: one server or several separated by commas, each
/// `nats://[user:password@]host[:port]` (scheme and port may be left out).
/// Every server of a cluster should be listed, so that a client can start
/// and keep going while any one of them is down.
pub fn server_addrs(list: &str) -> Result<Vec<ServerAddr>, BusError> {
    let mut servers = Vec::new();
    for one in list.split(',').map(str::trim) {
        if one.is_empty() {
            continue;
        }
        let addr = one.parse::<ServerAddr>().map_err(|e| BusError::Connect {
            url: redact(one),
            reason: e.to_string(),
        })?;
        servers.push(addr);
    }
    if servers.is_empty() {
        return Err(BusError::Connect {
            url: redact(list),
            reason: "no server URL given".into(),
        });
    }
    Ok(servers)
}

/// What a client presents to the servers, from `user:password@` (or a
/// bare `token@`) in the URLs.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    UserPassword(String, String),
    Token(String),
}

/// The credentials the URLs carry: the same on every URL that has any
/// (one client presents one identity to the whole cluster).
fn credentials(servers: &[ServerAddr]) -> Result<Option<Credentials>, String> {
    let mut found: Option<Credentials> = None;
    for server in servers.iter().filter(|s| s.has_user_pass()) {
        let user = server.username().unwrap_or_default().to_owned();
        let this = match server.password() {
            Some(password) => Credentials::UserPassword(user, password.to_owned()),
            None => Credentials::Token(user),
        };
        match &found {
            Some(first) if *first != this => {
                return Err("the servers' URLs carry different credentials".into())
            }
            _ => found = Some(this),
        }
    }
    Ok(found)
}

/// The URL list with every password replaced by `***`, for messages.
pub fn redact(list: &str) -> String {
    list.split(',')
        .map(|one| {
            let one = one.trim();
            let Some((scheme, rest)) = one.split_once("://") else {
                return one.to_owned();
            };
            match rest.split_once('@') {
                Some((user, host)) if user.contains(':') => {
                    let name = user.split(':').next().unwrap_or_default();
                    format!("{scheme}://{name}:***@{host}")
                }
                _ => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn to_header_map(h: &Headers) -> Option<HeaderMap> {
    if h == &Headers::default() {
        return None;
    }
    let mut map = HeaderMap::new();
    if let Some(v) = &h.traceparent {
        map.insert("traceparent", v.as_str());
    }
    if let Some(v) = &h.tracestate {
        map.insert("tracestate", v.as_str());
    }
    if let Some(v) = &h.msg_id {
        map.insert("Nats-Msg-Id", v.as_str());
    }
    Some(map)
}

pub(crate) fn from_header_map(map: Option<&HeaderMap>) -> Headers {
    let Some(map) = map else {
        return Headers::default();
    };
    let get = |k: &str| map.get(k).map(|v| v.as_str().to_owned());
    Headers {
        traceparent: get("traceparent"),
        tracestate: get("tracestate"),
        msg_id: get("Nats-Msg-Id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_gives_every_server() {
        let servers =
            server_addrs("nats://a:4222, nats://b:4223 ,c,,nats://u:p@d:4224").expect("valid list");
        let hosts: Vec<_> = servers
            .iter()
            .map(|s| (s.host().to_owned(), s.port()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("a".to_owned(), 4222),
                ("b".to_owned(), 4223),
                ("c".to_owned(), 4222),
                ("d".to_owned(), 4224)
            ]
        );
        assert!(servers[3].has_user_pass());
    }

    #[test]
    fn a_bad_server_is_named_without_its_password() {
        let err = server_addrs("nats://a:4222,nats://u:secret@b:notaport").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nats://u:***@b:notaport"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(server_addrs(" , ").is_err());
    }

    #[test]
    fn credentials_come_from_the_urls_and_must_agree() {
        let same = server_addrs("nats://u:p@a,nats://u:p@b,nats://c").unwrap();
        assert_eq!(
            credentials(&same).unwrap(),
            Some(Credentials::UserPassword("u".into(), "p".into()))
        );
        let token = server_addrs("nats://t0k@a").unwrap();
        assert_eq!(
            credentials(&token).unwrap(),
            Some(Credentials::Token("t0k".into()))
        );
        assert_eq!(credentials(&server_addrs("a,b").unwrap()).unwrap(), None);
        assert!(credentials(&server_addrs("nats://u:p@a,nats://u:q@b").unwrap()).is_err());
    }

    #[test]
    fn redact_keeps_urls_without_passwords() {
        assert_eq!(redact("nats://a:1,b"), "nats://a:1,b");
        assert_eq!(redact("nats://tok@a:1"), "nats://tok@a:1");
    }
}
