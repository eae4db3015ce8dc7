//! [`RedisBroker`]: the bus of a cluster. Every publish runs one Lua script on Redis that
//! assigns the campaign's next `seq` (`INCR`), appends the event to the campaign's bounded
//! history stream (`XADD … MAXLEN ~`), keeps the latest state (`SET`), and `PUBLISH`es on the
//! campaign's channel — atomically, so every node receives one campaign's publications in `seq`
//! order. Lifecycle goes on the control channel. One pub/sub connection per node, subscribed to
//! the control channel and to the channel of every campaign this node runs; it reconnects with
//! capped exponential back-off and jitter, resubscribes, and reports readiness meanwhile.
//!
//! Keys and channels (`{p}` is the configured prefix, `ovasabi` by default):
//! `{p}:c:{campaign}` (channel), `{p}:control` (channel), `{p}:seq:{campaign}`,
//! `{p}:h:{campaign}` (history stream), `{p}:state:{campaign}`, `{p}:epoch:{campaign}`,
//! `{p}:presence:{campaign}` (hash: node → its report and the time it expires).
//! `{p}:statev:{campaign}` (state version). A channel message is
//! `<seq> <state version>\n<publication JSON>`.
//!
//! With `sharded`, campaign channels are shard channels and every per-campaign key above
//! carries the campaign id as a hash tag (`{p}:seq:{<id>}`), see [`super::shard`].
//!
//! A node subscribes to a campaign's channel only while it has local sessions of it; when the
//! first one arrives it reads the campaign's `seq` and state (a [`Snapshot`]) after the
//! subscription is in place, so it misses nothing in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use metrics::{counter, describe_counter, describe_histogram, histogram};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::shard::{Push, ShardConn};
use super::{
    BoxFuture, Broker, BrokerError, Control, Deliver, PRESENCE_USERS, Presence, Publication,
    Snapshot,
};
use crate::frame::now_ms;

