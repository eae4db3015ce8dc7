//! Content storage: `service_content_main` (posts), `service_content_comment`,
//! `service_content_reaction`, and full-text search — on SQLite the external-content FTS5
//! table `service_content_search` (kept in step by triggers, so in the writing transaction),
//! on Postgres the generated `tsvector` column `search`. Tags and metadata are JSON text in
//! SQLite and `jsonb` in Postgres. Each query is written once per dialect ([`Queries`]); the
//! code around it is shared through `on_pool!`. Every write runs in one transaction with its
//! audit row.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use super::model::{Comment, Content, Kind, ReactionCounts, SearchHit};
use crate::db::on_pool;
use crate::security::{AuditRecord, audit};
use crate::time::rfc3339;
use crate::{Database, ServiceError};

/// The SQL of one dialect.
struct Queries {
    /// Starts a write transaction.
    begin: &'static str,
    insert: &'static str,
    get: &'static str,
    get_for_update: &'static str,
    update: &'static str,
    delete: &'static str,
    list: &'static str,
    search: &'static str,
    insert_comment: &'static str,
    /// `1` when the comment `?1` belongs to content `?2` (on Postgres, kept from deletion until
    /// the transaction ends).
    comment_of: &'static str,
    get_comment: &'static str,
    get_comment_for_update: &'static str,
    update_comment: &'static str,
    delete_comment: &'static str,
    list_comments: &'static str,
    /// `1` when the content exists (a deletion racing a write makes the write's foreign key
    /// fail, which reads as not found too).
    content_exists: &'static str,
    insert_reaction: &'static str,
    delete_reaction: &'static str,
    reaction_counts: &'static str,
    my_reactions: &'static str,
    audit: &'static str,
}

/// The content columns.
macro_rules! sqlite_content {
    ($tail:literal) => {
        concat!(
            "SELECT id, kind, author_id, title, body, url, tags, metadata, created_at, updated_at \
             FROM service_content_main",
            $tail
        )
    };
}

macro_rules! postgres_content {
    ($tail:literal) => {
        concat!(
            "SELECT id, kind, author_id, title, body, url, tags::text AS tags, metadata::text AS metadata, \
             created_at, updated_at FROM service_content_main",
            $tail
        )
    };
}

const SQLITE: Queries = Queries {
    // Take the write lock at once, so that concurrent read-modify-writes serialise.
    begin: "BEGIN IMMEDIATE",
    insert: "INSERT INTO service_content_main (id, kind, author_id, title, body, url, tags, metadata, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    get: sqlite_content!(" WHERE id = ?1"),
    get_for_update: sqlite_content!(" WHERE id = ?1"),
    update: "UPDATE service_content_main SET title = ?2, body = ?3, url = ?4, tags = ?5, metadata = ?6, updated_at = ?7 \
             WHERE id = ?1",
    delete: "DELETE FROM service_content_main WHERE id = ?1",
    list: sqlite_content!(
        " WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR author_id = ?2) AND (?3 IS NULL OR id < ?3) \
         ORDER BY id DESC LIMIT ?4"
    ),
    // Title matches weigh ten times body matches; bm25() is lower for better matches.
    search: "SELECT m.id, m.kind, m.author_id, m.title, m.body, m.url, m.tags, m.metadata, m.created_at, m.updated_at, \
             -bm25(service_content_search, 10.0, 1.0) AS score, \
             snippet(service_content_search, -1, '<mark>', '</mark>', '…', 24) AS snippet \
             FROM service_content_search JOIN service_content_main m ON m.seq = service_content_search.rowid \
             WHERE service_content_search MATCH ?1 \
             ORDER BY score DESC, m.id DESC LIMIT ?2 OFFSET ?3",
    insert_comment: "INSERT INTO service_content_comment (id, content_id, parent_id, author_id, body, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    comment_of: "SELECT 1 FROM service_content_comment WHERE id = ?1 AND content_id = ?2",
    get_comment: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                  FROM service_content_comment WHERE id = ?1",
    get_comment_for_update: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                             FROM service_content_comment WHERE id = ?1",
    update_comment: "UPDATE service_content_comment SET body = ?2, updated_at = ?3 WHERE id = ?1",
    delete_comment: "DELETE FROM service_content_comment WHERE id = ?1",
    list_comments: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                    FROM service_content_comment WHERE content_id = ?1 AND (?2 IS NULL OR id > ?2) \
                    ORDER BY id LIMIT ?3",
    content_exists: "SELECT 1 FROM service_content_main WHERE id = ?1",
    insert_reaction: "INSERT INTO service_content_reaction (content_id, user_id, kind, created_at) \
                      VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    delete_reaction: "DELETE FROM service_content_reaction WHERE content_id = ?1 AND user_id = ?2 AND kind = ?3",
    reaction_counts: "SELECT kind, COUNT(*) AS n FROM service_content_reaction WHERE content_id = ?1 \
                      GROUP BY kind ORDER BY kind",
    my_reactions: "SELECT kind FROM service_content_reaction WHERE content_id = ?1 AND user_id = ?2 ORDER BY kind",
    audit: audit::INSERT_SQLITE,
};

