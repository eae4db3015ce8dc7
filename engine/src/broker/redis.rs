//! [`RedisBroker`]: the bus of a cluster. Every publish runs one Lua script on Redis that
//! assigns the campaign's next `seq` (`INCR`), appends the event to the campaign's bounded
//! history stream (`XADD … MAXLEN ~`), keeps the latest state (`SET`), and `PUBLISH`es on the
//! campaign's channel — atomically, so every node receives one campaign's publications in `seq`
//! order. Lifecycle goes on the control channel, notifications (a push to every session of one
//! user, on any campaign) on the notify channel. One pub/sub connection per node, subscribed
//! to the control and notify channels and to the channel of every campaign this node runs; it
//! reconnects with capped exponential back-off and jitter, resubscribes, and reports readiness
//! meanwhile.
//!
//! Keys and channels (`{p}` is the configured prefix, `ovasabi` by default):
//! `{p}:c:{campaign}` (channel), `{p}:control` (channel), `{p}:notify` (channel: notifications,
//! `{"user":...,"payload":...}`, at most once), `{p}:hb:{instance}` (channel: the node's own
//! heartbeat), `{p}:seq:{campaign}`, `{p}:h:{campaign}` (history stream),
//! `{p}:state:{campaign}`, `{p}:epoch:{campaign}`, `{p}:presence:{campaign}` (hash: node →
//! its report and the time it expires), `{p}:statev:{campaign}` (state version),
//! `{p}:pid:{campaign}` (hash: the latest publish ids applied, per node process, so that a
//! retried publish is applied once), `{p}:taint:{campaign}` (list of [`Taint`]s). A channel
//! message is `<seq> <state version> <epoch> <publish-id slot> <publish id>\n<publication JSON>`.
//!
//! Faults: the script refuses a publish whose epoch is not the campaign's epoch key (Redis
//! lost its keys, or another node began a new epoch): the broker then begins a new epoch whose
//! `seq` continues above every number handed out before (the node's last known `seq`, and the
//! wall clock in microseconds, whichever is higher) and publishes again. A watchdog pings the
//! command connection and sends the node's pub/sub connection a heartbeat through Redis every
//! 250 ms: readiness is false once either has not answered for 1.5 s, and a pub/sub link whose
//! heartbeats stop is reconnected. Every call is bounded by [`RedisConfig::timeout`].
//!
//! With `sharded`, campaign channels are shard channels and every per-campaign key above
//! carries the campaign id as a hash tag (`{p}:seq:{<id>}`), see [`super::shard`].
//!
//! A node subscribes to a campaign's channel only while it has local sessions of it; when the
//! first one arrives it reads the campaign's `seq` and state (a [`Snapshot`]) after the
//! subscription is in place, so it misses nothing in between.

use std::collections::HashMap;
use std::future::Future;
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
    Recovery, Snapshot, Taint,
};
use crate::frame::{now_ms, now_us};

/// The per-campaign keys and channels, `{p}:{kind}:{campaign}` (the campaign in braces, a hash
/// tag, with `sharded`): the only names the broker builds them from, and what the knowledge
/// graph lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Seq,
    History,
    State,
    Channel,
    StateVersion,
    Epoch,
    PublishIds,
    Presence,
    Taint,
}

impl Key {
    /// Every per-campaign key.
    pub const ALL: [Key; 9] = [
        Key::Seq,
        Key::History,
        Key::State,
        Key::Channel,
        Key::StateVersion,
        Key::Epoch,
        Key::PublishIds,
        Key::Presence,
        Key::Taint,
    ];

    /// Its `{kind}` in the name.
    pub const fn kind(self) -> &'static str {
        match self {
            Key::Seq => "seq",
            Key::History => "h",
            Key::State => "state",
            Key::Channel => "c",
            Key::StateVersion => "statev",
            Key::Epoch => "epoch",
            Key::PublishIds => "pid",
            Key::Presence => "presence",
            Key::Taint => "taint",
        }
    }

    /// The Redis type (or `channel` for pub/sub).
    pub const fn redis_type(self) -> &'static str {
        match self {
            Key::Seq | Key::State | Key::StateVersion | Key::Epoch => "string",
            Key::History => "stream",
            Key::Channel => "channel",
            Key::PublishIds | Key::Presence => "hash",
            Key::Taint => "list",
        }
    }

    /// What it holds.
    pub const fn purpose(self) -> &'static str {
        match self {
            Key::Seq => "the campaign's last event seq (INCR per event)",
            Key::History => {
                "the bounded history of events (XADD MAXLEN ~ history_size, expiring after history_ttl) that resuming clients recover"
            }
            Key::State => "the latest campaign state",
            Key::Channel => {
                "the campaign's publications to every node (`<seq> <state version> <epoch> <slot> <publish id>` then the publication JSON)"
            }
            Key::StateVersion => "the state's version, counted by Redis",
            Key::Epoch => "the history's epoch: a new one when Redis lost the campaign's keys",
            Key::PublishIds => {
                "the latest publish id applied per node process, so a retried publish is applied once"
            }
            Key::Presence => {
                "each node's session count and users, with the time the report expires"
            }
            Key::Taint => {
                "the seq ranges a node numbered on its own while cut from Redis (resumes from inside them are refused)"
            }
        }
    }
}

