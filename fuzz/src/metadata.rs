//! `proto::convert`: JSON ⇄ `google.protobuf.Value`/`Struct` and the JSON object form of
//! `common.Metadata`. Every input is tried twice: as JSON text, and as protobuf bytes (a
//! `Value`, then a `Metadata`).
//!
//! Properties, JSON side (`v` any JSON value):
//! * `json_to_value(v)` fails exactly when `v` holds an integer that an `f64` cannot hold
//!   exactly (checked independently, in `i128`), and then only with `InexactInteger`;
//! * when it succeeds, `value_to_json` gives `v` back (numbers compared as `f64`), and a second
//!   round trip gives the very same protobuf value;
//! * `lossy(v)` equals `v` as `f64`s and always converts;
//! * `json_to_struct(v)` succeeds exactly when `v` is an object that `json_to_value` takes;
//! * `metadata_from_json(v)` succeeds only for an object of known keys with the right types,
//!   and `metadata_to_json` then gives `v` back (less empty `features`/`tags`); its errors
//!   name what is wrong (an unknown key that is in `v`, a known key of the wrong type).
//!
//! Protobuf side (`p` a decoded `Value` or `Metadata`): `value_to_json(p)` fails only for NaN
//! or an infinity somewhere in `p`; otherwise converting back gives `p` (an unset kind and
//! unknown `NullValue`s read as `null`).
//!
//! Both sides: a converted value survives protobuf encoding and prost's decoding unchanged
//! whenever its nesting is within prost's limit ([`PROST_RECURSION_LIMIT`] nested messages),
//! and decoding a deeper one fails cleanly. (The JSON side accepts deeper values than that:
//! nothing in the conversion limits depth.)

use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{Struct, Value as PbValue};
use proto::common::Metadata;
use proto::convert::{self, ConvertError};
use serde_json::Value;

use crate::{SHAPE, Shape, json, mix};

/// Messages prost decodes nested below the top-level one (its `RECURSION_LIMIT`).
pub const PROST_RECURSION_LIMIT: usize = 100;

/// Metadata's keys and tokens that reach them.
pub(crate) const TOKENS: &[&[u8]] = &[
    b"\"scheduling\":",
    b"\"features\":",
    b"\"custom_rules\":",
    b"\"audit\":",
    b"\"tags\":",
    b"\"service_specific\":",
    b"\"knowledge_graph\":",
    b"\"versioning\":",
    b"[\"a\",\"b\"]",
    b"[\"a\",2]",
    b"{\"frequency\":5}",
];

const STRUCT_KEYS: &[&str] = &[
    "scheduling",
    "custom_rules",
    "audit",
    "service_specific",
    "knowledge_graph",
];
const LIST_KEYS: &[&str] = &["features", "tags"];

/// Runs one input; panics when a property breaks.
pub fn run(data: &[u8]) -> Shape {
    let mut shape = SHAPE;
    if let Some(v) = json::parse(data) {
        shape = mix(mix(shape, json::shape(&v)), from_json(&v));
    }
    mix(shape, from_protobuf(data))
}

/// Outcome codes, mixed into the shape.
fn from_json(v: &Value) -> u64 {
    let inexact = has_inexact(v);
    let mut outcome = 0;
    match convert::json_to_value(v.clone()) {
        Ok(pb) => {
            assert!(!inexact, "an inexact integer was converted: {v}");
            let back = convert::value_to_json(pb.clone()).expect("a converted value converts back");
            assert!(json::same(&back, v), "round trip changed {v} into {back}");
            assert_eq!(
                convert::json_to_value(back),
                Ok(pb.clone()),
                "second round trip differs for {v}"
            );
            outcome |= 1 << prost_round_trip(&pb, value_levels(&pb));
        }
        Err(ConvertError::InexactInteger(n)) => {
            assert!(inexact, "{n} refused but every integer of {v} is exact");
            outcome |= 4;
        }
        Err(e) => panic!("json_to_value: unexpected error {e:?} for {v}"),
    }
    let lossy = convert::lossy(v.clone());
    assert!(
        json::same(&lossy, v),
        "lossy changed more than rounding: {v} → {lossy}"
    );
    assert!(
        convert::json_to_value(lossy).is_ok(),
        "lossy output does not convert: {v}"
    );

    match convert::json_to_struct(v.clone()) {
        Ok(s) => {
            assert!(v.is_object() && !inexact, "json_to_struct took {v}");
            let back = convert::struct_to_json(s).expect("a converted struct converts back");
            assert!(
                json::same(&back, v),
                "struct round trip changed {v} into {back}"
            );
        }
        Err(ConvertError::NotAnObject { .. }) => assert!(!v.is_object()),
        Err(ConvertError::InexactInteger(_)) => assert!(v.is_object() && inexact),
        Err(e) => panic!("json_to_struct: unexpected error {e:?} for {v}"),
    }
    outcome | (metadata_from(v, inexact) << 8)
}

