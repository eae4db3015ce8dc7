//! The scheduler service: jobs that entities declare in their `metadata.scheduling.jobs`
//! (one-off times, times relative to one of the entity's fields, cron patterns in a time
//! zone), run by the workers of every node, each due run exactly once in the cluster. Tables
//! `service_scheduler_job` and `service_scheduler_run`.
//!
//! # Rules
//! * Resource `scheduler`: `read` (roles `admin`, `campaign_manager`) for lists, jobs and
//!   runs; `write` (`admin`) for pause, resume and trigger; `register` (`admin`,
//!   `campaign_manager`, and the node itself, [`Caller::system`]) for
//!   [`SchedulerService::register_entity_jobs`] and [`SchedulerService::remove_entity_jobs`],
//!   which the services owning entities call when one is created, updated or deleted.
//! * A registration replaces the entity's jobs ([`model::plan`] checks them first: a 400
//!   naming the field, like `jobs[1].cron`): a job keeps its id, runs and state while its
//!   name stays; a new time (a new `at`, a moved entity field, a new pattern or zone) makes
//!   it due then with no failed attempts; names gone are deleted with their runs.
//! * Claims ([`Worker::claim`]): due active jobs are leased to one node for
//!   [`SchedulerConfig::lease`] in one transaction (`FOR UPDATE SKIP LOCKED` on Postgres,
//!   `BEGIN IMMEDIATE` on SQLite), with a fencing token (`fence`) incremented per claim and a
//!   `running` run row. Another node takes a job over only once its lease has expired (its
//!   node died or hung: that run ends as failed and counts as an attempt), and the late
//!   completion of the old node is refused ([`Completion::Fenced`]). Handlers are bounded by
//!   [`SchedulerConfig::handler_timeout`], shorter than the lease, so a live node always
//!   finishes within its lease: each due run happens once (after a node dies mid-run, its run
//!   may happen again on another node: handlers should be idempotent for that case).
//! * Outcomes: a success makes a one-off job `done` and a cron job due at its next
//!   occurrence after now (on its zone's wall clock: [`model::next_occurrence`]). A failure is
//!   retried after an exponential back-off with jitter ([`model::backoff`], from
//!   [`SchedulerConfig::retry_min`] to [`SchedulerConfig::retry_max`]) until
//!   `max_attempts`, then the job is `failed` with the last error (resume retries it).
//! * Missed runs: a job found due late (no node ran while it was due) runs once, not once
//!   per missed occurrence, then is due at its next future occurrence. With `skip_missed` it
//!   is skipped instead (a `skipped` run): a cron job when its following occurrence has come
//!   too, a one-off job when it is later than [`SchedulerConfig::missed_after`].
//! * Admins: pause (an active job keeps its next time and is not claimed), resume (a paused
//!   job as it was; a failed one due now), trigger (due now; not while paused or running).
//!   Each writes its audit row in its own transaction: `scheduler.pause`,
//!   `scheduler.resume`, `scheduler.trigger` (entity `scheduler_job`); registrations that
//!   change something write `scheduler.register`, removals `scheduler.remove` (entity: the
//!   owner's type and id).
//! * Metrics: `ovasabi_scheduler_runs_total{outcome}` (`succeeded`, `failed`, `skipped`,
//!   `lease_expired`), `ovasabi_scheduler_due_jobs` (due active jobs at the last tick),
//!   `ovasabi_scheduler_fenced_total` (late completions refused),
//!   `ovasabi_scheduler_run_duration_seconds`.
//!
//! # Layout
//! * [`model`]: records, the `scheduling.jobs` shape and its rules, cron occurrences, back-off;
//!   `repo`: storage and claims; here: the service, handlers and the [`Worker`].

pub mod model;
mod repo;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use serde_json::Value;

pub use crate::page::Page;
pub use model::{
    Job, JobFilter, JobRun, JobSpec, JobStatus, Owner, RegisterResult, Registration, RunOutcome,
};
pub use repo::{Claim, Claimed, Completion};

use crate::campaign::BoxFuture;
use crate::page::{check_limit, paginate};
use crate::security::{Caller, Policies};
use crate::time::now_ms;
use crate::{Database, ServiceError};
use repo::{ClaimRules, RetryRules, SchedulerRepo};

