//! One client text frame through a real session: a node with the in-process broker and a
//! campaign that takes client events, a session served over in-memory channels with paused
//! time (so the tick carrying an accepted event costs no wall-clock time), the frame, then a
//! `ping` whose `pong` marks the end of the answer.
//!
//! The answer is checked against a model of the protocol (DESIGN.md §3, `docs/protocol.md`):
//! a frame that does not parse gets `bad_frame`; `ping` gets a `pong`; an `event` with an
//! invalid name or data gets `invalid_event`; any other type gets `unknown_type`; a valid
//! event gets no answer but comes back in a tick, with its data unchanged. Every frame the
//! engine sends is a JSON object with a `type`; the session ends as the client leaves.
//!
//! And the rule `check_event_data` exists for ("data every subscriber can receive"): whatever
//! it accepts is converted as the gRPC subscription converts a tick (`proto::convert::lossy`
//! then `json_to_value`), and the resulting `Update` survives protobuf encoding and decoding
//! by prost (whose decoder stops at 100 nested messages, as most protobuf decoders do).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use engine::broker::CampaignSpec;
use engine::session::{MAX_DATA_DEPTH, check_event_data, valid_event_name};
use engine::tungstenite::{Error as WsError, Message};
use engine::{Config, MemoryBroker, Node};
use futures_util::{Sink, Stream};
use prost::Message as _;
use proto::broadcast::v0 as pb;
use proto::convert;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::{SHAPE, Shape, json, mix};

/// Fragments of client frames.
pub(crate) const TOKENS: &[&[u8]] = &[
    b"{\"type\":\"event\",\"name\":\"vote\",\"data\":",
    b"{\"type\":\"ping\"}",
    b"\"type\":",
    b"\"name\":",
    b"\"data\":",
    b"\"event\"",
    b"\"ping\"",
    b"\"pong\"",
    b"\"vote\"",
    b"\"a.b:c-d_e9\"",
    b"\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
    b"\"\\u0065vent\"",
];

const CAMPAIGN: &str = "fuzz";
const USER: &str = "fuzz-user";
/// Longest (virtual) wait for a frame: far beyond a tick at the campaign's 100 Hz.
const PATIENCE: Duration = Duration::from_secs(30);

/// The client frame as the engine reads it: a copy of `engine::session`'s private `Incoming`
/// (the one part of the model that is not written from the protocol's description).
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
}

/// What the session must answer.
#[derive(Debug, PartialEq)]
enum Expected {
    /// An error frame with this code.
    Error(&'static str),
    Pong,
    /// Published: comes back in a tick.
    Event {
        name: String,
        data: Value,
    },
}

/// Runs one input; panics when a property breaks.
pub fn run(data: &[u8]) -> Shape {
    // A text frame is UTF-8 (the WebSocket layer closes with 1007 otherwise).
    let text = String::from_utf8_lossy(data);
    let expected = model(&text);
    let shape = match &expected {
        Expected::Error(code) => mix(SHAPE, code.len() as u64),
        Expected::Pong => mix(SHAPE, 100),
        Expected::Event { data, .. } => mix(mix(SHAPE, 200), json::shape(data)),
    };
    HARNESS.with(|h| h.exchange(&text, &expected));
    shape
}

/// The answer the protocol prescribes for `text`; checks accepted data against protobuf.
fn model(text: &str) -> Expected {
    let Ok(incoming) = serde_json::from_str::<Incoming<'_>>(text) else {
        return Expected::Error("bad_frame");
    };
    match incoming.kind.as_ref() {
        "ping" => Expected::Pong,
        // The harness's node checks no tokens (and its session was opened without one).
        "refresh" => match incoming.token.as_deref() {
            None | Some("") => Expected::Error("bad_frame"),
            Some(_) => Expected::Error("unsupported"),
        },
        // The harness's session is under way: an auth frame comes too late.
        "auth" => Expected::Error("unsupported"),
        "event" => {
            let name = incoming.name.unwrap_or_default();
            if !valid_event_name(&name) {
                return Expected::Error("invalid_event");
            }
            let data = match incoming.data {
                Some(raw) => match check_event_data(raw) {
                    Ok(()) => {
                        let v: Value =
                            serde_json::from_str(raw.get()).expect("check_event_data parsed it");
                        assert!(json::depth(&v) <= MAX_DATA_DEPTH);
                        every_subscriber_receives(&name, &v);
                        v
                    }
                    Err(_) => return Expected::Error("invalid_event"),
                },
                None => Value::Null,
            };
            Expected::Event {
                name: name.into_owned(),
                data,
            }
        }
        _ => Expected::Error("unknown_type"),
    }
}

