//! Session state that must outlive a connection and a replica: which
//! channels a session had and the last log/signal `seq` it was surely
//! delivered, plus the per-user connection count across replicas.
//!
//! Redis holds it in production (any replica can resume any session); the
//! memory store serves standalone mode and single-replica setups. When Redis
//! is unreachable the gateway keeps serving: new connections are accepted
//! (fail open) and sessions simply cannot be resumed until Redis is back.

use super::sentinel::{SentinelConnection, SentinelError, SentinelSettings};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A fresh, unguessable session id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// True for ids we could have issued; anything else is not looked up.
pub fn is_well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The token `sub` the session belongs to: nobody else may resume it.
    pub user: String,
    /// The MT5 account it was watching.
    pub account: String,
    /// The channels it had joined.
    pub channels: Vec<String>,
    /// Last log `seq` surely delivered.
    pub logs_seq: u64,
    /// Last signal `seq` surely delivered.
    pub signals_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored session is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("redis sentinel: {0}")]
    Sentinel(#[from] SentinelError),
}

/// Up, down, or not configured (reported on readiness and `/api/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    Up,
    Down,
    Disabled,
}

impl StoreHealth {
    pub fn word(self) -> &'static str {
        match self {
            StoreHealth::Up => "up",
            StoreHealth::Down => "down",
            StoreHealth::Disabled => "disabled",
        }
    }
}

/// Where sessions and connection counts live.
pub enum SessionStore {
    /// In this process (standalone, one replica).
    Memory(MemoryStore),
    /// In Redis, shared by every replica.
    Redis(RedisStore),
}

impl SessionStore {
    pub fn memory() -> Self {
        SessionStore::Memory(MemoryStore::default())
    }

    /// Connects lazily: a Redis that is down at start-up is not an error.
    pub fn redis(url: &str, key_prefix: &str) -> Result<Self, SessionError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager_lazy(manager_config())?;
        Ok(SessionStore::Redis(RedisStore {
            conn: Redis::Direct(conn),
            prefix: key_prefix.to_owned(),
            up: AtomicBool::new(false),
        }))
    }

    /// The primary the sentinels name, followed across failovers
    /// (`sentinel`); lazily too.
    pub fn redis_sentinel(settings: SentinelSettings, key_prefix: &str) -> Self {
        SessionStore::Redis(RedisStore {
            conn: Redis::Sentinel(Box::new(SentinelConnection::new(
                settings,
                manager_config(),
            ))),
            prefix: key_prefix.to_owned(),
            up: AtomicBool::new(false),
        })
    }

    pub async fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionError> {
        match self {
            SessionStore::Memory(m) => Ok(m.load(id)),
            SessionStore::Redis(r) => r.watch(r.load(id).await),
        }
    }

    pub async fn save(
        &self,
        id: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), SessionError> {
        match self {
            SessionStore::Memory(m) => {
                m.save(id, record, ttl);
                Ok(())
            }
            SessionStore::Redis(r) => r.watch(r.save(id, record, ttl).await),
        }
    }

    /// Counts `conn` against `user`'s cap; false when the cap is reached.
    /// Entries expire after `ttl` unless refreshed, so a crashed replica's
    /// connections stop counting by themselves.
    pub async fn acquire(
        &self,
        user: &str,
        conn: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<bool, SessionError> {
        match self {
            SessionStore::Memory(m) => Ok(m.acquire(user, conn, cap, ttl)),
            SessionStore::Redis(r) => r.watch(r.acquire(user, conn, cap, ttl).await),
        }
    }

    pub async fn release(&self, user: &str, conn: &str) -> Result<(), SessionError> {
        match self {
            SessionStore::Memory(m) => {
                m.release(user, conn);
                Ok(())
            }
            SessionStore::Redis(r) => r.watch(r.release(user, conn).await),
        }
    }

    /// Keeps this replica's live connections counted.
    pub async fn refresh(
        &self,
        conns: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), SessionError> {
        match self {
            SessionStore::Memory(m) => {
                m.refresh(conns, ttl);
                Ok(())
            }
            SessionStore::Redis(r) => r.watch(r.refresh(conns, ttl).await),
        }
    }

    pub fn health(&self) -> StoreHealth {
        match self {
            SessionStore::Memory(_) => StoreHealth::Disabled,
            SessionStore::Redis(r) if r.up.load(Ordering::Relaxed) => StoreHealth::Up,
            SessionStore::Redis(_) => StoreHealth::Down,
        }
    }

    /// Checks the store and records its health (called periodically).
    pub async fn ping(&self) -> StoreHealth {
        if let SessionStore::Redis(r) = self {
            let pong = async {
                let mut conn = r.conn.get().await?;
                let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
                Ok::<_, SessionError>(pong)
            };
            let _ = r.watch(pong.await);
        }
        self.health()
    }
}

#[derive(Default)]
pub struct MemoryStore {
    /// Session id → (expiry, record).
    sessions: Mutex<HashMap<String, (Instant, SessionRecord)>>,
    /// User → connection key → expiry.
    conns: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl MemoryStore {
    fn load(&self, id: &str) -> Option<SessionRecord> {
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, (expires, _)| *expires > now);
        sessions.get(id).map(|(_, r)| r.clone())
    }

    fn save(&self, id: &str, record: &SessionRecord, ttl: Duration) {
        lock(&self.sessions).insert(id.to_owned(), (Instant::now() + ttl, record.clone()));
    }

    fn acquire(&self, user: &str, conn: &str, cap: usize, ttl: Duration) -> bool {
        let mut conns = lock(&self.conns);
        let now = Instant::now();
        let mine = conns.entry(user.to_owned()).or_default();
        mine.retain(|_, expires| *expires > now);
        if mine.len() >= cap {
            return false;
        }
        mine.insert(conn.to_owned(), now + ttl);
        true
    }

