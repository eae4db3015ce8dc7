//! Nexus records and rules: the operations services register ([`Operation`]), pattern
//! definitions ([`PatternDef`]) and how they are checked against the registry
//! ([`validate`]), input mapping ([`resolve`]), and the stored runs ([`Run`], [`StepRun`]).
//!
//! # Mapping
//! A step's `input` (and its compensation's) is a JSON template: every string of the form
//! `$.input`, `$.input.a.b`, `$.steps.<step>` or `$.steps.<step>.a.b` is replaced by that
//! part of the pattern's input or of an earlier step's output (a missing part is `null`);
//! everything else is copied as it is. A compensation may also refer to its own step's output.
//! Steps run in an order where every step comes after the steps it refers to (the declared
//! order breaks ties); a reference to a step that does not exist, or a cycle, is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServiceError;
use crate::campaign::BoxFuture;
use crate::security::Caller;

/// What a step's code is handed besides its input.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run_id: String,
    /// The step's name in its pattern.
    pub step: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Unique per run and step (the same on every attempt): services that write once per
    /// reference (a ledger movement) use it so that a retried step writes once.
    pub idempotency_key: String,
}

/// The code of an operation: the caller (the run's, or the system), the context, the input.
pub type Handler = Arc<
    dyn Fn(Caller, StepContext, Value) -> BoxFuture<'static, Result<Value, ServiceError>>
        + Send
        + Sync,
>;

/// One operation a service offers to patterns, like `campaign.create`.
#[derive(Clone)]
pub struct Operation {
    pub name: &'static str,
    /// The registration name of the service that runs it.
    pub service: &'static str,
    pub description: &'static str,
    /// JSON schemas of its input and output (object schemas: their `properties` are what
    /// mappings are checked against).
    pub input: Value,
    pub output: Value,
    /// Whether running it twice with the same input (and idempotency key) does it once.
    pub idempotent: bool,
    pub(crate) handler: Handler,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Operation {
    /// An operation running `handler`.
    pub fn new<F, Fut>(
        name: &'static str,
        service: &'static str,
        description: &'static str,
        schemas: (Value, Value),
        idempotent: bool,
        handler: F,
    ) -> Self
    where
        F: Fn(Caller, StepContext, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ServiceError>> + Send + 'static,
    {
        Self {
            name,
            service,
            description,
            input: schemas.0,
            output: schemas.1,
            idempotent,
            handler: Arc::new(move |caller, ctx, input| Box::pin(handler(caller, ctx, input))),
        }
    }

    /// What the API and the knowledge graph show of it.
    pub fn info(&self) -> OperationInfo {
        OperationInfo {
            name: self.name.to_owned(),
            service: self.service.to_owned(),
            description: self.description.to_owned(),
            input_schema: self.input.clone(),
            output_schema: self.output.clone(),
            idempotent: self.idempotent,
        }
    }
}

/// An operation as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = NexusOperation)]
pub struct OperationInfo {
    pub name: String,
    pub service: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Object)]
    pub output_schema: Value,
    pub idempotent: bool,
}

/// How often a step (or its compensation) is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NexusRetry)]
pub struct Retry {
    /// Attempts in all, 1–20 (default 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failure, doubled after each next one (10 ms – 1 h, default
    /// 500 ms), capped at `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// 10 ms – 1 h, default 60 s.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    60_000
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            backoff_ms: default_backoff(),
            max_backoff_ms: default_max_backoff(),
        }
    }
}

impl Retry {
    /// The wait before attempt `failed + 1`, after `failed` failures.
    pub fn backoff(&self, failed: u32) -> u64 {
        let shift = failed.saturating_sub(1).min(30);
        self.backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms)
    }
}

/// Who a step runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NexusRunAs)]
pub enum RunAs {
    /// The caller who started the run (the system for scheduled and event runs); each step
    /// is authorised by its own service.
    #[default]
    Caller,
    /// The node itself (an action the pattern takes on the platform's behalf).
    System,
}