/// Event data that `check_event_data` accepted, as a gRPC subscriber receives it: converted
/// as `api::grpc::broadcast` converts a tick, encoded, and decoded by prost.
fn every_subscriber_receives(name: &str, data: &Value) {
    let value = convert::json_to_value(convert::lossy(data.clone()))
        .expect("accepted event data converts to a protobuf Value");
    let back = convert::value_to_json(value.clone()).expect("and back");
    assert!(json::same(&back, data), "converted data differs: {back}");
    let update = pb::Update {
        kind: Some(pb::update::Kind::Tick(pb::Tick {
            seq: 1,
            ts: 1,
            state: None,
            events: vec![pb::Event {
                seq: 1,
                name: name.to_owned(),
                data: Some(value),
                ts: 1,
            }],
        })),
    };
    match pb::Update::decode(update.encode_to_vec().as_slice()) {
        Ok(decoded) => assert_eq!(decoded, update, "decoded update differs"),
        Err(e) => panic!(
            "a gRPC subscriber cannot decode accepted event data (depth {}): {e}",
            json::depth(data)
        ),
    }
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

/// A node and its campaign, kept across inputs.
struct Harness {
    rt: tokio::runtime::Runtime,
    node: Node,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a Tokio runtime");
        let node = rt.block_on(async {
            let config = Config {
                node_id: "fuzz".into(),
                ..Config::default()
            };
            let node = Node::new(config, Arc::new(MemoryBroker::new()));
            node.upsert_campaign(CampaignSpec {
                id: CAMPAIGN.into(),
                frequency_hz: engine::config::MAX_FREQUENCY_HZ,
                client_events: true,
                // (Without a state, settings for a campaign that does not run are ignored.)
                state: Some(RawValue::from_string("{}".to_owned()).expect("JSON")),
                presence: false,
                delta: false,
                epoch: None,
            })
            .await
            .expect("the campaign starts");
            node
        });
        Self { rt, node }
    }

    /// Sends `text` then a `ping` on a new session; checks the frames up to the `pong` (and
    /// the tick carrying an accepted event) against `expected`.
    fn exchange(&self, text: &str, expected: &Expected) {
        self.rt.block_on(async {
            let (tx, incoming) = mpsc::channel(4);
            let (out_tx, mut rx) = mpsc::channel(256);
            let ws = ChannelWs {
                incoming,
                outgoing: PollSender::new(out_tx),
            };
            let node = self.node.clone();
            let session = tokio::spawn(async move {
                node.serve_session(CAMPAIGN, USER, None, Default::default(), None, ws)
                    .await
            });
            for frame in [text, r#"{"type":"ping"}"#] {
                tx.send(Ok(Message::text(frame)))
                    .await
                    .expect("the session reads");
            }

            let pongs = if *expected == Expected::Pong { 2 } else { 1 };
            let mut seen = Answer::default();
            // (The welcome comes from the campaign task, the answers from the session's: a
            // client that speaks first may be answered before it is welcomed.)
            while !seen.welcome
                || seen.pongs < pongs
                || matches!(expected, Expected::Event { .. }) && seen.events.is_empty()
            {
                let frame = tokio::time::timeout(PATIENCE, rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no complete answer to {text:?}: {seen:?}"))
                    .expect("the session is open");
                seen.add(frame);
            }
            assert!(seen.pongs == pongs, "{} pongs for {text:?}", seen.pongs);
            match expected {
                Expected::Error(code) => assert_eq!(seen.errors, [*code], "answer to {text:?}"),
                Expected::Pong => assert!(seen.errors.is_empty(), "answer to {text:?}: {seen:?}"),
                Expected::Event { name, data } => {
                    assert!(seen.errors.is_empty(), "answer to {text:?}: {seen:?}");
                    let [event] = seen.events.as_slice() else {
                        panic!("event {name} delivered {} times", seen.events.len());
                    };
                    assert_eq!(
                        event.get("name").and_then(Value::as_str),
                        Some(name.as_str())
                    );
                    assert_eq!(event.get("user").and_then(Value::as_str), Some(USER));
                    assert_eq!(event.get("data"), Some(data), "delivered data differs");
                }
            }

            drop(tx);
            let code = match session.await {
                Ok(code) => code,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => panic!("session task: {e}"),
                },
            };
            assert_eq!(
                code,
                engine::close_code::ABNORMAL,
                "the client left without a close frame"
            );
        });
    }
}

