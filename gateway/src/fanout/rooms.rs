//! Who receives what: per-account, per-channel membership, the last value of
//! every state key, and a short history of logs and signals.
//!
//! Rooms are our own rather than socketioxide's because one fan-out serves
//! both transports (Socket.IO and plain WebSocket) and because each member
//! is a conflating [`Outbox`], not a raw socket queue that fails when full.
//!
//! Joining a state channel and fanning out a new value take the same lock,
//! so a joiner's snapshot and the live updates after it are queued in the
//! order they happened: nobody sees an older value after a newer one. For
//! logs and signals the join reports the last `seq` fanned out before it,
//! the exact point the joiner's session starts from.

use crate::fanout::frame::{Frame, StateKey};
use crate::fanout::outbox::{Closing, Outbox};
use crate::observability::metrics;
use protocol::Channel;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

pub type ClientId = u64;

/// `feed_start` before the relay's feed first opened.
const NO_FEED: u64 = u64::MAX;

/// How much event history each account keeps in memory, for resuming
/// sessions in standalone mode (NATS deployments read JetStream instead).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Entries kept per account at most.
    pub max_entries: usize,
    /// Entries older than this are dropped.
    pub max_age: Duration,
}

/// Every account's room: the one place frames are fanned out from.
pub struct Rooms {
    /// One room per account, made on first use.
    accounts: RwLock<HashMap<String, Arc<Room>>>,
    /// How much history each room keeps.
    limits: HistoryLimits,
    /// The events stream position the relay's feed opened at
    /// ([`NO_FEED`] until it opens): every entry after it passes through
    /// here, so a subscription starts there at the latest, and the memory
    /// ring holds everything after it that it has not aged out.
    feed_start: AtomicU64,
}

#[derive(Default)]
struct Room {
    /// Membership and last values, under one lock (see the module header).
    inner: Mutex<RoomInner>,
}

/// A member either receives live frames, or (while its missed logs or
/// signals are being replayed) has them held back in `backlog`, so the
/// replay and the live stream join without a gap or a reordering. The
/// backlog is bounded: past `max_held` frames the member is told to
/// reconnect (and resumes from its checkpoint) instead of growing.
struct Member {
    /// The member's queue.
    outbox: Arc<Outbox>,
    /// Frames held back while catching up; `None` when live.
    backlog: Option<Vec<Arc<Frame>>>,
    /// The most frames held back before the member is let go.
    max_held: usize,
}

impl Member {
    fn deliver(&mut self, frame: Arc<Frame>) {
        match &mut self.backlog {
            Some(held) if held.len() >= self.max_held => {
                self.backlog = None;
                let first = self.outbox.close(Closing::Told {
                    reason: "Too far behind while resuming".into(),
                    reconnect: true,
                });
                if first {
                    metrics::client_cut_off("resume_backlog");
                }
            }
            Some(held) => held.push(frame),
            None => {
                self.outbox.push(frame);
            }
        }
    }
}

#[derive(Default)]
struct RoomInner {
    /// Members per channel (indexed by `Channel::index`).
    members: [HashMap<ClientId, Member>; 6],
    /// The last quote per symbol.
    quotes: BTreeMap<Arc<str>, Arc<Frame>>,
    /// The last positions list.
    positions: Option<Arc<Frame>>,
    /// The last orders list.
    orders: Option<Arc<Frame>>,
    /// The last account figures.
    account: Option<Arc<Frame>>,
    /// Recent logs and signals (when received, channel, frame), oldest
    /// first: the memory ring a standalone resume replays from.
    history: VecDeque<(Instant, Channel, Arc<Frame>)>,
    /// The last `seq` published per channel (logs and signals).
    last_seq: [u64; 6],
    /// The highest `seq` the ring has dropped (0: none): entries after it
    /// are all still there.
    trimmed: u64,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RoomInner {
    fn snapshot(&self, channel: Channel) -> Vec<Arc<Frame>> {
        match channel {
            Channel::Quotes => self.quotes.values().cloned().collect(),
            Channel::Positions => self.positions.iter().cloned().collect(),
            Channel::Orders => self.orders.iter().cloned().collect(),
            Channel::Account => self.account.iter().cloned().collect(),
            Channel::Logs | Channel::Signals => Vec::new(),
        }
    }

    fn remember(&mut self, channel: Channel, frame: &Arc<Frame>, limits: HistoryLimits) {
        match &frame.key {
            Some(StateKey::Quote(symbol)) => {
                self.quotes.insert(symbol.clone(), frame.clone());
            }
            Some(StateKey::Positions) => self.positions = Some(frame.clone()),
            Some(StateKey::Orders) => self.orders = Some(frame.clone()),
            Some(StateKey::Account) => self.account = Some(frame.clone()),
            None if frame.seq.is_some() => {
                let last = &mut self.last_seq[channel.index()];
                *last = (*last).max(frame.seq.unwrap_or(0));
                let now = Instant::now();
                self.history.push_back((now, channel, frame.clone()));
                while self.history.len() > limits.max_entries
                    || self
                        .history
                        .front()
                        .is_some_and(|(t, _, _)| now.duration_since(*t) > limits.max_age)
                {
                    if let Some((_, _, old)) = self.history.pop_front() {
                        self.trimmed = self.trimmed.max(old.seq.unwrap_or(0));
                    }
                }
            }
            None => {}
        }
    }
}

impl Rooms {
    pub fn new(limits: HistoryLimits) -> Self {
        Rooms {
            accounts: RwLock::new(HashMap::new()),
            limits,
            feed_start: AtomicU64::new(NO_FEED),
        }
    }

