//! REST end-to-end against a node on port 0: every endpoint's happy path and the bad inputs.

mod common;

use common::{TestNode, assert_error};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn campaign_crud_state_events_and_stats() {
    let node = TestNode::start().await;
    let (status, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Spring sale", "slug": "spring-sale", "metadata": {"scheduling": {"frequency": 5}}, "state": {"score": 0}})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["slug"], "spring-sale");
    assert_eq!(c["status"], "active");
    let id = c["id"].as_str().expect("id").to_owned();
    let (status, got) = node
        .call("GET", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["state"], json!({"score": 0}));
    let (_, by_slug) = node.call("GET", "/api/campaigns/spring-sale", None).await;
    assert_eq!(by_slug["id"], id.as_str());
    let (status, list) = node
        .call("GET", "/api/campaigns?status=active&limit=10", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().expect("items").len(), 1);

    let (status, s) = node
        .call(
            "PUT",
            &format!("/api/campaigns/{id}/state"),
            Some(json!({"score": 3, "half": 1})),
        )
        .await;
    assert_eq!((status, s.clone()), (200, json!({"score": 3, "half": 1})));
    let (status, s) = node
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}/state"),
            Some(json!({"score": 4, "half": null})),
        )
        .await;
    assert_eq!((status, s), (200, json!({"score": 4})));
    assert_eq!(
        node.publish(&id, "goal", json!({"team": "a"}), false).await,
        1
    );
    assert_eq!(
        node.publish(&id, "goal", json!({"team": "b"}), true).await,
        2
    );
    let (status, stats) = node
        .call("GET", &format!("/api/campaigns/{id}/stats"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stats["seq"], 2);
    assert_eq!(stats["frequency_hz"], 5.0);
    assert_eq!(
        stats["connections"],
        json!({"node": 0, "cluster": 0, "peak": 0})
    );
    let (status, m) = node
        .call(
            "POST",
            &format!("/api/campaigns/{id}/users/u1/messages"),
            Some(json!({"name": "hello", "data": {"x": 1}})),
        )
        .await;
    assert_eq!((status, m["seq"].as_u64()), (202, Some(2)));

    let (status, ended) = node
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("ended")));
}

