//! Denial of service on `:8090` (issue 15): unfinished bodies time out with 408, a declared
//! body over the limit is refused with 413 before it is read, and connections over the total,
//! per-address and accept-rate limits are closed at accept and counted, while the metrics port
//! keeps answering. Raw TCP clients on 127.0.0.1; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestNode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest wait for anything the node should do at once.
const SOON: Duration = Duration::from_secs(10);

/// Headers announcing a 100-byte JSON body, and its first byte.
const SLOW_BODY: &[u8] = b"POST /api/auth/login HTTP/1.1\r\nHost: node\r\n\
    Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";

const GET_SERVICES: &[u8] = b"GET /api/services HTTP/1.1\r\nHost: node\r\n\r\n";

/// An HTTP response read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Value,
}

/// Reads one response (its body by `Content-Length`); `None` when the connection is closed
/// (or reset) before any byte of it.
async fn read_answer(tcp: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(SOON, tcp.read(&mut chunk))
            .await
            .expect("the node answers or closes within 10 s")
            .unwrap_or(0);
        if n == 0 {
            assert!(
                buf.is_empty(),
                "connection closed inside a response: {buf:?}"
            );
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("a Content-Length"));
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(SOON, tcp.read(&mut chunk))
            .await
            .expect("the body within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).expect("a JSON body")
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Whether the node closes `tcp` (end of stream or reset) within 10 s.
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(SOON, tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A connection that was admitted (it got an answer to a complete request) and now holds its
/// place with an unfinished body. Retried for up to 10 s: a place a client just gave up is
/// free once the node has seen the close.
async fn holder(addr: SocketAddr) -> TcpStream {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        if tcp.write_all(GET_SERVICES).await.is_ok()
            && let Some(answer) = read_answer(&mut tcp).await
        {
            assert_eq!(answer.status, 200, "{answer:?}");
            tcp.write_all(SLOW_BODY).await.expect("write");
            return tcp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place for a holder within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a new connection to `addr` is served (`Some(status)`) or closed at once (`None`).
async fn try_request(addr: SocketAddr) -> Option<u16> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // A refused connection may be reset before the request is even written.
    if tcp.write_all(GET_SERVICES).await.is_err() {
        return None;
    }
    read_answer(&mut tcp).await.map(|a| a.status)
}

async fn healthz(node: &TestNode) -> u16 {
    node.client
        .get(format!("http://{}/healthz", node.metrics))
        .timeout(SOON)
        .send()
        .await
        .expect("/healthz answers")
        .status()
        .as_u16()
}

/// The value of one series in `/metrics` (0 when absent).
async fn metric(node: &TestNode, series: &str) -> f64 {
    node.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn refused(reason: &str) -> String {
    format!("ovasabi_http_connections_refused_total{{reason=\"{reason}\"}} ")
}

#[tokio::test]
async fn unfinished_bodies_are_answered_408_and_closed_while_health_and_rest_answer() {
    let node = TestNode::start_with(|c| c.body_timeout = Duration::from_secs(1)).await;
    let timeouts = "ovasabi_http_requests_refused_total{reason=\"body_timeout\"} ";
    let before = metric(&node, timeouts).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(node.http).await.expect("connect");
        tcp.write_all(SLOW_BODY).await.expect("write");
        slow.push(tcp);
    }
    assert_eq!(healthz(&node).await, 200);
    assert_eq!(try_request(node.http).await, Some(200), "REST answers");
    for tcp in &mut slow {
        let answer = read_answer(tcp).await.expect("a 408, not a silent close");
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(
            answer.body["error"]["code"], "request_timeout",
            "{answer:?}"
        );
        assert!(answer.headers.contains("connection: close"), "{answer:?}");
        assert!(closed(tcp).await, "the connection is closed after the 408");
    }
    assert!(metric(&node, timeouts).await >= before + 100.0);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_413_before_it_is_read() {
    // The body timeout is far beyond the test's waits: an answer can only come from the
    // declared length.
    let node = TestNode::start_with(|c| {
        c.max_body_size = 1024;
        c.body_timeout = Duration::from_secs(300);
    })
    .await;
    let mut tcp = TcpStream::connect(node.http).await.expect("connect");
    tcp.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n\
          Content-Length: 100000000\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = read_answer(&mut tcp).await.expect("an answer");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(
        answer.body["error"]["code"], "payload_too_large",
        "{answer:?}"
    );
    assert!(
        closed(&mut tcp).await,
        "the connection is closed after the 413"
    );

    // A chunked body is measured as it comes: refused once it passes the limit.
    let mut tcp = TcpStream::connect(node.http).await.expect("connect");
    tcp.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n800\r\n",
    )
    .await
    .expect("write");
    tcp.write_all(&[b' '; 0x800]).await.expect("write");
    tcp.write_all(b"\r\n").await.expect("write");
    let answer = read_answer(&mut tcp).await.expect("an answer");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(
        answer.body["error"]["code"], "payload_too_large",
        "{answer:?}"
    );
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_counted_and_come_back() {
    let node = TestNode::start_with(|c| {
        c.max_connections = 20;
        c.max_connections_per_ip = 5;
        c.body_timeout = Duration::from_secs(300);
    })
    .await;
    let before = metric(&node, &refused("per_ip")).await;
    let mut holders = Vec::new();
    for _ in 0..5 {
        holders.push(holder(node.http).await);
    }
    for _ in 0..3 {
        assert_eq!(
            try_request(node.http).await,
            None,
            "over the per-address cap"
        );
    }
    assert_eq!(
        healthz(&node).await,
        200,
        "the metrics port answers at the cap"
    );
    assert!(metric(&node, &refused("per_ip")).await >= before + 3.0);
    drop(holders);
    assert_eventually_served(node.http).await;
}

#[tokio::test]
async fn connections_over_the_total_cap_are_refused_counted_and_come_back() {
    let mut node = TestNode::start_with(|c| {
        c.max_connections = 4;
        c.max_connections_per_ip = 100;
        c.body_timeout = Duration::from_secs(300);
    })
    .await;
    // No pooled connection left holding a place.
    node.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let before = metric(&node, &refused("total")).await;
    // A WebSocket session keeps its place after the upgrade.
    let id = node.campaign("dos-total", 1.0, serde_json::json!({})).await;
    let ws = node.ws(&id, "viewer", "").await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(holder(node.http).await);
    }
    for _ in 0..3 {
        assert_eq!(try_request(node.http).await, None, "over the total cap");
    }
    assert_eq!(
        healthz(&node).await,
        200,
        "the metrics port answers at the cap"
    );
    assert!(metric(&node, &refused("total")).await >= before + 3.0);
    drop(holders);
    assert_eventually_served(node.http).await;
    // Three places are free again; the session still holds the fourth.
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(holder(node.http).await);
    }
    assert_eq!(
        try_request(node.http).await,
        None,
        "the session holds a place"
    );
    drop(ws);
    assert_eventually_served(node.http).await;
}

#[tokio::test]
async fn a_reconnect_storm_over_the_accept_rate_is_refused_and_counted() {
    let node = TestNode::start_with(|c| {
        c.accept_rate = 1.0;
        c.accept_burst = 3;
    })
    .await;
    let before = metric(&node, &refused("rate")).await;
    let mut served = 0;
    let mut closed_at_once = 0;
    for _ in 0..10 {
        match try_request(node.http).await {
            Some(_) => served += 1,
            None => closed_at_once += 1,
        }
    }
    // Three of the burst, and at most a few refilled while the loop ran.
    assert!(served >= 3, "served {served}");
    assert!(closed_at_once >= 3, "closed {closed_at_once}");
    assert_eq!(healthz(&node).await, 200);
    assert!(metric(&node, &refused("rate")).await >= before + f64::from(closed_at_once));
    assert_eventually_served(node.http).await;
}

/// A new connection is served again within 10 s (places and tokens come back).
async fn assert_eventually_served(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        if try_request(addr).await == Some(200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
