//! Hooks for the fuzz targets (`fuzz/`, feature `fuzzing`): the crate-private parsers whose
//! input comes from outside the process, re-exported as they are.

/// The shard subscriber's RESP2 reader: [`parse`](crate::broker::shard::parse) one value from
/// the front of a buffer, and how the pub/sub loop reads it ([`Push::of`]).
pub use crate::broker::shard::{MAX_NESTING as RESP_MAX_NESTING, Push, Resp, parse as resp_parse};
