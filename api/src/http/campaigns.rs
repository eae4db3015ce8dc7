//! REST handlers for campaigns: thin adapters over [`CampaignService`] and the engine's stats.
//!
//! [`CampaignService`]: services::campaign::CampaignService

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use services::campaign::{BatchEvent, Campaign, CampaignFilter, NewCampaign, Page, Status};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Auth, SignedIn};
use super::params::Params;
use super::{AppState, check_user_id};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// Largest `data` of an event or message, in bytes.
pub const MAX_EVENT_DATA: usize = 64 * 1024;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Which campaigns a list returns; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only campaigns with this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only campaigns whose `metadata.tags` holds this tag.
    tag: Option<String>,
    /// A substring of the name or slug (case-insensitive).
    q: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The changes a `PATCH /api/campaigns/{id}` may make: a JSON merge patch (RFC 7396) over
/// these fields of the campaign (the service's `Editable` view). Absent fields stay as they
/// are; `null` clears `starts_at`/`ends_at`; any other field, or `null` for the others, is
/// refused with 400. Moving an active campaign back to `draft`, or changing an ended one, is
/// refused with 409; `status: ended` ends it.
///
/// Documentation only: the handler passes the patch on as a JSON value (a merge patch tells
/// `null` from absent), and the service applies it to `Editable`, whose
/// `deny_unknown_fields` this schema repeats (the `serde` attribute only shapes the schema).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CampaignPatch {
    /// 1–200 characters once leading and trailing white space is trimmed, no control
    /// characters.
    #[schema(nullable = false)]
    name: Option<String>,
    /// 1–64 characters of `[a-z0-9-]`, not starting with `-`.
    #[schema(nullable = false)]
    slug: Option<String>,
    #[schema(nullable = false)]
    status: Option<Status>,
    /// A merge patch over `common.Metadata` (see `NewCampaign.metadata`).
    #[schema(value_type = Option<Object>, nullable = false)]
    metadata: Option<Value>,
    /// RFC 3339 UTC.
    starts_at: Option<String>,
    /// RFC 3339 UTC, after `starts_at` (409 when it is not after the stored one).
    ends_at: Option<String>,
}

/// The answer to an accepted event or message.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The campaign's sequence number after it: clients see it on the tick that carries it.
    pub seq: u64,
}

/// A campaign's live figures: this node's, and the cluster's where noted.
#[derive(Serialize, ToSchema)]
pub struct CampaignStats {
    /// The campaign id.
    pub campaign: String,
    pub status: Status,
    /// The node that answered.
    pub node: String,
    pub connections: Connections,
    /// Distinct users connected anywhere (at most 100); only for callers allowed to watch
    /// as anyone (`watch` on `campaign`), empty for others.
    pub users: Vec<String>,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Events this node's campaign task received.
    pub events: u64,
    /// The latest sequence number this node has seen (a node follows a campaign's events only
    /// while it has sessions of it; with none, this may lag the cluster's).
    pub seq: u64,
    /// The configured broadcast frequency.
    pub frequency_hz: f64,
    /// Ticks per second measured over the last 10 s (0 when the campaign is not live here).
    pub tick_rate_hz: f64,
}

/// A campaign's figures on the answering node over the last 15 minutes.
#[derive(Serialize, ToSchema)]
pub struct StatsHistory {
    /// The campaign id.
    pub campaign: String,
    /// The node that answered (every node keeps its own).
    pub node: String,
    /// Time between two samples (`stats_interval`).
    pub interval_ms: u64,
    /// Oldest first; empty until the campaign has run for one interval on this node.
    pub items: Vec<StatsPoint>,
}

/// One sample: the node's figures at `at_ms`, with the rates since the sample before.
#[derive(Serialize, ToSchema)]
pub struct StatsPoint {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Sessions on this node.
    pub connections: usize,
    /// Sessions on every node, as last reported.
    pub cluster_connections: u64,
    /// Frames handed to this node's sessions per second.
    pub frames_per_s: f64,
    /// Frames dropped (a full client queue) per second.
    pub dropped_per_s: f64,
    /// Events received per second.
    pub events_per_s: f64,
    /// Ticks per second measured over the 10 s before the sample.
    pub tick_rate_hz: f64,
    /// The configured frequency then.
    pub frequency_hz: f64,
}

impl From<engine::StatsSample> for StatsPoint {
    fn from(s: engine::StatsSample) -> Self {
        Self {
            at_ms: s.at_ms,
            connections: s.connections,
            cluster_connections: s.cluster_connections,
            frames_per_s: s.frames_per_s,
            dropped_per_s: s.dropped_per_s,
            events_per_s: s.events_per_s,
            tick_rate_hz: s.tick_rate_hz,
            frequency_hz: s.frequency_hz,
        }
    }
}

/// WebSocket sessions of a campaign.
#[derive(Serialize, ToSchema)]
pub struct Connections {
    /// Connected to this node.
    pub node: usize,
    /// Connected to every node that reported within the presence TTL.
    pub cluster: u64,
    /// Most seen at once since the campaign started.
    pub peak: u64,
}

