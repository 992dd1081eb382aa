//! Cutting a token off before it expires: `gateway revoke --jti ID` (one
//! token) or `gateway revoke --sub NAME [--before T]` (every token of a
//! person issued before T, default now).
//!
//! A revocation is written to Redis (so replicas that start later, or that
//! missed the announcement, know it; it expires with the longest token
//! lifetime, after which no token it could match is valid anyway) and
//! announced on the NATS subject `gateway.<prefix>.revoke`, on which every
//! replica disconnects the matching clients with `disconnected {"reason":
//! "Token revoked", "reconnect": false}` and refuses the token afterwards,
//! including a resume with its session id. Replicas also re-read Redis
//! every few seconds, so a lost announcement delays a revocation by that
//! much at worst.
//!
//! The announcement is not trusted for more than it can do: it can only
//! take access away. A process that can publish on NATS can already do
//! worse (see SECURITY.md).

use crate::config::{Config, RevokeArgs};
use crate::fanout::outbox::Closing;
use crate::session::auth::Identity;
use crate::session::registry::Registry;
use bus::{Bus, Headers};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often replicas re-read the revocations from Redis.
pub const RESYNC: Duration = Duration::from_secs(5);

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Revocation {
    /// The token with this `jti`.
    Jti {
        /// The token id.
        jti: String,
    },
    /// Every token of `sub` issued (`iat`) before `before` (epoch seconds).
    Sub {
        /// The user.
        sub: String,
        /// Tokens issued before this instant are revoked.
        before: i64,
    },
}

/// What a revocation is checked against: a verified token's identity.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `jti`, if the token has one.
    pub jti: Option<&'a str>,
    /// `iat`, if the token has one (without it, a `--sub` revocation
    /// applies whatever `--before`).
    pub issued_at: Option<i64>,
}

impl<'a> From<&'a Identity> for TokenRef<'a> {
    fn from(id: &'a Identity) -> Self {
        TokenRef {
            sub: &id.user,
            jti: id.jti.as_deref(),
            issued_at: id.issued_at,
        }
    }
}

impl Revocation {
    pub fn matches(&self, token: TokenRef<'_>) -> bool {
        match self {
            Revocation::Jti { jti } => token.jti == Some(jti.as_str()),
            Revocation::Sub { sub, before } => {
                token.sub == sub && token.issued_at.is_none_or(|iat| iat < *before)
            }
        }
    }

    /// The Redis key it is stored under (the value is the JSON).
    pub fn key(&self, prefix: &str) -> String {
        match self {
            Revocation::Jti { jti } => format!("{prefix}:revoked:jti:{jti}"),
            Revocation::Sub { sub, .. } => format!("{prefix}:revoked:sub:{sub}"),
        }
    }
}

/// The NATS subject revocations are announced on.
pub fn subject(prefix: &str) -> String {
    format!("gateway.{prefix}.revoke")
}

/// The revocations this replica knows.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Revoked token ids.
    jtis: RwLock<HashMap<String, ()>>,
    /// Revoked users: tokens issued before the instant are revoked.
    subs: RwLock<HashMap<String, i64>>,
}

impl Revocations {
    /// Records `r`; true if it revokes more than was known.
    pub fn add(&self, r: &Revocation) -> bool {
        match r {
            Revocation::Jti { jti } => write(&self.jtis).insert(jti.clone(), ()).is_none(),
            Revocation::Sub { sub, before } => {
                let mut subs = write(&self.subs);
                let known = subs.entry(sub.clone()).or_insert(i64::MIN);
                let widened = *before > *known;
                *known = (*known).max(*before);
                widened
            }
        }
    }

    /// True if `token` is revoked.
    pub fn is_revoked(&self, token: TokenRef<'_>) -> bool {
        if let Some(jti) = token.jti {
            if read(&self.jtis).contains_key(jti) {
                return true;
            }
        }
        read(&self.subs)
            .get(token.sub)
            .is_some_and(|before| token.issued_at.is_none_or(|iat| iat < *before))
    }

