//! The databases every repository suite runs on: a fresh SQLite file always, and Postgres when
//! `OVASABI_TEST_DATABASE_URL` is set (a schema of the run's own, dropped by `finish`; without
//! the variable a `SKIPPED` line says so). Each database is migrated twice (migrations are
//! idempotent).

#![allow(dead_code)]

use services::Database;

/// One database of a suite run.
pub struct TestDb {
    pub db: Database,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Schema { admin: String, schema: String },
}

/// A name no earlier or parallel run uses.
pub fn unique(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}_{}_{n}", std::process::id())
}

async fn migrated(db: Database) -> Database {
    db.migrate().await.expect("migrate");
    db.migrate().await.expect("migrations are idempotent");
    db
}

/// SQLite, and Postgres when configured.
pub async fn databases(tag: &str) -> Vec<TestDb> {
    let dir = std::env::temp_dir().join(unique(&format!("ovasabi-{tag}")));
    let sqlite = Database::connect(&format!("sqlite://{}/test.db", dir.display()))
        .await
        .expect("open sqlite");
    let mut out = vec![TestDb {
        db: migrated(sqlite).await,
        cleanup: Cleanup::Dir(dir),
    }];
    match std::env::var("OVASABI_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = create_schema(&url, tag).await;
            let sep = if url.contains('?') { '&' } else { '?' };
            let db = Database::connect(&format!("{url}{sep}options=-csearch_path%3D{schema}"))
                .await
                .expect("connect to the test schema");
            out.push(TestDb {
                db: migrated(db).await,
                cleanup: Cleanup::Schema { admin: url, schema },
            });
        }
        Err(_) => eprintln!(
            "SKIPPED: OVASABI_TEST_DATABASE_URL is not set; the Postgres run of this suite did not run"
        ),
    }
    out
}

impl TestDb {
    /// Closes the pool and removes the file or drops the schema.
    pub async fn finish(self) {
        self.db.close().await;
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { admin, schema } => {
                let admin = Database::connect(&admin).await.expect("connect");
                if let Database::Postgres(pool) = &admin {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA \"{schema}\" CASCADE"
                    )))
                    .execute(pool)
                    .await
                    .expect("drop schema");
                }
                admin.close().await;
            }
        }
    }
}

/// Creates a fresh schema (named after `tag`) in the Postgres database at `url`; returns its
/// name.
pub async fn create_schema(url: &str, tag: &str) -> String {
    let schema = unique(&format!("ovasabi_{tag}"));
    let admin = Database::connect(url)
        .await
        .expect("connect to OVASABI_TEST_DATABASE_URL");
    if let Database::Postgres(pool) = &admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(pool)
            .await
            .expect("create schema");
    }
    admin.close().await;
    schema
}

/// The engine, for the suites that build the whole [`services::Provider`] and do not test
/// broadcasting: campaigns are stored, nothing is sent anywhere.
pub struct Quiet;

impl services::campaign::Broadcaster for Quiet {
    fn upsert(
        &self,
        _: services::campaign::LiveCampaign,
    ) -> services::campaign::BoxFuture<'_, Result<(), services::campaign::BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn end(
        &self,
        _: &str,
    ) -> services::campaign::BoxFuture<'_, Result<(), services::campaign::BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn state(
        &self,
        _: &str,
        _: Box<serde_json::value::RawValue>,
    ) -> services::campaign::BoxFuture<'_, Result<(), services::campaign::BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn publish(
        &self,
        _: &str,
        _: &str,
        _: Box<serde_json::value::RawValue>,
        _: bool,
    ) -> services::campaign::BoxFuture<'_, Result<u64, services::campaign::BroadcastError>> {
        Box::pin(async { Ok(1) })
    }
    fn publish_batch(
        &self,
        _: &str,
        events: Vec<services::campaign::BatchEvent>,
    ) -> services::campaign::BoxFuture<
        '_,
        Result<std::ops::RangeInclusive<u64>, services::campaign::BroadcastError>,
    > {
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        Box::pin(async move { Ok(1..=n) })
    }
    fn running(&self) -> Vec<String> {
        Vec::new()
    }
    fn message(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Box<serde_json::value::RawValue>,
    ) -> services::campaign::BoxFuture<'_, Result<u64, services::campaign::BroadcastError>> {
        Box::pin(async { Ok(1) })
    }
}

impl services::notification::RealtimeSink for Quiet {
    fn push(
        &self,
        _: &str,
        _: Box<serde_json::value::RawValue>,
    ) -> services::campaign::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Every service on `db`, built by the [`services::Provider`] as the node builds them (its
/// real wiring), the engine [`Quiet`].
pub async fn provider(db: &Database) -> services::Provider {
    use std::sync::Arc;
    use std::time::Duration;
    services::Provider::new(services::provider::ProviderConfig {
        db: db.clone(),
        broadcaster: Arc::new(Quiet),
        cache: None,
        tokens: services::user::TokenConfig {
            secret: vec![7; 32],
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(120),
        },
        localization: services::localization::LocalizationConfig::default(),
        babel: services::babel::BabelConfig::default(),
        realtime: Arc::new(Quiet),
        notification: services::notification::DeliveryConfig::default(),
        scheduler: services::scheduler::SchedulerConfig::default(),
        commerce: services::commerce::CommerceConfig::default(),
        nexus: services::nexus::NexusConfig::default(),
    })
    .await
    .expect("provider")
}
