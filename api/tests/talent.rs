//! Talent end to end over REST against a node on port 0: a profile, its availability and free
//! slots, a booking through its states, the two sides' lists, a private profile, and every
//! bad-input class (malformed JSON, unknown fields, bad values, bad query parameters, 401,
//! 403, 404, 409), with the audit rows the changes write.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestNode, assert_error, audit_actions, user};
use serde_json::{Value, json};
use services::time::rfc3339;

const DAY_MS: i64 = 24 * 3_600_000;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// Every day 09:00–17:00.
fn every_day() -> Value {
    let rules: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"}))
        .collect();
    json!({"rules": rules, "exceptions": []})
}

/// The talent's profile in Europe/Paris, available every day; returns its id.
async fn profile(node: &TestNode, token: &str, headline: &str) -> String {
    let (s, p) = node
        .call_as(
            Some(token),
            "POST",
            "/api/talent/profiles",
            Some(json!({
                "headline": headline,
                "bio": "Ten years of async Rust",
                "skills": ["Rust", "postgres"],
                "timezone": "Europe/Paris",
            })),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["skills"], json!(["rust", "postgres"]), "{p}");
    assert_eq!(p["visibility"], "public");
    let id = p["id"].as_str().expect("id").to_owned();
    let (s, p) = node
        .call_as(
            Some(token),
            "PUT",
            &format!("/api/talent/profiles/{id}/availability"),
            Some(every_day()),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["availability"]["rules"].as_array().map(Vec::len), Some(7));
    id
}