/// Lists campaigns, a page at a time.
#[utoipa::path(
    get,
    path = "/api/campaigns",
    operation_id = "list_campaigns",
    tag = "campaigns",
    params(ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of campaigns", body = Page<Campaign>),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading campaigns", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some("draft") => Some(Status::Draft),
        Some("active") => Some(Status::Active),
        Some("ended") => Some(Status::Ended),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status {other:?}: expected draft, active or ended"
            )));
        }
    };
    Ok(Json(
        app.services
            .campaigns
            .list(
                &caller,
                &CampaignFilter {
                    status,
                    tag: q.tag,
                    query: q.q,
                },
                q.limit,
                q.cursor.as_deref(),
            )
            .await?,
    ))
}

/// Creates a campaign (`active` unless the body says otherwise); an active one starts
/// broadcasting at once.
#[utoipa::path(
    post,
    path = "/api/campaigns",
    operation_id = "create_campaign",
    tag = "campaigns",
    request_body = NewCampaign,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Campaign),
        (status = 400, description = "Malformed JSON, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow creating campaigns", body = ErrorBody),
        (status = 409, description = "The slug is taken", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewCampaign>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let c = app.services.campaigns.create(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// One campaign, by id or slug.
#[utoipa::path(
    get,
    path = "/api/campaigns/{id}",
    operation_id = "get_campaign",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The campaign", body = Campaign),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading campaigns", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.campaigns.get(&caller, &id).await?))
}

/// Changes a campaign with a JSON merge patch over its editable fields.
#[utoipa::path(
    patch,
    path = "/api/campaigns/{id}",
    operation_id = "update_campaign",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    request_body = CampaignPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The campaign after the change", body = Campaign),
        (status = 400, description = "Malformed JSON, not an object, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow updating campaigns", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign has ended, the slug is taken, or an active campaign would go back to draft", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn update(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(patch)) = (id?, body?);
    Ok(Json(
        app.services.campaigns.update(&caller, &id, &patch).await?,
    ))
}

/// Ends a campaign: its sessions get a final frame and close with 1000.
#[utoipa::path(
    delete,
    path = "/api/campaigns/{id}",
    operation_id = "end_campaign",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ended campaign", body = Campaign),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow deleting campaigns", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign has already ended", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn end(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.campaigns.end(&caller, &id).await?))
}

/// Replaces the campaign's state; the new state goes out with the next tick.
#[utoipa::path(
    put,
    path = "/api/campaigns/{id}/state",
    operation_id = "replace_campaign_state",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    request_body(content = Object, description = "The new state: any JSON object"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new state", body = Object),
        (status = 400, description = "Malformed JSON or not an object", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow publishing", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign has ended", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn put_state(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(state)) = (id?, body?);
    Ok(Json(
        app.services
            .campaigns
            .change_state(&caller, &id, &state, true)
            .await?,
    ))
}

/// Merges a JSON merge patch (RFC 7396) into the campaign's state (`null` removes a key); the
/// new state goes out with the next tick.
#[utoipa::path(
    patch,
    path = "/api/campaigns/{id}/state",
    operation_id = "patch_campaign_state",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    request_body(content = Object, description = "A JSON merge patch: any JSON object"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new state", body = Object),
        (status = 400, description = "Malformed JSON or not an object", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow publishing", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign has ended", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn patch_state(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(patch)) = (id?, body?);
    Ok(Json(
        app.services
            .campaigns
            .change_state(&caller, &id, &patch, false)
            .await?,
    ))
}

/// An event for every client of a campaign.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The event's name.
    name: String,
    /// Any JSON value, at most 64 KiB serialised; `null` when absent.
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Option<Box<RawValue>>,
    /// Send a tick with it now instead of with the next scheduled tick.
    #[serde(default)]
    immediate: bool,
}

/// `data`, or `null` when absent; `field` names it in the error.
fn event_data(data: Option<Box<RawValue>>, field: &str) -> Result<Box<RawValue>, ApiError> {
    let data = data.unwrap_or_else(|| RawValue::NULL.to_owned());
    if data.get().len() > MAX_EVENT_DATA {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{field} is larger than {MAX_EVENT_DATA} bytes"),
        ));
    }
    Ok(data)
}

/// Publishes an event to a live campaign: it goes out with the next tick (or at once with
/// `immediate`).
#[utoipa::path(
    post,
    path = "/api/campaigns/{id}/events",
    operation_id = "publish_event",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    request_body = EventBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 400, description = "Malformed JSON, unknown field or bad event name", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow publishing", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign is not live", body = ErrorBody),
        (status = 413, description = "`data` larger than 64 KiB, or body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn publish(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<EventBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(e)) = (id?, body?);
    let data = event_data(e.data, "data")?;
    let seq = app
        .services
        .campaigns
        .publish(&caller, &id, &e.name, data, e.immediate)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { seq })))
}

