//! The Amadeus knowledge graph: the platform's model of itself (services, what each depends on,
//! its endpoints, tables and Redis keys), built from facts the code gives ([`Facts`]) and never
//! written by hand, so that it cannot drift. The node binary gathers the facts (the provider's
//! registrations and wiring, the OpenAPI document, the gRPC descriptors, the migrated tables,
//! the engine's key builders) and writes `knowledge_graph.json`; CI checks that the committed
//! file is what the code generates. [`impact`], [`validate`] and [`mermaid`] read a graph.
//!
//! Generation is deterministic: maps are ordered, lists sorted, and `version` / `last_updated`
//! are a hash of the facts — never the clock — so two generations of one tree are identical.

pub mod curator;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::provider::{ServiceRegistration, Wiring};

/// A REST operation, from the OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RestOperation {
    pub method: String,
    pub path: String,
    pub operation_id: String,
    pub tag: String,
}

/// A gRPC service and its methods, from the descriptors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrpcService {
    /// Fully qualified, e.g. `campaign.v0.CampaignService`.
    pub name: String,
    /// `Name` or `Name (server streaming)` / `(client streaming)` / `(bidirectional)`.
    pub methods: Vec<String>,
}

/// A table and its columns, read from a database the migrations built.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    /// `name type`, in the table's order.
    pub columns: Vec<String>,
}

/// A Redis key or channel the engine builds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RedisKey {
    pub pattern: String,
    pub redis_type: String,
    pub purpose: String,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub path: String,
    pub description: String,
}

/// An operation of the Nexus registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NexusOperation {
    pub name: String,
    pub service: String,
    pub idempotent: bool,
    pub description: String,
}

/// A pattern Nexus ships, with its steps in run order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NexusPattern {
    pub name: String,
    pub version: i64,
    pub description: String,
    /// `(step, operation, service, compensation)`.
    pub steps: Vec<(String, String, String, Option<String>)>,
    pub events: Vec<String>,
    pub cron: Option<String>,
}

/// Everything the graph is built from.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub registrations: Vec<ServiceRegistration>,
    pub wiring: Wiring,
    pub rest: Vec<RestOperation>,
    pub grpc: Vec<GrpcService>,
    pub tables: Vec<Table>,
    pub redis: Vec<RedisKey>,
    pub components: Vec<Component>,
    /// The fields of `common.Metadata`.
    pub metadata_fields: Vec<String>,
    /// Migration file names (both backends have the same).
    pub migrations: Vec<String>,
    /// The Nexus registry: every service's operations.
    pub operations: Vec<NexusOperation>,
    /// The patterns the node ships.
    pub patterns: Vec<NexusPattern>,
}

/// The services in the graph's `services` section, and infrastructure they depend on.
const INFRASTRUCTURE: &[&str] = &[
    "database",
    "broadcast-engine",
    "metadata-cache",
    "tokens",
    "event-bus",
];

/// The service a table belongs to: `service_{service}_{entity}`.
fn table_service(name: &str) -> Option<&str> {
    name.strip_prefix("service_")?.split('_').next()
}

/// The service a REST path belongs to, by its registration's prefixes.
fn rest_owner<'a>(path: &str, registrations: &'a [ServiceRegistration]) -> Option<&'a str> {
    registrations
        .iter()
        .flat_map(|r| r.endpoints.rest.iter().map(move |p| (r.name, *p)))
        .filter(|(_, prefix)| path == *prefix || path.starts_with(&format!("{prefix}/")))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(name, _)| name)
}

