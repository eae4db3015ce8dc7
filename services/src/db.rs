//! The database: connection pool, embedded migrations, health check. SQLite (a file under
//! `./data/` by default); Postgres comes as a second backend with its own migration folder.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::ServiceError;

/// SQLite migrations, embedded so that the binary runs from any directory.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "campaign",
    include_str!("../../migrations/sqlite/0001_campaign.sql"),
)];

/// A pool on the service database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: SqlitePool,
}

impl Database {
    /// Opens `url` (`sqlite://path/to/file.db`, `sqlite::memory:`), creating the file and its
    /// folder when missing.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a URL that is not SQLite or cannot be parsed;
    /// [`ServiceError::Unavailable`] when the file cannot be opened.
    pub async fn connect(url: &str) -> Result<Self, ServiceError> {
        if !url.starts_with("sqlite:") {
            return Err(ServiceError::invalid(
                "database_url",
                format!(
                    "unsupported database URL scheme in {url:?}: this build stores data in SQLite (sqlite://...)"
                ),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| ServiceError::invalid("database_url", e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
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
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(ServiceError::Unavailable)?;
        Ok(Self { pool })
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// [`ServiceError::Database`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), ServiceError> {
        let migrations = SQLITE_MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await
            .map_err(|e| ServiceError::Database(sqlx::Error::Migrate(Box::new(e))))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The pool, for repositories.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