/// Events for every client of a campaign, published as one unit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1 to 1,000 events, published in this order with consecutive `seq`s (the whole body
    /// stays within the node's `max_body_size`, 1 MiB by default).
    events: Vec<EventBody>,
}

/// The answer to an accepted batch.
#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    /// The first event's `seq`; the `i`-th event has `first_seq + i`.
    pub first_seq: u64,
    /// The last event's `seq`.
    pub last_seq: u64,
    /// How many events were published.
    pub count: usize,
}

/// Publishes up to 1,000 events to a live campaign as one unit: they take consecutive `seq`s
/// in their order, with no other event of the campaign between them, and each goes out with
/// the next tick (or at once with its `immediate`). One invalid event refuses the whole batch
/// and names its index (`events[3]`); nothing is published then. One audit row
/// (`campaign.publish_batch`) records the call before it is answered.
#[utoipa::path(
    post,
    path = "/api/campaigns/{id}/events:batch",
    operation_id = "publish_events",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    request_body = BatchBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted", body = BatchAccepted),
        (status = 400, description = "Malformed JSON, unknown field, no events or more than 1,000, or a bad event name (the message names the event's index)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow publishing", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign is not live", body = ErrorBody),
        (status = 413, description = "An event's `data` larger than 64 KiB (named by index), or body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn publish_batch(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<BatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(b)) = (id?, body?);
    let events = b
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let data = event_data(e.data, &format!("events[{i}].data"))?;
            Ok(BatchEvent {
                name: e.name,
                data,
                immediate: e.immediate,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let count = events.len();
    let seqs = app
        .services
        .campaigns
        .publish_batch(&caller, &id, events)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAccepted {
            first_seq: *seqs.start(),
            last_seq: *seqs.end(),
            count,
        }),
    ))
}

/// A message for one user's sessions of a campaign.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The message's name.
    name: String,
    /// Any JSON value, at most 64 KiB serialised; `null` when absent.
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Option<Box<RawValue>>,
}

/// Sends a message to one user's sessions of a live campaign.
#[utoipa::path(
    post,
    path = "/api/campaigns/{id}/users/{user_id}/messages",
    operation_id = "message_user",
    tag = "campaigns",
    params(
        ("id" = String, Path, description = "Campaign id or slug"),
        ("user_id" = String, Path, description = "The user: 1-128 characters, no spaces or control characters"),
    ),
    request_body = MessageBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 400, description = "Malformed JSON, unknown field bad user id or bad message name", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow publishing", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign is not live", body = ErrorBody),
        (status = 413, description = "`data` larger than 64 KiB, or body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database or broadcast unavailable", body = ErrorBody),
    )
)]
pub async fn message(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<MessageBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((id, user)), Json(m)) = (path?, body?);
    check_user_id(&user)?;
    let data = event_data(m.data, "data")?;
    let seq = app
        .services
        .campaigns
        .message(&caller, &id, &user, &m.name, data)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { seq })))
}

/// A campaign's live figures on this node and across the cluster.
#[utoipa::path(
    get,
    path = "/api/campaigns/{id}/stats",
    operation_id = "campaign_stats",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The figures", body = CampaignStats),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading campaigns", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn stats(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let c = app.services.campaigns.get(&caller, &id).await?;
    let s = app.node.stats(&c.id).unwrap_or_default();
    Ok(Json(CampaignStats {
        frequency_hz: c.frequency_hz(),
        campaign: c.id,
        status: c.status,
        node: app.node.id().to_owned(),
        // This node, and every node that reported within the presence TTL.
        connections: Connections {
            node: s.connections,
            cluster: s.cluster_connections,
            peak: s.peak_connections,
        },
        users: if app.services.policies.allows(&caller, "campaign", "watch") {
            s.users
        } else {
            Vec::new()
        },
        frames_sent: s.frames_sent,
        frames_dropped: s.frames_dropped,
        events: s.events,
        seq: s.seq,
        tick_rate_hz: s.tick_rate_hz,
    }))
}

/// A campaign's figures on this node every `stats_interval` (5 s) over the last 15 minutes,
/// for charts: connections, frames, drops and events per second, tick rate and frequency.
#[utoipa::path(
    get,
    path = "/api/campaigns/{id}/stats/history",
    operation_id = "campaign_stats_history",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id or slug")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The samples, oldest first", body = StatsHistory),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading campaigns", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn stats_history(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let c = app.services.campaigns.get(&caller, &id).await?;
    let items = app
        .node
        .stats_history(&c.id)
        .unwrap_or_default()
        .into_iter()
        .map(StatsPoint::from)
        .collect();
    Ok(Json(StatsHistory {
        campaign: c.id,
        node: app.node.id().to_owned(),
        interval_ms: u64::try_from(app.config.stats_interval.as_millis()).unwrap_or(u64::MAX),
        items,
    }))
}
