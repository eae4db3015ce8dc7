//! Campaign records and the rules their fields follow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServiceError;

/// Lowest and highest accepted `metadata.scheduling.frequency` (Hz), and the default.
pub const MIN_FREQUENCY_HZ: f64 = 0.1;
pub const MAX_FREQUENCY_HZ: f64 = 100.0;
pub const DEFAULT_FREQUENCY_HZ: f64 = 1.0;
/// Longest accepted name and slug.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SLUG_LEN: usize = 64;
/// Longest `tag` or `q` of a list.
pub const MAX_FILTER_LEN: usize = 100;

/// The top-level keys of `common.Metadata`.
const METADATA_KEYS: &[&str] = &[
    "scheduling",
    "features",
    "custom_rules",
    "audit",
    "tags",
    "service_specific",
    "knowledge_graph",
];

/// Where a campaign names its Babel market, and that field's name in errors.
pub(crate) const MARKET_POINTER: &str = "/service_specific/babel/market";
pub(crate) const MARKET_FIELD: &str = "metadata.service_specific.babel.market";

/// The market code `metadata` names, if any.
pub(crate) fn market_of(metadata: &Value) -> Option<&str> {
    metadata.pointer(MARKET_POINTER).and_then(Value::as_str)
}

/// Lifecycle of a campaign: only `active` campaigns broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Active,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "active" => Some(Self::Active),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// A stored campaign.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Campaign {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: Status,
    /// `common.Metadata` as JSON; `scheduling.frequency` drives the broadcast rate.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The campaign's state, sent to every client with each tick.
    #[schema(value_type = Object)]
    pub state: Value,
    /// When the campaign is scheduled to start and end (RFC 3339), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

impl Campaign {
    /// The broadcast frequency the metadata asks for.
    pub fn frequency_hz(&self) -> f64 {
        frequency_of(&self.metadata).unwrap_or(DEFAULT_FREQUENCY_HZ)
    }

    /// Whether tick frames carry the cluster-wide connection count (`metadata.features`
    /// contains `"presence"`).
    pub fn presence(&self) -> bool {
        self.has_feature("presence")
    }

    /// Whether every session gets delta state frames (`metadata.features` has `"delta"`).
    pub fn delta(&self) -> bool {
        self.has_feature("delta")
    }

    fn has_feature(&self, name: &str) -> bool {
        self.metadata
            .get("features")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|v| v == name))
    }

    /// The Babel market the campaign sells in (`metadata.service_specific.babel.market`),
    /// which prices for it come from.
    pub fn market(&self) -> Option<&str> {
        market_of(&self.metadata)
    }

    /// Whether clients may publish events (`metadata.custom_rules.client_events: true`).
    pub fn client_events(&self) -> bool {
        self.metadata
            .pointer("/custom_rules/client_events")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Which campaigns a list returns; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct CampaignFilter {
    pub status: Option<Status>,
    /// Campaigns whose `metadata.tags` holds this tag.
    pub tag: Option<String>,
    /// A substring of the name or slug (case-insensitive).
    pub query: Option<String>,
}

/// Body of a create call.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// 1–200 characters once leading and trailing white space is trimmed, no control
    /// characters.
    pub name: String,
    /// 1–64 characters of `[a-z0-9-]`, not starting with `-`; derived from the name when
    /// absent.
    #[serde(default)]
    pub slug: Option<String>,
    /// `active` when absent.
    #[serde(default)]
    pub status: Option<Status>,
    /// `common.Metadata`: an object with only the keys `scheduling`, `features`,
    /// `custom_rules`, `audit`, `tags`, `service_specific`, `knowledge_graph`;
    /// `scheduling.frequency` is 0.1–100 Hz (default 1); no string in it holds NUL.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The initial state (an object whose strings hold no NUL); `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub state: Option<Value>,
    /// RFC 3339 UTC.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339 UTC, after `starts_at`.
    #[serde(default)]
    pub ends_at: Option<String>,
}

/// The fields a PATCH may change (a JSON merge patch over this view).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Editable {
    pub name: String,
    pub slug: String,
    pub status: Status,
    pub metadata: Value,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
}

/// Parses a schedule and checks that it ends after it starts; returns both in ms.
pub(crate) fn validate_schedule(
    starts_at: Option<&str>,
    ends_at: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), ServiceError> {
    let start = starts_at
        .map(|s| crate::time::parse_rfc3339("starts_at", s))
        .transpose()?;
    let end = ends_at
        .map(|s| crate::time::parse_rfc3339("ends_at", s))
        .transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(ServiceError::invalid("ends_at", "must be after starts_at"));
    }
    Ok((start, end))
}

fn frequency_of(metadata: &Value) -> Option<f64> {
    metadata
        .pointer("/scheduling/frequency")
        .and_then(Value::as_f64)
}

/// A name: 1–200 characters once trimmed (it is stored trimmed), none of them control
/// characters (names are shown on one line, and PostgreSQL text cannot hold NUL).
pub(crate) fn validate_name(name: &str) -> Result<(), ServiceError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "name",
            format!("must have 1-{MAX_NAME_LEN} characters and no control characters"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_slug(slug: &str) -> Result<(), ServiceError> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "slug",
            format!("must be 1-{MAX_SLUG_LEN} characters of [a-z0-9-], not starting with '-'"),
        ))
    }
}

/// A slug derived from a name: lowercase ASCII words joined by '-'.
pub(crate) fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG_LEN {
            break;
        }
    }
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "campaign".to_owned()
    } else {
        slug
    }
}

