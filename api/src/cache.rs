//! The services' metadata cache on Redis: keys `{prefix}:meta:{key}`, a 10-minute TTL, deleted
//! on every change. Failures are misses (the database answers instead).

use std::time::Duration;

use redis::aio::ConnectionManager;
use services::cache::MetadataCache;
use services::campaign::BoxFuture;

/// How long a cached record lives at most.
pub const METADATA_TTL: Duration = Duration::from_secs(600);
/// A cache that does not answer at once is skipped: it must never slow a lookup down.
const CACHE_TIMEOUT: Duration = Duration::from_millis(100);

/// [`MetadataCache`] on Redis.
pub struct RedisMetadataCache {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl RedisMetadataCache {
    /// Connects.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:meta:{key}", self.prefix)
    }
}

impl MetadataCache for RedisMetadataCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("GET")
                .arg(self.key(key))
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: String) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(self.ttl.as_secs().max(1));
            let set = cmd.query_async::<()>(&mut conn);
            if !matches!(tokio::time::timeout(CACHE_TIMEOUT, set).await, Ok(Ok(()))) {
                tracing::debug!("metadata not cached");
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
            let r: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            if let Err(e) = r {
                // A stale entry lives at most the TTL.
                tracing::warn!(error = %e, "cached metadata not invalidated");
            }
        })
    }
}
