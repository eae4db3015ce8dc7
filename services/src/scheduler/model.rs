//! Job records, the `scheduling.jobs` shape entities declare them in, and the rules of times:
//! parsing and checking a declaration ([`plan`]), the next occurrence of a cron pattern in a
//! time zone ([`next_occurrence`]), and the retry back-off ([`backoff`]).

use std::str::FromStr;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServiceError;
use crate::time::parse_rfc3339;

/// Most jobs one entity declares.
pub const MAX_JOBS: usize = 100;
/// Longest job name, kind and entity type (characters of `[a-z0-9._-]`).
pub const MAX_NAME_LEN: usize = 64;
/// Longest entity id.
pub const MAX_ENTITY_ID_LEN: usize = 128;
/// Largest payload, serialised.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Most attempts of one occurrence, and the default.
pub const MAX_ATTEMPTS: u32 = 100;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest `before`/`after` offset of a relative job.
pub const MAX_OFFSET: Duration = Duration::from_secs(366 * 24 * 3600);
/// The keys a job declaration may have.
const JOB_KEYS: &[&str] = &[
    "name",
    "kind",
    "payload",
    "at",
    "field",
    "before",
    "after",
    "cron",
    "timezone",
    "skip_missed",
    "max_attempts",
];

/// One job as an entity declares it: an item of `metadata.scheduling.jobs`. Exactly one of
/// `at`, `field` or `cron` says when it runs:
/// * `{"name":"start","kind":"campaign.start","at":"2026-12-24T18:00:00Z"}`: once, at that
///   time (RFC 3339, UTC);
/// * `{"name":"reminder","kind":"notification.send","field":"starts_at","before":"15m",
///   "payload":{"audience":"followers"}}`: once, 15 minutes before the entity's `starts_at`
///   (`after` instead of `before` for later; neither: at that time). `field` is a key of the
///   entity (dots for nested keys) holding an RFC 3339 time, read when the jobs are
///   registered: changing the entity's time moves the job;
/// * `{"name":"digest","kind":"notification.digest","cron":"0 9 * * MON",
///   "timezone":"Europe/Paris","skip_missed":true}`: at every occurrence of the cron pattern
///   (5 fields, or 6 with seconds first) on the wall clock of `timezone` (IANA, default
///   `UTC`), daylight saving changes included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique among the entity's jobs: 1–64 characters of `[a-z0-9._-]`. A job keeps its id
    /// (and its runs) across registrations as long as its name stays.
    pub name: String,
    /// The action, named like `campaign.start`: which handler of the worker runs it
    /// (1–64 characters of `[a-z0-9._-]`).
    pub kind: String,
    /// Handed to the handler: a JSON object of at most 16 KiB (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Once, at this RFC 3339 UTC time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Once, relative to this time field of the entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `field`: this long before it (`15m`, `1h 30m`, at most 366 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// With `field`: this long after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At every occurrence of this cron pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// With `cron`: the IANA time zone of its wall clock (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// When a worker gets to the job late (the cluster was down when it was due: a cron
    /// job whose next occurrence has come too, a one-off job later than
    /// [`SchedulerConfig::missed_after`](super::SchedulerConfig::missed_after)), skip it
    /// (a `skipped` run) instead of running it once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_missed: bool,
    /// Attempts of one occurrence before the job is `failed` (1–100, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// Whether the entity whose jobs are registered was just created (a one-off time in the past
/// is refused) or updated (jobs whose time did not change keep their state; a new or moved
/// one-off time already past is due at once, a missed job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Create,
    Update,
}

/// The entity that owns jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Owner {
    /// `[a-z0-9._-]`, 1–64 characters (`campaign`).
    pub entity_type: String,
    /// 1–128 characters, no control characters.
    pub entity_id: String,
}

impl Owner {
    pub fn new(entity_type: impl Into<String>, entity_id: impl Into<String>) -> Self {
        Self {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        }
    }

