//! `broadcast.v0.BroadcastService`: publish, state, frequency and direct messages through the
//! campaign service; `Subscribe` runs an ordinary engine session whose socket is an in-memory
//! pipe, and turns its frames into typed `Update`s, so a backend consumer gets exactly what a
//! browser gets (welcome, ticks with state and events, config changes, the end), with the same
//! `since` recovery and the same slow-consumer rule (a consumer that does not read loses
//! frames, it never slows the campaign).

use std::pin::Pin;

use engine::Resume;
use engine::session::{check_event_data, valid_event_name};
use engine::tokio_tungstenite::WebSocketStream;
use engine::tungstenite::Message;
use engine::tungstenite::protocol::Role;
use futures_util::{FutureExt, Stream, StreamExt};
use proto::broadcast::v0 as pb;
use proto::broadcast::v0::broadcast_service_server::{BroadcastService, BroadcastServiceServer};
use proto::convert;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use services::campaign::BatchEvent;
use services::security::Caller;
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, status};
use crate::http::campaigns::MAX_EVENT_DATA;

pub fn server(state: GrpcState) -> BroadcastServiceServer<Broadcast> {
    BroadcastServiceServer::new(Broadcast(state))
}

pub struct Broadcast(GrpcState);

/// Bytes the in-memory pipe of a subscription buffers.
const PIPE_BYTES: usize = 64 * 1024;
/// Updates buffered for a subscriber before the pipe (and then the session's queue) fills.
const UPDATES: usize = 64;

fn data(v: Option<prost_types::Value>) -> Result<Box<RawValue>, Status> {
    let json = match v {
        Some(v) => convert::value_to_json(v).map_err(|e| bad_json("data", e))?,
        None => Value::Null,
    };
    let text = json.to_string();
    if text.len() > MAX_EVENT_DATA {
        return Err(Status::invalid_argument(format!(
            "data is larger than {MAX_EVENT_DATA} bytes"
        )));
    }
    RawValue::from_string(text).map_err(|e| Status::invalid_argument(format!("data: {e}")))
}

/// Counts and logs a part of a frame that a protobuf update cannot carry.
fn unconvertible(part: &'static str, error: &convert::ConvertError) {
    metrics::counter!("ovasabi_grpc_unconvertible_total", "part" => part).increment(1);
    tracing::warn!(part, error = %error, "left out of a gRPC update: not representable in protobuf");
}

/// A frame of the wire protocol as an `Update` (`None` for frames a subscription does not
/// carry: pongs, user messages, errors).
fn update(text: &str) -> Result<Option<pb::Update>, Status> {
    use pb::update::Kind;
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => convert::lossy(v),
        Err(e) => {
            // (Event data is checked at publish; a frame that still cannot be read is
            // skipped, not fatal.)
            metrics::counter!("ovasabi_grpc_unconvertible_total", "part" => "frame").increment(1);
            tracing::warn!(error = %e, "frame left out of a gRPC subscription: unreadable");
            return Ok(None);
        }
    };
    let u64_of = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("welcome") => Kind::Welcome(pb::Welcome {
            seq: u64_of("seq"),
            frequency_hz: v.get("frequency_hz").and_then(Value::as_f64).unwrap_or(0.0),
            epoch: v
                .get("epoch")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            recovered: v.get("recovered").and_then(Value::as_bool).unwrap_or(false),
        }),
        Some("tick") => {
            // What cannot be converted is left out of the update (counted and logged), never
            // fatal to the stream: the consumer sees the missing event's seq as a gap.
            let state = match v.get("state") {
                Some(s) => match convert::json_to_struct(s.clone()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        unconvertible("state", &e);
                        None
                    }
                },
                None => None,
            };
            let mut events = Vec::new();
            for e in v
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let data =
                    match convert::json_to_value(e.get("data").cloned().unwrap_or(Value::Null)) {
                        Ok(d) => d,
                        Err(err) => {
                            unconvertible("event", &err);
                            continue;
                        }
                    };
                events.push(pb::Event {
                    seq: e.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    name: e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    data: Some(data),
                    ts: e.get("ts").and_then(Value::as_i64).unwrap_or(0),
                });
            }
            Kind::Tick(pb::Tick {
                seq: u64_of("seq"),
                ts: v.get("ts").and_then(Value::as_i64).unwrap_or(0),
                state,
                events,
            })
        }
        Some("config") => Kind::Config(pb::Config {
            frequency_hz: v.get("frequency_hz").and_then(Value::as_f64).unwrap_or(0.0),
        }),
        _ => return Ok(None),
    };
    Ok(Some(pb::Update { kind: Some(kind) }))
}

