//! The operations surface on `:9090`: `/metrics` (Prometheus text, the one registry of the
//! process plus its CPU, memory and file figures), `/healthz` (alive) and `/readyz` (database
//! and bus reachable).

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use engine::Node;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use services::Database;

use crate::error::ApiError;

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    started_at();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = [engine::metrics::TICK_DURATION, engine::metrics::TICK_LAG]
                .into_iter()
                .fold(builder, |b, name| {
                    // Setting buckets only fails for an empty bucket list.
                    b.set_buckets_for_metric(
                        Matcher::Full(name.to_owned()),
                        engine::metrics::TICK_BUCKETS,
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new())
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
pub struct OpsState {
    pub metrics: PrometheusHandle,
    pub node: Node,
    pub db: Database,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

async fn render(State(s): State<OpsState>) -> impl IntoResponse {
    s.metrics.run_upkeep();
    let mut out = s.metrics.render();
    process_metrics(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn ready(State(s): State<OpsState>) -> impl IntoResponse {
    let db = s.db.ping().await;
    let bus = s.node.is_ready();
    let status = if db && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if db && bus { "ready" } else { "not_ready" },
        "checks": {"database": db, "bus": bus},
    });
    (status, axum::Json(body))
}

/// Linux reports CPU times in `/proc` in units of USER_HZ, which is 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// When the process started its metrics (seconds since the Unix epoch), fixed at the first
/// call (the recorder's installation, at start).
fn started_at() -> f64 {
    static STARTED: OnceLock<f64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Appends `ovasabi_build_info` and the standard `process_*` metrics: the start time, and
/// what `/proc/self` says (Linux only; elsewhere those are left out).
fn process_metrics(out: &mut String) {
    let _ = write!(
        out,
        "# HELP ovasabi_build_info The node's version (always 1).\n\
         # TYPE ovasabi_build_info gauge\novasabi_build_info{{version=\"{}\"}} 1\n\
         # HELP process_start_time_seconds Start time of the process since the Unix epoch.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
        env!("CARGO_PKG_VERSION"),
        started_at()
    );
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = write!(
            out,
            "# HELP process_max_fds Most file descriptors the process may open.\n\
             # TYPE process_max_fds gauge\nprocess_max_fds {max}\n"
        );
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at field 3.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 (indexes 11 and 12 here); threads is 20.
            let cpu = (num(11) + num(12)) / USER_HZ;
            let _ = write!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time of the process.\n\
                 # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n\
                 # HELP process_threads Threads of the process.\n\
                 # TYPE process_threads gauge\nprocess_threads {}\n",
                num(17)
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            let _ = write!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the process.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
                rss * 1024
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = write!(
            out,
            "# HELP process_open_fds Open file descriptors of the process.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {}\n",
            fds.count()
        );
    }
}
