//! The services' [`Broadcaster`] implemented with the engine's [`Node`].

use engine::broker::CampaignSpec;
use engine::{EngineError, NewEvent, Node};
use serde_json::value::RawValue;
use services::campaign::{BatchEvent, BoxFuture, BroadcastError, Broadcaster, LiveCampaign};

/// Hands service-layer changes to the engine.
pub struct EngineBroadcaster {
    pub node: Node,
}

fn map(e: EngineError) -> BroadcastError {
    match e {
        EngineError::UnknownCampaign { .. } => BroadcastError::NotLive,
        EngineError::FrequencyOutOfRange { .. }
        | EngineError::InvalidEventName { .. }
        | EngineError::InvalidData { .. } => BroadcastError::Rejected(e.to_string()),
        EngineError::InvalidBatch { index, reason } => BroadcastError::Invalid {
            field: index.map_or_else(|| "events".to_owned(), |i| format!("events[{i}]")),
            message: reason,
        },
        EngineError::ShuttingDown | EngineError::Broker(_) => {
            BroadcastError::Unavailable(e.to_string())
        }
    }
}

impl Broadcaster for EngineBroadcaster {
    fn upsert(&self, c: LiveCampaign) -> BoxFuture<'_, Result<(), BroadcastError>> {
        Box::pin(async move {
            let spec = CampaignSpec {
                id: c.id,
                frequency_hz: c.frequency_hz,
                client_events: c.client_events,
                presence: c.presence,
                delta: c.delta,
                state: c.state,
                epoch: None,
            };
            self.node.upsert_campaign(spec).await.map_err(map)
        })
    }

    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), BroadcastError>> {
        let id = id.to_owned();
        Box::pin(async move { self.node.end_campaign(&id).await.map_err(map) })
    }

    fn state(&self, id: &str, state: Box<RawValue>) -> BoxFuture<'_, Result<(), BroadcastError>> {
        let id = id.to_owned();
        Box::pin(async move { self.node.set_state(&id, state).await.map_err(map) })
    }

    fn publish(
        &self,
        id: &str,
        name: &str,
        data: Box<RawValue>,
        immediate: bool,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        let (id, name) = (id.to_owned(), name.to_owned());
        Box::pin(async move {
            self.node
                .publish_event(&id, &name, data, immediate)
                .await
                .map_err(map)
        })
    }

    fn publish_batch(
        &self,
        id: &str,
        events: Vec<BatchEvent>,
    ) -> BoxFuture<'_, Result<std::ops::RangeInclusive<u64>, BroadcastError>> {
        let id = id.to_owned();
        let events = events
            .into_iter()
            .map(|e| NewEvent {
                name: e.name,
                data: e.data,
                immediate: e.immediate,
            })
            .collect();
        Box::pin(async move { self.node.publish_events(&id, events).await.map_err(map) })
    }

    fn running(&self) -> Vec<String> {
        self.node.campaign_ids()
    }

    fn message(
        &self,
        id: &str,
        user: &str,
        name: &str,
        data: Box<RawValue>,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        let (id, user, name) = (id.to_owned(), user.to_owned(), name.to_owned());
        Box::pin(async move {
            self.node
                .send_to_user(&id, &user, &name, data)
                .await
                .map_err(map)
        })
    }
}

/// Notifications reach a user's live sessions on every node through the engine
/// ([`Node::notify_user`]: the bus carries them, at most once; the inbox keeps them).
impl services::notification::RealtimeSink for EngineBroadcaster {
    fn push(
        &self,
        user: &str,
        notification: Box<RawValue>,
    ) -> services::campaign::BoxFuture<'_, Result<(), String>> {
        let user = user.to_owned();
        Box::pin(async move {
            self.node
                .notify_user(&user, notification)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