/// Builds the graph (a JSON object with the seed's sections) from `facts`.
pub fn generate(facts: &Facts) -> Value {
    let mut facts = facts.clone();
    facts.rest.sort();
    facts.grpc.sort();
    facts.tables.sort();
    facts.redis.sort();
    facts.components.sort();
    facts.migrations.sort();
    facts.operations.sort();
    facts.patterns.sort();
    let digest = Sha256::digest(serde_json::to_vec(&facts).unwrap_or_default());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();

    let depends = facts.wiring.dependencies();
    let mut services = BTreeMap::new();
    for r in &facts.registrations {
        let rest: Vec<Value> = facts
            .rest
            .iter()
            .filter(|o| rest_owner(&o.path, &facts.registrations) == Some(r.name))
            .map(|o| json!({"method": o.method, "path": o.path, "operation_id": o.operation_id}))
            .collect();
        let grpc: Vec<&GrpcService> = facts
            .grpc
            .iter()
            .filter(|g| r.endpoints.grpc.contains(&g.name.as_str()))
            .collect();
        let tables: Vec<&str> = facts
            .tables
            .iter()
            .filter(|t| table_service(&t.name) == Some(r.name))
            .map(|t| t.name.as_str())
            .collect();
        let deps = depends.get(r.name).cloned().unwrap_or_default();
        let operations: Vec<&str> = facts
            .operations
            .iter()
            .filter(|o| o.service == r.name)
            .map(|o| o.name.as_str())
            .collect();
        let in_patterns: BTreeSet<&str> = facts
            .patterns
            .iter()
            .filter(|p| p.steps.iter().any(|s| s.2 == r.name))
            .map(|p| p.name.as_str())
            .collect();
        services.insert(
            r.name,
            json!({
                "version": r.version,
                "capabilities": r.capabilities,
                "depends_on": deps,
                "health_check": r.health_check,
                "metrics_prefix": r.metrics_prefix,
                "rest": rest,
                "grpc": grpc,
                "tables": tables,
                "operations": operations,
                "patterns": in_patterns,
            }),
        );
    }
    let patterns: Vec<Value> = facts
        .patterns
        .iter()
        .map(|p| {
            let services: BTreeSet<&str> = p.steps.iter().map(|s| s.2.as_str()).collect();
            json!({
                "name": p.name,
                "version": p.version,
                "description": p.description,
                "steps": p.steps.iter().map(|(name, op, service, comp)| json!({
                    "name": name, "operation": op, "service": service, "compensation": comp,
                })).collect::<Vec<_>>(),
                "services": services,
                "triggers": {"api": true, "events": p.events, "cron": p.cron},
            })
        })
        .collect();
    let tables: BTreeMap<&str, Value> = facts
        .tables
        .iter()
        .map(|t| {
            let service = table_service(&t.name);
            (
                t.name.as_str(),
                json!({"service": service, "columns": t.columns}),
            )
        })
        .collect();
    let babel_users: Vec<&str> = depends
        .iter()
        .filter(|(_, deps)| deps.iter().any(|d| *d == "babel" || *d == "localization"))
        .map(|(s, _)| *s)
        .collect();
    json!({
        "version": format!("1.{hash}"),
        "last_updated": format!("generated from inputs {hash}"),
        "system_components": facts.components,
        "repository_structure": {
            "components": facts.components.iter().map(|c| (c.path.clone(), c.description.clone())).collect::<BTreeMap<_, _>>(),
            "migrations": facts.migrations,
        },
        "services": services,
        "nexus": {
            "built": true,
            "registered_operations": facts.operations,
            "tables": facts.tables.iter().filter(|t| table_service(&t.name) == Some("nexus")).map(|t| t.name.as_str()).collect::<Vec<_>>(),
            "triggers": ["api", "schedule (scheduler job nexus.run)", "event (in-process event bus, after commit)"],
        },
        "patterns": patterns,
        "database_practices": {
            "backends": ["sqlite", "postgres"],
            "table_naming": "service_{service}_{entity}",
            "tables": tables,
        },
        "redis_practices": {
            "keys": facts.redis,
        },
        "amadeus_integration": {
            "generator": "ovasabi kg generate",
            "check": "ovasabi kg check (in .ci/run)",
            "inputs": ["provider registrations", "provider wiring", "OpenAPI document", "gRPC descriptors", "migrated tables", "engine Redis key builders", "workspace manifests", "common.Metadata"],
        },
        "service_registration": {
            "services": facts.registrations.iter().map(|r| r.name).collect::<Vec<_>>(),
            "infrastructure": INFRASTRUCTURE,
            "wiring": facts.wiring.edges(),
        },
        "babel_integration": {
            "services_using_babel": babel_users,
        },
        "pattern_orchestration": {
            "built": true,
            "run_states": ["running", "compensating", "succeeded", "compensated", "failed"],
            "step_states": ["pending", "running", "succeeded", "failed", "compensated", "compensation_failed", "skipped"],
            "durability": "a run and each step's state are rows; a node's claim is a lease with a fencing token; any node resumes a run whose lease ran out",
            "retries": "per step: max_attempts with exponential back-off, for errors that may pass (database or engine unavailable, rate limited, step timeout)",
            "compensation": "the completed steps' compensations in reverse run order, each once",
            "idempotency": "one run per idempotency key; each step gets a key that is the same on every attempt",
        },
        "metadata_fields": facts.metadata_fields,
    })
}

