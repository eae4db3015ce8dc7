//! Nexus: the pattern registry and durable multi-service runs. Tables
//! `service_nexus_pattern`, `service_nexus_run` and `service_nexus_step`.
//!
//! * **Operations**: every service hands its operations (name like `campaign.create`, input
//!   and output schemas, idempotent or not, the code that runs it) to
//!   [`NexusService::register_operations`] once, where the [`Provider`](crate::Provider)
//!   builds it ([`ops`]): the registry is what the provider built, nothing else to keep in
//!   step.
//! * **Patterns**: named, versioned definitions of steps ([`PatternDef`]), with input mapping
//!   and compensations, checked against the registry ([`model::validate`]). The built-in ones
//!   ([`ops::builtin_patterns`]) are stored at start-up (a new version when one changed);
//!   admins register more over the API (resource `nexus`, action `write`).
//! * **Runs are durable**: a run and each step's state are rows. The workers of every node
//!   ([`NexusService::spawn_worker`]) claim due runs with a lease and a fencing token
//!   ([`repo`]): a node that stops mid-run leaves the run to whichever node claims it once the
//!   lease has run out (the step it was in is tried again: steps get an idempotency key that
//!   is the same on every attempt). A step failing with an error that may pass (database or
//!   engine unavailable, rate limited, a step timeout) is tried again after an exponential
//!   back-off, durably (the run waits in the table, any node picks it up); a step failing for
//!   good, or out of attempts, makes the run undo its completed steps' compensations in
//!   reverse order, each once. A run started twice with one idempotency key is one run.
//! * **Triggers**: an API call ([`NexusService::start`]); a schedule (a pattern's
//!   `triggers.cron` is a scheduler job of kind `nexus.run`, [`NexusService::run_scheduled`]);
//!   a service event ([`EventBus`]: services publish after commit, e.g. `content.created`;
//!   each event starts one run of every pattern listening for it, keyed by the event).
//! * **Rules**: resource `nexus`: `run` (every role) starts runs and reads one's own runs,
//!   `read` (campaign managers, admins) reads every run, `write` (admins) registers patterns.
//!   Steps run as the caller who started the run (the system for schedules and events) and are
//!   authorised again by their own service; a step marked `run_as: system` runs as the node.
//!   Registering a pattern writes `nexus.pattern.register`, starting a run `nexus.run.start`
//!   (in the run's transaction).
//! * **Metrics**: `ovasabi_nexus_runs_total{pattern,outcome}` (`started`, `succeeded`,
//!   `failed`, `compensated`), `ovasabi_nexus_steps_total{operation,outcome}` (`succeeded`,
//!   `retried`, `failed`, `compensated`, `compensation_failed`),
//!   `ovasabi_nexus_claims_total{kind}` (`fresh`, `resumed`: taken over after a lease ran
//!   out), `ovasabi_nexus_fenced_total`, `ovasabi_nexus_step_duration_seconds{operation}`.

pub mod model;
pub mod ops;
mod repo;

use std::collections::BTreeMap;
use std::sync::{Arc, Once, RwLock, Weak};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram};
use serde_json::{Map, Value, json};

pub use model::{
    Operation, OperationInfo, Pattern, PatternDef, PlannedStep, Run, RunFilter, RunStatus,
    StartRun, StepContext, StepRun, StepStatus,
};

use crate::page::{Page, check_limit};
use crate::scheduler::{Clock, Job, Owner, Registration, SchedulerService};
use crate::security::{Caller, Policies, Role};
use crate::time::rfc3339;
use crate::{Database, ServiceError};
use repo::{Inserted, NexusRepo, RunRow, StepRow};

/// The resource every policy check names.
const RESOURCE: &str = "nexus";
/// A campaign was created (payload: `id`, `slug`, `name`, `status`, `starts_at`).
pub const CAMPAIGN_CREATED: &str = "campaign.created";
/// A content item was created or changed (payload: `id`, `kind`, `author_id`, `title`, `tags`).
pub const CONTENT_CREATED: &str = "content.created";
pub const CONTENT_UPDATED: &str = "content.updated";
/// The events services publish on the [`EventBus`] (what `triggers.events` may name).
pub const EVENTS: &[&str] = &[CAMPAIGN_CREATED, CONTENT_CREATED, CONTENT_UPDATED];
/// The scheduler job kind of scheduled runs.
pub const JOB_KIND: &str = "nexus.run";

/// How a node's worker runs patterns.
#[derive(Debug, Clone)]
pub struct NexusConfig {
    /// This node's name in `claimed_by`.
    pub node: String,
    /// How long a claim holds a run; renewed before every step. Longer than
    /// `step_timeout`, so that a live node keeps its runs.
    pub lease: Duration,
    /// The longest a step's attempt may take (then it failed, and may be tried again).
    pub step_timeout: Duration,
    /// How often an idle worker looks for due runs.
    pub poll: Duration,
    /// Runs one worker works on at once.
    pub concurrency: usize,
}

