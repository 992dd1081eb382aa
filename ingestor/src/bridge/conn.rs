//! One terminal connection: authenticate its first line, then read every
//! line as fast as it comes and hand what it means to the outlet.
//!
//! The reader never waits for NATS (see [`super::outlet`]), so the EA's
//! `SocketSend` never blocks on us. A refusal (bad key, data before
//! `hello`, a second `hello`, an over-long line, silence) closes this
//! connection only, after a one-line `refused` answer; nothing of the
//! refused line is published.

use super::capture::Capture;
use super::keys::Keys;
use super::message::Outbound;
use super::outlet::Outlet;
use super::session::{read_hello, LineFault, Refusal, Session};
use crate::metrics::{Metrics, Terminal};
use crate::ndjson::{Line, LineReader};
use crate::publisher::{PublishError, Publisher};
use protocol::payload::LogEntry;
use protocol::Channel;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio_util::sync::CancellationToken;

/// How long an answer to the terminal may take before we give up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection shares.
pub(crate) struct Shared {
    /// Who may publish, as which account.
    pub keys: Keys,
    /// Account for a shared key without a label.
    pub default_account: String,
    /// Subjects and headers (re-targeted per account).
    pub publisher: Publisher,
    /// Where converted messages go.
    pub outlet: Outlet,
    /// Counters and the terminal list.
    pub metrics: Arc<Metrics>,
    /// Trade-server clocks per account.
    pub clocks: super::clock::Clocks,
    /// Longest line accepted.
    pub max_line: usize,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// Raw capture, when on.
    pub capture: Option<Capture>,
}

/// Serves one connection (plain TCP or TLS) until it ends or `shutdown`.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = LineReader::strict(rd, shared.max_line);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(shared.hello_timeout, reader.next()) => r,
    };
    let line = match first {
        Ok(Ok(Some(Line::Text(line)))) => line,
        Ok(Ok(Some(Line::TooLong { .. }))) => {
            return refuse(
                &mut wr,
                peer,
                &shared,
                Refusal::LineTooLong {
                    max: shared.max_line,
                },
            )
            .await
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bridge connection failed before hello");
            return;
        }
        Err(_) => {
            return refuse(
                &mut wr,
                peer,
                &shared,
                Refusal::HelloTimeout(shared.hello_timeout),
            )
            .await
        }
    };
    let hello = match read_hello(&line) {
        Ok(h) => h,
        Err(r) => return refuse(&mut wr, peer, &shared, r).await,
    };
    let account = match shared.keys.authorize(
        hello.key.as_deref(),
        hello.account.as_deref(),
        &shared.default_account,
    ) {
        Ok(a) => a,
        Err(r) => return refuse(&mut wr, peer, &shared, r).await,
    };
    // `authorize` only returns subject tokens; said again by the type.
    let publisher = match protocol::Account::new(account.as_str()) {
        Ok(label) => shared.publisher.with_account(label),
        Err(e) => {
            let why = Refusal::InvalidHello(format!("account {e}"));
            return refuse(&mut wr, peer, &shared, why).await;
        }
    };
    let now = protocol::time::now_epoch_ms();
    let mut session = Session::start(&hello, account.clone(), &shared.clocks, now);
    let terminal = shared.metrics.register(Terminal {
        id: shared.metrics.next_id(),
        account: account.clone(),
        peer: peer.to_string(),
        about: hello.about(),
        since_ms: now,
        last_line_ms: AtomicI64::new(now),
        last_tick_ms: AtomicI64::new(0),
        gmt_offset_s: AtomicI64::new(session.gmt_offset_s()),
    });
    if let Some(c) = &shared.capture {
        c.line(now, terminal.id, &account, &line);
    }
    tracing::info!(%peer, %account, terminal = %terminal.about, gmt_offset_s = session.gmt_offset_s(), "MT5 terminal authenticated");
    let welcome = json!({
        "type": "welcome",
        "protocol": hello.protocol,
        "account": account,
        "max_line": shared.max_line,
    });
    answer(&mut wr, &welcome).await;

    let mut malformed = 0u64;
    let ending = loop {
        let limit = session.silence_limit();
        let next = tokio::select! {
            _ = shutdown.cancelled() => break None,
            n = tokio::time::timeout(limit, reader.next()) => n,
        };
        let line = match next {
            Err(_) => break Some(Refusal::Silent(limit)),
            Ok(Ok(Some(Line::Text(line)))) => line,
            Ok(Ok(Some(Line::TooLong { .. }))) => {
                break Some(Refusal::LineTooLong {
                    max: shared.max_line,
                })
            }
            Ok(Ok(None)) => break None,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "bridge connection read failed");
                break None;
            }
        };
        let now = protocol::time::now_epoch_ms();
        terminal.last_line_ms.store(now, Ordering::Relaxed);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        Metrics::add(&shared.metrics.lines, 1);
        if let Some(c) = &shared.capture {
            c.line(now, terminal.id, &account, &line);
        }
        match session.on_line(&line, now) {
            Ok(None) => {
                terminal
                    .gmt_offset_s
                    .store(session.gmt_offset_s(), Ordering::Relaxed);
            }
            Ok(Some(out)) => {
                if matches!(out, Outbound::Quote(_)) {
                    terminal.last_tick_ms.store(now, Ordering::Relaxed);
                }
                if let Err(e) = route(&publisher, &shared.outlet, out) {
                    Metrics::add(&shared.metrics.publish_failures, 1);
                    tracing::warn!(%peer, error = %e, "cannot encode a bridge message");
                }
            }
            Err(LineFault::Skip(e)) => {
                malformed += 1;
                Metrics::add(&shared.metrics.malformed, 1);
                // The first few and then every thousandth: a peer sending
                // garbage cannot flood the logs.
                if malformed <= 10 || malformed.is_multiple_of(1000) {
                    tracing::warn!(%peer, %account, malformed, reason = %e, "skipped malformed bridge line");
                }
            }
            Err(LineFault::Refuse(r)) => break Some(r),
        }
    };
    shared.metrics.remove(terminal.id);
    if let Some(refusal) = ending {
        if let Refusal::Silent(limit) = &refusal {
            Metrics::add(&shared.metrics.terminals_down, 1);
            terminal_down(&publisher, &shared.outlet, &terminal, *limit);
        }
        refuse(&mut wr, peer, &shared, refusal).await;
    } else {
        tracing::info!(%peer, %account, malformed, "MT5 terminal disconnected");
    }
}

