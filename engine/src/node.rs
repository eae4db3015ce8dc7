//! [`Node`]: the process's handle on the engine. It owns the hub of running campaigns, the
//! broker every publish goes through, and the tasks of campaigns and sessions; it is what the
//! node binary calls from its REST and WebSocket handlers. Besides campaigns' publications, it
//! pushes notifications to every authenticated session of one user, on every node
//! ([`Node::notify_user`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError, CampaignSpec, Control, Deliver, Publication};
use crate::campaign::{Campaign, CampaignShared, CampaignStats, Input, Resume};
use crate::config::{self, Config};
use crate::error::EngineError;
use crate::frame::{EncodedEvent, now_ms};
use crate::hub::Hub;
use crate::metrics::{self, Metrics};
use crate::principal::{Principal, Principals, TokenVerifier};
use crate::session::{self, Close, Session, SlowPolicy};

/// The engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    pub config: Config,
    pub slow_policy: SlowPolicy,
    pub broker: Arc<dyn Broker>,
    pub metrics: Metrics,
    pub hub: Hub,
    pub shutdown: CancellationToken,
    /// Campaign and session tasks, awaited at shutdown.
    pub tracker: TaskTracker,
    next_session: AtomicU64,
    /// Ids of this node's publications on the bus: a retry carries the first attempt's id,
    /// so that the bus applies it once.
    next_publish: AtomicU64,
    /// Whether the pinger task runs (it starts with the first session).
    pinger: std::sync::Once,
    /// Whether the presence task runs (it starts with the first campaign).
    presence: std::sync::Once,
    /// Publications made here while the bus was unreachable, oldest first: published on the
    /// bus, in order, once it is back (so other nodes get them late rather than never); and
    /// publications made since it came back, queued behind them.
    outbox: Mutex<VecDeque<Kept>>,
    /// Whether the bus took the last publication handed to it (a bus whose pub/sub is up may
    /// still refuse writes).
    bus_writable: std::sync::atomic::AtomicBool,
    /// Per detached campaign: the highest cluster `seq` of its kept events, once the bus has
    /// them; the campaign reattaches when it has seen them come back.
    reattach_through: Mutex<std::collections::HashMap<String, u64>>,
    /// The sessions opened with a token, by account, for revocations and expiry.
    pub(crate) principals: Principals,
    /// Checks the tokens of `refresh` frames (set by the node binary).
    pub(crate) verifier: std::sync::OnceLock<Arc<dyn TokenVerifier>>,
    /// Whether the expiry task runs (it starts with the first session that has a token).
    expiry: std::sync::Once,
    /// A weak handle on this very value, for the tasks that [`Deliver::control`] starts.
    me: Weak<NodeInner>,
}

impl Node {
    /// Starts a node on `broker`. Must be called inside a Tokio runtime.
    pub fn new(config: Config, broker: Arc<dyn Broker>) -> Self {
        metrics::describe();
        let slow_policy = SlowPolicy {
            drops: config.slow_close_drops,
            full_ms: i64::try_from(config.slow_close_after.as_millis()).unwrap_or(i64::MAX),
            epoch: tokio::time::Instant::now(),
        };
        let inner = Arc::new_cyclic(|me| NodeInner {
            config,
            slow_policy,
            broker,
            metrics: Metrics::new(),
            hub: Hub::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_session: AtomicU64::new(1),
            next_publish: AtomicU64::new(1),
            pinger: std::sync::Once::new(),
            presence: std::sync::Once::new(),
            outbox: Mutex::new(VecDeque::new()),
            bus_writable: std::sync::atomic::AtomicBool::new(true),
            reattach_through: Mutex::new(std::collections::HashMap::new()),
            principals: Principals::default(),
            verifier: std::sync::OnceLock::new(),
            expiry: std::sync::Once::new(),
            me: me.clone(),
        });
        let sink: Weak<dyn Deliver> = Arc::downgrade(&inner) as Weak<dyn Deliver>;
        inner.broker.attach(sink);
        Self { inner }
    }

