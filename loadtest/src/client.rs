//! The clients: real WebSocket connections, each its own task, recording what arrives.
//! A [`ClientSet`] runs a contiguous range of client indexes (the whole run, or one worker
//! process's share) and is steered through a `watch` channel of [`Phase`]s.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::server::Target;
use crate::stats::{Percentiles, SeqTracker, Sharded, decode, encode};

/// Microseconds since the Unix epoch (the clock the publisher stamps events with).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// How slow clients read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub enum SlowMode {
    /// One frame every so often.
    Every(Duration),
    /// Never read after the handshake.
    Stalled,
}

/// What a set of clients does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    pub targets: Vec<Target>,
    pub campaigns: Vec<String>,
    /// Index of the first client of this set, and how many.
    pub first: usize,
    pub count: usize,
    /// Every client whose index satisfies `index % slow_every == 0` is slow (0 = none).
    pub slow_every: usize,
    pub slow_mode: SlowMode,
    /// New connections per second.
    pub ramp_per_sec: u32,
    pub compress: bool,
    /// Source addresses to spread connections over (empty: the kernel's choice).
    pub source_ips: Vec<Ipv4Addr>,
    pub run_id: String,
    /// An access token sent on every upgrade (`?token=`), for nodes with WebSocket auth on
    /// (an admin's token may watch as any user).
    #[serde(default)]
    pub token: Option<String>,
}

impl ClientSpec {
    pub fn is_slow(&self, index: usize) -> bool {
        self.slow_every > 0 && index.is_multiple_of(self.slow_every)
    }
}

/// The phase the coordinator asks clients to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Run,
    /// Disconnect and reconnect at once with `since` (the number counts storms).
    Storm(u32),
    Stop,
}

/// Counters of one group of clients (fast or slow).
#[derive(Default)]
pub struct Group {
    pub clients: AtomicU64,
    pub frames: AtomicU64,
    pub events: AtomicU64,
    pub missing: AtomicU64,
    pub duplicates: AtomicU64,
}

/// What a client set shares with its clients.
pub struct Shared {
    pub fast: Group,
    pub slow: Group,
    pub latency_fast: Sharded,
    pub latency_slow: Sharded,
    pub connect: Sharded,
    pub reconnect: Sharded,
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub closed_by_server: AtomicU64,
    pub errors: AtomicU64,
}

impl Shared {
    pub fn new() -> Self {
        let shards = 64;
        Self {
            fast: Group::default(),
            slow: Group::default(),
            latency_fast: Sharded::new(shards),
            latency_slow: Sharded::new(shards),
            connect: Sharded::new(shards),
            reconnect: Sharded::new(shards),
            connected: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            connected: self.connected.load(Relaxed),
            failures: self.connect_failures.load(Relaxed),
            frames: self.fast.frames.load(Relaxed) + self.slow.frames.load(Relaxed),
            events: self.fast.events.load(Relaxed) + self.slow.events.load(Relaxed),
        }
    }

    /// Everything measured, in a form that crosses process boundaries.
    pub fn snapshot(&self) -> SetReport {
        let group = |g: &Group, lat: &Sharded| GroupCounts {
            clients: g.clients.load(Relaxed),
            frames: g.frames.load(Relaxed),
            events: g.events.load(Relaxed),
            missing: g.missing.load(Relaxed),
            duplicates: g.duplicates.load(Relaxed),
            latency: encode(&lat.merged()),
        };
        SetReport {
            fast: group(&self.fast, &self.latency_fast),
            slow: group(&self.slow, &self.latency_slow),
            connect: encode(&self.connect.merged()),
            reconnect: encode(&self.reconnect.merged()),
            connected: self.connected.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            closed_by_server: self.closed_by_server.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Live figures for progress display.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub failures: u64,
    pub frames: u64,
    pub events: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Self) {
        self.connected += o.connected;
        self.failures += o.failures;
        self.frames += o.frames;
        self.events += o.events;
    }
}

/// Counters of one group, histograms encoded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupCounts {
    pub clients: u64,
    pub frames: u64,
    pub events: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub latency: String,
}

/// What one client set measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetReport {
    pub fast: GroupCounts,
    pub slow: GroupCounts,
    pub connect: String,
    pub reconnect: String,
    pub connected: u64,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub errors: u64,
}