/// The keys and channels that are not a campaign's: `(name pattern, type, purpose)`.
pub const NODE_KEYS: [(&str, &str, &str); 3] = [
    (
        "{p}:control",
        "channel",
        "campaign lifecycle (upsert, end) to every node",
    ),
    (
        "{p}:hb:{instance}",
        "channel",
        "a node's own heartbeat through Redis, for its pub/sub link's watchdog",
    ),
    (
        "{p}:notify",
        "channel",
        "notifications to every node (`{\"user\":...,\"payload\":...}`), pushed to that user's authenticated sessions on any campaign; at most once, the inbox keeps the durable copy",
    ),
];

/// A notification on the notify channel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// One publish, atomically. KEYS: seq, history, state, channel, state version, epoch,
/// publish ids. ARGV: mode, body, history size, history TTL, `PUBLISH` or `SPUBLISH`, the
/// epoch the node publishes in, its publish-id slot, the publish id. Numbers travel as
/// strings (`%d`): Lua would print a large `seq` as `1.7e+15`.
const PUBLISH_LUA: &str = r"
local current = redis.call('GET', KEYS[6])
if current ~= ARGV[6] then
  return {'epoch', current or ''}
end
local prior = redis.call('HGET', KEYS[7], ARGV[7])
if prior then
  local id, seq = string.match(prior, '^(%d+) (%d+)$')
  if id == ARGV[8] then
    return {'dup', seq}
  end
end
local seq
local version = '0'
if ARGV[1] == 'event' then
  seq = string.format('%d', redis.call('INCR', KEYS[1]))
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'm', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
else
  seq = redis.call('GET', KEYS[1]) or '0'
  if ARGV[1] == 'state' then
    version = string.format('%d', redis.call('INCR', KEYS[5]))
    redis.call('SET', KEYS[3], ARGV[2])
  end
end
redis.call('HSET', KEYS[7], ARGV[7], ARGV[8] .. ' ' .. seq)
redis.call('EXPIRE', KEYS[7], ARGV[4])
redis.call(ARGV[5], KEYS[4], seq .. ' ' .. version .. ' ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. ARGV[8] .. '\n' .. ARGV[2])
return {'ok', seq}
";

/// A batch of events, atomically (see [`Broker::publish_batch_once`]). KEYS: as
/// [`PUBLISH_LUA`]. ARGV: history size, history TTL, `PUBLISH` or `SPUBLISH`, the epoch the
/// node publishes in, then per event its publish-id slot, its publish id and its body. The
/// first event's slot tells a retry; each event goes out as its own message, as a single
/// publish would, so subscribers need nothing new.
const PUBLISH_BATCH_LUA: &str = r"
local current = redis.call('GET', KEYS[6])
if current ~= ARGV[4] then
  return {'epoch', current or ''}
end
local prior = redis.call('HGET', KEYS[7], ARGV[5])
if prior then
  local id, seq = string.match(prior, '^(%d+) (%d+)$')
  if id == ARGV[6] then
    return {'dup', seq}
  end
end
local n = (#ARGV - 4) / 3
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
for i = 0, n - 1 do
  local seq = string.format('%d', first + i)
  local slot, id, body = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'm', body)
  redis.call('HSET', KEYS[7], slot, id .. ' ' .. seq)
  redis.call(ARGV[3], KEYS[4], seq .. ' 0 ' .. ARGV[4] .. ' ' .. slot .. ' ' .. id .. '\n' .. body)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[7], ARGV[2])
return {'ok', string.format('%d', first)}
";

/// The campaign's epoch, created when missing. KEYS: epoch, seq, history. ARGV: a fresh
/// epoch, the highest `seq` the node knows (0: none, a new campaign: `seq` starts at 1), the
/// wall clock in microseconds. An epoch made for a campaign the node knew means the keys were
/// lost: its `seq` continues above the floor and the clock, and the old history goes.
const EPOCH_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then
  local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
  local target = math.max(seq, tonumber(ARGV[2]), tonumber(ARGV[3]))
  redis.call('SET', KEYS[2], string.format('%d', target))
  redis.call('DEL', KEYS[3])
end
return ARGV[1]
";

/// Publish-id slots per node process and campaign: a retry is recognised while fewer than
/// this many other publications of the same process and campaign went to Redis since its
/// first attempt (at most [`MAX_IN_FLIGHT`] are ever in flight).
const ID_SLOTS: u64 = 4096;
// A batch uses one slot per event: the largest leaves most slots to the others.
const _: () = assert!(crate::node::MAX_BATCH_EVENTS as u64 <= ID_SLOTS / 4);
/// Where the ids of publications made through [`Broker::publish`] start (below: the node's).
const OWN_IDS: u64 = 1 << 62;
/// This node's publications remembered as seen coming back (see [`Broker::applied`]).
const APPLIED_KEPT: usize = 4096;
/// Publishes in flight at once on the command connection.
const MAX_IN_FLIGHT: usize = 256;
/// Taints kept per campaign.
const MAX_TAINTS: i64 = 16;
/// How often the watchdog pings Redis and sends the pub/sub connection a heartbeat.
const WATCHDOG_EVERY: Duration = Duration::from_millis(250);
/// Without an answer from Redis (a `PING`, or the heartbeat through pub/sub) for this long,
/// the bus is not ready.
const STALE_AFTER_MS: u64 = 1_500;
/// A pub/sub connection without a heartbeat for this long is reconnected.
const SILENT_AFTER_MS: u64 = 3_000;

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
    /// Longest wait for any one Redis call (a dead Redis costs a request at most this).
    pub timeout: Duration,
}