/// The undo of a completed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NexusCompensation)]
pub struct Compensation {
    pub operation: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub run_as: RunAs,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// One step of a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NexusStep)]
pub struct StepDef {
    /// Unique in the pattern: 1–64 characters of `[a-z0-9_]`.
    pub name: String,
    /// A registered operation.
    pub operation: String,
    /// The input template (see the module's doc).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub run_as: RunAs,
    /// Run in reverse order for the completed steps when a later step finally fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Compensation>,
}

/// What starts a pattern besides an API call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NexusTriggers)]
pub struct Triggers {
    /// Service events (like `content.created`): each starts one run whose input is the
    /// event's payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// A cron pattern (five fields) on which the scheduler starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron's IANA time zone (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The input of scheduled runs (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub scheduled_input: Option<Value>,
}

/// A pattern as registered: named steps with their mappings and compensations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NexusPatternDefinition)]
pub struct PatternDef {
    /// 1–64 characters of `[a-z0-9._-]`, like `campaign.launch`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A JSON schema of the input (an object schema: `$.input.x` must name one of its
    /// `properties`, and each of its `required` ones must be given when a run starts).
    #[serde(default = "object_schema")]
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// 1–32 steps.
    pub steps: Vec<StepDef>,
    #[serde(default)]
    pub triggers: Triggers,
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

/// A stored version of a pattern.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = NexusPattern)]
pub struct Pattern {
    pub name: String,
    /// 1 for the first registration of the name, then +1 per change.
    pub version: i64,
    /// `builtin` (shipped with the node) or `api`.
    pub source: String,
    pub definition: PatternDef,
    /// The steps in the order they run, with the service of each operation.
    pub order: Vec<PlannedStep>,
    pub created_by: String,
    pub created_at: String,
}

/// A step in run order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = NexusPlannedStep)]
pub struct PlannedStep {
    pub name: String,
    pub operation: String,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<String>,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NexusRunStatus)]
pub enum RunStatus {
    /// Steps are being run (or wait for their next attempt).
    Running,
    /// A step failed for good: completed steps are being undone.
    Compensating,
    Succeeded,
    /// Every completed step was undone.
    Compensated,
    /// A step failed and an undo failed too (or there was nothing to undo).
    Failed,
}

impl RunStatus {
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Succeeded,
        Self::Compensated,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Succeeded => "succeeded",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(
                    field,
                    format!(
                        "{s:?} is not a run status (running, compensating, succeeded, compensated, failed)"
                    ),
                )
            })
    }

    pub fn finished(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }
}

/// A step's state in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NexusStepStatus)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Completed, then undone.
    Compensated,
    /// Completed; its undo failed for good.
    CompensationFailed,
    /// Never run (an earlier step failed).
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
            Self::Skipped => "skipped",
        }
    }

    pub(crate) fn from_db(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Compensated,
            Self::CompensationFailed,
            Self::Skipped,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = NexusStepRun)]
pub struct StepRun {
    pub name: String,
    /// Its place in the run order, from 0.
    pub position: i64,
    pub operation: String,
    pub status: StepStatus,
    pub attempts: i64,
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Attempts of its compensation.
    pub compensation_attempts: i64,
    pub compensation_error: Option<String>,
    pub compensated_at: Option<String>,
}

/// A run of a pattern.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = NexusRun)]
pub struct Run {
    pub id: String,
    pub pattern: String,
    pub version: i64,
    pub status: RunStatus,
    /// `api`, `schedule` or `event:<name>`.
    pub trigger: String,
    pub idempotency_key: String,
    #[schema(value_type = Object)]
    pub input: Value,
    /// Each step's output by step name, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Who started it (`system` for schedules and events).
    pub started_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The node working on it, while it holds the lease.
    pub claimed_by: Option<String>,
    /// Steps in run order (filled by [`crate::nexus::NexusService::run`]).
    pub steps: Vec<StepRun>,
}

