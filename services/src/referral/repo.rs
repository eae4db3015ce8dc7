//! Referral storage: tables `service_referral_code` and `service_referral_referral`, each
//! query written once for both dialects ([`Queries`], see [`crate::sql`]).
//!
//! A sign-up's fraud counts (sign-ups of the code in the last hour, the referrer's referrals
//! in the campaign, other referees of the referrer's codes in the campaign from the same
//! address or device) and its insert run in one transaction that holds the rows of every code
//! the referrer has in that campaign (`FOR UPDATE` in code order on Postgres,
//! `BEGIN IMMEDIATE` on SQLite): two sign-ups with codes of one referrer and campaign are
//! counted one after the other.
//!
//! Status changes are conditional updates (`... WHERE status = 'held'`) whose changed-row
//! count says whether this call made the change: of concurrent triggers, one wins.

use sqlx::Row;

use super::model::{
    Code, HoldReason, Referral, ReferralFilter, ReferralStatus, Reward, RewardOn, Stats,
};
use crate::db::{on_pool, settle};
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! code_columns {
    () => {
        "code, owner_id, campaign_id, active, owner_addr, owner_device, created_at, updated_at \
         FROM service_referral_code"
    };
}

macro_rules! referral_columns {
    () => {
        "id, code, referrer_id, referee_id, campaign_id, status, reasons, reward_amount, \
         reward_currency, reward_on, converted_at, reward_movement, decided_by, decision_note, \
         created_at, updated_at FROM service_referral_referral"
    };
}

macro_rules! stats_columns {
    () => {
        "SELECT COUNT(*) AS signups, \
         COALESCE(SUM(CASE WHEN converted_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS converted, \
         COALESCE(SUM(CASE WHEN status = 'rewarded' THEN 1 ELSE 0 END), 0) AS rewarded, \
         COALESCE(SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END), 0) AS held, \
         COALESCE(SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END), 0) AS rejected, \
         COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
         COALESCE(SUM(CASE WHEN status = 'attributed' THEN 1 ELSE 0 END), 0) AS attributed \
         FROM service_referral_referral"
    };
}

