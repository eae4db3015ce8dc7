//! User storage: `service_user_master` (accounts) and `service_user_role` (one row per role held).
//! Every write runs in one transaction with its audit row.

use sqlx::Row;

use super::model::{User, UserFilter};
use crate::db::on_pool;
use crate::security::{AuditRecord, Role, audit};
use crate::time::rfc3339;
use crate::{Database, ServiceError};

struct Queries {
    begin: &'static str,
    insert: &'static str,
    insert_role: &'static str,
    delete_roles: &'static str,
    by_id: &'static str,
    by_id_for_update: &'static str,
    by_login: &'static str,
    update: &'static str,
    list: &'static str,
    revoked_since: &'static str,
    audit: &'static str,
}

/// The user columns with the roles folded into one text column.
macro_rules! sqlite_select {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.username, u.email, u.display_name, u.disabled, u.password_hash, \
    u.created_at, u.updated_at, u.token_generation, u.locale, \
    (SELECT group_concat(role, ',') FROM service_user_role r WHERE r.user_id = u.id) AS roles \
    FROM service_user_master u",
            $tail
        )
    };
}

const SQLITE: Queries = Queries {
    begin: "BEGIN IMMEDIATE",
    insert: "INSERT INTO service_user_master (id, username, email, password_hash, display_name, disabled, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    insert_role: "INSERT INTO service_user_role (user_id, role) VALUES (?1, ?2)",
    delete_roles: "DELETE FROM service_user_role WHERE user_id = ?1",
    by_id: sqlite_select!(" WHERE u.id = ?1"),
    by_id_for_update: sqlite_select!(" WHERE u.id = ?1"),
    by_login: sqlite_select!(" WHERE u.username = ?1 OR u.email = ?1"),
    update: "UPDATE service_user_master SET email = ?2, password_hash = ?3, display_name = ?4, disabled = ?5, \
             updated_at = ?6, token_generation = ?7, tokens_revoked_at = COALESCE(?8, tokens_revoked_at), locale = ?9 WHERE id = ?1",
    list: sqlite_select!(
        " WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM service_user_role r2 WHERE r2.user_id = u.id AND r2.role = ?1)) \
         AND (?2 IS NULL OR u.disabled = ?2) \
         AND (?3 IS NULL OR u.username LIKE ?3 ESCAPE '\\' OR u.email LIKE ?3 ESCAPE '\\' \
              OR u.display_name LIKE ?3 ESCAPE '\\') \
         AND (?4 IS NULL OR u.id > ?4) ORDER BY u.id LIMIT ?5"
    ),
    revoked_since: "SELECT id, token_generation, tokens_revoked_at FROM service_user_master WHERE tokens_revoked_at >= ?1",
    audit: audit::INSERT_SQLITE,
};

/// The user columns with the roles folded into one text column.
macro_rules! postgres_select {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.username, u.email, u.display_name, u.disabled, u.password_hash, \
    u.created_at, u.updated_at, u.token_generation, u.locale, \
    (SELECT string_agg(role, ',') FROM service_user_role r WHERE r.user_id = u.id) AS roles \
    FROM service_user_master u",
            $tail
        )
    };
}

const POSTGRES: Queries = Queries {
    begin: "BEGIN",
    insert: "INSERT INTO service_user_master (id, username, email, password_hash, display_name, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    insert_role: "INSERT INTO service_user_role (user_id, role) VALUES ($1, $2)",
    delete_roles: "DELETE FROM service_user_role WHERE user_id = $1",
    by_id: postgres_select!(" WHERE u.id = $1"),
    by_id_for_update: postgres_select!(" WHERE u.id = $1 FOR UPDATE OF u"),
    by_login: postgres_select!(" WHERE u.username = $1 OR u.email = $1"),
    update: "UPDATE service_user_master SET email = $2, password_hash = $3, display_name = $4, disabled = $5, \
             updated_at = $6, token_generation = $7, tokens_revoked_at = COALESCE($8, tokens_revoked_at), locale = $9 WHERE id = $1",
    list: postgres_select!(
        " WHERE ($1::text IS NULL OR EXISTS (SELECT 1 FROM service_user_role r2 WHERE r2.user_id = u.id AND r2.role = $1)) \
         AND ($2::boolean IS NULL OR u.disabled = $2) \
         AND ($3::text IS NULL OR u.username ILIKE $3 ESCAPE '\\' OR u.email ILIKE $3 ESCAPE '\\' \
              OR u.display_name ILIKE $3 ESCAPE '\\') \
         AND ($4::text IS NULL OR u.id > $4) ORDER BY u.id LIMIT $5"
    ),
    revoked_since: "SELECT id, token_generation, tokens_revoked_at FROM service_user_master WHERE tokens_revoked_at >= $1",
    audit: audit::INSERT_POSTGRES,
};

/// A stored user with its password hash (never leaves the service).
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub user: User,
    pub password_hash: String,
    /// The generation its access tokens carry (`revocation.rs`).
    pub generation: u64,
}

/// Whether a change from `before` to `after` must revoke the account's tokens: a new
/// password, a disabled account, or a different set of roles (access tokens carry the roles).
fn revokes(before: &Account, after: &Account) -> bool {
    after.password_hash != before.password_hash
        || (after.user.disabled && !before.user.disabled)
        || after.user.roles != before.user.roles
}

