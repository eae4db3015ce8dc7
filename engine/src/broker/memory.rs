//! In-process broker for a single node: `seq` counters in memory, delivery (publications,
//! lifecycle, notifications) by direct call.
//!
//! [`MemoryBroker::persistent`] keeps every campaign's epoch and a reservation of `seq`s in a
//! file, so that a restarted node continues both: `seq` goes on above every number the
//! previous process handed out (it reserves [`SEQ_BLOCK`] numbers at a time and writes the
//! reservation before using it, so a killed process skips at most that many), and a client
//! resuming across the restart — with or without its `epoch` — is told `recovered: false`
//! (the history, in memory, is gone) instead of being handed new events under old numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{BoxFuture, Broker, BrokerError, Control, Deliver, Presence, Publication};

/// `seq`s reserved per write of the file.
pub const SEQ_BLOCK: u64 = 1000;

/// A [`Broker`] that delivers to the node in the same process.
#[derive(Default)]
pub struct MemoryBroker {
    /// Latest assigned `seq` per campaign. The entry stays locked while its publication is
    /// delivered, so deliveries of one campaign arrive in `seq` order.
    seqs: DashMap<Box<str>, u64>,
    /// Epoch per campaign (as long as the process lives, or as the file when persistent).
    epochs: DashMap<Box<str>, String>,
    sink: OnceLock<Weak<dyn Deliver>>,
    store: Option<Store>,
}

