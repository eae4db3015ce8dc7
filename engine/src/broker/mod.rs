//! The bus every publish goes through. A [`Broker`] assigns each event its campaign `seq` and
//! delivers publications and control messages to every node's [`Deliver`] sink — its own
//! included — in the order it assigned them. It also carries notifications: node-wide pushes
//! to every session of one user, outside every campaign's stream ([`Broker::notify`]).
//! [`MemoryBroker`] serves a single node; a Redis broker is a second backend of the same trait.

mod memory;
mod redis;
pub(crate) mod shard;

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use memory::{MemoryBroker, StoreError};
pub use redis::{Key as RedisKey, NODE_KEYS as REDIS_NODE_KEYS, RedisBroker, RedisConfig};

/// Longest epoch the WebSocket API accepts in `epoch=`; every epoch the engine makes fits.
pub const MAX_EPOCH_LEN: usize = 64;

/// A boxed, sendable future: what [`Broker`] methods return so that the trait is object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can be published to one campaign. (Externally tagged on the wire: an internally
/// tagged enum cannot carry a `RawValue`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publication {
    /// An event for the campaign's next tick (or at once when `immediate`). The broker
    /// overwrites `seq` with the next one of the campaign.
    Event {
        seq: u64,
        name: String,
        data: Box<RawValue>,
        ts: i64,
        immediate: bool,
        /// The user who sent it, for events that came from a client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// The campaign's whole new state (the latest one wins at the next tick). `version`
    /// counts the campaign's state changes on the bus (0: not counted, always applied).
    State {
        state: Box<RawValue>,
        #[serde(default)]
        version: u64,
    },
    /// A message for every session of one user. The broker sets `seq` to the campaign's latest
    /// event `seq`, so that messages mark their place in the stream without opening a gap.
    Message {
        seq: u64,
        user: String,
        name: String,
        data: Box<RawValue>,
        ts: i64,
    },
}

/// What a node needs to run one campaign's broadcast task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub id: String,
    pub frequency_hz: f64,
    /// Whether clients' `event` frames are published to the campaign.
    pub client_events: bool,
    /// The state to start from (or to replace the running one with), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<RawValue>>,
    /// Whether tick frames carry the cluster-wide connection count (`"connections"`).
    #[serde(default)]
    pub presence: bool,
    /// Whether every session gets delta state frames (`state_patch`), not only those that
    /// asked with `delta=1`.
    #[serde(default)]
    pub delta: bool,
    /// The campaign's history epoch, the same on every node (set by [`crate::Node`] from
    /// [`Broker::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Campaign lifecycle, sent to every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Created or changed: start the task, or retime and reconfigure the running one.
    Upsert(CampaignSpec),
    /// Ended: send a final frame and close its sessions with 1000.
    End { campaign: String },
}

/// Where a campaign stands on the bus, read when a node starts following it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The latest event `seq`.
    pub seq: u64,
    /// The latest state, if one was ever published.
    pub state: Option<Box<RawValue>>,
    /// The version of that state.
    pub state_version: u64,
    /// The campaign's epoch on the bus (`None`: the bus keeps no epoch of its own).
    pub epoch: Option<String>,
}

/// A range of `seq`s of one epoch that a node handed out on its own while it was cut from
/// the bus (a detached epoch): its clients saw other events under those numbers than the
/// cluster's, so a resume from inside the range cannot be served exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// The cluster epoch the range belongs to.
    pub epoch: String,
    /// The last `seq` before the detachment (excluded).
    pub after: u64,
    /// The last `seq` the range may hold (included).
    pub through: u64,
}

impl Taint {
    /// Whether a client that last saw `since` (in `epoch`, if it says) may have seen one of
    /// the range's local events.
    pub fn covers(&self, since: u64, epoch: Option<&str>) -> bool {
        epoch.is_none_or(|e| e == self.epoch) && since > self.after && since <= self.through
    }
}

/// What a resuming client may recover from the bus.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The campaign's events after the asked `seq`, oldest first.
    pub events: Vec<Publication>,
    /// Ranges that cannot be recovered exactly (see [`Taint`]).
    pub tainted: Vec<Taint>,
}

/// Who is connected to a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub connections: u64,
    /// Distinct users, at most [`PRESENCE_USERS`].
    pub users: Vec<String>,
}

/// Most distinct users a presence report carries.
pub const PRESENCE_USERS: usize = 100;

/// Failure of a broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The bus cannot be reached (e.g. Redis is down).
    #[error("broker unavailable: {reason}")]
    Unavailable { reason: String },
    /// A message could not be encoded or decoded.
    #[error("broker message malformed")]
    Codec(#[source] serde_json::Error),
}

/// Where a broker delivers what was published (implemented by the node).
pub trait Deliver: Send + Sync {
    /// A publication for `campaign`, in the broker's order.
    fn deliver(&self, campaign: &str, publication: Publication);
    /// A lifecycle message.
    fn control(&self, control: Control);
    /// The campaign's epoch on the bus changed (the bus lost its keys and began afresh):
    /// publications after this one carry `seq`s of the new epoch.
    fn epoch(&self, campaign: &str, epoch: &str) {
        let _ = (campaign, epoch);
    }
    /// A notification for every session of `user` on this node (see [`Broker::notify`]). A
    /// sink that holds no sessions ignores it.
    fn notify(&self, user: &str, payload: &RawValue) {
        let _ = (user, payload);
    }
}