    /// The owner's id in audit rows: `entity_type/entity_id`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.entity_type, self.entity_id)
    }
}

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Once, at this time (ms): `at`, or a relative job resolved against its entity.
    Once { at_ms: i64 },
    /// At every occurrence of `cron` on the wall clock of `timezone`.
    Cron { cron: String, timezone: String },
}

/// A checked job declaration, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    pub spec: JobSpec,
    pub payload: Value,
    pub trigger: Trigger,
    /// The first time it is due.
    pub first_run_ms: i64,
    pub max_attempts: u32,
}

/// Lifecycle of a job: only `active` jobs are claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Runs when due.
    Active,
    /// Held by an admin: keeps its next run time, not claimed until resumed.
    Paused,
    /// A one-off job that ran (or was skipped as missed).
    Done,
    /// Gave up after `max_attempts` failed attempts; `last_error` says why. Resume retries.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// The status named `s`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        match s {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            _ => Err(ServiceError::invalid(
                field,
                format!("unknown status {s:?}; expected active, paused, done or failed"),
            )),
        }
    }
}

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Claimed by a node, handler not finished.
    Running,
    Succeeded,
    /// The handler failed or timed out, or its node's lease expired (`error` says which).
    Failed,
    /// A missed occurrence of a `skip_missed` job: not run.
    Skipped,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    /// The entity that declared it.
    pub entity_type: String,
    pub entity_id: String,
    pub name: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The declaration as registered.
    pub spec: JobSpec,
    /// A one-off job's time (RFC 3339; a relative job's, resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A cron job's pattern and time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub skip_missed: bool,
    pub max_attempts: u32,
    pub status: JobStatus,
    /// When it is due next (absent once `done` or `failed`); for a running job, the time it
    /// was due.
    pub next_run_at: Option<String>,
    /// When its last run started (skipped occurrences are no runs).
    pub last_run_at: Option<String>,
    pub last_outcome: Option<RunOutcome>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Failed attempts of the current occurrence.
    pub attempts: u32,
    /// The node running it now, and until when its claim holds.
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One run of a job (or a skipped occurrence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: String,
    pub job_id: String,
    /// 1 for the first attempt of an occurrence.
    pub attempt: u32,
    /// When the occurrence was due.
    pub due_at: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: RunOutcome,
    pub error: Option<String>,
    /// The node that ran it.
    pub node: String,
}

/// Which jobs a list returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
}

/// What a registration changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterResult {
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub deleted: u32,
    /// The entity's jobs after the registration, by name.
    pub jobs: Vec<Job>,
}

/// A name, kind or entity type: 1–64 characters of `[a-z0-9._-]`, starting with a letter or
/// digit.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_name(field: &str, s: &str) -> Result<(), ServiceError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!(
                "must be 1-{MAX_NAME_LEN} characters of [a-z0-9._-], starting with a letter or digit"
            ),
        ))
    }
}

/// Checks an owner's type and id.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `entity_type` or `entity_id`.
pub fn validate_owner(owner: &Owner) -> Result<(), ServiceError> {
    validate_name("entity_type", &owner.entity_type)?;
    let id = &owner.entity_id;
    if id.is_empty() || id.chars().count() > MAX_ENTITY_ID_LEN || id.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "entity_id",
            format!("must have 1-{MAX_ENTITY_ID_LEN} characters and no control characters"),
        ));
    }
    Ok(())
}