/// The file of a persistent broker and what it holds.
struct Store {
    path: PathBuf,
    saved: Mutex<Saved>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Saved {
    campaigns: BTreeMap<String, SavedCampaign>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedCampaign {
    epoch: String,
    /// Every `seq` up to this one may have been handed out.
    reserved: u64,
}

/// Why the file of a persistent broker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a sequence file")]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Store {
    fn saved(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the file anew (a temporary file renamed over it, so a crash leaves the old or
    /// the new one). A failure is logged: publishing goes on, but a restart after it may
    /// hand out numbers again (and says so in the log).
    fn write(&self, saved: &Saved) {
        let tmp = self.path.with_extension("tmp");
        let result = serde_json::to_vec(saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write as _;
                // Synced before the rename: a power loss leaves the old file or the new one,
                // never an empty one.
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "sequence file not written: a restart may reuse seqs");
        }
    }
}

impl MemoryBroker {
    /// A broker with no campaigns yet, that forgets everything with the process.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker that keeps epochs and `seq` reservations in `path` (created when missing,
    /// with its folder) and continues from what it holds.
    ///
    /// # Errors
    /// [`StoreError`] when the file exists but cannot be read or parsed.
    pub fn persistent(path: &Path) -> Result<Self, StoreError> {
        let saved = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<Saved>(&bytes).map_err(|source| StoreError::Malformed {
                    path: path.to_owned(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(source) => {
                return Err(StoreError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Read {
                path: path.to_owned(),
                source,
            })?;
        }
        let broker = Self::default();
        for (id, c) in &saved.campaigns {
            broker.seqs.insert(id.as_str().into(), c.reserved);
            broker.epochs.insert(id.as_str().into(), c.epoch.clone());
        }
        Ok(Self {
            store: Some(Store {
                path: path.to_owned(),
                saved: Mutex::new(saved),
            }),
            ..broker
        })
    }

    /// Makes sure `seq` is reserved in the file before it is handed out.
    fn reserve(&self, campaign: &str, seq: u64) {
        let Some(store) = &self.store else { return };
        let epoch = self.epochs.get(campaign).map(|e| e.clone());
        let mut saved = store.saved();
        let entry = saved
            .campaigns
            .entry(campaign.to_owned())
            .or_insert_with(|| SavedCampaign {
                epoch: epoch.clone().unwrap_or_default(),
                reserved: 0,
            });
        if let Some(e) = epoch {
            entry.epoch = e;
        }
        if seq <= entry.reserved {
            return;
        }
        entry.reserved = seq.saturating_add(SEQ_BLOCK - 1);
        store.write(&saved);
    }

    /// Records a new epoch in the file.
    fn save_epoch(&self, campaign: &str, epoch: &str) {
        let Some(store) = &self.store else { return };
        // Read before the store's lock: a publish holds its counter, then takes that lock.
        let reserved = self.seqs.get(campaign).map_or(0, |s| *s);
        let mut saved = store.saved();
        let entry = saved
            .campaigns
            .entry(campaign.to_owned())
            .or_insert(SavedCampaign {
                epoch: String::new(),
                reserved,
            });
        entry.epoch = epoch.to_owned();
        store.write(&saved);
    }

    /// Forgets an ended campaign in the file.
    fn forget(&self, campaign: &str) {
        let Some(store) = &self.store else { return };
        let mut saved = store.saved();
        if saved.campaigns.remove(campaign).is_some() {
            store.write(&saved);
        }
    }

    fn sink(&self) -> Option<Arc<dyn Deliver>> {
        self.sink.get().and_then(Weak::upgrade)
    }
}

impl Broker for MemoryBroker {
    fn attach(&self, sink: Weak<dyn Deliver>) {
        let _ = self.sink.set(sink);
    }

    fn publish<'a>(
        &'a self,
        campaign: &'a str,
        mut publication: Publication,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let mut latest = match self.seqs.get_mut(campaign) {
                Some(entry) => entry,
                None => self.seqs.entry(campaign.into()).or_insert(0),
            };
            let seq = match &mut publication {
                Publication::Event { seq, .. } => {
                    *latest += 1;
                    self.reserve(campaign, *latest);
                    *seq = *latest;
                    *latest
                }
                Publication::Message { seq, .. } => {
                    *seq = *latest;
                    *latest
                }
                Publication::State { .. } => *latest,
            };
            if let Some(sink) = self.sink() {
                sink.deliver(campaign, publication);
            }
            drop(latest);
            Ok(seq)
        })
    }

    fn publish_batch_once<'a>(
        &'a self,
        campaign: &'a str,
        events: Vec<Publication>,
        _first_id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            // One lock for the whole batch: no other publication of the campaign between.
            let mut latest = match self.seqs.get_mut(campaign) {
                Some(entry) => entry,
                None => self.seqs.entry(campaign.into()).or_insert(0),
            };
            let first = *latest + 1;
            let last = *latest + u64::try_from(events.len()).unwrap_or(u64::MAX);
            self.reserve(campaign, last);
            let sink = self.sink();
            for (mut publication, n) in events.into_iter().zip(first..) {
                if let Publication::Event { seq, .. } = &mut publication {
                    *seq = n;
                }
                *latest = n;
                if let Some(sink) = &sink {
                    sink.deliver(campaign, publication);
                }
            }
            drop(latest);
            Ok(first)
        })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Control::End { campaign } = &control {
                self.forget(campaign);
                self.epochs.remove(campaign.as_str());
                self.seqs.remove(campaign.as_str());
            }
            if let Some(sink) = self.sink() {
                sink.control(control);
            }
            Ok(())
        })
    }

    fn notify<'a>(
        &'a self,
        user: &'a str,
        payload: Box<RawValue>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(sink) = self.sink() {
                sink.notify(user, &payload);
            }
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            if let Some(e) = self.epochs.get(campaign) {
                return Ok(e.clone());
            }
            let epoch = self
                .epochs
                .entry(campaign.into())
                .or_insert_with(super::new_epoch)
                .clone();
            self.save_epoch(campaign, &epoch);
            Ok(epoch)
        })
    }

    fn history<'a>(
        &'a self,
        _campaign: &'a str,
        _after: u64,
    ) -> BoxFuture<'a, Result<Vec<Publication>, BrokerError>> {
        // The node's campaign task received every event: its own history is the whole story.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn report_presence<'a>(
        &'a self,
        _c: &'a str,
        _n: &'a str,
        _p: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn cluster_presence<'a>(
        &'a self,
        _campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presence>, BrokerError>> {
        Box::pin(async { Ok(None) })
    }

    fn follow<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::Snapshot>, BrokerError>> {
        // Every publication reaches this node's campaign task already; a persistent broker
        // tells where the numbering stands (it may continue a previous process's).
        Box::pin(async move {
            Ok(self.store.as_ref().map(|_| super::Snapshot {
                seq: self.seqs.get(campaign).map_or(0, |s| *s),
                state: None,
                state_version: 0,
                epoch: None,
            }))
        })
    }

    fn unfollow(&self, _campaign: &str) {}
}