portable_sql! {
    /// The SQL of codes and referrals, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        insert_code: "INSERT INTO service_referral_code \
                      (code, owner_id, campaign_id, active, owner_addr, owner_device, created_at, \
                       updated_at) VALUES ($1, $2, $3, TRUE, $4, $5, $6, $6)",
        code: concat!("SELECT ", code_columns!(), " WHERE code = $1"),
        code_for_update: concat!("SELECT ", code_columns!(), " WHERE code = $1{for_update}"),
        /// Every code of owner `$1` in campaign `$2` (global ones when NULL), locked in code
        /// order: sign-ups with any of them are counted one after the other.
        lock_owner_codes: concat!("SELECT ", code_columns!(), " WHERE owner_id = $1 \
                           AND (campaign_id = $2 OR (campaign_id IS NULL AND $2{text} IS NULL)) \
                           ORDER BY code{for_update}"),
        codes: concat!("SELECT ", code_columns!(),
                       " WHERE ($1{text} IS NULL OR owner_id = $1) \
                        AND ($2{text} IS NULL OR campaign_id = $2) \
                        AND ($3{text} IS NULL OR code > $3) ORDER BY code LIMIT $4"),
        deactivate: "UPDATE service_referral_code SET active = FALSE, updated_at = $2 \
                     WHERE code = $1",
        recent_signups: "SELECT COUNT(*) FROM service_referral_referral \
                         WHERE code = $1 AND created_at > $2",
        referrals_in_campaign: "SELECT COUNT(*) FROM service_referral_referral \
                                WHERE referrer_id = $1 AND campaign_id = $2 \
                                AND status <> 'rejected'",
        /// Referees of referrer `$1`'s codes in campaign `$2` from address `$3`.
        same_addr: "SELECT COUNT(*) FROM service_referral_referral \
                    WHERE referrer_id = $1 \
                    AND (campaign_id = $2 OR (campaign_id IS NULL AND $2{text} IS NULL)) \
                    AND referee_addr = $3",
        same_device: "SELECT COUNT(*) FROM service_referral_referral \
                      WHERE referrer_id = $1 \
                      AND (campaign_id = $2 OR (campaign_id IS NULL AND $2{text} IS NULL)) \
                      AND referee_device = $3",
        insert_referral: "INSERT INTO service_referral_referral \
                          (id, code, referrer_id, referee_id, campaign_id, status, reasons, \
                           referee_addr, referee_device, reward_amount, reward_currency, \
                           reward_on, converted_at, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                                  $14, $14)",
        referral: concat!("SELECT ", referral_columns!(), " WHERE id = $1"),
        of_referee: concat!("SELECT ", referral_columns!(), " WHERE referee_id = $1"),
        referrals: concat!("SELECT ", referral_columns!(),
                           " WHERE ($1{text} IS NULL OR referrer_id = $1) \
                            AND ($2{text} IS NULL OR code = $2) \
                            AND ($3{text} IS NULL OR campaign_id = $3) \
                            AND ($4{text} IS NULL OR status = $4) \
                            AND ($5{text} IS NULL OR id > $5) ORDER BY id LIMIT $6"),
        /// A held referral approved: it waits for (or meets) its condition.
        approve: "UPDATE service_referral_referral SET status = 'pending', decided_by = $2, \
                  decision_note = $3, updated_at = $4 WHERE id = $1 AND status = 'held'",
        reject: "UPDATE service_referral_referral SET status = 'rejected', decided_by = $2, \
                 decision_note = $3, updated_at = $4 WHERE id = $1 AND status = 'held'",
        convert: "UPDATE service_referral_referral SET converted_at = $2, updated_at = $2 \
                  WHERE referee_id = $1 AND converted_at IS NULL",
        rewarded: "UPDATE service_referral_referral SET status = 'rewarded', \
                   reward_movement = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
        code_stats: concat!(stats_columns!(), " WHERE code = $1"),
        campaign_stats: concat!(stats_columns!(), " WHERE campaign_id = $1"),
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

fn corrupt(table: &str, id: &str, what: &str, detail: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(
        format!("{table} {id:?}: {what}: {detail}").into(),
    ))
}

pub(crate) fn not_found(entity: &'static str, id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity,
        id: id.to_owned(),
    }
}

/// A code as stored, with where its owner created it from.
#[derive(Debug, Clone)]
pub(crate) struct CodeRow {
    pub code: Code,
    pub owner_addr: Option<String>,
    pub owner_device: Option<String>,
}

macro_rules! code_row {
    ($row:expr) => {{
        let row = &$row;
        let created_ms: i64 = row.try_get("created_at")?;
        let updated_ms: i64 = row.try_get("updated_at")?;
        CodeRow {
            code: Code {
                code: row.try_get("code")?,
                owner_id: row.try_get("owner_id")?,
                campaign_id: row.try_get("campaign_id")?,
                active: row.try_get("active")?,
                created_at: rfc3339(created_ms),
                updated_at: rfc3339(updated_ms),
            },
            owner_addr: row.try_get("owner_addr")?,
            owner_device: row.try_get("owner_device")?,
        }
    }};
}

macro_rules! referral_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let reasons: String = row.try_get("reasons")?;
        let amount: Option<i64> = row.try_get("reward_amount")?;
        let currency: Option<String> = row.try_get("reward_currency")?;
        let reward_on: Option<String> = row.try_get("reward_on")?;
        let converted: Option<i64> = row.try_get("converted_at")?;
        let created_ms: i64 = row.try_get("created_at")?;
        let updated_ms: i64 = row.try_get("updated_at")?;
        let table = "service_referral_referral";
        Referral {
            code: row.try_get("code")?,
            referrer_id: row.try_get("referrer_id")?,
            referee_id: row.try_get("referee_id")?,
            campaign_id: row.try_get("campaign_id")?,
            status: ReferralStatus::parse("status", &status)
                .map_err(|e| corrupt(table, &id, "status", e))?,
            reasons: serde_json::from_str::<Vec<HoldReason>>(&reasons)
                .map_err(|e| corrupt(table, &id, "reasons", e))?,
            reward: match (amount, currency) {
                (Some(amount), Some(currency)) => Some(Reward { amount, currency }),
                _ => None,
            },
            reward_on: reward_on
                .map(|s| RewardOn::parse("reward_on", &s))
                .transpose()
                .map_err(|e| corrupt(table, &id, "reward_on", e))?,
            converted_at: converted.map(rfc3339),
            reward_movement: row.try_get("reward_movement")?,
            decided_by: row.try_get("decided_by")?,
            decision_note: row.try_get("decision_note")?,
            created_at: rfc3339(created_ms),
            updated_at: rfc3339(updated_ms),
            id,
        }
    }};
}