    /// How many are known (for metrics and logs).
    pub fn len(&self) -> usize {
        read(&self.jtis).len() + read(&self.subs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("REDIS_URL is needed to record a revocation (replicas load them from there)")]
    NoRedis,
    #[error("NATS_URL is needed to announce a revocation")]
    NoBus,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("--before must be an RFC 3339 time, got `{0}`")]
    Before(String),
    #[error("give --jti or --sub")]
    Nothing,
}

/// Writes `r` to Redis, expiring after `keep`.
pub async fn store(
    conn: &mut redis::aio::ConnectionManager,
    prefix: &str,
    r: &Revocation,
    keep: Duration,
) -> Result<(), RevokeError> {
    let json = serde_json::to_string(r).unwrap_or_default();
    let _: () = redis::cmd("SET")
        .arg(r.key(prefix))
        .arg(json)
        .arg("EX")
        .arg(keep.as_secs().max(1))
        .query_async(conn)
        .await?;
    Ok(())
}

/// Every revocation stored in Redis.
pub async fn load(
    conn: &mut redis::aio::ConnectionManager,
    prefix: &str,
) -> Result<Vec<Revocation>, RevokeError> {
    let pattern = format!("{prefix}:revoked:*");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    Ok(values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_str(&v).ok())
        .collect())
}

/// The reason clients of a revoked token are given.
pub const REVOKED: &str = "Token revoked";

/// Tells every client of this replica that `r` matches to go, for good.
fn disconnect_matching(registry: &Registry, r: &Revocation) -> usize {
    let mut n = 0;
    for client in registry.clients() {
        if r.matches(TokenRef::from(&client.identity)) {
            client.outbox.close(Closing::Told {
                reason: REVOKED.to_owned(),
                reconnect: false,
            });
            n += 1;
        }
    }
    n
}

/// Applies `r` on this replica: known from now on, matching clients gone.
fn apply(revocations: &Revocations, registry: &Registry, r: &Revocation) {
    if revocations.add(r) {
        let n = disconnect_matching(registry, r);
        tracing::info!(revocation = ?r, disconnected = n, "token revocation applied");
    } else {
        // Known already; a client admitted in a race still goes.
        disconnect_matching(registry, r);
    }
}

/// A reconnecting Redis connection for revocations.
async fn redis_conn(url: &str) -> Result<redis::aio::ConnectionManager, RevokeError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    Ok(client.get_connection_manager_with_config(config).await?)
}

/// Keeps this replica's revocations current: those in Redis at start and
/// every [`RESYNC`], and every announcement on the bus as it comes.
pub async fn watch(
    bus: Bus,
    prefix: String,
    redis_url: Option<String>,
    revocations: Arc<Revocations>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut redis = match &redis_url {
        Some(url) => match redis_conn(url).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "revocations: redis unreachable; relying on announcements");
                None
            }
        },
        None => None,
    };
    let mut announcements = match bus.subscribe(&subject(&prefix)).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            tracing::warn!(error = %e, "revocations: cannot subscribe to announcements");
            None
        }
    };
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = async {
                match announcements.as_mut() {
                    Some(sub) => sub.next().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Some(msg) => match serde_json::from_slice::<Revocation>(&msg.payload) {
                    Ok(r) => apply(&revocations, &registry, &r),
                    Err(e) => tracing::warn!(error = %e, "revocations: unreadable announcement ignored"),
                },
                None => announcements = None,
            },
            _ = resync.tick() => {
                if redis.is_none() {
                    if let Some(url) = &redis_url {
                        redis = redis_conn(url).await.ok();
                    }
                }
                if let Some(conn) = redis.as_mut() {
                    match load(conn, &prefix).await {
                        Ok(all) => all.iter().for_each(|r| apply(&revocations, &registry, r)),
                        Err(e) => tracing::debug!(error = %e, "revocations: resync failed"),
                    }
                }
            }
        }
    }
}

