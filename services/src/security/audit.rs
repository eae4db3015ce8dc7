//! The audit log (`service_security_audit`): an [`AuditRecord`] is built by a service for each
//! mutating call and written by the repository of the change with [`insert!`], inside the
//! change's transaction, so that a change without its audit row (or the reverse) cannot exist.
//! [`AuditLog`] reads it back: queries by actor, entity and time range, and the JSON-lines
//! compliance export.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Caller, Policies};
use crate::db::on_pool;
use crate::page::{Page, check_limit, paginate};
use crate::time::{now_ms, parse_rfc3339, rfc3339};
use crate::{Database, ServiceError};

/// An audit row about to be written.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: String,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub client_addr: Option<String>,
    pub at: i64,
}

impl AuditRecord {
    pub(crate) fn new(caller: &Caller, action: &str, entity_type: &str, entity_id: &str) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            actor: caller.actor().to_owned(),
            action: action.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            before: None,
            after: None,
            client_addr: caller.addr.clone(),
            at: now_ms(),
        }
    }

    /// The entity before the change (serialised; `None` when it cannot be).
    #[must_use]
    pub fn before(mut self, v: &impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    /// The entity after the change.
    #[must_use]
    pub fn after(mut self, v: &impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

pub(crate) const INSERT_SQLITE: &str = "INSERT INTO service_security_audit \
    (id, actor, action, entity_type, entity_id, before, after, client_addr, at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
pub(crate) const INSERT_POSTGRES: &str = "INSERT INTO service_security_audit \
    (id, actor, action, entity_type, entity_id, before, after, client_addr, at) \
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)";

/// Writes `$record` (an `&AuditRecord`) with the dialect's insert `$sql` on `$conn` (a
/// transaction of the change), returning early with the error if it fails.
macro_rules! insert {
    ($conn:expr, $sql:expr, $record:expr) => {{
        let r: &$crate::security::AuditRecord = $record;
        sqlx::query($sql)
            .bind(&r.id)
            .bind(&r.actor)
            .bind(&r.action)
            .bind(&r.entity_type)
            .bind(&r.entity_id)
            .bind(r.before.as_ref().map(|v| v.to_string()))
            .bind(r.after.as_ref().map(|v| v.to_string()))
            .bind(r.client_addr.as_deref())
            .bind(r.at)
            .execute($conn)
            .await?;
    }};
}
pub(crate) use insert;

/// Writes `record` on its own, for a change that stores nothing else (an event published or a
/// message sent: the engine carries those, not the database).
///
/// # Errors
/// Database failures.
pub(crate) async fn record(db: &Database, record: &AuditRecord) -> Result<(), ServiceError> {
    on_pool!(db, INSERT_SQLITE, INSERT_POSTGRES, |pool, sql| {
        insert!(pool, *sql, record);
    });
    Ok(())
}

/// Writes `records` in one transaction, in order: all of them or none (the deferred writer's
/// batches, see [`super::deferred`]).
///
/// # Errors
/// Database failures; nothing is written then.
pub(crate) async fn record_all(db: &Database, records: &[AuditRecord]) -> Result<(), ServiceError> {
    const BEGIN_SQLITE: &str = "BEGIN IMMEDIATE";
    const BEGIN_POSTGRES: &str = "BEGIN";
    on_pool!(
        db,
        (BEGIN_SQLITE, INSERT_SQLITE),
        (BEGIN_POSTGRES, INSERT_POSTGRES),
        |pool, sql| {
            let mut tx = pool.begin_with(sql.0).await?;
            for record in records {
                insert!(&mut *tx, sql.1, record);
            }
            tx.commit().await?;
        }
    );
    Ok(())
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub client_addr: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// Which audit rows to read; every field narrows the result.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub action: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
}

const QUERY_SQLITE: &str = "SELECT id, actor, action, entity_type, entity_id, before, after, client_addr, at \
    FROM service_security_audit \
    WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR entity_type = ?2) \
    AND (?3 IS NULL OR entity_id = ?3) AND (?4 IS NULL OR action = ?4) \
    AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6) AND (?7 IS NULL OR id > ?7) \
    ORDER BY id LIMIT ?8";
const QUERY_POSTGRES: &str = "SELECT id, actor, action, entity_type, entity_id, before::text AS before, \
    after::text AS after, client_addr, at FROM service_security_audit \
    WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR entity_type = $2) \
    AND ($3::text IS NULL OR entity_id = $3) AND ($4::text IS NULL OR action = $4) \
    AND ($5::bigint IS NULL OR at >= $5) AND ($6::bigint IS NULL OR at < $6) \
    AND ($7::text IS NULL OR id > $7) ORDER BY id LIMIT $8";

fn json_column(s: Option<String>) -> Result<Option<Value>, ServiceError> {
    s.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| ServiceError::Database(sqlx::Error::Decode(Box::new(e))))
    })
    .transpose()
}

