//! Content records (posts, comments, reactions, search hits), what the API accepts, and the
//! rules their fields follow.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ServiceError;

/// Field limits (lengths in characters).
pub const MAX_TITLE_LEN: usize = 300;
pub const MAX_BODY_LEN: usize = 100_000;
pub const MAX_MICRO_BODY_LEN: usize = 500;
pub const MAX_URL_LEN: usize = 2_048;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_LEN: usize = 50;
pub const MAX_COMMENT_LEN: usize = 10_000;
pub const MAX_REACTION_KIND_LEN: usize = 32;
/// Longest search query (characters) and most words it may hold.
pub const MAX_QUERY_LEN: usize = 256;
pub const MAX_QUERY_WORDS: usize = 32;
/// Deepest offset a search page may start at.
pub const MAX_SEARCH_OFFSET: u64 = 10_000;

/// What a post is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A long post; needs a title.
    Article,
    /// A short post (body 1–500 characters); the title may be empty.
    Micro,
    /// A video: needs a title and an http(s) `url`.
    Video,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Article, Kind::Micro, Kind::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Article => "article",
            Self::Micro => "micro",
            Self::Video => "video",
        }
    }

    /// The kind named `s`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (field `kind`) naming the accepted kinds.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(
                    "kind",
                    format!("unknown kind {s:?}; expected article, micro or video"),
                )
            })
    }
}

/// A stored post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Content {
    /// UUID v7.
    pub id: String,
    pub kind: Kind,
    /// The user id of the caller who created it (`system` for the node itself).
    pub author_id: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub tags: Vec<String>,
    /// `common.Metadata` as JSON.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of a create call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContent {
    /// `article`, `micro` or `video` (checked by the service, so a bad one is an
    /// [`ServiceError::Invalid`] naming `kind`).
    #[schema(value_type = Kind)]
    pub kind: String,
    /// 1–300 characters (trimmed); may be empty for a micro-post.
    #[serde(default)]
    pub title: String,
    /// Up to 100,000 characters (a micro-post: 1–500), stored as given.
    #[serde(default)]
    pub body: String,
    /// http(s), up to 2,048 characters; required for a video.
    #[serde(default)]
    pub url: Option<String>,
    /// Up to 20 tags of 1–50 characters.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `common.Metadata`; `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// A change to a post: absent fields stay as they are. The kind and author never change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Absent: unchanged; `null`: removed (not allowed for a video); a string: replaced.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub url: Option<Option<String>>,
    /// Replaces the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// A JSON merge patch (RFC 7396) applied to the stored metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl ContentPatch {
    /// Whether the patch names no field.
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.body.is_none()
            && self.url.is_none()
            && self.tags.is_none()
            && self.metadata.is_none()
    }
}

/// A present field, `null` included (`Some(None)`); an absent one is the `default`, `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A stored comment. Replies carry the id of the comment they answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Comment {
    /// UUID v7.
    pub id: String,
    pub content_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub author_id: String,
    pub body: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of a comment call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// The comment this one answers; it must belong to the same content.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// 1–10,000 characters.
    pub body: String,
}

/// The reactions to a post: how many of each kind, and which of them are the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReactionCounts {
    pub content_id: String,
    /// Kind → number of users who reacted so (kinds nobody used are absent).
    pub counts: BTreeMap<String, u64>,
    /// The kinds the caller reacted with, sorted (empty for anonymous callers).
    pub mine: Vec<String>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub content: Content,
    /// Relevance: higher is better. Comparable within one result list only (SQLite: the
    /// negated `bm25()`; Postgres: `ts_rank()`).
    pub rank: f64,
    /// An excerpt of the title or body around the matched words, which are wrapped in
    /// `<mark>`…`</mark>`. The rest is the stored text as is, not HTML-escaped.
    pub snippet: String,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// PostgreSQL text cannot hold NUL; refuse it on every backend alike.