    /// This node's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This node's name.
    pub fn id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Starts the campaign's broadcast task on every node, or retimes and reconfigures the
    /// running one (a `config` frame tells clients of a new frequency).
    ///
    /// # Errors
    /// [`EngineError::FrequencyOutOfRange`], or a broker error.
    pub async fn upsert_campaign(&self, mut spec: CampaignSpec) -> Result<(), EngineError> {
        check_frequency(spec.frequency_hz)?;
        if spec.epoch.is_none() {
            // A change to a running campaign keeps the epoch the node knows (a new one, if
            // Redis lost its keys, is begun by the next publish, above the old numbering);
            // only a campaign this node does not run asks the bus (created at its start).
            let running = self
                .inner
                .hub
                .get(spec.id.as_str())
                .filter(|c| !c.is_ended())
                .and_then(|c| c.cluster_epoch());
            spec.epoch = Some(match running {
                Some(e) => e.to_string(),
                None => self.inner.broker.epoch(&spec.id).await?,
            });
        }
        self.inner
            .broker
            .control(Control::Upsert(spec.clone()))
            .await?;
        // Applied here at once too, so that the caller can publish as soon as this returns,
        // whatever the bus's delay; the copy the bus brings back is then a no-op.
        self.inner.upsert_local(spec);
        Ok(())
    }

    /// Ends the campaign everywhere: a final frame, then close 1000 for its sessions.
    ///
    /// # Errors
    /// A broker error.
    pub async fn end_campaign(&self, campaign: &str) -> Result<(), EngineError> {
        self.inner
            .broker
            .control(Control::End {
                campaign: campaign.to_owned(),
            })
            .await?;
        Deliver::control(
            &*self.inner,
            Control::End {
                campaign: campaign.to_owned(),
            },
        );
        Ok(())
    }

    /// Publishes an event; returns its `seq`. It goes out with the next tick, or at once when
    /// `immediate`.
    ///
    /// # Errors
    /// [`EngineError::UnknownCampaign`], [`EngineError::InvalidEventName`], or a broker error.
    pub async fn publish_event(
        &self,
        campaign: &str,
        name: &str,
        data: Box<RawValue>,
        immediate: bool,
    ) -> Result<u64, EngineError> {
        if !session::valid_event_name(name) {
            return Err(EngineError::InvalidEventName {
                name: name.to_owned(),
            });
        }
        session::check_event_data(&data).map_err(|reason| EngineError::InvalidData {
            what: "event data",
            reason,
        })?;
        self.running(campaign)?;
        let p = Publication::Event {
            seq: 0,
            name: name.to_owned(),
            data,
            ts: now_ms(),
            immediate,
            user: None,
        };
        self.publish(campaign, p).await
    }

    async fn publish(&self, campaign: &str, p: Publication) -> Result<u64, EngineError> {
        self.inner.publish(campaign, p).await
    }

    /// Publishes `events` as one unit: they get consecutive `seq`s in their order, with no
    /// other publication of the campaign between them (on every node); returns the first and
    /// the last. Each goes out with the next tick, or at once when its `immediate` is set.
    /// Nothing is published unless every event is valid.
    ///
    /// # Errors
    /// [`EngineError::InvalidBatch`] for no events, more than [`MAX_BATCH_EVENTS`], or an invalid
    /// event (with its index); [`EngineError::UnknownCampaign`], or a broker error.
    pub async fn publish_events(
        &self,
        campaign: &str,
        events: Vec<NewEvent>,
    ) -> Result<std::ops::RangeInclusive<u64>, EngineError> {
        let invalid =
            |index: Option<usize>, reason: String| EngineError::InvalidBatch { index, reason };
        if events.is_empty() {
            return Err(invalid(None, "a batch has at least one event".to_owned()));
        }
        if events.len() > MAX_BATCH_EVENTS {
            return Err(invalid(
                None,
                format!(
                    "a batch has at most {MAX_BATCH_EVENTS} events, not {}",
                    events.len()
                ),
            ));
        }
        for (index, e) in events.iter().enumerate() {
            if !session::valid_event_name(&e.name) {
                return Err(invalid(
                    Some(index),
                    format!(
                        "invalid event name {:?}: use 1-64 characters [A-Za-z0-9_.:-]",
                        e.name
                    ),
                ));
            }
            session::check_event_data(&e.data)
                .map_err(|reason| invalid(Some(index), format!("invalid event data: {reason}")))?;
        }
        self.running(campaign)?;
        let ts = now_ms();
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let publications = events
            .into_iter()
            .map(|e| Publication::Event {
                seq: 0,
                name: e.name,
                data: e.data,
                ts,
                immediate: e.immediate,
                user: None,
            })
            .collect();
        let first = self.inner.publish_all(campaign, publications).await?;
        Ok(first..=first + (count - 1))
    }

