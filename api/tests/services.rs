//! The service layer end to end against a node on port 0, over REST and gRPC: accounts and
//! tokens, RBAC, the audit rows each mutation wrote, admin operations, content with full-text
//! search, WebSocket auth, and gRPC health and reflection.

mod common;

use common::{TestNode, assert_error, next_of, user};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Audit rows about `entity_id`, oldest first, read by the admin.
async fn audit_of(node: &TestNode, entity_id: &str) -> Vec<Value> {
    let (s, page) = node
        .call(
            "GET",
            &format!("/api/security/audit?entity_id={entity_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().expect("items").clone()
}

/// As [`audit_of`], once there are `n` rows (or after 10 s): the rows of publishes and
/// messages are written in the background, just after the call is answered.
async fn audit_of_at_least(node: &TestNode, entity_id: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = audit_of(node, entity_id).await;
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn actions(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["action"].as_str().expect("action"))
        .collect()
}

#[tokio::test]
async fn accounts_tokens_roles_and_audit_over_rest() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("dev admin token");

    // Bad registrations: every class gets a clear 4xx and writes nothing.
    let bad = [
        (
            json!({"username": "ab", "email": "a@example.org", "password": "password123"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": "okname", "email": "nope", "password": "password123"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": "okname", "email": "a@example.org", "password": "short"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": "okname", "email": "a@example.org"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": "okname", "email": "a@example.org", "password": "password123", "role": "admin"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": 5, "email": "a@example.org", "password": "password123"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"username": "x".repeat(10_000), "email": "a@example.org", "password": "password123"}),
            400,
            "invalid_argument",
        ),
    ];
    for (body, status, code) in bad {
        let (s, b) = node
            .call_as(None, "POST", "/api/auth/register", Some(body))
            .await;
        assert_error(s, &b, status, code);
    }
    let (s, b) = node
        .raw(
            "POST",
            "/api/auth/register",
            "application/json",
            "{\"username\": ",
        )
        .await;
    assert_error(s, &b, 400, "malformed_json");

    let (alice, alice_token) = user(&node, "alice").await;
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/register",
            Some(json!({"username": "ALICE", "email": "other@example.org", "password": "password123"})),
        )
        .await;
    assert_error(s, &b, 409, "already_exists");

    // Login, refresh, me.
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "alice", "password": "wrong-password"})),
        )
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, tokens) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "alice@example.org", "password": "password123"})),
        )
        .await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let (s, again) = node
        .call_as(
            None,
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": tokens["refresh_token"]})),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": tokens["access_token"]})),
        )
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, me) = node
        .call_as(Some(&alice_token), "GET", "/api/users/me", None)
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["id"], alice.as_str());
    assert_eq!(me["roles"], json!(["user"]));
    assert!(me.get("password_hash").is_none());
    let (s, b) = node.call_as(None, "GET", "/api/users/me", None).await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = node
        .call_as(Some("garbage"), "GET", "/api/users/me", None)
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let res = node
        .client
        .get(node.url("/api/users/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    let (s, me) = node
        .call_as(
            Some(&alice_token),
            "PATCH",
            "/api/users/me",
            Some(json!({"display_name": "Alice"})),
        )
        .await;
    assert_eq!((s, me["display_name"].clone()), (200, json!("Alice")));

    // A plain user may not create campaigns, manage users or read the audit log.
    let campaign = json!({"name": "Managed", "metadata": {"scheduling": {"frequency": 2}}});
    let (s, b) = node
        .call_as(
            Some(&alice_token),
            "POST",
            "/api/campaigns",
            Some(campaign.clone()),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(None, "POST", "/api/campaigns", Some(campaign.clone()))
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    for path in [
        "/api/admin/users",
        "/api/security/audit",
        "/api/security/policies",
        &format!("/api/users/{alice}"),
    ] {
        let (s, b) = node.call_as(Some(&alice_token), "GET", path, None).await;
        if path.ends_with(&alice) {
            assert_eq!(s, 200, "a user reads their own account: {b}");
        } else {
            assert_error(s, &b, 403, "forbidden");
        }
    }
    // Anyone may read campaigns.
    let (s, _) = node.call_as(None, "GET", "/api/campaigns", None).await;
    assert_eq!(s, 200);

    // The admin grants campaign_manager; after a new login alice creates a campaign.
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/admin/users/{alice}/roles"),
            Some(json!({"role": "campaign_manager"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["roles"], json!(["user", "campaign_manager"]));
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/admin/users/{alice}/roles"),
            Some(json!({"role": "emperor"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call("POST", "/api/admin/users/no-such-user/disable", None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (_, t) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "alice", "password": "password123"})),
        )
        .await;
    let manager = t["access_token"].as_str().expect("token").to_owned();
    let (s, c) = node
        .call_as(Some(&manager), "POST", "/api/campaigns", Some(campaign))
        .await;
    assert_eq!(s, 201, "{c}");
    let cid = c["id"].as_str().expect("id").to_owned();
    let (s, _) = node
        .call_as(
            Some(&manager),
            "PATCH",
            &format!("/api/campaigns/{cid}"),
            Some(json!({"metadata": {"scheduling": {"frequency": 4}}})),
        )
        .await;
    assert_eq!(s, 200);
    // Publishes and messages store nothing but are audited too.
    let (s, _) = node
        .call_as(
            Some(&manager),
            "POST",
            &format!("/api/campaigns/{cid}/events"),
            Some(json!({"name": "e", "data": [1]})),
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = node
        .call_as(
            Some(&manager),
            "POST",
            &format!("/api/campaigns/{cid}/users/bob/messages"),
            Some(json!({"name": "m"})),
        )
        .await;
    assert_eq!(s, 202);

    // Admin listing with filters and pagination; bad filters are 400.
    let (s, managers) = node
        .call("GET", "/api/admin/users?role=campaign_manager", None)
        .await;
    assert_eq!(s, 200, "{managers}");
    assert_eq!(managers["items"].as_array().map(Vec::len), Some(1));
    let (s, page) = node.call("GET", "/api/admin/users?limit=1", None).await;
    assert_eq!(s, 200);
    assert!(page["next_cursor"].is_string(), "{page}");
    for q in [
        "role=king",
        "limit=0",
        "limit=501",
        "disabled=maybe",
        "bogus=1",
    ] {
        let (s, b) = node
            .call("GET", &format!("/api/admin/users?{q}"), None)
            .await;
        assert_error(s, &b, 400, "invalid_argument");
    }

    // Disable: login refused; enable: back.
    let (s, _) = node
        .call("POST", &format!("/api/admin/users/{alice}/disable"), None)
        .await;
    assert_eq!(s, 200);
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "alice", "password": "password123"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, _) = node
        .call("POST", &format!("/api/admin/users/{alice}/enable"), None)
        .await;
    assert_eq!(s, 200);

    // The audit rows each mutation wrote, with the actor and the client address.
    let rows = audit_of(&node, &alice).await;
    assert_eq!(
        actions(&rows),
        [
            "user.register",
            "user.update_profile",
            "user.grant_role",
            "user.disable",
            "user.enable"
        ]
    );
    assert_eq!(rows[0]["actor"], "anonymous");
    assert!(
        rows[0]["client_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let (_, me) = node.call("GET", "/api/users/me", None).await;
    assert_eq!(rows[2]["actor"], me["id"]);
    assert_eq!(
        rows[2]["after"]["roles"],
        json!(["user", "campaign_manager"])
    );
    let rows = audit_of_at_least(&node, &cid, 4).await;
    assert_eq!(
        actions(&rows),
        [
            "campaign.create",
            "campaign.update",
            "campaign.publish",
            "campaign.message"
        ]
    );
    assert_eq!(
        rows[2]["after"],
        json!({"name": "e", "seq": 1, "immediate": false, "bytes": 3})
    );
    assert_eq!(rows[3]["after"]["user"], "bob");
    assert!(rows.iter().all(|r| r["actor"] == alice.as_str()));
    assert_eq!(rows[1]["before"]["metadata"]["scheduling"]["frequency"], 2);
    assert_eq!(rows[1]["after"]["metadata"]["scheduling"]["frequency"], 4);
    let (s, b) = node
        .call("GET", "/api/security/audit?since=yesterday", None)
        .await;
    assert_error(s, &b, 400, "invalid_argument");

    // The compliance export: JSON lines.
    let res = node
        .client
        .get(node.url(&format!("/api/security/audit/export?actor={alice}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines.iter().all(|l| l["actor"] == alice.as_str()));

    let (s, p) = node.call("GET", "/api/security/policies", None).await;
    assert_eq!(s, 200);
    let (s, p1) = node
        .call("GET", "/api/security/policies?limit=3", None)
        .await;
    assert_eq!((s, p1["items"].as_array().map(Vec::len)), (200, Some(3)));
    let cursor = p1["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, p2) = node
        .call(
            "GET",
            &format!("/api/security/policies?limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(p2["items"][0], p["items"][3], "pages follow each other");
    assert!(p["items"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x == &json!({"role": "admin", "resource": "*", "action": "*"}))
    }));
    let (s, reg) = node.call_as(None, "GET", "/api/services", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = reg["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "campaign",
            "user",
            "content",
            "localization",
            "babel",
            "notification",
            "scheduler",
            "talent",
            "commerce",
            "referral",
            "nexus",
            "amadeus",
            "security",
            "admin"
        ]
    );
    assert!(
        reg["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|r| r["healthy"] == true)
    );
}

/// A node with WebSocket auth on (not in dev: no token is printed), the admin's token
/// (logged in with the configured password), and an active campaign of that slug.
async fn node_with_auth(slug: &str) -> (TestNode, String) {
    let node = TestNode::start_with(|c| {
        c.dev = false;
        c.admin_password = Some("admin password".into());
    })
    .await;
    assert!(node.token.is_none());
    let (s, t) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "admin", "password": "admin password"})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let admin = t["access_token"].as_str().expect("token").to_owned();
    let (s, c) = node
        .call_as(
            Some(&admin),
            "POST",
            "/api/campaigns",
            Some(json!({"name": slug, "slug": slug})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    (node, admin)
}

#[tokio::test]
async fn websocket_upgrades_need_a_matching_token_when_auth_is_on() {
    let (node, admin) = node_with_auth("locked").await;
    let (bob, bob_token) = user(&node, "bob").await;

    // Refused upgrades are accepted, then closed with the 4xxx code of the refusal.
    let status_of = |path: String| {
        let node = &node;
        async move { common::refused(node, &path).await.0 }
    };
    assert_eq!(status_of(format!("/ws/locked/{bob}")).await, 4401);
    assert_eq!(
        status_of(format!("/ws/locked/{bob}?token=garbage")).await,
        4401
    );
    assert_eq!(
        status_of(format!("/ws/locked/someone-else?token={bob_token}")).await,
        4403
    );
    assert_eq!(
        status_of(format!("/ws/nope/{bob}?token={bob_token}")).await,
        4404
    );
    // As the token's subject, without naming the user.
    let mut ws = node.ws_path(&format!("/ws/locked?token={bob_token}")).await;
    assert_eq!(next_of(&mut ws, "welcome").await["user"], bob.as_str());
    // Bob as himself; the admin as anyone.
    let mut ws = node
        .ws("locked", &bob, &format!("?token={bob_token}"))
        .await;
    assert_eq!(next_of(&mut ws, "welcome").await["user"], bob.as_str());
    let mut ws = node
        .ws("locked", "anyone", &format!("?token={admin}"))
        .await;
    assert_eq!(next_of(&mut ws, "welcome").await["user"], "anyone");
}

/// Opens `path` and sends `first` as the first frame; the session's next frame.
async fn after_first_frame(node: &TestNode, path: &str, first: Message) -> Value {
    use futures_util::{SinkExt as _, StreamExt as _};
    let mut ws = node.ws_path(path).await;
    ws.send(first).await.expect("send the first frame");
    match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an answer within 10 s")
    {
        Some(Ok(Message::Close(Some(f)))) => {
            json!({"close": u16::from(f.code), "reason": f.reason.to_string()})
        }
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("{path}: unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_token_may_come_in_the_first_frame_instead_of_the_url() {
    let (node, admin) = node_with_auth("framed").await;
    let (bob, bob_token) = user(&node, "bob").await;
    let auth = |token: &str| Message::text(json!({"type": "auth", "token": token}).to_string());

    // As the token's subject, or naming the user; then the welcome.
    let w = after_first_frame(&node, "/ws/framed", auth(&bob_token)).await;
    assert_eq!(
        (w["type"].as_str(), w["user"].as_str()),
        (Some("welcome"), Some(bob.as_str())),
        "{w}"
    );
    let w = after_first_frame(&node, &format!("/ws/framed/{bob}"), auth(&bob_token)).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let w = after_first_frame(&node, "/ws/framed/carol", auth(&admin)).await;
    assert_eq!(
        (w["type"].as_str(), w["user"].as_str()),
        (Some("welcome"), Some("carol")),
        "{w}"
    );

    // Refusals: the close code of the same refusal with the token in the URL.
    let cases = [
        ("/ws/framed", auth("garbage"), 4401, "a bad token"),
        (
            "/ws/framed",
            Message::text(r#"{"type":"auth"}"#),
            4401,
            "no token",
        ),
        (
            "/ws/framed",
            Message::text(r#"{"type":"ping"}"#),
            4401,
            "not an auth frame",
        ),
        ("/ws/framed", Message::text("{not json"), 4400, "not JSON"),
        (
            "/ws/framed",
            Message::binary(vec![1u8, 2, 3]),
            4400,
            "a binary frame",
        ),
        (
            "/ws/framed/carol",
            auth(&bob_token),
            4403,
            "another user's session",
        ),
        (
            "/ws/nope",
            auth(&bob_token),
            4404,
            "an unknown campaign, told only after the token",
        ),
        (
            "/ws/nope",
            auth("garbage"),
            4401,
            "a bad token first, whatever the campaign",
        ),
    ];
    for (path, first, code, why) in cases {
        let answer = after_first_frame(&node, path, first).await;
        assert_eq!(answer["close"], code, "{why}: {answer}");
    }

    // Once the session runs, an auth frame is an error frame; the session stays open.
    use futures_util::SinkExt as _;
    let mut ws = node.ws_path("/ws/framed").await;
    ws.send(auth(&bob_token)).await.expect("send");
    next_of(&mut ws, "welcome").await;
    ws.send(auth(&bob_token)).await.expect("send");
    let e = next_of(&mut ws, "error").await;
    assert_eq!(e["code"], "unsupported", "{e}");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    next_of(&mut ws, "pong").await;
}

#[tokio::test]
async fn content_search_comments_and_reactions_over_rest() {
    let node = TestNode::start().await;
    let (alice, alice_token) = user(&node, "alice").await;
    let (_, bob_token) = user(&node, "bob").await;
    let injection = "Robert'); DROP TABLE service_content_main; --";
    let (s, post) = node
        .call_as(
            Some(&alice_token),
            "POST",
            "/api/content",
            Some(json!({
                "kind": "article",
                "title": injection,
                "body": "The lighthouse keeper counted waves all night. \" * NEAR( AND",
                "tags": ["x' OR '1'='1", "news"],
                "metadata": {"tags": ["a"], "service_specific": {"q": "'; --"}}
            })),
        )
        .await;
    assert_eq!(s, 201, "{post}");
    let id = post["id"].as_str().expect("id").to_owned();
    assert_eq!(post["author_id"], alice.as_str());
    let (s, got) = node
        .call_as(None, "GET", &format!("/api/content/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["title"], injection, "stored and returned verbatim");
    assert_eq!(got["tags"], json!(["x' OR '1'='1", "news"]));
    assert_eq!(got["metadata"]["service_specific"]["q"], "'; --");

    // Search by a word of the body; FTS syntax in a query is just text.
    let (s, hits) = node
        .call_as(None, "GET", "/api/content/search?q=lighthouse", None)
        .await;
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits["items"][0]["content"]["id"], id.as_str());
    assert!(
        hits["items"][0]["snippet"]
            .as_str()
            .is_some_and(|s| s.contains("lighthouse")),
        "{hits}"
    );
    for q in [
        "%22",
        "*",
        "NEAR(",
        "AND%20OR",
        "%27%3B%20DROP%20TABLE%20x%3B%20--",
    ] {
        let (s, b) = node
            .call_as(None, "GET", &format!("/api/content/search?q={q}"), None)
            .await;
        assert_eq!(s, 200, "q={q}: {b}");
    }
    let (s, b) = node.call_as(None, "GET", "/api/content/search", None).await;
    assert_error(s, &b, 400, "invalid_argument");

    // Bad input, unknown ids, RBAC.
    let (s, b) = node
        .call_as(
            Some(&alice_token),
            "POST",
            "/api/content",
            Some(json!({"kind": "poem", "title": "t", "body": "b"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(
            Some(&alice_token),
            "POST",
            "/api/content",
            Some(json!({"kind": "video", "title": "t", "body": "b", "url": "ftp://x"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/content",
            Some(json!({"kind": "micro", "body": "hi"})),
        )
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = node
        .call_as(None, "GET", "/api/content/no-such-id", None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(
            Some(&bob_token),
            "PATCH",
            &format!("/api/content/{id}"),
            Some(json!({"title": "mine now"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(
            Some(&alice_token),
            "PATCH",
            &format!("/api/content/{id}"),
            Some(json!({"title": "ok", "author_id": "bob"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(
            Some(&alice_token),
            "PATCH",
            &format!("/api/content/{id}"),
            Some(json!({"title": "Keeper"})),
        )
        .await;
    assert_eq!((s, b["title"].clone()), (200, json!("Keeper")));

    // Threaded comments and reactions.
    let (s, c1) = node
        .call_as(
            Some(&bob_token),
            "POST",
            &format!("/api/content/{id}/comments"),
            Some(json!({"body": "first"})),
        )
        .await;
    assert_eq!(s, 201, "{c1}");
    let (s, c2) = node
        .call_as(
            Some(&alice_token),
            "POST",
            &format!("/api/content/{id}/comments"),
            Some(json!({"body": "reply", "parent_id": c1["id"]})),
        )
        .await;
    assert_eq!(s, 201, "{c2}");
    assert_eq!(c2["parent_id"], c1["id"]);
    let (s, list) = node
        .call_as(
            None,
            "GET",
            &format!("/api/content/{id}/comments?limit=1"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert!(list["next_cursor"].is_string());
    for t in [&alice_token, &bob_token, &bob_token] {
        let (s, _) = node
            .call_as(
                Some(t),
                "PUT",
                &format!("/api/content/{id}/reactions/like"),
                None,
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, r) = node
        .call_as(
            Some(&bob_token),
            "GET",
            &format!("/api/content/{id}/reactions"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["counts"], json!({"like": 2}), "one per user per kind");
    assert_eq!(r["mine"], json!(["like"]));
    let (s, b) = node
        .call_as(
            Some(&bob_token),
            "PUT",
            &format!("/api/content/{id}/reactions/NOT%20OK"),
            None,
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");

    let rows = audit_of(&node, &id).await;
    assert_eq!(
        actions(&rows),
        [
            "content.create",
            "content.update",
            "content.react",
            "content.react"
        ]
    );
    let (s, _) = node
        .call_as(
            Some(&alice_token),
            "DELETE",
            &format!("/api/content/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = node
        .call_as(None, "GET", &format!("/api/content/{id}"), None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_scheduled_draft_goes_live_by_itself_and_lists_filter() {
    let node = TestNode::start().await;
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(
                json!({"name": "Timed", "status": "draft", "starts_at": "2020-01-01T00:00:00Z",
                        "metadata": {"tags": ["timed"]}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, c) = node
            .call("GET", &format!("/api/campaigns/{id}"), None)
            .await;
        if c["status"] == "active" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {c}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut ws = node.ws(&id, "viewer", "").await;
    assert_eq!(next_of(&mut ws, "welcome").await["campaign"], id.as_str());
    let rows = audit_of(&node, &id).await;
    // The campaign's start is a scheduler job, registered with the campaign.
    assert_eq!(
        actions(&rows),
        ["campaign.create", "scheduler.register", "campaign.start"]
    );
    assert_eq!(rows[1]["actor"], "system");
    assert_eq!(rows[2]["actor"], "system");

    let (s, l) = node
        .call_as(None, "GET", "/api/campaigns?tag=timed&q=TIM", None)
        .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["items"].as_array().map(Vec::len), Some(1));
    let (s, l) = node
        .call_as(None, "GET", "/api/campaigns?tag=other", None)
        .await;
    assert_eq!((s, l["items"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Bad", "starts_at": "tomorrow"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Bad", "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
}

#[tokio::test]
async fn password_guessing_on_one_name_is_refused_after_ten_failures() {
    let node = TestNode::start().await;
    user(&node, "target").await;
    for _ in 0..10 {
        let (s, b) = node
            .call_as(
                None,
                "POST",
                "/api/auth/login",
                Some(json!({"login": "target", "password": "guess-guess"})),
            )
            .await;
        assert_error(s, &b, 401, "unauthenticated");
    }
    // Now even the right password waits for the window.
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "target", "password": "password123"})),
        )
        .await;
    assert_error(s, &b, 429, "rate_limited");
    // Other names are not affected.
    user(&node, "bystander").await;
}

#[tokio::test]
async fn registrations_from_one_address_are_rate_limited() {
    let node = TestNode::start().await;
    let register = |n: u32| {
        let body = json!({"username": format!("burst{n}"), "email": format!("burst{n}@example.org"), "password": "password123"});
        node.call_as(None, "POST", "/api/auth/register", Some(body))
    };
    for n in 0..30 {
        let (s, b) = register(n).await;
        assert_eq!(s, 201, "{b}");
    }
    // Every test request comes from 127.0.0.1: the next one is over the limit.
    let (s, b) = register(30).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "rate_limited", "{b}");
    // Logins of the accounts made are not affected.
    let (s, b) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": "burst0", "password": "password123"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Polls `GET /api/users/me` with `token` until it answers `want` (or 10 s); returns how long
/// that took.
async fn me_answers(node: &TestNode, token: &str, want: u16) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        let (s, body) = node
            .call_as(Some(token), "GET", "/api/users/me", None)
            .await;
        if s == want {
            if want == 401 {
                assert_error(s, &body, 401, "unauthenticated");
            }
            return start.elapsed();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "still {s} after 10 s: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoked_tokens_are_refused_within_seconds_on_every_node_and_close_sessions() {
    use common::close_code;
    let a = TestNode::start().await;
    let campaign = a.campaign("revocations", 10.0, json!({})).await;
    // A second node on the same database (its own in-process bus).
    let url = a.database_url();
    let b = TestNode::start_with(|c| c.database_url = Some(url)).await;
    let (rita, token) = user(&a, "rita").await;
    let query = format!("?token={token}");
    let mut on_a = a.ws(&campaign, &rita, &query).await;
    let mut on_b = b.ws(&campaign, &rita, &query).await;
    next_of(&mut on_a, "welcome").await;
    next_of(&mut on_b, "welcome").await;
    me_answers(&a, &token, 200).await;
    me_answers(&b, &token, 200).await;

    // Disabled by an admin on node a: refused there at once, on b within about a second.
    let (s, body) = a
        .call("POST", &format!("/api/admin/users/{rita}/disable"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = a.call_as(Some(&token), "GET", "/api/users/me", None).await;
    assert_error(s, &body, 401, "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{body}"
    );
    let took = me_answers(&b, &token, 401).await;
    println!("node b refused the revoked token after {took:?}");
    assert_eq!(close_code(&mut on_a).await, 4401);
    assert_eq!(close_code(&mut on_b).await, 4401);
    // A new session with the old token is refused.
    let (code, reason) = common::refused(&b, &format!("/ws/{campaign}/{rita}{query}")).await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    // Enabled again: a new login's token works on both nodes at once.
    let (s, body) = a
        .call("POST", &format!("/api/admin/users/{rita}/enable"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    let login = json!({"login": "rita", "password": "password123"});
    let (s, t) = b
        .call_as(None, "POST", "/api/auth/login", Some(login))
        .await;
    assert_eq!(s, 200, "{t}");
    let fresh = t["access_token"].as_str().expect("token").to_owned();
    me_answers(&a, &fresh, 200).await;
    me_answers(&b, &fresh, 200).await;
    assert_eq!(
        me_answers(&a, &token, 401).await.as_secs(),
        0,
        "the old one stays refused"
    );

    // A password change on node b revokes the tokens issued before it, on a too.
    let (s, body) = b
        .call_as(
            Some(&fresh),
            "PATCH",
            "/api/users/me",
            Some(json!({"current_password": "password123", "new_password": "another password"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    me_answers(&b, &fresh, 401).await;
    me_answers(&a, &fresh, 401).await;

    // A changed role set too (tokens carry the roles); a display-name change does not.
    let login = json!({"login": "rita", "password": "another password"});
    let (s, t) = a
        .call_as(None, "POST", "/api/auth/login", Some(login))
        .await;
    assert_eq!(s, 200, "{t}");
    let third = t["access_token"].as_str().expect("token").to_owned();
    let (s, body) = a
        .call_as(
            Some(&third),
            "PATCH",
            "/api/users/me",
            Some(json!({"display_name": "Rita"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    me_answers(&a, &third, 200).await;
    let (s, body) = b
        .call(
            "POST",
            &format!("/api/admin/users/{rita}/roles"),
            Some(json!({"role": "campaign_manager"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    me_answers(&a, &third, 401).await;
}
