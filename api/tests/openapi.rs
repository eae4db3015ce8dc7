//! The OpenAPI document at `GET /api/openapi.json` against a real node: it is served without a
//! token, every route it lists exists with exactly the listed methods, every answer a route
//! gives is one it documents, the routes of `api/src/http/mod.rs` are all in it, and the
//! request schemas say what the server requires.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestNode;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every route the node serves, as registered in `api/src/http/mod.rs` (method, path), except
/// the web page at `/`.
const SERVED: &[(&str, &str)] = &[
    ("get", "/api/campaigns"),
    ("post", "/api/campaigns"),
    ("get", "/api/campaigns/{id}"),
    ("patch", "/api/campaigns/{id}"),
    ("delete", "/api/campaigns/{id}"),
    ("put", "/api/campaigns/{id}/state"),
    ("patch", "/api/campaigns/{id}/state"),
    ("post", "/api/campaigns/{id}/events"),
    ("post", "/api/campaigns/{id}/events:batch"),
    ("post", "/api/campaigns/{id}/users/{user_id}/messages"),
    ("get", "/api/campaigns/{id}/stats"),
    ("get", "/api/campaigns/{id}/stats/history"),
    ("get", "/api/kg"),
    ("get", "/api/kg/services/{name}"),
    ("get", "/api/kg/impact/{node}"),
    ("get", "/api/kg/mermaid"),
    ("post", "/api/auth/register"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/refresh"),
    ("get", "/api/users/me"),
    ("patch", "/api/users/me"),
    ("get", "/api/users/{id}"),
    ("get", "/api/admin/users"),
    ("post", "/api/admin/users/{id}/roles"),
    ("delete", "/api/admin/users/{id}/roles/{role}"),
    ("post", "/api/admin/users/{id}/disable"),
    ("post", "/api/admin/users/{id}/enable"),
    ("get", "/api/admin/audit"),
    ("get", "/api/security/audit"),
    ("get", "/api/security/audit/export"),
    ("get", "/api/security/policies"),
    ("get", "/api/content"),
    ("post", "/api/content"),
    ("get", "/api/content/search"),
    ("get", "/api/content/{id}"),
    ("patch", "/api/content/{id}"),
    ("delete", "/api/content/{id}"),
    ("get", "/api/content/{id}/comments"),
    ("post", "/api/content/{id}/comments"),
    ("get", "/api/content/comments/{id}"),
    ("patch", "/api/content/comments/{id}"),
    ("delete", "/api/content/comments/{id}"),
    ("get", "/api/content/{id}/reactions"),
    ("put", "/api/content/{id}/reactions/{kind}"),
    ("delete", "/api/content/{id}/reactions/{kind}"),
    ("get", "/api/localization/messages"),
    (
        "get",
        "/api/localization/messages/{namespace}/{locale}/{key}",
    ),
    (
        "put",
        "/api/localization/messages/{namespace}/{locale}/{key}",
    ),
    (
        "delete",
        "/api/localization/messages/{namespace}/{locale}/{key}",
    ),
    (
        "get",
        "/api/localization/namespaces/{namespace}/locales/{locale}",
    ),
    (
        "put",
        "/api/localization/namespaces/{namespace}/locales/{locale}",
    ),
    ("get", "/api/localization/namespaces/{namespace}"),
    ("get", "/api/localization/namespaces/{namespace}/missing"),
    ("post", "/api/localization/format"),
    ("get", "/api/babel/markets"),
    ("post", "/api/babel/markets"),
    ("get", "/api/babel/markets/{code}"),
    ("patch", "/api/babel/markets/{code}"),
    ("delete", "/api/babel/markets/{code}"),
    ("get", "/api/babel/rules"),
    ("post", "/api/babel/rules"),
    ("get", "/api/babel/rules/{id}"),
    ("put", "/api/babel/rules/{id}"),
    ("delete", "/api/babel/rules/{id}"),
    ("get", "/api/babel/price"),
    ("get", "/api/notifications"),
    ("post", "/api/notifications"),
    ("get", "/api/notifications/unread"),
    ("post", "/api/notifications/read-all"),
    ("get", "/api/notifications/{id}"),
    ("delete", "/api/notifications/{id}"),
    ("post", "/api/notifications/{id}/read"),
    ("get", "/api/notifications/{id}/deliveries"),
    ("get", "/api/notifications/batches/{batch_id}/deliveries"),
    ("get", "/api/notifications/preferences"),
    ("patch", "/api/notifications/preferences"),
    ("get", "/api/notifications/webhooks"),
    ("post", "/api/notifications/webhooks"),
    ("delete", "/api/notifications/webhooks/{id}"),
    ("get", "/api/notifications/templates"),
    ("get", "/api/notifications/templates/{key}/{locale}"),
    ("put", "/api/notifications/templates/{key}/{locale}"),
    ("delete", "/api/notifications/templates/{key}/{locale}"),
    ("get", "/api/scheduler/jobs"),
    ("get", "/api/scheduler/jobs/{id}"),
    ("get", "/api/scheduler/jobs/{id}/runs"),
    ("post", "/api/scheduler/jobs/{id}/pause"),
    ("post", "/api/scheduler/jobs/{id}/resume"),
    ("post", "/api/scheduler/jobs/{id}/trigger"),
    ("get", "/api/talent/profiles"),
    ("post", "/api/talent/profiles"),
    ("get", "/api/talent/profiles/{id}"),
    ("patch", "/api/talent/profiles/{id}"),
    ("delete", "/api/talent/profiles/{id}"),
    ("get", "/api/talent/users/{id}/profile"),
    ("put", "/api/talent/profiles/{id}/availability"),
    ("get", "/api/talent/profiles/{id}/slots"),
    ("get", "/api/talent/profiles/{id}/bookings"),
    ("post", "/api/talent/profiles/{id}/bookings"),
    ("get", "/api/talent/bookings"),
    ("get", "/api/talent/bookings/{id}"),
    ("post", "/api/talent/bookings/{id}/confirm"),
    ("post", "/api/talent/bookings/{id}/decline"),
    ("post", "/api/talent/bookings/{id}/cancel"),
    ("post", "/api/talent/bookings/{id}/complete"),
    ("get", "/api/commerce/products"),
    ("post", "/api/commerce/products"),
    ("get", "/api/commerce/products/{sku}"),
    ("patch", "/api/commerce/products/{sku}"),
    ("get", "/api/commerce/orders"),
    ("post", "/api/commerce/orders"),
    ("get", "/api/commerce/orders/{id}"),
    ("post", "/api/commerce/orders/{id}/cancel"),
    ("post", "/api/commerce/orders/{id}/fulfil"),
    ("post", "/api/commerce/orders/{id}/payments"),
    ("post", "/api/commerce/orders/{id}/refunds"),
    ("get", "/api/commerce/orders/{id}/invoice"),
    ("get", "/api/commerce/orders/{id}/invoice/html"),
    ("get", "/api/commerce/payments/{id}"),
    ("post", "/api/commerce/payments/{id}/confirm"),
    ("post", "/api/commerce/payments/{id}/reject"),
    ("get", "/api/commerce/invoices"),
    ("get", "/api/commerce/invoices/{number}"),
    ("get", "/api/commerce/ledger/entries"),
    ("post", "/api/commerce/ledger/movements"),
    ("get", "/api/commerce/ledger/balances"),
    ("post", "/api/commerce/webhooks/{provider}"),
    ("get", "/api/referral/codes"),
    ("post", "/api/referral/codes"),
    ("get", "/api/referral/codes/{code}"),
    ("post", "/api/referral/codes/{code}/deactivate"),
    ("get", "/api/referral/codes/{code}/stats"),
    ("get", "/api/referral/campaigns/{id}/stats"),
    ("get", "/api/referral/referrals"),
    ("get", "/api/referral/referrals/{id}"),
    ("post", "/api/referral/referrals/{id}/approve"),
    ("post", "/api/referral/referrals/{id}/reject"),
    ("patch", "/api/kg"),
    ("get", "/api/nexus/operations"),
    ("get", "/api/nexus/patterns"),
    ("post", "/api/nexus/patterns"),
    ("get", "/api/nexus/patterns/{name}"),
    ("post", "/api/nexus/patterns/{name}/runs"),
    ("get", "/api/nexus/runs"),
    ("get", "/api/nexus/runs/{id}"),
    ("get", "/api/services"),
    ("get", "/api/openapi.json"),
    ("get", "/ws/{campaign_id}/{user_id}"),
    ("get", "/ws/{campaign_id}"),
];

/// Request bodies that refuse unknown fields (`#[serde(deny_unknown_fields)]`).
const CLOSED_SCHEMAS: &[&str] = &[
    "NewCampaign",
    "CampaignPatch",
    "EventBody",
    "MessageBody",
    "NewUser",
    "ProfileUpdate",
    "LoginBody",
    "RefreshBody",
    "RoleBody",
    "NewContent",
    "ContentPatch",
    "NewComment",
    "CommentBody",
    "NewTalentProfile",
    "TalentProfileUpdate",
    "TalentAvailability",
    "TalentWeeklyRule",
    "TalentDateException",
    "TalentHours",
    "NewTalentBooking",
    "NewProduct",
    "ProductUpdate",
    "NewOrder",
    "NewLine",
    "NewPayment",
    "ConfirmPayment",
    "RejectPayment",
    "NewRefund",
    "NewMovement",
    "MovementEntry",
    "NewReferralCode",
    "ReferralApproval",
    "ReferralRejection",
    "NexusPatternDefinition",
    "NexusStep",
    "NexusCompensation",
    "NexusRetry",
    "NexusTriggers",
    "StartNexusRun",
    "KgAnnotation",
];

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// Sends `method path` with `token` (or none) and an optional JSON body; never parses.
async fn send(
    node: &TestNode,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut req = node.client.request(method, node.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        content_type,
        body: res.text().await.expect("body"),
    }
}

async fn document(node: &TestNode) -> Value {
    let a = send(node, None, "get", "/api/openapi.json", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.content_type.starts_with("application/json"),
        "{}",
        a.content_type
    );
    serde_json::from_str(&a.body).expect("the document is JSON")
}

/// Every (path, method) → operation of the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((path.clone(), method.clone()), op.clone());
            }
        }
    }
    ops
}

