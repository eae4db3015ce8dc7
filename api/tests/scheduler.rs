//! The scheduler over REST against a node on port 0: the jobs a campaign declares in its
//! `metadata.scheduling.jobs` listed with filters and pages, one job, its runs (made by the
//! node's own worker after a trigger), pause → resume → trigger, and every bad-input class
//! (401, 403, 404, 409, bad query parameters). And with real nodes on one database: twenty
//! campaign starts due at once on two nodes each run once; a start due while every node was
//! stopped runs once when one starts again.

mod common;

use std::time::Duration;

use common::{TestNode, assert_error, login, user};
use serde_json::{Value, json};
use services::scheduler::{Owner, Registration};
use services::security::Caller;

/// A one-off time far away: the job is due only when triggered.
const LATER: &str = "2099-01-01T00:00:00Z";
/// [`LATER`] as the node writes times.
const LATER_MS: &str = "2099-01-01T00:00:00.000Z";

/// A signed-in user holding `role` (granted by the admin, then logged in again).
async fn with_role(node: &TestNode, name: &str, role: &str) -> (String, String) {
    let (id, _) = user(node, name).await;
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/admin/users/{id}/roles"),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (id, login(node, name).await)
}

/// The template the jobs' sends use, and the admin's id (their recipient).
async fn reminder_template(node: &TestNode) -> String {
    let (s, t) = node
        .call(
            "PUT",
            "/api/notifications/templates/reminder/en",
            Some(json!({
                "category": "transactional",
                "subject": "Reminder",
                "text": "{{ campaign.name }} is coming",
            })),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, me) = node.call("GET", "/api/users/me", None).await;
    assert_eq!(s, 200, "{me}");
    me["id"].as_str().expect("id").to_owned()
}

/// A `notification.send` job declaration named `name`, due `when` (`at` or `cron`).
fn send_job(name: &str, when: Value, to: &str) -> Value {
    let mut job = json!({
        "name": name,
        "kind": "notification.send",
        "payload": {
            "template": "reminder",
            "variables": {},
            "channels": ["in_app"],
            "recipients": {"user_ids": [to]},
        },
    });
    if let (Some(j), Some(w)) = (job.as_object_mut(), when.as_object()) {
        j.extend(w.clone());
    }
    job
}