/// The frames of one answer.
#[derive(Debug, Default)]
struct Answer {
    welcome: bool,
    pongs: usize,
    errors: Vec<String>,
    /// Events of the ticks.
    events: Vec<Value>,
}

impl Answer {
    fn add(&mut self, frame: Message) {
        let text = match frame {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => return,
            other => panic!("unexpected frame {other:?} after {self:?}"),
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the engine sent invalid JSON ({e}): {text}"));
        match v.get("type").and_then(Value::as_str) {
            Some("welcome") => self.welcome = true,
            Some("pong") => self.pongs += 1,
            Some("error") => {
                assert!(
                    v.get("message").is_some_and(Value::is_string),
                    "error frame {v}"
                );
                self.errors.push(
                    v.get("code")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            Some("tick") => {
                grpc_update(&v);
                if let Some(events) = v.get("events").and_then(Value::as_array) {
                    self.events.extend(events.iter().cloned());
                }
            }
            _ => panic!("unexpected frame {v}"),
        }
    }
}

/// A tick converted as `api::grpc::broadcast` converts it: every event's data must convert,
/// and the update must decode.
fn grpc_update(tick: &Value) {
    let tick = convert::lossy(tick.clone());
    let events = tick
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| pb::Event {
            seq: e.get("seq").and_then(Value::as_u64).unwrap_or(0),
            name: String::new(),
            data: Some(
                convert::json_to_value(e.get("data").cloned().unwrap_or(Value::Null))
                    .expect("a tick's event data converts to protobuf"),
            ),
            ts: 0,
        })
        .collect();
    let update = pb::Update {
        kind: Some(pb::update::Kind::Tick(pb::Tick {
            seq: 0,
            ts: 0,
            state: None,
            events,
        })),
    };
    assert!(
        pb::Update::decode(update.encode_to_vec().as_slice()).is_ok(),
        "a gRPC subscriber cannot decode the tick {tick}"
    );
}

/// The server side of an in-memory WebSocket.
struct ChannelWs {
    incoming: mpsc::Receiver<Result<Message, WsError>>,
    outgoing: PollSender<Message>,
}

impl Stream for ChannelWs {
    type Item = Result<Message, WsError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().incoming.poll_recv(cx)
    }
}

impl Sink<Message> for ChannelWs {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut()
            .outgoing
            .poll_reserve(cx)
            .map_err(|_| WsError::ConnectionClosed)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.get_mut()
            .outgoing
            .send_item(item)
            .map_err(|_| WsError::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().outgoing.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        run(br#"{"type":"ping"}"#);
        run(br#"{"type":"event","name":"vote","data":{"option":"a"}}"#);
        run(br#"{"type":"event","name":"no spaces"}"#);
        run(br#"{"type":"event","name":"big","data":1e400}"#);
        run(br#"{"type":"nope"}"#);
        run(b"{");
        run(br#"["event","vote",[1,2]]"#);
    }

    #[test]
    fn the_deepest_accepted_data_reaches_grpc_subscribers() {
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let arrays = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        for data in [objects(MAX_DATA_DEPTH), arrays(MAX_DATA_DEPTH)] {
            let raw = RawValue::from_string(data.clone()).expect("JSON");
            assert!(check_event_data(&raw).is_ok());
            let v: Value = serde_json::from_str(&data).expect("JSON");
            every_subscriber_receives("deep", &v);
        }
    }
}