/// The cross-node bus.
pub trait Broker: Send + Sync + 'static {
    /// Sets where deliveries go. Called once by the node that owns this broker.
    fn attach(&self, sink: Weak<dyn Deliver>);

    /// Publishes to `campaign`; returns the `seq` it assigned (events) or the campaign's
    /// latest `seq` (other publications).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn publish<'a>(
        &'a self,
        campaign: &'a str,
        publication: Publication,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// As [`Broker::publish`], applied at most once however many times it is called with the
    /// same `id` (a number this node never gives two publications): a retry after a timeout
    /// whose first attempt did reach the bus returns the first attempt's `seq`.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn publish_once<'a>(
        &'a self,
        campaign: &'a str,
        publication: Publication,
        id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let _ = id;
        self.publish(campaign, publication)
    }

    /// Publishes `events` (every one a [`Publication::Event`]; the caller checks) to
    /// `campaign` as one unit: they get consecutive `seq`s in their order, with no other
    /// publication of the campaign between them; returns the first `seq`. Applied at most
    /// once however many times it is called with the same `first_id`; the `i`-th event is
    /// publication `first_id + i` (numbers this node never gives other publications).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached (a timeout may still have
    /// applied the whole batch: [`Broker::applied`] of `first_id` says).
    fn publish_batch_once<'a>(
        &'a self,
        campaign: &'a str,
        events: Vec<Publication>,
        first_id: u64,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// Sends a notification to every node, this one included, whose [`Deliver::notify`] pushes
    /// it to the local sessions of `user`. Node-wide and not part of any campaign: no `seq`, no
    /// history. At most once: a node that is not subscribed at that moment (its link to the
    /// bus is being set up again) never gets it, and nothing is retried (the durable copy is
    /// the notification service's inbox).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached (a timeout may still have
    /// delivered it); [`BrokerError::Codec`] when it cannot be encoded.
    fn notify<'a>(
        &'a self,
        user: &'a str,
        payload: Box<RawValue>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Sends a lifecycle message to every node.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Whether the bus is reachable (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Whether a publish can go to the bus now (it may be, while [`Broker::is_ready`] is not:
    /// a cluster bus whose subscriptions are being set up again).
    fn can_publish(&self) -> bool {
        self.is_ready()
    }

    /// The `seq` of this node's publication `id` if the bus already delivered it back here
    /// (a publish that failed on a timeout may still have been applied).
    fn applied(&self, id: u64) -> Option<u64> {
        let _ = id;
        None
    }

    /// Records this node's sessions of a campaign (a heartbeat: forgotten after the bus's
    /// presence TTL unless repeated).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn report_presence<'a>(
        &'a self,
        campaign: &'a str,
        node: &'a str,
        presence: &'a Presence,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// The campaign's sessions on every node that reported recently; `None` when the bus has
    /// no shared view (a single node: its own figures are the whole story).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn cluster_presence<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Presence>, BrokerError>>;

    /// The campaign's history epoch, created on first use and shared by every node.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn epoch<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<String, BrokerError>>;

    /// The campaign's events after `after`, oldest first, from the bus's own history (empty
    /// for a bus whose node sees every event anyway).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn history<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Vec<Publication>, BrokerError>>;

    /// [`Broker::history`] after `after`, with the ranges that cannot be recovered exactly.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn recovery<'a>(
        &'a self,
        campaign: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            Ok(Recovery {
                events: self.history(campaign, after).await?,
                tainted: Vec::new(),
            })
        })
    }

    /// The campaign's [`Taint`]s alone (a resume this node can serve from its own history).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn tainted<'a>(&'a self, campaign: &'a str) -> BoxFuture<'a, Result<Vec<Taint>, BrokerError>> {
        let _ = campaign;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Records a [`Taint`] where every node's resumes see it (a bus that serves one node
    /// keeps none: the node remembers its own).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn taint<'a>(
        &'a self,
        campaign: &'a str,
        taint: Taint,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = (campaign, taint);
        Box::pin(async { Ok(()) })
    }

    /// This node has sessions of the campaign: deliver its publications here from now on.
    /// Counted: every `follow` is matched by one [`Broker::unfollow`]. Returns, once the
    /// subscription is in place, where the campaign stands, so that the node can catch up with
    /// what it did not receive meanwhile (`None`: the bus delivers everything to this node
    /// anyway).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the bus cannot be reached.
    fn follow<'a>(
        &'a self,
        campaign: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, BrokerError>>;

    /// This node no longer has sessions of the campaign.
    fn unfollow(&self, campaign: &str);
}

/// A fresh epoch: the time and a process-wide counter, in hex.
pub(crate) fn new_epoch() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{n:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_and_control_round_trip_with_raw_json() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("json");
        let p = Publication::Event {
            seq: 3,
            name: "n".into(),
            data: raw(r#"{"a":[1,2]}"#),
            ts: 9,
            immediate: true,
            user: Some("u".into()),
        };
        let back: Publication =
            serde_json::from_str(&serde_json::to_string(&p).expect("ser")).expect("de");
        assert!(
            matches!(back, Publication::Event { seq: 3, ref data, .. } if data.get() == r#"{"a":[1,2]}"#)
        );
        let c = Control::Upsert(CampaignSpec {
            id: "c".into(),
            frequency_hz: 2.0,
            client_events: true,
            presence: true,
            delta: true,
            state: Some(raw("{}")),
            epoch: Some("e".into()),
        });
        let back: Control =
            serde_json::from_str(&serde_json::to_string(&c).expect("ser")).expect("de");
        assert!(
            matches!(back, Control::Upsert(CampaignSpec { ref state, .. }) if state.as_ref().is_some_and(|s| s.get() == "{}"))
        );
    }
}
