//! One conformance suite for every broker: the in-process one always, the Redis one against a
//! real Redis when `OVASABI_TEST_REDIS_URL` is set (each run under its own key prefix), and
//! nodes sharing one Redis.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use engine::broker::{
    Broker, CampaignSpec, Control, Deliver, MemoryBroker, Publication, RedisBroker, RedisConfig,
};
use engine::tungstenite::{Error as WsError, Message};
use engine::{Config, Encoding, Node, Principal};
use futures_util::{Sink, Stream};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl Deliver for Collect {
    fn deliver(&self, campaign: &str, p: Publication) {
        let line = match p {
            Publication::Event { seq, name, .. } => format!("{campaign} event {seq} {name}"),
            Publication::State { state, .. } => format!("{campaign} state {}", state.get()),
            Publication::Message { seq, user, .. } => format!("{campaign} message {seq} {user}"),
        };
        self.0.lock().expect("lock").push(line);
    }
    fn epoch(&self, campaign: &str, epoch: &str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("{campaign} epoch {epoch}"));
    }
    fn control(&self, c: Control) {
        let line = match c {
            Control::Upsert(spec) => format!("upsert {} {}", spec.id, spec.frequency_hz),
            Control::End { campaign } => format!("end {campaign}"),
        };
        self.0.lock().expect("lock").push(line);
    }
    fn notify(&self, user: &str, payload: &RawValue) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("notify {user} {}", payload.get()));
    }
}

impl Collect {
    /// Waits (up to 2 s) for a delivery equal to `line`.
    async fn wait_line(&self, line: &str) -> bool {
        for _ in 0..200 {
            if self.0.lock().expect("lock").iter().any(|l| l == line) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let got = self.0.lock().expect("lock").clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.0.lock().expect("lock").clone()
    }
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).expect("json")
}

fn event(name: &str) -> Publication {
    Publication::Event {
        seq: 0,
        name: name.into(),
        data: raw("{}"),
        ts: 0,
        immediate: false,
        user: None,
    }
}

