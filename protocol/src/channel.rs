//! The six channels a dashboard can subscribe to, and the event each one
//! is delivered as.

use std::fmt;
use std::str::FromStr;

/// A subscribable channel. The order is the order of [`Channel::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Quotes,
    Positions,
    Orders,
    Logs,
    Signals,
    Account,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Quotes,
        Channel::Positions,
        Channel::Orders,
        Channel::Logs,
        Channel::Signals,
        Channel::Account,
    ];

    /// The name used in `subscribe` payloads, in tokens and in NATS subjects.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Positions => "positions",
            Channel::Orders => "orders",
            Channel::Logs => "logs",
            Channel::Signals => "signals",
            Channel::Account => "account",
        }
    }

    /// The server → client event that carries this channel's data.
    pub const fn event(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Positions => "positions_update",
            Channel::Orders => "orders_update",
            Channel::Logs => "logs_update",
            Channel::Signals => "signals_update",
            Channel::Account => "account_update",
        }
    }

    /// State channels are last-value (a late subscriber gets the current
    /// value); the others are sequences that must not lose entries.
    pub const fn is_state(self) -> bool {
        !matches!(self, Channel::Logs | Channel::Signals)
    }

    /// A small dense index, handy for per-channel arrays and bit sets.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel `{0}`")]
pub struct ParseChannelError(pub String);

impl FromStr for Channel {
    type Err = ParseChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| ParseChannelError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(c.name().parse::<Channel>(), Ok(c));
            assert_eq!(Channel::ALL[c.index()], c);
        }
        assert!("Quotes".parse::<Channel>().is_err());
    }

    #[test]
    fn events_match_the_spec() {
        let events: Vec<_> = Channel::ALL.iter().map(|c| c.event()).collect();
        assert_eq!(
            events,
            [
                "quotes",
                "positions_update",
                "orders_update",
                "logs_update",
                "signals_update",
                "account_update"
            ]
        );
        assert!(Channel::Quotes.is_state() && !Channel::Logs.is_state());
    }
}
