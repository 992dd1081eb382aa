//! Session state that must outlive a connection and a replica: which
//! channels a session had and the last log/signal `seq` it was surely
//! delivered, plus the per-user connection count across replicas.
//!
//! Redis holds it in production (any replica can resume any session); the
//! memory store serves standalone mode and single-replica setups, and
//! sweeps expired sessions as it goes, so it never grows with the number
//! of connections ever made. When Redis is unreachable the gateway keeps
//! serving and sessions simply cannot be resumed until Redis is back; the
//! per-user cap is then held by each replica on its own (a local count with
//! the same cap): it fails closed past that bound instead of waving every
//! connection through.

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
    /// Where its logs subscription started: a position the client reports
    /// on resume is never taken from before it (no stale entries).
    #[serde(default)]
    pub logs_floor: u64,
    /// Where its signals subscription started (as `logs_floor`).
    #[serde(default)]
    pub signals_floor: u64,
}

/// The last log and signal `seq` a resuming client says it has (Socket.IO
/// `auth.last_seq`, or `?last_logs=`/`?last_signals=`). It knows better
/// than the checkpoint, which is judged by time: an entry written to a
/// connection that then died silently may be counted as delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedSeq {
    /// Its last log `seq`, if it said.
    pub logs: Option<u64>,
    /// Its last signal `seq`, if it said.
    pub signals: Option<u64>,
}

impl SessionRecord {
    /// Resumes from what the client reports where it reports it (never
    /// from before the subscription started), from the checkpoint
    /// elsewhere.
    pub fn resume_from(&mut self, reported: ReportedSeq) {
        if let Some(seq) = reported.logs {
            self.logs_seq = seq.max(self.logs_floor);
        }
        if let Some(seq) = reported.signals {
            self.signals_seq = seq.max(self.signals_floor);
        }
    }
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
    Redis(Box<RedisStore>),
}

impl SessionStore {
    pub fn memory() -> Self {
        SessionStore::Memory(MemoryStore::default())
    }

    /// Connects lazily: a Redis that is down at start-up is not an error.
    pub fn redis(url: &str, key_prefix: &str) -> Result<Self, SessionError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager_lazy(manager_config())?;
        Ok(SessionStore::Redis(Box::new(RedisStore {
            conn: Redis::Direct(conn),
            prefix: key_prefix.to_owned(),
            up: AtomicBool::new(false),
            local: MemoryStore::default(),
        })))
    }

    /// The primary the sentinels name, followed across failovers
    /// (`sentinel`); lazily too.
    pub fn redis_sentinel(settings: SentinelSettings, key_prefix: &str) -> Self {
        SessionStore::Redis(Box::new(RedisStore {
            conn: Redis::Sentinel(Box::new(SentinelConnection::new(
                settings,
                manager_config(),
            ))),
            prefix: key_prefix.to_owned(),
            up: AtomicBool::new(false),
            local: MemoryStore::default(),
        }))
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

    /// Saves many sessions in one round trip (a Redis pipeline).
    pub async fn save_many(
        &self,
        records: &[(String, SessionRecord)],
        ttl: Duration,
    ) -> Result<(), SessionError> {
        match self {
            SessionStore::Memory(m) => {
                for (id, record) in records {
                    m.save(id, record, ttl);
                }
                Ok(())
            }
            SessionStore::Redis(r) => r.watch(r.save_many(records, ttl).await),
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
            SessionStore::Redis(r) => {
                // Counted locally too, so that the cap still holds on this
                // replica while Redis is away.
                let local = r.local.acquire(user, conn, cap, ttl);
                match r.watch(r.acquire(user, conn, cap, ttl).await) {
                    Ok(admitted) => {
                        if !admitted && local {
                            r.local.release(user, conn);
                        }
                        Ok(admitted)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, admitted = local, "connection cap checked locally (redis unreachable)");
                        Ok(local)
                    }
                }
            }
        }
    }

    pub async fn release(&self, user: &str, conn: &str) -> Result<(), SessionError> {
        match self {
            SessionStore::Memory(m) => {
                m.release(user, conn);
                Ok(())
            }
            SessionStore::Redis(r) => {
                r.local.release(user, conn);
                r.watch(r.release(user, conn).await)
            }
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
            SessionStore::Redis(r) => {
                r.local.refresh(conns, ttl);
                r.watch(r.refresh(conns, ttl).await)
            }
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

/// How often the memory store sweeps expired sessions (on a write).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct MemoryStore {
    /// Session id → (expiry, record).
    sessions: Mutex<HashMap<String, (Instant, SessionRecord)>>,
    /// User → connection key → expiry.
    conns: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// When expired sessions were last swept.
    swept: Mutex<Instant>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            sessions: Mutex::default(),
            conns: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        }
    }
}

