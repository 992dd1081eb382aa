//! Where missed logs and signals are read back from for a resumed session:
//! JetStream when the gateway runs on NATS, or the rooms' memory ring in
//! standalone mode (see [`Rooms::history_after`]).

use crate::fanout::frame::Frame;
use crate::fanout::rooms::Rooms;
use bus::{Bus, BusError};
use protocol::{Channel, SubjectScheme};
use std::sync::Arc;

/// How many missed entries one resume replays at most.
const MAX_REPLAY: usize = 100_000;

/// A cheap handle that reads a channel's entries after a sequence.
#[derive(Clone)]
pub struct History {
    /// JetStream (NATS), or the memory bus of standalone mode.
    bus: Bus,
    /// Subject names for an account's channel.
    scheme: SubjectScheme,
    /// The memory ring, for the memory bus.
    rooms: Arc<Rooms>,
}

impl History {
    /// Reads from `bus` (JetStream) or, for the memory bus, from `rooms`.
    pub fn new(bus: Bus, scheme: SubjectScheme, rooms: Arc<Rooms>) -> Self {
        History { bus, scheme, rooms }
    }

    /// The `channel` entries of `account` after `after`, oldest first.
    pub async fn after(
        &self,
        account: &str,
        channel: Channel,
        after: u64,
    ) -> Result<Vec<Arc<Frame>>, BusError> {
        let messages = match &self.bus {
            Bus::Memory(_) => return Ok(self.rooms.history_after(account, channel, after)),
            Bus::Nats(nats) => {
                let subject = self.scheme.channel(account, channel);
                nats.history(self.scheme.prefix(), &subject, after, MAX_REPLAY)
                    .await?
            }
        };
        Ok(messages
            .into_iter()
            .filter_map(|m| Frame::from_bus(channel, None, &m.payload, m.seq).ok())
            .map(Arc::new)
            .collect())
    }
}
