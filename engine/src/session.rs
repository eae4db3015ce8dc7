//! One WebSocket connection. A [`Session`] is the shared handle the hub and the campaign task
//! hold: a bounded send queue plus counters. [`run`] drives the socket in the connection's one
//! task, which alone owns it: it drains the queue (feeding every ready frame, flushing once)
//! and answers client frames. Pings come from the node's pinger through the queue, so a
//! connection has no timer of its own. The logic is generic over `Sink`/`Stream` so tests can
//! drive it without a socket.
//!
//! Close codes (DESIGN.md §3): 1000 campaign ended or client closed, 1001 server shutting down,
//! 1002 protocol error, 1007 invalid UTF-8, 1008 client event abuse, 1009 message too big,
//! 4008 "slow" (queue full for too long, when configured), 4009 ping timeout, 4401 token
//! revoked.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::broker::Publication;
use crate::campaign::CampaignShared;
use crate::frame::{self, now_ms};
use crate::node::NodeInner;
use crate::queue::SendQueue;

/// Close codes used by the engine.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// Service restart: reconnect (with `since`) and resync.
    pub const RESYNC: u16 = 1012;
    /// The token is no longer accepted (revoked): get a new one and reconnect.
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const SLOW: u16 = 4008;
    pub const PING_TIMEOUT: u16 = 4009;
}

/// Why and how a session closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
    /// Write the frames already queued before the close frame.
    pub drain: bool,
}

impl Close {
    pub const ENDED: Self = Self {
        code: close_code::NORMAL,
        reason: "campaign ended",
        drain: true,
    };
    pub const SHUTDOWN: Self = Self {
        code: close_code::GOING_AWAY,
        reason: "server shutting down",
        drain: true,
    };
    /// The bus is back after this node published on its own: sessions reconnect and resync.
    pub const RESYNC: Self = Self {
        code: close_code::RESYNC,
        reason: "bus reconnected: resume with since to resync",
        drain: true,
    };
    /// The account's tokens were revoked (password changed, account disabled, roles changed).
    pub const REVOKED: Self = Self {
        code: close_code::UNAUTHENTICATED,
        reason: "token revoked",
        drain: false,
    };
    /// The session's token expired and no fresh one was presented (`refresh` frame).
    pub const EXPIRED: Self = Self {
        code: close_code::UNAUTHENTICATED,
        reason: "token expired",
        drain: true,
    };
    pub const SLOW: Self = Self {
        code: close_code::SLOW,
        reason: "slow",
        drain: false,
    };
    const CLIENT: Self = Self {
        code: close_code::NORMAL,
        reason: "",
        drain: false,
    };
    const GONE: Self = Self {
        code: close_code::ABNORMAL,
        reason: "",
        drain: false,
    };
    pub(crate) const PING_TIMEOUT: Self = Self {
        code: close_code::PING_TIMEOUT,
        reason: "ping timeout",
        drain: false,
    };
    const TOO_BIG: Self = Self {
        code: close_code::TOO_BIG,
        reason: "message too big",
        drain: true,
    };
    const BAD_UTF8: Self = Self {
        code: close_code::INVALID_PAYLOAD,
        reason: "invalid UTF-8",
        drain: true,
    };
    const PROTOCOL: Self = Self {
        code: close_code::PROTOCOL_ERROR,
        reason: "protocol error",
        drain: true,
    };
    const ABUSE: Self = Self {
        code: close_code::POLICY,
        reason: "client event rate limit exceeded",
        drain: true,
    };
}

/// When a session that cannot keep up is closed with [`Close::SLOW`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowPolicy {
    /// Consecutive drops (0 = never).
    pub drops: u32,
    /// Milliseconds with a full queue (0 = never).
    pub full_ms: i64,
    /// Origin of the node's monotonic millisecond clock (Tokio's, so tests can pause it).
    pub epoch: Instant,
}

