//! A resumed session: its channels rejoined, state channels with their
//! snapshot, logs and signals replayed from the checkpoint and then live
//! without a gap, paced so that a long absence never overflows the queue.

use crate::observability::metrics;
use crate::session::client::Client;
use crate::session::store::SessionRecord;
use protocol::{Channel, ErrorCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long a replay waits for the writer to make room in the outbox.
const REPLAY_PAUSE: Duration = Duration::from_millis(5);

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
        let mut replays = Vec::new();
        {
            let mut joined = self.joined();
            let mut delivery = self.delivery();
            for &channel in &channels {
                joined[channel.index()] = true;
                if channel.is_state() {
                    self.handles
                        .rooms
                        .join(account, channel, self.id, &self.outbox);
                } else {
                    let after = match channel {
                        Channel::Logs => record.logs_seq,
                        _ => record.signals_seq,
                    };
                    delivery.start_at(channel, after);
                    self.handles
                        .rooms
                        .join_catching_up(account, channel, self.id, &self.outbox);
                    replays.push((channel, after));
                }
            }
        }
        metrics::session_resumed();
        let client = self.clone();
        tokio::spawn(async move {
            for (channel, after) in replays {
                if !client.replay(channel, after).await {
                    return;
                }
            }
        });
    }

    /// Queues a channel's entries after `after`: first from the store, then
    /// those held back meanwhile, batch by batch, never filling more than
    /// half the outbox, so that a long absence is caught up at the socket's
    /// pace instead of overflowing the queue; then the member goes live.
    /// False if the client left meanwhile.
    async fn replay(&self, channel: Channel, after: u64) -> bool {
        let account = &self.identity.account;
        let room = (self.handles.limits.queue_limit / 2).max(1);
        let mut upto = after;
        let mut batch = match self.handles.history.after(account, channel, after).await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, %channel, "cannot replay missed entries");
                self.error(
                    ErrorCode::UpstreamUnavailable,
                    "Missed entries could not be replayed",
                    format!("{channel} history is unavailable right now"),
                );
                Vec::new()
            }
        };
        loop {
            // A big batch took a while: more may have been held back.
            let more = batch.len() >= room;
            for frame in batch {
                if frame.seq.is_some_and(|s| s <= upto) {
                    continue;
                }
                upto = upto.max(frame.seq.unwrap_or(0));
                while self.outbox.len() >= room {
                    if self.outbox.closing().is_some() {
                        return false;
                    }
                    tokio::time::sleep(REPLAY_PAUSE).await;
                }
                if !self.outbox.push(frame) {
                    return false;
                }
            }
            if !more {
                break;
            }
            batch = self.handles.rooms.take_held(account, channel, self.id);
        }
        self.handles
            .rooms
            .finish_catch_up(account, channel, self.id, upto);
        true
    }
}