/// The pages of an export, as [`AuditLog::export`] streams them.
pub type ExportPages =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Vec<String>, ServiceError>> + Send>>;

/// Reads the audit log.
#[derive(Clone, Debug)]
pub struct AuditLog {
    db: Database,
    policies: Policies,
}

impl AuditLog {
    pub fn new(db: Database, policies: Policies) -> Self {
        Self { db, policies }
    }

    /// A page of audit rows matching `filter`, oldest first. Needs `read` on `audit`.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], [`ServiceError::Invalid`]
    /// for a bad time or limit, database failures.
    pub async fn query(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEntry>, ServiceError> {
        self.policies.require(caller, "audit", "read")?;
        let limit = check_limit(limit)?;
        let since = filter
            .since
            .as_deref()
            .map(|s| parse_rfc3339("since", s))
            .transpose()?;
        let until = filter
            .until
            .as_deref()
            .map(|s| parse_rfc3339("until", s))
            .transpose()?;
        let rows = on_pool!(&self.db, QUERY_SQLITE, QUERY_POSTGRES, |pool, sql| {
            let rows = sqlx::query(*sql)
                .bind(filter.actor.as_deref())
                .bind(filter.entity_type.as_deref())
                .bind(filter.entity_id.as_deref())
                .bind(filter.action.as_deref())
                .bind(since)
                .bind(until)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(AuditEntry {
                    id: row.try_get("id")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    entity_type: row.try_get("entity_type")?,
                    entity_id: row.try_get("entity_id")?,
                    before: json_column(row.try_get("before")?)?,
                    after: json_column(row.try_get("after")?)?,
                    client_addr: row.try_get("client_addr")?,
                    at: rfc3339(row.try_get("at")?),
                });
            }
            out
        });
        Ok(paginate(rows, limit, |e| e.id.clone()))
    }

    /// The compliance export: every matching row as one line of JSON (no newline), oldest
    /// first, a page of lines per item. The first page is read before this returns, so that a
    /// refused caller or a bad filter is an error here rather than in the stream; a later
    /// page that fails ends the stream with its error. Needs `export` on `audit`.
    ///
    /// # Errors
    /// As [`AuditLog::query`].
    pub async fn export(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        cursor: Option<&str>,
    ) -> Result<ExportPages, ServiceError> {
        enum Step {
            Lines(Vec<String>, Option<String>),
            Fetch(String),
            Done,
        }
        let after = |next: Option<String>| next.map_or(Step::Done, Step::Fetch);
        let (lines, next) = self.export_page(caller, filter, cursor).await?;
        let (log, caller, filter) = (self.clone(), caller.clone(), filter.clone());
        Ok(Box::pin(futures_util::stream::unfold(
            Step::Lines(lines, next),
            move |step| {
                let (log, caller, filter) = (log.clone(), caller.clone(), filter.clone());
                async move {
                    match step {
                        Step::Done => None,
                        Step::Lines(lines, next) => Some((Ok(lines), after(next))),
                        Step::Fetch(c) => match log.export_page(&caller, &filter, Some(&c)).await {
                            Ok((lines, next)) => Some((Ok(lines), after(next))),
                            Err(e) => Some((Err(e), Step::Done)),
                        },
                    }
                }
            },
        )))
    }

    /// One page of the export and the cursor of the next.
    async fn export_page(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), ServiceError> {
        self.policies.require(caller, "audit", "export")?;
        let page = self
            .query(caller, filter, Some(crate::page::MAX_PAGE), cursor)
            .await?;
        let lines = page
            .items
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        Ok((lines, page.next_cursor))
    }
}
