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
//!
//! On a NATS cluster both streams should have three replicas
//! (`STREAM_REPLICAS=3`): a stream with one replica lives on one server,
//! and losing that server loses what it holds and every publish until it
//! is back. An update never lowers the replicas a stream already has, so a
//! process left at the default cannot undo an operator's choice.

use crate::{BusError, BusMessage, Headers, NatsBus, Subscription};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DirectGetErrorKind, DiscardPolicy, StorageType,
};
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
    /// Servers holding a copy of each stream (1, or 3 on a 3-node cluster).
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            events_max_age: Duration::from_secs(15 * 60),
            events_max_messages: 1_000_000,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// Which of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    State,
    Events,
}

/// How long a history read waits for the next entry before it gives up
/// (JetStream unreachable or overloaded): the caller reports the rest.
const READ_PATIENCE: Duration = Duration::from_secs(2);

/// The range of sequences a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPosition {
    /// The oldest sequence still stored (anything before it was dropped).
    pub first: u64,
    /// The newest sequence stored (0: nothing was ever stored).
    pub last: u64,
}

impl StreamPosition {
    /// The sequences after `after` that a replay of a subject whose newest
    /// stored entry is `subject_last` can no longer get, because retention
    /// dropped them: `after + 1 ..= first - 1`, unless the subject's newest
    /// entry is at or before `after` (then nothing of it came later). The
    /// stream does not say which subject a dropped entry had, so the range
    /// is the widest that may hold one of ours.
    pub fn lost_after(&self, after: u64, subject_last: u64) -> Option<(u64, u64)> {
        let nothing_newer = subject_last > 0 && subject_last <= after;
        (after + 1 < self.first && !nothing_newer).then(|| (after + 1, self.first - 1))
    }
}

/// A read of one subject's entries in a sequence range, page by page, so
/// that the memory it holds is one page (and the consumer's own fetch
/// batch), however long the history. It ends at the range's last sequence,
/// or at the subject's last entry when that one is gone: never on a
/// timeout. A page that does not come within [`READ_PATIENCE`] is an error.
pub struct EventPages {
    subject: String,
    feed: Option<Subscription>,
    /// The lowest sequence not read yet.
    next: u64,
    until: u64,
    patience: Duration,
}

impl EventPages {
    /// Up to `max` entries, oldest first; empty once the range is read.
    pub async fn next_page(&mut self, max: usize) -> Result<Vec<BusMessage>, BusError> {
        let mut page = Vec::new();
        while page.len() < max.max(1) {
            let Some(feed) = self.feed.as_mut() else {
                break;
            };
            let msg = match tokio::time::timeout(self.patience, feed.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) | Err(_) => {
                    return Err(BusError::JetStream {
                        what: format!("history of {}", self.subject),
                        reason: format!(
                            "no entry within {:?} at sequence {}",
                            self.patience, self.next
                        ),
                    })
                }
            };
            let seq = msg.seq.unwrap_or(self.next);
            // The last of the range, or nothing of the subject after it.
            let last = seq >= self.until || msg.pending == Some(0);
            if seq <= self.until {
                self.next = seq + 1;
                page.push(msg);
            }
            if last {
                self.next = self.until + 1;
                self.feed = None;
            }
        }
        Ok(page)
    }

    /// The lowest sequence not read yet (`until + 1` once done).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// True once the whole range is read.
    pub fn is_done(&self) -> bool {
        self.feed.is_none()
    }
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
            num_replicas: limits.replicas,
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
            num_replicas: limits.replicas,
            ..Default::default()
        },
    }
}

