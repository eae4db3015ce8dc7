//! Talent storage: tables `service_talent_profile` (one row per profile, its availability as
//! JSON) and `service_talent_booking`. Each query is written once for both dialects
//! ([`Queries`], see [`crate::sql`]).
//!
//! No double booking: a booking's overlap check and its insert run in one transaction,
//! `BEGIN IMMEDIATE` on SQLite (writers take turns, so the check sees every earlier booking);
//! on Postgres two bookings checked at once could both pass, and the exclusion constraint
//! `service_talent_booking_no_overlap` refuses the second insert (SQLSTATE 23P01), which is
//! the same 409.

use sqlx::Row;

use super::model::{Availability, Booking, BookingSide, BookingStatus, Profile, Visibility};
use crate::db::{on_pool, settle};
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! profile_columns {
    () => {
        "id, user_id, headline, bio, skills, hourly_rate_sku, timezone, visibility, \
         availability, created_at, updated_at"
    };
}

macro_rules! booking_columns {
    () => {
        "b.id, b.talent_id, p.user_id AS talent_user_id, b.client_id, b.start_ms, b.end_ms, \
         b.status, b.note, b.country, b.order_id, b.created_at, b.updated_at \
         FROM service_talent_booking b JOIN service_talent_profile p ON p.id = b.talent_id"
    };
}

portable_sql! {
    /// The SQL of profiles and bookings, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        get: concat!("SELECT ", profile_columns!(), " FROM service_talent_profile WHERE id = $1"),
        get_for_update: concat!("SELECT ", profile_columns!(),
                                " FROM service_talent_profile WHERE id = $1{for_update}"),
        /// A profile being booked: its availability cannot change until the booking is in.
        get_for_share: concat!("SELECT ", profile_columns!(),
                               " FROM service_talent_profile WHERE id = $1{pg: FOR SHARE}"),
        of_user: concat!("SELECT ", profile_columns!(),
                         " FROM service_talent_profile WHERE user_id = $1"),
        insert: "INSERT INTO service_talent_profile \
                 (id, user_id, headline, bio, skills, hourly_rate_sku, timezone, visibility, \
                  availability, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        update: "UPDATE service_talent_profile SET headline = $2, bio = $3, skills = $4, \
                 hourly_rate_sku = $5, timezone = $6, visibility = $7, availability = $8, \
                 updated_at = $9 WHERE id = $1",
        delete: "DELETE FROM service_talent_profile WHERE id = $1",
        /// Public profiles, the viewer's own (`$1`), or all (`$2`); by skill (`$3`: a
        /// `LIKE` pattern of `"tag"` in the JSON array) and text (`$4`).
        list: concat!("SELECT ", profile_columns!(), " FROM service_talent_profile \
                       WHERE (visibility = 'public' OR user_id = $1 OR $2) \
                       AND ($3{text} IS NULL OR skills LIKE $3 ESCAPE '\\') \
                       AND ($4{text} IS NULL OR headline {pg:I}LIKE $4 ESCAPE '\\' \
                            OR bio {pg:I}LIKE $4 ESCAPE '\\') \
                       AND ($5{text} IS NULL OR id > $5) \
                       ORDER BY id LIMIT $6"),
        /// Bookings of talent `$1` that hold time overlapping `[$2, $3)`.
        holding: concat!("SELECT ", booking_columns!(),
                         " WHERE b.talent_id = $1 AND b.status IN ('requested', 'confirmed') \
                          AND b.start_ms < $3 AND b.end_ms > $2 ORDER BY b.start_ms, b.id"),
        count_upcoming: "SELECT COUNT(*) FROM service_talent_booking WHERE talent_id = $1 \
                         AND status IN ('requested', 'confirmed') AND end_ms > $2",
        insert_booking: "INSERT INTO service_talent_booking \
                         (id, talent_id, client_id, start_ms, end_ms, status, note, country, \
                          created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'requested', $6, $8, $7, $7)",
        get_booking: concat!("SELECT ", booking_columns!(), " WHERE b.id = $1"),
        get_booking_for_update: concat!("SELECT ", booking_columns!(),
                                        " WHERE b.id = $1{pg: FOR UPDATE OF b}"),
        set_status: "UPDATE service_talent_booking SET status = $2, updated_at = $3, \
                     order_id = COALESCE($4, order_id) WHERE id = $1",
        of_talent: concat!("SELECT ", booking_columns!(),
                           " WHERE b.talent_id = $1 AND ($2{text} IS NULL OR b.status = $2) \
                            AND ($3{text} IS NULL OR b.id > $3) ORDER BY b.id LIMIT $4"),
        of_client: concat!("SELECT ", booking_columns!(),
                           " WHERE b.client_id = $1 AND ($2{text} IS NULL OR b.status = $2) \
                            AND ($3{text} IS NULL OR b.id > $3) ORDER BY b.id LIMIT $4"),
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

fn corrupt(table: &str, id: &str, what: &str, detail: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(
        format!("{table} {id:?}: {what}: {detail}").into(),
    ))
}

