//! The services' metadata cache on Redis: keys `{prefix}:meta:{key}`, a 10-minute TTL, deleted
//! on every change. Failures are misses (the database answers instead); after one, reads and
//! writes skip Redis for [`SKIP_AFTER_FAILURE`], so that a dead Redis costs one lookup a
//! timeout, not every lookup (deletions are always tried: a stale record must not outlive a
//! change).

use std::time::Duration;

use redis::aio::ConnectionManager;
use services::cache::MetadataCache;
use services::campaign::BoxFuture;

/// How long a cached record lives at most.
pub const METADATA_TTL: Duration = Duration::from_secs(600);
/// A cache that does not answer at once is skipped: it must never slow a lookup down.
const CACHE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long reads and writes leave Redis alone after one failed or timed out.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// A change waits at most this long for its cached records to be deleted.
const INVALIDATE_TIMEOUT: Duration = Duration::from_millis(500);

/// [`MetadataCache`] on Redis.
pub struct RedisMetadataCache {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// Milliseconds since `started` until which reads and writes skip Redis.
    skip_until: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl RedisMetadataCache {
    /// Connects.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let options = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(INVALIDATE_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, options).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl,
            skip_until: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a recent failure says to leave Redis alone.
    fn skipping(&self) -> bool {
        self.now() < self.skip_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn failed(&self) {
        let until = self
            .now()
            .saturating_add(u64::try_from(SKIP_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX));
        self.skip_until
            .store(until, std::sync::atomic::Ordering::Relaxed);
    }

    fn key(&self, key: &str) -> String {
        format!("{}:meta:{key}", self.prefix)
    }
}

impl MetadataCache for RedisMetadataCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            if self.skipping() {
                return None;
            }
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(key));
            let get = cmd.query_async::<Option<String>>(&mut conn);
            match tokio::time::timeout(CACHE_TIMEOUT, get).await {
                Ok(Ok(hit)) => hit,
                Ok(Err(_)) | Err(_) => {
                    tracing::debug!("metadata cache skipped");
                    self.failed();
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: String) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.skipping() {
                return;
            }
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(self.ttl.as_secs().max(1));
            let set = cmd.query_async::<()>(&mut conn);
            if !matches!(tokio::time::timeout(CACHE_TIMEOUT, set).await, Ok(Ok(()))) {
                tracing::debug!("metadata not cached");
                self.failed();
            }
        })
    }

    fn invalidate(&self, keys: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if keys.is_empty() {
                return;
            }
            let mut conn = self.conn.clone();
            let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(keys);
            let del = cmd.query_async::<i64>(&mut conn);
            // A stale entry lives at most the TTL (a Redis that lost it has nothing stale).
            match tokio::time::timeout(INVALIDATE_TIMEOUT, del).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cached metadata not invalidated"),
                Err(_) => tracing::warn!("cached metadata not invalidated: Redis did not answer"),
            }
        })
    }
}
