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
use crate::fanout::outbox::Outbox;
use protocol::Channel;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

pub type ClientId = u64;

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
}

#[derive(Default)]
struct Room {
    /// Membership and last values, under one lock (see the module header).
    inner: Mutex<RoomInner>,
}

/// A member either receives live frames, or (while its missed logs or
/// signals are being replayed) has them held back in `backlog`, so the
/// replay and the live stream join without a gap or a reordering.
struct Member {
    /// The member's queue.
    outbox: Arc<Outbox>,
    /// Frames held back while catching up; `None` when live.
    backlog: Option<Vec<Arc<Frame>>>,
}

impl Member {
    fn deliver(&mut self, frame: Arc<Frame>) {
        match &mut self.backlog {
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
                    self.history.pop_front();
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

    /// Adds a member and queues the channel's current value(s) for it.
    /// Returns the last `seq` published on the channel before the join (0
    /// for state channels, or when there has been none): the member gets
    /// every entry after it.
    pub fn join(&self, account: &str, channel: Channel, id: ClientId, outbox: &Arc<Outbox>) -> u64 {
        let room = self.room(account);
        let mut inner = room.lock();
        let member = Member {
            outbox: outbox.clone(),
            backlog: None,
        };
        inner.members[channel.index()].insert(id, member);
        for frame in inner.snapshot(channel) {
            outbox.push(frame);
        }
        inner.last_seq[channel.index()]
    }

    /// Adds a member whose live frames are held back until
    /// [`Rooms::finish_catch_up`], while its missed entries are replayed.
    pub fn join_catching_up(
        &self,
        account: &str,
        channel: Channel,
        id: ClientId,
        outbox: &Arc<Outbox>,
    ) {
        let member = Member {
            outbox: outbox.clone(),
            backlog: Some(Vec::new()),
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

    /// Logs or signals after `seq`, oldest first, from memory.
    pub fn history_after(&self, account: &str, channel: Channel, seq: u64) -> Vec<Arc<Frame>> {
        self.room(account)
            .lock()
            .history
            .iter()
            .filter(|(_, c, f)| *c == channel && f.seq.is_some_and(|s| s > seq))
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        r.join("a", Channel::Quotes, 1, &o);
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
        assert_eq!(r.join("a", Channel::Logs, 1, &o), 0);
        r.publish("a", Channel::Logs, log(7));
        let signal = Frame::from_bus(Channel::Signals, None, b"{}", Some(8)).unwrap();
        r.publish("a", Channel::Signals, Arc::new(signal));
        let late = Arc::new(Outbox::new(10, 0));
        assert_eq!(r.join("a", Channel::Logs, 2, &late), 7);
        assert_eq!(r.join("a", Channel::Signals, 2, &late), 8);
        assert_eq!(r.join("a", Channel::Quotes, 2, &late), 0);
        assert!(late.is_empty(), "no history is queued for a joiner");
    }

    #[test]
    fn accounts_and_channels_are_isolated() {
        let r = rooms();
        let o = Arc::new(Outbox::new(10, 0));
        r.join("a", Channel::Quotes, 1, &o);
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
        let after: Vec<_> = r
            .history_after("a", Channel::Logs, 3)
            .iter()
            .map(|f| f.seq)
            .collect();
        assert_eq!(after, [Some(4), Some(5)]);
        assert!(r.history_after("a", Channel::Signals, 0).is_empty());
    }

    #[test]
    fn catch_up_joins_replay_and_live_without_gap_or_repeat() {
        let r = rooms();
        let log = |seq| Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap());
        let o = Arc::new(Outbox::new(10, 0));
        r.join_catching_up("a", Channel::Logs, 1, &o);
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
