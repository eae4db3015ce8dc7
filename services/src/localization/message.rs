//! Fluent messages: checking a message before it is stored, and formatting it with arguments.
//!
//! A stored message is the *pattern* of one Fluent message (what follows `key =`): text with
//! placeables (`{ $name }`), selectors with plural or other variants
//! (`{ $count -> [one] one item *[other] { $count } items }`), and references to other messages
//! of the same namespace and locale (`{ brand-name }`). It is parsed as
//! `key = <value>` (continuation lines indented) by `fluent-syntax`: a value that does not
//! parse, that holds attributes (`.title = ...`), or that is anything but one message is
//! refused, naming the key and the parser's error.

use std::borrow::Cow;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentError, FluentResource, FluentValue};
use fluent_syntax::ast::Entry;
use serde_json::{Map, Value};
use unic_langid::LanguageIdentifier;

use super::model::{MAX_ARG_LEN, MAX_ARGS, MAX_VALUE_LEN};
use crate::ServiceError;

/// The Fluent source of the message `key` with pattern `value`: the first line after `=`, the
/// others indented (which makes them continuation lines of the same pattern).
fn source(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 16);
    out.push_str(key);
    out.push_str(" = ");
    for (i, line) in value.lines().enumerate() {
        if i > 0 {
            out.push_str("\n    ");
        }
        out.push_str(line);
    }
    out.push('\n');
    out
}

/// Parses the message `key` = `value`; `field` names it in errors (`value`,
/// `messages.<key>`).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`: an empty or over-long value, NUL, a Fluent syntax
/// error (with its line in the value), attributes, or more than one entry.
pub fn parse(field: &str, key: &str, value: &str) -> Result<FluentResource, ServiceError> {
    let n = value.chars().count();
    if value.trim().is_empty() || n > MAX_VALUE_LEN {
        return Err(ServiceError::invalid(
            field,
            format!("must have 1-{MAX_VALUE_LEN} characters, not only white space"),
        ));
    }
    if value.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    let text = source(key, value);
    let resource = match FluentResource::try_new(text) {
        Ok(r) => r,
        Err((r, errors)) => {
            let detail = errors
                .first()
                .map(|e| {
                    let line = r.source()[..e.pos.start.min(r.source().len())]
                        .matches('\n')
                        .count()
                        + 1;
                    format!("{} (line {line} of the value)", e.kind)
                })
                .unwrap_or_else(|| "syntax error".to_owned());
            return Err(ServiceError::invalid(
                field,
                format!("message {key:?} is not valid Fluent: {detail}"),
            ));
        }
    };
    let one = {
        let mut entries = resource
            .entries()
            .filter(|e| !matches!(e, Entry::Comment(_) | Entry::GroupComment(_)));
        match (entries.next(), entries.next()) {
            (Some(Entry::Message(m)), None) => m.id.name == key && m.value.is_some(),
            _ => false,
        }
    };
    if !one {
        return Err(ServiceError::invalid(
            field,
            format!(
                "message {key:?} must be one Fluent pattern (lines that start with '[', '*' or \
                 '.' continue a selector or start an attribute, which is not supported)"
            ),
        ));
    }
    let has_attributes = resource
        .entries()
        .any(|e| matches!(e, Entry::Message(m) if !m.attributes.is_empty()));
    if has_attributes {
        return Err(ServiceError::invalid(
            field,
            format!("message {key:?}: attributes (.name = ...) are not supported"),
        ));
    }
    Ok(resource)
}

/// Every message of one namespace in one locale, ready to format.
pub struct Bundle {
    bundle: FluentBundle<FluentResource>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("locale", &self.bundle.locales.first())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// A bundle of `messages` (`(key, value)`, stored and so valid) for `locale`: its plural
    /// rules are the locale's. Bidirectional isolation marks are not inserted around
    /// placeables (the text goes to clients that lay it out themselves).
    pub fn new(locale: LanguageIdentifier, messages: Vec<(String, String)>) -> Self {
        let mut bundle = FluentBundle::new_concurrent(vec![locale]);
        bundle.set_use_isolating(false);
        for (key, value) in messages {
            match parse("value", &key, &value) {
                Ok(resource) => {
                    if let Err(errors) = bundle.add_resource(resource) {
                        tracing::warn!(key, ?errors, "stored message not added to its bundle");
                    }
                }
                Err(e) => tracing::warn!(key, error = %e, "stored message does not parse"),
            }
        }
        Self { bundle }
    }

    pub fn has(&self, key: &str) -> bool {
        self.bundle.has_message(key)
    }

