//! Delta state frames: the JSON merge patch (RFC 7396) that turns the state a session was sent
//! into the current one, computed once per state change for every session that has the
//! previous state.

use serde_json::{Map, Value};

/// The merge patch from `old` to `new` (both JSON texts), as JSON text; `None` when there is
/// none worth sending: a text that does not parse, a `new` that a merge patch cannot express
/// (a `null` value where the old state had something else: in a patch `null` deletes), or a
/// patch that is not smaller than `new` itself.
pub(crate) fn merge_patch(old: &str, new: &str) -> Option<String> {
    let old: Value = serde_json::from_str(old).ok()?;
    let new_value: Value = serde_json::from_str(new).ok()?;
    let patch = diff(&old, &new_value)?;
    let text = serde_json::to_string(&patch).ok()?;
    (text.len() < new.len()).then_some(text)
}

/// The patch that turns `old` into `new`, if a merge patch can say it.
fn diff(old: &Value, new: &Value) -> Option<Value> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        // A patch that is not an object replaces the whole target, except `null`, which
        // would delete it.
        return (!new.is_null()).then(|| new.clone());
    };
    let mut patch = Map::new();
    for (key, before) in old {
        match new.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(after) if after == before => {}
            Some(after) => {
                let part = match (before, after) {
                    (Value::Object(_), Value::Object(_)) => diff(before, after)?,
                    // `null` in a patch deletes the member: a member that becomes null
                    // cannot be expressed (only its object's replacement could).
                    (_, Value::Null) => return None,
                    (_, after) => replaced(after)?,
                };
                patch.insert(key.clone(), part);
            }
        }
    }
    for (key, after) in new {
        if !old.contains_key(key) {
            patch.insert(key.clone(), replaced(after)?);
        }
    }
    Some(Value::Object(patch))
}

/// `value` as a patch member that replaces the target's: applying a patch merges objects
/// recursively and deletes `null` members, so an object holding `null`s cannot be set this way.
fn replaced(value: &Value) -> Option<Value> {
    fn has_null_member(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|v| v.is_null() || has_null_member(v)),
            _ => false,
        }
    }
    match value {
        Value::Null => None,
        v if has_null_member(v) => None,
        v => Some(v.clone()),
    }
}

/// Applies a merge patch (RFC 7396 §2), as a client does.
#[cfg(test)]
fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                apply(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The patch, checked: applied to `old` it gives `new`.
    fn patch(old: Value, new: Value) -> Option<Value> {
        let (o, n) = (old.to_string(), new.to_string());
        let text = merge_patch(&o, &n)?;
        let p: Value = serde_json::from_str(&text).expect("a patch is JSON");
        let mut t = old;
        apply(&mut t, &p);
        assert_eq!(t, new, "applying {p} must give the new state");
        Some(p)
    }

    #[test]
    fn one_changed_field_of_a_large_state_is_a_small_patch() {
        let mut big = serde_json::Map::new();
        for i in 0..500 {
            big.insert(
                format!("field{i}"),
                json!({"label": "x".repeat(10), "n": i}),
            );
        }
        let old = json!({"score": 1, "board": Value::Object(big.clone())});
        let new = json!({"score": 2, "board": Value::Object(big)});
        assert_eq!(patch(old, new), Some(json!({"score": 2})));
    }

    #[test]
    fn nested_changes_removals_and_additions() {
        let old =
            json!({"a": {"b": 1, "c": [1, 2], "d": "x"}, "gone": true, "s": "long text here"});
        let new =
            json!({"a": {"b": 1, "c": [1, 2, 3], "e": {"f": 1}}, "s": "long text here", "n": 0});
        assert_eq!(
            patch(old, new),
            Some(json!({"a": {"c": [1, 2, 3], "d": null, "e": {"f": 1}}, "gone": null, "n": 0}))
        );
    }

    #[test]
    fn what_a_merge_patch_cannot_say_or_would_not_save_is_none() {
        // A member that becomes null: `null` in a patch deletes it.
        assert_eq!(
            patch(
                json!({"a": 1, "pad": "p".repeat(50)}),
                json!({"a": null, "pad": "p".repeat(50)})
            ),
            None
        );
        // A new object holding a null member.
        assert_eq!(
            patch(
                json!({"pad": "p".repeat(50)}),
                json!({"o": {"x": null}, "pad": "p".repeat(50)})
            ),
            None
        );
        // Not objects: the patch would be the whole new state.
        assert_eq!(patch(json!([1, 2]), json!([1, 2, 3])), None);
        // Everything changed: not smaller.
        assert_eq!(patch(json!({"a": 1}), json!({"b": 2})), None);
        assert_eq!(merge_patch("{not json", "{}"), None);
    }

    #[test]
    fn an_unchanged_state_is_an_empty_patch() {
        let s = json!({"a": {"b": [1, {"c": null}]}, "pad": "p".repeat(20)});
        assert_eq!(patch(s.clone(), s), Some(json!({})));
    }
}