/// The events of a `PublishStream` waiting to go out as one batch, and what went out.
#[derive(Default)]
struct Batcher {
    campaign: String,
    pending: Vec<BatchEvent>,
    count: u64,
    ranges: Vec<pb::SeqRange>,
}

impl Batcher {
    /// Checks the stream's `index`-th event and queues it (publishing what is queued first
    /// when it goes to another campaign); an invalid one publishes what is queued and ends
    /// the stream.
    async fn add(
        &mut self,
        state: &GrpcState,
        caller: &Caller,
        index: usize,
        r: pb::PublishRequest,
    ) -> Result<(), Status> {
        if r.campaign_id != self.campaign && !self.pending.is_empty() {
            self.flush(state, caller).await?;
        }
        let checked = if valid_event_name(&r.name) {
            data(r.data).and_then(|d| {
                check_event_data(&d)
                    .map(|()| d)
                    .map_err(|e| Status::invalid_argument(format!("data: {e}")))
            })
        } else {
            Err(Status::invalid_argument(format!(
                "invalid event name {:?}: use 1-64 characters [A-Za-z0-9_.:-]",
                r.name
            )))
        };
        match checked {
            Ok(data) => {
                self.campaign = r.campaign_id;
                self.pending.push(BatchEvent {
                    name: r.name,
                    data,
                    immediate: r.immediate,
                });
                Ok(())
            }
            Err(e) => {
                self.flush(state, caller).await?;
                Err(Status::invalid_argument(format!(
                    "event {index}: {}; the {} events before it are published, none after it",
                    e.message(),
                    self.count
                )))
            }
        }
    }

    /// Publishes what is queued as one batch.
    async fn flush(&mut self, state: &GrpcState, caller: &Caller) -> Result<(), Status> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let seqs = state
            .services
            .campaigns
            .publish_batch(caller, &self.campaign, events)
            .await
            .map_err(|e| {
                let s = status(e);
                Status::new(
                    s.code(),
                    format!(
                        "{}; the {} events before this batch are published",
                        s.message(),
                        self.count
                    ),
                )
            })?;
        self.count += n;
        self.ranges.push(pb::SeqRange {
            campaign_id: self.campaign.clone(),
            first_seq: *seqs.start(),
            last_seq: *seqs.end(),
        });
        Ok(())
    }

    /// The stream broke: what has arrived is published, and the client hears why it ended.
    async fn ended(&mut self, state: &GrpcState, caller: &Caller, e: Status) -> Status {
        match self.flush(state, caller).await {
            Ok(()) => Status::new(
                e.code(),
                format!(
                    "{}; the {} events received are published",
                    e.message(),
                    self.count
                ),
            ),
            Err(flush) => flush,
        }
    }
}

type Updates = Pin<Box<dyn Stream<Item = Result<pb::Update, Status>> + Send>>;