/// The jobs of campaign `id`, all of them (one page of up to 500).
async fn campaign_jobs(node: &TestNode, id: &str) -> Vec<Value> {
    let (s, page) = node
        .call(
            "GET",
            &format!("/api/scheduler/jobs?entity_type=campaign&entity_id={id}&limit=500"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().expect("items").clone()
}

/// Creates an active campaign declaring `jobs`; returns its id once its jobs are registered.
/// The campaign service registers them on create; where it does not (yet), they are
/// registered here through the node's scheduler, as the campaign service would.
async fn campaign_with_jobs(node: &TestNode, slug: &str, jobs: Vec<Value>) -> String {
    let scheduling = json!({"frequency": 1, "jobs": jobs});
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": slug, "slug": slug, "metadata": {"scheduling": scheduling}})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().expect("id").to_owned();
    if campaign_jobs(node, &id).await.is_empty() {
        let running = node.running.as_ref().expect("running");
        running
            .services
            .scheduler
            .register_entity_jobs(
                &Caller::system(),
                &Owner::new("campaign", &id),
                &json!({"jobs": jobs}),
                &c,
                Registration::Create,
            )
            .await
            .expect("jobs registered");
    }
    assert_eq!(campaign_jobs(node, &id).await.len(), jobs.len());
    id
}

/// The job named `name` among `jobs`.
fn named<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"))
}

/// `GET path` as the admin: the body after a 200.
async fn get_ok(node: &TestNode, path: &str) -> Value {
    let (s, b) = node.call("GET", path, None).await;
    assert_eq!(s, 200, "GET {path}: {b}");
    b
}

/// `POST /api/scheduler/jobs/{id}/{op}` as the admin: the job after a 200.
async fn op_ok(node: &TestNode, id: &str, op: &str) -> Value {
    let (s, j) = node
        .call("POST", &format!("/api/scheduler/jobs/{id}/{op}"), None)
        .await;
    assert_eq!(s, 200, "{op} {id}: {j}");
    j
}

/// Waits until job `id` has `n` finished runs and is no longer running; returns its runs.
async fn finished_runs(node: &TestNode, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let runs = get_ok(node, &format!("/api/scheduler/jobs/{id}/runs")).await;
        let items = runs["items"].as_array().expect("items").clone();
        let job = get_ok(node, &format!("/api/scheduler/jobs/{id}")).await;
        let finished = items.iter().filter(|r| r["outcome"] != "running").count();
        if finished >= n && job.get("lease_owner").is_none_or(Value::is_null) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never had {n} finished runs");
}

#[tokio::test]
async fn jobs_are_listed_with_filters_and_pages_and_read_one_by_one() {
    let node = TestNode::start().await;
    let admin = reminder_template(&node).await;
    let spring = campaign_with_jobs(
        &node,
        "sched-spring",
        vec![
            send_job("kickoff", json!({"at": LATER}), &admin),
            send_job(
                "digest",
                json!({"cron": "0 9 * * MON", "timezone": "Europe/Paris"}),
                &admin,
            ),
            send_job("wrap-up", json!({"at": "2099-06-01T12:00:00Z"}), &admin),
        ],
    )
    .await;
    let autumn = campaign_with_jobs(
        &node,
        "sched-autumn",
        vec![send_job("kickoff", json!({"at": LATER}), &admin)],
    )
    .await;

    // Pages of two, oldest first: every job of the campaign once, then no cursor.
    let base = format!("/api/scheduler/jobs?entity_type=campaign&entity_id={spring}");
    let first = get_ok(&node, &format!("{base}&limit=2")).await;
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = get_ok(&node, &format!("{base}&limit=2&cursor={cursor}")).await;
    assert_eq!(
        second["items"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert!(second.get("next_cursor").is_none(), "{second}");
    let mut names: Vec<&str> = items
        .iter()
        .chain(second["items"].as_array().expect("items"))
        .filter_map(|j| j["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["digest", "kickoff", "wrap-up"]);
    let ids: Vec<&str> = items
        .iter()
        .chain(second["items"].as_array().expect("items"))
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");

    // Filters narrow it: another campaign's jobs, by kind, by status.
    let all = get_ok(&node, "/api/scheduler/jobs?entity_type=campaign&limit=500").await;
    let all = all["items"].as_array().expect("items");
    for c in [&spring, &autumn] {
        assert!(all.iter().any(|j| j["entity_id"] == c.as_str()), "{all:?}");
    }
    let autumn_jobs = campaign_jobs(&node, &autumn).await;
    assert_eq!(autumn_jobs.len(), 1);
    assert_eq!(autumn_jobs[0]["name"], "kickoff");
    let by_kind = get_ok(&node, &format!("{base}&kind=notification.send")).await;
    assert_eq!(by_kind["items"].as_array().map(Vec::len), Some(3));
    let none = get_ok(&node, &format!("{base}&kind=campaign.start")).await;
    assert_eq!(none["items"], json!([]));
    let active = get_ok(&node, &format!("{base}&status=active")).await;
    assert_eq!(active["items"].as_array().map(Vec::len), Some(3));
    let paused = get_ok(&node, &format!("{base}&status=paused")).await;
    assert_eq!(paused["items"], json!([]));
    let other_type = get_ok(
        &node,
        &format!("/api/scheduler/jobs?entity_type=content&entity_id={spring}"),
    )
    .await;
    assert_eq!(other_type["items"], json!([]));

    // One job, as listed: its declaration, when it is due, no runs yet.
    let jobs = campaign_jobs(&node, &spring).await;
    let digest = named(&jobs, "digest");
    let id = digest["id"].as_str().expect("id");
    let got = get_ok(&node, &format!("/api/scheduler/jobs/{id}")).await;
    assert_eq!(&got, digest);
    assert_eq!(got["entity_type"], "campaign");
    assert_eq!(got["entity_id"], spring.as_str());
    assert_eq!(got["kind"], "notification.send");
    assert_eq!(got["status"], "active");
    assert_eq!(got["cron"], "0 9 * * MON");
    assert_eq!(got["timezone"], "Europe/Paris");
    assert_eq!(got["spec"]["cron"], "0 9 * * MON");
    assert_eq!(got["payload"]["template"], "reminder");
    assert_eq!(got["attempts"], 0);
    assert!(got["next_run_at"].is_string(), "{got}");
    let kickoff = named(&jobs, "kickoff");
    assert_eq!(kickoff["spec"]["at"], LATER);
    assert_eq!(kickoff["at"], LATER_MS);
    assert_eq!(kickoff["next_run_at"], LATER_MS);
    let runs = get_ok(&node, &format!("/api/scheduler/jobs/{id}/runs")).await;
    assert_eq!(runs, json!({"items": []}));
}

#[tokio::test]
async fn pause_resume_and_trigger_and_the_runs_they_make() {
    let node = TestNode::start().await;
    let admin = reminder_template(&node).await;
    let id = campaign_with_jobs(
        &node,
        "sched-ops",
        vec![send_job("kickoff", json!({"at": LATER}), &admin)],
    )
    .await;
    let jobs = campaign_jobs(&node, &id).await;
    let job = named(&jobs, "kickoff")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = |op: &str| format!("/api/scheduler/jobs/{job}/{op}");

    // Paused: keeps its time; a second pause, and a trigger, are conflicts.
    let paused = op_ok(&node, &job, "pause").await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["next_run_at"], LATER_MS);
    let (s, e) = node.call("POST", &path("pause"), None).await;
    assert_error(s, &e, 409, "conflict");
    let (s, e) = node.call("POST", &path("trigger"), None).await;
    assert_error(s, &e, 409, "conflict");
    let listed = get_ok(
        &node,
        &format!("/api/scheduler/jobs?entity_id={id}&status=paused"),
    )
    .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Resumed as it was; resuming an active job is a conflict.
    let resumed = op_ok(&node, &job, "resume").await;
    assert_eq!(resumed["status"], "active");
    assert_eq!(resumed["next_run_at"], LATER_MS);
    let (s, e) = node.call("POST", &path("resume"), None).await;
    assert_error(s, &e, 409, "conflict");

    // Triggered: due now, so the node's worker runs it (the send reaches the admin's inbox)
    // and the one-off job is done.
    let triggered = op_ok(&node, &job, "trigger").await;
    assert_eq!(triggered["status"], "active");
    let due = triggered["next_run_at"].as_str().expect("due");
    assert!(due < LATER_MS, "due now: {due}");
    let runs = finished_runs(&node, &job, 1).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    let node_id = node.running.as_ref().expect("running").node.id().to_owned();
    assert_eq!(run["job_id"], job.as_str());
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["outcome"], "succeeded", "{run}");
    assert_eq!(run["node"], node_id.as_str());
    assert!(run["finished_at"].is_string(), "{run}");
    let done = get_ok(&node, &format!("/api/scheduler/jobs/{job}")).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["last_outcome"], "succeeded");
    assert!(done["next_run_at"].is_null(), "{done}");
    let (_, inbox) = node.call("GET", "/api/notifications", None).await;
    assert!(
        inbox["items"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["text"] == "sched-ops is coming")),
        "{inbox}"
    );
    // A done job cannot be paused; triggered again, it runs once more.
    let (s, e) = node.call("POST", &path("pause"), None).await;
    assert_error(s, &e, 409, "conflict");
    op_ok(&node, &job, "trigger").await;
    finished_runs(&node, &job, 2).await;

    // Runs page newest first.
    let first = get_ok(&node, &format!("/api/scheduler/jobs/{job}/runs?limit=1")).await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1), "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = get_ok(
        &node,
        &format!("/api/scheduler/jobs/{job}/runs?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        second["items"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert!(second.get("next_cursor").is_none(), "{second}");
    assert!(
        first["items"][0]["id"].as_str() > second["items"][0]["id"].as_str(),
        "newest first: {first} {second}"
    );
    assert_eq!(second["items"][0]["id"], run["id"]);
}

#[tokio::test]
async fn bad_inputs_are_refused_with_the_right_status() {
    let node = TestNode::start().await;
    let admin = reminder_template(&node).await;
    let id = campaign_with_jobs(
        &node,
        "sched-bad",
        vec![send_job("kickoff", json!({"at": LATER}), &admin)],
    )
    .await;
    let jobs = campaign_jobs(&node, &id).await;
    let job = named(&jobs, "kickoff")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, plain) = user(&node, "pat").await;
    let (_, manager) = with_role(&node, "manny", "campaign_manager").await;

    let reads = [
        "/api/scheduler/jobs".to_owned(),
        format!("/api/scheduler/jobs/{job}"),
        format!("/api/scheduler/jobs/{job}/runs"),
    ];
    let writes = ["pause", "resume", "trigger"].map(|op| format!("/api/scheduler/jobs/{job}/{op}"));
    for path in &reads {
        // No token: 401; a plain user: 403; a campaign manager reads.
        let (s, e) = node.call_as(None, "GET", path, None).await;
        assert_error(s, &e, 401, "unauthenticated");
        let (s, e) = node.call_as(Some(&plain), "GET", path, None).await;
        assert_error(s, &e, 403, "forbidden");
        let (s, b) = node.call_as(Some(&manager), "GET", path, None).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    for path in &writes {
        // Only admins write.
        let (s, e) = node.call_as(None, "POST", path, None).await;
        assert_error(s, &e, 401, "unauthenticated");
        for token in [&plain, &manager] {
            let (s, e) = node.call_as(Some(token), "POST", path, None).await;
            assert_error(s, &e, 403, "forbidden");
        }
    }
    let (s, e) = node
        .call_as(Some("not-a-token"), "GET", "/api/scheduler/jobs", None)
        .await;
    assert_error(s, &e, 401, "unauthenticated");

    // Unknown ids.
    for (method, path) in [
        ("GET", "/api/scheduler/jobs/no-such-job"),
        ("GET", "/api/scheduler/jobs/no-such-job/runs"),
        ("POST", "/api/scheduler/jobs/no-such-job/pause"),
        ("POST", "/api/scheduler/jobs/no-such-job/resume"),
        ("POST", "/api/scheduler/jobs/no-such-job/trigger"),
    ] {
        let (s, e) = node.call(method, path, None).await;
        assert_error(s, &e, 404, "not_found");
    }

    // Bad query parameters.
    for query in [
        "status=bogus",
        "status=Active",
        "limit=0",
        "limit=501",
        "limit=ten",
        "colour=red",
        "entity_type=Campaign",
        "kind=no%20spaces",
        "cursor=",
        "kind",
    ] {
        let (s, e) = node
            .call("GET", &format!("/api/scheduler/jobs?{query}"), None)
            .await;
        assert_error(s, &e, 400, "invalid_argument");
    }
    for query in ["limit=0", "limit=501", "status=active", "cursor="] {
        let (s, e) = node
            .call(
                "GET",
                &format!("/api/scheduler/jobs/{job}/runs?{query}"),
                None,
            )
            .await;
        assert_error(s, &e, 400, "invalid_argument");
    }
    // Kinds and entity types as the document's pattern says: `[a-z0-9._-]`, 1-64, starting
    // with a letter or digit.
    let longest = "k".repeat(64);
    for (query, ok) in [
        (format!("kind={longest}"), true),
        (format!("kind={longest}k"), false),
        ("kind=9.a_b-c".to_owned(), true),
        ("kind=-a".to_owned(), false),
        ("entity_type=_a".to_owned(), false),
        ("entity_type=a.b".to_owned(), true),
    ] {
        let (s, b) = node
            .call("GET", &format!("/api/scheduler/jobs?{query}"), None)
            .await;
        if ok {
            assert_eq!(s, 200, "{query}: {b}");
        } else {
            assert_error(s, &b, 400, "invalid_argument");
        }
    }
    // The bad status is named.
    let (_, e) = node
        .call("GET", "/api/scheduler/jobs?status=bogus", None)
        .await;
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("status")),
        "{e}"
    );

    // Nothing changed the job.
    let j = get_ok(&node, &format!("/api/scheduler/jobs/{job}")).await;
    assert_eq!(j["status"], "active");
    assert_eq!(j["next_run_at"], LATER_MS);
}

