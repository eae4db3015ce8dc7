//! The database: a pool on SQLite (a file under `./data/` by default) or Postgres, the
//! embedded migrations of each (`migrations/sqlite/`, `migrations/postgres/`), and a health
//! check. Repositories declare their SQL once for both dialects (`crate::sql`) and run it through
//! [`on_pool!`].
//!
//! A call that needs a connection waits at most [`DbOptions::timeout`] for one (sqlx's
//! `acquire_timeout`: it covers taking an idle connection and testing it, and opening a new
//! one, TCP connect and handshake included, so a server that accepts connections but never
//! answers is bounded too); on SQLite the same bound is the `busy_timeout` for a locked file.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::ServiceError;

/// The migrations of one backend, `migrations/<dir>/<file>`: both lists come from one table,
/// so a new migration is one line here (and one SQL file per backend).
macro_rules! migrations {
    ($dir:literal) => {
        &[
            (
                1,
                "campaign",
                include_str!(concat!("../../migrations/", $dir, "/0001_campaign.sql")),
            ),
            (
                2,
                "user_security",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0002_user_security.sql"
                )),
            ),
            (
                3,
                "content",
                include_str!(concat!("../../migrations/", $dir, "/0003_content.sql")),
            ),
            (
                4,
                "token_revocation",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0004_token_revocation.sql"
                )),
            ),
            (
                5,
                "localization_babel",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0005_localization_babel.sql"
                )),
            ),
            (
                6,
                "notification",
                include_str!(concat!("../../migrations/", $dir, "/0006_notification.sql")),
            ),
            (
                7,
                "scheduler",
                include_str!(concat!("../../migrations/", $dir, "/0007_scheduler.sql")),
            ),
            (
                9,
                "talent",
                include_str!(concat!("../../migrations/", $dir, "/0009_talent.sql")),
            ),
            (
                10,
                "commerce",
                include_str!(concat!("../../migrations/", $dir, "/0010_commerce.sql")),
            ),
            (
                11,
                "referral",
                include_str!(concat!("../../migrations/", $dir, "/0011_referral.sql")),
            ),
            (
                12,
                "talent_orders",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0012_talent_orders.sql"
                )),
            ),
            (
                13,
                "nexus",
                include_str!(concat!("../../migrations/", $dir, "/0013_nexus.sql")),
            ),
            (
                14,
                "amadeus",
                include_str!(concat!("../../migrations/", $dir, "/0014_amadeus.sql")),
            ),
        ]
    };
}

/// SQLite migrations.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = migrations!("sqlite");
/// Postgres migrations, in step with the SQLite ones.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = migrations!("postgres");

/// The migrations, `NNNN_name` (the same for both backends).
pub fn migration_names() -> Vec<String> {
    SQLITE_MIGRATIONS
        .iter()
        .map(|(version, name, _)| format!("{version:04}_{name}"))
        .collect()
}

/// How the pool treats a database that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// Longest wait for a connection (and, on SQLite, for a locked database): past it the
    /// call fails with [`ServiceError::Unavailable`] (503) instead of queueing behind a dead
    /// database.
    pub timeout: Duration,
}