impl Default for NexusConfig {
    fn default() -> Self {
        Self {
            node: format!("node-{}", uuid::Uuid::now_v7()),
            lease: Duration::from_secs(30),
            step_timeout: Duration::from_secs(20),
            poll: Duration::from_millis(200),
            concurrency: 8,
        }
    }
}

/// Something that happened in a service, published after its transaction committed.
#[derive(Debug, Clone)]
pub struct Event {
    /// Like `content.created`.
    pub name: &'static str,
    /// Unique per event of that name (a run it starts is keyed by it).
    pub id: String,
    pub payload: Value,
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The in-process event bus: services publish after commit, Nexus listens. Publishing never
/// waits on a listener (Nexus starts its runs in a task of its own). Events are not stored:
/// one published while the node stops may start nothing.
#[derive(Clone, Default)]
pub struct EventBus {
    listeners: Arc<RwLock<Vec<Listener>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl EventBus {
    /// Hands `event` to every listener.
    pub fn publish(&self, event: Event) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for l in listeners {
            l(&event);
        }
    }

    pub fn subscribe(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(listener));
    }
}

/// The registry, the patterns and the runs.
#[derive(Clone)]
pub struct NexusService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NexusService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NexusService").finish_non_exhaustive()
    }
}

struct Inner {
    repo: NexusRepo,
    policies: Policies,
    config: NexusConfig,
    clock: Clock,
    operations: RwLock<BTreeMap<&'static str, Operation>>,
    scheduler: Option<SchedulerService>,
    wake: tokio::sync::Notify,
}

fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_counter!(
            "ovasabi_nexus_runs_total",
            "Pattern runs started and ended, by pattern and outcome"
        );
        describe_counter!(
            "ovasabi_nexus_steps_total",
            "Step attempts and compensations, by operation and outcome"
        );
        describe_counter!(
            "ovasabi_nexus_claims_total",
            "Runs claimed by this node (resumed: after another node's lease ran out)"
        );
        describe_counter!(
            "ovasabi_nexus_fenced_total",
            "Writes of a run refused because another node had taken it over"
        );
        describe_histogram!(
            "ovasabi_nexus_step_duration_seconds",
            "Time of one step attempt"
        );
    });
}

fn corrupt(what: &str, id: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(format!("{what} {id:?}: {e}").into()))
}

fn to_pattern(
    row: repo::PatternRow,
    operations: &BTreeMap<&'static str, Operation>,
) -> Result<Pattern, ServiceError> {
    let definition: PatternDef =
        serde_json::from_str(&row.definition).map_err(|e| corrupt("pattern", &row.name, e))?;
    // A stored pattern whose operation is gone (a service removed) still lists; it cannot run.
    let order = model::validate(&definition, operations).unwrap_or_else(|_| {
        definition
            .steps
            .iter()
            .map(|s| PlannedStep {
                name: s.name.clone(),
                operation: s.operation.clone(),
                service: operations
                    .get(s.operation.as_str())
                    .map_or("(not registered)", |o| o.service)
                    .to_owned(),
                compensation: s.compensate.as_ref().map(|c| c.operation.clone()),
            })
            .collect()
    });
    Ok(Pattern {
        name: row.name,
        version: row.version,
        source: row.source,
        definition,
        order,
        created_by: row.created_by,
        created_at: rfc3339(row.created_at),
    })
}

fn to_step(s: &StepRow) -> Result<StepRun, ServiceError> {
    let parse = |v: &Option<String>| -> Result<Option<Value>, ServiceError> {
        v.as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("step", &s.name, e))
    };
    Ok(StepRun {
        name: s.name.clone(),
        position: s.position,
        operation: s.operation.clone(),
        status: StepStatus::from_db(&s.status).ok_or_else(|| corrupt("step", &s.name, "status"))?,
        attempts: s.attempts,
        input: parse(&s.input)?,
        output: parse(&s.output)?,
        error: s.error.clone(),
        started_at: s.started_at.map(rfc3339),
        finished_at: s.finished_at.map(rfc3339),
        compensation_attempts: s.comp_attempts,
        compensation_error: s.comp_error.clone(),
        compensated_at: s.compensated_at.map(rfc3339),
    })
}

fn to_run(r: &RunRow, steps: &[StepRow]) -> Result<Run, ServiceError> {
    Ok(Run {
        id: r.id.clone(),
        pattern: r.pattern.clone(),
        version: r.version,
        status: RunStatus::parse("status", &r.status).map_err(|e| corrupt("run", &r.id, e))?,
        trigger: r.trigger.clone(),
        idempotency_key: r.key.clone(),
        input: serde_json::from_str(&r.input).map_err(|e| corrupt("run", &r.id, e))?,
        output: r
            .output
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("run", &r.id, e))?,
        error: r.error.clone(),
        started_by: r.started_by.clone(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        finished_at: r.finished_at.map(rfc3339),
        claimed_by: r.claimed_by.clone(),
        steps: steps.iter().map(to_step).collect::<Result<_, _>>()?,
    })
}