/// `follows`: whether the broker only delivers the campaigns this node follows (a cluster
/// broker does; the in-process one hands everything to its one node, which filters).
async fn conformance(broker: Arc<dyn Broker>, follows: bool) {
    let sink = Arc::new(Collect::default());
    let weak: Weak<dyn Deliver> = Arc::downgrade(&(sink.clone() as Arc<dyn Deliver>));
    broker.attach(weak);
    let s1 = broker.follow("c1").await.expect("follow");
    let s2 = broker.follow("c2").await.expect("follow");
    assert_eq!(
        s1.is_some(),
        follows,
        "a cluster broker reports where the campaign stands"
    );
    assert!(
        s2.as_ref().is_none_or(|s| s.seq == 0 && s.state.is_none()),
        "nothing published yet"
    );
    for _ in 0..100 {
        if broker.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(broker.is_ready());
    // Let the subscriptions land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A campaign's epoch is made when it is created, before anything is published to it (a
    // publish that finds none takes it that the bus lost it, and numbers above the clock).
    for c in ["c1", "c2"] {
        broker.epoch(c).await.expect("epoch");
    }

    assert_eq!(broker.publish("c1", event("a")).await.expect("publish"), 1);
    assert_eq!(broker.publish("c1", event("b")).await.expect("publish"), 2);
    assert_eq!(
        broker.publish("c2", event("x")).await.expect("publish"),
        1,
        "seq is per campaign"
    );
    assert_eq!(
        broker
            .publish(
                "c1",
                Publication::State {
                    state: raw(r#"{"s":1}"#),
                    version: 0,
                }
            )
            .await
            .expect("state"),
        2
    );
    let m = Publication::Message {
        seq: 0,
        user: "u".into(),
        name: "n".into(),
        data: raw("1"),
        ts: 0,
    };
    assert_eq!(
        broker.publish("c1", m).await.expect("message"),
        2,
        "messages carry the latest seq"
    );
    let spec = CampaignSpec {
        id: "c3".into(),
        frequency_hz: 2.0,
        presence: false,
        delta: false,
        client_events: false,
        state: None,
        epoch: None,
    };
    broker
        .control(Control::Upsert(spec))
        .await
        .expect("control");
    broker
        .control(Control::End {
            campaign: "c3".into(),
        })
        .await
        .expect("control");
    let got = sink.wait_for(7 + 2 * usize::from(follows)).await;
    // (A cluster broker also tells the node the campaign's epoch when it first hears of it.)
    let got: Vec<String> = got.into_iter().filter(|l| !l.contains(" epoch ")).collect();
    let c1: Vec<&String> = got.iter().filter(|l| l.starts_with("c1 ")).collect();
    assert_eq!(
        c1,
        [
            "c1 event 1 a",
            "c1 event 2 b",
            r#"c1 state {"s":1}"#,
            "c1 message 2 u"
        ],
        "in seq order"
    );
    assert!(got.contains(&"c2 event 1 x".to_owned()));
    assert!(got.contains(&"upsert c3 2".to_owned()) && got.contains(&"end c3".to_owned()));

    let p1 = engine::broker::Presence {
        connections: 2,
        users: vec!["a".into(), "b".into()],
    };
    let p2 = engine::broker::Presence {
        connections: 1,
        users: vec!["b".into(), "c".into()],
    };
    broker
        .report_presence("c1", "node-1", &p1)
        .await
        .expect("report");
    broker
        .report_presence("c1", "node-2", &p2)
        .await
        .expect("report");
    match broker.cluster_presence("c1").await.expect("presence") {
        Some(p) => {
            assert!(follows, "only a cluster broker has a shared view");
            assert_eq!(p.connections, 3);
            assert_eq!(p.users, ["a", "b", "c"], "distinct users");
            // Reports expire unless repeated (presence_ttl is 1 s in this test).
            tokio::time::sleep(Duration::from_millis(1200)).await;
            broker
                .report_presence("c1", "node-2", &p2)
                .await
                .expect("report");
            let p = broker
                .cluster_presence("c1")
                .await
                .expect("presence")
                .expect("shared");
            assert_eq!(
                p.connections, 1,
                "node-1 stopped reporting: its sessions are gone"
            );
        }
        None => assert!(!follows),
    }

    let e1 = broker.epoch("c1").await.expect("epoch");
    assert_eq!(broker.epoch("c1").await.expect("epoch"), e1, "stable");
    assert_ne!(broker.epoch("c2").await.expect("epoch"), e1, "per campaign");

    broker.unfollow("c2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = sink.0.lock().expect("lock").len();
    broker.publish("c2", event("y")).await.expect("publish");
    broker.publish("c1", event("c")).await.expect("publish");
    let got = sink.wait_for(before + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got_after = sink.0.lock().expect("lock").clone();
    assert!(got.contains(&"c1 event 3 c".to_owned()));
    if follows {
        assert!(
            !got_after.iter().any(|l| l == "c2 event 2 y"),
            "unfollowed: not delivered here"
        );
    }

    // Notifications reach the node whatever it follows, untouched.
    broker
        .notify("u 1", raw(r#"{"title":"hi","n":[1,2]}"#))
        .await
        .expect("notify");
    assert!(
        sink.wait_line(r#"notify u 1 {"title":"hi","n":[1,2]}"#)
            .await,
        "{:?}",
        sink.0.lock().expect("lock")
    );
}

#[tokio::test]
async fn memory_broker_conformance() {
    conformance(Arc::new(MemoryBroker::new()), false).await;
}

/// A batch takes consecutive seqs with nothing between them, even while another broker (a
/// second node) publishes single events to the same campaign at the same time; a retried batch
/// (same first id) is applied once; subscribers get every event once, in seq order.
/// `retries`: whether the broker can time out, so that the node retries (the in-process one
/// cannot, and does not keep publish ids).
async fn batch_conformance(a: Arc<dyn Broker>, b: Arc<dyn Broker>, retries: bool) {
    let sink = Arc::new(Collect::default());
    b.attach(Arc::downgrade(&(sink.clone() as Arc<dyn Deliver>)));
    a.epoch("cb").await.expect("epoch");
    b.follow("cb").await.expect("follow");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let batch = |tag: &str, n: usize| -> Vec<Publication> {
        (0..n).map(|i| event(&format!("{tag}{i}"))).collect()
    };
    let singles = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40u64 {
                seqs.push(
                    b.publish_once("cb", event(&format!("s{i}")), 10_000 + i)
                        .await
                        .expect("single"),
                );
            }
            seqs
        })
    };
    let mut firsts = Vec::new();
    for k in 0..8u64 {
        let first = a
            .publish_batch_once("cb", batch(&format!("b{k}-"), 25), 1_000 + k * 25)
            .await
            .expect("batch");
        firsts.push(first);
    }
    let single_seqs = singles.await.expect("task");
    if retries {
        // A retry of a batch already applied: same first seq, nothing published again.
        let again = a
            .publish_batch_once("cb", batch("b0-", 25), 1_000)
            .await
            .expect("retry");
        assert_eq!(again, firsts[0], "a retried batch is applied once");
        let again = a
            .publish_batch_once("cb", batch("b7-", 25), 1_000 + 7 * 25)
            .await
            .expect("retry");
        assert_eq!(again, firsts[7], "a retried batch is applied once");
    }

    let total = 8 * 25 + 40;
    let mut all: Vec<u64> = single_seqs.clone();
    for f in &firsts {
        all.extend(*f..*f + 25);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=u64::try_from(total).expect("n")).collect::<Vec<_>>(),
        "every seq once: {firsts:?} {single_seqs:?}"
    );
    for f in &firsts {
        assert!(
            !single_seqs.iter().any(|s| (*f..*f + 25).contains(s)),
            "no single event inside the batch at {f}"
        );
    }

    let got = sink.wait_for(total).await;
    let events: Vec<(u64, String)> = got
        .iter()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("cb"), Some("event"), Some(seq), Some(name)) => {
                    Some((seq.parse().expect("seq"), name.to_owned()))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(events.len(), total, "each event delivered once: {got:?}");
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "delivered in seq order"
    );
    for (k, f) in firsts.iter().enumerate() {
        for i in 0..25u64 {
            let name = format!("b{k}-{i}");
            assert!(
                events.contains(&(f + i, name.clone())),
                "{name} has seq {}",
                f + i
            );
        }
    }
}

#[tokio::test]
async fn memory_broker_batch_conformance() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    batch_conformance(broker.clone(), broker, false).await;
}

#[tokio::test]
async fn redis_broker_batch_conformance() {
    let Some(url) = redis_url() else { return };
    let shutdown = CancellationToken::new();
    let config = test_config(url, prefix("batch"), false);
    let a = RedisBroker::connect(config.clone(), shutdown.clone())
        .await
        .expect("connect");
    let b = RedisBroker::connect(config, shutdown.clone())
        .await
        .expect("connect");
    batch_conformance(a, b, true).await;
    shutdown.cancel();
}

fn redis_url() -> Option<String> {
    let url = std::env::var("OVASABI_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("SKIPPED: OVASABI_TEST_REDIS_URL is not set; the Redis broker tests did not run");
    }
    url
}

/// A broker's settings for the tests: 100 events of history for a minute, presence for 1 s.
fn test_config(url: impl Into<String>, prefix: impl Into<String>, sharded: bool) -> RedisConfig {
    RedisConfig {
        prefix: prefix.into(),
        history_size: 100,
        history_ttl: Duration::from_secs(60),
        presence_ttl: Duration::from_secs(1),
        sharded,
        ..RedisConfig::new(url)
    }
}

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("ovasabi-test-{test}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn redis_broker_conformance() {
    let Some(url) = redis_url() else { return };
    let shutdown = CancellationToken::new();
    let config = test_config(url, prefix("conf"), false);
    let broker = RedisBroker::connect(config, shutdown.clone())
        .await
        .expect("connect");
    conformance(broker.clone(), true).await;
    shutdown.cancel();
}

/// `PUBSUB <sub> <channel>`'s count for `channel`.
async fn subscribers(url: &str, sub: &str, channel: &str) -> i64 {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg(sub)
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("pubsub");
    n
}

#[tokio::test]
async fn redis_sharded_broker_conformance() {
    let Some(url) = redis_url() else { return };
    let shutdown = CancellationToken::new();
    let p = prefix("shard");
    let config = test_config(url.clone(), p.clone(), true);
    let broker = RedisBroker::connect(config, shutdown.clone())
        .await
        .expect("connect");
    conformance(broker.clone(), true).await;
    // Campaign channels are shard channels, named with the campaign as a hash tag, and the
    // campaign's keys share the tag.
    broker.epoch("c9").await.expect("epoch");
    broker.follow("c9").await.expect("follow");
    let channel = format!("{p}:c:{{c9}}");
    assert_eq!(subscribers(&url, "SHARDNUMSUB", &channel).await, 1);
    assert_eq!(subscribers(&url, "NUMSUB", &channel).await, 0);
    assert_eq!(
        broker
            .publish("c9", event("tagged"))
            .await
            .expect("publish"),
        1
    );
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let seq: i64 = redis::cmd("GET")
        .arg(format!("{p}:seq:{{c9}}"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(seq, 1);
    broker.unfollow("c9");
    for _ in 0..100 {
        if subscribers(&url, "SHARDNUMSUB", &channel).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(subscribers(&url, "SHARDNUMSUB", &channel).await, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn redis_broker_reports_an_unreachable_redis_at_start() {
    if redis_url().is_none() {
        return;
    }
    let config = test_config("redis://127.0.0.1:1/", prefix("bad"), false);
    let err = RedisBroker::connect(config, CancellationToken::new()).await;
    assert!(err.is_err());
}

/// Deletes every key of `prefix`: what a Redis restarted without persistence holds of it.
async fn empty(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}

#[tokio::test]
async fn redis_broker_applies_a_retried_publish_once_and_continues_seq_when_redis_lost_its_keys() {
    let Some(url) = redis_url() else { return };
    let shutdown = CancellationToken::new();
    let p = prefix("faults");
    let config = test_config(url.clone(), p.clone(), false);
    let a = RedisBroker::connect(config.clone(), shutdown.clone())
        .await
        .expect("connect");
    let b = RedisBroker::connect(config, shutdown.clone())
        .await
        .expect("connect");
    let seen = Arc::new(Collect::default());
    b.attach(Arc::downgrade(&(seen.clone() as Arc<dyn Deliver>)));
    let first = a.epoch("c").await.expect("epoch");
    assert_eq!(
        b.epoch("c").await.expect("epoch"),
        first,
        "one epoch per campaign"
    );
    b.follow("c").await.expect("follow");

    // The same publish id twice (a retry after a timeout): applied once, same seq.
    assert_eq!(
        a.publish_once("c", event("x"), 7).await.expect("publish"),
        1
    );
    assert_eq!(a.publish_once("c", event("x"), 7).await.expect("retry"), 1);
    assert_eq!(
        a.publish_once("c", event("y"), 8).await.expect("publish"),
        2
    );
    let got = seen.wait_for(3).await;
    assert_eq!(
        got.iter()
            .filter(|l| l.contains(" event "))
            .collect::<Vec<_>>(),
        ["c event 1 x", "c event 2 y"],
        "{got:?}"
    );
    for i in 0..50 {
        a.publish_once("c", event("bulk"), 100 + i)
            .await
            .expect("publish");
    }
    let before = a
        .publish_once("c", event("last"), 200)
        .await
        .expect("publish");
    assert_eq!(before, 53);
    seen.wait_for(3 + 51).await;

    // Redis loses everything: the next publish begins a new epoch whose seqs continue above
    // every number handed out before, and the other node hears of it before the event.
    empty(&url, &p).await;
    let base = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            * 1000,
    )
    .expect("micros");
    let after = a
        .publish_once("c", event("after"), 201)
        .await
        .expect("publish");
    assert!(
        after > before && after >= base,
        "{after} continues above {before}"
    );
    let again = a
        .publish_once("c", event("after"), 201)
        .await
        .expect("retry");
    assert_eq!(
        again, after,
        "retried once more in the new epoch: still once"
    );
    let next = b
        .publish_once("c", event("from-b"), 1)
        .await
        .expect("publish");
    assert_eq!(next, after + 1, "the other node publishes in the new epoch");
    let new_epoch = a.epoch("c").await.expect("epoch");
    assert_ne!(new_epoch, first);
    let got = seen.wait_for(3 + 51 + 3).await;
    let tail: Vec<&String> = got.iter().skip(3 + 51).collect();
    assert_eq!(
        tail,
        [
            &format!("c epoch {new_epoch}"),
            &format!("c event {after} after"),
            &format!("c event {next} from-b"),
        ],
        "{got:?}"
    );
    // History of the new epoch, with taints recorded for resumes.
    let recovery = a.recovery("c", after - 1).await.expect("history");
    assert_eq!(recovery.events.len(), 2);
    assert!(recovery.tainted.is_empty());
    let taint = engine::broker::Taint {
        epoch: new_epoch.clone(),
        after,
        through: next,
    };
    b.taint("c", taint.clone()).await.expect("taint");
    assert_eq!(a.recovery("c", 0).await.expect("history").tainted, [taint]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_persistent_memory_broker_continues_epoch_and_seq_after_a_restart() {
    let dir = std::env::temp_dir().join(prefix("seqfile"));
    let path = dir.join("node.seq.json");
    let first = MemoryBroker::persistent(&path).expect("new file");
    let epoch = first.epoch("c").await.expect("epoch");
    for n in 1..=3 {
        assert_eq!(first.publish("c", event("e")).await.expect("publish"), n);
    }
    assert!(
        first
            .follow("c")
            .await
            .expect("follow")
            .is_some_and(|s| s.seq == 3),
        "a persistent broker says where the numbering stands"
    );
    drop(first);

    // Killed and started again: same epoch, and seq above every number handed out before.
    let second = MemoryBroker::persistent(&path).expect("existing file");
    assert_eq!(second.epoch("c").await.expect("epoch"), epoch);
    let next = second.publish("c", event("e")).await.expect("publish");
    assert!(next > 3, "{next}");
    assert!(
        second
            .follow("c")
            .await
            .expect("follow")
            .is_some_and(|s| s.seq == next)
    );
    // An ended campaign is forgotten.
    second
        .control(Control::End {
            campaign: "c".into(),
        })
        .await
        .expect("end");
    drop(second);
    let third = MemoryBroker::persistent(&path).expect("existing file");
    assert_ne!(third.epoch("c").await.expect("epoch"), epoch);
    // A file that is not ours is refused rather than overwritten.
    std::fs::write(&path, b"not json").expect("write");
    assert!(MemoryBroker::persistent(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server side of an in-memory WebSocket (what `Node::serve_session` drives).
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

/// A session of `user` on `node` (with a token when `principal`): the sender that keeps it
/// open and what it receives.
fn open_session(
    node: &Node,
    campaign: &str,
    user: &str,
    principal: bool,
) -> (
    mpsc::Sender<Result<Message, WsError>>,
    mpsc::Receiver<Message>,
) {
    let (tx, incoming) = mpsc::channel(16);
    let (out_tx, rx) = mpsc::channel(64);
    let ws = TestWs {
        incoming,
        outgoing: PollSender::new(out_tx),
    };
    let principal = principal.then(|| Principal {
        user: user.to_owned(),
        generation: 0,
        expires_at_ms: 0,
    });
    let (node, campaign, user) = (node.clone(), campaign.to_owned(), user.to_owned());
    tokio::spawn(async move {
        node.serve_session(&campaign, &user, principal, Encoding::default(), None, ws)
            .await
    });
    (tx, rx)
}

/// The next text frame of type `kind` within 5 s (others skipped), as JSON.
async fn next_of(rx: &mut mpsc::Receiver<Message>, kind: &str) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Message::Text(t)) = rx.recv().await {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                if v["type"] == kind {
                    return v;
                }
            } else {
                assert!(!rx.is_closed(), "session closed");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} frame within 5 s"))
}

#[tokio::test]
async fn a_notification_issued_on_one_node_reaches_the_users_sessions_on_another() {
    let Some(url) = redis_url() else { return };
    let shutdown = CancellationToken::new();
    let p = prefix("notify");
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let broker =
            RedisBroker::connect(test_config(url.clone(), p.clone(), false), shutdown.clone())
                .await
                .expect("connect");
        for _ in 0..100 {
            if broker.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(broker.is_ready());
        let config = Config {
            node_id: name.into(),
            ..Config::default()
        };
        nodes.push(Node::new(config, broker));
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // Every node is subscribed to the one node-wide channel.
    assert_eq!(subscribers(&url, "NUMSUB", &format!("{p}:notify")).await, 2);

    a.upsert_campaign(CampaignSpec {
        id: "c".into(),
        frequency_hz: 5.0,
        client_events: false,
        presence: false,
        delta: false,
        state: Some(raw("{}")),
        epoch: None,
    })
    .await
    .expect("campaign");
    for _ in 0..200 {
        if b.has_campaign("c") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.has_campaign("c"), "the campaign reached node B");
    let (_keep, mut alice) = open_session(b, "c", "alice", true);
    let (_keep_bob, mut bob) = open_session(b, "c", "bob", true);
    let (_keep_anon, mut anonymous) = open_session(b, "c", "alice", false);
    for rx in [&mut alice, &mut bob, &mut anonymous] {
        next_of(rx, "welcome").await;
    }
    assert_eq!(b.local_user_sessions("alice"), 1);
    assert_eq!(a.local_user_sessions("alice"), 0);

    a.notify_user("alice", raw(r#"{"id":"n1","title":"hi"}"#))
        .await
        .expect("notify");
    let f = next_of(&mut alice, "notification").await;
    assert_eq!(
        f,
        serde_json::json!({"type":"notification","notification":{"id":"n1","title":"hi"}})
    );
    // The others get nothing: by the time an event published after it arrives, a
    // notification for them would have.
    let seq = a
        .publish_event("c", "after", raw("{}"), true)
        .await
        .expect("publish");
    for rx in [&mut bob, &mut anonymous] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("the event within 5 s")
                .expect("open");
            let Message::Text(t) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(&t).expect("json");
            assert_ne!(v["type"], "notification", "{v}");
            if v["type"] == "tick" && v["events"][0]["seq"] == seq {
                break;
            }
        }
    }
    for n in &nodes {
        n.shutdown(Duration::from_secs(2)).await;
    }
    shutdown.cancel();
}
