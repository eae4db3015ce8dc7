//! A run: creates the campaigns, connects the clients (in this process, or in worker processes
//! above the per-process socket limit), publishes at the requested rate, samples the nodes, and
//! builds the [`Report`].

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, watch};

use crate::client::{self, ClientSpec, Merged, Phase, Progress, SetReport, Shared, SlowMode};
use crate::report::{self, Report};
use crate::server::{Api, Sample, Target, check_loopback};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Fanout,
    Slow,
    Storm,
    Cluster,
}

/// Everything a run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub scenario: Scenario,
    /// Nodes the clients connect to (round-robin).
    pub nodes: Vec<Target>,
    /// Node the publisher uses.
    pub publisher: Target,
    pub clients: usize,
    pub campaigns: usize,
    pub frequency_hz: f64,
    /// Events per second, over all campaigns.
    pub rate: f64,
    pub duration: Duration,
    /// Approximate size of each event's `data`, in bytes.
    pub payload: usize,
    pub immediate: bool,
    pub compress: bool,
    /// Fraction of slow clients (0–1).
    pub slow_fraction: f64,
    pub slow_mode: SlowMode,
    pub ramp_per_sec: u32,
    /// Wait after the last publish for the last deliveries.
    pub grace: Duration,
    /// The run stops by itself at this point, whatever happens.
    pub deadline: Duration,
    /// Clients per process; above it, worker processes are started.
    pub max_per_process: usize,
    /// Source addresses 127.0.0.2 … per process (0 = kernel's choice).
    pub source_ips: usize,
    /// For `storm`: when, into publishing, every client disconnects and reconnects.
    pub storm_after: Duration,
    pub keep_campaigns: bool,
    pub run_id: String,
    /// Bearer token for the REST calls (creating campaigns, publishing) and the upgrades.
    pub token: Option<String>,
}

impl RunConfig {
    fn slow_every(&self) -> usize {
        if self.slow_fraction <= 0.0 {
            0
        } else {
            (1.0 / self.slow_fraction).round().max(1.0) as usize
        }
    }
}

/// A line of progress for the display.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    pub stage: &'static str,
    pub elapsed: Duration,
    pub progress: Progress,
    pub clients: usize,
}

/// Where clients run: in this process, or in worker processes.
enum Sets {
    Local {
        shared: Arc<Shared>,
        phase: watch::Sender<Phase>,
        task: tokio::task::JoinHandle<()>,
    },
    Workers(Vec<Worker>),
}

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    progress: watch::Receiver<Progress>,
    ready: watch::Receiver<bool>,
    report: tokio::sync::oneshot::Receiver<SetReport>,
}

fn source_ips(first: usize, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            Ipv4Addr::new(
                127,
                0,
                ((first + i + 2) / 254) as u8,
                ((first + i + 2) % 254).max(2) as u8,
            )
        })
        .collect()
}

impl Sets {
    async fn start(cfg: &RunConfig, campaigns: &[String]) -> anyhow::Result<Self> {
        let base = ClientSpec {
            targets: cfg.nodes.clone(),
            campaigns: campaigns.to_vec(),
            first: 0,
            count: cfg.clients,
            slow_every: cfg.slow_every(),
            slow_mode: cfg.slow_mode,
            ramp_per_sec: cfg.ramp_per_sec,
            compress: cfg.compress,
            source_ips: source_ips(0, cfg.source_ips),
            run_id: cfg.run_id.clone(),
            token: cfg.token.clone(),
        };
        if cfg.clients <= cfg.max_per_process {
            let shared = Arc::new(Shared::new());
            let (tx, rx) = watch::channel(Phase::Run);
            let task = tokio::spawn(client::run_set(Arc::new(base), shared.clone(), rx));
            return Ok(Self::Local {
                shared,
                phase: tx,
                task,
            });
        }
        let n = cfg.clients.div_ceil(cfg.max_per_process);
        let per = cfg.clients.div_ceil(n);
        let ips_per_worker = cfg.source_ips.max(1);
        let exe = std::env::current_exe().context("cannot find this program to start workers")?;
        let mut workers = Vec::new();
        for k in 0..n {
            let first = k * per;
            let count = per.min(cfg.clients - first);
            let spec = ClientSpec {
                first,
                count,
                ramp_per_sec: (cfg.ramp_per_sec / n as u32).max(1),
                source_ips: source_ips(k * ips_per_worker, ips_per_worker),
                ..base.clone()
            };
            workers.push(Worker::spawn(&exe, &spec).await?);
        }
        Ok(Self::Workers(workers))
    }

