//! The engine's metrics, through the `metrics` facade: names follow
//! `ovasabi_<subsystem>_<name>_<unit>`. Handles are resolved once and cloned into the tasks
//! that use them, so the hot path is an atomic add, never a registry lookup.

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

pub const CONNECTIONS: &str = "ovasabi_ws_connections";
pub const SESSIONS_OPENED: &str = "ovasabi_ws_sessions_opened_total";
pub const SESSIONS_CLOSED: &str = "ovasabi_ws_sessions_closed_total";
pub const FRAMES_SENT: &str = "ovasabi_ws_frames_sent_total";
pub const FRAMES_DROPPED: &str = "ovasabi_ws_frames_dropped_total";
pub const CLIENT_EVENTS: &str = "ovasabi_ws_client_events_total";
pub const NOTIFICATIONS: &str = "ovasabi_ws_notifications_total";
pub const TICK_DURATION: &str = "ovasabi_campaign_tick_duration_seconds";
pub const TICK_LAG: &str = "ovasabi_campaign_tick_lag_seconds";
pub const CAMPAIGNS: &str = "ovasabi_campaign_running";
pub const EVENTS_PUBLISHED: &str = "ovasabi_campaign_events_total";
pub const INPUTS_DROPPED: &str = "ovasabi_campaign_inputs_dropped_total";
pub const LOCAL_PUBLICATIONS: &str = "ovasabi_broker_local_publications_total";

/// Histogram buckets (seconds) suited to tick duration and lag.
pub const TICK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Describes every engine metric to the installed recorder.
pub fn describe() {
    describe_gauge!(CONNECTIONS, "WebSocket sessions open on this node");
    describe_counter!(SESSIONS_OPENED, "WebSocket sessions opened");
    describe_counter!(SESSIONS_CLOSED, "WebSocket sessions closed, by close code");
    describe_counter!(FRAMES_SENT, "Frames written to sessions' sockets");
    describe_counter!(
        FRAMES_DROPPED,
        "Frames dropped because a session's queue was full"
    );
    describe_counter!(
        CLIENT_EVENTS,
        "Client events, by result (accepted/rejected)"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notification frames offered to a user's sessions, by result (queued/dropped)"
    );
    describe_histogram!(TICK_DURATION, "Time to build and offer one tick frame");
    describe_histogram!(TICK_LAG, "Delay between a tick's scheduled and actual time");
    describe_gauge!(CAMPAIGNS, "Campaign broadcast tasks running on this node");
    describe_counter!(
        LOCAL_PUBLICATIONS,
        "Publications applied on this node only while the bus was unreachable"
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events received by this node's campaign tasks"
    );
    describe_counter!(
        INPUTS_DROPPED,
        "Events or commands dropped because a campaign was overloaded"
    );
}

/// Resolved handles of the engine's metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub connections: Gauge,
    pub sessions_opened: Counter,
    pub frames_sent: Counter,
    pub frames_dropped: Counter,
    pub client_events_accepted: Counter,
    pub client_events_rejected: Counter,
    pub notifications_queued: Counter,
    pub notifications_dropped: Counter,
    pub tick_duration: Histogram,
    pub tick_lag: Histogram,
    pub campaigns: Gauge,
    pub events: Counter,
    pub inputs_dropped: Counter,
    pub local_publications: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            connections: gauge!(CONNECTIONS),
            sessions_opened: counter!(SESSIONS_OPENED),
            frames_sent: counter!(FRAMES_SENT),
            frames_dropped: counter!(FRAMES_DROPPED),
            client_events_accepted: counter!(CLIENT_EVENTS, "result" => "accepted"),
            client_events_rejected: counter!(CLIENT_EVENTS, "result" => "rejected"),
            notifications_queued: counter!(NOTIFICATIONS, "result" => "queued"),
            notifications_dropped: counter!(NOTIFICATIONS, "result" => "dropped"),
            tick_duration: histogram!(TICK_DURATION),
            tick_lag: histogram!(TICK_LAG),
            campaigns: gauge!(CAMPAIGNS),
            events: counter!(EVENTS_PUBLISHED),
            local_publications: counter!(LOCAL_PUBLICATIONS),
            inputs_dropped: counter!(INPUTS_DROPPED),
        }
    }

    pub(crate) fn session_closed(code: u16) {
        counter!(SESSIONS_CLOSED, "code" => code.to_string()).increment(1);
    }
}
