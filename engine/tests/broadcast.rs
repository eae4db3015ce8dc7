//! The engine driven through its public API with paused time: sessions run over in-memory
//! transports (the session logic is generic over `Sink`/`Stream`), so tick timing, batching,
//! state, drop policy and client frames are checked without sockets.

use std::io::Read as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use engine::broker::{
    BoxFuture, Broker, BrokerError, CampaignSpec, Control, Deliver, Presence, Publication, Snapshot,
};
use engine::tungstenite::{Error as WsError, Message};
use engine::{
    Config, Encoding, EngineError, MAX_BATCH_EVENTS, MemoryBroker, NewEvent, Node, Principal,
    Resume,
};
use futures_util::{Sink, Stream};
use serde_json::{Value, json, value::RawValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

/// The server side of an in-memory WebSocket.
struct TestWs {
    incoming: mpsc::Receiver<Result<Message, WsError>>,
    outgoing: PollSender<Message>,
}

impl Stream for TestWs {
    type Item = Result<Message, WsError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().incoming.poll_recv(cx)
    }
}

impl Sink<Message> for TestWs {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut()
            .outgoing
            .poll_reserve(cx)
            .map_err(|_| WsError::ConnectionClosed)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.get_mut()
            .outgoing
            .send_item(item)
            .map_err(|_| WsError::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().outgoing.close();
        Poll::Ready(Ok(()))
    }
}

/// The client side: what it sends, what it received, and the session's close code.
struct Client {
    tx: mpsc::Sender<Result<Message, WsError>>,
    rx: mpsc::Receiver<Message>,
    done: JoinHandle<u16>,
}

impl Client {
    /// `buffer` is how many frames the "socket" holds before the writer blocks: a client that
    /// never reads with a small buffer is a slow client.
    fn connect(node: &Node, campaign: &str, user: &str, compress: bool, buffer: usize) -> Self {
        Self::resume(node, campaign, user, compress, buffer, None)
    }

    fn resume(
        node: &Node,
        campaign: &str,
        user: &str,
        compress: bool,
        buffer: usize,
        resume: Option<Resume>,
    ) -> Self {
        let encoding = Encoding {
            compress,
            delta: None,
        };
        Self::open(node, campaign, user, None, encoding, buffer, resume)
    }

    /// A session that asked for delta state frames (`delta=1`).
    fn delta(
        node: &Node,
        campaign: &str,
        user: &str,
        buffer: usize,
        resume: Option<Resume>,
    ) -> Self {
        let encoding = Encoding {
            compress: false,
            delta: Some(true),
        };
        Self::open(node, campaign, user, None, encoding, buffer, resume)
    }

    /// A session opened with a token of `principal`'s.
    fn authenticated(node: &Node, campaign: &str, principal: Principal) -> Self {
        let user = principal.user.clone();
        Self::open(
            node,
            campaign,
            &user,
            Some(principal),
            Encoding::default(),
            64,
            None,
        )
    }

    fn open(
        node: &Node,
        campaign: &str,
        user: &str,
        principal: Option<Principal>,
        encoding: Encoding,
        buffer: usize,
        resume: Option<Resume>,
    ) -> Self {
        let (tx, incoming) = mpsc::channel(16);
        let (out_tx, rx) = mpsc::channel(buffer);
        let ws = TestWs {
            incoming,
            outgoing: PollSender::new(out_tx),
        };
        let (node, campaign, user) = (node.clone(), campaign.to_owned(), user.to_owned());
        let done = tokio::spawn(async move {
            node.serve_session(&campaign, &user, principal, encoding, resume, ws)
                .await
        });
        Self { tx, rx, done }
    }

    async fn send(&self, text: &str) {
        self.tx
            .send(Ok(Message::text(text)))
            .await
            .expect("session reads");
    }

    /// The next data frame as JSON (pings skipped, binary frames inflated).
    async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(120), self.rx.recv())
                .await
                .expect("a frame within 120 s")
                .expect("session still open");
            match m {
                Message::Text(t) => return serde_json::from_str(&t).expect("text frames are JSON"),
                Message::Binary(b) => {
                    let mut s = String::new();
                    flate2::read::DeflateDecoder::new(&b[..])
                        .read_to_string(&mut s)
                        .expect("inflate");
                    return serde_json::from_str(&s).expect("inflated frames are JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(c) => panic!("unexpected close {c:?}"),
                Message::Frame(_) => continue,
            }
        }
    }

    /// Waits for the close frame; returns its code.
    async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(120), self.rx.recv()).await {
                Ok(Some(Message::Close(Some(c)))) => return c.code.into(),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!("no close frame"),
            }
        }
    }
}

fn raw(v: Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).expect("json")
}

fn node_with(config: Config) -> Node {
    Node::new(
        Config {
            node_id: "test-node".into(),
            ..config
        },
        Arc::new(MemoryBroker::new()),
    )
}

async fn campaign(node: &Node, id: &str, hz: f64, client_events: bool) {
    let spec = CampaignSpec {
        id: id.into(),
        frequency_hz: hz,
        client_events,
        presence: false,
        delta: false,
        state: Some(raw(json!({"score": 0}))),
        epoch: None,
    };
    node.upsert_campaign(spec).await.expect("campaign starts");
    assert!(node.has_campaign(id));
}

#[tokio::test(start_paused = true)]
async fn welcome_then_first_tick_carries_state() {
    let node = node_with(Config::default());
    campaign(&node, "c1", 5.0, false).await;
    let mut c = Client::connect(&node, "c1", "u1", false, 64);
    let w = c.next().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["campaign"], "c1");
    assert_eq!(w["user"], "u1");
    assert_eq!(w["node"], "test-node");
    assert_eq!(w["frequency_hz"], 5.0);
    assert_eq!(w["seq"], 0);
    let t = c.next().await;
    assert_eq!(t["type"], "tick");
    assert_eq!(t["state"], json!({"score": 0}));
    assert_eq!(t["events"], json!([]));
    // Nothing new: the next frame is the one carrying the next event, without state.
    let seq = node
        .publish_event("c1", "goal", raw(json!({"team": "a"})), false)
        .await
        .expect("publish");
    assert_eq!(seq, 1);
    let t = c.next().await;
    assert!(
        t.get("state").is_none(),
        "state unchanged since the last frame: {t}"
    );
    assert_eq!(t["events"][0]["name"], "goal");
    assert_eq!(t["seq"], 1);
}