/// A rule the graph breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a graph: every dependency names a service or known infrastructure, every table
/// follows `service_{service}_{entity}` with a service that exists, every service has a health
/// check, a metrics prefix and at least one endpoint, every gRPC service it registers exists.
pub fn validate(graph: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let services = graph["services"].as_object().cloned().unwrap_or_default();
    for (name, s) in &services {
        for dep in s["depends_on"].as_array().into_iter().flatten() {
            let dep = dep.as_str().unwrap_or_default();
            if !services.contains_key(dep) && !INFRASTRUCTURE.contains(&dep) {
                problems.push(Problem(format!(
                    "service {name} depends on {dep:?}, which is neither a service nor known infrastructure"
                )));
            }
        }
        for field in ["health_check", "metrics_prefix"] {
            if s[field].as_str().is_none_or(str::is_empty) {
                problems.push(Problem(format!("service {name} has no {field}")));
            }
        }
        let endpoints =
            s["rest"].as_array().map_or(0, Vec::len) + s["grpc"].as_array().map_or(0, Vec::len);
        if endpoints == 0 {
            problems.push(Problem(format!(
                "service {name} has no REST or gRPC endpoint"
            )));
        }
    }
    let operations: BTreeSet<&str> = graph["nexus"]["registered_operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for p in graph["patterns"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        for step in p["steps"].as_array().into_iter().flatten() {
            for field in ["operation", "compensation"] {
                if let Some(op) = step[field].as_str()
                    && !operations.contains(op)
                {
                    problems.push(Problem(format!(
                        "pattern {name}: step {} uses {op:?}, which is not a registered operation",
                        step["name"]
                    )));
                }
            }
            let service = step["service"].as_str().unwrap_or_default();
            if !services.contains_key(service) {
                problems.push(Problem(format!(
                    "pattern {name}: step {} runs in {service:?}, which is not a service",
                    step["name"]
                )));
            }
        }
    }
    for (table, t) in graph["database_practices"]["tables"]
        .as_object()
        .into_iter()
        .flatten()
    {
        match t["service"].as_str() {
            Some(s) if services.contains_key(s) => {}
            Some(s) => problems.push(Problem(format!(
                "table {table}: no service {s:?} (tables are service_{{service}}_{{entity}})"
            ))),
            None if table.starts_with("_sqlx") => {}
            None => problems.push(Problem(format!(
                "table {table} does not follow service_{{service}}_{{entity}}"
            ))),
        }
    }
    problems
}