/// The resource every policy check names.
const RESOURCE: &str = "scheduler";
/// Counter, by `outcome`: runs ended (and missed occurrences skipped, expired leases).
pub const RUNS: &str = "ovasabi_scheduler_runs_total";
/// Gauge: active jobs due at the last tick of this node (running ones included).
pub const DUE_JOBS: &str = "ovasabi_scheduler_due_jobs";
/// Counter: completions refused because another node had claimed the job since.
pub const FENCED: &str = "ovasabi_scheduler_fenced_total";
/// Histogram: how long handlers ran.
pub const RUN_DURATION: &str = "ovasabi_scheduler_run_duration_seconds";
/// Longest node id.
const MAX_NODE_LEN: usize = 128;

/// How jobs are claimed, run and retried.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a claim holds: another node takes the job over only after it (its node
    /// died). Longer than `handler_timeout`.
    pub lease: Duration,
    /// Longest a handler may run; past it the attempt fails.
    pub handler_timeout: Duration,
    /// The wait before the second attempt; it doubles per failed attempt up to `retry_max`
    /// (minus a random part of up to half).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How late a one-off `skip_missed` job may still run.
    pub missed_after: Duration,
    /// Most jobs one node claims per tick (1–1,000).
    pub batch: u32,
    /// How often a worker looks for due jobs.
    pub poll_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            handler_timeout: Duration::from_secs(60),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(15 * 60),
            missed_after: Duration::from_secs(5 * 60),
            batch: 32,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl SchedulerConfig {
    /// # Errors
    /// [`ServiceError::Invalid`] naming the key (`scheduler.lease`, ...).
    pub fn validate(&self) -> Result<(), ServiceError> {
        let positive = [
            ("scheduler.lease", self.lease),
            ("scheduler.handler_timeout", self.handler_timeout),
            ("scheduler.retry_min", self.retry_min),
            ("scheduler.poll_interval", self.poll_interval),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(ServiceError::invalid(key, "must be longer than 0s"));
        }
        if self.handler_timeout >= self.lease {
            return Err(ServiceError::invalid(
                "scheduler.handler_timeout",
                "must be shorter than scheduler.lease (a live node finishes within its lease)",
            ));
        }
        if self.retry_max < self.retry_min {
            return Err(ServiceError::invalid(
                "scheduler.retry_max",
                "must be at least scheduler.retry_min",
            ));
        }
        if !(1..=1_000).contains(&self.batch) {
            return Err(ServiceError::invalid("scheduler.batch", "must be 1-1000"));
        }
        Ok(())
    }
}

/// Where the service reads the time (ms since the epoch): the system clock, or another
/// source (tests move a clock of their own to make jobs due and leases expire).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(now_ms))
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

/// A handler's failure: recorded as the run's error (its `Display`, with its sources).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the jobs of one kind (`campaign.start`, `notification.send`, ...).
pub trait JobHandler: Send + Sync {
    /// Runs `job` once (its `payload`, its owner, `next_run_at`: when this run was due).
    /// An error fails the attempt (retried after the back-off); so does running past
    /// [`SchedulerConfig::handler_timeout`] or panicking.
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// A [`JobHandler`] from an async function of the job.
pub struct FnHandler<F>(F);

/// A handler that calls `f` with (a copy of) the job.
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Job) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    FnHandler(f)
}

impl<F, Fut> JobHandler for FnHandler<F>
where
    F: Fn(Job) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin((self.0)(job.clone()))
    }
}

/// The handlers of a worker, by kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, Arc<dyn JobHandler>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// With `handler` running the jobs of `kind` (replacing any before).
    #[must_use]
    pub fn with(mut self, kind: impl Into<String>, handler: impl JobHandler + 'static) -> Self {
        self.insert(kind, Arc::new(handler));
        self
    }

    pub fn insert(&mut self, kind: impl Into<String>, handler: Arc<dyn JobHandler>) {
        self.by_kind.insert(kind.into(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.by_kind.get(kind)
    }

    /// The kinds handled, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.by_kind.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("kinds", &self.kinds())
            .finish()
    }
}

/// Job registration, queries and admin operations.
#[derive(Clone, Debug)]
pub struct SchedulerService {
    repo: SchedulerRepo,
    policies: Policies,
    config: Arc<SchedulerConfig>,
    clock: Clock,
}

impl SchedulerService {
    /// # Errors
    /// [`ServiceError::Invalid`] naming the config key that is out of range.
    pub fn new(
        db: Database,
        policies: Policies,
        config: SchedulerConfig,
    ) -> Result<Self, ServiceError> {
        config.validate()?;
        Ok(Self {
            repo: SchedulerRepo::new(db),
            policies,
            config: Arc::new(config),
            clock: Clock::system(),
        })
    }

