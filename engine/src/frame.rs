//! Server → client frames of the wire protocol (DESIGN.md §3), encoded by hand into one
//! buffer: a tick frame is built once per campaign tick and shared by every session as a
//! refcounted [`Message`]; its deflated variant is built at most once, on first demand.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::{Compression, write::DeflateEncoder};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Milliseconds since the Unix epoch, the `ts` of every frame.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch: where numbering that must stay above every earlier
/// number starts (a new epoch on a Redis that lost its keys, a node's local numbers while it
/// is cut from the bus).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `s` as a JSON string literal, quotes included.
pub(crate) fn json_string(s: &str) -> String {
    // Serialising a `&str` cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// One event, encoded once when it reaches the campaign, reused by every tick frame and
/// history read that carries it.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    pub seq: u64,
    /// Shared by the pending batch and the history.
    pub json: std::sync::Arc<str>,
}

impl EncodedEvent {
    pub(crate) fn new(seq: u64, name: &str, data: &RawValue, ts: i64, user: Option<&str>) -> Self {
        let mut s = String::with_capacity(48 + name.len() + data.get().len());
        let _ = write!(s, "{{\"seq\":{seq},\"name\":{}", json_string(name));
        let _ = write!(s, ",\"data\":{},\"ts\":{ts}", data.get());
        if let Some(user) = user {
            let _ = write!(s, ",\"user\":{}", json_string(user));
        }
        s.push('}');
        Self {
            seq,
            json: s.into(),
        }
    }
}

/// A frame encoded once, with its compressed variant built lazily, at most once.
#[derive(Debug)]
pub(crate) struct SharedFrame {
    text: Message,
    deflated: OnceLock<Message>,
}

impl SharedFrame {
    pub(crate) fn new(json: String) -> Self {
        Self {
            text: Message::Text(Utf8Bytes::from(json)),
            deflated: OnceLock::new(),
        }
    }

    /// The frame for a session: a refcount of the shared text frame, or of the binary
    /// deflated frame when the session asked for `compress=deflate`.
    pub(crate) fn for_session(&self, compress: bool) -> Message {
        if compress {
            self.deflated
                .get_or_init(|| Message::Binary(deflate(self.text.clone().into_data().as_ref())))
                .clone()
        } else {
            self.text.clone()
        }
    }

    #[cfg(test)]
    pub(crate) fn was_deflated(&self) -> bool {
        self.deflated.get().is_some()
    }
}

/// Raw deflate (RFC 1951) of `data`, what browsers inflate with
/// `DecompressionStream("deflate-raw")`.
pub fn deflate(data: &[u8]) -> Bytes {
    let mut enc = DeflateEncoder::new(Vec::with_capacity(data.len() / 2 + 16), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// What a tick frame says about the state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TickState<'a> {
    /// Nothing: the session has the current state.
    Unchanged,
    /// `"state"`: the whole state (JSON text), and its `"state_version"` when numbered.
    Full {
        state: &'a str,
        version: Option<u64>,
    },
    /// `"state_patch"`: the merge patch from `version - 1`, and `"state_version"`.
    Patch { patch: &'a str, version: u64 },
}

impl TickState<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Unchanged => 0,
            Self::Full { state, .. } => state.len() + 40,
            Self::Patch { patch, .. } => patch.len() + 40,
        }
    }
}

/// `{"type":"tick",...}`: the state (whole, as a patch, or nothing) and the events since the
/// last tick.
pub(crate) fn tick(
    campaign_json: &str,
    seq: u64,
    ts: i64,
    state: TickState<'_>,
    events: &[EncodedEvent],
    connections: Option<u64>,
) -> String {
    let cap = 96
        + campaign_json.len()
        + state.len()
        + events.iter().map(|e| e.json.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(cap);
    let _ = write!(
        s,
        "{{\"type\":\"tick\",\"campaign\":{campaign_json},\"seq\":{seq},\"ts\":{ts}"
    );
    match state {
        TickState::Unchanged => {}
        TickState::Full { state, version } => {
            let _ = write!(s, ",\"state\":{state}");
            if let Some(v) = version {
                let _ = write!(s, ",\"state_version\":{v}");
            }
        }
        TickState::Patch { patch, version } => {
            let _ = write!(s, ",\"state_patch\":{patch},\"state_version\":{version}");
        }
    }
    if let Some(n) = connections {
        let _ = write!(s, ",\"connections\":{n}");
    }
    s.push_str(",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&e.json);
    }
    s.push_str("]}");
    s
}

/// What a `welcome` frame says.
pub(crate) struct Welcome<'a> {
    pub campaign_json: &'a str,
    pub user: &'a str,
    pub node: &'a str,
    pub seq: u64,
    pub epoch: &'a str,
    pub frequency_hz: f64,
    /// Whether the events after the client's `since` were recovered (only when it sent one).
    pub recovered: Option<bool>,
}

/// `{"type":"welcome",...}`, the first frame of every session.
pub(crate) fn welcome(w: &Welcome<'_>) -> Message {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "{{\"type\":\"welcome\",\"campaign\":{},\"user\":{},\"node\":{},\"seq\":{},\"epoch\":{},\"frequency_hz\":{}",
        w.campaign_json,
        json_string(w.user),
        json_string(w.node),
        w.seq,
        json_string(w.epoch),
        fmt_hz(w.frequency_hz)
    );
    if let Some(r) = w.recovered {
        let _ = write!(s, ",\"recovered\":{r}");
    }
    s.push('}');
    Message::Text(s.into())
}

