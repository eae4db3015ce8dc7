//! Curator annotations of the knowledge graph on both backends: each replaced value backed up
//! first, the graph served with them in place, generated facts refused, the audit row.

mod common;

use std::time::Duration;

use serde_json::json;
use services::ServiceError;
use services::security::{Caller, Role};

#[tokio::test]
async fn annotations_are_backed_up_before_each_change_and_facts_stay() {
    for t in common::databases("amadeus").await {
        let p = common::provider(&t.db).await;
        let admin = Caller::user("root", vec![Role::Admin]);
        let graph = json!({"services": {"user": {"version": "1", "depends_on": ["database"]}}, "patterns": []});
        for owner in ["a team", "b team", "c team"] {
            let patch = json!({"services": {"user": {"annotations": {"owner": owner}}}});
            let a = p
                .curator
                .annotate(&admin, &graph, &patch)
                .await
                .expect("annotate");
            assert_eq!(a["/services/user"].owner.as_deref(), Some(owner));
        }
        // The same value again changes nothing and backs nothing up.
        let same = json!({"services": {"user": {"annotations": {"owner": "c team"}}}});
        p.curator
            .annotate(&admin, &graph, &same)
            .await
            .expect("annotate");
        assert_eq!(
            p.curator.backups("/services/user").await.expect("backups"),
            3
        );
        let served = p.curator.annotated(&graph).await.expect("annotated");
        assert_eq!(
            served["services"]["user"]["annotations"],
            json!({"owner": "c team"})
        );
        assert_eq!(served["services"]["user"]["version"], "1");
        match p
            .curator
            .annotate(
                &admin,
                &graph,
                &json!({"services": {"user": {"depends_on": []}}, "patterns": {"x": 1}}),
            )
            .await
        {
            Err(ServiceError::Conflict { message }) => {
                assert!(
                    message.contains("/services/user/depends_on") && message.contains("/patterns"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Not on a generated map (it would read as a service named "annotations").
        match p
            .curator
            .annotate(
                &admin,
                &graph,
                &json!({"services": {"annotations": {"owner": "x"}}}),
            )
            .await
        {
            Err(ServiceError::Conflict { message }) => {
                assert!(message.contains("/services/annotations"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.curator
                .annotate(&Caller::user("u", vec![Role::User]), &graph, &same)
                .await,
            Err(ServiceError::Forbidden { .. })
        ));
        let audit = p
            .audit
            .query(
                &Caller::system(),
                &services::security::AuditFilter {
                    action: Some("kg.annotate".to_owned()),
                    actor: None,
                    entity_type: None,
                    entity_id: None,
                    since: None,
                    until: None,
                },
                None,
                None,
            )
            .await
            .expect("audit");
        assert_eq!(audit.items.len(), 3, "one row per change");
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}