    /// Replaces the campaign's state; clients get it with the next tick.
    ///
    /// # Errors
    /// [`EngineError::UnknownCampaign`], or a broker error.
    pub async fn set_state(&self, campaign: &str, state: Box<RawValue>) -> Result<(), EngineError> {
        self.running(campaign)?;
        self.publish(campaign, Publication::State { state, version: 0 })
            .await?;
        Ok(())
    }

    /// Sends a message at once to every session of `user` in the campaign, on every node.
    /// Returns the campaign's latest `seq`, which the message carries.
    ///
    /// # Errors
    /// [`EngineError::UnknownCampaign`], [`EngineError::InvalidEventName`], or a broker error.
    pub async fn send_to_user(
        &self,
        campaign: &str,
        user: &str,
        name: &str,
        data: Box<RawValue>,
    ) -> Result<u64, EngineError> {
        if !session::valid_event_name(name) {
            return Err(EngineError::InvalidEventName {
                name: name.to_owned(),
            });
        }
        session::check_event_data(&data).map_err(|reason| EngineError::InvalidData {
            what: "event data",
            reason,
        })?;
        self.running(campaign)?;
        let p = Publication::Message {
            seq: 0,
            user: user.to_owned(),
            name: name.to_owned(),
            data,
            ts: now_ms(),
        };
        self.publish(campaign, p).await
    }

    /// Pushes `notification` to every live session of `user` on every node, whatever the
    /// campaign: one text frame `{"type":"notification","notification":<payload>}` each,
    /// through the session's queue (dropped and counted when it is full, like any frame). It
    /// has no `seq` and is part of no campaign's stream. Only sessions opened with a token of
    /// `user`'s get it (not anonymous ones), once their `welcome` is queued. At most once and
    /// not retried: the durable copy is the notification service's inbox.
    ///
    /// # Errors
    /// [`EngineError::InvalidData`] for a user id that is not 1-128 characters without spaces
    /// or control characters, or a payload over
    /// [`MAX_NOTIFICATION_BYTES`](session::MAX_NOTIFICATION_BYTES) or that not every client
    /// could receive; [`EngineError::ShuttingDown`]; or a broker error (the bus cannot be
    /// reached: no node delivered it, unless a timeout hid a delivery).
    pub async fn notify_user(
        &self,
        user: &str,
        notification: Box<RawValue>,
    ) -> Result<(), EngineError> {
        if !session::valid_user_id(user) {
            return Err(EngineError::InvalidData {
                what: "user id",
                reason: format!(
                    "a user id has 1-{} characters without spaces or control characters",
                    session::MAX_USER_ID
                ),
            });
        }
        session::check_notification(&notification).map_err(|reason| EngineError::InvalidData {
            what: "notification",
            reason,
        })?;
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        self.inner.broker.notify(user, notification).await?;
        Ok(())
    }

    /// The sessions of `user` on this node that a notification reaches now: opened with a
    /// token, welcomed, not closing.
    pub fn local_user_sessions(&self, user: &str) -> usize {
        self.inner
            .principals
            .sessions_of(user)
            .iter()
            .filter(|(s, c)| c.members.contains(s.id))
            .count()
    }

    /// The campaigns whose task runs on this node.
    pub fn campaign_ids(&self) -> Vec<String> {
        self.inner
            .hub
            .iter()
            .filter(|c| !c.is_ended())
            .map(|c| c.id.to_string())
            .collect()
    }

    /// Whether the campaign's task runs on this node.
    pub fn has_campaign(&self, campaign: &str) -> bool {
        self.inner.hub.get(campaign).is_some_and(|c| !c.is_ended())
    }

    /// The campaign's figures on this node.
    pub fn stats(&self, campaign: &str) -> Option<CampaignStats> {
        self.inner
            .hub
            .get(campaign)
            .map(|c| c.stats(&self.inner.config.node_id))
    }

    /// A campaign's figures on this node every `stats_interval` over the last
    /// [`crate::HISTORY_WINDOW`], oldest first (`None` for a campaign not running here).
    pub fn stats_history(&self, campaign: &str) -> Option<Vec<crate::StatsSample>> {
        self.inner.hub.get(campaign).map(|c| c.samples())
    }

    /// Sessions open on this node.
    pub fn connections(&self) -> usize {
        self.inner.hub.iter().map(|c| c.members.len()).sum()
    }

