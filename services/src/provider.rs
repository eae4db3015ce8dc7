//! The [`Provider`]: the one place that builds every repository and service once, from config,
//! and records each service's [`ServiceRegistration`] (name, version, capabilities,
//! dependencies, endpoints, health check, metrics prefix). The node's REST and gRPC handlers
//! are thin adapters over the services it holds.
//!
//! # Adding a service
//! 1. Write its module (`services/src/<name>/`): `model.rs` (records, inputs with
//!    `deny_unknown_fields`, field rules), `repo.rs` (its queries written once for both
//!    backends with [`portable_sql!`](crate::sql) — `$N` placeholders, `{jsonb}`/`{text}`/
//!    `{for_update}`/`{pg:..}`/`{lite:..}` where they differ — and run through
//!    `on_pool!(db, Queries, |pool, sql| ..)`, as the campaign repository does; tables
//!    `service_<name>_<entity>`; every write in a transaction that also
//!    writes its audit row with `security::audit::insert!`), `mod.rs` (the service: each method
//!    takes the [`Caller`](crate::security::Caller) first and calls
//!    [`Policies::require`](crate::security::Policies::require)).
//! 2. Add its migrations to `migrations/sqlite/` and `migrations/postgres/` (same file name)
//!    and one line to the `migrations!` table in `db.rs`, which lists both backends; add its
//!    default policies to the migration.
//! 3. Optional cache: take an `Arc<dyn MetadataCache>` like the campaign service and forget
//!    keys on every change.
//! 4. Build it here in [`Provider::new`] (services with several dependencies get them passed
//!    explicitly, e.g. the campaign service takes the broadcaster and the cache) and push its
//!    [`ServiceRegistration`] in [`registrations`].
//! 5. In `api`: a REST module under `api/src/http/` and a gRPC adapter under `api/src/grpc/`,
//!    both calling the service's methods only; its proto under `proto/proto/<name>/v0/`.

use std::sync::Arc;

use serde::Serialize;

use crate::babel::{BabelConfig, BabelService};
use crate::cache::{MetadataCache, NoCache};
use crate::campaign::{Broadcaster, CampaignService};
use crate::content::ContentService;
use crate::localization::{LocalizationConfig, LocalizationService};
use crate::security::audit::AuditLog;
use crate::security::{DeferredAudit, DeferredConfig, Policies};
use crate::user::{TokenConfig, TokenIssuer, UserService};
use crate::{Database, ServiceError};

/// What the provider is built from.
pub struct ProviderConfig {
    pub db: Database,
    /// How the campaign service reaches the engine.
    pub broadcaster: Arc<dyn Broadcaster>,
    /// Where hot campaign records are cached (Redis in a cluster).
    pub cache: Option<Arc<dyn MetadataCache>>,
    pub tokens: TokenConfig,
    /// The default locale and the lookup cache of translations.
    pub localization: LocalizationConfig,
    /// The lookup cache of markets and price rules.
    pub babel: BabelConfig,
}

/// Where a service can be called.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoints {
    /// REST path prefixes on `:8090`.
    #[schema(value_type = Vec<String>)]
    pub rest: Vec<&'static str>,
    /// Fully qualified gRPC service names on `:8080`.
    #[schema(value_type = Vec<String>)]
    pub grpc: Vec<&'static str>,
}

/// What a service says about itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceRegistration {
    #[schema(value_type = String)]
    pub name: &'static str,
    #[schema(value_type = String)]
    pub version: &'static str,
    #[schema(value_type = Vec<String>)]
    pub capabilities: Vec<&'static str>,
    /// Other services and infrastructure it needs.
    #[schema(value_type = Vec<String>)]
    pub dependencies: Vec<&'static str>,
    pub endpoints: Endpoints,
    /// What its health check verifies.
    #[schema(value_type = String)]
    pub health_check: &'static str,
    /// The prefix of its metrics on `:9090/metrics`.
    #[schema(value_type = String)]
    pub metrics_prefix: &'static str,
}

/// Every service, built once.
#[derive(Clone)]
pub struct Provider {
    pub db: Database,
    pub policies: Policies,
    pub campaigns: CampaignService,
    pub users: UserService,
    pub content: ContentService,
    pub localization: LocalizationService,
    pub babel: BabelService,
    pub audit: AuditLog,
    /// Writes the audit rows of sent events and messages in the background (started here,
    /// stopped by [`Provider::close`]).
    pub deferred_audit: DeferredAudit,
}