/// The caller a run's steps run as.
fn run_caller(r: &RunRow) -> Caller {
    match (&r.caller_id, &r.caller_roles) {
        (Some(id), Some(roles)) => {
            let names: Vec<String> = serde_json::from_str(roles).unwrap_or_default();
            let roles = names.iter().filter_map(|n| Role::parse(n).ok()).collect();
            Caller::user(id.clone(), roles)
        }
        // Only runs the node started itself have no roles at all.
        (None, None) => Caller::system(),
        _ => Caller::anonymous(),
    }
}

impl NexusService {
    /// The service on `db`; with `scheduler`, patterns' `triggers.cron` become its jobs.
    pub fn new(
        db: Database,
        policies: Policies,
        config: NexusConfig,
        scheduler: Option<SchedulerService>,
    ) -> Self {
        Self::with_clock(db, policies, config, scheduler, Clock::system())
    }

    /// The same, reading the time from `clock`.
    pub fn with_clock(
        db: Database,
        policies: Policies,
        config: NexusConfig,
        scheduler: Option<SchedulerService>,
        clock: Clock,
    ) -> Self {
        describe();
        Self {
            inner: Arc::new(Inner {
                repo: NexusRepo::new(db),
                policies,
                config,
                clock,
                operations: RwLock::new(BTreeMap::new()),
                scheduler,
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Starts the runs of the patterns listening for each event `bus` carries.
    pub fn listen(&self, bus: &EventBus) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        bus.subscribe(move |event| {
            let Some(inner) = weak.upgrade() else { return };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(
                    event = event.name,
                    "event published outside a runtime: no runs started"
                );
                return;
            };
            let svc = NexusService { inner };
            let event = event.clone();
            rt.spawn(async move { svc.on_event(&event).await });
        });
    }

    /// Adds `service`'s operations to the registry.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for an operation of another service, a name taken or one not
    /// named `<service>.<action>`.
    pub fn register_operations(
        &self,
        service: &'static str,
        ops: Vec<Operation>,
    ) -> Result<(), ServiceError> {
        let mut registry = self
            .inner
            .operations
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for op in ops {
            if op.service != service || !op.name.starts_with(&format!("{service}.")) {
                return Err(ServiceError::invalid(
                    "operation",
                    format!("{} is not an operation of {service}", op.name),
                ));
            }
            if registry.contains_key(op.name) {
                return Err(ServiceError::invalid(
                    "operation",
                    format!("{} is registered twice", op.name),
                ));
            }
            registry.insert(op.name, op);
        }
        Ok(())
    }

    /// Every registered operation, by name (for the knowledge graph: no caller).
    pub fn operation_infos(&self) -> Vec<OperationInfo> {
        let registry = self
            .inner
            .operations
            .read()
            .unwrap_or_else(|e| e.into_inner());
        registry.values().map(Operation::info).collect()
    }

    /// The latest version of every pattern, by name, as stored (every node reads the same
    /// table: a pattern registered on one node runs on all). No caller: for the knowledge
    /// graph and event triggers.
    ///
    /// # Errors
    /// Database failures, a stored definition that does not parse.
    pub async fn pattern_list(&self) -> Result<Vec<Pattern>, ServiceError> {
        let rows = self.inner.repo.latest_patterns().await?;
        let ops = self
            .inner
            .operations
            .read()
            .unwrap_or_else(|e| e.into_inner());
        rows.into_iter().map(|r| to_pattern(r, &ops)).collect()
    }

    /// Every registered operation. Needs `read`.
    ///
    /// # Errors
    /// RBAC refusals.
    pub fn operations(&self, caller: &Caller) -> Result<Vec<OperationInfo>, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "read")?;
        Ok(self.operation_infos())
    }

