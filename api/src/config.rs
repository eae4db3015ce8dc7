//! Node configuration, layered: built-in defaults < `ovasabi.toml` (or `--config` /
//! `OVASABI_CONFIG`) < environment (`DATABASE_URL`, `REDIS_URL`, `OVASABI_<KEY>`) <
//! command-line flags (`--<key>`). Every key is flat and spelled the same way in each layer
//! (`send_queue_capacity` / `OVASABI_SEND_QUEUE_CAPACITY` / `--send-queue-capacity`).
//! Durations are strings such as `"250ms"` or `"30s"`. An invalid value is a [`ConfigError`]
//! that names the key; `main` exits with code 64 on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};

/// The configuration file read when neither `--config` nor `OVASABI_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "ovasabi.toml";

/// Every setting of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// REST, WebSocket and the web page.
    pub http_addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
    /// gRPC (every service, health, reflection).
    pub grpc_addr: SocketAddr,
    /// Development mode: anonymous WebSocket viewers, a token secret kept in
    /// `data_dir/dev-jwt-secret` when none is set (so tokens survive a restart), an `admin`
    /// account created when missing, and its token printed at start.
    pub dev: bool,
    /// Require a token on WebSocket upgrades (off in `dev`). REST and gRPC calls are always
    /// checked against the RBAC policies.
    pub auth: bool,
    /// HS256 secret of the JWTs (at least 32 bytes). Required with `redis_url` (every node
    /// must check the others' tokens); otherwise `--dev` keeps one in `data_dir`, and other
    /// nodes use a random one per start, with a warning.
    pub jwt_secret: Option<String>,
    /// HMAC-SHA256 secret (at least 16 bytes) of the `manual` payment provider's webhook
    /// (`POST /api/commerce/webhooks/manual`, e.g. a bank reconciliation feed); without it
    /// that webhook answers 404 and payments are confirmed by hand only.
    pub manual_webhook_secret: Option<String>,
    /// How long an access token lives.
    #[serde(with = "duration")]
    pub access_token_ttl: Duration,
    /// How long a refresh token lives.
    #[serde(with = "duration")]
    pub refresh_token_ttl: Duration,
    /// The admin account created at start when `admin_password` is set (or in `dev`).
    pub admin_username: String,
    pub admin_email: String,
    pub admin_password: Option<String>,
    /// Name of this node (default: host name and HTTP port).
    pub node_id: Option<String>,
    /// `sqlite://...` or `postgres://...`; default: a SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// Where the default SQLite file lives.
    pub data_dir: PathBuf,
    /// Longest wait for the database (a pooled connection, opening one included, or a locked
    /// SQLite file): past it a call answers 503 instead of queueing behind a database that is
    /// down, so a client retrying on its own timeout does not repeat calls that went through.
    #[serde(with = "duration")]
    pub database_timeout: Duration,
    /// Redis for a cluster of nodes (`redis://host:port`); none: in-process bus, one node.
    pub redis_url: Option<String>,
    /// Sharded pub/sub (Redis 7+): campaign channels are shard channels (`SPUBLISH`,
    /// `SSUBSCRIBE`); every node of a cluster must agree.
    pub redis_sharded: bool,
    /// Prefix of every Redis key and channel (several clusters can share one Redis).
    pub redis_prefix: String,
    /// Longest wait for any one Redis call: a dead or frozen Redis costs a request at most
    /// this (then the node publishes on its own, see docs/operations.md).
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Largest REST request body, in bytes. A request declaring a larger `Content-Length` is
    /// answered 413 before any of its body is read.
    pub max_body_size: usize,
    /// Longest time a client may take to send a REST request body once its headers are in:
    /// past it the request is answered 408 and the connection closed (a client sending headers
    /// and one byte would otherwise hold its socket for ever).
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Connections `http_addr` holds at once (REST and WebSocket); more are closed at accept.
    /// Keep it below the file limit: the rest is the reserve of the metrics and gRPC listeners,
    /// the database and Redis.
    pub max_connections: usize,
    /// Connections one client address may hold on `http_addr` at once.
    pub max_connections_per_ip: usize,
    /// Connections accepted per second on `http_addr` (reconnect storms); more are closed.
    pub accept_rate: f64,
    /// Connections that may be accepted at once above `accept_rate`.
    pub accept_burst: u32,
    /// Web origins (`https://app.example.com`, or `*` for any) allowed to call the REST API
    /// from a browser (CORS) and to open WebSockets, besides the node's own origin. A list, or
    /// one comma-separated string (`OVASABI_ALLOWED_ORIGINS=https://a.example,https://b.example`).
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_origins: Vec<String>,

    pub send_queue_capacity: usize,
    /// Consecutive drops that close a slow session with 4008 (0 = never).
    pub slow_close_drops: u32,
    /// Time with a full queue that closes a slow session with 4008 (0s = never).
    #[serde(with = "duration")]
    pub slow_close_after: Duration,
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    #[serde(with = "duration")]
    pub pong_timeout: Duration,
    /// Largest inbound WebSocket message, in bytes (over it: close 1009).
    pub max_message_size: usize,
    pub client_event_rate: f64,
    pub client_event_burst: u32,
    pub client_event_abuse_limit: u32,
    pub campaign_inbox_capacity: usize,
    pub max_pending_events: usize,
    /// Per-connection read buffer of the WebSocket codec, in bytes.
    pub ws_read_buffer_size: usize,
    /// Bytes buffered before the WebSocket codec writes to the socket.
    pub ws_write_buffer_size: usize,
    #[serde(with = "duration")]
    pub close_timeout: Duration,
    /// Events each campaign keeps for clients resuming with `since` (0 = no recovery).
    pub history_size: usize,
    /// Events older than this are not recovered.
    #[serde(with = "duration")]
    pub history_ttl: Duration,
    /// How often a node reports its sessions to the cluster.
    #[serde(with = "duration")]
    pub presence_interval: Duration,
    /// A node's sessions are forgotten by the cluster this long after its last report.
    #[serde(with = "duration")]
    pub presence_ttl: Duration,
    /// How often each campaign's figures are sampled for `GET /api/campaigns/{id}/stats/history`
    /// (the last 15 minutes, at most 900 samples).
    #[serde(with = "duration")]
    pub stats_interval: Duration,
    /// After SIGTERM: how long to keep broadcasting before the final ticks.
    #[serde(with = "duration")]
    pub shutdown_drain: Duration,
    /// After the final ticks: how long to wait for every task before exiting anyway.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Where every translation fallback chain ends (BCP 47, e.g. `en`, `en-US`).
    pub default_locale: String,
    /// How long a node serves translations and price rules from its cache before reading them
    /// again ("0s": no cache). Changes made through a node show there at once, on the others
    /// after at most this long.
    #[serde(with = "duration")]
    pub localization_cache_ttl: Duration,
    /// Where notification emails go out: `smtp://host:port` (plain; `?tls=required` for
    /// STARTTLS) or `smtps://host:port` (TLS), with `user:password@` if the relay wants it.
    /// Unset: email deliveries are recorded as `skipped`.
    pub smtp_url: Option<String>,
    /// The `From:` of notification emails (`Name <address>`).
    pub email_from: String,
    /// Attempts per email or webhook delivery before it is `failed`.
    pub notification_max_attempts: u32,
    /// The first retry's delay, doubled per attempt (with jitter), capped at 15 minutes.
    #[serde(with = "duration")]
    pub notification_backoff: Duration,
    /// Longest wait for a webhook receiver's answer.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// How long a node's claim on a scheduled job holds: another node takes the job over
    /// only after it (its node died). Handlers may run for half of it.
    #[serde(with = "duration")]
    pub scheduler_lease: Duration,
    /// How often each node looks for due scheduled jobs.
    #[serde(with = "duration")]
    pub scheduler_poll_interval: Duration,
    /// How long a node's claim on a pattern run holds (renewed before each step): another
    /// node resumes the run only after it. A step's attempt may take two thirds of it.
    #[serde(with = "duration")]
    pub nexus_lease: Duration,
    /// How often each node looks for due pattern runs (a run started on the node itself
    /// starts at once).
    #[serde(with = "duration")]
    pub nexus_poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let e = engine::Config::default();
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8090)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            dev: false,
            auth: true,
            jwt_secret: None,
            manual_webhook_secret: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            admin_username: "admin".to_owned(),
            admin_email: "admin@ovasabi.local".to_owned(),
            admin_password: None,
            node_id: None,
            database_url: None,
            data_dir: PathBuf::from("data"),
            database_timeout: services::DbOptions::DEFAULT_TIMEOUT,
            redis_url: None,
            redis_sharded: false,
            redis_prefix: "ovasabi".to_owned(),
            redis_timeout: Duration::from_secs(1),
            log_format: "text".to_owned(),
            max_body_size: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            max_connections: 19_000,
            max_connections_per_ip: 1_000,
            accept_rate: 2_000.0,
            accept_burst: 4_000,
            allowed_origins: Vec::new(),
            send_queue_capacity: e.send_queue_capacity,
            slow_close_drops: e.slow_close_drops,
            slow_close_after: e.slow_close_after,
            ping_interval: e.ping_interval,
            pong_timeout: e.pong_timeout,
            max_message_size: e.max_message_size,
            client_event_rate: e.client_event_rate,
            client_event_burst: e.client_event_burst,
            client_event_abuse_limit: e.client_event_abuse_limit,
            campaign_inbox_capacity: e.campaign_inbox_capacity,
            max_pending_events: e.max_pending_events,
            ws_read_buffer_size: 1024,
            ws_write_buffer_size: 16 * 1024,
            close_timeout: e.close_timeout,
            history_size: e.history_size,
            history_ttl: e.history_ttl,
            presence_interval: e.presence_interval,
            presence_ttl: Duration::from_secs(30),
            stats_interval: e.stats_interval,
            shutdown_drain: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
            default_locale: "en".to_owned(),
            localization_cache_ttl: Duration::from_secs(10),
            smtp_url: None,
            email_from: "OVASABI <notifications@localhost>".to_owned(),
            notification_max_attempts: 6,
            notification_backoff: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(10),
            scheduler_lease: Duration::from_secs(120),
            scheduler_poll_interval: Duration::from_secs(1),
            nexus_lease: Duration::from_secs(30),
            nexus_poll_interval: Duration::from_millis(200),
        }
    }
}