/// Checks `metadata` against `common.Metadata`: an object with only its keys, the right
/// shapes, and a frequency within range.
pub(crate) fn validate_metadata(metadata: &Value) -> Result<(), ServiceError> {
    let Value::Object(map) = metadata else {
        return Err(ServiceError::invalid("metadata", "must be a JSON object"));
    };
    if let Some(k) = map.keys().find(|k| !METADATA_KEYS.contains(&k.as_str())) {
        return Err(ServiceError::invalid(
            &format!("metadata.{k}"),
            format!("unknown key; expected one of {}", METADATA_KEYS.join(", ")),
        ));
    }
    for key in [
        "scheduling",
        "custom_rules",
        "audit",
        "service_specific",
        "knowledge_graph",
    ] {
        if map.get(key).is_some_and(|v| !v.is_object()) {
            return Err(ServiceError::invalid(
                &format!("metadata.{key}"),
                "must be a JSON object",
            ));
        }
    }
    for key in ["features", "tags"] {
        if let Some(v) = map.get(key) {
            let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Err(ServiceError::invalid(
                    &format!("metadata.{key}"),
                    "must be an array of strings",
                ));
            }
        }
    }
    if let Some(f) = metadata.pointer("/scheduling/frequency") {
        let hz = f.as_f64().ok_or_else(|| {
            ServiceError::invalid("metadata.scheduling.frequency", "must be a number (Hz)")
        })?;
        if !(MIN_FREQUENCY_HZ..=MAX_FREQUENCY_HZ).contains(&hz) {
            return Err(ServiceError::invalid(
                "metadata.scheduling.frequency",
                format!("{hz} Hz is outside {MIN_FREQUENCY_HZ}-{MAX_FREQUENCY_HZ} Hz"),
            ));
        }
    }
    if let Some(v) = metadata.pointer(MARKET_POINTER) {
        let code = v.as_str().ok_or_else(|| {
            ServiceError::invalid(MARKET_FIELD, "must be a market code (a string)")
        })?;
        crate::babel::model::validate_market_code(MARKET_FIELD, code)?;
    }
    if let Some(v) = metadata.pointer("/custom_rules/client_events")
        && !v.is_boolean()
    {
        return Err(ServiceError::invalid(
            "metadata.custom_rules.client_events",
            "must be true or false",
        ));
    }
    crate::referral::model::Rules::from_metadata(metadata)?;
    not_too_deep("metadata", metadata)?;
    no_nul("metadata", metadata)
}

/// The state must be a JSON object (merge patches apply to objects) without NUL.
pub(crate) fn validate_state(state: &Value) -> Result<(), ServiceError> {
    if !state.is_object() {
        return Err(ServiceError::invalid("state", "must be a JSON object"));
    }
    not_too_deep("state", state)?;
    no_nul("state", state)
}

/// Refuses JSON nested deeper than [`crate::json::MAX_DEPTH`]: gRPC clients could not decode
/// the campaign (metadata) or the ticks carrying it (state).
fn not_too_deep(field: &str, v: &Value) -> Result<(), ServiceError> {
    if crate::json::depth(v) > crate::json::MAX_DEPTH {
        return Err(ServiceError::invalid(
            field,
            format!(
                "must not nest deeper than {} levels of objects and arrays",
                crate::json::MAX_DEPTH
            ),
        ));
    }
    Ok(())
}

/// PostgreSQL `jsonb` cannot hold U+0000: refuse it, in any string or key, on every backend.
fn no_nul(field: &str, v: &Value) -> Result<(), ServiceError> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if has_nul(v) {
        return Err(ServiceError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_and_metadata_nest_at_most_32_levels() {
        let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }));
        assert!(validate_state(&nested(32)).is_ok());
        assert!(validate_state(&nested(33)).is_err());
        assert!(validate_metadata(&json!({"service_specific": nested(31)})).is_ok());
        assert!(validate_metadata(&json!({"service_specific": nested(32)})).is_err());
    }

    #[test]
    fn metadata_rules() {
        assert!(validate_metadata(&json!({})).is_ok());
        assert!(validate_metadata(&json!({"scheduling": {"frequency": 5}, "tags": ["a"]})).is_ok());
        for bad in [
            json!([]),
            json!({"schedule": {}}),
            json!({"scheduling": 5}),
            json!({"scheduling": {"frequency": 0.05}}),
            json!({"scheduling": {"frequency": 101}}),
            json!({"scheduling": {"frequency": "fast"}}),
            json!({"tags": [1]}),
            json!({"custom_rules": {"client_events": "yes"}}),
            json!({"audit": {"by": "a\u{0}b"}}),
            json!({"audit": {"a\u{0}": 1}}),
            json!({"tags": ["\u{0}"]}),
        ] {
            assert!(validate_metadata(&bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn nul_is_refused_but_its_escape_as_text_is_not() {
        assert!(validate_metadata(&json!({"audit": {"note": "\\u0000"}})).is_ok());
        assert!(validate_state(&json!({"note": "\\u0000", "n": [1, {"a": null}]})).is_ok());
        assert!(validate_state(&json!({"n": [{"a": "\u{0}"}]})).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("  Spring sale  ").is_ok());
        assert!(validate_name(&format!(" {} ", "x".repeat(MAX_NAME_LEN))).is_ok());
        for bad in [
            String::new(),
            " \t ".to_owned(),
            "x".repeat(MAX_NAME_LEN + 1),
            "a\u{0}b".to_owned(),
            "a\nb".to_owned(),
        ] {
            assert!(validate_name(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Spring Sale 2026!"), "spring-sale-2026");
        assert_eq!(slugify("¡¡¡"), "campaign");
        assert!(validate_slug("spring-sale").is_ok());
        assert!(validate_slug("Spring").is_err());
        assert!(validate_slug("-x").is_err());
        assert!(validate_slug("").is_err());
        assert!(validate_slug(&"a".repeat(65)).is_err());
    }
}
