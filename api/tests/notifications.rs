//! Notifications end to end against a node on port 0: templates, a send in the recipient's
//! locale, the inbox, preferences, webhooks and delivery status over REST, the realtime
//! `notification` frame on a user's live sessions, and every bad-input class (malformed JSON,
//! unknown fields, over-long strings, bad query parameters, 404, 409, 401, 403).

mod common;

use common::{TestNode, assert_error, login, next_of, user};
use serde_json::{Value, json};

/// A signed-in user holding `role` (granted by the admin, then logged in again).
async fn with_role(node: &TestNode, name: &str, role: &str) -> (String, String) {
    let (id, _) = user(node, name).await;
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/admin/users/{id}/roles"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (id, login(node, name).await)
}

/// A request that must fail: token (or the admin's), method, path, body, status, code.
type Case<'a> = (
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<Value>,
    u16,
    &'a str,
);

async fn put_templates(node: &TestNode) {
    for (locale, subject, text) in [
        (
            "en",
            "Welcome, {{ user.display_name }}",
            "Your code is {{ code }}.",
        ),
        (
            "fr",
            "Bienvenue, {{ user.display_name }}",
            "Votre code est {{ code }}.",
        ),
    ] {
        let (s, t) = node
            .call(
                "PUT",
                &format!("/api/notifications/templates/welcome/{locale}"),
                Some(json!({
                    "category": "transactional",
                    "subject": subject,
                    "text": text,
                    "html": "<p>{{ code }}</p>",
                })),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        assert_eq!(t["variables"], json!(["code"]));
    }
}

/// Waits until `check` holds on the notification's deliveries (as seen by `token`).
async fn deliveries_until(
    node: &TestNode,
    token: &str,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let (s, d) = node
            .call_as(
                Some(token),
                "GET",
                &format!("/api/notifications/{id}/deliveries"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{d}");
        if check(&d) {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("deliveries of {id} never matched");
}

#[tokio::test]
async fn a_notification_reaches_the_inbox_in_the_users_locale_and_live_sessions() {
    let node = TestNode::start().await;
    put_templates(&node).await;
    let (ann, ann_token) = user(&node, "ann").await;
    let (bob, bob_token) = user(&node, "bob").await;
    let (s, b) = node
        .call_as(
            Some(&bob_token),
            "PATCH",
            "/api/users/me",
            Some(json!({"locale": "fr-CA"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["locale"], "fr-CA");

    // Ann watches a campaign with her token: the realtime frame reaches that session.
    let campaign = node.campaign("notify-live", 10.0, json!({})).await;
    let mut ws = node
        .ws(&campaign, &ann, &format!("?token={ann_token}"))
        .await;
    next_of(&mut ws, "welcome").await;

    let (s, r) = node
        .call(
            "POST",
            "/api/notifications",
            Some(json!({
                "template": "welcome",
                "variables": {"code": "<42>"},
                "channels": ["in_app", "realtime"],
                "recipients": {"user_ids": [ann, bob]},
            })),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["notifications"], 2);
    assert_eq!(r["deliveries"], 2);

    let frame = next_of(&mut ws, "notification").await;
    assert_eq!(frame["notification"]["subject"], "Welcome, ann");
    assert_eq!(frame["notification"]["text"], "Your code is <42>.");
    assert!(frame.get("seq").is_none(), "{frame}");

    // Bob's inbox: French (fr-CA falls back to fr), unread until read.
    let (s, inbox) = node
        .call_as(Some(&bob_token), "GET", "/api/notifications", None)
        .await;
    assert_eq!(s, 200, "{inbox}");
    let n = &inbox["items"][0];
    assert_eq!(n["subject"], "Bienvenue, bob");
    assert_eq!(n["locale"], "fr");
    assert_eq!(n["html"], "<p>&lt;42&gt;</p>");
    let id = n["id"].as_str().expect("id").to_owned();
    let (_, u) = node
        .call_as(Some(&bob_token), "GET", "/api/notifications/unread", None)
        .await;
    assert_eq!(u["unread"], 1);
    let (s, read) = node
        .call_as(
            Some(&bob_token),
            "POST",
            &format!("/api/notifications/{id}/read"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{read}");
    assert_eq!(read["read"], true);
    let (_, u) = node
        .call_as(Some(&bob_token), "GET", "/api/notifications/unread", None)
        .await;
    assert_eq!(u["unread"], 0);

    // Each delivery's status is visible; Bob's realtime push went out (no session: at most
    // once, the inbox keeps it).
    let d = deliveries_until(&node, &bob_token, &id, |d| d[0]["status"] == "sent").await;
    assert_eq!(d[0]["channel"], "realtime");
    assert_eq!(d[0]["attempts"], 1);

    // Someone else's notification is not found; deleting takes it out of the inbox.
    let (s, e) = node
        .call_as(
            Some(&ann_token),
            "GET",
            &format!("/api/notifications/{id}"),
            None,
        )
        .await;
    assert_error(s, &e, 404, "not_found");
    let (s, _) = node
        .call_as(
            Some(&bob_token),
            "DELETE",
            &format!("/api/notifications/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, e) = node
        .call_as(
            Some(&bob_token),
            "GET",
            &format!("/api/notifications/{id}"),
            None,
        )
        .await;
    assert_error(s, &e, 404, "not_found");
}

#[tokio::test]
async fn preferences_webhooks_and_role_sends() {
    let node = TestNode::start().await;
    let (_, manager) = with_role(&node, "mgr", "campaign_manager").await;
    let (_, carl_token) = user(&node, "carl").await;
    let (s, t) = node
        .call_as(
            Some(&manager),
            "PUT",
            "/api/notifications/templates/promo/en",
            Some(json!({"category": "marketing", "subject": "Sale", "text": "{{ pct }}% off"})),
        )
        .await;
    assert_eq!(s, 201, "{t}");

    let (s, p) = node
        .call_as(
            Some(&carl_token),
            "GET",
            "/api/notifications/preferences",
            None,
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        p,
        json!({"in_app": true, "realtime": true, "email": true, "webhook": true})
    );
    let (s, p) = node
        .call_as(
            Some(&carl_token),
            "PATCH",
            "/api/notifications/preferences",
            Some(json!({"realtime": false})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["realtime"], false);

    let (s, w) = node
        .call_as(
            Some(&carl_token),
            "POST",
            "/api/notifications/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    assert_eq!(w["secret"].as_str().map(str::len), Some(64));
    let (_, list) = node
        .call_as(
            Some(&carl_token),
            "GET",
            "/api/notifications/webhooks",
            None,
        )
        .await;
    assert!(list[0].get("secret").is_none(), "{list}");

    // A marketing send to every `user`: Carl opted out of realtime, so that delivery is
    // skipped; his webhook is queued.
    let (s, r) = node
        .call_as(
            Some(&manager),
            "POST",
            "/api/notifications",
            Some(json!({
                "template": "promo",
                "variables": {"pct": 20},
                "channels": ["in_app", "realtime", "webhook"],
                "recipients": {"role": "user"},
            })),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let batch = r["batch_id"].as_str().expect("batch").to_owned();
    let (s, page) = node
        .call_as(
            Some(&manager),
            "GET",
            &format!("/api/notifications/batches/{batch}/deliveries?limit=500"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    let skipped = items
        .iter()
        .filter(|d| d["status"] == "skipped" && d["channel"] == "realtime")
        .count();
    assert!(skipped >= 1, "{page}");
    assert!(
        items
            .iter()
            .any(|d| d["channel"] == "webhook" && d["target"] == "http://127.0.0.1:9/hook"),
        "{page}"
    );
    let (_, inbox) = node
        .call_as(
            Some(&carl_token),
            "GET",
            "/api/notifications?unread=true",
            None,
        )
        .await;
    assert_eq!(inbox["items"][0]["text"], "20% off");
    let (s, m) = node
        .call_as(
            Some(&carl_token),
            "POST",
            "/api/notifications/read-all",
            None,
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["marked"], 1);
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_is_sent() {
    let node = TestNode::start().await;
    put_templates(&node).await;
    let (dan, dan_token) = user(&node, "dan").await;
    let long = "x".repeat(600);
    let cases: Vec<Case<'_>> = vec![
        // A variable the template uses is missing: 400 naming it.
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "channels": ["in_app"], "recipients": {"user_ids": [dan]}}),
            ),
            400,
            "invalid_argument",
        ),
        // Unknown field, both recipient kinds, no channel, unknown channel, unknown user.
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "channels": ["in_app"], "recipients": {"role": "user"}, "extra": 1}),
            ),
            400,
            "invalid_argument",
        ),
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "variables": {"code": 1}, "channels": ["in_app"], "recipients": {"role": "user", "user_ids": [dan]}}),
            ),
            400,
            "invalid_argument",
        ),
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "variables": {"code": 1}, "channels": [], "recipients": {"role": "user"}}),
            ),
            400,
            "invalid_argument",
        ),
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "variables": {"code": 1}, "channels": ["pigeon"], "recipients": {"role": "user"}}),
            ),
            400,
            "invalid_argument",
        ),
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "variables": {"code": 1}, "channels": ["in_app"], "recipients": {"user_ids": ["nobody"]}}),
            ),
            400,
            "invalid_argument",
        ),
        (
            None,
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "nope", "variables": {}, "channels": ["in_app"], "recipients": {"role": "user"}}),
            ),
            404,
            "not_found",
        ),
        // Templates: one that does not parse, an over-long subject, a bad locale.
        (
            None,
            "PUT",
            "/api/notifications/templates/broken/en",
            Some(json!({"category": "transactional", "subject": "s", "text": "{% if x %}open"})),
            400,
            "invalid_argument",
        ),
        (
            None,
            "PUT",
            "/api/notifications/templates/long/en",
            Some(json!({"category": "transactional", "subject": long, "text": "t"})),
            400,
            "invalid_argument",
        ),
        (
            None,
            "PUT",
            "/api/notifications/templates/t/not_a_locale!",
            Some(json!({"category": "transactional", "subject": "s", "text": "t"})),
            400,
            "invalid_argument",
        ),
        (
            None,
            "GET",
            "/api/notifications/templates/welcome/de",
            None,
            404,
            "not_found",
        ),
        // Bad query parameters.
        (
            Some(&dan_token),
            "GET",
            "/api/notifications?limit=0",
            None,
            400,
            "invalid_argument",
        ),
        (
            Some(&dan_token),
            "GET",
            "/api/notifications?colour=red",
            None,
            400,
            "invalid_argument",
        ),
        // Webhooks: not http, credentials, empty preference change.
        (
            Some(&dan_token),
            "POST",
            "/api/notifications/webhooks",
            Some(json!({"url": "ftp://example.org/x"})),
            400,
            "invalid_argument",
        ),
        (
            Some(&dan_token),
            "POST",
            "/api/notifications/webhooks",
            Some(json!({"url": "https://u:p@example.org/x"})),
            400,
            "invalid_argument",
        ),
        (
            Some(&dan_token),
            "PATCH",
            "/api/notifications/preferences",
            Some(json!({})),
            400,
            "invalid_argument",
        ),
        (
            Some(&dan_token),
            "DELETE",
            "/api/notifications/webhooks/nope",
            None,
            404,
            "not_found",
        ),
        // A plain user cannot send or write templates; nobody anonymous reads an inbox.
        (
            Some(&dan_token),
            "POST",
            "/api/notifications",
            Some(
                json!({"template": "welcome", "variables": {"code": 1}, "channels": ["in_app"], "recipients": {"user_ids": [dan]}}),
            ),
            403,
            "forbidden",
        ),
        (
            Some(&dan_token),
            "PUT",
            "/api/notifications/templates/x/en",
            Some(json!({"category": "transactional", "subject": "s", "text": "t"})),
            403,
            "forbidden",
        ),
    ];
    for (token, method, path, body, status, code) in cases {
        let (s, e) = match token {
            Some(t) => node.call_as(Some(t), method, path, body).await,
            None => node.call(method, path, body).await,
        };
        assert_error(s, &e, status, code);
    }
    let (s, e) = node.call_as(None, "GET", "/api/notifications", None).await;
    assert_error(s, &e, 401, "unauthenticated");
    let (s, e) = node
        .raw(
            "POST",
            "/api/notifications",
            "application/json",
            "{not json",
        )
        .await;
    assert_error(s, &e, 400, "malformed_json");
    // More than ten webhooks is a conflict.
    for i in 0..10 {
        let (s, w) = node
            .call_as(
                Some(&dan_token),
                "POST",
                "/api/notifications/webhooks",
                Some(json!({"url": format!("https://example.org/{i}")})),
            )
            .await;
        assert_eq!(s, 201, "{w}");
    }
    let (s, e) = node
        .call_as(
            Some(&dan_token),
            "POST",
            "/api/notifications/webhooks",
            Some(json!({"url": "https://example.org/11"})),
        )
        .await;
    assert_error(s, &e, 409, "conflict");

    // Nothing reached Dan's inbox.
    let (_, inbox) = node
        .call_as(Some(&dan_token), "GET", "/api/notifications", None)
        .await;
    assert_eq!(inbox["items"], json!([]));
}
