//! Templates in MiniJinja syntax: checked when they are stored (a template that does not parse
//! is refused, naming the part and the line), and rendered only when every variable they use
//! is given, so that no one ever gets a half-rendered message.
//!
//! Each part is compiled under its own name: `subject` and `text` as plain text, `html` with
//! HTML auto-escaping (a variable's `<` becomes `&lt;`). Undefined values are errors
//! ([`UndefinedBehavior::Strict`]), and before rendering the variables a template uses are
//! compared with those given ([`Compiled::missing`]): the sender gets a 400 naming the first
//! one that lacks, not a message with a hole in it.

use std::collections::BTreeSet;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::ServiceError;

/// The variable every template may use without the sender giving it: the recipient.
pub const USER_VARIABLE: &str = "user";

const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "html";

/// The three parts of one template, compiled.
pub struct Compiled {
    env: Environment<'static>,
    has_html: bool,
    /// The variables any part uses (besides [`USER_VARIABLE`]), sorted.
    variables: BTreeSet<String>,
}

/// One recipient's rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name == HTML {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// `field` and a one-line description of a MiniJinja error.
fn describe(field: &str, e: &minijinja::Error) -> ServiceError {
    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    ServiceError::invalid(field, format!("{}{detail}{line}", e.kind()))
}

impl Compiled {
    /// Compiles the parts; `field_prefix` is put before each part's name in errors
    /// (`""` → `subject`, `"template."` → `template.subject`).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the part that does not parse, with the line.
    pub fn new(
        field_prefix: &str,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<Self, ServiceError> {
        let mut env = environment();
        let mut variables = BTreeSet::new();
        let parts = [(SUBJECT, Some(subject)), (TEXT, Some(text)), (HTML, html)];
        for (name, source) in parts {
            let Some(source) = source else { continue };
            let field = format!("{field_prefix}{name}");
            env.add_template_owned(name, source.to_owned())
                .map_err(|e| describe(&field, &e))?;
            let t = env.get_template(name).map_err(|e| describe(&field, &e))?;
            variables.extend(t.undeclared_variables(false));
        }
        variables.remove(USER_VARIABLE);
        Ok(Self {
            env,
            has_html: html.is_some(),
            variables,
        })
    }

    /// The variables the parts use (besides `user`), sorted.
    pub fn variables(&self) -> Vec<String> {
        self.variables.iter().cloned().collect()
    }

    /// The first variable the template uses that `given` lacks.
    pub fn missing<'a>(
        &'a self,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a str> {
        self.variables
            .iter()
            .find(|v| !given.contains_key(v.as_str()))
            .map(String::as_str)
    }

    /// Renders every part with `variables` and the recipient as `user`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `variables` when rendering fails (an undefined
    /// attribute, a filter given the wrong type): nothing is sent.
    pub fn render(
        &self,
        variables: &serde_json::Map<String, serde_json::Value>,
        user: &serde_json::Value,
    ) -> Result<Rendered, ServiceError> {
        let mut ctx = variables.clone();
        ctx.insert(USER_VARIABLE.to_owned(), user.clone());
        let ctx = Value::from(minijinja::value::Serde(&ctx));
        let part = |name: &str| -> Result<String, ServiceError> {
            let t = self
                .env
                .get_template(name)
                .map_err(|e| describe(name, &e))?;
            t.render(&ctx)
                .map_err(|e| describe(&format!("variables ({name})"), &e))
        };
        Ok(Rendered {
            subject: part(SUBJECT)?.trim().to_owned(),
            text: part(TEXT)?,
            html: if self.has_html {
                Some(part(HTML)?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn renders_parts_and_escapes_html_only() {
        let c = Compiled::new(
            "",
            "Hi {{ user.display_name }}",
            "Your code: {{ code }}",
            Some("<p>{{ code }}</p>"),
        )
        .expect("compiles");
        assert_eq!(c.variables(), vec!["code".to_owned()]);
        let r = c
            .render(
                &vars(json!({"code": "<b>42</b>"})),
                &json!({"display_name": "Ann"}),
            )
            .expect("renders");
        assert_eq!(r.subject, "Hi Ann");
        assert_eq!(r.text, "Your code: <b>42</b>");
        assert_eq!(r.html.as_deref(), Some("<p>&lt;b&gt;42&lt;&#x2f;b&gt;</p>"));
    }

    #[test]
    fn a_template_that_does_not_parse_names_its_part_and_line() {
        let Err(ServiceError::Invalid { field, message }) =
            Compiled::new("", "ok", "line one\n{% if x %}never closed", None)
        else {
            panic!("must be refused");
        };
        assert_eq!(field, "text");
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn missing_variables_are_named_before_rendering() {
        let c = Compiled::new("", "{{ a }}", "{{ b }} {% if c %}{{ d }}{% endif %}", None)
            .expect("compiles");
        assert_eq!(c.variables(), vec!["a", "b", "c", "d"]);
        assert_eq!(
            c.missing(&vars(json!({"a": 1, "b": 2, "c": true}))),
            Some("d")
        );
        assert_eq!(
            c.missing(&vars(json!({"a": 1, "b": 2, "c": 0, "d": 4}))),
            None
        );
    }

    #[test]
    fn an_undefined_attribute_is_an_error_not_a_hole() {
        let c = Compiled::new("", "s", "{{ order.total }}", None).expect("compiles");
        assert!(c.render(&vars(json!({"order": {}})), &json!({})).is_err());
    }
}
