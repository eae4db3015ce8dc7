//! The pattern rules: validation against a registry, mapping, cycles, input checks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::{self, Operation, PatternDef, Retry};
use crate::ServiceError;

fn op(name: &'static str, input: Value, output: Value) -> Operation {
    let service = name.split('.').next().unwrap_or("x");
    let service: &'static str = Box::leak(service.to_owned().into_boxed_str());
    Operation::new(
        name,
        service,
        "test",
        (input, output),
        true,
        |_c, _ctx, v| async move { Ok(v) },
    )
}

fn registry() -> BTreeMap<&'static str, Operation> {
    let obj = |props: &[&str]| json!({"type": "object", "properties": props.iter().map(|p| ((*p).to_owned(), json!({}))).collect::<serde_json::Map<_, _>>()});
    [
        op("a.make", obj(&["name", "n"]), obj(&["id", "name"])),
        op("a.undo", obj(&["id"]), obj(&["id"])),
        op("b.tell", obj(&["to", "what"]), obj(&["sent"])),
        op("c.free", json!({}), json!({})),
    ]
    .into_iter()
    .map(|o| (o.name, o))
    .collect()
}

fn def(v: Value) -> PatternDef {
    serde_json::from_value(v).expect("a pattern definition")
}

fn field_of(e: ServiceError) -> (String, String) {
    match e {
        ServiceError::Invalid { field, message } => (field, message),
        other => panic!("not a 400: {other:?}"),
    }
}

#[test]
fn a_valid_pattern_runs_in_reference_order() {
    // `tell` is declared first but refers to `make`: it runs second.
    let d = def(
        json!({"name": "p.one", "input_schema": {"type": "object", "properties": {"name": {}}},
        "steps": [
            {"name": "tell", "operation": "b.tell", "input": {"to": "$.steps.make.id", "what": "$.input.name"}},
            {"name": "make", "operation": "a.make", "input": {"name": "$.input.name"},
             "compensate": {"operation": "a.undo", "input": {"id": "$.steps.make.id"}}}
        ]}),
    );
    let order = model::validate(&d, &registry()).expect("valid");
    let names: Vec<&str> = order.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["make", "tell"]);
    assert_eq!(order[0].service, "a");
    assert_eq!(order[0].compensation.as_deref(), Some("a.undo"));
}

#[test]
fn unknown_operations_fields_steps_and_cycles_are_refused_by_name() {
    let reg = registry();
    let cases = [
        (
            json!([{"name": "x", "operation": "a.nope"}]),
            "steps[0].operation",
            "not a registered",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"colour": 1}}]),
            "steps[0].input.colour",
            "takes no",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.input.missing"}}]),
            "steps[0].input.name",
            "no property",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.steps.ghost.id"}}]),
            "steps[0].input.name",
            "no step",
        ),
        (
            json!([{"name": "x", "operation": "a.make"}, {"name": "y", "operation": "b.tell", "input": {"to": "$.steps.x.colour"}}]),
            "steps[1].input.to",
            "no output field",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.steps.x.id"}}]),
            "steps[0].input.name",
            "cycle",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.steps.y.sent"}},
                {"name": "y", "operation": "b.tell", "input": {"to": "$.steps.x.id"}}]),
            "steps[",
            "cycle: ",
        ),
        (
            json!([{"name": "x", "operation": "a.make"}, {"name": "x", "operation": "a.make"}]),
            "steps[1].name",
            "two steps",
        ),
        (
            json!([{"name": "Bad Name", "operation": "a.make"}]),
            "steps[0].name",
            "a-z",
        ),
        (json!([]), "steps", "1 to 32"),
        (
            json!([{"name": "x", "operation": "a.make", "compensate": {"operation": "a.gone"}}]),
            "steps[0].compensate.operation",
            "not a registered",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.nothing"}}]),
            "steps[0].input.name",
            "starts with",
        ),
        (
            json!([{"name": "x", "operation": "a.make", "retry": {"max_attempts": 0}}]),
            "steps[0].retry",
            "max_attempts",
        ),
        // A reference to a later step whose operation does not exist: refused, no panic.
        (
            json!([{"name": "x", "operation": "a.make", "input": {"name": "$.steps.y.sent"}},
                   {"name": "y", "operation": "b.nope"}]),
            "steps[1].operation",
            "not a registered",
        ),
    ];
    for (steps, field, message) in cases {
        let d = def(
            json!({"name": "p.bad", "input_schema": {"type": "object", "properties": {"name": {}}}, "steps": steps}),
        );
        let (f, m) = field_of(model::validate(&d, &reg).expect_err("refused"));
        assert!(f.starts_with(field), "{steps}: field {f}, expected {field}");
        assert!(
            m.contains(message),
            "{steps}: message {m:?}, expected {message:?}"
        );
    }
    let d = def(json!({"name": "Not OK", "steps": [{"name": "x", "operation": "c.free"}]}));
    assert_eq!(
        field_of(model::validate(&d, &reg).expect_err("refused")).0,
        "name"
    );
}