    fn progress(&self) -> Progress {
        match self {
            Self::Local { shared, .. } => shared.progress(),
            Self::Workers(ws) => {
                let mut p = Progress::default();
                for w in ws {
                    p.add(&w.progress.borrow());
                }
                p
            }
        }
    }

    /// Whether every client has made its first connection attempt.
    fn all_attempted(&self, clients: usize) -> bool {
        match self {
            Self::Local { .. } => {
                let p = self.progress();
                (p.connected + p.failures) as usize >= clients
            }
            Self::Workers(ws) => ws.iter().all(|w| *w.ready.borrow()),
        }
    }

    async fn set_phase(&mut self, phase: Phase) {
        match self {
            Self::Local { phase: tx, .. } => {
                let _ = tx.send(phase);
            }
            Self::Workers(ws) => {
                let line = match phase {
                    Phase::Run => return,
                    Phase::Storm(n) => format!("storm {n}\n"),
                    Phase::Stop => "stop\n".to_owned(),
                };
                for w in ws {
                    let _ = w.stdin.write_all(line.as_bytes()).await;
                    let _ = w.stdin.flush().await;
                }
            }
        }
    }

    async fn finish(self) -> anyhow::Result<Vec<SetReport>> {
        match self {
            Self::Local {
                shared,
                phase,
                task,
            } => {
                let _ = phase.send(Phase::Stop);
                let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
                Ok(vec![shared.snapshot()])
            }
            Self::Workers(ws) => {
                let mut out = Vec::new();
                for mut w in ws {
                    let r = tokio::time::timeout(Duration::from_secs(60), w.report).await;
                    let _ = w.child.kill().await;
                    out.push(
                        r.context("a worker did not report in time")?
                            .context("a worker died")?,
                    );
                }
                Ok(out)
            }
        }
    }
}

impl Worker {
    async fn spawn(exe: &std::path::Path, spec: &ClientSpec) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(exe)
            .arg("worker")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdin
            .write_all(format!("{}\n", serde_json::to_string(spec)?).as_bytes())
            .await?;
        let (ptx, progress) = watch::channel(Progress::default());
        let (rtx, ready) = watch::channel(false);
        let (report_tx, report) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut report_tx = Some(report_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(p) = line.strip_prefix("progress ") {
                    if let Ok(p) = serde_json::from_str(p) {
                        let _ = ptx.send(p);
                    }
                } else if line == "ready" {
                    let _ = rtx.send(true);
                } else if let Some(r) = line.strip_prefix("report ")
                    && let (Ok(r), Some(tx)) = (serde_json::from_str(r), report_tx.take())
                {
                    let _ = tx.send(r);
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            progress,
            ready,
            report,
        })
    }
}

