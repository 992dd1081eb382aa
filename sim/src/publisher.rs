//! The one place that turns a payload into a bus message: subject, JSON
//! encoding and headers (`Nats-Msg-Id`, `traceparent`).
//!
//! Every source publishes through a [`Publisher`] so that subjects and
//! de-duplication ids are spelled the same way whether the data comes from
//! a terminal, the simulator or a recording.

use bus::{Bus, BusError, Headers};
use bytes::Bytes;
use protocol::payload::{Account, LogEntry, Order, Position, Quote, Signal};
use protocol::subject::is_token;
use protocol::{Channel, SubjectScheme};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode {kind} payload: {source}")]
    Encode {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A payload encoded for its subject, with its headers: made where the
/// data arrives, published later by another task (the bridge's outlet).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Full NATS subject.
    pub subject: String,
    /// The channel name (`quote` for quotes), for logs and metrics.
    pub kind: &'static str,
    /// The JSON payload.
    pub payload: Bytes,
    /// `Nats-Msg-Id` and `traceparent`, fixed when prepared.
    pub headers: Headers,
}

impl Prepared {
    /// Logs and signals must not be lost: they wait for JetStream to store
    /// them. State is superseded within a second, so fire and forget.
    pub fn stored(&self) -> bool {
        self.kind == Channel::Logs.name() || self.kind == Channel::Signals.name()
    }
}

#[derive(Clone)]
pub struct Publisher {
    bus: Bus,
    scheme: SubjectScheme,
    /// Whose subjects it writes (a valid subject token by construction).
    account: protocol::Account,
    ids: Arc<MsgIds>,
}

/// Message ids must be unique across restarts too, or JetStream would drop
/// the first messages of a new run as duplicates of the previous one: hence
/// a random per-run prefix in front of a plain counter.
struct MsgIds {
    run: String,
    next: AtomicU64,
}

impl Publisher {
    pub fn new(bus: Bus, scheme: SubjectScheme, account: protocol::Account) -> Self {
        Publisher {
            bus,
            scheme,
            account,
            ids: Arc::new(MsgIds {
                run: format!("{:08x}", rand::random::<u32>()),
                next: AtomicU64::new(1),
            }),
        }
    }

    /// The same bus and id sequence, publishing for another account (a
    /// bridge connection whose terminal names its own account).
    pub fn with_account(&self, account: protocol::Account) -> Self {
        Publisher {
            account,
            ..self.clone()
        }
    }

    /// The account token this publisher writes under.
    pub fn account_name(&self) -> &protocol::Account {
        &self.account
    }