/// Hands converted data to the outlet: state keeps the latest, events queue.
fn route(publisher: &Publisher, outlet: &Outlet, out: Outbound) -> Result<(), PublishError> {
    match super::prepare(publisher, &out)? {
        Some(p) if p.stored() => {
            outlet.event(p);
        }
        Some(p) => outlet.state(p),
        None => {}
    }
    Ok(())
}

/// The account's dashboards learn that their terminal went quiet.
fn terminal_down(publisher: &Publisher, outlet: &Outlet, t: &Terminal, limit: Duration) {
    let mut extra = serde_json::Map::new();
    extra.insert("terminal".into(), json!(t.about));
    extra.insert("peer".into(), json!(t.peer));
    extra.insert("silent_ms".into(), json!(limit.as_millis() as u64));
    let entry = LogEntry {
        timestamp: protocol::time::now_rfc3339(),
        level: "ERROR".into(),
        message: format!(
            "MT5 terminal down: no heartbeat for {} ms ({})",
            limit.as_millis(),
            t.about
        ),
        module: "mt5_bridge".into(),
        extra,
        seq: None,
    };
    tracing::warn!(account = %t.account, peer = %t.peer, "MT5 terminal down (three heartbeats missed)");
    if let Ok(p) = publisher.prepare(Channel::Logs, &entry) {
        outlet.event(p);
    }
}

/// Logs and counts a refusal, tells the terminal why, and closes.
async fn refuse<W: AsyncWrite>(
    wr: &mut WriteHalf<W>,
    peer: SocketAddr,
    shared: &Shared,
    refusal: Refusal,
) {
    shared.metrics.refused(&refusal);
    tracing::warn!(%peer, code = refusal.code(), reason = %refusal, "bridge connection refused");
    let line = json!({"type": "refused", "code": refusal.code(), "reason": refusal.to_string()});
    answer(wr, &line).await;
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, wr.shutdown()).await;
}

/// Writes one line to the terminal, giving up after [`ANSWER_TIMEOUT`]
/// (a terminal that does not read must not hold us).
async fn answer<W: AsyncWrite>(wr: &mut WriteHalf<W>, v: &serde_json::Value) {
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        wr.write_all(&line).await?;
        wr.flush().await
    })
    .await;
}