/// Several sets' reports merged, histograms decoded.
pub struct Merged {
    pub fast: (GroupCounts, hdrhistogram::Histogram<u64>),
    pub slow: (GroupCounts, hdrhistogram::Histogram<u64>),
    pub connect: hdrhistogram::Histogram<u64>,
    pub reconnect: hdrhistogram::Histogram<u64>,
    pub connected: u64,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub errors: u64,
}

impl Merged {
    /// Merges reports.
    ///
    /// # Errors
    /// When a histogram cannot be decoded.
    pub fn of(reports: &[SetReport]) -> anyhow::Result<Self> {
        let mut m = Self {
            fast: (GroupCounts::default(), crate::stats::histogram()),
            slow: (GroupCounts::default(), crate::stats::histogram()),
            connect: crate::stats::histogram(),
            reconnect: crate::stats::histogram(),
            connected: 0,
            connect_failures: 0,
            closed_by_server: 0,
            errors: 0,
        };
        for r in reports {
            for (into, from) in [(&mut m.fast, &r.fast), (&mut m.slow, &r.slow)] {
                into.0.clients += from.clients;
                into.0.frames += from.frames;
                into.0.events += from.events;
                into.0.missing += from.missing;
                into.0.duplicates += from.duplicates;
                let _ = into.1.add(&decode(&from.latency)?);
            }
            let _ = m.connect.add(&decode(&r.connect)?);
            let _ = m.reconnect.add(&decode(&r.reconnect)?);
            m.connected += r.connected;
            m.connect_failures += r.connect_failures;
            m.closed_by_server += r.closed_by_server;
            m.errors += r.errors;
        }
        Ok(m)
    }

