//! Token revocation: every access token carries its account's token generation (`gen`); a
//! password change, a disabled account or a changed role set raises the generation in the
//! same transaction (with `tokens_revoked_at`), and tokens of an older generation are refused
//! from then on.
//!
//! Checking a token reads nothing: each node keeps, in memory, the generation below which an
//! account's tokens are refused, for the accounts revoked within the lifetime of an access
//! token (older entries are forgotten: every token they could refuse has expired). A change
//! made on this node takes effect at once; the node polls the table for changes made elsewhere
//! (`UserService::sync_revocations`, every second), so a revocation holds on every node within
//! about a second. The accounts whose tokens were revoked are queued for the node, which closes
//! their open sessions.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::ServiceError;

/// How far back each poll looks before the previous one: covers transactions that committed
/// after later ones, and clocks of the nodes that differ by up to this much.
pub const POLL_OVERLAP: Duration = Duration::from_secs(30);

/// An account whose tokens below `generation` are no longer accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub user_id: String,
    pub generation: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Account → (lowest accepted generation, when it was raised, ms).
    floor: HashMap<String, (u64, i64)>,
    /// Raised since the node last took them: their open sessions must close.
    pending: Vec<Revoked>,
    /// The `tokens_revoked_at` the next poll starts from (before the overlap), ms.
    polled_to: Option<i64>,
}

/// The generations below which tokens are refused, per account.
#[derive(Debug)]
pub struct Revocations {
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
    /// How long an entry is kept: the access token lifetime plus its leeway.
    keep_ms: i64,
}

impl Revocations {
    /// Entries are kept for `token_lifetime` after the revocation (no token issued before it
    /// lives longer).
    pub fn new(token_lifetime: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: tokio::sync::Notify::new(),
            keep_ms: i64::try_from(token_lifetime.as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` unless `user_id`'s tokens of `generation` were revoked.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] saying that the token was revoked.
    pub fn check(&self, user_id: &str, generation: u64) -> Result<(), ServiceError> {
        match self.lock().floor.get(user_id) {
            Some(&(floor, _)) if generation < floor => Err(ServiceError::Unauthenticated {
                message: "the token was revoked (password changed, account disabled or roles \
                          changed): refresh it or sign in again"
                    .to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses `user_id`'s tokens below `generation` from now on (revoked at `at_ms`). Returns
    /// whether that is news: an older floor, or none.
    pub fn raise(&self, user_id: &str, generation: u64, at_ms: i64) -> bool {
        let mut inner = self.lock();
        let news = match inner.floor.get(user_id) {
            Some(&(floor, _)) => generation > floor,
            None => true,
        };
        if news {
            inner.floor.insert(user_id.to_owned(), (generation, at_ms));
            inner.pending.push(Revoked {
                user_id: user_id.to_owned(),
                generation,
            });
            drop(inner);
            self.notify.notify_one();
        }
        news
    }

    /// The revocations raised since the last call (for closing open sessions).
    pub fn take_pending(&self) -> Vec<Revoked> {
        std::mem::take(&mut self.lock().pending)
    }

    /// Waits until a revocation is pending (one raised since the last [`Self::take_pending`]
    /// wakes it at once).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Where the next poll of `tokens_revoked_at` starts, given the time now: the previous
    /// poll's time less [`POLL_OVERLAP`], or, for the first poll, one token lifetime back.
    pub(crate) fn poll_from(&self, now_ms: i64) -> i64 {
        let overlap = i64::try_from(POLL_OVERLAP.as_millis()).unwrap_or(i64::MAX);
        match self.lock().polled_to {
            Some(t) => t.saturating_sub(overlap),
            None => now_ms.saturating_sub(self.keep_ms.saturating_add(overlap)),
        }
    }

    /// Records a poll made at `now_ms`, and forgets the entries older than a token lifetime.
    pub(crate) fn polled(&self, now_ms: i64) {
        let mut inner = self.lock();
        inner.polled_to = Some(now_ms);
        let keep = self.keep_ms;
        inner
            .floor
            .retain(|_, &mut (_, at)| now_ms.saturating_sub(at) <= keep);
    }

    /// Accounts with a revocation in memory.
    pub fn len(&self) -> usize {
        self.lock().floor.len()
    }

    /// Whether no account has one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_generations_are_refused_newer_accepted() {
        let r = Revocations::new(Duration::from_secs(900));
        assert!(r.check("u", 0).is_ok());
        assert!(r.raise("u", 1, 1_000));
        assert!(matches!(
            r.check("u", 0),
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(r.check("u", 1).is_ok());
        assert!(r.check("v", 0).is_ok(), "other accounts are not touched");
        assert!(!r.raise("u", 1, 2_000), "the same generation is no news");
        assert!(!r.raise("u", 0, 2_000), "a lower one neither");
        assert_eq!(
            r.take_pending(),
            vec![Revoked {
                user_id: "u".into(),
                generation: 1
            }]
        );
        assert!(r.take_pending().is_empty());
    }

    #[test]
    fn entries_are_forgotten_after_a_token_lifetime() {
        let r = Revocations::new(Duration::from_secs(10));
        r.raise("u", 1, 1_000);
        r.polled(5_000);
        assert_eq!(r.len(), 1);
        r.polled(11_001);
        assert!(r.is_empty());
        assert_eq!(r.poll_from(20_000), 11_001 - 30_000);
    }

    #[test]
    fn the_first_poll_reaches_back_one_lifetime() {
        let r = Revocations::new(Duration::from_secs(900));
        assert_eq!(r.poll_from(1_000_000), 1_000_000 - 900_000 - 30_000);
    }
}
