//! Notification storage: templates, notifications (the inbox), the delivery outbox,
//! preferences and webhooks (tables `service_notification_*`). Each query is written once for
//! both dialects ([`Queries`], see [`crate::sql`]).
//!
//! The outbox is claimed with one statement on both backends: an `UPDATE` of the rows a
//! sub-select picks (`FOR UPDATE SKIP LOCKED` on Postgres, so two nodes never pick the same
//! row; SQLite runs one writer at a time), which sets the lease and raises the row's `fence`.
//! An outcome is recorded only with the fence of the claim (`WHERE fence = $n`): a worker whose
//! lease ran out and was taken over cannot overwrite the new holder's result.

use sqlx::Row;

use super::model::{
    Category, Channel, Delivery, DeliveryStatus, Notification, Preferences, Template, Webhook,
    WebhookOwner,
};
use crate::db::on_pool;
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! template_columns {
    () => {
        "template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at"
    };
}
macro_rules! notification_columns {
    () => {
        "id, batch_id, user_id, template_key, locale, category, subject, body_text, body_html, \
         data{text} AS data, channels, campaign_id, read_at, created_by, created_at"
    };
}
macro_rules! delivery_columns {
    () => {
        "id, notification_id, channel, target, webhook_id, status, attempts, next_attempt_at, \
         last_error, sent_at, created_at, fence"
    };
}
macro_rules! webhook_columns {
    () => {
        "id, owner_type, owner_id, url, active, created_by, created_at"
    };
}
macro_rules! recipient_columns {
    () => {
        "u.id, u.username, u.display_name, u.email, u.locale"
    };
}

