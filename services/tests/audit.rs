//! The deferred audit writer through a database outage: a publish does not wait on a database
//! that refuses writes, and its audit row is written, in order and as it would have been, once
//! the database is back. Runs on SQLite (the outage: another connection holds the write lock)
//! and, when `OVASABI_TEST_DATABASE_URL` is set, on Postgres behind a TCP proxy of the test's
//! own (the outage: every connection cut, new ones accepted and never answered).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::{Value, json, value::RawValue};
use services::cache::MetadataCache;
use services::campaign::{
    BatchEvent, BoxFuture, BroadcastError, Broadcaster, CampaignService, LiveCampaign, NewCampaign,
};
use services::security::audit::{AuditEntry, AuditFilter, AuditLog};
use services::security::{Caller, DeferError, DeferredAudit, DeferredConfig, Policies, Role};
use services::{Database, DbOptions};
use sqlx::Connection as _;
use tokio::time::Instant;

static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);

/// The pool's bound on waiting for the database in these tests: a row written inline (before
/// the fix) would make each publish wait this long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// An engine that takes every publish (seq 1, 2, ...).
#[derive(Default)]
struct Engine(AtomicU64);

impl Broadcaster for Engine {
    fn upsert(&self, _c: LiveCampaign) -> BoxFuture<'_, Result<(), BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn end(&self, _id: &str) -> BoxFuture<'_, Result<(), BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn state(&self, _id: &str, _s: Box<RawValue>) -> BoxFuture<'_, Result<(), BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn publish(
        &self,
        _id: &str,
        _name: &str,
        _d: Box<RawValue>,
        _immediate: bool,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        let seq = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Box::pin(async move { Ok(seq) })
    }
    fn publish_batch(
        &self,
        _id: &str,
        events: Vec<BatchEvent>,
    ) -> BoxFuture<'_, Result<std::ops::RangeInclusive<u64>, BroadcastError>> {
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let first = self.0.fetch_add(n, Ordering::Relaxed) + 1;
        Box::pin(async move { Ok(first..=first + n - 1) })
    }
    fn running(&self) -> Vec<String> {
        Vec::new()
    }
    fn message(
        &self,
        _id: &str,
        _user: &str,
        _n: &str,
        _d: Box<RawValue>,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        let seq = self.0.load(Ordering::Relaxed);
        Box::pin(async move { Ok(seq) })
    }
}

/// The node's Redis cache, in memory: campaign lookups on publish need no database.
#[derive(Default)]
struct MemoryCache(Mutex<HashMap<String, String>>);

impl MetadataCache for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        let v = self.0.lock().expect("lock").get(key).cloned();
        Box::pin(async move { v })
    }
    fn put<'a>(&'a self, key: &'a str, value: String) -> BoxFuture<'a, ()> {
        self.0.lock().expect("lock").insert(key.to_owned(), value);
        Box::pin(async {})
    }
    fn invalidate(&self, keys: Vec<String>) -> BoxFuture<'_, ()> {
        let mut map = self.0.lock().expect("lock");
        for k in keys {
            map.remove(&k);
        }
        Box::pin(async {})
    }
}

