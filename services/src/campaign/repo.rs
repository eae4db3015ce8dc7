//! Campaign storage: table `service_campaign_main`, metadata and state as JSON text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::model::{Campaign, Status};
use crate::{Database, ServiceError};

/// Reads and writes campaigns.
#[derive(Clone, Debug)]
pub struct CampaignRepo {
    db: Database,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn json_column(row: &SqliteRow, column: &str) -> Result<Value, ServiceError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| ServiceError::Database(sqlx::Error::Decode(Box::new(e))))
}

fn from_row(row: &SqliteRow) -> Result<Campaign, ServiceError> {
    let status: String = row.try_get("status")?;
    let status = Status::parse(&status).ok_or_else(|| {
        ServiceError::Database(sqlx::Error::Decode(
            format!("unknown campaign status {status:?}").into(),
        ))
    })?;
    Ok(Campaign {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status,
        metadata: json_column(row, "metadata")?,
        state: json_column(row, "state")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

impl CampaignRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new campaign.
    ///
    /// # Errors
    /// [`ServiceError::Conflict`] when the id or slug is taken.
    pub async fn insert(&self, c: &Campaign, at_ms: i64) -> Result<(), ServiceError> {
        sqlx::query(
            "INSERT INTO service_campaign_main (id, slug, name, status, metadata, state, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )
        .bind(&c.id)
        .bind(&c.slug)
        .bind(&c.name)
        .bind(c.status.as_str())
        .bind(c.metadata.to_string())
        .bind(c.state.to_string())
        .bind(at_ms)
        .execute(self.db.pool())
        .await
        .map_err(|e| match ServiceError::from(e) {
            ServiceError::Conflict { .. } => {
                ServiceError::Conflict { message: format!("a campaign with slug {:?} exists", c.slug) }
            }
            other => other,
        })?;
        Ok(())
    }

    /// The campaign with this id or slug.
    ///
    /// # Errors
    /// Database failures.
    pub async fn get(&self, key: &str) -> Result<Option<Campaign>, ServiceError> {
        let row = sqlx::query(
            "SELECT id, slug, name, status, metadata, state, created_at, updated_at \
             FROM service_campaign_main WHERE id = ?1 OR slug = ?1 ORDER BY id = ?1 DESC LIMIT 1",
        )
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Up to `limit` campaigns with ids after `after`, in id (= creation) order.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list(
        &self,
        status: Option<Status>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Campaign>, ServiceError> {
        let rows = sqlx::query(
            "SELECT id, slug, name, status, metadata, state, created_at, updated_at \
             FROM service_campaign_main \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id > ?2) \
             ORDER BY id LIMIT ?3",
        )
        .bind(status.map(Status::as_str))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Reads the campaign, lets `change` edit it, and writes it back, in one write
    /// transaction (so concurrent edits serialise). Returns the campaign before and after.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], whatever `change` returns, database failures.
    pub async fn update<F>(
        &self,
        key: &str,
        change: F,
    ) -> Result<(Campaign, Campaign), ServiceError>
    where
        F: FnOnce(&mut Campaign) -> Result<(), ServiceError>,
    {
        let mut tx = self.db.pool().begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT id, slug, name, status, metadata, state, created_at, updated_at \
             FROM service_campaign_main WHERE id = ?1 OR slug = ?1 ORDER BY id = ?1 DESC LIMIT 1",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let before = match row {
            Some(row) => from_row(&row)?,
            None => {
                return Err(ServiceError::NotFound {
                    entity: "campaign",
                    id: key.to_owned(),
                });
            }
        };
        let mut after = before.clone();
        change(&mut after)?;
        let at = now_ms();
        sqlx::query(
            "UPDATE service_campaign_main SET slug = ?2, name = ?3, status = ?4, metadata = ?5, \
             state = ?6, updated_at = ?7 WHERE id = ?1",
        )
        .bind(&after.id)
        .bind(&after.slug)
        .bind(&after.name)
        .bind(after.status.as_str())
        .bind(after.metadata.to_string())
        .bind(after.state.to_string())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match ServiceError::from(e) {
            ServiceError::Conflict { .. } => ServiceError::Conflict {
                message: format!("a campaign with slug {:?} exists", after.slug),
            },
            other => other,
        })?;
        tx.commit().await?;
        after.updated_at = rfc3339(at);
        Ok((before, after))
    }
}