#[tonic::async_trait]
impl BroadcastService for Broadcast {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let seq = self
            .0
            .services
            .campaigns
            .publish(&caller, &r.campaign_id, &r.name, data(r.data)?, r.immediate)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PublishResponse { seq }))
    }

    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishStreamResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let mut stream = req.into_inner();
        let mut batcher = Batcher::default();
        let mut index = 0usize;
        // The first event is awaited; those that have arrived with it join its batch.
        while let Some(first) = stream.next().await {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                let r = match message {
                    Ok(r) => r,
                    Err(e) => return Err(batcher.ended(&self.0, &caller, e).await),
                };
                batcher.add(&self.0, &caller, index, r).await?;
                index += 1;
                if batcher.pending.len() < engine::MAX_BATCH_EVENTS {
                    next = stream.next().now_or_never().flatten();
                }
            }
            batcher.flush(&self.0, &caller).await?;
        }
        Ok(Response::new(pb::PublishStreamResponse {
            count: batcher.count,
            ranges: batcher.ranges,
        }))
    }

    async fn set_state(
        &self,
        req: Request<pb::SetStateRequest>,
    ) -> Result<Response<pb::SetStateResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let state = match r.state {
            Some(s) => convert::struct_to_json(s).map_err(|e| bad_json("state", e))?,
            None => json!({}),
        };
        let after = self
            .0
            .services
            .campaigns
            .change_state(&caller, &r.campaign_id, &state, !r.merge)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetStateResponse {
            state: Some(
                convert::json_to_struct(convert::lossy(after)).map_err(super::internal_json)?,
            ),
        }))
    }

    async fn set_frequency(
        &self,
        req: Request<pb::SetFrequencyRequest>,
    ) -> Result<Response<pb::SetFrequencyResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        if !r.frequency_hz.is_finite() {
            return Err(Status::invalid_argument("frequency_hz must be a number"));
        }
        let patch = json!({"metadata": {"scheduling": {"frequency": r.frequency_hz}}});
        let c = self
            .0
            .services
            .campaigns
            .update(&caller, &r.campaign_id, &patch)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetFrequencyResponse {
            frequency_hz: c.frequency_hz(),
        }))
    }

    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        if r.user_id.is_empty() || r.user_id.len() > 128 {
            return Err(Status::invalid_argument(
                "user_id must have 1-128 characters",
            ));
        }
        let seq = self
            .0
            .services
            .campaigns
            .message(&caller, &r.campaign_id, &r.user_id, &r.name, data(r.data)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SendMessageResponse { seq }))
    }

    type SubscribeStream = Updates;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (caller, principal) = super::authenticate(&self.0, &req)?;
        let services = &self.0.services;
        services
            .policies
            .require(&caller, "broadcast", "subscribe")
            .map_err(status)?;
        let r = req.into_inner();
        let c = services
            .campaigns
            .live(&r.campaign_id)
            .await
            .map_err(status)?;
        let node = self.0.node.clone();
        if !node.has_campaign(&c.id) {
            return Err(Status::failed_precondition(format!(
                "campaign {:?} is not running on this node",
                c.id
            )));
        }
        let user = format!("grpc:{}", caller.actor());
        if r.epoch.is_some() && r.since.is_none() {
            return Err(Status::invalid_argument(
                "epoch is only meaningful with since",
            ));
        }
        if r.epoch
            .as_ref()
            .is_some_and(|e| e.is_empty() || e.len() > 64)
        {
            return Err(Status::invalid_argument("epoch must have 1-64 characters"));
        }
        let resume = r.since.map(|since| Resume {
            since,
            epoch: r.epoch.clone(),
        });
        let (server_io, client_io) = tokio::io::duplex(PIPE_BYTES);
        let id = c.id.clone();
        node.spawn_tracked({
            let node = node.clone();
            async move {
                let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
                // Updates carry whole states: no delta frames, whatever the campaign says.
                let encoding = engine::Encoding {
                    compress: false,
                    delta: Some(false),
                };
                node.serve_session(&id, &user, principal, encoding, resume, Box::new(ws))
                    .await;
            }
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Update, Status>>(UPDATES);
        tokio::spawn(async move {
            let mut ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
            loop {
                // A consumer that went away ends the session even when nothing is sent.
                let msg = tokio::select! {
                    () = tx.closed() => break,
                    msg = ws.next() => match msg {
                        Some(m) => m,
                        None => break,
                    },
                };
                let out = match msg {
                    Ok(Message::Text(t)) => match update(t.as_str()) {
                        Ok(Some(u)) => Ok(u),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    },
                    // The caller's token was revoked: it must sign in again.
                    Ok(Message::Close(Some(c)))
                        if u16::from(c.code) == engine::close_code::UNAUTHENTICATED =>
                    {
                        Err(Status::unauthenticated(
                            "the token was revoked: refresh it or sign in again",
                        ))
                    }
                    Ok(Message::Close(_)) => Ok(pb::Update {
                        kind: Some(pb::update::Kind::End(pb::End {})),
                    }),
                    Ok(_) => continue,
                    Err(e) => Err(Status::internal(format!("subscription failed: {e}"))),
                };
                let last = !matches!(
                    &out,
                    Ok(pb::Update {
                        kind: Some(
                            pb::update::Kind::Tick(_)
                                | pb::update::Kind::Welcome(_)
                                | pb::update::Kind::Config(_)
                        )
                    })
                );
                if tx.send(out).await.is_err() || last {
                    break;
                }
            }
            // Dropping the client end closes the pipe: the session ends on its side.
        });
        let updates =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|u| (u, rx)) },
            );
        Ok(Response::new(Box::pin(updates)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_a_protobuf_update_cannot_hold_is_left_out_not_fatal() {
        // 1e400 cannot be read as a JSON number: the frame is skipped (counted), the
        // stream goes on.
        let tick = r#"{"type":"tick","campaign":"c","seq":2,"ts":1,"events":[{"seq":2,"name":"e","data":1e400,"ts":1}]}"#;
        assert!(matches!(update(tick), Ok(None)));
        let fine = r#"{"type":"tick","campaign":"c","seq":3,"ts":1,"events":[{"seq":3,"name":"e","data":{"n":18446744073709551616},"ts":1}]}"#;
        let Ok(Some(pb::Update {
            kind: Some(pb::update::Kind::Tick(t)),
        })) = update(fine)
        else {
            panic!("a tick with a wide integer is converted (rounded)");
        };
        assert_eq!(t.events.len(), 1);
    }
}
