//! Job storage: tables `service_scheduler_job` (one row per job, with its lease) and
//! `service_scheduler_run` (one row per run). Each query is written once for both dialects
//! ([`Queries`], see [`crate::sql`]).
//!
//! Claims: [`SchedulerRepo::claim`] selects due rows in one transaction, `FOR UPDATE SKIP
//! LOCKED` on Postgres (concurrent claimers take disjoint rows and never wait on each other),
//! `BEGIN IMMEDIATE` on SQLite (claimers take turns), and leases each row to the node:
//! `lease_owner`, `lease_until`, and `fence` incremented. A completion is accepted only while
//! the row's `fence` is still the claim's, so a node whose lease expired and was taken over
//! cannot overwrite the newer run.

use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use super::model::{
    self, Job, JobFilter, JobRun, JobSpec, JobStatus, Owner, PlannedJob, RegisterResult,
    RunOutcome, Trigger,
};
use crate::db::{on_pool, settle};
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! job_columns {
    () => {
        "id, entity_type, entity_id, name, kind, payload{text} AS payload, spec{text} AS spec, \
         at_ms, cron, timezone, skip_missed, max_attempts, status, next_run_at, attempts, \
         last_run_at, last_outcome, last_error, lease_owner, lease_until, fence, created_at, \
         updated_at"
    };
}

macro_rules! run_columns {
    () => {
        "id, job_id, attempt, due_at, started_at, finished_at, outcome, error, node"
    };
}

portable_sql! {
    /// The SQL of jobs and runs, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        get: concat!("SELECT ", job_columns!(), " FROM service_scheduler_job WHERE id = $1"),
        get_for_update: concat!("SELECT ", job_columns!(),
                                " FROM service_scheduler_job WHERE id = $1{for_update}"),
        of_owner: concat!("SELECT ", job_columns!(), " FROM service_scheduler_job \
                           WHERE entity_type = $1 AND entity_id = $2 ORDER BY name"),
        of_owner_for_update: concat!("SELECT ", job_columns!(), " FROM service_scheduler_job \
                                      WHERE entity_type = $1 AND entity_id = $2 \
                                      ORDER BY name{for_update}"),
        insert: "INSERT INTO service_scheduler_job \
                 (id, entity_type, entity_id, name, kind, payload, spec, at_ms, cron, timezone, \
                  skip_missed, max_attempts, status, next_run_at, attempts, fence, created_at, \
                  updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6{jsonb}, $7{jsonb}, $8, $9, $10, $11, $12, \
                         'active', $13, 0, 0, $14, $14)",
        update_spec: "UPDATE service_scheduler_job SET kind = $2, payload = $3{jsonb}, \
                      spec = $4{jsonb}, skip_missed = $5, max_attempts = $6, updated_at = $7 \
                      WHERE id = $1",
        /// A new time: due then, from its first attempt; done and failed jobs are active
        /// again, paused ones stay paused.
        reschedule: "UPDATE service_scheduler_job SET at_ms = $2, cron = $3, timezone = $4, \
                     next_run_at = $5, attempts = 0, \
                     status = CASE WHEN status = 'paused' THEN 'paused' ELSE 'active' END, \
                     updated_at = $6 WHERE id = $1",
        delete: "DELETE FROM service_scheduler_job WHERE id = $1",
        list: concat!("SELECT ", job_columns!(), " FROM service_scheduler_job \
                       WHERE ($1{text} IS NULL OR entity_type = $1) \
                       AND ($2{text} IS NULL OR entity_id = $2) \
                       AND ($3{text} IS NULL OR status = $3) \
                       AND ($4{text} IS NULL OR kind = $4) \
                       AND ($5{text} IS NULL OR id > $5) \
                       ORDER BY id LIMIT $6"),
        count_due: "SELECT COUNT(*) FROM service_scheduler_job \
                    WHERE status = 'active' AND next_run_at <= $1",
        /// Due rows nobody holds a live lease on, oldest first; on Postgres locked for this
        /// transaction, rows locked by another claimer skipped.
        due: concat!("SELECT ", job_columns!(), " FROM service_scheduler_job \
                      WHERE status = 'active' AND next_run_at <= $1 \
                      AND (lease_until IS NULL OR lease_until < $1) \
                      ORDER BY next_run_at, id LIMIT $2{pg: FOR UPDATE SKIP LOCKED}"),
        lease: "UPDATE service_scheduler_job SET lease_owner = $2, lease_until = $3, \
                fence = fence + 1, attempts = $4, updated_at = $5 WHERE id = $1",
        /// The runs of a node whose lease expired: they end as failed.
        abandon_runs: "UPDATE service_scheduler_run SET outcome = 'failed', finished_at = $2, \
                       error = $3 WHERE job_id = $1 AND outcome = 'running'",
        insert_run: "INSERT INTO service_scheduler_run \
                     (id, job_id, attempt, fence, due_at, started_at, finished_at, outcome, \
                      error, node) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        skip: "UPDATE service_scheduler_job SET status = $2, next_run_at = $3, \
               last_outcome = 'skipped', attempts = 0, updated_at = $4 WHERE id = $1",
        finish: "UPDATE service_scheduler_job SET status = $2, next_run_at = $3, attempts = $4, \
                 last_run_at = $5, last_outcome = $6, last_error = $7, lease_owner = NULL, \
                 lease_until = NULL, updated_at = $8 WHERE id = $1 AND fence = $9",
        finish_run: "UPDATE service_scheduler_run SET finished_at = $2, outcome = $3, error = $4 \
                     WHERE id = $1 AND outcome = 'running'",
        set_state: "UPDATE service_scheduler_job SET status = $2, next_run_at = $3, \
                    attempts = $4, updated_at = $5 WHERE id = $1",
        runs: concat!("SELECT ", run_columns!(), " FROM service_scheduler_run \
                       WHERE job_id = $1 AND ($2{text} IS NULL OR id < $2) \
                       ORDER BY id DESC LIMIT $3"),
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

/// A job row as stored (times in ms).
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    id: String,
    entity_type: String,
    entity_id: String,
    name: String,
    kind: String,
    payload: Value,
    spec: JobSpec,
    at_ms: Option<i64>,
    cron: Option<String>,
    timezone: Option<String>,
    skip_missed: bool,
    max_attempts: i64,
    status: JobStatus,
    next_run_at: Option<i64>,
    attempts: i64,
    last_run_at: Option<i64>,
    last_outcome: Option<RunOutcome>,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    fence: i64,
    created_at: i64,
    updated_at: i64,
}