    /// Whether the bus is reachable.
    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && self.inner.broker.is_ready()
    }

    /// Sets how `refresh` frames are checked (once; later calls are ignored).
    pub fn set_token_verifier(&self, verifier: Arc<dyn TokenVerifier>) {
        let _ = self.inner.verifier.set(verifier);
    }

    /// Closes, with 4401, the sessions on this node opened with a token of `user`'s of a
    /// generation below `floor`, and any such session that opens later; returns how many were
    /// open.
    pub fn revoke_sessions(&self, user: &str, floor: u64) -> usize {
        let closed = self.inner.principals.revoke(user, floor);
        if closed > 0 {
            tracing::info!(
                user,
                floor,
                sessions = closed,
                "sessions closed: token revoked"
            );
        }
        closed
    }

    /// Serves one upgraded WebSocket of `user` on `campaign` until it closes: sends the
    /// welcome frame, joins the campaign, and runs the session. A campaign that ended in the
    /// meantime gets a close 1000 at once. `principal` is who the session's token was issued
    /// to, when it had one: [`Node::revoke_sessions`] closes it. Returns the close code the
    /// session ended with.
    pub async fn serve_session<S>(
        &self,
        campaign: &str,
        user: &str,
        principal: Option<Principal>,
        encoding: crate::Encoding,
        resume: Option<Resume>,
        mut ws: S,
    ) -> u16
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin,
    {
        let inner = &self.inner;
        let shared = match inner.hub.get(campaign) {
            Some(c) if !c.is_ended() && !inner.shutdown.is_cancelled() => c.clone(),
            _ => {
                let close = if inner.shutdown.is_cancelled() {
                    Close::SHUTDOWN
                } else {
                    Close::ENDED
                };
                let frame = CloseFrame {
                    code: CloseCode::from(close.code),
                    reason: close.reason.into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
                return close.code;
            }
        };
        inner.pinger.call_once(|| {
            inner.tracker.spawn(ping_loop(Arc::downgrade(inner)));
        });
        let id = inner.next_session.fetch_add(1, Relaxed);
        let session = Session::new(
            id,
            user,
            encoding,
            inner.config.send_queue_capacity,
            inner.slow_policy.now_ms(),
        );
        if let Some(p) = &principal {
            inner.principals.register(p, id, &session, &shared);
            if p.expires_at_ms != 0 {
                inner.expiry.call_once(|| {
                    inner.tracker.spawn(expiry_loop(Arc::downgrade(inner)));
                });
            }
        }
        // Follow the campaign on the bus while this node has sessions of it; the first one
        // catches up first (the lock keeps later joins behind that catch-up).
        let following = {
            let mut interest = shared.interest.lock().await;
            let following = *interest > 0;
            if *interest == 0 {
                match inner.broker.follow(campaign).await {
                    Ok(Some(snapshot)) => shared.send(Input::CatchUp(snapshot), inner),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(campaign, error = %e, "cannot follow the campaign on the bus")
                    }
                }
            }
            *interest += 1;
            following
        };
        // Events this node may have missed (cut from the bus) come from the bus's history.
        let (fetched, tainted) = match &resume {
            Some(r) if shared.cannot_recover(r, inner.config.history_size) => {
                // Refused whatever the bus holds: no read (a storm of such resumes after a
                // new epoch must not load Redis).
                (Vec::new(), Some(Vec::new()))
            }
            Some(r) => {
                let local = following && shared.history_covers(r.since);
                self.recovery(campaign, local, r.since).await
            }
            None => (Vec::new(), Some(Vec::new())),
        };
        shared.send(
            Input::Join {
                session: session.clone(),
                resume,
                fetched,
                tainted,
            },
            inner,
        );
        inner.metrics.sessions_opened.increment(1);
        inner.metrics.connections.increment(1.0);
        tracing::debug!(
            campaign,
            user,
            session = id,
            compress = encoding.compress,
            delta = encoding.delta,
            "session opened"
        );
        let code = session::run(ws, session, shared.clone(), inner.clone()).await;
        shared.members.remove(id);
        if principal.is_some() {
            inner.principals.unregister(id);
        }
        {
            let mut interest = shared.interest.lock().await;
            *interest = interest.saturating_sub(1);
            if *interest == 0 {
                inner.broker.unfollow(campaign);
            }
        }
        inner.metrics.connections.decrement(1.0);
        Metrics::session_closed(code);
        tracing::debug!(campaign, user, session = id, code, "session closed");
        code
    }

    /// What a resume from `since` needs from the bus: the events this node's history may
    /// lack (not when `local`: the node follows the campaign and its history reaches back to
    /// `since`, so a reconnect storm costs the bus one small read per client) and the taints; `None` for the taints when the bus could not say, which
    /// refuses the resume.
    async fn recovery(
        &self,
        campaign: &str,
        local: bool,
        since: u64,
    ) -> (Vec<EncodedEvent>, Option<Vec<crate::broker::Taint>>) {
        let broker = &self.inner.broker;
        if local {
            return match broker.tainted(campaign).await {
                Ok(t) => (Vec::new(), Some(t)),
                Err(e) => {
                    tracing::warn!(campaign, error = %e, "taints unavailable; resumes answered recovered:false");
                    (Vec::new(), None)
                }
            };
        }
        let recovery = broker.recovery(campaign, since).await;
        match recovery {
            Ok(recovery) => (
                recovery
                    .events
                    .into_iter()
                    .filter_map(|p| match p {
                        Publication::Event {
                            seq,
                            name,
                            data,
                            ts,
                            user,
                            ..
                        } => Some(EncodedEvent::new(seq, &name, &data, ts, user.as_deref())),
                        _ => None,
                    })
                    .collect(),
                Some(recovery.tainted),
            ),
            Err(e) => {
                // Without the bus's view, this node cannot vouch for a resume: the client is
                // told (`recovered: false`) rather than given a guess.
                tracing::warn!(campaign, error = %e, "history unavailable; resumes answered recovered:false");
                (Vec::new(), None)
            }
        }
    }

    /// Runs `task` (e.g. a WebSocket upgrade followed by [`Node::serve_session`]) as a task
    /// that [`Node::shutdown`] waits for.
    pub fn spawn_tracked<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(task);
    }

    /// Stops the node: every campaign sends its final tick, every session is closed with
    /// 1001, and the call waits for all tasks up to `deadline`. Returns whether they all
    /// finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let done = tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                remaining = self.inner.tracker.len(),
                "shutdown deadline passed with tasks still running"
            );
        }
        done
    }

    #[cfg(feature = "bench-internals")]
    pub(crate) fn inner(&self) -> &Arc<NodeInner> {
        &self.inner
    }

    fn running(&self, campaign: &str) -> Result<(), EngineError> {
        if self.has_campaign(campaign) {
            Ok(())
        } else {
            Err(EngineError::UnknownCampaign {
                campaign: campaign.to_owned(),
            })
        }
    }
}

