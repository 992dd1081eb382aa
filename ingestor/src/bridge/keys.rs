//! Who may publish: the terminal keys, and the account each key may
//! publish under.
//!
//! The bridge port is usually reachable from the network (terminals run on
//! separate Windows VPSs), so every connection proves itself in its first
//! line. `BRIDGE_KEY` is one key shared by every terminal, each naming its
//! own account label; `BRIDGE_KEYS_FILE` gives each terminal its own key
//! pinned to one account, so a leaked key publishes for that account only.

use super::session::Refusal;
use std::path::{Path, PathBuf};

/// Shortest key accepted: a key is a password that never has to be typed.
pub const MIN_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("ingestor bridge needs a terminal key: set BRIDGE_KEY (one key for every terminal) or BRIDGE_KEYS_FILE (lines `<account> <key>`, one per terminal)")]
    Missing,
    #[error("set BRIDGE_KEY or BRIDGE_KEYS_FILE, not both")]
    Both,
    #[error("BRIDGE_KEY must be at least {MIN_KEY_LEN} characters without spaces")]
    WeakShared,
    #[error("cannot read BRIDGE_KEYS_FILE {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("BRIDGE_KEYS_FILE {path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("BRIDGE_KEYS_FILE {0} holds no key")]
    Empty(PathBuf),
}

/// The configured keys.
#[derive(Clone)]
pub enum Keys {
    /// One key for all terminals; each names its account in `hello`.
    Shared(String),
    /// `(key, account)`: each key publishes under its account only.
    Pinned(Vec<(String, String)>),
}

impl std::fmt::Debug for Keys {
    // Keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::Shared(_) => f.write_str("Keys::Shared(..)"),
            Keys::Pinned(k) => write!(f, "Keys::Pinned({} keys)", k.len()),
        }
    }
}

impl Keys {
    /// From `BRIDGE_KEY` / `BRIDGE_KEYS_FILE`; exactly one must be set.
    pub fn load(shared: Option<&str>, file: Option<&Path>) -> Result<Keys, KeysError> {
        let shared = shared.map(str::trim).filter(|k| !k.is_empty());
        match (shared, file) {
            (None, None) => Err(KeysError::Missing),
            (Some(_), Some(_)) => Err(KeysError::Both),
            (Some(key), None) => {
                if strong(key) {
                    Ok(Keys::Shared(key.to_owned()))
                } else {
                    Err(KeysError::WeakShared)
                }
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Keys::parse_file(path, &text)
            }
        }
    }

    /// `<account> <key>` per line; `#` starts a comment.
    fn parse_file(path: &Path, text: &str) -> Result<Keys, KeysError> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| KeysError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(account), Some(key), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `<account> <key>`"));
            };
            if !protocol::subject::is_token(account) {
                return Err(bad(
                    "the account must be 1-64 letters, digits, _ - # + (a NATS subject token)",
                ));
            }
            if !strong(key) {
                return Err(bad(&format!(
                    "the key must be at least {MIN_KEY_LEN} characters"
                )));
            }
            if keys.iter().any(|(k, _)| k == key) {
                return Err(bad("this key is already given to another line"));
            }
            keys.push((key.to_owned(), account.to_owned()));
        }
        if keys.is_empty() {
            return Err(KeysError::Empty(path.to_owned()));
        }
        Ok(Keys::Pinned(keys))
    }

    /// The account a `hello` may publish under: its key must be known and,
    /// when pinned, its label (if any) must be the key's account.
    pub fn authorize(
        &self,
        key: Option<&str>,
        label: Option<&str>,
        default_account: &str,
    ) -> Result<String, Refusal> {
        let key = key.unwrap_or_default();
        let label = label.map(str::trim).filter(|l| !l.is_empty());
        if let Some(l) = label {
            if !protocol::subject::is_token(l) {
                return Err(Refusal::InvalidHello(format!(
                    "account label `{l}` is not 1-64 letters, digits, _ - # +"
                )));
            }
        }
        match self {
            Keys::Shared(expected) => {
                if key.is_empty() {
                    return Err(Refusal::NoKey);
                }
                if !same(key.as_bytes(), expected.as_bytes()) {
                    return Err(Refusal::BadKey);
                }
                Ok(label.unwrap_or(default_account).to_owned())
            }
            Keys::Pinned(keys) => {
                if key.is_empty() {
                    return Err(Refusal::NoKey);
                }
                // Compare with every key, so timing says nothing about
                // which one (or whether any) matched.
                let mut found: Option<&str> = None;
                for (k, account) in keys {
                    if same(key.as_bytes(), k.as_bytes()) {
                        found = Some(account);
                    }
                }
                let account = found.ok_or(Refusal::BadKey)?;
                match label {
                    Some(l) if l != account => Err(Refusal::AccountNotAllowed {
                        asked: l.to_owned(),
                    }),
                    _ => Ok(account.to_owned()),
                }
            }
        }
    }
}

