//! One campaign's broadcast task on this node. It owns the campaign's state, the events
//! waiting for the next tick, and the timer; it ticks at the campaign's frequency (missed ticks
//! are skipped, not burst) and, when it has something to say, encodes the tick frame once and
//! offers the shared bytes to every local session's queue without holding any lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::broker::{CampaignSpec, Publication, Taint};
use crate::frame::{self, EncodedEvent, SharedFrame, TickState, json_string, now_ms};
use crate::hub::Members;
use crate::metrics::Metrics;
use crate::node::NodeInner;
use crate::session::{Close, Session};

/// Window of the measured tick rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Largest recovery frame: a resuming client further behind gets `recovered: false` and the
/// full state instead, so that a reconnect storm cannot stall the task on huge frames.
const MAX_RECOVERY_BYTES: usize = 4 * 1024 * 1024;
/// Pending-event overflow is logged at most this often per campaign.
const WARN_EVERY_MS: i64 = 10_000;

/// What reaches a campaign task.
pub(crate) enum Input {
    Publication(Publication),
    Configure(CampaignSpec),
    /// The cluster-wide connection count, for campaigns whose ticks carry it.
    Presence(u64),
    /// Where the campaign stands on the bus, read when this node started following it again:
    /// catch up before the next session joins.
    CatchUp(crate::broker::Snapshot),
    /// A publication made on this node while the bus is unreachable: applied here only, with
    /// a `seq` this task assigns (answered on `seq`), in a detached epoch.
    Local {
        /// One publication, or a batch of events applied as one unit.
        publications: Vec<Publication>,
        /// Answered with the first one's `seq`.
        seq: tokio::sync::oneshot::Sender<u64>,
    },
    /// The bus is reachable again and has every publication kept here, the last event with
    /// `seq` `through`: once the task has seen that one come back (or after a few asks),
    /// leave the detached epoch, close every session with 1012 so that clients resync, and
    /// take the bus's publications again.
    Reattach {
        through: u64,
    },
    /// A new session: the task sends its welcome (and the events it missed, when it asks to
    /// resume), then adds it to the members, so nothing slips between history and live.
    Join {
        session: Arc<Session>,
        resume: Option<Resume>,
        /// Events after `since` read from the bus's history before joining (for the ones this
        /// node never saw, e.g. while it was cut from the bus).
        fetched: Vec<EncodedEvent>,
        /// The bus's ranges that cannot be recovered exactly; `None` when the bus could not
        /// say (the resume is then refused).
        tainted: Option<Vec<Taint>>,
    },
    /// The campaign's epoch on the bus changed (Redis lost its keys): its `seq`s continue
    /// above the old ones, its history starts afresh.
    Epoch(Arc<str>),
    End,
}

/// A client's request to resume: the last `seq` it saw, and the epoch it saw it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    pub epoch: Option<String>,
}

/// The part of a campaign that sessions, the hub and stats share with its task.
pub(crate) struct CampaignShared {
    pub id: Arc<str>,
    /// `id` as a JSON string literal, encoded once.
    pub id_json: Box<str>,
    pub members: Members,
    inbox: mpsc::Sender<Input>,
    frequency_bits: AtomicU64,
    client_events: AtomicBool,
    /// Whether tick frames carry the cluster-wide connection count.
    presence: AtomicBool,
    /// Whether every session gets delta state frames (the campaign's `delta` feature).
    delta: AtomicBool,
    /// The latest cluster-wide presence (from the node's heartbeat task).
    cluster: Mutex<Option<crate::broker::Presence>>,
    /// Local sessions, joining ones included: the node follows the campaign on the bus while
    /// there are any (the lock also orders a first join after its catch-up).
    pub(crate) interest: tokio::sync::Mutex<usize>,
    /// Latest event `seq` this node has seen.
    last_seq: AtomicU64,
    /// The oldest event `seq` of the task's history (0: empty): a resume from at or after it
    /// needs nothing from the bus's history.
    history_from: AtomicU64,
    /// Whether the campaign publishes on this node only (the bus was unreachable).
    pub(crate) detached: AtomicBool,
    /// The campaign's epoch on the bus, as last heard of.
    cluster_epoch: Mutex<Option<Arc<str>>>,
    frames_sent: AtomicU64,
    frames_dropped: AtomicU64,
    events: AtomicU64,
    /// Most sessions seen at once: on this node, or cluster-wide in a presence report.
    peak_connections: AtomicU64,
    /// Set once the task has sent its final frame; late joiners close at once.
    ended: std::sync::OnceLock<Close>,
    tick_times: Mutex<VecDeque<Instant>>,
    /// The figures of the last [`HISTORY_WINDOW`], sampled by the node.
    samples: Mutex<Samples>,
    metrics: Metrics,
}

/// How far back a campaign's sampled figures go.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A campaign's figures on this node at one moment, with the rates since the sample before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSample {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Sessions on this node.
    pub connections: usize,
    /// Sessions on every node, as last reported (at least this node's).
    pub cluster_connections: u64,
    /// Frames handed to this node's sessions per second since the previous sample.
    pub frames_per_s: f64,
    /// Frames dropped (full queues) per second since the previous sample.
    pub dropped_per_s: f64,
    /// Events this node's task received per second since the previous sample.
    pub events_per_s: f64,
    /// Ticks per second measured over the last 10 s.
    pub tick_rate_hz: f64,
    /// Configured frequency.
    pub frequency_hz: f64,
}

/// The sampled figures and the counters of the last sample (rates are differences).
#[derive(Default)]
struct Samples {
    items: VecDeque<StatsSample>,
    last: Option<(Instant, [u64; 3])>,
}

