//! The one error type of the service layer; `api` maps it to HTTP statuses and JSON bodies.

/// Failure of a service operation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; `field` names what was wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such entity.
    #[error("{entity} {id:?} not found")]
    NotFound { entity: &'static str, id: String },
    /// A record with the same unique key (slug, username, email, ...) exists.
    #[error("{message}")]
    Duplicate { message: String },
    /// The request conflicts with the current state (ended campaign, own admin role, ...).
    #[error("{message}")]
    Conflict { message: String },
    /// The caller must sign in (no token, or a bad or expired one).
    #[error("{message}")]
    Unauthenticated { message: String },
    /// The caller is signed in but may not do this.
    #[error("{message}")]
    Forbidden { message: String },
    /// Too many attempts: try again after `retry_after_secs`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// The database cannot be reached.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database failed in an unexpected way.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Stored, but the broadcast engine refused or could not be reached.
    #[error("broadcast failed: {message}")]
    Broadcast { message: String, unavailable: bool },
}

impl ServiceError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e),
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Duplicate {
                message: "a record with the same unique key exists".to_owned(),
            },
            _ => Self::Database(e),
        }
    }
}