/// The worker side: reads its spec from stdin, runs the clients, reports on stdout.
///
/// # Errors
/// When the spec cannot be read.
pub async fn worker_main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec: ClientSpec =
        serde_json::from_str(&lines.next_line().await?.context("no spec on stdin")?)?;
    let count = spec.count;
    let shared = Arc::new(Shared::new());
    let (tx, rx) = watch::channel(Phase::Run);
    let task = tokio::spawn(client::run_set(Arc::new(spec), shared.clone(), rx));
    let reporter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut ready = false;
            loop {
                let p = shared.progress();
                println!("progress {}", serde_json::to_string(&p).unwrap_or_default());
                if !ready && (p.connected + p.failures) as usize >= count {
                    ready = true;
                    println!("ready");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    while let Ok(Some(cmd)) = lines.next_line().await {
        if let Some(n) = cmd.strip_prefix("storm ").and_then(|n| n.parse().ok()) {
            let _ = tx.send(Phase::Storm(n));
        } else if cmd == "stop" {
            break;
        }
    }
    let _ = tx.send(Phase::Stop);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    reporter.abort();
    println!("report {}", serde_json::to_string(&shared.snapshot())?);
    Ok(())
}

async fn sample_all(api: &Api, nodes: &[Target]) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(api.sample(n).await?);
    }
    Ok(out)
}

fn sum(samples: &[Sample]) -> Sample {
    let mut s = Sample::default();
    for x in samples {
        s.add(x);
    }
    s
}

