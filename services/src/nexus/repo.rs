//! Nexus storage: tables `service_nexus_pattern` (every version of every pattern),
//! `service_nexus_run` and `service_nexus_step` (a run and the state of each of its steps),
//! each query written once for both dialects ([`Queries`], see [`crate::sql`]).
//!
//! A run is worked on by the node holding its lease. A claim is a conditional update that
//! moves the run's `fence` on: of two nodes claiming one run, one changes the row. Every later
//! write of the run and its steps ([`NexusRepo::save`]) is conditional on that fence, in one
//! transaction with the step it saves: a node whose lease was taken over writes nothing.

use sqlx::Row;

use crate::db::{on_pool, settle};
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::{Database, ServiceError};

macro_rules! run_columns {
    () => {
        "id, pattern, version, status, trigger_kind, idempotency_key, input, output, error, \
         caller_id, caller_roles, started_by, claimed_by, lease_until, fence, next_at, \
         created_at, updated_at, finished_at FROM service_nexus_run"
    };
}

macro_rules! step_columns {
    () => {
        "run_id, name, position, operation, status, attempts, input, output, error, \
         started_at, finished_at, comp_attempts, comp_error, compensated_at \
         FROM service_nexus_step"
    };
}

portable_sql! {
    /// The SQL of patterns, runs and steps, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        latest_patterns: "SELECT p.name, p.version, p.source, p.definition, p.created_by, \
                          p.created_at FROM service_nexus_pattern p \
                          WHERE p.version = (SELECT MAX(q.version) FROM service_nexus_pattern q \
                                             WHERE q.name = p.name) ORDER BY p.name",
        pattern: "SELECT name, version, source, definition, created_by, created_at \
                  FROM service_nexus_pattern WHERE name = $1 AND version = $2",
        latest_pattern: "SELECT name, version, source, definition, created_by, created_at \
                         FROM service_nexus_pattern WHERE name = $1 ORDER BY version DESC LIMIT 1",
        latest_version: "SELECT version, definition FROM service_nexus_pattern WHERE name = $1 \
                         ORDER BY version DESC LIMIT 1",
        insert_pattern: "INSERT INTO service_nexus_pattern \
                         (name, version, source, definition, created_by, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
        insert_run: "INSERT INTO service_nexus_run \
                     (id, pattern, version, status, trigger_kind, idempotency_key, input, \
                      caller_id, caller_roles, started_by, fence, next_at, created_at, \
                      updated_at) \
                     VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, 0, $10, $10, $10) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
        insert_step: "INSERT INTO service_nexus_step \
                      (run_id, name, position, operation, status, attempts, comp_attempts) \
                      VALUES ($1, $2, $3, $4, 'pending', 0, 0)",
        run: concat!("SELECT ", run_columns!(), " WHERE id = $1"),
        run_by_key: concat!("SELECT ", run_columns!(), " WHERE idempotency_key = $1"),
        runs: concat!("SELECT ", run_columns!(),
                      " WHERE ($1{text} IS NULL OR pattern = $1) \
                       AND ($2{text} IS NULL OR status = $2) \
                       AND ($3{text} IS NULL OR started_by = $3) \
                       AND ($4{text} IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"),
        steps: concat!("SELECT ", step_columns!(), " WHERE run_id = $1 ORDER BY position"),
        /// Runs some node may take: unfinished, due, not leased (or the lease ran out).
        claimable: "SELECT id, fence, claimed_by FROM service_nexus_run \
                    WHERE status IN ('running', 'compensating') AND next_at <= $1 \
                    AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_at LIMIT $2",
        claim: "UPDATE service_nexus_run SET claimed_by = $3, lease_until = $4, \
                fence = fence + 1, updated_at = $5 \
                WHERE id = $1 AND fence = $2 AND status IN ('running', 'compensating') \
                AND next_at <= $5 AND (lease_until IS NULL OR lease_until < $5)",
        save_run: "UPDATE service_nexus_run SET status = $3, output = $4, error = $5, \
                   claimed_by = $6, lease_until = $7, next_at = $8, updated_at = $9, \
                   finished_at = $10 WHERE id = $1 AND fence = $2",
        save_step: "UPDATE service_nexus_step SET status = $3, attempts = $4, input = $5, \
                    output = $6, error = $7, started_at = $8, finished_at = $9, \
                    comp_attempts = $10, comp_error = $11, compensated_at = $12 \
                    WHERE run_id = $1 AND name = $2",
        counts: "SELECT pattern, status, COUNT(*) FROM service_nexus_run \
                 GROUP BY pattern, status ORDER BY pattern, status",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

/// A stored pattern version, its definition still JSON text.
#[derive(Debug, Clone)]
pub(crate) struct PatternRow {
    pub name: String,
    pub version: i64,
    pub source: String,
    pub definition: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A run as stored (times in ms, JSON as text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunRow {
    pub id: String,
    pub pattern: String,
    pub version: i64,
    pub status: String,
    pub trigger: String,
    pub key: String,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub caller_id: Option<String>,
    /// JSON array of role names; NULL for the system.
    pub caller_roles: Option<String>,
    pub started_by: String,
    pub claimed_by: Option<String>,
    pub lease_until: Option<i64>,
    pub fence: i64,
    pub next_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// A step of a run as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepRow {
    pub name: String,
    pub position: i64,
    pub operation: String,
    pub status: String,
    pub attempts: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub comp_attempts: i64,
    pub comp_error: Option<String>,
    pub compensated_at: Option<i64>,
}

macro_rules! pattern_row {
    ($row:expr) => {{
        let row = &$row;
        PatternRow {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            source: row.try_get("source")?,
            definition: row.try_get("definition")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
        }
    }};
}

macro_rules! run_row {
    ($row:expr) => {{
        let row = &$row;
        RunRow {
            id: row.try_get("id")?,
            pattern: row.try_get("pattern")?,
            version: row.try_get("version")?,
            status: row.try_get("status")?,
            trigger: row.try_get("trigger_kind")?,
            key: row.try_get("idempotency_key")?,
            input: row.try_get("input")?,
            output: row.try_get("output")?,
            error: row.try_get("error")?,
            caller_id: row.try_get("caller_id")?,
            caller_roles: row.try_get("caller_roles")?,
            started_by: row.try_get("started_by")?,
            claimed_by: row.try_get("claimed_by")?,
            lease_until: row.try_get("lease_until")?,
            fence: row.try_get("fence")?,
            next_at: row.try_get("next_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        }
    }};
}

macro_rules! step_row {
    ($row:expr) => {{
        let row = &$row;
        StepRow {
            name: row.try_get("name")?,
            position: row.try_get("position")?,
            operation: row.try_get("operation")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            input: row.try_get("input")?,
            output: row.try_get("output")?,
            error: row.try_get("error")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            comp_attempts: row.try_get("comp_attempts")?,
            comp_error: row.try_get("comp_error")?,
            compensated_at: row.try_get("compensated_at")?,
        }
    }};
}

/// What [`NexusRepo::insert_run`] found.
pub(crate) enum Inserted {
    New,
    /// A run with the key existed.
    Existing(Box<RunRow>),
}

#[derive(Clone, Debug)]
pub(crate) struct NexusRepo {
    db: Database,
}

impl NexusRepo {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    pub(crate) async fn latest_patterns(&self) -> Result<Vec<PatternRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.latest_patterns).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(pattern_row!(row));
            }
            out
        }))
    }

    pub(crate) async fn pattern(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<PatternRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.pattern)
                .bind(name)
                .bind(version)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(pattern_row!(row)),
                None => None,
            }
        }))
    }

    pub(crate) async fn latest_pattern(
        &self,
        name: &str,
    ) -> Result<Option<PatternRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.latest_pattern)
                .bind(name)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(pattern_row!(row)),
                None => None,
            }
        }))
    }

    /// Stores `definition` as the next version of `name`, unless it equals the latest
    /// version (then that version). Returns the version and whether it is new.
    pub(crate) async fn insert_pattern(
        &self,
        name: &str,
        definition: &str,
        source: &str,
        created_by: &str,
        now: i64,
        audit: Option<AuditRecord>,
    ) -> Result<(i64, bool), ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let latest: Option<(i64, String)> = sqlx::query_as(sql.latest_version)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((version, def)) = &latest
                    && def == definition
                {
                    return Ok((*version, false));
                }
                let version = latest.map_or(1, |(v, _)| v + 1);
                sqlx::query(sql.insert_pattern)
                    .bind(name)
                    .bind(version)
                    .bind(source)
                    .bind(definition)
                    .bind(created_by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match ServiceError::from(e) {
                        ServiceError::Duplicate { .. } => ServiceError::Conflict {
                            message: format!(
                                "pattern {name} was registered concurrently: try again"
                            ),
                        },
                        other => other,
                    })?;
                if let Some(a) = &audit {
                    let a = a.clone().after(&serde_json::json!({
                        "name": name, "version": version, "source": source,
                    }));
                    audit::insert!(&mut *tx, sql.audit, &a);
                }
                Ok((version, true))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Inserts `run` (status `running`) and its steps with the audit row, or finds the run
    /// that holds its idempotency key.
    pub(crate) async fn insert_run(
        &self,
        run: &RunRow,
        steps: &[(String, String)],
        audit: AuditRecord,
    ) -> Result<Inserted, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let inserted = sqlx::query(sql.insert_run)
                    .bind(&run.id)
                    .bind(&run.pattern)
                    .bind(run.version)
                    .bind(&run.trigger)
                    .bind(&run.key)
                    .bind(&run.input)
                    .bind(run.caller_id.as_deref())
                    .bind(run.caller_roles.as_deref())
                    .bind(&run.started_by)
                    .bind(run.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    let row = sqlx::query(sql.run_by_key)
                        .bind(&run.key)
                        .fetch_one(&mut *tx)
                        .await?;
                    return Ok(Inserted::Existing(Box::new(run_row!(row))));
                }
                for (position, (name, operation)) in steps.iter().enumerate() {
                    sqlx::query(sql.insert_step)
                        .bind(&run.id)
                        .bind(name)
                        .bind(i64::try_from(position).unwrap_or(i64::MAX))
                        .bind(operation)
                        .execute(&mut *tx)
                        .await?;
                }
                let a = audit.after(&serde_json::json!({
                    "pattern": run.pattern, "version": run.version, "trigger": run.trigger,
                    "idempotency_key": run.key,
                }));
                audit::insert!(&mut *tx, sql.audit, &a);
                Ok(Inserted::New)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn run(&self, id: &str) -> Result<Option<RunRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.run).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(run_row!(row)),
                None => None,
            }
        }))
    }

    pub(crate) async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.steps).bind(run_id).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(step_row!(row));
            }
            out
        }))
    }

    /// Runs newest first, before `cursor` (an id); `limit + 1` rows.
    pub(crate) async fn runs(
        &self,
        pattern: Option<&str>,
        status: Option<&str>,
        started_by: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRow>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.runs)
                .bind(pattern)
                .bind(status)
                .bind(started_by)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(run_row!(row));
            }
            out
        }))
    }

    /// Leases up to `limit` claimable runs to `node` until `lease_until`: each run returned
    /// with its new fence was claimed by this call only, with whether it was taken over from
    /// a node whose lease ran out.
    pub(crate) async fn claim(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<(RunRow, bool)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let candidates: Vec<(String, i64, Option<String>)> = sqlx::query_as(sql.claimable)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::new();
            for (id, fence, held_by) in candidates {
                let won = sqlx::query(sql.claim)
                    .bind(&id)
                    .bind(fence)
                    .bind(node)
                    .bind(lease_until)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected()
                    == 1;
                if won
                    && let Some(row) = sqlx::query(sql.run).bind(&id).fetch_optional(pool).await?
                {
                    let r = run_row!(row);
                    if r.fence == fence + 1 {
                        out.push((r, held_by.is_some()));
                    }
                }
            }
            out
        }))
    }

    /// Writes `run` (and `step`) if the run still has `run.fence`: false when another node
    /// took it over.
    pub(crate) async fn save(
        &self,
        run: &RunRow,
        step: Option<&StepRow>,
    ) -> Result<bool, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let changed = sqlx::query(sql.save_run)
                    .bind(&run.id)
                    .bind(run.fence)
                    .bind(&run.status)
                    .bind(run.output.as_deref())
                    .bind(run.error.as_deref())
                    .bind(run.claimed_by.as_deref())
                    .bind(run.lease_until)
                    .bind(run.next_at)
                    .bind(run.updated_at)
                    .bind(run.finished_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    return Ok(false);
                }
                if let Some(s) = step {
                    sqlx::query(sql.save_step)
                        .bind(&run.id)
                        .bind(&s.name)
                        .bind(&s.status)
                        .bind(s.attempts)
                        .bind(s.input.as_deref())
                        .bind(s.output.as_deref())
                        .bind(s.error.as_deref())
                        .bind(s.started_at)
                        .bind(s.finished_at)
                        .bind(s.comp_attempts)
                        .bind(s.comp_error.as_deref())
                        .bind(s.compensated_at)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(true)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Runs by pattern and status.
    pub(crate) async fn counts(&self) -> Result<Vec<(String, String, i64)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_as(sql.counts).fetch_all(pool).await?
        }))
    }
}