fn corrupt(what: &str, id: &str, detail: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(
        format!("service_scheduler_job {id:?}: {what}: {detail}").into(),
    ))
}

macro_rules! job_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let payload: String = row.try_get("payload")?;
        let spec: String = row.try_get("spec")?;
        let status: String = row.try_get("status")?;
        let last_outcome: Option<String> = row.try_get("last_outcome")?;
        JobRow {
            entity_type: row.try_get("entity_type")?,
            entity_id: row.try_get("entity_id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", &id, e))?,
            spec: serde_json::from_str(&spec).map_err(|e| corrupt("spec", &id, e))?,
            at_ms: row.try_get("at_ms")?,
            cron: row.try_get("cron")?,
            timezone: row.try_get("timezone")?,
            skip_missed: row.try_get("skip_missed")?,
            max_attempts: row.try_get("max_attempts")?,
            status: JobStatus::parse("status", &status).map_err(|e| corrupt("status", &id, e))?,
            next_run_at: row.try_get("next_run_at")?,
            attempts: row.try_get("attempts")?,
            last_run_at: row.try_get("last_run_at")?,
            last_outcome: match last_outcome {
                Some(o) => {
                    Some(RunOutcome::parse(&o).ok_or_else(|| corrupt("last_outcome", &id, &o))?)
                }
                None => None,
            },
            last_error: row.try_get("last_error")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until: row.try_get("lease_until")?,
            fence: row.try_get("fence")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            id,
        }
    }};
}

