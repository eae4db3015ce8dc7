//! The campaign service on a real SQLite database (a fresh file per test), with a broadcaster
//! that records what the service asked the engine to do.

mod common;

use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{Value, json, value::RawValue};
use services::campaign::{
    BatchEvent, BoxFuture, BroadcastError, Broadcaster, CampaignFilter, CampaignService,
    LiveCampaign, NewCampaign, Status,
};
use services::security::{Caller, Policies, Role};
use services::{Database, ServiceError};

/// The node itself: every permission.
static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);

/// Records what the service asked the engine, and which campaigns the engine runs.
#[derive(Default)]
struct Recorder(
    Mutex<Vec<String>>,
    Mutex<std::collections::BTreeSet<String>>,
);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().expect("lock").push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
    fn live(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.1.lock().expect("lock")
    }
}

impl Broadcaster for Recorder {
    fn upsert(&self, c: LiveCampaign) -> BoxFuture<'_, Result<(), BroadcastError>> {
        self.live().insert(c.id.clone());
        self.push(format!(
            "upsert {} {} {}",
            c.frequency_hz,
            c.client_events,
            c.state.map_or("-".into(), |s| s.get().to_owned())
        ));
        Box::pin(async { Ok(()) })
    }
    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), BroadcastError>> {
        self.live().remove(id);
        self.push("end".into());
        Box::pin(async { Ok(()) })
    }
    fn state(&self, _id: &str, state: Box<RawValue>) -> BoxFuture<'_, Result<(), BroadcastError>> {
        self.push(format!("state {}", state.get()));
        Box::pin(async { Ok(()) })
    }
    fn publish(
        &self,
        _id: &str,
        name: &str,
        _d: Box<RawValue>,
        immediate: bool,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        self.push(format!("publish {name} {immediate}"));
        Box::pin(async { Ok(7) })
    }
    fn publish_batch(
        &self,
        _id: &str,
        events: Vec<BatchEvent>,
    ) -> BoxFuture<'_, Result<std::ops::RangeInclusive<u64>, BroadcastError>> {
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        self.push(format!("batch {}", names.join(",")));
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        Box::pin(async move { Ok(8..=7 + n) })
    }
    fn running(&self) -> Vec<String> {
        self.live().iter().cloned().collect()
    }
    fn message(
        &self,
        _id: &str,
        user: &str,
        _n: &str,
        _d: Box<RawValue>,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        self.push(format!("message {user}"));
        Box::pin(async { Ok(7) })
    }
}

struct Fixture {
    svc: CampaignService,
    rec: Arc<Recorder>,
    db: Database,
    home: common::TestDb,
}

impl Fixture {
    async fn with(home: common::TestDb) -> Self {
        let db = home.db.clone();
        let rec = Arc::new(Recorder::default());
        Self {
            svc: CampaignService::new(
                db.clone(),
                rec.clone(),
                Policies::load(db.clone()).await.expect("policies"),
            ),
            rec,
            db,
            home,
        }
    }

    async fn finish(self) {
        self.home.finish().await;
    }
}

/// The suite runs on SQLite always, and on Postgres when `OVASABI_TEST_DATABASE_URL` is set
/// (in a schema of its own, dropped at the end).
async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases("svc").await {
        out.push(Fixture::with(home).await);
    }
    out
}

fn new(name: &str, body: Value) -> NewCampaign {
    let mut v = body;
    v["name"] = json!(name);
    serde_json::from_value(v).expect("valid create body")
}

