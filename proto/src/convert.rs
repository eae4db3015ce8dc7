//! Conversions between JSON (`serde_json`) and the protobuf types the contracts carry.
//!
//! * [`json_to_value`] / [`value_to_json`]: `serde_json::Value` ⇄ `google.protobuf.Value`.
//! * [`json_to_struct`], [`map_to_struct`] / [`struct_to_json`], [`struct_to_map`]: JSON object ⇄
//!   `google.protobuf.Struct`.
//! * [`metadata_from_json`] / [`metadata_to_json`]: the JSON object form of `common.Metadata`
//!   (`{"scheduling":{...},"features":[...],...}`) ⇄ [`Metadata`].
//!
//! # Numbers
//!
//! `google.protobuf.Value` holds every number as an `f64`.
//!
//! * JSON → protobuf: a JSON float goes to `number_value` as is. A JSON integer goes to
//!   `number_value` only when the `f64` holds it **exactly** (every integer with
//!   `|n| <= 2^53`, and larger ones that happen to be representable, such as `2^60`); any other
//!   integer is rejected with [`ConvertError::InexactInteger`] rather than silently rounded.
//! * protobuf → JSON: an `f64` with a zero fraction and `|x| < 2^53` becomes a JSON integer
//!   (so `3.0` comes back as `3`, and `-0.0` as `0`); any other finite `f64` becomes a JSON
//!   float. NaN and ±infinity have no JSON form and are rejected with
//!   [`ConvertError::NonFiniteNumber`].
//!
//! A `google.protobuf.Value` whose `kind` is unset (which the protobuf JSON mapping does not
//! allow, but which a peer can send) is read as JSON `null`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as PbValue};
use serde_json::{Map, Number, Value as JsonValue};

use crate::common::Metadata;

/// 2^53: the magnitude below which every integer is exactly representable as an `f64`.
const F64_EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;
/// 2^63 as an `f64` (the first value above `i64::MAX`).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64 as an `f64` (the first value above `u64::MAX`).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A protobuf number was NaN or infinite; JSON has no such numbers.
    #[error("number {0} is not finite and has no JSON form")]
    NonFiniteNumber(f64),
    /// A JSON integer cannot be held exactly by a protobuf number (an `f64`).
    #[error("integer {0} cannot be represented exactly as a protobuf number (f64)")]
    InexactInteger(String),
    /// A JSON object was expected (for a `Struct` or for `common.Metadata`).
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// JSON type that was found instead.
        found: &'static str,
    },
    /// A `common.Metadata` key held a value of the wrong JSON type.
    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The metadata key (for example `scheduling` or `tags[2]`).
        key: String,
        /// JSON type the key must have.
        expected: &'static str,
        /// JSON type that was found instead.
        found: &'static str,
    },
    /// A key that `common.Metadata` does not define.
    #[error("unknown metadata key `{0}`")]
    UnknownKey(String),
}

/// Name of a JSON value's type, for error messages.
fn json_type(value: &JsonValue) -> &'static str {
    match value {
        JsonValue::Null => "null",
        JsonValue::Bool(_) => "boolean",
        JsonValue::Number(_) => "number",
        JsonValue::String(_) => "string",
        JsonValue::Array(_) => "array",
        JsonValue::Object(_) => "object",
    }
}

/// Converts a JSON number to the `f64` of a protobuf `number_value`, exactly.
fn number_to_f64(n: &Number) -> Result<f64, ConvertError> {
    if let Some(i) = n.as_i64() {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let (f, back) = {
            let f = i as f64;
            (f, f as i64)
        };
        // `f` may have rounded up to 2^63, which saturates back to i64::MAX: check the range.
        if (-TWO_POW_63..TWO_POW_63).contains(&f) && back == i {
            return Ok(f);
        }
        return Err(ConvertError::InexactInteger(i.to_string()));
    }
    if let Some(u) = n.as_u64() {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let (f, back) = {
            let f = u as f64;
            (f, f as u64)
        };
        if f < TWO_POW_64 && back == u {
            return Ok(f);
        }
        return Err(ConvertError::InexactInteger(u.to_string()));
    }
    // A float (or, with serde_json's `arbitrary_precision`, a number too large for i64/u64).
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err(ConvertError::InexactInteger(n.to_string())),
    }
}