portable_sql! {
    /// The SQL of notifications, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        template_get: concat!("SELECT ", template_columns!(), " FROM service_notification_template \
                               WHERE template_key = $1 AND locale = $2"),
        template_get_for_update: concat!("SELECT ", template_columns!(), " FROM service_notification_template \
                                          WHERE template_key = $1 AND locale = $2{for_update}"),
        template_insert: "INSERT INTO service_notification_template \
                          (template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        template_update: "UPDATE service_notification_template SET category = $3, subject = $4, body_text = $5, \
                          body_html = $6, updated_by = $7, updated_at = $8 WHERE template_key = $1 AND locale = $2",
        template_delete: "DELETE FROM service_notification_template WHERE template_key = $1 AND locale = $2",
        template_list: concat!("SELECT ", template_columns!(), " FROM service_notification_template \
                                WHERE ($1{text} IS NULL OR template_key = $1) \
                                AND ($2{text} IS NULL OR template_key > $2 OR (template_key = $2 AND locale > $3)) \
                                ORDER BY template_key, locale LIMIT $4"),
        template_locales: "SELECT locale FROM service_notification_template WHERE template_key = $1",
        recipient_by_id: concat!("SELECT ", recipient_columns!(), " FROM service_user_master u WHERE u.id = $1 AND u.disabled = $2"),
        recipients_by_role: concat!("SELECT ", recipient_columns!(), " FROM service_user_master u \
                                     JOIN service_user_role r ON r.user_id = u.id \
                                     WHERE r.role = $1 AND u.disabled = $2 ORDER BY u.id LIMIT $3"),
        opt_outs_of_user: "SELECT user_id, channel FROM service_notification_preference WHERE user_id = $1 AND enabled = $2",
        opt_outs_of_role: "SELECT p.user_id, p.channel FROM service_notification_preference p \
                           JOIN service_user_role r ON r.user_id = p.user_id WHERE r.role = $1 AND p.enabled = $2",
        webhooks_of_owner: concat!("SELECT ", webhook_columns!(), " FROM service_notification_webhook \
                                    WHERE owner_type = $1 AND owner_id = $2 ORDER BY id"),
        active_webhooks_of_role: "SELECT w.id, w.owner_id, w.url FROM service_notification_webhook w \
                                  JOIN service_user_role r ON r.user_id = w.owner_id \
                                  WHERE w.owner_type = 'user' AND r.role = $1 AND w.active = $2",
        notification_insert: "INSERT INTO service_notification_master \
                              (id, batch_id, user_id, template_key, locale, category, subject, body_text, body_html, \
                               data, channels, campaign_id, in_inbox, read_at, created_by, created_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10{jsonb}, $11, $12, $13, NULL, $14, $15)",
        delivery_insert: "INSERT INTO service_notification_delivery \
                          (id, notification_id, channel, target, webhook_id, status, attempts, next_attempt_at, \
                           last_error, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $7, $7)",
        inbox: concat!("SELECT ", notification_columns!(), " FROM service_notification_master \
                        WHERE user_id = $1 AND in_inbox = $2 AND (NOT $3 OR read_at IS NULL) \
                        AND ($4{text} IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"),
        inbox_after: concat!("SELECT ", notification_columns!(), " FROM service_notification_master \
                              WHERE user_id = $1 AND in_inbox = $2 AND id > $3 ORDER BY id LIMIT $4"),
        inbox_latest: "SELECT MAX(id) FROM service_notification_master WHERE user_id = $1 AND in_inbox = $2",
        unread: "SELECT COUNT(*) FROM service_notification_master WHERE user_id = $1 AND in_inbox = $2 AND read_at IS NULL",
        notification_of_user: concat!("SELECT ", notification_columns!(), ", in_inbox FROM service_notification_master \
                                       WHERE id = $1 AND user_id = $2"),
        notification_by_id: concat!("SELECT ", notification_columns!(), " FROM service_notification_master WHERE id = $1"),
        mark_read: "UPDATE service_notification_master SET read_at = $3 \
                    WHERE id = $1 AND user_id = $2 AND in_inbox = $4 AND read_at IS NULL",
        mark_all_read: "UPDATE service_notification_master SET read_at = $2 \
                        WHERE user_id = $1 AND in_inbox = $3 AND read_at IS NULL",
        remove_from_inbox: "UPDATE service_notification_master SET in_inbox = $3 \
                            WHERE id = $1 AND user_id = $2 AND in_inbox = $4",
        preferences: "SELECT channel, enabled FROM service_notification_preference WHERE user_id = $1",
        preference_put: "INSERT INTO service_notification_preference (user_id, channel, enabled, updated_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, channel) \
                         DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        webhook_insert: "INSERT INTO service_notification_webhook \
                         (id, owner_type, owner_id, url, secret, active, created_by, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        webhook_get: concat!("SELECT ", webhook_columns!(), " FROM service_notification_webhook WHERE id = $1"),
        webhook_secret: "SELECT secret, active FROM service_notification_webhook WHERE id = $1",
        webhook_delete: "DELETE FROM service_notification_webhook WHERE id = $1",
        /// Serialises the webhook registrations of one owner until the transaction ends, so
        /// two at once cannot both pass the count (SQLite: `BEGIN IMMEDIATE` already does).
        webhook_owner_lock: ("SELECT length($1) + length($2)",
                             "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))"),
        webhook_count: "SELECT COUNT(*) FROM service_notification_webhook WHERE owner_type = $1 AND owner_id = $2",
        deliveries_of: concat!("SELECT ", delivery_columns!(), " FROM service_notification_delivery \
                                WHERE notification_id = $1 ORDER BY id"),
        deliveries_of_batch: "SELECT d.id, d.notification_id, d.channel, d.target, d.webhook_id, d.status, \
                              d.attempts, d.next_attempt_at, d.last_error, d.sent_at, d.created_at, d.fence \
                              FROM service_notification_delivery d \
                              JOIN service_notification_master n ON n.id = d.notification_id \
                              WHERE n.batch_id = $1 AND ($2{text} IS NULL OR d.id > $2) ORDER BY d.id LIMIT $3",
        claim: concat!("UPDATE service_notification_delivery \
                        SET lease_until = $2, lease_owner = $3, fence = fence + 1, attempts = attempts + 1, updated_at = $1 \
                        WHERE id IN (SELECT id FROM service_notification_delivery \
                                     WHERE status = 'pending' AND next_attempt_at <= $1 \
                                     AND (lease_until IS NULL OR lease_until < $1) \
                                     ORDER BY next_attempt_at LIMIT $4{pg: FOR UPDATE SKIP LOCKED}) \
                        RETURNING ", delivery_columns!()),
        complete: "UPDATE service_notification_delivery \
                   SET status = $3, last_error = $4, sent_at = $5, next_attempt_at = $6, \
                       lease_until = NULL, lease_owner = NULL, updated_at = $7 \
                   WHERE id = $1 AND fence = $2",
        outbox_depth: "SELECT COUNT(*) FROM service_notification_delivery WHERE status = 'pending'",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

macro_rules! template {
    ($row:expr) => {
        Template {
            key: $row.try_get("template_key")?,
            locale: $row.try_get("locale")?,
            category: Category::from_db(&$row.try_get::<String, _>("category")?),
            subject: $row.try_get("subject")?,
            text: $row.try_get("body_text")?,
            html: $row.try_get("body_html")?,
            variables: Vec::new(),
            updated_by: $row.try_get("updated_by")?,
            created_at: rfc3339($row.try_get("created_at")?),
            updated_at: rfc3339($row.try_get("updated_at")?),
        }
    };
}

macro_rules! notification {
    ($row:expr) => {{
        let data: String = $row.try_get("data")?;
        let channels: String = $row.try_get("channels")?;
        let read_at: Option<i64> = $row.try_get("read_at")?;
        Notification {
            id: $row.try_get("id")?,
            batch_id: $row.try_get("batch_id")?,
            user_id: $row.try_get("user_id")?,
            template: $row.try_get("template_key")?,
            locale: $row.try_get("locale")?,
            category: Category::from_db(&$row.try_get::<String, _>("category")?),
            subject: $row.try_get("subject")?,
            text: $row.try_get("body_text")?,
            html: $row.try_get("body_html")?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            channels: serde_json::from_str(&channels).unwrap_or_default(),
            campaign_id: $row.try_get("campaign_id")?,
            read: read_at.is_some(),
            read_at: read_at.map(rfc3339),
            created_by: $row.try_get("created_by")?,
            created_at: rfc3339($row.try_get("created_at")?),
        }
    }};
}

macro_rules! delivery {
    ($row:expr) => {{
        let channel: String = $row.try_get("channel")?;
        let sent_at: Option<i64> = $row.try_get("sent_at")?;
        // `attempts` is an INTEGER (INT4 on Postgres, which sqlx does not decode as i64).
        let attempts: i32 = $row.try_get("attempts")?;
        let fence: i64 = $row.try_get("fence")?;
        Claimed {
            delivery: Delivery {
                id: $row.try_get("id")?,
                notification_id: $row.try_get("notification_id")?,
                channel: Channel::parse("channel", &channel).unwrap_or(Channel::InApp),
                target: $row.try_get("target")?,
                status: DeliveryStatus::from_db(&$row.try_get::<String, _>("status")?),
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: rfc3339($row.try_get("next_attempt_at")?),
                last_error: $row.try_get("last_error")?,
                sent_at: sent_at.map(rfc3339),
                created_at: rfc3339($row.try_get("created_at")?),
            },
            webhook_id: $row.try_get("webhook_id")?,
            fence,
        }
    }};
}

macro_rules! webhook {
    ($row:expr) => {
        Webhook {
            id: $row.try_get("id")?,
            owner_type: WebhookOwner::from_db(&$row.try_get::<String, _>("owner_type")?),
            owner_id: $row.try_get("owner_id")?,
            url: $row.try_get("url")?,
            active: $row.try_get("active")?,
            created_by: $row.try_get("created_by")?,
            created_at: rfc3339($row.try_get("created_at")?),
            secret: None,
        }
    };
}

/// A user a send reaches.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub locale: Option<String>,
}

macro_rules! recipient {
    ($row:expr) => {
        Recipient {
            id: $row.try_get("id")?,
            username: $row.try_get("username")?,
            display_name: $row.try_get("display_name")?,
            email: $row.try_get("email")?,
            locale: $row.try_get("locale")?,
        }
    };
}

/// A delivery as a worker holds it: the fence of its claim and the webhook it goes to.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub webhook_id: Option<String>,
    pub fence: i64,
}

