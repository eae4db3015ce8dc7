//! Campaign storage: table `service_campaign_main`; metadata and state as JSON text in SQLite
//! and `jsonb` in Postgres. Each query is written once for both dialects ([`Queries`], see
//! [`crate::sql`]); the code around it is shared through `on_pool!`.

use serde_json::Value;
use sqlx::Row;

use super::model::{Campaign, CampaignFilter, Status};
use crate::db::on_pool;
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::{now_ms, parse_rfc3339, rfc3339};
use crate::{Database, ServiceError};

/// The campaign columns, JSON read as text.
macro_rules! columns {
    () => {
        "id, slug, name, status, metadata{text} AS metadata, state{text} AS state, starts_at, ends_at, \
         created_at, updated_at"
    };
}

portable_sql! {
    /// The SQL of campaigns, once for both dialects (see [`crate::sql`]).
    struct Queries {
        insert: "INSERT INTO service_campaign_main (id, slug, name, status, metadata, state, starts_at, ends_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5{jsonb}, $6{jsonb}, $8, $9, $7, $7)",
        get: concat!("SELECT ", columns!(), " FROM service_campaign_main \
                      WHERE id = $1 OR slug = $1 ORDER BY id = $1 DESC LIMIT 1"),
        list: concat!("SELECT ", columns!(), " FROM service_campaign_main \
                       WHERE ($1{text} IS NULL OR status = $1) AND ($2{text} IS NULL OR id > $2) \
                       AND ($4{text} IS NULL OR \
                       {lite:EXISTS (SELECT 1 FROM json_each(metadata, '$.tags') WHERE value = $4)}\
                       {pg:metadata @> jsonb_build_object('tags', jsonb_build_array($4::text))}) \
                       AND ($5{text} IS NULL OR name {pg:I}LIKE $5 ESCAPE '\\' OR slug {pg:I}LIKE $5 ESCAPE '\\') \
                       ORDER BY id LIMIT $3"),
        /// Starts the write transaction of an update: on SQLite, take the write lock at once,
        /// so that concurrent read-modify-writes serialise.
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        /// On Postgres, the row stays locked for the rest of the transaction.
        get_for_update: concat!("SELECT ", columns!(), " FROM service_campaign_main WHERE id = $1{for_update}"),
        update: "UPDATE service_campaign_main SET slug = $2, name = $3, status = $4, metadata = $5{jsonb}, \
                 state = $6{jsonb}, updated_at = $7, starts_at = $8, ends_at = $9 WHERE id = $1",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

/// Reads and writes campaigns.
#[derive(Clone, Debug)]
pub struct CampaignRepo {
    db: Database,
}

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(Box::new(e)))
}

