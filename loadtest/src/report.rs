//! The report of a run: built from the clients' and the nodes' figures, printed as a table,
//! written as one JSON document.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::Merged;
use crate::run::{RunConfig, Scenario};
use crate::server::Sample;
use crate::stats::Percentiles;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: usize,
    pub established: u64,
    pub failed: u64,
    pub ramp_s: f64,
    pub rate_per_s: f64,
    pub connect: Percentiles,
    /// Clients the server closed during the run.
    pub closed_by_server: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Group {
    pub clients: u64,
    pub frames: u64,
    pub events: u64,
    /// Events never received (gaps in `seq`).
    pub missing: u64,
    pub duplicates: u64,
    pub latency: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delivery {
    /// Received from the start of publishing to the end of the grace period; the rates divide
    /// them by the publishing duration (what arrives in the grace period was published in it).
    pub frames: u64,
    pub events: u64,
    pub frames_per_s: f64,
    pub events_per_s: f64,
    pub published: u64,
    pub publish_failed: u64,
    pub publish_rate_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Server {
    pub frames_sent: f64,
    pub frames_dropped: f64,
    pub cpu_seconds: f64,
    /// Server CPU time per frame the server wrote, in microseconds.
    pub cpu_us_per_frame: f64,
    /// Server CPU time per event a client received, in microseconds.
    pub cpu_us_per_event: f64,
    pub rss_before_bytes: f64,
    pub rss_connected_bytes: f64,
    pub rss_per_connection_bytes: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TickRate {
    pub configured_hz: f64,
    pub measured_mean_hz: f64,
    pub measured_min_hz: f64,
    pub measured_max_hz: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Storm {
    pub clients: u64,
    pub all_back_s: f64,
    pub reconnect_rate_per_s: f64,
    pub reconnect: Percentiles,
    pub events_lost: u64,
    pub recovered: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    pub t_s: f64,
    pub frames_per_s: f64,
    pub events_per_s: f64,
    pub connected: u64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub config: RunConfig,
    pub connections: Connections,
    pub delivery: Delivery,
    pub fast: Group,
    pub slow: Option<Group>,
    pub server: Server,
    pub tick_rate: TickRate,
    pub storm: Option<Storm>,
    pub timeline: Vec<Point>,
    /// (percentile, ms) points of the fast clients' latency distribution, for charts.
    pub latency_curve: Vec<(f64, f64)>,
}

/// What [`build`] needs.
pub struct Inputs<'a> {
    pub cfg: &'a RunConfig,
    pub ramp: Duration,
    pub established: u64,
    pub merged: &'a Merged,
    pub baseline: &'a Sample,
    pub connected: &'a Sample,
    pub server_delta: &'a Sample,
    pub delivered: (u64, u64),
    pub published: u64,
    pub publish_failed: u64,
    pub tick_rates: &'a [f64],
    pub timeline: Vec<Point>,
    pub storm: Option<Storm>,
}

fn per(n: f64, d: f64) -> f64 {
    if d > 0.0 { n / d } else { 0.0 }
}

/// Builds the report.
pub fn build(i: Inputs<'_>) -> Report {
    let m = i.merged;
    let group = |g: &(crate::client::GroupCounts, hdrhistogram::Histogram<u64>)| Group {
        clients: g.0.clients,
        frames: g.0.frames,
        events: g.0.events,
        missing: g.0.missing,
        duplicates: g.0.duplicates,
        latency: Percentiles::of(&g.1),
    };
    let rates = i.tick_rates;
    let mean = per(rates.iter().sum(), rates.len() as f64);
    let curve = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0]
        .iter()
        .map(|&p| (p, m.fast.1.value_at_percentile(p) as f64 / 1000.0))
        .collect();
    let s = i.server_delta;
    Report {
        config: i.cfg.clone(),
        connections: Connections {
            attempted: i.cfg.clients,
            established: i.established,
            failed: m.connect_failures,
            ramp_s: i.ramp.as_secs_f64(),
            rate_per_s: per(i.established as f64, i.ramp.as_secs_f64()),
            connect: m.connect_percentiles(),
            closed_by_server: m.closed_by_server,
        },
        delivery: Delivery {
            frames: i.delivered.0,
            events: i.delivered.1,
            frames_per_s: per(i.delivered.0 as f64, i.cfg.duration.as_secs_f64()),
            events_per_s: per(i.delivered.1 as f64, i.cfg.duration.as_secs_f64()),
            published: i.published,
            publish_failed: i.publish_failed,
            publish_rate_per_s: per(i.published as f64, i.cfg.duration.as_secs_f64()),
        },
        fast: group(&m.fast),
        slow: (m.slow.0.clients > 0).then(|| group(&m.slow)),
        server: Server {
            frames_sent: s.frames_sent,
            frames_dropped: s.frames_dropped,
            cpu_seconds: s.cpu_seconds,
            cpu_us_per_frame: per(s.cpu_seconds * 1e6, s.frames_sent),
            cpu_us_per_event: per(s.cpu_seconds * 1e6, i.delivered.1 as f64),
            rss_before_bytes: i.baseline.rss_bytes,
            rss_connected_bytes: i.connected.rss_bytes,
            rss_per_connection_bytes: per(
                i.connected.rss_bytes - i.baseline.rss_bytes,
                i.established as f64,
            ),
        },
        tick_rate: TickRate {
            configured_hz: i.cfg.frequency_hz,
            measured_mean_hz: mean,
            measured_min_hz: rates
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(mean),
            measured_max_hz: rates.iter().copied().fold(0.0, f64::max),
        },
        storm: i.storm,
        timeline: i.timeline,
        latency_curve: curve,
    }
}

fn lat(p: &Percentiles) -> String {
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} ms",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let c = &r.config;
    let mut s = String::new();
    let mode = if c.immediate { "immediate" } else { "ticked" };
    let _ = writeln!(
        s,
        "scenario {:?}: {} clients on {} campaign(s) at {} Hz, {} events/s ({mode}, {} B) for {:?}",
        c.scenario, c.clients, c.campaigns, c.frequency_hz, c.rate, c.payload, c.duration
    );
    let k = &r.connections;
    let _ = writeln!(
        s,
        "connections   {} of {} up ({} failed) in {:.1} s, {:.0}/s; connect {}",
        k.established,
        k.attempted,
        k.failed,
        k.ramp_s,
        k.rate_per_s,
        lat(&k.connect)
    );
    let d = &r.delivery;
    let _ = writeln!(
        s,
        "delivery      {:.0} frames/s, {:.0} events/s; published {} ({} failed, {:.1}/s)",
        d.frames_per_s, d.events_per_s, d.published, d.publish_failed, d.publish_rate_per_s
    );
    let g = |name: &str, g: &Group, s: &mut String| {
        let _ = writeln!(
            s,
            "{name:<13} {} clients, {} events, {} missing, {} duplicates; latency {}",
            g.clients,
            g.events,
            g.missing,
            g.duplicates,
            lat(&g.latency)
        );
    };
    g("fast clients", &r.fast, &mut s);
    if let Some(slow) = &r.slow {
        g("slow clients", slow, &mut s);
    }
    let v = &r.server;
    let _ = writeln!(
        s,
        "server        {:.0} frames sent, {:.0} dropped; CPU {:.2} s = {:.2} µs/frame, {:.2} µs/event",
        v.frames_sent, v.frames_dropped, v.cpu_seconds, v.cpu_us_per_frame, v.cpu_us_per_event
    );
    let _ = writeln!(
        s,
        "memory        RSS {:.1} MiB before, {:.1} MiB connected: {:.0} B per connection",
        v.rss_before_bytes / 1048576.0,
        v.rss_connected_bytes / 1048576.0,
        v.rss_per_connection_bytes
    );
    let t = &r.tick_rate;
    let _ = writeln!(
        s,
        "tick rate     configured {} Hz, measured {:.3} Hz (min {:.3}, max {:.3})",
        t.configured_hz, t.measured_mean_hz, t.measured_min_hz, t.measured_max_hz
    );
    if let Some(st) = &r.storm {
        let _ = writeln!(
            s,
            "storm         {} clients back in {:.2} s ({:.0}/s); reconnect {}; {} events lost → recovered: {}",
            st.clients,
            st.all_back_s,
            st.reconnect_rate_per_s,
            lat(&st.reconnect),
            st.events_lost,
            st.recovered
        );
    }
    if c.scenario == Scenario::Cluster {
        let _ = writeln!(
            s,
            "cluster       clients on {} node(s), publisher on {}",
            c.nodes.len(),
            c.publisher.http
        );
    }
    s
}
