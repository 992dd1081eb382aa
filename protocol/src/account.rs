//! Who a subject belongs to: the MT5 account label, and the one rule that
//! says what may stand as a single NATS subject token.
//!
//! An account becomes part of every subject the gateway subscribes to or
//! replays from (`<prefix>.<account>.logs`). A label such as `*`, `>` or
//! `a.b` would turn a per-account filter into a filter over other accounts,
//! so an [`Account`] can only be built from a valid token: the gateway (for
//! a token's `account` claim and `DEFAULT_ACCOUNT`) and the ingestor (for
//! `--account` and the bridge's `hello`) apply the same rule, here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest token accepted (accounts, symbols, prefix parts).
pub const MAX_TOKEN_LEN: usize = 64;

/// Why a string cannot stand as one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing at all.
    #[error("is empty")]
    Empty,
    /// More than [`MAX_TOKEN_LEN`] bytes.
    #[error("is {len} bytes long (at most {MAX_TOKEN_LEN})")]
    TooLong {
        /// The length that was given.
        len: usize,
    },
    /// A byte outside letters, digits and `_ - # +` (for example `.`, `*`,
    /// `>`, whitespace or a control character).
    #[error("contains {found:?} at byte {at} (only letters, digits, _ - # + are allowed)")]
    Forbidden {
        /// The first offending character (escaped when printed).
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks that `s` can stand as one NATS subject token: 1 to 64 ASCII
/// letters, digits, `_`, `-`, `#` or `+`. No `.` (a token separator), no
/// `*` or `>` (wildcards), no whitespace or control characters.
pub fn check_token(s: &str) -> Result<(), TokenError> {
    if s.is_empty() {
        return Err(TokenError::Empty);
    }
    if let Some((at, found)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '#' | '+')))
    {
        return Err(TokenError::Forbidden { found, at });
    }
    if s.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong { len: s.len() });
    }
    Ok(())
}

/// True when `s` can stand as one NATS subject token (see [`check_token`]).
pub fn is_token(s: &str) -> bool {
    check_token(s).is_ok()
}

/// An MT5 account label that is a valid subject token. The only way to get
/// one is [`Account::new`] (or parsing / deserializing, which call it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Account(String);

impl Account {
    /// The account `label`, or why it cannot be one.
    pub fn new(label: impl Into<String>) -> Result<Account, TokenError> {
        let label = label.into();
        check_token(&label)?;
        Ok(Account(label))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Account {
    type Error = TokenError;
    fn try_from(label: String) -> Result<Self, Self::Error> {
        Account::new(label)
    }
}

impl From<Account> for String {
    fn from(a: Account) -> String {
        a.0
    }
}

impl FromStr for Account {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Account::new(s)
    }
}

impl AsRef<str> for Account {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Account {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Account {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Account {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a subject prefix: one or more valid tokens joined by `.`
/// (`mt5`, `prod.mt5`).
pub fn check_prefix(prefix: &str) -> Result<(), TokenError> {
    prefix.split('.').try_for_each(check_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_labels() {
        for ok in [
            "demo",
            "acc-1",
            "ACC_2",
            "12345678",
            "a#b+c",
            &"x".repeat(64),
        ] {
            assert_eq!(Account::new(ok).map(String::from).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn refuses_wildcards_separators_and_blanks() {
        for bad in [
            "",
            "*",
            ">",
            "a.b",
            "a*",
            "a>",
            ".",
            "a b",
            " a",
            "a\n",
            "a\tb",
            "a\u{1b}[31m",
            "é",
            "a/b",
            "a\0",
        ] {
            assert!(Account::new(bad).is_err(), "{bad:?}");
            assert!(!is_token(bad), "{bad:?}");
        }
        assert_eq!(
            Account::new("x".repeat(65)),
            Err(TokenError::TooLong { len: 65 })
        );
        assert_eq!(
            Account::new("a.b"),
            Err(TokenError::Forbidden { found: '.', at: 1 })
        );
        assert_eq!(Account::new(""), Err(TokenError::Empty));
    }

    #[test]
    fn the_error_message_escapes_what_it_quotes() {
        let e = Account::new("a\nINFO forged").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("'\\n'"), "{e}");
    }

    #[test]
    fn deserializing_applies_the_rule() {
        assert_eq!(
            serde_json::from_str::<Account>("\"acc-1\"").unwrap(),
            "acc-1"
        );
        for bad in ["\"*\"", "\"a.b\"", "\"\"", "\">\""] {
            assert!(serde_json::from_str::<Account>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_dotted_tokens() {
        for ok in ["mt5", "prod.mt5", "a.b.c"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "mt5.", ".mt5", "mt5..x", "mt5.*", "mt5.>", "m t5"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