/// The jobs an entity declares in `scheduling` (its `metadata.scheduling`: only the key
/// `jobs` is read, other keys belong to their services), checked and resolved at `now_ms`:
/// relative times are read from `entity`, cron jobs get their first occurrence after now.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field (`jobs`, `jobs[1].cron`, `jobs[0].timezone`,
/// `jobs[0].at`, `jobs[2].field`, ...): not an object or array, an unknown key, a value of
/// the wrong type, two jobs with one name, a bad cron pattern or one that never occurs, an
/// unknown time zone, a time that is not RFC 3339, a one-off time in the past on
/// [`Registration::Create`].
pub fn plan(
    scheduling: &Value,
    entity: &Value,
    now_ms: i64,
    on: Registration,
) -> Result<Vec<PlannedJob>, ServiceError> {
    let jobs = match scheduling {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => match map.get("jobs") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(jobs)) => jobs,
            Some(_) => return Err(ServiceError::invalid("jobs", "must be an array of jobs")),
        },
        _ => {
            return Err(ServiceError::invalid("scheduling", "must be a JSON object"));
        }
    };
    if jobs.len() > MAX_JOBS {
        return Err(ServiceError::invalid(
            "jobs",
            format!("at most {MAX_JOBS} jobs per entity"),
        ));
    }
    let mut out: Vec<PlannedJob> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let path = format!("jobs[{i}]");
        let spec = parse_spec(&path, job)?;
        let planned = check(&path, spec, entity, now_ms, on)?;
        if out.iter().any(|p| p.spec.name == planned.spec.name) {
            return Err(ServiceError::invalid(
                &format!("{path}.name"),
                format!(
                    "another job of this entity is named {:?}",
                    planned.spec.name
                ),
            ));
        }
        out.push(planned);
    }
    Ok(out)
}

/// A job declaration read key by key, so that an error names the key.
fn parse_spec(path: &str, job: &Value) -> Result<JobSpec, ServiceError> {
    let Value::Object(map) = job else {
        return Err(ServiceError::invalid(path, "must be a JSON object"));
    };
    if let Some(k) = map.keys().find(|k| !JOB_KEYS.contains(&k.as_str())) {
        return Err(ServiceError::invalid(
            &format!("{path}.{k}"),
            format!("unknown field; expected one of {}", JOB_KEYS.join(", ")),
        ));
    }
    fn get<T: DeserializeOwned>(
        path: &str,
        map: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<T>, ServiceError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| ServiceError::invalid(&format!("{path}.{key}"), e.to_string())),
        }
    }
    let required = |key: &str| -> Result<String, ServiceError> {
        get::<String>(path, map, key)?
            .ok_or_else(|| ServiceError::invalid(&format!("{path}.{key}"), "is required"))
    };
    Ok(JobSpec {
        name: required("name")?,
        kind: required("kind")?,
        payload: get(path, map, "payload")?,
        at: get(path, map, "at")?,
        field: get(path, map, "field")?,
        before: get(path, map, "before")?,
        after: get(path, map, "after")?,
        cron: get(path, map, "cron")?,
        timezone: get(path, map, "timezone")?,
        skip_missed: get(path, map, "skip_missed")?.unwrap_or(false),
        max_attempts: get(path, map, "max_attempts")?,
    })
}

/// Checks one declaration (at `path`) and resolves its first run.
fn check(
    path: &str,
    spec: JobSpec,
    entity: &Value,
    now_ms: i64,
    on: Registration,
) -> Result<PlannedJob, ServiceError> {
    let f = |key: &str| format!("{path}.{key}");
    validate_name(&f("name"), &spec.name)?;
    validate_name(&f("kind"), &spec.kind)?;
    let payload = spec
        .payload
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    check_payload(&f("payload"), &payload)?;
    let max_attempts = spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(ServiceError::invalid(
            &f("max_attempts"),
            format!("must be 1-{MAX_ATTEMPTS}"),
        ));
    }
    let whens = [
        ("at", spec.at.is_some()),
        ("field", spec.field.is_some()),
        ("cron", spec.cron.is_some()),
    ];
    let given: Vec<&str> = whens.iter().filter(|w| w.1).map(|w| w.0).collect();
    match given.as_slice() {
        [_] => {}
        [] => {
            return Err(ServiceError::invalid(
                path,
                "needs one of at (a time), field (a time of the entity) or cron",
            ));
        }
        [_, second, ..] => {
            return Err(ServiceError::invalid(
                &f(second),
                "at, field and cron exclude each other",
            ));
        }
    }
    if spec.field.is_none() {
        for key in ["before", "after"] {
            let set = if key == "before" {
                spec.before.is_some()
            } else {
                spec.after.is_some()
            };
            if set {
                return Err(ServiceError::invalid(&f(key), "only goes with field"));
            }
        }
    }
    if spec.cron.is_none() && spec.timezone.is_some() {
        return Err(ServiceError::invalid(&f("timezone"), "only goes with cron"));
    }
    let (trigger, first_run_ms) = if let Some(cron) = &spec.cron {
        let timezone = spec.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
        parse_timezone(&f("timezone"), &timezone)?;
        parse_cron(&f("cron"), cron)?;
        let first = next_occurrence(cron, &timezone, now_ms)
            .map_err(|e| ServiceError::invalid(&f("cron"), e))?;
        (
            Trigger::Cron {
                cron: cron.clone(),
                timezone,
            },
            first,
        )
    } else {
        let (at_ms, key) = if let Some(at) = &spec.at {
            (parse_rfc3339(&f("at"), at)?, "at")
        } else {
            (relative_time(path, &spec, entity)?, "field")
        };
        if on == Registration::Create && at_ms <= now_ms {
            return Err(ServiceError::invalid(
                &f(key),
                format!(
                    "{} is in the past (now is {})",
                    crate::time::rfc3339(at_ms),
                    crate::time::rfc3339(now_ms)
                ),
            ));
        }
        (Trigger::Once { at_ms }, at_ms)
    };
    Ok(PlannedJob {
        spec,
        payload,
        trigger,
        first_run_ms,
        max_attempts,
    })
}