macro_rules! stats_row {
    ($row:expr) => {{
        let row = &$row;
        Stats {
            signups: row.try_get("signups")?,
            converted: row.try_get("converted")?,
            rewarded: row.try_get("rewarded")?,
            held: row.try_get("held")?,
            rejected: row.try_get("rejected")?,
            pending: row.try_get("pending")?,
            attributed: row.try_get("attributed")?,
        }
    }};
}

/// What a sign-up brings to the fraud checks that need the stored referrals.
#[derive(Debug, Clone)]
pub(crate) struct SignUp {
    pub id: String,
    pub code: String,
    pub referee_id: String,
    pub referee_addr: Option<String>,
    pub referee_device: Option<String>,
    pub now: i64,
}

/// The counts the stored fraud rules read, under the code's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    /// Sign-ups with the code in the last hour (before this one).
    pub last_hour: i64,
    /// The referrer's referrals in the code's campaign that were not rejected.
    pub in_campaign: i64,
    /// Other referees of the referrer's codes in the campaign from the same address / device.
    pub same_addr: i64,
    pub same_device: i64,
}

/// What a sign-up's row is made of once the checks decided.
#[derive(Debug, Clone)]
pub(crate) struct Decided {
    pub status: ReferralStatus,
    pub reasons: Vec<HoldReason>,
    pub reward: Option<Reward>,
    pub reward_on: Option<RewardOn>,
    pub converted_at: Option<i64>,
}

/// A conditional status change of a referral (see `ReferralRepo::change`).
#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    /// `held` → `pending` (approve) or `rejected`, with who decided and why.
    Decide {
        approve: bool,
        by: &'a str,
        note: Option<&'a str>,
    },
    /// The referee's first paid order: `converted_at` set once.
    Convert,
    /// `pending` → `rewarded` by the ledger movement.
    Rewarded { movement: &'a str },
}

const HOUR_MS: i64 = 3_600_000;

fn json(v: &impl serde::Serialize) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::Database(sqlx::Error::Encode(Box::new(e))))
}

#[derive(Clone, Debug)]
pub(crate) struct ReferralRepo {
    db: Database,
}

impl ReferralRepo {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    /// Inserts `c` with its audit row.
    ///
    /// # Errors
    /// [`ServiceError::Duplicate`] for a code taken, database failures.
    pub(crate) async fn create_code(
        &self,
        c: &CodeRow,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                sqlx::query(sql.insert_code)
                    .bind(&c.code.code)
                    .bind(&c.code.owner_id)
                    .bind(c.code.campaign_id.as_deref())
                    .bind(c.owner_addr.as_deref())
                    .bind(c.owner_device.as_deref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match ServiceError::from(e) {
                        ServiceError::Duplicate { .. } => ServiceError::Duplicate {
                            message: format!("referral code {} is taken", c.code.code),
                        },
                        other => other,
                    })?;
                audit::insert!(&mut *tx, sql.audit, &audit.after(&c.code));
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(())
    }