/// One step of an impact path: `(from, relation, to)`.
pub type Step = (String, &'static str, String);

/// Everything that depends on `node` (a service, infrastructure, a table, or an endpoint
/// `METHOD /path`), directly or transitively, each with the path that leads to it.
pub fn impact(graph: &Value, node: &str) -> Option<BTreeMap<String, Vec<Step>>> {
    // Edges "x is used by y".
    let mut used_by: BTreeMap<String, Vec<(&'static str, String)>> = BTreeMap::new();
    let services = graph["services"].as_object()?;
    let mut known: BTreeSet<String> = INFRASTRUCTURE.iter().map(|s| (*s).to_owned()).collect();
    for (name, s) in services {
        known.insert(name.clone());
        for dep in s["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            used_by
                .entry(dep.to_owned())
                .or_default()
                .push(("is used by", name.clone()));
        }
        for t in s["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            known.insert(t.to_owned());
            used_by
                .entry(t.to_owned())
                .or_default()
                .push(("is stored by", name.clone()));
        }
        for op in s["rest"].as_array().into_iter().flatten() {
            let endpoint = format!(
                "{} {}",
                op["method"].as_str().unwrap_or_default().to_uppercase(),
                op["path"].as_str().unwrap_or_default()
            );
            used_by
                .entry(name.clone())
                .or_default()
                .push(("serves", endpoint.clone()));
            known.insert(endpoint);
        }
        for g in s["grpc"].as_array().into_iter().flatten() {
            let endpoint = g["name"].as_str().unwrap_or_default().to_owned();
            used_by
                .entry(name.clone())
                .or_default()
                .push(("serves", endpoint.clone()));
            known.insert(endpoint);
        }
    }
    for p in graph["patterns"].as_array().into_iter().flatten() {
        let pattern = format!("pattern {}", p["name"].as_str().unwrap_or_default());
        let services: BTreeSet<&str> = p["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["service"].as_str())
            .collect();
        for service in services {
            used_by
                .entry(service.to_owned())
                .or_default()
                .push(("runs a step of", pattern.clone()));
        }
        known.insert(pattern);
    }
    if !known.contains(node) {
        return None;
    }
    let mut paths: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut queue = VecDeque::from([node.to_owned()]);
    while let Some(at) = queue.pop_front() {
        let path = paths.get(&at).cloned().unwrap_or_default();
        for (relation, next) in used_by.get(&at).into_iter().flatten() {
            if next == node || paths.contains_key(next) {
                continue;
            }
            let mut p = path.clone();
            p.push((at.clone(), relation, next.clone()));
            paths.insert(next.clone(), p);
            queue.push_back(next.clone());
        }
    }
    Some(paths)
}

/// A Mermaid flowchart of the services and what they depend on; with `focus`, only that
/// service, infrastructure or table and its direct neighbours.
pub fn mermaid(graph: &Value, focus: Option<&str>) -> String {
    let id = |s: &str| s.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let mut lines = vec!["flowchart LR".to_owned()];
    let mut nodes = BTreeSet::new();
    let mut edges = Vec::new();
    for (name, s) in graph["services"].as_object().into_iter().flatten() {
        for dep in s["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if focus.is_none_or(|f| f == name || f == dep) {
                nodes.insert(name.clone());
                nodes.insert(dep.to_owned());
                edges.push(format!("  {} --> {}", id(name), id(dep)));
            }
        }
        if focus.is_none_or(|f| f == name) {
            nodes.insert(name.clone());
        }
    }
    for n in &nodes {
        let shape = if INFRASTRUCTURE.contains(&n.as_str()) {
            format!("  {}[({n})]", id(n))
        } else {
            format!("  {}[{n}]", id(n))
        };
        lines.push(shape);
    }
    lines.extend(edges);
    lines.join("\n") + "\n"
}

/// A readable diff of two graphs: the JSON pointers whose values differ.
pub fn diff(committed: &Value, generated: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(b)) => walk(&p, a, b, out),
                        (Some(_), None) => out.push(format!("- {p} (not generated any more)")),
                        (None, Some(b)) => out.push(format!("+ {p} = {}", short(b))),
                        (None, None) => {}
                    }
                }
            }
            _ if a != b => out.push(format!("~ {path}: {} -> {}", short(a), short(b))),
            _ => {}
        }
    }
    fn short(v: &Value) -> String {
        let s = v.to_string();
        if s.chars().count() > 120 {
            format!("{}…", s.chars().take(120).collect::<String>())
        } else {
            s
        }
    }
    let mut out = Vec::new();
    walk("", committed, generated, &mut out);
    out
}

#[cfg(test)]
mod tests;