const PUBLISH_LUA: &str = r"
local seq
local version = 0
if ARGV[1] == 'event' then
  seq = redis.call('INCR', KEYS[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'm', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
else
  seq = tonumber(redis.call('GET', KEYS[1]) or '0')
  if ARGV[1] == 'state' then
    version = redis.call('INCR', KEYS[5])
    redis.call('SET', KEYS[3], ARGV[2])
  end
end
redis.call(ARGV[5], KEYS[4], seq .. ' ' .. version .. '\n' .. ARGV[2])
return seq
";

/// Where the broker connects and how it keeps history.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`
    pub url: String,
    /// Prefix of every key and channel (lets several clusters, or tests, share one Redis).
    pub prefix: String,
    /// Events kept per campaign in its history stream.
    pub history_size: usize,
    /// The history stream expires this long after the campaign's last event.
    pub history_ttl: Duration,
    /// A node's presence report is forgotten this long after its last heartbeat (so a crashed
    /// node's sessions disappear).
    pub presence_ttl: Duration,
    /// Sharded pub/sub (Redis 7+): campaign channels are shard channels (`SPUBLISH`,
    /// `SSUBSCRIBE`) and every key of a campaign carries its id as a hash tag
    /// (`{p}:seq:{<id>}`), so that a campaign's keys and channel share one slot. Every node of
    /// a cluster must agree on it.
    pub sharded: bool,
}

enum SubCommand {
    /// Subscribe, and say so once Redis confirmed.
    Subscribe(String, Option<tokio::sync::oneshot::Sender<()>>),
    Unsubscribe(String),
}

/// The Redis [`Broker`].
pub struct RedisBroker {
    config: RedisConfig,
    conn: ConnectionManager,
    script: redis::Script,
    sink: OnceLock<Weak<dyn Deliver>>,
    /// Campaigns whose channel this node wants, with how many followers each has
    /// (resubscribed after every reconnection).
    wanted: Mutex<HashMap<String, usize>>,
    commands: mpsc::Sender<SubCommand>,
    ready: AtomicBool,
}

fn unavailable(e: &redis::RedisError) -> BrokerError {
    BrokerError::Unavailable {
        reason: e.to_string(),
    }
}

impl RedisBroker {
    /// Connects (one command connection, one pub/sub connection) and starts the pub/sub task,
    /// which runs until `shutdown`.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis cannot be reached at start.
    pub async fn connect(
        config: RedisConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        describe_counter!(
            "ovasabi_broker_reconnects_total",
            "Reconnections of the Redis pub/sub connection"
        );
        describe_counter!(
            "ovasabi_broker_messages_total",
            "Pub/sub messages, by direction (in/out)"
        );
        describe_histogram!(
            "ovasabi_broker_lag_seconds",
            "Event publish to delivery on this node, through Redis"
        );
        let client = redis::Client::open(config.url.as_str()).map_err(|e| unavailable(&e))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new(client.clone()),
        )
        .await
        .map_err(|_| BrokerError::Unavailable {
            reason: format!("no answer from {} in 5 s", config.url),
        })?
        .map_err(|e| unavailable(&e))?;
        let (tx, rx) = mpsc::channel(1024);
        let broker = Arc::new(Self {
            config,
            conn,
            script: redis::Script::new(PUBLISH_LUA),
            sink: OnceLock::new(),
            wanted: Mutex::new(HashMap::new()),
            commands: tx,
            ready: AtomicBool::new(false),
        });
        tokio::spawn(pubsub_loop(Arc::downgrade(&broker), client, rx, shutdown));
        Ok(broker)
    }

    fn key(&self, kind: &str, campaign: &str) -> String {
        if self.config.sharded {
            format!("{}:{kind}:{{{campaign}}}", self.config.prefix)
        } else {
            format!("{}:{kind}:{campaign}", self.config.prefix)
        }
    }

    fn control_channel(&self) -> String {
        format!("{}:control", self.config.prefix)
    }

    fn campaign_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let id = channel
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(":c:")?;
        if self.config.sharded {
            id.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(id)
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver_message(&self, channel: &str, payload: &[u8]) {
        let Some(sink) = self.sink.get().and_then(Weak::upgrade) else {
            return;
        };
        counter!("ovasabi_broker_messages_total", "direction" => "in").increment(1);
        if channel == self.control_channel() {
            match serde_json::from_slice::<Control>(payload) {
                Ok(c) => sink.control(c),
                Err(e) => tracing::warn!(error = %e, "malformed control message ignored"),
            }
            return;
        }
        let Some(campaign) = self.campaign_of(channel) else {
            return;
        };
        let text = String::from_utf8_lossy(payload);
        let Some((seq, json)) = text.split_once('\n') else {
            tracing::warn!(channel, "malformed campaign message ignored");
            return;
        };
        let (seq, version) = seq.split_once(' ').unwrap_or((seq, "0"));
        let (Ok(seq), Ok(version), Ok(mut publication)) = (
            seq.parse::<u64>(),
            version.parse::<u64>(),
            serde_json::from_str::<Publication>(json),
        ) else {
            tracing::warn!(channel, "malformed campaign message ignored");
            return;
        };
        match &mut publication {
            Publication::Event { seq: s, ts, .. } => {
                *s = seq;
                let lag = (now_ms() - *ts).max(0) as f64 / 1000.0;
                histogram!("ovasabi_broker_lag_seconds").record(lag);
            }
            Publication::Message { seq: s, .. } => *s = seq,
            Publication::State { version: v, .. } => *v = version,
        }
        sink.deliver(campaign, publication);
    }
}

impl Broker for RedisBroker {
    fn attach(&self, sink: Weak<dyn Deliver>) {
        let _ = self.sink.set(sink);
    }

    fn publish<'a>(
        &'a self,
        campaign: &'a str,
        publication: Publication,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let mode = match &publication {
                Publication::Event { .. } => "event",
                Publication::State { .. } => "state",
                Publication::Message { .. } => "message",
            };
            let body = serde_json::to_string(&publication).map_err(BrokerError::Codec)?;
            let ttl = self.config.history_ttl.as_secs().max(1);
            let mut conn = self.conn.clone();
            let seq: u64 = self
                .script
                .key(self.key("seq", campaign))
                .key(self.key("h", campaign))
                .key(self.key("state", campaign))
                .key(self.key("c", campaign))
                .key(self.key("statev", campaign))
                .arg(mode)
                .arg(body)
                .arg(self.config.history_size.max(1))
                .arg(ttl)
                .arg(if self.config.sharded {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                })
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            counter!("ovasabi_broker_messages_total", "direction" => "out").increment(1);
            Ok(seq)
        })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let body = serde_json::to_string(&control).map_err(BrokerError::Codec)?;
            let mut conn = self.conn.clone();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(self.control_channel())
                .arg(body)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            counter!("ovasabi_broker_messages_total", "direction" => "out").increment(1);
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            let key = self.key("epoch", campaign);
            let mut conn = self.conn.clone();
            let (_, epoch): ((), String) = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(super::new_epoch())
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map(|(epoch,): (String,)| ((), epoch))
                .map_err(|e| unavailable(&e))?;
            Ok(epoch)
        })
    }

    fn history<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Vec<Publication>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(self.key("h", campaign))
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(self.config.history_size.max(1))
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            let mut out = Vec::with_capacity(entries.len());
            for (id, fields) in entries {
                let seq = id.split('-').next().and_then(|s| s.parse::<u64>().ok());
                let body = fields
                    .chunks(2)
                    .find(|kv| kv.first().is_some_and(|k| k == "m"))
                    .and_then(|kv| kv.get(1));
                let (Some(seq), Some(body)) = (seq, body) else {
                    continue;
                };
                // Stored as published: the seq is the entry's id.
                if let Ok(mut p @ Publication::Event { .. }) =
                    serde_json::from_str::<Publication>(body)
                {
                    if let Publication::Event { seq: s, .. } = &mut p {
                        *s = seq;
                    }
                    out.push(p);
                }
            }
            Ok(out)
        })
    }

    fn report_presence<'a>(
        &'a self,
        campaign: &'a str,
        node: &'a str,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let ttl_ms = i64::try_from(self.config.presence_ttl.as_millis()).unwrap_or(30_000);
            let report = serde_json::json!({"p": presence, "exp": now_ms() + ttl_ms});
            let key = self.key("presence", campaign);
            let mut conn = self.conn.clone();
            let _: () = redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg(node)
                .arg(report.to_string())
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(())
        })
    }

    fn cluster_presence<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presence>, BrokerError>> {
        Box::pin(async move {
            let key = self.key("presence", campaign);
            let mut conn = self.conn.clone();
            let reports: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            let now = now_ms();
            let mut total = Presence::default();
            let mut users = std::collections::BTreeSet::new();
            let mut expired = Vec::new();
            for (node, report) in reports {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&report) else {
                    continue;
                };
                if v["exp"].as_i64().is_none_or(|exp| exp < now) {
                    expired.push(node);
                    continue;
                }
                if let Ok(p) = serde_json::from_value::<Presence>(v["p"].clone()) {
                    total.connections += p.connections;
                    users.extend(p.users);
                }
            }
            if !expired.is_empty() {
                let _: Result<i64, _> = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(expired)
                    .query_async(&mut conn)
                    .await;
            }
            total.users = users.into_iter().take(PRESENCE_USERS).collect();
            Ok(Some(total))
        })
    }

    fn follow<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, BrokerError>> {
        Box::pin(async move {
            let first = {
                let mut wanted = self.wanted();
                let n = wanted.entry(campaign.to_owned()).or_insert(0);
                *n += 1;
                *n == 1
            };
            if first {
                // Confirmed only by Redis: a dropped acknowledgement (the connection was lost
                // meanwhile) is no confirmation; the campaign stays wanted either way, so the
                // next connection subscribes to it.
                let (ack, confirmed) = tokio::sync::oneshot::channel();
                let subscribed = tokio::time::timeout(Duration::from_secs(5), async {
                    self.commands
                        .send(SubCommand::Subscribe(self.key("c", campaign), Some(ack)))
                        .await
                        .map_err(|_| ())?;
                    confirmed.await.map_err(|_| ())
                })
                .await;
                if !matches!(subscribed, Ok(Ok(()))) {
                    return Err(BrokerError::Unavailable {
                        reason: "subscription not confirmed by Redis".into(),
                    });
                }
            }
            // Read after the subscription: what is published from now on arrives on it.
            let mut conn = self.conn.clone();
            let (seq, state, version): (Option<u64>, Option<String>, Option<u64>) = redis::pipe()
                .atomic()
                .get(self.key("seq", campaign))
                .get(self.key("state", campaign))
                .get(self.key("statev", campaign))
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?;
            // The key holds the state's publication, as published.
            let state = state.and_then(|s| match serde_json::from_str::<Publication>(&s) {
                Ok(Publication::State { state, .. }) => Some(state),
                _ => None,
            });
            Ok(Some(Snapshot {
                seq: seq.unwrap_or(0),
                state,
                state_version: version.unwrap_or(0),
            }))
        })
    }

    fn unfollow(&self, campaign: &str) {
        let last = {
            let mut wanted = self.wanted();
            match wanted.get_mut(campaign) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    wanted.remove(campaign);
                    true
                }
                None => false,
            }
        };
        if last {
            let _ = self
                .commands
                .try_send(SubCommand::Unsubscribe(self.key("c", campaign)));
        }
    }
}