    /// Stores the `builtin` patterns whose definition changed as their next version (at
    /// start-up, after every service registered its operations).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a built-in pattern the registry refuses; database
    /// failures.
    pub async fn install(&self, builtin: Vec<PatternDef>) -> Result<(), ServiceError> {
        for def in builtin {
            match self.store(&Caller::system(), def, "builtin", false).await {
                // Another node starting at the same time stored it.
                Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn store(
        &self,
        caller: &Caller,
        def: PatternDef,
        source: &str,
        audited: bool,
    ) -> Result<(Pattern, bool), ServiceError> {
        {
            let ops = self
                .inner
                .operations
                .read()
                .unwrap_or_else(|e| e.into_inner());
            model::validate(&def, &ops)?;
        }
        self.check_schedule(&def)?;
        let text = serde_json::to_string(&def)
            .map_err(|e| ServiceError::invalid("body", e.to_string()))?;
        let audit =
            audited.then(|| caller.audit("nexus.pattern.register", "nexus_pattern", &def.name));
        let now = self.inner.clock.now_ms();
        let (version, new) = self
            .inner
            .repo
            .insert_pattern(&def.name, &text, source, caller.actor(), now, audit)
            .await?;
        let row = self
            .inner
            .repo
            .pattern(&def.name, version)
            .await?
            .ok_or_else(|| repo_gone(&def.name))?;
        let pattern = {
            let ops = self
                .inner
                .operations
                .read()
                .unwrap_or_else(|e| e.into_inner());
            to_pattern(row, &ops)?
        };
        self.sync_schedule(&pattern.definition).await?;
        Ok((pattern, new))
    }

    /// A pattern's cron trigger as the scheduler's job.
    fn schedule_of(def: &PatternDef) -> Value {
        match &def.triggers.cron {
            Some(cron) => json!({"jobs": [{
                "name": "run",
                "kind": JOB_KIND,
                "payload": {"pattern": def.name},
                "cron": cron,
                "timezone": def.triggers.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
            }]}),
            None => json!({"jobs": []}),
        }
    }

    fn check_schedule(&self, def: &PatternDef) -> Result<(), ServiceError> {
        if def.triggers.cron.is_none() && def.triggers.timezone.is_some() {
            return Err(ServiceError::invalid(
                "triggers.timezone",
                "only with triggers.cron",
            ));
        }
        if def.triggers.cron.is_some() {
            // The scheduler's own rules, before anything is stored.
            crate::scheduler::model::plan(
                &Self::schedule_of(def),
                &json!({"name": def.name}),
                self.inner.clock.now_ms(),
                Registration::Update,
            )
            .map_err(|e| match e {
                ServiceError::Invalid { field, message } => ServiceError::Invalid {
                    field: format!("triggers.cron ({field})"),
                    message,
                },
                other => other,
            })?;
        }
        if def.triggers.cron.is_some() && self.inner.scheduler.is_none() {
            return Err(ServiceError::invalid(
                "triggers.cron",
                "this node has no scheduler to run schedules",
            ));
        }
        if let Some(input) = &def.triggers.scheduled_input {
            model::check_input(def, input).map_err(|e| match e {
                ServiceError::Invalid { field, message } => ServiceError::Invalid {
                    field: format!("triggers.scheduled_{field}"),
                    message,
                },
                other => other,
            })?;
        }
        for (i, e) in def.triggers.events.iter().enumerate() {
            if !EVENTS.contains(&e.as_str()) {
                return Err(ServiceError::invalid(
                    &format!("triggers.events[{i}]"),
                    format!(
                        "{e:?} is not an event services publish ({})",
                        EVENTS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn sync_schedule(&self, def: &PatternDef) -> Result<(), ServiceError> {
        let Some(scheduler) = &self.inner.scheduler else {
            return Ok(());
        };
        let owner = Owner {
            entity_type: "nexus_pattern".to_owned(),
            entity_id: def.name.clone(),
        };
        let scheduling = Self::schedule_of(def);
        let entity = json!({"name": def.name});
        scheduler
            .register_entity_jobs(
                &Caller::system(),
                &owner,
                &scheduling,
                &entity,
                Registration::Update,
            )
            .await
            .map_err(|e| match e {
                ServiceError::Invalid { field, message } => ServiceError::Invalid {
                    field: format!("triggers.cron ({field})"),
                    message,
                },
                other => other,
            })?;
        Ok(())
    }

    /// Registers `def` (admins: `write`): its next version, or the latest when it is the same.
    /// Returns whether a version was added.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (see [`model::validate`]), RBAC refusals,
    /// database failures.
    pub async fn register_pattern(
        &self,
        caller: &Caller,
        def: PatternDef,
    ) -> Result<(Pattern, bool), ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "write")?;
        if ops::builtin_patterns().iter().any(|b| b.name == def.name) {
            return Err(ServiceError::Conflict {
                message: format!(
                    "{} ships with the node (its definition follows the code): register a pattern of another name",
                    def.name
                ),
            });
        }
        self.store(caller, def, "api", true).await
    }

    /// The latest version of every pattern. Needs `run`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn patterns(&self, caller: &Caller) -> Result<Vec<Pattern>, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "run")?;
        self.pattern_list().await
    }

    /// Pattern `name`, its latest or the given version. Needs `run`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals, database failures.
    pub async fn pattern(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<i64>,
    ) -> Result<Pattern, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "run")?;
        self.find_pattern(name, version).await
    }

    async fn find_pattern(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Pattern, ServiceError> {
        let row = match version {
            Some(v) => self.inner.repo.pattern(name, v).await?,
            None => self.inner.repo.latest_pattern(name).await?,
        };
        let row = row.ok_or_else(|| ServiceError::NotFound {
            entity: "pattern",
            id: version.map_or_else(|| name.to_owned(), |v| format!("{name} version {v}")),
        })?;
        let ops = self
            .inner
            .operations
            .read()
            .unwrap_or_else(|e| e.into_inner());
        to_pattern(row, &ops)
    }

    /// Starts a run of the latest version of pattern `name` as `caller`. Needs `run`.
    /// Returns the run and whether this call started it (false: the idempotency key's run).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `input...` or `idempotency_key`,
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] when the key belongs to a run of
    /// another pattern or input, RBAC refusals, database failures.
    pub async fn start(
        &self,
        caller: &Caller,
        name: &str,
        req: StartRun,
    ) -> Result<(Run, bool), ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "run")?;
        if caller.is_anonymous() {
            return Err(ServiceError::Unauthenticated {
                message: "starting a run needs a signed-in user".to_owned(),
            });
        }
        if let Some(k) = &req.idempotency_key {
            model::validate_key(k)?;
        }
        let key = req.idempotency_key.map_or_else(
            || format!("api:{}", uuid::Uuid::now_v7()),
            |k| format!("api:{}:{k}", caller.actor()),
        );
        let input = req.input.unwrap_or_else(|| Value::Object(Map::new()));
        self.start_as(caller, name, input, key, "api").await
    }

    async fn start_as(
        &self,
        caller: &Caller,
        name: &str,
        input: Value,
        key: String,
        trigger: &str,
    ) -> Result<(Run, bool), ServiceError> {
        let pattern = self.find_pattern(name, None).await?;
        {
            let ops = self
                .inner
                .operations
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if let Err(e) = model::validate(&pattern.definition, &ops) {
                return Err(ServiceError::Conflict {
                    message: format!(
                        "pattern {name} version {} cannot run on this node ({e})",
                        pattern.version
                    ),
                });
            }
        }
        model::check_input(&pattern.definition, &input)?;
        let now = self.inner.clock.now_ms();
        let roles = (!caller.is_system()).then(|| {
            json!(
                caller
                    .roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
            )
            .to_string()
        });
        let row = RunRow {
            id: uuid::Uuid::now_v7().to_string(),
            pattern: pattern.name.clone(),
            version: pattern.version,
            status: "running".to_owned(),
            trigger: trigger.to_owned(),
            key,
            input: input.to_string(),
            output: None,
            error: None,
            caller_id: caller.user_id().map(str::to_owned),
            caller_roles: roles,
            started_by: caller.actor().to_owned(),
            claimed_by: None,
            lease_until: None,
            fence: 0,
            next_at: now,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let steps: Vec<(String, String)> = pattern
            .order
            .iter()
            .map(|s| (s.name.clone(), s.operation.clone()))
            .collect();
        let audit = caller.audit("nexus.run.start", "nexus_run", &row.id);
        match self.inner.repo.insert_run(&row, &steps, audit).await? {
            Inserted::New => {
                counter!("ovasabi_nexus_runs_total", "pattern" => pattern.name.clone(), "outcome" => "started").increment(1);
                tracing::info!(run = %row.id, pattern = %pattern.name, trigger, "nexus run started");
                self.inner.wake.notify_one();
                Ok((self.load(&row.id).await?, true))
            }
            Inserted::Existing(existing) => {
                let same_input = serde_json::from_str::<Value>(&existing.input).ok() == Some(input);
                if existing.pattern != pattern.name || !same_input {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "idempotency key {:?} belongs to run {} of pattern {} with another input",
                            row.key, existing.id, existing.pattern
                        ),
                    });
                }
                Ok((self.load(&existing.id).await?, false))
            }
        }
    }

