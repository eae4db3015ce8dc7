//! Who a session was authenticated as, and the node's registry of those sessions: revoking an
//! account's tokens closes its open sessions (4401 "token revoked"), a token that expires
//! closes the sessions opened with it (4401 "token expired") unless the client presented a
//! fresh one first (`{"type":"refresh","token":...}`, checked by the node's
//! [`TokenVerifier`]). It is also where a node-wide notification finds the sessions of its
//! user ([`Principals::sessions_of`]): sessions opened without a token are not registered, so
//! they get none.
//!
//! A session registers before it joins its campaign and checks the account's revocation
//! floor after registering; a revocation records the floor before it looks for sessions. So
//! a session opened while its token is being revoked is either found by the revocation or
//! finds the floor itself: none slips between the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::campaign::CampaignShared;
use crate::session::{Close, Session};

/// The account a session's token was issued to, the token's generation, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub generation: u64,
    /// Unix milliseconds after which the session is closed with 4401 unless refreshed (0:
    /// never).
    pub expires_at_ms: i64,
}

/// Checks the tokens that sessions present to stay open (`refresh` frames).
pub trait TokenVerifier: Send + Sync {
    /// The principal `token` stands for, or why it is refused.
    ///
    /// # Errors
    /// A message for the client's `error` frame.
    fn verify(&self, token: &str) -> Result<Principal, String>;
}

/// How long a revocation floor is remembered here: long enough for any session whose token
/// was checked before the revocation to have registered.
const FLOOR_KEPT: Duration = Duration::from_secs(60);

/// One registered session.
struct Entry {
    id: u64,
    generation: u64,
    expires_at_ms: i64,
    session: Arc<Session>,
    /// The campaign it watches: a notification is offered to the session through it (its
    /// drop counters) once the session is one of its members.
    campaign: Arc<CampaignShared>,
}

#[derive(Default)]
struct Inner {
    /// Account → its sessions.
    sessions: HashMap<String, Vec<Entry>>,
    /// Session id → its account.
    accounts: HashMap<u64, String>,
    /// Account → (lowest accepted generation, when it was set).
    floors: HashMap<String, (u64, Instant)>,
}

/// The authenticated sessions of a node, by account.
#[derive(Default)]
pub(crate) struct Principals {
    inner: Mutex<Inner>,
}

/// Why a refresh was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshError {
    /// The session was opened without a token.
    NoToken,
    /// The token is another account's.
    OtherAccount,
    /// The account's tokens of that generation were revoked.
    Revoked,
}

impl Principals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `session` (id `id`) of `principal`, watching `campaign`; closes it at once
    /// when the account's tokens of its generation were revoked.
    pub fn register(
        &self,
        principal: &Principal,
        id: u64,
        session: &Arc<Session>,
        campaign: &Arc<CampaignShared>,
    ) {
        let mut inner = self.lock();
        inner
            .sessions
            .entry(principal.user.clone())
            .or_default()
            .push(Entry {
                id,
                generation: principal.generation,
                expires_at_ms: principal.expires_at_ms,
                session: session.clone(),
                campaign: campaign.clone(),
            });
        inner.accounts.insert(id, principal.user.clone());
        if let Some(&(floor, _)) = inner.floors.get(&principal.user)
            && principal.generation < floor
        {
            session.close(Close::REVOKED);
        }
    }

    /// Forgets session `id`.
    pub fn unregister(&self, id: u64) {
        let mut inner = self.lock();
        let Some(user) = inner.accounts.remove(&id) else {
            return;
        };
        if let Some(list) = inner.sessions.get_mut(&user) {
            list.retain(|e| e.id != id);
            if list.is_empty() {
                inner.sessions.remove(&user);
            }
        }
    }

    /// Session `id` presents the token of `fresh`: it stays open until `fresh` expires.
    pub fn refresh(&self, id: u64, fresh: &Principal) -> Result<(), RefreshError> {
        let mut inner = self.lock();
        let Some(user) = inner.accounts.get(&id) else {
            return Err(RefreshError::NoToken);
        };
        if *user != fresh.user {
            return Err(RefreshError::OtherAccount);
        }
        if inner
            .floors
            .get(&fresh.user)
            .is_some_and(|&(floor, _)| fresh.generation < floor)
        {
            return Err(RefreshError::Revoked);
        }
        let user = user.clone();
        if let Some(e) = inner
            .sessions
            .get_mut(&user)
            .and_then(|list| list.iter_mut().find(|e| e.id == id))
        {
            e.generation = fresh.generation;
            e.expires_at_ms = fresh.expires_at_ms;
        }
        Ok(())
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
        for e in inner.sessions.get(user).into_iter().flatten() {
            if e.generation < floor {
                e.session.close(Close::REVOKED);
                closed += 1;
            }
        }
        closed
    }

    /// `user`'s open sessions with the campaign each watches (copied out, so that frames are
    /// offered without the registry's lock).
    pub fn sessions_of(&self, user: &str) -> Vec<(Arc<Session>, Arc<CampaignShared>)> {
        let inner = self.lock();
        inner
            .sessions
            .get(user)
            .into_iter()
            .flatten()
            .filter(|e| !e.session.is_closed())
            .map(|e| (e.session.clone(), e.campaign.clone()))
            .collect()
    }

    /// Closes the sessions whose token expired at or before `now_ms`; returns how many.
    pub fn expire(&self, now_ms: i64) -> usize {
        let inner = self.lock();
        let mut closed = 0;
        for e in inner.sessions.values().flatten() {
            if e.expires_at_ms != 0 && e.expires_at_ms <= now_ms && !e.session.is_closed() {
                e.session.close(Close::EXPIRED);
                closed += 1;
            }
        }
        closed
    }
}