/// The rounds of a node-wide periodic task: each yields the node and its campaigns, until the
/// node shuts down or is gone.
struct Rounds {
    interval: Option<tokio::time::Interval>,
    shutdown: CancellationToken,
}

impl Rounds {
    /// `delayed`: the first round comes after one period rather than at once.
    fn new(node: &Weak<NodeInner>, period: fn(&Config) -> Duration, delayed: bool) -> Self {
        let Some(n) = node.upgrade() else {
            return Self {
                interval: None,
                shutdown: CancellationToken::new(),
            };
        };
        let period = period(&n.config);
        let start = tokio::time::Instant::now() + if delayed { period } else { Duration::ZERO };
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self {
            interval: Some(interval),
            shutdown: n.shutdown.clone(),
        }
    }

    async fn next(
        &mut self,
        node: &Weak<NodeInner>,
    ) -> Option<(Arc<NodeInner>, Vec<Arc<CampaignShared>>)> {
        let interval = self.interval.as_mut()?;
        tokio::select! {
            () = self.shutdown.cancelled() => return None,
            _ = interval.tick() => {}
        }
        let node = node.upgrade()?;
        let campaigns = node.hub.iter().map(|c| c.value().clone()).collect();
        Some((node, campaigns))
    }
}

/// Every `stats_interval`: samples every campaign's figures for its history.
async fn stats_loop(node: Weak<NodeInner>) {
    let mut rounds = Rounds::new(&node, |c| c.stats_interval, false);
    // Sample times from the monotonic clock, anchored once to the wall clock: they stay in
    // order and evenly spaced if the wall clock is stepped.
    let (start, start_ms) = (
        tokio::time::Instant::now(),
        u64::try_from(now_ms()).unwrap_or(0),
    );
    while let Some((node, campaigns)) = rounds.next(&node).await {
        let interval = node.config.stats_interval.as_secs_f64().max(0.001);
        let keep = ((crate::HISTORY_WINDOW.as_secs_f64() / interval).ceil() as usize).clamp(1, 900);
        let now = tokio::time::Instant::now();
        let elapsed = u64::try_from(now.duration_since(start).as_millis()).unwrap_or(u64::MAX);
        let at_ms = start_ms.saturating_add(elapsed);
        for c in campaigns {
            c.sample(now, at_ms, keep);
        }
    }
}

