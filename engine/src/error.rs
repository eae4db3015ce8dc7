//! Errors of the engine's public operations.

use crate::broker::BrokerError;

/// Failure of a [`Node`](crate::Node) operation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The campaign is not running on this node.
    #[error("campaign {campaign:?} is not running")]
    UnknownCampaign { campaign: String },
    /// A frequency outside 0.1–100 Hz.
    #[error("frequency {hz} Hz is outside {min}-{max} Hz")]
    FrequencyOutOfRange { hz: f64, min: f64, max: f64 },
    /// An event name that is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid event name {name:?}: use 1-64 characters [A-Za-z0-9_.:-]")]
    InvalidEventName { name: String },
    /// Input no subscriber could receive: event data (see
    /// [`crate::session::check_event_data`]), or a notification's user id or payload (see
    /// [`crate::session::valid_user_id`], [`crate::session::check_notification`]). `what` names
    /// which.
    #[error("invalid {what}: {reason}")]
    InvalidData { what: &'static str, reason: String },
    /// A batch of events that cannot be published: empty, too long, or with an invalid event
    /// (`index`, from 0). Nothing of it was published.
    #[error("{}{reason}", index.map(|i| format!("event {i}: ")).unwrap_or_default())]
    InvalidBatch {
        index: Option<usize>,
        reason: String,
    },
    /// The node is shutting down and takes no new work.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The bus refused the publish.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