/// A TCP proxy in front of Postgres which, while cut, closes every connection and holds new
/// ones open without answering (a database host that stopped answering).
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if *watch.borrow() {
                        // Silent: held until the cut ends, then closed.
                        let _ = watch.wait_for(|cut| !*cut).await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// How a test makes its database refuse writes, and gives it back.
enum Outage {
    /// Another connection holds SQLite's write lock: writers wait the busy timeout and fail
    /// (`SQLITE_BUSY`); reads go on (WAL).
    SqliteLock {
        url: String,
        holder: Option<sqlx::SqliteConnection>,
    },
    /// Postgres through a [`Proxy`].
    Proxy(Proxy),
}

impl Outage {
    async fn begin(&mut self) {
        match self {
            Self::SqliteLock { url, holder } => {
                let mut conn = sqlx::SqliteConnection::connect(url)
                    .await
                    .expect("second connection");
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .expect("take the write lock");
                *holder = Some(conn);
            }
            Self::Proxy(p) => p.set_cut(true),
        }
    }

    async fn end(&mut self) {
        match self {
            Self::SqliteLock { holder, .. } => {
                if let Some(mut conn) = holder.take() {
                    sqlx::query("ROLLBACK")
                        .execute(&mut conn)
                        .await
                        .expect("release the write lock");
                    conn.close().await.expect("close");
                }
            }
            Self::Proxy(p) => p.set_cut(false),
        }
    }
}

/// A database of the test's own, opened with [`TIMEOUT`], and its outage.
struct Home {
    db: Database,
    outage: Outage,
    cleanup: Box<dyn FnOnce() -> BoxFuture<'static, ()>>,
}

async fn sqlite_home(tag: &str, timeout: Duration) -> Home {
    let dir = std::env::temp_dir().join(common::unique(&format!("ovasabi-{tag}")));
    let url = format!("sqlite://{}/test.db", dir.display());
    let db = Database::connect_with(&url, DbOptions { timeout })
        .await
        .expect("open sqlite");
    db.migrate().await.expect("migrate");
    Home {
        db,
        outage: Outage::SqliteLock { url, holder: None },
        cleanup: Box::new(move || {
            Box::pin(async move {
                let _ = std::fs::remove_dir_all(dir);
            })
        }),
    }
}

/// Postgres through a proxy, in a schema of its own, when `OVASABI_TEST_DATABASE_URL` is set.
async fn postgres_home(tag: &str) -> Option<Home> {
    let Ok(url) = std::env::var("OVASABI_TEST_DATABASE_URL") else {
        eprintln!(
            "SKIPPED: OVASABI_TEST_DATABASE_URL is not set; the Postgres run of this test did not run"
        );
        return None;
    };
    let schema = common::create_schema(&url, tag).await;
    // postgres://user@HOST:PORT/db → the same through the proxy.
    let after_at = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    let hostport = after_at.split(['/', '?']).next().expect("host:port");
    let upstream: std::net::SocketAddr = hostport
        .parse()
        .expect("OVASABI_TEST_DATABASE_URL with an IP:PORT");
    let proxy = Proxy::start(upstream).await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let proxied = format!("{url}{sep}options=-csearch_path%3D{schema}").replacen(
        hostport,
        &proxy.addr.to_string(),
        1,
    );
    let db = Database::connect_with(&proxied, DbOptions { timeout: TIMEOUT })
        .await
        .expect("connect through the proxy");
    db.migrate().await.expect("migrate");
    Some(Home {
        db,
        outage: Outage::Proxy(proxy),
        cleanup: Box::new(move || {
            Box::pin(async move {
                let admin = Database::connect(&url).await.expect("connect");
                if let Database::Postgres(pool) = &admin {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA \"{schema}\" CASCADE"
                    )))
                    .execute(pool)
                    .await;
                }
                admin.close().await;
            })
        }),
    })
}

async fn homes(tag: &str) -> Vec<Home> {
    let mut out = vec![sqlite_home(tag, TIMEOUT).await];
    out.extend(postgres_home(tag).await);
    out
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).expect("raw JSON")
}