/// The free one-hour slots of `id` in the week starting 7 days from now.
async fn slots(node: &TestNode, token: Option<&str>, id: &str) -> Vec<(String, String)> {
    let from = rfc3339(now_ms() + 7 * DAY_MS);
    let to = rfc3339(now_ms() + 14 * DAY_MS);
    let (s, b) = node
        .call_as(
            token,
            "GET",
            &format!("/api/talent/profiles/{id}/slots?from={from}&to={to}&duration_minutes=60"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b.as_array()
        .expect("slots")
        .iter()
        .map(|s| {
            (
                s["start"].as_str().expect("start").to_owned(),
                s["end"].as_str().expect("end").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_profile_is_booked_confirmed_and_listed_on_both_sides() {
    let node = TestNode::start().await;
    let (alice_id, alice) = user(&node, "alice").await;
    let (bob_id, bob) = user(&node, "bob").await;
    let id = profile(&node, &alice, "Rust consultant").await;

    // Anyone reads and searches public profiles.
    let (s, p) = node
        .call_as(None, "GET", &format!("/api/talent/profiles/{id}"), None)
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["user_id"], alice_id.as_str());
    let (s, p) = node
        .call_as(
            None,
            "GET",
            &format!("/api/talent/users/{alice_id}/profile"),
            None,
        )
        .await;
    assert_eq!((s, p["id"].as_str()), (200, Some(id.as_str())), "{p}");
    let (s, page) = node
        .call_as(None, "GET", "/api/talent/profiles?skill=RUST&q=ASYNC", None)
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (s, page) = node
        .call_as(None, "GET", "/api/talent/profiles?skill=go", None)
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"], json!([]));

    // Eight one-hour slots a day, for seven days (less any the window's ends cut).
    let free = slots(&node, None, &id).await;
    assert!(free.len() >= 6 * 8, "{free:?}");
    let (start, end) = free[0].clone();

    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            &format!("/api/talent/profiles/{id}/bookings"),
            Some(json!({"start": start, "end": end, "note": "Code review"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "requested");
    assert_eq!(b["client_id"], bob_id.as_str());
    let booking = b["id"].as_str().expect("id").to_owned();
    // The slot is taken.
    assert!(
        !slots(&node, None, &id)
            .await
            .contains(&(start.clone(), end))
    );

    // A second, overlapping booking by anyone is a 409.
    let (_, carol) = user(&node, "carol").await;
    let (s, b) = node
        .call_as(
            Some(&carol),
            "POST",
            &format!("/api/talent/profiles/{id}/bookings"),
            Some(json!({"start": start, "end": rfc3339(now_ms() + 30 * DAY_MS)})),
        )
        .await;
    assert!(s == 409 || s == 400, "{s} {b}");
    let half = free[0].0.replace(":00:00.000Z", ":30:00.000Z");
    let (s, b) = node
        .call_as(
            Some(&carol),
            "POST",
            &format!("/api/talent/profiles/{id}/bookings"),
            Some(json!({"start": half, "end": free[1].1})),
        )
        .await;
    assert_error(s, &b, 409, "conflict");

    // Only the talent confirms; the client sees it confirmed.
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            &format!("/api/talent/bookings/{booking}/confirm"),
            None,
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(
            Some(&carol),
            "GET",
            &format!("/api/talent/bookings/{booking}"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/talent/bookings/{booking}/confirm"),
            None,
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("confirmed")), "{b}");
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/talent/bookings/{booking}/decline"),
            None,
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    let msg = b["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("confirmed") && msg.contains("declined"), "{b}");
    // Not completed before it starts.
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/talent/bookings/{booking}/complete"),
            None,
        )
        .await;
    assert_error(s, &b, 409, "conflict");

    for (token, side, want) in [
        (&bob, "client", 1),
        (&alice, "talent", 1),
        (&carol, "client", 0),
    ] {
        let (s, page) = node
            .call_as(
                Some(token),
                "GET",
                &format!("/api/talent/bookings?side={side}&status=confirmed"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(want),
            "{side}: {page}"
        );
    }
    let (s, page) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/talent/profiles/{id}/bookings?limit=1"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"][0]["id"], booking.as_str());
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/talent/profiles/{id}/bookings"),
            None,
        )
        .await;
    assert_error(s, &b, 403, "forbidden");

    // Either party cancels; the slot is free again.
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            &format!("/api/talent/bookings/{booking}/cancel"),
            None,
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("cancelled")), "{b}");
    assert_eq!(slots(&node, None, &id).await[0].0, start);

    assert_eq!(
        audit_actions(&node, &id).await,
        vec!["talent.availability", "talent.create"]
    );
    assert_eq!(
        audit_actions(&node, &booking).await,
        vec!["talent.book", "talent.cancel", "talent.confirm"]
    );
}

#[tokio::test]
async fn private_profiles_and_changes_belong_to_their_owner() {
    let node = TestNode::start().await;
    let (_, alice) = user(&node, "alice").await;
    let (_, bob) = user(&node, "bob").await;
    let id = profile(&node, &alice, "Designer").await;

    // Bob cannot change or delete it; Alice can.
    let (s, b) = node
        .call_as(
            Some(&bob),
            "PATCH",
            &format!("/api/talent/profiles/{id}"),
            Some(json!({"headline": "Mine now"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, p) = node
        .call_as(
            Some(&alice),
            "PATCH",
            &format!("/api/talent/profiles/{id}"),
            Some(json!({"visibility": "private", "timezone": "America/New_York"})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["visibility"].as_str(), p["timezone"].as_str()),
        (Some("private"), Some("America/New_York"))
    );

    // Private: not found for others, in searches too; its owner and admins see it.
    for token in [None, Some(bob.as_str())] {
        let (s, b) = node
            .call_as(token, "GET", &format!("/api/talent/profiles/{id}"), None)
            .await;
        assert_error(s, &b, 404, "not_found");
        let (s, page) = node
            .call_as(token, "GET", "/api/talent/profiles", None)
            .await;
        assert_eq!((s, &page["items"]), (200, &json!([])), "{page}");
    }
    let (s, _) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/talent/profiles/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = node
        .call("GET", &format!("/api/talent/profiles/{id}"), None)
        .await;
    assert_eq!(s, 200, "the admin sees it");

    // A second profile for one user is a 409.
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            "/api/talent/profiles",
            Some(json!({"headline": "Again", "timezone": "UTC"})),
        )
        .await;
    assert_error(s, &b, 409, "already_exists");

    // For Bob it does not exist.
    let (s, b) = node
        .call_as(
            Some(&bob),
            "DELETE",
            &format!("/api/talent/profiles/{id}"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, _) = node
        .call_as(
            Some(&alice),
            "DELETE",
            &format!("/api/talent/profiles/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/talent/profiles/{id}"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn bad_inputs_are_refused_with_the_field_named() {
    let node = TestNode::start().await;
    let (_, alice) = user(&node, "alice").await;
    let (_, bob) = user(&node, "bob").await;
    let id = profile(&node, &alice, "Rust consultant").await;
    let soon = rfc3339(now_ms() + 7 * DAY_MS);
    let later = rfc3339(now_ms() + 7 * DAY_MS + 3_600_000);
    let profile_path = format!("/api/talent/profiles/{id}");
    let availability = format!("/api/talent/profiles/{id}/availability");
    let bookings = format!("/api/talent/profiles/{id}/bookings");
    let slots = format!("/api/talent/profiles/{id}/slots");
    type Case<'a> = (
        Option<&'a str>,
        &'a str,
        String,
        Option<Value>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        // Anonymous writes.
        (
            None,
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "UTC"})),
            401,
            "unauthenticated",
            "",
        ),
        (
            None,
            "POST",
            bookings.clone(),
            Some(json!({"start": soon, "end": later})),
            401,
            "unauthenticated",
            "",
        ),
        (
            None,
            "GET",
            "/api/talent/bookings".into(),
            None,
            401,
            "unauthenticated",
            "",
        ),
        // Bodies.
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "UTC", "extra": 1})),
            400,
            "invalid_argument",
            "extra",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "Mars/Olympus"})),
            400,
            "invalid_argument",
            "timezone",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "  ", "timezone": "UTC"})),
            400,
            "invalid_argument",
            "headline",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "UTC", "skills": ["no spaces"]})),
            400,
            "invalid_argument",
            "skills[0]",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "UTC", "visibility": "secret"})),
            400,
            "invalid_argument",
            "visibility",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles".into(),
            Some(json!({"headline": "x", "timezone": "UTC", "user_id": "someone"})),
            403,
            "forbidden",
            "",
        ),
        (
            Some(&alice),
            "PATCH",
            profile_path.clone(),
            Some(json!({"skills": "rust"})),
            400,
            "invalid_argument",
            "skills",
        ),
        (
            Some(&alice),
            "PUT",
            availability.clone(),
            Some(json!({"rules": [{"weekday": "funday", "start": "09:00", "end": "17:00"}]})),
            400,
            "invalid_argument",
            "weekday",
        ),
        (
            Some(&alice),
            "PUT",
            availability.clone(),
            Some(json!({"rules": [{"weekday": "mon", "start": "17:00", "end": "09:00"}]})),
            400,
            "invalid_argument",
            "end",
        ),
        (
            Some(&alice),
            "PUT",
            availability.clone(),
            Some(json!({"rules": [
            {"weekday": "mon", "start": "09:00", "end": "12:00"},
            {"weekday": "mon", "start": "11:00", "end": "13:00"}]})),
            400,
            "invalid_argument",
            "rules[1]",
        ),
        (
            Some(&alice),
            "PUT",
            availability.clone(),
            Some(json!({"exceptions": [{"date": "2027-02-30"}]})),
            400,
            "invalid_argument",
            "date",
        ),
        (
            Some(&bob),
            "PUT",
            availability.clone(),
            Some(every_day()),
            403,
            "forbidden",
            "",
        ),
        (
            Some(&bob),
            "POST",
            bookings.clone(),
            Some(json!({"start": "tomorrow", "end": later})),
            400,
            "invalid_argument",
            "start",
        ),
        (
            Some(&bob),
            "POST",
            bookings.clone(),
            Some(json!({"start": later, "end": soon})),
            400,
            "invalid_argument",
            "end",
        ),
        (
            Some(&bob),
            "POST",
            bookings.clone(),
            Some(json!({"start": "2020-01-01T09:00:00Z", "end": "2020-01-01T10:00:00Z"})),
            409,
            "conflict",
            "past",
        ),
        (
            Some(&alice),
            "POST",
            bookings.clone(),
            Some(json!({"start": soon, "end": later})),
            409,
            "conflict",
            "own",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/profiles/nope/bookings".into(),
            Some(json!({"start": soon, "end": later})),
            404,
            "not_found",
            "",
        ),
        // Queries.
        (
            None,
            "GET",
            format!("{slots}?from={soon}&to={later}"),
            None,
            400,
            "invalid_argument",
            "duration_minutes",
        ),
        (
            None,
            "GET",
            format!("{slots}?from={soon}&to={later}&duration_minutes=5"),
            None,
            400,
            "invalid_argument",
            "duration_minutes",
        ),
        (
            None,
            "GET",
            format!("{slots}?from={later}&to={soon}&duration_minutes=60"),
            None,
            400,
            "invalid_argument",
            "to",
        ),
        (
            None,
            "GET",
            format!("{slots}?from={soon}&to={later}&duration_minutes=60&x=1"),
            None,
            400,
            "invalid_argument",
            "x",
        ),
        (
            None,
            "GET",
            "/api/talent/profiles?skill=a%20b".into(),
            None,
            400,
            "invalid_argument",
            "skill",
        ),
        (
            None,
            "GET",
            "/api/talent/profiles?limit=0".into(),
            None,
            400,
            "invalid_argument",
            "limit",
        ),
        (
            Some(&bob),
            "GET",
            "/api/talent/bookings?side=both".into(),
            None,
            400,
            "invalid_argument",
            "side",
        ),
        (
            Some(&bob),
            "GET",
            "/api/talent/bookings?status=pending".into(),
            None,
            400,
            "invalid_argument",
            "status",
        ),
        (
            Some(&bob),
            "GET",
            "/api/talent/bookings?side=talent".into(),
            None,
            404,
            "not_found",
            "",
        ),
        (
            None,
            "GET",
            "/api/talent/profiles/nope".into(),
            None,
            404,
            "not_found",
            "",
        ),
        (
            Some(&bob),
            "POST",
            "/api/talent/bookings/nope/confirm".into(),
            None,
            404,
            "not_found",
            "",
        ),
    ];
    for (token, method, path, body, status, code, names) in cases {
        let (s, b) = node.call_as(token, method, &path, body.clone()).await;
        assert_error(s, &b, status, code);
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(names),
            "{method} {path} {body:?}: {message:?} should name {names:?}"
        );
    }
    // Malformed JSON and the wrong content type.
    let (s, b) = node
        .raw_as(
            Some(&bob),
            "POST",
            &bookings,
            "application/json",
            "{\"start\":",
        )
        .await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = node
        .raw_as(Some(&alice), "PUT", &availability, "text/plain", "{}")
        .await;
    assert_eq!(s, 415, "{b}");

    // Nothing was lost or changed by the refusals.
    let (s, p) = node.call_as(None, "GET", &profile_path, None).await;
    assert_eq!(s, 200);
    assert_eq!(p["availability"], every_day());
    let (s, page) = node
        .call_as(Some(&bob), "GET", "/api/talent/bookings", None)
        .await;
    assert_eq!((s, &page["items"]), (200, &json!([])), "{page}");
}

