//! `ovasabi`: runs a node (`ovasabi` or `ovasabi serve`) or applies migrations
//! (`ovasabi migrate`). Configuration: see `api::config`; an invalid value exits with 64.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use api::config::Config;
use clap::{Parser, Subcommand};

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Flags overriding configuration keys (same names as the TOML keys).
        #[derive(clap::Args, Debug)]
        struct Flags {
            $( $(#[$doc])* #[arg(long, global = true, value_name = "VALUE")] $name: Option<String>, )*
        }

        impl Flags {
            fn pairs(&self) -> Vec<(String, String)> {
                let mut pairs = Vec::new();
                $( if let Some(v) = &self.$name { pairs.push((stringify!($name).to_owned(), v.clone())); } )*
                pairs
            }
        }
    };
}

flags! {
    /// REST + WebSocket address [default: 0.0.0.0:8090]
    http_addr,
    /// /metrics, /healthz, /readyz address [default: 0.0.0.0:9090]
    metrics_addr,
    /// gRPC address [default: 0.0.0.0:8080]
    grpc_addr,
    /// Require a token on WebSocket upgrades: true or false [default: true, false with --dev]
    auth,
    /// HS256 secret of the tokens, 32+ bytes [default: random per start; required with redis_url]
    jwt_secret,
    /// Access token lifetime [default: 15m]
    access_token_ttl,
    /// Refresh token lifetime [default: 7days]
    refresh_token_ttl,
    /// Admin account created at start when admin_password is set [default: admin]
    admin_username,
    /// Email of that account [default: admin@ovasabi.local]
    admin_email,
    /// Password of that account [default: none; with --dev a random one]
    admin_password,
    /// Node name [default: host name and HTTP port]
    node_id,
    /// Database URL [default: sqlite://data/ovasabi.db]
    database_url,
    /// Folder of the default SQLite file [default: data]
    data_dir,
    /// Longest wait for the database before answering 503 [default: 1s]
    database_timeout,
    /// Redis URL for a cluster, redis://host:port [default: none, in-process bus]
    redis_url,
    /// Sharded pub/sub on Redis 7+ (SPUBLISH/SSUBSCRIBE): true or false [default: false]
    redis_sharded,
    /// Prefix of Redis keys and channels [default: ovasabi]
    redis_prefix,
    /// Longest wait for one Redis call [default: 1s]
    redis_timeout,
    /// Log format: text or json [default: text]
    log_format,
    /// Largest REST request body in bytes; a larger Content-Length is refused at once [default: 1048576]
    max_body_size,
    /// Longest time to send a REST request body; past it 408 and the connection closes [default: 10s]
    body_timeout,
    /// Connections the HTTP port holds at once; more are closed at accept [default: 19000]
    max_connections,
    /// Connections one client address may hold on the HTTP port [default: 1000]
    max_connections_per_ip,
    /// Connections accepted per second on the HTTP port [default: 2000]
    accept_rate,
    /// Connections accepted at once above accept_rate [default: 4000]
    accept_burst,
    /// Web origins allowed to call the API and open WebSockets from a browser, comma-separated, or * [default: the node's own]
    allowed_origins,
    /// Frames a session's queue holds before dropping [default: 256]
    send_queue_capacity,
    /// Consecutive drops that close a slow session with 4008; 0 = never [default: 0]
    slow_close_drops,
    /// Time with a full queue that closes a slow session with 4008; 0s = never [default: 0s]
    slow_close_after,
    /// Server ping interval [default: 30s]
    ping_interval,
    /// Close a session silent for this long [default: 60s]
    pong_timeout,
    /// Largest inbound WebSocket message in bytes; over it close 1009 [default: 65536]
    max_message_size,
    /// Client events per second per session [default: 10]
    client_event_rate,
    /// Client event burst per session [default: 20]
    client_event_burst,
    /// Rejected client events in 10 s that close the session with 1008 [default: 100]
    client_event_abuse_limit,
    /// Inputs a campaign task buffers [default: 8192]
    campaign_inbox_capacity,
    /// Events one tick may carry [default: 10000]
    max_pending_events,
    /// WebSocket read buffer per connection in bytes [default: 1024]
    ws_read_buffer_size,
    /// WebSocket write buffer per connection in bytes [default: 16384]
    ws_write_buffer_size,
    /// Time a closing session may take to flush [default: 2s]
    close_timeout,
    /// Events kept per campaign for clients resuming with since; 0 = none [default: 1000]
    history_size,
    /// Events older than this are not recovered [default: 10m]
    history_ttl,
    /// How often a node reports its sessions to the cluster [default: 10s]
    presence_interval,
    /// A node's sessions are forgotten this long after its last report [default: 30s]
    presence_ttl,
    /// How often campaigns' figures are sampled for their 15-minute history [default: 5s]
    stats_interval,
    /// After SIGTERM, keep broadcasting this long before the final ticks [default: 0s]
    shutdown_drain,
    /// Wait at most this long for every task at shutdown [default: 10s]
    shutdown_timeout,
    /// Where every translation fallback chain ends (BCP 47) [default: en]
    default_locale,
    /// How long translations and price rules are cached per node [default: 10s]
    localization_cache_ttl,
    /// SMTP relay for notification emails, smtp://host:port or smtps://host:port [default: none, emails skipped]
    smtp_url,
    /// From: of notification emails [default: OVASABI <notifications@localhost>]
    email_from,
    /// Attempts per email or webhook delivery before it fails [default: 6]
    notification_max_attempts,
    /// First retry delay of a delivery, doubled per attempt, with jitter [default: 5s]
    notification_backoff,
    /// Longest wait for a webhook's answer [default: 10s]
    webhook_timeout,
    /// How long a node's claim on a scheduled job holds (handlers get half) [default: 120s]
    scheduler_lease,
    /// How often each node looks for due scheduled jobs [default: 1s]
    scheduler_poll_interval,
    /// How long a node's claim on a pattern run holds (steps get two thirds) [default: 30s]
    nexus_lease,
    /// How often each node looks for due pattern runs [default: 200ms]
    nexus_poll_interval,
}

