//! Curator annotations of the knowledge graph: owners, notes and decisions people add to its
//! nodes, stored apart from the generated facts (table `service_amadeus_annotation`, every
//! replaced value kept first in `service_amadeus_annotation_backup`) and merged into the graph
//! the node serves. A change is a JSON merge patch (RFC 7396) over the graph that may only
//! touch the `annotations` object of the graph itself, of a service (`/services/<name>`) or of a
//! table (`/database_practices/tables/<name>`); anything else would change a generated fact
//! and is refused (409 listing the JSON pointers).
//!
//! Resource `kg`, action `annotate` (admins); each change writes one audit row `kg.annotate`
//! in its transaction. Metric: `ovasabi_amadeus_annotations_total` (changes applied).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::db::{on_pool, settle};
use crate::security::{Caller, Policies, audit};
use crate::sql::portable_sql;
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};

/// What curators say about one node of the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KgAnnotation)]
pub struct Annotation {
    /// Who owns the node (a team, a person): at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// At most 4000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Decisions taken about it, at most 50 of at most 1000 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<String>,
}

impl Annotation {
    fn is_empty(&self) -> bool {
        self.owner.is_none() && self.notes.is_none() && self.decisions.is_empty()
    }

    fn check(&self, at: &str) -> Result<(), ServiceError> {
        let text = |field: &str, s: &str, max: usize| {
            if s.trim().is_empty() || s.chars().count() > max || s.contains('\0') {
                Err(ServiceError::invalid(
                    &format!("{at}/{field}"),
                    format!("1-{max} characters, not blank, no NUL"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(o) = &self.owner {
            text("owner", o, 200)?;
        }
        if let Some(n) = &self.notes {
            text("notes", n, 4000)?;
        }
        if self.decisions.len() > 50 {
            return Err(ServiceError::invalid(
                &format!("{at}/decisions"),
                "at most 50 decisions",
            ));
        }
        for (i, d) in self.decisions.iter().enumerate() {
            text(&format!("decisions/{i}"), d, 1000)?;
        }
        Ok(())
    }
}

portable_sql! {
    /// The SQL of annotations, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        /// Curators' changes one after the other (SQLite's writers already are).
        lock: ("SELECT 1", "LOCK TABLE service_amadeus_annotation IN SHARE ROW EXCLUSIVE MODE"),
        all: "SELECT pointer, annotation FROM service_amadeus_annotation ORDER BY pointer",
        one: "SELECT annotation FROM service_amadeus_annotation WHERE pointer = $1",
        backup: "INSERT INTO service_amadeus_annotation_backup \
                 (id, pointer, annotation, replaced_by, replaced_at) VALUES ($1, $2, $3, $4, $5)",
        upsert: "INSERT INTO service_amadeus_annotation (pointer, annotation, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (pointer) DO UPDATE SET \
                 annotation = excluded.annotation, updated_by = excluded.updated_by, \
                 updated_at = excluded.updated_at",
        delete: "DELETE FROM service_amadeus_annotation WHERE pointer = $1",
        backups: "SELECT COUNT(*) FROM service_amadeus_annotation_backup WHERE pointer = $1",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

/// Curator annotations over the generated graph.
#[derive(Clone, Debug)]
pub struct CuratorService {
    db: Database,
    policies: Policies,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether the node at `at` may carry annotations: the graph itself, a service, a table. (An
/// `annotations` key anywhere else would read as an entry of a generated map: a service named
/// "annotations".)
fn annotatable(at: &str) -> bool {
    let parts: Vec<&str> = at.split('/').collect();
    matches!(
        parts.as_slice(),
        [""] | ["", "services", _] | ["", "database_practices", "tables", _]
    )
}

/// The annotation merge patches `patch` makes, by the pointer of the node they annotate, and
/// every pointer where it would change a generated fact instead.
fn split(
    graph: &Value,
    patch: &Value,
    at: &str,
    out: &mut BTreeMap<String, Value>,
    refused: &mut Vec<String>,
) {
    let (Value::Object(p), Value::Object(g)) = (patch, graph) else {
        refused.push(if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        });
        return;
    };
    for (k, v) in p {
        let here = format!("{at}/{}", escape(k));
        if k == "annotations" {
            if annotatable(at) && !g.contains_key(k) {
                out.insert(at.to_owned(), v.clone());
            } else {
                refused.push(here);
            }
            continue;
        }
        match g.get(k) {
            Some(node @ Value::Object(_)) if v.is_object() => split(node, v, &here, out, refused),
            _ => refused.push(here),
        }
    }
}

/// `patch` (a merge patch over an annotation, RFC 7396) applied to `before`.
fn merged(before: &Annotation, patch: &Value, at: &str) -> Result<Annotation, ServiceError> {
    let field = format!("{at}/annotations");
    let mut v =
        serde_json::to_value(before).map_err(|e| ServiceError::invalid(&field, e.to_string()))?;
    match patch {
        Value::Null => return Ok(Annotation::default()),
        Value::Object(m) => {
            let target = v
                .as_object_mut()
                .ok_or_else(|| ServiceError::invalid(&field, "an object"))?;
            for (k, x) in m {
                if x.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), x.clone());
                }
            }
        }
        _ => {
            return Err(ServiceError::invalid(
                &field,
                "an object of owner, notes and decisions (or null)",
            ));
        }
    }
    let after: Annotation =
        serde_json::from_value(v).map_err(|e| ServiceError::invalid(&field, e.to_string()))?;
    after.check(&field)?;
    Ok(after)
}

impl CuratorService {
    pub fn new(db: Database, policies: Policies) -> Self {
        metrics::describe_counter!(
            "ovasabi_amadeus_annotations_total",
            "Curator annotations of the knowledge graph written"
        );
        Self { db, policies }
    }

    /// Every annotation, by the JSON pointer of its node (no caller: the graph is public).
    ///
    /// # Errors
    /// Database failures, a stored annotation that does not parse.
    pub async fn annotations(&self) -> Result<BTreeMap<String, Annotation>, ServiceError> {
        let rows: Vec<(String, String)> = on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_as(sql.all).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(p, a)| {
                let a = serde_json::from_str(&a).map_err(|e| {
                    ServiceError::Database(sqlx::Error::Decode(
                        format!("annotation {p}: {e}").into(),
                    ))
                })?;
                Ok((p, a))
            })
            .collect()
    }

    /// `graph` with every annotation in place (an `annotations` object in its node; nodes
    /// the graph no longer has are left out).
    ///
    /// # Errors
    /// As [`CuratorService::annotations`].
    pub async fn annotated(&self, graph: &Value) -> Result<Value, ServiceError> {
        let mut g = graph.clone();
        for (pointer, a) in self.annotations().await? {
            if let Some(Value::Object(node)) = g.pointer_mut(&pointer) {
                node.insert(
                    "annotations".to_owned(),
                    serde_json::to_value(&a).unwrap_or(Value::Object(Map::new())),
                );
            }
        }
        Ok(g)
    }

    /// Applies `patch` (a JSON merge patch over `graph` that only touches `annotations`
    /// objects) as `caller` (`annotate` on `kg`): each replaced annotation is backed up first,
    /// then written, with one audit row. Returns every annotation after the change.
    ///
    /// # Errors
    /// [`ServiceError::Conflict`] listing the pointers of generated facts the patch would
    /// change; [`ServiceError::Invalid`] naming a bad annotation; RBAC refusals; database
    /// failures.
    pub async fn annotate(
        &self,
        caller: &Caller,
        graph: &Value,
        patch: &Value,
    ) -> Result<BTreeMap<String, Annotation>, ServiceError> {
        self.policies.require(caller, "kg", "annotate")?;
        if !patch.is_object() {
            return Err(ServiceError::invalid(
                "body",
                "a JSON merge patch (an object)",
            ));
        }
        let mut changes = BTreeMap::new();
        let mut refused = Vec::new();
        split(graph, patch, "", &mut changes, &mut refused);
        if !refused.is_empty() {
            return Err(ServiceError::Conflict {
                message: format!(
                    "generated facts cannot be changed (only `annotations` objects of existing nodes): {}",
                    refused.join(", ")
                ),
            });
        }
        if changes.is_empty() {
            return self.annotations().await;
        }
        let now = now_ms();
        let actor = caller.actor().to_owned();
        let mut before_all = Map::new();
        let mut after_all = Map::new();
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                sqlx::query(sql.lock).execute(&mut *tx).await?;
                for (pointer, change) in &changes {
                    let stored: Option<String> = sqlx::query(sql.one)
                        .bind(pointer)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?;
                    let before: Annotation = match &stored {
                        Some(s) => serde_json::from_str(s).map_err(|e| {
                            ServiceError::Database(sqlx::Error::Decode(
                                format!("annotation {pointer}: {e}").into(),
                            ))
                        })?,
                        None => Annotation::default(),
                    };
                    let after = merged(&before, change, pointer)?;
                    if after == before {
                        continue;
                    }
                    // The value replaced is kept first.
                    sqlx::query(sql.backup)
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(pointer)
                        .bind(stored.as_deref())
                        .bind(&actor)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if after.is_empty() {
                        sqlx::query(sql.delete)
                            .bind(pointer)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        let text = serde_json::to_string(&after)
                            .map_err(|e| ServiceError::invalid("annotations", e.to_string()))?;
                        sqlx::query(sql.upsert)
                            .bind(pointer)
                            .bind(text)
                            .bind(&actor)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    before_all.insert(
                        pointer.clone(),
                        serde_json::to_value(&before).unwrap_or(Value::Null),
                    );
                    after_all.insert(
                        pointer.clone(),
                        serde_json::to_value(&after).unwrap_or(Value::Null),
                    );
                }
                if !after_all.is_empty() {
                    let record = caller
                        .audit("kg.annotate", "knowledge_graph", "annotations")
                        .before(&Value::Object(before_all.clone()))
                        .after(&Value::Object(after_all.clone()));
                    audit::insert!(&mut *tx, sql.audit, &record);
                }
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        if !after_all.is_empty() {
            metrics::counter!("ovasabi_amadeus_annotations_total")
                .increment(after_all.len() as u64);
            tracing::info!(actor = %actor, nodes = after_all.len(), at = %rfc3339(now), "knowledge graph annotated");
        }
        self.annotations().await
    }

    /// How many earlier values of `pointer`'s annotation are backed up.
    ///
    /// # Errors
    /// Database failures.
    pub async fn backups(&self, pointer: &str) -> Result<i64, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_scalar(sql.backups)
                .bind(pointer)
                .fetch_one(pool)
                .await?
        }))
    }
}