#[tokio::test]
async fn a_confirmed_booking_of_a_priced_talent_becomes_the_clients_order() {
    let node = TestNode::start().await;
    let (s, b) = node
        .call(
            "POST",
            "/api/babel/markets",
            Some(json!({"code": "eu", "name": "Europe", "currency": "EUR", "locale": "fr-FR", "countries": ["FR"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = node
        .call(
            "POST",
            "/api/commerce/products",
            Some(json!({"sku": "rate-alice", "name": "An hour of Rust", "base_amount": 8000, "currency": "EUR"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, alice) = user(&node, "alice").await;
    let (bob_id, bob) = user(&node, "bob").await;
    let id = profile(&node, &alice, "Rust consultant").await;
    let (s, p) = node
        .call_as(
            Some(&alice),
            "PATCH",
            &format!("/api/talent/profiles/{id}"),
            Some(json!({"hourly_rate_sku": "rate-alice"})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let (start, end) = slots(&node, None, &id).await.remove(0);
    let book = |country: Value| json!({"start": start, "end": end, "country": country});
    let path = format!("/api/talent/profiles/{id}/bookings");
    let (s, b) = node
        .call_as(Some(&bob), "POST", &path, Some(book(Value::Null)))
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("country")),
        "{b}"
    );
    let (s, b) = node
        .call_as(Some(&bob), "POST", &path, Some(book(json!("XX"))))
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, booking) = node
        .call_as(Some(&bob), "POST", &path, Some(book(json!("FR"))))
        .await;
    assert_eq!(
        (s, booking["country"].as_str()),
        (201, Some("FR")),
        "{booking}"
    );
    let booking_id = booking["id"].as_str().expect("id");
    let (s, confirmed) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/talent/bookings/{booking_id}/confirm"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{confirmed}");
    let order_id = confirmed["order_id"].as_str().expect("an order");
    let (s, order) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/commerce/orders/{order_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{order}");
    assert_eq!(
        (
            order["user_id"].as_str(),
            order["status"].as_str(),
            order["total_amount"].as_i64()
        ),
        (Some(bob_id.as_str()), Some("pending"), Some(8000)),
        "{order}"
    );
    for token in [&alice, &bob] {
        let (s, inbox) = node
            .call_as(Some(token), "GET", "/api/notifications", None)
            .await;
        assert_eq!(s, 200, "{inbox}");
        assert_eq!(
            inbox["items"][0]["template"], "talent.booking_confirmed",
            "{inbox}"
        );
    }
}
