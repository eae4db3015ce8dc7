//! The OVASABI service layer: domain services and their repositories. It stores data through
//! sqlx and reaches the broadcast engine only through the small traits it defines (the node
//! binary implements them); it knows nothing of HTTP.
//!
//! # Layout
//! * [`db`]: the pool, embedded migrations, health check.
//! * [`campaign`]: campaigns (table `service_campaign_main`) and the [`campaign::Broadcaster`]
//!   trait.
//! * [`cache`]: the [`cache::MetadataCache`] trait for hot records.
//! * [`json`]: JSON merge patch (RFC 7396).
//! * [`error`]: [`ServiceError`], the one error type of the layer.

pub mod cache;
pub mod campaign;
pub mod db;
pub mod error;
pub mod json;

pub use db::Database;
pub use error::ServiceError;
