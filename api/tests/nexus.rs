//! Nexus end to end against a node on port 0, over REST and gRPC: the registry and the shipped
//! patterns, registering a pattern (and every bad-input class: malformed JSON, unknown
//! fields, an unknown operation, a cycle, 401, 403, 415), the shipped `talent.book` run by a
//! client on the node's own worker (and failing when the slot is taken), idempotent starts,
//! who sees which runs, and the audit rows.

mod common;

use std::time::Duration;

use common::{TestNode, assert_error, audit_actions, user};
use proto::nexus::v0 as pb;
use proto::nexus::v0::nexus_service_client::NexusServiceClient;
use serde_json::{Value, json};
use services::time::{now_ms, rfc3339};
use tonic::transport::Channel;
use tonic::{Code, Request};

const DAY_MS: i64 = 24 * 3_600_000;

/// Polls run `id` until it has ended.
async fn finished(node: &TestNode, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let (s, r) = node
            .call_as(Some(token), "GET", &format!("/api/nexus/runs/{id}"), None)
            .await;
        assert_eq!(s, 200, "{r}");
        if !["running", "compensating"].contains(&r["status"].as_str().unwrap_or_default()) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} did not end");
}

/// A talent profile of `token`'s user, free every day 09:00–17:00 UTC; returns its id.
async fn talent(node: &TestNode, token: &str) -> String {
    let (s, p) = node
        .call_as(
            Some(token),
            "POST",
            "/api/talent/profiles",
            Some(json!({"headline": "Rust reviews", "timezone": "UTC"})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_owned();
    let rules: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"}))
        .collect();
    let (s, p) = node
        .call_as(
            Some(token),
            "PUT",
            &format!("/api/talent/profiles/{id}/availability"),
            Some(json!({"rules": rules, "exceptions": []})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    id
}

#[tokio::test]
async fn patterns_are_registered_and_talent_book_runs_over_rest() {
    let node = TestNode::start().await;
    let (_, alice) = user(&node, "alice").await;
    let (bob_id, bob) = user(&node, "bob").await;
    let (_, carol) = user(&node, "carol").await;

    // The shipped patterns, their steps in run order with their services.
    let (s, list) = node
        .call_as(Some(&bob), "GET", "/api/nexus/patterns", None)
        .await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .expect("patterns")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["campaign.launch", "referral.reward", "talent.book"]);
    let (s, p) = node
        .call_as(Some(&bob), "GET", "/api/nexus/patterns/talent.book", None)
        .await;
    assert_eq!(s, 200, "{p}");
    let order: Vec<(&str, &str)> = p["order"]
        .as_array()
        .expect("order")
        .iter()
        .map(|s| {
            (
                s["operation"].as_str().unwrap_or_default(),
                s["service"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("talent.check_availability", "talent"),
            ("talent.book", "talent"),
            ("talent.confirm", "talent"),
            ("notification.send", "notification")
        ]
    );
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            "/api/nexus/patterns/talent.book?version=9",
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            "/api/nexus/patterns/talent.book?colour=1",
            None,
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node.call_as(None, "GET", "/api/nexus/patterns", None).await;
    assert_error(s, &b, 401, "unauthenticated");
    // The registry is for managers and admins.
    let (s, b) = node
        .call_as(Some(&bob), "GET", "/api/nexus/operations", None)
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, ops) = node.call("GET", "/api/nexus/operations", None).await;
    assert_eq!(s, 200, "{ops}");
    assert!(
        ops.as_array()
            .expect("ops")
            .iter()
            .any(|o| o["name"] == "campaign.create" && o["input_schema"].is_object())
    );

    // Registering: admins only, checked against the registry.
    let good = json!({"name": "ops.end", "description": "Ends a campaign",
        "input_schema": {"type": "object", "required": ["campaign"], "properties": {"campaign": {"type": "string"}}},
        "steps": [{"name": "end", "operation": "campaign.end", "input": {"campaign": "$.input.campaign"}}]});
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns",
            Some(good.clone()),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(None, "POST", "/api/nexus/patterns", Some(good.clone()))
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let bad = |steps: Value| json!({"name": "ops.bad", "steps": steps});
    for (body, says) in [
        (
            bad(json!([{"name": "x", "operation": "campaign.nope"}])),
            "steps[0].operation",
        ),
        (
            bad(
                json!([{"name": "x", "operation": "campaign.end", "input": {"campaign": "$.steps.y.id"}},
                    {"name": "y", "operation": "campaign.end", "input": {"campaign": "$.steps.x.id"}}]),
            ),
            "cycle",
        ),
        (
            bad(json!([{"name": "x", "operation": "campaign.end", "input": {"campain": "a"}}])),
            "steps[0].input.campain",
        ),
        (
            bad(
                json!([{"name": "x", "operation": "campaign.create"}, {"name": "y", "operation": "campaign.end", "input": {"campaign": "$.steps.x.identifier"}}]),
            ),
            "identifier",
        ),
        (
            json!({"name": "ops.bad", "steps": [], "colour": 1}),
            "colour",
        ),
        (json!({"name": "ops.bad", "steps": "none"}), "steps"),
    ] {
        let (s, b) = node
            .call("POST", "/api/nexus/patterns", Some(body.clone()))
            .await;
        assert_error(s, &b, 400, "invalid_argument");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{says}: {b}"
        );
    }
    let (s, b) = node
        .raw(
            "POST",
            "/api/nexus/patterns",
            "application/json",
            "{\"name\":",
        )
        .await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = node
        .raw(
            "POST",
            "/api/nexus/patterns",
            "text/plain",
            &good.to_string(),
        )
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, p) = node
        .call("POST", "/api/nexus/patterns", Some(good.clone()))
        .await;
    assert_eq!(
        (s, p["version"].as_i64(), p["source"].as_str()),
        (201, Some(1), Some("api")),
        "{p}"
    );
    let (s, p) = node.call("POST", "/api/nexus/patterns", Some(good)).await;
    assert_eq!(
        (s, p["version"].as_i64()),
        (200, Some(1)),
        "the same definition: {p}"
    );
    assert_eq!(
        audit_actions(&node, "ops.end").await,
        ["nexus.pattern.register"]
    );

    // talent.book, started by the client: availability, booking, confirmation, notice.
    let talent_id = talent(&node, &alice).await;
    let day = (now_ms() / DAY_MS + 3) * DAY_MS;
    let (start, end) = (rfc3339(day + 10 * 3_600_000), rfc3339(day + 11 * 3_600_000));
    let input = json!({"talent_id": talent_id, "start": start, "end": end, "country": "DE"});
    let body = json!({"input": input, "idempotency_key": "book-1"});
    let (s, run) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{run}");
    assert_eq!(run["started_by"], bob_id.as_str());
    let id = run["id"].as_str().expect("id").to_owned();
    let (s, again) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(body),
        )
        .await;
    assert_eq!(
        (s, again["id"].as_str()),
        (200, Some(id.as_str())),
        "one key, one run"
    );
    let run = finished(&node, &bob, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let steps: Vec<(&str, &str, i64)> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
                s["attempts"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("availability", "succeeded", 1),
            ("booking", "succeeded", 1),
            ("order", "succeeded", 1),
            ("notify", "succeeded", 1)
        ]
    );
    let booking = run["output"]["booking"]["id"]
        .as_str()
        .expect("booking id")
        .to_owned();
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/talent/bookings/{booking}"),
            None,
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("confirmed")), "{b}");
    let (s, inbox) = node
        .call_as(Some(&bob), "GET", "/api/notifications", None)
        .await;
    assert_eq!(s, 200, "{inbox}");
    assert!(
        inbox["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|n| n["template"] == "talent.booked"),
        "{inbox}"
    );
    assert_eq!(audit_actions(&node, &id).await, ["nexus.run.start"]);

    // The same slot again: the availability check refuses it; nothing to undo.
    let (s, run2) = node
        .call_as(
            Some(&carol),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(json!({"input": input})),
        )
        .await;
    assert_eq!(s, 201, "{run2}");
    let run2 = finished(&node, &carol, run2["id"].as_str().expect("id")).await;
    assert_eq!(run2["status"], "failed", "{run2}");
    assert_eq!(run2["steps"][0]["status"], "failed");
    assert!(
        run2["steps"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not free"),
        "{run2}"
    );
    assert_eq!(run2["steps"][1]["status"], "skipped");

    // Bad starts.
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(json!({"input": {"talent_id": talent_id}})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("input.start"),
        "{b}"
    );
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(json!({"input": {}, "idempotency_key": "book-1"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(json!({"input": input, "idempotency_key": "book-1", "x": 1})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let other = json!({"input": {"talent_id": talent_id, "start": end, "end": rfc3339(day + 12 * 3_600_000), "country": "DE"}, "idempotency_key": "book-1"});
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/talent.book/runs",
            Some(other),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/nexus/patterns/no.such/runs",
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    // Who sees which runs.
    let (s, b) = node
        .call_as(Some(&carol), "GET", &format!("/api/nexus/runs/{id}"), None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, r) = node
        .call("GET", &format!("/api/nexus/runs/{id}"), None)
        .await;
    assert_eq!((s, r["id"].as_str()), (200, Some(id.as_str())));
    let (s, page) = node
        .call_as(Some(&carol), "GET", "/api/nexus/runs", None)
        .await;
    assert_eq!(
        (s, page["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "only carol's: {page}"
    );
    let (s, page) = node
        .call(
            "GET",
            "/api/nexus/runs?pattern=talent.book&status=succeeded&limit=1",
            None,
        )
        .await;
    assert_eq!(
        (s, page["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );
    for q in ["status=done", "limit=0", "cursor=nope", "colour=red"] {
        let (s, b) = node
            .call("GET", &format!("/api/nexus/runs?{q}"), None)
            .await;
        assert_error(s, &b, 400, "invalid_argument");
    }
    let text = node.metrics_text().await;
    assert!(text.contains("ovasabi_nexus_runs_total"), "metrics");
}

async fn client(node: &TestNode) -> NexusServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    NexusServiceClient::new(ch)
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

fn object(v: Value) -> Option<prost_types::Struct> {
    Some(proto::convert::json_to_struct(v).expect("struct"))
}

#[tokio::test]
async fn campaign_launch_and_the_registry_over_grpc() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (follower, token) = user(&node, "follower").await;
    let mut c = client(&node).await;

    let ops = c
        .list_operations(with_token(pb::ListOperationsRequest {}, &admin))
        .await
        .expect("ops")
        .into_inner();
    assert!(
        ops.operations
            .iter()
            .any(|o| o.name == "talent.book" && o.service == "talent")
    );
    let e = c
        .list_operations(with_token(pb::ListOperationsRequest {}, &token))
        .await
        .expect_err("a user");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .list_patterns(pb::ListPatternsRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(e.code(), Code::Unauthenticated);
    let p = c
        .get_pattern(with_token(
            pb::GetPatternRequest {
                name: "campaign.launch".into(),
                version: 0,
            },
            &token,
        ))
        .await
        .expect("pattern")
        .into_inner();
    assert_eq!(
        p.order.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["create", "schedule", "notify"]
    );
    assert_eq!(p.order[0].compensation, "campaign.end");

    // Register: a definition that is not a pattern, one the registry refuses, a good one.
    let e = c
        .register_pattern(with_token(
            pb::RegisterPatternRequest {
                definition: object(json!({"name": "g.x"})),
            },
            &admin,
        ))
        .await
        .expect_err("no steps");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("definition"), "{e:?}");
    let e = c
        .register_pattern(with_token(
            pb::RegisterPatternRequest {
                definition: object(
                    json!({"name": "g.x", "steps": [{"name": "a", "operation": "nope.nope"}]}),
                ),
            },
            &admin,
        ))
        .await
        .expect_err("unknown op");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("steps[0].operation"), "{e:?}");
    let e = c
        .register_pattern(with_token(
            pb::RegisterPatternRequest { definition: None },
            &admin,
        ))
        .await
        .expect_err("none");
    assert_eq!(e.code(), Code::InvalidArgument);
    let good = json!({"name": "g.end", "steps": [{"name": "a", "operation": "campaign.end", "input": {"campaign": "$.input.c"}}]});
    let e = c
        .register_pattern(with_token(
            pb::RegisterPatternRequest {
                definition: object(good.clone()),
            },
            &token,
        ))
        .await
        .expect_err("a user");
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = c
        .register_pattern(with_token(
            pb::RegisterPatternRequest {
                definition: object(good),
            },
            &admin,
        ))
        .await
        .expect("register")
        .into_inner();
    assert!(r.created);
    assert_eq!(r.pattern.expect("pattern").version, 1);

    // campaign.launch as the admin, to the follower.
    let starts = rfc3339(now_ms() + DAY_MS);
    let start = pb::StartRunRequest {
        pattern: "campaign.launch".into(),
        input: object(
            json!({"name": "Grpc launch", "slug": "grpc-launch", "starts_at": starts, "followers": [follower]}),
        ),
        idempotency_key: "g-1".into(),
    };
    let first = c
        .start_run(with_token(start.clone(), &admin))
        .await
        .expect("start")
        .into_inner();
    assert!(first.created);
    let id = first.run.expect("run").id;
    let again = c
        .start_run(with_token(start.clone(), &admin))
        .await
        .expect("again")
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.run.expect("run").id, id);
    let mut other = start;
    other.input = object(json!({"name": "Other", "starts_at": starts, "followers": [follower]}));
    let e = c
        .start_run(with_token(other, &admin))
        .await
        .expect_err("the key's input differs");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let mut run = None;
    for _ in 0..200 {
        let r = c
            .get_run(with_token(pb::GetRunRequest { id: id.clone() }, &admin))
            .await
            .expect("run")
            .into_inner();
        if r.status != "running" && r.status != "compensating" {
            run = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = run.expect("the run ended");
    assert_eq!(run.status, "succeeded", "{run:?}");
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.status.as_str())
            .collect::<Vec<_>>(),
        ["succeeded"; 3]
    );
    let (s, camp) = node.call("GET", "/api/campaigns/grpc-launch", None).await;
    assert_eq!(
        (s, camp["status"].as_str(), camp["starts_at"].as_str()),
        (200, Some("draft"), Some(starts.as_str())),
        "{camp}"
    );

    let e = c
        .start_run(with_token(
            pb::StartRunRequest {
                pattern: "campaign.launch".into(),
                input: object(json!({"name": "x"})),
                idempotency_key: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("bad input");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("input.starts_at"), "{e:?}");
    let e = c
        .start_run(with_token(
            pb::StartRunRequest {
                pattern: "no.such".into(),
                input: None,
                idempotency_key: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .get_run(with_token(pb::GetRunRequest { id: id.clone() }, &token))
        .await
        .expect_err("not the follower's run");
    assert_eq!(e.code(), Code::NotFound);
    let page = c
        .list_runs(with_token(
            pb::ListRunsRequest {
                pattern: "campaign.launch".into(),
                status: "succeeded".into(),
                limit: 10,
                cursor: String::new(),
            },
            &admin,
        ))
        .await
        .expect("runs")
        .into_inner();
    assert_eq!(page.runs.len(), 1);
    let e = c
        .list_runs(with_token(
            pb::ListRunsRequest {
                status: "done".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("bad status");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .get_pattern(with_token(
            pb::GetPatternRequest {
                name: "campaign.launch".into(),
                version: -1,
            },
            &admin,
        ))
        .await
        .expect_err("bad version");
    assert_eq!(e.code(), Code::InvalidArgument);
}