    pub fn scheme(&self) -> &SubjectScheme {
        &self.scheme
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub async fn quote(&self, quote: &Quote) -> Result<(), PublishError> {
        let prepared = self.prepare_quote(quote)?;
        self.send(prepared).await
    }

    pub async fn positions(&self, positions: &[Position]) -> Result<(), PublishError> {
        self.publish_channel(Channel::Positions, positions).await
    }

    pub async fn orders(&self, orders: &[Order]) -> Result<(), PublishError> {
        self.publish_channel(Channel::Orders, orders).await
    }

    pub async fn account(&self, account: &Account) -> Result<(), PublishError> {
        self.publish_channel(Channel::Account, account).await
    }

    pub async fn log(&self, entry: &LogEntry) -> Result<(), PublishError> {
        self.publish_channel(Channel::Logs, entry).await
    }

    pub async fn signal(&self, signal: &Signal) -> Result<(), PublishError> {
        self.publish_channel(Channel::Signals, signal).await
    }

    /// Publishes bytes as they are (replay); only the headers are added.
    pub async fn publish_raw(&self, subject: String, payload: Bytes) -> Result<(), PublishError> {
        let headers = self.headers("raw");
        self.bus.publish(subject, payload, headers).await?;
        Ok(())
    }

    async fn publish_channel<T: Serialize + ?Sized>(
        &self,
        channel: Channel,
        payload: &T,
    ) -> Result<(), PublishError> {
        let prepared = self.prepare(channel, payload)?;
        self.send(prepared).await
    }

    /// A quote, encoded for `<prefix>.<account>.quotes.<SYMBOL>`.
    pub fn prepare_quote(&self, quote: &Quote) -> Result<Prepared, PublishError> {
        let subject = self
            .scheme
            .quote(&self.account, &subject_token(&quote.symbol));
        self.prepare_json(subject, "quote", quote)
    }

    /// Any other channel's payload, encoded for its subject.
    pub fn prepare<T: Serialize + ?Sized>(
        &self,
        channel: Channel,
        payload: &T,
    ) -> Result<Prepared, PublishError> {
        let subject = self.scheme.channel(&self.account, channel);
        self.prepare_json(subject, channel.name(), payload)
    }

    fn prepare_json<T: Serialize + ?Sized>(
        &self,
        subject: String,
        kind: &'static str,
        payload: &T,
    ) -> Result<Prepared, PublishError> {
        let json =
            serde_json::to_vec(payload).map_err(|source| PublishError::Encode { kind, source })?;
        Ok(Prepared {
            headers: self.headers(kind),
            subject,
            kind,
            payload: Bytes::from(json),
        })
    }

    /// Publishes a prepared message (stored ones wait for JetStream).
    pub async fn send(&self, p: Prepared) -> Result<(), PublishError> {
        if p.stored() {
            self.bus
                .publish_stored(p.subject, p.payload, p.headers)
                .await?;
        } else {
            self.bus.publish(p.subject, p.payload, p.headers).await?;
        }
        Ok(())
    }

    fn headers(&self, kind: &str) -> Headers {
        let n = self.ids.next.fetch_add(1, Ordering::Relaxed);
        Headers {
            traceparent: Some(new_traceparent()),
            tracestate: None,
            msg_id: Some(format!("{}-{}-{kind}-{n}", self.ids.run, self.account)),
        }
    }
}

/// A fresh W3C trace context for a message that starts a trace. Kept in one
/// function so OpenTelemetry can take over here later.
pub fn new_traceparent() -> String {
    // All-zero ids are invalid in W3C trace context; `| 1` rules them out.
    let trace_id = rand::random::<u128>() | 1;
    let span_id = rand::random::<u64>() | 1;
    format!("00-{trace_id:032x}-{span_id:016x}-01")
}

/// MT5 symbol names may contain dots (`EURUSD.m`) or other characters that
/// would split or break a NATS subject; the payload keeps the real name.
fn subject_token(symbol: &str) -> String {
    if is_token(symbol) {
        return symbol.to_owned();
    }
    let cleaned: String = symbol
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '#' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// Publish failures are expected while NATS is down (the client reconnects
/// by itself); logging each one at thousands of quotes a second would bury
/// everything else, so a source logs them through this, at most every few
/// seconds, with the count of failures in between.
#[derive(Debug, Default)]
pub struct FailureLog {
    failures: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
}

const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);

impl FailureLog {
    pub fn record(&mut self, what: &str, err: &PublishError) {
        self.failures += 1;
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY);
        if due {
            tracing::warn!(
                kind = what,
                error = %err,
                failures_since_last_report = self.unlogged,
                failures_total = self.failures,
                "publish failed"
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
    }

    /// Records the error of `result`, if any.
    pub fn check(&mut self, what: &str, result: Result<(), PublishError>) {
        if let Err(err) = result {
            self.record(what, &err);
        }
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::MemoryBus;
    use futures::StreamExt;

    fn quote(symbol: &str) -> Quote {
        Quote {
            symbol: symbol.into(),
            bid: 1.0,
            ask: 1.0001,
            spread: 10,
            timestamp: protocol::time::now_rfc3339(),
        }
    }

    #[tokio::test]
    async fn sets_subject_and_unique_headers() {
        let mem = MemoryBus::new();
        let mut sub = mem.subscribe("mt5.>");
        let p = Publisher::new(
            Bus::Memory(mem),
            SubjectScheme::default(),
            "acc1".parse().unwrap(),
        );
        p.quote(&quote("EURUSD")).await.unwrap();
        p.quote(&quote("EURUSD.m")).await.unwrap();
        p.positions(&[]).await.unwrap();
        let a = sub.next().await.unwrap();
        let b = sub.next().await.unwrap();
        let c = sub.next().await.unwrap();
        assert_eq!(a.subject, "mt5.acc1.quotes.EURUSD");
        assert_eq!(b.subject, "mt5.acc1.quotes.EURUSD_m");
        assert_eq!(c.subject, "mt5.acc1.positions");
        assert_eq!(&c.payload[..], b"[]");
        let back: Quote = serde_json::from_slice(&b.payload).unwrap();
        assert_eq!(back.symbol, "EURUSD.m");
        let ids: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|m| m.headers.msg_id.clone().unwrap())
            .collect();
        assert!(ids[0].contains("-acc1-quote-"), "{}", ids[0]);
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        for m in [&a, &b, &c] {
            let tp = m.headers.traceparent.as_deref().unwrap();
            let parts: Vec<_> = tp.split('-').collect();
            assert_eq!(parts.len(), 4);
            assert_eq!(
                (parts[0], parts[1].len(), parts[2].len(), parts[3]),
                ("00", 32, 16, "01")
            );
            assert!(parts[1].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn odd_symbols_become_valid_tokens() {
        for s in ["EURUSD", "US30.cash", "a b", "", "é"] {
            assert!(is_token(&subject_token(s)), "{s}");
        }
    }
}
