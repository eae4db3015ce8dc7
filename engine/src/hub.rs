//! Local sessions, by campaign. The hub is a sharded map (campaign id → campaign); each
//! campaign keeps its members in a map guarded by a short lock, plus a cached immutable
//! snapshot that broadcasts iterate without holding any lock. Joining and leaving are O(1) and
//! only mark the snapshot stale; the next broadcast rebuilds it once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::campaign::CampaignShared;
use crate::session::Session;

/// Campaigns running on this node, sharded by id.
pub(crate) type Hub = DashMap<Arc<str>, Arc<CampaignShared>>;

/// An immutable list of a campaign's sessions, shared by every broadcast until membership
/// changes.
pub(crate) type Snapshot = Arc<[Arc<Session>]>;

/// The sessions of one campaign on this node.
pub(crate) struct Members {
    map: Mutex<HashMap<u64, Arc<Session>>>,
    /// Bumped by every join and leave.
    version: AtomicU64,
    len: AtomicUsize,
    snapshot: Mutex<(u64, Snapshot)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent: recover.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Members {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            snapshot: Mutex::new((0, Arc::from(Vec::new()))),
        }
    }

    pub(crate) fn insert(&self, session: Arc<Session>) {
        let mut map = lock(&self.map);
        map.insert(session.id, session);
        self.len.store(map.len(), Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut map = lock(&self.map);
        if map.remove(&id).is_some() {
            self.len.store(map.len(), Ordering::Relaxed);
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Whether session `id` is a member (it joined: its welcome is queued).
    pub(crate) fn contains(&self, id: u64) -> bool {
        lock(&self.map).contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The current members and the membership version they reflect. Cheap when nothing
    /// changed since the last call: one refcount.
    pub(crate) fn snapshot(&self) -> (u64, Snapshot) {
        let version = self.version.load(Ordering::Acquire);
        let mut cached = lock(&self.snapshot);
        if cached.0 != version {
            let map = lock(&self.map);
            let version = self.version.load(Ordering::Acquire);
            let list: Snapshot = map.values().cloned().collect();
            *cached = (version, list);
        }
        (cached.0, cached.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_reused_until_membership_changes() {
        let m = Members::new();
        let s1 = Session::new(1, "a", Default::default(), 4, 1);
        let s2 = Session::new(2, "b", Default::default(), 4, 1);
        m.insert(s1);
        assert!(m.contains(1) && !m.contains(2));
        let (v1, a) = m.snapshot();
        let (v1b, b) = m.snapshot();
        assert_eq!(v1, v1b);
        assert!(
            Arc::ptr_eq(&a, &b),
            "unchanged membership reuses the snapshot"
        );
        m.insert(s2);
        let (v2, c) = m.snapshot();
        assert_ne!(v1, v2);
        assert_eq!(c.len(), 2);
        assert_eq!(a.len(), 1, "an old snapshot is unaffected by joins");
        m.remove(1);
        m.remove(1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.snapshot().1.len(), 1);
    }
}