/// The time of a relative job: its entity's `field`, moved by `before` or `after`.
fn relative_time(path: &str, spec: &JobSpec, entity: &Value) -> Result<i64, ServiceError> {
    let f = |key: &str| format!("{path}.{key}");
    let field = spec.field.as_deref().unwrap_or_default();
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(ServiceError::invalid(
            &f("field"),
            "must name a field of the entity (dots for nested fields)",
        ));
    }
    let value = field
        .split('.')
        .try_fold(entity, |v, key| v.get(key))
        .filter(|v| !v.is_null());
    let Some(value) = value else {
        return Err(ServiceError::invalid(
            &f("field"),
            format!("the entity has no time in {field:?}"),
        ));
    };
    let Some(text) = value.as_str() else {
        return Err(ServiceError::invalid(
            &f("field"),
            format!("the entity's {field:?} is not an RFC 3339 time"),
        ));
    };
    let base = parse_rfc3339(&f("field"), text)?;
    if spec.before.is_some() && spec.after.is_some() {
        return Err(ServiceError::invalid(
            &f("after"),
            "before and after exclude each other",
        ));
    }
    let offset = |key: &str, text: &str| -> Result<i64, ServiceError> {
        let d = humantime::parse_duration(text).map_err(|e| {
            ServiceError::invalid(
                &f(key),
                format!("{text:?} is not a duration like 15m or 1h 30m: {e}"),
            )
        })?;
        if d > MAX_OFFSET {
            return Err(ServiceError::invalid(&f(key), "at most 366 days"));
        }
        Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let at = match (&spec.before, &spec.after) {
        (Some(b), _) => base.checked_sub(offset("before", b)?),
        (_, Some(a)) => base.checked_add(offset("after", a)?),
        (None, None) => Some(base),
    };
    at.filter(|ms| *ms >= 0)
        .ok_or_else(|| ServiceError::invalid(&f("before"), "moves the time before 1970"))
}

fn check_payload(field: &str, payload: &Value) -> Result<(), ServiceError> {
    if !payload.is_object() {
        return Err(ServiceError::invalid(field, "must be a JSON object"));
    }
    if crate::json::depth(payload) > crate::json::MAX_DEPTH {
        return Err(ServiceError::invalid(
            field,
            format!(
                "must not nest deeper than {} levels",
                crate::json::MAX_DEPTH
            ),
        ));
    }
    if payload.to_string().len() > MAX_PAYLOAD_BYTES {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes of JSON"),
        ));
    }
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if has_nul(payload) {
        return Err(ServiceError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// The IANA time zone named `name`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn parse_timezone(field: &str, name: &str) -> Result<chrono_tz::Tz, ServiceError> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        ServiceError::invalid(
            field,
            format!("unknown time zone {name:?}; expected an IANA name like Europe/Paris or UTC"),
        )
    })
}

