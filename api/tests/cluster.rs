//! Several nodes sharing one Redis (and one SQLite file, standing in for the shared database):
//! runs when `OVASABI_TEST_REDIS_URL` is set, and says it was skipped otherwise. Every test
//! uses its own Redis key prefix.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, close_code, next, next_of};
use serde_json::json;

fn redis_url() -> Option<String> {
    let url = std::env::var("OVASABI_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("SKIPPED: OVASABI_TEST_REDIS_URL is not set; the multi-node tests did not run");
    }
    url
}

/// The database the nodes of a test share: a fresh Postgres schema when
/// `OVASABI_TEST_DATABASE_URL` is set, else one SQLite file.
async fn shared_database(name: &str, dir: &std::path::Path) -> String {
    match std::env::var("OVASABI_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = name.replace('-', "_");
            let admin = services::Database::connect(&url)
                .await
                .expect("connect to Postgres");
            if let services::Database::Postgres(pool) = &admin {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                    .execute(pool)
                    .await
                    .expect("create schema");
            }
            admin.close().await;
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}options=-csearch_path%3D{schema}")
        }
        Err(_) => {
            eprintln!("note: OVASABI_TEST_DATABASE_URL is not set; the nodes share a SQLite file");
            format!("sqlite://{}/shared.sqlite", dir.display())
        }
    }
}

