//! `ovasabi-loadtest`: see `--help`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use loadtest::client::SlowMode;
use loadtest::run::{RunConfig, Scenario, Tick};
use loadtest::server::Target;

/// Load-testing harness for OVASABI nodes. Only ever targets loopback addresses, ramps
/// connections at a set rate, and always stops by itself (`--deadline`). Above
/// `--max-per-process` clients it starts worker processes of itself, each with its own source
/// addresses (127.0.0.2, 127.0.0.3, ...).
#[derive(Parser, Debug)]
#[command(name = "ovasabi-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N clients over C campaigns; events published at R/s through REST for D.
    Fanout(Common),
    /// As fanout, with a fraction of clients that read slowly or not at all; fast and slow
    /// clients are reported separately.
    Slow {
        #[command(flatten)]
        common: Common,
        /// Fraction of slow clients.
        #[arg(long, default_value_t = 0.1)]
        slow_fraction: f64,
        /// A slow client reads one frame per this long; "stall" never reads.
        #[arg(long, default_value = "1s")]
        slow_read: String,
    },
    /// All clients disconnect and reconnect at once (with `since`) while events flow; reports
    /// the reconnect rate, the time until all are back, and whether every event was recovered.
    Storm {
        #[command(flatten)]
        common: Common,
        /// When, after publishing starts, the storm begins.
        #[arg(long, default_value = "5s")]
        storm_after: String,
    },
    /// Clients spread over several nodes (`--node` repeated), publisher on `--publish-node`.
    Cluster {
        #[command(flatten)]
        common: Common,
        /// REST base URL of the node that publishes (default: the first --node).
        #[arg(long)]
        publish_node: Option<String>,
        /// Its metrics base URL.
        #[arg(long)]
        publish_metrics: Option<String>,
    },
    /// Events accepted per second by one node: tasks publish back to back over REST, one
    /// event per call or a batch per call (`events:batch`); no WebSocket clients.
    Publish(PublishArgs),
    /// (internal) runs a share of the clients for a coordinating process.
    #[command(hide = true)]
    Worker,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Access token for the node's REST API and WebSocket upgrades (an admin's or campaign
    /// manager's; `ovasabi --dev` prints one).
    #[arg(long, env = "OVASABI_TOKEN")]
    token: Option<String>,
    /// REST/WebSocket base URL of a node; repeat for several.
    #[arg(long = "node", default_value = "http://127.0.0.1:8090")]
    nodes: Vec<String>,
    /// Metrics base URL of each node, in the same order (default: port 9090 of its host).
    #[arg(long = "metrics")]
    metrics: Vec<String>,
    /// Clients.
    #[arg(long, short = 'n', default_value_t = 1000)]
    clients: usize,
    /// Campaigns the clients are spread over.
    #[arg(long, short = 'c', default_value_t = 1)]
    campaigns: usize,
    /// Campaign frequency, Hz.
    #[arg(long, default_value_t = 10.0)]
    frequency: f64,
    /// Events published per second, over all campaigns.
    #[arg(long, short = 'r', default_value_t = 10.0)]
    rate: f64,
    /// How long to publish.
    #[arg(long, short = 'd', default_value = "10s")]
    duration: String,
    /// Size of each event's data, bytes.
    #[arg(long, short = 'p', default_value_t = 100)]
    payload: usize,
    /// Publish with `immediate: true` (one frame per event, no tick wait).
    #[arg(long)]
    immediate: bool,
    /// Ask for `compress=deflate` frames.
    #[arg(long)]
    compress: bool,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    ramp: u32,
    /// Wait after the last publish for the last deliveries.
    #[arg(long, default_value = "2s")]
    grace: String,
    /// Hard stop, whatever happens.
    #[arg(long, default_value = "10m")]
    deadline: String,
    /// Clients per process; above it, worker processes are started.
    #[arg(long, default_value_t = 19_000)]
    max_per_process: usize,
    /// Source addresses per process, from 127.0.0.2 (0 = the kernel's choice).
    #[arg(long, default_value_t = 1)]
    source_ips: usize,
    /// Leave the campaigns running at the end.
    #[arg(long)]
    keep: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart (latency distribution, throughput over time) here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct PublishArgs {
    /// Access token (an admin's or campaign manager's; `ovasabi --dev` prints one).
    #[arg(long, env = "OVASABI_TOKEN")]
    token: Option<String>,
    /// REST base URL of the node.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    node: String,
    /// Its metrics base URL (default: port 9090 of its host).
    #[arg(long)]
    metrics: Option<String>,
    /// Campaigns the calls are spread over.
    #[arg(long, short = 'c', default_value_t = 1)]
    campaigns: usize,
    /// Events per call (1: the single-event endpoint; up to 1000).
    #[arg(long, short = 'b', default_value_t = 100)]
    batch: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to publish.
    #[arg(long, short = 'd', default_value = "10s")]
    duration: String,
    /// Size of each event's data, bytes.
    #[arg(long, short = 'p', default_value_t = 100)]
    payload: usize,
    /// Publish with `immediate: true`.
    #[arg(long)]
    immediate: bool,
    /// Leave the campaigns running at the end.
    #[arg(long)]
    keep: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let node = a.node.trim_end_matches('/').to_owned();
    let cfg = loadtest::publish::PublishConfig {
        node: Target {
            metrics: a.metrics.map_or_else(
                || metrics_url(&node),
                |m| m.trim_end_matches('/').to_owned(),
            ),
            http: node,
        },
        token: a.token,
        campaigns: a.campaigns,
        batch: a.batch,
        concurrency: a.concurrency,
        duration: duration("duration", &a.duration)?,
        payload: a.payload,
        immediate: a.immediate,
        keep_campaigns: a.keep,
        run_id: format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    };
    let limit = cfg.duration + Duration::from_secs(120);
    let report = tokio::time::timeout(limit, loadtest::publish::run(cfg))
        .await
        .context("the run overran its deadline")??;
    print!("{}", loadtest::publish::table(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v)
        .with_context(|| format!("--{flag} {v:?}: expected a duration like 10s"))
}

fn metrics_url(node: &str) -> String {
    let host = node
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("127.0.0.1");
    format!("http://{host}:9090")
}

fn targets(nodes: &[String], metrics: &[String]) -> anyhow::Result<Vec<Target>> {
    if !metrics.is_empty() && metrics.len() != nodes.len() {
        anyhow::bail!(
            "give one --metrics per --node ({} nodes, {} metrics)",
            nodes.len(),
            metrics.len()
        );
    }
    Ok(nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Target {
            http: n.trim_end_matches('/').to_owned(),
            metrics: metrics
                .get(i)
                .map_or_else(|| metrics_url(n), |m| m.trim_end_matches('/').to_owned()),
        })
        .collect())
}

