//! The Redis primary as Redis Sentinel names it, for the session store.
//!
//! With `REDIS_SENTINELS` the store does not talk to one fixed Redis: it
//! asks the sentinels which server is the primary of `REDIS_MASTER_NAME`,
//! connects there, and asks again whenever a call fails (the primary died,
//! or it came back demoted and answers `READONLY`). So a failover costs
//! the replicas the seconds Sentinel takes to promote the replica, and no
//! restart. Only the address changes: credentials (`REDIS_PASSWORD`) are
//! the same on every server.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use std::sync::Mutex;
use std::time::Duration;

/// How long one sentinel may take to answer before the next is asked.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("REDIS_SENTINELS: `{0}` is not host:port")]
    BadAddress(String),
    #[error("REDIS_SENTINELS is empty")]
    Empty,
    #[error("no sentinel of {tried} named a primary for `{master}`")]
    NoPrimary { master: String, tried: usize },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where to ask, for what, and how to log in to what they name.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// The sentinels' `host:port`s.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// The password of the Redis servers (not of the sentinels).
    pub password: Option<String>,
}

impl SentinelSettings {
    /// Parses `REDIS_SENTINELS` (`host:port,host:port,…`).
    pub fn parse(
        list: &[String],
        master: &str,
        password: Option<String>,
    ) -> Result<Self, SentinelError> {
        let mut sentinels = Vec::new();
        for one in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (host, port) = one
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| SentinelError::BadAddress(one.to_owned()))?;
            sentinels.push((host.to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(SentinelError::Empty);
        }
        Ok(SentinelSettings {
            sentinels,
            master: master.to_owned(),
            password: password.filter(|p| !p.is_empty()),
        })
    }
}

/// A connection to the current primary, found again after a failure.
pub struct SentinelConnection {
    /// What to ask and how to log in.
    settings: SentinelSettings,
    /// Options of every connection to a primary.
    config: ConnectionManagerConfig,
    /// The primary's address and a connection to it, until a call fails.
    current: Mutex<Option<((String, u16), ConnectionManager)>>,
}

impl SentinelConnection {
    pub fn new(settings: SentinelSettings, config: ConnectionManagerConfig) -> Self {
        SentinelConnection {
            settings,
            config,
            current: Mutex::new(None),
        }
    }

    /// A connection to the primary: the one in use, or a new one to the
    /// server the sentinels name now.
    pub async fn get(&self) -> Result<ConnectionManager, SentinelError> {
        if let Some((_, conn)) = lock(&self.current).as_ref() {
            return Ok(conn.clone());
        }
        let addr = self.primary().await?;
        let mut info = (addr.0.as_str(), addr.1).into_connection_info()?;
        if let Some(password) = &self.settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        let conn = client.get_connection_manager_lazy(self.config.clone())?;
        let mut current = lock(&self.current);
        if current.as_ref().map(|(a, _)| a) != Some(&addr) {
            tracing::info!(primary = %format!("{}:{}", addr.0, addr.1), master = %self.settings.master, "redis primary from sentinel");
        }
        *current = Some((addr, conn.clone()));
        Ok(conn)
    }

    /// Forgets the connection after a failed call: the next call asks the
    /// sentinels again.
    pub fn failed(&self) {
        lock(&self.current).take();
    }

    /// `SENTINEL get-master-addr-by-name`, asked of each sentinel in turn
    /// until one answers.
    async fn primary(&self) -> Result<(String, u16), SentinelError> {
        for (host, port) in &self.settings.sentinels {
            let info = (host.as_str(), *port).into_connection_info()?;
            let Ok(client) = redis::Client::open(info) else {
                continue;
            };
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.settings.master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(SENTINEL_TIMEOUT, ask).await {
                Ok(Ok(Some(addr))) => return Ok(addr),
                Ok(Ok(None)) => tracing::debug!(%host, port, "sentinel knows no such primary"),
                Ok(Err(e)) => tracing::debug!(%host, port, error = %e, "sentinel unreachable"),
                Err(_) => tracing::debug!(%host, port, "sentinel did not answer in time"),
            }
        }
        Err(SentinelError::NoPrimary {
            master: self.settings.master.clone(),
            tried: self.settings.sentinels.len(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_list_parses_and_bad_entries_are_named() {
        let list = vec![
            "a:26379".to_owned(),
            " 10.0.0.2:26380 ".to_owned(),
            "".to_owned(),
        ];
        let s = SentinelSettings::parse(&list, "mt5", Some("pw".into())).unwrap();
        assert_eq!(
            s.sentinels,
            [("a".to_owned(), 26379), ("10.0.0.2".to_owned(), 26380)]
        );
        assert_eq!(s.password.as_deref(), Some("pw"));
        let err =
            SentinelSettings::parse(&["a:26379".into(), "b".into()], "mt5", None).unwrap_err();
        assert!(err.to_string().contains("REDIS_SENTINELS: `b`"), "{err}");
        assert!(SentinelSettings::parse(&[":1".into()], "mt5", None).is_err());
        assert!(matches!(
            SentinelSettings::parse(&[], "mt5", None),
            Err(SentinelError::Empty)
        ));
        assert_eq!(
            SentinelSettings::parse(&["a:1".into()], "m", Some(String::new()))
                .unwrap()
                .password,
            None
        );
    }

    #[tokio::test]
    async fn no_answering_sentinel_is_a_clear_error() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let settings =
            SentinelSettings::parse(&[format!("127.0.0.1:{port}")], "mt5", None).unwrap();
        let conn = SentinelConnection::new(settings, ConnectionManagerConfig::new());
        let Err(err) = conn.get().await else {
            panic!("no sentinel answers, yet a primary was found");
        };
        assert!(err.to_string().contains("no sentinel of 1"), "{err}");
    }
}
