//! Who a session was authenticated as, and the node's registry of those sessions, so that
//! revoking an account's tokens closes its open sessions (close code 4401) on this node.
//!
//! A session registers before it joins its campaign and checks the account's revocation
//! floor after registering; a revocation records the floor before it looks for sessions. So
//! a session opened while its token is being revoked is either found by the revocation or
//! finds the floor itself: none slips between the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::session::{Close, Session};

/// The account a session's token was issued to, and the token's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub generation: u64,
}

/// How long a revocation floor is remembered here: long enough for any session whose token
/// was checked before the revocation to have registered.
const FLOOR_KEPT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    /// Account → its sessions: (session id, token generation, session).
    sessions: HashMap<String, Vec<(u64, u64, Arc<Session>)>>,
    /// Account → (lowest accepted generation, when it was set).
    floors: HashMap<String, (u64, Instant)>,
}

/// The authenticated sessions of a node, by account.
#[derive(Default)]
pub(crate) struct Principals {
    inner: Mutex<Inner>,
}

impl Principals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `session` (id `id`) of `principal`; closes it at once when the account's
    /// tokens of its generation were revoked.
    pub fn register(&self, principal: &Principal, id: u64, session: &Arc<Session>) {
        let mut inner = self.lock();
        inner
            .sessions
            .entry(principal.user.clone())
            .or_default()
            .push((id, principal.generation, session.clone()));
        if let Some(&(floor, _)) = inner.floors.get(&principal.user)
            && principal.generation < floor
        {
            session.close(Close::REVOKED);
        }
    }

    /// Forgets session `id` of `user`.
    pub fn unregister(&self, user: &str, id: u64) {
        let mut inner = self.lock();
        if let Some(list) = inner.sessions.get_mut(user) {
            list.retain(|(sid, _, _)| *sid != id);
            if list.is_empty() {
                inner.sessions.remove(user);
            }
        }
    }

    /// Closes `user`'s sessions whose token generation is below `floor`, and those that
    /// register later with one; returns how many were open.
    pub fn revoke(&self, user: &str, floor: u64) -> usize {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .floors
            .retain(|_, (_, at)| now.duration_since(*at) < FLOOR_KEPT);
        let entry = inner.floors.entry(user.to_owned()).or_insert((floor, now));
        if floor >= entry.0 {
            *entry = (floor, now);
        }
        let mut closed = 0;
        for (_, generation, session) in inner.sessions.get(user).into_iter().flatten() {
            if *generation < floor {
                session.close(Close::REVOKED);
                closed += 1;
            }
        }
        closed
    }
}