/// Runs `cfg`, calling `on_tick` about twice a second. Stops by itself at `cfg.deadline`.
///
/// # Errors
/// When a node cannot be reached or refuses to create the campaigns.
pub async fn run(cfg: RunConfig, on_tick: &mut (dyn FnMut(Tick) + Send)) -> anyhow::Result<Report> {
    for t in cfg.nodes.iter().chain(std::iter::once(&cfg.publisher)) {
        check_loopback(&t.http)?;
        check_loopback(&t.metrics)?;
    }
    if cfg.clients == 0 || cfg.campaigns == 0 {
        bail!("--clients and --campaigns must be at least 1");
    }
    let deadline = Instant::now() + cfg.deadline;
    let api = Api::new(cfg.token.clone());
    let mut all_nodes = cfg.nodes.clone();
    if !all_nodes.iter().any(|n| n.http == cfg.publisher.http) {
        all_nodes.push(cfg.publisher.clone());
    }
    let baseline = sample_all(&api, &all_nodes).await?;
    let mut campaigns = Vec::new();
    for i in 0..cfg.campaigns {
        let slug = format!("lt-{}-{i}", cfg.run_id);
        campaigns.push(
            api.create_campaign(&cfg.publisher, &slug, cfg.frequency_hz)
                .await?,
        );
    }
    // Let every node start the campaigns' tasks.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let mut sets = Sets::start(&cfg, &campaigns).await?;
    while !sets.all_attempted(cfg.clients) && Instant::now() < deadline {
        on_tick(Tick {
            stage: "connecting",
            elapsed: start.elapsed(),
            progress: sets.progress(),
            clients: cfg.clients,
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ramp = start.elapsed();
    let established = sets.progress().connected;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected_samples = sample_all(&api, &all_nodes).await?;

    // Publish.
    let before = sum(&sample_all(&api, &all_nodes).await?);
    let before_progress = sets.progress();
    let publish_start = Instant::now();
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publisher = tokio::spawn(publish(
        api.clone(),
        cfg.publisher.clone(),
        campaigns.clone(),
        cfg.rate,
        cfg.duration,
        cfg.payload,
        cfg.immediate,
        published.clone(),
        failed.clone(),
    ));
    let mut timeline = Vec::new();
    let mut last = (Instant::now(), sets.progress());
    let mut storm: Option<report::Storm> = None;
    let mut storm_started: Option<(Instant, u64)> = None;
    let end = publish_start + cfg.duration + cfg.grace;
    while Instant::now() < end && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = sets.progress();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if now.duration_since(last.0) >= Duration::from_secs(1) {
            timeline.push(report::Point {
                t_s: now.duration_since(publish_start).as_secs_f64(),
                frames_per_s: (p.frames - last.1.frames) as f64 / dt,
                events_per_s: (p.events - last.1.events) as f64 / dt,
                connected: p.connected,
            });
            last = (now, p);
        }
        on_tick(Tick {
            stage: "publishing",
            elapsed: start.elapsed(),
            progress: p,
            clients: cfg.clients,
        });
        if cfg.scenario == Scenario::Storm {
            match storm_started {
                None if now.duration_since(publish_start) >= cfg.storm_after => {
                    storm_started = Some((now, missing_now(&sets).await));
                    sets.set_phase(Phase::Storm(1)).await;
                }
                Some((at, _))
                    if storm.is_none()
                        && p.connected >= established
                        && now.duration_since(at) > Duration::from_millis(600) =>
                {
                    storm = Some(report::Storm {
                        clients: established,
                        all_back_s: now.duration_since(at).as_secs_f64(),
                        reconnect_rate_per_s: established as f64
                            / now.duration_since(at).as_secs_f64(),
                        ..report::Storm::default()
                    });
                }
                _ => {}
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
    let after_progress = sets.progress();
    let after = sum(&sample_all(&api, &all_nodes).await?);
    let mut tick_rates = Vec::new();
    for n in &all_nodes {
        for c in &campaigns {
            if let Ok(r) = api.tick_rate(n, c).await {
                tick_rates.push(r);
            }
        }
    }
    sets.set_phase(Phase::Stop).await;
    let reports = sets.finish().await?;
    if !cfg.keep_campaigns {
        for c in &campaigns {
            let _ = api.end_campaign(&cfg.publisher, c).await;
        }
    }
    let merged = Merged::of(&reports)?;
    if let (Some(s), Some((_, missing_before))) = (storm.as_mut(), storm_started) {
        let missing_after = merged.fast.0.missing + merged.slow.0.missing;
        s.events_lost = missing_after.saturating_sub(missing_before);
        s.recovered = s.events_lost == 0;
        s.reconnect = crate::stats::Percentiles::of(&merged.reconnect);
    } else if cfg.scenario == Scenario::Storm && storm.is_none() {
        storm = Some(report::Storm {
            clients: established,
            recovered: false,
            ..report::Storm::default()
        });
    }
    Ok(report::build(report::Inputs {
        cfg: &cfg,
        ramp,
        established,
        merged: &merged,
        baseline: &sum(&baseline),
        connected: &sum(&connected_samples),
        server_delta: &after.since(&before),
        delivered: (
            after_progress.frames - before_progress.frames,
            after_progress.events - before_progress.events,
        ),
        published: published.load(std::sync::atomic::Ordering::Relaxed),
        publish_failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        tick_rates: &tick_rates,
        timeline,
        storm,
    }))
}

async fn missing_now(sets: &Sets) -> u64 {
    match sets {
        Sets::Local { shared, .. } => {
            shared
                .fast
                .missing
                .load(std::sync::atomic::Ordering::Relaxed)
                + shared
                    .slow
                    .missing
                    .load(std::sync::atomic::Ordering::Relaxed)
        }
        // Workers report missing counts only at the end; a storm in worker mode counts every
        // gap of the run (there are none before the storm when nothing is dropped).
        Sets::Workers(_) => 0,
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    api: Api,
    target: Target,
    campaigns: Vec<String>,
    rate: f64,
    duration: Duration,
    payload: usize,
    immediate: bool,
    published: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicU64>,
) {
    if rate <= 0.0 {
        tokio::time::sleep(duration).await;
        return;
    }
    let padding = "x".repeat(payload.saturating_sub(24));
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let limit = Arc::new(Semaphore::new(64));
    let end = Instant::now() + duration;
    let mut i = 0usize;
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < end {
        interval.tick().await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (api, target, campaign) = (
            api.clone(),
            target.clone(),
            campaigns[i % campaigns.len()].clone(),
        );
        let (published, failed) = (published.clone(), failed.clone());
        let data = json!({"t": client::now_us(), "p": padding});
        inflight.spawn(async move {
            match api.publish(&target, &campaign, &data, immediate).await {
                Ok(_) => published.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
            drop(permit);
        });
        i += 1;
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}