/// The OVASABI real-time broadcast node.
#[derive(Parser, Debug)]
#[command(name = "ovasabi", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file [default: ovasabi.toml when present; env OVASABI_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Development mode: anonymous viewers, an admin account, its token printed at start
    #[arg(long, global = true)]
    dev: bool,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// The Amadeus knowledge graph (`knowledge_graph.json`), generated from this build.
    Kg {
        #[command(subcommand)]
        command: KgCommand,
        /// The graph file.
        #[arg(long, global = true, default_value = "knowledge_graph.json")]
        file: PathBuf,
        /// The repository root (for the workspace manifests).
        #[arg(long, global = true, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum KgCommand {
    /// Write the graph (the previous file is kept under --backups first).
    Generate {
        #[arg(long, default_value = "kg-backups")]
        backups: PathBuf,
        /// Backups kept.
        #[arg(long, default_value_t = 10)]
        keep: usize,
    },
    /// Exit 1, with a diff, when the file is not what this build generates.
    Check,
    /// Check the file's rules: dependencies resolve, table names, health checks, metrics.
    Validate,
    /// A service, table or endpoint and its relations, or a JSON pointer (`/services/user`).
    Query { entity: String },
    /// Everything that depends on a service, infrastructure, table or endpoint, with the path.
    Impact { node: String },
    /// A Mermaid flowchart of services and dependencies (optionally one's neighbourhood).
    Mermaid {
        #[arg(long)]
        focus: Option<String>,
    },
    /// Catalog entities for another tool.
    Export {
        #[arg(long, value_parser = ["backstage"])]
        format: String,
    },
    /// Restore the newest backup.
    Rollback {
        #[arg(long, default_value = "kg-backups")]
        backups: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(Command::Kg {
        command,
        file,
        root,
    }) = cli.command
    {
        return kg(command, &file, &root);
    }
    let mut pairs = cli.flags.pairs();
    if cli.dev {
        pairs.push(("dev".to_owned(), "true".to_owned()));
    }
    let config = match Config::load(cli.config.clone(), &pairs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ovasabi: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ovasabi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Kg { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, in the log (which goes to the terminal unless redirected).
            tracing::error!(error = describe(&e), "ovasabi failed");
            ExitCode::FAILURE
        }
    }
}

/// `ovasabi kg ...`: 0 when it did what was asked, 1 when a check or validation failed.
fn kg(command: KgCommand, file: &std::path::Path, root: &std::path::Path) -> ExitCode {
    // Only warnings, on stderr: stdout carries the answer.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    // The answer, written at the end (a closed pipe, as `| head` does, is not an error).
    let mut out = String::new();
    let run = || -> anyhow::Result<bool> {
        use std::fmt::Write as _;
        let read = || -> anyhow::Result<serde_json::Value> {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read {} (run ovasabi kg generate)", file.display())
            })?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
        };
        let generated = || -> anyhow::Result<serde_json::Value> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let facts = rt.block_on(api::kg::facts(root))?;
            Ok(services::amadeus::generate(&facts))
        };
        match command {
            KgCommand::Generate { backups, keep } => {
                let graph = generated()?;
                match api::kg::write(file, &backups, keep, &graph)? {
                    api::kg::Written::Replaced(Some(kept)) => {
                        writeln!(
                            out,
                            "{} written (previous kept as {})",
                            file.display(),
                            kept.display()
                        )?;
                    }
                    api::kg::Written::Replaced(None) => {
                        writeln!(out, "{} written", file.display())?;
                    }
                    api::kg::Written::Unchanged => {
                        writeln!(out, "{} is up to date", file.display())?;
                    }
                }
            }
            KgCommand::Check => {
                let diff = services::amadeus::diff(&read()?, &generated()?);
                if !diff.is_empty() {
                    eprintln!(
                        "{} is not what the code generates ({} differences); run `cargo run -- kg generate`:",
                        file.display(),
                        diff.len()
                    );
                    for line in diff {
                        eprintln!("  {line}");
                    }
                    return Ok(false);
                }
                writeln!(out, "{} matches the code", file.display())?;
            }
            KgCommand::Validate => {
                let problems = services::amadeus::validate(&read()?);
                for p in &problems {
                    eprintln!("  {p}");
                }
                if !problems.is_empty() {
                    return Ok(false);
                }
                writeln!(out, "{} holds every rule", file.display())?;
            }
            KgCommand::Query { entity } => match api::kg::query(&read()?, &entity) {
                Some(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
                None => anyhow::bail!("nothing called {entity:?} in the graph"),
            },
            KgCommand::Impact { node } => {
                let graph = read()?;
                let Some(hit) = services::amadeus::impact(&graph, &node) else {
                    anyhow::bail!("nothing called {node:?} in the graph");
                };
                if hit.is_empty() {
                    writeln!(out, "nothing depends on {node}")?;
                }
                for (what, path) in hit {
                    let via: Vec<String> = path
                        .iter()
                        .map(|(a, rel, b)| format!("{a} {rel} {b}"))
                        .collect();
                    writeln!(out, "{what}\t{}", via.join(", "))?;
                }
            }
            KgCommand::Mermaid { focus } => {
                write!(
                    out,
                    "{}",
                    services::amadeus::mermaid(&read()?, focus.as_deref())
                )?;
            }
            KgCommand::Export { .. } => write!(out, "{}", api::kg::backstage(&read()?))?,
            KgCommand::Rollback { backups } => {
                let restored = api::kg::rollback(file, &backups)?;
                writeln!(
                    out,
                    "{} restored from {}",
                    file.display(),
                    restored.display()
                )?;
            }
        }
        Ok(true)
    };
    let result = run();
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ovasabi kg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = api::app::start(config)
        .await
        .context("cannot start the node")?;
    println!(
        "ovasabi listening: http://{} (REST, WebSocket, console), grpc://{}, http://{}/metrics",
        running.http_addr, running.grpc_addr, running.metrics_addr
    );
    if let (Some(token), Some(refresh)) = (&running.dev_admin_token, &running.dev_admin_refresh) {
        println!(
            "dev mode: anonymous viewers allowed; admin token (valid {ttl}):\n{token}\n\
             console signed in as admin: http://localhost:{port}/#token={token}&refresh={refresh}\n\
             new tokens when it expires: curl -s -XPOST localhost:{port}/api/auth/refresh \
             -H 'content-type: application/json' -d '{{\"refresh_token\":\"{refresh}\"}}'",
            ttl = humantime::format_duration(running.config().access_token_ttl),
            port = running.http_addr.port()
        );
    }
    wait_for_signal().await?;
    running.shutdown().await;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = api::app::open_database(&config)
        .await
        .context("migration failed")?;
    db.close().await;
    println!("ovasabi: migrations applied to {}", config.database_url());
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// The error and its causes, each said once: the node's errors already name their source in
/// their own message, which `{:#}` would repeat.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if out.contains(&part) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&part);
    }
    out
}
