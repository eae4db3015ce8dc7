//! The pub/sub connection of sharded mode (`redis_sharded = true`, Redis 7+): campaign channels
//! are shard channels (`SSUBSCRIBE`/`SPUBLISH`), the control channel stays a classic one.
//! redis-rs offers `SSUBSCRIBE` only on its cluster connection, so this is a small RESP2
//! connection of our own: it writes commands as RESP arrays and reads replies incrementally
//! into one buffer (reads are cancel-safe, so the pub/sub loop can `select!` on them).
//!
//! It talks to the one server of the URL: a standalone Redis 7, or a cluster whose shard
//! channels all live on that node. Following `MOVED` across a Redis Cluster is not built.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// What the server pushed on a subscribed connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// A message on a channel (`message` or `smessage`).
    Message { channel: String, payload: Vec<u8> },
    /// A subscription is confirmed (`subscribe` or `ssubscribe`).
    Subscribed(String),
    /// A reply we do not act on (unsubscribe confirmations, `+OK`).
    Other,
    /// The server refused a command.
    Error(String),
}

/// Longest line or bulk string accepted (a publication is bounded well below this).
const MAX_FRAME: usize = 512 * 1024 * 1024;

/// Deepest nesting of arrays accepted. Every reply a subscribed connection gets is one flat
/// array; the bound keeps a garbled stream (`*1\r\n` repeated) from recursing the reader off
/// its stack, which aborts the whole process.
pub const MAX_NESTING: usize = 8;

/// Parses one value from the front of `buf`: `Ok(None)` when it is not complete yet.
///
/// # Errors
/// A description of the protocol violation.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_nested(buf, 0)
}

/// [`parse`] inside `depth` arrays.
fn parse_nested(buf: &[u8], depth: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err("empty line".to_owned());
    };
    let text = std::str::from_utf8(line).map_err(|_| "a line is not UTF-8".to_owned())?;
    let after = end + 2;
    let number = || {
        text.parse::<i64>()
            .map_err(|_| format!("{text:?} is not a number"))
    };
    match kind {
        b'+' => Ok(Some((Resp::Simple(text.to_owned()), after))),
        b'-' => Ok(Some((Resp::Error(text.to_owned()), after))),
        b':' => Ok(Some((Resp::Int(number()?), after))),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| "bulk length".to_owned())?;
            if n > MAX_FRAME {
                return Err(format!("bulk string of {n} bytes"));
            }
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".to_owned());
            }
            Ok(Some((
                Resp::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )))
        }
        b'*' => {
            if depth >= MAX_NESTING {
                return Err(format!("arrays nested deeper than {MAX_NESTING}"));
            }
            let n = number()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| "array length".to_owned())?;
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = after;
            for _ in 0..n {
                match parse_nested(&buf[at..], depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        other => Err(format!("unknown RESP type byte {other:#04x}")),
    }
}

fn text(v: &Resp) -> Option<String> {
    match v {
        Resp::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
        Resp::Simple(s) => Some(s.clone()),
        _ => None,
    }
}

impl Push {
    pub fn of(v: Resp) -> Self {
        match v {
            Resp::Error(e) => Push::Error(e),
            Resp::Array(Some(items)) => {
                let kind = items.first().and_then(text);
                match (kind.as_deref(), items.as_slice()) {
                    (Some("message" | "smessage"), [_, ch, Resp::Bulk(Some(payload))]) => {
                        match text(ch) {
                            Some(channel) => Push::Message {
                                channel,
                                payload: payload.clone(),
                            },
                            None => Push::Other,
                        }
                    }
                    (Some("subscribe" | "ssubscribe"), [_, ch, _]) => {
                        text(ch).map_or(Push::Other, Push::Subscribed)
                    }
                    _ => Push::Other,
                }
            }
            _ => Push::Other,
        }
    }
}

/// A subscribed connection.
pub(crate) struct ShardConn {
    stream: TcpStream,
    buf: BytesMut,
}

/// A RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl ShardConn {
    /// Connects to the server of `info` and authenticates when it has credentials.
    ///
    /// # Errors
    /// Connection failures, a refused `AUTH`, a URL that is not plain TCP.
    pub(crate) async fn connect(info: &redis::ConnectionInfo) -> Result<Self, String> {
        let (host, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => {
                return Err(format!(
                    "sharded pub/sub needs a redis:// TCP URL, not {other}"
                ));
            }
        };
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        };
        let redis = info.redis_settings();
        if let Some(password) = redis.password() {
            let user = redis.username().unwrap_or("default");
            conn.send(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                .await?;
            if let Push::Error(e) = conn.next().await? {
                return Err(format!("AUTH refused: {e}"));
            }
        }
        Ok(conn)
    }

    /// Writes one command.
    ///
    /// # Errors
    /// The connection failed.
    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        self.stream
            .write_all(&encode(args))
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// The next push from the server. Cancel-safe: a partly read reply stays in the buffer.
    ///
    /// # Errors
    /// The connection closed or broke the protocol.
    pub(crate) async fn next(&mut self) -> Result<Push, String> {
        loop {
            if let Some((v, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(Push::of(v));
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_waits_for_more() {
        let msg = b"*3\r\n$8\r\nsmessage\r\n$5\r\nc:{x}\r\n$5\r\nhello\r\n";
        let (v, used) = parse(msg).expect("valid").expect("complete");
        assert_eq!(used, msg.len());
        assert_eq!(
            Push::of(v),
            Push::Message {
                channel: "c:{x}".into(),
                payload: b"hello".to_vec()
            }
        );
        for cut in 0..msg.len() {
            assert_eq!(
                parse(&msg[..cut]).expect("valid prefix"),
                None,
                "cut at {cut}"
            );
        }
        let sub = b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n";
        let (v, _) = parse(sub).expect("valid").expect("complete");
        assert_eq!(Push::of(v), Push::Subscribed("a".into()));
        assert_eq!(
            parse(b"+OK\r\n").expect("ok"),
            Some((Resp::Simple("OK".into()), 5))
        );
        let (e, _) = parse(b"-ERR nope\r\n").expect("valid").expect("complete");
        assert_eq!(Push::of(e), Push::Error("ERR nope".into()));
        assert_eq!(parse(b"$-1\r\n").expect("nil"), Some((Resp::Bulk(None), 5)));
        assert_eq!(
            parse(b"*-1\r\n").expect("nil"),
            Some((Resp::Array(None), 5))
        );
        // Binary payloads with CRLF inside a bulk string are fine.
        let (v, _) = parse(b"$4\r\na\r\nb\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(v, Resp::Bulk(Some(b"a\r\nb".to_vec())));
    }

    #[test]
    fn refuses_protocol_violations() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"\r\n").is_err());
    }

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        // 4 MB of `*1\r\n`: a stack overflow (process abort) before nesting was bounded.
        assert!(parse(&b"*1\r\n".repeat(1 << 20)).is_err());
        let nested = |n: usize| [b"*1\r\n".repeat(n), b":1\r\n".to_vec()].concat();
        assert!(matches!(parse(&nested(MAX_NESTING)), Ok(Some(_))));
        assert!(parse(&nested(MAX_NESTING + 1)).is_err());
        // Still incomplete, not an error, while the too-deep header has not arrived whole.
        let cut = nested(MAX_NESTING + 1);
        assert_eq!(parse(&cut[..4 * MAX_NESTING + 2]), Ok(None));
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SSUBSCRIBE", b"c:{1}"]),
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$5\r\nc:{1}\r\n".to_vec()
        );
    }
}