/// The columns of a row, read the same way from either backend.
struct Columns {
    id: String,
    slug: String,
    name: String,
    status: String,
    metadata: String,
    state: String,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

macro_rules! columns {
    ($row:expr) => {
        Columns {
            id: $row.try_get("id")?,
            slug: $row.try_get("slug")?,
            name: $row.try_get("name")?,
            status: $row.try_get("status")?,
            metadata: $row.try_get("metadata")?,
            state: $row.try_get("state")?,
            starts_at: $row.try_get("starts_at")?,
            ends_at: $row.try_get("ends_at")?,
            created_at: $row.try_get("created_at")?,
            updated_at: $row.try_get("updated_at")?,
        }
    };
}

impl Columns {
    fn into_campaign(self) -> Result<Campaign, ServiceError> {
        let status = Status::parse(&self.status).ok_or_else(|| {
            ServiceError::Database(sqlx::Error::Decode(
                format!("unknown campaign status {:?}", self.status).into(),
            ))
        })?;
        Ok(Campaign {
            id: self.id,
            slug: self.slug,
            name: self.name,
            status,
            metadata: serde_json::from_str::<Value>(&self.metadata).map_err(decode_error)?,
            state: serde_json::from_str::<Value>(&self.state).map_err(decode_error)?,
            starts_at: self.starts_at.map(rfc3339),
            ends_at: self.ends_at.map(rfc3339),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        })
    }
}

/// The schedule of `c` in ms.
fn schedule(c: &Campaign) -> Result<(Option<i64>, Option<i64>), ServiceError> {
    Ok((
        c.starts_at
            .as_deref()
            .map(|s| parse_rfc3339("starts_at", s))
            .transpose()?,
        c.ends_at
            .as_deref()
            .map(|s| parse_rfc3339("ends_at", s))
            .transpose()?,
    ))
}

fn slug_conflict(e: sqlx::Error, slug: &str) -> ServiceError {
    match ServiceError::from(e) {
        ServiceError::Duplicate { .. } => ServiceError::Duplicate {
            message: format!("a campaign with slug {slug:?} exists"),
        },
        other => other,
    }
}

impl CampaignRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new campaign with the audit row of its creation.
    ///
    /// # Errors
    /// [`ServiceError::Conflict`] when the id or slug is taken.
    pub async fn insert(
        &self,
        c: &Campaign,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        let (starts, ends) = schedule(c)?;
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            sqlx::query(sql.insert)
                .bind(&c.id)
                .bind(&c.slug)
                .bind(&c.name)
                .bind(c.status.as_str())
                .bind(c.metadata.to_string())
                .bind(c.state.to_string())
                .bind(at_ms)
                .bind(starts)
                .bind(ends)
                .execute(&mut *tx)
                .await
                .map_err(|e| slug_conflict(e, &c.slug))?;
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The campaign with this id or slug (an id wins over a slug that looks like one).
    ///
    /// # Errors
    /// Database failures.
    pub async fn get(&self, key: &str) -> Result<Option<Campaign>, ServiceError> {
        let columns = on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.get).bind(key).fetch_optional(pool).await? {
                Some(row) => Some(columns!(row)),
                None => None,
            }
        });
        columns.map(Columns::into_campaign).transpose()
    }

    /// Up to `limit` campaigns with ids after `after`, in id (= creation) order.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list(
        &self,
        filter: &CampaignFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Campaign>, ServiceError> {
        let pattern = filter.query.as_deref().map(crate::db::contains_pattern);
        let rows: Vec<Columns> = on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(filter.status.map(Status::as_str))
                .bind(after)
                .bind(i64::from(limit))
                .bind(filter.tag.as_deref())
                .bind(pattern.as_deref())
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(columns!(row));
            }
            out
        });
        rows.into_iter().map(Columns::into_campaign).collect()
    }

    /// Writes an audit row of a change stored nowhere else (see [`audit::record`]).
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit(&self, record: &AuditRecord) -> Result<(), ServiceError> {
        audit::record(&self.db, record).await
    }

    /// Reads the campaign, lets `change` edit it, and writes it back with the audit row
    /// (`audit` gets the campaign before and after), in one write transaction (so concurrent
    /// edits serialise). Returns the campaign before and after.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], whatever `change` returns, database failures.
    pub async fn update<F>(
        &self,
        id: &str,
        audit: AuditRecord,
        change: F,
    ) -> Result<(Campaign, Campaign), ServiceError>
    where
        F: FnOnce(&mut Campaign) -> Result<(), ServiceError>,
    {
        let at = now_ms();
        let (before, after) = on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.get_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let before = match row {
                Some(row) => columns!(row).into_campaign()?,
                None => {
                    return Err(ServiceError::NotFound {
                        entity: "campaign",
                        id: id.to_owned(),
                    });
                }
            };
            let mut after = before.clone();
            change(&mut after)?;
            after.updated_at = rfc3339(at);
            let (starts, ends) = schedule(&after)?;
            sqlx::query(sql.update)
                .bind(&after.id)
                .bind(&after.slug)
                .bind(&after.name)
                .bind(after.status.as_str())
                .bind(after.metadata.to_string())
                .bind(after.state.to_string())
                .bind(at)
                .bind(starts)
                .bind(ends)
                .execute(&mut *tx)
                .await
                .map_err(|e| slug_conflict(e, &after.slug))?;
            let audit = audit.before(&before).after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            (before, after)
        });
        Ok((before, after))
    }
}