    fn room(&self, account: &str) -> Arc<Room> {
        if let Some(room) = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
        {
            return room.clone();
        }
        self.accounts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(account.to_owned())
            .or_default()
            .clone()
    }

    /// Adds a member to `channels` at once and queues their current
    /// values for it. `before` runs first, under the room's lock, with the
    /// last `seq` published on each log or signal channel joined before
    /// the join (0 when there has been none; the member gets every entry
    /// after it): what it queues (the `subscribed` reply) comes before any
    /// snapshot or live frame.
    pub fn join(
        &self,
        account: &str,
        channels: &[Channel],
        id: ClientId,
        outbox: &Arc<Outbox>,
        before: impl FnOnce(&[(Channel, u64)]),
    ) {
        let room = self.room(account);
        let mut inner = room.lock();
        let mut starts = Vec::with_capacity(channels.len());
        for &channel in channels {
            let member = Member {
                outbox: outbox.clone(),
                backlog: None,
                max_held: 0,
            };
            inner.members[channel.index()].insert(id, member);
            if !channel.is_state() {
                starts.push((
                    channel,
                    inner.last_seq[channel.index()].max(self.feed_start()),
                ));
            }
        }
        before(&starts);
        for &channel in channels {
            for frame in inner.snapshot(channel) {
                outbox.push(frame);
            }
        }
    }