#[test]
fn a_three_step_cycle_is_named_in_order() {
    let d = def(json!({"name": "p.cycle", "steps": [
        {"name": "a", "operation": "c.free", "input": {"x": "$.steps.c"}},
        {"name": "b", "operation": "c.free", "input": {"x": "$.steps.a"}},
        {"name": "c", "operation": "c.free", "input": {"x": "$.steps.b"}},
    ]}));
    let (_, m) = field_of(model::validate(&d, &registry()).expect_err("a cycle"));
    assert!(
        m.contains("cycle:") && m.contains('a') && m.contains('b') && m.contains('c'),
        "{m}"
    );
}

#[test]
fn resolve_maps_input_and_outputs_and_leaves_literals() {
    let input = json!({"name": "N", "list": [1, 2], "deep": {"x": {"y": 3}}});
    let mut outputs = serde_json::Map::new();
    outputs.insert("make".into(), json!({"id": "I", "items": [{"k": "v"}]}));
    let t = json!({"a": "$.input.name", "b": ["$.steps.make.id", "lit"], "c": "$.input.deep.x.y",
                   "d": "$.steps.make.items.0.k", "e": "$.input.nothing", "f": 5, "g": "$.input",
                   "h": "plain $.input"});
    let v = model::resolve(&t, &input, &outputs);
    assert_eq!(
        v,
        json!({"a": "N", "b": ["I", "lit"], "c": 3, "d": "v", "e": null, "f": 5,
                          "g": input, "h": "plain $.input"})
    );
}

#[test]
fn inputs_are_checked_against_the_pattern_schema() {
    let d = def(
        json!({"name": "p", "input_schema": {"type": "object", "additionalProperties": false,
        "required": ["name"], "properties": {"name": {}, "n": {}}},
        "steps": [{"name": "x", "operation": "c.free"}]}),
    );
    assert!(model::check_input(&d, &json!({"name": "a"})).is_ok());
    assert_eq!(
        field_of(model::check_input(&d, &json!({})).expect_err("missing")).0,
        "input.name"
    );
    assert_eq!(
        field_of(model::check_input(&d, &json!({"name": null})).expect_err("null")).0,
        "input.name"
    );
    assert_eq!(
        field_of(model::check_input(&d, &json!({"name": 1, "z": 2})).expect_err("extra")).0,
        "input.z"
    );
    assert_eq!(
        field_of(model::check_input(&d, &json!([1])).expect_err("array")).0,
        "input"
    );
    let big = "x".repeat(70 * 1024);
    assert_eq!(
        field_of(model::check_input(&d, &json!({"name": big})).expect_err("big")).0,
        "input"
    );
}

#[test]
fn back_off_doubles_to_its_cap() {
    let r = Retry {
        max_attempts: 5,
        backoff_ms: 100,
        max_backoff_ms: 350,
    };
    assert_eq!(
        [r.backoff(1), r.backoff(2), r.backoff(3), r.backoff(4)],
        [100, 200, 350, 350]
    );
}

#[test]
fn the_shipped_patterns_parse() {
    let defs = super::ops::builtin_patterns();
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["campaign.launch", "referral.reward", "talent.book"]);
}
