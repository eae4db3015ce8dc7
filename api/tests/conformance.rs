//! The OpenAPI document describes what the server accepts, against a real node: every
//! documented length and pattern is tried on both sides of its limits and on the characters
//! that trimming, control-character and NUL rules treat specially, and the document's verdict
//! must be the server's; query values are non-empty; and a route that needs a token answers
//! 401 to a call without one before it looks at the call's input (so such a call never learns
//! what is wrong with its input).

mod common;

use common::TestNode;
use futures_util::StreamExt as _;
use regex::Regex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The generated document at `pointer`.
fn doc(pointer: &str) -> Value {
    api::openapi::document()
        .pointer(pointer)
        .cloned()
        .unwrap_or_else(|| panic!("the document has no {pointer}"))
}

/// The schema of a component's property.
fn property(schema: &str, name: &str) -> Value {
    doc(&format!("/components/schemas/{schema}/properties/{name}"))
}

/// The schema of an operation's parameter.
fn parameter(path: &str, method: &str, name: &str) -> Value {
    let op = &api::openapi::document()["paths"][path][method];
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .map(|p| p["schema"].clone())
        .unwrap_or_else(|| panic!("no parameter {name} on {method} {path}"))
}

/// `path` with `segment` appended, every byte but `[A-Za-z0-9_.~-]` percent-encoded (URL
/// parsers drop the tabs and newlines that are not).
fn with_segment(path: &str, segment: &str) -> String {
    let mut out = format!("{path}/");
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether every schema of `schemas` admits the string `value`: its lengths (in characters,
/// as JSON Schema counts) and its pattern (searched, not anchored, as JSON Schema does).
fn admits(schemas: &[&Value], value: &str) -> bool {
    let n = value.chars().count() as u64;
    schemas.iter().all(|s| {
        s["minLength"].as_u64().is_none_or(|m| n >= m)
            && s["maxLength"].as_u64().is_none_or(|m| n <= m)
            && s["pattern"]
                .as_str()
                .is_none_or(|p| Regex::new(p).expect("a valid pattern").is_match(value))
    })
}

/// Text around the limit `max` (in characters, ASCII and not), and the characters the rules
/// treat specially: white space (Rust's, which is not every language's), control characters,
/// NUL, non-ASCII letters and symbols.
fn corpus(max: usize) -> Vec<String> {
    let mut v: Vec<String> = [
        " ",
        "a",
        "ab",
        "abc",
        "a b",
        " a",
        "a ",
        "\ta\n",
        "a\tb",
        "a\nb",
        "\u{85}a\u{85}",
        "a\u{85}b",
        "\u{a0}",
        "x\u{a0}y",
        "a\u{0}b",
        "\u{0}",
        "\u{1f}",
        "\u{7f}x",
        "x\u{9f}",
        "é",
        "日本語",
        "😀",
        "-a",
        "a-",
        "a-b",
        "A",
        "Ab",
        "a_b",
        "a.b",
        "a:b",
        "a@b",
        "a%b",
        "\u{1c}x",
        "\u{feff}",
        "x\u{200b}",
        "\u{2028}",
        "\u{3000}x\u{3000}",
        "a\u{2029}b",
    ]
    .map(String::from)
    .into();
    for n in [max - 1, max, max + 1] {
        v.push("x".repeat(n));
        v.push("é".repeat(n));
    }
    v.push(format!("  {}\t", "y".repeat(max)));
    v.push(format!(" {}", "y".repeat(max + 1)));
    v
}

/// Collects a disagreement between the document (`schemas`) and the server (`status`, where
/// `ok` is acceptance and 400 refusal) about `value`.
fn compare(
    wrong: &mut Vec<String>,
    schemas: &[&Value],
    value: &str,
    status: u16,
    ok: u16,
    body: &Value,
) {
    let documented = admits(schemas, value);
    let shown: String = value.chars().take(40).collect();
    match status {
        s if s == ok && documented => {}
        400 if !documented => {}
        s if s == ok || s == 400 => wrong.push(format!(
            "{shown:?} ({} chars): the document {} it, the server answered {s}: {body}",
            value.chars().count(),
            if documented { "admits" } else { "refuses" },
        )),
        s => panic!("{shown:?}: unexpected {s}: {body}"),
    }
}

#[tokio::test]
async fn names_slugs_and_event_names_are_what_the_document_says() {
    let node = TestNode::start().await;
    let name = property("NewCampaign", "name");
    let slug = property("NewCampaign", "slug");
    let mut wrong = Vec::new();
    for (i, s) in corpus(services::campaign::model::MAX_NAME_LEN)
        .iter()
        .enumerate()
    {
        let body = json!({"name": s, "slug": format!("name-{i}"), "status": "draft"});
        let (status, body) = node.call("POST", "/api/campaigns", Some(body)).await;
        compare(&mut wrong, &[&name], s, status, 201, &body);
    }
    for s in corpus(services::campaign::model::MAX_SLUG_LEN) {
        let body = json!({"name": "A slug", "slug": s, "status": "draft"});
        let (status, body) = node.call("POST", "/api/campaigns", Some(body)).await;
        compare(&mut wrong, &[&slug], &s, status, 201, &body);
    }
    let id = node.campaign("events", 1.0, json!({})).await;
    let event = property("EventBody", "name");
    let message = property("MessageBody", "name");
    for s in corpus(engine::session::MAX_EVENT_NAME) {
        let path = format!("/api/campaigns/{id}/events");
        let (status, body) = node.call("POST", &path, Some(json!({"name": s}))).await;
        compare(&mut wrong, &[&event], &s, status, 202, &body);
        let path = format!("/api/campaigns/{id}/users/u1/messages");
        let (status, body) = node.call("POST", &path, Some(json!({"name": s}))).await;
        compare(&mut wrong, &[&message], &s, status, 202, &body);
    }
    // The user of a message is a path segment.
    let user = parameter(
        "/api/campaigns/{id}/users/{user_id}/messages",
        "post",
        "user_id",
    );
    for s in corpus(api::http::MAX_USER_ID) {
        let users = format!("/api/campaigns/{id}/users");
        let url = node.url(&format!("{}/messages", with_segment(&users, &s)));
        let res = node
            .client
            .post(url)
            .bearer_auth(node.token.as_deref().expect("token"))
            .json(&json!({"name": "hello"}))
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("JSON");
        compare(&mut wrong, &[&user], &s, status, 202, &body);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn content_text_is_what_the_document_says() {
    let node = TestNode::start().await;
    let mut wrong = Vec::new();
    let title = property("NewContent", "title");
    let article_title = doc("/components/schemas/NewContent/oneOf/0/properties/title");
    for s in corpus(services::content::model::MAX_TITLE_LEN) {
        let body = json!({"kind": "article", "title": s});
        let (status, body) = node.call("POST", "/api/content", Some(body)).await;
        compare(
            &mut wrong,
            &[&title, &article_title],
            &s,
            status,
            201,
            &body,
        );
    }
    let body = property("NewContent", "body");
    let micro_body = doc("/components/schemas/NewContent/oneOf/1/properties/body");
    for s in corpus(services::content::model::MAX_MICRO_BODY_LEN) {
        let req = json!({"kind": "micro", "body": s});
        let (status, res) = node.call("POST", "/api/content", Some(req)).await;
        compare(&mut wrong, &[&body, &micro_body], &s, status, 201, &res);
    }
    let tag = property("NewContent", "tags")["items"].clone();
    for s in corpus(services::content::model::MAX_TAG_LEN) {
        let req = json!({"kind": "micro", "body": "tagged", "tags": [s]});
        let (status, res) = node.call("POST", "/api/content", Some(req)).await;
        compare(&mut wrong, &[&tag], &s, status, 201, &res);
    }
    let url = property("NewContent", "url");
    let mut urls: Vec<String> = [
        "https://example.com",
        "http://e.com/a?b=c#d",
        "HTTPS://user@host:8080/x",
        "hTtP://h",
        "http://a@b@c/x",
        "https://",
        "https:///path",
        "https://:80",
        "https://@",
        "https://exa mple.com",
        "https://e.com/\u{85}",
        "ftp://example.com",
        "javascript:alert(1)",
        "example.com",
        "https://例え.jp/パス",
        " https://e.com",
    ]
    .map(String::from)
    .into();
    let max = services::content::model::MAX_URL_LEN;
    for n in [max - 1, max, max + 1] {
        urls.push(format!("https://e.com/{}", "p".repeat(n - 14)));
    }
    for s in urls {
        let req = json!({"kind": "video", "title": "A video", "url": s});
        let (status, res) = node.call("POST", "/api/content", Some(req)).await;
        compare(&mut wrong, &[&url], &s, status, 201, &res);
    }
    let (s, post) = node
        .call(
            "POST",
            "/api/content",
            Some(json!({"kind": "article", "title": "Commented"})),
        )
        .await;
    assert_eq!(s, 201, "{post}");
    let id = post["id"].as_str().expect("id");
    let comment = property("NewComment", "body");
    for s in corpus(services::content::model::MAX_COMMENT_LEN) {
        let path = format!("/api/content/{id}/comments");
        let (status, res) = node.call("POST", &path, Some(json!({"body": s}))).await;
        compare(&mut wrong, &[&comment], &s, status, 201, &res);
    }
    let kind = parameter("/api/content/{id}/reactions/{kind}", "put", "kind");
    for s in corpus(services::content::model::MAX_REACTION_KIND_LEN) {
        let url = node.url(&with_segment(&format!("/api/content/{id}/reactions"), &s));
        let res = node
            .client
            .put(url)
            .bearer_auth(node.token.as_deref().expect("token"))
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("JSON");
        compare(&mut wrong, &[&kind], &s, status, 200, &body);
    }
    let q = parameter("/api/content/search", "get", "q");
    for s in corpus(services::content::model::MAX_QUERY_LEN) {
        let res = node
            .client
            .get(node.url("/api/content/search"))
            .query(&[("q", &s)])
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("JSON");
        compare(&mut wrong, &[&q], &s, status, 200, &body);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // What a pattern cannot count is in the description: at most 32 words.
    let words = "w ".repeat(services::content::model::MAX_QUERY_WORDS + 1);
    let (s, e) = node
        .call("GET", &format!("/api/content/search?q={words}"), None)
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    let op = doc("/paths/~1api~1content~1search/get/parameters");
    assert!(op.to_string().contains("32 words"), "{op}");
}

#[tokio::test]
async fn user_names_emails_and_display_names_are_what_the_document_says() {
    let node = TestNode::start().await;
    let mut wrong = Vec::new();
    // Registrations are limited per client address: a short list.
    let username = property("NewUser", "username");
    let names = [
        "ab",
        "abc",
        "A.b-c_9",
        "a b",
        " abcd",
        "abcd\n",
        "a@bc",
        "ééé",
        "日本語",
        &"x".repeat(32),
        &"y".repeat(33),
    ];
    for (i, s) in names.iter().enumerate() {
        let body =
            json!({"username": s, "email": format!("u{i}@example.org"), "password": "password123"});
        let (status, res) = node
            .call_as(None, "POST", "/api/auth/register", Some(body))
            .await;
        compare(&mut wrong, &[&username], s, status, 201, &res);
    }
    // The password's length, in characters.
    let password = property("NewUser", "password");
    for (i, s) in [
        "1234567",
        "12345678",
        "éééééééé",
        &"p".repeat(128),
        &"p".repeat(129),
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"username": format!("pw{i}"), "email": format!("pw{i}@example.org"), "password": s});
        let (status, res) = node
            .call_as(None, "POST", "/api/auth/register", Some(body))
            .await;
        compare(&mut wrong, &[&password], s, status, 201, &res);
    }
    let display_name = property("ProfileUpdate", "display_name");
    for s in corpus(services::user::model::MAX_DISPLAY_NAME_LEN) {
        let body = json!({"display_name": s});
        let (status, res) = node.call("PATCH", "/api/users/me", Some(body)).await;
        compare(&mut wrong, &[&display_name], &s, status, 200, &res);
    }
    // The document describes ASCII addresses without spaces around them: every address it
    // admits is accepted (the service takes some it does not describe).
    let email = property("ProfileUpdate", "email");
    let max = services::user::model::MAX_EMAIL_LEN;
    let long = |n: usize| format!("{}@example.org", "e".repeat(n - 12));
    for s in [
        "a@b.c",
        "a@.",
        "A+tag@Example.ORG",
        "a@b",
        "@b.c",
        "a@@b.c",
        "a b@c.d",
        "a@b.c@d",
        "",
        &long(max),
        &long(max + 1),
    ] {
        let (status, res) = node
            .call("PATCH", "/api/users/me", Some(json!({"email": s})))
            .await;
        compare(&mut wrong, &[&email], s, status, 200, &res);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn times_and_since_are_what_the_document_says() {
    let node = TestNode::start().await;
    let mut wrong = Vec::new();
    let since = parameter("/api/security/audit", "get", "since");
    assert_eq!(since["format"], "date-time");
    for (s, calendar) in [
        ("2026-11-26T09:00:00Z", true),
        ("2026-11-26T09:00:00.123456789Z", true),
        ("2026-11-26T09:00:00+00:00", true),
        ("1970-01-01T00:00:00Z", true),
        ("9999-12-31T23:59:59Z", true),
        ("2028-02-29T00:00:00Z", true),
        ("2026-11-26T09:00:00+01:00", true),
        ("1969-12-31T23:59:59Z", true),
        ("2026-11-26 09:00:00Z", true),
        ("2026-11-26t09:00:00z", true),
        ("2026-11-26T09:00:00", true),
        // `format: date-time` refuses these.
        ("2026-02-29T00:00:00Z", false),
        ("2026-04-31T00:00:00Z", false),
        ("2026-13-01T00:00:00Z", false),
        ("2026-11-26T24:00:00Z", false),
        ("yesterday", false),
    ] {
        let res = node
            .client
            .get(node.url("/api/security/audit"))
            .bearer_auth(node.token.as_deref().expect("token"))
            .query(&[("since", s)])
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("JSON");
        let documented = calendar && admits(&[&since], s);
        let accepted = status == 200;
        if documented != accepted {
            wrong.push(format!(
                "since={s}: document {documented}, server {status}: {body}"
            ));
        }
    }
    // A WebSocket's `since`: a u64. A refused upgrade is accepted, then closed with 4400.
    let id = node.campaign("resumed", 1.0, json!({})).await;
    for path in ["/ws/{campaign_id}/{user_id}", "/ws/{campaign_id}"] {
        let ws_since = parameter(path, "get", "since");
        assert_eq!(ws_since["format"], "uint64", "{path}");
        assert_eq!(ws_since["maximum"], u64::MAX, "{path}");
    }
    let ws_since = parameter("/ws/{campaign_id}/{user_id}", "get", "since");
    for s in [
        "0",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "1.5",
        "1e3",
        "abc",
    ] {
        let documented = s.parse::<i128>().is_ok_and(|n| {
            ws_since["minimum"]
                .as_i64()
                .is_some_and(|m| n >= i128::from(m))
                && ws_since["maximum"]
                    .as_u64()
                    .is_some_and(|m| n <= i128::from(m))
        });
        let mut ws = node.ws(&id, "u1", &format!("?since={s}")).await;
        let refused = match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
        {
            Some(Ok(Message::Close(Some(f)))) => u16::from(f.code) == 4400,
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v["type"], "welcome", "{v}");
                false
            }
            other => panic!("since={s}: {other:?}"),
        };
        if documented == refused {
            wrong.push(format!(
                "since={s}: the document {} it, the node {}",
                if documented { "admits" } else { "refuses" },
                if refused {
                    "closed with 4400"
                } else {
                    "welcomed it"
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn empty_query_values_are_refused_as_documented() {
    let node = TestNode::start().await;
    let document = api::openapi::document();
    let mut tried = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") {
            continue;
        }
        for (method, op) in item.as_object().expect("item") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] != "query" || p["schema"]["type"] != "string" {
                    continue;
                }
                assert_eq!(p["schema"]["minLength"], 1, "{method} {path} {}", p["name"]);
                let url = format!(
                    "{}?{}=",
                    path.replace("{id}", "some-id"),
                    p["name"].as_str().expect("name")
                );
                let (s, e) = node.call(&method.to_uppercase(), &url, None).await;
                common::assert_error(s, &e, 400, "invalid_argument");
                tried += 1;
            }
        }
    }
    assert!(tried >= 20, "{tried}");
}

#[tokio::test]
async fn routes_that_need_a_token_refuse_calls_without_one_before_reading_them() {
    let node = TestNode::start().await;
    let document = api::openapi::document();
    let mut tried = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            // A WebSocket answers a plain GET 426, and a refused upgrade with a 4401 close.
            if op["security"] != json!([{"bearer": []}]) || !path.starts_with("/api/") {
                continue;
            }
            // Bad everywhere: a user id with a space, an unknown and an empty query
            // parameter, a body that is not JSON.
            let url = node.url(&format!(
                "{}?limit=0&no-such-parameter=1&cursor=",
                path.replace("{id}", "x")
                    .replace("{user_id}", "a%20b")
                    .replace("{role}", "no-such-role")
                    .replace("{kind}", "NOT%20A%20KIND")
            ));
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            for content_type in ["application/json", "text/plain"] {
                let res = node
                    .client
                    .request(method.clone(), &url)
                    .header("content-type", content_type)
                    .body("{not json")
                    .send()
                    .await
                    .expect("request");
                let status = res.status().as_u16();
                let body: Value = res.json().await.expect("JSON");
                assert_eq!(
                    (status, &body["error"]["code"]),
                    (401, &json!("unauthenticated")),
                    "{method} {url} ({content_type}): {body}"
                );
            }
            tried += 1;
        }
    }
    assert!(tried >= 25, "{tried} routes");
    // With a token the same input is looked at.
    let (s, e) = node
        .raw("POST", "/api/campaigns", "application/json", "{not json")
        .await;
    common::assert_error(s, &e, 400, "malformed_json");
    // Where a token is optional, a call without one is read as anonymous.
    let (s, e) = node
        .call_as(None, "GET", "/api/campaigns?limit=0", None)
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
}

#[tokio::test]
async fn nul_is_refused_where_the_databases_cannot_store_it() {
    let node = TestNode::start().await;
    for body in [
        json!({"name": "a\u{0}b"}),
        json!({"name": "ok", "metadata": {"audit": {"by": "a\u{0}"}}}),
        json!({"name": "ok", "state": {"k\u{0}": 1}}),
    ] {
        let (s, e) = node.call("POST", "/api/campaigns", Some(body)).await;
        common::assert_error(s, &e, 400, "invalid_argument");
    }
    // The text `\u0000` is no NUL.
    let body = json!({"name": "Escaped", "state": {"note": "\\u0000"}});
    let (s, c) = node.call("POST", "/api/campaigns", Some(body)).await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().expect("id");
    let path = format!("/api/campaigns/{id}/state");
    let (s, e) = node
        .call("PATCH", &path, Some(json!({"a": ["\u{0}"]})))
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    // And the document says so.
    let value = doc("/components/schemas/JsonValue");
    assert!(value.to_string().contains(r"[^\\x00]"), "{value}");
    assert_eq!(
        doc(
            "/paths/~1api~1campaigns~1{id}~1state/patch/requestBody/content/application~1json/schema"
        ),
        json!({"$ref": "#/components/schemas/JsonObject"})
    );
}

#[tokio::test]
async fn what_a_post_or_campaign_holds_already_is_a_conflict_not_a_bad_request() {
    let node = TestNode::start().await;
    let (s, micro) = node
        .call(
            "POST",
            "/api/content",
            Some(json!({"kind": "micro", "body": "short"})),
        )
        .await;
    assert_eq!(s, 201, "{micro}");
    let path = format!("/api/content/{}", micro["id"].as_str().expect("id"));
    // Valid for an article, not for this micro-post: 409, which is documented.
    let long = "b".repeat(services::content::model::MAX_MICRO_BODY_LEN + 1);
    let (s, e) = node.call("PATCH", &path, Some(json!({"body": long}))).await;
    common::assert_error(s, &e, 409, "conflict");
    assert!(doc("/paths/~1api~1content~1{id}/patch/responses/409").is_object());
    // Valid for no post: 400. An empty patch too, as the document's `anyOf` says.
    for patch in [json!({"url": "ftp://x"}), json!({}), json!({"title": null})] {
        let (s, e) = node.call("PATCH", &path, Some(patch)).await;
        common::assert_error(s, &e, 400, "invalid_argument");
    }
    // A reply to a comment the post does not have: no such comment (404).
    let comments = format!("{path}/comments");
    let (s, e) = node
        .call(
            "POST",
            &comments,
            Some(json!({"body": "hi", "parent_id": "no-such-comment"})),
        )
        .await;
    common::assert_error(s, &e, 404, "not_found");

    // A campaign's end must follow its start: in one request, 400; against the stored
    // start, 409.
    let (s, e) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Backwards", "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"})),
        )
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Scheduled", "status": "draft", "starts_at": "2030-01-02T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let path = format!("/api/campaigns/{}", c["id"].as_str().expect("id"));
    let (s, e) = node
        .call(
            "PATCH",
            &path,
            Some(json!({"ends_at": "2030-01-01T00:00:00Z"})),
        )
        .await;
    common::assert_error(s, &e, 409, "conflict");
    let (s, e) = node
        .call(
            "PATCH",
            &path,
            Some(json!({"starts_at": "2030-01-03T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"})),
        )
        .await;
    common::assert_error(s, &e, 400, "invalid_argument");
    let (s, c) = node
        .call(
            "PATCH",
            &path,
            Some(json!({"ends_at": "2030-01-03T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
}