    async fn load(&self, id: &str) -> Result<Run, ServiceError> {
        let row = self
            .inner
            .repo
            .run(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                entity: "run",
                id: id.to_owned(),
            })?;
        let steps = self.inner.repo.steps(id).await?;
        to_run(&row, &steps)
    }

    /// Run `id` with its steps: one's own (`run`), or any (`read`). Someone else's run is a
    /// 404 for a caller without `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals, database failures.
    pub async fn run(&self, caller: &Caller, id: &str) -> Result<Run, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "run")?;
        let run = self.load(id).await?;
        if run.started_by != caller.actor() && !self.inner.policies.allows(caller, RESOURCE, "read")
        {
            return Err(ServiceError::NotFound {
                entity: "run",
                id: id.to_owned(),
            });
        }
        Ok(run)
    }

    /// Runs newest first (without their steps): one's own, or (`read`) everyone's.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `limit` or `cursor`, RBAC refusals, database
    /// failures.
    pub async fn runs(
        &self,
        caller: &Caller,
        mut filter: RunFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Run>, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "run")?;
        let limit = check_limit(limit)?;
        if !self.inner.policies.allows(caller, RESOURCE, "read") {
            filter.started_by = Some(caller.actor().to_owned());
        }
        if let Some(c) = cursor
            && !is_run_id(c)
        {
            return Err(ServiceError::invalid("cursor", "not a cursor of this list"));
        }
        let rows = self
            .inner
            .repo
            .runs(
                filter.pattern.as_deref(),
                filter.status.map(RunStatus::as_str),
                filter.started_by.as_deref(),
                cursor,
                limit,
            )
            .await?;
        let mut items = rows
            .iter()
            .map(|r| to_run(r, &[]))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Runs by pattern, then status (for the node's live facts: which patterns ran).
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_counts(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, i64>>, ServiceError> {
        let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (pattern, status, n) in self.inner.repo.counts().await? {
            out.entry(pattern).or_default().insert(status, n);
        }
        Ok(out)
    }

    /// Starts one run of every pattern listening for `event`, as the system.
    pub async fn on_event(&self, event: &Event) {
        let patterns = match self.pattern_list().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, event = event.name, "patterns not read: the event starts no run");
                return;
            }
        };
        let listening: Vec<String> = patterns
            .into_iter()
            .filter(|p| p.definition.triggers.events.iter().any(|e| e == event.name))
            .map(|p| p.name)
            .collect();
        for name in listening {
            let key = format!("event:{}:{}:{name}", event.name, event.id);
            let trigger = format!("event:{}", event.name);
            if let Err(e) = self
                .start_as(
                    &Caller::system(),
                    &name,
                    event.payload.clone(),
                    key,
                    &trigger,
                )
                .await
            {
                counter!("ovasabi_nexus_runs_total", "pattern" => name.clone(), "outcome" => "not_started").increment(1);
                tracing::warn!(error = %e, pattern = %name, event = event.name, "event did not start a run");
            }
        }
    }

    /// The handler of scheduler jobs of kind [`JOB_KIND`]: starts one run of the job's
    /// pattern per due occurrence (keyed by the job and its due time).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a job without a pattern, what starting the run returns.
    pub async fn run_scheduled(&self, job: &Job) -> Result<(), ServiceError> {
        let name = job
            .payload
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| ServiceError::invalid("payload.pattern", "the job names no pattern"))?;
        let pattern = self.find_pattern(name, None).await?;
        let input = pattern
            .definition
            .triggers
            .scheduled_input
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()));
        let due = job.next_run_at.clone().unwrap_or_default();
        let key = format!("schedule:{}:{due}", job.id);
        self.start_as(&Caller::system(), name, input, key, "schedule")
            .await?;
        Ok(())
    }

    // ----- workers -----------------------------------------------------------------------

    /// Runs this node's worker until the task is aborted: claims due runs and works on up to
    /// [`NexusConfig::concurrency`] at once (aborting the worker aborts them: their leases run
    /// out and another node resumes them).
    pub fn spawn_worker(&self) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move { svc.work().await })
    }

    async fn work(self) {
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let free = self.inner.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                match self.claim(u32::try_from(free).unwrap_or(u32::MAX)).await {
                    Ok(claimed) => {
                        for run in claimed {
                            let svc = self.clone();
                            running.spawn(async move { svc.execute(run).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "nexus claim failed"),
                }
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(self.inner.config.poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
    }

    async fn claim(&self, limit: u32) -> Result<Vec<RunRow>, ServiceError> {
        let now = self.inner.clock.now_ms();
        let lease = i64::try_from(self.inner.config.lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .inner
            .repo
            .claim(
                &self.inner.config.node,
                now,
                now.saturating_add(lease),
                limit,
            )
            .await?;
        let mut runs = Vec::with_capacity(claimed.len());
        for (r, taken_over) in claimed {
            let kind = if taken_over { "resumed" } else { "fresh" };
            counter!("ovasabi_nexus_claims_total", "kind" => kind).increment(1);
            if taken_over {
                tracing::info!(run = %r.id, "nexus run resumed after its node's lease ran out");
            }
            runs.push(r);
        }
        Ok(runs)
    }

    /// Claims and works on due runs until none is left (tests and tools: the node uses
    /// [`NexusService::spawn_worker`]). Returns the runs worked on.
    ///
    /// # Errors
    /// Database failures claiming.
    pub async fn drain(&self) -> Result<usize, ServiceError> {
        let mut n = 0;
        loop {
            let claimed = self.claim(16).await?;
            if claimed.is_empty() {
                return Ok(n);
            }
            for run in claimed {
                n += 1;
                self.execute(run).await;
            }
        }
    }

    async fn execute(&self, run: RunRow) {
        let id = run.id.clone();
        if let Err(e) = self.advance(run).await {
            tracing::warn!(run = %id, error = %e, "nexus run interrupted (it is resumed once its lease runs out)");
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Saves, or stops with `Fenced` when another node took the run over.
    async fn save(&self, run: &mut RunRow, step: Option<&StepRow>) -> Result<(), ServiceError> {
        run.updated_at = self.now();
        if self.inner.repo.save(run, step).await? {
            Ok(())
        } else {
            counter!("ovasabi_nexus_fenced_total").increment(1);
            Err(ServiceError::Conflict {
                message: format!("run {} was taken over by another node", run.id),
            })
        }
    }

    /// Works on claimed `run` until it ends or waits for a retry.
    async fn advance(&self, mut run: RunRow) -> Result<(), ServiceError> {
        let pattern = self.find_pattern(&run.pattern, Some(run.version)).await?;
        let defs: BTreeMap<&str, &model::StepDef> = pattern
            .definition
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut steps = self.inner.repo.steps(&run.id).await?;
        let input: Value =
            serde_json::from_str(&run.input).map_err(|e| corrupt("run", &run.id, e))?;
        let caller = run_caller(&run);
        let lease = i64::try_from(self.inner.config.lease.as_millis()).unwrap_or(i64::MAX);
        loop {
            let outputs: Map<String, Value> = steps
                .iter()
                .filter_map(|s| {
                    let out = s
                        .output
                        .as_deref()
                        .and_then(|o| serde_json::from_str(o).ok())?;
                    Some((s.name.clone(), out))
                })
                .collect();
            let compensating = run.status == "compensating";
            // The next step to run, or to undo.
            let next = if compensating {
                steps.iter().rposition(|s| {
                    s.status == "succeeded"
                        && defs
                            .get(s.name.as_str())
                            .is_some_and(|d| d.compensate.is_some())
                })
            } else {
                steps
                    .iter()
                    .position(|s| s.status == "pending" || s.status == "running")
            };
            let Some(i) = next else {
                return self.finish(&mut run, &steps, outputs).await;
            };
            let def = defs.get(steps[i].name.as_str()).copied().ok_or_else(|| {
                corrupt(
                    "run",
                    &run.id,
                    format!("step {} is not in its pattern", steps[i].name),
                )
            })?;
            let (op_name, template, run_as) = match (&def.compensate, compensating) {
                (Some(c), true) => (c.operation.as_str(), &c.input, c.run_as),
                _ => (def.operation.as_str(), &def.input, def.run_as),
            };
            let attempts = if compensating {
                steps[i].comp_attempts
            } else {
                steps[i].attempts
            };
            let max = i64::from(def.retry.max_attempts);
            let now = self.now();
            let op = self
                .inner
                .operations
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(op_name)
                .cloned();
            let idempotent = op.as_ref().is_some_and(|o| o.idempotent);
            // Found `running`: the node working on it stopped mid-attempt, whose outcome is
            // unknown. An idempotent operation is tried again (once more than its attempts, to
            // learn the outcome of the last); another is not: it may have happened.
            let interrupted = !compensating && steps[i].status == "running";
            if interrupted && !idempotent {
                let e = "the node running it stopped mid-attempt; not tried again, the operation is not idempotent (it may have happened)".to_owned();
                self.give_up(&mut run, &mut steps, i, compensating, e)
                    .await?;
                continue;
            }
            if attempts >= max + i64::from(interrupted) {
                let e = "the node running its last attempt stopped".to_owned();
                self.give_up(&mut run, &mut steps, i, compensating, e)
                    .await?;
                continue;
            }
            let step_input = model::resolve(template, &input, &outputs);
            {
                let s = &mut steps[i];
                if compensating {
                    s.comp_attempts += 1;
                } else {
                    s.status = "running".to_owned();
                    s.attempts += 1;
                    s.input = Some(step_input.to_string());
                    s.started_at = Some(now);
                }
            }
            run.lease_until = Some(now.saturating_add(lease));
            self.save(&mut run, Some(&steps[i])).await?;
            // The attempt ends a second before the lease does, however long the save took.
            let left_ms = run
                .lease_until
                .unwrap_or(0)
                .saturating_sub(self.now())
                .saturating_sub(1000);
            let budget = self
                .inner
                .config
                .step_timeout
                .min(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
            let attempt = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
            let ctx = StepContext {
                run_id: run.id.clone(),
                step: steps[i].name.clone(),
                attempt,
                idempotency_key: format!(
                    "nexus:{}:{}{}",
                    run.id,
                    steps[i].name,
                    if compensating { ":undo" } else { "" }
                ),
            };
            let as_caller = match run_as {
                model::RunAs::System => Caller::system(),
                model::RunAs::Caller => caller.clone(),
            };
            let started = std::time::Instant::now();
            let mut timed_out = false;
            let result = match op {
                None => Err(ServiceError::invalid(
                    "operation",
                    format!("{op_name} is no longer registered"),
                )),
                Some(op) => {
                    match tokio::time::timeout(budget, (op.handler)(as_caller, ctx, step_input))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            timed_out = true;
                            Err(ServiceError::Unavailable(sqlx::Error::PoolTimedOut))
                        }
                    }
                }
            };
            histogram!("ovasabi_nexus_step_duration_seconds", "operation" => op_name.to_owned())
                .record(started.elapsed().as_secs_f64());
            let now = self.now();
            match result {
                Ok(out) => {
                    let s = &mut steps[i];
                    if compensating {
                        s.status = "compensated".to_owned();
                        s.compensated_at = Some(now);
                        s.comp_error = None;
                        counter!("ovasabi_nexus_steps_total", "operation" => op_name.to_owned(), "outcome" => "compensated").increment(1);
                    } else {
                        s.status = "succeeded".to_owned();
                        s.output = Some(out.to_string());
                        s.finished_at = Some(now);
                        s.error = None;
                        counter!("ovasabi_nexus_steps_total", "operation" => op_name.to_owned(), "outcome" => "succeeded").increment(1);
                    }
                    self.save(&mut run, Some(&steps[i])).await?;
                }
                Err(e) => {
                    let message = if timed_out {
                        format!("the attempt took longer than {budget:?}")
                    } else {
                        e.to_string()
                    };
                    // A timed-out attempt may have happened: only an idempotent operation is
                    // tried again.
                    let again = if timed_out {
                        idempotent
                    } else {
                        model::retryable(&e)
                    };
                    if again && attempts + 1 < max {
                        let failed = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
                        let wait = def.retry.backoff(failed);
                        let s = &mut steps[i];
                        if compensating {
                            s.comp_error = Some(message);
                        } else {
                            s.status = "pending".to_owned();
                            s.error = Some(message);
                        }
                        run.next_at = now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
                        run.claimed_by = None;
                        run.lease_until = None;
                        counter!("ovasabi_nexus_steps_total", "operation" => op_name.to_owned(), "outcome" => "retried").increment(1);
                        self.save(&mut run, Some(&steps[i])).await?;
                        tracing::info!(run = %run.id, step = %steps[i].name, wait_ms = wait, "nexus step failed; tried again later");
                        return Ok(());
                    }
                    self.give_up(&mut run, &mut steps, i, compensating, message)
                        .await?;
                }
            }
        }
    }

    /// Step `i` (or its undo) failed for good.
    async fn give_up(
        &self,
        run: &mut RunRow,
        steps: &mut [StepRow],
        i: usize,
        compensating: bool,
        message: String,
    ) -> Result<(), ServiceError> {
        let now = self.now();
        let op = steps[i].operation.clone();
        if compensating {
            steps[i].status = "compensation_failed".to_owned();
            steps[i].comp_error = Some(message.clone());
            counter!("ovasabi_nexus_steps_total", "operation" => op, "outcome" => "compensation_failed").increment(1);
            tracing::warn!(run = %run.id, step = %steps[i].name, error = %message, "nexus compensation failed");
            return self.save(run, Some(&steps[i])).await;
        }
        steps[i].status = "failed".to_owned();
        steps[i].error = Some(message.clone());
        steps[i].finished_at = Some(now);
        run.status = "compensating".to_owned();
        run.error = Some(format!("step {} ({}) failed: {message}", steps[i].name, op));
        counter!("ovasabi_nexus_steps_total", "operation" => op, "outcome" => "failed")
            .increment(1);
        tracing::warn!(run = %run.id, step = %steps[i].name, error = %message, "nexus step failed: compensating");
        self.save(run, Some(&steps[i])).await?;
        for s in steps.iter_mut().filter(|s| s.status == "pending") {
            s.status = "skipped".to_owned();
            self.save(run, Some(s)).await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        run: &mut RunRow,
        steps: &[StepRow],
        outputs: Map<String, Value>,
    ) -> Result<(), ServiceError> {
        let status = if run.status == "running" {
            run.output = Some(Value::Object(outputs).to_string());
            RunStatus::Succeeded
        } else if steps.iter().any(|s| s.status == "compensated")
            && !steps.iter().any(|s| s.status == "compensation_failed")
        {
            RunStatus::Compensated
        } else {
            RunStatus::Failed
        };
        run.status = status.as_str().to_owned();
        run.finished_at = Some(self.now());
        run.claimed_by = None;
        run.lease_until = None;
        self.save(run, None).await?;
        counter!("ovasabi_nexus_runs_total", "pattern" => run.pattern.clone(), "outcome" => status.as_str()).increment(1);
        tracing::info!(run = %run.id, pattern = %run.pattern, status = status.as_str(), "nexus run ended");
        Ok(())
    }
}

fn repo_gone(name: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "pattern",
        id: name.to_owned(),
    }
}

/// What a run id looks like (a hyphenated UUID), as the API documents its cursors.
pub const RUN_ID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Whether `s` matches [`RUN_ID_PATTERN`].
pub fn is_run_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Describes a JSON schema for operation inputs and outputs from a type's OpenAPI schema.
pub fn schema_of<T: utoipa::PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or_else(|_| json!({"type": "object"}))
}

#[cfg(test)]
mod tests;
