//! In-process broker for a single node: `seq` counters in memory, delivery by direct call.

use std::sync::{Arc, OnceLock, Weak};

use dashmap::DashMap;

use super::{BoxFuture, Broker, BrokerError, Control, Deliver, Presence, Publication};

/// A [`Broker`] that delivers to the node in the same process.
#[derive(Default)]
pub struct MemoryBroker {
    /// Latest assigned `seq` per campaign. The entry stays locked while its publication is
    /// delivered, so deliveries of one campaign arrive in `seq` order.
    seqs: DashMap<Box<str>, u64>,
    /// Epoch per campaign, for as long as the process lives (so is its history).
    epochs: DashMap<Box<str>, String>,
    sink: OnceLock<Weak<dyn Deliver>>,
}

impl MemoryBroker {
    /// A broker with no campaigns yet.
    pub fn new() -> Self {
        Self::default()
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

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(sink) = self.sink() {
                sink.control(control);
            }
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            Ok(self
                .epochs
                .entry(campaign.into())
                .or_insert_with(super::new_epoch)
                .clone())
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
        _campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::Snapshot>, BrokerError>> {
        // Every publication reaches this node's campaign task already.
        Box::pin(async { Ok(None) })
    }

    fn unfollow(&self, _campaign: &str) {}
}