/// A campaign's figures on this node (all zero for a campaign not running here).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignStats {
    pub campaign: String,
    pub node: String,
    /// Sessions connected to this node.
    pub connections: usize,
    /// Sessions connected to every node (this node's figure until the first heartbeat).
    pub cluster_connections: u64,
    /// Most sessions seen at once since the campaign started on this node (this node's, or
    /// the cluster's in a presence report).
    pub peak_connections: u64,
    /// Distinct users connected anywhere (at most 100).
    pub users: Vec<String>,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Events this node's task received.
    pub events: u64,
    pub seq: u64,
    /// Configured frequency.
    pub frequency_hz: f64,
    /// Ticks per second measured over the last 10 s.
    pub tick_rate_hz: f64,
}

impl CampaignShared {
    pub(crate) fn frequency_hz(&self) -> f64 {
        f64::from_bits(self.frequency_bits.load(Relaxed))
    }

    pub(crate) fn client_events(&self) -> bool {
        self.client_events.load(Relaxed)
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Relaxed)
    }

    /// Whether a resume is bound to be refused, whatever the bus's history holds: it names
    /// an epoch that is neither the cluster's nor the detached one shown here, or it is
    /// further behind than any history keeps.
    pub(crate) fn cannot_recover(&self, resume: &Resume, history_size: usize) -> bool {
        let behind = self.last_seq().saturating_sub(resume.since);
        let cluster = self.cluster_epoch();
        let foreign = resume.epoch.as_deref().is_some_and(|e| {
            cluster.as_deref().is_some_and(|c| c != e) && !self.detached.load(Relaxed)
        });
        foreign || behind > history_size as u64
    }

    /// Whether this node's own history may hold every event after `since` (so that a resume
    /// needs only the bus's taints, not its history). Only meaningful while the node follows
    /// the campaign (otherwise its history stopped when it stopped following).
    pub(crate) fn history_covers(&self, since: u64) -> bool {
        let from = self.history_from.load(Relaxed);
        from > 0 && since.saturating_add(1) >= from
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.get().is_some()
    }

    pub(crate) fn count_sent(&self, n: u64) {
        self.frames_sent.fetch_add(n, Relaxed);
    }

    pub(crate) fn count_drop(&self) {
        self.frames_dropped.fetch_add(1, Relaxed);
        self.metrics.frames_dropped.increment(1);
    }

    /// Hands an input to the task. Publications are dropped (and counted) when the inbox is
    /// full; lifecycle inputs are never dropped: they wait for room in a spawned task.
    /// Queues `input` if the inbox has room.
    pub(crate) fn try_send(&self, input: Input) -> Result<(), ()> {
        self.inbox.try_send(input).map_err(|_| ())
    }

    pub(crate) fn send(&self, input: Input, node: &NodeInner) {
        match self.inbox.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(input)) => {
                if matches!(input, Input::Publication(_)) {
                    self.metrics.inputs_dropped.increment(1);
                    tracing::warn!(campaign = %self.id, "campaign inbox full: publication dropped");
                } else {
                    let tx = self.inbox.clone();
                    let shutdown = node.shutdown.clone();
                    node.tracker.spawn(async move {
                        if let Err(mpsc::error::SendError(input)) = tx.send(input).await {
                            refuse(input, shutdown.is_cancelled());
                        }
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(input)) => {
                refuse(input, node.shutdown.is_cancelled());
            }
        }
    }

    /// Records the campaign's epoch on the bus; whether it is news.
    pub(crate) fn set_cluster_epoch(&self, epoch: &str) -> bool {
        let mut current = self
            .cluster_epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_deref() == Some(epoch) {
            return false;
        }
        *current = Some(Arc::from(epoch));
        true
    }

    /// The campaign's epoch on the bus, as last heard of.
    pub(crate) fn cluster_epoch(&self) -> Option<Arc<str>> {
        self.cluster_epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn presence_enabled(&self) -> bool {
        self.presence.load(Relaxed)
    }

    /// This node's sessions: how many, and which users (at most 100).
    pub(crate) fn local_presence(&self) -> crate::broker::Presence {
        let (_, members) = self.members.snapshot();
        let users: std::collections::BTreeSet<&str> = members.iter().map(|s| &*s.user).collect();
        crate::broker::Presence {
            connections: members.len() as u64,
            users: users
                .into_iter()
                .take(crate::broker::PRESENCE_USERS)
                .map(str::to_owned)
                .collect(),
        }
    }

    pub(crate) fn set_cluster_presence(&self, p: crate::broker::Presence) {
        self.peak_connections.fetch_max(p.connections, Relaxed);
        *self
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
    }

    pub(crate) fn stats(&self, node: &str) -> CampaignStats {
        let cluster = self
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let cluster = cluster.unwrap_or_else(|| self.local_presence());
        CampaignStats {
            campaign: self.id.to_string(),
            node: node.to_owned(),
            connections: self.members.len(),
            // The last report may predate this node's newest sessions.
            cluster_connections: cluster.connections.max(self.members.len() as u64),
            peak_connections: self.peak_connections.load(Relaxed),
            users: cluster.users,
            frames_sent: self.frames_sent.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            events: self.events.load(Relaxed),
            seq: self.last_seq(),
            frequency_hz: self.frequency_hz(),
            tick_rate_hz: self.measured_tick_rate(),
        }
    }

    /// Records a sample of the figures at `now` (the first call only sets the baseline of
    /// the rates), keeping at most `keep`.
    pub(crate) fn sample(&self, now: Instant, at_ms: u64, keep: usize) {
        let counters = [
            self.frames_sent.load(Relaxed),
            self.frames_dropped.load(Relaxed),
            self.events.load(Relaxed),
        ];
        let cluster = self
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|p| p.connections);
        let connections = self.members.len();
        let tick_rate_hz = self.measured_tick_rate();
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((then, before)) = samples.last {
            let secs = now.saturating_duration_since(then).as_secs_f64();
            let rate = |i: usize| {
                if secs > 0.0 {
                    counters[i].saturating_sub(before[i]) as f64 / secs
                } else {
                    0.0
                }
            };
            samples.items.push_back(StatsSample {
                at_ms,
                connections,
                cluster_connections: cluster.unwrap_or(0).max(connections as u64),
                frames_per_s: rate(0),
                dropped_per_s: rate(1),
                events_per_s: rate(2),
                tick_rate_hz,
                frequency_hz: self.frequency_hz(),
            });
            while samples.items.len() > keep {
                samples.items.pop_front();
            }
        }
        samples.last = Some((now, counters));
    }

    /// The samples of the last [`HISTORY_WINDOW`], oldest first.
    pub(crate) fn samples(&self) -> Vec<StatsSample> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .items
            .iter()
            .cloned()
            .collect()
    }

    fn record_tick(&self, at: Instant) {
        let mut times = self
            .tick_times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while times
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) > RATE_WINDOW)
        {
            times.pop_front();
        }
        times.push_back(at);
    }

    fn measured_tick_rate(&self) -> f64 {
        let times = self
            .tick_times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (times.front(), times.back()) {
            (Some(first), Some(last)) if times.len() >= 2 => {
                let span = last.saturating_duration_since(*first).as_secs_f64();
                if span > 0.0 {
                    (times.len() - 1) as f64 / span
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }
}

/// An input the task will never see (it has stopped): a joining session is closed at once.
fn refuse(input: Input, shutting_down: bool) {
    if let Input::Join { session, .. } = input {
        session.close(if shutting_down {
            Close::SHUTDOWN
        } else {
            Close::ENDED
        });
    }
}

/// Asks to reattach (one per 100 ms) after which a detached campaign reattaches even if its
/// kept events have not all come back from the bus (pub/sub may have lost one).
const REATTACH_ASKS: u32 = 20;

/// Local taints a campaign keeps.
const MAX_TAINTS: usize = 16;
/// Sessions told to resync (1012) are closed in rounds this far apart, at most
/// [`RESYNC_ROUNDS`] rounds: their reconnections spread over about two seconds instead of
/// arriving at once.
const RESYNC_ROUND: Duration = Duration::from_millis(50);
const RESYNC_ROUNDS: usize = 40;
/// Attempts to record a taint on the bus before the sessions are closed anyway (their local
/// numbers are far above the cluster's, so a resume from them is refused even without it).
const TAINT_ATTEMPTS: u32 = 3;

/// What a join frame shows: state version, seq, cluster-wide connections.
type JoinFrameKey = (u64, u64, Option<u64>);

/// A state as sent to sessions: its number on the wire (`state_version`, +1 for each state
/// sent), the task's version it was, and its text.
struct WireState {
    number: u64,
    version: u64,
    text: Arc<str>,
}

/// The last two states sent to sessions, and the merge patch from the older to the newer
/// (computed once, when a delta session first needs it): at most two state encodings per
/// tick, a full one and a patch, whatever the number of sessions.
#[derive(Default)]
struct WireStates {
    current: Option<WireState>,
    previous: Option<WireState>,
    /// `None`: not computed yet; `Some(None)`: no patch worth sending.
    patch: Option<Option<Box<str>>>,
}

impl WireStates {
    /// The wire number of the state at task `version` (with `text`), which becomes the current
    /// one if it is not already.
    fn sent(&mut self, version: u64, text: &Arc<str>) -> u64 {
        match &self.current {
            Some(c) if c.version == version => c.number,
            _ => {
                let number = self.current.as_ref().map_or(1, |c| c.number + 1);
                self.previous = self.current.replace(WireState {
                    number,
                    version,
                    text: text.clone(),
                });
                self.patch = None;
                number
            }
        }
    }

    /// Whether a session last sent the task's version `has` has the previous state sent.
    fn has_previous(&self, has: u64) -> bool {
        self.previous.as_ref().is_some_and(|p| p.version == has)
    }

    /// The patch from the previous state sent to the current one, when worth sending.
    fn patch(&mut self) -> Option<&str> {
        let previous = self.previous.as_ref()?;
        let current = self.current.as_ref()?;
        self.patch
            .get_or_insert_with(|| {
                crate::delta::merge_patch(&previous.text, &current.text).map(Into::into)
            })
            .as_deref()
    }
}

/// The broadcast task of one campaign.
pub(crate) struct Campaign {
    shared: Arc<CampaignShared>,
    inbox: mpsc::Receiver<Input>,
    node: Arc<NodeInner>,
    /// The current state, as JSON text.
    state: Arc<str>,
    /// Bumped on every state change; sessions remember the version they were sent.
    state_version: u64,
    /// The last two states sent, numbered for the wire, for delta frames.
    wire: WireStates,
    pending: Vec<EncodedEvent>,
    /// The latest events (at most `history_size`, none older than `history_ttl`), oldest
    /// first, with the time (node clock, ms) they arrived: what resuming clients recover.
    history: VecDeque<(i64, EncodedEvent)>,
    /// Highest `seq` already broadcast (or passed, when nobody was connected).
    sent_seq: u64,
    /// The cluster-wide connection count ticks carry, once known (presence campaigns only).
    connections: Option<u64>,
    /// Version of the current state on the bus (0: never published through it).
    state_rev: u64,
    /// The state frame new sessions get, and what it was built from.
    join_frame: Option<(JoinFrameKey, Arc<SharedFrame>)>,
    /// The history's epoch (from the broker, the same on every node): a client resuming from
    /// another history learns it cannot recover.
    epoch: Box<str>,
    /// Membership version at the last broadcast in which every session got the current
    /// state; lets an idle tick return without looking at any session.
    settled_members: Option<u64>,
    /// While detached: the cluster's epoch and the last `seq` seen from the bus when the
    /// detachment began (restored on reattach).
    detached_from: Option<(Box<str>, u64)>,
    /// While detached: the highest event `seq` the bus delivered (ignored, not applied), and
    /// how many times the node asked to reattach.
    bus_seen: u64,
    reattach_asks: u32,
    /// While detached: the bus's events, kept for the history (not sent), oldest first.
    bus_events: Vec<EncodedEvent>,
    /// Ranges of `seq`s this node handed out on its own in a cluster epoch (see [`Taint`]):
    /// resumes from inside them are refused. At most [`MAX_TAINTS`], oldest first.
    tainted: VecDeque<Taint>,
    /// Set when the bus began a new epoch, until its first event: an event at or below the
    /// `seq` already sent means the new numbering did not continue above the old (sessions
    /// then resync) rather than one already seen.
    fresh_epoch: bool,
    last_overflow_warn_ms: i64,
}

/// Period of a frequency, clamped to the accepted range.
fn period(hz: f64) -> Duration {
    let hz = if crate::config::frequency_in_range(hz) {
        hz
    } else {
        crate::config::DEFAULT_FREQUENCY_HZ
    };
    Duration::from_secs_f64(1.0 / hz)
}

fn interval_starting(start: Instant, hz: f64) -> Interval {
    let p = period(hz);
    let mut i = tokio::time::interval_at(start, p);
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

impl Campaign {
    /// Builds the task and its shared half.
    pub(crate) fn new(spec: CampaignSpec, node: Arc<NodeInner>) -> (Self, Arc<CampaignShared>) {
        let (tx, rx) = mpsc::channel(node.config.campaign_inbox_capacity.max(1));
        let shared = Arc::new(CampaignShared {
            id_json: json_string(&spec.id).into_boxed_str(),
            id: Arc::from(spec.id.as_str()),
            members: Members::new(),
            inbox: tx,
            frequency_bits: AtomicU64::new(spec.frequency_hz.to_bits()),
            client_events: AtomicBool::new(spec.client_events),
            presence: AtomicBool::new(spec.presence),
            delta: AtomicBool::new(spec.delta),
            cluster: Mutex::new(None),
            interest: tokio::sync::Mutex::new(0),
            last_seq: AtomicU64::new(0),
            history_from: AtomicU64::new(0),
            detached: AtomicBool::new(false),
            cluster_epoch: Mutex::new(spec.epoch.as_deref().map(Arc::from)),
            frames_sent: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            events: AtomicU64::new(0),
            peak_connections: AtomicU64::new(0),
            ended: std::sync::OnceLock::new(),
            tick_times: Mutex::new(VecDeque::new()),
            samples: Mutex::new(Samples::default()),
            metrics: node.metrics.clone(),
        });
        let state = spec.state.map_or_else(|| "{}".into(), |s| s.get().into());
        let task = Self {
            shared: shared.clone(),
            inbox: rx,
            node,
            state,
            state_version: 1,
            wire: WireStates::default(),
            pending: Vec::new(),
            history: VecDeque::new(),
            sent_seq: 0,
            connections: None,
            state_rev: 0,
            join_frame: None,
            epoch: spec
                .epoch
                .as_deref()
                .map_or_else(|| crate::broker::new_epoch().into(), Into::into),
            settled_members: None,
            detached_from: None,
            bus_seen: 0,
            reattach_asks: 0,
            bus_events: Vec::new(),
            tainted: VecDeque::new(),
            fresh_epoch: false,
            last_overflow_warn_ms: 0,
        };
        (task, shared)
    }

    /// Runs until the campaign ends or the node shuts down; either way every session gets a
    /// final frame and a close frame.
    pub(crate) async fn run(mut self) {
        let shutdown = self.node.shutdown.clone();
        let mut interval = interval_starting(Instant::now(), self.shared.frequency_hz());
        self.node.metrics.campaigns.increment(1.0);
        tracing::info!(campaign = %self.shared.id, frequency_hz = self.shared.frequency_hz(), "campaign task started");
        let close = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Close::SHUTDOWN,
                scheduled = interval.tick() => self.tick(scheduled),
                input = self.inbox.recv() => match input {
                    Some(Input::Publication(p)) => self.on_publication(p),
                    Some(Input::Configure(spec)) => self.configure(spec, &mut interval),
                    Some(Input::Presence(n)) => self.connections = Some(n),
                    Some(Input::CatchUp(snapshot)) => self.catch_up(snapshot),
                    Some(Input::Local { publications, seq }) => {
                        let mut first = None;
                        for p in publications {
                            let applied = self.publish_detached(p);
                            first.get_or_insert(applied);
                        }
                        let _ = seq.send(first.unwrap_or_default());
                    }
                    Some(Input::Reattach { through }) => self.reattach(through),
                    Some(Input::Join { session, resume, fetched, tainted }) => {
                        self.join(&session, resume.as_ref(), &fetched, tainted.as_deref());
                    }
                    Some(Input::Epoch(epoch)) => {
                        if self.detached_from.is_none() {
                            self.adopt_epoch(epoch);
                        } else {
                            // What the bus brought so far was of the old epoch: reattaching
                            // goes by the new one's numbers only.
                            self.bus_seen = 0;
                            self.bus_events.clear();
                            self.state_rev = 0;
                        }
                    }
                    Some(Input::End) | None => break Close::ENDED,
                },
            }
        };
        self.finish(close);
        self.node.metrics.campaigns.decrement(1.0);
        tracing::info!(campaign = %self.shared.id, code = close.code, "campaign task stopped");
    }

    fn tick(&mut self, scheduled: Instant) {
        let start = Instant::now();
        self.node
            .metrics
            .tick_lag
            .record(start.saturating_duration_since(scheduled).as_secs_f64());
        self.shared.record_tick(start);
        self.broadcast();
        self.node
            .metrics
            .tick_duration
            .record(start.elapsed().as_secs_f64());
    }

    pub(crate) fn on_publication(&mut self, p: Publication) {
        if self.detached_from.is_some() && !matches!(p, Publication::State { .. }) {
            // The bus is back and brings the cluster's events (this node's kept ones among
            // them, already shown here): the sessions are about to resync, not to get these.
            if let Publication::Event {
                seq,
                name,
                data,
                ts,
                user,
                ..
            } = p
            {
                self.bus_seen = self.bus_seen.max(seq);
                if self.bus_events.len() < self.node.config.history_size {
                    self.bus_events
                        .push(EncodedEvent::new(seq, &name, &data, ts, user.as_deref()));
                }
            }
            return;
        }
        if let Publication::Event { seq, .. } = &p
            && std::mem::take(&mut self.fresh_epoch)
            && *seq <= self.sent_seq
        {
            // The new epoch's numbers did not continue above the old ones: what the
            // sessions saw under these numbers was other events. They resync.
            tracing::warn!(campaign = %self.shared.id, seq, sent = self.sent_seq, "new epoch restarted below the sent seq: sessions resync");
            self.renumber(seq.saturating_sub(1));
        }
        match p {
            Publication::Event { seq, .. } if seq <= self.sent_seq.max(self.shared.last_seq()) => {
                // Already behind us (reported by the snapshot this node caught up from), or
                // already here (read back from the history after a lost pub/sub connection).
            }
            Publication::Event {
                seq,
                name,
                data,
                ts,
                immediate,
                user,
            } => {
                self.shared.last_seq.fetch_max(seq, Relaxed);
                self.shared.events.fetch_add(1, Relaxed);
                self.node.metrics.events.increment(1);
                if self.pending.len() >= self.node.config.max_pending_events {
                    self.node.metrics.inputs_dropped.increment(1);
                    let now = now_ms();
                    if now - self.last_overflow_warn_ms >= WARN_EVERY_MS {
                        self.last_overflow_warn_ms = now;
                        tracing::warn!(campaign = %self.shared.id, seq, "too many events for one tick: event dropped");
                    }
                    return;
                }
                let event = EncodedEvent::new(seq, &name, &data, ts, user.as_deref());
                self.remember(event.clone());
                self.pending.push(event);
                if immediate {
                    self.broadcast();
                }
            }
            Publication::State { state, version } => {
                // A state the bus counted is applied only if newer than the one we have (a
                // node that just caught up may still receive older ones).
                if version == 0 || version > self.state_rev {
                    self.state_rev = self.state_rev.max(version);
                    self.replace_state(&state);
                }
            }
            Publication::Message {
                seq,
                user,
                name,
                data,
                ts,
            } => {
                let f = SharedFrame::new(frame::message(seq, &name, &data, ts));
                let (_, members) = self.shared.members.snapshot();
                for s in members.iter().filter(|s| *s.user == *user) {
                    s.offer(f.for_session(false), &self.shared, self.node.slow_policy);
                }
            }
        }
    }

    /// Applies a publication made on this node while the bus is unreachable: the first one
    /// detaches the campaign into an epoch of its own (new sessions see it in their welcome;
    /// resuming across it is refused, so clients resync); events get the next local `seq`.
    /// Returns the `seq` (the event's, or the latest for a state or message).
    fn publish_detached(&mut self, p: Publication) -> u64 {
        if self.detached_from.is_none() {
            let base = self.sent_seq.max(self.shared.last_seq());
            let local = detached_epoch(&self.epoch, &self.node.config.node_id);
            tracing::warn!(campaign = %self.shared.id, epoch = %local, seq = base, "bus unreachable: publishing on this node only");
            self.detached_from = Some((std::mem::replace(&mut self.epoch, local), base));
            self.shared.detached.store(true, Relaxed);
        }
        // The first local number is the wall clock in microseconds: far above the cluster's
        // numbering, so no node can mistake a `seq` seen here for one of the cluster's (a
        // resume from it is refused everywhere, taint or not); the next ones follow it.
        let last = self.sent_seq.max(self.shared.last_seq());
        let first = self
            .detached_from
            .as_ref()
            .is_some_and(|(_, base)| last <= *base);
        let next = if first {
            (last + 1).max(frame::now_us())
        } else {
            last + 1
        };
        let (seq, p) = match p {
            Publication::Event {
                name,
                data,
                ts,
                immediate,
                user,
                ..
            } => (
                next,
                Publication::Event {
                    seq: next,
                    name,
                    data,
                    ts,
                    immediate,
                    user,
                },
            ),
            Publication::Message {
                user,
                name,
                data,
                ts,
                ..
            } => {
                let seq = self.shared.last_seq();
                (
                    seq,
                    Publication::Message {
                        seq,
                        user,
                        name,
                        data,
                        ts,
                    },
                )
            }
            state @ Publication::State { .. } => (self.shared.last_seq(), state),
        };
        // Applied as if the bus had delivered it (`detached_from` is taken for the call).
        let detached = self.detached_from.take();
        self.on_publication(p);
        self.detached_from = detached;
        seq
    }

    /// The bus is back: restores the cluster's epoch and `seq`, forgets the local events, and
    /// tells every session to resync (1012, spread over about two seconds): a resume from the
    /// detached epoch, or from inside the range of numbers this node handed out on its own
    /// (recorded on the bus as a [`Taint`] first, so every node refuses it), reports
    /// `recovered: false` and resyncs the state.
    fn reattach(&mut self, through: u64) {
        if self.detached_from.is_none() {
            return;
        }
        self.reattach_asks += 1;
        // Wait (up to ~2 s of asks) for the kept events to come back, so that none reaches a
        // session after the resync as if it were new.
        if self.bus_seen < through && self.reattach_asks < REATTACH_ASKS {
            return;
        }
        let Some((epoch, detached_at)) = self.detached_from.take() else {
            return;
        };
        let current = self.shared.cluster_epoch();
        let same_epoch = current.as_deref().is_none_or(|c| c == &*epoch);
        // In a new epoch, `detached_at` is of the old numbering: only the new one's counts.
        let caught_up = if same_epoch {
            detached_at.max(through).max(self.bus_seen)
        } else {
            through.max(self.bus_seen)
        };
        let bus_events = std::mem::take(&mut self.bus_events);
        let taint = if same_epoch {
            // The local events (after `detached_at`) leave the history: their seqs were this
            // node's; the cluster's events up to `caught_up` went by while detached.
            self.history.retain(|(_, e)| e.seq <= detached_at);
            self.history_changed();
            let mut bus_events = bus_events;
            bus_events.sort_by_key(|e| e.seq);
            for e in bus_events.into_iter().filter(|e| e.seq > detached_at) {
                self.remember(e);
            }
            self.epoch = epoch;
            let taint = Taint {
                epoch: self.epoch.to_string(),
                after: detached_at,
                through: caught_up,
            };
            if self.tainted.len() >= MAX_TAINTS {
                self.tainted.pop_front();
            }
            self.tainted.push_back(taint.clone());
            Some(taint)
        } else {
            // The bus began a new epoch meanwhile (it lost its keys): nothing of the old one
            // can be resumed from.
            self.history.clear();
            self.history_changed();
            self.epoch = current.map_or(epoch, |c| c.to_string().into_boxed_str());
            None
        };
        self.bus_seen = 0;
        self.reattach_asks = 0;
        self.sent_seq = caught_up;
        self.shared.last_seq.store(caught_up, Relaxed);
        self.pending.clear();
        self.join_frame = None;
        self.shared.detached.store(false, Relaxed);
        let sessions = self.resync_all_after(taint);
        tracing::info!(campaign = %self.shared.id, sessions, "bus reachable again: sessions told to resync");
    }

    /// A new epoch numbers from `seq` on, below what the sessions already saw: they resync
    /// (1012, see [`Campaign::resync_all_after`]), and what is pending goes.
    fn renumber(&mut self, seq: u64) {
        self.sent_seq = seq;
        self.shared.last_seq.store(seq, Relaxed);
        self.pending.clear();
        self.resync_all_after(None);
    }

    /// Takes every session out of the broadcast at once (they get nothing more) and closes
    /// them with 1012 in rounds over about two seconds, after `taint` (if any) is on the bus,
    /// so that no node can answer their resumes with the wrong events. Returns how many.
    fn resync_all_after(&mut self, taint: Option<Taint>) -> usize {
        let (_, members) = self.shared.members.snapshot();
        for s in members.iter() {
            self.shared.members.remove(s.id);
        }
        self.settled_members = None;
        let sessions: Vec<Arc<Session>> = members.iter().cloned().collect();
        let n = sessions.len();
        let node = self.node.clone();
        let campaign = self.shared.id.clone();
        self.node.tracker.spawn(async move {
            if let Some(taint) = taint {
                for attempt in 1..=TAINT_ATTEMPTS {
                    match node.broker.taint(&campaign, taint.clone()).await {
                        Ok(()) => break,
                        Err(e) if attempt == TAINT_ATTEMPTS => {
                            tracing::warn!(campaign = %campaign, error = %e, "taint not recorded on the bus");
                        }
                        Err(_) => tokio::time::sleep(RESYNC_ROUND * 4).await,
                    }
                }
            }
            let per_round = n.div_ceil(RESYNC_ROUNDS).max(50);
            for (i, round) in sessions.chunks(per_round).enumerate() {
                if i > 0 {
                    tokio::time::sleep(RESYNC_ROUND).await;
                }
                for s in round {
                    s.close(Close::RESYNC);
                }
            }
        });
        n
    }

    /// Takes the bus's new epoch: the history starts afresh (nothing of the old epoch can be
    /// resumed from); sessions stay, and the new `seq`s continue above the old ones (a jump
    /// that tells them they may have missed something).
    fn adopt_epoch(&mut self, epoch: Arc<str>) {
        if *epoch == *self.epoch {
            return;
        }
        tracing::warn!(campaign = %self.shared.id, from = %self.epoch, to = %epoch, "the bus began a new epoch");
        self.epoch = epoch.to_string().into_boxed_str();
        self.history.clear();
        self.history_changed();
        self.tainted.clear();
        self.join_frame = None;
        self.fresh_epoch = true;
        // The bus counts state versions afresh too.
        self.state_rev = 0;
    }

    fn configure(&mut self, spec: CampaignSpec, interval: &mut Interval) {
        self.shared.client_events.store(spec.client_events, Relaxed);
        self.shared.presence.store(spec.presence, Relaxed);
        self.shared.delta.store(spec.delta, Relaxed);
        if !spec.presence {
            self.connections = None;
        }
        // The same settings can arrive twice (applied locally, then from the bus): an equal
        // state is not a change.
        if let Some(state) = spec.state
            && state.get() != &*self.state
        {
            self.replace_state(&state);
        }
        let old = self.shared.frequency_hz();
        if spec.frequency_hz.to_bits() != old.to_bits()
            && crate::config::frequency_in_range(spec.frequency_hz)
        {
            self.shared
                .frequency_bits
                .store(spec.frequency_hz.to_bits(), Relaxed);
            *interval = interval_starting(
                Instant::now() + period(spec.frequency_hz),
                spec.frequency_hz,
            );
            let f = SharedFrame::new(frame::config(spec.frequency_hz));
            let (_, members) = self.shared.members.snapshot();
            for s in members.iter() {
                s.offer(f.for_session(false), &self.shared, self.node.slow_policy);
            }
            tracing::info!(campaign = %self.shared.id, from_hz = old, to_hz = spec.frequency_hz, "campaign retimed");
        }
    }

    /// Adds an event to the history, dropping what is too old or beyond its size.
    fn remember(&mut self, event: EncodedEvent) {
        let cfg = &self.node.config;
        if cfg.history_size == 0 {
            return;
        }
        let now = self.node.slow_policy.now_ms();
        self.history.push_back((now, event));
        while self.history.len() > cfg.history_size {
            self.history.pop_front();
        }
        self.expire_history(now);
    }

    fn expire_history(&mut self, now: i64) {
        let ttl = i64::try_from(self.node.config.history_ttl.as_millis()).unwrap_or(i64::MAX);
        while self.history.front().is_some_and(|(at, _)| now - at > ttl) {
            self.history.pop_front();
        }
        self.history_changed();
    }

    /// Publishes where the history starts (see [`CampaignShared::history_covers`]).
    fn history_changed(&self) {
        let from = self.history.front().map_or(0, |(_, e)| e.seq);
        self.shared.history_from.store(from, Relaxed);
    }

    /// The events after `since` up to what was already broadcast, if this node's history and
    /// the events `fetched` from the bus together hold every one of them (and the client's
    /// epoch is this history's).
    fn recover(
        &mut self,
        resume: &Resume,
        fetched: &[EncodedEvent],
        tainted: Option<&[Taint]>,
    ) -> Option<Vec<EncodedEvent>> {
        let epoch = resume.epoch.as_deref();
        if epoch.is_some_and(|e| e != &*self.epoch) || resume.since > self.sent_seq {
            return None;
        }
        let tainted = tainted?;
        if self
            .tainted
            .iter()
            .chain(tainted)
            .any(|t| t.epoch == *self.epoch && t.covers(resume.since, epoch))
        {
            return None;
        }
        if resume.since == self.sent_seq {
            return Some(Vec::new());
        }
        self.expire_history(self.node.slow_policy.now_ms());
        let wanted = |e: &&EncodedEvent| e.seq > resume.since && e.seq <= self.sent_seq;
        let mut events: std::collections::BTreeMap<u64, EncodedEvent> =
            std::collections::BTreeMap::new();
        for e in fetched
            .iter()
            .filter(wanted)
            .chain(self.history.iter().map(|(_, e)| e).filter(wanted))
        {
            events.insert(e.seq, e.clone());
        }
        // Every seq from since + 1 to sent_seq, or the client would see a hole.
        let complete = events.len() as u64 == self.sent_seq - resume.since;
        complete.then(|| events.into_values().collect())
    }

    /// Welcomes a session, sends it what it missed (when it resumes) with the current state,
    /// and makes it a member: from the next tick on it gets the live frames.
    fn join(
        &mut self,
        session: &Arc<Session>,
        resume: Option<&Resume>,
        fetched: &[EncodedEvent],
        tainted: Option<&[Taint]>,
    ) {
        // Promise a recovery only if its frame fits: in the queue (with the welcome) and
        // under the size cap.
        let recovered = resume.map(|r| {
            self.recover(r, fetched, tainted).filter(|events| {
                let bytes: usize = events.iter().map(|e| e.json.len()).sum();
                bytes <= MAX_RECOVERY_BYTES && session.queue.room() >= 2
            })
        });
        let welcome = frame::welcome(&frame::Welcome {
            campaign_json: &self.shared.id_json,
            user: &session.user,
            node: &self.node.config.node_id,
            seq: self.sent_seq,
            epoch: &self.epoch,
            frequency_hz: self.shared.frequency_hz(),
            recovered: recovered.as_ref().map(Option::is_some),
        });
        let policy = self.node.slow_policy;
        session.offer(welcome, &self.shared, policy);
        // Then, at once rather than at the next tick, the state (and the missed events when
        // it resumes) in one tick frame. Without events the frame is shared by every join
        // until the state, the seq or the count changes (a reconnect storm encodes it once).
        let events = recovered.flatten().unwrap_or_default();
        let key = (self.state_version, self.sent_seq, self.connections);
        let number = self.wire.sent(self.state_version, &self.state);
        let frame = match &self.join_frame {
            Some((k, f)) if events.is_empty() && *k == key => f.clone(),
            _ => {
                let json = frame::tick(
                    &self.shared.id_json,
                    self.sent_seq,
                    now_ms(),
                    TickState::Full {
                        state: &self.state,
                        version: Some(number),
                    },
                    &events,
                    self.connections,
                );
                let f = Arc::new(SharedFrame::new(json));
                if events.is_empty() {
                    self.join_frame = Some((key, f.clone()));
                }
                f
            }
        };
        if session.offer(frame.for_session(session.compress), &self.shared, policy) {
            session.set_state_version(self.state_version);
        }
        join(&self.shared, session.clone());
    }

    /// Catches up with the bus after a time without following it: what was published
    /// meanwhile is behind us (resuming clients recover it from the bus's history).
    fn catch_up(&mut self, snapshot: crate::broker::Snapshot) {
        if let Some(epoch) = snapshot.epoch.as_deref()
            && self.detached_from.is_none()
            && epoch != &*self.epoch
        {
            self.shared.set_cluster_epoch(epoch);
            self.adopt_epoch(Arc::from(epoch));
            // The snapshot says where the new epoch stands.
            self.fresh_epoch = false;
            if snapshot.seq < self.sent_seq {
                self.renumber(snapshot.seq);
            }
        }
        self.sent_seq = self.sent_seq.max(snapshot.seq);
        self.shared.last_seq.fetch_max(snapshot.seq, Relaxed);
        // Nobody here is owed these any more (there were no sessions): the joining session
        // starts after them.
        self.pending.retain(|e| e.seq > snapshot.seq);
        if let Some(state) = snapshot.state
            && snapshot.state_version > self.state_rev
        {
            self.state_rev = snapshot.state_version;
            self.replace_state(&state);
        }
    }

    /// The latest state wins: it replaces the previous one, whether or not that was sent.
    fn replace_state(&mut self, state: &serde_json::value::RawValue) {
        self.state = state.get().into();
        self.state_version += 1;
        self.settled_members = None;
    }

    /// Sends what there is to say to every session: the pending events, and the state to the
    /// sessions that do not have the current one. Encodes at most two frames (with and without
    /// state), and compresses each at most once.
    pub(crate) fn broadcast(&mut self) {
        let has_events = !self.pending.is_empty();
        if let Some(last) = self.pending.last() {
            self.sent_seq = self.sent_seq.max(last.seq);
        }
        let (members_version, members) = self.shared.members.snapshot();
        if members.is_empty() {
            self.pending.clear();
            return;
        }
        if !has_events && self.settled_members == Some(members_version) {
            return;
        }
        let (seq, ts) = (self.shared.last_seq(), now_ms());
        let (id, state, events) = (&*self.shared.id_json, &self.state, &self.pending[..]);
        let connections = self.connections;
        let campaign_delta = self.shared.delta.load(Relaxed);
        let mut with_state: Option<SharedFrame> = None;
        let mut without_state: Option<SharedFrame> = None;
        // `None`: not built yet; `Some(None)`: no patch this tick.
        let mut with_patch: Option<Option<SharedFrame>> = None;
        let mut number = None;
        let mut settled = true;
        let policy = self.node.slow_policy;
        for s in members.iter() {
            let has = s.state_version();
            let stale = has != self.state_version;
            if !stale && !has_events {
                continue;
            }
            let f = if stale {
                let number =
                    *number.get_or_insert_with(|| self.wire.sent(self.state_version, state));
                let patch = if s.delta.unwrap_or(campaign_delta) && self.wire.has_previous(has) {
                    with_patch
                        .get_or_insert_with(|| {
                            self.wire.patch().map(|patch| {
                                SharedFrame::new(frame::tick(
                                    id,
                                    seq,
                                    ts,
                                    TickState::Patch {
                                        patch,
                                        version: number,
                                    },
                                    events,
                                    connections,
                                ))
                            })
                        })
                        .as_ref()
                } else {
                    None
                };
                match patch {
                    Some(f) => f,
                    None => with_state.get_or_insert_with(|| {
                        SharedFrame::new(frame::tick(
                            id,
                            seq,
                            ts,
                            TickState::Full {
                                state,
                                version: Some(number),
                            },
                            events,
                            connections,
                        ))
                    }),
                }
            } else {
                without_state.get_or_insert_with(|| {
                    SharedFrame::new(frame::tick(
                        id,
                        seq,
                        ts,
                        TickState::Unchanged,
                        events,
                        connections,
                    ))
                })
            };
            let queued = s.offer(f.for_session(s.compress), &self.shared, policy);
            if stale {
                if queued {
                    s.set_state_version(self.state_version);
                } else {
                    settled = false;
                }
            }
        }
        self.settled_members = settled.then_some(members_version);
        self.pending.clear();
    }

    fn finish(&mut self, close: Close) {
        self.broadcast();
        let _ = self.shared.ended.set(close);
        let (_, members) = self.shared.members.snapshot();
        for s in members.iter() {
            s.close(close);
        }
        // Sessions still waiting to join will never be served.
        self.inbox.close();
        while let Ok(input) = self.inbox.try_recv() {
            if let Input::Join { session, .. } = input {
                session.close(close);
            }
        }
        self.node
            .hub
            .remove_if(&self.shared.id, |_, c| Arc::ptr_eq(c, &self.shared));
    }
}

/// Registers `session` with `campaign`; a session that joins after the campaign's final frame
/// is closed at once.
pub(crate) fn join(campaign: &CampaignShared, session: Arc<Session>) {
    campaign.members.insert(session.clone());
    campaign
        .peak_connections
        .fetch_max(campaign.members.len() as u64, Relaxed);
    if let Some(close) = campaign.ended.get() {
        session.close(*close);
    }
    // A session whose connection ended before its join was handled: its task has returned
    // (it always sets the close first) and will not remove it any more.
    if session.is_closed() {
        campaign.members.remove(session.id);
    }
}

/// The epoch of a campaign detached on this node: the cluster's, `~`, and a short mark of the
/// node and the time; at most [`crate::broker::MAX_EPOCH_LEN`] characters however long the
/// node's name, so that clients can send it back.
fn detached_epoch(cluster: &str, node: &str) -> Box<str> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    let mark = format!("~{:08x}{:x}", h.finish() as u32, now_ms());
    let mut end = cluster
        .len()
        .min(crate::broker::MAX_EPOCH_LEN.saturating_sub(mark.len()));
    while !cluster.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &cluster[..end]).into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_epoch_fits_the_api_whatever_the_node_name() {
        let long = "n".repeat(200);
        let e = detached_epoch("19ac2f1e0a1b2c3d4", &long);
        assert!(e.len() <= crate::broker::MAX_EPOCH_LEN, "{e}");
        assert!(e.starts_with("19ac2f1e0a1b2c3d4~"));
        let e = detached_epoch(&"é".repeat(60), "node-a");
        assert!(e.len() <= crate::broker::MAX_EPOCH_LEN, "{e}");
        assert_ne!(detached_epoch("e", "node-a"), detached_epoch("e", "node-b"));
    }

    #[test]
    fn a_taint_covers_only_its_range_of_its_epoch() {
        let t = Taint {
            epoch: "e".into(),
            after: 10,
            through: 20,
        };
        assert!(!t.covers(10, Some("e")), "before the detachment");
        assert!(t.covers(11, Some("e")));
        assert!(t.covers(20, None), "no epoch: it may be this one");
        assert!(!t.covers(21, Some("e")), "after the range");
        assert!(!t.covers(15, Some("other")), "another epoch");
    }
}
