//! Fault-injection harness for `tests/faults.rs`: a Redis server of the test's own, a TCP proxy
//! that can reset or silence a link, counting WebSocket clients that reconnect like a client
//! library, a steady publisher, and the final accounting (issue 9: every event answered 2xx
//! reaches every client exactly once, in order, or the client is told it missed something).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::common::TestNode;

/// Locks a mutex even if a panicking thread poisoned it (the data is a log; it stays readable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fault tests run one at a time: each one loads both cores with hundreds of clients.
/// (An async lock: each test has its own runtime, and a panicking test releases it.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    // `FAULTS_LOG=warn` (any tracing filter) prints the nodes' logs, for debugging.
    if let Ok(filter) = std::env::var("FAULTS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    SERIAL.lock().await
}

/// A name no other test run uses (pid + nanoseconds).
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("ovasabi-fault-{test}-{}-{nanos}", std::process::id())
}

/// A cheap pseudo-random number (jitter only; not for anything that must be unpredictable).
pub fn jitter(max_ms: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x % max_ms.max(1)
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` child process on a free 127.0.0.1 port, with no persistence: killed,
/// restarted empty, frozen (SIGSTOP) and thawed (SIGCONT) on demand; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one, or `None` (after printing SKIPPED) when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("SKIPPED: redis-server not found; the {test} fault test did not run");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(unique(&format!("redis-{test}")));
        std::fs::create_dir_all(&dir).expect("create the Redis working directory");
        let mut server = Self {
            port,
            child: None,
            dir,
        };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !ping(self.addr()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// SIGKILL, and waits for the process to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with no data.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing.
    pub fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.pid(), "-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill(); // SIGKILL ends a stopped process too
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// A port nothing listens on right now (bound on :0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct ProxyCtl {
    silent: bool,
    /// Bumped by `reset`: every connection opened before aborts with an RST.
    resets: u64,
}

/// A TCP proxy to `upstream` (one node's link to Redis) that passes bytes, or resets every
/// open connection, or goes silent (connections stay open, no byte moves either way).
pub struct FaultProxy {
    pub addr: SocketAddr,
    ctl: watch::Sender<ProxyCtl>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (ctl, watch) = watch::channel(ProxyCtl::default());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return; // upstream down: the client sees its connection closed
                    };
                    pump(inbound, outbound, watch).await;
                });
            }
        });
        Self { addr, ctl, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Aborts every open connection with an RST; new ones are let through.
    pub fn reset(&self) {
        self.ctl.send_modify(|c| c.resets += 1);
    }

    /// Stops forwarding in both directions, keeping the connections open.
    pub fn silence(&self) {
        self.ctl.send_modify(|c| c.silent = true);
    }

    /// Forwards again (what was held in the socket buffers flows on).
    pub fn restore(&self) {
        self.ctl.send_modify(|c| c.silent = false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(mut a: TcpStream, mut b: TcpStream, mut ctl: watch::Receiver<ProxyCtl>) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let born = ctl.borrow().resets;
    let (mut ba, mut bb) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let now = *ctl.borrow_and_update();
        if now.resets != born {
            rst(a);
            rst(b);
            return;
        }
        if now.silent {
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            r = a.read(&mut ba) => match r {
                Ok(n) if n > 0 => if b.write_all(&ba[..n]).await.is_err() { return },
                _ => return,
            },
            r = b.read(&mut bb) => match r {
                Ok(n) if n > 0 => if a.write_all(&bb[..n]).await.is_err() { return },
                _ => return,
            },
            changed = ctl.changed() => if changed.is_err() { return },
        }
    }
}

/// Closes with an RST rather than a FIN (SO_LINGER 0).
#[allow(deprecated)] // zero linger never blocks the thread, which is why tokio deprecated it
fn rst(s: TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// Nodes on one test-owned Redis (each through its own URL: direct or a proxy), one key
/// prefix and one SQLite file.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub prefix: String,
    pub dir: PathBuf,
}

impl Cluster {
    pub async fn start(test: &str, redis_urls: &[String]) -> Self {
        let prefix = unique(test);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let db = format!("sqlite://{}/shared.sqlite", dir.display());
        let mut nodes = Vec::new();
        for (i, url) in redis_urls.iter().enumerate() {
            let (url, prefix, db) = (url.clone(), prefix.clone(), db.clone());
            let name = node_name(i);
            nodes.push(
                TestNode::start_with(move |c| {
                    c.redis_url = Some(url);
                    c.redis_prefix = prefix;
                    c.database_url = Some(db);
                    c.node_id = Some(name);
                })
                .await,
            );
        }
        for n in &nodes {
            eventually("node ready", Duration::from_secs(10), || async {
                n.running.as_ref().is_some_and(|r| r.node.is_ready())
            })
            .await;
        }
        Self { nodes, prefix, dir }
    }

    /// Creates an active campaign on the first node and waits until every node runs it.
    pub async fn campaign(&self, slug: &str) -> String {
        let id = self.nodes[0].campaign(slug, 10.0, json!({})).await;
        for n in &self.nodes {
            eventually(
                "campaign running on every node",
                Duration::from_secs(10),
                || async { n.running.as_ref().is_some_and(|r| r.node.has_campaign(&id)) },
            )
            .await;
        }
        id
    }

    /// Where the publisher sends: every node's base URL and admin token.
    pub fn targets(&self) -> Vec<Target> {
        self.nodes.iter().map(Target::of).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn node_name(i: usize) -> String {
    format!(
        "node-{}",
        char::from(b'a' + u8::try_from(i % 26).unwrap_or(0))
    )
}

pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// `/readyz` on a metrics address: `Some(status)`, or `None` when it did not answer in 1 s.
pub async fn readyz(client: &reqwest::Client, metrics: SocketAddr) -> Option<u16> {
    client
        .get(format!("http://{metrics}/readyz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

// ---------------------------------------------------------------------------------------------
// Counting clients
// ---------------------------------------------------------------------------------------------

/// Something a client was told that tells it it may have missed events.
#[derive(Clone, Debug)]
pub enum Signal {
    /// A resume answered `recovered: false`.
    NotRecovered,
    /// Consecutive events `from` → `to` with `to > from + 1`, on a connection whose welcome
    /// was in `epoch`.
    Gap { epoch: String, from: u64, to: u64 },
    /// An event whose seq is not after the previous one's.
    Backwards { from: u64, to: u64 },
    /// A welcome in another epoch than the one of the client's last seq (only for clients
    /// that track epochs).
    EpochChange,
}

#[derive(Clone, Debug)]
pub struct Welcome {
    pub at: Instant,
    pub conn: u32,
    pub node: String,
    pub seq: u64,
    pub epoch: String,
    pub recovered: Option<bool>,
    /// What the client resumed with.
    pub since: Option<u64>,
    pub since_epoch: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub seq: u64,
    /// The epoch of the welcome of the connection it came on.
    pub epoch: String,
    pub conn: u32,
    pub at: Instant,
}

#[derive(Default, Debug)]
pub struct ClientLog {
    pub user: String,
    pub home: usize,
    pub first_welcome: Option<Instant>,
    pub welcomes: Vec<Welcome>,
    pub deliveries: Vec<Delivery>,
    pub signals: Vec<(Instant, Signal)>,
    pub closes: Vec<(Instant, u16, String)>,
    pub connect_failures: u32,
    /// `recovered: true` in another epoch than the one of the seq the client resumed from.
    pub false_recoveries: u32,
    pub stopped: bool,
}

impl ClientLog {
    pub fn has(&self, id: &str) -> bool {
        self.deliveries.iter().any(|d| d.id == id)
    }
}

#[derive(Clone)]
pub struct ClientOptions {
    /// Send `epoch` along with `since` on resume (and count an epoch change as a signal).
    pub send_epoch: bool,
    /// While false, a disconnected client stays offline (a device out of coverage).
    pub gate: Option<watch::Receiver<bool>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            send_epoch: true,
            gate: None,
        }
    }
}

/// A WebSocket client that keeps its identity across reconnects and records everything.
pub struct Client {
    pub log: Arc<Mutex<ClientLog>>,
    /// Where it connects: its home node first; on a failed connect, the next one.
    pub addrs: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

/// Clients of one test.
pub struct Crowd {
    pub clients: Vec<Client>,
    stop: CancellationToken,
}

impl Crowd {
    pub fn new() -> Self {
        Self {
            clients: Vec::new(),
            stop: CancellationToken::new(),
        }
    }

    /// `n` clients whose home is `addrs[0]` (user ids `<tag>-<i>`).
    pub fn spawn(
        &mut self,
        campaign: &str,
        tag: &str,
        home: usize,
        addrs: &[SocketAddr],
        n: usize,
        options: &ClientOptions,
    ) {
        for i in 0..n {
            let log = Arc::new(Mutex::new(ClientLog {
                user: format!("{tag}-{i}"),
                home,
                ..ClientLog::default()
            }));
            let addrs = Arc::new(Mutex::new(addrs.to_vec()));
            let task = tokio::spawn(run_client(
                campaign.to_owned(),
                log.clone(),
                addrs.clone(),
                options.clone(),
                self.stop.clone(),
            ));
            self.clients.push(Client { log, addrs, task });
        }
    }

    /// Waits until every client has had its first welcome and the tick after it.
    pub async fn all_welcomed(&self, within: Duration) {
        eventually("every client welcomed", within, || async {
            self.clients
                .iter()
                .all(|c| lock(&c.log).first_welcome.is_some())
        })
        .await;
    }

    /// Waits (at most `within`) until every client still running has event `id`; returns
    /// how many do not.
    pub async fn wait_for(&self, id: &str, within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let missing = self
                .clients
                .iter()
                .filter(|c| {
                    let l = lock(&c.log);
                    !l.stopped && !l.has(id)
                })
                .count();
            if missing == 0 || start.elapsed() >= within {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for c in self.clients {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.task).await;
        }
    }
}

async fn run_client(
    campaign: String,
    log: Arc<Mutex<ClientLog>>,
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    mut options: ClientOptions,
    stop: CancellationToken,
) {
    let user = lock(&log).user.clone();
    // Where the client is: the last seq it saw and the epoch of the welcome it saw it in.
    let mut pos: Option<(u64, String)> = None;
    let mut target = 0usize;
    let mut conn = 0u32;
    let mut failures = 0u32;
    // A small spread so that the crowd does not connect in one instant.
    tokio::time::sleep(Duration::from_millis(jitter(300))).await;
    loop {
        if pos.is_some()
            && let Some(gate) = options.gate.as_mut()
        {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = gate.wait_for(|open| *open) => {}
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let addr = {
            let a = lock(&addrs);
            a[target % a.len()]
        };
        let query = match &pos {
            Some((s, e)) if options.send_epoch => format!("?since={s}&epoch={e}"),
            Some((s, _)) => format!("?since={s}"),
            None => String::new(),
        };
        let url = format!("ws://{addr}/ws/{campaign}/{user}{query}");
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)) => r,
        };
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            _ => {
                // Refused, 503, timed out: back off, then try the next node.
                lock(&log).connect_failures += 1;
                failures += 1;
                target += 1;
                let base = 100u64 << failures.min(4);
                let delay = base / 2 + jitter(base / 2 + 1);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(delay.min(1_000))) => {}
                }
                continue;
            }
        };
        failures = 0;
        conn += 1;
        let resumed_with = pos.clone();
        // The epoch of this connection's welcome, and the last seq seen on it (for gaps).
        let mut epoch: Option<String> = None;
        let mut last: Option<u64> = None;
        let code = loop {
            let m = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "test over".into(),
                    }))).await;
                    lock(&log).stopped = true;
                    return;
                }
                m = ws.next() => m,
            };
            let text = match m {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Binary(b))) => crate::common::inflate(&b),
                Some(Ok(Message::Close(f))) => {
                    break f.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break (1006, String::new()),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let now = Instant::now();
            let mut l = lock(&log);
            match v["type"].as_str() {
                Some("welcome") => {
                    let w = Welcome {
                        at: now,
                        conn,
                        node: v["node"].as_str().unwrap_or_default().to_owned(),
                        seq: v["seq"].as_u64().unwrap_or(0),
                        epoch: v["epoch"].as_str().unwrap_or_default().to_owned(),
                        recovered: v["recovered"].as_bool(),
                        since: resumed_with.as_ref().map(|p| p.0),
                        since_epoch: resumed_with.as_ref().map(|p| p.1.clone()),
                    };
                    l.first_welcome.get_or_insert(now);
                    let other_epoch = resumed_with.as_ref().is_some_and(|p| p.1 != w.epoch);
                    if other_epoch && options.send_epoch {
                        l.signals.push((now, Signal::EpochChange));
                    }
                    match w.recovered {
                        Some(true) => {
                            if other_epoch {
                                l.false_recoveries += 1;
                            }
                            // The missed events follow: continuity from `since`.
                            last = resumed_with.as_ref().map(|p| p.0);
                        }
                        Some(false) => {
                            l.signals.push((now, Signal::NotRecovered));
                            last = Some(w.seq);
                            pos = Some((w.seq, w.epoch.clone()));
                        }
                        None => {
                            last = Some(w.seq);
                            pos = Some((w.seq, w.epoch.clone()));
                        }
                    }
                    epoch = Some(w.epoch.clone());
                    l.welcomes.push(w);
                }
                Some("tick") => {
                    let Some(ep) = epoch.clone() else { continue };
                    for e in v["events"].as_array().into_iter().flatten() {
                        let Some(seq) = e["seq"].as_u64() else {
                            continue;
                        };
                        if let Some(prev) = last {
                            if seq <= prev {
                                l.signals.push((
                                    now,
                                    Signal::Backwards {
                                        from: prev,
                                        to: seq,
                                    },
                                ));
                            } else if seq > prev + 1 {
                                l.signals.push((
                                    now,
                                    Signal::Gap {
                                        epoch: ep.clone(),
                                        from: prev,
                                        to: seq,
                                    },
                                ));
                            }
                        }
                        last = Some(seq);
                        pos = Some((seq, ep.clone()));
                        if let Some(id) = e["data"]["id"].as_str() {
                            l.deliveries.push(Delivery {
                                id: id.to_owned(),
                                seq,
                                epoch: ep.clone(),
                                conn,
                                at: now,
                            });
                        }
                    }
                }
                _ => {}
            }
        };
        lock(&log).closes.push((Instant::now(), code.0, code.1));
        if code.0 == 1000 || code.0 == 4404 {
            lock(&log).stopped = true;
            return;
        }
        // Like a client library: back after a short jittered delay, to the same node.
        let delay = 100 + jitter(500);
        tokio::select! {
            _ = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
    }
    lock(&log).stopped = true;
}

// ---------------------------------------------------------------------------------------------
// Publisher
// ---------------------------------------------------------------------------------------------

/// One node's REST endpoint with the admin token.
#[derive(Clone)]
pub struct Target {
    pub base: String,
    pub token: String,
}

impl Target {
    pub fn of(node: &TestNode) -> Self {
        Self {
            base: format!("http://{}", node.http),
            token: node.token.clone().expect("a dev node has an admin token"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Published {
    pub id: String,
    pub target: usize,
    pub sent: Instant,
    pub answered: Option<Instant>,
    pub status: Option<u16>,
    pub seq: Option<u64>,
}

impl Published {
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Publishes events `{"id": ...}` with unique ids, recording every answer.
#[derive(Clone)]
pub struct Publisher {
    pub campaign: String,
    pub targets: Arc<Mutex<Vec<Target>>>,
    pub log: Arc<Mutex<Vec<Published>>>,
    client: reqwest::Client,
    next: Arc<AtomicU64>,
}

impl Publisher {
    pub fn new(campaign: &str, targets: Vec<Target>) -> Self {
        Self {
            campaign: campaign.to_owned(),
            targets: Arc::new(Mutex::new(targets)),
            log: Arc::new(Mutex::new(Vec::new())),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client"),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes one event to target `t` (round-robin when `None`); returns its record.
    pub async fn publish(&self, t: Option<usize>, tag: &str) -> Published {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{tag}-{n}");
        let (target, t) = {
            let ts = lock(&self.targets);
            let i = t.unwrap_or(usize::try_from(n).unwrap_or(0)) % ts.len();
            (ts[i].clone(), i)
        };
        let sent = Instant::now();
        let res = self
            .client
            .post(format!(
                "{}/api/campaigns/{}/events",
                target.base, self.campaign
            ))
            .bearer_auth(&target.token)
            .timeout(Duration::from_secs(10))
            .json(&json!({"name": "e", "data": {"id": id}, "immediate": true}))
            .send()
            .await;
        let (status, seq) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (Some(status), body["seq"].as_u64())
            }
            Err(_) => (None, None),
        };
        let p = Published {
            id,
            target: t,
            sent,
            answered: status.map(|_| Instant::now()),
            status,
            seq,
        };
        lock(&self.log).push(p.clone());
        p
    }

    /// `n` events as fast as `concurrency` requests at a time allow (to push the seq up).
    pub async fn burst(&self, n: usize, concurrency: usize) {
        let concurrency = concurrency.max(1);
        let mut tasks = Vec::new();
        for k in 0..concurrency {
            let me = self.clone();
            let per = n / concurrency + usize::from(k < n % concurrency);
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    me.publish(None, "pre").await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("burst task");
        }
    }

    /// Publishes at `rate` per second, round-robin over the targets, each request on its
    /// own task (a hanging node does not slow the others), until the returned token is
    /// cancelled.
    pub fn steady(&self, rate: f64) -> CancellationToken {
        let stop = CancellationToken::new();
        let me = self.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = every.tick() => {}
                }
                let me = me.clone();
                tokio::spawn(async move {
                    me.publish(None, "ev").await;
                });
            }
        });
        stop
    }

    /// Publishes a marker (retrying until some node accepts it, up to `within`).
    pub async fn marker(&self, within: Duration) -> Option<Published> {
        let start = Instant::now();
        while start.elapsed() < within {
            let p = self.publish(None, "marker").await;
            if p.accepted() {
                return Some(p);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    pub fn records(&self) -> Vec<Published> {
        lock(&self.log).clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Summary {
    pub test: String,
    pub clients: usize,
    pub attempted: usize,
    pub accepted: usize,
    /// (client, accepted event after its first welcome) pairs.
    pub owed: usize,
    pub delivered: usize,
    pub lost_silent: usize,
    pub lost_signalled: usize,
    /// (client, event) pairs delivered more than once (accepted or not).
    pub duplicated: usize,
    /// (epoch, seq) pairs seen with different event ids by different clients.
    pub seq_conflicts: usize,
    pub false_recoveries: u32,
    pub gaps: usize,
    pub backwards: usize,
    pub not_recovered: usize,
    pub closes_1012: usize,
    pub max_1012_per_client: usize,
    pub clients_without_marker: usize,
    pub recovery: Option<Duration>,
    pub examples: Vec<String>,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "SUMMARY {}: clients {}, published {} (accepted {}), owed {}, delivered {}, lost silent {}, \
             lost signalled {}, duplicated {}, seq conflicts {}, false recoveries {}, gaps {}, \
             backwards {}, recovered:false {}, 1012 closes {} (max {}/client), without marker {}, \
             recovery time {}",
            self.test,
            self.clients,
            self.attempted,
            self.accepted,
            self.owed,
            self.delivered,
            self.lost_silent,
            self.lost_signalled,
            self.duplicated,
            self.seq_conflicts,
            self.false_recoveries,
            self.gaps,
            self.backwards,
            self.not_recovered,
            self.closes_1012,
            self.max_1012_per_client,
            self.clients_without_marker,
            self.recovery
                .map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        )
    }
}

/// Counts, for every client and every accepted event published after its first welcome:
/// delivered once, more than once, or not at all, with a signal at or after the moment the
/// event was sent, or without one. Signals: a `recovered: false` welcome, a seq going
/// backwards, an epoch change (epoch-aware clients) — each tells the client to resync
/// everything — or a gap whose seq range holds the event's seq (as other clients saw it in
/// the gap's epoch, else as its publish answer said). A client that got some other event
/// under the missing one's seq has no gap there: that loss counts as silent. `fault_end` is where the recovery time starts.
pub fn account(
    test: &str,
    crowd: &Crowd,
    published: &[Published],
    fault_end: Option<Instant>,
    without_marker: usize,
) -> Summary {
    let mut s = Summary {
        test: test.to_owned(),
        clients: crowd.clients.len(),
        attempted: published.len(),
        accepted: published.iter().filter(|p| p.accepted()).count(),
        clients_without_marker: without_marker,
        ..Summary::default()
    };
    let accepted: Vec<&Published> = published.iter().filter(|p| p.accepted()).collect();
    let mut by_seq: HashMap<(String, u64), HashSet<String>> = HashMap::new();
    let logs: Vec<MutexGuard<'_, ClientLog>> = crowd.clients.iter().map(|c| lock(&c.log)).collect();
    // Where each event was seen, by anyone: a gap covers an event when the event's seq (as
    // other clients saw it in the gap's epoch, else as its publish answer said) is inside it.
    let mut seen: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    for l in &logs {
        for d in &l.deliveries {
            seen.entry(d.id.as_str())
                .or_default()
                .push((d.epoch.as_str(), d.seq));
        }
    }
    let covers = |l: &ClientLog, p: &Published| {
        l.signals.iter().any(|(at, sig)| {
            *at >= p.sent
                && match sig {
                    Signal::Gap { epoch, from, to } => {
                        let mut seqs = seen
                            .get(p.id.as_str())
                            .into_iter()
                            .flatten()
                            .filter(|(e, _)| e == epoch)
                            .map(|(_, s)| *s)
                            .peekable();
                        if seqs.peek().is_none() {
                            p.seq.is_some_and(|s| *from < s && s < *to)
                        } else {
                            seqs.any(|s| *from < s && s < *to)
                        }
                    }
                    Signal::NotRecovered | Signal::EpochChange | Signal::Backwards { .. } => true,
                }
        })
    };
    for l in &logs {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for d in &l.deliveries {
            *count.entry(d.id.as_str()).or_default() += 1;
            by_seq
                .entry((d.epoch.clone(), d.seq))
                .or_default()
                .insert(d.id.clone());
        }
        for (id, n) in &count {
            if *n > 1 {
                s.duplicated += 1;
                if s.examples.len() < 12 {
                    let seqs: Vec<String> = l
                        .deliveries
                        .iter()
                        .filter(|d| d.id == *id)
                        .map(|d| format!("seq {} conn {} epoch {}", d.seq, d.conn, d.epoch))
                        .collect();
                    s.examples.push(format!(
                        "DUPLICATE {} got {id} {n}x: {}",
                        l.user,
                        seqs.join("; ")
                    ));
                }
            }
        }
        for (_, sig) in &l.signals {
            match sig {
                Signal::Gap { .. } => s.gaps += 1,
                Signal::Backwards { .. } => s.backwards += 1,
                Signal::NotRecovered => s.not_recovered += 1,
                Signal::EpochChange => {}
            }
        }
        s.false_recoveries += l.false_recoveries;
        let n1012 = l.closes.iter().filter(|c| c.1 == 1012).count();
        s.closes_1012 += n1012;
        s.max_1012_per_client = s.max_1012_per_client.max(n1012);
        let Some(first) = l.first_welcome else {
            continue;
        };
        for p in accepted.iter().filter(|p| p.sent > first) {
            s.owed += 1;
            match count.get(p.id.as_str()) {
                Some(_) => s.delivered += 1,
                None if covers(l, p) => s.lost_signalled += 1,
                None => {
                    s.lost_silent += 1;
                    if s.examples.len() < 12 {
                        s.examples.push(format!(
                            "LOST SILENT {} (home {}): {} (publish seq {:?}, sent +{:.2} s) | \
                             welcomes: {} | closes: {:?}",
                            l.user,
                            node_name(l.home),
                            p.id,
                            p.seq,
                            p.sent.duration_since(first).as_secs_f64(),
                            l.welcomes
                                .iter()
                                .map(|w| format!(
                                    "[conn {} {} seq {} epoch {} since {:?}/{:?} recovered {:?} +{:.2} s]",
                                    w.conn,
                                    w.node,
                                    w.seq,
                                    w.epoch,
                                    w.since,
                                    w.since_epoch,
                                    w.recovered,
                                    w.at.duration_since(first).as_secs_f64()
                                ))
                                .collect::<Vec<_>>()
                                .join(" "),
                            l.closes.iter().map(|c| c.1).collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
    }
    s.seq_conflicts = by_seq.values().filter(|ids| ids.len() > 1).count();
    let mut conflicts: BTreeMap<u64, String> = BTreeMap::new();
    for ((epoch, seq), ids) in &by_seq {
        if ids.len() > 1 && conflicts.len() < 3 {
            let mut ids: Vec<&String> = ids.iter().collect();
            ids.sort();
            conflicts.insert(
                *seq,
                format!("SEQ CONFLICT epoch {epoch} seq {seq}: ids {ids:?}"),
            );
        }
    }
    s.examples.extend(conflicts.into_values());
    if let Some(end) = fault_end {
        let mut after: Vec<&&Published> = accepted.iter().filter(|p| p.sent >= end).collect();
        after.sort_by_key(|p| p.sent);
        s.recovery = after.iter().find_map(|p| {
            let mut latest = end;
            for l in &logs {
                if l.first_welcome.is_none_or(|f| f > p.sent) {
                    continue;
                }
                let at = l.deliveries.iter().find(|d| d.id == p.id)?.at;
                latest = latest.max(at);
            }
            Some(latest.duration_since(end))
        });
    }
    s
}

/// Prints the summary and its examples; returns the invariant failures of issue 9
/// (lost silent, duplicated).
pub fn report(s: &Summary) -> Vec<String> {
    println!("{}", s.line());
    for e in &s.examples {
        println!("  {e}");
    }
    let mut failures = Vec::new();
    if s.lost_silent > 0 {
        failures.push(format!("{} events lost silently", s.lost_silent));
    }
    if s.duplicated > 0 {
        failures.push(format!("{} events delivered more than once", s.duplicated));
    }
    failures
}

/// With `FAULTS_TRACE=<user id>` (e.g. `node-a-0`), prints that client's timeline: welcomes,
/// events, signals and closes, in order (seconds after its first welcome).
pub fn trace(crowd: &Crowd) {
    let Ok(user) = std::env::var("FAULTS_TRACE") else {
        return;
    };
    for c in &crowd.clients {
        let l = lock(&c.log);
        if l.user != user {
            continue;
        }
        let Some(t0) = l.first_welcome else { continue };
        let t = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
        let mut lines: Vec<(Instant, String)> = Vec::new();
        for w in &l.welcomes {
            lines.push((w.at, format!("welcome {w:?}")));
        }
        for d in &l.deliveries {
            lines.push((
                d.at,
                format!(
                    "event {} seq {} epoch {} conn {}",
                    d.id, d.seq, d.epoch, d.conn
                ),
            ));
        }
        for (at, sig) in &l.signals {
            lines.push((*at, format!("signal {sig:?}")));
        }
        for (at, code, reason) in &l.closes {
            lines.push((*at, format!("close {code} {reason:?}")));
        }
        lines.sort_by_key(|(at, _)| *at);
        println!("TRACE {user}:");
        for (at, line) in lines {
            println!("  {:8.3} {line}", t(at));
        }
    }
}