/// Every `presence_interval`: reports this node's sessions of every campaign to the bus (a
/// heartbeat: a crashed node's reports expire), reads the cluster-wide figures back for the
/// stats, and hands the count to the campaigns whose ticks carry it.
async fn presence_loop(node: Weak<NodeInner>) {
    let mut rounds = Rounds::new(&node, |c| c.presence_interval, false);
    while let Some((node, campaigns)) = rounds.next(&node).await {
        for c in campaigns {
            let local = c.local_presence();
            if let Err(e) = node
                .broker
                .report_presence(&c.id, &node.config.node_id, &local)
                .await
            {
                tracing::debug!(campaign = %c.id, error = %e, "presence not reported");
            }
            let cluster = match node.broker.cluster_presence(&c.id).await {
                Ok(Some(p)) => p,
                Ok(None) => local,
                Err(e) => {
                    tracing::debug!(campaign = %c.id, error = %e, "cluster presence unavailable");
                    continue;
                }
            };
            if c.presence_enabled() {
                c.send(Input::Presence(cluster.connections), &node);
            }
            c.set_cluster_presence(cluster);
        }
    }
}

/// Most events in one [`Node::publish_events`] batch (below the Redis broker's publish-id
/// slots, so that a retried batch is still recognised).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// One event of a [`Node::publish_events`] batch.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `[A-Za-z0-9_.:-]`, 1-64 characters.
    pub name: String,
    /// Any JSON every subscriber can receive (see [`session::check_event_data`]).
    pub data: Box<RawValue>,
    /// Sent at once rather than with the next tick.
    pub immediate: bool,
}

/// Most publications kept for the bus while it is unreachable.
const MAX_OUTBOX: usize = 10_000;

/// A publication waiting for the bus.
pub(crate) struct Kept {
    campaign: String,
    publication: Publication,
    /// Its publish id (the one its first attempt used, if any): the bus applies it once.
    id: u64,
    /// Who waits for the bus's answer (publications made after the bus came back, queued
    /// behind the kept ones); `None` for ones already applied on this node.
    reply: Option<tokio::sync::oneshot::Sender<Result<u64, BrokerError>>>,
}

/// What a publish waits for.
enum Waiting {
    Bus(tokio::sync::oneshot::Receiver<Result<u64, BrokerError>>),
    Local(tokio::sync::oneshot::Receiver<u64>),
}

impl NodeInner {
    /// Publishes through the bus; while the bus is unreachable, applies the publication on
    /// this node only (its sessions get it at once, in a detached epoch) and keeps it for the
    /// bus, which gets it when it is back.
    pub(crate) async fn publish(&self, campaign: &str, p: Publication) -> Result<u64, EngineError> {
        self.publish_all(campaign, vec![p]).await
    }