impl DbOptions {
    /// The default [`DbOptions::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// A pool on the service database.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$sql` to the dialect's queries
/// (`$sqlite` or `$postgres`, or a [`portable_sql!`](crate::sql::portable_sql) set's): one
/// body, type-checked once per backend.
macro_rules! on_pool {
    // A `portable_sql!` set: its `sqlite()` and `postgres()`.
    ($db:expr, $queries:ident, |$pool:ident, $sql:ident| $body:expr) => {
        $crate::db::on_pool!(
            $db,
            *$queries::sqlite(),
            *$queries::postgres(),
            |$pool, $sql| $body
        )
    };
    ($db:expr, $sqlite:expr, $postgres:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($pool) => {
                let $sql = &$sqlite;
                $body
            }
            $crate::db::Database::Postgres($pool) => {
                let $sql = &$postgres;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

impl Database {
    /// Opens `url` with the default [`DbOptions`] (see [`Database::connect_with`]).
    ///
    /// # Errors
    /// As [`Database::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, ServiceError> {
        Self::connect_with(url, DbOptions::default()).await
    }

    /// Opens `url`: `sqlite://path/to/file.db` (created with its folder when missing),
    /// `sqlite::memory:`, or `postgres://user@host:port/db`, opening one connection within
    /// `options.timeout`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a URL of another kind or one that cannot be parsed, or a
    /// zero timeout; [`ServiceError::Unavailable`] when the database cannot be reached.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Self, ServiceError> {
        let timeout = options.timeout;
        if timeout.is_zero() {
            return Err(ServiceError::invalid(
                "database_timeout",
                "must be longer than 0s",
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(ServiceError::Unavailable)?;
            return Ok(Self::Postgres(pool));
        }
        if !url.starts_with("sqlite:") {
            return Err(ServiceError::invalid(
                "database_url",
                format!("unsupported database URL {url:?}: use sqlite://... or postgres://..."),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| ServiceError::invalid("database_url", e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(timeout)
            .foreign_keys(true);
        let file = options.get_filename();
        if file != Path::new(":memory:")
            && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                ServiceError::invalid(
                    "database_url",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
        // An in-memory database exists per connection: keep exactly one.
        let max = if file == Path::new(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(ServiceError::Unavailable)?;
        Ok(Self::Sqlite(pool))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// [`ServiceError::Database`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), ServiceError> {
        let list = match self {
            Self::Sqlite(_) => SQLITE_MIGRATIONS,
            Self::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        let migrator = Migrator::with_migrations(
            list.iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        let result = match self {
            Self::Sqlite(pool) => migrator.run(pool).await,
            Self::Postgres(pool) => migrator.run(pool).await,
        };
        result.map_err(|e| ServiceError::Database(sqlx::Error::Migrate(Box::new(e))))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }

    /// The names of the tables the migrations created (sqlx's own bookkeeping left out).
    ///
    /// # Errors
    /// Database failures.
    pub async fn tables(&self) -> Result<Vec<String>, ServiceError> {
        let names: Vec<String> = match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                    .fetch_all(pool)
                    .await?
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(names
            .into_iter()
            .filter(|n| n != "_sqlx_migrations")
            .collect())
    }

    /// The columns of `table`, as `name type` in the table's order.
    ///
    /// # Errors
    /// Database failures.
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, ServiceError> {
        let rows: Vec<(String, String)> = match self {
            Self::Sqlite(pool) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await?
            }
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(name, ty)| {
                if ty.is_empty() {
                    name
                } else {
                    format!("{name} {ty}")
                }
            })
            .collect())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// A `LIKE`/`ILIKE` pattern (for `ESCAPE` with a backslash) matching any text that contains
/// `text` literally: its `%`, `_` and backslashes lose their special meaning.
pub(crate) fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Ends a transaction: commits it when `outcome` is `Ok`, rolls it back otherwise. Dropping a
/// transaction instead would leave the rollback until the pooled connection is next used, and
/// the rows it locked (`FOR UPDATE`, a SQLite write lock) locked until then. Every repository
/// whose transaction can end in a business error (a 409 found after the first write) ends it
/// here.
///
/// # Errors
/// `outcome`'s error, or the commit's.
pub(crate) async fn settle<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    outcome: Result<T, ServiceError>,
) -> Result<T, ServiceError> {
    match outcome {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback failed (the connection is dropped)");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Postgres that accepts connections but never answers (a silent proxy, a host whose
    /// server hangs): opening the pool, like acquiring from it, gives up after the timeout.
    #[tokio::test]
    async fn a_postgres_that_accepts_but_never_answers_is_given_up_on_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let timeout = Duration::from_millis(300);
        let start = tokio::time::Instant::now();
        let result =
            Database::connect_with(&format!("postgres://u@{addr}/db"), DbOptions { timeout }).await;
        let took = start.elapsed();
        assert!(
            matches!(result, Err(ServiceError::Unavailable(_))),
            "{result:?}"
        );
        assert!(took >= timeout, "{took:?}");
        assert!(
            took < Duration::from_secs(2),
            "bounded by the timeout: {took:?}"
        );
    }

    #[tokio::test]
    async fn a_zero_timeout_is_refused() {
        let result = Database::connect_with(
            "sqlite::memory:",
            DbOptions {
                timeout: Duration::ZERO,
            },
        )
        .await;
        assert!(
            matches!(&result, Err(ServiceError::Invalid { field, .. }) if field == "database_timeout"),
            "{result:?}"
        );
    }
}