#[tokio::test]
async fn create_get_list_and_paginate() {
    for f in fixtures().await {
        let backend = f.db.backend();
        eprintln!("backend: {backend}");
        let c = f
            .svc
            .create(
                &SYS,
                new(
                    "Spring Sale",
                    json!({"metadata": {"scheduling": {"frequency": 5}}, "state": {"score": 0}}),
                ),
            )
            .await
            .expect("create");
        assert_eq!(c.slug, "spring-sale");
        assert_eq!(c.status, Status::Active);
        assert_eq!(c.frequency_hz(), 5.0);
        assert_eq!(f.rec.take(), vec![r#"upsert 5 false {"score":0}"#]);
        assert_eq!(
            f.svc.get(&SYS, "spring-sale").await.expect("by slug").id,
            c.id
        );
        assert_eq!(
            f.svc.get(&SYS, &c.id).await.expect("by id").slug,
            "spring-sale"
        );
        let draft = f
            .svc
            .create(&SYS, new("Later", json!({"status": "draft"})))
            .await
            .expect("draft");
        assert!(f.rec.take().is_empty(), "a draft does not broadcast");
        for i in 0..5 {
            f.svc
                .create(&SYS, new(&format!("c{i}"), json!({})))
                .await
                .expect("create");
        }
        let p1 = f
            .svc
            .list(&SYS, &CampaignFilter::default(), Some(3), None)
            .await
            .expect("page 1");
        assert_eq!(p1.items.len(), 3);
        let p2 = f
            .svc
            .list(
                &SYS,
                &CampaignFilter::default(),
                Some(3),
                p1.next_cursor.as_deref(),
            )
            .await
            .expect("page 2");
        let p3 = f
            .svc
            .list(
                &SYS,
                &CampaignFilter::default(),
                Some(3),
                p2.next_cursor.as_deref(),
            )
            .await
            .expect("page 3");
        assert_eq!(p3.items.len(), 1);
        assert!(p3.next_cursor.is_none());
        let mut ids: Vec<_> = [p1.items, p2.items, p3.items]
            .concat()
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 7, "pages neither repeat nor skip");
        let drafts = f
            .svc
            .list(
                &SYS,
                &CampaignFilter {
                    status: Some(Status::Draft),
                    ..CampaignFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("filter");
        assert_eq!(drafts.items.len(), 1);
        assert_eq!(drafts.items[0].id, draft.id);
        assert_eq!(f.svc.active().await.expect("active").len(), 6);
        f.finish().await;
    }
}

/// `{"a":{"a":...1...}}`, `levels` objects deep.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    for f in fixtures().await {
        let backend = f.db.backend();
        eprintln!("backend: {backend}");
        let cases = [
            (new("", json!({})), "name"),
            (new("x", json!({"slug": "Bad Slug"})), "slug"),
            (
                new("x", json!({"metadata": {"scheduling": {"frequency": 0}}})),
                "metadata.scheduling.frequency",
            ),
            (
                new(
                    "x",
                    json!({"metadata": {"scheduling": {"frequency": 1000}}}),
                ),
                "metadata.scheduling.frequency",
            ),
            (new("x", json!({"metadata": {"nope": 1}})), "metadata.nope"),
            (new("x", json!({"state": [1, 2]})), "state"),
            (new("x", json!({"status": "ended"})), "status"),
            // Deeper than gRPC clients can decode (32 levels pass: see the model tests).
            (new("x", json!({"state": nested(33)})), "state"),
            (
                new("x", json!({"metadata": {"service_specific": nested(32)}})),
                "metadata",
            ),
        ];
        for (body, field) in cases {
            match f.svc.create(&SYS, body).await {
                Err(ServiceError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
        assert!(
            f.svc
                .list(&SYS, &CampaignFilter::default(), None, None)
                .await
                .expect("list")
                .items
                .is_empty()
        );
        assert!(f.rec.take().is_empty());
        assert!(
            serde_json::from_value::<NewCampaign>(json!({"name": "x", "extra": 1})).is_err(),
            "unknown fields are refused"
        );
        f.svc
            .create(&SYS, new("Dup", json!({})))
            .await
            .expect("first");
        assert!(matches!(
            f.svc.create(&SYS, new("Dup", json!({}))).await,
            Err(ServiceError::Duplicate { .. })
        ));
        assert!(matches!(
            f.svc.get(&SYS, "nope").await,
            Err(ServiceError::NotFound { .. })
        ));
        assert!(matches!(
            f.svc
                .list(&SYS, &CampaignFilter::default(), Some(0), None)
                .await,
            Err(ServiceError::Invalid { .. })
        ));
        let sql = "x'); DROP TABLE service_campaign_main; --";
        let c = f
            .svc
            .create(&SYS, new(sql, json!({"slug": "inject"})))
            .await
            .expect("stored verbatim");
        assert_eq!(f.svc.get(&SYS, "inject").await.expect("get").name, sql);
        assert_eq!(c.name, sql);
        f.finish().await;
    }
}

#[tokio::test]
async fn update_retimes_and_ends() {
    for f in fixtures().await {
        let backend = f.db.backend();
        eprintln!("backend: {backend}");
        let c = f
            .svc
            .create(&SYS, new("Live", json!({})))
            .await
            .expect("create");
        f.rec.take();
        let u = f
            .svc
            .update(
                &SYS,
                &c.id,
                &json!({"metadata": {"scheduling": {"frequency": 10}}}),
            )
            .await
            .expect("patch");
        assert_eq!(u.frequency_hz(), 10.0);
        assert_eq!(f.rec.take(), vec!["upsert 10 false -"]);
        f.svc
            .update(&SYS, &c.id, &json!({"name": "Renamed"}))
            .await
            .expect("rename");
        assert!(
            f.rec.take().is_empty(),
            "a rename does not touch the engine"
        );
        for bad in [
            json!({"metadata": {"scheduling": {"frequency": 500}}}),
            json!({"unknown": 1}),
            json!({"status": "paused"}),
            json!([1]),
        ] {
            assert!(
                matches!(
                    f.svc.update(&SYS, &c.id, &bad).await,
                    Err(ServiceError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            f.svc.update(&SYS, &c.id, &json!({"status": "draft"})).await,
            Err(ServiceError::Conflict { .. })
        ));
        assert_eq!(
            f.svc.get(&SYS, &c.id).await.expect("get").frequency_hz(),
            10.0,
            "refused patches change nothing"
        );
        f.svc.end(&SYS, &c.id).await.expect("end");
        assert_eq!(f.rec.take(), vec!["end"]);
        assert!(matches!(
            f.svc.end(&SYS, &c.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(matches!(
            f.svc
                .publish(&SYS, &c.id, "e", RawValue::NULL.to_owned(), false)
                .await,
            Err(ServiceError::Conflict { .. })
        ));
        let d = f
            .svc
            .create(&SYS, new("Draft", json!({"status": "draft"})))
            .await
            .expect("draft");
        f.svc
            .update(&SYS, &d.id, &json!({"status": "active"}))
            .await
            .expect("activate");
        assert_eq!(f.rec.take(), vec!["upsert 1 false {}"]);
        f.finish().await;
    }
}

#[tokio::test]
async fn state_replace_and_merge_patch() {
    for f in fixtures().await {
        let backend = f.db.backend();
        eprintln!("backend: {backend}");
        let c = f
            .svc
            .create(&SYS, new("S", json!({"state": {"a": 1, "b": {"c": 2}}})))
            .await
            .expect("create");
        f.rec.take();
        let s = f
            .svc
            .change_state(
                &SYS,
                &c.id,
                &json!({"b": {"c": null, "d": 3}, "e": 4}),
                false,
            )
            .await
            .expect("patch");
        assert_eq!(s, json!({"a": 1, "b": {"d": 3}, "e": 4}));
        let s = f
            .svc
            .change_state(&SYS, &c.id, &json!({"z": 0}), true)
            .await
            .expect("put");
        assert_eq!(s, json!({"z": 0}));
        assert_eq!(
            f.svc.get(&SYS, &c.id).await.expect("get").state,
            json!({"z": 0})
        );
        assert_eq!(
            f.rec.take(),
            vec![r#"state {"a":1,"b":{"d":3},"e":4}"#, r#"state {"z":0}"#]
        );
        assert!(matches!(
            f.svc.change_state(&SYS, &c.id, &json!(5), true).await,
            Err(ServiceError::Invalid { .. })
        ));
        // Concurrent patches serialise: none is lost.
        let futs: Vec<_> = (0..20)
            .map(|i| {
                let svc = f.svc.clone();
                let id = c.id.clone();
                tokio::spawn(async move {
                    svc.change_state(&SYS, &id, &json!({format!("k{i}"): i}), false)
                        .await
                })
            })
            .collect();
        for h in futs {
            h.await.expect("task").expect("patch");
        }
        let state = f.svc.get(&SYS, &c.id).await.expect("get").state;
        assert_eq!(state.as_object().expect("object").len(), 21);
        f.finish().await;
    }
}

#[tokio::test]
async fn every_table_is_named_service_service_entity() {
    for f in fixtures().await {
        let tables = f.db.tables().await.expect("tables");
        assert!(
            !tables.is_empty(),
            "{}: migrations created tables",
            f.db.backend()
        );
        // The services of DESIGN.md §1.
        const SERVICES: &[&str] = &[
            "campaign",
            "user",
            "content",
            "notification",
            "referral",
            "security",
            "commerce",
            "babel",
            "localization",
            "search",
            "admin",
            "analytics",
            "moderation",
            "talent",
            "nexus",
            // Not in DESIGN.md §1's list; its issue names its tables service_scheduler_*.
            "scheduler",
            // The Amadeus knowledge graph of DESIGN.md's layout: its curator annotations.
            "amadeus",
        ];
        for t in &tables {
            let parts: Vec<&str> = t.split('_').collect();
            assert!(
                parts.len() >= 3
                    && parts[0] == "service"
                    && SERVICES.contains(&parts[1])
                    && parts[2..].iter().all(|p| !p.is_empty()),
                "{}: table {t:?} is not service_{{service}}_{{entity}}",
                f.db.backend()
            );
        }
        for want in [
            "service_campaign_main",
            "service_user_master",
            "service_user_role",
            "service_security_audit",
            "service_security_policy",
            "service_content_main",
            "service_content_comment",
            "service_content_reaction",
        ] {
            assert!(
                tables.iter().any(|t| t == want),
                "{}: {want} missing",
                f.db.backend()
            );
        }
        f.finish().await;
    }
}

#[tokio::test]
async fn roles_are_enforced_and_every_change_is_audited_in_its_transaction() {
    use services::security::audit::{AuditFilter, AuditLog};
    for f in fixtures().await {
        let policies = Policies::load(f.db.clone()).await.expect("policies");
        let log = AuditLog::new(f.db.clone(), policies);
        let anon = Caller::anonymous();
        let viewer = Caller::user("viewer", vec![Role::User]);
        let manager = Caller::user("mgr", vec![Role::User, Role::CampaignManager])
            .from_addr("127.0.0.9:5000");

        assert!(matches!(
            f.svc.create(&anon, new("No", json!({}))).await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.svc.create(&viewer, new("No", json!({}))).await,
            Err(ServiceError::Forbidden { .. })
        ));
        let c = f
            .svc
            .create(
                &manager,
                new("Audited", json!({"starts_at": "2030-01-01T00:00:00Z"})),
            )
            .await
            .expect("a manager creates");
        assert_eq!(c.starts_at.as_deref(), Some("2030-01-01T00:00:00.000Z"));
        assert!(f.svc.get(&anon, &c.id).await.is_ok(), "anyone reads");
        assert!(matches!(
            f.svc.update(&viewer, &c.id, &json!({"name": "x"})).await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(matches!(
            f.svc
                .publish(
                    &viewer,
                    &c.id,
                    "e",
                    RawValue::from_string("1".into()).expect("raw"),
                    false
                )
                .await,
            Err(ServiceError::Forbidden { .. })
        ));
        f.svc
            .update(
                &manager,
                &c.id,
                &json!({"metadata": {"scheduling": {"frequency": 4}}}),
            )
            .await
            .expect("update");
        // A refused change (an end before the stored start: a conflict with the campaign)
        // writes neither the change nor an audit row.
        assert!(matches!(
            f.svc
                .update(&manager, &c.id, &json!({"ends_at": "2029-01-01T00:00:00Z"}))
                .await,
            Err(ServiceError::Conflict { .. })
        ));
        f.svc
            .change_state(&manager, &c.id, &json!({"k": 1}), false)
            .await
            .expect("state");
        f.svc.end(&manager, &c.id).await.expect("end");

        let filter = AuditFilter {
            entity_type: Some("campaign".into()),
            entity_id: Some(c.id.clone()),
            ..AuditFilter::default()
        };
        let rows = log
            .query(&SYS, &filter, None, None)
            .await
            .expect("audit")
            .items;
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "campaign.create",
                "campaign.update",
                "campaign.patch_state",
                "campaign.end"
            ]
        );
        assert!(rows.iter().all(|r| r.actor == "mgr"));
        assert!(
            rows.iter()
                .all(|r| r.client_addr.as_deref() == Some("127.0.0.9:5000"))
        );
        assert_eq!(rows[0].before, None);
        assert_eq!(
            rows[1]
                .before
                .as_ref()
                .and_then(|b| b.pointer("/metadata/scheduling/frequency")),
            None
        );
        assert_eq!(
            rows[1]
                .after
                .as_ref()
                .and_then(|b| b.pointer("/metadata/scheduling/frequency")),
            Some(&json!(4))
        );
        assert_eq!(
            rows[2].after.as_ref().and_then(|b| b.pointer("/state/k")),
            Some(&json!(1))
        );
        assert_eq!(
            rows[3].after.as_ref().and_then(|b| b.get("status")),
            Some(&json!("ended"))
        );
        // Filters narrow; a viewer may not read the log.
        let by_actor = AuditFilter {
            actor: Some("nobody".into()),
            ..AuditFilter::default()
        };
        assert!(
            log.query(&SYS, &by_actor, None, None)
                .await
                .expect("q")
                .items
                .is_empty()
        );
        let future = AuditFilter {
            since: Some("2100-01-01T00:00:00Z".into()),
            ..AuditFilter::default()
        };
        assert!(
            log.query(&SYS, &future, None, None)
                .await
                .expect("q")
                .items
                .is_empty()
        );
        let bad = AuditFilter {
            since: Some("yesterday".into()),
            ..AuditFilter::default()
        };
        assert!(matches!(
            log.query(&SYS, &bad, None, None).await,
            Err(ServiceError::Invalid { .. })
        ));
        assert!(matches!(
            log.query(&viewer, &filter, None, None).await,
            Err(ServiceError::Forbidden { .. })
        ));
        let pages: Vec<_> = futures_util::StreamExt::collect(
            log.export(&SYS, &filter, None).await.expect("export"),
        )
        .await;
        assert_eq!(pages.len(), 1, "one page, no next");
        let lines = pages.into_iter().next().expect("page").expect("lines");
        assert_eq!(lines.len(), 4);
        for l in &lines {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            assert_eq!(v["entity_id"], json!(c.id));
        }
        f.finish().await;
    }
}

#[tokio::test]
async fn lists_filter_by_tag_and_text_and_schedules_start_and_end_campaigns() {
    for f in fixtures().await {
        f.svc
            .create(
                &SYS,
                new(
                    "Spring Sale",
                    json!({"metadata": {"tags": ["promo", "spring"]}}),
                ),
            )
            .await
            .expect("a");
        f.svc
            .create(
                &SYS,
                new(
                    "Winter 100% off_now",
                    json!({"metadata": {"tags": ["promo"]}}),
                ),
            )
            .await
            .expect("b");
        f.svc
            .create(&SYS, new("Plain", json!({})))
            .await
            .expect("c");
        let names = |p: services::campaign::Page<services::campaign::Campaign>| {
            p.items.into_iter().map(|c| c.name).collect::<Vec<_>>()
        };
        let by = |tag: Option<&str>, query: Option<&str>| CampaignFilter {
            tag: tag.map(str::to_owned),
            query: query.map(str::to_owned),
            ..CampaignFilter::default()
        };
        let l = f
            .svc
            .list(&SYS, &by(Some("promo"), None), None, None)
            .await
            .expect("tag");
        assert_eq!(names(l), ["Spring Sale", "Winter 100% off_now"]);
        let l = f
            .svc
            .list(&SYS, &by(Some("spring"), Some("SALE")), None, None)
            .await
            .expect("both");
        assert_eq!(names(l), ["Spring Sale"]);
        // LIKE wildcards are literal.
        let l = f
            .svc
            .list(&SYS, &by(None, Some("100%")), None, None)
            .await
            .expect("percent");
        assert_eq!(names(l), ["Winter 100% off_now"]);
        let l = f
            .svc
            .list(&SYS, &by(None, Some("_")), None, None)
            .await
            .expect("underscore");
        assert_eq!(names(l), ["Winter 100% off_now"]);
        let l = f
            .svc
            .list(&SYS, &by(Some("' OR 1=1 --"), None), None, None)
            .await
            .expect("inject");
        assert!(l.items.is_empty());
        assert!(matches!(
            f.svc.list(&SYS, &by(Some(""), None), None, None).await,
            Err(ServiceError::Invalid { .. })
        ));

        f.finish().await;
    }
}

#[tokio::test]
async fn reconcile_starts_missed_starts_and_ends_missed_ends() {
    for f in fixtures().await {
        let a = f.svc.create(&SYS, new("A", json!({}))).await.expect("a");
        let b = f.svc.create(&SYS, new("B", json!({}))).await.expect("b");
        f.svc.end(&SYS, &b.id).await.expect("end b");
        assert_eq!(f.svc.reconcile().await.expect("nothing to fix"), 0);
        // The engine missed A's start and B's end (lifecycle messages lost on the bus).
        f.rec.live().remove(&a.id);
        f.rec.live().insert(b.id.clone());
        f.rec.live().insert("never-existed".into());
        f.rec.take();
        assert_eq!(f.svc.reconcile().await.expect("fix"), 3);
        assert_eq!(
            f.rec.running(),
            {
                let mut v = vec![a.id.clone()];
                v.sort();
                v
            },
            "A runs, B and the unknown one do not"
        );
        assert_eq!(f.svc.reconcile().await.expect("settled"), 0);
        f.finish().await;
    }
}

#[tokio::test]
async fn a_batch_publish_is_one_call_to_the_engine_and_one_durable_audit_row() {
    use services::security::audit::{AuditFilter, AuditLog};
    for f in fixtures().await {
        let policies = Policies::load(f.db.clone()).await.expect("policies");
        let log = AuditLog::new(f.db.clone(), policies);
        let viewer = Caller::user("viewer", vec![Role::User]);
        let manager = Caller::user("mgr", vec![Role::User, Role::CampaignManager]);
        let c = f
            .svc
            .create(&manager, new("Batch", json!({})))
            .await
            .expect("create");
        f.rec.take();
        let event = |name: &str, data: &str, immediate: bool| BatchEvent {
            name: name.to_owned(),
            data: RawValue::from_string(data.to_owned()).expect("raw"),
            immediate,
        };
        let seqs = f
            .svc
            .publish_batch(
                &manager,
                &c.id,
                vec![
                    event("goal", r#"{"t":1}"#, true),
                    event("goal", "2", false),
                    event("card", "[3]", false),
                ],
            )
            .await
            .expect("batch");
        assert_eq!(seqs, 8..=10);
        assert_eq!(f.rec.take(), ["batch goal,goal,card"], "one engine call");

        // Refused before the engine: none, too many, a viewer; and a campaign not live.
        for events in [
            Vec::new(),
            (0..=services::campaign::MAX_BATCH_EVENTS)
                .map(|_| event("e", "1", false))
                .collect(),
        ] {
            let n = events.len();
            match f.svc.publish_batch(&manager, &c.id, events).await {
                Err(ServiceError::Invalid { field, message }) => {
                    assert_eq!(field, "events");
                    assert!(message.contains(&n.to_string()), "{message}");
                }
                other => panic!("{n} events: {other:?}"),
            }
        }
        assert!(matches!(
            f.svc
                .publish_batch(&viewer, &c.id, vec![event("e", "1", false)])
                .await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(matches!(
            f.svc
                .publish_batch(&Caller::anonymous(), &c.id, vec![event("e", "1", false)])
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.svc
                .publish_batch(&manager, "no-such", vec![event("e", "1", false)])
                .await,
            Err(ServiceError::NotFound { .. })
        ));
        assert!(f.rec.take().is_empty(), "nothing reached the engine");
        f.svc.end(&manager, &c.id).await.expect("end");
        assert!(matches!(
            f.svc
                .publish_batch(&manager, &c.id, vec![event("e", "1", false)])
                .await,
            Err(ServiceError::Conflict { .. })
        ));

        // No deferred writer here: the row is in the database when the call returns.
        let filter = AuditFilter {
            entity_id: Some(c.id.clone()),
            action: Some("campaign.publish_batch".into()),
            ..AuditFilter::default()
        };
        let rows = log
            .query(&SYS, &filter, None, None)
            .await
            .expect("audit")
            .items;
        assert_eq!(rows.len(), 1, "one row per call");
        assert_eq!(rows[0].actor, "mgr");
        assert_eq!(
            rows[0].after,
            Some(json!({
                "count": 3, "first_seq": 8, "last_seq": 10, "bytes": 11, "immediate": 1,
                "names": ["card", "goal"],
            }))
        );
        f.finish().await;
    }
}
