//! NATS transport (async-nats). The client reconnects by itself forever, so
//! a NATS restart is a pause, not a crash; subscriptions are restored by the
//! client on reconnect.

use crate::{BusError, BusHealth, BusMessage, Headers, Subscription};
use async_nats::connection::State;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// One URL or a comma-separated list of servers.
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
        let (connected_tx, connections) = watch::channel(0u64);
        let connected_tx = Arc::new(connected_tx);
        let client = async_nats::ConnectOptions::new()
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
            .connect(opts.url.as_str())
            .await
            .map_err(|e| BusError::Connect {
                url: opts.url.clone(),
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