macro_rules! run_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let outcome: String = row.try_get("outcome")?;
        let attempt: i64 = row.try_get("attempt")?;
        let finished_at: Option<i64> = row.try_get("finished_at")?;
        JobRun {
            job_id: row.try_get("job_id")?,
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            due_at: rfc3339(row.try_get("due_at")?),
            started_at: rfc3339(row.try_get("started_at")?),
            finished_at: finished_at.map(rfc3339),
            outcome: RunOutcome::parse(&outcome)
                .ok_or_else(|| corrupt("run outcome", &id, &outcome))?,
            error: row.try_get("error")?,
            node: row.try_get("node")?,
            id,
        }
    }};
}

impl JobRow {
    /// The record callers see.
    pub(crate) fn job(&self) -> Job {
        Job {
            id: self.id.clone(),
            entity_type: self.entity_type.clone(),
            entity_id: self.entity_id.clone(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            spec: self.spec.clone(),
            at: self.at_ms.map(rfc3339),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            skip_missed: self.skip_missed,
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(u32::MAX),
            status: self.status,
            next_run_at: self.next_run_at.map(rfc3339),
            last_run_at: self.last_run_at.map(rfc3339),
            last_outcome: self.last_outcome,
            last_error: self.last_error.clone(),
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            lease_owner: self.lease_owner.clone(),
            lease_until: self.lease_until.map(rfc3339),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    fn trigger(&self) -> Result<Trigger, String> {
        match (self.at_ms, &self.cron, &self.timezone) {
            (Some(at_ms), None, _) => Ok(Trigger::Once { at_ms }),
            (None, Some(cron), tz) => Ok(Trigger::Cron {
                cron: cron.clone(),
                timezone: tz.clone().unwrap_or_else(|| "UTC".to_owned()),
            }),
            _ => Err(format!("job {:?} has neither a time nor a cron", self.id)),
        }
    }

    /// The columns that say when it runs.
    fn when(&self) -> (Option<i64>, Option<&str>, Option<&str>) {
        (self.at_ms, self.cron.as_deref(), self.timezone.as_deref())
    }

    /// Whether someone holds a lease on it at `now`.
    pub(crate) fn leased_at(&self, now: i64) -> bool {
        self.lease_until.is_some_and(|until| until >= now)
    }

    pub(crate) fn status(&self) -> JobStatus {
        self.status
    }

    pub(crate) fn attempts(&self) -> i64 {
        self.attempts
    }

    pub(crate) fn next_run_at(&self) -> Option<i64> {
        self.next_run_at
    }

    pub(crate) fn lease_owner(&self) -> Option<&str> {
        self.lease_owner.as_deref()
    }
}

fn when_of(trigger: &Trigger) -> (Option<i64>, Option<&str>, Option<&str>) {
    match trigger {
        Trigger::Once { at_ms } => (Some(*at_ms), None, None),
        Trigger::Cron { cron, timezone } => (None, Some(cron), Some(timezone)),
    }
}

/// A job leased to a node for one run.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job as claimed (`next_run_at`: the time this run was due).
    pub job: Job,
    /// The run row this claim writes.
    pub run_id: String,
    /// 1 for the first attempt of this occurrence.
    pub attempt: u32,
    /// The fencing token: the job's `fence` after this claim.
    pub fence: i64,
    /// The node the job is leased to.
    pub node: String,
    pub(crate) due_ms: i64,
    pub(crate) started_ms: i64,
}

/// What one claim pass did.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The jobs leased to this node, to run now.
    pub claims: Vec<Claim>,
    /// Missed occurrences of `skip_missed` jobs, recorded as skipped runs.
    pub skipped: u32,
    /// Runs of other nodes whose lease had expired, ended as failed.
    pub expired: u32,
    /// Jobs whose expired run was their last allowed attempt: now `failed`.
    pub given_up: u32,
}

impl Claimed {
    /// How many due rows the pass took (a full batch: more may be due).
    pub fn taken(&self) -> usize {
        self.claims.len() + self.skipped as usize + self.given_up as usize
    }
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The run's outcome is recorded; the job as it is now.
    Recorded(Box<Job>),
    /// Refused: another node has claimed the job since (this node's lease expired), or the
    /// job is gone. Nothing was written.
    Fenced,
}

/// How a claim treats late and abandoned jobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRules {
    pub lease: Duration,
    pub missed_after: Duration,
    pub limit: u32,
}