fn no_nul(field: &str, s: &str) -> Result<(), ServiceError> {
    if s.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// The title to store (trimmed): 1–300 characters, or empty for a micro-post.
pub(crate) fn validate_title(kind: Kind, title: &str) -> Result<String, ServiceError> {
    no_nul("title", title)?;
    let t = title.trim();
    let n = chars(t);
    if n == 0 && kind != Kind::Micro {
        return Err(ServiceError::invalid(
            "title",
            format!(
                "is required for a {} (1-{MAX_TITLE_LEN} characters)",
                kind.as_str()
            ),
        ));
    }
    if n > MAX_TITLE_LEN {
        return Err(ServiceError::invalid(
            "title",
            format!("must have at most {MAX_TITLE_LEN} characters, not {n}"),
        ));
    }
    Ok(t.to_owned())
}

/// The body: up to 100,000 characters; a micro-post's is 1–500 (not only whitespace).
pub(crate) fn validate_body(kind: Kind, body: &str) -> Result<(), ServiceError> {
    no_nul("body", body)?;
    let n = chars(body);
    let max = if kind == Kind::Micro {
        MAX_MICRO_BODY_LEN
    } else {
        MAX_BODY_LEN
    };
    if n > max {
        return Err(ServiceError::invalid(
            "body",
            format!(
                "must have at most {max} characters for a {}, not {n}",
                kind.as_str()
            ),
        ));
    }
    if kind == Kind::Micro && body.trim().is_empty() {
        return Err(ServiceError::invalid(
            "body",
            format!("is required for a micro-post (1-{MAX_MICRO_BODY_LEN} characters)"),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL of at most 2,048 characters with a host and no whitespace;
/// required for a video.
pub(crate) fn validate_url(kind: Kind, url: Option<&str>) -> Result<(), ServiceError> {
    let Some(url) = url else {
        if kind == Kind::Video {
            return Err(ServiceError::invalid("url", "is required for a video"));
        }
        return Ok(());
    };
    if chars(url) > MAX_URL_LEN {
        return Err(ServiceError::invalid(
            "url",
            format!("must have at most {MAX_URL_LEN} characters"),
        ));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err(ServiceError::invalid(
            "url",
            "must be an absolute http:// or https:// URL",
        ));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServiceError::invalid(
            "url",
            "must not contain spaces or control characters",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(ServiceError::invalid("url", "must name a host"));
    }
    Ok(())
}

/// Up to 20 tags of 1–50 characters (not only whitespace), stored as given.
pub(crate) fn validate_tags(tags: &[String]) -> Result<(), ServiceError> {
    if tags.len() > MAX_TAGS {
        return Err(ServiceError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags, not {}", tags.len()),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        let field = format!("tags[{i}]");
        no_nul(&field, tag)?;
        if tag.trim().is_empty() || chars(tag) > MAX_TAG_LEN {
            return Err(ServiceError::invalid(
                &field,
                format!("must have 1-{MAX_TAG_LEN} characters"),
            ));
        }
    }
    Ok(())
}

/// `common.Metadata`, checked like a campaign's (NUL included: jsonb cannot hold U+0000).
pub(crate) fn validate_metadata(metadata: &Value) -> Result<(), ServiceError> {
    crate::campaign::model::validate_metadata(metadata)
}

/// A comment body: 1–10,000 characters, not only whitespace.
pub(crate) fn validate_comment(body: &str) -> Result<(), ServiceError> {
    no_nul("body", body)?;
    let n = chars(body);
    if body.trim().is_empty() || n > MAX_COMMENT_LEN {
        return Err(ServiceError::invalid(
            "body",
            format!("must have 1-{MAX_COMMENT_LEN} characters"),
        ));
    }
    Ok(())
}

/// A reaction kind: 1–32 characters of `[a-z0-9_]`.
pub(crate) fn validate_reaction_kind(kind: &str) -> Result<(), ServiceError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_REACTION_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "kind",
            format!("a reaction kind has 1-{MAX_REACTION_KIND_LEN} characters of [a-z0-9_]"),
        ))
    }
}

/// The search expression for a user's query, the same text for FTS5 `MATCH` and for
/// Postgres `websearch_to_tsquery`: every word (a run of letters and digits) as a quoted
/// phrase, so that the input is only ever data — operators (`AND`, `OR`, `NOT`, `NEAR`, `-`),
/// quotes, `*`, `^`, column filters and SQL punctuation lose their meaning. All words must
/// match. `None` when the query holds no word.
///
/// # Errors
/// [`ServiceError::Invalid`] (field `query`) for an empty or over-long query.
pub(crate) fn search_expression(query: &str) -> Result<Option<String>, ServiceError> {
    if query.trim().is_empty() {
        return Err(ServiceError::invalid("query", "must not be empty"));
    }
    if chars(query) > MAX_QUERY_LEN {
        return Err(ServiceError::invalid(
            "query",
            format!("must have at most {MAX_QUERY_LEN} characters"),
        ));
    }
    let words: Vec<&str> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() > MAX_QUERY_WORDS {
        return Err(ServiceError::invalid(
            "query",
            format!("must have at most {MAX_QUERY_WORDS} words"),
        ));
    }
    if words.is_empty() {
        return Ok(None);
    }
    // A word has no '"' (it is letters and digits only), so quoting needs no escape.
    Ok(Some(
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

/// The offset a search cursor stands for.
///
/// # Errors
/// [`ServiceError::Invalid`] (field `cursor`) for anything but a number up to 10,000.
pub(crate) fn search_offset(cursor: Option<&str>) -> Result<u64, ServiceError> {
    let Some(c) = cursor else { return Ok(0) };
    match c.parse::<u64>() {
        Ok(n) if n <= MAX_SEARCH_OFFSET => Ok(n),
        _ => Err(ServiceError::invalid(
            "cursor",
            format!("must be a cursor returned by a previous search (0-{MAX_SEARCH_OFFSET})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://example.com",
            "http://example.com/a?b=c#d",
            "HTTPS://user@host:8080/x",
        ] {
            assert!(validate_url(Kind::Video, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "example.com",
            "",
        ] {
            assert!(validate_url(Kind::Article, Some(bad)).is_err(), "{bad}");
        }
        assert!(validate_url(Kind::Video, None).is_err());
        assert!(validate_url(Kind::Micro, None).is_ok());
        let long = format!("https://e.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url(Kind::Article, Some(&long)).is_err());
    }

    #[test]
    fn search_expressions_quote_every_word() {
        assert_eq!(
            search_expression("'; DROP TABLE x; --").expect("ok"),
            Some(r#""DROP" "TABLE" "x""#.to_owned())
        );
        assert_eq!(
            search_expression(r#"NEAR(a b) "c* AND ^d:e"#).expect("ok"),
            Some(r#""NEAR" "a" "b" "c" "AND" "d" "e""#.to_owned())
        );
        assert_eq!(search_expression("\"*\"").expect("ok"), None);
        assert!(search_expression("  ").is_err());
        assert!(search_expression(&"a ".repeat(40)).is_err());
    }

    #[test]
    fn reaction_kinds() {
        assert!(validate_reaction_kind("like").is_ok());
        assert!(validate_reaction_kind("thumbs_up_2").is_ok());
        for bad in ["", "Like", "a-b", "a b", &"a".repeat(33), "é"] {
            assert!(validate_reaction_kind(bad).is_err(), "{bad:?}");
        }
    }
}
