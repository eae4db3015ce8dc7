//! `/api/kg`: the Amadeus knowledge graph this binary was built with (`knowledge_graph.json`,
//! which CI holds equal to what the code generates), with the running node's live facts.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::AppState;
use super::auth::SignedIn;
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// The committed graph, embedded at build time.
static GRAPH: LazyLock<Option<Value>> =
    LazyLock::new(|| serde_json::from_str(include_str!("../../../knowledge_graph.json")).ok());

fn graph() -> Result<&'static Value, ApiError> {
    GRAPH.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the embedded knowledge graph does not parse",
        )
    })
}

/// The whole graph, and what the node knows now: its id, which services are healthy, and the
/// runs of each pattern by status.
#[utoipa::path(
    get,
    path = "/api/kg",
    operation_id = "knowledge_graph",
    tag = "node",
    responses(
        (status = 200, description = "The graph (knowledge_graph.json) with a `live` section", body = Object),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn get(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // Curators' annotations in their nodes; the generated facts as committed.
    let mut g = app.services.curator.annotated(graph()?).await?;
    let mut healthy = serde_json::Map::new();
    for r in services::provider::registrations() {
        healthy.insert(r.name.to_owned(), json!(app.services.healthy(r.name).await));
    }
    // Which patterns ran here and elsewhere (the runs table is shared): `null` when the
    // database does not answer.
    let runs = app.services.nexus.run_counts().await.ok();
    g["live"] = json!({"node": app.node.id(), "healthy": healthy, "pattern_runs": runs});
    Ok(Json(g))
}

/// Adds, changes or removes curator annotations (`owner`, `notes`, `decisions`) with a JSON
/// merge patch over the graph that touches only `annotations` objects of nodes the graph has,
/// e.g. `{"services": {"user": {"annotations": {"owner": "identity team"}}}}` (`null` removes
/// a field, or a whole annotation). Generated facts never change: a patch that would change
/// one is a 409 listing the JSON pointers. Each replaced annotation is backed up first; the
/// change writes the audit row `kg.annotate`. Admins only (`annotate` on `kg`).
#[utoipa::path(
    patch,
    path = "/api/kg",
    operation_id = "annotate_knowledge_graph",
    tag = "node",
    request_body(content = Object, description = "A JSON merge patch over the graph's annotations"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every annotation after the change, by JSON pointer", body = std::collections::BTreeMap<String, services::amadeus::curator::Annotation>),
        (status = 400, description = "Malformed JSON, or a bad annotation (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "The patch would change generated facts (the error lists them)", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn annotate(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(patch) = body?;
    Ok(Json(
        app.services
            .curator
            .annotate(&caller, graph()?, &patch)
            .await?,
    ))
}

/// One service of the graph, with what depends on it.
#[utoipa::path(
    get,
    path = "/api/kg/services/{name}",
    operation_id = "knowledge_graph_service",
    tag = "node",
    params(("name" = String, Path, description = "A service name, e.g. user")),
    responses(
        (status = 200, description = "The service's facts and what depends on it", body = Object),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn service(
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(name) = name?;
    let g = graph()?;
    if g["services"].get(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no service {name:?} in the graph"
        )));
    }
    crate::kg::query(g, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no service {name:?} in the graph")))
}

/// Everything that depends on a service, infrastructure, table or endpoint (`GET /api/users/me`
/// or `user.v0.UserService`, percent-encoded), directly or transitively, with the path.
#[utoipa::path(
    get,
    path = "/api/kg/impact/{node}",
    operation_id = "knowledge_graph_impact",
    tag = "node",
    params(("node" = String, Path, description = "A service, infrastructure, table or endpoint")),
    responses(
        (status = 200, description = "Each dependent, with the steps that lead to it", body = Object),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "Nothing of that name in the graph", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn impact(
    node: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(node) = node?;
    let hit = services::amadeus::impact(graph()?, &node)
        .ok_or_else(|| ApiError::not_found(format!("nothing called {node:?} in the graph")))?;
    let items: Vec<Value> = hit
        .into_iter()
        .map(|(dependent, path)| {
            let path: Vec<Value> = path
                .into_iter()
                .map(|(from, relation, to)| json!({"from": from, "relation": relation, "to": to}))
                .collect();
            json!({"dependent": dependent, "path": path})
        })
        .collect();
    Ok(Json(json!({"node": node, "items": items})))
}

/// Options of the diagram.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MermaidQuery {
    /// Only this service or infrastructure and its direct neighbours.
    focus: Option<String>,
}

/// A Mermaid flowchart of the services and their dependencies.
#[utoipa::path(
    get,
    path = "/api/kg/mermaid",
    operation_id = "knowledge_graph_mermaid",
    tag = "node",
    params(MermaidQuery),
    responses(
        (status = 200, description = "Mermaid flowchart source", content_type = "text/plain", body = String),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 404, description = "No such service or infrastructure", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn mermaid(query: Params<MermaidQuery>) -> Result<impl IntoResponse, ApiError> {
    let Params(q) = query;
    let g = graph()?;
    if let Some(focus) = &q.focus {
        let services = g["services"].as_object();
        let known = services.is_some_and(|s| {
            s.contains_key(focus)
                || s.values().any(|v| {
                    v["depends_on"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d == focus.as_str()))
                })
        });
        if !known {
            return Err(ApiError::not_found(format!(
                "no service or infrastructure {focus:?} in the graph"
            )));
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        services::amadeus::mermaid(g, q.focus.as_deref()),
    ))
}
