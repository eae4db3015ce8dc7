//! A campaign's scheduled jobs: what it declares to the [scheduler](crate::scheduler) and
//! what those jobs do when they run.
//!
//! * Its start and end: a draft with `starts_at` has the job `campaign.start` (kind
//!   `campaign.start`, at `starts_at`), a campaign with `ends_at` the job `campaign.end`.
//!   They follow the fields: moving `starts_at` moves the job; an activated draft loses its
//!   start job. A time already past when registered is due at once.
//! * Its own jobs, `metadata.scheduling.jobs` (see [`JobSpec`](crate::scheduler::JobSpec)),
//!   of kind `notification.send`: the payload is a send without `campaign_id` (template,
//!   variables, channels, recipients), checked when the campaign is written; the campaign's
//!   `id`, `slug`, `name`, `starts_at` and `ends_at` are added to the variables as `campaign`.
//!   The names `campaign.start` and `campaign.end` are the campaign's own.
//!
//! Errors name the field as the campaign's (`metadata.scheduling.jobs[0].cron`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::model::{Campaign, Status};
use crate::ServiceError;
use crate::notification::{Channel, Recipients, SendRequest};

/// The kinds of the jobs a campaign's scheduler jobs run.
pub const START: &str = "campaign.start";
pub const END: &str = "campaign.end";
pub const SEND: &str = "notification.send";

/// The payload of a `notification.send` job of a campaign: a send without its campaign.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledSend {
    pub template: String,
    #[serde(default)]
    pub variables: Map<String, Value>,
    pub channels: Vec<Channel>,
    pub recipients: Recipients,
}

impl ScheduledSend {
    /// The send for `campaign`: its facts added to the variables as `campaign`.
    pub fn for_campaign(mut self, c: &Campaign) -> SendRequest {
        self.variables.insert(
            "campaign".to_owned(),
            json!({"id": c.id, "slug": c.slug, "name": c.name,
                   "starts_at": c.starts_at, "ends_at": c.ends_at}),
        );
        SendRequest {
            template: self.template,
            variables: self.variables,
            channels: self.channels,
            recipients: self.recipients,
            campaign_id: Some(c.id.clone()),
        }
    }
}

/// Checks the campaign's own jobs beyond their shape (which the scheduler checks): their
/// kinds, names and payloads.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `metadata.scheduling.jobs[i].kind`, `.name` or `.payload`.
pub fn check_declared(metadata: &Value) -> Result<(), ServiceError> {
    let Some(Value::Array(jobs)) = metadata.pointer("/scheduling/jobs") else {
        return Ok(());
    };
    for (i, job) in jobs.iter().enumerate() {
        let field = |k: &str| format!("metadata.scheduling.jobs[{i}].{k}");
        if let Some(name) = job.get("name").and_then(Value::as_str)
            && (name == START || name == END)
        {
            return Err(ServiceError::invalid(
                &field("name"),
                format!(
                    "{name:?} is the job of the campaign's starts_at/ends_at; choose another name"
                ),
            ));
        }
        match job.get("kind").and_then(Value::as_str) {
            Some(SEND) | None => {}
            Some(kind) => {
                return Err(ServiceError::invalid(
                    &field("kind"),
                    format!(
                        "{:?} is not a kind a campaign can schedule (kinds: {SEND}; the start and end follow starts_at and ends_at)",
                        kind.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
        let payload = job.get("payload").cloned().unwrap_or(Value::Null);
        if let Err(e) = ScheduledSend::deserialize(&payload) {
            return Err(ServiceError::invalid(
                &field("payload"),
                format!("a {SEND} payload has template, variables, channels and recipients: {e}"),
            ));
        }
    }
    Ok(())
}

/// The `scheduling` value the campaign registers: its start and end jobs, then its own.
pub fn declared(c: &Campaign) -> Value {
    let mut jobs = Vec::new();
    if c.status == Status::Draft && c.starts_at.is_some() {
        jobs.push(json!({"name": START, "kind": START, "field": "starts_at"}));
    }
    if c.status != Status::Ended && c.ends_at.is_some() {
        jobs.push(json!({"name": END, "kind": END, "field": "ends_at"}));
    }
    if let Some(Value::Array(own)) = c.metadata.pointer("/scheduling/jobs") {
        jobs.extend(own.iter().cloned());
    }
    json!({ "jobs": jobs })
}

/// The campaign's own jobs only (what its author wrote, checked on create against the
/// current time).
pub fn own(metadata: &Value) -> Value {
    match metadata.pointer("/scheduling/jobs") {
        Some(jobs) => json!({ "jobs": jobs }),
        None => Value::Null,
    }
}

/// A scheduler error as the campaign's: `jobs[2].cron` becomes
/// `metadata.scheduling.jobs[0].cron` (the campaign's own jobs come after its start and end
/// jobs in [`declared`], `offset` of them).
pub fn as_campaign_error(e: ServiceError, offset: usize) -> ServiceError {
    match e {
        ServiceError::Invalid { field, message } => {
            let field = match field.strip_prefix("jobs[").and_then(|r| r.split_once(']')) {
                Some((n, rest)) => match n.parse::<usize>() {
                    Ok(n) => format!(
                        "metadata.scheduling.jobs[{}]{rest}",
                        n.saturating_sub(offset)
                    ),
                    Err(_) => format!("metadata.scheduling.{field}"),
                },
                None => format!("metadata.scheduling.{field}"),
            };
            ServiceError::Invalid { field, message }
        }
        other => other,
    }
}

/// How many of [`declared`]'s jobs are the campaign's start and end.
pub fn builtin_count(c: &Campaign) -> usize {
    usize::from(c.status == Status::Draft && c.starts_at.is_some())
        + usize::from(c.status != Status::Ended && c.ends_at.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_fields_are_named_as_the_campaigns() {
        let e = as_campaign_error(ServiceError::invalid("jobs[3].cron", "bad"), 2);
        assert!(
            matches!(&e, ServiceError::Invalid { field, .. } if field == "metadata.scheduling.jobs[1].cron"),
            "{e:?}"
        );
        let e = as_campaign_error(ServiceError::invalid("jobs", "too many"), 0);
        assert!(
            matches!(&e, ServiceError::Invalid { field, .. } if field == "metadata.scheduling.jobs"),
            "{e:?}"
        );
    }

    #[test]
    fn own_jobs_are_sends_with_names_of_their_own() {
        let ok = json!({"scheduling": {"jobs": [{"name": "reminder", "kind": "notification.send",
            "field": "starts_at", "before": "15m",
            "payload": {"template": "reminder", "channels": ["in_app"], "recipients": {"role": "user"}}}]}});
        assert!(check_declared(&ok).is_ok());
        for (bad, field) in [
            (
                json!({"name": "campaign.start", "kind": "notification.send"}),
                "metadata.scheduling.jobs[0].name",
            ),
            (
                json!({"name": "x", "kind": "campaign.end"}),
                "metadata.scheduling.jobs[0].kind",
            ),
            (
                json!({"name": "x", "kind": "notification.send", "payload": {"template": "t"}}),
                "metadata.scheduling.jobs[0].payload",
            ),
        ] {
            let e = check_declared(&json!({"scheduling": {"jobs": [bad]}}));
            assert!(
                matches!(&e, Err(ServiceError::Invalid { field: f, .. }) if f == field),
                "{e:?}"
            );
        }
    }
}