impl MemoryStore {
    fn load(&self, id: &str) -> Option<SessionRecord> {
        let sessions = lock(&self.sessions);
        sessions
            .get(id)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, r)| r.clone())
    }

    /// Stores `record`, and at most once a second drops every expired
    /// session (the sweep is O(n), a second apart it costs nothing).
    fn save(&self, id: &str, record: &SessionRecord, ttl: Duration) {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.insert(id.to_owned(), (now + ttl, record.clone()));
        let mut swept = lock(&self.swept);
        if now.duration_since(*swept) >= SWEEP_EVERY {
            *swept = now;
            sessions.retain(|_, (expires, _)| *expires > now);
        }
    }

    /// Sessions held (expired ones included until the next sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.sessions).len()
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
/// How long one Redis answer may take. It is measured from this process,
/// so it includes this replica's own queueing: when thousands of
/// dashboards resume on it at once (a replica died), their session reads
/// and cap checks wait behind each other, and at 0.5 s a third of a
/// 2,000-client storm on two busy cores timed out and lost their session
/// (a fresh one replays nothing). Checkpoint passes keep their own, shorter
/// deadline.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_max_delay(Duration::from_millis(200))
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
    /// This replica's own count of its connections, which holds the cap
    /// while Redis is unreachable.
    local: MemoryStore,
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

    async fn save_many(
        &self,
        records: &[(String, SessionRecord)],
        ttl: Duration,
    ) -> Result<(), SessionError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, record) in records {
            pipe.cmd("SET")
                .arg(self.session_key(id))
                .arg(serde_json::to_string(record)?)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        let mut conn = self.conn.get().await?;
        let _: () = pipe.query_async(&mut conn).await?;
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
            logs_floor: 2,
            signals_floor: 0,
        }
    }

    #[test]
    fn a_reported_position_wins_but_never_goes_before_the_subscription() {
        let mut r = record("alice");
        r.resume_from(ReportedSeq {
            logs: Some(3),
            signals: None,
        });
        assert_eq!((r.logs_seq, r.signals_seq), (3, 0), "behind the checkpoint");
        r.resume_from(ReportedSeq {
            logs: Some(0),
            signals: Some(7),
        });
        assert_eq!((r.logs_seq, r.signals_seq), (2, 7), "floor, then ahead");
    }

    #[test]
    fn a_record_stored_before_floors_existed_still_loads() {
        let old = r#"{"user":"a","account":"demo","channels":[],"logs_seq":4,"signals_seq":1}"#;
        let r: SessionRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.logs_seq, r.logs_floor), (4, 0));
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
    async fn memory_store_saves_many_at_once() {
        let s = SessionStore::memory();
        let many = vec![
            ("a".to_owned(), record("alice")),
            ("b".to_owned(), record("bob")),
        ];
        s.save_many(&many, Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.load("b").await.unwrap(), Some(record("bob")));
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
    fn the_memory_store_evicts_expired_sessions() {
        let m = MemoryStore::default();
        for i in 0..1000 {
            m.save(&format!("s{i}"), &record("alice"), Duration::ZERO);
        }
        // The next write after a second sweeps them all.
        *lock(&m.swept) = Instant::now() - SWEEP_EVERY;
        m.save("kept", &record("bob"), Duration::from_secs(60));
        assert_eq!(m.len(), 1);
        assert_eq!(m.load("kept"), Some(record("bob")));
    }

    #[tokio::test]
    async fn the_cap_holds_locally_while_redis_is_unreachable() {
        // Nothing listens on port 1: every Redis call fails.
        let s = SessionStore::redis("redis://127.0.0.1:1", "t").unwrap();
        let ttl = Duration::from_secs(30);
        assert!(s.acquire("u", "c1", 2, ttl).await.unwrap());
        assert!(s.acquire("u", "c2", 2, ttl).await.unwrap());
        assert!(
            !s.acquire("u", "c3", 2, ttl).await.unwrap(),
            "fails closed past the cap"
        );
        let _ = s.release("u", "c1").await;
        assert!(
            s.acquire("u", "c3", 2, ttl).await.unwrap(),
            "a freed slot is given back"
        );
    }

    #[test]
    fn ids_are_well_formed() {
        assert!(is_well_formed(&new_id()));
        assert!(!is_well_formed("../../etc"));
        assert!(!is_well_formed(""));
    }
}