/// A notification and its deliveries, to write in one transaction.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub notification: Notification,
    pub in_inbox: bool,
    pub at_ms: i64,
    pub deliveries: Vec<NewDelivery>,
}

/// One outbox row to write.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub channel: Channel,
    pub target: String,
    pub webhook_id: Option<String>,
    pub status: DeliveryStatus,
    pub note: Option<String>,
}

/// The outcome a worker records.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub sent_at: Option<i64>,
    pub next_attempt_at: i64,
}

/// Reads and writes notifications.
#[derive(Clone, Debug)]
pub struct NotificationRepo {
    db: Database,
}

impl NotificationRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn template(
        &self,
        key: &str,
        locale: &str,
    ) -> Result<Option<Template>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.template_get)
                .bind(key)
                .bind(locale)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(template!(row)),
                None => None,
            }
        }))
    }

    /// The locales `key` has a template in.
    pub async fn template_locales(&self, key: &str) -> Result<Vec<String>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_scalar::<_, String>(sql.template_locales)
                .bind(key)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Creates or replaces a template with its audit row; returns it before (if any) and after.
    pub async fn put_template(
        &self,
        t: &Template,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<(Option<Template>, Template), ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = match sqlx::query(sql.template_get_for_update)
                .bind(&t.key)
                .bind(&t.locale)
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => Some(template!(row)),
                None => None,
            };
            let statement = if before.is_some() {
                sql.template_update
            } else {
                sql.template_insert
            };
            sqlx::query(statement)
                .bind(&t.key)
                .bind(&t.locale)
                .bind(t.category.as_str())
                .bind(&t.subject)
                .bind(&t.text)
                .bind(t.html.as_deref())
                .bind(&t.updated_by)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            let mut after = t.clone();
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

    /// Deletes a template with its audit row; returns it.
    pub async fn delete_template(
        &self,
        key: &str,
        locale: &str,
        audit: AuditRecord,
    ) -> Result<Template, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = match sqlx::query(sql.template_get_for_update)
                .bind(key)
                .bind(locale)
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => template!(row),
                None => {
                    return Err(ServiceError::NotFound {
                        entity: "notification template",
                        id: format!("{key}/{locale}"),
                    });
                }
            };
            sqlx::query(sql.template_delete)
                .bind(key)
                .bind(locale)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.before(&before));
            tx.commit().await?;
            before
        }))
    }

    /// Up to `limit` templates (of `key`, if given) after the cursor `(key, locale)`.
    pub async fn templates(
        &self,
        key: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Template>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.template_list)
                .bind(key)
                .bind(after.map(|a| a.0))
                .bind(after.map_or("", |a| a.1))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(template!(row));
            }
            out
        }))
    }

    /// The user `id`, if it exists and is not disabled.
    pub async fn recipient(&self, id: &str) -> Result<Option<Recipient>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.recipient_by_id)
                .bind(id)
                .bind(false)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(recipient!(row)),
                None => None,
            }
        }))
    }

    /// The active users with `role`, by id, at most `limit`.
    pub async fn recipients_with_role(
        &self,
        role: &str,
        limit: usize,
    ) -> Result<Vec<Recipient>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.recipients_by_role)
                .bind(role)
                .bind(false)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(recipient!(row));
            }
            out
        }))
    }

    /// `(user, channel)` opt-outs of one user, or of every user with a role.
    pub async fn opt_outs(
        &self,
        user: Option<&str>,
        role: Option<&str>,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let (query, by) = match (user, role) {
                (Some(u), _) => (sql.opt_outs_of_user, u),
                (None, Some(r)) => (sql.opt_outs_of_role, r),
                (None, None) => return Ok(Vec::new()),
            };
            let rows = sqlx::query(query)
                .bind(by)
                .bind(false)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push((row.try_get("user_id")?, row.try_get("channel")?));
            }
            out
        }))
    }

    /// The webhooks of one owner, by id.
    pub async fn webhooks(
        &self,
        owner: WebhookOwner,
        owner_id: &str,
    ) -> Result<Vec<Webhook>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.webhooks_of_owner)
                .bind(owner.as_str())
                .bind(owner_id)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(webhook!(row));
            }
            out
        }))
    }

    /// `(webhook id, user id, url)` of the active webhooks of every user with `role`.
    pub async fn webhooks_of_role(
        &self,
        role: &str,
    ) -> Result<Vec<(String, String, String)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.active_webhooks_of_role)
                .bind(role)
                .bind(true)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            out
        }))
    }

    /// Writes the notifications of one send, their deliveries and the send's audit row in one
    /// transaction.
    pub async fn insert_batch(
        &self,
        batch: &[NewNotification],
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            for n in batch {
                let m = &n.notification;
                let channels = serde_json::to_string(&m.channels).unwrap_or_else(|_| "[]".into());
                sqlx::query(sql.notification_insert)
                    .bind(&m.id)
                    .bind(&m.batch_id)
                    .bind(&m.user_id)
                    .bind(&m.template)
                    .bind(&m.locale)
                    .bind(m.category.as_str())
                    .bind(&m.subject)
                    .bind(&m.text)
                    .bind(m.html.as_deref())
                    .bind(m.data.to_string())
                    .bind(channels)
                    .bind(m.campaign_id.as_deref())
                    .bind(n.in_inbox)
                    .bind(&m.created_by)
                    .bind(n.at_ms)
                    .execute(&mut *tx)
                    .await?;
                for d in &n.deliveries {
                    sqlx::query(sql.delivery_insert)
                        .bind(&d.id)
                        .bind(&m.id)
                        .bind(d.channel.as_str())
                        .bind(&d.target)
                        .bind(d.webhook_id.as_deref())
                        .bind(d.status.as_str())
                        .bind(n.at_ms)
                        .bind(d.note.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Up to `limit` of the user's inbox, newest first, older than the cursor id.
    pub async fn inbox(
        &self,
        user: &str,
        unread_only: bool,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notification>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.inbox)
                .bind(user)
                .bind(true)
                .bind(unread_only)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(notification!(row));
            }
            out
        }))
    }

    /// Up to `limit` of the user's inbox newer than `after`, oldest first.
    pub async fn inbox_after(
        &self,
        user: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Notification>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.inbox_after)
                .bind(user)
                .bind(true)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(notification!(row));
            }
            out
        }))
    }

    /// The id of the user's newest inbox notification.
    pub async fn inbox_latest(&self, user: &str) -> Result<Option<String>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_scalar::<_, Option<String>>(sql.inbox_latest)
                .bind(user)
                .bind(true)
                .fetch_one(pool)
                .await?
        }))
    }

    pub async fn unread(&self, user: &str) -> Result<u64, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let n: i64 = sqlx::query_scalar(sql.unread)
                .bind(user)
                .bind(true)
                .fetch_one(pool)
                .await?;
            u64::try_from(n).unwrap_or(0)
        }))
    }

    /// The user's notification `id` (in the inbox or not).
    pub async fn notification_of(
        &self,
        id: &str,
        user: &str,
    ) -> Result<Option<(Notification, bool)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let row = sqlx::query(sql.notification_of_user)
                .bind(id)
                .bind(user)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Some((notification!(row), row.try_get::<bool, _>("in_inbox")?)),
                None => None,
            }
        }))
    }

    pub async fn notification(&self, id: &str) -> Result<Option<Notification>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.notification_by_id)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(notification!(row)),
                None => None,
            }
        }))
    }

    /// Marks one inbox notification read (with its audit row); whether it changed.
    pub async fn mark_read(
        &self,
        id: &str,
        user: &str,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<bool, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let n = sqlx::query(sql.mark_read)
                .bind(id)
                .bind(user)
                .bind(at_ms)
                .bind(true)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                audit::insert!(&mut *tx, sql.audit, &audit);
            }
            tx.commit().await?;
            n > 0
        }))
    }

    /// Marks every unread inbox notification of the user read (with one audit row); how many.
    pub async fn mark_all_read(
        &self,
        user: &str,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<u64, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let n = sqlx::query(sql.mark_all_read)
                .bind(user)
                .bind(at_ms)
                .bind(true)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                let audit = audit.after(&serde_json::json!({ "marked": n }));
                audit::insert!(&mut *tx, sql.audit, &audit);
            }
            tx.commit().await?;
            n
        }))
    }

    /// Takes a notification out of the user's inbox (its delivery history stays); whether it
    /// was there.
    pub async fn remove_from_inbox(
        &self,
        id: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let n = sqlx::query(sql.remove_from_inbox)
                .bind(id)
                .bind(user)
                .bind(false)
                .bind(true)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                audit::insert!(&mut *tx, sql.audit, &audit);
            }
            tx.commit().await?;
            n > 0
        }))
    }

    pub async fn preferences(&self, user: &str) -> Result<Preferences, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.preferences)
                .bind(user)
                .fetch_all(pool)
                .await?;
            let mut p = Preferences::default();
            for row in rows {
                let channel: String = row.try_get("channel")?;
                if let Ok(c) = Channel::parse("channel", &channel) {
                    p.set(c, row.try_get("enabled")?);
                }
            }
            p
        }))
    }

    /// Writes preference changes with their audit row.
    pub async fn set_preferences(
        &self,
        user: &str,
        changes: &[(Channel, bool)],
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            for (channel, on) in changes {
                sqlx::query(sql.preference_put)
                    .bind(user)
                    .bind(channel.as_str())
                    .bind(*on)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stores a webhook (with its secret) and its audit row, unless the owner has
    /// `max` already.
    pub async fn insert_webhook(
        &self,
        w: &Webhook,
        secret: &str,
        at_ms: i64,
        max: usize,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            sqlx::query(sql.webhook_owner_lock)
                .bind(w.owner_type.as_str())
                .bind(&w.owner_id)
                .execute(&mut *tx)
                .await?;
            let n: i64 = sqlx::query_scalar(sql.webhook_count)
                .bind(w.owner_type.as_str())
                .bind(&w.owner_id)
                .fetch_one(&mut *tx)
                .await?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= max {
                // Ends the transaction now: its lock would otherwise stay until the pooled
                // connection is next used.
                tx.rollback().await?;
                return Err(ServiceError::Conflict {
                    message: format!(
                        "{} {} has {max} webhooks already",
                        w.owner_type.as_str(),
                        w.owner_id
                    ),
                });
            }
            sqlx::query(sql.webhook_insert)
                .bind(&w.id)
                .bind(w.owner_type.as_str())
                .bind(&w.owner_id)
                .bind(&w.url)
                .bind(secret)
                .bind(w.active)
                .bind(&w.created_by)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.after(w));
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.webhook_get)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(webhook!(row)),
                None => None,
            }
        }))
    }

    /// The secret of an active webhook (`None`: deleted or inactive).
    pub async fn webhook_secret(&self, id: &str) -> Result<Option<String>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.webhook_secret)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) if row.try_get::<bool, _>("active")? => Some(row.try_get("secret")?),
                _ => None,
            }
        }))
    }

    pub async fn delete_webhook(
        &self,
        w: &Webhook,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            sqlx::query(sql.webhook_delete)
                .bind(&w.id)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.before(w));
            tx.commit().await?;
        });
        Ok(())
    }

    /// The deliveries of one notification.
    pub async fn deliveries(&self, notification: &str) -> Result<Vec<Delivery>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.deliveries_of)
                .bind(notification)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(delivery!(row).delivery);
            }
            out
        }))
    }

    /// Up to `limit` deliveries of one send after the cursor id.
    pub async fn deliveries_of_batch(
        &self,
        batch: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.deliveries_of_batch)
                .bind(batch)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(delivery!(row).delivery);
            }
            out
        }))
    }

    /// Claims up to `limit` due deliveries for `owner` until `lease_until` (ms).
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_until: i64,
        owner: &str,
        limit: u32,
    ) -> Result<Vec<Claimed>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.claim)
                .bind(now_ms)
                .bind(lease_until)
                .bind(owner)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(delivery!(row));
            }
            out
        }))
    }

    /// Records a claimed delivery's outcome; `false` when the claim was taken over (stale
    /// fence) and nothing was written.
    pub async fn complete(
        &self,
        id: &str,
        fence: i64,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<bool, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query(sql.complete)
                .bind(id)
                .bind(fence)
                .bind(outcome.status.as_str())
                .bind(outcome.error.as_deref())
                .bind(outcome.sent_at)
                .bind(outcome.next_attempt_at)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
                > 0
        }))
    }

    /// Deliveries waiting in the outbox.
    pub async fn outbox_depth(&self) -> Result<u64, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let n: i64 = sqlx::query_scalar(sql.outbox_depth).fetch_one(pool).await?;
            u64::try_from(n).unwrap_or(0)
        }))
    }
}
