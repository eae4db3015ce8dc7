//! Hooks for the criterion benchmarks (`benches/`, feature `bench-internals`): a campaign's
//! tick and membership driven directly, without sockets, timers or a runtime, so that the
//! benchmarks measure exactly the hot paths: encode once, offer to every queue.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::broker::{CampaignSpec, Publication};
use crate::campaign::{self, Campaign, CampaignShared};
use crate::session::Session;
use crate::{Config, MemoryBroker, Node};

/// One campaign with `n` sessions whose queues the benchmark inspects directly.
pub struct Fixture {
    _node: Node,
    task: Campaign,
    shared: Arc<CampaignShared>,
    sessions: Vec<Arc<Session>>,
    seq: u64,
    data: Box<RawValue>,
}

impl Fixture {
    /// A campaign with `sessions` sessions (each with a queue of `queue_capacity` frames),
    /// compressed or not, and events carrying `payload` bytes of data.
    pub fn new(sessions: usize, compress: bool, queue_capacity: usize, payload: usize) -> Self {
        let config = Config {
            send_queue_capacity: queue_capacity,
            node_id: "bench".into(),
            ..Config::default()
        };
        let node = Node::new(config, Arc::new(MemoryBroker::new()));
        let spec = CampaignSpec {
            id: "bench".into(),
            frequency_hz: 10.0,
            presence: false,
            delta: false,
            client_events: false,
            state: None,
            epoch: None,
        };
        let (task, shared) = Campaign::new(spec, node.inner().clone());
        let mut all = Vec::with_capacity(sessions);
        for id in 0..sessions as u64 {
            let s = Session::new(
                id,
                "user",
                crate::Encoding {
                    compress,
                    delta: None,
                },
                queue_capacity,
                1,
            );
            campaign::join(&shared, s.clone());
            all.push(s);
        }
        let data = RawValue::from_string(format!("{{\"p\":\"{}\"}}", "x".repeat(payload)))
            .expect("valid JSON");
        let mut f = Self {
            _node: node,
            task,
            shared,
            sessions: all,
            seq: 0,
            data,
        };
        // Everyone gets the initial state once, so that ticks measure the steady state.
        f.task.broadcast();
        f.drain();
        f
    }

    /// Queues `events` events for the next tick.
    pub fn publish(&mut self, events: usize) {
        for _ in 0..events {
            self.seq += 1;
            self.task.on_publication(Publication::Event {
                seq: self.seq,
                name: "bench".into(),
                data: self.data.clone(),
                ts: 0,
                immediate: false,
                user: None,
            });
        }
    }

    /// One tick: encode the frame once and offer it to every session.
    pub fn tick(&mut self) {
        self.task.broadcast();
    }

    /// Empties every queue; returns the frames removed.
    pub fn drain(&self) -> usize {
        self.sessions.iter().map(|s| s.queue.clear()).sum()
    }

    /// Fills every queue to capacity, so that the next offers take the drop path.
    pub fn fill(&self) {
        let filler = Message::text("x");
        for s in self.shared.members.snapshot().1.iter() {
            while s.offer(
                filler.clone(),
                &self.shared,
                crate::session::SlowPolicy::never(),
            ) {}
        }
    }

    /// A handle that joins and leaves sessions from another thread while this fixture ticks.
    pub fn churner(&self) -> Churner {
        Churner {
            shared: self.shared.clone(),
            next: 1 << 40,
        }
    }
}

/// Joins and leaves sessions of a [`Fixture`]'s campaign.
pub struct Churner {
    shared: Arc<CampaignShared>,
    next: u64,
}

impl Churner {
    /// One session joins, then leaves.
    pub fn join_leave(&mut self) {
        self.next += 1;
        let s = Session::new(self.next, "churn", Default::default(), 4, 1);
        campaign::join(&self.shared, s);
        self.shared.members.remove(self.next);
    }
}