/// How a failed run is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryRules {
    pub min: Duration,
    pub max: Duration,
    /// 0–1: the random part of the back-off taken off.
    pub jitter: f64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What to do with a due row a claim found.
enum Due {
    /// Lease it and run it (`attempts`: the failed attempts so far).
    Run { attempts: i64 },
    /// A missed occurrence of a `skip_missed` job: record it skipped; the job becomes
    /// `status`, due next at `next`.
    Skip {
        status: JobStatus,
        next: Option<i64>,
        why: String,
    },
    /// A node died running it for the last allowed attempt: the job has failed.
    GiveUp { attempts: i64 },
}

/// Decides what a claim at `now` does with the due row `row`.
fn triage(row: &JobRow, now: i64, missed_after: Duration) -> Due {
    let due = row.next_run_at.unwrap_or(now);
    if row.lease_owner.is_some() {
        // Its node's lease expired mid-run: that attempt counts as failed.
        let attempts = row.attempts + 1;
        return if attempts >= row.max_attempts {
            Due::GiveUp { attempts }
        } else {
            Due::Run { attempts }
        };
    }
    if row.attempts > 0 || !row.skip_missed {
        // A retry, or a job that runs once however late it is.
        return Due::Run {
            attempts: row.attempts,
        };
    }
    match row.trigger() {
        Ok(Trigger::Cron { cron, timezone }) => {
            // Missed: the occurrence after this one has come too.
            match model::next_occurrence(&cron, &timezone, due) {
                Ok(after) if after <= now => {
                    let next = model::next_occurrence(&cron, &timezone, now).ok();
                    Due::Skip {
                        status: if next.is_some() {
                            JobStatus::Active
                        } else {
                            JobStatus::Done
                        },
                        next,
                        why: format!(
                            "missed: due at {}, and the next occurrence at {} had come too",
                            rfc3339(due),
                            rfc3339(after)
                        ),
                    }
                }
                _ => Due::Run { attempts: 0 },
            }
        }
        Ok(Trigger::Once { .. }) if now.saturating_sub(due) > ms(missed_after) => Due::Skip {
            status: JobStatus::Done,
            next: None,
            why: format!(
                "missed: due at {}, more than {} ago",
                rfc3339(due),
                humantime::format_duration(missed_after)
            ),
        },
        _ => Due::Run { attempts: 0 },
    }
}

/// Reads and writes jobs and runs.
#[derive(Clone, Debug)]
pub struct SchedulerRepo {
    db: Database,
}

