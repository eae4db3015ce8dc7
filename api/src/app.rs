//! Wiring: builds the database, the engine node and the services from a [`Config`], binds
//! the listeners, and shuts everything down in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::broker::{Broker, RedisBroker, RedisConfig};
use engine::{MemoryBroker, Node};
use services::provider::ProviderConfig;
use services::user::TokenConfig;
use services::{Database, DbOptions, Provider};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::broadcaster::EngineBroadcaster;
use crate::cache::{METADATA_TTL, RedisMetadataCache};
use crate::config::Config;
use crate::{grpc, http, ops};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: services::ServiceError,
    },
    #[error("Redis at {url}: {source}")]
    Broker {
        url: String,
        #[source]
        source: engine::broker::BrokerError,
    },
    #[error("services: {0}")]
    Services(#[source] services::ServiceError),
    #[error("sequence file: {0}")]
    SeqFile(#[source] engine::broker::StoreError),
    #[error("dev token secret {path}: {reason}")]
    DevSecret { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens and migrates the configured database.
///
/// # Errors
/// [`StartError::Database`].
pub async fn open_database(config: &Config) -> Result<Database, StartError> {
    let url = config.database_url();
    let err = |source| StartError::Database {
        url: url.clone(),
        source,
    };
    let options = DbOptions {
        timeout: config.database_timeout,
    };
    let db = Database::connect_with(&url, options).await.map_err(err)?;
    db.migrate().await.map_err(err)?;
    Ok(db)
}

/// A started node.
pub struct Running {
    /// Where REST and WebSocket listen (the real port when the config said 0).
    pub http_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    pub node: Node,
    pub services: Provider,
    /// The token printed at start in `dev` mode (the admin account's).
    pub dev_admin_token: Option<String>,
    /// Its refresh token (`dev` mode), for new access tokens after it expires.
    pub dev_admin_refresh: Option<String>,
    db: Database,
    config: Arc<Config>,
    stop_http: CancellationToken,
    http_task: JoinHandle<()>,
    stop_ops: CancellationToken,
    ops_task: JoinHandle<()>,
    stop_grpc: CancellationToken,
    grpc_task: JoinHandle<()>,
    /// Stops the task that applies campaign schedules.
    stop_schedule: CancellationToken,
    /// Stops the bus's background connection (Redis pub/sub).
    stop_bus: CancellationToken,
}

/// Pending connections the kernel queues before `accept` (clients connecting in a burst).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Starts a node: database, engine, every active campaign's task, and both listeners.
///
/// # Errors
/// [`StartError`] when the database cannot be opened or a port cannot be bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = ops::recorder();
    let db = open_database(&config).await?;
    let http_listener = bind(config.http_addr).await?;
    let ops_listener = bind(config.metrics_addr).await?;
    let grpc_listener = bind(config.grpc_addr).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let metrics_addr = ops_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
    let mut config = config;
    if config.node_id.is_none() {
        // Name the node after the port it really got.
        config.http_addr = http_addr;
        config.node_id = Some(config.node_id());
    }
    let config = Arc::new(config);

    let stop_bus = CancellationToken::new();
    let broker: Arc<dyn Broker> = match &config.redis_url {
        Some(url) => {
            let redis = RedisConfig {
                url: url.clone(),
                prefix: config.redis_prefix.clone(),
                history_size: config.history_size,
                history_ttl: config.history_ttl,
                presence_ttl: config.presence_ttl,
                sharded: config.redis_sharded,
                timeout: config.redis_timeout,
            };
            RedisBroker::connect(redis, stop_bus.clone())
                .await
                .map_err(|source| StartError::Broker {
                    url: url.clone(),
                    source,
                })?
        }
        None => {
            Arc::new(MemoryBroker::persistent(&config.seq_file()).map_err(StartError::SeqFile)?)
        }
    };
    let node = Node::new(config.engine(), broker);
    let cache: Option<Arc<dyn services::cache::MetadataCache>> = match &config.redis_url {
        Some(url) => Some(Arc::new(
            RedisMetadataCache::connect(url, &config.redis_prefix, METADATA_TTL)
                .await
                .map_err(|e| StartError::Broker {
                    url: url.clone(),
                    source: engine::broker::BrokerError::Unavailable {
                        reason: e.to_string(),
                    },
                })?,
        )),
        None => None,
    };
    let secret = match &config.jwt_secret {
        Some(s) => s.as_bytes().to_vec(),
        // A browser's token survives a `--dev` restart.
        None if config.dev => dev_secret(&config.data_dir.join(DEV_SECRET_FILE))?,
        None => {
            tracing::warn!(
                "jwt_secret is not set: using a random one; tokens die with this process (set OVASABI_JWT_SECRET)"
            );
            random_secret()
        }
    };
    let services = Provider::new(ProviderConfig {
        db: db.clone(),
        broadcaster: Arc::new(EngineBroadcaster { node: node.clone() }),
        cache,
        tokens: TokenConfig {
            secret,
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
        },
        localization: services::localization::LocalizationConfig {
            default_locale: config.default_locale.clone(),
            cache_ttl: config.localization_cache_ttl,
        },
        babel: services::babel::BabelConfig {
            cache_ttl: config.localization_cache_ttl,
        },
        realtime: Arc::new(EngineBroadcaster { node: node.clone() }),
        notification: config.notification(),
        scheduler: config.scheduler(),
        commerce: config.commerce(),
        nexus: config.nexus(node.id()),
    })
    .await
    .map_err(StartError::Services)?;
    let dev_tokens = bootstrap_admin(&config, &services)
        .await
        .map_err(StartError::Services)?;
    let started = services
        .campaigns
        .start_all()
        .await
        .map_err(|source| StartError::Database {
            url: config.database_url(),
            source,
        })?;

    node.set_token_verifier(Arc::new(http::ws::SessionTokens(services.users.clone())));
    // Revocations of the last token lifetime, before the first request is served.
    if let Err(e) = services.users.sync_revocations().await {
        tracing::warn!(error = %e, "token revocations not read at start; retried every second");
    }

    let stop_http = CancellationToken::new();
    let app = http::router(http::AppState::new(
        node.clone(),
        services.clone(),
        config.clone(),
    ));
    let admission = Admission::new(&config);
    let http_task = tokio::spawn(serve_http1(
        http_listener,
        app,
        admission,
        stop_http.clone(),
    ));
    let stop_ops = CancellationToken::new();
    let ops_app = ops::router(ops::OpsState {
        metrics,
        node: node.clone(),
        db: db.clone(),
    });
    let ops_task = tokio::spawn({
        let stop = stop_ops.clone();
        async move {
            let serve =
                axum::serve(ops_listener, ops_app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }
    });
    let stop_schedule = CancellationToken::new();
    tokio::spawn(run_reconcile(services.clone(), stop_schedule.clone()));
    tokio::spawn(run_jobs(
        services.clone(),
        node.id().to_owned(),
        stop_schedule.clone(),
    ));
    tokio::spawn(run_revocations(
        services.clone(),
        node.clone(),
        stop_schedule.clone(),
    ));
    tokio::spawn({
        let notifications = services.notifications.clone();
        let stop = stop_schedule.clone();
        let node_id = node.id().to_owned();
        async move {
            notifications
                .run_deliveries(node_id, stop.cancelled_owned())
                .await;
        }
    });
    // Pattern runs: claimed from the shared tables, resumed by any node after one stops.
    tokio::spawn({
        let worker = services.nexus.spawn_worker();
        let stop = stop_schedule.clone();
        async move {
            stop.cancelled().await;
            worker.abort();
        }
    });
    let stop_grpc = CancellationToken::new();
    let grpc_task = tokio::spawn({
        let state = grpc::GrpcState {
            services: services.clone(),
            node: node.clone(),
        };
        let stop = stop_grpc.clone();
        async move {
            if let Err(e) = grpc::serve(state, grpc_listener, stop).await {
                tracing::error!(error = %e, "gRPC server cannot start");
            }
        }
    });
    tracing::info!(
        node = node.id(),
        http = %http_addr,
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        database = %config.database_url(),
        campaigns = started,
        "node started"
    );
    Ok(Running {
        http_addr,
        metrics_addr,
        grpc_addr,
        node,
        services,
        dev_admin_token: dev_tokens.as_ref().map(|t| t.access_token.clone()),
        dev_admin_refresh: dev_tokens.map(|t| t.refresh_token),
        db,
        config,
        stop_http,
        http_task,
        stop_ops,
        ops_task,
        stop_grpc,
        grpc_task,
        stop_schedule,
        stop_bus,
    })
}

/// Serves `app` over HTTP/1.1 with upgrades until `stop`, then lets in-flight requests finish.
///
/// Not `axum::serve`: with hyper-util's `http2` feature on (tonic enables it) that serves every
/// connection through protocol detection, whose rewinding reader then sits under every
/// WebSocket read and write; the WebSocket port needs HTTP/1.1 only. Each request carries the
/// client's address (`ConnectInfo`) for the audit log. A connection over one of
/// `admission`'s limits is closed as soon as it is accepted; an admitted one keeps its place
/// until it ends.
async fn serve_http1(
    listener: TcpListener,
    app: axum::Router,
    mut admission: Admission,
    stop: CancellationToken,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt as _;
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let place = match admission.admit(addr.ip()) {
            Ok(place) => place,
            Err(refusal) => {
                tracing::debug!(peer = %addr, reason = refusal.reason(), "connection refused");
                drop(tcp);
                continue;
            }
        };
        // Frames are batched per flush already: send them at once, without Nagle's delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let held = place.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                req.extensions_mut().insert(held.clone());
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let stop = stop.clone();
        connections.spawn(async move {
            // A client that does not finish its request headers in 10 s is dropped (slow
            // header attacks would otherwise hold sockets for ever).
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, "HTTP connection ended");
            }
            drop(place);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the engine is made to agree with the database.
const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Every 10 s makes the engine agree with the database (lifecycle messages missed during a
/// bus outage), until `stop`. Scheduled starts and ends are jobs of the scheduler
/// ([`run_jobs`]).
async fn run_reconcile(services: Provider, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick is immediate: the node has just started its campaigns.
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = services.campaigns.reconcile().await {
            tracing::debug!(error = %e, "campaigns not reconciled");
        }
    }
}

/// Registers every campaign's jobs once (repairs registrations lost after a campaign was
/// stored), then runs this node's scheduler worker: due jobs (campaign starts and ends,
/// scheduled notifications) claimed exactly once in the cluster, until `stop`.
async fn run_jobs(services: Provider, node_id: String, stop: CancellationToken) {
    match services.campaigns.sync_all_jobs().await {
        Ok(n) => tracing::debug!(campaigns = n, "campaign jobs registered"),
        Err(e) => tracing::warn!(error = %e, "campaign jobs not registered at start"),
    }
    match services.scheduler.worker(&node_id, services.job_handlers()) {
        Ok(worker) => worker.run(stop.cancelled_owned()).await,
        Err(e) => tracing::error!(error = %e, "scheduler worker cannot start"),
    }
}

/// How often the node reads the token revocations made on other nodes.
const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Learns token revocations (every [`REVOCATION_POLL`] from the database, at once for those
/// made here) and closes the revoked accounts' sessions on this node with 4401, until `stop`.
async fn run_revocations(services: Provider, node: engine::Node, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let users = &services.users;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = users.sync_revocations().await {
                    tracing::debug!(error = %e, "token revocations not read");
                }
            }
            () = users.revocations().changed() => {}
        }
        for r in users.revocations().take_pending() {
            node.revoke_sessions(&r.user_id, r.generation);
        }
    }
}

/// The file under `data_dir` that keeps `--dev`'s token secret across restarts.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// The token secret of a `--dev` node without `jwt_secret`: read from `path` (hex), or a new
/// random one written there (readable by its owner only) on the first start.
fn dev_secret(path: &Path) -> Result<Vec<u8>, StartError> {
    use std::io::Write as _;
    let err = |reason: String| StartError::DevSecret {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            let secret = decode_hex(text).ok_or_else(|| {
                err("not a hex string: delete the file for a new secret".to_owned())
            })?;
            if secret.len() < services::user::token::MIN_SECRET_LEN {
                return Err(err(format!(
                    "shorter than {} bytes: delete the file for a new secret",
                    services::user::token::MIN_SECRET_LEN
                )));
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_secret();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(format!("{hex}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "dev mode: new token secret written");
            Ok(secret)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The bytes of a hex string (even length, `0-9a-fA-F`).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// 32 random bytes from the operating system (two v4 UUIDs: 244 random bits).
fn random_secret() -> Vec<u8> {
    let mut s = Vec::with_capacity(32);
    s.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    s.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    s
}

/// Creates the configured admin account when missing (`admin_password`, or a random password
/// in `dev`); in `dev`, returns tokens of the admin account to print.
async fn bootstrap_admin(
    config: &Config,
    services: &Provider,
) -> Result<Option<services::user::Tokens>, services::ServiceError> {
    let password = match (&config.admin_password, config.dev) {
        (Some(p), _) => p.clone(),
        (None, true) => uuid::Uuid::new_v4().simple().to_string(),
        (None, false) => return Ok(None),
    };
    let (admin, created) = services
        .users
        .ensure_admin(&config.admin_username, &config.admin_email, &password)
        .await?;
    if created {
        tracing::info!(user = %admin.id, username = %admin.username, "admin account created");
    }
    if !config.dev {
        return Ok(None);
    }
    Ok(Some(services.users.issue(&admin.id).await?))
}

impl Running {
    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops the node: stops accepting, keeps broadcasting for `shutdown_drain`, lets every
    /// campaign send its final tick, closes every session with 1001, waits for all tasks up to
    /// `shutdown_timeout`, and gives the deferred audit rows as long to be written. Returns
    /// whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        tracing::info!(drain = ?self.config.shutdown_drain, "shutting down");
        self.stop_schedule.cancel();
        self.stop_http.cancel();
        self.stop_grpc.cancel();
        if !self.config.shutdown_drain.is_zero() {
            tokio::time::sleep(self.config.shutdown_drain).await;
        }
        let mut clean = self.node.shutdown(self.config.shutdown_timeout).await;
        // In-flight REST calls get what is left of the deadline; then the servers are
        // stopped whatever they are doing.
        for (task, stop) in [
            (self.http_task, None),
            (self.grpc_task, None),
            (self.ops_task, Some(&self.stop_ops)),
        ] {
            if let Some(stop) = stop {
                stop.cancel();
            }
            let abort = task.abort_handle();
            if tokio::time::timeout(self.config.shutdown_timeout, task)
                .await
                .is_err()
            {
                abort.abort();
                clean = false;
            }
        }
        // Nothing publishes any more: the audit rows the deferred writer still holds are
        // written (past the deadline, logged as lost) before the database closes.
        clean &= self.services.close(self.config.shutdown_timeout).await;
        self.stop_bus.cancel();
        self.db.close().await;
        tracing::info!(clean, "node stopped");
        clean
    }
}
