//! The [`Provider`]: the one place that builds every repository and service once, from config,
//! and records each service's [`ServiceRegistration`] (name, version, capabilities,
//! endpoints, health check, metrics prefix) and what it was handed when built ([`Wiring`]: its
//! real dependencies). The node's REST and gRPC handlers
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
//! 6. Its operations for Nexus patterns: a function in `nexus/ops.rs` and one
//!    `nexus.register_operations(...)` line below (the registry and the knowledge graph follow).
//!    Services that others should react to publish [`EventBus`] events after commit.

use std::sync::Arc;

use serde::Serialize;

use crate::amadeus::curator::CuratorService;
use crate::babel::{BabelConfig, BabelService};
use crate::cache::{MetadataCache, NoCache};
use crate::campaign::jobs as campaign_jobs;
use crate::campaign::{Broadcaster, CampaignService};
use crate::commerce::{CommerceConfig, CommerceService};
use crate::content::ContentService;
use crate::localization::{LocalizationConfig, LocalizationService};
use crate::nexus::{EventBus, NexusConfig, NexusService, ops as nexus_ops};
use crate::notification::{DeliveryConfig, NotificationService, RealtimeSink};
use crate::referral::{ReferralDeps, ReferralService};
use crate::scheduler::{Handlers, SchedulerConfig, SchedulerService, handler_fn};
use crate::security::audit::AuditLog;
use crate::security::{DeferredAudit, DeferredConfig, Policies};
use crate::talent::TalentService;
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
    /// How notifications reach users' live sessions (the engine, on every node).
    pub realtime: Arc<dyn RealtimeSink>,
    /// SMTP, webhook timeouts and the outbox's retries.
    pub notification: DeliveryConfig,
    /// Leases, handler timeouts and retries of scheduled jobs.
    pub scheduler: SchedulerConfig,
    /// Payment providers, their webhook secrets and the webhooks' time window.
    pub commerce: CommerceConfig,
    /// This node's name, leases and step timeouts of pattern runs.
    pub nexus: NexusConfig,
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
    pub endpoints: Endpoints,
    /// What its health check verifies.
    #[schema(value_type = String)]
    pub health_check: &'static str,
    /// The prefix of its metrics on `:9090/metrics`.
    #[schema(value_type = String)]
    pub metrics_prefix: &'static str,
}

/// The admin service: user management and the audit log over the user and security services
/// (the admin REST and gRPC adapters reach them only through it).
#[derive(Clone)]
pub struct AdminService {
    pub users: UserService,
    pub audit: AuditLog,
}

/// Something a service is handed when it is built: a service, or infrastructure.
pub trait Component {
    /// Its name in the knowledge graph (a service's registration name, or infrastructure).
    const NAME: &'static str;
}

impl Component for Database {
    const NAME: &'static str = "database";
}
impl Component for Policies {
    const NAME: &'static str = "security";
}
impl Component for AuditLog {
    const NAME: &'static str = "security";
}
impl Component for DeferredAudit {
    const NAME: &'static str = "security";
}
impl Component for UserService {
    const NAME: &'static str = "user";
}
impl Component for Arc<dyn Broadcaster> {
    const NAME: &'static str = "broadcast-engine";
}
impl Component for Arc<dyn MetadataCache> {
    const NAME: &'static str = "metadata-cache";
}
impl Component for Arc<TokenIssuer> {
    const NAME: &'static str = "tokens";
}
impl Component for Arc<dyn RealtimeSink> {
    const NAME: &'static str = "broadcast-engine";
}
impl Component for LocalizationService {
    const NAME: &'static str = "localization";
}
impl Component for crate::notification::NotificationService {
    const NAME: &'static str = "notification";
}
impl Component for SchedulerService {
    const NAME: &'static str = "scheduler";
}
impl Component for crate::babel::BabelService {
    const NAME: &'static str = "babel";
}
impl Component for CommerceService {
    const NAME: &'static str = "commerce";
}
impl Component for CampaignService {
    const NAME: &'static str = "campaign";
}
impl Component for TalentService {
    const NAME: &'static str = "talent";
}
impl Component for ReferralService {
    const NAME: &'static str = "referral";
}
impl Component for EventBus {
    const NAME: &'static str = "event-bus";
}

/// What each service was handed when the provider built it: every dependency passes through
/// [`Wiring::give`], which records it, so the knowledge graph's dependencies are the real ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Wiring {
    edges: Vec<(&'static str, &'static str)>,
}

impl Wiring {
    /// Hands `dep` to the service `to` (returns it), recording the edge.
    pub fn give<T: Component>(&mut self, to: &'static str, dep: T) -> T {
        self.record(to, T::NAME);
        dep
    }

    /// Records that `to` depends on `dep`. A service's own parts (the security service's
    /// policies in its audit log) are no dependency.
    pub fn record(&mut self, to: &'static str, dep: &'static str) {
        if to != dep && !self.edges.contains(&(to, dep)) {
            self.edges.push((to, dep));
        }
    }

