//! WebSocket end-to-end: a real node on port 0, real tokio-tungstenite clients.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, close_code, next, next_of, send};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_then_ticks_at_5_hz() {
    let node = TestNode::start().await;
    let id = node
        .campaign("five", 5.0, json!({"state": {"score": 0}}))
        .await;
    let mut ws = node.ws(&id, "u1", "").await;
    let w = next(&mut ws).await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["campaign"], id.as_str());
    assert_eq!(w["user"], "u1");
    assert_eq!(w["frequency_hz"], 5.0);
    assert!(w["node"].as_str().is_some_and(|n| n.starts_with("test-")));
    let first = next(&mut ws).await;
    assert_eq!(first["state"], json!({"score": 0}));
    // Keep events flowing so that every tick has something to say, and count tick frames.
    let publisher = {
        let client = node.client.clone();
        let url = node.url(&format!("/api/campaigns/{id}/events"));
        let token = node.token.clone().expect("admin token");
        tokio::spawn(async move {
            loop {
                let _ = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"name": "e"}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let start = Instant::now();
    let mut ticks = 0;
    let mut last_seq = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let t = next(&mut ws).await;
        assert_eq!(t["type"], "tick");
        ticks += 1;
        for e in t["events"].as_array().expect("events") {
            let seq = e["seq"].as_u64().expect("seq");
            assert_eq!(
                seq,
                last_seq + 1,
                "events batched in seq order without gaps"
            );
            last_seq = seq;
        }
        assert_eq!(t["seq"].as_u64(), Some(last_seq));
    }
    publisher.abort();
    // 3 s at 5 Hz: 15 ticks, give or take the edges and a loaded machine.
    assert!((12..=17).contains(&ticks), "{ticks} tick frames in 3 s");
    assert!(last_seq > ticks as u64, "several events per tick frame");
    let (_, stats) = node
        .call("GET", &format!("/api/campaigns/{id}/stats"), None)
        .await;
    assert_eq!(stats["connections"]["node"], 1);
    assert!(
        (stats["tick_rate_hz"].as_f64().expect("rate") - 5.0).abs() < 0.5,
        "{stats}"
    );
    assert!(stats["frames_sent"].as_u64().expect("sent") >= 14);
}

#[tokio::test]
async fn frequency_change_is_seen_without_reconnecting() {
    let node = TestNode::start().await;
    let id = node.campaign("retime", 1.0, json!({})).await;
    let mut ws = node.ws("retime", "u", "").await;
    next_of(&mut ws, "tick").await;
    let (status, c) = node
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}"),
            Some(json!({"metadata": {"scheduling": {"frequency": 20}}})),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["metadata"]["scheduling"]["frequency"], 20);
    let cfg = next(&mut ws).await;
    assert_eq!(cfg, json!({"type": "config", "frequency_hz": 20.0}));
    // At 20 Hz, an event is delivered within a tick or two, not a second.
    let publish_at = Instant::now();
    node.publish(&id, "fast", json!(1), false).await;
    let t = next_of(&mut ws, "tick").await;
    assert_eq!(t["events"][0]["name"], "fast");
    assert!(
        publish_at.elapsed() < Duration::from_millis(600),
        "{:?}",
        publish_at.elapsed()
    );
    let (status, err) = node
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}"),
            Some(json!({"metadata": {"scheduling": {"frequency": 0}}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_argument");
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("frequency")
    );
}

#[tokio::test]
async fn immediate_events_and_user_messages() {
    let node = TestNode::start().await;
    let id = node.campaign("slow-tick", 0.1, json!({})).await;
    let mut alice = node.ws(&id, "alice", "").await;
    let mut bob = node.ws(&id, "bob", "").await;
    next_of(&mut alice, "tick").await;
    next_of(&mut bob, "tick").await;
    let seq = node.publish(&id, "now", json!({"x": 1}), true).await;
    let t = next(&mut alice).await;
    assert_eq!(
        t["events"][0]["seq"], seq,
        "immediate events do not wait 10 s for the tick"
    );
    next(&mut bob).await;
    let (status, r) = node
        .call(
            "POST",
            &format!("/api/campaigns/{id}/users/alice/messages"),
            Some(json!({"name": "notification", "data": {"hi": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let m = next(&mut alice).await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["data"], json!({"hi": 1}));
    assert_eq!(m["seq"], seq);
    // Bob gets nothing: the next thing he sees is a ping reply.
    send(&mut bob, r#"{"type":"ping"}"#).await;
    assert_eq!(next(&mut bob).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn compressed_frames_inflate_to_the_same_json() {
    let node = TestNode::start().await;
    let id = node
        .campaign("zip", 2.0, json!({"state": {"big": "y".repeat(2000)}}))
        .await;
    let mut plain = node.ws(&id, "p", "").await;
    let mut zipped = node.ws(&id, "z", "?compress=deflate").await;
    next_of(&mut plain, "tick").await;
    next_of(&mut zipped, "tick").await;
    node.publish(&id, "e", json!({"payload": "x".repeat(3000)}), false)
        .await;
    let a = next(&mut plain).await;
    let raw = loop {
        match zipped.next().await.expect("open").expect("frame") {
            Message::Binary(b) => break b,
            Message::Text(t) => panic!("tick frames must be binary when compressed: {t}"),
            _ => continue,
        }
    };
    assert!(
        raw.len() < 1000,
        "3 KB of repeated text compresses: {} bytes",
        raw.len()
    );
    let b: Value = serde_json::from_str(&common::inflate(&raw)).expect("json");
    assert_eq!(a, b, "the same frame, byte for byte after inflating");
    let (code, reason) = common::refused(&node, &format!("/ws/{id}/u?compress=gzip")).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("deflate"), "{reason}");
}

#[tokio::test]
async fn unknown_campaigns_and_bad_requests_are_closed_with_4xxx_after_the_upgrade() {
    let node = TestNode::start().await;
    let (code, reason) = common::refused(&node, "/ws/no-such-campaign/u1").await;
    assert_eq!(code, 4404, "{reason}");
    assert!(reason.contains("not found"), "{reason}");
    let (code, _) = common::refused(&node, "/ws/no-such-campaign/bad%20user").await;
    assert_eq!(code, 4400, "a bad user id");
    let id = node.campaign("real", 1.0, json!({})).await;
    let (status, body) = node.call("GET", &format!("/ws/{id}/u1"), None).await;
    assert_eq!(status, 426, "a plain GET is told to upgrade: {body}");
    let draft = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "d", "status": "draft"})),
        )
        .await
        .1;
    let (code, reason) = common::refused(
        &node,
        &format!("/ws/{}/u1", draft["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(code, 4404, "a draft is not live: {reason}");
    // Watching as the token's subject needs a token, even in dev mode.
    let (code, _) = common::refused(&node, &format!("/ws/{id}")).await;
    assert_eq!(code, 4401);
    let token = node.token.clone().expect("admin token");
    let mut ws = node.ws_path(&format!("/ws/{id}?token={token}")).await;
    let w = next_of(&mut ws, "welcome").await;
    assert!(w["user"].as_str().is_some_and(|u| !u.is_empty()), "{w}");
}

/// Opens a raw TCP WebSocket connection (handshake done by hand) to send frames that a
/// well-behaved client library refuses to produce.
async fn raw_ws(node: &TestNode, path: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(node.http)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        node.http
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames until a close frame; returns its code.
async fn raw_close_code(s: &mut tokio::net::TcpStream) -> u16 {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
            .await
            .expect("frame in time")
            .expect("read");
        let len = match h[1] & 0x7F {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.expect("len");
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.expect("len");
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("len")];
        s.read_exact(&mut payload).await.expect("payload");
        if h[0] & 0x0F == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn bad_client_input_gets_error_frames_or_close_codes_and_others_are_unaffected() {
    let node = TestNode::start_with(|c| {
        c.max_message_size = 1024;
        c.client_event_burst = 3;
        c.client_event_rate = 0.01;
        c.client_event_abuse_limit = 2;
    })
    .await;
    let id = node.campaign("rules", 1.0, json!({"metadata": {"scheduling": {"frequency": 1}, "custom_rules": {"client_events": true}}})).await;
    let mut bystander = node.ws(&id, "bystander", "").await;
    next_of(&mut bystander, "tick").await;

    let mut ws = node.ws(&id, "u", "").await;
    next_of(&mut ws, "tick").await;
    let deep = format!(
        r#"{{"type":"event","name":"n","data":{}{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    for (input, code) in [
        ("{oops", "bad_frame"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (r#"{"no_type":1}"#, "bad_frame"),
        (r#"{"type":"event","name":""}"#, "invalid_event"),
        (r#"{"type":"event","name":"has space"}"#, "invalid_event"),
        // Data no subscriber could receive (a gRPC one cannot hold 1e400 or 65 levels).
        (
            r#"{"type":"event","name":"n","data":{"x":1e400}}"#,
            "invalid_event",
        ),
        (&deep, "invalid_event"),
    ] {
        send(&mut ws, input).await;
        let e = next(&mut ws).await;
        assert_eq!(e["type"], "error", "{input}");
        assert_eq!(e["code"], code, "{input}");
    }
    ws.send(Message::binary(vec![0u8, 1, 2]))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await["code"], "unsupported");
    // Client events are published (and seen by others) until the rate limit, then refused,
    // then the session is closed with 1008.
    for i in 0..3 {
        send(
            &mut ws,
            &format!(r#"{{"type":"event","name":"click","data":{{"i":{i}}}}}"#),
        )
        .await;
    }
    let t = next_of(&mut bystander, "tick").await;
    assert_eq!(t["events"].as_array().expect("events").len(), 3);
    assert_eq!(t["events"][0]["user"], "u");
    send(&mut ws, r#"{"type":"event","name":"click"}"#).await;
    assert_eq!(next_of(&mut ws, "error").await["code"], "rate_limited");
    send(&mut ws, r#"{"type":"event","name":"click"}"#).await;
    send(&mut ws, r#"{"type":"event","name":"click"}"#).await;
    assert_eq!(next_of(&mut ws, "error").await["code"], "rate_limited");
    assert_eq!(close_code(&mut ws).await, 1008);

    // Over the size limit: 1009.
    let mut big = node.ws(&id, "big", "").await;
    next_of(&mut big, "tick").await;
    let _ = big
        .send(Message::text(format!(
            r#"{{"type":"event","name":"x","data":"{}"}}"#,
            "a".repeat(2000)
        )))
        .await;
    assert_eq!(close_code(&mut big).await, 1009);

    // Invalid UTF-8 in a text frame: 1007.
    let mut raw = raw_ws(&node, &format!("/ws/{id}/raw")).await;
    raw.write_all(&frame(0x1, &[b'{', 0xFF, 0xFE, b'}']))
        .await
        .expect("write");
    assert_eq!(raw_close_code(&mut raw).await, 1007);

    // A client that was not bad is still served.
    send(&mut bystander, r#"{"type":"ping"}"#).await;
    assert_eq!(next_of(&mut bystander, "pong").await["type"], "pong");
    // Sessions are counted as closed once their close handshake ends (bounded by
    // close_timeout): poll until they are.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = node.metrics_text().await;
        if ["1007", "1008", "1009"]
            .iter()
            .all(|c| metrics.contains(&format!("code=\"{c}\"")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for code in ["1007", "1008", "1009"] {
        assert!(
            metrics.contains(&format!(
                "ovasabi_ws_sessions_closed_total{{code=\"{code}\"}}"
            )),
            "{code} counted"
        );
    }
    assert!(metrics.contains("ovasabi_ws_client_events_total{result=\"rejected\"}"));
}

#[tokio::test]
async fn a_client_that_never_reads_has_drops_counted_while_50_fast_clients_get_everything() {
    let node = TestNode::start_with(|c| {
        c.send_queue_capacity = 8;
        c.ws_write_buffer_size = 8 * 1024;
    })
    .await;
    let id = node.campaign("fanout", 20.0, json!({})).await;
    // The slow client: a tiny receive buffer, and it never reads after the handshake.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(node.http).await.expect("connect");
    let (slow, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws/{id}/slow", node.http), stream)
            .await
            .expect("upgrade");
    let mut fast = Vec::new();
    for i in 0..50 {
        fast.push(node.ws(&id, &format!("fast{i}"), "").await);
    }
    const EVENTS: u64 = 120;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                #[derive(serde::Deserialize)]
                struct Seq {
                    seq: u64,
                }
                #[derive(serde::Deserialize)]
                struct Frame {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    events: Vec<Seq>,
                }
                let mut seqs = Vec::new();
                while (seqs.len() as u64) < EVENTS {
                    let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
                        .await
                        .expect("frame in time")
                        .expect("open")
                        .expect("frame");
                    if let Message::Text(t) = m {
                        let f: Frame = serde_json::from_str(&t).expect("json");
                        if f.kind == "tick" {
                            seqs.extend(f.events.iter().map(|e| e.seq));
                        }
                    }
                }
                seqs
            })
        })
        .collect();
    // Each event is one 64 KiB tick frame: 120 of them (7.7 MB) overflow what the kernel
    // buffers for the client that never reads.
    let payload = "p".repeat(64 * 1024 - 32);
    for _ in 0..EVENTS {
        node.publish(&id, "big", json!(payload), false).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for r in readers {
        let seqs = r.await.expect("reader");
        assert_eq!(
            seqs,
            (1..=EVENTS).collect::<Vec<u64>>(),
            "a fast client receives every event, in order"
        );
    }
    let (_, stats) = node
        .call("GET", &format!("/api/campaigns/{id}/stats"), None)
        .await;
    assert!(
        stats["frames_dropped"].as_u64().expect("dropped") > 0,
        "the slow client's drops are counted: {stats}"
    );
    assert!(
        stats["connections"]["node"].as_u64() >= Some(1),
        "dropping frames does not disconnect the slow client"
    );
    let metrics = node.metrics_text().await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ovasabi_ws_frames_dropped_total "))
        .and_then(|v| v.parse().ok())
        .expect("drop counter exported");
    assert!(dropped > 0.0);
    drop(slow);
}

#[tokio::test]
async fn deleting_a_campaign_sends_a_final_frame_and_closes_with_1000() {
    let node = TestNode::start().await;
    let id = node.campaign("ending", 0.1, json!({})).await;
    let mut ws = node.ws(&id, "u", "").await;
    next_of(&mut ws, "tick").await;
    node.publish(&id, "last-words", json!(null), false).await;
    let (status, c) = node
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(c["status"], "ended");
    let t = next(&mut ws).await;
    assert_eq!(t["events"][0]["name"], "last-words");
    assert_eq!(close_code(&mut ws).await, 1000);
    let (status, _) = node
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(status, 409);
    let (status, _) = node
        .call(
            "POST",
            &format!("/api/campaigns/{id}/events"),
            Some(json!({"name": "late"})),
        )
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let mut node = TestNode::start().await;
    let id = node.campaign("bye", 1.0, json!({})).await;
    let mut a = node.ws(&id, "a", "").await;
    let mut b = node.ws(&id, "b", "?compress=deflate").await;
    next_of(&mut a, "tick").await;
    next_of(&mut b, "tick").await;
    assert!(
        node.shutdown().await,
        "every task finished before the deadline"
    );
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    assert!(
        tokio::net::TcpStream::connect(node.http).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn reconnecting_with_since_recovers_every_missed_event_in_order() {
    let node = TestNode::start().await;
    let id = node
        .campaign("resume", 20.0, json!({"state": {"v": 1}}))
        .await;
    let mut ws = node.ws(&id, "u", "").await;
    let w = next(&mut ws).await;
    let epoch = w["epoch"].as_str().expect("epoch").to_owned();
    next_of(&mut ws, "tick").await;
    for _ in 0..3 {
        node.publish(&id, "e", json!(null), true).await;
    }
    let mut last = 0;
    while last < 3 {
        let t = next_of(&mut ws, "tick").await;
        last = t["seq"].as_u64().expect("seq");
    }
    ws.close(None).await.expect("close");
    for _ in 0..5 {
        node.publish(&id, "missed", json!(null), false).await;
    }
    // Let a tick pass so the missed events are behind us.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = node
        .ws(&id, "u", &format!("?since={last}&epoch={epoch}"))
        .await;
    let w = next(&mut again).await;
    assert_eq!(w["recovered"], true, "{w}");
    let seqs = common::tick_seqs(&mut again, |s| s.len() >= 5).await;
    assert_eq!(seqs, vec![4, 5, 6, 7, 8]);
    let live = node.publish(&id, "live", json!(null), true).await;
    let t = next_of(&mut again, "tick").await;
    assert_eq!(t["events"][0]["seq"], live);

    let mut stale = node.ws(&id, "u", "?since=4&epoch=not-this-one").await;
    assert_eq!(next(&mut stale).await["recovered"], false);
    for bad in ["?since=-1", "?since=abc", "?epoch=x"] {
        let (code, reason) = common::refused(&node, &format!("/ws/{id}/u{bad}")).await;
        assert_eq!(code, 4400, "{bad}: {reason}");
    }
}

/// Upgrades with `Origin: origin`; returns the type of the first frame (`welcome` when the
/// session was admitted) or the close code of a refused one.
async fn upgrade_from(node: &TestNode, campaign: &str, origin: &str) -> String {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/ws/{campaign}/u1", node.http)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", origin.parse().expect("header value"));
    let (mut ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(res.status(), 101);
    match tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
    {
        Some(Ok(Message::Text(t))) => {
            let v: Value = serde_json::from_str(&t).expect("json");
            v["type"].as_str().expect("type").to_owned()
        }
        Some(Ok(Message::Close(Some(f)))) => u16::from(f.code).to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A CORS preflight of `POST /api/campaigns` from `origin`: the status and the
/// `Access-Control-Allow-Origin` it answered, if any.
async fn preflight(node: &TestNode, origin: &str) -> (u16, Option<String>) {
    let res = node
        .client
        .request(reqwest::Method::OPTIONS, node.url("/api/campaigns"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    let allow = res
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().expect("text").to_owned());
    (res.status().as_u16(), allow)
}

#[tokio::test]
async fn only_the_nodes_own_origin_and_allowed_ones_may_open_websockets_and_call_the_api() {
    // Default: the node's own origin only.
    let node = TestNode::start().await;
    let id = node.campaign("origins", 5.0, json!({})).await;
    let own = format!("http://{}", node.http);
    assert_eq!(upgrade_from(&node, &id, &own).await, "welcome");
    assert_eq!(
        upgrade_from(&node, &id, "https://evil.example").await,
        "4403"
    );
    assert_eq!(upgrade_from(&node, &id, "null").await, "4403");
    assert_eq!(preflight(&node, "https://evil.example").await.1, None);
    // Clients without an Origin (not browsers) are not concerned.
    let mut ws = node.ws(&id, "u2", "").await;
    next_of(&mut ws, "welcome").await;

    // A listed origin may do both; others still may not.
    let node = TestNode::start_with(|c| {
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let id = node.campaign("origins", 5.0, json!({})).await;
    assert_eq!(
        upgrade_from(&node, &id, "https://app.example").await,
        "welcome"
    );
    assert_eq!(
        upgrade_from(&node, &id, "https://evil.example").await,
        "4403"
    );
    let (status, allow) = preflight(&node, "https://app.example").await;
    assert!((200..300).contains(&status), "preflight answered {status}");
    assert_eq!(allow.as_deref(), Some("https://app.example"));
    assert_eq!(preflight(&node, "https://evil.example").await.1, None);
    let res = node
        .client
        .get(node.url("/api/campaigns"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().expect("text")),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn a_close_with_unread_input_lets_the_client_read_it_instead_of_a_reset() {
    // A client sends a message far over the limit: the node closes with 1009 while the rest
    // of it is still arriving. The client must get the close frame and an orderly end of the
    // stream, not a reset that throws away what the node sent.
    let node = TestNode::start_with(|c| c.max_message_size = 1024).await;
    let id = node.campaign("unread", 5.0, json!({})).await;
    let mut resets = 0;
    for round in 0..5 {
        let mut s = raw_ws(&node, &format!("/ws/{id}/u{round}")).await;
        let payload = vec![b'a'; 512 * 1024];
        // Header and payload in one write that the node cannot take in before it closes.
        let big = frame(0x1, &payload);
        let (mut rd, mut wr) = s.split();
        let write = async {
            let _ = wr.write_all(&big).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                    Ok(Ok(0)) => break Ok(()),
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Ok(Err(e)) => break Err(e),
                    Err(_) => panic!("nothing from the node within 10 s"),
                }
            };
            (got, end)
        };
        let ((), (got, end)) = tokio::join!(write, read);
        // The close frame (0x88) with code 1009 is in what arrived, whatever came first.
        let close = got
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2..4] == 1009u16.to_be_bytes());
        match end {
            Ok(()) => assert!(
                close,
                "round {round}: the stream ended without a 1009 close frame"
            ),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                resets += 1;
            }
        }
    }
    assert_eq!(resets, 0, "connections reset by the node out of 5");
}

#[tokio::test]
async fn delta_sessions_get_merge_patches_of_state_changes() {
    let node = TestNode::start().await;
    let pad = "p".repeat(2000);
    let id = node
        .campaign("delta", 20.0, json!({"state": {"score": 0, "pad": pad}}))
        .await;
    let (code, reason) = common::refused(&node, &format!("/ws/{id}/u1?delta=yes")).await;
    assert_eq!(code, 4400, "{reason}");
    let mut delta = node.ws(&id, "d", "?delta=1").await;
    let mut plain = node.ws(&id, "p", "").await;
    for ws in [&mut delta, &mut plain] {
        let t = next_of(ws, "tick").await;
        assert_eq!(t["state"]["score"], 0, "{t}");
    }
    let (s, b) = node
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}/state"),
            Some(json!({"score": 1})),
        )
        .await;
    assert!(s < 300, "{s} {b}");
    let d = next_of(&mut delta, "tick").await;
    assert_eq!(d["state_patch"], json!({"score": 1}), "{d}");
    assert!(
        d["state_version"].is_u64() && d.get("state").is_none(),
        "{d}"
    );
    let p = next_of(&mut plain, "tick").await;
    assert_eq!(
        (
            p["state"]["score"].as_u64(),
            p["state"]["pad"].as_str().map(str::len)
        ),
        (Some(1), Some(2000)),
        "{p}"
    );
}