const POSTGRES: Queries = Queries {
    begin: "BEGIN",
    insert: "INSERT INTO service_content_main (id, kind, author_id, title, body, url, tags, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $9)",
    get: postgres_content!(" WHERE id = $1"),
    // Lock the row for the rest of the transaction.
    get_for_update: postgres_content!(" WHERE id = $1 FOR UPDATE"),
    update: "UPDATE service_content_main SET title = $2, body = $3, url = $4, tags = $5::jsonb, metadata = $6::jsonb, \
             updated_at = $7 WHERE id = $1",
    delete: "DELETE FROM service_content_main WHERE id = $1",
    list: postgres_content!(
        " WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR author_id = $2) \
         AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ),
    // Ranks and orders the matches, then builds headlines for the page only.
    search: "SELECT p.id, p.kind, p.author_id, p.title, p.body, p.url, p.tags, p.metadata, p.created_at, \
             p.updated_at, p.score, ts_headline('simple', p.title || E'\\n' || p.body, p.query, \
             'StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet \
             FROM (SELECT m.id, m.kind, m.author_id, m.title, m.body, m.url, m.tags::text AS tags, \
                   m.metadata::text AS metadata, m.created_at, m.updated_at, \
                   ts_rank(m.search, q.query)::float8 AS score, q.query \
                   FROM service_content_main m, websearch_to_tsquery('simple', $1) AS q(query) \
                   WHERE m.search @@ q.query \
                   ORDER BY score DESC, m.id DESC LIMIT $2 OFFSET $3) p \
             ORDER BY p.score DESC, p.id DESC",
    insert_comment: "INSERT INTO service_content_comment (id, content_id, parent_id, author_id, body, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
    comment_of: "SELECT 1 FROM service_content_comment WHERE id = $1 AND content_id = $2 FOR KEY SHARE",
    get_comment: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                  FROM service_content_comment WHERE id = $1",
    get_comment_for_update: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                             FROM service_content_comment WHERE id = $1 FOR UPDATE",
    update_comment: "UPDATE service_content_comment SET body = $2, updated_at = $3 WHERE id = $1",
    delete_comment: "DELETE FROM service_content_comment WHERE id = $1",
    list_comments: "SELECT id, content_id, parent_id, author_id, body, created_at, updated_at \
                    FROM service_content_comment WHERE content_id = $1 AND ($2::text IS NULL OR id > $2) \
                    ORDER BY id LIMIT $3",
    content_exists: "SELECT 1 FROM service_content_main WHERE id = $1",
    insert_reaction: "INSERT INTO service_content_reaction (content_id, user_id, kind, created_at) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    delete_reaction: "DELETE FROM service_content_reaction WHERE content_id = $1 AND user_id = $2 AND kind = $3",
    reaction_counts: "SELECT kind, COUNT(*) AS n FROM service_content_reaction WHERE content_id = $1 \
                      GROUP BY kind ORDER BY kind",
    my_reactions: "SELECT kind FROM service_content_reaction WHERE content_id = $1 AND user_id = $2 ORDER BY kind",
    audit: audit::INSERT_POSTGRES,
};

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn content_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "content",
        id: id.to_owned(),
    }
}