    /// Records where the relay's feed opened (the events stream's last
    /// sequence then): the first time only, since the memory ring starts
    /// there.
    pub fn set_feed_start(&self, seq: u64) {
        let _ =
            self.feed_start
                .compare_exchange(NO_FEED, seq, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Where the relay's feed first opened; 0 before it did.
    fn feed_start(&self) -> u64 {
        match self.feed_start.load(Ordering::Relaxed) {
            NO_FEED => 0,
            seq => seq,
        }
    }

    /// The last `seq` of `channel` this replica knows of: the last one
    /// fanned out, or where its feed opened.
    pub fn last_seq(&self, account: &str, channel: Channel) -> u64 {
        self.room(account).lock().last_seq[channel.index()].max(self.feed_start())
    }

    /// True when the memory ring holds every entry of `account` after
    /// `after`: the feed was open since then and nothing after it aged out.
    pub fn covers(&self, account: &str, after: u64) -> bool {
        let start = self.feed_start.load(Ordering::Relaxed);
        start != NO_FEED && after >= start && after >= self.room(account).lock().trimmed
    }

    /// Up to `max` entries of `channel` with a `seq` in `after + 1 ..=
    /// until`, oldest first, from memory (shared frames: sessions of one
    /// account resuming together read the same ones).
    pub fn history_page(
        &self,
        account: &str,
        channel: Channel,
        after: u64,
        until: u64,
        max: usize,
    ) -> Vec<Arc<Frame>> {
        let room = self.room(account);
        let inner = room.lock();
        // The ring is in `seq` order: skip what is at or before `after`.
        let start = inner
            .history
            .partition_point(|(_, _, f)| f.seq.unwrap_or(0) <= after);
        inner
            .history
            .range(start..)
            .filter(|(_, c, f)| *c == channel && f.seq.is_some_and(|s| s <= until))
            .take(max)
            .map(|(_, _, f)| f.clone())
            .collect()
    }

    /// Adds a member whose live frames are held back until
    /// [`Rooms::finish_catch_up`], while its missed entries are replayed.
    pub fn join_catching_up(
        &self,
        account: &str,
        channel: Channel,
        id: ClientId,
        outbox: &Arc<Outbox>,
        max_held: usize,
    ) {
        let member = Member {
            outbox: outbox.clone(),
            backlog: Some(Vec::new()),
            max_held: max_held.max(1),
        };
        self.room(account).lock().members[channel.index()].insert(id, member);
    }

    /// The frames held back so far for a member that is catching up; it
    /// goes on catching up (a long replay is queued batch by batch).
    pub fn take_held(&self, account: &str, channel: Channel, id: ClientId) -> Vec<Arc<Frame>> {
        let room = self.room(account);
        let mut inner = room.lock();
        inner.members[channel.index()]
            .get_mut(&id)
            .and_then(|m| m.backlog.as_mut())
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Ends a catch-up: frames held back with a `seq` above `replayed_up_to`
    /// are queued, in order, and the member goes live.
    pub fn finish_catch_up(
        &self,
        account: &str,
        channel: Channel,
        id: ClientId,
        replayed_up_to: u64,
    ) {
        let room = self.room(account);
        let mut inner = room.lock();
        if let Some(member) = inner.members[channel.index()].get_mut(&id) {
            for frame in member.backlog.take().unwrap_or_default() {
                if frame.seq.is_none_or(|s| s > replayed_up_to) {
                    member.outbox.push(frame);
                }
            }
        }
    }

    pub fn leave(&self, account: &str, channel: Channel, id: ClientId) {
        self.room(account).lock().members[channel.index()].remove(&id);
    }

    pub fn leave_all(&self, account: &str, id: ClientId) {
        let room = self.room(account);
        let mut inner = room.lock();
        for members in inner.members.iter_mut() {
            members.remove(&id);
        }
    }

    /// Keeps `frame` as the channel's last value (or in its history)
    /// without sending it: for quotes held back by the throttle.
    pub fn remember(&self, account: &str, channel: Channel, frame: &Arc<Frame>) {
        self.room(account)
            .lock()
            .remember(channel, frame, self.limits);
    }

    /// Remembers `frame` and queues it for every member of the channel.
    /// Returns how many members it was queued for.
    pub fn publish(&self, account: &str, channel: Channel, frame: Arc<Frame>) -> usize {
        let room = self.room(account);
        let mut inner = room.lock();
        inner.remember(channel, &frame, self.limits);
        Self::queue(&mut inner, channel, frame)
    }

    /// Queues an already remembered `frame` for every member of the channel.
    pub fn fan_out(&self, account: &str, channel: Channel, frame: Arc<Frame>) -> usize {
        let room = self.room(account);
        let mut inner = room.lock();
        Self::queue(&mut inner, channel, frame)
    }

    fn queue(inner: &mut RoomInner, channel: Channel, frame: Arc<Frame>) -> usize {
        let members = &mut inner.members[channel.index()];
        for member in members.values_mut() {
            member.deliver(frame.clone());
        }
        members.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Joins one channel; the `seq` it starts after (0 for a state one).
    pub(crate) fn join1(
        r: &Rooms,
        account: &str,
        c: Channel,
        id: ClientId,
        o: &Arc<Outbox>,
    ) -> u64 {
        let mut start = 0;
        r.join(account, &[c], id, o, |s| {
            start = s.first().map_or(0, |s| s.1)
        });
        start
    }

    fn rooms() -> Rooms {
        Rooms::new(HistoryLimits {
            max_entries: 3,
            max_age: Duration::from_secs(60),
        })
    }

    fn quote(symbol: &str, bid: f64) -> Arc<Frame> {
        let json = format!(r#"{{"symbol":"{symbol}","bid":{bid}}}"#);
        Arc::new(Frame::from_bus(Channel::Quotes, Some(symbol), json.as_bytes(), None).unwrap())
    }

    #[test]
    fn joiners_get_the_snapshot_then_live_values() {
        let r = rooms();
        r.publish("a", Channel::Quotes, quote("EURUSD", 1.0));
        r.publish("a", Channel::Quotes, quote("GBPUSD", 2.0));
        let o = Arc::new(Outbox::new(10, 0));
        join1(&r, "a", Channel::Quotes, 1, &o);
        assert_eq!(o.len(), 2);
        assert_eq!(r.publish("a", Channel::Quotes, quote("EURUSD", 1.1)), 1);
        let got: Vec<_> = std::iter::from_fn(|| o.pop())
            .map(|f| f.data.get().to_owned())
            .collect();
        assert_eq!(
            got,
            [
                r#"{"symbol":"EURUSD","bid":1.1}"#,
                r#"{"symbol":"GBPUSD","bid":2}"#
            ]
        );
    }

    #[test]
    fn an_event_join_reports_the_last_seq_before_it() {
        let r = rooms();
        let log = |seq| Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
        let o = Arc::new(Outbox::new(10, 0));
        assert_eq!(join1(&r, "a", Channel::Logs, 1, &o), 0);
        r.publish("a", Channel::Logs, log(7));
        let signal = Frame::from_bus(Channel::Signals, None, b"{}", Some(8)).unwrap();
        r.publish("a", Channel::Signals, Arc::new(signal));
        let late = Arc::new(Outbox::new(10, 0));
        assert_eq!(join1(&r, "a", Channel::Logs, 2, &late), 7);
        assert_eq!(join1(&r, "a", Channel::Signals, 2, &late), 8);
        assert_eq!(join1(&r, "a", Channel::Quotes, 2, &late), 0);
        assert!(late.is_empty(), "no history is queued for a joiner");
    }

    #[test]
    fn accounts_and_channels_are_isolated() {
        let r = rooms();
        let o = Arc::new(Outbox::new(10, 0));
        join1(&r, "a", Channel::Quotes, 1, &o);
        assert_eq!(r.publish("b", Channel::Quotes, quote("EURUSD", 1.0)), 0);
        let log = Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(1)).unwrap());
        assert_eq!(r.publish("a", Channel::Logs, log), 0);
        assert!(o.is_empty());
        r.leave("a", Channel::Quotes, 1);
        assert_eq!(r.publish("a", Channel::Quotes, quote("EURUSD", 1.0)), 0);
    }

    #[test]
    fn history_is_bounded_and_read_after_a_seq() {
        let r = rooms();
        for seq in 1..=5 {
            let f = Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
            r.publish("a", Channel::Logs, f);
        }
        let page = |after, until, max| -> Vec<_> {
            r.history_page("a", Channel::Logs, after, until, max)
                .iter()
                .map(|f| f.seq)
                .collect()
        };
        assert_eq!(page(3, 5, 10), [Some(4), Some(5)]);
        assert_eq!(page(2, 4, 10), [Some(3), Some(4)], "up to `until`");
        assert_eq!(page(2, 5, 1), [Some(3)], "at most `max`");
        assert!(r.history_page("a", Channel::Signals, 0, 9, 10).is_empty());
        // The ring keeps 3: 1 and 2 aged out.
        assert!(!r.covers("a", 3), "no feed opened yet");
        r.set_feed_start(0);
        assert!(!r.covers("a", 1) && r.covers("a", 2) && r.covers("a", 4));
    }

    #[test]
    fn a_subscription_starts_where_the_feed_opened_at_the_earliest() {
        let r = rooms();
        let o = Arc::new(Outbox::new(10, 0));
        r.set_feed_start(300);
        r.set_feed_start(999);
        assert_eq!(
            join1(&r, "a", Channel::Logs, 1, &o),
            300,
            "not 0: everything"
        );
        assert_eq!(r.last_seq("a", Channel::Signals), 300);
        let log = Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(301)).unwrap());
        r.publish("a", Channel::Logs, log);
        assert_eq!(join1(&r, "a", Channel::Logs, 2, &o), 301);
    }

    #[test]
    fn a_catch_up_backlog_past_its_bound_lets_the_member_go() {
        let r = rooms();
        let o = Arc::new(Outbox::new(10, 0));
        r.join_catching_up("a", Channel::Logs, 1, &o, 2);
        for seq in 1..=3 {
            let log = Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
            r.publish("a", Channel::Logs, log);
        }
        assert_eq!(
            o.closing(),
            Some(Closing::Told {
                reason: "Too far behind while resuming".into(),
                reconnect: true
            })
        );
    }

    #[test]
    fn catch_up_joins_replay_and_live_without_gap_or_repeat() {
        let r = rooms();
        let log = |seq| Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
        let o = Arc::new(Outbox::new(10, 0));
        r.join_catching_up("a", Channel::Logs, 1, &o, 100);
        r.publish("a", Channel::Logs, log(3));
        r.publish("a", Channel::Logs, log(4));
        assert!(o.is_empty(), "live frames wait while replaying");
        // The replay (from the store) covered 1..=3.
        for seq in 1..=3 {
            o.push(log(seq));
        }
        r.finish_catch_up("a", Channel::Logs, 1, 3);
        r.publish("a", Channel::Logs, log(5));
        let seqs: Vec<_> = std::iter::from_fn(|| o.pop())
            .map(|f| f.seq.unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }
}