fn metadata_from(v: &Value, inexact: bool) -> u64 {
    match convert::metadata_from_json(v.clone()) {
        Ok(m) => {
            assert!(!inexact, "metadata took an inexact integer: {v}");
            let Value::Object(map) = v else {
                panic!("metadata from a non-object {v}");
            };
            let mut expected = map.clone();
            for (k, value) in map {
                if STRUCT_KEYS.contains(&k.as_str()) {
                    assert!(value.is_object(), "metadata key {k} took {value}");
                } else if LIST_KEYS.contains(&k.as_str()) {
                    let items = value.as_array().expect("metadata list key holds an array");
                    assert!(items.iter().all(Value::is_string), "{k} took {value}");
                    if items.is_empty() {
                        expected.remove(k);
                    }
                } else {
                    panic!("metadata took unknown key {k}");
                }
            }
            let back = convert::metadata_to_json(m.clone()).expect("metadata converts back");
            assert!(
                json::same(&back, &Value::Object(expected)),
                "metadata round trip changed {v} into {back}"
            );
            assert_eq!(
                convert::metadata_from_json(back),
                Ok(m.clone()),
                "second metadata round trip differs for {v}"
            );
            1 | 1 << prost_round_trip(&m, metadata_levels(&m))
        }
        Err(ConvertError::NotAnObject { .. }) => {
            assert!(!v.is_object());
            8
        }
        Err(ConvertError::UnknownKey(k)) => {
            assert!(
                v.get(&k).is_some()
                    && !STRUCT_KEYS.contains(&k.as_str())
                    && !LIST_KEYS.contains(&k.as_str()),
                "unknown key {k:?} reported for {v}"
            );
            16
        }
        Err(ConvertError::WrongType { key, .. }) => {
            let base = key.split('[').next().unwrap_or_default();
            assert!(
                v.get(base).is_some() && (STRUCT_KEYS.contains(&base) || LIST_KEYS.contains(&base)),
                "wrong type reported for {key:?} of {v}"
            );
            32
        }
        Err(ConvertError::InexactInteger(_)) => {
            assert!(inexact, "metadata refused an exact {v}");
            64
        }
        Err(e) => panic!("metadata_from_json: unexpected error {e:?} for {v}"),
    }
}

fn from_protobuf(data: &[u8]) -> u64 {
    let mut outcome = 0;
    if let Ok(pb) = PbValue::decode(data) {
        outcome |= 1;
        match convert::value_to_json(pb.clone()) {
            Ok(j) => {
                let again = convert::json_to_value(j).expect("JSON of a protobuf value converts");
                assert_eq!(again, normalized(pb), "protobuf round trip differs");
            }
            Err(ConvertError::NonFiniteNumber(x)) => {
                assert!(!x.is_finite() && has_non_finite(&pb), "refused {x}");
                outcome |= 2;
            }
            Err(e) => panic!("value_to_json: unexpected error {e:?}"),
        }
    }
    if let Ok(m) = Metadata::decode(data) {
        outcome |= 4;
        match convert::metadata_to_json(m.clone()) {
            Ok(j) => {
                let again = convert::metadata_from_json(j).expect("JSON of metadata converts");
                let mut expected = m;
                for s in [
                    &mut expected.scheduling,
                    &mut expected.custom_rules,
                    &mut expected.audit,
                    &mut expected.service_specific,
                    &mut expected.knowledge_graph,
                ]
                .into_iter()
                .flatten()
                {
                    *s = normalized_struct(std::mem::take(s));
                }
                assert_eq!(again, expected, "metadata protobuf round trip differs");
            }
            Err(ConvertError::NonFiniteNumber(_)) => outcome |= 8,
            Err(e) => panic!("metadata_to_json: unexpected error {e:?}"),
        }
    }
    outcome << 16
}

