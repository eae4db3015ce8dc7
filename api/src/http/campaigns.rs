//! REST handlers for campaigns: thin adapters over [`CampaignService`] and the engine's stats.
//!
//! [`CampaignService`]: services::campaign::CampaignService

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use services::campaign::{CampaignFilter, NewCampaign, Status};

use super::auth::Auth;
use super::{AppState, check_user_id};
use crate::error::ApiError;

/// Largest `data` of an event or message, in bytes.
pub const MAX_EVENT_DATA: usize = 64 * 1024;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    tag: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
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

pub async fn create(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<NewCampaign>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let c = app.services.campaigns.create(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.campaigns.get(&caller, &id).await?))
}

pub async fn update(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    body: JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(patch)) = (id?, body?);
    Ok(Json(
        app.services.campaigns.update(&caller, &id, &patch).await?,
    ))
}

pub async fn end(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.campaigns.end(&caller, &id).await?))
}

pub async fn put_state(
    State(app): State<AppState>,
    Auth(caller): Auth,
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

pub async fn patch_state(
    State(app): State<AppState>,
    Auth(caller): Auth,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    name: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    immediate: bool,
}

fn event_data(data: Option<Box<RawValue>>) -> Result<Box<RawValue>, ApiError> {
    let data = data.unwrap_or_else(|| RawValue::NULL.to_owned());
    if data.get().len() > MAX_EVENT_DATA {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("data is larger than {MAX_EVENT_DATA} bytes"),
        ));
    }
    Ok(data)
}

pub async fn publish(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    body: JsonBody<EventBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(e)) = (id?, body?);
    let data = event_data(e.data)?;
    let seq = app
        .services
        .campaigns
        .publish(&caller, &id, &e.name, data, e.immediate)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"seq": seq}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    name: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

pub async fn message(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<MessageBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((id, user)), Json(m)) = (path?, body?);
    check_user_id(&user)?;
    let data = event_data(m.data)?;
    let seq = app
        .services
        .campaigns
        .message(&caller, &id, &user, &m.name, data)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"seq": seq}))))
}

pub async fn stats(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let c = app.services.campaigns.get(&caller, &id).await?;
    let s = app.node.stats(&c.id).unwrap_or_default();
    Ok(Json(json!({
        "campaign": c.id,
        "status": c.status,
        "node": app.node.id(),
        // This node, and every node that reported within the presence TTL.
        "connections": {"node": s.connections, "cluster": s.cluster_connections, "peak": s.peak_connections},
        "users": s.users,
        "frames_sent": s.frames_sent,
        "frames_dropped": s.frames_dropped,
        "events": s.events,
        "seq": s.seq,
        "frequency_hz": c.frequency_hz(),
        "tick_rate_hz": s.tick_rate_hz,
    })))
}