#[tokio::test]
async fn bad_inputs_get_json_errors_and_change_nothing() {
    let node = TestNode::start().await;
    let id = node.campaign("target", 1.0, json!({})).await;
    let (s, b) = node
        .raw("POST", "/api/campaigns", "application/json", "{not json")
        .await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = node
        .raw("POST", "/api/campaigns", "text/plain", r#"{"name":"x"}"#)
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    for (body, why) in [
        (json!({"name": 5}), "wrong type"),
        (json!({}), "missing name"),
        (json!({"name": "x", "colour": "red"}), "unknown field"),
        (json!({"name": "x".repeat(201)}), "over-long name"),
        (json!({"name": "x", "slug": "Not A Slug"}), "bad slug"),
        (
            json!({"name": "x", "metadata": {"scheduling": {"frequency": 0.01}}}),
            "frequency too low",
        ),
        (
            json!({"name": "x", "metadata": {"scheduling": {"frequency": 100.5}}}),
            "frequency too high",
        ),
        (
            json!({"name": "x", "metadata": {"scheduling": {"frequency": "fast"}}}),
            "frequency not a number",
        ),
        (
            json!({"name": "x", "state": "not an object"}),
            "state not an object",
        ),
    ] {
        let (s, b) = node.call("POST", "/api/campaigns", Some(body)).await;
        assert_error(s, &b, 400, "invalid_argument");
        let _ = why;
    }
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "dup", "slug": "target"})),
        )
        .await;
    assert_error(s, &b, 409, "already_exists");
    let (_, list) = node.call("GET", "/api/campaigns", None).await;
    assert_eq!(
        list["items"].as_array().expect("items").len(),
        1,
        "nothing half-written"
    );

    let (s, b) = node
        .call("GET", "/api/campaigns/does-not-exist", None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node.call("GET", "/api/campaigns?limit=0", None).await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node.call("GET", "/api/campaigns?limit=abc", None).await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node.call("GET", "/api/campaigns?status=paused", None).await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}"),
            Some(json!({"metadata": {"scheduling": {"frequency": 1000}}})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call(
            "PUT",
            &format!("/api/campaigns/{id}/state"),
            Some(json!([1, 2])),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    for (body, code, status) in [
        (json!({"data": 1}), "invalid_argument", 400),
        (json!({"name": "has space"}), "invalid_argument", 400),
        (json!({"name": "x".repeat(65)}), "invalid_argument", 400),
        (
            json!({"name": "ok", "extra": true}),
            "invalid_argument",
            400,
        ),
        (
            json!({"name": "ok", "immediate": "yes"}),
            "invalid_argument",
            400,
        ),
        (
            json!({"name": "ok", "data": "x".repeat(70_000)}),
            "payload_too_large",
            413,
        ),
    ] {
        let (s, b) = node
            .call("POST", &format!("/api/campaigns/{id}/events"), Some(body))
            .await;
        assert_error(s, &b, status, code);
    }
    // Data that no subscriber could receive (a gRPC one cannot hold 1e400, nor 65 levels).
    let deep = format!(
        r#"{{"name":"ok","data":{}{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    for path in ["events", "users/u1/messages"] {
        for body in [r#"{"name":"ok","data":{"x":1e400}}"#, deep.as_str()] {
            let (s, b) = node
                .raw(
                    "POST",
                    &format!("/api/campaigns/{id}/{path}"),
                    "application/json",
                    body,
                )
                .await;
            assert_error(s, &b, 400, "invalid_argument");
        }
    }
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns/nope/events",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/campaigns/{id}/users/bad%20user/messages"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node.call("DELETE", "/api/campaigns", None).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (s, b) = node.call("GET", "/api/nothing-here", None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .raw(
            "POST",
            "/api/campaigns",
            "application/json",
            &format!(r#"{{"name":"{}"}}"#, "x".repeat(2 * 1024 * 1024)),
        )
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    let (_, stats) = node
        .call("GET", &format!("/api/campaigns/{id}/stats"), None)
        .await;
    assert_eq!(stats["seq"], 0, "no refused event was published");
}

#[tokio::test]
async fn page_metrics_health_and_readiness() {
    let node = TestNode::start().await;
    let page = node.client.get(node.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("<title>OVASABI console</title>") && html.contains("/console/app.js"),
        "the console (api/tests/console.rs tests its assets)"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    let metrics = node.metrics_text().await;
    for name in [
        "ovasabi_ws_connections",
        "ovasabi_ws_frames_sent_total",
        "ovasabi_ws_frames_dropped_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "ovasabi_build_info{version=",
    ] {
        assert!(metrics.contains(name), "{name} exported");
    }
    // Requests by route pattern (not the raw path) and status.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ovasabi_http_requests_total{")
                && l.contains(r#"route="/api/campaigns/{id}/events""#)
                && l.contains(r#"status="202""#)),
        "request counts by route and status"
    );
    assert!(
        metrics.contains("ovasabi_http_request_duration_seconds"),
        "request durations"
    );
    let health = node
        .client
        .get(format!("http://{}/healthz", node.metrics))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = node
        .client
        .get(format!("http://{}/readyz", node.metrics))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["checks"], json!({"database": true, "bus": true}));
}

#[tokio::test]
async fn campaigns_survive_a_restart_and_resume_broadcasting() {
    let dir = std::env::temp_dir().join(format!("ovasabi-restart-{}", std::process::id()));
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let mut first = TestNode::start_with(|c| c.database_url = Some(url.clone())).await;
    let id = first
        .campaign("durable", 2.0, json!({"state": {"kept": true}}))
        .await;
    assert!(first.shutdown().await);
    drop(first);
    let second = TestNode::start_with(|c| c.database_url = Some(url.clone())).await;
    let mut ws = second.ws(&id, "u", "").await;
    let tick = common::next_of(&mut ws, "tick").await;
    assert_eq!(tick["state"], json!({"kept": true}));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_dev_node_without_jwt_secret_keeps_its_secret_so_tokens_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("ovasabi-dev-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dev = |c: &mut api::config::Config| {
        c.jwt_secret = None;
        c.database_url = Some(format!("sqlite://{}/db.sqlite", dir.display()));
        c.data_dir = dir.clone();
    };
    let mut first = TestNode::start_with(dev).await;
    let token = first.token.clone().expect("a dev node prints a token");
    let (status, me) = first.call("GET", "/api/users/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert!(first.shutdown().await);
    drop(first);
    let file = dir.join(api::app::DEV_SECRET_FILE);
    let kept = std::fs::read_to_string(&file).expect("the secret is kept under data_dir");
    assert_eq!(kept.trim().len(), 64, "32 bytes in hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only its owner may read it: {mode:o}");
    }

    // The browser's token of the first start still works after the restart.
    let mut second = TestNode::start_with(dev).await;
    let (status, again) = second
        .call_as(Some(&token), "GET", "/api/users/me", None)
        .await;
    assert_eq!((status, &again["id"]), (200, &me["id"]), "{again}");
    assert!(second.shutdown().await);
    drop(second);

    // A damaged file stops the start with an error naming it, instead of a new secret.
    for damaged in [
        "not hex at all\n",
        "abcd\n",
        "+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f",
    ] {
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(&file, damaged).expect("write");
        let mut config = api::config::Config {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            metrics_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            dev: true,
            ..api::config::Config::default()
        };
        dev(&mut config);
        let err = match api::app::start(config).await {
            Ok(_) => panic!("{damaged:?}: the node started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(api::app::DEV_SECRET_FILE), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn stats_history_gives_the_last_samples_of_the_nodes_figures() {
    let node = TestNode::start_with(|c| c.stats_interval = Duration::from_millis(100)).await;
    let id = node.campaign("charted", 10.0, json!({})).await;
    let mut ws = node.ws(&id, "viewer", "").await;
    common::next_of(&mut ws, "welcome").await;
    let history = |path: String| {
        let node = &node;
        async move { node.call("GET", &path, None).await }
    };
    let path = format!("/api/campaigns/{id}/stats/history");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = history(path.clone()).await;
        assert_eq!(status, 200, "{body}");
        if body["items"]
            .as_array()
            .and_then(|items| items.last())
            .is_some_and(|s| s["connections"] == 1)
        {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sample with the viewer: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&body["campaign"], body["interval_ms"].as_u64()),
        (&json!(id), Some(100))
    );
    assert!(
        body["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{body}"
    );
    let last = body["items"]
        .as_array()
        .and_then(|i| i.last())
        .expect("a sample")
        .clone();
    for field in [
        "at_ms",
        "cluster_connections",
        "frames_per_s",
        "dropped_per_s",
        "events_per_s",
        "tick_rate_hz",
    ] {
        assert!(last[field].is_number(), "{field}: {last}");
    }
    assert_eq!(last["frequency_hz"], 10.0);
    // The slug names it too; an unknown campaign is a 404 with the JSON error body.
    let (status, _) = history("/api/campaigns/charted/stats/history".into()).await;
    assert_eq!(status, 200);
    let (status, body) = history("/api/campaigns/nope/stats/history".into()).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn each_service_counts_its_calls_under_its_metrics_prefix() {
    let node = TestNode::start().await;
    let (s, _) = node.call("GET", "/api/campaigns", None).await;
    assert_eq!(s, 200);
    let (s, _) = node
        .call("GET", "/api/babel/price?sku=tee&country=FR", None)
        .await;
    assert_eq!(s, 404, "no market for FR yet");
    let (s, _) = node.call("GET", "/api/users/me", None).await;
    assert_eq!(s, 200);
    let text = node.metrics_text().await;
    for line in [
        // One registry per test process: other tests count too, so at least one call.
        r#"ovasabi_campaign_calls_total{transport="http",outcome="ok"} "#,
        r#"ovasabi_babel_calls_total{transport="http",outcome="client_error"} "#,
        r#"ovasabi_user_calls_total{transport="http",outcome="ok"} "#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} in:\n{}",
            text.lines()
                .filter(|l| l.contains("calls_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        text.contains("ovasabi_campaign_call_duration_seconds"),
        "a duration histogram"
    );
}

#[tokio::test]
async fn a_batch_publish_reaches_clients_in_order_and_a_bad_batch_publishes_nothing() {
    let node = TestNode::start().await;
    let id = node.campaign("batch", 2.0, json!({})).await;
    let path = format!("/api/campaigns/{id}/events:batch");
    let mut ws = node.ws(&id, "viewer", "").await;
    common::next_of(&mut ws, "welcome").await;
    assert_eq!(node.publish(&id, "before", json!(0), false).await, 1);

    let events: Vec<Value> = (0..300)
        .map(|i| json!({"name": "goal", "data": {"i": i}, "immediate": i == 299}))
        .collect();
    let (s, b) = node
        .call("POST", &path, Some(json!({ "events": events })))
        .await;
    assert_eq!(
        (s, b.clone()),
        (202, json!({"first_seq": 2, "last_seq": 301, "count": 300}))
    );
    // Every client gets them, in order, with the seqs the answer gave.
    let seqs = common::tick_seqs(&mut ws, |s| s.last() == Some(&301)).await;
    assert_eq!(seqs, (1..=301).collect::<Vec<u64>>());

    // Bad batches: a clear error, nothing published (the next seq is still 302).
    let big = "x".repeat(64 * 1024);
    let mut named_bad: Vec<Value> = (0..5).map(|_| json!({"name": "ok"})).collect();
    named_bad[3] = json!({"name": "bad name"});
    let mut too_big: Vec<Value> = (0..3).map(|_| json!({"name": "ok"})).collect();
    too_big[2] = json!({"name": "ok", "data": big});
    let mut unknown: Vec<Value> = (0..3).map(|_| json!({"name": "ok"})).collect();
    unknown[1] = json!({"name": "ok", "seq": 4});
    let many: Vec<Value> = (0..1001).map(|_| json!({"name": "e"})).collect();
    for (body, status, code, says) in [
        (json!({"events": []}), 400, "invalid_argument", "events"),
        (json!({"events": many}), 400, "invalid_argument", "1001"),
        (
            json!({"events": named_bad}),
            400,
            "invalid_argument",
            "events[3]",
        ),
        (
            json!({"events": too_big}),
            413,
            "payload_too_large",
            "events[2].data",
        ),
        (
            json!({"events": unknown}),
            400,
            "invalid_argument",
            "events[1]",
        ),
        (json!({"event": []}), 400, "invalid_argument", "event"),
        (json!([{"name": "e"}]), 400, "invalid_argument", ""),
        (
            json!({"events": [{"data": 1}]}),
            400,
            "invalid_argument",
            "name",
        ),
    ] {
        let (s, b) = node.call("POST", &path, Some(body.clone())).await;
        assert_error(s, &b, status, code);
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (s, b) = node
        .raw("POST", &path, "text/plain", r#"{"events":[{"name":"e"}]}"#)
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = node
        .call_as(
            None,
            "POST",
            &path,
            Some(json!({"events": [{"name": "e"}]})),
        )
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (_, viewer) = common::user(&node, "batchviewer").await;
    let (s, b) = node
        .call_as(
            Some(&viewer),
            "POST",
            &path,
            Some(json!({"events": [{"name": "e"}]})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns/no-such/events:batch",
            Some(json!({"events": [{"name": "e"}]})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    assert_eq!(node.publish(&id, "after", json!(0), false).await, 302);

    // One audit row for the call.
    let actions = common::audit_actions(&node, &id).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "campaign.publish_batch")
            .count(),
        1,
        "{actions:?}"
    );
    let (s, _) = node
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(s, 200);
    let (s, b) = node
        .call("POST", &path, Some(json!({"events": [{"name": "e"}]})))
        .await;
    assert_error(s, &b, 409, "conflict");
}