/// Loads the revocations stored in Redis before the replica serves (at
/// most `wait`), so a token revoked earlier is refused from the first
/// connection on; what it misses the watcher's first resync brings.
pub async fn load_at_start(
    redis_url: Option<&str>,
    prefix: &str,
    revocations: &Revocations,
    wait: Duration,
) {
    let Some(url) = redis_url else { return };
    let loaded = tokio::time::timeout(wait, async {
        let mut conn = redis_conn(url).await?;
        load(&mut conn, prefix).await
    })
    .await;
    match loaded {
        Ok(Ok(all)) => {
            all.iter().for_each(|r| {
                revocations.add(r);
            });
            if !all.is_empty() {
                tracing::info!(count = all.len(), "token revocations loaded");
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "revocations not loaded at start"),
        Err(_) => tracing::warn!("revocations not loaded at start (redis too slow)"),
    }
}

/// `gateway revoke`: records the revocation in Redis, announces it on
/// NATS, and returns what was revoked.
pub async fn revoke_command(config: &Config, args: &RevokeArgs) -> Result<Revocation, RevokeError> {
    let r = match (&args.jti, &args.sub) {
        (Some(jti), _) => Revocation::Jti { jti: jti.clone() },
        (None, Some(sub)) => {
            let before = match &args.before {
                Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| RevokeError::Before(t.clone()))?
                    .timestamp(),
                // Tokens issued in this very second are revoked too.
                None => chrono::Utc::now().timestamp() + 1,
            };
            Revocation::Sub {
                sub: sub.clone(),
                before,
            }
        }
        (None, None) => return Err(RevokeError::Nothing),
    };
    let url = config
        .session
        .redis_url
        .as_deref()
        .ok_or(RevokeError::NoRedis)?;
    let nats_url = config.bus.nats_url.clone().ok_or(RevokeError::NoBus)?;
    let prefix = &config.bus.subject_prefix;
    let mut conn = redis_conn(url).await?;
    // Kept as long as any token it could match may live, plus the leeway.
    let keep =
        Duration::from_secs(config.auth.max_token_lifetime_secs + config.auth.jwt_leeway_secs);
    store(&mut conn, prefix, &r, keep).await?;
    let nats = bus::NatsBus::connect(&bus::NatsOptions {
        url: nats_url,
        name: "mt5-gateway-revoke".into(),
    })
    .await?;
    let bus = Bus::Nats(nats);
    let payload = serde_json::to_vec(&r).unwrap_or_default();
    bus.publish(subject(prefix), payload.into(), Headers::default())
        .await?;
    bus.flush().await?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token<'a>(sub: &'a str, jti: Option<&'a str>, iat: Option<i64>) -> TokenRef<'a> {
        TokenRef {
            sub,
            jti,
            issued_at: iat,
        }
    }

    #[test]
    fn a_jti_revokes_that_token_only() {
        let r = Revocations::default();
        assert!(r.add(&Revocation::Jti { jti: "t1".into() }));
        assert!(r.is_revoked(token("alice", Some("t1"), Some(10))));
        assert!(!r.is_revoked(token("alice", Some("t2"), Some(10))));
        assert!(!r.is_revoked(token("alice", None, Some(10))));
    }

    #[test]
    fn a_sub_revokes_tokens_issued_before() {
        let r = Revocations::default();
        r.add(&Revocation::Sub {
            sub: "alice".into(),
            before: 100,
        });
        assert!(r.is_revoked(token("alice", None, Some(99))));
        assert!(
            r.is_revoked(token("alice", Some("x"), None)),
            "no iat: revoked"
        );
        assert!(!r.is_revoked(token("alice", None, Some(100))));
        assert!(!r.is_revoked(token("bob", None, Some(1))));
        // A later --before widens, an earlier one does not narrow.
        assert!(r.add(&Revocation::Sub {
            sub: "alice".into(),
            before: 200
        }));
        assert!(!r.add(&Revocation::Sub {
            sub: "alice".into(),
            before: 150
        }));
        assert!(r.is_revoked(token("alice", None, Some(180))));
    }

    #[test]
    fn announcements_round_trip() {
        for r in [
            Revocation::Jti { jti: "a".into() },
            Revocation::Sub {
                sub: "b".into(),
                before: 5,
            },
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        }
        assert!(serde_json::from_str::<Revocation>(r#"{"kind":"all"}"#).is_err());
    }
}
