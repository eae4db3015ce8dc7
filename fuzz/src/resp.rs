//! The shard subscriber's RESP2 reader (`engine::broker::shard`, reached through the engine's
//! `fuzzing` feature). The reader keeps one buffer per connection and calls `parse` on it after
//! every read, so what matters is how `parse` treats incomplete input.
//!
//! Properties, for any bytes `b` (`parse(b) = Some((v, n))` when `b` starts with a value):
//! * no panic, no unbounded recursion (arrays nest at most `RESP_MAX_NESTING` deep);
//!   `0 < n <= b.len()`;
//! * prefixes: `parse(&b[..k])` is `Ok(None)` for every `k < n` (never an error, never another
//!   value) and `Some((v, n))` for `k >= n`; when `b` is incomplete all its prefixes are too;
//!   when it is an error no prefix yields a value;
//! * the bytes after a value do not change it;
//! * re-encoding `v` gives at most `n` bytes that parse back to `v`;
//! * [`Push::of`] reads `v` as the pub/sub loop expects (a `message`/`smessage` with a bulk
//!   payload, a `subscribe`/`ssubscribe` confirmation, an error, or something else);
//! * reading `b` in arbitrary chunks, as the connection does, yields the same values (and
//!   the same error) as reading it at once.

use engine::fuzzing::{Push, RESP_MAX_NESTING, Resp, resp_parse as parse};

use crate::{SHAPE, Shape, mix, runner::Rng};

/// RESP fragments: what a subscriber receives, and the edges of lengths and numbers.
pub(crate) const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"*3\r\n",
    b"*1\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"*9223372036854775807\r\n",
    b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\n",
    b"$536870912\r\n",
    b"$536870913\r\n",
    b"$9223372036854775807\r\n",
    b"$-9223372036854775808\r\n",
    b":-9223372036854775808\r\n",
    b":9223372036854775808\r\n",
    b":+1\r\n",
    b"+OK\r\n",
    b"-ERR unknown command\r\n",
    b"$7\r\nmessage\r\n",
    b"$8\r\nsmessage\r\n",
    b"$9\r\nsubscribe\r\n",
    b"$10\r\nssubscribe\r\n",
    b"$12\r\nsunsubscribe\r\n",
    b"*3\r\n$8\r\nsmessage\r\n$5\r\nc:{x}\r\n",
    b"\xff\xfe",
];

/// Runs one input; panics when a property breaks.
pub fn run(data: &[u8]) -> Shape {
    let whole = parse(data);
    let mut rng = Rng::new(hash(data));
    for k in prefixes(data.len(), &whole, &mut rng) {
        let part = parse(&data[..k]);
        match &whole {
            Ok(Some((v, n))) if k >= *n => assert_eq!(
                part,
                Ok(Some((v.clone(), *n))),
                "the {k}-byte prefix reads differently from the whole"
            ),
            Ok(_) => assert_eq!(part, Ok(None), "the {k}-byte prefix is not just incomplete"),
            Err(_) => assert!(
                !matches!(part, Ok(Some(_))),
                "the {k}-byte prefix yields a value, the whole an error"
            ),
        }
    }
    let shape = match &whole {
        Ok(Some((v, n))) => {
            let n = *n;
            assert!(
                n > 0 && n <= data.len(),
                "consumed {n} of {} bytes",
                data.len()
            );
            let mut longer = data[..n].to_vec();
            longer.extend_from_slice(data);
            assert_eq!(
                parse(&longer),
                Ok(Some((v.clone(), n))),
                "what follows a value changed it"
            );
            let mut enc = Vec::new();
            encode(v, &mut enc);
            assert!(
                enc.len() <= n,
                "re-encoded in {} bytes, read from {n}",
                enc.len()
            );
            assert_eq!(
                parse(&enc),
                Ok(Some((v.clone(), enc.len()))),
                "re-encoded value reads differently"
            );
            assert!(nesting(v) <= RESP_MAX_NESTING, "nested {} deep", nesting(v));
            check_push(v);
            mix(mix(SHAPE, 1), value_shape(v, 0))
        }
        Ok(None) => mix(SHAPE, 2),
        Err(e) => mix(mix(SHAPE, 3), error_kind(e)),
    };
    chunked(data, &mut rng);
    shape
}

/// Lengths of prefixes to check: all of them for short inputs, otherwise the edges, the
/// neighbourhood of the value's end and a deterministic sample.
fn prefixes(
    len: usize,
    whole: &Result<Option<(Resp, usize)>, String>,
    rng: &mut Rng,
) -> Vec<usize> {
    if len <= 64 {
        return (0..len).collect();
    }
    let mut ks: Vec<usize> = (0..16).chain(len - 16..len).collect();
    if let Ok(Some((_, n))) = whole {
        ks.extend(n.saturating_sub(3)..(*n + 3).min(len));
    }
    ks.extend((0..32).map(|_| rng.below(len)));
    ks
}

