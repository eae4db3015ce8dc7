//! Localization and Babel pricing end to end against a node on port 0: translations with
//! fallback and plurals over REST, import/export and missing keys, markets, rules and prices
//! (EUR/fr-FR, USD/en-US, JPY/ja-JP, KWD), every bad-input class (malformed JSON, unknown
//! fields, over-long strings, bad query parameters, 404, 409, 401, 403), and the gRPC services.

mod common;

use common::{TestNode, assert_error, login, user};
use proto::babel::v0 as bpb;
use proto::babel::v0::babel_service_client::BabelServiceClient;
use proto::localization::v0 as lpb;
use proto::localization::v0::localization_service_client::LocalizationServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A signed-in user holding `role` (granted by the admin, then logged in again).
async fn with_role(node: &TestNode, name: &str, role: &str) -> String {
    let (id, _) = user(node, name).await;
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/admin/users/{id}/roles"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    login(node, name).await
}

/// One request that must fail: token (or none), method, path, JSON body, then the status and
/// `error.code` of the answer.
type Refused<'a> = (
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<Value>,
    u16,
    &'a str,
);

/// Sends each request of `cases` in order and asserts its error answer.
async fn assert_refused(node: &TestNode, cases: Vec<Refused<'_>>) {
    for (token, method, path, body, status, code) in cases {
        let (s, e) = node.call_as(token, method, path, body).await;
        assert_eq!(s, status, "{method} {path}: {e}");
        assert_error(s, &e, status, code);
    }
}