pub(crate) fn comment_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "comment",
        id: id.to_owned(),
    }
}

/// A foreign-key failure means the content went away meanwhile (Postgres, between the
/// check and the write).
fn gone(e: sqlx::Error, content_id: &str) -> ServiceError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => content_not_found(content_id),
        _ => e.into(),
    }
}

/// The columns of a content row, read the same way from either backend.
struct Columns {
    id: String,
    kind: String,
    author_id: String,
    title: String,
    body: String,
    url: Option<String>,
    tags: String,
    metadata: String,
    created_at: i64,
    updated_at: i64,
}

macro_rules! columns {
    ($row:expr) => {
        Columns {
            id: $row.try_get("id")?,
            kind: $row.try_get("kind")?,
            author_id: $row.try_get("author_id")?,
            title: $row.try_get("title")?,
            body: $row.try_get("body")?,
            url: $row.try_get("url")?,
            tags: $row.try_get("tags")?,
            metadata: $row.try_get("metadata")?,
            created_at: $row.try_get("created_at")?,
            updated_at: $row.try_get("updated_at")?,
        }
    };
}

impl Columns {
    fn into_content(self) -> Result<Content, ServiceError> {
        let kind = Kind::parse(&self.kind).map_err(|_| {
            ServiceError::Database(sqlx::Error::Decode(
                format!("unknown content kind {:?}", self.kind).into(),
            ))
        })?;
        Ok(Content {
            id: self.id,
            kind,
            author_id: self.author_id,
            title: self.title,
            body: self.body,
            url: self.url,
            tags: serde_json::from_str::<Vec<String>>(&self.tags).map_err(decode_error)?,
            metadata: serde_json::from_str::<Value>(&self.metadata).map_err(decode_error)?,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        })
    }
}

macro_rules! comment {
    ($row:expr) => {{
        let created: i64 = $row.try_get("created_at")?;
        let updated: i64 = $row.try_get("updated_at")?;
        Comment {
            id: $row.try_get("id")?,
            content_id: $row.try_get("content_id")?,
            parent_id: $row.try_get("parent_id")?,
            author_id: $row.try_get("author_id")?,
            body: $row.try_get("body")?,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
        }
    }};
}

/// Reads the counts and the user's kinds of `$content_id` on `$conn`.
macro_rules! counts {
    ($conn:expr, $sql:expr, $content_id:expr, $user:expr) => {{
        let rows = sqlx::query($sql.reaction_counts)
            .bind($content_id)
            .fetch_all(&mut *$conn)
            .await?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let kind: String = row.try_get("kind")?;
            let n: i64 = row.try_get("n")?;
            counts.insert(kind, u64::try_from(n).unwrap_or(0));
        }
        let mine: Vec<String> = match $user {
            Some(user) => {
                sqlx::query_scalar($sql.my_reactions)
                    .bind($content_id)
                    .bind(user)
                    .fetch_all(&mut *$conn)
                    .await?
            }
            None => Vec::new(),
        };
        ReactionCounts {
            content_id: $content_id.to_owned(),
            counts,
            mine,
        }
    }};
}

/// JSON text of the tags (an array of strings always serialises).
fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads and writes content, comments and reactions.
#[derive(Clone, Debug)]
pub(crate) struct ContentRepo {
    db: Database,
}