/// Every IANA time zone name [`parse_timezone`] takes, sorted.
pub fn time_zone_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    names.sort_unstable();
    names
}

/// The cron pattern `pattern`: 5 fields (minute hour day-of-month month day-of-week), or 6
/// with seconds first; names (`MON`, `JAN`) and `@daily`-style nicknames allowed.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn parse_cron(field: &str, pattern: &str) -> Result<croner::Cron, ServiceError> {
    croner::Cron::from_str(pattern).map_err(|e| {
        ServiceError::invalid(
            field,
            format!("{pattern:?} is not a cron pattern like \"0 9 * * MON\": {e}"),
        )
    })
}

/// The first occurrence of `cron` strictly after `after_ms`, on the wall clock of `timezone`
/// (a time the clock skips in spring runs right after the gap; a time it repeats in autumn
/// runs once).
///
/// # Errors
/// Why there is none: a bad pattern or time zone (checked at registration, so not for stored
/// jobs), or a pattern that never occurs (`0 0 30 2 *`).
pub fn next_occurrence(cron: &str, timezone: &str, after_ms: i64) -> Result<i64, String> {
    let tz =
        chrono_tz::Tz::from_str(timezone).map_err(|_| format!("unknown time zone {timezone:?}"))?;
    let pattern = croner::Cron::from_str(cron).map_err(|e| format!("bad cron pattern: {e}"))?;
    let after = Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or_else(|| format!("{after_ms} ms is out of range"))?
        .with_timezone(&tz);
    pattern
        .find_next_occurrence(&after, false)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{cron:?} has no occurrence after {after}: {e}"))
}

