use super::*;
use crate::provider::{Endpoints, registrations};

/// Facts with the real registrations and a small wiring: campaign → user → database.
fn facts(wiring: Wiring) -> Facts {
    Facts {
        registrations: registrations(),
        wiring,
        rest: vec![
            RestOperation {
                method: "get".into(),
                path: "/api/campaigns/{id}".into(),
                operation_id: "get_campaign".into(),
                tag: "campaigns".into(),
            },
            RestOperation {
                method: "post".into(),
                path: "/api/auth/login".into(),
                operation_id: "login".into(),
                tag: "auth".into(),
            },
        ],
        grpc: vec![GrpcService {
            name: "user.v0.UserService".into(),
            methods: vec!["Login".into()],
        }],
        tables: vec![
            Table {
                name: "service_user_main".into(),
                columns: vec!["id TEXT".into()],
            },
            Table {
                name: "service_campaign_main".into(),
                columns: vec!["id TEXT".into()],
            },
        ],
        redis: vec![],
        components: vec![],
        metadata_fields: vec!["scheduling".into()],
        migrations: vec!["0001_campaign.sql".into()],
        operations: vec![NexusOperation {
            name: "campaign.create".into(),
            service: "campaign".into(),
            idempotent: false,
            description: "creates".into(),
        }],
        patterns: vec![NexusPattern {
            name: "campaign.launch".into(),
            version: 1,
            description: "launches".into(),
            steps: vec![(
                "create".into(),
                "campaign.create".into(),
                "campaign".into(),
                None,
            )],
            events: vec![],
            cron: None,
        }],
    }
}

fn wiring(edges: &[(&'static str, &'static str)]) -> Wiring {
    let mut w = Wiring::default();
    for (to, dep) in edges {
        w.record(to, dep);
    }
    w
}

#[test]
fn generation_is_deterministic_and_follows_the_facts() {
    let w = wiring(&[("campaign", "user"), ("user", "database")]);
    let a = generate(&facts(w.clone()));
    let mut shuffled = facts(w);
    shuffled.tables.reverse();
    shuffled.rest.reverse();
    assert_eq!(
        a,
        generate(&shuffled),
        "the order of the facts does not matter"
    );
    assert_eq!(a["services"]["campaign"]["depends_on"], json!(["user"]));
    assert_eq!(
        a["services"]["campaign"]["tables"],
        json!(["service_campaign_main"])
    );
    assert_eq!(a["services"]["user"]["rest"][0]["operation_id"], "login");
    assert_eq!(
        a["services"]["user"]["grpc"][0]["name"],
        "user.v0.UserService"
    );
    assert!(a["version"].as_str().is_some_and(|v| v.starts_with("1.")));
    // Another fact, another version.
    let other = generate(&facts(wiring(&[("campaign", "database")])));
    assert_ne!(a["version"], other["version"]);
}

#[test]
fn impact_follows_dependencies_transitively_with_the_path() {
    let g = generate(&facts(wiring(&[
        ("campaign", "user"),
        ("user", "database"),
    ])));
    let hit = impact(&g, "database").expect("a known node");
    assert_eq!(
        hit["campaign"],
        vec![
            ("database".to_owned(), "is used by", "user".to_owned()),
            ("user".to_owned(), "is used by", "campaign".to_owned()),
        ]
    );
    assert!(hit.contains_key("POST /api/auth/login"), "{hit:?}");
    assert!(hit.contains_key("GET /api/campaigns/{id}"), "{hit:?}");
    let table = impact(&g, "service_user_main").expect("a table");
    assert!(table.contains_key("user") && table.contains_key("campaign"));
    assert_eq!(impact(&g, "no-such-thing"), None);
    // Adding a dependency changes the answer.
    let before = impact(&g, "content").expect("a service");
    let g2 = generate(&facts(wiring(&[
        ("campaign", "content"),
        ("user", "database"),
    ])));
    let after = impact(&g2, "content").expect("a service");
    assert!(!before.contains_key("campaign") && after.contains_key("campaign"));
}