/// Feeds `data` in random chunks to a buffer read after each one, as `ShardConn::next` does,
/// and compares with reading it at once.
fn chunked(data: &[u8], rng: &mut Rng) {
    let at_once = read_all(data, data.len());
    let mut buf = Vec::new();
    let mut values = Vec::new();
    let mut fed = 0;
    let mut error = None;
    'feed: while fed < data.len() {
        let chunk = 1 + rng.below(data.len().div_ceil(8).max(32));
        let end = (fed + chunk).min(data.len());
        buf.extend_from_slice(&data[fed..end]);
        fed = end;
        loop {
            match parse(&buf) {
                Ok(Some((v, used))) => {
                    values.push(v);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(
        (values, error),
        at_once,
        "reading in chunks differs from reading at once"
    );
}

/// Every value at the front of `data`, in order, and the error that stopped them, if any
/// (at most `limit` values).
fn read_all(mut data: &[u8], limit: usize) -> (Vec<Resp>, Option<String>) {
    let mut values = Vec::new();
    while values.len() < limit {
        match parse(data) {
            Ok(Some((v, used))) => {
                values.push(v);
                data = &data[used..];
            }
            Ok(None) => break,
            Err(e) => return (values, Some(e)),
        }
    }
    (values, None)
}

/// `v` in RESP2, canonically.
pub fn encode(v: &Resp, out: &mut Vec<u8>) {
    let line = |out: &mut Vec<u8>, kind: u8, text: &[u8]| {
        out.push(kind);
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    };
    match v {
        Resp::Simple(s) => line(out, b'+', s.as_bytes()),
        Resp::Error(s) => line(out, b'-', s.as_bytes()),
        Resp::Int(i) => line(out, b':', i.to_string().as_bytes()),
        Resp::Bulk(None) => line(out, b'$', b"-1"),
        Resp::Bulk(Some(b)) => {
            line(out, b'$', b.len().to_string().as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Resp::Array(None) => line(out, b'*', b"-1"),
        Resp::Array(Some(items)) => {
            line(out, b'*', items.len().to_string().as_bytes());
            for i in items {
                encode(i, out);
            }
        }
    }
}

/// What `Push::of` must make of `v`, from the protocol (RESP2 pub/sub replies).
fn check_push(v: &Resp) {
    let text = |r: &Resp| match r {
        Resp::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
        Resp::Simple(s) => Some(s.clone()),
        _ => None,
    };
    let expected = match v {
        Resp::Error(e) => Push::Error(e.clone()),
        Resp::Array(Some(items)) if items.len() == 3 => {
            match (text(&items[0]).as_deref(), text(&items[1]), &items[2]) {
                (Some("message" | "smessage"), Some(channel), Resp::Bulk(Some(payload))) => {
                    Push::Message {
                        channel,
                        payload: payload.clone(),
                    }
                }
                (Some("subscribe" | "ssubscribe"), Some(channel), _) => Push::Subscribed(channel),
                _ => Push::Other,
            }
        }
        _ => Push::Other,
    };
    assert_eq!(Push::of(v.clone()), expected, "pushed {v:?}");
}

/// Arrays nested in `v` (a flat array is 1).
fn nesting(v: &Resp) -> usize {
    match v {
        Resp::Array(Some(items)) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Resp::Array(None) => 1,
        _ => 0,
    }
}

fn value_shape(v: &Resp, depth: u64) -> Shape {
    let kind = match v {
        Resp::Simple(_) => 1,
        Resp::Error(_) => 2,
        Resp::Int(_) => 3,
        Resp::Bulk(None) => 4,
        Resp::Bulk(Some(b)) if b.is_empty() => 5,
        Resp::Bulk(Some(_)) => 6,
        Resp::Array(None) => 7,
        Resp::Array(Some(items)) => {
            // Depth is capped so that ever deeper nesting stops counting as new.
            let inner = items
                .iter()
                .take(4)
                .fold(SHAPE, |h, i| mix(h, value_shape(i, depth + 1)));
            return mix(mix(8, depth.min(4)), inner);
        }
    };
    mix(kind, depth.min(4))
}

fn error_kind(e: &str) -> u64 {
    const KINDS: &[&str] = &[
        "empty line",
        "not UTF-8",
        "is not a number",
        "bulk length",
        "bulk string of",
        "not followed by CRLF",
        "array length",
        "unknown RESP type",
        "nested",
    ];
    KINDS
        .iter()
        .position(|k| e.contains(k))
        .map_or(u64::MAX, |i| i as u64)
}

/// FNV-1a of `data`: a seed for the choices this target makes about one input, so that an
/// input always runs the same checks.
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(SHAPE, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_and_replies() {
        run(b"*3\r\n$8\r\nsmessage\r\n$5\r\nc:{x}\r\n$5\r\nhello\r\n");
        run(b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n+OK\r\n");
        run(b"-ERR nope\r\n$-1\r\n*-1\r\n:+7\r\n");
        run(b"$4\r\na\r\nb\r\n");
        run(b"?x\r\n");
        run(b"");
    }
}
