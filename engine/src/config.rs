//! Engine configuration: every limit the broadcast core enforces, with the defaults of the
//! design. The node binary builds this from its own layered config (`api::config`).

use std::time::Duration;

/// Lowest accepted campaign frequency, in Hz.
pub const MIN_FREQUENCY_HZ: f64 = 0.1;
/// Highest accepted campaign frequency, in Hz.
pub const MAX_FREQUENCY_HZ: f64 = 100.0;
/// Frequency of a campaign whose metadata does not set one.
pub const DEFAULT_FREQUENCY_HZ: f64 = 1.0;

/// Limits and timings of the engine.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of this node, reported in `welcome` frames and stats.
    pub node_id: String,
    /// Frames a session's outgoing queue holds before new frames are dropped for it.
    pub send_queue_capacity: usize,
    /// Close a session with 4008 "slow" after this many consecutive drops (0 = never).
    pub slow_close_drops: u32,
    /// Close a session with 4008 "slow" once its queue has been full this long (zero = never).
    pub slow_close_after: Duration,
    /// Interval of the server's protocol pings.
    pub ping_interval: Duration,
    /// A session that sent nothing (not even a pong) for this long is closed.
    pub pong_timeout: Duration,
    /// Largest inbound message, in bytes; larger ones close the session with 1009.
    pub max_message_size: usize,
    /// Client events a session may send per second (token bucket refill rate).
    pub client_event_rate: f64,
    /// Client events a session may send in a burst (token bucket size).
    pub client_event_burst: u32,
    /// Rejected client events within 10 s after which the session is closed with 1008.
    pub client_event_abuse_limit: u32,
    /// Commands a campaign task's inbox holds; beyond it deliveries are dropped and counted.
    pub campaign_inbox_capacity: usize,
    /// Events buffered for one tick; beyond it new events are dropped and counted.
    pub max_pending_events: usize,
    /// How long a closing session may take to flush its queue and close frame.
    pub close_timeout: Duration,
    /// Events each campaign keeps for resuming clients (0 = no recovery).
    pub history_size: usize,
    /// Events older than this are not recovered.
    pub history_ttl: Duration,
    /// How often the node reports its sessions to the cluster (and refreshes the cluster's).
    pub presence_interval: Duration,
    /// How often each campaign's figures are sampled for its history (the last 15 minutes).
    pub stats_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "node".to_owned(),
            send_queue_capacity: 256,
            slow_close_drops: 0,
            slow_close_after: Duration::ZERO,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(60),
            max_message_size: 64 * 1024,
            client_event_rate: 10.0,
            client_event_burst: 20,
            client_event_abuse_limit: 100,
            campaign_inbox_capacity: 8192,
            max_pending_events: 10_000,
            close_timeout: Duration::from_secs(2),
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            presence_interval: Duration::from_secs(10),
            stats_interval: Duration::from_secs(5),
        }
    }
}

/// Whether `hz` is an accepted campaign frequency.
pub fn frequency_in_range(hz: f64) -> bool {
    hz.is_finite() && (MIN_FREQUENCY_HZ..=MAX_FREQUENCY_HZ).contains(&hz)
}