#[test]
fn validation_names_unknown_dependencies_and_misnamed_tables() {
    let mut f = facts(wiring(&[("campaign", "nowhere")]));
    f.tables.push(Table {
        name: "stray_table".into(),
        columns: vec![],
    });
    f.tables.push(Table {
        name: "service_ghost_main".into(),
        columns: vec![],
    });
    let problems: Vec<String> = validate(&generate(&f))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("\"nowhere\"")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("stray_table")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("service_ghost_main")),
        "{problems:?}"
    );
    let mut missing = facts(Wiring::default());
    missing.registrations.push(ServiceRegistration {
        name: "bare",
        version: "0",
        capabilities: vec![],
        endpoints: Endpoints {
            rest: vec![],
            grpc: vec![],
        },
        health_check: "",
        metrics_prefix: "",
    });
    let problems: Vec<String> = validate(&generate(&missing))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p == "service bare has no health_check"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("bare has no REST or gRPC endpoint")),
        "{problems:?}"
    );
}

/// A check of the Mermaid flowchart subset [`mermaid`] writes: a header, node declarations
/// `id[label]` / `id[(label)]`, edges `a --> b` between declared ids.
fn check_mermaid(text: &str) -> Result<(), String> {
    let mut lines = text.lines();
    if lines.next() != Some("flowchart LR") {
        return Err("no flowchart header".into());
    }
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut declared = BTreeSet::new();
    for line in lines {
        let l = line.trim();
        if let Some((a, b)) = l.split_once(" --> ") {
            if !declared.contains(a) || !declared.contains(b) {
                return Err(format!("edge between undeclared nodes: {l}"));
            }
        } else if let Some((id, rest)) = l.split_once('[') {
            let label_ok = rest.ends_with(']')
                && (!rest.starts_with('(') || rest.ends_with(")]"))
                && !rest[..rest.len() - 1].contains(['[', ']', '"']);
            if !ident(id) || !label_ok {
                return Err(format!("bad node: {l}"));
            }
            declared.insert(id.to_owned());
        } else {
            return Err(format!("not a node or an edge: {l}"));
        }
    }
    Ok(())
}

#[test]
fn mermaid_is_a_valid_flowchart_and_can_focus_on_one_service() {
    let g = generate(&facts(wiring(&[
        ("campaign", "user"),
        ("user", "database"),
        ("content", "database"),
    ])));
    let all = mermaid(&g, None);
    check_mermaid(&all).expect("valid");
    assert!(
        all.contains("campaign --> user") && all.contains("database[(database)]"),
        "{all}"
    );
    let focus = mermaid(&g, Some("user"));
    check_mermaid(&focus).expect("valid");
    assert!(
        focus.contains("campaign --> user") && !focus.contains("content"),
        "{focus}"
    );
    // The checker refuses what Mermaid would.
    assert!(check_mermaid("flowchart LR\n  a --> b\n").is_err());
    assert!(check_mermaid("graph\n").is_err());
    assert!(check_mermaid("flowchart LR\n  a b[x]\n").is_err());
}

#[test]
fn diff_names_what_changed() {
    let a = json!({"services": {"user": {"depends_on": ["database"]}, "old": 1}});
    let b = json!({"services": {"user": {"depends_on": ["database", "tokens"]}}, "new": true});
    let d = diff(&a, &b);
    assert_eq!(
        d,
        vec![
            "+ /new = true".to_owned(),
            "- /services/old (not generated any more)".to_owned(),
            "~ /services/user/depends_on: [\"database\"] -> [\"database\",\"tokens\"]".to_owned(),
        ]
    );
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn patterns_are_in_the_impact_of_their_services_and_validated() {
    let w = wiring(&[("campaign", "user"), ("user", "database")]);
    let g = generate(&facts(w.clone()));
    let of_user = impact(&g, "user").expect("user is a node");
    let path = of_user
        .get("pattern campaign.launch")
        .expect("the pattern depends on user");
    assert_eq!(
        path.last().map(|s| (s.0.as_str(), s.1)),
        Some(("campaign", "runs a step of"))
    );
    assert!(validate(&g).iter().all(|p| !p.0.contains("pattern")));
    let mut broken = facts(w);
    broken.patterns[0].steps[0].1 = "campaign.gone".into();
    let problems = validate(&generate(&broken));
    assert!(
        problems.iter().any(|p| p.0.contains("campaign.gone")),
        "{problems:?}"
    );
}
