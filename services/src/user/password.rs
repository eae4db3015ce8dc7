//! Password hashing: argon2id with the crate's default parameters (19 MiB, 2 passes), on the
//! blocking pool (a hash takes tens of milliseconds of CPU on purpose), at most one per core at
//! a time: a burst of logins waits for a permit instead of taking 19 MiB and a thread each.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::ServiceError;

/// One hash at a time per core.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from))
});

async fn permit() -> Result<tokio::sync::SemaphorePermit<'static>, ServiceError> {
    HASHING.acquire().await.map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Protocol(format!("password hashing: {e}")))
}

/// The PHC string of `password`, with a fresh random salt.
///
/// # Errors
/// When the hasher fails (no randomness) or its task panics.
pub async fn hash(password: String) -> Result<String, ServiceError> {
    let _permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(internal)
    })
    .await
    .map_err(internal)?
}

/// Whether `password` matches the PHC string `stored` (false for a malformed one).
///
/// # Errors
/// When the task panics.
pub async fn verify(password: String, stored: String) -> Result<bool, ServiceError> {
    let _permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .map_err(internal)
}

/// A hash that no password matches, verified against when the login names no user, so that
/// an unknown name costs as much time as a wrong password.
pub const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0p2yTf5Yr3fJ0h+kqJxk4bV8W0N0m8cUq3wz1ZC6bK8";

#[cfg(test)]
mod tests {
    #[test]
    fn the_decoy_is_a_well_formed_hash() {
        assert!(super::PasswordHash::new(super::DECOY).is_ok());
    }
}