/// Whether `v` holds an integer that no `f64` equals (decided in `i128`, independently of the
/// conversion's own `f64` arithmetic).
fn has_inexact(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let exact = |i: i128| (i as f64) as i128 == i;
            match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => !exact(i128::from(i)),
                (None, Some(u)) => !exact(i128::from(u)),
                (None, None) => false,
            }
        }
        Value::Array(items) => items.iter().any(has_inexact),
        Value::Object(map) => map.values().any(has_inexact),
        _ => false,
    }
}

fn has_non_finite(v: &PbValue) -> bool {
    match &v.kind {
        Some(Kind::NumberValue(x)) => !x.is_finite(),
        Some(Kind::ListValue(l)) => l.values.iter().any(has_non_finite),
        Some(Kind::StructValue(s)) => s.fields.values().any(has_non_finite),
        _ => false,
    }
}

/// `v` as JSON reads it: an unset kind and every `NullValue` are `null`.
fn normalized(v: PbValue) -> PbValue {
    let kind = match v.kind {
        None | Some(Kind::NullValue(_)) => {
            Kind::NullValue(prost_types::NullValue::NullValue.into())
        }
        Some(Kind::ListValue(mut l)) => {
            l.values = l.values.into_iter().map(normalized).collect();
            Kind::ListValue(l)
        }
        Some(Kind::StructValue(s)) => Kind::StructValue(normalized_struct(s)),
        Some(k) => k,
    };
    PbValue { kind: Some(kind) }
}

fn normalized_struct(s: Struct) -> Struct {
    Struct {
        fields: s
            .fields
            .into_iter()
            .map(|(k, v)| (k, normalized(v)))
            .collect(),
    }
}

/// Levels of nested messages `v` spans, itself included (a list costs a `ListValue`, an
/// object a `Struct` and a map entry per level).
pub fn value_levels(v: &PbValue) -> usize {
    1 + match &v.kind {
        Some(Kind::ListValue(l)) => 1 + l.values.iter().map(value_levels).max().unwrap_or(0),
        Some(Kind::StructValue(s)) => struct_levels(s),
        _ => 0,
    }
}

/// As [`value_levels`], for a `Struct`.
pub fn struct_levels(s: &Struct) -> usize {
    1 + s
        .fields
        .values()
        .map(|v| 1 + value_levels(v))
        .max()
        .unwrap_or(0)
}

fn metadata_levels(m: &Metadata) -> usize {
    1 + [
        &m.scheduling,
        &m.custom_rules,
        &m.audit,
        &m.service_specific,
        &m.knowledge_graph,
    ]
    .into_iter()
    .flatten()
    .map(struct_levels)
    .max()
    .unwrap_or(0)
}

/// Encodes `m` and decodes it with prost: the same message when its `levels` fit prost's limit
/// (the top message is not counted), a clean error otherwise. Returns a bit for the shape.
fn prost_round_trip<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
    m: &M,
    levels: usize,
) -> u32 {
    let decoded = M::decode(m.encode_to_vec().as_slice());
    if levels - 1 <= PROST_RECURSION_LIMIT {
        assert_eq!(decoded.as_ref().ok(), Some(m), "protobuf round trip failed");
        1
    } else {
        assert!(
            decoded.is_err(),
            "{levels} levels decoded: prost's limit is not what this target assumes"
        );
        2
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn seeds_of_both_kinds() {
        run(br#"{"scheduling":{"frequency":5},"tags":["a"],"features":[]}"#);
        run(br#"{"x":[1,2.5,9007199254740993,-0.0,1e300]}"#);
        run(b"\x08\x00");
        run(b"");
    }

    #[test]
    fn nesting_levels_match_prost() {
        // Objects cost three levels each (Value, Struct, map entry), lists two.
        let nested = |n: usize| (0..n).fold(json!(1), |acc, _| json!({ "a": acc }));
        for n in [1, 32, 33, 34, 40] {
            let pb = convert::json_to_value(nested(n)).expect("exact");
            assert_eq!(value_levels(&pb), 3 * n + 1);
            prost_round_trip(&pb, value_levels(&pb));
        }
    }
}
