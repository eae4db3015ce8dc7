//! The node as a black box: its REST API (campaigns, events, stats) and its `/metrics` page.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One node's addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// `http://127.0.0.1:8090`
    pub http: String,
    /// `http://127.0.0.1:9090`
    pub metrics: String,
}

impl Target {
    pub fn ws_url(&self, campaign: &str, user: &str, query: &str) -> String {
        let base = self.http.replacen("http://", "ws://", 1);
        format!("{base}/ws/{campaign}/{user}{query}")
    }
}

/// Refuses anything but loopback targets: the harness only ever loads this machine.
///
/// # Errors
/// When `url` is not `http://127.x.y.z:port` or `http://localhost:port`.
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: expected http://HOST:PORT"))?;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    let ok = host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("{url}: the load harness only targets loopback addresses (127.0.0.0/8, localhost)");
    }
    Ok(())
}

/// Figures read from a node's `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    pub frames_sent: f64,
    pub frames_dropped: f64,
    pub cpu_seconds: f64,
    pub rss_bytes: f64,
    pub connections: f64,
}

impl Sample {
    /// Parses the Prometheus text format, summing series of the same name.
    pub fn parse(text: &str) -> Self {
        let mut values: HashMap<&str, f64> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            if let Ok(v) = value.trim().parse::<f64>() {
                *values.entry(name).or_default() += v;
            }
        }
        let get = |k: &str| values.get(k).copied().unwrap_or(0.0);
        Self {
            frames_sent: get("ovasabi_ws_frames_sent_total"),
            frames_dropped: get("ovasabi_ws_frames_dropped_total"),
            cpu_seconds: get("process_cpu_seconds_total"),
            rss_bytes: get("process_resident_memory_bytes"),
            connections: get("ovasabi_ws_connections"),
        }
    }

    /// `self - before`, for counters.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            frames_sent: self.frames_sent - before.frames_sent,
            frames_dropped: self.frames_dropped - before.frames_dropped,
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            rss_bytes: self.rss_bytes,
            connections: self.connections,
        }
    }

    pub fn add(&mut self, o: &Self) {
        self.frames_sent += o.frames_sent;
        self.frames_dropped += o.frames_dropped;
        self.cpu_seconds += o.cpu_seconds;
        self.rss_bytes += o.rss_bytes;
        self.connections += o.connections;
    }
}

/// A REST and metrics client for the nodes under test.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

async fn json_of(res: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = res.status();
    let body: Value = res
        .json()
        .await
        .with_context(|| format!("{what}: body is not JSON"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    Ok(body)
}

impl Api {
    /// A client of the REST API that sends `token` as a bearer token when given.
    pub fn new(token: Option<String>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) =
            token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// Reads `/metrics`.
    ///
    /// # Errors
    /// When the node cannot be reached.
    pub async fn sample(&self, t: &Target) -> anyhow::Result<Sample> {
        let text = self
            .http
            .get(format!("{}/metrics", t.metrics))
            .send()
            .await
            .with_context(|| format!("{}/metrics unreachable", t.metrics))?
            .text()
            .await?;
        Ok(Sample::parse(&text))
    }

    /// Creates an active campaign; returns its id.
    ///
    /// # Errors
    /// When the node refuses.
    pub async fn create_campaign(&self, t: &Target, slug: &str, hz: f64) -> anyhow::Result<String> {
        let body = json!({"name": slug, "slug": slug, "metadata": {"scheduling": {"frequency": hz}}, "state": {"n": 0}});
        let res = self
            .http
            .post(format!("{}/api/campaigns", t.http))
            .json(&body)
            .send()
            .await?;
        let c = json_of(res, "create campaign").await?;
        c["id"]
            .as_str()
            .map(str::to_owned)
            .context("create campaign: no id in the answer")
    }

    /// Publishes one event; returns its `seq`.
    ///
    /// # Errors
    /// When the node refuses.
    pub async fn publish(
        &self,
        t: &Target,
        campaign: &str,
        data: &Value,
        immediate: bool,
    ) -> anyhow::Result<u64> {
        let body = json!({"name": "load", "data": data, "immediate": immediate});
        let res = self
            .http
            .post(format!("{}/api/campaigns/{campaign}/events", t.http))
            .json(&body)
            .send()
            .await?;
        let r = json_of(res, "publish").await?;
        r["seq"].as_u64().context("publish: no seq in the answer")
    }

    /// The campaign's measured tick rate on that node.
    ///
    /// # Errors
    /// When the node refuses.
    pub async fn tick_rate(&self, t: &Target, campaign: &str) -> anyhow::Result<f64> {
        let res = self
            .http
            .get(format!("{}/api/campaigns/{campaign}/stats", t.http))
            .send()
            .await?;
        let s = json_of(res, "stats").await?;
        Ok(s["tick_rate_hz"].as_f64().unwrap_or(0.0))
    }

    /// Ends a campaign (clients get close 1000).
    ///
    /// # Errors
    /// When the node refuses.
    pub async fn end_campaign(&self, t: &Target, campaign: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .delete(format!("{}/api/campaigns/{campaign}", t.http))
            .send()
            .await?;
        json_of(res, "end campaign").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics_text() {
        let text = "# HELP x\n# TYPE ovasabi_ws_frames_sent_total counter\novasabi_ws_frames_sent_total 120\n\
                    ovasabi_ws_frames_dropped_total 3\nprocess_cpu_seconds_total 1.5\n\
                    process_resident_memory_bytes 1048576\novasabi_ws_connections 10\n\
                    ovasabi_ws_sessions_closed_total{code=\"1000\"} 2\n";
        let s = Sample::parse(text);
        assert_eq!(s.frames_sent, 120.0);
        assert_eq!(s.frames_dropped, 3.0);
        assert_eq!(s.cpu_seconds, 1.5);
        assert_eq!(s.rss_bytes, 1_048_576.0);
        assert_eq!(s.connections, 10.0);
        let later = Sample {
            frames_sent: 220.0,
            cpu_seconds: 2.0,
            ..s
        };
        let d = later.since(&s);
        assert_eq!(d.frames_sent, 100.0);
        assert_eq!(d.cpu_seconds, 0.5);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(check_loopback("http://127.0.0.1:8090").is_ok());
        assert!(check_loopback("http://127.0.0.7:1").is_ok());
        assert!(check_loopback("http://localhost:8090").is_ok());
        assert!(check_loopback("http://10.0.0.1:8090").is_err());
        assert!(check_loopback("http://example.com").is_err());
        assert!(check_loopback("ftp://127.0.0.1").is_err());
    }
}