/// Back-off after a failed or lost pub/sub connection: doubles from 100 ms up to 5 s, with up
/// to 50 % of jitter so that nodes do not reconnect in step.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = (now_ms().unsigned_abs() * 7919) % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

/// How a pub/sub session ended.
enum Ended {
    /// Shutdown, or the broker is gone: stop for good.
    Stop,
    /// The connection could not be set up.
    Failed(String),
    /// It was subscribed and serving, then broke.
    Lost(String),
}

/// The pub/sub connection of a node: connects, subscribes to the control channel and every
/// wanted campaign channel, serves until the connection breaks, and starts again after a
/// back-off, reporting readiness all along.
async fn pubsub_loop(
    broker: Weak<RedisBroker>,
    client: redis::Client,
    mut commands: mpsc::Receiver<SubCommand>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    let mut connected_before = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Some(sharded) = broker.upgrade().map(|b| b.config.sharded) else {
            return;
        };
        let mut ready = |b: &RedisBroker, channels: usize| {
            if connected_before {
                counter!("ovasabi_broker_reconnects_total").increment(1);
                tracing::info!(
                    channels,
                    sharded,
                    "Redis pub/sub reconnected and resubscribed"
                );
            }
            connected_before = true;
            attempt = 0;
            b.ready.store(true, Ordering::Relaxed);
        };
        let ended = if sharded {
            sharded_session(&broker, &client, &mut commands, &shutdown, &mut ready).await
        } else {
            classic_session(&broker, &client, &mut commands, &shutdown, &mut ready).await
        };
        if let Some(b) = broker.upgrade() {
            b.ready.store(false, Ordering::Relaxed);
        }
        match ended {
            Ended::Stop => return,
            Ended::Failed(reason) => {
                tracing::warn!(error = %reason, attempt, "cannot connect to Redis pub/sub");
            }
            Ended::Lost(reason) => {
                tracing::warn!(error = %reason, "Redis pub/sub connection lost; reconnecting");
            }
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Every channel a fresh connection subscribes to: the control channel and the wanted
/// campaigns' channels (`None` once the broker is gone).
fn channels(broker: &Weak<RedisBroker>) -> Option<(Vec<String>, String)> {
    let b = broker.upgrade()?;
    let campaigns = b.wanted().keys().map(|c| b.key("c", c)).collect();
    Some((campaigns, b.control_channel()))
}

/// One session on redis-rs's pub/sub connection (classic channels).
async fn classic_session(
    broker: &Weak<RedisBroker>,
    client: &redis::Client,
    commands: &mut mpsc::Receiver<SubCommand>,
    shutdown: &CancellationToken,
    ready: &mut impl FnMut(&RedisBroker, usize),
) -> Ended {
    let pubsub = tokio::select! {
        () = shutdown.cancelled() => return Ended::Stop,
        r = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub()) => r,
    };
    let pubsub = match pubsub {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ended::Failed(e.to_string()),
        Err(_) => return Ended::Failed("no answer in 5 s".to_owned()),
    };
    let (mut sink, mut stream) = pubsub.split();
    let Some((campaigns, control)) = channels(broker) else {
        return Ended::Stop;
    };
    for ch in campaigns.iter().chain([&control]) {
        if let Err(e) = sink.subscribe(ch).await {
            return Ended::Failed(e.to_string());
        }
    }
    match broker.upgrade() {
        Some(b) => ready(&b, campaigns.len() + 1),
        None => return Ended::Stop,
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            cmd = commands.recv() => {
                let r = match cmd {
                    Some(SubCommand::Subscribe(ch, ack)) => {
                        let r = sink.subscribe(ch).await;
                        if r.is_ok() && let Some(ack) = ack {
                            let _ = ack.send(());
                        }
                        r
                    }
                    Some(SubCommand::Unsubscribe(ch)) => sink.unsubscribe(ch).await,
                    None => return Ended::Stop,
                };
                if let Err(e) = r {
                    return Ended::Lost(e.to_string());
                }
            }
            msg = stream.next() => {
                let Some(msg) = msg else { return Ended::Lost("stream ended".to_owned()) };
                let Some(b) = broker.upgrade() else { return Ended::Stop };
                b.deliver_message(msg.get_channel_name(), msg.get_payload_bytes());
            }
        }
    }
}

