//! Commerce end to end over REST against a node on port 0: a market and products, an order
//! priced by Babel, a payment under an `Idempotency-Key` (replayed, mismatched, missing),
//! manual confirmation, the invoice as JSON and as a page, refunds, the ledger, the signed
//! webhook (good, bad, stale, replayed), a payout, and every bad-input class (malformed JSON,
//! unknown fields, bad values, bad query parameters, 401, 403, 404, 409, 415, 422), with the
//! audit rows the changes write.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestNode, assert_error, audit_actions, user};
use serde_json::{Value, json};

const SECRET: &str = "the manual provider's webhook secret";

fn unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("secs")
}

/// `POST path` with `body`, the token and the extra headers; the status, headers and JSON.
async fn post_with(
    node: &TestNode,
    token: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = node
        .client
        .post(node.url(path))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.body(body.to_owned()).send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    (status, headers, serde_json::from_str(&text).expect("JSON"))
}

/// Market `eu` (EUR, FR), product `tee` (10.00 EUR base, 25.00 + 20% tax in eu).
async fn shop(node: &TestNode) {
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
            Some(json!({"sku": "tee", "name": "T-shirt", "base_amount": 1000, "currency": "EUR"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["active"], true, "active by default");
    let (s, b) = node
        .call(
            "POST",
            "/api/babel/rules",
            Some(json!({"market": "eu", "sku": "tee", "amount": 2500, "tax_rate_bp": 2000})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn an_order_is_paid_invoiced_refunded_and_balanced_over_rest() {
    let node = TestNode::start_with(|c| c.manual_webhook_secret = Some(SECRET.to_owned())).await;
    shop(&node).await;
    let (alice_id, alice) = user(&node, "alice").await;
    let (_, bob) = user(&node, "bob").await;

    // Anyone reads products; nobody but managers writes them.
    let (s, b) = node
        .call_as(None, "GET", "/api/commerce/products", None)
        .await;
    assert_eq!(
        (s, b["items"][0]["sku"].as_str()),
        (200, Some("tee")),
        "{b}"
    );
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            "/api/commerce/products",
            Some(json!({"sku": "cap", "name": "Cap", "base_amount": 1, "currency": "EUR"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");

    // An order: Babel's price, stored on the line.
    let (s, o) = node
        .call_as(
            Some(&alice),
            "POST",
            "/api/commerce/orders",
            Some(json!({"country": "FR", "lines": [{"sku": "tee", "quantity": 2}]})),
        )
        .await;
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["user_id"], alice_id.as_str());
    assert_eq!(o["status"], "pending");
    assert_eq!(
        (o["total_amount"].as_i64(), o["tax_amount"].as_i64()),
        (Some(6000), Some(1000))
    );
    let order = o["id"].as_str().expect("id").to_owned();
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/commerce/orders/{order}"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    // Payments: the key is required; the same request is answered again; another is a 422.
    let pay = format!("/api/commerce/orders/{order}/payments");
    let body = r#"{"provider":"manual"}"#;
    let (s, _, b) = post_with(&node, Some(&alice), &pay, &[], body).await;
    assert_error(s, &b, 400, "invalid_argument");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Idempotency-Key"))
    );
    let (s, h, first) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-1")],
        body,
    )
    .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(h["idempotent-replayed"], "false");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["amount"], 6000);
    let (s, h, again) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-1")],
        body,
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(again, first);
    let (s, _, b) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-1")],
        r#"{"provider":"manual","reference":"other"}"#,
    )
    .await;
    assert_error(s, &b, 422, "idempotency_mismatch");
    let (s, _, b) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-2")],
        body,
    )
    .await;
    assert_error(s, &b, 409, "conflict");
    let (s, _, b) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-3")],
        r#"{"provider":"visa"}"#,
    )
    .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, _, b) = post_with(
        &node,
        Some(&alice),
        &pay,
        &[("Idempotency-Key", "pay-4")],
        r#"{"provider":"manual","tip":1}"#,
    )
    .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, _, b) = post_with(&node, None, &pay, &[("Idempotency-Key", "pay-5")], body).await;
    assert_error(s, &b, 401, "unauthenticated");
    let payment = first["id"].as_str().expect("id").to_owned();

    // Only a manager confirms; the order is paid and invoiced.
    let confirm = format!("/api/commerce/payments/{payment}/confirm");
    let (s, b) = node
        .call_as(Some(&alice), "POST", &confirm, Some(json!({})))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call("POST", &confirm, Some(json!({"reference": "BANK-1"})))
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("succeeded")), "{b}");
    let (s, b) = node.call("POST", &confirm, Some(json!({}))).await;
    assert_error(s, &b, 409, "conflict");
    let (s, d) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/commerce/orders/{order}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "paid");
    let number = d["invoice"].as_str().expect("invoice").to_owned();
    assert!(number.ends_with("-000001"), "{number}");
    // Alice is told in her inbox (and in real time), with the amount and the invoice.
    let (s, inbox) = node
        .call_as(Some(&alice), "GET", "/api/notifications", None)
        .await;
    assert_eq!(s, 200, "{inbox}");
    let told = &inbox["items"][0];
    assert_eq!(told["template"], "commerce.payment_succeeded", "{inbox}");
    assert!(
        told["text"]
            .as_str()
            .is_some_and(|t| t.contains(&number) && t.contains("60,00")),
        "{inbox}"
    );
    let (s, inv) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/commerce/orders/{order}/invoice"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{inv}");
    assert_eq!(
        (inv["number"].as_str(), inv["total_amount"].as_i64()),
        (Some(number.as_str()), Some(6000))
    );
    let (s, by_number) = node
        .call_as(
            Some(&alice),
            "GET",
            &format!("/api/commerce/invoices/{number}"),
            None,
        )
        .await;
    assert_eq!((s, &by_number), (200, &inv));
    let res = node
        .client
        .get(node.url(&format!("/api/commerce/orders/{order}/invoice/html")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("page");
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .is_ok_and(|c| c.contains("default-src 'none'"))
    );
    let page = res.text().await.expect("text");
    assert!(page.contains(&number) && page.contains("T-shirt"), "{page}");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/commerce/invoices/{number}"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let year = &number[..4];
    let (s, b) = node
        .call("GET", &format!("/api/commerce/invoices?year={year}"), None)
        .await;
    assert_eq!((s, b["numbers"].clone()), (200, json!([number])), "{b}");
    let (s, b) = node
        .call("GET", "/api/commerce/invoices?year=abc", None)
        .await;
    assert_error(s, &b, 400, "invalid_argument");

    // Refunds: partial, then more than remains (409), then the rest.
    let refunds = format!("/api/commerce/orders/{order}/refunds");
    let (s, r) = node
        .call(
            "POST",
            &refunds,
            Some(json!({"amount": 1000, "reason": "damaged"})),
        )
        .await;
    assert_eq!((s, r["amount"].as_i64()), (201, Some(1000)), "{r}");
    let (s, b) = node
        .call(
            "POST",
            &refunds,
            Some(json!({"amount": 5001, "reason": "too much"})),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    let (s, b) = node
        .call(
            "POST",
            &refunds,
            Some(json!({"amount": 0, "reason": "zero"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            &refunds,
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, r) = node
        .call("POST", &refunds, Some(json!({"reason": "returned"})))
        .await;
    assert_eq!((s, r["amount"].as_i64()), (201, Some(5000)), "{r}");
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/commerce/orders/{order}/fulfil"),
            None,
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refunded") && m.contains("fulfilled")),
        "{b}"
    );

    // The ledger: everything collected went back; every account is a sum of entries.
    let (s, b) = node
        .call("GET", "/api/commerce/ledger/balances", None)
        .await;
    assert_eq!(s, 200, "{b}");
    let balance = |account: &str| {
        b["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|x| x["account"] == account)
            .and_then(|x| x["amount"].as_i64())
    };
    assert_eq!(balance("provider:manual"), Some(0));
    assert_eq!(balance("refunds"), Some(6000));
    assert_eq!(balance("sales"), Some(-5000));
    let (s, e) = node
        .call(
            "GET",
            &format!("/api/commerce/ledger/entries?order_id={order}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let sum: i64 = e["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|x| x["amount"].as_i64())
        .sum();
    assert_eq!(sum, 0, "{e}");
    let (s, b) = node
        .call_as(Some(&alice), "GET", "/api/commerce/ledger/balances", None)
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call("GET", "/api/commerce/ledger/entries?account=", None)
        .await;
    assert_error(s, &b, 400, "invalid_argument");

    assert_eq!(
        audit_actions(&node, &order).await,
        vec!["commerce.order_place", "commerce.refund", "commerce.refund"]
    );
    assert_eq!(
        audit_actions(&node, &payment).await,
        vec!["commerce.payment_confirm", "commerce.payment_create"]
    );
}

#[tokio::test]
async fn webhooks_movements_and_bad_inputs_over_rest() {
    let node = TestNode::start_with(|c| c.manual_webhook_secret = Some(SECRET.to_owned())).await;
    shop(&node).await;
    let (_, alice) = user(&node, "alice").await;
    let (s, o) = node
        .call_as(
            Some(&alice),
            "POST",
            "/api/commerce/orders",
            Some(json!({"country": "FR", "lines": [{"sku": "tee", "quantity": 1}]})),
        )
        .await;
    assert_eq!(s, 201, "{o}");
    let order = o["id"].as_str().expect("id").to_owned();
    let (s, _, p) = post_with(
        &node,
        Some(&alice),
        &format!("/api/commerce/orders/{order}/payments"),
        &[("Idempotency-Key", "k")],
        r#"{"provider":"manual"}"#,
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let payment = p["id"].as_str().expect("id").to_owned();

    // The webhook: signed by the provider's secret, within five minutes, applied once.
    let hook = "/api/commerce/webhooks/manual";
    let event = json!({"id": "evt-1", "type": "payment.succeeded", "payment_id": payment, "amount": 3000, "currency": "EUR"}).to_string();
    let signed = |body: &str, t: i64| {
        format!(
            "t={t},v1={}",
            services::notification::delivery::sign(SECRET.as_bytes(), t, body)
        )
    };
    let (s, _, b) = post_with(&node, None, hook, &[], &event).await;
    assert_error(s, &b, 401, "unauthenticated");
    let stale = signed(&event, unix() - 600);
    let (s, _, b) = post_with(&node, None, hook, &[("Ovasabi-Signature", &stale)], &event).await;
    assert_error(s, &b, 401, "unauthenticated");
    let other = signed(&event.replace("3000", "1"), unix());
    let (s, _, b) = post_with(&node, None, hook, &[("Ovasabi-Signature", &other)], &event).await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, _, b) = post_with(
        &node,
        None,
        "/api/commerce/webhooks/visa",
        &[("Ovasabi-Signature", &signed(&event, unix()))],
        &event,
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    let garbage = r#"{"id":"evt-x"}"#;
    let (s, _, b) = post_with(
        &node,
        None,
        hook,
        &[("Ovasabi-Signature", &signed(garbage, unix()))],
        garbage,
    )
    .await;
    assert_error(s, &b, 400, "invalid_argument");
    let good = signed(&event, unix());
    let (s, _, r) = post_with(&node, None, hook, &[("Ovasabi-Signature", &good)], &event).await;
    assert_eq!((s, r["applied"].as_bool()), (200, Some(true)), "{r}");
    assert_eq!(r["payment"]["status"], "succeeded");
    let (s, _, r) = post_with(&node, None, hook, &[("Ovasabi-Signature", &good)], &event).await;
    assert_eq!(
        (s, r["applied"].as_bool()),
        (200, Some(false)),
        "a replay: {r}"
    );
    let (s, d) = node
        .call("GET", &format!("/api/commerce/orders/{order}"), None)
        .await;
    assert_eq!(
        (s, d["status"].as_str(), d["paid_amount"].as_i64()),
        (200, Some("paid"), Some(3000)),
        "{d}"
    );
    assert_eq!(
        audit_actions(&node, &payment).await,
        vec!["commerce.payment_create", "commerce.webhook"]
    );

    // A payout moves money out of the provider's account; unbalanced ones are refused.
    let (s, m) = node
        .call(
            "POST",
            "/api/commerce/ledger/movements",
            Some(json!({"kind": "payout", "currency": "EUR", "entries": [
                {"account": "provider:manual", "amount": -3000},
                {"account": "bank:main", "amount": 3000}
            ]})),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let movement = m["movement"].as_str().expect("movement").to_owned();
    assert_eq!(
        audit_actions(&node, &movement).await,
        vec!["commerce.movement"]
    );
    for (bad, field) in [
        (
            json!({"kind": "payout", "currency": "EUR", "entries": [{"account": "a", "amount": 5}, {"account": "b", "amount": -4}]}),
            "entries",
        ),
        (
            json!({"kind": "payment", "currency": "EUR", "entries": [{"account": "a", "amount": 5}, {"account": "b", "amount": -5}]}),
            "kind",
        ),
        (
            json!({"kind": "payout", "currency": "EUR", "entries": [{"account": "A B", "amount": 5}, {"account": "b", "amount": -5}]}),
            "entries[0].account",
        ),
        (
            json!({"kind": "payout", "currency": "ZZZ", "entries": [{"account": "a", "amount": 5}, {"account": "b", "amount": -5}]}),
            "currency",
        ),
        (
            json!({"kind": "gift", "currency": "EUR", "entries": []}),
            "kind",
        ),
    ] {
        let (s, b) = node
            .call("POST", "/api/commerce/ledger/movements", Some(bad))
            .await;
        assert_error(s, &b, 400, "invalid_argument");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{field}: {b}"
        );
    }

    // Bad inputs of the other calls.
    let (s, b) = node
        .raw_as(
            Some(&alice),
            "POST",
            "/api/commerce/orders",
            "application/json",
            "{",
        )
        .await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = node
        .raw_as(
            Some(&alice),
            "POST",
            "/api/commerce/orders",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(s, 415, "{b}");
    for (bad, field) in [
        (json!({"country": "FR", "lines": []}), "lines"),
        (
            json!({"country": "FR", "lines": [{"sku": "tee", "quantity": 0}]}),
            "lines[0].quantity",
        ),
        (
            json!({"country": "FR", "lines": [{"sku": "tee", "quantity": 1}, {"sku": "tee", "quantity": 1}]}),
            "lines[1].sku",
        ),
        (
            json!({"country": "FR", "lines": [{"sku": "nope", "quantity": 1}]}),
            "lines[0].sku",
        ),
        (
            json!({"country": "XX", "lines": [{"sku": "tee", "quantity": 1}]}),
            "country",
        ),
        (
            json!({"country": "FR", "lines": [{"sku": "tee", "quantity": 1}], "coupon": "x"}),
            "coupon",
        ),
    ] {
        let (s, b) = node
            .call_as(Some(&alice), "POST", "/api/commerce/orders", Some(bad))
            .await;
        assert_error(s, &b, 400, "invalid_argument");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{field}: {b}"
        );
    }
    let (s, b) = node
        .call_as(
            Some(&alice),
            "GET",
            "/api/commerce/orders?status=lost",
            None,
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(Some(&alice), "GET", "/api/commerce/orders?colour=red", None)
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call_as(None, "GET", "/api/commerce/orders", None)
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = node
        .call(
            "PATCH",
            "/api/commerce/products/ghost",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call(
            "PATCH",
            "/api/commerce/products/tee",
            Some(json!({"base_amount": -1})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    let (s, b) = node
        .call(
            "POST",
            "/api/commerce/products",
            Some(json!({"sku": "tee", "name": "Again", "base_amount": 1, "currency": "EUR"})),
        )
        .await;
    assert_error(s, &b, 409, "already_exists");
    let (s, b) = node
        .call(
            "POST",
            "/api/commerce/payments/ghost/reject",
            Some(json!({"reason": "no"})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(Some(&alice), "GET", "/api/commerce/payments/ghost", None)
        .await;
    assert_error(s, &b, 404, "not_found");
}