/// Converts a protobuf number to a JSON number (see the module docs for the rules).
fn f64_to_number(x: f64) -> Result<Number, ConvertError> {
    if !x.is_finite() {
        return Err(ConvertError::NonFiniteNumber(x));
    }
    if x.fract() == 0.0 && x.abs() < F64_EXACT_INT_LIMIT {
        // Exact: |x| < 2^53 and no fraction.
        #[allow(clippy::cast_possible_truncation)]
        let i = x as i64;
        return Ok(Number::from(i));
    }
    Number::from_f64(x).ok_or(ConvertError::NonFiniteNumber(x))
}

/// `value` with every integer that an `f64` cannot hold exactly replaced by the nearest `f64`:
/// what a server applies to values it stored (and accepted over JSON) before sending them as
/// protobuf numbers, so that one wide integer degrades to a rounded number instead of failing
/// the whole answer.
pub fn lossy(value: JsonValue) -> JsonValue {
    match value {
        JsonValue::Number(n) if number_to_f64(&n).is_err() => n
            .as_f64()
            .and_then(Number::from_f64)
            .map_or(JsonValue::Null, JsonValue::Number),
        JsonValue::Array(items) => JsonValue::Array(items.into_iter().map(lossy).collect()),
        JsonValue::Object(map) => {
            JsonValue::Object(map.into_iter().map(|(k, v)| (k, lossy(v))).collect())
        }
        other => other,
    }
}

/// Converts a JSON value to a `google.protobuf.Value`.
///
/// # Errors
///
/// [`ConvertError::InexactInteger`] when an integer (at any depth) does not fit exactly in an
/// `f64`.
pub fn json_to_value(value: JsonValue) -> Result<PbValue, ConvertError> {
    let kind = match value {
        JsonValue::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        JsonValue::Bool(b) => Kind::BoolValue(b),
        JsonValue::Number(n) => Kind::NumberValue(number_to_f64(&n)?),
        JsonValue::String(s) => Kind::StringValue(s),
        JsonValue::Array(items) => Kind::ListValue(ListValue {
            values: items
                .into_iter()
                .map(json_to_value)
                .collect::<Result<_, _>>()?,
        }),
        JsonValue::Object(map) => Kind::StructValue(map_to_struct(map)?),
    };
    Ok(PbValue { kind: Some(kind) })
}

/// Converts a `google.protobuf.Value` to a JSON value. An unset `kind` becomes `null`.
///
/// # Errors
///
/// [`ConvertError::NonFiniteNumber`] when a number (at any depth) is NaN or infinite.
pub fn value_to_json(value: PbValue) -> Result<JsonValue, ConvertError> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => JsonValue::Null,
        Some(Kind::BoolValue(b)) => JsonValue::Bool(b),
        Some(Kind::NumberValue(x)) => JsonValue::Number(f64_to_number(x)?),
        Some(Kind::StringValue(s)) => JsonValue::String(s),
        Some(Kind::ListValue(list)) => JsonValue::Array(
            list.values
                .into_iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => JsonValue::Object(struct_to_map(s)?),
    })
}

/// Converts a JSON object's map to a `google.protobuf.Struct`.
///
/// # Errors
///
/// As [`json_to_value`].
pub fn map_to_struct(map: Map<String, JsonValue>) -> Result<Struct, ConvertError> {
    Ok(Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| Ok((k, json_to_value(v)?)))
            .collect::<Result<_, ConvertError>>()?,
    })
}

/// Converts a JSON value that must be an object to a `google.protobuf.Struct`.
///
/// # Errors
///
/// [`ConvertError::NotAnObject`] when `value` is not an object; otherwise as [`json_to_value`].
pub fn json_to_struct(value: JsonValue) -> Result<Struct, ConvertError> {
    match value {
        JsonValue::Object(map) => map_to_struct(map),
        other => Err(ConvertError::NotAnObject {
            found: json_type(&other),
        }),
    }
}

