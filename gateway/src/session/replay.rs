//! A resumed session: its channels rejoined, state channels with their
//! snapshot, logs and signals (in parallel) replayed from the checkpoint
//! and then live without a gap.
//!
//! The replay reads a page at a time straight into the client's queue,
//! never filling more than half of it, so a long absence is caught up at
//! the socket's pace and memory per resume is one page. Live entries that
//! arrive meanwhile are held back (a bounded backlog, see `Rooms`) and
//! queued after the replay, without repeats. What cannot be replayed
//! (retention exceeded, JetStream unreachable, more than [`MAX_REPLAY`]) is
//! never skipped silently: the client gets `RESUME_GAP` with the channel
//! and the range, and the checkpoint moves past that range only once the
//! notice itself has been written (it counts as the range's delivery).

use crate::fanout::frame::Frame;
use crate::observability::metrics;
use crate::session::client::Client;
use crate::session::store::SessionRecord;
use protocol::error_code::ErrorPayload;
use protocol::{Channel, ErrorCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long a replay waits for the writer to make room in the outbox.
const REPLAY_PAUSE: Duration = Duration::from_millis(5);
/// Entries read per page.
const PAGE: usize = 256;
/// Live entries held back during a replay, in client queues.
const HELD_QUEUES: usize = 4;
/// How many missed entries one resume replays at most per channel.
pub const MAX_REPLAY: usize = 100_000;

impl Client {
    /// Rejoins a resumed session's channels: state channels get their
    /// snapshot, event channels replay every entry after the checkpoint and
    /// then go live without a gap.
    pub(super) fn resume(self: &Arc<Self>, record: SessionRecord) {
        let channels: Vec<Channel> = record
            .channels
            .iter()
            .filter_map(|n| n.parse().ok())
            .filter(|c| self.identity.may_see(*c))
            .collect();
        self.reply(
            "subscribed",
            &json!({ "channels": channels.iter().map(|c| c.name()).collect::<Vec<_>>(), "resumed": true }),
        );
        let account = &self.identity.account;
        // Live entries held back while replaying: a few queues' worth, so
        // a long replay at the socket's pace does not lose the client; past
        // that it reconnects and resumes from its checkpoint.
        let held = self.handles.limits.queue_limit.saturating_mul(HELD_QUEUES);
        let mut replays = Vec::new();
        {
            let mut joined = self.joined();
            let mut delivery = self.delivery();
            for &channel in &channels {
                joined[channel.index()] = true;
                if channel.is_state() {
                    self.handles
                        .rooms
                        .join(account, &[channel], self.id, &self.outbox, |_| {});
                } else {
                    let (after, floor) = match channel {
                        Channel::Logs => (record.logs_seq, record.logs_floor),
                        _ => (record.signals_seq, record.signals_floor),
                    };
                    delivery.start_at(channel, after, floor);
                    self.handles.rooms.join_catching_up(
                        account,
                        channel,
                        self.id,
                        &self.outbox,
                        held,
                    );
                    replays.push((channel, after));
                }
            }
        }
        metrics::session_resumed();
        for (channel, after) in replays {
            let client = self.clone();
            tokio::spawn(async move { client.replay(channel, after).await });
        }
    }

    /// Queues a channel's entries after `after` (see the module header),
    /// then those held back meanwhile, then lets the member go live.
    async fn replay(&self, channel: Channel, after: u64) {
        let account = &self.identity.account;
        let room = (self.handles.limits.queue_limit / 2).max(1);
        let history = &self.handles.history;
        let mut upto = after;
        match history.open(account, channel, after).await {
            Err(e) => {
                tracing::warn!(error = %e, %channel, "cannot replay missed entries");
                let known = history.known_last(account, channel);
                if known > after {
                    self.gap(
                        channel,
                        after + 1,
                        known,
                        "its history is unavailable right now",
                    );
                    upto = known;
                }
            }
            Ok(opened) => {
                if let Some((from, to)) = opened.lost {
                    self.gap(channel, from, to, "retention dropped them");
                    upto = to;
                }
                let mut reader = opened.reader;
                let mut sent = 0;
                loop {
                    if sent >= MAX_REPLAY {
                        let why = format!("more than {MAX_REPLAY} missed");
                        self.gap(channel, reader.next_seq(), reader.until(), &why);
                        upto = upto.max(reader.until());
                        break;
                    }
                    let page = match reader.next_page(PAGE).await {
                        Ok(page) if page.is_empty() => break,
                        Ok(page) => page,
                        Err(e) => {
                            tracing::warn!(error = %e, %channel, "replay interrupted");
                            let why = "its history became unavailable";
                            self.gap(channel, reader.next_seq(), reader.until(), why);
                            upto = upto.max(reader.until());
                            break;
                        }
                    };
                    for frame in page {
                        if frame.seq.is_some_and(|s| s <= upto) {
                            continue;
                        }
                        upto = upto.max(frame.seq.unwrap_or(0));
                        if !self.queue_paced(frame, room).await {
                            return;
                        }
                        sent += 1;
                    }
                }
            }
        }
        // Then what was held back meanwhile, batch by batch while batches
        // are big (a long replay left a lot), and live.
        loop {
            let batch = self.handles.rooms.take_held(account, channel, self.id);
            let more = batch.len() >= room;
            for frame in batch {
                if frame.seq.is_some_and(|s| s <= upto) {
                    continue;
                }
                upto = upto.max(frame.seq.unwrap_or(0));
                if !self.queue_paced(frame, room).await {
                    return;
                }
            }
            if !more {
                break;
            }
        }
        self.handles
            .rooms
            .finish_catch_up(account, channel, self.id, upto);
    }

    /// Queues `frame` once the outbox has fewer than `room` frames; false
    /// if the client is going.
    async fn queue_paced(&self, frame: Arc<Frame>, room: usize) -> bool {
        while self.outbox.len() >= room {
            if self.outbox.closing().is_some() {
                return false;
            }
            tokio::time::sleep(REPLAY_PAUSE).await;
        }
        self.outbox.push(frame)
    }

    /// Tells the client it will not get `channel`'s `from..=to`. The
    /// notice carries `to` as its sequence, so the checkpoint passes the
    /// range only once the notice is written.
    fn gap(&self, channel: Channel, from: u64, to: u64, why: &str) {
        if from > to {
            return;
        }
        metrics::client_error(ErrorCode::ResumeGap.as_str());
        let payload = ErrorPayload::new(
            ErrorCode::ResumeGap,
            "Missed entries cannot be replayed",
            format!("{channel} {from}..={to}: {why}; reload that range"),
        );
        let mut body = serde_json::to_value(&payload).unwrap_or_default();
        body["channel"] = json!(channel.name());
        body["from_seq"] = json!(from);
        body["to_seq"] = json!(to);
        let mut frame = Frame::control("error", &body);
        frame.channel = Some(channel);
        frame.seq = Some(to);
        self.outbox.push(Arc::new(frame));
    }
}