    /// Every `(service, dependency)` edge, sorted.
    pub fn edges(&self) -> Vec<(&'static str, &'static str)> {
        let mut e = self.edges.clone();
        e.sort_unstable();
        e
    }

    /// What each service depends on, sorted.
    pub fn dependencies(&self) -> std::collections::BTreeMap<&'static str, Vec<&'static str>> {
        let mut out = std::collections::BTreeMap::<_, Vec<_>>::new();
        for (service, dep) in self.edges() {
            out.entry(service).or_default().push(dep);
        }
        out
    }
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
    pub notifications: NotificationService,
    pub scheduler: SchedulerService,
    pub talent: TalentService,
    pub commerce: CommerceService,
    pub referrals: ReferralService,
    /// The pattern registry and the durable runs of patterns.
    pub nexus: NexusService,
    /// Where services publish what happened, after commit (Nexus starts runs from it).
    pub events: EventBus,
    /// Curator annotations over the generated knowledge graph.
    pub curator: CuratorService,
    pub audit: AuditLog,
    pub admin: AdminService,
    /// What each service was handed at construction (for the knowledge graph); shared, since
    /// handlers clone the provider with every request.
    pub wiring: Arc<Wiring>,
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
        let mut w = Wiring::default();
        let policies = Policies::load(w.give("security", db.clone())).await?;
        let tokens = Arc::new(TokenIssuer::new(config.tokens)?);
        let cache = config.cache.unwrap_or_else(|| Arc::new(NoCache));
        let deferred_audit = DeferredAudit::spawn(db.clone(), DeferredConfig::default());
        let events = EventBus::default();
        let scheduler = SchedulerService::new(
            w.give("scheduler", db.clone()),
            w.give("scheduler", policies.clone()),
            config.scheduler,
        )?;
        let babel = BabelService::new(
            w.give("babel", db.clone()),
            w.give("babel", policies.clone()),
            config.babel,
        );
        let campaigns = CampaignService::new(
            w.give("campaign", db.clone()),
            w.give("campaign", config.broadcaster),
            w.give("campaign", policies.clone()),
        )
        .with_cache(w.give("campaign", cache))
        .with_deferred_audit(w.give("campaign", deferred_audit.clone()))
        .with_scheduler(w.give("campaign", scheduler.clone()))
        .with_markets(w.give("campaign", babel.clone()))
        .with_events(w.give("campaign", events.clone()));
        let users = UserService::new(
            w.give("user", db.clone()),
            w.give("user", policies.clone()),
            w.give("user", tokens),
        );
        let content = ContentService::new(
            w.give("content", db.clone()),
            w.give("content", policies.clone()),
        )
        .with_events(w.give("content", events.clone()));
        let audit = AuditLog::new(
            w.give("security", db.clone()),
            w.give("security", policies.clone()),
        );
        let localization = LocalizationService::new(
            w.give("localization", db.clone()),
            w.give("localization", policies.clone()),
            config.localization,
        )?;
        let notifications = NotificationService::new(
            w.give("notification", db.clone()),
            w.give("notification", policies.clone()),
            w.give("notification", localization.clone()),
            w.give("notification", config.realtime),
            config.notification,
        )?;
        let commerce = CommerceService::new(
            w.give("commerce", db.clone()),
            w.give("commerce", policies.clone()),
            w.give("commerce", babel.clone()),
            w.give("commerce", notifications.clone()),
            config.commerce,
        );
        // A confirmed booking becomes an order for the talent's rate; both parties are told.
        let talent = TalentService::new(
            w.give("talent", db.clone()),
            w.give("talent", policies.clone()),
        )
        .with_orders(
            w.give("talent", commerce.clone()),
            w.give("talent", notifications.clone()),
        );
        // Subscribes itself to commerce's paid orders (the `first_paid_order` condition).
        let referrals = ReferralService::new(
            w.give("referral", db.clone()),
            w.give("referral", policies.clone()),
            ReferralDeps {
                users: w.give("referral", users.clone()),
                commerce: w.give("referral", commerce.clone()),
                campaigns: w.give("referral", campaigns.clone()),
                notifications: w.give("referral", notifications.clone()),
            },
        );
        let admin = AdminService {
            users: w.give("admin", users.clone()),
            audit: w.give("admin", audit.clone()),
        };
        // Every service's operations, in the one registry patterns are checked against.
        let nexus = NexusService::new(
            w.give("nexus", db.clone()),
            w.give("nexus", policies.clone()),
            config.nexus,
            Some(w.give("nexus", scheduler.clone())),
        );
        nexus.listen(&w.give("nexus", events.clone()));
        nexus.register_operations(
            "campaign",
            nexus_ops::campaign(w.give("nexus", campaigns.clone())),
        )?;
        nexus.register_operations(
            "notification",
            nexus_ops::notification(w.give("nexus", notifications.clone())),
        )?;
        nexus.register_operations(
            "referral",
            nexus_ops::referral(w.give("nexus", referrals.clone())),
        )?;
        nexus.register_operations("talent", nexus_ops::talent(w.give("nexus", talent.clone())))?;
        nexus.register_operations(
            "commerce",
            nexus_ops::commerce(w.give("nexus", commerce.clone())),
        )?;
        nexus.install(nexus_ops::builtin_patterns()).await?;
        let curator = CuratorService::new(
            w.give("amadeus", db.clone()),
            w.give("amadeus", policies.clone()),
        );
        Ok(Self {
            campaigns,
            users,
            content,
            localization,
            babel,
            notifications,
            scheduler,
            talent,
            commerce,
            referrals,
            nexus,
            events,
            curator,
            audit,
            admin,
            wiring: Arc::new(w),
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

    /// What the node's scheduler workers run, by job kind: a campaign's start and end, and
    /// the notifications campaigns schedule (see [`crate::campaign::jobs`]).
    pub fn job_handlers(&self) -> Handlers {
        let start = self.campaigns.clone();
        let end = self.campaigns.clone();
        let send = (self.campaigns.clone(), self.notifications.clone());
        let nexus = self.nexus.clone();
        Handlers::new()
            .with(
                crate::nexus::JOB_KIND,
                handler_fn(move |job| {
                    let nexus = nexus.clone();
                    async move { Ok(nexus.run_scheduled(&job).await?) }
                }),
            )
            .with(
                campaign_jobs::START,
                handler_fn(move |job| {
                    let campaigns = start.clone();
                    async move { Ok(campaigns.run_start(&job).await?) }
                }),
            )
            .with(
                campaign_jobs::END,
                handler_fn(move |job| {
                    let campaigns = end.clone();
                    async move { Ok(campaigns.run_end(&job).await?) }
                }),
            )
            .with(
                campaign_jobs::SEND,
                handler_fn(move |job| {
                    let (campaigns, notifications) = send.clone();
                    async move { Ok(campaigns.run_send(&job, &notifications).await?) }
                }),
            )
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
            endpoints: Endpoints {
                rest: vec!["/api/babel"],
                grpc: vec!["babel.v0.BabelService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_babel",
        },
        ServiceRegistration {
            name: "notification",
            version: V,
            capabilities: vec![
                "templates",
                "in-app-inbox",
                "realtime-push",
                "email-smtp",
                "signed-webhooks",
                "preferences",
                "durable-outbox",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/notifications"],
                grpc: vec!["notification.v0.NotificationService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_notification",
        },
        ServiceRegistration {
            name: "scheduler",
            version: V,
            capabilities: vec![
                "one-off-jobs",
                "relative-jobs",
                "cron-time-zones",
                "exactly-once-claims",
                "retries-with-back-off",
                "missed-runs",
                "pause-resume-trigger",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/scheduler"],
                grpc: vec!["scheduler.v0.SchedulerService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_scheduler",
        },
        ServiceRegistration {
            name: "talent",
            version: V,
            capabilities: vec![
                "profiles",
                "skill-search",
                "weekly-availability",
                "time-zones",
                "free-slots",
                "bookings",
                "no-double-booking",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/talent"],
                grpc: vec!["talent.v0.TalentService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_talent",
        },
        ServiceRegistration {
            name: "commerce",
            version: V,
            capabilities: vec![
                "products",
                "babel-priced-orders",
                "idempotent-payments",
                "payment-providers",
                "signed-webhooks",
                "refunds",
                "double-entry-ledger",
                "gapless-invoices",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/commerce"],
                grpc: vec!["commerce.v0.CommerceService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_commerce",
        },
        ServiceRegistration {
            name: "referral",
            version: V,
            capabilities: vec![
                "referral-codes",
                "signup-attribution",
                "campaign-reward-rules",
                "fraud-rules",
                "review-queue",
                "exactly-once-rewards",
                "stats",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/referral"],
                grpc: vec!["referral.v0.ReferralService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_referral",
        },
        ServiceRegistration {
            name: "nexus",
            version: V,
            capabilities: vec![
                "operation-registry",
                "versioned-patterns",
                "input-mapping",
                "durable-runs",
                "exactly-once-claims",
                "retries-with-back-off",
                "compensation",
                "idempotent-starts",
                "api-schedule-event-triggers",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/nexus"],
                grpc: vec!["nexus.v0.NexusService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_nexus",
        },
        ServiceRegistration {
            name: "amadeus",
            version: V,
            capabilities: vec![
                "generated-knowledge-graph",
                "impact",
                "mermaid",
                "backstage-export",
                "live-facts",
                "curator-annotations",
            ],
            endpoints: Endpoints {
                rest: vec!["/api/kg"],
                grpc: vec![],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_amadeus",
        },
        ServiceRegistration {
            name: "security",
            version: V,
            capabilities: vec!["rbac", "audit-log", "audit-query", "compliance-export"],
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
            endpoints: Endpoints {
                rest: vec!["/api/admin"],
                grpc: vec!["admin.v0.AdminService"],
            },
            health_check: "database ping",
            metrics_prefix: "ovasabi_admin",
        },
    ]
}