/// Converts a `google.protobuf.Struct` to a JSON object's map.
///
/// # Errors
///
/// As [`value_to_json`].
pub fn struct_to_map(s: Struct) -> Result<Map<String, JsonValue>, ConvertError> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_to_json(v)?)))
        .collect()
}

/// Converts a `google.protobuf.Struct` to a JSON object.
///
/// # Errors
///
/// As [`value_to_json`].
pub fn struct_to_json(s: Struct) -> Result<JsonValue, ConvertError> {
    struct_to_map(s).map(JsonValue::Object)
}

/// Converts [`Metadata`] to its JSON object form, holding only the keys that are set: an
/// absent `Struct` and an empty repeated field are left out, so `Metadata::default()` becomes
/// `{}`. A present but empty `Struct` is kept as `{}`.
///
/// # Errors
///
/// [`ConvertError::NonFiniteNumber`] when a number inside a `Struct` is NaN or infinite.
pub fn metadata_to_json(metadata: Metadata) -> Result<JsonValue, ConvertError> {
    let Metadata {
        scheduling,
        features,
        custom_rules,
        audit,
        tags,
        service_specific,
        knowledge_graph,
    } = metadata;
    let mut map = Map::new();
    let mut put_struct = |key: &str, s: Option<Struct>| -> Result<(), ConvertError> {
        if let Some(s) = s {
            map.insert(key.to_owned(), struct_to_json(s)?);
        }
        Ok(())
    };
    put_struct("scheduling", scheduling)?;
    put_struct("custom_rules", custom_rules)?;
    put_struct("audit", audit)?;
    put_struct("service_specific", service_specific)?;
    put_struct("knowledge_graph", knowledge_graph)?;
    for (key, list) in [("features", features), ("tags", tags)] {
        if !list.is_empty() {
            map.insert(
                key.to_owned(),
                JsonValue::Array(list.into_iter().map(JsonValue::String).collect()),
            );
        }
    }
    Ok(JsonValue::Object(map))
}

/// Reads the `Struct` held under a metadata key.
fn metadata_struct(key: &str, value: JsonValue) -> Result<Struct, ConvertError> {
    match value {
        JsonValue::Object(map) => map_to_struct(map),
        other => Err(ConvertError::WrongType {
            key: key.to_owned(),
            expected: "object",
            found: json_type(&other),
        }),
    }
}

/// Reads the list of strings held under a metadata key.
fn metadata_strings(key: &str, value: JsonValue) -> Result<Vec<String>, ConvertError> {
    let JsonValue::Array(items) = value else {
        return Err(ConvertError::WrongType {
            key: key.to_owned(),
            expected: "array of strings",
            found: json_type(&value),
        });
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            JsonValue::String(s) => Ok(s),
            other => Err(ConvertError::WrongType {
                key: format!("{key}[{i}]"),
                expected: "string",
                found: json_type(&other),
            }),
        })
        .collect()
}

