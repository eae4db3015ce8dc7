//! `ovasabi kg`: gathers the facts the Amadeus knowledge graph is made of from this build — the
//! provider's registrations and wiring (a provider built on an in-memory database), the OpenAPI
//! document, the gRPC descriptors, the tables the migrations create, the engine's Redis key
//! builders, the workspace's manifests — and generates, checks, validates and queries
//! `knowledge_graph.json` ([`services::amadeus`] does the graph itself).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use prost::Message as _;
use serde_json::Value;
use services::amadeus::{self, Component, Facts, GrpcService, RedisKey, RestOperation, Table};

/// Gathers the facts of this build; `root` is the repository (for the workspace manifests).
pub async fn facts(root: &Path) -> anyhow::Result<Facts> {
    let db = services::Database::connect("sqlite::memory:").await?;
    db.migrate().await?;
    let mut tables = Vec::new();
    for name in db.tables().await? {
        let columns = db.columns(&name).await?;
        tables.push(Table { name, columns });
    }
    let node = engine::Node::new(
        engine::Config::default(),
        Arc::new(engine::MemoryBroker::new()),
    );
    let provider = services::Provider::new(services::provider::ProviderConfig {
        db: db.clone(),
        broadcaster: Arc::new(crate::broadcaster::EngineBroadcaster { node: node.clone() }),
        cache: None,
        tokens: services::user::TokenConfig {
            secret: vec![7; 32],
            access_ttl: std::time::Duration::from_secs(60),
            refresh_ttl: std::time::Duration::from_secs(120),
        },
        localization: services::localization::LocalizationConfig::default(),
        babel: services::babel::BabelConfig::default(),
        realtime: Arc::new(crate::broadcaster::EngineBroadcaster { node: node.clone() }),
        notification: services::notification::DeliveryConfig::default(),
        scheduler: services::scheduler::SchedulerConfig::default(),
        commerce: services::commerce::CommerceConfig::default(),
        nexus: services::nexus::NexusConfig::default(),
    })
    .await?;
    let wiring = (*provider.wiring).clone();
    let operations = provider
        .nexus
        .operation_infos()
        .into_iter()
        .map(|o| services::amadeus::NexusOperation {
            name: o.name,
            service: o.service,
            idempotent: o.idempotent,
            description: o.description,
        })
        .collect();
    let patterns = provider
        .nexus
        .pattern_list()
        .await?
        .into_iter()
        .filter(|p| p.source == "builtin")
        .map(|p| services::amadeus::NexusPattern {
            name: p.name,
            version: p.version,
            description: p.definition.description,
            steps: p
                .order
                .into_iter()
                .map(|s| (s.name, s.operation, s.service, s.compensation))
                .collect(),
            events: p.definition.triggers.events,
            cron: p.definition.triggers.cron,
        })
        .collect();
    provider.close(std::time::Duration::from_secs(1)).await;
    node.shutdown(std::time::Duration::from_secs(1)).await;
    db.close().await;

    let (grpc, metadata_fields) = grpc_facts()?;
    let mut redis: Vec<RedisKey> = engine::broker::RedisKey::ALL
        .iter()
        .map(|k| RedisKey {
            pattern: format!("{{p}}:{}:{{campaign}}", k.kind()),
            redis_type: k.redis_type().to_owned(),
            purpose: k.purpose().to_owned(),
        })
        .collect();
    redis.extend(
        engine::broker::REDIS_NODE_KEYS
            .iter()
            .map(|(p, t, what)| RedisKey {
                pattern: (*p).to_owned(),
                redis_type: (*t).to_owned(),
                purpose: (*what).to_owned(),
            }),
    );
    Ok(Facts {
        registrations: services::provider::registrations(),
        wiring,
        rest: rest_facts(),
        grpc,
        tables,
        redis,
        components: components(root)?,
        metadata_fields,
        migrations: services::db::migration_names(),
        operations,
        patterns,
    })
}