impl SlowPolicy {
    /// No escalation at all.
    #[cfg(feature = "bench-internals")]
    pub(crate) fn never() -> Self {
        Self {
            drops: 0,
            full_ms: 0,
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the node started, never 0 (0 means "unset" in the session's fields).
    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// Drop warnings are logged at most this often per session.
const WARN_EVERY_MS: i64 = 10_000;
/// Frames fed to the socket before one flush, at most.
const MAX_BATCH: u64 = 128;

/// How a session's tick frames are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Tick frames as binary raw-deflate frames (`compress=deflate`).
    pub compress: bool,
    /// State changes as merge patches (`state_patch`) to a session that has the state sent
    /// before: `Some(true)` (`delta=1`), `Some(false)` (never: `delta=0`, gRPC), `None` (as the
    /// campaign says: its `delta` feature).
    pub delta: Option<bool>,
}

/// The shared handle of one connection.
pub struct Session {
    pub(crate) id: u64,
    pub(crate) user: Box<str>,
    /// The session asked for `compress=deflate`: ticks go out as binary deflated frames.
    pub(crate) compress: bool,
    /// Whether the session gets delta state frames (`None`: as the campaign says).
    pub(crate) delta: Option<bool>,
    pub(crate) queue: SendQueue,
    /// Version of the campaign state this session was last sent (0 = never).
    state_version: AtomicU64,
    dropped: AtomicU64,
    consecutive_drops: AtomicU32,
    /// When the queue was first found full in the current run of drops (0 = not full).
    full_since_ms: AtomicI64,
    last_warn_ms: AtomicI64,
    unwarned_drops: AtomicU64,
    /// Last time anything arrived from the client, for the ping timeout.
    last_seen_ms: AtomicI64,
    close: OnceLock<Close>,
}

impl Session {
    pub(crate) fn new(
        id: u64,
        user: &str,
        encoding: Encoding,
        capacity: usize,
        now_ms: i64,
    ) -> Arc<Self> {
        let s = Self {
            id,
            user: user.into(),
            compress: encoding.compress,
            delta: encoding.delta,
            queue: SendQueue::new(capacity),
            state_version: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            consecutive_drops: AtomicU32::new(0),
            full_since_ms: AtomicI64::new(0),
            last_warn_ms: AtomicI64::new(0),
            unwarned_drops: AtomicU64::new(0),
            last_seen_ms: AtomicI64::new(now_ms),
            close: OnceLock::new(),
        };
        Arc::new(s)
    }

    /// Frames dropped for this session so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub(crate) fn state_version(&self) -> u64 {
        self.state_version.load(Relaxed)
    }

    pub(crate) fn set_state_version(&self, v: u64) {
        self.state_version.store(v, Relaxed);
    }

    /// Offers a frame to the queue; a full queue drops it for this session only, counts it,
    /// and may escalate to [`Close::SLOW`]. Returns whether the frame was queued.
    pub(crate) fn offer(
        &self,
        msg: Message,
        campaign: &CampaignShared,
        policy: SlowPolicy,
    ) -> bool {
        match self.queue.try_push(msg) {
            Ok(()) => {
                if self.consecutive_drops.load(Relaxed) != 0 {
                    self.consecutive_drops.store(0, Relaxed);
                    self.full_since_ms.store(0, Relaxed);
                }
                true
            }
            Err(_full) => {
                self.on_drop(campaign, policy);
                false
            }
        }
    }

    #[cold]
    fn on_drop(&self, campaign: &CampaignShared, policy: SlowPolicy) {
        let now = policy.now_ms();
        self.dropped.fetch_add(1, Relaxed);
        campaign.count_drop();
        let run = self.consecutive_drops.fetch_add(1, Relaxed) + 1;
        let full_since = match self
            .full_since_ms
            .compare_exchange(0, now, Relaxed, Relaxed)
        {
            Ok(_) => now,
            Err(t) => t,
        };
        let unwarned = self.unwarned_drops.fetch_add(1, Relaxed) + 1;
        let last = self.last_warn_ms.load(Relaxed);
        if (last == 0 || now - last >= WARN_EVERY_MS)
            && self
                .last_warn_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.unwarned_drops.fetch_sub(unwarned, Relaxed);
            tracing::warn!(
                campaign = %campaign.id,
                session = self.id,
                user = %self.user,
                dropped = unwarned,
                dropped_total = self.dropped.load(Relaxed),
                "slow session: frames dropped"
            );
        }
        let too_many = policy.drops > 0 && run >= policy.drops;
        let too_long = policy.full_ms > 0 && now - full_since >= policy.full_ms;
        if too_many || too_long {
            self.close(Close::SLOW);
        }
    }

    /// Asks the session to close; the first reason wins. Returns at once.
    pub fn close(&self, close: Close) {
        let _ = self.close.set(close);
        self.queue.close();
    }

    /// Whether a close has been asked for.
    pub(crate) fn is_closed(&self) -> bool {
        self.close.get().is_some()
    }

    /// How long nothing has arrived from the client.
    pub(crate) fn silent_for(&self, now_ms: i64) -> std::time::Duration {
        let ms = now_ms.saturating_sub(self.last_seen_ms.load(Relaxed));
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    fn touch(&self, now_ms: i64) {
        self.last_seen_ms.store(now_ms, Relaxed);
    }
}

/// Drives one connection until it closes; returns the close code it ended with.
///
/// One loop owns the socket: it writes what the queue holds (every ready frame fed, one
/// flush), reads what the client sends, and pings. Keeping reader and writer in one state
/// machine, with the rarely used close path boxed, keeps the per-connection task small.
pub(crate) async fn run<S>(
    mut ws: S,
    session: Arc<Session>,
    campaign: Arc<CampaignShared>,
    node: Arc<NodeInner>,
) -> u16
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin,
{
    let cfg = &node.config;
    let mut limiter = RateLimiter::new(
        cfg.client_event_rate,
        cfg.client_event_burst,
        cfg.client_event_abuse_limit,
    );
    let queue = &session.queue;
    let socket_ok = loop {
        // Not biased: a client whose queue is never empty must still be read (its pongs,
        // events and close frames).
        tokio::select! {
            first = queue.pop() => {
                // `None`: a close was asked for.
                let Some(first) = first else { break true };
                let write = write_batch(&mut ws, first, queue);
                tokio::pin!(write);
                // A close (campaign ended, slow, ping timeout) interrupts a blocked write; a
                // draining one lets the frame being written finish first (bounded).
                let written = tokio::select! {
                    biased;
                    () = queue.closed() => {
                        if session.close.get().is_some_and(|c| c.drain)
                            && let Ok(Ok(n)) = tokio::time::timeout(cfg.close_timeout, &mut write).await
                        {
                            campaign.count_sent(n);
                            node.metrics.frames_sent.increment(n);
                        }
                        break true;
                    }
                    r = &mut write => r,
                };
                match written {
                    Ok(n) => {
                        campaign.count_sent(n);
                        node.metrics.frames_sent.increment(n);
                    }
                    Err(_) => break false,
                }
            }
            msg = ws.next() => {
                let Some(msg) = msg else {
                    session.close(Close::GONE);
                    break false;
                };
                session.touch(node.slow_policy.now_ms());
                // Boxed: handling a message is rare next to waiting, and its state (parsing,
                // publishing) would otherwise sit in every connection's task.
                let handled = Box::pin(on_message(msg, &session, &campaign, &node, &mut limiter)).await;
                if let Some(close) = handled {
                    session.close(close);
                    break close != Close::GONE;
                }
            }
        }
    };
    if socket_ok {
        Box::pin(close(ws, &session, &campaign, &node)).await;
    } else {
        // The socket is gone: nothing more can be written.
        session.close(Close::GONE);
    }
    session.close.get().copied().unwrap_or(Close::GONE).code
}

/// Feeds `first` and every frame already queued (up to [`MAX_BATCH`]), then flushes once.
/// Returns the number of data frames written (pings are not counted).
async fn write_batch<Si>(sink: &mut Si, first: Message, queue: &SendQueue) -> Result<u64, WsError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    let mut fed = 1;
    let mut data = u64::from(!matches!(first, Message::Ping(_)));
    sink.feed(first).await?;
    while fed < MAX_BATCH {
        let Some(m) = queue.try_pop() else { break };
        data += u64::from(!matches!(m, Message::Ping(_)));
        sink.feed(m).await?;
        fed += 1;
    }
    sink.flush().await?;
    Ok(data)
}

/// The close path: the queued frames first when the reason asks for it, then the close
/// frame, then (bounded) the client's answer, so that the TCP connection ends cleanly instead
/// of with a reset. Everything is bounded by `close_timeout`.
async fn close<S>(mut ws: S, session: &Session, campaign: &CampaignShared, node: &NodeInner)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin,
{
    let close = session.close.get().copied().unwrap_or(Close::CLIENT);
    if close == Close::CLIENT {
        // The client closed: flush tungstenite's answer to its close frame.
        let _ = tokio::time::timeout(node.config.close_timeout, ws.close()).await;
        return;
    }
    let _ = tokio::time::timeout(node.config.close_timeout, async {
        if close.drain {
            let mut n = 0;
            while let Some(m) = session.queue.try_pop() {
                n += u64::from(!matches!(m, Message::Ping(_)));
                ws.feed(m).await?;
            }
            campaign.count_sent(n);
            node.metrics.frames_sent.increment(n);
        }
        let frame = CloseFrame {
            code: CloseCode::from(close.code),
            reason: close.reason.into(),
        };
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), WsError>(())
    })
    .await;
}