/// The path with a harmless value for each parameter.
fn concrete(path: &str) -> String {
    path.replace("{id}", "no-such-id")
        .replace("{user_id}", "u1")
        .replace("{campaign_id}", "no-such-campaign")
        .replace("{role}", "user")
        .replace("{kind}", "like")
}

/// Whether the answer is the router's own: no route for the path, or not for the method.
fn is_router_fallback(a: &Answer) -> bool {
    let body: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
    (a.status == 404 && body["error"]["message"] == "no such endpoint")
        || (a.status == 405 && body["error"]["code"] == "method_not_allowed")
}

/// Checks that `a` is one of the operation's documented answers, with its content type, and
/// that an error has the `ErrorBody` shape.
fn assert_documented(op: &Value, what: &str, a: &Answer) {
    let responses = op["responses"].as_object().expect("responses");
    let Some(r) = responses.get(&a.status.to_string()) else {
        panic!(
            "{what}: answered {} which is not documented ({:?}): {}",
            a.status,
            responses.keys().collect::<Vec<_>>(),
            a.body
        );
    };
    if let Some(content) = r["content"].as_object() {
        assert!(
            content
                .keys()
                .any(|ct| a.content_type.starts_with(ct.as_str())),
            "{what}: {} answered as {:?}, documented as {:?}",
            a.status,
            a.content_type,
            content.keys().collect::<Vec<_>>()
        );
    }
    if a.status >= 400 {
        let body: Value = serde_json::from_str(&a.body).expect("error body is JSON");
        let error = body["error"].as_object().expect("error object");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
        assert_eq!(error.len(), 2, "{what}: {body}");
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{what}: {body}"
        );
    }
}