fn config(scenario: Scenario, c: &Common) -> anyhow::Result<RunConfig> {
    let nodes = targets(&c.nodes, &c.metrics)?;
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    Ok(RunConfig {
        scenario,
        publisher: nodes[0].clone(),
        nodes,
        clients: c.clients,
        campaigns: c.campaigns,
        frequency_hz: c.frequency,
        rate: c.rate,
        duration: duration("duration", &c.duration)?,
        payload: c.payload,
        immediate: c.immediate,
        compress: c.compress,
        slow_fraction: 0.0,
        slow_mode: SlowMode::Stalled,
        ramp_per_sec: c.ramp.max(1),
        grace: duration("grace", &c.grace)?,
        deadline: duration("deadline", &c.deadline)?,
        max_per_process: c.max_per_process.max(1),
        source_ips: c.source_ips,
        storm_after: Duration::from_secs(5),
        keep_campaigns: c.keep,
        run_id,
        token: c.token.clone(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ovasabi-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovasabi-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (cfg, common) = match cli.scenario {
        Command::Worker => return loadtest::run::worker_main().await,
        Command::Publish(a) => return publish(a).await,
        Command::Fanout(c) => (config(Scenario::Fanout, &c)?, c),
        Command::Slow {
            common,
            slow_fraction,
            slow_read,
        } => {
            let mut cfg = config(Scenario::Slow, &common)?;
            if !(0.0..=1.0).contains(&slow_fraction) {
                anyhow::bail!("--slow-fraction must be between 0 and 1");
            }
            cfg.slow_fraction = slow_fraction;
            cfg.slow_mode = if slow_read == "stall" {
                SlowMode::Stalled
            } else {
                SlowMode::Every(duration("slow-read", &slow_read)?)
            };
            (cfg, common)
        }
        Command::Storm {
            common,
            storm_after,
        } => {
            let mut cfg = config(Scenario::Storm, &common)?;
            cfg.storm_after = duration("storm-after", &storm_after)?;
            (cfg, common)
        }
        Command::Cluster {
            common,
            publish_node,
            publish_metrics,
        } => {
            let mut cfg = config(Scenario::Cluster, &common)?;
            if let Some(p) = publish_node {
                let metrics = publish_metrics.unwrap_or_else(|| metrics_url(&p));
                cfg.publisher = Target {
                    http: p.trim_end_matches('/').to_owned(),
                    metrics,
                };
            }
            (cfg, common)
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(cfg.clients as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    });
    let mut last_line = std::time::Instant::now();
    let mut on_tick = |t: Tick| {
        let msg = format!(
            "{}: {}/{} connected ({} failed), {} frames, {} events received",
            t.stage,
            t.progress.connected,
            t.clients,
            t.progress.failures,
            t.progress.frames,
            t.progress.events
        );
        match &bar {
            Some(b) => {
                b.set_message(msg);
                b.tick();
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                eprintln!("[{:>6.1}s] {msg}", t.elapsed.as_secs_f64());
                last_line = std::time::Instant::now();
            }
            None => {}
        }
    };
    let deadline = cfg.deadline;
    let report = tokio::time::timeout(
        deadline + Duration::from_secs(60),
        loadtest::run::run(cfg, &mut on_tick),
    )
    .await
    .context("the run overran its deadline")??;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    print!("{}", loadtest::report::table(&report));
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &common.svg {
        loadtest::chart::write(&report, path)?;
        eprintln!("chart: {}", path.display());
    }
    Ok(())
}
