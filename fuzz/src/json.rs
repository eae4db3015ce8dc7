//! Helpers shared by the JSON targets: comparison with numbers as `f64`, depth, shapes, and
//! the JSON tokens the mutator splices in.

use serde_json::Value;

use crate::{SHAPE, Shape, mix};

/// JSON fragments that reach the corners: numbers beyond `f64` and beyond `i64`/`u64`, the
/// first integers an `f64` cannot hold, escapes (NUL, lone surrogates), structure.
pub(crate) const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"-0.0",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"1.7976931348623157e308",
    b"5e-324",
    b"9007199254740992",
    b"9007199254740993",
    b"-9007199254740993",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1.5",
    b"\"\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\\"\"",
    b"\"\\\\\"",
    b"\"\xc3\xa9\"",
    b"{}",
    b"[]",
    b"{\"a\":",
    b"{\"a\":null}",
    b"{\"a\":{\"b\":null}}",
    b"[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]",
    b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
    b"}}}}}}}}",
    b",",
    b":",
    b" ",
];

/// Whether `a` and `b` are the same JSON, numbers compared as `f64` (so `3`, `3.0` and `-0`
/// vs `0` are equal: the protobuf side holds every number as an `f64`).
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// Nesting of arrays and objects, counted as the engine counts it (a scalar is 0).
pub(crate) fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The shape of a value: which types occur, at which depth (capped), which kinds of numbers.
pub(crate) fn shape(v: &Value) -> Shape {
    fn walk(v: &Value, d: u64, acc: &mut u64) {
        let bit = |acc: &mut u64, b: u32| *acc |= 1 << b;
        match v {
            Value::Null => bit(acc, 0),
            Value::Bool(_) => bit(acc, 1),
            Value::Number(n) => {
                if n.is_f64() {
                    bit(acc, 2);
                } else if n.is_i64() {
                    bit(acc, 3);
                } else {
                    bit(acc, 4);
                }
                if let Some(f) = n.as_f64()
                    && f.abs() >= 9_007_199_254_740_992.0
                {
                    bit(acc, 5);
                }
            }
            Value::String(s) => {
                bit(acc, 6);
                if s.chars().any(char::is_control) {
                    bit(acc, 7);
                }
                if !s.is_ascii() {
                    bit(acc, 8);
                }
            }
            Value::Array(items) => {
                bit(acc, 9);
                if items.is_empty() {
                    bit(acc, 10);
                }
                for i in items {
                    walk(i, d + 1, acc);
                }
            }
            Value::Object(map) => {
                bit(acc, 11);
                if map.is_empty() {
                    bit(acc, 12);
                }
                for i in map.values() {
                    walk(i, d + 1, acc);
                }
            }
        }
        // Depth in buckets of 8.
        *acc |= 1 << (16 + (d / 8).min(16));
    }
    let mut acc = 0;
    walk(v, 0, &mut acc);
    mix(SHAPE, acc)
}

/// `text` as JSON, when it is.
pub(crate) fn parse(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_compare_as_f64() {
        assert!(same(&json!({"a": [3, -0.0]}), &json!({"a": [3.0, 0]})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same(&json!([1, 2]), &json!([2, 1])));
        assert_eq!(depth(&json!([{"a": []}])), 3);
    }
}