impl ContentRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new post (and, on SQLite, its index entry) with the audit row of its creation.
    pub async fn insert(
        &self,
        c: &Content,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            sqlx::query(sql.insert)
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(&c.author_id)
                .bind(&c.title)
                .bind(&c.body)
                .bind(c.url.as_deref())
                .bind(tags_json(&c.tags))
                .bind(c.metadata.to_string())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The post with this id.
    pub async fn get(&self, id: &str) -> Result<Option<Content>, ServiceError> {
        let columns = on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            match sqlx::query(sql.get).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(columns!(row)),
                None => None,
            }
        });
        columns.map(Columns::into_content).transpose()
    }

    /// Reads the post, lets `edit` change it, and writes it back with the audit row (`audit`
    /// gets the post before and after), in one write transaction. Returns the post after.
    pub async fn update<F>(
        &self,
        id: &str,
        at: i64,
        audit: AuditRecord,
        edit: F,
    ) -> Result<Content, ServiceError>
    where
        F: FnOnce(&mut Content) -> Result<(), ServiceError>,
    {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.get_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(content_not_found(id));
            };
            let before = columns!(row).into_content()?;
            let mut after = before.clone();
            edit(&mut after)?;
            after.updated_at = rfc3339(at);
            sqlx::query(sql.update)
                .bind(&after.id)
                .bind(&after.title)
                .bind(&after.body)
                .bind(after.url.as_deref())
                .bind(tags_json(&after.tags))
                .bind(after.metadata.to_string())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let audit = audit.before(&before).after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            after
        }))
    }

    /// Reads the post, asks `check` whether it may go, and deletes it (its comments,
    /// reactions and index entry with it) with the audit row (`audit` gets the post before),
    /// in one write transaction. Returns the deleted post.
    pub async fn delete<F>(
        &self,
        id: &str,
        audit: AuditRecord,
        check: F,
    ) -> Result<Content, ServiceError>
    where
        F: FnOnce(&Content) -> Result<(), ServiceError>,
    {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.get_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(content_not_found(id));
            };
            let before = columns!(row).into_content()?;
            check(&before)?;
            sqlx::query(sql.delete).bind(id).execute(&mut *tx).await?;
            let audit = audit.before(&before);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            before
        }))
    }

    /// Up to `limit` posts with ids before `before`, newest first.
    pub async fn list(
        &self,
        kind: Option<Kind>,
        author_id: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Content>, ServiceError> {
        let rows: Vec<Columns> = on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(kind.map(Kind::as_str))
                .bind(author_id)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(columns!(row));
            }
            out
        });
        rows.into_iter().map(Columns::into_content).collect()
    }

    /// Up to `limit` matches of `expression` (see `model::search_expression`) from `offset`,
    /// best first.
    pub async fn search(
        &self,
        expression: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<SearchHit>, ServiceError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows: Vec<(Columns, f64, String)> =
            on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
                let rows = sqlx::query(sql.search)
                    .bind(expression)
                    .bind(i64::from(limit))
                    .bind(offset)
                    .fetch_all(pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let score: f64 = row.try_get("score")?;
                    let snippet: Option<String> = row.try_get("snippet")?;
                    out.push((columns!(row), score, snippet.unwrap_or_default()));
                }
                out
            });
        rows.into_iter()
            .map(|(c, rank, snippet)| {
                Ok(SearchHit {
                    content: c.into_content()?,
                    rank,
                    snippet,
                })
            })
            .collect()
    }

    /// Stores a comment with its audit row, after checking that the content exists and that
    /// the parent, if any, is a comment of the same content.
    pub async fn insert_comment(
        &self,
        c: &Comment,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let exists: Option<i32> = sqlx::query_scalar(sql.content_exists)
                .bind(&c.content_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(content_not_found(&c.content_id));
            }
            if let Some(parent) = &c.parent_id {
                let same: Option<i32> = sqlx::query_scalar(sql.comment_of)
                    .bind(parent)
                    .bind(&c.content_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if same.is_none() {
                    // No such comment on this post (there may be one on another).
                    return Err(ServiceError::NotFound {
                        entity: "parent comment",
                        id: parent.clone(),
                    });
                }
            }
            sqlx::query(sql.insert_comment)
                .bind(&c.id)
                .bind(&c.content_id)
                .bind(c.parent_id.as_deref())
                .bind(&c.author_id)
                .bind(&c.body)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(|e| gone(e, &c.content_id))?;
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The comment with this id.
    pub async fn get_comment(&self, id: &str) -> Result<Option<Comment>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            match sqlx::query(sql.get_comment)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(comment!(row)),
                None => None,
            }
        }))
    }

    /// Reads the comment, lets `edit` change it, and writes it back with the audit row
    /// (before and after), in one write transaction. Returns the comment after.
    pub async fn update_comment<F>(
        &self,
        id: &str,
        at: i64,
        audit: AuditRecord,
        edit: F,
    ) -> Result<Comment, ServiceError>
    where
        F: FnOnce(&mut Comment) -> Result<(), ServiceError>,
    {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.get_comment_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(comment_not_found(id));
            };
            let before = comment!(row);
            let mut after = before.clone();
            edit(&mut after)?;
            after.updated_at = rfc3339(at);
            sqlx::query(sql.update_comment)
                .bind(id)
                .bind(&after.body)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let audit = audit.before(&before).after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            after
        }))
    }

    /// Reads the comment, asks `check` whether it may go, and deletes it (with its replies)
    /// and writes the audit row (before), in one write transaction. Returns the comment.
    pub async fn delete_comment<F>(
        &self,
        id: &str,
        audit: AuditRecord,
        check: F,
    ) -> Result<Comment, ServiceError>
    where
        F: FnOnce(&Comment) -> Result<(), ServiceError>,
    {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.get_comment_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(comment_not_found(id));
            };
            let before = comment!(row);
            check(&before)?;
            sqlx::query(sql.delete_comment)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let audit = audit.before(&before);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            before
        }))
    }

    /// Up to `limit` comments of the content with ids after `after`, oldest first.
    pub async fn list_comments(
        &self,
        content_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Comment>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let rows = sqlx::query(sql.list_comments)
                .bind(content_id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(comment!(row));
            }
            out
        }))
    }

    /// Adds (`add`) or removes the user's reaction of `kind`; writes `audit` only when that
    /// changed something. Returns the counts after, read in the same transaction.
    pub async fn set_reaction(
        &self,
        content_id: &str,
        user: &str,
        kind: &str,
        add: bool,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<ReactionCounts, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let exists: Option<i32> = sqlx::query_scalar(sql.content_exists)
                .bind(content_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(content_not_found(content_id));
            }
            let changed = if add {
                sqlx::query(sql.insert_reaction)
                    .bind(content_id)
                    .bind(user)
                    .bind(kind)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| gone(e, content_id))?
            } else {
                sqlx::query(sql.delete_reaction)
                    .bind(content_id)
                    .bind(user)
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?
            }
            .rows_affected()
                > 0;
            if changed {
                audit::insert!(&mut *tx, sql.audit, audit);
            }
            let counts = counts!(tx, sql, content_id, Some(user));
            tx.commit().await?;
            counts
        }))
    }

    /// The reactions to the content (`mine` for `user`); `None` when it does not exist.
    pub async fn reactions(
        &self,
        content_id: &str,
        user: Option<&str>,
    ) -> Result<Option<ReactionCounts>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut conn = pool.acquire().await?;
            let exists: Option<i32> = sqlx::query_scalar(sql.content_exists)
                .bind(content_id)
                .fetch_optional(&mut *conn)
                .await?;
            if exists.is_none() {
                None
            } else {
                Some(counts!(conn, sql, content_id, user))
            }
        }))
    }
}