/// The audit rows of `entity_id` once `check` accepts them (within 15 s).
async fn rows_once(
    log: &AuditLog,
    entity_id: &str,
    check: impl Fn(&[AuditEntry]) -> bool,
) -> Vec<AuditEntry> {
    let filter = AuditFilter {
        entity_id: Some(entity_id.to_owned()),
        ..AuditFilter::default()
    };
    let start = Instant::now();
    loop {
        if let Ok(page) = log.query(&SYS, &filter, None, None).await
            && check(&page.items)
        {
            return page.items;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "audit rows not as expected within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn actions(rows: &[AuditEntry]) -> Vec<&str> {
    rows.iter().map(|r| r.action.as_str()).collect()
}

#[tokio::test]
async fn publishes_during_an_outage_do_not_wait_and_their_rows_are_written_once_it_ends() {
    for mut home in homes("deferred").await {
        let db = home.db.clone();
        let backend = db.backend();
        let policies = Policies::load(db.clone()).await.expect("policies");
        let writer = DeferredAudit::spawn(db.clone(), DeferredConfig::default());
        let svc = CampaignService::new(db.clone(), Arc::new(Engine::default()), policies.clone())
            .with_cache(Arc::new(MemoryCache::default()))
            .with_deferred_audit(writer.clone());
        let log = AuditLog::new(db.clone(), policies);
        let manager = Caller::user("mgr", vec![Role::User, Role::CampaignManager])
            .from_addr("127.0.0.9:5000");
        let new: NewCampaign =
            serde_json::from_value(json!({"name": "Outage"})).expect("create body");
        let c = svc.create(&manager, new).await.expect("create");
        // Cached, as the node's first WebSocket upgrade or publish does.
        svc.live(&c.id).await.expect("live");
        let seq = svc
            .publish(&manager, &c.id, "before", raw("1"), false)
            .await
            .expect("publish");
        rows_once(&log, &c.id, |r| r.len() == 2).await;

        home.outage.begin().await;
        let start = Instant::now();
        let mut seqs = vec![seq];
        for (name, data) in [("goal", r#"{"team":"a"}"#), ("card", "[1,2]")] {
            let seq = svc
                .publish(&manager, &c.id, name, raw(data), true)
                .await
                .expect("a publish during the outage is answered");
            seqs.push(seq);
        }
        svc.message(&manager, &c.id, "bob", "dm", raw(r#""hi""#))
            .await
            .expect("a message during the outage is answered");
        let took = start.elapsed();
        assert!(
            took < TIMEOUT / 2,
            "{backend}: three publishes and a message took {took:?}: they waited on the database"
        );
        // The writer tries, is refused, and keeps the rows.
        tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;
        assert_eq!(writer.pending(), 3, "{backend}: the rows are kept");
        home.outage.end().await;

        let rows = rows_once(&log, &c.id, |r| r.len() == 5).await;
        assert_eq!(
            actions(&rows),
            [
                "campaign.create",
                "campaign.publish",
                "campaign.publish",
                "campaign.publish",
                "campaign.message"
            ],
            "{backend}: in order"
        );
        assert_eq!(
            rows[2].after,
            Some(json!({"name": "goal", "seq": seqs[1], "immediate": true, "bytes": 12}))
        );
        assert_eq!(
            rows[3].after,
            Some(json!({"name": "card", "seq": seqs[2], "immediate": true, "bytes": 5}))
        );
        assert_eq!(
            rows[4].after,
            Some(json!({"user": "bob", "name": "dm", "seq": seqs[2], "bytes": 4}))
        );
        for r in &rows[1..] {
            assert_eq!(r.actor, "mgr");
            assert_eq!(r.entity_type, "campaign");
            assert_eq!(r.client_addr.as_deref(), Some("127.0.0.9:5000"));
            assert_eq!(r.before, None);
        }
        assert_eq!(writer.pending(), 0);
        assert!(writer.close(Duration::from_secs(1)).await, "{backend}");
        assert!(matches!(
            writer.push(manager.audit("campaign.publish", "campaign", &c.id)),
            Err(DeferError::Stopped)
        ));
        db.close().await;
        (home.cleanup)().await;
    }
}

#[tokio::test]
async fn a_full_queue_drops_new_rows_and_shutdown_gives_up_at_its_deadline() {
    let mut home = sqlite_home("deferred-full", Duration::from_millis(200)).await;
    let writer = DeferredAudit::spawn(
        home.db.clone(),
        DeferredConfig {
            capacity: 2,
            batch: 1,
            ..DeferredConfig::default()
        },
    );
    home.outage.begin().await;
    let rows: Vec<Value> = (0..10).map(|i| json!({"seq": i})).collect();
    let results: Vec<_> = rows
        .iter()
        .map(|after| writer.push(SYS.audit("campaign.publish", "campaign", "c").after(after)))
        .collect();
    let queued = results.iter().filter(|r| r.is_ok()).count();
    // Two in the queue, and perhaps one the writer took already.
    assert!((2..=3).contains(&queued), "{queued} queued");
    assert!(
        results[queued..]
            .iter()
            .all(|r| matches!(r, Err(DeferError::Full { capacity: 2 })))
    );
    assert_eq!(writer.pending(), queued as u64);

    let start = Instant::now();
    assert!(
        !writer.close(Duration::from_millis(500)).await,
        "rows could not be written"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown is bounded: {:?}",
        start.elapsed()
    );
    assert_eq!(writer.pending(), 0, "the lost rows are counted out");
    home.outage.end().await;
    home.db.close().await;
    (home.cleanup)().await;
}
