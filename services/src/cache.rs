//! [`MetadataCache`]: where services keep hot records (a campaign's metadata, looked up on every
//! publish and every WebSocket upgrade) between database reads. Best effort: a miss or a cache
//! failure falls back to the database. The node implements it with Redis (10-minute TTL) when
//! Redis is configured; [`NoCache`] otherwise.

use crate::campaign::BoxFuture;

/// A shared cache of serialised records, by key.
pub trait MetadataCache: Send + Sync + 'static {
    /// The cached value, if any (failures count as misses).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>>;
    /// Caches `value` under `key` for the cache's TTL.
    fn put<'a>(&'a self, key: &'a str, value: String) -> BoxFuture<'a, ()>;
    /// Forgets `keys` (after an update).
    fn invalidate(&self, keys: Vec<String>) -> BoxFuture<'_, ()>;
}

/// No cache: every lookup reads the database.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

impl MetadataCache for NoCache {
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
    fn put<'a>(&'a self, _key: &'a str, _value: String) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn invalidate(&self, _keys: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
