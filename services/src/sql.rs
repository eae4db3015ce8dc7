//! SQL written once for both backends. Both drivers take numbered placeholders (`$1`, `$2`, in
//! any order and repeated), so most queries differ only by a cast or a clause; those are
//! marked in the one text and rendered per dialect at first use:
//!
//! | markup | Postgres | SQLite |
//! |---|---|---|
//! | `{text}` | `::text` (a JSON column read as text, a typed `NULL` test) | nothing |
//! | `{jsonb}` | `::jsonb` (a JSON parameter written to a `jsonb` column) | nothing |
//! | `{for_update}` | ` FOR UPDATE` (lock the row until the transaction ends) | nothing (SQLite writers serialise on `BEGIN IMMEDIATE`) |
//! | `{pg:TEXT}` | `TEXT` | nothing |
//! | `{lite:TEXT}` | nothing | `TEXT` |
//!
//! (`TEXT` may not contain `}`; other braces, such as `'{}'`, are left alone.) A query that
//! really differs (full-text search, JSON operators) is a pair `(sqlite, postgres)` instead.
//! [`portable_sql!`] declares a repository's queries once and builds each dialect's set on
//! first use; `on_pool!` then runs one body against either.

/// A backend's SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Where a query's text comes from: one portable text (`&str`, with the markup above) or a
/// `(sqlite, postgres)` pair.
pub trait Source {
    /// The query for `dialect`; rendered texts live as long as the process (each query is
    /// rendered once per dialect).
    fn render(&self, dialect: Dialect) -> &'static str;
}

impl Source for &'static str {
    fn render(&self, dialect: Dialect) -> &'static str {
        let text: &'static str = self;
        if !text.contains('{') {
            return text;
        }
        let rendered = render(text, dialect);
        if rendered == text {
            text
        } else {
            Box::leak(rendered.into_boxed_str())
        }
    }
}

impl Source for (&'static str, &'static str) {
    fn render(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.0,
            Dialect::Postgres => self.1,
        }
    }
}

/// `text` with its dialect markup rendered for `dialect`.
///
/// # Panics
/// On a markup that is not closed: queries are constants, and the repositories' tests render
/// every one of them on both backends.
pub fn render(text: &str, dialect: Dialect) -> String {
    let pg = dialect == Dialect::Postgres;
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let fixed = [
            ("{text}", "::text"),
            ("{jsonb}", "::jsonb"),
            ("{for_update}", " FOR UPDATE"),
        ];
        if let Some((mark, sql)) = fixed.iter().find(|(m, _)| tail.starts_with(m)) {
            if pg {
                out.push_str(sql);
            }
            rest = &tail[mark.len()..];
            continue;
        }
        let fragment = [("{pg:", true), ("{lite:", false)]
            .into_iter()
            .find(|(m, _)| tail.starts_with(m));
        match fragment {
            Some((mark, for_pg)) => {
                let body = &tail[mark.len()..];
                let end = body
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed {mark} in query: {text}"));
                if for_pg == pg {
                    out.push_str(&body[..end]);
                }
                rest = &body[end + 1..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Declares a repository's queries once: a struct of `&'static str` fields and `sqlite()` /
/// `postgres()`, each the set for that dialect, built on first use. Each field's value is a
/// portable text (see the module) or a `(sqlite, postgres)` pair.
///
/// ```ignore
/// portable_sql! {
///     /// The SQL of campaigns.
///     struct Queries {
///         get: "SELECT id, metadata{text} AS metadata FROM service_campaign_main WHERE id = $1",
///         begin: ("BEGIN IMMEDIATE", "BEGIN"),
///     }
/// }
/// on_pool!(&self.db, *Queries::sqlite(), *Queries::postgres(), |pool, sql| ...)
/// ```
macro_rules! portable_sql {
    (
        $(#[$meta:meta])*
        struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident: $sql:expr),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        struct $name {
            $($(#[$fmeta])* $field: &'static str,)*
        }

        impl $name {
            fn of(dialect: $crate::sql::Dialect) -> Self {
                use $crate::sql::Source as _;
                Self {
                    $($field: ($sql).render(dialect),)*
                }
            }

            /// The SQLite set.
            fn sqlite() -> &'static Self {
                static SET: std::sync::LazyLock<$name> =
                    std::sync::LazyLock::new(|| $name::of($crate::sql::Dialect::Sqlite));
                &SET
            }

            /// The Postgres set.
            fn postgres() -> &'static Self {
                static SET: std::sync::LazyLock<$name> =
                    std::sync::LazyLock::new(|| $name::of($crate::sql::Dialect::Postgres));
                &SET
            }
        }
    };
}
pub(crate) use portable_sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_renders_per_dialect() {
        let q = "SELECT metadata{text} AS m FROM t WHERE ($1{text} IS NULL OR id = $1) \
                 AND x = $2{jsonb}{pg: AND pg_only}{lite: AND lite_only} AND y = '{}'{for_update}";
        assert_eq!(
            render(q, Dialect::Postgres),
            "SELECT metadata::text AS m FROM t WHERE ($1::text IS NULL OR id = $1) \
             AND x = $2::jsonb AND pg_only AND y = '{}' FOR UPDATE"
        );
        assert_eq!(
            render(q, Dialect::Sqlite),
            "SELECT metadata AS m FROM t WHERE ($1 IS NULL OR id = $1) \
             AND x = $2 AND lite_only AND y = '{}'"
        );
    }

    #[test]
    fn plain_texts_and_pairs_are_taken_as_they_are() {
        let plain: &'static str = "SELECT 1";
        assert!(std::ptr::eq(plain.render(Dialect::Postgres), plain));
        let pair: (&'static str, &'static str) = ("BEGIN IMMEDIATE", "BEGIN");
        assert_eq!(pair.render(Dialect::Sqlite), "BEGIN IMMEDIATE");
        assert_eq!(pair.render(Dialect::Postgres), "BEGIN");
    }

    #[test]
    #[should_panic(expected = "unclosed")]
    fn an_unclosed_fragment_is_a_programming_error() {
        render("SELECT 1{pg: FOR UPDATE", Dialect::Postgres);
    }
}
