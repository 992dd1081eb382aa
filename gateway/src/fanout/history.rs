//! Where missed logs and signals are read back from for a resumed session,
//! a page at a time: this replica's memory ring when it holds everything
//! after the checkpoint (the feed was open since then; sessions of one
//! account resuming together then share the same frames and nobody reads
//! JetStream), otherwise JetStream, one subject from the checkpoint to that
//! subject's own last entry (no timeout wait on a quiet channel).
//!
//! Opening says what cannot be read any more (retention dropped it) and
//! where the read ends; a read that fails midway tells the caller where it
//! stopped. Turning those into `RESUME_GAP` is the session's business.

use crate::fanout::frame::Frame;
use crate::fanout::rooms::Rooms;
use bus::{Bus, BusError, EventPages};
use protocol::{Channel, SubjectScheme};
use std::sync::Arc;

/// A cheap handle that opens reads of a channel's entries after a sequence.
#[derive(Clone)]
pub struct History {
    /// JetStream (NATS), or the memory bus of standalone mode.
    bus: Bus,
    /// Subject names for an account's channel.
    scheme: SubjectScheme,
    /// The memory ring.
    rooms: Arc<Rooms>,
}

/// An opened read: the entries from `next_seq()` to `until()`, and what
/// retention dropped before them.
pub struct Opened {
    /// The read itself.
    pub reader: Reader,
    /// Sequences after the checkpoint that are gone (first, last).
    pub lost: Option<(u64, u64)>,
}

/// Reads one channel's entries page by page, oldest first.
pub struct Reader {
    /// The channel read.
    channel: Channel,
    /// The lowest sequence not read yet.
    next: u64,
    /// The last sequence of the read.
    until: u64,
    /// Memory or JetStream.
    source: Source,
}

/// Where a [`Reader`] reads from.
enum Source {
    /// The memory ring of `account`.
    Memory {
        /// The rooms holding the ring.
        rooms: Arc<Rooms>,
        /// The account read.
        account: protocol::Account,
    },
    /// JetStream pages of one subject.
    Stream(EventPages),
}

impl History {
    /// Reads from `rooms` when they cover the range, else from `bus`.
    pub fn new(bus: Bus, scheme: SubjectScheme, rooms: Arc<Rooms>) -> Self {
        History { bus, scheme, rooms }
    }

    /// Opens a read of `account`'s `channel` entries after `after`. An
    /// error means JetStream could not be asked; [`History::known_last`]
    /// then says how far the entries are known to go.
    pub async fn open(
        &self,
        account: &protocol::Account,
        channel: Channel,
        after: u64,
    ) -> Result<Opened, BusError> {
        let nats = match &self.bus {
            Bus::Nats(nats) if !self.rooms.covers(account, after) => nats,
            // In memory: standalone mode, or this replica saw it all.
            _ => {
                return Ok(Opened {
                    reader: Reader {
                        channel,
                        next: after + 1,
                        until: self.rooms.last_seq(account, channel),
                        source: Source::Memory {
                            rooms: self.rooms.clone(),
                            account: account.clone(),
                        },
                    },
                    lost: None,
                })
            }
        };
        let prefix = self.scheme.prefix();
        let subject = self.scheme.channel(account, channel);
        let until = nats.subject_last_seq(prefix, &subject).await?;
        let lost = nats.events_position(prefix).await?.lost_after(after, until);
        let from = lost.map_or(after, |(_, last)| last);
        let pages = nats.read_events(prefix, &subject, from, until).await?;
        Ok(Opened {
            reader: Reader {
                channel,
                next: from + 1,
                until,
                source: Source::Stream(pages),
            },
            lost,
        })
    }

    /// The last `seq` of `channel` this replica knows of without asking
    /// JetStream (what a failed read leaves unread at most).
    pub fn known_last(&self, account: &str, channel: Channel) -> u64 {
        self.rooms.last_seq(account, channel)
    }
}

impl Reader {
    /// Up to `max` entries, oldest first; empty once the read is done.
    pub async fn next_page(&mut self, max: usize) -> Result<Vec<Arc<Frame>>, BusError> {
        if self.next > self.until {
            return Ok(Vec::new());
        }
        let page = match &mut self.source {
            Source::Memory { rooms, account } => {
                let page =
                    rooms.history_page(account, self.channel, self.next - 1, self.until, max);
                // Nothing more in memory up to `until`: done.
                self.next = page
                    .last()
                    .and_then(|f| f.seq)
                    .map_or(self.until + 1, |s| s + 1);
                page
            }
            Source::Stream(pages) => loop {
                let raw = pages.next_page(max).await?;
                self.next = pages.next_seq();
                let done = raw.is_empty();
                // A malformed entry is skipped, as the relay skips it.
                let page: Vec<Arc<Frame>> = raw
                    .into_iter()
                    .filter_map(|m| Frame::from_bus(self.channel, None, &m.payload, m.seq).ok())
                    .map(Arc::new)
                    .collect();
                if done || !page.is_empty() {
                    break page;
                }
            },
        };
        Ok(page)
    }

    /// The lowest sequence not read yet.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The last sequence of the read.
    pub fn until(&self) -> u64 {
        self.until
    }
}