#[tokio::test(start_paused = true)]
async fn ticks_at_the_configured_rate_and_skips_idle_ticks() {
    let node = node_with(Config::default());
    campaign(&node, "c", 5.0, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 1024);
    c.next().await; // welcome
    c.next().await; // first tick, with state
    // Publish every 50 ms for 10 s: events are batched into one frame per tick.
    let publisher = {
        let node = node.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                node.publish_event("c", "e", raw(json!(1)), false)
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    publisher.await.expect("publisher");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut frames = 0;
    let mut events = 0;
    let mut last_seq = 0;
    while let Ok(m) = c.rx.try_recv() {
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).expect("json");
        frames += 1;
        for e in v["events"].as_array().expect("events") {
            let seq = e["seq"].as_u64().expect("seq");
            assert_eq!(seq, last_seq + 1, "seq increases without gaps");
            last_seq = seq;
            events += 1;
        }
    }
    assert_eq!(events, 200);
    assert!(
        (49..=52).contains(&frames),
        "5 Hz for 10 s gives ~50 tick frames, got {frames}"
    );
    let stats = node.stats("c").expect("stats");
    assert!(
        (stats.tick_rate_hz - 5.0).abs() < 0.1,
        "measured {}",
        stats.tick_rate_hz
    );
    // Idle: no events, state unchanged → no frames at all.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(c.rx.try_recv().is_err(), "an idle campaign sends nothing");
}

#[tokio::test(start_paused = true)]
async fn events_between_ticks_are_batched_into_one_frame() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 64);
    c.next().await;
    c.next().await;
    for i in 0..3 {
        node.publish_event("c", "e", raw(json!({"i": i})), false)
            .await
            .expect("publish");
    }
    let t = c.next().await;
    let seqs: Vec<u64> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(t["seq"], 3);
    assert_eq!(t["events"][2]["data"], json!({"i": 2}));
}

#[tokio::test(start_paused = true)]
async fn latest_state_wins_between_ticks() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 64);
    c.next().await;
    c.next().await;
    node.set_state("c", raw(json!({"score": 1})))
        .await
        .expect("state");
    node.set_state("c", raw(json!({"score": 2})))
        .await
        .expect("state");
    let t = c.next().await;
    assert_eq!(t["state"], json!({"score": 2}));
    // A late joiner gets the current state in its first tick.
    let mut late = Client::connect(&node, "c", "v", false, 64);
    late.next().await;
    assert_eq!(late.next().await["state"], json!({"score": 2}));
}