/// `{"type":"config","frequency_hz":5.0}`, sent when the campaign's frequency changes.
pub(crate) fn config(hz: f64) -> String {
    format!("{{\"type\":\"config\",\"frequency_hz\":{}}}", fmt_hz(hz))
}

/// `{"type":"message",...}`, an immediate message addressed to one user.
pub(crate) fn message(seq: u64, name: &str, data: &RawValue, ts: i64) -> String {
    format!(
        "{{\"type\":\"message\",\"seq\":{seq},\"name\":{},\"data\":{},\"ts\":{ts}}}",
        json_string(name),
        data.get()
    )
}

/// `{"type":"notification","notification":<payload>}`, a node-wide push to every session of
/// one user: no `seq`, outside every campaign's stream. Built once per notification and shared
/// (a refcount) by the user's sessions.
pub(crate) fn notification(payload: &RawValue) -> Message {
    let payload = payload.get();
    let mut s = String::with_capacity(42 + payload.len());
    s.push_str("{\"type\":\"notification\",\"notification\":");
    s.push_str(payload);
    s.push('}');
    Message::Text(s.into())
}

/// `{"type":"error","code":...,"message":...}`.
pub fn error(code: &str, message: &str) -> Message {
    Message::Text(
        format!(
            "{{\"type\":\"error\",\"code\":{},\"message\":{}}}",
            json_string(code),
            json_string(message)
        )
        .into(),
    )
}

/// `{"type":"pong"}`, the answer to a client's `{"type":"ping"}`.
pub(crate) fn pong() -> Message {
    Message::Text(Utf8Bytes::from_static("{\"type\":\"pong\"}"))
}

/// The answer to an accepted `refresh`: the session stays open until `expires_at` (Unix ms).
pub(crate) fn refreshed(expires_at_ms: i64) -> Message {
    Message::Text(format!("{{\"type\":\"refreshed\",\"expires_at\":{expires_at_ms}}}").into())
}

/// A frequency as JSON, always with a fractional part (`1.0`, `2.5`).
fn fmt_hz(hz: f64) -> String {
    if hz.fract() == 0.0 {
        format!("{hz:.1}")
    } else {
        format!("{hz}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("valid json")
    }

    #[test]
    fn tick_is_valid_json_with_events_in_order() {
        let e1 = EncodedEvent::new(42, "score", &raw(r#"{"a":1}"#), 10, None);
        let e2 = EncodedEvent::new(43, "na\"me", &raw("[1,2]"), 11, Some("u1"));
        let s = tick(
            &json_string("c1"),
            43,
            99,
            TickState::Full {
                state: r#"{"score":3}"#,
                version: None,
            },
            &[e1, e2],
            Some(7),
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("tick is JSON");
        assert_eq!(v["type"], "tick");
        assert_eq!(v["connections"], 7);
        assert_eq!(v["campaign"], "c1");
        assert_eq!(v["seq"], 43);
        assert_eq!(v["state"]["score"], 3);
        assert_eq!(v["events"][0]["seq"], 42);
        assert_eq!(v["events"][1]["name"], "na\"me");
        assert_eq!(v["events"][1]["user"], "u1");
    }

    #[test]
    fn welcome_config_message_error_are_json() {
        let id = json_string("c");
        let mut w = Welcome {
            campaign_json: &id,
            user: "u",
            node: "n",
            seq: 5,
            epoch: "e1",
            frequency_hz: 1.0,
            recovered: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(welcome(&w).to_text().expect("text")).expect("json");
        assert_eq!(v["frequency_hz"], 1.0);
        assert_eq!(v["seq"], 5);
        assert_eq!(v["epoch"], "e1");
        assert!(v.get("recovered").is_none());
        w.recovered = Some(false);
        let v: serde_json::Value =
            serde_json::from_str(welcome(&w).to_text().expect("text")).expect("json");
        assert_eq!(v["recovered"], false);
        let c: serde_json::Value = serde_json::from_str(&config(2.5)).expect("json");
        assert_eq!(c["frequency_hz"], 2.5);
        let m: serde_json::Value =
            serde_json::from_str(&message(3, "n", &raw("null"), 1)).expect("json");
        assert_eq!(m["type"], "message");
        let n = notification(&raw(r#"{"title":"hi","n":[1]}"#));
        let n: serde_json::Value = serde_json::from_str(n.to_text().expect("text")).expect("json");
        assert_eq!(
            n,
            serde_json::json!({"type":"notification","notification":{"title":"hi","n":[1]}})
        );
        let e = error("bad", "a \"quoted\" message");
        let e: serde_json::Value = serde_json::from_str(e.to_text().expect("text")).expect("json");
        assert_eq!(e["message"], "a \"quoted\" message");
    }

    #[test]
    fn deflated_frame_inflates_to_the_text_and_is_built_once() {
        let f = SharedFrame::new(tick(
            &json_string("c"),
            1,
            2,
            TickState::Full {
                state: "{}",
                version: None,
            },
            &[],
            None,
        ));
        assert!(!f.was_deflated());
        let a = f.for_session(true);
        let b = f.for_session(true);
        assert!(f.was_deflated());
        let (Message::Binary(a), Message::Binary(b)) = (a, b) else {
            panic!("compressed frames are binary")
        };
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "one compression shared by every session"
        );
        let mut out = String::new();
        flate2::read::DeflateDecoder::new(a.as_ref())
            .read_to_string(&mut out)
            .expect("inflate");
        assert_eq!(out, f.for_session(false).to_text().expect("text"));
    }
}