    /// [`NodeInner::publish`] of several publications as one unit (consecutive `seq`s, nothing
    /// between them); returns the first one's `seq`. While the bus takes back what was kept
    /// for it, a batch is refused (a single publication queues behind the kept ones instead:
    /// the bus could not number a batch behind them as one unit).
    pub(crate) async fn publish_all(
        &self,
        campaign: &str,
        publications: Vec<Publication>,
    ) -> Result<u64, EngineError> {
        let bus_up = || self.broker.can_publish() && self.bus_writable.load(Relaxed);
        let count = u64::try_from(publications.len()).unwrap_or(u64::MAX);
        let id = self.next_publish.fetch_add(count, Relaxed);
        if bus_up() && self.outbox().is_empty() {
            let sent = match publications.as_slice() {
                [one] => self.broker.publish_once(campaign, one.clone(), id).await,
                many => {
                    self.broker
                        .publish_batch_once(campaign, many.to_vec(), id)
                        .await
                }
            };
            match sent {
                Err(BrokerError::Unavailable { reason }) => {
                    // It may have been applied all the same (a timeout): if it already came
                    // back, it is published, and applying it here too would show it twice.
                    if let Some(seq) = self.broker.applied(id) {
                        return Ok(seq);
                    }
                    self.bus_writable.store(false, Relaxed);
                    tracing::debug!(campaign, reason, "bus unavailable: publishing locally");
                }
                other => return Ok(other?),
            }
        }
        let shared = self
            .hub
            .get(campaign)
            .map(|c| c.value().clone())
            .ok_or_else(|| EngineError::UnknownCampaign {
                campaign: campaign.to_owned(),
            })?;
        let waiting = {
            // One lock for the decision and the queue, so that the bus gets every kept
            // publication in the order this node applied them, and later ones after them.
            let mut outbox = self.outbox();
            if outbox.len() + publications.len() > MAX_OUTBOX {
                return Err(BrokerError::Unavailable {
                    reason: format!(
                        "the bus is unreachable and {MAX_OUTBOX} publications wait for it"
                    ),
                }
                .into());
            }
            if bus_up() {
                // The bus is back but still receiving what was kept: this one goes after them,
                // straight to the bus (not applied here first).
                let mut publications = publications;
                let (Some(p), None) = (publications.pop(), publications.pop()) else {
                    return Err(BrokerError::Unavailable {
                        reason: "the node is handing the bus what it kept during an outage: \
                                 retry the batch shortly"
                            .to_owned(),
                    }
                    .into());
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                outbox.push_back(Kept {
                    campaign: campaign.to_owned(),
                    publication: p,
                    id,
                    reply: Some(tx),
                });
                Waiting::Bus(rx)
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                shared
                    .try_send(Input::Local {
                        publications: publications.clone(),
                        seq: tx,
                    })
                    .map_err(|()| BrokerError::Unavailable {
                        reason: "the bus is unreachable and the campaign's inbox is full"
                            .to_owned(),
                    })?;
                for (p, id) in publications.into_iter().zip(id..) {
                    outbox.push_back(Kept {
                        campaign: campaign.to_owned(),
                        publication: p,
                        id,
                        reply: None,
                    });
                }
                Waiting::Local(rx)
            }
        };
        let gone = || EngineError::UnknownCampaign {
            campaign: campaign.to_owned(),
        };
        match waiting {
            Waiting::Bus(rx) => Ok(rx.await.map_err(|_| gone())??),
            Waiting::Local(rx) => {
                self.metrics.local_publications.increment(count);
                rx.await.map_err(|_| gone())
            }
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every 100 ms, while the bus's pub/sub is up: hands the kept publications to the bus in
/// order (a refusal stops the round; publications queued behind the kept ones are then
/// answered with the refusal), and once none is left, asks every detached campaign to
/// reattach after it has seen its kept events come back from the bus (so its sessions, closed
/// with 1012, never get one twice).
async fn bus_loop(node: Weak<NodeInner>) {
    let mut rounds = Rounds::new(&node, |_| Duration::from_millis(100), true);
    while let Some((node, campaigns)) = rounds.next(&node).await {
        if !node.broker.is_ready() {
            continue;
        }
        loop {
            let next = node
                .outbox()
                .front()
                .map(|k| (k.campaign.clone(), k.publication.clone(), k.id));
            let Some((campaign, p, id)) = next else { break };
            let is_event = matches!(p, Publication::Event { .. });
            let result = node.broker.publish_once(&campaign, p, id).await;
            let refused = matches!(result, Err(BrokerError::Unavailable { .. }));
            node.bus_writable.store(!refused, Relaxed);
            if refused {
                // Later publications are not applied here: tell their callers, drop them.
                node.outbox().retain_mut(|k| match k.reply.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(BrokerError::Unavailable {
                            reason: "the bus refused the publications kept before this one"
                                .to_owned(),
                        }));
                        false
                    }
                    None => true,
                });
                break;
            }
            if let Ok(seq) = &result
                && is_event
            {
                let mut through = node
                    .reattach_through
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let t = through.entry(campaign.clone()).or_insert(0);
                *t = (*t).max(*seq);
            }
            if let Some(kept) = node.outbox().pop_front()
                && let Some(tx) = kept.reply
            {
                let _ = tx.send(result);
            }
        }
        if !node.outbox().is_empty() {
            continue;
        }
        // Nothing kept and the bus answers: a refusal that left nothing behind (the local
        // path failed too) must not keep later publishes off the bus.
        node.bus_writable.store(true, Relaxed);
        let mut through = node
            .reattach_through
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for c in &campaigns {
            if c.detached.load(Relaxed) {
                let t = through.get(&*c.id).copied().unwrap_or(0);
                c.send(Input::Reattach { through: t }, &node);
            } else {
                through.remove(&*c.id);
            }
        }
    }
}

/// Every `ping_interval`: closes the sessions from which nothing arrived for `pong_timeout`
/// (4009) and queues a protocol ping for the others. One task for the node instead of a timer
/// per connection.
/// How often sessions are checked for an expired token.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// Closes, every [`EXPIRY_CHECK`], the sessions whose token expired without a refresh, until
/// the node stops.
async fn expiry_loop(node: Weak<NodeInner>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let Some(shutdown) = node.upgrade().map(|n| n.shutdown.clone()) else {
            return;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(n) = node.upgrade() else { return };
        let closed = n.principals.expire(now_ms());
        if closed > 0 {
            tracing::info!(sessions = closed, "sessions closed: token expired");
        }
    }
}

async fn ping_loop(node: Weak<NodeInner>) {
    let mut rounds = Rounds::new(&node, |c| c.ping_interval, true);
    while let Some((node, campaigns)) = rounds.next(&node).await {
        let now = node.slow_policy.now_ms();
        let ping = Message::Ping(bytes::Bytes::new());
        for c in campaigns {
            let (_, members) = c.members.snapshot();
            for s in members.iter() {
                if s.silent_for(now) > node.config.pong_timeout {
                    s.close(Close::PING_TIMEOUT);
                } else {
                    // Not `offer`: a ping that finds the queue full is not a dropped frame
                    // (and must not push the session towards a slow close).
                    let _ = s.queue.try_push(ping.clone());
                }
            }
        }
    }
}

fn check_frequency(hz: f64) -> Result<(), EngineError> {
    if config::frequency_in_range(hz) {
        Ok(())
    } else {
        Err(EngineError::FrequencyOutOfRange {
            hz,
            min: config::MIN_FREQUENCY_HZ,
            max: config::MAX_FREQUENCY_HZ,
        })
    }
}

impl NodeInner {
    fn upsert_local(self: &Arc<Self>, spec: CampaignSpec) {
        if self.shutdown.is_cancelled() {
            return;
        }
        if let Some(c) = self.hub.get(spec.id.as_str())
            && !c.is_ended()
        {
            c.send(Input::Configure(spec), self);
            return;
        }
        if spec.state.is_none() {
            // A change for a campaign that is not running (it ended meanwhile): starting it
            // from an empty state would resurrect it.
            tracing::debug!(campaign = %spec.id, "settings for a campaign that is not running ignored");
            return;
        }
        self.presence.call_once(|| {
            self.tracker.spawn(presence_loop(Arc::downgrade(self)));
            self.tracker.spawn(bus_loop(Arc::downgrade(self)));
            self.tracker.spawn(stats_loop(Arc::downgrade(self)));
        });
        let (task, shared) = Campaign::new(spec, self.clone());
        self.hub.insert(shared.id.clone(), shared);
        self.tracker.spawn(task.run());
    }
}

impl Deliver for NodeInner {
    fn deliver(&self, campaign: &str, publication: Publication) {
        if let Some(c) = self.hub.get(campaign) {
            c.send(Input::Publication(publication), self);
        }
    }