/// One session on a [`ShardConn`]: `SSUBSCRIBE` for campaign channels, `SUBSCRIBE` for the
/// control channel. A subscription is acknowledged when Redis confirms it.
async fn sharded_session(
    broker: &Weak<RedisBroker>,
    client: &redis::Client,
    commands: &mut mpsc::Receiver<SubCommand>,
    shutdown: &CancellationToken,
    ready: &mut impl FnMut(&RedisBroker, usize),
) -> Ended {
    let conn = tokio::select! {
        () = shutdown.cancelled() => return Ended::Stop,
        r = tokio::time::timeout(
            Duration::from_secs(5),
            ShardConn::connect(client.get_connection_info()),
        ) => r,
    };
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Ended::Failed(e),
        Err(_) => return Ended::Failed("no answer in 5 s".to_owned()),
    };
    let Some((campaigns, control)) = channels(broker) else {
        return Ended::Stop;
    };
    let mut waiting: HashMap<String, Vec<tokio::sync::oneshot::Sender<()>>> = HashMap::new();
    let mut unconfirmed = campaigns.len() + 1;
    let setup = async {
        conn.send(&[b"SUBSCRIBE", control.as_bytes()]).await?;
        for ch in &campaigns {
            conn.send(&[b"SSUBSCRIBE", ch.as_bytes()]).await?;
        }
        // Ready once every subscription is confirmed.
        while unconfirmed > 0 {
            match conn.next().await? {
                Push::Subscribed(_) => unconfirmed -= 1,
                Push::Error(e) => return Err(e),
                // The channels confirmed so far already carry messages: deliver them.
                Push::Message { channel, payload } => {
                    if let Some(b) = broker.upgrade() {
                        b.deliver_message(&channel, &payload);
                    }
                }
                Push::Other => {}
            }
        }
        Ok::<_, String>(())
    };
    let setup = tokio::select! {
        () = shutdown.cancelled() => return Ended::Stop,
        r = tokio::time::timeout(Duration::from_secs(5), setup) => r,
    };
    match setup {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Ended::Failed(e),
        Err(_) => return Ended::Failed("subscriptions not confirmed in 5 s".to_owned()),
    }
    match broker.upgrade() {
        Some(b) => ready(&b, campaigns.len() + 1),
        None => return Ended::Stop,
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            cmd = commands.recv() => {
                let r = match cmd {
                    Some(SubCommand::Subscribe(ch, ack)) => {
                        let r = conn.send(&[b"SSUBSCRIBE", ch.as_bytes()]).await;
                        if let Some(ack) = ack {
                            waiting.entry(ch).or_default().push(ack);
                        }
                        r
                    }
                    Some(SubCommand::Unsubscribe(ch)) => {
                        conn.send(&[b"SUNSUBSCRIBE", ch.as_bytes()]).await
                    }
                    None => return Ended::Stop,
                };
                if let Err(e) = r {
                    return Ended::Lost(e);
                }
            }
            push = conn.next() => match push {
                Ok(Push::Message { channel, payload }) => {
                    let Some(b) = broker.upgrade() else { return Ended::Stop };
                    b.deliver_message(&channel, &payload);
                }
                Ok(Push::Subscribed(ch)) => {
                    for ack in waiting.remove(&ch).unwrap_or_default() {
                        let _ = ack.send(());
                    }
                }
                Ok(Push::Error(e)) => tracing::warn!(error = %e, "Redis refused a pub/sub command"),
                Ok(Push::Other) => {}
                Err(e) => return Ended::Lost(e),
            }
        }
    }
}
