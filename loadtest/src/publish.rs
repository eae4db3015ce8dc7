//! The `publish` scenario: how many events one node accepts per second. `concurrency` tasks
//! publish back to back for `duration` over REST, one event per call
//! (`POST /api/campaigns/{id}/events`) or `batch` per call (`.../events:batch`), spread
//! round-robin over `campaigns` campaigns; every answer is checked (status, and the `seq`
//! range a batch says it took), call latencies go to a histogram, and the node's CPU seconds
//! over the run come from its `/metrics`. No WebSocket clients: this measures the publish
//! path (auth, campaign lookup, bus, audit row), not the fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::server::{Api, Target, check_loopback};
use crate::stats::{Percentiles, Sharded};

/// What to run.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub node: Target,
    pub token: Option<String>,
    /// Campaigns created for the run (and ended after it unless `keep`).
    pub campaigns: usize,
    /// Events per call: 1 uses the single-event endpoint.
    pub batch: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub duration: Duration,
    /// Size of each event's data, bytes.
    pub payload: usize,
    pub immediate: bool,
    pub keep_campaigns: bool,
    pub run_id: String,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishReport {
    pub batch: usize,
    pub concurrency: usize,
    pub campaigns: usize,
    pub payload: usize,
    pub elapsed_s: f64,
    /// Events the node accepted (answered 202 for).
    pub events: u64,
    pub calls: u64,
    /// Calls answered with anything but 202, or not answered.
    pub errors: u64,
    /// The first error's text, if any.
    pub first_error: Option<String>,
    pub events_per_s: f64,
    pub calls_per_s: f64,
    /// Latency of one call, from send to answer.
    pub call_latency: Percentiles,
    /// The node's CPU seconds over the run, per 1,000 accepted events (both cores).
    pub node_cpu_ms_per_1000_events: f64,
    pub node_cpu_share: f64,
}