    fn notify(&self, user: &str, payload: &RawValue) {
        let sessions = self.principals.sessions_of(user);
        if sessions.is_empty() {
            return;
        }
        let frame = crate::frame::notification(payload);
        let (mut queued, mut dropped) = (0u64, 0u64);
        for (s, campaign) in &sessions {
            // A session registers before its campaign task welcomes it: until it is a member
            // it gets nothing (its first frame is the welcome).
            if !campaign.members.contains(s.id) {
                continue;
            }
            // The queue's usual path: a full queue drops the frame for this session only,
            // counted, and may close it as slow. Text, like every frame but ticks.
            if s.offer(frame.clone(), campaign, self.slow_policy) {
                queued += 1;
            } else {
                dropped += 1;
            }
        }
        self.metrics.notifications_queued.increment(queued);
        self.metrics.notifications_dropped.increment(dropped);
        tracing::debug!(user, queued, dropped, "notification pushed");
    }

    fn epoch(&self, campaign: &str, epoch: &str) {
        if let Some(c) = self.hub.get(campaign)
            && c.set_cluster_epoch(epoch)
        {
            c.send(Input::Epoch(epoch.into()), self);
        }
    }

    fn control(&self, control: Control) {
        match control {
            Control::Upsert(spec) => {
                if let Some(me) = self.me.upgrade() {
                    me.upsert_local(spec);
                }
            }
            Control::End { campaign } => {
                if let Some(c) = self.hub.get(campaign.as_str()) {
                    c.send(Input::End, self);
                }
            }
        }
    }
}