/// How long one pull of a consumer waits (see `consume`).
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// How long one JetStream API request of a reader may go unanswered.
const CONSUMER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a reader asks for its consumer before giving up (the
/// caller then retries the whole feed).
const CONSUMER_ATTEMPTS: u32 = 5;

/// How long a log or signal is retried when JetStream does not confirm it
/// (a stream leader that died, a cluster electing a new one: a couple of
/// seconds) before it is published without storage.
const STORE_RETRY_FOR: Duration = Duration::from_secs(15);
/// How long one publish waits for JetStream's acknowledgement.
const STORE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the settings this module owns differ between `wanted` and what
/// the server has (which fills in many more with its defaults).
fn differs(wanted: &StreamConfig, current: &StreamConfig) -> bool {
    // The server reports "no limit" as -1 where a config may say 0.
    let limit = |v: i64| if v <= 0 { -1 } else { v };
    wanted.subjects != current.subjects
        || limit(wanted.max_messages_per_subject) != limit(current.max_messages_per_subject)
        || limit(wanted.max_messages) != limit(current.max_messages)
        || wanted.max_age != current.max_age
        || wanted.duplicate_window != current.duplicate_window
        || wanted.num_replicas != current.num_replicas
        || wanted.allow_direct != current.allow_direct
}

/// The configuration an update should apply: `wanted`, but never fewer
/// replicas than the stream has now.
fn updated_config(mut wanted: StreamConfig, current: &StreamConfig) -> StreamConfig {
    wanted.num_replicas = wanted.num_replicas.max(current.num_replicas);
    wanted
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
        let mut js = self.jetstream();
        js.set_timeout(CONSUMER_REQUEST_TIMEOUT);
        for kind in [StreamKind::State, StreamKind::Events] {
            let config = stream_config(prefix, kind, limits);
            let name = config.name.clone();
            let fail = |reason: String| BusError::JetStream {
                what: format!("stream {name}"),
                reason,
            };
            match js.get_stream(&name).await {
                Ok(mut stream) => {
                    let current = stream
                        .info()
                        .await
                        .map_err(|e| fail(e.to_string()))?
                        .config
                        .clone();
                    let wanted = updated_config(config, &current);
                    if !differs(&wanted, &current) {
                        continue;
                    }
                    // A process allowed only to read JetStream (the
                    // gateway, with NATS permissions) reads the stream as
                    // it is: it exists, so nothing is lost.
                    if let Err(e) = js.update_stream(wanted).await {
                        tracing::warn!(stream = %name, error = %e, "cannot update the stream's limits; using it as it is");
                    }
                }
                // Only a stream the server says does not exist is created:
                // an unanswered request (a cluster re-electing) is retried
                // by the caller rather than turned into a create.
                Err(e) if !matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {
                    return Err(fail(e.to_string()));
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
        // A short request timeout, retried: while a cluster re-elects
        // after losing a node, a consumer request can go unanswered (its
        // placement landed on the dead node, or the meta leader is being
        // replaced), and a fresh request is answered at once. The ordered
        // consumer's own recreation uses the same context.
        let mut js = self.jetstream();
        js.set_timeout(CONSUMER_REQUEST_TIMEOUT);
        let deliver_policy = match start {
            Start::LastPerSubject => DeliverPolicy::LastPerSubject,
            Start::New => DeliverPolicy::New,
            Start::At(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
        };
        let config = OrderedConfig {
            filter_subject,
            deliver_policy,
            // Pulls expire after this and the server heartbeats at half
            // of it: two missed heartbeats make async-nats recreate the
            // consumer. Shorter is worse: an expired pull is renewed only
            // when a busy reader polls again, so quotes published in that
            // gap are superseded in a stream that keeps one per subject
            // (the benchmark lost up to 48 % of quotes with 2 s), and a
            // reader busy for two heartbeats has its consumer recreated
            // (with 2 s, a gateway under a reconnect storm stopped reading
            // logs for seconds). A consumer that lived on a cluster node
            // that died is the gateway's stall watch's to notice.
            max_expires: PULL_EXPIRES,
            ..Default::default()
        };
        let mut attempts = 0;
        let (consumer, floor) = loop {
            attempts += 1;
            let created = match js.get_stream(&name).await {
                Ok(stream) => {
                    let floor = match start {
                        Start::LastPerSubject => 0,
                        Start::New => stream.cached_info().state.last_sequence + 1,
                        Start::At(seq) => seq.max(1),
                    };
                    stream
                        .create_consumer(config.clone())
                        .await
                        .map(|consumer| (consumer, floor))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match created {
                Ok(created) => break created,
                Err(reason) if attempts >= CONSUMER_ATTEMPTS => return Err(fail(reason)),
                Err(reason) => {
                    tracing::debug!(stream = %name, %reason, attempts, "consumer not created; retrying");
                }
            }
        };
        let messages = consumer.messages().await.map_err(|e| fail(e.to_string()))?;
        // State consumers are not guarded: they keep one message per
        // subject, and reading it again is harmless.
        let mut next = (floor > 0).then_some(floor);
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
            // A message older than the start or than one already read:
            // the ordered consumer was recreated before it delivered
            // anything (async-nats then starts again from the stream's
            // first message). The feed ends instead, so that the reader
            // reopens it right after what it has.
            .take_while(move |msg| {
                let in_order = match (next, msg.seq) {
                    (Some(min), Some(seq)) if seq < min => false,
                    (Some(_), Some(seq)) => {
                        next = Some(seq + 1);
                        true
                    }
                    _ => true,
                };
                if !in_order {
                    tracing::warn!(stream = %name, seq = ?msg.seq, expected = ?next, "consumer went back in the stream; ending the feed");
                }
                futures::future::ready(in_order)
            })
            .boxed())
    }

    /// Where the events stream stands: the oldest and newest sequence it
    /// holds (0, 0 when empty). A feed opened right after `last` misses
    /// nothing and repeats nothing.
    pub async fn events_position(&self, prefix: &str) -> Result<StreamPosition, BusError> {
        self.stream_position(prefix, StreamKind::Events).await
    }

    /// Where a stream stands: the oldest and newest sequence it holds (0, 0
    /// when empty).
    pub async fn stream_position(
        &self,
        prefix: &str,
        kind: StreamKind,
    ) -> Result<StreamPosition, BusError> {
        let name = stream_name(prefix, kind);
        let stream = self
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| BusError::JetStream {
                what: format!("stream {name}"),
                reason: e.to_string(),
            })?;
        let state = &stream.cached_info().state;
        Ok(StreamPosition {
            first: state.first_sequence,
            last: state.last_sequence,
        })
    }

    /// The stream sequence of the newest entry stored on `subject` (one
    /// direct get; 0 when the stream holds none): where a replay of that
    /// subject ends, without waiting for anything.
    pub async fn subject_last_seq(&self, prefix: &str, subject: &str) -> Result<u64, BusError> {
        let name = stream_name(prefix, StreamKind::Events);
        let fail = |reason: String| BusError::JetStream {
            what: format!("last entry of {subject}"),
            reason,
        };
        let stream = self
            .jetstream()
            .get_stream_no_info(&name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(msg) => Ok(msg.sequence),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Opens a paged read of `subject`'s entries with a sequence in
    /// `after + 1 ..= until` (see [`EventPages`]). Nothing is read yet;
    /// an empty range opens no consumer at all.
    pub async fn read_events(
        &self,
        prefix: &str,
        subject: &str,
        after: u64,
        until: u64,
    ) -> Result<EventPages, BusError> {
        let feed = if until > after {
            Some(
                self.consume(
                    prefix,
                    StreamKind::Events,
                    Some(subject.to_owned()),
                    Start::At(after + 1),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(EventPages {
            subject: subject.to_owned(),
            feed,
            next: after + 1,
            until,
            patience: READ_PATIENCE,
        })
    }

    /// The messages of one subject with a sequence above `after`, oldest
    /// first, up to what the subject holds now (at most `limit`).
    pub async fn history(
        &self,
        prefix: &str,
        subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<BusMessage>, BusError> {
        let until = self.subject_last_seq(prefix, subject).await?;
        let mut pages = self.read_events(prefix, subject, after, until).await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let page = pages.next_page(limit - out.len()).await?;
            if page.is_empty() {
                break;
            }
            out.extend(page);
        }
        Ok(out)
    }

    /// Publishes and waits for JetStream to store it: for logs and signals,
    /// which must not be lost. While no stream answers (a cluster electing
    /// a new stream leader, a server restarting) it retries for
    /// [`STORE_RETRY_FOR`] with the same `Nats-Msg-Id`, so a copy that was
    /// stored but not acknowledged is not stored twice. After that it falls
    /// back to a plain publish (JetStream down for good), so live clients
    /// still get it.
    pub async fn publish_stored(
        &self,
        subject: String,
        payload: bytes::Bytes,
        headers: Headers,
    ) -> Result<(), BusError> {
        let mut js = self.jetstream();
        js.set_timeout(STORE_ACK_TIMEOUT);
        let map = crate::nats::to_header_map(&headers).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + STORE_RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        let reason = loop {
            let ack = js
                .publish_with_headers(subject.clone(), map.clone(), payload.clone())
                .await;
            let stored = match ack {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(()) => return Ok(()),
                Err(reason) if tokio::time::Instant::now() + pause >= deadline => break reason,
                Err(reason) => {
                    tracing::debug!(%subject, %reason, "not stored by JetStream yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        };
        tracing::warn!(%subject, %reason, "not stored by JetStream; published plainly");
        self.publish(subject, payload, headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_reported_only_where_retention_may_have_dropped_ours() {
        let pos = StreamPosition {
            first: 100,
            last: 200,
        };
        assert_eq!(pos.lost_after(99, 150), None, "nothing dropped after 99");
        assert_eq!(pos.lost_after(40, 150), Some((41, 99)));
        assert_eq!(
            pos.lost_after(40, 0),
            Some((41, 99)),
            "the subject's entries may all be gone"
        );
        assert_eq!(
            pos.lost_after(40, 30),
            None,
            "the subject's newest is older than the checkpoint"
        );
        assert_eq!(StreamPosition::default().lost_after(0, 0), None);
    }

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
        assert_eq!(events.num_replicas, 1);
    }

    #[test]
    fn replicas_are_configurable_and_never_lowered_by_an_update() {
        let three = StreamLimits {
            replicas: 3,
            ..StreamLimits::default()
        };
        let wanted = stream_config("mt5", StreamKind::Events, &three);
        assert_eq!(wanted.num_replicas, 3);
        let one = stream_config("mt5", StreamKind::Events, &StreamLimits::default());
        // A process at the default meets a stream an operator made R3.
        assert_eq!(updated_config(one.clone(), &wanted).num_replicas, 3);
        // Raising works.
        assert_eq!(updated_config(wanted.clone(), &one).num_replicas, 3);
        assert!(differs(&wanted, &one));
        assert!(!differs(&wanted, &wanted.clone()));
    }
}