fn strong(key: &str) -> bool {
    key.len() >= MIN_KEY_LEN && !key.chars().any(char::is_whitespace)
}

/// Constant-time equality for equal lengths (lengths are not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "key-for-terminal-A-0123";
    const K2: &str = "key-for-terminal-B-4567";

    #[test]
    fn configuration_is_checked() {
        assert!(matches!(Keys::load(None, None), Err(KeysError::Missing)));
        assert!(Keys::load(None, None)
            .unwrap_err()
            .to_string()
            .contains("BRIDGE_KEY"));
        assert!(matches!(
            Keys::load(Some("short"), None),
            Err(KeysError::WeakShared)
        ));
        assert!(matches!(
            Keys::load(Some(K1), Some(Path::new("/x"))),
            Err(KeysError::Both)
        ));
        assert!(matches!(
            Keys::load(None, Some(Path::new("/nonexistent/keys"))),
            Err(KeysError::Read { .. })
        ));
        let p = Path::new("keys");
        for (bad, line) in [
            ("acc", 1),
            ("# c\nacc.x key-for-terminal-A-0123", 2),
            ("acc short", 1),
            (&format!("a {K1}\nb {K1}") as &str, 2),
            ("a b c", 1),
        ] {
            match Keys::parse_file(p, bad) {
                Err(KeysError::Line { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            Keys::parse_file(p, "# nothing\n"),
            Err(KeysError::Empty(_))
        ));
        assert_eq!(format!("{:?}", Keys::Shared(K1.into())), "Keys::Shared(..)");
    }

    #[test]
    fn shared_key_takes_the_label() {
        let keys = Keys::load(Some(K1), None).unwrap();
        assert_eq!(
            keys.authorize(Some(K1), Some("live-1"), "demo"),
            Ok("live-1".into())
        );
        assert_eq!(
            keys.authorize(Some(K1), Some(""), "demo"),
            Ok("demo".into())
        );
        assert_eq!(keys.authorize(Some(K2), None, "demo"), Err(Refusal::BadKey));
        assert_eq!(keys.authorize(None, None, "demo"), Err(Refusal::NoKey));
        assert!(matches!(
            keys.authorize(Some(K1), Some("a.b"), "demo"),
            Err(Refusal::InvalidHello(_))
        ));
    }

    #[test]
    fn pinned_keys_publish_only_their_account() {
        let keys = Keys::parse_file(
            Path::new("k"),
            &format!("# terminals\nacc-A {K1}   # VPS 1\n\nacc-B {K2}\n"),
        )
        .unwrap();
        assert_eq!(keys.authorize(Some(K1), None, "demo"), Ok("acc-A".into()));
        assert_eq!(
            keys.authorize(Some(K1), Some("acc-A"), "demo"),
            Ok("acc-A".into())
        );
        assert_eq!(
            keys.authorize(Some(K1), Some("acc-B"), "demo"),
            Err(Refusal::AccountNotAllowed {
                asked: "acc-B".into()
            })
        );
        assert_eq!(keys.authorize(Some(K2), None, "demo"), Ok("acc-B".into()));
        assert_eq!(
            keys.authorize(Some("nope-nope-nope-nope"), None, "demo"),
            Err(Refusal::BadKey)
        );
    }
}
