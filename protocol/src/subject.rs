//! The NATS subject scheme (contract section 7):
//! `<prefix>.<account>.quotes.<SYMBOL>`, `<prefix>.<account>.positions`,
//! `…orders`, `…account`, `…logs`, `…signals`.
//!
//! Subjects are built only from an [`Account`], never from a raw string,
//! so a label like `*` or `a.b` cannot widen a per-account subject.

use crate::account::{check_prefix, Account, TokenError};
use crate::Channel;

pub use crate::account::{check_token, is_token};

/// Builds and parses subjects under one configurable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectScheme {
    prefix: String,
}

/// Where a bus message belongs: whose account, which channel, and for quotes
/// which symbol (the key that last-value conflation works on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Whose it is (a valid subject token by construction).
    pub account: Account,
    pub channel: Channel,
    pub symbol: Option<String>,
}

impl SubjectScheme {
    /// A scheme under `prefix`, or why the prefix cannot start a subject
    /// (it must be one or more valid tokens joined by `.`).
    pub fn try_new(prefix: impl Into<String>) -> Result<Self, TokenError> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        Ok(SubjectScheme { prefix })
    }

    /// A scheme under a prefix already known to be valid (the default, or
    /// one checked at start-up).
    pub fn new(prefix: impl Into<String>) -> Self {
        SubjectScheme {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every subject of every account: what a gateway subscribes to.
    pub fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    pub fn quote(&self, account: &Account, symbol: &str) -> String {
        format!("{}.{account}.quotes.{symbol}", self.prefix)
    }

    /// The subject of a channel that has no per-key part (every channel
    /// but quotes); for quotes it is the wildcard over all symbols.
    pub fn channel(&self, account: &Account, channel: Channel) -> String {
        match channel {
            Channel::Quotes => format!("{}.{account}.quotes.*", self.prefix),
            other => format!("{}.{account}.{}", self.prefix, other.name()),
        }
    }

    /// Parses a subject of this scheme; anything else is `None` (and is
    /// ignored by the gateway rather than guessed at).
    pub fn parse(&self, subject: &str) -> Option<Route> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let account = Account::new(parts.next()?).ok()?;
        let channel: Channel = parts.next()?.parse().ok()?;
        let symbol = match channel {
            Channel::Quotes => Some(parts.next().filter(|s| is_token(s))?.to_owned()),
            _ => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Route {
            account,
            channel,
            symbol,
        })
    }
}

impl Default for SubjectScheme {
    fn default() -> Self {
        SubjectScheme::new("mt5")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_every_channel() {
        let s = SubjectScheme::default();
        let demo = Account::new("demo").unwrap();
        assert_eq!(s.quote(&demo, "EURUSD"), "mt5.demo.quotes.EURUSD");
        let r = s.parse("mt5.demo.quotes.EURUSD").unwrap();
        assert_eq!(r.channel, Channel::Quotes);
        assert_eq!(r.symbol.as_deref(), Some("EURUSD"));
        for c in Channel::ALL.into_iter().filter(|c| *c != Channel::Quotes) {
            let subject = s.channel(&Account::new("acc-1").unwrap(), c);
            let r = s.parse(&subject).unwrap();
            assert_eq!(
                (r.account.as_str(), r.channel, r.symbol),
                ("acc-1", c, None)
            );
        }
    }

    #[test]
    fn a_scheme_needs_a_valid_prefix() {
        assert_eq!(
            SubjectScheme::try_new("prod.mt5").unwrap().all(),
            "prod.mt5.>"
        );
        for bad in ["", "mt5.", "*", ">", "mt5.*", "m t5"] {
            assert!(SubjectScheme::try_new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_foreign_subjects() {
        let s = SubjectScheme::new("mt5");
        for bad in [
            "mt5",
            "mt5.",
            "mt6.demo.logs",
            "mt5.demo.nope",
            "mt5.demo.quotes",
            "mt5.demo.logs.extra",
            "mt5.demo.quotes.EURUSD.x",
            "mt5..logs",
            "mt5x.demo.logs",
        ] {
            assert!(s.parse(bad).is_none(), "{bad}");
        }
    }
}