/// A profile as stored, with its times in ms.
#[derive(Debug, Clone)]
pub(crate) struct ProfileRow {
    pub profile: Profile,
}

macro_rules! profile_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let skills: String = row.try_get("skills")?;
        let availability: String = row.try_get("availability")?;
        let visibility: String = row.try_get("visibility")?;
        let created_ms: i64 = row.try_get("created_at")?;
        let updated_ms: i64 = row.try_get("updated_at")?;
        let skills: Vec<String> = serde_json::from_str(&skills)
            .map_err(|e| corrupt("service_talent_profile", &id, "skills", e))?;
        let availability: Availability = serde_json::from_str(&availability)
            .map_err(|e| corrupt("service_talent_profile", &id, "availability", e))?;
        ProfileRow {
            profile: Profile {
                user_id: row.try_get("user_id")?,
                headline: row.try_get("headline")?,
                bio: row.try_get("bio")?,
                skills,
                hourly_rate_sku: row.try_get("hourly_rate_sku")?,
                timezone: row.try_get("timezone")?,
                visibility: Visibility::from_db(&visibility),
                availability,
                created_at: rfc3339(created_ms),
                updated_at: rfc3339(updated_ms),
                id,
            },
        }
    }};
}

/// A booking as stored, with its times in ms.
#[derive(Debug, Clone)]
pub(crate) struct BookingRow {
    pub booking: Booking,
    pub start_ms: i64,
    pub end_ms: i64,
}

macro_rules! booking_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let start_ms: i64 = row.try_get("start_ms")?;
        let end_ms: i64 = row.try_get("end_ms")?;
        let created_ms: i64 = row.try_get("created_at")?;
        let updated_ms: i64 = row.try_get("updated_at")?;
        BookingRow {
            booking: Booking {
                talent_id: row.try_get("talent_id")?,
                talent_user_id: row.try_get("talent_user_id")?,
                client_id: row.try_get("client_id")?,
                start: rfc3339(start_ms),
                end: rfc3339(end_ms),
                status: BookingStatus::parse("status", &status)
                    .map_err(|e| corrupt("service_talent_booking", &id, "status", e))?,
                note: row.try_get("note")?,
                country: row.try_get("country")?,
                order_id: row.try_get("order_id")?,
                created_at: rfc3339(created_ms),
                updated_at: rfc3339(updated_ms),
                id,
            },
            start_ms,
            end_ms,
        }
    }};
}

fn json(v: &impl serde::Serialize) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::Database(sqlx::Error::Encode(Box::new(e))))
}

/// A new booking, checked.
#[derive(Debug, Clone)]
pub(crate) struct BookingInsert {
    pub id: String,
    pub talent_id: String,
    pub client_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub note: Option<String>,
    pub country: Option<String>,
}

/// The 409 of a booking whose time another one holds.
fn overlapping(talent_id: &str, other: Option<&BookingRow>) -> ServiceError {
    let message = match other {
        Some(o) => format!(
            "the time overlaps booking {} ({} to {}, {}) of talent {talent_id}",
            o.booking.id,
            o.booking.start,
            o.booking.end,
            o.booking.status.as_str()
        ),
        None => format!(
            "the time overlaps a requested or confirmed booking of talent {talent_id} \
             (booked at the same moment)"
        ),
    };
    ServiceError::Conflict { message }
}