impl SchedulerRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The job `id`.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<JobRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.get).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(job_row!(row)),
                None => None,
            }
        }))
    }

    /// The jobs of `owner`, by name.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn of_owner(&self, owner: &Owner) -> Result<Vec<Job>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.of_owner)
                .bind(&owner.entity_type)
                .bind(&owner.entity_id)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(job_row!(row).job());
            }
            out
        }))
    }

    /// Makes `jobs` the jobs of `owner`, in one transaction with its audit row (written only
    /// when something changed): a job whose name stays keeps its id, runs and state (a new
    /// time resets its attempts and makes it due then), new names are inserted, names gone are
    /// deleted with their runs.
    ///
    /// # Errors
    /// Database failures; nothing is written then.
    pub(crate) async fn register(
        &self,
        owner: &Owner,
        jobs: &[PlannedJob],
        now: i64,
        audit: AuditRecord,
    ) -> Result<RegisterResult, ServiceError> {
        let mut result = RegisterResult::default();
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let rows = sqlx::query(sql.of_owner_for_update)
                    .bind(&owner.entity_type)
                    .bind(&owner.entity_id)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut existing = Vec::with_capacity(rows.len());
                for row in rows {
                    existing.push(job_row!(row));
                }
                let before: Vec<Job> = existing.iter().map(JobRow::job).collect();
                for planned in jobs {
                    let spec = serde_json::to_string(&planned.spec)
                        .map_err(|e| ServiceError::invalid("jobs", e.to_string()))?;
                    let payload = planned.payload.to_string();
                    let (at_ms, cron, timezone) = when_of(&planned.trigger);
                    let Some(old) = existing.iter().find(|r| r.name == planned.spec.name) else {
                        sqlx::query(sql.insert)
                            .bind(uuid::Uuid::now_v7().to_string())
                            .bind(&owner.entity_type)
                            .bind(&owner.entity_id)
                            .bind(&planned.spec.name)
                            .bind(&planned.spec.kind)
                            .bind(&payload)
                            .bind(&spec)
                            .bind(at_ms)
                            .bind(cron)
                            .bind(timezone)
                            .bind(planned.spec.skip_missed)
                            .bind(i64::from(planned.max_attempts))
                            .bind(planned.first_run_ms)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        result.created += 1;
                        continue;
                    };
                    let moved = old.when() != (at_ms, cron, timezone);
                    let respecified = old.spec != planned.spec || old.payload != planned.payload;
                    if respecified {
                        sqlx::query(sql.update_spec)
                            .bind(&old.id)
                            .bind(&planned.spec.kind)
                            .bind(&payload)
                            .bind(&spec)
                            .bind(planned.spec.skip_missed)
                            .bind(i64::from(planned.max_attempts))
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if moved {
                        sqlx::query(sql.reschedule)
                            .bind(&old.id)
                            .bind(at_ms)
                            .bind(cron)
                            .bind(timezone)
                            .bind(planned.first_run_ms)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if moved || respecified {
                        result.updated += 1;
                    } else {
                        result.unchanged += 1;
                    }
                }
                for old in &existing {
                    if jobs.iter().any(|p| p.spec.name == old.name) {
                        continue;
                    }
                    sqlx::query(sql.delete)
                        .bind(&old.id)
                        .execute(&mut *tx)
                        .await?;
                    result.deleted += 1;
                }
                let rows = sqlx::query(sql.of_owner)
                    .bind(&owner.entity_type)
                    .bind(&owner.entity_id)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in rows {
                    result.jobs.push(job_row!(row).job());
                }
                if result.created + result.updated + result.deleted > 0 {
                    let audit = audit.before(&before).after(&result);
                    audit::insert!(&mut *tx, sql.audit, &audit);
                }
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(result)
    }

    /// A page of jobs after the id `after`, by id.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn list(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.list)
                .bind(filter.entity_type.as_deref())
                .bind(filter.entity_id.as_deref())
                .bind(filter.status.map(JobStatus::as_str))
                .bind(filter.kind.as_deref())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(job_row!(row).job());
            }
            out
        }))
    }

    /// A page of the runs of `job_id` before the run id `before`, newest first.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn runs(
        &self,
        job_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRun>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.runs)
                .bind(job_id)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(run_row!(row));
            }
            out
        }))
    }

    /// Changes the state of the job `id` in one transaction with its audit row (the job
    /// before and after): `change` looks at the row (locked) and says the new status, next run
    /// time and attempts, or refuses.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], what `change` returns, database failures.
    pub(crate) async fn set_state(
        &self,
        id: &str,
        now: i64,
        audit: AuditRecord,
        change: impl FnOnce(&JobRow) -> Result<(JobStatus, Option<i64>, i64), ServiceError>,
    ) -> Result<Job, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let row = match sqlx::query(sql.get_for_update)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => job_row!(row),
                    None => return Err(not_found(id)),
                };
                let (status, next, attempts) = change(&row)?;
                sqlx::query(sql.set_state)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(next)
                    .bind(attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let mut after = row.clone();
                after.status = status;
                after.next_run_at = next;
                after.attempts = attempts;
                after.updated_at = now;
                let after = after.job();
                audit::insert!(&mut *tx, sql.audit, &audit.before(&row.job()).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// How many active jobs are due at `now` (running ones included).
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn count_due(&self, now: i64) -> Result<u64, ServiceError> {
        let n: i64 = on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_scalar(sql.count_due)
                .bind(now)
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Claims up to `rules.limit` due jobs for `node` at `now`, in one transaction: each is
    /// leased until `now + rules.lease` with its fence incremented and gets a `running` run
    /// row. On the way, runs of expired leases are ended as failed (a job whose last allowed
    /// attempt that was becomes `failed`), and missed occurrences of `skip_missed` jobs are
    /// recorded as skipped.
    ///
    /// # Errors
    /// Database failures; nothing is claimed then.
    pub(crate) async fn claim(
        &self,
        node: &str,
        now: i64,
        rules: ClaimRules,
    ) -> Result<Claimed, ServiceError> {
        let lease_until = now.saturating_add(ms(rules.lease));
        let mut out = Claimed::default();
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
            let rows = sqlx::query(sql.due)
                .bind(now)
                .bind(i64::from(rules.limit))
                .fetch_all(&mut *tx)
                .await?;
            let mut due = Vec::with_capacity(rows.len());
            for row in rows {
                due.push(job_row!(row));
            }
            for row in due {
                let due_ms = row.next_run_at.unwrap_or(now);
                if let Some(owner) = &row.lease_owner {
                    let why = format!(
                        "the lease of node {owner} expired at {} before the run ended; \
                         taken over by node {node}",
                        rfc3339(row.lease_until.unwrap_or(now))
                    );
                    let ended = sqlx::query(sql.abandon_runs)
                        .bind(&row.id)
                        .bind(now)
                        .bind(&why)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    out.expired += u32::try_from(ended).unwrap_or(u32::MAX);
                }
                match triage(&row, now, rules.missed_after) {
                    Due::GiveUp { attempts } => {
                        let error = format!(
                            "node {} stopped answering during the last allowed attempt ({attempts} of {})",
                            row.lease_owner.as_deref().unwrap_or("?"),
                            row.max_attempts
                        );
                        sqlx::query(sql.finish)
                            .bind(&row.id)
                            .bind(JobStatus::Failed.as_str())
                            .bind(None::<i64>)
                            .bind(attempts)
                            .bind(row.last_run_at)
                            .bind(RunOutcome::Failed.as_str())
                            .bind(&error)
                            .bind(now)
                            .bind(row.fence)
                            .execute(&mut *tx)
                            .await?;
                        out.given_up += 1;
                    }
                    Due::Skip { status, next, why } => {
                        sqlx::query(sql.insert_run)
                            .bind(uuid::Uuid::now_v7().to_string())
                            .bind(&row.id)
                            .bind(1_i64)
                            .bind(row.fence)
                            .bind(due_ms)
                            .bind(now)
                            .bind(Some(now))
                            .bind(RunOutcome::Skipped.as_str())
                            .bind(Some(why))
                            .bind(node)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(sql.skip)
                            .bind(&row.id)
                            .bind(status.as_str())
                            .bind(next)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        out.skipped += 1;
                    }
                    Due::Run { attempts } => {
                        let fence = row.fence + 1;
                        let attempt = attempts + 1;
                        sqlx::query(sql.lease)
                            .bind(&row.id)
                            .bind(node)
                            .bind(lease_until)
                            .bind(attempts)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        let run_id = uuid::Uuid::now_v7().to_string();
                        sqlx::query(sql.insert_run)
                            .bind(&run_id)
                            .bind(&row.id)
                            .bind(attempt)
                            .bind(fence)
                            .bind(due_ms)
                            .bind(now)
                            .bind(None::<i64>)
                            .bind(RunOutcome::Running.as_str())
                            .bind(None::<String>)
                            .bind(node)
                            .execute(&mut *tx)
                            .await?;
                        let mut leased = row;
                        leased.lease_owner = Some(node.to_owned());
                        leased.lease_until = Some(lease_until);
                        leased.fence = fence;
                        leased.attempts = attempts;
                        leased.updated_at = now;
                        out.claims.push(Claim {
                            job: leased.job(),
                            run_id,
                            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                            fence,
                            node: node.to_owned(),
                            due_ms,
                            started_ms: now,
                        });
                    }
                }
            }
            Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(out)
    }

    /// Records how the run of `claim` ended (`result`: `Err` with the handler's error) at
    /// `now`, if the claim still holds (its fence is the job's): the lease is released; on
    /// success a one-off job is `done` and a cron job is due at its next occurrence after
    /// now; on failure the job is retried after the back-off, or `failed` after its last
    /// allowed attempt. A job whose time was changed while it ran (a new registration) keeps
    /// the new time.
    ///
    /// # Errors
    /// Database failures; nothing is written then (the lease runs out, and another claim
    /// retries the job).
    pub(crate) async fn complete(
        &self,
        claim: &Claim,
        result: Result<(), String>,
        now: i64,
        retry: RetryRules,
    ) -> Result<Completion, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let row = match sqlx::query(sql.get_for_update)
                    .bind(&claim.job.id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => job_row!(row),
                    None => return Ok(Completion::Fenced),
                };
                if row.fence != claim.fence || row.lease_owner.as_deref() != Some(&claim.node) {
                    return Ok(Completion::Fenced);
                }
                let rescheduled = row.next_run_at != Some(claim.due_ms);
                let (mut status, mut next, mut attempts) =
                    (row.status, row.next_run_at, row.attempts);
                let (outcome, mut error) = match &result {
                    Ok(()) => (RunOutcome::Succeeded, None),
                    Err(e) => (RunOutcome::Failed, Some(e.clone())),
                };
                if !rescheduled {
                    match (&result, row.trigger()) {
                        (Ok(()), Ok(Trigger::Once { .. })) => {
                            (status, next, attempts) = (JobStatus::Done, None, 0);
                        }
                        (Ok(()), Ok(Trigger::Cron { cron, timezone })) => {
                            attempts = 0;
                            match model::next_occurrence(&cron, &timezone, now) {
                                Ok(n) => next = Some(n),
                                Err(e) => {
                                    (status, next) = (JobStatus::Failed, None);
                                    error = Some(format!("no next occurrence: {e}"));
                                }
                            }
                        }
                        (Ok(()), Err(e)) => {
                            (status, next, attempts) = (JobStatus::Failed, None, 0);
                            error = Some(e);
                        }
                        (Err(_), _) => {
                            attempts = row.attempts + 1;
                            if attempts >= row.max_attempts {
                                (status, next) = (JobStatus::Failed, None);
                            } else {
                                let failed = u32::try_from(attempts).unwrap_or(u32::MAX);
                                let wait =
                                    model::backoff(failed, retry.min, retry.max, retry.jitter);
                                next = Some(now.saturating_add(ms(wait)));
                            }
                        }
                    }
                }
                let last_error = error.clone();
                sqlx::query(sql.finish)
                    .bind(&row.id)
                    .bind(status.as_str())
                    .bind(next)
                    .bind(attempts)
                    .bind(claim.started_ms)
                    .bind(outcome.as_str())
                    .bind(last_error.as_deref())
                    .bind(now)
                    .bind(claim.fence)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(sql.finish_run)
                    .bind(&claim.run_id)
                    .bind(now)
                    .bind(outcome.as_str())
                    .bind(error.as_deref())
                    .execute(&mut *tx)
                    .await?;
                let mut after = row;
                after.status = status;
                after.next_run_at = next;
                after.attempts = attempts;
                after.last_run_at = Some(claim.started_ms);
                after.last_outcome = Some(outcome);
                after.last_error = last_error;
                after.lease_owner = None;
                after.lease_until = None;
                after.updated_at = now;
                Ok(Completion::Recorded(Box::new(after.job())))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Deletes every job of `owner` but `keep` (and their runs) with its audit row (the jobs before),
    /// written when there were any; returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn remove(
        &self,
        owner: &Owner,
        keep: Option<&str>,
        audit: AuditRecord,
    ) -> Result<u32, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let rows = sqlx::query(sql.of_owner_for_update)
                    .bind(&owner.entity_type)
                    .bind(&owner.entity_id)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut before = Vec::with_capacity(rows.len());
                for row in rows {
                    let row = job_row!(row);
                    if Some(row.id.as_str()) != keep {
                        before.push(row);
                    }
                }
                for row in &before {
                    sqlx::query(sql.delete)
                        .bind(&row.id)
                        .execute(&mut *tx)
                        .await?;
                }
                if !before.is_empty() {
                    let jobs: Vec<Job> = before.iter().map(JobRow::job).collect();
                    audit::insert!(&mut *tx, sql.audit, &audit.before(&jobs));
                }
                Ok(u32::try_from(before.len()).unwrap_or(u32::MAX))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }
}

pub(crate) fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "scheduler_job",
        id: id.to_owned(),
    }
}