    /// The same service reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Checks the jobs `scheduling` declares without storing anything (what
    /// [`SchedulerService::register_entity_jobs`] would refuse), so an owning service can
    /// refuse an entity before it writes it. Returns how many jobs it declares.
    ///
    /// # Errors
    /// As [`model::plan`].
    pub fn validate(
        &self,
        scheduling: &Value,
        entity: &Value,
        on: Registration,
    ) -> Result<usize, ServiceError> {
        Ok(model::plan(scheduling, entity, self.clock.now_ms(), on)?.len())
    }

    /// Makes the jobs `scheduling` declares (an entity's `metadata.scheduling`; only its
    /// `jobs` are read) the jobs of `owner`, reading relative times from `entity` (the entity
    /// as JSON, e.g. a campaign with `starts_at`). Called by the services owning entities on
    /// create (`on`: [`Registration::Create`]) and update. Needs `register`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`entity_type`, `entity_id`, `jobs[1].cron`,
    /// ... see [`model::plan`]), [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`],
    /// database failures.
    pub async fn register_entity_jobs(
        &self,
        caller: &Caller,
        owner: &Owner,
        scheduling: &Value,
        entity: &Value,
        on: Registration,
    ) -> Result<RegisterResult, ServiceError> {
        self.policies.require(caller, RESOURCE, "register")?;
        model::validate_owner(owner)?;
        let now = self.clock.now_ms();
        let jobs = model::plan(scheduling, entity, now, on)?;
        let audit = caller.audit("scheduler.register", &owner.entity_type, &owner.entity_id);
        self.repo.register(owner, &jobs, now, audit).await
    }

    /// Deletes every job of `owner` and their runs (the entity was deleted); returns how
    /// many. Needs `register`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`],
    /// database failures.
    pub async fn remove_entity_jobs(
        &self,
        caller: &Caller,
        owner: &Owner,
    ) -> Result<u32, ServiceError> {
        self.policies.require(caller, RESOURCE, "register")?;
        model::validate_owner(owner)?;
        let audit = caller.audit("scheduler.remove", &owner.entity_type, &owner.entity_id);
        self.repo.remove(owner, None, audit).await
    }

    /// As [`SchedulerService::remove_entity_jobs`], but keeps the job `keep` (the one running
    /// now, whose handler deleted the entity: it completes as usual).
    ///
    /// # Errors
    /// As [`SchedulerService::remove_entity_jobs`].
    pub async fn remove_entity_jobs_except(
        &self,
        caller: &Caller,
        owner: &Owner,
        keep: Option<&str>,
    ) -> Result<u32, ServiceError> {
        self.policies.require(caller, RESOURCE, "register")?;
        model::validate_owner(owner)?;
        let audit = caller.audit("scheduler.remove", &owner.entity_type, &owner.entity_id);
        self.repo.remove(owner, keep, audit).await
    }