/// Handles one inbound message; returns a close when the session must end.
async fn on_message(
    msg: Result<Message, WsError>,
    session: &Session,
    campaign: &CampaignShared,
    node: &NodeInner,
    limiter: &mut RateLimiter,
) -> Option<Close> {
    match msg {
        Ok(Message::Text(text)) => on_text(&text, session, campaign, node, limiter).await,
        Ok(Message::Binary(_)) => {
            session.offer(
                frame::error(
                    "unsupported",
                    "binary frames are not accepted; send JSON text frames",
                ),
                campaign,
                node.slow_policy,
            );
            None
        }
        Ok(Message::Close(_)) => Some(Close::CLIENT),
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
        Err(WsError::Capacity(_)) => Some(Close::TOO_BIG),
        Err(WsError::Utf8(_)) => Some(Close::BAD_UTF8),
        // A client that dropped TCP without a close frame went away (1006), it did not
        // break the protocol.
        Err(WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => Some(Close::GONE),
        Err(WsError::Protocol(_)) => Some(Close::PROTOCOL),
        Err(_) => Some(Close::GONE),
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    /// `refresh` frames: a fresh access token.
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
}

/// Answers a `refresh` frame: a `refreshed` frame with the fresh token's expiry, or an error.
fn refresh(token: Option<&str>, session: &Session, node: &NodeInner) -> Message {
    use crate::principal::RefreshError;
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return frame::error("bad_frame", "a refresh frame needs a \"token\"");
    };
    let Some(verifier) = node.verifier.get() else {
        return frame::error("unsupported", "this node does not check tokens");
    };
    let fresh = match verifier.verify(token) {
        Ok(p) => p,
        Err(reason) => return frame::error("unauthenticated", &reason),
    };
    match node.principals.refresh(session.id, &fresh) {
        Ok(()) => frame::refreshed(fresh.expires_at_ms),
        Err(RefreshError::NoToken) => frame::error(
            "unsupported",
            "this session was opened without a token: there is nothing to refresh",
        ),
        Err(RefreshError::OtherAccount) => frame::error(
            "forbidden",
            "the token is another account's than the one this session was opened with",
        ),
        Err(RefreshError::Revoked) => {
            frame::error("unauthenticated", "the token was revoked: sign in again")
        }
    }
}

/// Longest accepted event name.
pub const MAX_EVENT_NAME: usize = 64;

/// Whether `name` is a valid event name: 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Deepest nesting of arrays and objects an event's data may have: every subscriber can
/// receive it. Protobuf decoders stop at 100 nested messages (prost, C++, Java); the data's
/// `google.protobuf.Value` sits three deep in a gRPC `Update` (`Tick`, `Event`, `Value`) and
/// every level of JSON objects adds three more (`Struct`, map entry, `Value`): 3 + 3 × 32 = 99.
/// (64 was accepted before: 33 levels of objects made the campaign's ticks undecodable for
/// gRPC subscribers.)
pub const MAX_DATA_DEPTH: usize = 32;

/// Checks that an event's data is something every subscriber can receive: JSON whose numbers
/// fit a 64-bit float (`1e400` does not) nested at most [`MAX_DATA_DEPTH`] deep. The one rule
/// for REST, gRPC and WebSocket publishes.
///
/// # Errors
/// Why the data cannot be published, for the caller.
pub fn check_event_data(data: &serde_json::value::RawValue) -> Result<(), String> {
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let value: serde_json::Value = serde_json::from_str(data.get())
        .map_err(|e| format!("data cannot be delivered to every subscriber: {e}"))?;
    if depth(&value) > MAX_DATA_DEPTH {
        return Err(format!(
            "data is nested deeper than {MAX_DATA_DEPTH} levels"
        ));
    }
    Ok(())
}

/// Longest accepted user id, in characters (the WebSocket path's rule).
pub const MAX_USER_ID: usize = 128;

/// Whether `user` is an acceptable user id: 1–[`MAX_USER_ID`] characters, none of them
/// control characters or whitespace.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.chars().count() <= MAX_USER_ID
        && !user.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Largest notification payload, in bytes of JSON text: it travels whole through the bus and
/// into every session's queue of the user.
pub const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

/// Checks that a notification's payload can be pushed: at most [`MAX_NOTIFICATION_BYTES`],
/// and data every subscriber can receive ([`check_event_data`]).
///
/// # Errors
/// Why the payload cannot be pushed, for the caller.
pub fn check_notification(payload: &RawValue) -> Result<(), String> {
    let len = payload.get().len();
    if len > MAX_NOTIFICATION_BYTES {
        return Err(format!(
            "notification is {len} bytes, over the limit of {MAX_NOTIFICATION_BYTES}"
        ));
    }
    check_event_data(payload)
}

/// Handles one client text frame; returns a close when the session must end.
async fn on_text(
    text: &str,
    session: &Session,
    campaign: &CampaignShared,
    node: &NodeInner,
    limiter: &mut RateLimiter,
) -> Option<Close> {
    let reply = |m: Message| {
        session.offer(m, campaign, node.slow_policy);
    };
    let incoming: Incoming<'_> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            reply(frame::error("bad_frame", &format!("malformed frame: {e}")));
            return None;
        }
    };
    match incoming.kind.as_ref() {
        "ping" => reply(frame::pong()),
        "refresh" => reply(refresh(incoming.token.as_deref(), session, node)),
        // Only the first frame of a session opened without a token (the node reads it
        // before the session starts).
        "auth" => reply(frame::error(
            "unsupported",
            "this session is already authenticated: present a fresh token with a refresh frame",
        )),
        "event" => {
            let name = incoming.name.unwrap_or_default();
            if !valid_event_name(&name) {
                node.metrics.client_events_rejected.increment(1);
                reply(frame::error(
                    "invalid_event",
                    "an event needs a \"name\" of 1-64 characters [A-Za-z0-9_.:-]",
                ));
                return None;
            }
            if let Some(data) = incoming.data
                && let Err(reason) = check_event_data(data)
            {
                node.metrics.client_events_rejected.increment(1);
                reply(frame::error("invalid_event", &reason));
                return None;
            }
            if !campaign.client_events() {
                node.metrics.client_events_rejected.increment(1);
                reply(frame::error(
                    "forbidden",
                    "this campaign does not accept client events",
                ));
                return None;
            }
            match limiter.check(Instant::now()) {
                Verdict::Allowed => {}
                Verdict::Limited => {
                    node.metrics.client_events_rejected.increment(1);
                    reply(frame::error("rate_limited", "too many events; slow down"));
                    return None;
                }
                Verdict::Abusive => {
                    node.metrics.client_events_rejected.increment(1);
                    return Some(Close::ABUSE);
                }
            }
            let data = incoming
                .data
                .map_or_else(|| RawValue::NULL.to_owned(), ToOwned::to_owned);

            let publication = Publication::Event {
                seq: 0,
                name: name.into_owned(),
                data,
                ts: now_ms(),
                immediate: false,
                user: Some(session.user.to_string()),
            };
            // The node's publish path: a publish id (a retry is applied once), and local
            // publishing with the outbox while the bus is unreachable, as for API publishes.
            match node.publish(&campaign.id, publication).await {
                Ok(_) => node.metrics.client_events_accepted.increment(1),
                Err(e) => {
                    node.metrics.client_events_rejected.increment(1);
                    tracing::warn!(campaign = %campaign.id, error = %e, "client event not published");
                    reply(frame::error(
                        "unavailable",
                        "the event could not be published; try again",
                    ));
                }
            }
        }
        other => reply(frame::error(
            "unknown_type",
            &format!(
                "unknown frame type {:?}; expected \"ping\", \"event\" or \"refresh\"",
                truncate(other, 32)
            ),
        )),
    }
    None
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Limited,
    Abusive,
}