/// Runs the scenario.
///
/// # Errors
/// A target that is not loopback, a node that refuses to create the campaigns or cannot be
/// read; errors of single calls are counted, not returned.
pub async fn run(cfg: PublishConfig) -> anyhow::Result<PublishReport> {
    check_loopback(&cfg.node.http)?;
    check_loopback(&cfg.node.metrics)?;
    anyhow::ensure!(
        (1..=1000).contains(&cfg.batch),
        "--batch must be between 1 and 1000"
    );
    anyhow::ensure!(cfg.concurrency >= 1, "--concurrency must be at least 1");
    let api = Api::new(cfg.token.clone());
    let mut campaigns = Vec::new();
    for i in 0..cfg.campaigns.max(1) {
        let slug = format!("lt-pub-{}-{i}", cfg.run_id);
        campaigns.push(api.create_campaign(&cfg.node, &slug, 10.0).await?);
    }
    let campaigns = Arc::new(campaigns);
    let data = json!({ "pad": "x".repeat(cfg.payload.saturating_sub(10)) });
    let body = if cfg.batch == 1 {
        json!({"name": "load", "data": data, "immediate": cfg.immediate})
    } else {
        let events: Vec<Value> = (0..cfg.batch)
            .map(|_| json!({"name": "load", "data": data, "immediate": cfg.immediate}))
            .collect();
        json!({ "events": events })
    };
    let body_bytes = Arc::new(serde_json::to_vec(&body)?);

    let events = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let latency = Arc::new(Sharded::new(cfg.concurrency.min(64)));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(cfg.concurrency)
        .build()
        .context("HTTP client")?;

    let before = api.sample(&cfg.node).await?;
    let started = Instant::now();
    let until = started + cfg.duration;
    let mut tasks = Vec::new();
    for worker in 0..cfg.concurrency {
        let (http, campaigns, body_bytes) = (http.clone(), campaigns.clone(), body_bytes.clone());
        let (events, calls, errors) = (events.clone(), calls.clone(), errors.clone());
        let (first_error, latency) = (first_error.clone(), latency.clone());
        let (base, token, batch) = (cfg.node.http.clone(), cfg.token.clone(), cfg.batch);
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < until {
                let campaign = &campaigns[n % campaigns.len()];
                n += 1;
                let url = if batch == 1 {
                    format!("{base}/api/campaigns/{campaign}/events")
                } else {
                    format!("{base}/api/campaigns/{campaign}/events:batch")
                };
                let mut req = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body_bytes.as_ref().clone());
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let t0 = Instant::now();
                let outcome = match req.send().await {
                    Ok(res) if res.status() == 202 => match res.json::<Value>().await {
                        Ok(v) => accepted(&v, batch),
                        Err(e) => Err(format!("answer: {e}")),
                    },
                    Ok(res) => {
                        let status = res.status();
                        Err(format!(
                            "HTTP {status}: {}",
                            res.text().await.unwrap_or_default()
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                };
                latency.record(
                    worker,
                    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
                );
                calls.fetch_add(1, Relaxed);
                match outcome {
                    Ok(n) => {
                        events.fetch_add(n, Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Relaxed);
                        let mut first = first_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        first.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a publishing task failed")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = api.sample(&cfg.node).await?;
    if !cfg.keep_campaigns {
        for c in campaigns.iter() {
            api.end_campaign(&cfg.node, c).await?;
        }
    }
    let events = events.load(Relaxed);
    let calls = calls.load(Relaxed);
    let cpu = after.since(&before).cpu_seconds;
    let first_error = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(PublishReport {
        batch: cfg.batch,
        concurrency: cfg.concurrency,
        campaigns: campaigns.len(),
        payload: cfg.payload,
        elapsed_s: elapsed,
        events,
        calls,
        errors: errors.load(Relaxed),
        first_error,
        events_per_s: events as f64 / elapsed,
        calls_per_s: calls as f64 / elapsed,
        call_latency: Percentiles::of(&latency.merged()),
        node_cpu_ms_per_1000_events: if events == 0 {
            0.0
        } else {
            cpu * 1000.0 / (events as f64 / 1000.0)
        },
        node_cpu_share: cpu / elapsed,
    })
}

/// The events an answer says were accepted: 1 for `{"seq"}`, `count` for a batch whose range
/// matches it.
fn accepted(v: &Value, batch: usize) -> Result<u64, String> {
    if batch == 1 {
        return v["seq"]
            .as_u64()
            .map(|_| 1)
            .ok_or_else(|| format!("no seq in {v}"));
    }
    let (first, last, count) = (
        v["first_seq"].as_u64(),
        v["last_seq"].as_u64(),
        v["count"].as_u64(),
    );
    match (first, last, count) {
        (Some(f), Some(l), Some(c)) if c == batch as u64 && l + 1 - f == c => Ok(c),
        _ => Err(format!("a batch of {batch} answered {v}")),
    }
}

/// The report as a few lines of text.
pub fn table(r: &PublishReport) -> String {
    format!(
        "publish: batch {} x {} in flight, {} campaign(s), {} B events, {:.1} s\n\
         accepted   {} events in {} calls ({} errors{})\n\
         throughput {:.0} events/s, {:.0} calls/s\n\
         call p50   {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         node CPU   {:.2} ms per 1,000 events ({:.0}% of one core)\n",
        r.batch,
        r.concurrency,
        r.campaigns,
        r.payload,
        r.elapsed_s,
        r.events,
        r.calls,
        r.errors,
        r.first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        r.events_per_s,
        r.calls_per_s,
        r.call_latency.p50_ms,
        r.call_latency.p99_ms,
        r.call_latency.max_ms,
        r.node_cpu_ms_per_1000_events,
        r.node_cpu_share * 100.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        assert_eq!(accepted(&json!({"seq": 4}), 1), Ok(1));
        assert!(accepted(&json!({}), 1).is_err());
        assert_eq!(
            accepted(&json!({"first_seq": 5, "last_seq": 14, "count": 10}), 10),
            Ok(10)
        );
        assert!(accepted(&json!({"first_seq": 5, "last_seq": 13, "count": 10}), 10).is_err());
        assert!(accepted(&json!({"first_seq": 5, "last_seq": 14, "count": 10}), 9).is_err());
    }
}