    fn release(&self, user: &str, conn: &str) {
        let mut conns = lock(&self.conns);
        if let Some(mine) = conns.get_mut(user) {
            mine.remove(conn);
            if mine.is_empty() {
                conns.remove(user);
            }
        }
    }

    fn refresh(&self, live: &[(String, String)], ttl: Duration) {
        let mut conns = lock(&self.conns);
        let expires = Instant::now() + ttl;
        for (user, conn) in live {
            if let Some(e) = conns.get_mut(user).and_then(|m| m.get_mut(conn)) {
                *e = expires;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Options of every connection the store opens.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(1)
}

/// One fixed server (`REDIS_URL`) or the primary Sentinel names.
enum Redis {
    /// A reconnecting connection to `REDIS_URL`.
    Direct(ConnectionManager),
    /// Whatever server the sentinels name primary, asked again on failure.
    Sentinel(Box<SentinelConnection>),
}

impl Redis {
    async fn get(&self) -> Result<ConnectionManager, SessionError> {
        match self {
            Redis::Direct(conn) => Ok(conn.clone()),
            Redis::Sentinel(s) => Ok(s.get().await?),
        }
    }
}

pub struct RedisStore {
    /// Where the calls go.
    conn: Redis,
    /// Key prefix (the subject prefix), so deployments can share a Redis.
    prefix: String,
    /// Whether the last call reached Redis.
    up: AtomicBool,
}

/// Drops expired entries, checks the cap and adds the connection, in one
/// step so two replicas cannot both take the last slot.
const ACQUIRE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"#;

impl RedisStore {
    fn session_key(&self, id: &str) -> String {
        format!("{}:session:{id}", self.prefix)
    }

    fn conns_key(&self, user: &str) -> String {
        format!("{}:conns:{user}", self.prefix)
    }

    /// Records whether the last call reached Redis.
    fn watch<T>(&self, result: Result<T, SessionError>) -> Result<T, SessionError> {
        let reached = !matches!(
            &result,
            Err(SessionError::Redis(_) | SessionError::Sentinel(_))
        );
        // Dead, or demoted (`READONLY`): ask the sentinels again next time.
        if let (false, Redis::Sentinel(s)) = (reached, &self.conn) {
            s.failed();
        }
        if self.up.swap(reached, Ordering::Relaxed) != reached {
            if reached {
                tracing::info!("redis reachable again");
            } else if let Err(e) = &result {
                tracing::warn!(error = %e, "redis unreachable; sessions are not resumable meanwhile");
            }
        }
        result
    }

    async fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionError> {
        let mut conn = self.conn.get().await?;
        let raw: Option<String> = conn.get(self.session_key(id)).await?;
        Ok(raw.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    async fn save(
        &self,
        id: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), SessionError> {
        let mut conn = self.conn.get().await?;
        let json = serde_json::to_string(record)?;
        let _: () = conn
            .set_ex(self.session_key(id), json, ttl.as_secs().max(1))
            .await?;
        Ok(())
    }

    async fn acquire(
        &self,
        user: &str,
        conn_id: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<bool, SessionError> {
        let mut conn = self.conn.get().await?;
        let now = chrono::Utc::now().timestamp_millis();
        let took: i64 = redis::Script::new(ACQUIRE)
            .key(self.conns_key(user))
            .arg(now)
            .arg(now + ttl.as_millis() as i64)
            .arg(conn_id)
            .arg(cap)
            .arg(ttl.as_millis() as i64 * 2)
            .invoke_async(&mut conn)
            .await?;
        Ok(took == 1)
    }

    async fn release(&self, user: &str, conn_id: &str) -> Result<(), SessionError> {
        let mut conn = self.conn.get().await?;
        let _: () = conn.zrem(self.conns_key(user), conn_id).await?;
        Ok(())
    }

    async fn refresh(&self, conns: &[(String, String)], ttl: Duration) -> Result<(), SessionError> {
        if conns.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.get().await?;
        let expires = chrono::Utc::now().timestamp_millis() + ttl.as_millis() as i64;
        let mut pipe = redis::pipe();
        for (user, id) in conns {
            pipe.cmd("ZADD")
                .arg(self.conns_key(user))
                .arg("XX")
                .arg(expires)
                .arg(id)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(self.conns_key(user))
                .arg(ttl.as_millis() as i64 * 2)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> SessionRecord {
        SessionRecord {
            user: user.into(),
            account: "demo".into(),
            channels: vec!["logs".into()],
            logs_seq: 5,
            signals_seq: 0,
        }
    }

    #[tokio::test]
    async fn memory_store_saves_loads_and_expires() {
        let s = SessionStore::memory();
        s.save("a", &record("alice"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.load("a").await.unwrap(), Some(record("alice")));
        s.save("b", &record("bob"), Duration::ZERO).await.unwrap();
        assert_eq!(s.load("b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn memory_store_caps_connections_per_user() {
        let s = SessionStore::memory();
        let ttl = Duration::from_secs(30);
        assert!(s.acquire("u", "c1", 2, ttl).await.unwrap());
        assert!(s.acquire("u", "c2", 2, ttl).await.unwrap());
        assert!(!s.acquire("u", "c3", 2, ttl).await.unwrap());
        assert!(s.acquire("other", "c4", 2, ttl).await.unwrap());
        s.release("u", "c1").await.unwrap();
        assert!(s.acquire("u", "c3", 2, ttl).await.unwrap());
    }

    #[test]
    fn ids_are_well_formed() {
        assert!(is_well_formed(&new_id()));
        assert!(!is_well_formed("../../etc"));
        assert!(!is_well_formed(""));
    }
}
