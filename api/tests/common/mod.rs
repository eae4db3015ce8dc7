//! A real node on 127.0.0.1 port 0 with its own SQLite file, plus WebSocket and HTTP helpers.

#![allow(dead_code)]

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use api::app::Running;
use api::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestNode {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    /// The admin token the node printed (`dev`): `call` and `raw` send it.
    pub token: Option<String>,
    dir: PathBuf,
}

/// The token secret every test node shares (so the nodes of a cluster accept each other's).
pub const TEST_SECRET: &str = "an e2e test secret of at least 32 bytes";

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ovasabi-e2e-{}-{n}", std::process::id()));
        let mut config = Config {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            metrics_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            node_id: Some(format!("test-{n}")),
            database_url: Some(format!("sqlite://{}/db.sqlite", dir.display())),
            data_dir: dir.clone(),
            shutdown_timeout: Duration::from_secs(5),
            // Tests start dozens of nodes at once on two cores: opening a SQLite connection
            // can take over the default second (tests of the timeout itself set it back).
            database_timeout: Duration::from_secs(5),
            dev: true,
            jwt_secret: Some(TEST_SECRET.to_owned()),
            ..Config::default()
        };
        tweak(&mut config);
        let running = api::app::start(config).await.expect("node starts");
        Self {
            http: running.http_addr,
            metrics: running.metrics_addr,
            grpc: running.grpc_addr,
            token: running.dev_admin_token.clone(),
            running: Some(running),
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// This node's SQLite database, for a second node that shares it.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}/db.sqlite", self.dir.display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Sends a JSON request; returns the status and the JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(self.token.as_deref(), method, path, body)
            .await
    }

    /// As [`TestNode::call`], with `token` (or none) instead of the admin's.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, json)
    }

    /// Sends a raw body with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        self.raw_as(self.token.as_deref(), method, path, content_type, body)
            .await
    }

    /// As [`TestNode::raw`], with `token` (or none) instead of the admin's.
    pub async fn raw_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    /// Creates an active campaign; returns its id.
    pub async fn campaign(&self, slug: &str, hz: f64, extra: Value) -> String {
        let mut body =
            json!({"name": slug, "slug": slug, "metadata": {"scheduling": {"frequency": hz}}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, c) = self.call("POST", "/api/campaigns", Some(body)).await;
        assert_eq!(status, 201, "{c}");
        c["id"].as_str().expect("id").to_owned()
    }

    pub async fn publish(&self, id: &str, name: &str, data: Value, immediate: bool) -> u64 {
        let (status, r) = self
            .call(
                "POST",
                &format!("/api/campaigns/{id}/events"),
                Some(json!({"name": name, "data": data, "immediate": immediate})),
            )
            .await;
        assert_eq!(status, 202, "{r}");
        r["seq"].as_u64().expect("seq")
    }

    pub async fn ws(&self, campaign: &str, user: &str, query: &str) -> Ws {
        self.ws_path(&format!("/ws/{campaign}/{user}{query}")).await
    }

    /// A WebSocket on `path` (with its query).
    pub async fn ws_path(&self, path: &str) -> Ws {
        let url = format!("ws://{}{path}", self.http);
        let (ws, res) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        assert_eq!(res.status(), 101);
        ws
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn shutdown(&mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => true,
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts an error answer: status, `error.code`, and a message.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The actions of the audit rows of `entity_id` (read as the admin), sorted.
pub async fn audit_actions(node: &TestNode, entity_id: &str) -> Vec<String> {
    let (s, b) = node
        .call(
            "GET",
            &format!("/api/security/audit?entity_id={entity_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut actions: Vec<String> = b["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["action"].as_str().expect("action").to_owned())
        .collect();
    actions.sort();
    actions
}

/// Registers `username` (password `password123`) and logs in; returns (user id, token).
pub async fn user(node: &TestNode, username: &str) -> (String, String) {
    let (s, u) = node
        .call_as(
            None,
            "POST",
            "/api/auth/register",
            Some(json!({"username": username, "email": format!("{username}@example.org"), "password": "password123"})),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    (
        u["id"].as_str().expect("id").to_owned(),
        login(node, username).await,
    )
}

/// Logs `username` in (password `password123`); returns the access token.
pub async fn login(node: &TestNode, username: &str) -> String {
    let (s, t) = node
        .call_as(
            None,
            "POST",
            "/api/auth/login",
            Some(json!({"login": username, "password": "password123"})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    t["access_token"].as_str().expect("token").to_owned()
}

/// The next data frame as JSON (binary frames inflated); panics after 10 s.
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON text frame"),
            Message::Binary(b) => return serde_json::from_str(&inflate(&b)).expect("JSON inside"),
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => continue,
        }
    }
}

/// Next frame whose type is `kind`.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

pub fn inflate(b: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::DeflateDecoder::new(b)
        .read_to_string(&mut s)
        .expect("raw deflate");
    s
}

/// Reads until the close frame; returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close within 10 s")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

/// Opens `path` (with its query) as a WebSocket that the node refuses: the upgrade is accepted,
/// then closed; returns the close code and reason.
pub async fn refused(node: &TestNode, path: &str) -> (u16, String) {
    let url = format!("ws://{}{path}", node.http);
    let (mut ws, res) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade is accepted");
    assert_eq!(res.status(), 101);
    match tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("close within 10 s")
    {
        Some(Ok(Message::Close(Some(f)))) => (f.code.into(), f.reason.to_string()),
        Some(Ok(Message::Close(None))) => (1005, String::new()),
        Some(Ok(m)) => panic!("a refused session sent {m:?}"),
        Some(Err(e)) => panic!("socket error before the close frame: {e}"),
        None => panic!("socket ended without a close frame"),
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The `seq`s of the events in the next tick frames, until `done` says enough.
pub async fn tick_seqs(ws: &mut Ws, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let mut seqs = Vec::new();
    while !done(&seqs) {
        let t = next_of(ws, "tick").await;
        seqs.extend(
            t["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["seq"].as_u64().expect("seq")),
        );
    }
    seqs
}
