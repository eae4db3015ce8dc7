//! Translation storage: table `service_localization_message`, one row per (namespace, locale,
//! key). Each query is written once for both dialects ([`Queries`], see [`crate::sql`]).

use std::collections::BTreeMap;

use sqlx::Row;

use super::model::{Export, ImportResult, LocaleSummary, Message, MessageFilter, MissingKey};
use crate::db::on_pool;
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! columns {
    () => {
        "namespace, message_key, locale, value, updated_by, created_at, updated_at"
    };
}

portable_sql! {
    /// The SQL of messages, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        get: concat!("SELECT ", columns!(), " FROM service_localization_message \
                      WHERE namespace = $1 AND locale = $2 AND message_key = $3"),
        get_for_update: concat!("SELECT ", columns!(), " FROM service_localization_message \
                                 WHERE namespace = $1 AND locale = $2 AND message_key = $3{for_update}"),
        insert: "INSERT INTO service_localization_message \
                 (namespace, locale, message_key, value, updated_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
        update: "UPDATE service_localization_message SET value = $4, updated_by = $5, updated_at = $6 \
                 WHERE namespace = $1 AND locale = $2 AND message_key = $3",
        delete: "DELETE FROM service_localization_message \
                 WHERE namespace = $1 AND locale = $2 AND message_key = $3",
        list: concat!("SELECT ", columns!(), " FROM service_localization_message \
                       WHERE namespace = $1 AND ($2{text} IS NULL OR locale = $2) \
                       AND ($3{text} IS NULL OR substr(message_key, 1, length($3)) = $3) \
                       AND ($4{text} IS NULL OR locale > $4 OR (locale = $4 AND message_key > $5)) \
                       ORDER BY locale, message_key LIMIT $6"),
        /// Every message of one namespace and locale (export, bundles).
        all: "SELECT message_key, value FROM service_localization_message \
              WHERE namespace = $1 AND locale = $2 ORDER BY message_key",
        all_for_update: "SELECT message_key, value FROM service_localization_message \
                         WHERE namespace = $1 AND locale = $2 ORDER BY message_key{for_update}",
        keys: "SELECT COUNT(DISTINCT message_key) FROM service_localization_message WHERE namespace = $1",
        per_locale: "SELECT locale, COUNT(*) FROM service_localization_message \
                     WHERE namespace = $1 GROUP BY locale ORDER BY locale",
        /// Keys of the namespace that `$2` lacks, with the locales that have them.
        missing: "SELECT message_key, {lite:group_concat(locale, ',')}{pg:string_agg(locale, ',')} AS locales \
                  FROM service_localization_message \
                  WHERE namespace = $1 AND ($3{text} IS NULL OR message_key > $3) \
                  GROUP BY message_key \
                  HAVING SUM(CASE WHEN locale = $2 THEN 1 ELSE 0 END) = 0 \
                  ORDER BY message_key LIMIT $4",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

macro_rules! message {
    ($row:expr) => {
        Message {
            namespace: $row.try_get("namespace")?,
            key: $row.try_get("message_key")?,
            locale: $row.try_get("locale")?,
            value: $row.try_get("value")?,
            updated_by: $row.try_get("updated_by")?,
            created_at: rfc3339($row.try_get("created_at")?),
            updated_at: rfc3339($row.try_get("updated_at")?),
        }
    };
}

/// Reads and writes messages.
#[derive(Clone, Debug)]
pub struct LocalizationRepo {
    db: Database,
}

/// What a write changed: the message before (if any) and after.
pub type Change = (Option<Message>, Message);

impl LocalizationRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The message (namespace, locale, key), if stored.
    ///
    /// # Errors
    /// Database failures.
    pub async fn get(
        &self,
        namespace: &str,
        locale: &str,
        key: &str,
    ) -> Result<Option<Message>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.get)
                .bind(namespace)
                .bind(locale)
                .bind(key)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(message!(row)),
                None => None,
            }
        }))
    }

    /// Creates or replaces a message with its audit row (`audit` gets the message before and
    /// after), in one transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn put(
        &self,
        m: &Message,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<Change, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = match sqlx::query(sql.get_for_update)
                .bind(&m.namespace)
                .bind(&m.locale)
                .bind(&m.key)
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => Some(message!(row)),
                None => None,
            };
            let statement = if before.is_some() {
                sql.update
            } else {
                sql.insert
            };
            sqlx::query(statement)
                .bind(&m.namespace)
                .bind(&m.locale)
                .bind(&m.key)
                .bind(&m.value)
                .bind(&m.updated_by)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            let mut after = m.clone();
            after.updated_at = rfc3339(at_ms);
            after.created_at = before
                .as_ref()
                .map_or_else(|| rfc3339(at_ms), |b| b.created_at.clone());
            let audit = match &before {
                Some(b) => audit.before(b),
                None => audit,
            }
            .after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            (before, after)
        }))
    }

    /// Deletes a message with its audit row; returns it.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], database failures.
    pub async fn delete(
        &self,
        namespace: &str,
        locale: &str,
        key: &str,
        audit: AuditRecord,
    ) -> Result<Message, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = match sqlx::query(sql.get_for_update)
                .bind(namespace)
                .bind(locale)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => message!(row),
                None => return Err(not_found(namespace, locale, key)),
            };
            sqlx::query(sql.delete)
                .bind(namespace)
                .bind(locale)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.before(&before));
            tx.commit().await?;
            before
        }))
    }

    /// Up to `limit` messages after the cursor `(locale, key)`, by locale then key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list(
        &self,
        filter: &MessageFilter,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Message>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(&filter.namespace)
                .bind(filter.locale.as_deref())
                .bind(filter.key_prefix.as_deref())
                .bind(after.map(|a| a.0))
                .bind(after.map(|a| a.1))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(message!(row));
            }
            out
        }))
    }

    /// Every `(key, value)` of a namespace in a locale, by key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn all(
        &self,
        namespace: &str,
        locale: &str,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_as(sql.all)
                .bind(namespace)
                .bind(locale)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Writes an import in one transaction with one audit row (`before`: the values changed or
    /// deleted; `after`: the values created or changed). With `replace`, keys the import does
    /// not name are deleted.
    ///
    /// # Errors
    /// Database failures; nothing is written then.
    pub async fn import(
        &self,
        export: &Export,
        replace: bool,
        actor: &str,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<ImportResult, ServiceError> {
        let (ns, locale) = (&export.namespace, &export.locale);
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let existing: Vec<(String, String)> = sqlx::query_as(sql.all_for_update)
                .bind(ns)
                .bind(locale)
                .fetch_all(&mut *tx)
                .await?;
            let existing: BTreeMap<String, String> = existing.into_iter().collect();
            let mut result = ImportResult {
                namespace: ns.clone(),
                locale: locale.clone(),
                created: 0,
                updated: 0,
                unchanged: 0,
                deleted: 0,
            };
            let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
            for (key, value) in &export.messages {
                let statement = match existing.get(key) {
                    Some(old) if old == value => {
                        result.unchanged += 1;
                        continue;
                    }
                    Some(old) => {
                        result.updated += 1;
                        before.insert(key.clone(), old.clone());
                        sql.update
                    }
                    None => {
                        result.created += 1;
                        sql.insert
                    }
                };
                after.insert(key.clone(), value.clone());
                sqlx::query(statement)
                    .bind(ns)
                    .bind(locale)
                    .bind(key)
                    .bind(value)
                    .bind(actor)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            if replace {
                for (key, old) in &existing {
                    if export.messages.contains_key(key) {
                        continue;
                    }
                    sqlx::query(sql.delete)
                        .bind(ns)
                        .bind(locale)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    result.deleted += 1;
                    before.insert(key.clone(), old.clone());
                }
            }
            let audit = audit
                .before(&serde_json::json!({ "messages": before }))
                .after(&serde_json::json!({ "messages": after, "result": &result }));
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            result
        }))
    }

    /// The number of distinct keys of a namespace and the messages of each of its locales.
    ///
    /// # Errors
    /// Database failures.
    pub async fn summary(
        &self,
        namespace: &str,
    ) -> Result<(u64, Vec<LocaleSummary>), ServiceError> {
        let (keys, rows): (i64, Vec<(String, i64)>) = on_pool!(&self.db, Queries, |pool, sql| {
            let keys: i64 = sqlx::query_scalar(sql.keys)
                .bind(namespace)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as(sql.per_locale)
                .bind(namespace)
                .fetch_all(pool)
                .await?;
            (keys, rows)
        });
        let keys = u64::try_from(keys).unwrap_or(0);
        let locales = rows
            .into_iter()
            .map(|(locale, n)| {
                let messages = u64::try_from(n).unwrap_or(0);
                LocaleSummary {
                    locale,
                    messages,
                    missing: keys.saturating_sub(messages),
                }
            })
            .collect();
        Ok((keys, locales))
    }

    /// Up to `limit` keys of `namespace` after `after` that `locale` lacks, by key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn missing(
        &self,
        namespace: &str,
        locale: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MissingKey>, ServiceError> {
        let rows: Vec<(String, String)> = on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_as(sql.missing)
                .bind(namespace)
                .bind(locale)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, locales)| {
                let mut locales: Vec<String> = locales.split(',').map(str::to_owned).collect();
                locales.sort();
                MissingKey { key, locales }
            })
            .collect())
    }
}

pub(crate) fn not_found(namespace: &str, locale: &str, key: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "message",
        id: format!("{namespace}/{locale}/{key}"),
    }
}