impl Provider {
    /// Builds every service on `config.db` (already migrated), and starts the deferred audit
    /// writer (a Tokio task) that [`Provider::close`] stops.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad token config or default locale, database failures
    /// loading the policies.
    pub async fn new(config: ProviderConfig) -> Result<Self, ServiceError> {
        let db = config.db;
        let policies = Policies::load(db.clone()).await?;
        let tokens = Arc::new(TokenIssuer::new(config.tokens)?);
        let cache = config.cache.unwrap_or_else(|| Arc::new(NoCache));
        let deferred_audit = DeferredAudit::spawn(db.clone(), DeferredConfig::default());
        Ok(Self {
            campaigns: CampaignService::new(db.clone(), config.broadcaster, policies.clone())
                .with_cache(cache)
                .with_deferred_audit(deferred_audit.clone()),
            users: UserService::new(db.clone(), policies.clone(), tokens),
            content: ContentService::new(db.clone(), policies.clone()),
            localization: LocalizationService::new(
                db.clone(),
                policies.clone(),
                config.localization,
            )?,
            babel: BabelService::new(db.clone(), policies.clone(), config.babel),
            audit: AuditLog::new(db.clone(), policies.clone()),
            deferred_audit,
            policies,
            db,
        })
    }

    /// Stops the background work the provider started: the deferred audit writer refuses new
    /// rows and writes the ones it holds for at most `within` (see [`DeferredAudit::close`]).
    /// Call it once nothing publishes any more, before closing the database. Returns whether
    /// every row was written.
    pub async fn close(&self, within: std::time::Duration) -> bool {
        self.deferred_audit.close(within).await
    }

    /// Whether the service `name` can serve: its database answers.
    pub async fn healthy(&self, name: &str) -> bool {
        registrations().iter().any(|r| r.name == name) && self.db.ping().await
    }
}

/// The registrations of every service the provider builds.
pub fn registrations() -> Vec<ServiceRegistration> {
    const V: &str = env!("CARGO_PKG_VERSION");
    vec![
        ServiceRegistration {
            name: "campaign",
            version: V,
            capabilities: vec!["crud", "schedule", "state", "publish", "analytics"],
            dependencies: vec!["database", "security", "broadcast-engine", "metadata-cache"],
            endpoints: Endpoints {
                rest: vec!["/api/campaigns"],
                grpc: vec![
                    "campaign.v0.CampaignService",
                    "broadcast.v0.BroadcastService",
                ],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_campaign",
        },
        ServiceRegistration {
            name: "user",
            version: V,
            capabilities: vec!["register", "login", "jwt", "refresh", "profile"],
            dependencies: vec!["database", "security"],
            endpoints: Endpoints {
                rest: vec!["/api/auth", "/api/users"],
                grpc: vec!["user.v0.UserService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_user",
        },
        ServiceRegistration {
            name: "content",
            version: V,
            capabilities: vec![
                "articles",
                "micro-posts",
                "videos",
                "threaded-comments",
                "reactions",
                "full-text-search",
            ],
            dependencies: vec!["database", "security"],
            endpoints: Endpoints {
                rest: vec!["/api/content"],
                grpc: vec!["content.v0.ContentService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_content",
        },
        ServiceRegistration {
            name: "localization",
            version: V,
            capabilities: vec![
                "translations",
                "fluent-messages",
                "plural-select",
                "fallback-chains",
                "bulk-import-export",
                "missing-keys-report",
                "format-lookup",
            ],
            dependencies: vec!["database", "security"],
            endpoints: Endpoints {
                rest: vec!["/api/localization"],
                grpc: vec!["localization.v0.LocalizationService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_localization",
        },
        ServiceRegistration {
            name: "babel",
            version: V,
            capabilities: vec![
                "markets",
                "price-rules",
                "price-lookup",
                "currency-formatting",
                "tax",
            ],
            dependencies: vec!["database", "security", "localization"],
            endpoints: Endpoints {
                rest: vec!["/api/babel"],
                grpc: vec!["babel.v0.BabelService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_babel",
        },
        ServiceRegistration {
            name: "security",
            version: V,
            capabilities: vec!["rbac", "audit-log", "audit-query", "compliance-export"],
            dependencies: vec!["database"],
            endpoints: Endpoints {
                rest: vec!["/api/security"],
                grpc: vec!["security.v0.SecurityService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_security",
        },
        ServiceRegistration {
            name: "admin",
            version: V,
            capabilities: vec!["user-management", "roles", "disable", "audit-view"],
            dependencies: vec!["database", "user", "security"],
            endpoints: Endpoints {
                rest: vec!["/api/admin"],
                grpc: vec!["admin.v0.AdminService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_admin",
        },
    ]
}