/// Every REST operation of the OpenAPI document.
fn rest_facts() -> Vec<RestOperation> {
    let (_, doc) = crate::http::api_router().split_for_parts();
    let doc = crate::openapi::finish(doc);
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let Some(operation_id) = op["operationId"].as_str() else {
                continue;
            };
            ops.push(RestOperation {
                method: method.clone(),
                path: path.clone(),
                operation_id: operation_id.to_owned(),
                tag: op["tags"][0].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    ops
}

/// The gRPC services and methods of the descriptors, and the fields of `common.Metadata`.
fn grpc_facts() -> anyhow::Result<(Vec<GrpcService>, Vec<String>)> {
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .context("the gRPC descriptors do not decode")?;
    let mut services = Vec::new();
    let mut metadata = Vec::new();
    for file in &set.file {
        let package = file.package();
        if package.starts_with("google.") || package.starts_with("grpc.") {
            continue;
        }
        for s in &file.service {
            let methods = s
                .method
                .iter()
                .map(|m| {
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => "",
                        (false, true) => " (server streaming)",
                        (true, false) => " (client streaming)",
                        (true, true) => " (bidirectional)",
                    };
                    format!("{}{kind}", m.name())
                })
                .collect();
            services.push(GrpcService {
                name: format!("{package}.{}", s.name()),
                methods,
            });
        }
        if package == "common" {
            for m in file.message_type.iter().filter(|m| m.name() == "Metadata") {
                metadata.extend(m.field.iter().map(|f| f.name().to_owned()));
            }
        }
    }
    Ok((services, metadata))
}

/// The workspace's members with their descriptions, from the manifests under `root`.
fn components(root: &Path) -> anyhow::Result<Vec<Component>> {
    let read = |p: PathBuf| -> anyhow::Result<toml::Value> {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not TOML", p.display()))
    };
    let workspace = read(root.join("Cargo.toml"))?;
    let mut out = Vec::new();
    let members = workspace["workspace"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for member in members.iter().filter_map(toml::Value::as_str) {
        let manifest = read(root.join(member).join("Cargo.toml"))?;
        out.push(Component {
            name: manifest["package"]["name"]
                .as_str()
                .unwrap_or(member)
                .to_owned(),
            path: member.to_owned(),
            description: manifest["package"]["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    for (path, description) in [
        (
            "clients/js",
            "@ovasabi/client: the official JavaScript client",
        ),
        (
            "api/src/http/console",
            "the campaign console served at / (ES modules embedded in the binary)",
        ),
        (
            "migrations",
            "sqlx migrations, one folder per backend (sqlite/, postgres/)",
        ),
    ] {
        if root.join(path).exists() {
            out.push(Component {
                name: path.rsplit('/').next().unwrap_or(path).to_owned(),
                path: path.to_owned(),
                description: description.to_owned(),
            });
        }
    }
    Ok(out)
}

/// The graph as the file holds it: pretty JSON and a final newline.
pub fn render(graph: &Value) -> String {
    let mut text = serde_json::to_string_pretty(graph).unwrap_or_default();
    text.push('\n');
    text
}

/// What [`write`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The file already held this graph.
    Unchanged,
    /// Written; the previous file, if there was one, kept there.
    Replaced(Option<PathBuf>),
}

/// Writes `graph` to `file`, first keeping the previous file as
/// `backups/knowledge_graph.<n>.<version>.json` (at most `keep` backups, the oldest removed).
pub fn write(file: &Path, backups: &Path, keep: usize, graph: &Value) -> anyhow::Result<Written> {
    let mut kept = None;
    if let Ok(previous) = std::fs::read_to_string(file) {
        if previous == render(graph) {
            return Ok(Written::Unchanged);
        }
        let version = serde_json::from_str::<Value>(&previous)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unversioned".to_owned());
        std::fs::create_dir_all(backups)?;
        let n = backup_list(backups)?.last().map_or(1, |(n, _)| n + 1);
        let path = backups.join(format!("knowledge_graph.{n:06}.{version}.json"));
        std::fs::write(&path, previous)?;
        kept = Some(path);
        let list = backup_list(backups)?;
        for (_, old) in list.iter().take(list.len().saturating_sub(keep)) {
            std::fs::remove_file(old)?;
        }
    }
    std::fs::write(file, render(graph))?;
    Ok(Written::Replaced(kept))
}

/// The backups, oldest first, with their sequence numbers.
fn backup_list(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("knowledge_graph."))
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Puts the newest backup back as `file` (and removes it from the backups).
pub fn rollback(file: &Path, backups: &Path) -> anyhow::Result<PathBuf> {
    let Some((_, newest)) = backup_list(backups)?.pop() else {
        bail!("no backup in {}", backups.display());
    };
    std::fs::copy(&newest, file)?;
    std::fs::remove_file(&newest)?;
    Ok(newest)
}

/// `entity`: a service, table, REST path or gRPC service name, or a JSON pointer (`/services/user`).
pub fn query(graph: &Value, entity: &str) -> Option<Value> {
    if entity.starts_with('/') {
        return graph.pointer(entity).cloned();
    }
    if let Some(s) = graph["services"].get(entity) {
        let impact = amadeus::impact(graph, entity).unwrap_or_default();
        return Some(serde_json::json!({
            "service": entity,
            "facts": s,
            "used_by": impact.keys().collect::<Vec<_>>(),
        }));
    }
    if let Some(t) = graph["database_practices"]["tables"].get(entity) {
        return Some(serde_json::json!({"table": entity, "facts": t}));
    }
    for (name, s) in graph["services"].as_object().into_iter().flatten() {
        let rest = s["rest"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["path"] == entity);
        let grpc = s["grpc"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"] == entity);
        if let Some(endpoint) = rest.or(grpc) {
            return Some(
                serde_json::json!({"endpoint": entity, "service": name, "facts": endpoint}),
            );
        }
    }
    None
}

/// Backstage catalog entities (a multi-document YAML stream of JSON documents, which YAML
/// reads as they are): a `System`, a `Component` per service with `dependsOn` and
/// `providesApis`, an `API` per gRPC service, a `Resource` per infrastructure dependency.
pub fn backstage(graph: &Value) -> String {
    use serde_json::json;
    let mut docs = vec![json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "System",
        "metadata": {"name": "ovasabi", "annotations": {"ovasabi.io/kg-version": graph["version"]}},
        "spec": {"owner": "ovasabi"},
    })];
    let services = graph["services"].as_object().cloned().unwrap_or_default();
    let api_name = |g: &str| g.to_lowercase().replace('.', "-");
    let mut resources = std::collections::BTreeSet::new();
    for (name, s) in &services {
        let depends: Vec<String> = s["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|d| {
                if services.contains_key(d) {
                    format!("component:{d}")
                } else {
                    resources.insert(d.to_owned());
                    format!("resource:{d}")
                }
            })
            .collect();
        let apis: Vec<String> = s["grpc"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .map(api_name)
            .collect();
        for g in s["grpc"].as_array().into_iter().flatten() {
            let gname = g["name"].as_str().unwrap_or_default();
            docs.push(json!({
                "apiVersion": "backstage.io/v1alpha1", "kind": "API",
                "metadata": {"name": api_name(gname), "title": gname},
                "spec": {"type": "grpc", "lifecycle": "production", "owner": "ovasabi", "system": "ovasabi",
                         "definition": g["methods"].as_array().map(|m| m.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")).unwrap_or_default()},
            }));
        }
        docs.push(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "description": s["capabilities"]},
            "spec": {"type": "service", "lifecycle": "production", "owner": "ovasabi", "system": "ovasabi",
                     "dependsOn": depends, "providesApis": apis},
        }));
    }
    for r in resources {
        docs.push(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": r},
            "spec": {"type": "infrastructure", "owner": "ovasabi", "system": "ovasabi"},
        }));
    }
    docs.iter()
        .map(|d| {
            format!(
                "---\n{}\n",
                serde_json::to_string_pretty(d).unwrap_or_default()
            )
        })
        .collect()
}