/// A request to start a run.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StartNexusRun)]
pub struct StartRun {
    /// The pattern's input (default `{}`), at most 64 KiB.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// A run started twice with one key is one run (1–200 printable characters); the same
    /// key with another pattern or input is a 409.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Filters of run lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pattern: Option<String>,
    pub status: Option<RunStatus>,
    /// Only the runs this user started.
    pub started_by: Option<String>,
}

// ----- rules -----------------------------------------------------------------------------

fn name_ok(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c))
}

/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_pattern_name(field: &str, s: &str) -> Result<(), ServiceError> {
    if name_ok(s, &['.', '-']) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            "1-64 characters of a-z, 0-9, '.', '-', '_'",
        ))
    }
}

/// # Errors
/// [`ServiceError::Invalid`] naming `idempotency_key`.
pub fn validate_key(s: &str) -> Result<(), ServiceError> {
    if s.is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            "1-200 characters, no control characters",
        ));
    }
    Ok(())
}

/// A reference in a template: `$.input...` or `$.steps.<name>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ref<'a> {
    Input(Vec<&'a str>),
    Step(&'a str, Vec<&'a str>),
}

fn parse_ref(s: &str) -> Option<Result<Ref<'_>, String>> {
    let rest = s.strip_prefix("$.")?;
    let mut parts = rest.split('.');
    Some(match parts.next() {
        Some("input") => Ok(Ref::Input(parts.collect())),
        Some("steps") => match parts.next() {
            Some(step) if !step.is_empty() => Ok(Ref::Step(step, parts.collect())),
            _ => Err(format!(
                "{s:?}: a step reference is $.steps.<step>[.field...]"
            )),
        },
        _ => Err(format!(
            "{s:?}: a reference starts with $.input or $.steps.<step>"
        )),
    })
}