/// Every key, as spelled in the TOML file (and, upper-cased, after `OVASABI_`).
pub const KEYS: &[&str] = &[
    "http_addr",
    "metrics_addr",
    "grpc_addr",
    "dev",
    "auth",
    "jwt_secret",
    "manual_webhook_secret",
    "access_token_ttl",
    "refresh_token_ttl",
    "admin_username",
    "admin_email",
    "admin_password",
    "node_id",
    "database_url",
    "data_dir",
    "database_timeout",
    "redis_url",
    "redis_sharded",
    "redis_prefix",
    "redis_timeout",
    "log_format",
    "max_body_size",
    "body_timeout",
    "max_connections",
    "max_connections_per_ip",
    "accept_rate",
    "accept_burst",
    "allowed_origins",
    "send_queue_capacity",
    "slow_close_drops",
    "slow_close_after",
    "ping_interval",
    "pong_timeout",
    "max_message_size",
    "client_event_rate",
    "client_event_burst",
    "client_event_abuse_limit",
    "campaign_inbox_capacity",
    "max_pending_events",
    "ws_read_buffer_size",
    "ws_write_buffer_size",
    "close_timeout",
    "history_size",
    "history_ttl",
    "presence_interval",
    "presence_ttl",
    "stats_interval",
    "shutdown_drain",
    "shutdown_timeout",
    "default_locale",
    "localization_cache_ttl",
    "smtp_url",
    "email_from",
    "notification_max_attempts",
    "notification_backoff",
    "webhook_timeout",
    "scheduler_lease",
    "scheduler_poll_interval",
    "nexus_lease",
    "nexus_poll_interval",
];

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads the layers. `file` is the `--config` flag; `flags` the other flags given, as
    /// `(key, value)` pairs (values parsed like environment values).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn load(file: Option<PathBuf>, flags: &[(String, String)]) -> Result<Self, ConfigError> {
        let env_file = std::env::var_os("OVASABI_CONFIG").map(PathBuf::from);
        let explicit = file.or(env_file);
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(&path));
        } else if explicit.is_some() {
            return Err(ConfigError::new(
                "config",
                format!("file {} does not exist", path.display()),
            ));
        }
        let mut cli = Dict::new();
        for (key, value) in flags {
            let v: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            cli.insert(key.clone(), v);
        }
        figment = figment
            .merge(Env::raw().only(&["database_url", "redis_url"]))
            .merge(Env::prefixed("OVASABI_").only(KEYS))
            .merge(Serialized::globals(cli));
        let config: Config = figment.extract().map_err(|e| {
            let key = e
                .path
                .last()
                .cloned()
                .unwrap_or_else(|| "config".to_owned());
            // The error's kind says what is wrong; its full display adds figment's internals
            // (provider source locations, profile names) that mean nothing to an operator.
            ConfigError::new(&key, e.kind.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("send_queue_capacity", self.send_queue_capacity),
            ("max_message_size", self.max_message_size),
            ("campaign_inbox_capacity", self.campaign_inbox_capacity),
            ("max_pending_events", self.max_pending_events),
            ("max_body_size", self.max_body_size),
            ("client_event_burst", self.client_event_burst as usize),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("accept_burst", self.accept_burst as usize),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        for origin in &self.allowed_origins {
            if let Some(why) = crate::http::origin::invalid(origin) {
                return Err(ConfigError::new(
                    "allowed_origins",
                    format!("{origin:?}: {why}"),
                ));
            }
        }
        if self.ws_read_buffer_size < 256 {
            return Err(ConfigError::new(
                "ws_read_buffer_size",
                "must be at least 256 bytes",
            ));
        }
        if !(self.client_event_rate.is_finite() && self.client_event_rate > 0.0) {
            return Err(ConfigError::new(
                "client_event_rate",
                "must be a positive number of events per second",
            ));
        }
        if !(self.accept_rate.is_finite() && self.accept_rate > 0.0) {
            return Err(ConfigError::new(
                "accept_rate",
                "must be a positive number of connections per second",
            ));
        }
        for (key, d) in [
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("database_timeout", self.database_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        if self.presence_interval.is_zero() {
            return Err(ConfigError::new(
                "presence_interval",
                "must be longer than 0s",
            ));
        }
        if self.stats_interval < Duration::from_millis(100) {
            return Err(ConfigError::new("stats_interval", "must be at least 100ms"));
        }
        if self.presence_ttl <= self.presence_interval {
            return Err(ConfigError::new(
                "presence_ttl",
                "must be longer than presence_interval",
            ));
        }
        if self.redis_timeout.is_zero() {
            return Err(ConfigError::new("redis_timeout", "must be more than 0s"));
        }
        if self.pong_timeout <= self.ping_interval {
            return Err(ConfigError::new(
                "pong_timeout",
                "must be longer than ping_interval",
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::new(
                "log_format",
                "must be \"text\" or \"json\"",
            ));
        }
        if let Some(url) = &self.database_url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return Err(ConfigError::new(
                "database_url",
                "expected sqlite://path or postgres://user@host:port/db",
            ));
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return Err(ConfigError::new(
                "redis_url",
                "expected redis://host:port (TLS, rediss://, is not built in)",
            ));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "redis_prefix",
                "must be non-empty, without spaces",
            ));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < services::user::token::MIN_SECRET_LEN
        {
            return Err(ConfigError::new(
                "jwt_secret",
                "must have at least 32 bytes",
            ));
        }
        if let Some(secret) = &self.manual_webhook_secret
            && secret.len() < 16
        {
            return Err(ConfigError::new(
                "manual_webhook_secret",
                "must have at least 16 bytes",
            ));
        }
        if self.jwt_secret.is_none() && self.redis_url.is_some() {
            return Err(ConfigError::new(
                "jwt_secret",
                "must be set when redis_url is: every node of a cluster checks the others' tokens",
            ));
        }
        if self.access_token_ttl.is_zero() || self.refresh_token_ttl <= self.access_token_ttl {
            return Err(ConfigError::new(
                "refresh_token_ttl",
                "must be longer than access_token_ttl, which must be longer than 0s",
            ));
        }
        if let Some(p) = &self.admin_password
            && !(8..=128).contains(&p.chars().count())
        {
            return Err(ConfigError::new(
                "admin_password",
                "must have 8-128 characters",
            ));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError::new("node_id", "must have 1-128 characters"));
        }
        if let Err(e) =
            services::localization::locale::parse("default_locale", &self.default_locale)
        {
            return Err(ConfigError::new("default_locale", e.to_string()));
        }
        if !(1..=100).contains(&self.notification_max_attempts) {
            return Err(ConfigError::new(
                "notification_max_attempts",
                "must be 1-100",
            ));
        }
        if self.notification_backoff.is_zero() || self.webhook_timeout.is_zero() {
            let key = if self.webhook_timeout.is_zero() {
                "webhook_timeout"
            } else {
                "notification_backoff"
            };
            return Err(ConfigError::new(key, "must be more than 0s"));
        }
        if self.scheduler_lease < Duration::from_secs(2) {
            return Err(ConfigError::new("scheduler_lease", "must be at least 2s"));
        }
        if self.scheduler_poll_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "scheduler_poll_interval",
                "must be at least 10ms",
            ));
        }
        if self.nexus_lease < Duration::from_secs(3) {
            return Err(ConfigError::new("nexus_lease", "must be at least 3s"));
        }
        if self.nexus_poll_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "nexus_poll_interval",
                "must be at least 10ms",
            ));
        }
        Ok(())
    }

    /// Whether WebSocket upgrades need a token.
    pub fn ws_auth(&self) -> bool {
        self.auth && !self.dev
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ovasabi.db").display()))
    }

    /// Where a single node (no `redis_url`) keeps its campaigns' epochs and `seq`
    /// reservations across restarts: beside the SQLite file (`<file>.seq.json`), or
    /// `data_dir/seq.json` with Postgres.
    pub fn seq_file(&self) -> PathBuf {
        let url = self.database_url();
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(file) if !file.starts_with(":memory:") && !file.is_empty() => {
                let file = file.split('?').next().unwrap_or(file);
                PathBuf::from(format!("{file}.seq.json"))
            }
            _ => self.data_dir.join("seq.json"),
        }
    }

    /// The node name in effect.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            format!("{host}:{}", self.http_addr.port())
        })
    }

    /// The engine's part.
    pub fn notification(&self) -> services::notification::DeliveryConfig {
        services::notification::DeliveryConfig {
            smtp_url: self.smtp_url.clone(),
            email_from: self.email_from.clone(),
            max_attempts: self.notification_max_attempts,
            backoff_base: self.notification_backoff,
            webhook_timeout: self.webhook_timeout,
            ..services::notification::DeliveryConfig::default()
        }
    }

    /// The scheduler's part: handlers may run for half the lease, so a live node finishes
    /// within its claim.
    pub fn scheduler(&self) -> services::scheduler::SchedulerConfig {
        services::scheduler::SchedulerConfig {
            lease: self.scheduler_lease,
            handler_timeout: self.scheduler_lease / 2,
            poll_interval: self.scheduler_poll_interval,
            ..services::scheduler::SchedulerConfig::default()
        }
    }

    /// Nexus's part: this node's name, its runs' lease, the step timeout (two thirds of the
    /// lease) and the poll interval.
    pub fn nexus(&self, node: &str) -> services::nexus::NexusConfig {
        services::nexus::NexusConfig {
            node: node.to_owned(),
            lease: self.nexus_lease,
            step_timeout: self.nexus_lease * 2 / 3,
            poll: self.nexus_poll_interval,
            ..services::nexus::NexusConfig::default()
        }
    }

    /// The commerce service's part: the built-in providers and their webhook secrets.
    pub fn commerce(&self) -> services::commerce::CommerceConfig {
        let mut providers = services::commerce::Providers::builtin();
        if let Some(secret) = &self.manual_webhook_secret {
            providers = providers.with_webhook_secret("manual", secret.as_bytes());
        }
        services::commerce::CommerceConfig {
            providers,
            ..services::commerce::CommerceConfig::default()
        }
    }

    pub fn engine(&self) -> engine::Config {
        engine::Config {
            node_id: self.node_id(),
            send_queue_capacity: self.send_queue_capacity,
            slow_close_drops: self.slow_close_drops,
            slow_close_after: self.slow_close_after,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            max_message_size: self.max_message_size,
            client_event_rate: self.client_event_rate,
            client_event_burst: self.client_event_burst,
            client_event_abuse_limit: self.client_event_abuse_limit,
            campaign_inbox_capacity: self.campaign_inbox_capacity,
            max_pending_events: self.max_pending_events,
            close_timeout: self.close_timeout,
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            presence_interval: self.presence_interval,
            stats_interval: self.stats_interval,
        }
    }
}