    /// The message `key` formatted with `args`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `args.<name>` for a variable the message uses and
    /// `args` lacks; [`ServiceError::Conflict`] for a stored message that cannot be
    /// formatted (a reference to a message this locale lacks, a cycle); never a half-formatted
    /// text. [`ServiceError::NotFound`] when the bundle has no such message.
    pub fn format(&self, key: &str, args: Option<&FluentArgs<'_>>) -> Result<String, ServiceError> {
        let pattern = self
            .bundle
            .get_message(key)
            .and_then(|m| m.value())
            .ok_or_else(|| ServiceError::NotFound {
                entity: "message",
                id: key.to_owned(),
            })?;
        let mut errors = Vec::new();
        let text = self.bundle.format_pattern(pattern, args, &mut errors);
        if let Some(e) = errors.first() {
            return Err(resolve_error(key, e));
        }
        Ok(text.into_owned())
    }
}

fn resolve_error(key: &str, e: &FluentError) -> ServiceError {
    use fluent_bundle::resolver::{ResolverError, errors::ReferenceKind};
    if let FluentError::ResolverError(ResolverError::Reference(ReferenceKind::Variable { id })) = e
    {
        return ServiceError::invalid(
            &format!("args.{id}"),
            format!("message {key:?} uses ${id}: give it in args"),
        );
    }
    ServiceError::Conflict {
        message: format!("message {key:?} cannot be formatted: {e}"),
    }
}

/// `args` (a JSON object of strings and numbers) as Fluent arguments.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `args` or `args.<name>`: more than [`MAX_ARGS`]
/// arguments, a value that is neither a string nor a number, a string longer than
/// [`MAX_ARG_LEN`] characters.
pub fn arguments(args: &Map<String, Value>) -> Result<FluentArgs<'_>, ServiceError> {
    if args.len() > MAX_ARGS {
        return Err(ServiceError::invalid(
            "args",
            format!("at most {MAX_ARGS} arguments"),
        ));
    }
    let mut out = FluentArgs::with_capacity(args.len());
    for (name, v) in args {
        let value: FluentValue<'_> = match v {
            Value::String(s) if s.chars().count() <= MAX_ARG_LEN => {
                FluentValue::String(Cow::Borrowed(s.as_str()))
            }
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => FluentValue::from(i),
                (None, Some(f)) => FluentValue::from(f),
                (None, None) => {
                    return Err(ServiceError::invalid(
                        &format!("args.{name}"),
                        "not a number",
                    ));
                }
            },
            _ => {
                return Err(ServiceError::invalid(
                    &format!("args.{name}"),
                    format!("must be a number or a string of at most {MAX_ARG_LEN} characters"),
                ));
            }
        };
        out.set(name.as_str(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LanguageIdentifier {
        s.parse().expect("locale")
    }

    #[test]
    fn messages_parse_or_are_refused_with_the_key() {
        assert!(parse("value", "hello", "Hello, { $name }!").is_ok());
        assert!(
            parse(
                "value",
                "items",
                "{ $count ->\n    [one] One item\n   *[other] { $count } items\n}"
            )
            .is_ok()
        );
        assert!(parse("value", "starts", "[draft] notes").is_ok());
        for bad in [
            "{ $name",
            "Hello {",
            "{ -> }",
            "a\n.title = x",
            "a\n*[other] b",
            " ",
        ] {
            let e = parse("value", "k", bad).expect_err(bad);
            assert!(
                matches!(&e, ServiceError::Invalid { field, .. } if field == "value"),
                "{e}"
            );
        }
        let e = parse("messages.k", "k", "Hi { $name").expect_err("bad");
        assert!(e.to_string().contains("\"k\""), "{e}");
    }

    #[test]
    fn plurals_follow_the_locale() {
        let value = "{ $n ->\n [zero] zero\n [one] one\n [two] two\n [few] few\n [many] many\n *[other] other\n}";
        let expect = [
            ("en", [(1, "one"), (2, "other"), (5, "other"), (0, "other")]),
            ("fr", [(1, "one"), (0, "one"), (2, "other"), (5, "other")]),
            ("pl", [(1, "one"), (3, "few"), (5, "many"), (22, "few")]),
            ("ar", [(0, "zero"), (2, "two"), (3, "few"), (11, "many")]),
        ];
        for (locale, cases) in expect {
            let b = Bundle::new(id(locale), vec![("n".into(), value.into())]);
            for (n, form) in cases {
                let mut args = FluentArgs::new();
                args.set("n", n);
                assert_eq!(
                    b.format("n", Some(&args)).expect("format"),
                    form,
                    "{locale} {n}"
                );
            }
        }
    }

    #[test]
    fn a_missing_variable_is_named() {
        let b = Bundle::new(id("en"), vec![("hi".into(), "Hi { $name }".into())]);
        let e = b.format("hi", None).expect_err("missing");
        assert!(
            matches!(&e, ServiceError::Invalid { field, .. } if field == "args.name"),
            "{e}"
        );
    }
}