/// Converts the JSON object form of `common.Metadata` to [`Metadata`].
///
/// Missing keys stay unset. The rules match the services' metadata validation: the value must
/// be an object; `scheduling`, `custom_rules`, `audit`, `service_specific` and
/// `knowledge_graph` must be objects; `features` and `tags` must be arrays of strings; `null`
/// is not accepted for any key, and any other key is rejected.
///
/// # Errors
///
/// [`ConvertError::NotAnObject`], [`ConvertError::WrongType`], [`ConvertError::UnknownKey`],
/// or [`ConvertError::InexactInteger`] from a number inside a `Struct`.
pub fn metadata_from_json(value: JsonValue) -> Result<Metadata, ConvertError> {
    let JsonValue::Object(map) = value else {
        return Err(ConvertError::NotAnObject {
            found: json_type(&value),
        });
    };
    let mut metadata = Metadata::default();
    for (key, value) in map {
        match key.as_str() {
            "scheduling" => metadata.scheduling = Some(metadata_struct(&key, value)?),
            "features" => metadata.features = metadata_strings(&key, value)?,
            "custom_rules" => metadata.custom_rules = Some(metadata_struct(&key, value)?),
            "audit" => metadata.audit = Some(metadata_struct(&key, value)?),
            "tags" => metadata.tags = metadata_strings(&key, value)?,
            "service_specific" => {
                metadata.service_specific = Some(metadata_struct(&key, value)?);
            }
            "knowledge_graph" => metadata.knowledge_graph = Some(metadata_struct(&key, value)?),
            _ => return Err(ConvertError::UnknownKey(key)),
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn num(x: f64) -> PbValue {
        PbValue {
            kind: Some(Kind::NumberValue(x)),
        }
    }

    #[test]
    fn value_round_trip_keeps_every_json_type() -> Result<(), ConvertError> {
        let original = json!({
            "null": null,
            "t": true,
            "f": false,
            "int": 42,
            "neg": -7,
            "float": 1.5,
            "big_exact": 9_007_199_254_740_991_i64,
            "s": "héllo",
            "list": [1, "two", [3.25, null], {"deep": {"x": []}}],
            "empty_obj": {}
        });
        let pb = json_to_value(original.clone())?;
        assert_eq!(value_to_json(pb)?, original);
        Ok(())
    }

    #[test]
    fn lossy_rounds_wide_integers_instead_of_failing() -> Result<(), ConvertError> {
        let wide = json!({"n": 9_007_199_254_740_993_u64, "list": [u64::MAX], "ok": 5});
        assert!(json_to_value(wide.clone()).is_err());
        let v = value_to_json(json_to_value(lossy(wide))?)?;
        assert_eq!(v["ok"], json!(5));
        assert_eq!(v["n"].as_f64(), Some(9_007_199_254_740_992.0));
        assert!(v["list"][0].as_f64().is_some());
        Ok(())
    }

    #[test]
    fn json_numbers_become_number_values() -> Result<(), ConvertError> {
        assert_eq!(json_to_value(json!(3))?, num(3.0));
        assert_eq!(json_to_value(json!(-3))?, num(-3.0));
        assert_eq!(json_to_value(json!(0.25))?, num(0.25));
        assert_eq!(json_to_value(json!(u64::MAX / 2 + 1))?, num(TWO_POW_63));
        assert_eq!(
            json_to_value(json!(i64::MIN))?,
            num(-TWO_POW_63),
            "-2^63 is an exact f64"
        );
        Ok(())
    }

    #[test]
    fn integers_that_do_not_fit_an_f64_are_rejected() {
        for value in [
            json!(9_007_199_254_740_993_i64),
            json!(i64::MAX),
            json!(u64::MAX),
            json!({"nested": [1, 9_007_199_254_740_993_u64]}),
        ] {
            assert!(
                matches!(json_to_value(value), Err(ConvertError::InexactInteger(_))),
                "inexact integer accepted"
            );
        }
    }

    #[test]
    fn whole_floats_come_back_as_integers() -> Result<(), ConvertError> {
        assert_eq!(value_to_json(num(3.0))?, json!(3));
        assert!(value_to_json(num(3.0))?.is_i64());
        assert_eq!(value_to_json(num(-0.0))?, json!(0));
        assert_eq!(value_to_json(num(2.5))?, json!(2.5));
        // 2^53 is not below the limit: it stays a float.
        let v = value_to_json(num(F64_EXACT_INT_LIMIT))?;
        assert!(v.is_f64());
        assert_eq!(v.as_f64(), Some(F64_EXACT_INT_LIMIT));
        assert_eq!(value_to_json(num(1e300))?.as_f64(), Some(1e300));
        Ok(())
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                value_to_json(num(x)),
                Err(ConvertError::NonFiniteNumber(_))
            ));
        }
        let s = Struct {
            fields: [("x".to_owned(), num(f64::NAN))].into_iter().collect(),
        };
        assert!(matches!(
            struct_to_json(s),
            Err(ConvertError::NonFiniteNumber(_))
        ));
    }

    #[test]
    fn unset_kind_reads_as_null() -> Result<(), ConvertError> {
        assert_eq!(value_to_json(PbValue { kind: None })?, JsonValue::Null);
        Ok(())
    }

    #[test]
    fn struct_round_trip_and_non_objects() -> Result<(), ConvertError> {
        let original = json!({"score": 0, "teams": {"a": 1, "b": 2.5}, "live": true});
        let s = json_to_struct(original.clone())?;
        assert_eq!(s.fields.len(), 3);
        assert_eq!(struct_to_json(s)?, original);
        assert_eq!(
            json_to_struct(json!([1, 2])),
            Err(ConvertError::NotAnObject { found: "array" })
        );
        assert_eq!(
            json_to_struct(JsonValue::Null),
            Err(ConvertError::NotAnObject { found: "null" })
        );
        Ok(())
    }

    #[test]
    fn metadata_round_trip() -> Result<(), ConvertError> {
        let original = json!({
            "scheduling": {"frequency": 5, "start": "2025-01-01T00:00:00Z"},
            "features": ["referral", "notification"],
            "custom_rules": {"client_events": true, "max_referrals": 10},
            "audit": {"created_by": "u1"},
            "tags": ["sale"],
            "service_specific": {"content": {"editor_mode": "richtext"}},
            "knowledge_graph": {"nodes": ["a"], "weight": 0.5}
        });
        let metadata = metadata_from_json(original.clone())?;
        assert_eq!(metadata.features, ["referral", "notification"]);
        assert_eq!(metadata.tags, ["sale"]);
        assert!(metadata.scheduling.is_some());
        assert!(metadata.knowledge_graph.is_some());
        assert_eq!(metadata_to_json(metadata)?, original);
        Ok(())
    }

    #[test]
    fn metadata_json_holds_only_the_keys_set() -> Result<(), ConvertError> {
        assert_eq!(metadata_to_json(Metadata::default())?, json!({}));
        let partial = json!({"scheduling": {"frequency": 2}});
        let metadata = metadata_from_json(partial.clone())?;
        assert!(metadata.features.is_empty());
        assert!(metadata.audit.is_none());
        assert_eq!(metadata_to_json(metadata)?, partial);
        // An empty list is dropped; an empty (but present) object is kept.
        let metadata = metadata_from_json(json!({"tags": [], "audit": {}}))?;
        assert_eq!(metadata_to_json(metadata)?, json!({"audit": {}}));
        Ok(())
    }

    #[test]
    fn metadata_rejects_bad_json() {
        assert_eq!(
            metadata_from_json(json!("x")),
            Err(ConvertError::NotAnObject { found: "string" })
        );
        assert_eq!(
            metadata_from_json(json!({"scheduling": [1]})),
            Err(ConvertError::WrongType {
                key: "scheduling".into(),
                expected: "object",
                found: "array",
            })
        );
        assert_eq!(
            metadata_from_json(json!({"audit": null})),
            Err(ConvertError::WrongType {
                key: "audit".into(),
                expected: "object",
                found: "null",
            })
        );
        assert_eq!(
            metadata_from_json(json!({"features": "referral"})),
            Err(ConvertError::WrongType {
                key: "features".into(),
                expected: "array of strings",
                found: "string",
            })
        );
        assert_eq!(
            metadata_from_json(json!({"tags": ["a", 2]})),
            Err(ConvertError::WrongType {
                key: "tags[1]".into(),
                expected: "string",
                found: "number",
            })
        );
        assert_eq!(
            metadata_from_json(json!({"versioning": {}})),
            Err(ConvertError::UnknownKey("versioning".into()))
        );
        assert!(matches!(
            metadata_from_json(json!({"custom_rules": {"id": u64::MAX}})),
            Err(ConvertError::InexactInteger(_))
        ));
    }

    #[test]
    fn errors_have_readable_messages() {
        let err = ConvertError::WrongType {
            key: "tags[1]".into(),
            expected: "string",
            found: "number",
        };
        assert_eq!(
            err.to_string(),
            "metadata key `tags[1]`: expected string, found number"
        );
    }
}