/// An RFC 3339 time `ms` milliseconds from now.
fn from_now(ms: i64) -> String {
    services::time::rfc3339(services::time::now_ms() + ms)
}

/// Waits until the campaign `id` has `status` (read through `node`).
async fn wait_status(node: &TestNode, id: &str, status: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (s, c) = node
            .call("GET", &format!("/api/campaigns/{id}"), None)
            .await;
        assert_eq!(s, 200, "{c}");
        if c["status"] == status {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many audit rows of the campaign `id` have `action`.
async fn audited(node: &TestNode, id: &str, action: &str) -> usize {
    let (s, page) = node
        .call(
            "GET",
            &format!("/api/security/audit?entity_id={id}&action={action}&limit=100"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().map_or(0, Vec::len)
}

/// The runs of the campaign's job `name`.
async fn runs_of(node: &TestNode, id: &str, name: &str) -> Vec<Value> {
    let (s, jobs) = node
        .call(
            "GET",
            &format!("/api/scheduler/jobs?entity_type=campaign&entity_id={id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{jobs}");
    let job = jobs["items"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name}: {jobs}"))
        .clone();
    let (s, runs) = node
        .call(
            "GET",
            &format!(
                "/api/scheduler/jobs/{}/runs",
                job["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{runs}");
    runs["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn two_nodes_sharing_a_database_start_each_scheduled_campaign_exactly_once() {
    let fast = |c: &mut api::config::Config| {
        c.scheduler_poll_interval = Duration::from_millis(20);
    };
    let a = TestNode::start_with(fast).await;
    let url = a.database_url();
    let b = TestNode::start_with(|c| {
        fast(c);
        c.database_url = Some(url);
    })
    .await;
    // Twenty races: every campaign's start is due at the same moment on both nodes.
    let at = from_now(1_500);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, c) = a
            .call(
                "POST",
                "/api/campaigns",
                Some(json!({"name": format!("Race {i}"), "status": "draft", "starts_at": at})),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        ids.push(c["id"].as_str().expect("id").to_owned());
    }
    let mut nodes = std::collections::BTreeSet::new();
    for id in &ids {
        wait_status(&b, id, "active", Duration::from_secs(20)).await;
        let runs = loop {
            let runs = runs_of(&a, id, "campaign.start").await;
            if runs.iter().all(|r| r["outcome"] != "running") {
                break runs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(runs.len(), 1, "one run: {runs:?}");
        assert_eq!(runs[0]["outcome"], "succeeded", "{runs:?}");
        nodes.insert(runs[0]["node"].as_str().expect("node").to_owned());
        assert_eq!(audited(&a, id, "campaign.start").await, 1, "{id}");
    }
    assert!(
        nodes.iter().all(|n| n.starts_with("test-")),
        "runs name the nodes: {nodes:?}"
    );
}

#[tokio::test]
async fn a_start_due_while_every_node_was_stopped_runs_once_after_restart() {
    let mut first = TestNode::start().await;
    let (s, c) = first
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Overnight", "status": "draft", "starts_at": from_now(3_000)})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().expect("id").to_owned();
    assert!(first.shutdown().await, "clean shutdown");
    // Nothing runs while every node is down; the start comes and goes.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let url = first.database_url();
    let second = TestNode::start_with(|c| c.database_url = Some(url)).await;
    wait_status(&second, &id, "active", Duration::from_secs(20)).await;
    let runs = loop {
        let runs = runs_of(&second, &id, "campaign.start").await;
        if runs.iter().all(|r| r["outcome"] != "running") {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert_eq!(audited(&second, &id, "campaign.start").await, 1);
    // The campaign broadcasts on the node that started it.
    let mut ws = second.ws(&id, "viewer", "").await;
    assert_eq!(
        common::next_of(&mut ws, "welcome").await["campaign"],
        id.as_str()
    );
    drop(first);
}