impl RedisConfig {
    /// The defaults for `url`: prefix `ovasabi`, 1,000 events of history for 10 minutes,
    /// presence forgotten after 30 s, classic pub/sub, 1 s per call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "ovasabi".to_owned(),
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            presence_ttl: Duration::from_secs(30),
            sharded: false,
            timeout: Duration::from_secs(1),
        }
    }
}

/// What the broker knows of one campaign.
#[derive(Default)]
struct Known {
    /// The epoch this node publishes in.
    epoch: Option<Arc<str>>,
    /// The epoch the node was last told of ([`Deliver::epoch`]).
    told: Option<Arc<str>>,
    /// The highest `seq` seen: the floor of a new epoch.
    seq: u64,
    /// The highest event `seq` handed to the node (in the current epoch): after a lost
    /// pub/sub connection, what came after it is read back from the history.
    delivered: u64,
}

enum SubCommand {
    /// Subscribe, and say so once Redis confirmed.
    Subscribe(String, Option<tokio::sync::oneshot::Sender<()>>),
    Unsubscribe(String),
}

/// The Redis [`Broker`].
pub struct RedisBroker {
    config: RedisConfig,
    /// Publishes, lifecycle, epochs and the watchdog's pings.
    conn: ConnectionManager,
    /// Reads off the publish path: history for resuming clients, catch-up snapshots,
    /// presence (a reconnect storm's reads never delay a publish).
    reads: ConnectionManager,
    script: redis::Script,
    batch_script: redis::Script,
    epoch_script: redis::Script,
    /// This process's name in publish ids (fresh at every start).
    instance: String,
    /// Ids of publications made through [`Broker::publish`] (not [`Broker::publish_once`]).
    next_id: std::sync::atomic::AtomicU64,
    in_flight: tokio::sync::Semaphore,
    known: Mutex<HashMap<String, Known>>,
    /// This node's latest publications seen coming back from Redis: (publish id, seq).
    applied: Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// Milliseconds since `started` of the last `PING` answer and of the last heartbeat.
    started: std::time::Instant,
    last_pong: std::sync::atomic::AtomicU64,
    last_heartbeat: std::sync::atomic::AtomicU64,
    /// Wakes the pub/sub task to drop a connection whose heartbeats stopped.
    silent: Arc<tokio::sync::Notify>,
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
        describe_counter!(
            "ovasabi_broker_retries_deduplicated_total",
            "Retried publishes Redis had applied already (answered with the first seq)"
        );
        describe_counter!(
            "ovasabi_broker_epoch_changes_total",
            "Campaign epochs that changed on Redis (it lost its keys)"
        );
        describe_histogram!(
            "ovasabi_broker_lag_seconds",
            "Event publish to delivery on this node, through Redis"
        );
        let client = redis::Client::open(config.url.as_str()).map_err(|e| unavailable(&e))?;
        let manager = || {
            let options = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.timeout))
                .set_connection_timeout(Some(config.timeout))
                .set_max_delay(Duration::from_secs(2));
            let client = client.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    ConnectionManager::new_with_config(client, options),
                )
                .await
                .map_err(|_| BrokerError::Unavailable {
                    reason: "no answer from Redis in 5 s".to_owned(),
                })?
                .map_err(|e| unavailable(&e))
            }
        };
        let conn = manager().await?;
        let reads = manager().await?;
        let (tx, rx) = mpsc::channel(1024);
        let broker = Arc::new(Self {
            config,
            conn,
            reads,
            script: redis::Script::new(PUBLISH_LUA),
            batch_script: redis::Script::new(PUBLISH_BATCH_LUA),
            epoch_script: redis::Script::new(EPOCH_LUA),
            instance: super::new_epoch(),
            next_id: std::sync::atomic::AtomicU64::new(OWN_IDS),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            known: Mutex::new(HashMap::new()),
            applied: Mutex::new(std::collections::VecDeque::new()),
            started: std::time::Instant::now(),
            last_pong: std::sync::atomic::AtomicU64::new(0),
            last_heartbeat: std::sync::atomic::AtomicU64::new(0),
            silent: Arc::new(tokio::sync::Notify::new()),
            sink: OnceLock::new(),
            wanted: Mutex::new(HashMap::new()),
            commands: tx,
            ready: AtomicBool::new(false),
        });
        tokio::spawn(pubsub_loop(
            Arc::downgrade(&broker),
            client,
            rx,
            shutdown.clone(),
        ));
        tokio::spawn(watchdog(Arc::downgrade(&broker), shutdown));
        Ok(broker)
    }

    /// Milliseconds since the broker started.
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis answered the watchdog lately, on both connections.
    fn answering(&self) -> bool {
        let now = self.now();
        let fresh = |at: &std::sync::atomic::AtomicU64| {
            now.saturating_sub(at.load(Ordering::Relaxed)) < STALE_AFTER_MS
        };
        fresh(&self.last_pong) && fresh(&self.last_heartbeat)
    }

    /// Bounds `call` by the configured timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(r) => r.map_err(|e| unavailable(&e)),
            Err(_) => Err(BrokerError::Unavailable {
                reason: format!(
                    "Redis did not answer {what} within {:?}",
                    self.config.timeout
                ),
            }),
        }
    }

    /// Runs `pipe` on the read connection, bounded, and once more on failure: that connection
    /// may have been broken by the fault a resume or replay follows, and a broken connection
    /// reconnects on its next use.
    async fn read<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let mut conn = self.reads.clone();
        match self.bounded(what, pipe.query_async(&mut conn)).await {
            Err(_) => self.bounded(what, pipe.query_async(&mut conn)).await,
            ok => ok,
        }
    }

    fn heartbeat_channel(&self) -> String {
        NODE_KEYS[1]
            .0
            .replace("{p}", &self.config.prefix)
            .replace("{instance}", &self.instance)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that this node's publication `id` came back from Redis as `seq` (see
    /// [`Broker::applied`]); the latest [`APPLIED_KEPT`] are kept.
    fn applied_own(&self, id: u64, seq: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        applied.push_back((id, seq));
        while applied.len() > APPLIED_KEPT {
            applied.pop_front();
        }
    }

    /// Records a `seq` seen for `campaign` (the floor of a future epoch).
    fn saw(&self, campaign: &str, seq: u64) {
        let mut known = self.known();
        let k = known.entry(campaign.to_owned()).or_default();
        k.seq = k.seq.max(seq);
    }

    /// Records `epoch` as the campaign's epoch on the bus; tells the node when it is news
    /// (under the lock, so that the node hears of it before any publication of that epoch
    /// that this broker hands it afterwards).
    fn learned(&self, campaign: &str, epoch: &str) {
        self.arrived(campaign, epoch, 0);
    }

    /// [`RedisBroker::learned`], and the node is handed (or caught up to) `seq`.
    fn arrived(&self, campaign: &str, epoch: &str, seq: u64) {
        let mut known = self.known();
        let k = known.entry(campaign.to_owned()).or_default();
        if k.epoch.as_deref() != Some(epoch) {
            k.epoch = Some(Arc::from(epoch));
        }
        if k.told.as_deref() != Some(epoch) {
            if k.told.is_some() {
                counter!("ovasabi_broker_epoch_changes_total").increment(1);
                tracing::warn!(campaign, epoch, "the campaign's epoch on Redis changed");
                k.delivered = 0;
            }
            k.told = k.epoch.clone();
            if let Some(sink) = self.sink.get().and_then(Weak::upgrade) {
                sink.epoch(campaign, epoch);
            }
        }
        k.seq = k.seq.max(seq);
        k.delivered = k.delivered.max(seq);
    }

    /// After [`RedisBroker::replay`]: the heartbeats it kept the connection from reading are
    /// not silence (a stale "silent" signal is dropped).
    fn replayed(&self) {
        use futures_util::FutureExt as _;
        self.last_heartbeat.store(self.now(), Ordering::Relaxed);
        let _ = self.silent.notified().now_or_never();
    }

    /// After a new pub/sub connection: hands the node, for every campaign it follows, the
    /// events published while it had none (read back from the history stream, oldest first)
    /// and the latest state, before the connection's own messages; the campaign tasks skip
    /// what they already have. Direct messages of the gap are not replayed (they are not
    /// kept).
    async fn replay(&self) {
        let Some(sink) = self.sink.get().and_then(Weak::upgrade) else {
            return;
        };
        let campaigns: Vec<(String, u64)> = {
            let wanted = self.wanted();
            let known = self.known();
            wanted
                .keys()
                .map(|c| (c.clone(), known.get(c).map_or(0, |k| k.delivered)))
                .collect()
        };
        let mut replayed = 0usize;
        for (campaign, after) in campaigns {
            type Read = (
                Vec<(String, Vec<String>)>,
                Option<String>,
                Option<String>,
                Option<u64>,
            );
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("XRANGE")
                .arg(self.key(Key::History, &campaign))
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(self.config.history_size.max(1))
                .get(self.key(Key::Epoch, &campaign))
                .get(self.key(Key::State, &campaign))
                .get(self.key(Key::StateVersion, &campaign));
            let (entries, epoch, state, version) = match self
                .read::<Read>("a replay read", &pipe)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(campaign, error = %e, "events of the pub/sub gap not replayed");
                    continue;
                }
            };
            let Some(epoch) = epoch else { continue };
            self.learned(&campaign, &epoch);
            for p in history_events(entries) {
                if let Publication::Event { seq, .. } = &p {
                    self.arrived(&campaign, &epoch, *seq);
                }
                replayed += 1;
                sink.deliver(&campaign, p);
            }
            if let (Some(state), Some(version)) = (state.and_then(stored_state), version) {
                sink.deliver(&campaign, Publication::State { state, version });
            }
        }
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "events of the pub/sub gap replayed from history"
            );
        }
    }

    /// The campaign's epoch, read (or created) on Redis. `reset`: the one this node knew is
    /// gone, so a new one must continue above every `seq` it saw.
    async fn fetch_epoch(&self, campaign: &str, reset: bool) -> Result<Arc<str>, BrokerError> {
        let floor = {
            let known = self.known();
            match known.get(campaign) {
                Some(k) if reset || k.epoch.is_some() => k.seq.max(1),
                _ if reset => 1,
                _ => 0,
            }
        };
        let base = now_us();
        let mut conn = self.conn.clone();
        let epoch: String = self
            .bounded(
                "an epoch read",
                self.epoch_script
                    .key(self.key(Key::Epoch, campaign))
                    .key(self.key(Key::Seq, campaign))
                    .key(self.key(Key::History, campaign))
                    .arg(super::new_epoch())
                    .arg(floor)
                    .arg(base)
                    .invoke_async(&mut conn),
            )
            .await?;
        self.learned(campaign, &epoch);
        Ok(Arc::from(epoch))
    }

    /// The publish-id slot of publication `id` of this process.
    fn slot(&self, id: u64) -> String {
        // The broker's own ids (plain `publish`) have slots apart from the node's.
        let own = if id >= OWN_IDS { "b" } else { "n" };
        format!("{}:{own}{}", self.instance, id % ID_SLOTS)
    }

    /// One publish under publish id `id`, in the campaign's epoch (beginning a new one when
    /// Redis lost it).
    async fn publish_as(
        &self,
        campaign: &str,
        publication: &Publication,
        id: u64,
    ) -> Result<u64, BrokerError> {
        let mode = match publication {
            Publication::Event { .. } => "event",
            Publication::State { .. } => "state",
            Publication::Message { .. } => "message",
        };
        let body = serde_json::to_string(publication).map_err(BrokerError::Codec)?;
        let ttl = self.config.history_ttl.as_secs().max(1);
        let slot = self.slot(id);
        self.publish_with(campaign, id, 1, |epoch| {
            let mut call = self.keys(&self.script, campaign);
            call.arg(mode)
                .arg(&body)
                .arg(self.config.history_size.max(1))
                .arg(ttl)
                .arg(self.publish_command())
                .arg(epoch)
                .arg(&slot)
                .arg(id);
            call
        })
        .await
    }

    /// A batch of events under publish ids `first_id..`, in the campaign's epoch; returns the
    /// first event's `seq`.
    async fn publish_batch_as(
        &self,
        campaign: &str,
        events: &[Publication],
        first_id: u64,
    ) -> Result<u64, BrokerError> {
        let mut args = Vec::with_capacity(events.len());
        for (publication, id) in events.iter().zip(first_id..) {
            let body = serde_json::to_string(publication).map_err(BrokerError::Codec)?;
            args.push((self.slot(id), id, body));
        }
        let ttl = self.config.history_ttl.as_secs().max(1);
        self.publish_with(campaign, first_id, events.len(), |epoch| {
            let mut call = self.keys(&self.batch_script, campaign);
            call.arg(self.config.history_size.max(1))
                .arg(ttl)
                .arg(self.publish_command())
                .arg(epoch);
            for (slot, id, body) in &args {
                call.arg(slot).arg(*id).arg(body);
            }
            call
        })
        .await
    }

    /// The script `script` with the campaign's keys, in [`PUBLISH_LUA`]'s order.
    fn keys<'s>(&self, script: &'s redis::Script, campaign: &str) -> redis::ScriptInvocation<'s> {
        let mut call = script.prepare_invoke();
        call.key(self.key(Key::Seq, campaign))
            .key(self.key(Key::History, campaign))
            .key(self.key(Key::State, campaign))
            .key(self.key(Key::Channel, campaign))
            .key(self.key(Key::StateVersion, campaign))
            .key(self.key(Key::Epoch, campaign))
            .key(self.key(Key::PublishIds, campaign));
        call
    }

    fn publish_command(&self) -> &'static str {
        if self.config.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs the publish script `invocation(epoch)` builds (publication `id`, `count` events)
    /// in the campaign's epoch, beginning a new one when Redis lost it; returns the `seq` of
    /// its reply.
    async fn publish_with<'s>(
        &'s self,
        campaign: &str,
        id: u64,
        count: usize,
        invocation: impl Fn(&str) -> redis::ScriptInvocation<'s>,
    ) -> Result<u64, BrokerError> {
        let _permit =
            match tokio::time::timeout(self.config.timeout, self.in_flight.acquire()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(BrokerError::Unavailable {
                        reason: "too many publishes waiting for Redis".to_owned(),
                    });
                }
            };
        let mut reset = false;
        let mut retried = false;
        for _ in 0..4 {
            let known = self.known().get(campaign).and_then(|k| k.epoch.clone());
            let epoch = match known {
                Some(e) if !reset => e,
                _ => {
                    // A publish never meets a campaign whose epoch was not made at its
                    // creation: a missing one means Redis lost it (numbering continues above).
                    let e = self.fetch_epoch(campaign, true).await?;
                    reset = false;
                    e
                }
            };
            let mut conn = self.conn.clone();
            let sent_at = self.now();
            let attempt = self
                .bounded("a publish", invocation(&epoch).invoke_async(&mut conn))
                .await;
            let reply: Vec<String> = match attempt {
                Ok(reply) => reply,
                // A Redis that answered the watchdog while this publish waited is slow, not
                // gone (a saturated host, a reconnect storm's reads): once more, under the
                // same id, before the node gives up on the bus. A frozen or dead one answered
                // nothing meanwhile: the publish costs one timeout.
                Err(e) if !retried && self.last_pong.load(Ordering::Relaxed) > sent_at => {
                    tracing::debug!(campaign, id, error = %e, "publish slow; retrying once");
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match reply.first().map(String::as_str) {
                Some("ok" | "dup") => {
                    let seq = reply
                        .get(1)
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| BrokerError::Unavailable {
                            reason: format!("unexpected publish reply {reply:?}"),
                        })?;
                    if reply.first().is_some_and(|r| r == "dup") {
                        tracing::info!(
                            campaign,
                            id,
                            seq,
                            "retried publish was applied once already"
                        );
                    } else {
                        counter!("ovasabi_broker_messages_total", "direction" => "out")
                            .increment(count as u64);
                    }
                    let last = seq + (count as u64).saturating_sub(1);
                    self.saw(campaign, last);
                    return Ok(seq);
                }
                Some("epoch") => match reply.get(1).filter(|e| !e.is_empty()) {
                    // Another node began a new epoch (or this one knew an old one).
                    Some(current) => self.learned(campaign, current),
                    // Redis lost the campaign's keys.
                    None => reset = true,
                },
                _ => {
                    return Err(BrokerError::Unavailable {
                        reason: format!("unexpected publish reply {reply:?}"),
                    });
                }
            }
        }
        Err(BrokerError::Unavailable {
            reason: "the campaign's epoch kept changing on Redis".to_owned(),
        })
    }

    fn key(&self, key: Key, campaign: &str) -> String {
        let kind = key.kind();
        if self.config.sharded {
            format!("{}:{kind}:{{{campaign}}}", self.config.prefix)
        } else {
            format!("{}:{kind}:{campaign}", self.config.prefix)
        }
    }

    fn control_channel(&self) -> String {
        NODE_KEYS[0].0.replace("{p}", &self.config.prefix)
    }

    fn notify_channel(&self) -> String {
        NODE_KEYS[2].0.replace("{p}", &self.config.prefix)
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
        if channel == self.heartbeat_channel() {
            self.last_heartbeat.store(self.now(), Ordering::Relaxed);
            return;
        }
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
        if channel == self.notify_channel() {
            match serde_json::from_slice::<Notification<'_>>(payload) {
                Ok(n) => sink.notify(&n.user, n.payload),
                Err(e) => tracing::warn!(error = %e, "malformed notification ignored"),
            }
            return;
        }
        let Some(campaign) = self.campaign_of(channel) else {
            return;
        };
        let text = String::from_utf8_lossy(payload);
        let Some((head, json)) = text.split_once('\n') else {
            tracing::warn!(channel, "malformed campaign message ignored");
            return;
        };
        let mut head = head.split(' ');
        let (seq, version, epoch) = (head.next(), head.next(), head.next());
        let (slot, id) = (head.next(), head.next().and_then(|i| i.parse::<u64>().ok()));
        let (Some(Ok(seq)), Some(Ok(version)), Some(epoch), Ok(mut publication)) = (
            seq.map(str::parse::<u64>),
            version.map(str::parse::<u64>),
            epoch.filter(|e| !e.is_empty()),
            serde_json::from_str::<Publication>(json),
        ) else {
            tracing::warn!(channel, "malformed campaign message ignored");
            return;
        };
        self.arrived(campaign, epoch, seq);
        if let (Some(slot), Some(id)) = (slot, id)
            && slot
                .strip_prefix(self.instance.as_str())
                .is_some_and(|rest| rest.starts_with(":n"))
        {
            self.applied_own(id, seq);
        }
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { self.publish_as(campaign, &publication, id).await })
    }

    fn publish_once<'a>(
        &'a self,
        campaign: &'a str,
        publication: Publication,
        id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move { self.publish_as(campaign, &publication, id).await })
    }

    fn publish_batch_once<'a>(
        &'a self,
        campaign: &'a str,
        events: Vec<Publication>,
        first_id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move { self.publish_batch_as(campaign, &events, first_id).await })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let body = serde_json::to_string(&control).map_err(BrokerError::Codec)?;
            let mut conn = self.conn.clone();
            let _: i64 = self
                .bounded(
                    "a lifecycle message",
                    redis::cmd("PUBLISH")
                        .arg(self.control_channel())
                        .arg(body)
                        .query_async(&mut conn),
                )
                .await?;
            counter!("ovasabi_broker_messages_total", "direction" => "out").increment(1);
            Ok(())
        })
    }

    fn notify<'a>(
        &'a self,
        user: &'a str,
        payload: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let body = serde_json::to_string(&Notification {
                user: user.into(),
                payload: &payload,
            })
            .map_err(BrokerError::Codec)?;
            let mut conn = self.conn.clone();
            let _: i64 = self
                .bounded(
                    "a notification",
                    redis::cmd("PUBLISH")
                        .arg(self.notify_channel())
                        .arg(body)
                        .query_async(&mut conn),
                )
                .await?;
            counter!("ovasabi_broker_messages_total", "direction" => "out").increment(1);
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.answering()
    }

    fn can_publish(&self) -> bool {
        // The command connection answers: a publish goes to Redis even while the pub/sub
        // connection is being set up again (its gap is replayed from the history).
        let now = self.now();
        now.saturating_sub(self.last_pong.load(Ordering::Relaxed)) < STALE_AFTER_MS
    }

    fn applied(&self, id: u64) -> Option<u64> {
        let applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        applied
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, seq)| *seq)
    }

    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move { Ok(self.fetch_epoch(campaign, false).await?.to_string()) })
    }

    fn history<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Vec<Publication>, BrokerError>> {
        Box::pin(async move { Ok(self.recovery(campaign, after).await?.events) })
    }

    fn recovery<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("XRANGE")
                .arg(self.key(Key::History, campaign))
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(self.config.history_size.max(1))
                .cmd("LRANGE")
                .arg(self.key(Key::Taint, campaign))
                .arg(0)
                .arg(-1);
            let (entries, taints): (Vec<(String, Vec<String>)>, Vec<String>) =
                self.read("a history read", &pipe).await?;
            let events = history_events(entries);
            Ok(Recovery {
                events,
                tainted: parse_taints(&taints),
            })
        })
    }

    fn tainted<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<Vec<Taint>, BrokerError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("LRANGE")
                .arg(self.key(Key::Taint, campaign))
                .arg(0)
                .arg(-1);
            let (taints,): (Vec<String>,) = self.read("a taint read", &pipe).await?;
            Ok(parse_taints(&taints))
        })
    }

    fn taint<'a>(
        &'a self,
        campaign: &'a str,
        taint: Taint,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let body = serde_json::to_string(&taint).map_err(BrokerError::Codec)?;
            let key = self.key(Key::Taint, campaign);
            let mut conn = self.conn.clone();
            let _: () = self
                .bounded(
                    "a taint",
                    redis::pipe()
                        .atomic()
                        .cmd("RPUSH")
                        .arg(&key)
                        .arg(body)
                        .ignore()
                        .cmd("LTRIM")
                        .arg(&key)
                        .arg(-MAX_TAINTS)
                        .arg(-1)
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(self.config.history_ttl.as_secs().max(1))
                        .ignore()
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
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
            let key = self.key(Key::Presence, campaign);
            let mut conn = self.reads.clone();
            let _: () = self
                .bounded(
                    "a presence report",
                    redis::pipe()
                        .cmd("HSET")
                        .arg(&key)
                        .arg(node)
                        .arg(report.to_string())
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(ttl_ms)
                        .ignore()
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
        })
    }

    fn cluster_presence<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presence>, BrokerError>> {
        Box::pin(async move {
            let key = self.key(Key::Presence, campaign);
            let mut conn = self.reads.clone();
            let reports: Vec<(String, String)> = self
                .bounded(
                    "a presence read",
                    redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
                )
                .await?;
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
                let _: Result<i64, _> = self
                    .bounded(
                        "a presence clean-up",
                        redis::cmd("HDEL")
                            .arg(&key)
                            .arg(expired)
                            .query_async(&mut conn),
                    )
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
                let subscribed =
                    tokio::time::timeout(self.config.timeout.max(Duration::from_secs(2)), async {
                        self.commands
                            .send(SubCommand::Subscribe(
                                self.key(Key::Channel, campaign),
                                Some(ack),
                            ))
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
            let mut conn = self.reads.clone();
            type Read = (Option<u64>, Option<String>, Option<u64>, Option<String>);
            let (seq, state, version, epoch): Read = self
                .bounded(
                    "a catch-up read",
                    redis::pipe()
                        .atomic()
                        .get(self.key(Key::Seq, campaign))
                        .get(self.key(Key::State, campaign))
                        .get(self.key(Key::StateVersion, campaign))
                        .get(self.key(Key::Epoch, campaign))
                        .query_async(&mut conn),
                )
                .await?;
            if let Some(e) = &epoch {
                self.arrived(campaign, e, seq.unwrap_or(0));
            }
            let state = state.and_then(stored_state);
            Ok(Some(Snapshot {
                seq: seq.unwrap_or(0),
                state,
                state_version: version.unwrap_or(0),
                epoch,
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
                .try_send(SubCommand::Unsubscribe(self.key(Key::Channel, campaign)));
        }
    }
}

/// The state held by a campaign's state key (its publication, as published).
fn stored_state(stored: String) -> Option<Box<serde_json::value::RawValue>> {
    match serde_json::from_str::<Publication>(&stored) {
        Ok(Publication::State { state, .. }) => Some(state),
        _ => None,
    }
}

/// The taints of a campaign's taint list (entries that do not parse are skipped).
fn parse_taints(entries: &[String]) -> Vec<Taint> {
    entries
        .iter()
        .filter_map(|t| serde_json::from_str::<Taint>(t).ok())
        .collect()
}

/// The events of an `XRANGE` of a history stream, oldest first. Stored as published: the
/// `seq` is the entry's id.
fn history_events(entries: Vec<(String, Vec<String>)>) -> Vec<Publication> {
    let mut events = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let seq = id.split('-').next().and_then(|s| s.parse::<u64>().ok());
        let body = fields
            .chunks(2)
            .find(|kv| kv.first().is_some_and(|k| k == "m"))
            .and_then(|kv| kv.get(1));
        let (Some(seq), Some(body)) = (seq, body) else {
            continue;
        };
        if let Ok(mut p @ Publication::Event { .. }) = serde_json::from_str::<Publication>(body) {
            if let Publication::Event { seq: s, .. } = &mut p {
                *s = seq;
            }
            events.push(p);
        }
    }
    events
}

/// Back-off after a failed or lost pub/sub connection: doubles from 100 ms up to 1 s (a node
/// is not ready until it is back, so it must not sleep long past Redis's return), with up to
/// 50 % of jitter so that nodes do not reconnect in step.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(1_000);
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

/// The pub/sub connection of a node: connects, subscribes to the node-wide channels (control,
/// heartbeat, notify) and every wanted campaign channel, serves until the connection breaks,
/// and starts again after a back-off, reporting readiness all along.
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
            let again = connected_before;
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
            // A fresh connection has had no heartbeat yet: it gets the watchdog's grace.
            b.last_heartbeat.store(b.now(), Ordering::Relaxed);
            b.ready.store(true, Ordering::Relaxed);
            again
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

/// Every channel a fresh connection subscribes to: the wanted campaigns' channels, and the
/// node-wide ones (control, heartbeat, notify: classic channels even when sharded) (`None`
/// once the broker is gone).
fn channels(broker: &Weak<RedisBroker>) -> Option<(Vec<String>, [String; 3])> {
    let b = broker.upgrade()?;
    let campaigns = b.wanted().keys().map(|c| b.key(Key::Channel, c)).collect();
    Some((
        campaigns,
        [
            b.control_channel(),
            b.heartbeat_channel(),
            b.notify_channel(),
        ],
    ))
}

/// Resolves when the watchdog finds the pub/sub connection silent (no heartbeat).
fn silenced(broker: &Weak<RedisBroker>) -> impl Future<Output = ()> + use<> {
    let silent = broker.upgrade().map(|b| b.silent.clone());
    async move {
        match silent {
            Some(s) => s.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// One session on redis-rs's pub/sub connection (classic channels).
async fn classic_session(
    broker: &Weak<RedisBroker>,
    client: &redis::Client,
    commands: &mut mpsc::Receiver<SubCommand>,
    shutdown: &CancellationToken,
    ready: &mut impl FnMut(&RedisBroker, usize) -> bool,
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
    for ch in campaigns.iter().chain(&control) {
        let subscribed = tokio::time::timeout(Duration::from_secs(5), sink.subscribe(ch)).await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ended::Failed(e.to_string()),
            Err(_) => return Ended::Failed("subscription not confirmed in 5 s".to_owned()),
        }
    }
    match broker.upgrade() {
        Some(b) => {
            if ready(&b, campaigns.len() + control.len()) {
                b.replay().await;
                b.replayed();
            }
        }
        None => return Ended::Stop,
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            () = silenced(broker) => return Ended::Lost("no heartbeat through pub/sub".to_owned()),
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
/// node-wide ones. A subscription is acknowledged when Redis confirms it.
async fn sharded_session(
    broker: &Weak<RedisBroker>,
    client: &redis::Client,
    commands: &mut mpsc::Receiver<SubCommand>,
    shutdown: &CancellationToken,
    ready: &mut impl FnMut(&RedisBroker, usize) -> bool,
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
    let mut unconfirmed = campaigns.len() + control.len();
    // Messages that arrive before every subscription is confirmed wait until the gap is
    // replayed: handed over first, they would put newer events before older ones.
    let mut early: Vec<(String, Vec<u8>)> = Vec::new();
    let setup = async {
        for ch in &control {
            conn.send(&[b"SUBSCRIBE", ch.as_bytes()]).await?;
        }
        for ch in &campaigns {
            conn.send(&[b"SSUBSCRIBE", ch.as_bytes()]).await?;
        }
        // Ready once every subscription is confirmed.
        while unconfirmed > 0 {
            match conn.next().await? {
                Push::Subscribed(_) => unconfirmed -= 1,
                Push::Error(e) => return Err(e),
                // The channels confirmed so far already carry messages: kept for after.
                Push::Message { channel, payload } => early.push((channel, payload)),
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
        Some(b) => {
            if ready(&b, campaigns.len() + control.len()) {
                b.replay().await;
                b.replayed();
            }
            for (channel, payload) in early {
                b.deliver_message(&channel, &payload);
            }
        }
        None => return Ended::Stop,
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            () = silenced(broker) => return Ended::Lost("no heartbeat through pub/sub".to_owned()),
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

/// Every [`WATCHDOG_EVERY`]: `PING`s Redis on the command and read connections and publishes a
/// heartbeat on this node's own channel, which its pub/sub connection should receive. Each
/// answer is recorded ([`RedisBroker::answering`]); a pub/sub connection that has been
/// subscribed for a while without receiving a heartbeat is told to reconnect.
async fn watchdog(broker: Weak<RedisBroker>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(WATCHDOG_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Since when Redis has answered every ping (a Redis that just thawed owes heartbeats).
    let mut answering_since: Option<u64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(b) = broker.upgrade() else { return };
        let mut conn = b.conn.clone();
        let ping: Result<((), i64), _> = b
            .bounded(
                "a watchdog ping",
                redis::pipe()
                    .cmd("PING")
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(b.heartbeat_channel())
                    .arg("hb")
                    .query_async(&mut conn),
            )
            .await
            .map(|(n,): (i64,)| ((), n));
        // The read connection too: kept fresh (a broken one reconnects on its next use, so
        // an unused one would fail the first resume after an outage) and checked.
        let mut reads = b.reads.clone();
        let read: Result<String, _> = b
            .bounded(
                "a watchdog ping",
                redis::cmd("PING").query_async(&mut reads),
            )
            .await;
        let now = b.now();
        // (The read connection's answer keeps it fresh but does not decide readiness: a
        // resume storm's reads may queue on it while publishes flow.)
        if read.is_err() {
            tracing::debug!("Redis read connection slow or broken");
        }
        if ping.is_ok() {
            b.last_pong.store(now, Ordering::Relaxed);
        }
        answering_since = if ping.is_ok() {
            answering_since.or(Some(now))
        } else {
            None
        };
        let heard = b.last_heartbeat.load(Ordering::Relaxed);
        let silent_for = |since: u64| now.saturating_sub(since) > SILENT_AFTER_MS;
        if answering_since.is_some_and(silent_for)
            && b.ready.load(Ordering::Relaxed)
            && silent_for(heard)
        {
            tracing::warn!(
                silent_ms = now.saturating_sub(heard),
                "Redis pub/sub connection silent; reconnecting it"
            );
            b.silent.notify_one();
            b.last_heartbeat.store(now, Ordering::Relaxed);
        }
    }
}