#[tokio::test]
async fn translations_over_rest() {
    let node = TestNode::start().await;
    let tr = with_role(&node, "translator", "localization_manager").await;
    let (_, plain) = user(&node, "plain").await;

    let put = |locale: &str, key: &str, value: &str| {
        (
            format!("/api/localization/messages/shop/{locale}/{key}"),
            json!({ "value": value }),
        )
    };
    let (path, body) = put(
        "en",
        "items",
        "{ $count ->\n    [one] { $count } item\n   *[other] { $count } items\n}",
    );
    let (s, m) = node
        .call_as(Some(&tr), "PUT", &path, Some(body.clone()))
        .await;
    assert_eq!(s, 201, "{m}");
    assert_eq!(m["locale"], "en");
    let (s, _) = node.call_as(Some(&tr), "PUT", &path, Some(body)).await;
    assert_eq!(s, 200, "a second put replaces");
    let (path, body) = put(
        "pl",
        "items",
        "{ $count ->\n    [one] { $count } produkt\n    [few] { $count } produkty\n   *[many] { $count } produktów\n}",
    );
    let (s, m) = node.call_as(Some(&tr), "PUT", &path, Some(body)).await;
    assert_eq!(s, 201, "{m}");
    let (path, body) = put("fr", "title", "Boutique");
    assert_eq!(
        node.call_as(Some(&tr), "PUT", &path, Some(body)).await.0,
        201
    );
    let (path, body) = put("en", "title", "Shop");
    assert_eq!(
        node.call_as(Some(&tr), "PUT", &path, Some(body)).await.0,
        201
    );

    // Lookups: anyone; fr-CA falls back to fr, then en.
    let format = |key: &str, locale: &str, args: Value| json!({"namespace": "shop", "key": key, "locale": locale, "args": args});
    let (s, f) = node
        .call_as(
            None,
            "POST",
            "/api/localization/format",
            Some(format("title", "fr-CA", json!({}))),
        )
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        (&f["text"], &f["locale"], &f["fallback"]),
        (&json!("Boutique"), &json!("fr"), &json!(true))
    );
    let (_, f) = node
        .call_as(
            None,
            "POST",
            "/api/localization/format",
            Some(format("items", "fr-CA", json!({"count": 1}))),
        )
        .await;
    assert_eq!((&f["text"], &f["locale"]), (&json!("1 item"), &json!("en")));
    let (_, f) = node
        .call_as(
            None,
            "POST",
            "/api/localization/format",
            Some(format("items", "pl", json!({"count": 22}))),
        )
        .await;
    assert_eq!(f["text"], "22 produkty");

    // Bad inputs.
    let (s, e) = node
        .call_as(
            None,
            "POST",
            "/api/localization/format",
            Some(format("items", "en", json!({}))),
        )
        .await;
    assert_error(s, &e, 400, "invalid_argument");
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("message")
            .contains("args.count"),
        "{e}"
    );
    let fmt = "/api/localization/format";
    let x = "/api/localization/messages/shop/en/x";
    let bad = "invalid_argument";
    assert_refused(
        &node,
        vec![
            (
                None,
                "POST",
                fmt,
                Some(format("title", "fr_CA", json!({}))),
                400,
                bad,
            ),
            (
                None,
                "POST",
                fmt,
                Some(format("nope", "fr", json!({}))),
                404,
                "not_found",
            ),
            (
                None,
                "POST",
                fmt,
                Some(json!({"namespace": "shop", "key": "title", "locale": "fr", "extra": 1})),
                400,
                bad,
            ),
            (
                Some(&tr),
                "PUT",
                x,
                Some(json!({"value": "x", "note": 1})),
                400,
                bad,
            ),
        ],
    )
    .await;
    let (s, e) = node
        .raw_as(Some(&tr), "PUT", x, "application/json", "{not json")
        .await;
    assert_error(s, &e, 400, "malformed_json");
    let (s, e) = node
        .call_as(Some(&tr), "PUT", x, Some(json!({"value": "Hi { $name"})))
        .await;
    assert_error(s, &e, 400, "invalid_argument");
    assert!(
        e["error"]["message"].as_str().expect("m").contains("\"x\""),
        "names the key: {e}"
    );
    let long_key = format!("/api/localization/messages/shop/en/{}", "k".repeat(129));
    let nope = "/api/localization/messages/shop/en/nope";
    let value = || Some(json!({"value": "x"}));
    assert_refused(
        &node,
        vec![
            (
                Some(&tr),
                "PUT",
                x,
                Some(json!({"value": "x".repeat(10_001)})),
                400,
                bad,
            ),
            (Some(&tr), "PUT", &long_key, value(), 400, bad),
            (
                Some(&tr),
                "PUT",
                "/api/localization/messages/shop/not_a_locale/x",
                value(),
                400,
                bad,
            ),
            (None, "PUT", x, value(), 401, "unauthenticated"),
            (Some(&plain), "PUT", x, value(), 403, "forbidden"),
            (
                Some("not-a-token"),
                "POST",
                fmt,
                Some(format("title", "fr", json!({}))),
                401,
                "unauthenticated",
            ),
            (None, "GET", nope, None, 404, "not_found"),
            (Some(&tr), "DELETE", nope, None, 404, "not_found"),
        ],
    )
    .await;
    for q in [
        "",
        "?namespace=shop&bogus=1",
        "?namespace=shop&limit=0",
        "?namespace=shop&locale=",
        "?namespace=Bad",
    ] {
        let (s, e) = node
            .call_as(None, "GET", &format!("/api/localization/messages{q}"), None)
            .await;
        assert_error(s, &e, 400, "invalid_argument");
    }

    // Import, export, report.
    let (s, r) = node
        .call_as(
            Some(&tr),
            "PUT",
            "/api/localization/namespaces/shop/locales/de",
            Some(json!({"messages": {"title": "Laden"}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["created"], 1);
    let (s, e) = node
        .call_as(
            Some(&tr),
            "PUT",
            "/api/localization/namespaces/shop/locales/de",
            Some(json!({"messages": {"ok": "fine", "bad": "{"}})),
        )
        .await;
    assert_error(s, &e, 400, "invalid_argument");
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("m")
            .starts_with("messages.bad"),
        "{e}"
    );
    let (s, x) = node
        .call_as(
            None,
            "GET",
            "/api/localization/namespaces/shop/locales/de",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(x["messages"], json!({"title": "Laden"}));
    let (s, n) = node
        .call_as(None, "GET", "/api/localization/namespaces/shop", None)
        .await;
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["keys"], 2);
    let (s, p) = node
        .call_as(
            None,
            "GET",
            "/api/localization/namespaces/shop/missing?locale=fr",
            None,
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        p["items"],
        json!([{"key": "items", "locales": ["en", "pl"]}])
    );
    let (s, e) = node
        .call_as(
            None,
            "GET",
            "/api/localization/namespaces/shop/missing",
            None,
        )
        .await;
    assert_error(s, &e, 400, "invalid_argument");
    let (s, page) = node
        .call_as(
            None,
            "GET",
            "/api/localization/messages?namespace=shop&limit=2",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (s, page) = node
        .call_as(
            None,
            "GET",
            &format!("/api/localization/messages?namespace=shop&limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    assert!(!page["items"].as_array().expect("items").is_empty());

    // The changes are audited.
    let (s, a) = node
        .call("GET", "/api/security/audit?entity_id=shop/en/items", None)
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["items"].as_array().expect("items").len(), 2);
}

#[tokio::test]
async fn markets_rules_and_prices_over_rest() {
    let node = TestNode::start().await;
    let pricer = with_role(&node, "pricer", "pricing_manager").await;
    let (_, plain) = user(&node, "shopper").await;

    for (code, currency, locale, countries) in [
        ("eu", "EUR", "fr-FR", json!(["FR", "DE"])),
        ("us", "USD", "en-US", json!(["US"])),
        ("jp", "JPY", "ja-JP", json!(["JP"])),
        ("kw", "KWD", "ar-KW", json!(["KW"])),
    ] {
        let (s, m) = node
            .call_as(
                Some(&pricer),
                "POST",
                "/api/babel/markets",
                Some(json!({"code": code, "name": code, "currency": currency, "locale": locale, "countries": countries})),
            )
            .await;
        assert_eq!(s, 201, "{m}");
    }
    for (market, body) in [
        (
            "eu",
            json!({"amount": 1299, "tax_rate_bp": 2000, "tax_included": true}),
        ),
        ("us", json!({"amount": 1299})),
        ("jp", json!({"amount": 1300})),
        ("kw", json!({"multiplier": "0.3085"})),
    ] {
        let mut body = body;
        body["market"] = json!(market);
        body["sku"] = json!("tee");
        let (s, r) = node
            .call_as(Some(&pricer), "POST", "/api/babel/rules", Some(body))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    for (query, formatted, amount) in [
        ("sku=tee&country=FR&locale=fr-FR", "12,99\u{a0}€", 1299),
        ("sku=tee&country=US&locale=en-US", "$12.99", 1299),
        ("sku=tee&country=JP&locale=ja-JP", "¥1,300", 1300),
        (
            "sku=tee&country=KW&locale=en&base_amount=1000&base_currency=USD",
            "KWD\u{a0}3.085",
            3085,
        ),
    ] {
        let (s, q) = node
            .call_as(None, "GET", &format!("/api/babel/price?{query}"), None)
            .await;
        assert_eq!(s, 200, "{q}");
        assert_eq!(
            (&q["formatted"], &q["amount"]),
            (&json!(formatted), &json!(amount)),
            "{query}"
        );
        assert_eq!(q["source"], "sku");
        assert!(q["rule"]["id"].is_string());
    }
    let (_, q) = node
        .call_as(None, "GET", "/api/babel/price?sku=tee&country=FR", None)
        .await;
    assert_eq!(
        (&q["currency"], &q["net_amount"], &q["tax_amount"]),
        (&json!("EUR"), &json!(1083), &json!(216))
    );

    // Bad inputs.
    for q in [
        "sku=tee",
        "country=FR",
        "sku=tee&country=FR&bogus=1",
        "sku=tee&country=FR&locale=",
        "sku=tee&country=fr",
        "sku=tee&country=FR&locale=fr_FR",
        "sku=tee&country=KW&base_amount=10&base_currency=XYZ",
        "sku=tee&country=KW&base_amount=ten&base_currency=USD",
        "sku=tee&country=KW",
    ] {
        let (s, e) = node
            .call_as(None, "GET", &format!("/api/babel/price?{q}"), None)
            .await;
        assert_error(s, &e, 400, "invalid_argument");
    }
    let (markets, rules, bad) = ("/api/babel/markets", "/api/babel/rules", "invalid_argument");
    let as_pricer = Some(pricer.as_str());
    assert_refused(
        &node,
        vec![
            (None, "GET", "/api/babel/price?sku=tee&country=BR", None, 404, "not_found"),
            (
                as_pricer,
                "POST",
                markets,
                Some(json!({"code": "x", "name": "x", "currency": "ABC", "locale": "en"})),
                400,
                bad,
            ),
            (
                as_pricer,
                "POST",
                markets,
                Some(json!({"code": "x", "name": "n".repeat(201), "currency": "EUR", "locale": "en"})),
                400,
                bad,
            ),
            (
                as_pricer,
                "POST",
                markets,
                Some(json!({"code": "x", "name": "x", "currency": "EUR", "locale": "en", "vat": true})),
                400,
                bad,
            ),
        ],
    )
    .await;
    let (s, e) = node
        .raw_as(as_pricer, "POST", rules, "application/json", "{\"market\":")
        .await;
    assert_error(s, &e, 400, "malformed_json");
    // 409: the code, a country of another market, a second rule for the SKU, a market with
    // rules; then 404, 401, 403.
    let (exists, conflict) = ("already_exists", "conflict");
    let x_market = json!({"code": "x", "name": "x", "currency": "EUR", "locale": "en"});
    assert_refused(
        &node,
        vec![
            (
                as_pricer,
                "POST",
                markets,
                Some(json!({"code": "eu", "name": "x", "currency": "EUR", "locale": "en"})),
                409,
                exists,
            ),
            (
                as_pricer,
                "POST",
                markets,
                Some(json!({"code": "de", "name": "x", "currency": "EUR", "locale": "de", "countries": ["DE"]})),
                409,
                exists,
            ),
            (
                as_pricer,
                "POST",
                rules,
                Some(json!({"market": "eu", "sku": "tee", "amount": 1})),
                409,
                exists,
            ),
            (as_pricer, "DELETE", "/api/babel/markets/eu", None, 409, conflict),
            (
                as_pricer,
                "PATCH",
                "/api/babel/markets/eu",
                Some(json!({"currency": "CHF"})),
                409,
                conflict,
            ),
            (None, "GET", "/api/babel/markets/nowhere", None, 404, "not_found"),
            (as_pricer, "GET", "/api/babel/rules/nope", None, 404, "not_found"),
            (None, "POST", markets, Some(x_market), 401, "unauthenticated"),
            (None, "GET", rules, None, 401, "unauthenticated"),
            (Some(&plain), "GET", rules, None, 403, "forbidden"),
            (
                Some(&plain),
                "POST",
                rules,
                Some(json!({"market": "eu", "sku": "cap", "amount": 1})),
                403,
                "forbidden",
            ),
        ],
    )
    .await;

    // Anyone reads markets; pricing managers read and page the rules.
    let (s, p) = node
        .call_as(None, "GET", "/api/babel/markets?limit=2", None)
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["items"].as_array().expect("items").len(), 2);
    assert!(p["next_cursor"].is_string());
    let (s, p) = node
        .call_as(Some(&pricer), "GET", "/api/babel/rules?market=eu", None)
        .await;
    assert_eq!(s, 200, "{p}");
    let id = p["items"][0]["id"].as_str().expect("id").to_owned();
    let (s, r) = node
        .call_as(Some(&pricer), "PUT", &format!("/api/babel/rules/{id}"), Some(json!({"market": "eu", "sku": "tee", "amount": 1499, "tax_rate_bp": 2000, "tax_included": true})))
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, q) = node
        .call_as(
            None,
            "GET",
            "/api/babel/price?sku=tee&country=DE&locale=de-DE",
            None,
        )
        .await;
    assert_eq!(q["formatted"], "14,99\u{a0}€", "the change shows at once");
    let (s, _) = node
        .call_as(
            Some(&pricer),
            "DELETE",
            &format!("/api/babel/rules/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, m) = node
        .call_as(
            Some(&pricer),
            "PATCH",
            "/api/babel/markets/eu",
            Some(json!({"countries": ["FR", "BE"]})),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["countries"], json!(["BE", "FR"]));
    let (s, _) = node
        .call_as(Some(&pricer), "DELETE", "/api/babel/markets/eu", None)
        .await;
    assert_eq!(s, 204);
    let (s, a) = node
        .call("GET", "/api/security/audit?entity_id=eu", None)
        .await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = a["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "babel.market_create",
            "babel.market_update",
            "babel.market_delete"
        ]
    );
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

#[tokio::test]
async fn localization_and_babel_over_grpc() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let ch = Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut l10n = LocalizationServiceClient::new(ch.clone());
    let put = l10n
        .put_message(with_token(
            lpb::PutMessageRequest {
                namespace: "app".into(),
                locale: "ar".into(),
                key: "n".into(),
                value: "{ $n ->\n [zero] zero\n [two] two\n [few] few\n *[other] other\n}".into(),
            },
            &admin,
        ))
        .await
        .expect("put")
        .into_inner();
    assert!(put.created);
    let args = proto::convert::json_to_struct(json!({"n": 2})).expect("struct");
    let f = l10n
        .format(lpb::FormatRequest {
            namespace: "app".into(),
            key: "n".into(),
            locale: "ar-EG".into(),
            args: Some(args),
        })
        .await
        .expect("format")
        .into_inner();
    assert_eq!(
        (f.text.as_str(), f.locale.as_str(), f.fallback),
        ("two", "ar", true)
    );
    let e = l10n
        .put_message(lpb::PutMessageRequest {
            namespace: "app".into(),
            locale: "ar".into(),
            key: "n".into(),
            value: "x".into(),
        })
        .await
        .expect_err("anonymous");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = l10n
        .put_message(with_token(
            lpb::PutMessageRequest {
                namespace: "app".into(),
                locale: "a_b".into(),
                key: "n".into(),
                value: "x".into(),
            },
            &admin,
        ))
        .await
        .expect_err("bad locale");
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut babel = BabelServiceClient::new(ch);
    babel
        .create_market(with_token(
            bpb::CreateMarketRequest {
                code: "jp".into(),
                name: "Japan".into(),
                currency: "JPY".into(),
                locale: "ja-JP".into(),
                countries: vec!["JP".into()],
            },
            &admin,
        ))
        .await
        .expect("market");
    let e = babel
        .create_market(with_token(
            bpb::CreateMarketRequest {
                code: "jp".into(),
                name: "Japan".into(),
                currency: "JPY".into(),
                locale: "ja-JP".into(),
                countries: vec![],
            },
            &admin,
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(e.code(), Code::AlreadyExists);
    babel
        .create_rule(with_token(
            bpb::RuleBody {
                market: "jp".into(),
                sku: Some("tee".into()),
                multiplier: Some("123.4".into()),
                rounding: "to_99".into(),
                ..bpb::RuleBody::default()
            },
            &admin,
        ))
        .await
        .expect("rule");
    let q = babel
        .get_price(bpb::PriceRequest {
            sku: "tee".into(),
            country: "JP".into(),
            base_amount: Some(1000),
            base_currency: Some("USD".into()),
            ..bpb::PriceRequest::default()
        })
        .await
        .expect("price")
        .into_inner();
    assert_eq!(
        (q.amount, q.formatted.as_str(), q.source.as_str()),
        (1299, "¥1,299", "sku")
    );
    let e = babel
        .get_price(bpb::PriceRequest {
            sku: "tee".into(),
            country: "JP".into(),
            base_amount: Some(1000),
            base_currency: Some("XXX".into()),
            ..bpb::PriceRequest::default()
        })
        .await
        .expect_err("currency");
    assert_eq!(e.code(), Code::InvalidArgument);
}