    /// The jobs of `owner`, by name. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn entity_jobs(
        &self,
        caller: &Caller,
        owner: &Owner,
    ) -> Result<Vec<Job>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        model::validate_owner(owner)?;
        self.repo.of_owner(owner).await
    }

    /// A page of jobs, oldest first; the cursor is the last job's id. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`entity_type`, `kind`, `limit`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn list(
        &self,
        caller: &Caller,
        filter: JobFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Job>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        if let Some(t) = &filter.entity_type {
            model::validate_name("entity_type", t)?;
        }
        if let Some(k) = &filter.kind {
            model::validate_name("kind", k)?;
        }
        let limit = check_limit(limit)?;
        let rows = self.repo.list(&filter, cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |j| j.id.clone()))
    }

    /// The job `id`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Job, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.repo
            .get(id)
            .await?
            .map(|r| r.job())
            .ok_or_else(|| repo::not_found(id))
    }

    /// A page of the runs of job `id`, newest first; the cursor is the last run's id.
    /// Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Invalid`] (`limit`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn runs(
        &self,
        caller: &Caller,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<JobRun>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        if self.repo.get(id).await?.is_none() {
            return Err(repo::not_found(id));
        }
        let rows = self.repo.runs(id, cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |r| r.id.clone()))
    }

    /// Pauses an active job: it keeps its next run time and is not claimed until resumed (a
    /// run in progress finishes). Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] for a job that is not active,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn pause(&self, caller: &Caller, id: &str) -> Result<Job, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let audit = caller.audit("scheduler.pause", "scheduler_job", id);
        self.repo
            .set_state(id, self.clock.now_ms(), audit, |row| match row.status() {
                JobStatus::Active => Ok((JobStatus::Paused, row.next_run_at(), row.attempts())),
                other => Err(conflict(id, other, "only active jobs can be paused")),
            })
            .await
    }

    /// Resumes a paused job as it was (due at its next run time; late, it is a missed run),
    /// or a failed one: due now, from its first attempt. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] for an active or done job,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn resume(&self, caller: &Caller, id: &str) -> Result<Job, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let now = self.clock.now_ms();
        let audit = caller.audit("scheduler.resume", "scheduler_job", id);
        self.repo
            .set_state(id, now, audit, |row| match row.status() {
                JobStatus::Paused => Ok((JobStatus::Active, row.next_run_at(), row.attempts())),
                JobStatus::Failed => Ok((JobStatus::Active, Some(now), 0)),
                other => Err(conflict(
                    id,
                    other,
                    "only paused and failed jobs can be resumed",
                )),
            })
            .await
    }

    /// Makes a job due now (a done or failed job too: it runs once more, from its first
    /// attempt). Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] for a paused job or one running
    /// now, [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn trigger(&self, caller: &Caller, id: &str) -> Result<Job, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let now = self.clock.now_ms();
        let audit = caller.audit("scheduler.trigger", "scheduler_job", id);
        self.repo
            .set_state(id, now, audit, |row| {
                if row.status() == JobStatus::Paused {
                    return Err(conflict(id, JobStatus::Paused, "resume it first"));
                }
                if row.leased_at(now) {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "scheduler job {id:?} is running on node {}",
                            row.lease_owner().unwrap_or("?")
                        ),
                    });
                }
                Ok((JobStatus::Active, Some(now), 0))
            })
            .await
    }

    /// A worker for the node `node`, running jobs with `handlers`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `node_id` when it is empty, longer than 128
    /// characters or has control characters.
    pub fn worker(&self, node: &str, handlers: Handlers) -> Result<Worker, ServiceError> {
        if node.is_empty()
            || node.chars().count() > MAX_NODE_LEN
            || node.chars().any(char::is_control)
        {
            return Err(ServiceError::invalid(
                "node_id",
                format!("must have 1-{MAX_NODE_LEN} characters and no control characters"),
            ));
        }
        describe_metrics();
        Ok(Worker {
            service: self.clone(),
            node: node.to_owned(),
            handlers: Arc::new(handlers),
        })
    }
}

fn conflict(id: &str, status: JobStatus, what: &str) -> ServiceError {
    ServiceError::Conflict {
        message: format!("scheduler job {id:?} is {}: {what}", status.as_str()),
    }
}

fn describe_metrics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_counter!(
            RUNS,
            "Scheduler runs ended, by outcome (succeeded, failed, skipped, lease_expired)"
        );
        describe_gauge!(
            DUE_JOBS,
            "Active scheduler jobs due at this node's last tick"
        );
        describe_counter!(
            FENCED,
            "Scheduler completions refused: another node had claimed the job since"
        );
        describe_histogram!(
            RUN_DURATION,
            "How long scheduler job handlers ran, in seconds"
        );
    });
}

/// A random number in 0–1 (for back-off jitter).
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(now_ms());
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Active jobs due when it started (running ones included).
    pub due: u64,
    /// Jobs this node claimed and ran.
    pub claimed: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Missed occurrences skipped.
    pub skipped: u32,
    /// Runs of other nodes whose lease had expired, ended as failed.
    pub expired: u32,
    /// Completions refused (this node's lease had been taken over).
    pub fenced: u32,
    /// Completions that could not be written (the lease runs out; another claim retries).
    pub errors: u32,
    /// Whether the claim took a full batch (more may be due).
    pub full: bool,
}

/// Claims and runs due jobs for one node.
#[derive(Clone, Debug)]
pub struct Worker {
    service: SchedulerService,
    node: String,
    handlers: Arc<Handlers>,
}

impl Worker {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Claims up to [`SchedulerConfig::batch`] due jobs for this node (see the module docs).
    /// [`Worker::tick`] claims, runs and completes; this and [`Worker::execute`] /
    /// [`Worker::complete`] are its steps, for drivers of their own.
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim(&self) -> Result<Claimed, ServiceError> {
        let config = &self.service.config;
        let rules = ClaimRules {
            lease: config.lease,
            missed_after: config.missed_after,
            limit: config.batch,
        };
        let claimed = self
            .service
            .repo
            .claim(&self.node, self.service.clock.now_ms(), rules)
            .await?;
        if claimed.skipped > 0 {
            counter!(RUNS, "outcome" => "skipped").increment(u64::from(claimed.skipped));
        }
        if claimed.expired > 0 {
            counter!(RUNS, "outcome" => "lease_expired").increment(u64::from(claimed.expired));
        }
        Ok(claimed)
    }