fn security(op: &Value) -> Vec<Value> {
    op["security"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_document_is_openapi_3_and_served_without_a_token() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "OVASABI node API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // The same document the code generates without a node.
    let generated = serde_json::to_value(api::openapi::document()).expect("serialises");
    assert_eq!(doc, generated);
    // With a token too.
    let (s, with_token) = node.call("GET", "/api/openapi.json", None).await;
    assert_eq!((s, with_token), (200, doc));
}

#[tokio::test]
async fn every_documented_route_exists_and_answers_only_documented_statuses() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    let ops = operations(&doc);
    assert!(ops.len() >= SERVED.len(), "{} operations", ops.len());
    for ((path, method), op) in &ops {
        let url = concrete(path);
        for (who, token) in [("admin", node.token.as_deref()), ("anonymous", None)] {
            let what = format!("{who} {method} {url}");
            let a = send(&node, token, method, &url, None).await;
            assert!(!is_router_fallback(&a), "{what}: no route: {}", a.body);
            assert_documented(op, &what, &a);
            let needs_token =
                op.get("security").is_some() && !security(op).iter().any(|s| s == &json!({}));
            if token.is_none() && needs_token && op.get("requestBody").is_none() {
                assert_eq!(
                    a.status, 401,
                    "{what}: documented as needing a token: {}",
                    a.body
                );
            }
        }
    }
}

