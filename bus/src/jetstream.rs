//! JetStream: where last values and event history live, so that no gateway
//! replica has to remember anything a client needs.
//!
//! Two streams per subject prefix:
//! - `<PREFIX>_STATE` captures quotes, positions, orders and account and
//!   keeps one message per subject: the current value of everything;
//! - `<PREFIX>_EVENTS` captures logs and signals with a bounded history; its
//!   stream sequence is the `seq` clients see and resume from.
//!
//! Both are created (or updated) idempotently by whoever starts first,
//! ingestor or gateway. Gateways read them through ordered consumers, which
//! async-nats recreates by itself after a gap or a server restart.

use crate::{BusError, BusMessage, Headers, NatsBus, Subscription};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use futures::StreamExt;
use std::time::Duration;

/// How much the streams keep.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Logs and signals older than this are dropped (must exceed the resume window).
    pub events_max_age: Duration,
    /// At most this many logs and signals are kept.
    pub events_max_messages: i64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            events_max_age: Duration::from_secs(15 * 60),
            events_max_messages: 1_000_000,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Which of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    State,
    Events,
}

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The last message of every subject, then everything new (state).
    LastPerSubject,
    /// Only what arrives from now on.
    New,
    /// From this stream sequence on (resuming after a gap).
    At(u64),
}

pub fn stream_name(prefix: &str, kind: StreamKind) -> String {
    let base: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    match kind {
        StreamKind::State => format!("{base}_STATE"),
        StreamKind::Events => format!("{base}_EVENTS"),
    }
}

/// The subjects a stream captures (one consumer per subject can read it
/// "last per subject").
pub fn stream_subjects(prefix: &str, kind: StreamKind) -> Vec<String> {
    stream_config(prefix, kind, &StreamLimits::default()).subjects
}

fn stream_config(prefix: &str, kind: StreamKind, limits: &StreamLimits) -> StreamConfig {
    match kind {
        StreamKind::State => StreamConfig {
            name: stream_name(prefix, kind),
            subjects: vec![
                format!("{prefix}.*.quotes.*"),
                format!("{prefix}.*.positions"),
                format!("{prefix}.*.orders"),
                format!("{prefix}.*.account"),
            ],
            max_messages_per_subject: 1,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            duplicate_window: limits.duplicate_window,
            allow_direct: true,
            ..Default::default()
        },
        StreamKind::Events => StreamConfig {
            name: stream_name(prefix, kind),
            subjects: vec![format!("{prefix}.*.logs"), format!("{prefix}.*.signals")],
            max_age: limits.events_max_age,
            max_messages: limits.events_max_messages,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            duplicate_window: limits.duplicate_window,
            allow_direct: true,
            ..Default::default()
        },
    }
}

impl NatsBus {
    fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().clone())
    }

    /// Creates both streams, or brings their limits up to date.
    pub async fn ensure_streams(
        &self,
        prefix: &str,
        limits: &StreamLimits,
    ) -> Result<(), BusError> {
        let js = self.jetstream();
        for kind in [StreamKind::State, StreamKind::Events] {
            let config = stream_config(prefix, kind, limits);
            let name = config.name.clone();
            let fail = |reason: String| BusError::JetStream {
                what: format!("stream {name}"),
                reason,
            };
            match js.get_stream(&name).await {
                Ok(_) => {
                    js.update_stream(config)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
                Err(_) => {
                    js.create_stream(config)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// Reads a stream through an ordered consumer (all of it, or only
    /// `filter`). Items carry the stream sequence as `seq` and how many
    /// messages were still pending after them (0: caught up).
    pub async fn consume(
        &self,
        prefix: &str,
        kind: StreamKind,
        filter: Option<String>,
        start: Start,
    ) -> Result<Subscription, BusError> {
        // One filter subject per consumer: nats-server 2.9 (Debian 12)
        // knows no lists of them.
        let filter_subject = filter.unwrap_or_default();
        let name = stream_name(prefix, kind);
        let fail = |reason: String| BusError::JetStream {
            what: format!("consumer on {name}"),
            reason,
        };
        let stream = self
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let deliver_policy = match start {
            Start::LastPerSubject => DeliverPolicy::LastPerSubject,
            Start::New => DeliverPolicy::New,
            Start::At(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let messages = consumer.messages().await.map_err(|e| fail(e.to_string()))?;
        Ok(messages
            .filter_map(|item| async move {
                match item {
                    Ok(msg) => {
                        let (seq, pending) = msg
                            .info()
                            .map(|i| (Some(i.stream_sequence), Some(i.pending)))
                            .unwrap_or((None, None));
                        Some(BusMessage {
                            subject: msg.subject.to_string(),
                            payload: msg.payload.clone(),
                            headers: crate::nats::from_header_map(msg.headers.as_ref()),
                            seq,
                            pending,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "jetstream consumer error");
                        None
                    }
                }
            })
            .boxed())
    }

    /// The messages of one subject with a sequence above `after`, oldest
    /// first, up to what the stream holds now (at most `limit`).
    pub async fn history(
        &self,
        prefix: &str,
        subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<BusMessage>, BusError> {
        let name = stream_name(prefix, StreamKind::Events);
        let fail = |reason: String| BusError::JetStream {
            what: format!("history of {subject}"),
            reason,
        };
        let mut stream = self
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let last = stream
            .info()
            .await
            .map_err(|e| fail(e.to_string()))?
            .state
            .last_sequence;
        if last <= after {
            return Ok(Vec::new());
        }
        let mut feed = self
            .consume(
                prefix,
                StreamKind::Events,
                Some(subject.to_owned()),
                Start::At(after + 1),
            )
            .await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let next = tokio::time::timeout(Duration::from_secs(2), feed.next()).await;
            let Ok(Some(msg)) = next else { break };
            let done = msg.pending == Some(0) || msg.seq.is_some_and(|s| s >= last);
            out.push(msg);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Publishes and waits for JetStream to store it: for logs and signals,
    /// which must not be lost. Falls back to a plain publish when no stream
    /// answers (JetStream down), so live clients still get it.
    pub async fn publish_stored(
        &self,
        subject: String,
        payload: bytes::Bytes,
        headers: Headers,
    ) -> Result<(), BusError> {
        let js = self.jetstream();
        let map = crate::nats::to_header_map(&headers).unwrap_or_default();
        let ack = js
            .publish_with_headers(subject.clone(), map, payload.clone())
            .await;
        let stored = match ack {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => Ok(()),
            Err(reason) => {
                tracing::warn!(%subject, %reason, "not stored by JetStream; published plainly");
                self.publish(subject, payload, headers).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_valid() {
        assert_eq!(stream_name("mt5", StreamKind::State), "MT5_STATE");
        assert_eq!(
            stream_name("my.prefix", StreamKind::Events),
            "MY_PREFIX_EVENTS"
        );
    }

    #[test]
    fn state_keeps_one_per_subject_and_events_keep_history() {
        let limits = StreamLimits::default();
        let state = stream_config("mt5", StreamKind::State, &limits);
        assert_eq!(state.max_messages_per_subject, 1);
        assert!(state.subjects.contains(&"mt5.*.quotes.*".to_owned()));
        let events = stream_config("mt5", StreamKind::Events, &limits);
        assert_eq!(events.subjects, ["mt5.*.logs", "mt5.*.signals"]);
        assert_eq!(events.max_age, limits.events_max_age);
    }
}