/// Token bucket for client events, plus the abuse rule: more than `abuse_limit` rejections
/// within [`ABUSE_WINDOW`] closes the session.
struct RateLimiter {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
    window_start: Instant,
    rejected: u32,
    abuse_limit: u32,
}

const ABUSE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl RateLimiter {
    fn new(rate: f64, burst: u32, abuse_limit: u32) -> Self {
        let now = Instant::now();
        Self {
            tokens: f64::from(burst),
            rate,
            burst: f64::from(burst),
            last: now,
            window_start: now,
            rejected: 0,
            abuse_limit,
        }
    }

    fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.rejected = 0;
        }
        self.rejected += 1;
        if self.rejected > self.abuse_limit {
            Verdict::Abusive
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn event_names() {
        assert!(valid_event_name("score"));
        assert!(valid_event_name("a.b:c-d_e9"));
        assert!(!valid_event_name(""));
        assert!(!valid_event_name("has space"));
        assert!(!valid_event_name(&"x".repeat(65)));
        assert!(!valid_event_name("ünicode"));
    }

    #[test]
    fn event_data_every_subscriber_can_receive() {
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).expect("json");
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_event_data(&raw(r#"{"a":[1,2.5,"x",null,true]}"#)).is_ok());
        assert!(check_event_data(&raw(&nested(MAX_DATA_DEPTH))).is_ok());
        assert!(check_event_data(&raw(&nested(MAX_DATA_DEPTH + 1))).is_err());
        // Objects cost protobuf the most nesting (the fuzz crate decodes the deepest ones).
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        assert!(check_event_data(&raw(&objects(MAX_DATA_DEPTH))).is_ok());
        assert!(check_event_data(&raw(&objects(MAX_DATA_DEPTH + 1))).is_err());
        assert!(check_event_data(&raw(r#"{"x":1e400}"#)).is_err());
        assert!(check_event_data(&raw("-1e400")).is_err());
        assert!(
            check_event_data(&raw("18446744073709551616")).is_ok(),
            "wide: rounded"
        );
    }

    #[test]
    fn user_ids_and_notification_payloads() {
        assert!(valid_user_id("u-1@example"));
        assert!(valid_user_id(&"é".repeat(MAX_USER_ID)));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id(&"x".repeat(MAX_USER_ID + 1)));
        assert!(!valid_user_id("a b"));
        assert!(!valid_user_id("a\u{7}"));
        let raw = |s: String| serde_json::value::RawValue::from_string(s).expect("json");
        assert!(check_notification(&raw(r#"{"title":"hi"}"#.to_owned())).is_ok());
        let big = format!("\"{}\"", "x".repeat(MAX_NOTIFICATION_BYTES));
        assert!(check_notification(&raw(big)).is_err());
        assert!(check_notification(&raw(r#"{"x":1e400}"#.to_owned())).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_allows_burst_then_rate_then_flags_abuse() {
        let mut l = RateLimiter::new(10.0, 20, 5);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(l.check(t0), Verdict::Allowed);
        }
        assert_eq!(l.check(t0), Verdict::Limited);
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(t1), Verdict::Allowed);
        for _ in 0..3 {
            assert_eq!(l.check(t1), Verdict::Limited);
        }
        // Rejections 5 and 6 in the window: the 6th is abuse.
        assert_eq!(l.check(t1), Verdict::Limited);
        assert_eq!(l.check(t1), Verdict::Abusive);
        // After the window, a calm client starts over.
        let t2 = t1 + Duration::from_secs(11);
        assert_eq!(l.check(t2), Verdict::Allowed);
    }
}