    /// Runs the handler of the claimed job within [`SchedulerConfig::handler_timeout`]: `Err`
    /// with the error text when there is no handler for its kind, or the handler fails, times
    /// out or panics.
    pub async fn execute(&self, claim: &Claim) -> Result<(), String> {
        let job = &claim.job;
        let Some(handler) = self.handlers.get(&job.kind) else {
            return Err(format!(
                "no handler for kind {:?} on node {} (it handles: {})",
                job.kind,
                self.node,
                self.handlers.kinds().join(", ")
            ));
        };
        let timeout = self.service.config.handler_timeout;
        let started = Instant::now();
        let run = std::panic::AssertUnwindSafe(handler.run(job)).catch_unwind();
        let result = match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
            Ok(Err(_)) => Err("the handler panicked".to_owned()),
            Ok(Ok(Err(e))) => Err(error_chain(e.as_ref())),
            Ok(Ok(Ok(()))) => Ok(()),
        };
        histogram!(RUN_DURATION).record(started.elapsed().as_secs_f64());
        result
    }

    /// Records how the run of `claim` ended, if the claim still holds (see
    /// [`Completion`]).
    ///
    /// # Errors
    /// Database failures (nothing is written; the lease runs out and another claim retries
    /// the job).
    pub async fn complete(
        &self,
        claim: &Claim,
        result: Result<(), String>,
    ) -> Result<Completion, ServiceError> {
        let config = &self.service.config;
        let retry = RetryRules {
            min: config.retry_min,
            max: config.retry_max,
            jitter: jitter(),
        };
        let failed = result.is_err();
        let completion = self
            .service
            .repo
            .complete(claim, result, self.service.clock.now_ms(), retry)
            .await?;
        match &completion {
            Completion::Recorded(job) => {
                let outcome = if failed { "failed" } else { "succeeded" };
                counter!(RUNS, "outcome" => outcome).increment(1);
                if failed {
                    tracing::info!(
                        job = %job.id, kind = %job.kind, attempt = claim.attempt,
                        status = job.status.as_str(), error = job.last_error.as_deref().unwrap_or(""),
                        "scheduler job failed"
                    );
                }
            }
            Completion::Fenced => {
                counter!(FENCED).increment(1);
                tracing::warn!(
                    job = %claim.job.id, node = %self.node, fence = claim.fence,
                    "scheduler run outcome refused: the job was claimed by another node since"
                );
            }
        }
        Ok(completion)
    }

    /// One pass: claims the due jobs, runs their handlers concurrently and completes them.
    ///
    /// # Errors
    /// Database failures of the claim (a completion that fails is counted in
    /// [`Tick::errors`] and logged).
    pub async fn tick(&self) -> Result<Tick, ServiceError> {
        let due = self
            .service
            .repo
            .count_due(self.service.clock.now_ms())
            .await?;
        gauge!(DUE_JOBS).set(due as f64);
        let claimed = self.claim().await?;
        let mut tick = Tick {
            due,
            claimed: u32::try_from(claimed.claims.len()).unwrap_or(u32::MAX),
            skipped: claimed.skipped,
            expired: claimed.expired,
            full: claimed.taken() >= self.service.config.batch as usize,
            ..Tick::default()
        };
        let runs = claimed.claims.iter().map(|claim| async move {
            let result = self.execute(claim).await;
            let ok = result.is_ok();
            (ok, self.complete(claim, result).await)
        });
        for (ok, completion) in futures_util::future::join_all(runs).await {
            match completion {
                Ok(Completion::Recorded(_)) if ok => tick.succeeded += 1,
                Ok(Completion::Recorded(_)) => tick.failed += 1,
                Ok(Completion::Fenced) => tick.fenced += 1,
                Err(e) => {
                    tick.errors += 1;
                    tracing::warn!(error = %error_chain(&e), node = %self.node, "scheduler run outcome not written");
                }
            }
        }
        Ok(tick)
    }

    /// Ticks every [`SchedulerConfig::poll_interval`] (at once again after a full batch)
    /// until `stop` resolves; a tick under way when it does is finished first.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(self.service.config.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                _ = interval.tick() => {}
            }
            loop {
                match self.tick().await {
                    Ok(t) if t.full => {
                        tokio::select! {
                            biased;
                            () = &mut stop => return,
                            () = std::future::ready(()) => {}
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), node = %self.node, "scheduler claim failed");
                        break;
                    }
                }
            }
        }
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
