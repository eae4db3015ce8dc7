//! The Amadeus knowledge graph against this build: the committed file is what the code
//! generates, its rules hold, and `impact` agrees with the provider's wiring.

mod common;

use std::path::Path;

use services::amadeus;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

async fn generated() -> serde_json::Value {
    let facts = api::kg::facts(root()).await.expect("facts");
    amadeus::generate(&facts)
}

#[tokio::test]
async fn the_committed_graph_is_what_the_code_generates() {
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("knowledge_graph.json"))
            .expect("knowledge_graph.json"),
    )
    .expect("JSON");
    let diff = amadeus::diff(&committed, &generated().await);
    assert!(
        diff.is_empty(),
        "knowledge_graph.json is stale (run `cargo run -- kg generate`):\n{}",
        diff.join("\n")
    );
    assert_eq!(amadeus::validate(&committed), vec![]);
    // The diagram in docs/knowledge-graph.md is the generated one.
    let doc = std::fs::read_to_string(root().join("docs/knowledge-graph.md")).expect("docs");
    let diagram = format!("```mermaid\n{}```", amadeus::mermaid(&committed, None));
    assert!(
        doc.contains(&diagram),
        "docs/knowledge-graph.md's diagram is stale: paste `cargo run -- kg mermaid` into it"
    );
}

