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
    /// Well-formed, but it cannot be applied: an `Idempotency-Key` reused with another
    /// request (422 `code`).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
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

/// Whether `e` says that the database cannot serve now (down, unreachable, restarting, out
/// of connections, or a SQLite file locked past its busy timeout) rather than that the query
/// or its data is wrong: trying again later can succeed.
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let Some(code) = d.code() else {
                return false;
            };
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), and their extended codes.
                return code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
            }
            // Postgres SQLSTATE: connection exceptions (08…), insufficient resources (53…:
            // too many connections, disk full), and a server shutting down or starting
            // (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            return Self::Unavailable(e);
        }
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Duplicate {
                message: "a record with the same unique key exists".to_owned(),
            },
            _ => Self::Database(e),
        }
    }
}
