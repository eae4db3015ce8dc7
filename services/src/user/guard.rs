//! Password guessing: after [`MAX_FAILURES`] wrong passwords for one account within [`WINDOW`],
//! further logins for that account are refused (429) until the window has passed since the
//! first failure; a success clears the count. Counted per account, whichever of its names (user
//! name or e-mail) was typed, so the two share one budget; a login name that matches no account
//! is counted on its own (normalised: trimmed, lowercase). Kept per account, not per client
//! address, so it works behind a proxy and against guesses spread over many addresses; per node
//! (a cluster of n nodes allows n times as many guesses). The hashing cap (`password.rs`) bounds
//! the cost of the attempts themselves.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ServiceError;

/// Wrong passwords allowed per account (or unknown name) within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window the failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most (the oldest windows are forgotten first).
const MAX_TRACKED: usize = 100_000;

/// What the failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LoginKey {
    /// An existing account, by id: its user name and e-mail share this counter.
    Account(String),
    /// A login name that matches no account, normalised (trimmed, lowercase).
    Unknown(String),
}

impl LoginKey {
    /// The key for `login` (already normalised) when it names the account `account_id`, or
    /// names no account.
    pub fn new(login: &str, account_id: Option<&str>) -> Self {
        match account_id {
            Some(id) => Self::Account(id.to_owned()),
            None => Self::Unknown(login.trim().to_ascii_lowercase()),
        }
    }
}

/// Failure counts per account or unknown name.
#[derive(Debug, Default)]
pub(crate) struct LoginGuard {
    failures: Mutex<HashMap<LoginKey, (u32, Instant)>>,
}

impl LoginGuard {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<LoginKey, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` when `key` may try now.
    ///
    /// # Errors
    /// [`ServiceError::RateLimited`] after [`MAX_FAILURES`] failures within [`WINDOW`]; the
    /// same message for accounts and unknown names.
    pub fn check(&self, key: &LoginKey) -> Result<(), ServiceError> {
        let mut map = self.map();
        let Some(&(n, since)) = map.get(key) else {
            return Ok(());
        };
        if since.elapsed() >= WINDOW {
            map.remove(key);
            return Ok(());
        }
        if n < MAX_FAILURES {
            return Ok(());
        }
        let wait = WINDOW.saturating_sub(since.elapsed()).as_secs().max(1);
        Err(ServiceError::RateLimited {
            message: format!("too many failed logins; try again in {wait} s"),
            retry_after_secs: wait,
        })
    }

    /// Counts a wrong password for `key`; `true` when this failure locks it.
    pub fn failed(&self, key: &LoginKey) -> bool {
        let mut map = self.map();
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0 == MAX_FAILURES
    }

    /// Forgets the failures of `key` after a successful login.
    pub fn succeeded(&self, key: &LoginKey) {
        self.map().remove(key);
    }
}

/// Registrations allowed per client address (IP, whatever the port) within
/// [`REGISTRATION_WINDOW`]: anyone may register, so bursts from one address are what cost the
/// node password hashes and rows.
pub const MAX_REGISTRATIONS: u32 = 30;
/// The window registrations are counted in.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Registration attempts per client address (the IP of `ip:port`).
#[derive(Debug, Default)]
pub(crate) struct RegistrationGuard {
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl RegistrationGuard {
    /// Counts a registration attempt from `addr` (`ip:port`, or any text), refusing it beyond
    /// [`MAX_REGISTRATIONS`] within [`REGISTRATION_WINDOW`]. Callers without an address (the
    /// node itself) are not counted.
    ///
    /// # Errors
    /// [`ServiceError::RateLimited`] with the time to wait.
    pub fn attempt(&self, addr: Option<&str>) -> Result<(), ServiceError> {
        let Some(addr) = addr else { return Ok(()) };
        let ip = addr
            .parse::<std::net::SocketAddr>()
            .map_or_else(|_| addr.to_owned(), |a| a.ip().to_string());
        let mut map = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (_, since)| since.elapsed() < REGISTRATION_WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= REGISTRATION_WINDOW {
            *entry = (0, Instant::now());
        }
        if entry.0 >= MAX_REGISTRATIONS {
            let wait = REGISTRATION_WINDOW
                .saturating_sub(entry.1.elapsed())
                .as_secs()
                .max(1);
            return Err(ServiceError::RateLimited {
                message: format!("too many registrations from this address; try again in {wait} s"),
                retry_after_secs: wait,
            });
        }
        entry.0 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_limited_per_address_whatever_the_port() {
        let g = RegistrationGuard::default();
        for port in 0..MAX_REGISTRATIONS {
            assert!(
                g.attempt(Some(&format!("10.0.0.1:{}", 1000 + port)))
                    .is_ok()
            );
        }
        assert!(matches!(
            g.attempt(Some("10.0.0.1:9")),
            Err(ServiceError::RateLimited { retry_after_secs, .. }) if retry_after_secs > 0
        ));
        assert!(g.attempt(Some("10.0.0.2:9")).is_ok(), "another address");
        assert!(g.attempt(Some("[::1]:5")).is_ok(), "IPv6");
        assert!(g.attempt(None).is_ok(), "the node itself");
    }

    #[test]
    fn refuses_a_key_after_too_many_failures_and_a_success_clears_it() {
        let g = LoginGuard::default();
        let alice = LoginKey::new("alice", Some("id-a"));
        for n in 1..=MAX_FAILURES {
            assert!(g.check(&alice).is_ok());
            assert_eq!(
                g.failed(&alice),
                n == MAX_FAILURES,
                "locked by the last one"
            );
        }
        assert!(matches!(
            g.check(&alice),
            Err(ServiceError::RateLimited { retry_after_secs, .. }) if retry_after_secs > 0
        ));
        assert!(
            g.check(&LoginKey::new("bob", Some("id-b"))).is_ok(),
            "other accounts are not affected"
        );
        assert!(
            g.check(&LoginKey::new("alice@example.org", Some("id-a")))
                .is_err(),
            "the account is locked whichever name is typed"
        );
        g.succeeded(&alice);
        assert!(g.check(&alice).is_ok());
    }

    #[test]
    fn unknown_names_are_normalised_and_kept_apart_from_accounts() {
        assert_eq!(
            LoginKey::new(" Nobody ", None),
            LoginKey::new("nobody", None)
        );
        assert_ne!(
            LoginKey::new("id-a", None),
            LoginKey::new("x", Some("id-a")),
            "a name spelled like an account id is not that account"
        );
        let g = LoginGuard::default();
        for _ in 0..MAX_FAILURES {
            g.failed(&LoginKey::new("Nobody", None));
        }
        assert!(g.check(&LoginKey::new("nobody", None)).is_err());
        assert!(g.check(&LoginKey::new("nobody", Some("id-n"))).is_ok());
    }
}
