//! `services::json::merge_patch` (RFC 7396). The input is one or two JSON documents one after
//! the other (whitespace between them is enough): the target, then the patch. One document is
//! used both as a patch of `{}` and as a patch of itself.
//!
//! Properties, for every target `t` and patch `p`:
//! * the in-place implementation agrees with the RFC's definition, written here functionally;
//! * applying `p` twice gives what applying it once gave (a merge patch is idempotent);
//! * a non-object `p` replaces `t`; an object `p` gives an object whose keys are exactly those
//!   of `t` (when an object) and the non-null members of `p`, minus the null members of `p`;
//!   members of `t` that `p` does not name are unchanged, and every member `p` sets to `null`
//!   is absent, at every depth `p` reaches through objects.

use serde_json::{Map, Value};
use services::json::merge_patch;

use crate::{SHAPE, Shape, json, mix};

/// Runs one input; panics when a property breaks.
pub fn run(data: &[u8]) -> Shape {
    let mut docs = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let Some(Ok(first)) = docs.next() else {
        return mix(SHAPE, 0);
    };
    match docs.next() {
        Some(Ok(patch)) => check(&first, &patch),
        _ => mix(
            check(&Value::Object(Map::new()), &first),
            check(&first, &first),
        ),
    }
}

fn check(target: &Value, patch: &Value) -> Shape {
    let mut once = target.clone();
    merge_patch(&mut once, patch);
    let expected = rfc7396(target, patch);
    assert_eq!(once, expected, "differs from RFC 7396 for patch {patch}");

    let mut twice = once.clone();
    merge_patch(&mut twice, patch);
    assert_eq!(twice, once, "not idempotent: patch {patch}");

    members(target, patch, &once);
    // The patch's shape, and whether it met an object: the target's own shape would make
    // nearly every input new.
    mix(json::shape(patch), u64::from(target.is_object()))
}

/// The RFC's `MergePatch(Target, Patch)`, as its pseudocode reads.
fn rfc7396(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            out.remove(name);
        } else {
            let current = out.get(name).cloned().unwrap_or(Value::Null);
            out.insert(name.clone(), rfc7396(&current, value));
        }
    }
    Value::Object(out)
}

/// The structural properties of `result = merge_patch(target, patch)`, member by member.
fn members(target: &Value, patch: &Value, result: &Value) {
    let Value::Object(p) = patch else {
        assert_eq!(result, patch, "a non-object patch replaces the target");
        return;
    };
    let Value::Object(r) = result else {
        panic!("an object patch gave a non-object {result}");
    };
    let t = target.as_object();
    for (k, v) in r {
        match p.get(k) {
            None => assert_eq!(
                t.and_then(|t| t.get(k)),
                Some(v),
                "member {k:?} not in the patch changed or appeared"
            ),
            Some(Value::Null) => panic!("member {k:?} set to null by the patch is still there"),
            Some(pv) => members(t.and_then(|t| t.get(k)).unwrap_or(&Value::Null), pv, v),
        }
    }
    for (k, pv) in p {
        assert!(
            pv.is_null() || r.contains_key(k),
            "member {k:?} set by the patch is missing"
        );
    }
    if let Some(t) = t {
        for k in t.keys() {
            assert!(
                r.contains_key(k) || p.get(k).is_some_and(Value::is_null),
                "member {k:?} of the target vanished"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples_and_single_documents() {
        run(br#"{"a":"b","c":{"d":"e","f":"g"}} {"a":"z","c":{"f":null}}"#);
        run(br#"{"a":{"bb":{"ccc":null}}}"#);
        run(b"[1,2] null");
        run(b"not json");
    }
}
