//! The OVASABI service layer: domain services and their repositories. It stores data through
//! sqlx and reaches the broadcast engine only through the small traits it defines (the node
//! binary implements them); it knows nothing of HTTP.
//!
//! # Layout
//! * [`db`]: the pool (with its bound on waiting for a database that does not answer),
//!   embedded migrations, health check.
//! * [`campaign`]: campaigns (table `service_campaign_main`) and the [`campaign::Broadcaster`]
//!   trait.
//! * [`content`]: posts, threaded comments, reactions, full-text search (`service_content_*`).
//! * [`localization`]: Fluent translations by namespace, key and locale, fallback chains,
//!   import/export, missing-key reports (`service_localization_*`).
//! * [`babel`]: markets, price rules and prices for a country, in minor units and formatted for
//!   a locale (`service_babel_*`).
//! * [`notification`]: templates, inboxes, preferences, webhooks and the delivery outbox
//!   (realtime, email over SMTP, signed webhooks) (`service_notification_*`).
//! * [`scheduler`]: jobs that entities declare in `metadata.scheduling` (one-off, relative to
//!   a field, cron in a time zone), claimed and run once per cluster by every node's worker,
//!   retried with back-off (`service_scheduler_*`).
//! * [`talent`]: talent profiles (skills, hourly-rate SKU, time zone, privacy), weekly
//!   availability with dated exceptions, free slots across daylight saving changes, and
//!   bookings that never overlap (`service_talent_*`).
//! * [`cache`]: the [`cache::MetadataCache`] trait for hot records.
//! * [`json`]: JSON merge patch (RFC 7396).
//! * [`security`]: callers, roles, RBAC policies, the audit log and its deferred writer (the
//!   rows of publishes and messages, written in the background).
//! * [`user`]: accounts, passwords (argon2), tokens (JWT HS256), and admin operations on them.
//! * [`provider`]: builds every service once and records their registrations and wiring.
//! * [`amadeus`]: the knowledge graph, generated from what the code says of itself.
//! * [`page`], [`time`]: pagination and times shared by every service.
//! * [`error`]: [`ServiceError`], the one error type of the layer.

pub mod amadeus;
pub mod babel;
pub mod cache;
pub mod campaign;
pub mod commerce;
pub mod content;
pub mod db;
pub mod error;
pub mod json;
pub mod localization;
pub mod nexus;
pub mod notification;
pub mod page;
pub mod provider;
pub mod referral;
pub mod scheduler;
pub mod security;
pub mod sql;
pub mod talent;
pub mod time;
pub mod user;

pub use db::{Database, DbOptions};
pub use error::ServiceError;
pub use provider::Provider;