macro_rules! account {
    ($row:expr) => {{
        let roles: Option<String> = $row.try_get("roles")?;
        let created: i64 = $row.try_get("created_at")?;
        let updated: i64 = $row.try_get("updated_at")?;
        let mut roles: Vec<Role> = roles
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .filter_map(|s| Role::parse(s).ok())
            .collect();
        roles.sort();
        Account {
            user: User {
                id: $row.try_get("id")?,
                username: $row.try_get("username")?,
                email: $row.try_get("email")?,
                display_name: $row.try_get("display_name")?,
                roles,
                disabled: $row.try_get("disabled")?,
                locale: $row.try_get("locale")?,
                created_at: rfc3339(created),
                updated_at: rfc3339(updated),
            },
            password_hash: $row.try_get("password_hash")?,
            generation: u64::try_from($row.try_get::<i64, _>("token_generation")?).unwrap_or(0),
        }
    }};
}

/// Maps a unique violation to a conflict that says which field is taken.
fn taken(e: sqlx::Error, username: &str, email: &str) -> ServiceError {
    let which = match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            let m = d.message();
            if m.contains("email") {
                Some(format!("email {email:?} is already registered"))
            } else if m.contains("username") {
                Some(format!("username {username:?} is taken"))
            } else {
                Some(format!("username {username:?} or email {email:?} is taken"))
            }
        }
        _ => None,
    };
    match which {
        Some(message) => ServiceError::Duplicate { message },
        None => e.into(),
    }
}

/// Reads and writes users.
#[derive(Clone, Debug)]
pub(crate) struct UserRepo {
    db: Database,
}

impl UserRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new account with its roles and the audit row of its creation.
    pub async fn insert(
        &self,
        a: &Account,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            sqlx::query(sql.insert)
                .bind(&a.user.id)
                .bind(&a.user.username)
                .bind(&a.user.email)
                .bind(&a.password_hash)
                .bind(&a.user.display_name)
                .bind(a.user.disabled)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, &a.user.username, &a.user.email))?;
            for role in &a.user.roles {
                sqlx::query(sql.insert_role)
                    .bind(&a.user.id)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<Account>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            match sqlx::query(sql.by_id).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(account!(row)),
                None => None,
            }
        }))
    }

    /// The account whose username or email is `login`.
    pub async fn by_login(&self, login: &str) -> Result<Option<Account>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            match sqlx::query(sql.by_login)
                .bind(login)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(account!(row)),
                None => None,
            }
        }))
    }

    /// Reads the account, lets `edit` change it, writes it back with its roles and the audit
    /// row (`audit` gets the user before and after), in one write transaction. A change that
    /// [revokes] the account's tokens raises its token generation in the same transaction.
    /// Returns the account after the change and whether its tokens were revoked.
    pub async fn update<F>(
        &self,
        id: &str,
        at: i64,
        audit: AuditRecord,
        edit: F,
    ) -> Result<(Account, bool), ServiceError>
    where
        F: FnOnce(&mut Account) -> Result<(), ServiceError>,
    {
        let after = on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = sqlx::query(sql.by_id_for_update)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(ServiceError::NotFound {
                    entity: "user",
                    id: id.to_owned(),
                });
            };
            let before = account!(row);
            let mut after = before.clone();
            edit(&mut after)?;
            after.user.roles.sort();
            after.user.roles.dedup();
            after.user.updated_at = rfc3339(at);
            let revoked = revokes(&before, &after);
            if revoked {
                after.generation = before.generation.saturating_add(1);
            }
            sqlx::query(sql.update)
                .bind(&after.user.id)
                .bind(&after.user.email)
                .bind(&after.password_hash)
                .bind(&after.user.display_name)
                .bind(after.user.disabled)
                .bind(at)
                .bind(i64::try_from(after.generation).unwrap_or(i64::MAX))
                .bind(revoked.then_some(at))
                .bind(after.user.locale.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, &after.user.username, &after.user.email))?;
            if after.user.roles != before.user.roles {
                sqlx::query(sql.delete_roles)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                for role in &after.user.roles {
                    sqlx::query(sql.insert_role)
                        .bind(id)
                        .bind(role.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let audit = audit.before(&before.user).after(&after.user);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            (after, revoked)
        });
        Ok(after)
    }

    /// Up to `limit` users matching `filter` with ids after `after`, in id order.
    pub async fn list(
        &self,
        filter: &UserFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, ServiceError> {
        let pattern = filter.query.as_deref().map(crate::db::contains_pattern);
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(filter.role.map(Role::as_str))
                .bind(filter.disabled)
                .bind(pattern.as_deref())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(account!(row).user);
            }
            out
        }))
    }

    /// The accounts whose tokens were revoked at or after `since` (ms): id, generation, when.
    pub async fn revoked_since(&self, since: i64) -> Result<Vec<(String, u64, i64)>, ServiceError> {
        Ok(on_pool!(&self.db, SQLITE, POSTGRES, |pool, sql| {
            let rows = sqlx::query(sql.revoked_since)
                .bind(since)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let generation: i64 = row.try_get("token_generation")?;
                out.push((
                    row.try_get("id")?,
                    u64::try_from(generation).unwrap_or(0),
                    row.try_get("tokens_revoked_at")?,
                ));
            }
            out
        }))
    }
}