/// Drops what [`shared_database`] created.
async fn drop_database(name: &str, dir: &std::path::Path) {
    if let Ok(url) = std::env::var("OVASABI_TEST_DATABASE_URL") {
        let admin = services::Database::connect(&url)
            .await
            .expect("connect to Postgres");
        if let services::Database::Postgres(pool) = &admin {
            let schema = name.replace('-', "_");
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(pool)
            .await;
        }
        admin.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Three nodes on one Redis prefix and one database.
async fn cluster(test: &str, url: &str) -> (Vec<TestNode>, std::path::PathBuf) {
    cluster_with(test, url, false).await
}

/// Three nodes on one Redis prefix and one database, with sharded pub/sub or not.
async fn cluster_with(test: &str, url: &str, sharded: bool) -> (Vec<TestNode>, std::path::PathBuf) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("ovasabi-test-{test}-{}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let db = shared_database(&prefix, &dir).await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let (url, prefix, db) = (url.to_owned(), prefix.clone(), db.clone());
        nodes.push(
            TestNode::start_with(move |c| {
                c.redis_url = Some(url);
                c.redis_prefix = prefix;
                c.database_url = Some(db);
                c.node_id = Some(format!("node-{name}"));
                c.presence_interval = Duration::from_millis(200);
                c.presence_ttl = Duration::from_secs(1);
                c.redis_sharded = sharded;
            })
            .await,
        );
    }
    for n in &nodes {
        eventually("node ready", || async {
            n.running.as_ref().is_some_and(|r| r.node.is_ready())
        })
        .await;
    }
    (nodes, dir)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

async fn live_everywhere(nodes: &[TestNode], id: &str) {
    for n in nodes {
        eventually("campaign running on every node", || async {
            n.running.as_ref().is_some_and(|r| r.node.has_campaign(id))
        })
        .await;
    }
}

#[tokio::test]
async fn an_event_published_on_c_reaches_a_and_b_with_the_same_seq() {
    fanout_across_nodes(false).await;
}

#[tokio::test]
async fn with_sharded_pub_sub_an_event_published_on_c_reaches_a_and_b() {
    fanout_across_nodes(true).await;
}

async fn fanout_across_nodes(sharded: bool) {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster_with("fanout", &url, sharded).await;
    let id = nodes[0].campaign("x-node", 10.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    let mut on_a = nodes[0].ws(&id, "ua", "").await;
    let mut on_b = nodes[1].ws(&id, "ub", "").await;
    let wa = next(&mut on_a).await;
    let wb = next(&mut on_b).await;
    assert_eq!(wa["node"], "node-a");
    assert_eq!(wb["node"], "node-b");
    assert_eq!(
        wa["epoch"], wb["epoch"],
        "one history epoch for the cluster"
    );
    next_of(&mut on_a, "tick").await;
    next_of(&mut on_b, "tick").await;
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(
            nodes[2]
                .publish(&id, "goal", json!({"i": i}), i % 2 == 0)
                .await,
        );
    }
    for ws in [&mut on_a, &mut on_b] {
        let seqs = common::tick_seqs(ws, |s| s.len() >= 5).await;
        assert_eq!(seqs, published, "same seq on every node, in order");
    }
    // State changes too.
    let (status, _) = nodes[1]
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}/state"),
            Some(json!({"score": 7})),
        )
        .await;
    assert_eq!(status, 200);
    let t = next_of(&mut on_a, "tick").await;
    assert_eq!(t["state"], json!({"score": 7}));
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

#[tokio::test]
async fn a_frequency_change_made_on_b_retimes_a() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("retime", &url).await;
    let id = nodes[0].campaign("retime", 1.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    let mut on_a = nodes[0].ws(&id, "u", "").await;
    next_of(&mut on_a, "tick").await;
    let (status, _) = nodes[1]
        .call(
            "PATCH",
            &format!("/api/campaigns/{id}"),
            Some(json!({"metadata": {"scheduling": {"frequency": 20}}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next_of(&mut on_a, "config").await["frequency_hz"], 20.0);
    eventually("node A measures about 20 Hz", || async {
        let (_, s) = nodes[0]
            .call("GET", &format!("/api/campaigns/{id}/stats"), None)
            .await;
        let publish = nodes[2]
            .call(
                "POST",
                &format!("/api/campaigns/{id}/events"),
                Some(json!({"name": "keepalive"})),
            )
            .await;
        assert_eq!(publish.0, 202);
        s["frequency_hz"] == 20.0 && s["tick_rate_hz"].as_f64().is_some_and(|r| r > 10.0)
    })
    .await;
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

#[tokio::test]
async fn a_campaign_deleted_on_c_closes_sessions_on_a_and_b() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("delete", &url).await;
    let id = nodes[0].campaign("doomed", 5.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    let mut on_a = nodes[0].ws(&id, "ua", "").await;
    let mut on_b = nodes[1].ws(&id, "ub", "").await;
    next_of(&mut on_a, "tick").await;
    next_of(&mut on_b, "tick").await;
    let (status, _) = nodes[2]
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(close_code(&mut on_a).await, 1000);
    assert_eq!(close_code(&mut on_b).await, 1000);
    for n in &nodes {
        eventually("stopped everywhere", || async {
            n.running
                .as_ref()
                .is_some_and(|r| !r.node.has_campaign(&id))
        })
        .await;
    }
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

#[tokio::test]
async fn a_client_leaving_a_and_resuming_on_b_gets_every_event_in_order() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("resume", &url).await;
    let id = nodes[0].campaign("roam", 10.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    let mut on_a = nodes[0].ws(&id, "roamer", "").await;
    let epoch = next(&mut on_a).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    next_of(&mut on_a, "tick").await;
    let first = nodes[2].publish(&id, "before", json!(null), true).await;
    let t = next_of(&mut on_a, "tick").await;
    assert_eq!(t["events"][0]["seq"], first);
    on_a.close(None).await.expect("close");
    let mut missed = Vec::new();
    for _ in 0..6 {
        missed.push(
            nodes[2]
                .publish(&id, "while-away", json!(null), false)
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_b = nodes[1]
        .ws(&id, "roamer", &format!("?since={first}&epoch={epoch}"))
        .await;
    let w = next(&mut on_b).await;
    assert_eq!(w["recovered"], true, "{w}");
    let seqs = common::tick_seqs(&mut on_b, |s| s.len() >= missed.len()).await;
    assert_eq!(seqs, missed);
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

/// A TCP proxy of the test's own between a node and Redis (or Postgres), which can cut every
/// connection (and refuse new ones) until restored.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        Self::start_with(upstream, false).await
    }

    /// With `silent`, connections made while cut are held open and never answered (a host
    /// that stopped answering) rather than closed, until the cut ends.
    async fn start_with(upstream: std::net::SocketAddr, silent: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    if silent {
                        let mut watch = watch.clone();
                        tokio::spawn(async move {
                            let _ = watch.wait_for(|cut| !*cut).await;
                            drop(inbound);
                        });
                    }
                    continue; // dropped (or held): refused while cut
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

#[tokio::test]
async fn a_node_cut_from_redis_keeps_its_clients_and_they_recover_every_event() {
    let Some(url) = redis_url() else { return };
    let upstream: std::net::SocketAddr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .and_then(|h| h.parse().ok())
        .expect("OVASABI_TEST_REDIS_URL as redis://IP:PORT");
    let proxy = Proxy::start(upstream).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("ovasabi-test-outage-{}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let db = shared_database(&prefix, &dir).await;
    let mut nodes = Vec::new();
    for (name, redis) in [
        ("a", format!("redis://{}", proxy.addr)),
        ("b", url.clone()),
        ("c", url.clone()),
    ] {
        let (prefix, db) = (prefix.clone(), db.clone());
        nodes.push(
            TestNode::start_with(move |c| {
                c.redis_url = Some(redis);
                c.redis_prefix = prefix;
                c.database_url = Some(db);
                c.node_id = Some(format!("node-{name}"));
            })
            .await,
        );
    }
    let ready = |n: &TestNode| n.running.as_ref().is_some_and(|r| r.node.is_ready());
    for n in &nodes {
        eventually("ready", || async { ready(n) }).await;
    }
    let id = nodes[1].campaign("outage", 10.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    let mut on_a = nodes[0].ws(&id, "ua", "").await;
    let mut on_b = nodes[1].ws(&id, "ub", "").await;
    let epoch = next(&mut on_a).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    next_of(&mut on_a, "tick").await;
    next_of(&mut on_b, "tick").await;
    let before = nodes[2].publish(&id, "before", json!(null), true).await;
    assert_eq!(next_of(&mut on_a, "tick").await["events"][0]["seq"], before);

    proxy.set_cut(true);
    eventually("node A reports not ready", || async { !ready(&nodes[0]) }).await;
    let readyz = nodes[0]
        .client
        .get(format!("http://{}/readyz", nodes[0].metrics))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 503);
    let mut during = Vec::new();
    for _ in 0..5 {
        during.push(nodes[2].publish(&id, "during", json!(null), false).await);
    }
    // Node A still serves its clients.
    common::send(&mut on_a, r#"{"type":"ping"}"#).await;
    assert_eq!(next_of(&mut on_a, "pong").await["type"], "pong");
    // Publishing through the cut node reaches its own sessions at once, in an epoch of its
    // own (the cluster's seq cannot be known), and is kept for the bus.
    let (status, body) = nodes[0]
        .call(
            "POST",
            &format!("/api/campaigns/{id}/events"),
            Some(json!({"name": "local", "immediate": true})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let local_seq = body["seq"].as_u64().expect("seq");
    let t = next_of(&mut on_a, "tick").await;
    assert_eq!(t["events"][0]["name"], "local", "{t}");
    assert_eq!(t["events"][0]["seq"], local_seq);
    let mut late = nodes[0].ws(&id, "late", "").await;
    let detached_epoch = next(&mut late).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_ne!(
        detached_epoch, epoch,
        "a joiner during the cut sees the detached epoch"
    );

    proxy.set_cut(false);
    eventually("node A ready again", || async { ready(&nodes[0]) }).await;
    // A's sessions are told to resync (1012); B's get A's kept event, with a cluster seq.
    assert_eq!(common::close_code(&mut on_a).await, 1012);
    assert_eq!(common::close_code(&mut late).await, 1012);
    let flushed = loop {
        let t = next_of(&mut on_b, "tick").await;
        if let Some(e) = t["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "local"))
        {
            break e["seq"].as_u64().expect("seq");
        }
    };
    assert!(
        flushed > *during.last().expect("during"),
        "after the cut's events"
    );
    let mut on_a = nodes[0].ws(&id, "ua", "").await;
    assert_eq!(
        next(&mut on_a).await["epoch"],
        epoch.as_str(),
        "back in the cluster's epoch"
    );
    next_of(&mut on_a, "tick").await;
    // Cross-node delivery resumes (the subscription may take a moment to land).
    let start = Instant::now();
    let after = loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "delivery to A did not resume"
        );
        let seq = nodes[2].publish(&id, "after", json!(null), true).await;
        if let Ok(t) =
            tokio::time::timeout(Duration::from_millis(300), next_of(&mut on_a, "tick")).await
            && t["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["seq"] == seq))
        {
            break seq;
        }
    };
    // Reconnecting with `since` recovers everything published during the cut, once each.
    let mut again = nodes[0]
        .ws(&id, "ua", &format!("?since={before}&epoch={epoch}"))
        .await;
    let w = next(&mut again).await;
    assert_eq!(w["recovered"], true, "{w}");
    let seqs = common::tick_seqs(&mut again, |s| s.last() == Some(&after)).await;
    assert_eq!(
        seqs,
        ((before + 1)..=after).collect::<Vec<u64>>(),
        "none lost, none twice"
    );
    assert!(during.iter().all(|s| seqs.contains(s)));
    assert!(
        seqs.contains(&flushed),
        "the event published on A during the cut, once"
    );
    // A resume from the detached epoch cannot be served exactly: it says so, and resyncs.
    let mut stale = nodes[0]
        .ws(
            &id,
            "ua",
            &format!("?since={local_seq}&epoch={detached_epoch}"),
        )
        .await;
    let sw = next(&mut stale).await;
    assert_eq!(sw["recovered"], false, "{sw}");
    assert!(next_of(&mut stale, "tick").await.get("state").is_some());
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

#[tokio::test]
async fn a_database_outage_answers_503_and_the_engine_keeps_serving() {
    let Ok(url) = std::env::var("OVASABI_TEST_DATABASE_URL") else {
        eprintln!(
            "SKIPPED: OVASABI_TEST_DATABASE_URL is not set; the database outage test did not run"
        );
        return;
    };
    // With Redis the campaign record is cached there, so a publish needs no database.
    let redis = std::env::var("OVASABI_TEST_REDIS_URL").ok();
    if redis.is_none() {
        eprintln!(
            "note: OVASABI_TEST_REDIS_URL is not set; the publish during the database outage was not tried"
        );
    }
    // postgres://user@HOST:PORT/db → the same through a proxy of the test's own, which, while
    // cut, closes the pool's connections and holds new ones without answering.
    let after_at = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    let hostport = after_at.split(['/', '?']).next().expect("host:port");
    let upstream: std::net::SocketAddr = hostport
        .parse()
        .expect("OVASABI_TEST_DATABASE_URL with an IP:PORT");
    let proxy = Proxy::start_with(upstream, true).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("ovasabi-test-dbdown-{}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    let direct = shared_database(&name, &dir).await;
    let proxied = direct.replacen(hostport, &proxy.addr.to_string(), 1);
    let (bus, prefix) = (redis.clone(), name.clone());
    let node = TestNode::start_with(move |c| {
        c.database_url = Some(proxied);
        c.redis_url = bus;
        c.redis_prefix = prefix;
        // The default, which the test nodes raise for a loaded machine.
        c.database_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let id = node.campaign("db-down", 5.0, json!({})).await;
    let mut ws = node.ws(&id, "u", "").await;
    next_of(&mut ws, "tick").await;
    if let Some(redis) = &redis {
        // A publish puts the campaign record in the cache (the next ones find it there).
        let client = redis::Client::open(redis.as_str()).expect("redis url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let key = format!("{name}:meta:campaign:{id}");
        eventually("the campaign record is cached", || {
            let (node, id, key, mut conn) = (&node, &id, &key, conn.clone());
            async move {
                node.publish(id, "before-outage", json!(null), false).await;
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .is_ok_and(|n| n == 1)
            }
        })
        .await;
    }

    proxy.set_cut(true);
    let start = Instant::now();
    let (status, body) = node
        .call("GET", &format!("/api/campaigns/{id}"), None)
        .await;
    let took = start.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "answered within database_timeout (1 s), not the old 5 s: {took:?}"
    );
    let outage_seq = if redis.is_some() {
        let start = Instant::now();
        let (status, r) = node
            .call(
                "POST",
                &format!("/api/campaigns/{id}/events"),
                Some(json!({"name": "during-outage", "data": {"n": 1}})),
            )
            .await;
        let took = start.elapsed();
        assert_eq!(status, 202, "{r}");
        assert!(
            took < Duration::from_secs(3),
            "the publish did not wait on the database for its audit row: {took:?}"
        );
        Some(r["seq"].as_u64().expect("seq"))
    } else {
        None
    };
    let readyz = node
        .client
        .get(format!("http://{}/readyz", node.metrics))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 503);
    let checks: serde_json::Value = readyz.json().await.expect("json");
    assert_eq!(checks["checks"]["database"], false);
    // The engine keeps serving its sessions.
    common::send(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_of(&mut ws, "pong").await["type"], "pong");

    proxy.set_cut(false);
    eventually("the API answers again", || async {
        node.call("GET", &format!("/api/campaigns/{id}"), None)
            .await
            .0
            == 200
    })
    .await;
    if let Some(seq) = outage_seq {
        // The audit row of the publish was kept, and is written now that the database is back.
        let path = format!("/api/security/audit?action=campaign.publish&entity_id={id}");
        eventually("the outage publish's audit row is written", || async {
            let (status, page) = node.call("GET", &path, None).await;
            status == 200
                && page["items"].as_array().is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r["after"]
                            == json!({"name": "during-outage", "seq": seq, "immediate": false, "bytes": 7})
                    })
                })
        })
        .await;
    }
    drop(node);
    drop_database(&name, &dir).await;
}

#[tokio::test]
async fn presence_counts_sessions_on_every_node_and_forgets_a_silent_one() {
    let Some(url) = redis_url() else { return };
    let (mut nodes, dir) = cluster("presence", &url).await;
    let id = nodes[0]
        .campaign(
            "crowd",
            5.0,
            json!({"metadata": {"scheduling": {"frequency": 5}, "features": ["presence"]}}),
        )
        .await;
    live_everywhere(&nodes, &id).await;
    let mut a1 = nodes[0].ws(&id, "ann", "").await;
    let _a2 = nodes[0].ws(&id, "bob", "").await;
    let _b1 = nodes[1].ws(&id, "bob", "").await;
    eventually("node C sees 3 sessions of 2 users", || async {
        let (_, s) = nodes[2]
            .call("GET", &format!("/api/campaigns/{id}/stats"), None)
            .await;
        s["connections"]["cluster"] == 3
            && s["users"] == json!(["ann", "bob"])
            && s["connections"]["node"] == 0
    })
    .await;
    // The campaign asked for presence: ticks carry the cluster-wide count.
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no tick carried connections: 3"
        );
        nodes[2].publish(&id, "e", json!(null), true).await;
        if next_of(&mut a1, "tick").await["connections"] == 3 {
            break;
        }
    }
    // Node B stops (as if it crashed: it no longer reports): within the TTL its session is gone.
    let mut b = nodes.remove(1);
    assert!(b.shutdown().await);
    eventually("node B's session forgotten", || async {
        let (_, s) = nodes[1]
            .call("GET", &format!("/api/campaigns/{id}/stats"), None)
            .await;
        s["connections"]["cluster"] == 2
    })
    .await;
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}

/// Nodes subscribed to a campaign's channel (Redis `PUBSUB NUMSUB`).
async fn subscribers(url: &str, channel: &str) -> i64 {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("numsub");
    n
}

#[tokio::test]
async fn a_node_follows_a_campaign_only_while_it_has_sessions_and_catches_up_when_it_starts() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("interest", &url).await;
    let prefix = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("prefix")
        .to_owned();
    let id = nodes[0]
        .campaign("interest", 10.0, json!({"state": {"v": 0}}))
        .await;
    live_everywhere(&nodes, &id).await;
    let channel = format!("{prefix}:c:{id}");
    assert_eq!(
        subscribers(&url, &channel).await,
        0,
        "no sessions anywhere: nobody follows"
    );
    let mut on_a = nodes[0].ws(&id, "ua", "").await;
    next_of(&mut on_a, "tick").await;
    assert_eq!(subscribers(&url, &channel).await, 1, "node A follows");
    // While node B follows nothing, events and a state change go by.
    let mut last = 0;
    for _ in 0..4 {
        last = nodes[2].publish(&id, "e", json!(null), true).await;
    }
    let (status, _) = nodes[2]
        .call(
            "PUT",
            &format!("/api/campaigns/{id}/state"),
            Some(json!({"v": 9})),
        )
        .await;
    assert_eq!(status, 200);
    // A first session on B: B catches up before welcoming it.
    let mut on_b = nodes[1].ws(&id, "ub", "").await;
    let w = next(&mut on_b).await;
    assert_eq!(w["seq"], last, "the welcome is up to date");
    assert_eq!(next_of(&mut on_b, "tick").await["state"], json!({"v": 9}));
    assert_eq!(subscribers(&url, &channel).await, 2);
    let live = nodes[2].publish(&id, "live", json!(null), true).await;
    assert_eq!(next_of(&mut on_b, "tick").await["events"][0]["seq"], live);
    // The last session on B leaves: B stops following.
    on_b.close(None).await.expect("close");
    eventually("node B unsubscribed", || async {
        subscribers(&url, &channel).await == 1
    })
    .await;
    drop(on_a);
    drop(nodes);
    drop_database(&prefix, &dir).await;
}

#[tokio::test]
async fn hot_campaign_metadata_is_cached_in_redis_and_invalidated_on_change() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("cache", &url).await;
    let prefix = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("prefix")
        .to_owned();
    let id = nodes[0].campaign("cached", 5.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    nodes[1].publish(&id, "e", json!(null), false).await;
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{prefix}:meta:campaign:{id}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!(
        (1..=600).contains(&ttl),
        "cached for 10 minutes at most: ttl {ttl}"
    );
    // A change made on another node invalidates it everywhere.
    let (status, _) = nodes[2]
        .call("DELETE", &format!("/api/campaigns/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "invalidated");
    let (status, _) = nodes[1]
        .call(
            "POST",
            &format!("/api/campaigns/{id}/events"),
            Some(json!({"name": "late"})),
        )
        .await;
    assert_eq!(
        status, 409,
        "the node that cached it sees the campaign ended"
    );
    drop(nodes);
    drop_database(&prefix, &dir).await;
}

#[tokio::test]
async fn a_realtime_notification_sent_through_a_reaches_the_users_sessions_on_b_and_c() {
    let Some(url) = redis_url() else { return };
    let (nodes, dir) = cluster("notify", &url).await;
    let (s, t) = nodes[0]
        .call(
            "PUT",
            "/api/notifications/templates/ping/en",
            Some(json!({"category": "transactional", "subject": "Ping {{ n }}", "text": "n = {{ n }}"})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (uid, token) = common::user(&nodes[0], "roamer").await;
    let id = nodes[0].campaign("notify-x", 10.0, json!({})).await;
    live_everywhere(&nodes, &id).await;
    // The same user, signed in, on two nodes other than the one the send goes through.
    let mut on_b = nodes[1].ws(&id, &uid, &format!("?token={token}")).await;
    let mut on_c = nodes[2].ws(&id, &uid, &format!("?token={token}")).await;
    next_of(&mut on_b, "welcome").await;
    next_of(&mut on_c, "welcome").await;
    for n in 0..3 {
        let (s, r) = nodes[0]
            .call(
                "POST",
                "/api/notifications",
                Some(json!({
                    "template": "ping",
                    "variables": {"n": n},
                    "channels": ["realtime", "in_app"],
                    "recipients": {"user_ids": [uid]},
                })),
            )
            .await;
        assert_eq!(s, 201, "{r}");
    }
    // Each session gets each notification once (pushes of one round go out concurrently:
    // their order is not promised).
    for ws in [&mut on_b, &mut on_c] {
        let mut got = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let f = next_of(ws, "notification").await;
            got.insert(
                f["notification"]["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        assert_eq!(got, (0..3).map(|n| format!("Ping {n}")).collect());
    }
    // The inbox (the durable copy) is the same through any node.
    let (s, inbox) = nodes[2]
        .call_as(Some(&token), "GET", "/api/notifications", None)
        .await;
    assert_eq!(s, 200, "{inbox}");
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(3));
    drop(nodes);
    drop_database(
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        &dir,
    )
    .await;
}