/// Every reference in `template`, with where it is (`a.b[2]`).
fn refs<'a>(template: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match template {
        Value::String(s) if s.starts_with("$.") => out.push((at, s)),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                refs(v, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// The properties an object schema declares, if it declares any.
fn properties(schema: &Value) -> Option<BTreeSet<&str>> {
    let props = schema.get("properties")?.as_object()?;
    Some(props.keys().map(String::as_str).collect())
}

/// Checks `def` against `operations` and returns its steps in run order.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field: a bad name, an unknown operation, a reference
/// to a step or a field that does not exist, an input key the operation does not take, or a
/// cycle of references (the message lists it).
pub fn validate(
    def: &PatternDef,
    operations: &BTreeMap<&'static str, Operation>,
) -> Result<Vec<PlannedStep>, ServiceError> {
    validate_pattern_name("name", &def.name)?;
    if def.description.chars().count() > 2000 {
        return Err(ServiceError::invalid(
            "description",
            "at most 2000 characters",
        ));
    }
    if !def.input_schema.is_object() {
        return Err(ServiceError::invalid(
            "input_schema",
            "a JSON schema object",
        ));
    }
    if def.steps.is_empty() || def.steps.len() > 32 {
        return Err(ServiceError::invalid("steps", "1 to 32 steps"));
    }
    let input_props = properties(&def.input_schema);
    let mut index = BTreeMap::new();
    for (i, s) in def.steps.iter().enumerate() {
        let field = format!("steps[{i}].name");
        if !name_ok(&s.name, &[]) {
            return Err(ServiceError::invalid(
                &field,
                "1-64 characters of a-z, 0-9, '_'",
            ));
        }
        if index.insert(s.name.as_str(), i).is_some() {
            return Err(ServiceError::invalid(
                &field,
                format!("{:?} names two steps", s.name),
            ));
        }
    }
    let retry_ok = |r: &Retry| {
        (1..=20).contains(&r.max_attempts)
            && (10..=3_600_000).contains(&r.backoff_ms)
            && (10..=3_600_000).contains(&r.max_backoff_ms)
    };
    // Every operation first: a reference may point at a step declared later.
    for (i, s) in def.steps.iter().enumerate() {
        if !operations.contains_key(s.operation.as_str()) {
            return Err(ServiceError::invalid(
                &format!("steps[{i}].operation"),
                format!("{:?} is not a registered operation", s.operation),
            ));
        }
    }
    // Edges: step → the steps it refers to.
    let mut needs: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); def.steps.len()];
    for (i, s) in def.steps.iter().enumerate() {
        if !retry_ok(&s.retry) {
            return Err(ServiceError::invalid(
                &format!("steps[{i}].retry"),
                "max_attempts 1-20, backoff_ms and max_backoff_ms 10 ms to 1 h",
            ));
        }
        let op = operations.get(s.operation.as_str()).ok_or_else(|| {
            ServiceError::invalid(
                &format!("steps[{i}].operation"),
                format!("{:?} is not a registered operation", s.operation),
            )
        })?;
        let mut templates = vec![(format!("steps[{i}].input"), &s.input, op, false)];
        let comp_op;
        if let Some(c) = &s.compensate {
            comp_op = operations.get(c.operation.as_str()).ok_or_else(|| {
                ServiceError::invalid(
                    &format!("steps[{i}].compensate.operation"),
                    format!("{:?} is not a registered operation", c.operation),
                )
            })?;
            templates.push((
                format!("steps[{i}].compensate.input"),
                &c.input,
                comp_op,
                true,
            ));
        }
        for (field, template, op, is_comp) in templates {
            let Value::Object(map) = template else {
                return Err(ServiceError::invalid(&field, "an object"));
            };
            if let Some(accepted) = properties(&op.input)
                && let Some(k) = map.keys().find(|k| !accepted.contains(k.as_str()))
            {
                return Err(ServiceError::invalid(
                    &format!("{field}.{k}"),
                    format!(
                        "{} takes no {k:?} (it takes: {})",
                        op.name,
                        accepted.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let mut found = Vec::new();
            refs(template, field.clone(), &mut found);
            for (at, text) in found {
                let r = parse_ref(text)
                    .unwrap_or_else(|| Err(format!("{text:?} is not a reference")))
                    .map_err(|m| ServiceError::invalid(&at, m))?;
                match r {
                    Ref::Input(path) => {
                        if let (Some(first), Some(props)) = (path.first(), &input_props)
                            && !props.contains(first)
                        {
                            return Err(ServiceError::invalid(
                                &at,
                                format!("the pattern's input_schema has no property {first:?}"),
                            ));
                        }
                    }
                    Ref::Step(step, path) => {
                        let Some(&j) = index.get(step) else {
                            return Err(ServiceError::invalid(
                                &at,
                                format!("no step is named {step:?}"),
                            ));
                        };
                        if j == i && !is_comp {
                            return Err(ServiceError::invalid(
                                &at,
                                format!("cycle: step {step:?} refers to its own output"),
                            ));
                        }
                        let out = operations
                            .get(def.steps[j].operation.as_str())
                            .map(|o| &o.output);
                        if let (Some(first), Some(props)) = (path.first(), out.and_then(properties))
                            && !props.contains(first)
                        {
                            return Err(ServiceError::invalid(
                                &at,
                                format!(
                                    "{} (step {step:?}) has no output field {first:?}",
                                    def.steps[j].operation
                                ),
                            ));
                        }
                        // A compensation runs after every completed step: its references order
                        // nothing.
                        if j != i && !is_comp {
                            needs[i].insert(j);
                        }
                    }
                }
            }
        }
    }
    let order = topological(&def.steps, &needs)?;
    Ok(order
        .into_iter()
        .map(|i| {
            let s = &def.steps[i];
            PlannedStep {
                name: s.name.clone(),
                operation: s.operation.clone(),
                service: operations
                    .get(s.operation.as_str())
                    .map_or("", |o| o.service)
                    .to_owned(),
                compensation: s.compensate.as_ref().map(|c| c.operation.clone()),
            }
        })
        .collect())
}

/// The steps in an order where each follows those it needs (the declared order breaking
/// ties), or the cycle.
fn topological(steps: &[StepDef], needs: &[BTreeSet<usize>]) -> Result<Vec<usize>, ServiceError> {
    let mut done = vec![false; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    while order.len() < steps.len() {
        let next = (0..steps.len()).find(|&i| !done[i] && needs[i].iter().all(|&j| done[j]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                // Walk the unfinished needs until a step repeats: that is a cycle.
                let Some(mut at) = (0..steps.len()).find(|&i| !done[i]) else {
                    break;
                };
                let mut path = vec![at];
                while let Some(&j) = needs[at].iter().find(|&&j| !done[j]) {
                    if let Some(p) = path.iter().position(|&x| x == j) {
                        let mut names: Vec<&str> =
                            path[p..].iter().map(|&k| steps[k].name.as_str()).collect();
                        names.push(steps[j].name.as_str());
                        return Err(ServiceError::invalid(
                            &format!("steps[{j}].input"),
                            format!("cycle: {}", names.join(" → ")),
                        ));
                    }
                    path.push(j);
                    at = j;
                }
                return Err(ServiceError::invalid("steps", "cycle between steps"));
            }
        }
    }
    Ok(order)
}

/// `template` with its references replaced (see the module's doc).
pub fn resolve(template: &Value, input: &Value, outputs: &Map<String, Value>) -> Value {
    match template {
        Value::String(s) => match parse_ref(s) {
            Some(Ok(Ref::Input(path))) => pick(input, &path),
            Some(Ok(Ref::Step(step, path))) => outputs
                .get(step)
                .map_or(Value::Null, |out| pick(out, &path)),
            _ => template.clone(),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(v, input, outputs)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve(v, input, outputs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn pick(v: &Value, path: &[&str]) -> Value {
    let mut at = v;
    for p in path {
        at = match at {
            Value::Object(m) => match m.get(*p) {
                Some(x) => x,
                None => return Value::Null,
            },
            Value::Array(items) => match p.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(x) => x,
                None => return Value::Null,
            },
            _ => return Value::Null,
        };
    }
    at.clone()
}

/// Checks a run's input against the pattern's schema: an object, within 64 KiB, with the
/// schema's `required` properties.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `input` or `input.<property>`.
pub fn check_input(def: &PatternDef, input: &Value) -> Result<(), ServiceError> {
    let Value::Object(map) = input else {
        return Err(ServiceError::invalid("input", "a JSON object"));
    };
    if input.to_string().len() > 64 * 1024 {
        return Err(ServiceError::invalid("input", "at most 64 KiB"));
    }
    if let Some(required) = def.input_schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if map.get(r).is_none_or(Value::is_null) {
                return Err(ServiceError::invalid(
                    &format!("input.{r}"),
                    format!("pattern {} needs {r:?}", def.name),
                ));
            }
        }
    }
    if let Some(props) = properties(&def.input_schema)
        && def.input_schema.get("additionalProperties") == Some(&Value::Bool(false))
        && let Some(k) = map.keys().find(|k| !props.contains(k.as_str()))
    {
        return Err(ServiceError::invalid(
            &format!("input.{k}"),
            format!("pattern {} takes no {k:?}", def.name),
        ));
    }
    Ok(())
}

/// Whether a step's error may pass by trying again (the database or the engine was not
/// reachable), rather than being the answer (bad input, refused, not found, conflict).
pub fn retryable(e: &ServiceError) -> bool {
    match e {
        ServiceError::Unavailable(_) | ServiceError::Database(_) => true,
        ServiceError::Broadcast { unavailable, .. } => *unavailable,
        ServiceError::RateLimited { .. } => true,
        _ => false,
    }
}