/// How long to wait before attempt `failed + 1` after `failed` failed attempts: `min`
/// doubled per failure up to `max`, of which a random part (`jitter` in 0–1) is taken off,
/// down to half ("equal jitter": nodes that failed together do not retry together).
pub fn backoff(failed: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doubling = failed.saturating_sub(1).min(30);
    let base = min.saturating_mul(1 << doubling).min(max).max(min);
    let jitter = jitter.clamp(0.0, 1.0);
    base.mul_f64(1.0 - jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::time::parse_rfc3339;

    fn ms(s: &str) -> i64 {
        parse_rfc3339("t", s).expect("time")
    }

    fn field_of(e: ServiceError) -> String {
        match e {
            ServiceError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn plans_the_three_kinds_of_job() {
        let now = ms("2026-12-01T00:00:00Z");
        let entity = json!({"starts_at": "2026-12-24T18:00:00Z"});
        let jobs = plan(
            &json!({"frequency": 2, "jobs": [
                {"name": "start", "kind": "campaign.start", "at": "2026-12-24T18:00:00Z"},
                {"name": "reminder", "kind": "notification.send", "field": "starts_at",
                 "before": "15m", "payload": {"audience": "followers"}},
                {"name": "digest", "kind": "notification.digest", "cron": "0 9 * * MON",
                 "timezone": "Europe/Paris", "skip_missed": true, "max_attempts": 2},
            ]}),
            &entity,
            now,
            Registration::Create,
        )
        .expect("plan");
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].first_run_ms, ms("2026-12-24T18:00:00Z"));
        assert_eq!(jobs[1].first_run_ms, ms("2026-12-24T17:45:00Z"));
        assert_eq!(jobs[1].payload, json!({"audience": "followers"}));
        // Monday 7 December 2026, 09:00 in Paris (UTC+1).
        assert_eq!(jobs[2].first_run_ms, ms("2026-12-07T08:00:00Z"));
        assert_eq!(jobs[2].max_attempts, 2);
        assert_eq!(jobs[0].max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert!(
            plan(&Value::Null, &entity, now, Registration::Create)
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let now = ms("2026-12-01T00:00:00Z");
        let entity = json!({"starts_at": "2026-12-24T18:00:00Z", "n": 3});
        let cases = [
            (json!([]), "scheduling"),
            (json!({"jobs": {}}), "jobs"),
            (json!({"jobs": [1]}), "jobs[0]"),
            (
                json!({"jobs": [{"kind": "k", "at": "2027-01-01T00:00:00Z"}]}),
                "jobs[0].name",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "every": "1h"}]}),
                "jobs[0].every",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "cron": 5}]}),
                "jobs[0].cron",
            ),
            (json!({"jobs": [{"name": "a", "kind": "k"}]}), "jobs[0]"),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "cron": "* * * * *", "at": "2027-01-01T00:00:00Z"}]}),
                "jobs[0].cron",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "cron": "61 * * * *"}]}),
                "jobs[0].cron",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "cron": "0 0 30 2 *"}]}),
                "jobs[0].cron",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}]}),
                "jobs[0].timezone",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z", "timezone": "UTC"}]}),
                "jobs[0].timezone",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "tomorrow"}]}),
                "jobs[0].at",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "2026-11-30T00:00:00Z"}]}),
                "jobs[0].at",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z", "before": "1m"}]}),
                "jobs[0].before",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "field": "ends_at"}]}),
                "jobs[0].field",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "field": "n"}]}),
                "jobs[0].field",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "field": "starts_at", "before": "soon"}]}),
                "jobs[0].before",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "field": "starts_at", "before": "30d"}]}),
                "jobs[0].field",
            ),
            (
                json!({"jobs": [{"name": "A", "kind": "k", "at": "2027-01-01T00:00:00Z"}]}),
                "jobs[0].name",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z", "payload": []}]}),
                "jobs[0].payload",
            ),
            (
                json!({"jobs": [{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z", "max_attempts": 0}]}),
                "jobs[0].max_attempts",
            ),
            (
                json!({"jobs": [
                    {"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z"},
                    {"name": "a", "kind": "k", "cron": "@daily"},
                ]}),
                "jobs[1].name",
            ),
        ];
        for (scheduling, field) in cases {
            let e = plan(&scheduling, &entity, now, Registration::Create)
                .expect_err(&scheduling.to_string());
            assert_eq!(field_of(e), field, "{scheduling}");
        }
        // On an update, a past one-off time is due at once.
        let past = json!({"jobs": [{"name": "a", "kind": "k", "at": "2026-11-30T00:00:00Z"}]});
        let jobs = plan(&past, &entity, now, Registration::Update).expect("update");
        assert_eq!(jobs[0].first_run_ms, ms("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn cron_occurrences_follow_the_wall_clock_across_daylight_saving_changes() {
        // Paris leaves summer time on 25 October 2026 (03:00 CEST → 02:00 CET).
        let sat = ms("2026-10-24T07:00:00Z"); // 09:00 CEST
        let sun = next_occurrence("0 9 * * *", "Europe/Paris", sat).expect("next");
        assert_eq!(sun, ms("2026-10-25T08:00:00Z")); // 09:00 CET
        assert_eq!(sun - sat, 25 * 3600 * 1000);
        // A time the clock repeats runs once: 02:30 on 25 October happens twice.
        let first = next_occurrence("30 2 * * *", "Europe/Paris", ms("2026-10-24T12:00:00Z"))
            .expect("first");
        assert_eq!(first, ms("2026-10-25T00:30:00Z"));
        let second = next_occurrence("30 2 * * *", "Europe/Paris", first).expect("second");
        assert_eq!(second, ms("2026-10-26T01:30:00Z"));
        // A time the clock skips (02:30 on 29 March 2026) runs right after the gap.
        let spring = next_occurrence("30 2 * * *", "Europe/Paris", ms("2026-03-28T12:00:00Z"))
            .expect("spring");
        assert_eq!(spring, ms("2026-03-29T01:00:00Z")); // 03:00 CEST
        assert!(next_occurrence("0 0 30 2 *", "UTC", sat).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_taking_off_at_most_half() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, min, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, min, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(4, min, max, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(40, min, max, 0.0), max);
        assert_eq!(backoff(4, min, max, 1.0), Duration::from_secs(4));
        let j = backoff(3, min, max, 0.5);
        assert!(
            j >= Duration::from_secs(2) && j <= Duration::from_secs(4),
            "{j:?}"
        );
    }
}