/// Whether `e` is the exclusion constraint refusing an overlapping booking (Postgres).
fn is_exclusion_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23P01"))
}

#[derive(Clone, Debug)]
pub(crate) struct TalentRepo {
    db: Database,
}

impl TalentRepo {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    /// Inserts `p` (its `created_at` as `now`) with its audit row.
    ///
    /// # Errors
    /// [`ServiceError::Duplicate`] when its user has a profile, database failures.
    pub(crate) async fn create(
        &self,
        p: &Profile,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        let skills = json(&p.skills)?;
        let availability = json(&p.availability)?;
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                if sqlx::query(sql.of_user)
                    .bind(&p.user_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some()
                {
                    return Err(duplicate(&p.user_id));
                }
                sqlx::query(sql.insert)
                    .bind(&p.id)
                    .bind(&p.user_id)
                    .bind(&p.headline)
                    .bind(&p.bio)
                    .bind(&skills)
                    .bind(p.hourly_rate_sku.as_deref())
                    .bind(&p.timezone)
                    .bind(p.visibility.as_str())
                    .bind(&availability)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            not_found("user", &p.user_id)
                        }
                        e => match ServiceError::from(e) {
                            ServiceError::Duplicate { .. } => duplicate(&p.user_id),
                            other => other,
                        },
                    })?;
                audit::insert!(&mut *tx, sql.audit, &audit.after(p));
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(())
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<ProfileRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.get).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(profile_row!(row)),
                None => None,
            }
        }))
    }

    pub(crate) async fn of_user(&self, user_id: &str) -> Result<Option<ProfileRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.of_user)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(profile_row!(row)),
                None => None,
            }
        }))
    }

    /// Replaces profile `id` by what `change` makes of it (it may refuse), at `now`, with its
    /// audit row (before and after).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], what `change` returns, database failures.
    pub(crate) async fn update(
        &self,
        id: &str,
        now: i64,
        audit: AuditRecord,
        change: impl FnOnce(&Profile) -> Result<Profile, ServiceError>,
    ) -> Result<Profile, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = match sqlx::query(sql.get_for_update)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => profile_row!(row).profile,
                    None => return Err(not_found("talent_profile", id)),
                };
                let mut after = change(&before)?;
                after.updated_at = rfc3339(now);
                sqlx::query(sql.update)
                    .bind(id)
                    .bind(&after.headline)
                    .bind(&after.bio)
                    .bind(json(&after.skills)?)
                    .bind(after.hourly_rate_sku.as_deref())
                    .bind(&after.timezone)
                    .bind(after.visibility.as_str())
                    .bind(json(&after.availability)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Deletes profile `id` (and its past bookings) once `allow` accepts it, unless it has
    /// requested or confirmed bookings ending after `now`, with its audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`], what `allow` returns, database
    /// failures.
    pub(crate) async fn delete(
        &self,
        id: &str,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&Profile) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = match sqlx::query(sql.get_for_update)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => profile_row!(row).profile,
                    None => return Err(not_found("talent_profile", id)),
                };
                allow(&before)?;
                let upcoming: i64 = sqlx::query_scalar(sql.count_upcoming)
                    .bind(id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                if upcoming > 0 {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "talent profile {id} has {upcoming} requested or confirmed upcoming \
                             booking(s): cancel or decline them first"
                        ),
                    });
                }
                sqlx::query(sql.delete).bind(id).execute(&mut *tx).await?;
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before));
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(())
    }

    /// Profiles by id after `cursor`: public ones, `viewer`'s own, or every one when `all`;
    /// `skill` and `text` are `LIKE` patterns.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn list(
        &self,
        viewer: Option<&str>,
        all: bool,
        skill: Option<&str>,
        text: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Profile>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(viewer)
                .bind(all)
                .bind(skill)
                .bind(text)
                .bind(cursor)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(profile_row!(row).profile);
            }
            out
        }))
    }

    /// The `[start, end)` ms of the bookings of `talent_id` that hold time overlapping
    /// `[from, to)`.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn holding(
        &self,
        talent_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.holding)
                .bind(talent_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let b = booking_row!(row);
                out.push((b.start_ms, b.end_ms));
            }
            out
        }))
    }

    /// Inserts a `requested` booking at `now` once `allow` accepts its profile (visibility,
    /// availability), if no requested or confirmed booking of the talent overlaps it, with its
    /// audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (no such profile), [`ServiceError::Conflict`] naming the
    /// booking it overlaps, what `allow` returns, database failures.
    pub(crate) async fn book(
        &self,
        b: &BookingInsert,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&ProfileRow) -> Result<(), ServiceError>,
    ) -> Result<Booking, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let profile = match sqlx::query(sql.get_for_share)
                    .bind(&b.talent_id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => profile_row!(row),
                    None => return Err(not_found("talent_profile", &b.talent_id)),
                };
                allow(&profile)?;
                if let Some(row) = sqlx::query(sql.holding)
                    .bind(&b.talent_id)
                    .bind(b.start_ms)
                    .bind(b.end_ms)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    let other = booking_row!(row);
                    return Err(overlapping(&b.talent_id, Some(&other)));
                }
                sqlx::query(sql.insert_booking)
                    .bind(&b.id)
                    .bind(&b.talent_id)
                    .bind(&b.client_id)
                    .bind(b.start_ms)
                    .bind(b.end_ms)
                    .bind(b.note.as_deref())
                    .bind(now)
                    .bind(b.country.as_deref())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if is_exclusion_violation(&e) {
                            overlapping(&b.talent_id, None)
                        } else {
                            ServiceError::from(e)
                        }
                    })?;
                let booking = Booking {
                    id: b.id.clone(),
                    talent_id: b.talent_id.clone(),
                    talent_user_id: profile.profile.user_id.clone(),
                    client_id: b.client_id.clone(),
                    start: rfc3339(b.start_ms),
                    end: rfc3339(b.end_ms),
                    status: BookingStatus::Requested,
                    note: b.note.clone(),
                    country: b.country.clone(),
                    order_id: None,
                    created_at: rfc3339(now),
                    updated_at: rfc3339(now),
                };
                audit::insert!(&mut *tx, sql.audit, &audit.after(&booking));
                Ok(booking)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn get_booking(&self, id: &str) -> Result<Option<BookingRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.get_booking)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(booking_row!(row)),
                None => None,
            }
        }))
    }

    /// Moves booking `id` to `to` at `now` once `allow` accepts it (who may; the transition
    /// itself is checked here), with its audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] naming both states, what `allow`
    /// returns, database failures.
    pub(crate) async fn transition(
        &self,
        id: &str,
        to: BookingStatus,
        order_id: Option<&str>,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&BookingRow) -> Result<(), ServiceError>,
    ) -> Result<Booking, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let row = match sqlx::query(sql.get_booking_for_update)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => booking_row!(row),
                    None => return Err(not_found("talent_booking", id)),
                };
                allow(&row)?;
                let from = row.booking.status;
                if !from.can_become(to) {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "booking {id} is {}: it cannot become {}",
                            from.as_str(),
                            to.as_str()
                        ),
                    });
                }
                sqlx::query(sql.set_status)
                    .bind(id)
                    .bind(to.as_str())
                    .bind(now)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                let before = row.booking;
                let mut after = before.clone();
                after.status = to;
                if let Some(o) = order_id {
                    after.order_id = Some(o.to_owned());
                }
                after.updated_at = rfc3339(now);
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Bookings by id after `cursor`: of the talent `key` or by the client `key`.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn bookings(
        &self,
        side: BookingSide,
        key: &str,
        status: Option<BookingStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Booking>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let query = match side {
                BookingSide::Talent => sql.of_talent,
                BookingSide::Client => sql.of_client,
            };
            let rows = sqlx::query(query)
                .bind(key)
                .bind(status.map(BookingStatus::as_str))
                .bind(cursor)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(booking_row!(row).booking);
            }
            out
        }))
    }
}

fn duplicate(user_id: &str) -> ServiceError {
    ServiceError::Duplicate {
        message: format!("user {user_id} already has a talent profile"),
    }
}

pub(crate) fn not_found(entity: &'static str, id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity,
        id: id.to_owned(),
    }
}