    pub fn connect_percentiles(&self) -> Percentiles {
        Percentiles::of(&self.connect)
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    seq: u64,
    #[serde(default)]
    data: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    #[serde(default)]
    t: u64,
}

type Ws = WebSocketStream<TcpStream>;

fn socket_addr(target: &Target) -> anyhow::Result<SocketAddr> {
    let hostport = target
        .http
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let hostport = hostport.replacen("localhost", "127.0.0.1", 1);
    hostport
        .parse()
        .with_context(|| format!("{}: expected http://IP:PORT", target.http))
}

/// First local port of the explicit source ports.
const FIRST_PORT: u16 = 20_000;
/// Local ports used per source address.
const PORTS: usize = 45_000;

/// The source address of client `index`: the addresses take turns, and each client gets its
/// own local port. Binding an explicit port is O(1) in the kernel, where `bind(ip, 0)` searches
/// every port in use and slows connecting to a crawl past a few thousand sockets.
/// `attempt` moves reconnections half the port range away, clear of the ports the first
/// connections left in TIME_WAIT.
fn source_of(spec: &ClientSpec, index: usize, attempt: usize) -> Option<SocketAddr> {
    let n = spec.source_ips.len();
    (n > 0).then(|| {
        let ip = spec.source_ips[index % n];
        let slot = (index / n + attempt * (PORTS / 2)) % PORTS;
        let port = FIRST_PORT + u16::try_from(slot).unwrap_or(0);
        SocketAddr::new(IpAddr::V4(ip), port)
    })
}

async fn connect(url: &str, addr: SocketAddr, source: Option<SocketAddr>) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        // A port left in TIME_WAIT by an earlier run may be bound again.
        socket.set_reuseaddr(true)?;
        if socket.bind(source).is_err() {
            socket.bind(SocketAddr::new(source.ip(), 0))?;
        }
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (ws, _) = client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Runs the set's clients until the phase becomes [`Phase::Stop`]; ramps connections at
/// `ramp_per_sec`. Returns when every client has stopped.
pub async fn run_set(spec: Arc<ClientSpec>, shared: Arc<Shared>, phase: watch::Receiver<Phase>) {
    let per_tick = (spec.ramp_per_sec / 100).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0;
    while i < spec.count {
        ticker.tick().await;
        if *phase.borrow() == Phase::Stop {
            break;
        }
        for _ in 0..per_tick.min(spec.count - i) {
            let index = spec.first + i;
            tasks.spawn(client(index, spec.clone(), shared.clone(), phase.clone()));
            i += 1;
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn client(
    index: usize,
    spec: Arc<ClientSpec>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let target = &spec.targets[index % spec.targets.len()];
    let campaign = &spec.campaigns[index % spec.campaigns.len()];
    let Ok(addr) = socket_addr(target) else {
        shared.connect_failures.fetch_add(1, Relaxed);
        return;
    };
    let slow = spec.is_slow(index);
    let (group, latency) = if slow {
        (&shared.slow, &shared.latency_slow)
    } else {
        (&shared.fast, &shared.latency_fast)
    };
    group.clients.fetch_add(1, Relaxed);
    let user = format!("{}-{index}", spec.run_id);
    let compress = if spec.compress {
        "compress=deflate"
    } else {
        ""
    };
    let mut tracker = SeqTracker::default();
    let mut reconnecting = false;
    let mut attempt = 0;
    loop {
        let source = source_of(&spec, index, attempt);
        attempt += 1;
        let query = match (tracker.last(), compress.is_empty()) {
            (Some(since), true) => format!("?since={since}"),
            (Some(since), false) => format!("?since={since}&{compress}"),
            (None, true) => String::new(),
            (None, false) => format!("?{compress}"),
        };
        let query = match &spec.token {
            Some(t) if query.is_empty() => format!("?token={t}"),
            Some(t) => format!("{query}&token={t}"),
            None => query,
        };
        let url = target.ws_url(campaign, &user, &query);
        let started = Instant::now();
        let ws = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(15), connect(&url, addr, source)) => r,
            _ = phase.wait_for(|p| *p == Phase::Stop) => return,
        };
        let mut ws = match ws {
            Ok(Ok(ws)) => ws,
            _ => {
                shared.connect_failures.fetch_add(1, Relaxed);
                return;
            }
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if reconnecting {
            shared.reconnect.record(index, took)
        } else {
            shared.connect.record(index, took)
        };
        shared.connected.fetch_add(1, Relaxed);
        let storms_seen = match *phase.borrow() {
            Phase::Storm(n) => n,
            _ => 0,
        };
        let outcome = read(
            &mut ws,
            index,
            &spec,
            &shared,
            group,
            latency,
            &mut tracker,
            &mut phase,
            storms_seen,
        )
        .await;
        shared.connected.fetch_sub(1, Relaxed);
        match outcome {
            Outcome::Stop => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            Outcome::Storm => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                reconnecting = true;
            }
            Outcome::ClosedByServer => {
                shared.closed_by_server.fetch_add(1, Relaxed);
                let _ = phase.wait_for(|p| *p == Phase::Stop).await;
                return;
            }
        }
    }
}

enum Outcome {
    Stop,
    Storm,
    ClosedByServer,
}

#[allow(clippy::too_many_arguments)]
async fn read(
    ws: &mut Ws,
    index: usize,
    spec: &ClientSpec,
    shared: &Shared,
    group: &Group,
    latency: &Sharded,
    tracker: &mut SeqTracker,
    phase: &mut watch::Receiver<Phase>,
    storms_seen: u32,
) -> Outcome {
    let slow = spec.is_slow(index);
    let changed = move |p: &Phase| match *p {
        Phase::Stop => true,
        Phase::Storm(n) => n > storms_seen,
        Phase::Run => false,
    };
    loop {
        if slow && spec.slow_mode == SlowMode::Stalled {
            let _ = phase.wait_for(changed).await;
        }
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = phase.wait_for(changed) => None,
        };
        let p = *phase.borrow();
        if changed(&p) {
            return if p == Phase::Stop {
                Outcome::Stop
            } else {
                Outcome::Storm
            };
        }
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => {
                let mut s = String::new();
                if flate2::read::DeflateDecoder::new(&b[..])
                    .read_to_string(&mut s)
                    .is_err()
                {
                    shared.errors.fetch_add(1, Relaxed);
                    continue;
                }
                s
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Outcome::ClosedByServer,
            Some(Ok(_)) => continue,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            shared.errors.fetch_add(1, Relaxed);
            continue;
        };
        group.frames.fetch_add(1, Relaxed);
        match frame.kind.as_str() {
            "welcome" => tracker.start(frame.seq),
            "tick" => {
                let now = now_us();
                let before = (tracker.missing, tracker.duplicates);
                for e in &frame.events {
                    tracker.see(e.seq);
                    if let Some(stamp) = &e.data
                        && stamp.t > 0
                    {
                        latency.record(index, now.saturating_sub(stamp.t));
                    }
                }
                group.events.fetch_add(frame.events.len() as u64, Relaxed);
                group.missing.fetch_add(tracker.missing - before.0, Relaxed);
                group
                    .duplicates
                    .fetch_add(tracker.duplicates - before.1, Relaxed);
            }
            _ => {}
        }
        if slow && let SlowMode::Every(d) = spec.slow_mode {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                _ = phase.wait_for(changed) => {}
            }
        }
    }
}