#[tokio::test]
async fn impact_agrees_with_the_wiring_and_generation_is_repeatable() {
    let facts = api::kg::facts(root()).await.expect("facts");
    let graph = amadeus::generate(&facts);
    assert_eq!(graph, generated().await, "two generations are identical");
    let edges = facts.wiring.edges();
    assert!(!edges.is_empty());
    for (service, dep) in &edges {
        let hit = amadeus::impact(&graph, dep).unwrap_or_else(|| panic!("{dep} is in the graph"));
        assert!(
            hit.contains_key(*service),
            "{service} uses {dep}: impact({dep}) = {hit:?}"
        );
        assert_eq!(hit[*service].last().map(|s| s.2.as_str()), Some(*service));
    }
    // Every registered service has what the rules ask, endpoints from the OpenAPI document
    // and the gRPC descriptors, and its tables.
    for r in &facts.registrations {
        let s = &graph["services"][r.name];
        assert!(s.is_object(), "{}", r.name);
        let grpc: Vec<&str> = s["grpc"]
            .as_array()
            .expect("grpc")
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        for g in &r.endpoints.grpc {
            assert!(grpc.contains(g), "{}: {g} is in the descriptors", r.name);
        }
    }
    assert!(
        graph["services"]["campaign"]["tables"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        graph["redis_practices"]["keys"]
            .as_array()
            .is_some_and(|k| k.len() >= 11)
    );
    assert!(
        graph["metadata_fields"]
            .as_array()
            .is_some_and(|m| m.iter().any(|f| f == "scheduling"))
    );
}

#[test]
fn backups_are_kept_bounded_and_rollback_restores_the_newest() {
    let dir = std::env::temp_dir().join(format!("ovasabi-kg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (file, backups) = (dir.join("kg.json"), dir.join("backups"));
    let v = |n: u32| serde_json::json!({"version": format!("1.{n}"), "n": n});
    assert_eq!(
        api::kg::write(&file, &backups, 2, &v(1)).expect("write"),
        api::kg::Written::Replaced(None)
    );
    assert_eq!(
        api::kg::write(&file, &backups, 2, &v(1)).expect("write"),
        api::kg::Written::Unchanged
    );
    for n in 2..=4 {
        assert!(matches!(
            api::kg::write(&file, &backups, 2, &v(n)).expect("write"),
            api::kg::Written::Replaced(Some(_))
        ));
    }
    let kept = std::fs::read_dir(&backups).expect("backups").count();
    assert_eq!(kept, 2, "only the last 2 backups");
    api::kg::rollback(&file, &backups).expect("rollback");
    let restored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
    assert_eq!(restored["n"], 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_node_serves_the_graph_with_live_facts() {
    let node = common::TestNode::start().await;
    let (s, g) = node.call_as(None, "GET", "/api/kg", None).await;
    assert_eq!(s, 200);
    assert_eq!(g["live"]["healthy"]["user"], true, "{}", g["live"]);
    assert!(g["live"]["pattern_runs"].is_object(), "{}", g["live"]);
    let (s, i) = node.call_as(None, "GET", "/api/kg/impact/user", None).await;
    assert_eq!(s, 200, "{i}");
    assert!(
        i["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["dependent"] == "pattern referral.reward")),
        "a pattern with a step in a service that uses user: {i}"
    );
    assert!(g["services"]["campaign"].is_object());
    let (s, u) = node
        .call_as(None, "GET", "/api/kg/services/user", None)
        .await;
    assert_eq!(s, 200);
    assert!(
        u["used_by"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "admin")),
        "{u}"
    );
    let (s, b) = node
        .call_as(None, "GET", "/api/kg/services/nope", None)
        .await;
    common::assert_error(s, &b, 404, "not_found");
    let (s, i) = node
        .call_as(None, "GET", "/api/kg/impact/service_user_master", None)
        .await;
    assert_eq!(s, 200, "{i}");
    assert!(
        i["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["dependent"] == "admin")),
        "{i}"
    );
    let (s, i) = node
        .call_as(
            None,
            "GET",
            "/api/kg/impact/GET%20%2Fapi%2Fusers%2Fme",
            None,
        )
        .await;
    assert_eq!(
        (s, i["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "an endpoint: nothing depends on it"
    );
    let (s, b) = node
        .call_as(None, "GET", "/api/kg/impact/nothing", None)
        .await;
    common::assert_error(s, &b, 404, "not_found");
    let text = node
        .client
        .get(node.url("/api/kg/mermaid?focus=user"))
        .send()
        .await
        .expect("mermaid")
        .text()
        .await
        .expect("text");
    assert!(
        text.starts_with("flowchart LR") && text.contains("admin --> user"),
        "{text}"
    );
    let (s, b) = node
        .call_as(None, "GET", "/api/kg/mermaid?focus=nope", None)
        .await;
    common::assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(None, "GET", "/api/kg/mermaid?bogus=1", None)
        .await;
    common::assert_error(s, &b, 400, "invalid_argument");
}

#[tokio::test]
async fn curators_annotate_nodes_but_never_change_generated_facts() {
    let node = common::TestNode::start().await;
    let (_, user) = common::user(&node, "curious").await;
    let patch = serde_json::json!({
        "services": {"user": {"annotations": {"owner": "identity team", "decisions": ["tokens are JWT"]}}},
        "annotations": {"notes": "the platform, as generated"}
    });
    let (s, b) = node
        .call_as(Some(&user), "PATCH", "/api/kg", Some(patch.clone()))
        .await;
    common::assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(None, "PATCH", "/api/kg", Some(patch.clone()))
        .await;
    common::assert_error(s, &b, 401, "unauthenticated");
    let (s, a) = node.call("PATCH", "/api/kg", Some(patch)).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["/services/user"]["owner"], "identity team", "{a}");
    assert_eq!(a[""]["notes"], "the platform, as generated", "{a}");
    let (_, g) = node.call_as(None, "GET", "/api/kg", None).await;
    assert_eq!(
        g["services"]["user"]["annotations"]["decisions"],
        serde_json::json!(["tokens are JWT"])
    );
    assert_eq!(
        g["services"]["user"]["version"],
        env!("CARGO_PKG_VERSION"),
        "facts unchanged"
    );
    assert_eq!(g["annotations"]["notes"], "the platform, as generated");
    // A merge patch: null removes a field; the rest stays.
    let (s, a) = node
        .call("PATCH", "/api/kg", Some(serde_json::json!({"services": {"user": {"annotations": {"decisions": null, "notes": "see docs/knowledge-graph.md"}}}})))
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["/services/user"],
        serde_json::json!({"owner": "identity team", "notes": "see docs/knowledge-graph.md"})
    );
    // Generated facts: a 409 listing each pointer.
    let (s, b) = node
        .call("PATCH", "/api/kg", Some(serde_json::json!({"services": {"user": {"version": "9", "annotations": {"owner": "x"}}}, "invented": {"a": 1}})))
        .await;
    common::assert_error(s, &b, 409, "conflict");
    let m = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("/services/user/version") && m.contains("/invented"),
        "{m}"
    );
    let (_, g) = node.call_as(None, "GET", "/api/kg", None).await;
    assert_eq!(
        g["services"]["user"]["annotations"]["owner"], "identity team",
        "a refused patch changes nothing"
    );
    // Bad annotations name the field.
    for bad in [
        serde_json::json!({"services": {"user": {"annotations": {"owner": 5}}}}),
        serde_json::json!({"services": {"user": {"annotations": {"colour": "red"}}}}),
        serde_json::json!({"services": {"user": {"annotations": {"owner": "  "}}}}),
        serde_json::json!({"services": {"user": {"annotations": "owner"}}}),
    ] {
        let (s, b) = node.call("PATCH", "/api/kg", Some(bad.clone())).await;
        common::assert_error(s, &b, 400, "invalid_argument");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("/services/user/annotations"),
            "{bad}: {b}"
        );
    }
    let (s, b) = node
        .raw("PATCH", "/api/kg", "application/json", "[1]")
        .await;
    assert!(s == 400 || s == 409, "{s} {b}");
    let (s, b) = node.raw("PATCH", "/api/kg", "text/plain", "{}").await;
    common::assert_error(s, &b, 415, "unsupported_media_type");
    // Removing an annotation altogether; each change is audited.
    let (s, a) = node
        .call(
            "PATCH",
            "/api/kg",
            Some(serde_json::json!({"services": {"user": {"annotations": null}}})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert!(a.get("/services/user").is_none(), "{a}");
    assert_eq!(
        common::audit_actions(&node, "annotations").await,
        ["kg.annotate", "kg.annotate", "kg.annotate"]
    );
}
