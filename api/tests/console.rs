//! The console at `/` and its assets under `/console/`: served by the node with their content
//! types and `cache-control: no-cache`, the official JavaScript client among them, and a JSON
//! 404 for an unknown asset. (What the console does is tested in a browser: clients/browser.)

mod common;

use common::TestNode;

async fn get(node: &TestNode, path: &str) -> reqwest::Response {
    node.client
        .get(node.url(path))
        .send()
        .await
        .expect("answer")
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_console_and_its_assets_are_served_with_their_types() {
    let node = TestNode::start().await;
    for (path, content_type, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<title>OVASABI console</title>",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "from './live.js'",
        ),
        (
            "/console/live.js",
            "text/javascript; charset=utf-8",
            "from './client.js'",
        ),
        (
            "/console/client.js",
            "text/javascript; charset=utf-8",
            "export function connect(",
        ),
        ("/console/style.css", "text/css; charset=utf-8", ":root"),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let res = get(&node, path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        assert_eq!(header(&res, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        let body = res.text().await.expect("body");
        assert!(body.contains(needle), "{path} holds {needle:?}");
        for external in [
            "src=\"http",
            "href=\"http",
            "url(http",
            "from 'http",
            "import('http",
        ] {
            assert!(!body.contains(external), "{path}: no external assets");
        }
    }
    // The page allows nothing but its own origin.
    let page = get(&node, "/").await;
    assert!(header(&page, "content-security-policy").starts_with("default-src 'self'"));
}

#[tokio::test]
async fn every_module_the_console_imports_is_served() {
    let node = TestNode::start().await;
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec!["app.js".to_owned()];
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let res = get(&node, &format!("/console/{file}")).await;
        assert_eq!(res.status(), 200, "{file} is served");
        let body = res.text().await.expect("body");
        for line in body.lines().filter(|l| l.starts_with("import ")) {
            if let Some(name) = line.split("'./").nth(1).and_then(|r| r.split('\'').next()) {
                todo.push(name.to_owned());
            }
        }
    }
    assert!(seen.contains("client.js") && seen.len() >= 7, "{seen:?}");
}

#[tokio::test]
async fn an_unknown_asset_is_a_json_404() {
    let node = TestNode::start().await;
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/app.js/x",
    ] {
        let res = get(&node, path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert!(
            header(&res, "content-type").starts_with("application/json"),
            "{path}"
        );
        let body: serde_json::Value = res.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
}