/// Durations as human-readable strings ("250ms", "30s", "1m").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            D::Error::custom(format!(
                "{s:?} is not a duration like \"250ms\" or \"30s\": {e}"
            ))
        })
    }
}

/// A list of strings, given as a list (TOML) or as one comma-separated string (environment,
/// flags).
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(l) => l,
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let c = Config::load(None, &[]).expect("defaults");
        assert_eq!(c.http_addr.port(), 8090);
        assert_eq!(c.metrics_addr.port(), 9090);
        assert_eq!(c.send_queue_capacity, 256);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.database_timeout, Duration::from_secs(1));
        assert_eq!(c.body_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 19_000);
        assert_eq!(c.max_connections_per_ip, 1_000);
        assert!(c.database_url().starts_with("sqlite://data/"));
    }

    #[test]
    fn flags_override_and_bad_values_name_their_key() {
        let c = Config::load(
            None,
            &flags(&[
                ("send_queue_capacity", "8"),
                ("ping_interval", "250ms"),
                ("pong_timeout", "1s"),
                ("database_timeout", "250ms"),
                (
                    "allowed_origins",
                    "https://a.example, http://127.0.0.1:5173",
                ),
            ]),
        )
        .expect("valid flags");
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "http://127.0.0.1:5173"],
            "a comma-separated list"
        );
        assert_eq!(c.send_queue_capacity, 8);
        assert_eq!(c.ping_interval, Duration::from_millis(250));
        assert_eq!(c.database_timeout, Duration::from_millis(250));
        for (key, value) in [
            ("send_queue_capacity", "many"),
            ("send_queue_capacity", "0"),
            ("ping_interval", "soon"),
            ("http_addr", "not-an-address"),
            ("log_format", "xml"),
            ("client_event_rate", "-1"),
            ("database_timeout", "0s"),
            ("database_timeout", "soon"),
            ("body_timeout", "0s"),
            ("max_connections", "0"),
            ("max_connections_per_ip", "0"),
            ("accept_rate", "0"),
            ("accept_burst", "0"),
            ("allowed_origins", "app.example.com"),
            ("allowed_origins", "https://a.example/path"),
            ("nexus_lease", "1s"),
            ("nexus_poll_interval", "1ms"),
        ] {
            let err = Config::load(None, &flags(&[(key, value)])).expect_err("invalid");
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn the_example_file_is_a_valid_config_with_the_defaults() {
        let dir = std::env::temp_dir().join(format!("ovasabi-cfg-ex-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ovasabi.toml");
        std::fs::write(&path, include_str!("../../ovasabi.toml.example")).expect("write");
        let c = Config::load(Some(path), &[]).expect("the example parses");
        let d = Config::default();
        assert_eq!(c.send_queue_capacity, d.send_queue_capacity);
        assert_eq!(c.pong_timeout, d.pong_timeout);
        assert_eq!(c.ws_read_buffer_size, d.ws_read_buffer_size);
        assert_eq!(c.body_timeout, d.body_timeout);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.max_connections_per_ip, d.max_connections_per_ip);
        assert_eq!(c.accept_rate, d.accept_rate);
        assert_eq!(c.accept_burst, d.accept_burst);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn toml_file_is_read_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("ovasabi-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "send_queue_capacity = 32\nslow_close_after = \"5s\"\n",
        )
        .expect("write");
        let c = Config::load(Some(good.clone()), &flags(&[("send_queue_capacity", "64")]))
            .expect("file");
        assert_eq!(c.send_queue_capacity, 64, "flags beat the file");
        assert_eq!(c.slow_close_after, Duration::from_secs(5));
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "send_queue_capcity = 32\n").expect("write");
        assert!(Config::load(Some(bad), &[]).is_err());
        let missing = Config::load(Some(dir.join("missing.toml")), &[]).expect_err("missing file");
        assert_eq!(missing.key, "config");
        let _ = std::fs::remove_dir_all(dir);
    }
}
