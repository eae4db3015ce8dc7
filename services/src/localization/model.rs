//! Translation records, requests and the rules their fields follow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServiceError;

/// Longest namespace, key and value (characters).
pub const MAX_NAMESPACE_LEN: usize = 64;
pub const MAX_KEY_LEN: usize = 128;
pub const MAX_VALUE_LEN: usize = 10_000;
/// Most messages in one import.
pub const MAX_IMPORT: usize = 5_000;
/// Most arguments of a lookup, and the longest string argument.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 1_000;

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub namespace: String,
    pub key: String,
    /// BCP 47, canonical (`fr-CA`).
    pub locale: String,
    /// The Fluent pattern (what follows `key =` in a `.ftl` file).
    pub value: String,
    /// Who wrote the current value.
    pub updated_by: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `PUT .../messages/{namespace}/{locale}/{key}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageText {
    /// A Fluent pattern, 1–10,000 characters: text, `{ $variable }`, selectors
    /// (`{ $count -> [one] One item *[other] { $count } items }`), references to other
    /// messages of the namespace (`{ brand }`). No attributes.
    pub value: String,
}

/// Body of a bulk import: the messages of one namespace in one locale.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Import {
    /// Key → Fluent pattern, at most 5,000; every one is checked before anything is written.
    pub messages: BTreeMap<String, String>,
    /// Also delete the messages of this namespace and locale that `messages` does not name
    /// (default: keep them).
    #[serde(default)]
    pub replace: bool,
}

/// What an import changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub namespace: String,
    pub locale: String,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub deleted: u32,
}

/// Every message of one namespace in one locale: the same shape an import takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Export {
    pub namespace: String,
    pub locale: String,
    pub messages: BTreeMap<String, String>,
}

/// How complete one locale of a namespace is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocaleSummary {
    pub locale: String,
    pub messages: u64,
    /// Keys of the namespace (in any locale) that this locale lacks.
    pub missing: u64,
}

/// A namespace: its keys and its locales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceSummary {
    pub namespace: String,
    /// Where every lookup's chain ends.
    pub default_locale: String,
    /// Distinct keys, over every locale.
    pub keys: u64,
    pub locales: Vec<LocaleSummary>,
}

/// A key that a locale lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingKey {
    pub key: String,
    /// The locales that have it.
    pub locales: Vec<String>,
}

/// A lookup: the message `key` of `namespace` for `locale`, formatted with `args`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatRequest {
    pub namespace: String,
    pub key: String,
    /// BCP 47; the message comes from the first locale of its fallback chain that has it
    /// (`fr-CA` → `fr` → the default locale).
    pub locale: String,
    /// Variables: names to strings (at most 1,000 characters) or numbers; at most 64.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
}

/// A formatted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Formatted {
    pub namespace: String,
    pub key: String,
    /// The locale asked for, canonical.
    pub requested_locale: String,
    /// The locale the message came from.
    pub locale: String,
    /// Whether `locale` is not the one asked for.
    pub fallback: bool,
    pub text: String,
}

/// Which messages a list returns.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub namespace: String,
    pub locale: Option<String>,
    pub key_prefix: Option<String>,
}

/// A namespace: 1–64 characters of `[a-z0-9._-]`, starting with a letter or digit.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `namespace`.
pub fn validate_namespace(s: &str) -> Result<(), ServiceError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAMESPACE_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "namespace",
            format!(
                "must be 1-{MAX_NAMESPACE_LEN} characters of [a-z0-9._-], starting with a letter or digit"
            ),
        ))
    }
}

/// A key: a Fluent identifier, 1–128 characters of `[A-Za-z0-9_-]` starting with a letter
/// (so that messages can refer to each other).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_key(field: &str, s: &str) -> Result<(), ServiceError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_KEY_LEN
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!(
                "must be 1-{MAX_KEY_LEN} characters of [A-Za-z0-9_-] starting with a letter (a Fluent identifier)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_keys() {
        assert!(validate_namespace("shop.checkout_v2-x").is_ok());
        for bad in ["", "Shop", "-x", ".x", "a b", &"a".repeat(65)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key("key", "cart-items_2").is_ok());
        for bad in ["", "2x", "-term", "a.b", "a b", &"a".repeat(129)] {
            assert!(validate_key("key", bad).is_err(), "{bad:?}");
        }
    }
}