#[tokio::test]
async fn undocumented_methods_on_documented_paths_are_not_served() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = concrete(path);
        for method in METHODS {
            if item.get(method).is_some() {
                continue;
            }
            let a = send(&node, node.token.as_deref(), method, &url, None).await;
            let body: Value = serde_json::from_str(&a.body).expect("JSON");
            assert_eq!(a.status, 405, "{method} {url}: {}", a.body);
            assert_eq!(
                body["error"]["code"], "method_not_allowed",
                "{method} {url}"
            );
        }
    }
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_keys().map(|(p, m)| (m, p)).collect();
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        extra.is_empty(),
        "documented but not in this test's list (add them): {extra:?}"
    );
    // Every operation has its own id.
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("item").values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "duplicate operationId in {ids:?}");
    assert_eq!(ids.len(), served.len(), "an operation without operationId");
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn schemas_errors_and_security_are_described() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "NewCampaign",
        "Campaign",
        "NewUser",
        "User",
        "Tokens",
        "Content",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    for name in CLOSED_SCHEMAS {
        assert_eq!(
            schemas[*name]["additionalProperties"], false,
            "{name} refuses unknown fields: {}",
            schemas[*name]
        );
    }
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    for r in &all_refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }

    // The error body, referenced by every 4xx/5xx answer.
    assert_eq!(
        schemas["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    for ((path, method), op) in operations(&doc) {
        for (status, r) in op["responses"].as_object().expect("responses") {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        // Every operation that looks at a token can refuse a bad one (a WebSocket upgrade
        // refuses it after the upgrade, with close code 4401).
        let websocket = op["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "websocket"));
        if !security(&op).is_empty() && !websocket {
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} takes a token but documents no 401"
            );
        }
    }

    // Bearer auth.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": doc["components"]["securitySchemes"]["bearer"]["description"],
        })
    );
    let ops = operations(&doc);
    let op = |m: &str, p: &str| ops[&(p.to_owned(), m.to_owned())].clone();
    assert_eq!(
        security(&op("get", "/api/users/me")),
        [json!({"bearer": []})]
    );
    assert_eq!(
        security(&op("get", "/api/campaigns")),
        [json!({}), json!({"bearer": []})]
    );
    assert!(op("post", "/api/auth/login").get("security").is_none());
    assert!(op("get", "/api/openapi.json").get("security").is_none());
}

#[tokio::test]
async fn new_campaign_schema_matches_what_the_server_requires() {
    let node = TestNode::start().await;
    let doc = document(&node).await;
    let schema = &doc["components"]["schemas"]["NewCampaign"];
    assert_eq!(schema["required"], json!(["name"]), "{schema}");
    assert_eq!(schema["additionalProperties"], false);
    let create = &doc["paths"]["/api/campaigns"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewCampaign"
    );
    assert_eq!(create["requestBody"]["required"], true);
    // What the schema says, the server does: only the name is needed...
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Only a name"})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    // ...without it the body is refused...
    let (s, e) = node
        .call("POST", "/api/campaigns", Some(json!({"slug": "no-name"})))
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    // ...and so is a field the schema does not list.
    let (s, e) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "x", "colour": "red"})),
        )
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    let properties: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!properties.contains("colour"));
    // Every documented property is accepted.
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({
                "name": "Every field",
                "slug": "every-field",
                "status": "draft",
                "metadata": {"scheduling": {"frequency": 2}},
                "state": {"a": 1},
                "starts_at": "2030-01-01T00:00:00Z",
                "ends_at": "2030-01-02T00:00:00Z",
            })),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let sent: BTreeSet<&str> = [
        "name",
        "slug",
        "status",
        "metadata",
        "state",
        "starts_at",
        "ends_at",
    ]
    .into();
    assert_eq!(properties, sent);
}
