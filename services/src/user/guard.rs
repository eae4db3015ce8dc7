//! Password guessing: after [`MAX_FAILURES`] wrong passwords for one login name within
//! [`WINDOW`], further logins for that name are refused (429) until the window has passed since
//! the first failure; a success clears the count. Kept per name, not per client address, so it
//! works behind a proxy and against guesses spread over many addresses; per node (a cluster of
//! n nodes allows n times as many guesses). The hashing cap (`password.rs`) bounds the cost of
//! the attempts themselves.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ServiceError;

/// Wrong passwords allowed per login name within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window the failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Names tracked at most (the oldest windows are forgotten first).
const MAX_TRACKED: usize = 100_000;

/// Failure counts per login name.
#[derive(Debug, Default)]
pub(crate) struct LoginGuard {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginGuard {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` when `login` may try now.
    pub fn check(&self, login: &str) -> Result<(), ServiceError> {
        let mut map = self.map();
        let Some(&(n, since)) = map.get(login) else {
            return Ok(());
        };
        if since.elapsed() >= WINDOW {
            map.remove(login);
            return Ok(());
        }
        if n < MAX_FAILURES {
            return Ok(());
        }
        let wait = WINDOW.saturating_sub(since.elapsed()).as_secs().max(1);
        Err(ServiceError::RateLimited {
            message: format!("too many failed logins for this name; try again in {wait} s"),
            retry_after_secs: wait,
        })
    }

    /// Counts a wrong password for `login`.
    pub fn failed(&self, login: &str) {
        let mut map = self.map();
        if map.len() >= MAX_TRACKED && !map.contains_key(login) {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = map.entry(login.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of `login` after a successful login.
    pub fn succeeded(&self, login: &str) {
        self.map().remove(login);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_name_after_too_many_failures_and_a_success_clears_it() {
        let g = LoginGuard::default();
        for _ in 0..MAX_FAILURES {
            assert!(g.check("alice").is_ok());
            g.failed("alice");
        }
        assert!(matches!(
            g.check("alice"),
            Err(ServiceError::RateLimited { retry_after_secs, .. }) if retry_after_secs > 0
        ));
        assert!(g.check("bob").is_ok(), "other names are not affected");
        g.succeeded("alice");
        assert!(g.check("alice").is_ok());
    }
}