#[tokio::test(start_paused = true)]
async fn frequency_change_retimes_within_one_tick_and_sends_config() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 1024);
    c.next().await;
    c.next().await;
    let spec = CampaignSpec {
        id: "c".into(),
        frequency_hz: 10.0,
        presence: false,
        delta: false,
        client_events: false,
        state: None,
        epoch: None,
    };
    node.upsert_campaign(spec).await.expect("retime");
    let cfg = c.next().await;
    assert_eq!(cfg, json!({"type": "config", "frequency_hz": 10.0}));
    let start = tokio::time::Instant::now();
    node.publish_event("c", "e", raw(json!(null)), false)
        .await
        .expect("publish");
    c.next().await;
    assert!(
        start.elapsed() <= Duration::from_millis(100),
        "new period applies at once: {:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rate = node.stats("c").expect("stats").tick_rate_hz;
    assert!((rate - 10.0).abs() < 0.2, "measured {rate}");
    // Out of range is refused.
    let bad = CampaignSpec {
        id: "c".into(),
        frequency_hz: 0.05,
        presence: false,
        delta: false,
        client_events: false,
        state: None,
        epoch: None,
    };
    assert!(node.upsert_campaign(bad).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_loses_frames_and_fast_ones_lose_none() {
    let node = node_with(Config {
        send_queue_capacity: 4,
        ..Config::default()
    });
    campaign(&node, "c", 10.0, false).await;
    // The slow client's "socket" holds one frame and is never read.
    let slow = Client::connect(&node, "c", "slow", false, 1);
    let mut fast: Vec<Client> = (0..50)
        .map(|i| Client::connect(&node, "c", &format!("f{i}"), false, 4096))
        .collect();
    for _ in 0..100 {
        node.publish_event("c", "e", raw(json!(1)), false)
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for f in &mut fast {
        let mut events = 0;
        while let Ok(m) = f.rx.try_recv() {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "tick" {
                    events += v["events"].as_array().expect("events").len();
                }
            }
        }
        assert_eq!(events, 100, "every fast client receives every event");
    }
    let stats = node.stats("c").expect("stats");
    assert!(
        stats.frames_dropped >= 90,
        "the slow client's drops are counted: {}",
        stats.frames_dropped
    );
    assert!(!slow.done.is_finished(), "escalation is off by default");
}

#[tokio::test(start_paused = true)]
async fn escalation_closes_a_slow_session_with_4008() {
    let node = node_with(Config {
        send_queue_capacity: 2,
        slow_close_drops: 5,
        ..Config::default()
    });
    campaign(&node, "c", 10.0, false).await;
    let slow = Client::connect(&node, "c", "slow", false, 1);
    let mut fast = Client::connect(&node, "c", "fast", false, 4096);
    for _ in 0..30 {
        node.publish_event("c", "e", raw(json!(1)), false)
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = tokio::time::timeout(Duration::from_secs(10), slow.done)
        .await
        .expect("closed")
        .expect("task");
    assert_eq!(code, 4008);
    fast.next().await;
    assert_eq!(node.stats("c").expect("stats").connections, 1);

    // Time-based escalation.
    let node = node_with(Config {
        send_queue_capacity: 2,
        slow_close_after: Duration::from_secs(2),
        ..Config::default()
    });
    campaign(&node, "c", 10.0, false).await;
    let slow = Client::connect(&node, "c", "slow", false, 1);
    let publisher = {
        let node = node.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let _ = node.publish_event("c", "e", raw(json!(1)), false).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let code = tokio::time::timeout(Duration::from_secs(10), slow.done)
        .await
        .expect("closed")
        .expect("task");
    assert_eq!(code, 4008);
    publisher.abort();
}

#[tokio::test(start_paused = true)]
async fn immediate_events_and_user_messages_skip_the_tick() {
    let node = node_with(Config::default());
    campaign(&node, "c", 0.1, false).await;
    let mut a = Client::connect(&node, "c", "alice", false, 64);
    let mut a2 = Client::connect(&node, "c", "alice", false, 64);
    let mut b = Client::connect(&node, "c", "bob", false, 64);
    for c in [&mut a, &mut a2, &mut b] {
        c.next().await;
        c.next().await;
    }
    let start = tokio::time::Instant::now();
    let seq = node
        .publish_event("c", "now", raw(json!({"x": 1})), true)
        .await
        .expect("publish");
    let t = a.next().await;
    assert_eq!(t["events"][0]["seq"], seq);
    assert!(start.elapsed() < Duration::from_millis(10));
    b.next().await;
    a2.next().await;
    let m = node
        .send_to_user("c", "alice", "notification", raw(json!({"hi": true})))
        .await
        .expect("message");
    assert_eq!(
        m, seq,
        "a message carries the latest seq without taking a new one"
    );
    for c in [&mut a, &mut a2] {
        let f = c.next().await;
        assert_eq!(f["type"], "message");
        assert_eq!(f["name"], "notification");
        assert_eq!(f["data"], json!({"hi": true}));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(b.rx.try_recv().is_err(), "bob gets no message for alice");
}

#[tokio::test(start_paused = true)]
async fn compressed_sessions_get_the_same_json_deflated() {
    let node = node_with(Config::default());
    campaign(&node, "c", 2.0, false).await;
    let mut plain = Client::connect(&node, "c", "p", false, 64);
    let mut zipped = Client::connect(&node, "c", "z", true, 64);
    plain.next().await;
    zipped.next().await;
    node.publish_event("c", "e", raw(json!({"payload": "x".repeat(500)})), false)
        .await
        .expect("publish");
    let mut a = plain.next().await;
    let mut b = zipped.next().await;
    // The first tick of each holds the state; compare them field by field.
    a.as_object_mut().expect("obj").remove("ts");
    b.as_object_mut().expect("obj").remove("ts");
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn client_frames_get_answers_and_errors() {
    let node = node_with(Config {
        client_event_burst: 2,
        client_event_rate: 0.001,
        client_event_abuse_limit: 3,
        ..Config::default()
    });
    campaign(&node, "open", 1.0, true).await;
    campaign(&node, "closed", 1.0, false).await;
    let mut c = Client::connect(&node, "closed", "u", false, 64);
    c.next().await;
    c.next().await;
    c.send(r#"{"type":"ping"}"#).await;
    assert_eq!(c.next().await, json!({"type": "pong"}));
    c.send("{not json").await;
    assert_eq!(c.next().await["code"], "bad_frame");
    c.send(r#"{"type":"dance"}"#).await;
    assert_eq!(c.next().await["code"], "unknown_type");
    c.send(r#"{"type":"event","name":"x"}"#).await;
    assert_eq!(c.next().await["code"], "forbidden");
    c.tx.send(Ok(Message::binary(vec![1, 2, 3])))
        .await
        .expect("send");
    assert_eq!(c.next().await["code"], "unsupported");

    let mut o = Client::connect(&node, "open", "u9", false, 64);
    o.next().await;
    o.next().await;
    o.send(r#"{"type":"event","name":"bad name"}"#).await;
    assert_eq!(o.next().await["code"], "invalid_event");
    o.send(r#"{"type":"event","name":"click","data":{"x":1}}"#)
        .await;
    o.send(r#"{"type":"event","name":"click","data":{"x":2}}"#)
        .await;
    let t = o.next().await;
    assert_eq!(t["type"], "tick");
    assert_eq!(t["events"][0]["user"], "u9");
    assert_eq!(t["events"][1]["data"], json!({"x": 2}));
    // Burst used up: rate limited, then abuse closes with 1008.
    o.send(r#"{"type":"event","name":"click"}"#).await;
    assert_eq!(o.next().await["code"], "rate_limited");
    for _ in 0..3 {
        o.send(r#"{"type":"event","name":"click"}"#).await;
    }
    assert_eq!(o.next().await["code"], "rate_limited");
    assert_eq!(o.next().await["code"], "rate_limited");
    assert_eq!(o.closed().await, 1008);
    assert_eq!(o.done.await.expect("task"), 1008);
    // The other session is unaffected.
    c.send(r#"{"type":"ping"}"#).await;
    assert_eq!(c.next().await["type"], "pong");
}

#[tokio::test(start_paused = true)]
async fn transport_errors_map_to_close_codes() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    let cases = [
        (WsError::Utf8("bad".into()), 1007),
        (
            WsError::Capacity(engine::tungstenite::error::CapacityError::MessageTooLong {
                size: 70_000,
                max_size: 65_536,
            }),
            1009,
        ),
    ];
    for (err, code) in cases {
        let mut c = Client::connect(&node, "c", "u", false, 64);
        c.next().await;
        c.tx.send(Err(err)).await.expect("send");
        assert_eq!(c.closed().await, code);
        assert_eq!(c.done.await.expect("task"), code);
    }
    // A client that drops TCP without a close frame is counted as gone (1006), not as a
    // protocol error (1002); nothing is sent to it.
    let c = Client::connect(&node, "c", "u", false, 64);
    c.tx.send(Err(WsError::Protocol(
        engine::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
    )))
    .await
    .expect("send");
    assert_eq!(c.done.await.expect("task"), 1006);
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_after_the_pong_timeout() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 64);
    c.next().await;
    let start = tokio::time::Instant::now();
    let mut pings = 0;
    let code = loop {
        match c.rx.recv().await {
            Some(Message::Ping(_)) => pings += 1,
            Some(Message::Close(Some(f))) => break u16::from(f.code),
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, 4009);
    assert!(pings >= 2, "pinged every 30 s before giving up");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited <= Duration::from_secs(91),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_socket_is_closed_by_the_ping_timeout() {
    let node = node_with(Config::default());
    campaign(&node, "c", 10.0, false).await;
    // Never reads, never writes: the writer blocks on the full "socket".
    let stalled = Client::connect(&node, "c", "stalled", false, 1);
    let publisher = {
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                let _ = node.publish_event("c", "e", raw(json!(1)), false).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let start = tokio::time::Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(200), stalled.done)
        .await
        .expect("closed")
        .expect("task");
    publisher.abort();
    assert_eq!(code, 4009);
    assert!(
        start.elapsed() >= Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn ending_a_campaign_sends_a_final_frame_then_1000() {
    let node = node_with(Config::default());
    campaign(&node, "c", 0.1, false).await;
    let mut c = Client::connect(&node, "c", "u", false, 64);
    c.next().await;
    c.next().await;
    node.publish_event("c", "last", raw(json!(null)), false)
        .await
        .expect("publish");
    node.end_campaign("c").await.expect("end");
    let t = c.next().await;
    assert_eq!(
        t["events"][0]["name"], "last",
        "the final frame flushes pending events"
    );
    assert_eq!(c.closed().await, 1000);
    assert_eq!(c.done.await.expect("task"), 1000);
    assert!(!node.has_campaign("c"));
    assert!(
        node.publish_event("c", "x", raw(json!(null)), false)
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_every_session_with_1001() {
    let node = node_with(Config::default());
    campaign(&node, "a", 1.0, false).await;
    campaign(&node, "b", 1.0, false).await;
    let mut clients = vec![
        Client::connect(&node, "a", "u", false, 64),
        Client::connect(&node, "b", "v", false, 64),
    ];
    for c in &mut clients {
        c.next().await;
    }
    assert!(
        node.shutdown(Duration::from_secs(10)).await,
        "all tasks finish before the deadline"
    );
    for c in &mut clients {
        assert_eq!(c.closed().await, 1001);
    }
    assert_eq!(node.connections(), 0);
}

/// Events of the tick frames received until the channel is empty.
fn drain_events(c: &mut Client) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(m) = c.rx.try_recv() {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "tick" {
                seqs.extend(
                    v["events"]
                        .as_array()
                        .expect("events")
                        .iter()
                        .map(|e| e["seq"].as_u64().expect("seq")),
                );
            }
        }
    }
    seqs
}

#[tokio::test(start_paused = true)]
async fn a_resuming_client_gets_every_missed_event_once_then_live_ones() {
    let node = node_with(Config::default());
    campaign(&node, "c", 5.0, false).await;
    let mut first = Client::connect(&node, "c", "u", false, 64);
    let w = first.next().await;
    let epoch = w["epoch"].as_str().expect("epoch").to_owned();
    for _ in 0..3 {
        node.publish_event("c", "e", raw(json!(null)), false)
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(drain_events(&mut first), vec![1, 2, 3]);
    drop(first.tx);
    let _ = first.done.await;
    for _ in 0..3 {
        node.publish_event("c", "e", raw(json!(null)), false)
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resume = Resume {
        since: 3,
        epoch: Some(epoch.clone()),
    };
    let mut again = Client::resume(&node, "c", "u", false, 64, Some(resume));
    let w = again.next().await;
    assert_eq!(w["recovered"], true);
    assert_eq!(w["seq"], 6);
    assert_eq!(w["epoch"], epoch.as_str());
    let r = again.next().await;
    assert_eq!(
        r["state"],
        json!({"score": 0}),
        "the recovery frame carries the state"
    );
    let seqs: Vec<u64> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![4, 5, 6]);
    node.publish_event("c", "e", raw(json!(null)), false)
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        drain_events(&mut again),
        vec![7],
        "then live events, none twice"
    );

    // Resuming in the middle of a batch not yet broadcast: no recovery needed, the pending
    // events come with the next tick.
    node.publish_event("c", "e", raw(json!(null)), false)
        .await
        .expect("publish");
    let mut third = Client::resume(
        &node,
        "c",
        "v",
        false,
        64,
        Some(Resume {
            since: 7,
            epoch: Some(epoch),
        }),
    );
    let w = third.next().await;
    assert_eq!(w["recovered"], true);
    assert_eq!(w["seq"], 7);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(drain_events(&mut third), vec![8]);
}

#[tokio::test(start_paused = true)]
async fn resuming_fails_cleanly_when_history_cannot_serve_it() {
    let node = node_with(Config {
        history_size: 3,
        ..Config::default()
    });
    campaign(&node, "c", 5.0, false).await;
    for _ in 0..10 {
        node.publish_event("c", "e", raw(json!(null)), false)
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (resume, why) in [
        (
            Resume {
                since: 2,
                epoch: None,
            },
            "older than the history",
        ),
        (
            Resume {
                since: 9,
                epoch: Some("another-epoch".into()),
            },
            "another epoch",
        ),
        (
            Resume {
                since: 99,
                epoch: None,
            },
            "from the future",
        ),
    ] {
        let mut c = Client::resume(&node, "c", "u", false, 64, Some(resume));
        let w = c.next().await;
        assert_eq!(w["recovered"], false, "{why}");
        assert_eq!(w["seq"], 10);
        let t = c.next().await;
        assert_eq!(
            t["state"],
            json!({"score": 0}),
            "{why}: the first tick carries the full state"
        );
        assert_eq!(t["events"], json!([]));
    }
    let mut ok = Client::resume(
        &node,
        "c",
        "u",
        false,
        64,
        Some(Resume {
            since: 7,
            epoch: None,
        }),
    );
    assert_eq!(
        ok.next().await["recovered"],
        true,
        "within the last 3 events"
    );
    let seqs: Vec<u64> = ok.next().await["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    // Without `since`, no "recovered" at all.
    let mut plain = Client::connect(&node, "c", "p", false, 64);
    assert!(plain.next().await.get("recovered").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_session_gone_before_its_join_is_not_left_behind() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    for i in 0..20 {
        let c = Client::connect(&node, "c", &format!("u{i}"), false, 8);
        drop(c.tx);
        let _ = c.done.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node.stats("c").expect("stats").connections, 0);
}

#[tokio::test(start_paused = true)]
async fn settings_for_an_ended_campaign_do_not_restart_it() {
    let node = node_with(Config::default());
    campaign(&node, "c", 1.0, false).await;
    node.end_campaign("c").await.expect("end");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let late = CampaignSpec {
        id: "c".into(),
        frequency_hz: 5.0,
        presence: false,
        delta: false,
        client_events: false,
        state: None,
        epoch: None,
    };
    node.upsert_campaign(late).await.expect("accepted");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        !node.has_campaign("c"),
        "a retime without state does not resurrect it"
    );
    let restart = CampaignSpec {
        id: "c".into(),
        frequency_hz: 5.0,
        presence: false,
        delta: false,
        client_events: false,
        state: Some(raw(json!({}))),
        epoch: None,
    };
    node.upsert_campaign(restart).await.expect("accepted");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(node.has_campaign("c"), "a start (with state) does");
}

/// An in-process bus that can be cut: while `down`, it refuses publishes and reports not
/// ready, as a Redis broker cut from Redis does.
struct Cuttable {
    inner: MemoryBroker,
    down: std::sync::atomic::AtomicBool,
}

impl Cuttable {
    fn down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Broker for Cuttable {
    fn attach(&self, sink: std::sync::Weak<dyn Deliver>) {
        self.inner.attach(sink);
    }
    fn publish<'a>(
        &'a self,
        campaign: &'a str,
        publication: Publication,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        if self.down() {
            return Box::pin(async {
                Err(BrokerError::Unavailable {
                    reason: "cut".into(),
                })
            });
        }
        self.inner.publish(campaign, publication)
    }
    fn publish_batch_once<'a>(
        &'a self,
        campaign: &'a str,
        events: Vec<Publication>,
        first_id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        if self.down() {
            return Box::pin(async {
                Err(BrokerError::Unavailable {
                    reason: "cut".into(),
                })
            });
        }
        self.inner.publish_batch_once(campaign, events, first_id)
    }
    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.control(control)
    }
    fn notify<'a>(
        &'a self,
        user: &'a str,
        payload: Box<RawValue>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        if self.down() {
            return Box::pin(async {
                Err(BrokerError::Unavailable {
                    reason: "cut".into(),
                })
            });
        }
        self.inner.notify(user, payload)
    }
    fn is_ready(&self) -> bool {
        !self.down()
    }
    fn report_presence<'a>(
        &'a self,
        campaign: &'a str,
        node: &'a str,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.report_presence(campaign, node, presence)
    }
    fn cluster_presence<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presence>, BrokerError>> {
        self.inner.cluster_presence(campaign)
    }
    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>> {
        self.inner.epoch(campaign)
    }
    fn history<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Vec<Publication>, BrokerError>> {
        self.inner.history(campaign, after)
    }
    fn follow<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, BrokerError>> {
        self.inner.follow(campaign)
    }
    fn unfollow(&self, campaign: &str) {
        self.inner.unfollow(campaign);
    }
}

#[tokio::test(start_paused = true)]
async fn publishes_during_a_bus_outage_reach_local_sessions_then_the_bus_and_sessions_resync() {
    let bus = Arc::new(Cuttable {
        inner: MemoryBroker::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let node = Node::new(
        Config {
            node_id: "test-node".into(),
            ..Config::default()
        },
        bus.clone(),
    );
    campaign(&node, "c", 10.0, false).await;
    let mut a = Client::connect(&node, "c", "a", false, 64);
    let welcome = a.next().await;
    let epoch = welcome["epoch"].as_str().expect("epoch").to_owned();
    a.next().await; // the state
    let s1 = node
        .publish_event("c", "before", raw(json!(1)), true)
        .await
        .expect("publish");
    assert_eq!(a.next().await["events"][0]["seq"], s1);

    bus.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let local = node
        .publish_event("c", "local", raw(json!(2)), true)
        .await
        .expect("a local publish is accepted while the bus is down");
    assert!(
        local > 1_000_000_000_000_000,
        "{local}: local numbers start at the wall clock in µs, far from the cluster's"
    );
    let t = a.next().await;
    assert_eq!(t["events"][0]["name"], "local");
    assert_eq!(t["events"][0]["seq"], local);
    node.set_state("c", raw(json!({"during": true})))
        .await
        .expect("state while down");
    assert_eq!(a.next().await["state"], json!({"during": true}));
    let mut joiner = Client::connect(&node, "c", "j", false, 64);
    let jw = joiner.next().await;
    assert_ne!(jw["epoch"], epoch.as_str(), "a detached epoch");

    bus.down.store(false, std::sync::atomic::Ordering::Relaxed);
    // A publish made as the bus comes back goes after the kept ones, straight to the bus.
    let after = node
        .publish_event("c", "after", raw(json!(3)), true)
        .await
        .expect("publish after the outage");
    assert_eq!(after, s1 + 2, "after the kept event's cluster seq");
    // Within a round of the bus watcher, the sessions are told to resync.
    assert_eq!(a.closed().await, 1012);
    assert_eq!(joiner.closed().await, 1012);
    // The kept publications went to the bus, in order: a new session resuming from the last
    // cluster seq gets the local event again with a cluster seq, once, and the state.
    let mut b = Client::resume(
        &node,
        "c",
        "b",
        false,
        64,
        Some(Resume {
            since: s1,
            epoch: Some(epoch.clone()),
        }),
    );
    let w = b.next().await;
    assert_eq!(w["epoch"], epoch.as_str(), "back in the bus's epoch");
    assert_eq!(w["recovered"], true, "{w}");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let t = b.next().await;
        if let Some(e) = t["events"].as_array() {
            seen.extend(e.iter().map(|e| (e["seq"].clone(), e["name"].clone())));
        }
    }
    assert_eq!(
        seen,
        [
            (json!(s1 + 1), json!("local")),
            (json!(after), json!("after"))
        ]
    );
    // A resume from the detached epoch cannot be exact: it is refused, with the state.
    let mut stale = Client::resume(
        &node,
        "c",
        "s",
        false,
        64,
        Some(Resume {
            since: local,
            epoch: jw["epoch"].as_str().map(str::to_owned),
        }),
    );
    let sw = stale.next().await;
    assert_eq!(sw["recovered"], false, "{sw}");
    assert_eq!(stale.next().await["state"], json!({"during": true}));
    // So is one from a local number under the cluster's epoch (a session connected before
    // the cut saw the local event without learning the detached epoch).
    let mut early = Client::resume(
        &node,
        "c",
        "e",
        false,
        64,
        Some(Resume {
            since: local,
            epoch: Some(epoch.clone()),
        }),
    );
    let ew = early.next().await;
    assert_eq!(ew["recovered"], false, "{ew}");
}

#[tokio::test(start_paused = true)]
async fn local_numbers_while_detached_start_at_the_clock_and_then_follow_each_other() {
    let bus = Arc::new(Cuttable {
        inner: MemoryBroker::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let node = Node::new(Config::default(), bus.clone());
    campaign(&node, "c", 10.0, false).await;
    let mut a = Client::connect(&node, "c", "a", false, 64);
    a.next().await; // welcome
    a.next().await; // the state
    bus.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seqs = Vec::new();
    for n in 0..3 {
        let seq = node
            .publish_event("c", "local", raw(json!(n)), true)
            .await
            .expect("a local publish");
        assert_eq!(a.next().await["events"][0]["seq"], seq);
        seqs.push(seq);
    }
    assert!(
        seqs[0] > 1_000_000_000_000_000,
        "{seqs:?}: the first from the clock"
    );
    assert_eq!(seqs[1], seqs[0] + 1, "then consecutive: no false gap");
    assert_eq!(seqs[2], seqs[0] + 2);
}

#[tokio::test(start_paused = true)]
async fn revoking_an_accounts_tokens_closes_its_older_sessions_with_4401() {
    let node = node_with(Config::default());
    campaign(&node, "c1", 5.0, false).await;
    let principal = |generation| Principal {
        user: "u1".into(),
        generation,
        expires_at_ms: 0,
    };
    let mut old = Client::authenticated(&node, "c1", principal(0));
    let mut fresh = Client::authenticated(&node, "c1", principal(1));
    let mut other = Client::authenticated(
        &node,
        "c1",
        Principal {
            user: "u2".into(),
            generation: 0,
            expires_at_ms: 0,
        },
    );
    let mut anonymous = Client::connect(&node, "c1", "u1", false, 64);
    for c in [&mut old, &mut fresh, &mut other, &mut anonymous] {
        assert_eq!(c.next().await["type"], "welcome");
    }

    assert_eq!(
        node.revoke_sessions("u1", 1),
        1,
        "only the older token's session"
    );
    assert_eq!(old.closed().await, 4401);
    assert_eq!(old.done.await.expect("session task"), 4401);
    // The others keep receiving.
    node.publish_event("c1", "goal", raw(json!({})), false)
        .await
        .expect("publish");
    for c in [&mut fresh, &mut other, &mut anonymous] {
        loop {
            let f = c.next().await;
            if f["events"].as_array().is_some_and(|e| !e.is_empty()) {
                break;
            }
        }
    }

    // A session whose token was checked before the revocation but that opens after it is
    // closed as well.
    let mut late = Client::authenticated(&node, "c1", principal(0));
    assert_eq!(late.closed().await, 4401);
}

fn principal(user: &str) -> Principal {
    Principal {
        user: user.into(),
        generation: 0,
        expires_at_ms: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn a_notification_reaches_every_authenticated_session_of_its_user_on_any_campaign() {
    let node = node_with(Config::default());
    campaign(&node, "c1", 5.0, false).await;
    campaign(&node, "c2", 5.0, false).await;
    let mut a1 = Client::authenticated(&node, "c1", principal("alice"));
    let mut a2 = Client::authenticated(&node, "c2", principal("alice"));
    let mut bob = Client::authenticated(&node, "c1", principal("bob"));
    // The same user id, without a token (a dev viewer): not registered, no notifications.
    let mut anonymous = Client::connect(&node, "c1", "alice", false, 64);
    for c in [&mut a1, &mut a2, &mut bob, &mut anonymous] {
        assert_eq!(c.next().await["type"], "welcome");
        assert_eq!(c.next().await["type"], "tick");
    }
    assert_eq!(node.local_user_sessions("alice"), 2);
    assert_eq!(node.local_user_sessions("bob"), 1);
    assert_eq!(node.local_user_sessions("carol"), 0);
    let seq = node
        .publish_event("c1", "goal", raw(json!({})), true)
        .await
        .expect("publish");
    for c in [&mut a1, &mut bob, &mut anonymous] {
        assert_eq!(c.next().await["seq"], seq);
    }

    node.notify_user("alice", raw(json!({"id": "n1", "title": "hi"})))
        .await
        .expect("notify");
    for c in [&mut a1, &mut a2] {
        let f = c.next().await;
        assert_eq!(
            f,
            json!({"type": "notification", "notification": {"id": "n1", "title": "hi"}}),
            "no seq, no campaign: the payload as given"
        );
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        bob.rx.try_recv().is_err(),
        "bob gets no notification for alice"
    );
    assert!(
        anonymous.rx.try_recv().is_err(),
        "a session without a token gets none"
    );
    // Nobody's seq moved: the next event follows the last one, for alice too.
    let next = node
        .publish_event("c1", "goal", raw(json!({})), true)
        .await
        .expect("publish");
    assert_eq!(next, seq + 1);
    for c in [&mut a1, &mut bob, &mut anonymous] {
        let t = c.next().await;
        assert_eq!(t["type"], "tick");
        assert_eq!(t["events"][0]["seq"], next);
    }
    // A user with no session here: accepted, nothing delivered.
    node.notify_user("carol", raw(json!(1)))
        .await
        .expect("notify");

    // A closed session is forgotten.
    drop(a2.tx);
    assert_eq!(a2.done.await.expect("session task"), 1006);
    assert_eq!(node.local_user_sessions("alice"), 1);
    node.notify_user("alice", raw(json!("again")))
        .await
        .expect("notify");
    assert_eq!(a1.next().await["notification"], "again");
}

#[tokio::test(start_paused = true)]
async fn notifications_go_through_the_sessions_bounded_queue() {
    let node = node_with(Config {
        send_queue_capacity: 4,
        ..Config::default()
    });
    campaign(&node, "c", 5.0, false).await;
    // A "socket" that holds one frame and is never read.
    let slow = Client::open(
        &node,
        "c",
        "alice",
        Some(principal("alice")),
        Encoding::default(),
        1,
        None,
    );
    for _ in 0..100 {
        if node.local_user_sessions("alice") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(node.local_user_sessions("alice"), 1);
    for i in 0..20 {
        node.notify_user("alice", raw(json!(i)))
            .await
            .expect("notify");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let dropped = node.stats("c").expect("stats").frames_dropped;
    assert!(dropped >= 10, "a full queue drops and counts: {dropped}");
    assert!(!slow.done.is_finished(), "escalation is off by default");
}

#[tokio::test(start_paused = true)]
async fn invalid_notifications_are_refused() {
    let node = node_with(Config::default());
    let refused = |r: Result<(), engine::EngineError>| {
        matches!(r, Err(engine::EngineError::InvalidData { .. }))
    };
    for user in ["", "a b", "tab\t", &"x".repeat(129)] {
        assert!(
            refused(node.notify_user(user, raw(json!({}))).await),
            "user {user:?}"
        );
    }
    assert!(
        node.notify_user(&"x".repeat(128), raw(json!({})))
            .await
            .is_ok()
    );
    let big = raw(json!("x".repeat(engine::session::MAX_NOTIFICATION_BYTES)));
    assert!(
        refused(node.notify_user("u", big).await),
        "over the size limit"
    );
    let huge_number = RawValue::from_string(r#"{"n":1e400}"#.to_owned()).expect("json");
    assert!(refused(node.notify_user("u", huge_number).await));
    let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
    let deep = RawValue::from_string(deep).expect("json");
    assert!(refused(node.notify_user("u", deep).await), "too deep");
    let e = node
        .notify_user("", raw(json!({})))
        .await
        .expect_err("refused");
    assert!(e.to_string().starts_with("invalid user id"), "{e}");

    // The bus down: the caller is told.
    let cut = Arc::new(Cuttable {
        inner: MemoryBroker::new(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let node = Node::new(Config::default(), cut);
    assert!(matches!(
        node.notify_user("u", raw(json!({}))).await,
        Err(engine::EngineError::Broker(BrokerError::Unavailable { .. }))
    ));
}

/// Tokens of the refresh test: `fresh-<user>` is valid for a minute, anything else is refused.
struct TestTokens;

impl engine::TokenVerifier for TestTokens {
    fn verify(&self, token: &str) -> Result<Principal, String> {
        let user = token.strip_prefix("fresh-").ok_or("bad token")?;
        Ok(Principal {
            user: user.to_owned(),
            generation: 0,
            expires_at_ms: wall_ms() + 60_000,
        })
    }
}

fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms")
}

#[tokio::test]
async fn a_token_that_expires_closes_its_session_unless_a_fresh_one_was_presented() {
    let node = node_with(Config::default());
    node.set_token_verifier(Arc::new(TestTokens));
    campaign(&node, "c1", 5.0, false).await;
    let soon = |user: &str| Principal {
        user: user.into(),
        generation: 0,
        expires_at_ms: wall_ms() + 1_500,
    };
    let mut lapsing = Client::authenticated(&node, "c1", soon("u1"));
    let mut refreshed = Client::authenticated(&node, "c1", soon("u1"));
    let mut anonymous = Client::connect(&node, "c1", "u3", false, 64);
    for c in [&mut lapsing, &mut refreshed, &mut anonymous] {
        assert_eq!(c.next().await["type"], "welcome");
    }
    // Frames after the welcome, skipping ticks.
    async fn reply(c: &mut Client) -> Value {
        loop {
            let f = c.next().await;
            if f["type"] != "tick" {
                return f;
            }
        }
    }
    // Refusals keep the session open and say why.
    refreshed.send(r#"{"type":"refresh"}"#).await;
    assert_eq!(reply(&mut refreshed).await["code"], "bad_frame");
    refreshed
        .send(r#"{"type":"refresh","token":"stale"}"#)
        .await;
    assert_eq!(reply(&mut refreshed).await["code"], "unauthenticated");
    refreshed
        .send(r#"{"type":"refresh","token":"fresh-u2"}"#)
        .await;
    assert_eq!(
        reply(&mut refreshed).await["code"],
        "forbidden",
        "another account's"
    );
    anonymous
        .send(r#"{"type":"refresh","token":"fresh-u3"}"#)
        .await;
    assert_eq!(
        reply(&mut anonymous).await["code"],
        "unsupported",
        "no token to refresh"
    );
    // A fresh token of the same account: it stays open past the first token's expiry.
    refreshed
        .send(r#"{"type":"refresh","token":"fresh-u1"}"#)
        .await;
    let r = reply(&mut refreshed).await;
    assert_eq!(r["type"], "refreshed", "{r}");
    assert!(r["expires_at"].as_i64().expect("expires_at") > wall_ms() + 50_000);

    assert_eq!(
        lapsing.closed().await,
        4401,
        "closed when its token expired"
    );
    let ended = tokio::time::timeout(Duration::from_secs(3), refreshed.rx.recv()).await;
    assert!(
        ended.is_err()
            || ended
                .as_ref()
                .is_ok_and(|m| !matches!(m, Some(Message::Close(_)))),
        "the refreshed session stays open: {ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_stats_history_samples_connections_and_rates_every_interval() {
    let node = node_with(Config {
        stats_interval: Duration::from_secs(1),
        ..Config::default()
    });
    campaign(&node, "c", 5.0, false).await;
    assert_eq!(
        node.stats_history("c"),
        Some(vec![]),
        "no sample before one interval"
    );
    assert_eq!(node.stats_history("nope"), None);
    let mut c = Client::connect(&node, "c", "u", false, 1024);
    c.next().await; // welcome
    // 10 events a second for 4 s: 5 frames a second (one per tick) to the one client.
    for _ in 0..40 {
        node.publish_event("c", "e", raw(json!(1)), false)
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = node.stats_history("c").expect("running");
    assert!((3..=4).contains(&history.len()), "{history:?}");
    for pair in history.windows(2) {
        assert!(pair[0].at_ms < pair[1].at_ms, "oldest first: {history:?}");
    }
    let last = history.last().expect("a sample");
    assert_eq!((last.connections, last.cluster_connections), (1, 1));
    assert_eq!(last.frequency_hz, 5.0);
    assert!((last.events_per_s - 10.0).abs() < 1.01, "{last:?}");
    assert!((last.frames_per_s - 5.0).abs() < 1.01, "{last:?}");
    assert_eq!(last.dropped_per_s, 0.0);
    assert!((last.tick_rate_hz - 5.0).abs() < 0.5, "{last:?}");

    // It keeps 15 minutes: 900 samples at 1 s.
    tokio::time::sleep(Duration::from_secs(1000)).await;
    let history = node.stats_history("c").expect("running");
    assert_eq!(history.len(), 900);
    assert_eq!(history.last().expect("a sample").events_per_s, 0.0);
    drop(c);
}

/// What a delta client does with tick frames: takes `state` whole, applies `state_patch` only
/// on top of the `state_version` before it. Returns the state and its version.
fn apply_tick(have: &mut Option<(Value, u64)>, tick: &Value) {
    fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(p) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    }
    let version = tick["state_version"].as_u64();
    if let Some(state) = tick.get("state") {
        *have = Some((
            state.clone(),
            version.expect("a full state carries its state_version"),
        ));
    } else if let Some(patch) = tick.get("state_patch") {
        let version = version.expect("a patch carries its state_version");
        let (state, v) = have.as_mut().expect("a patch only after a full state");
        assert_eq!(
            *v + 1,
            version,
            "a patch only on top of the version before: {tick}"
        );
        merge(state, patch);
        *v = version;
    }
}

/// A 10 KB state where one field changes.
fn big_state(score: u64) -> Box<RawValue> {
    let board: serde_json::Map<String, Value> = (0..100)
        .map(|i| {
            (
                format!("cell{i:03}"),
                json!({"label": "x".repeat(80), "n": i}),
            )
        })
        .collect();
    raw(json!({"score": score, "board": board}))
}

#[tokio::test(start_paused = true)]
async fn delta_sessions_get_patches_of_a_changed_state_and_others_the_whole_state() {
    let node = node_with(Config::default());
    campaign(&node, "c", 10.0, false).await;
    node.set_state("c", big_state(0)).await.expect("state");
    let mut delta = Client::delta(&node, "c", "d", 1024, None);
    let mut plain = Client::connect(&node, "c", "p", false, 1024);
    let mut have = None;
    for c in [&mut plain, &mut delta] {
        assert_eq!(c.next().await["type"], "welcome");
        let t = c.next().await;
        assert_eq!(
            t["state"]["score"], 0,
            "a joining session gets the whole state"
        );
        assert!(t["state_version"].is_u64(), "{t}");
        apply_tick(&mut have, &t);
    }
    let mut bytes = (0, 0);
    for score in 1..=20 {
        node.set_state("c", big_state(score)).await.expect("state");
        let (d, p) = (delta.next().await, plain.next().await);
        assert_eq!(d["state_patch"], json!({"score": score}), "{d}");
        assert!(d.get("state").is_none());
        assert_eq!(
            p["state"]["score"], score,
            "a session without delta=1 gets the state"
        );
        assert!(p.get("state_patch").is_none());
        apply_tick(&mut have, &d);
        assert_eq!(have.as_ref().map(|h| &h.0), Some(&p["state"]));
        bytes.0 += d.to_string().len();
        bytes.1 += p.to_string().len();
    }
    assert!(
        bytes.1 >= 50 * bytes.0,
        "patches {} bytes against {} for whole states",
        bytes.0,
        bytes.1
    );
}

#[tokio::test(start_paused = true)]
async fn a_delta_session_that_lost_frames_or_resumed_gets_the_whole_state_again() {
    // A campaign with the `delta` feature: every session gets patches, whatever it asked.
    let node = node_with(Config {
        send_queue_capacity: 4,
        ..Config::default()
    });
    let spec = CampaignSpec {
        id: "c".into(),
        frequency_hz: 10.0,
        client_events: false,
        presence: false,
        delta: true,
        state: Some(big_state(0)),
        epoch: None,
    };
    node.upsert_campaign(spec).await.expect("campaign");
    // Its socket holds 2 frames and it does not read for a while: frames are dropped.
    let mut slow = Client::connect(&node, "c", "slow", false, 2);
    let mut have = None;
    for score in 1..=30 {
        node.set_state("c", big_state(score)).await.expect("state");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        node.stats("c").expect("stats").frames_dropped > 0,
        "frames were dropped"
    );
    // Whatever it got, applied by the rules, ends with the current state.
    let mut last = Value::Null;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(1), slow.next()).await;
        let Ok(f) = f else { break };
        apply_tick(&mut have, &f);
        last = f;
    }
    assert_eq!(
        have.as_ref().map(|h| h.0["score"].clone()),
        Some(json!(30)),
        "last frame {last}"
    );

    // Resuming with since: the whole state first, then patches.
    let seq = node.stats("c").expect("stats").seq;
    let resume = Resume {
        since: seq,
        epoch: None,
    };
    let mut again = Client::delta(&node, "c", "slow", 1024, Some(resume));
    assert_eq!(again.next().await["type"], "welcome");
    let t = again.next().await;
    assert_eq!(t["state"]["score"], 30, "{t}");
    let mut have = None;
    apply_tick(&mut have, &t);
    node.set_state("c", big_state(31)).await.expect("state");
    let t = again.next().await;
    assert_eq!(t["state_patch"], json!({"score": 31}), "{t}");
    apply_tick(&mut have, &t);
}

fn new_events(names: &[&str], immediate: bool) -> Vec<NewEvent> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| NewEvent {
            name: (*name).to_owned(),
            data: raw(json!({"i": i})),
            immediate,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_batch_takes_consecutive_seqs_with_no_publication_between_them() {
    let node = node_with(Config::default());
    campaign(&node, "c", 10.0, false).await;
    let mut a = Client::connect(&node, "c", "a", false, 4096);
    a.next().await; // welcome
    a.next().await; // the state
    let names: Vec<String> = (0..200).map(|i| format!("b{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Single publishes race the batches: none lands inside one.
    let singles = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let seq = node
                    .publish_event("c", "single", raw(json!(i)), false)
                    .await
                    .expect("publish");
                seqs.push(seq);
                tokio::task::yield_now().await;
            }
            seqs
        })
    };
    let mut ranges = Vec::new();
    for _ in 0..5 {
        let r = node
            .publish_events("c", new_events(&names, false))
            .await
            .expect("a batch");
        assert_eq!(r.end() - r.start() + 1, 200, "{r:?}");
        ranges.push(r);
        tokio::task::yield_now().await;
    }
    let singles = singles.await.expect("singles");
    for s in &singles {
        assert!(
            ranges.iter().all(|r| !r.contains(s)),
            "single {s} inside a batch {ranges:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while let Ok(m) = a.rx.try_recv() {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "tick" {
                for e in v["events"].as_array().expect("events") {
                    got.push((e["seq"].as_u64().expect("seq"), e["name"].clone()));
                }
            }
        }
    }
    assert_eq!(got.len(), 1050, "every event delivered once");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in seq order");
    for r in &ranges {
        let batch: Vec<_> = got.iter().filter(|(s, _)| r.contains(s)).collect();
        assert_eq!(batch.len(), 200);
        for (i, (_, name)) in batch.iter().enumerate() {
            assert_eq!(*name, json!(format!("b{i}")), "batch order kept");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_bad_batch_publishes_nothing_and_names_the_bad_event() {
    let node = node_with(Config::default());
    campaign(&node, "c", 10.0, false).await;
    let before = node
        .publish_event("c", "first", raw(json!(1)), false)
        .await
        .expect("publish");
    let check =
        |r: Result<std::ops::RangeInclusive<u64>, EngineError>, index: Option<usize>| match r {
            Err(EngineError::InvalidBatch { index: i, reason }) => {
                assert_eq!(i, index, "{reason}");
            }
            other => panic!("expected an invalid batch, got {other:?}"),
        };
    check(node.publish_events("c", Vec::new()).await, None);
    let many: Vec<String> = (0..=MAX_BATCH_EVENTS).map(|i| format!("e{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    check(
        node.publish_events("c", new_events(&many, false)).await,
        None,
    );
    check(
        node.publish_events("c", new_events(&["ok", "ok", "bad name", "ok"], false))
            .await,
        Some(2),
    );
    let mut deep = new_events(&["ok", "deep"], false);
    deep[1].data =
        RawValue::from_string(format!("{}{}", "[".repeat(40), "]".repeat(40))).expect("json");
    check(node.publish_events("c", deep).await, Some(1));
    assert!(matches!(
        node.publish_events("nope", new_events(&["ok"], false))
            .await,
        Err(EngineError::UnknownCampaign { .. })
    ));
    let after = node
        .publish_event("c", "last", raw(json!(2)), false)
        .await
        .expect("publish");
    assert_eq!(after, before + 1, "no refused batch took a seq");
}

#[tokio::test(start_paused = true)]
async fn a_batch_during_a_bus_outage_is_numbered_locally_as_one_unit() {
    let bus = Arc::new(Cuttable {
        inner: MemoryBroker::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let node = Node::new(Config::default(), bus.clone());
    campaign(&node, "c", 10.0, false).await;
    let mut a = Client::connect(&node, "c", "a", false, 64);
    a.next().await; // welcome
    a.next().await; // the state
    bus.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = node
        .publish_events("c", new_events(&["x", "y", "z"], true))
        .await
        .expect("a local batch");
    assert!(
        *r.start() > 1_000_000_000_000_000,
        "{r:?}: detached numbers"
    );
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let t = a.next().await;
        for e in t["events"].as_array().expect("events") {
            seqs.push(e["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(seqs, r.collect::<Vec<_>>());
}