    pub(crate) async fn code(&self, code: &str) -> Result<Option<CodeRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.code)
                .bind(code)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(code_row!(row)),
                None => None,
            }
        }))
    }

    /// Codes by code, of `owner` and/or `campaign`, after `cursor`; `limit + 1` rows.
    pub(crate) async fn codes(
        &self,
        owner: Option<&str>,
        campaign: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Code>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.codes)
                .bind(owner)
                .bind(campaign)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(code_row!(row).code);
            }
            out
        }))
    }

    /// Deactivates `code` (`check` may refuse first) with its audit row; a code already
    /// inactive stays as it is.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], what `check` returns, database failures.
    pub(crate) async fn deactivate(
        &self,
        code: &str,
        now: i64,
        audit: AuditRecord,
        check: impl FnOnce(&Code) -> Result<(), ServiceError>,
    ) -> Result<Code, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = match sqlx::query(sql.code_for_update)
                    .bind(code)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => code_row!(row).code,
                    None => return Err(not_found("referral_code", code)),
                };
                check(&before)?;
                if !before.active {
                    return Ok(before);
                }
                sqlx::query(sql.deactivate)
                    .bind(code)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let mut after = before.clone();
                after.active = false;
                after.updated_at = rfc3339(now);
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Records sign-up `s` with its code: under the code's lock, counts what the stored fraud
    /// rules read and lets `decide` make the row of it (`decide` also refuses a code that is
    /// gone or inactive), writes it with its audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for a code that is gone, what `decide` returns,
    /// [`ServiceError::Duplicate`] for a referee referred before, database failures.
    pub(crate) async fn attribute(
        &self,
        s: &SignUp,
        audit: AuditRecord,
        decide: impl FnOnce(&CodeRow, Counts) -> Result<Decided, ServiceError>,
    ) -> Result<Referral, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                // The owner's codes of the campaign are locked in code order (so that two
                // sign-ups with two of them cannot deadlock); this one is read under the lock.
                let first = match sqlx::query(sql.code)
                    .bind(&s.code)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => code_row!(row),
                    None => return Err(not_found("referral_code", &s.code)),
                };
                let mut code = None;
                for row in sqlx::query(sql.lock_owner_codes)
                    .bind(&first.code.owner_id)
                    .bind(first.code.campaign_id.as_deref())
                    .fetch_all(&mut *tx)
                    .await?
                {
                    let c = code_row!(row);
                    if c.code.code == s.code {
                        code = Some(c);
                    }
                }
                let Some(code) = code else {
                    return Err(not_found("referral_code", &s.code));
                };
                let campaign_id = code.code.campaign_id.as_deref();
                let last_hour: i64 = sqlx::query_scalar(sql.recent_signups)
                    .bind(&s.code)
                    .bind(s.now - HOUR_MS)
                    .fetch_one(&mut *tx)
                    .await?;
                let in_campaign: i64 = match campaign_id {
                    Some(c) => {
                        sqlx::query_scalar(sql.referrals_in_campaign)
                            .bind(&code.code.owner_id)
                            .bind(c)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                    None => 0,
                };
                let same_addr: i64 = match s.referee_addr.as_deref() {
                    Some(a) => {
                        sqlx::query_scalar(sql.same_addr)
                            .bind(&code.code.owner_id)
                            .bind(campaign_id)
                            .bind(a)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                    None => 0,
                };
                let same_device: i64 = match s.referee_device.as_deref() {
                    Some(d) => {
                        sqlx::query_scalar(sql.same_device)
                            .bind(&code.code.owner_id)
                            .bind(campaign_id)
                            .bind(d)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                    None => 0,
                };
                let d = decide(
                    &code,
                    Counts {
                        last_hour,
                        in_campaign,
                        same_addr,
                        same_device,
                    },
                )?;
                sqlx::query(sql.insert_referral)
                    .bind(&s.id)
                    .bind(&s.code)
                    .bind(&code.code.owner_id)
                    .bind(&s.referee_id)
                    .bind(campaign_id)
                    .bind(d.status.as_str())
                    .bind(json(&d.reasons)?)
                    .bind(s.referee_addr.as_deref())
                    .bind(s.referee_device.as_deref())
                    .bind(d.reward.as_ref().map(|r| r.amount))
                    .bind(d.reward.as_ref().map(|r| r.currency.as_str()))
                    .bind(d.reward_on.map(RewardOn::as_str))
                    .bind(d.converted_at)
                    .bind(s.now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match ServiceError::from(e) {
                        ServiceError::Duplicate { .. } => ServiceError::Duplicate {
                            message: format!("user {} was referred before", s.referee_id),
                        },
                        other => other,
                    })?;
                let r = match sqlx::query(sql.referral)
                    .bind(&s.id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => referral_row!(row),
                    None => return Err(not_found("referral", &s.id)),
                };
                let mut row = audit.clone();
                row.entity_id.clone_from(&r.id);
                audit::insert!(&mut *tx, sql.audit, &row.after(&r));
                Ok(r)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn referral(&self, id: &str) -> Result<Option<Referral>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.referral)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(referral_row!(row)),
                None => None,
            }
        }))
    }

    /// Referrals by id matching `f`, after `cursor`; `limit + 1` rows.
    pub(crate) async fn referrals(
        &self,
        f: &ReferralFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Referral>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.referrals)
                .bind(f.referrer_id.as_deref())
                .bind(f.code.as_deref())
                .bind(f.campaign_id.as_deref())
                .bind(f.status.map(ReferralStatus::as_str))
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(referral_row!(row));
            }
            out
        }))
    }

    /// A reviewer's decision on held referral `id`: `approve` makes it pending, otherwise
    /// rejected; with the note and its audit row. Returns it and whether this call decided.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], database failures.
    pub(crate) async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        note: Option<&str>,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(Referral, bool), ServiceError> {
        let change = Change::Decide { approve, by, note };
        self.change(id, change, now, audit)
            .await?
            .ok_or_else(|| not_found("referral", id))
    }

    /// Marks the referral of `referee` converted at `now` (its first paid order); returns it
    /// and whether this call converted it. `None`: the user was not referred.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn convert(
        &self,
        referee: &str,
        now: i64,
        audit: AuditRecord,
    ) -> Result<Option<(Referral, bool)>, ServiceError> {
        self.change(referee, Change::Convert, now, audit).await
    }

    /// Marks pending referral `id` rewarded by `movement`; returns it and whether this call
    /// marked it.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], database failures.
    pub(crate) async fn rewarded(
        &self,
        id: &str,
        movement: &str,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(Referral, bool), ServiceError> {
        self.change(id, Change::Rewarded { movement }, now, audit)
            .await?
            .ok_or_else(|| not_found("referral", id))
    }

    /// Applies `change` to the referral `key` names (its id; the referee's id for
    /// [`Change::Convert`]) with a conditional update, and reads it back in the same
    /// transaction; the audit row is written only when this call changed it. `None`: no such
    /// referral.
    async fn change(
        &self,
        key: &str,
        change: Change<'_>,
        now: i64,
        audit: AuditRecord,
    ) -> Result<Option<(Referral, bool)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let update = match change {
                    Change::Decide { approve, by, note } => {
                        sqlx::query(if approve { sql.approve } else { sql.reject })
                            .bind(key)
                            .bind(by)
                            .bind(note)
                            .bind(now)
                    }
                    Change::Convert => sqlx::query(sql.convert).bind(key).bind(now),
                    Change::Rewarded { movement } => {
                        sqlx::query(sql.rewarded).bind(key).bind(movement).bind(now)
                    }
                };
                let changed = update.execute(&mut *tx).await?.rows_affected() == 1;
                let read = match change {
                    Change::Convert => sql.of_referee,
                    _ => sql.referral,
                };
                let Some(row) = sqlx::query(read).bind(key).fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let r = referral_row!(row);
                if changed {
                    let mut record = audit.clone();
                    record.entity_id.clone_from(&r.id);
                    audit::insert!(&mut *tx, sql.audit, &record.after(&r));
                }
                Ok(Some((r, changed)))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn code_stats(&self, code: &str) -> Result<Stats, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let row = sqlx::query(sql.code_stats)
                .bind(code)
                .fetch_one(pool)
                .await?;
            stats_row!(row)
        }))
    }

    pub(crate) async fn campaign_stats(&self, campaign: &str) -> Result<Stats, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let row = sqlx::query(sql.campaign_stats)
                .bind(campaign)
                .fetch_one(pool)
                .await?;
            stats_row!(row)
        }))
    }
}
