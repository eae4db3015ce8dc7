//! Nexus on both backends: compensation in reverse order, durable retries, a stopped node's
//! run resumed by another (and a late node fenced off), idempotent starts, event and schedule
//! triggers, the shipped `campaign.launch` pattern end to end, and the access rules.

mod common;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use services::nexus::{
    Event, NexusConfig, NexusService, Operation, PatternDef, RunFilter, RunStatus, StartRun,
    StepStatus,
};
use services::scheduler::{Clock, Owner};
use services::security::{Caller, Policies, Role};
use services::user::NewUser;
use services::{Database, ServiceError};

type Log = Arc<Mutex<Vec<String>>>;

fn def(v: Value) -> PatternDef {
    serde_json::from_value(v).expect("a pattern definition")
}

/// `test.<name>`: logs its name and input, answers `{"id": <name>, "input": ...}`.
fn logging(name: &'static str, log: &Log) -> Operation {
    let log = log.clone();
    Operation::new(
        name,
        "test",
        "logs",
        (json!({}), json!({})),
        true,
        move |_c, _ctx, input| {
            let log = log.clone();
            async move {
                log.lock().expect("log").push(name.to_owned());
                Ok(json!({"id": name, "input": input}))
            }
        },
    )
}

fn failing(name: &'static str, log: &Log) -> Operation {
    let log = log.clone();
    Operation::new(
        name,
        "test",
        "fails",
        (json!({}), json!({})),
        false,
        move |_c, _ctx, _| {
            let log = log.clone();
            async move {
                log.lock().expect("log").push(name.to_owned());
                Err(ServiceError::Conflict {
                    message: "refused for good".to_owned(),
                })
            }
        },
    )
}

/// A clock the test moves.
fn clock() -> (Clock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(1_800_000_000_000));
    let n = now.clone();
    (Clock::from_fn(move || n.load(Ordering::SeqCst)), now)
}

async fn bare(db: &Database, clock: Clock, node: &str) -> NexusService {
    let policies = Policies::load(db.clone()).await.expect("policies");
    let config = NexusConfig {
        node: node.to_owned(),
        lease: Duration::from_secs(5),
        step_timeout: Duration::from_secs(4),
        poll: Duration::from_millis(20),
        concurrency: 4,
    };
    NexusService::with_clock(db.clone(), policies, config, None, clock)
}

async fn run_of(n: &NexusService, id: &str) -> services::nexus::Run {
    n.run(&Caller::system(), id).await.expect("run")
}

#[tokio::test]
async fn a_failed_third_step_compensates_the_second_then_the_first_once() {
    for t in common::databases("nexus_comp").await {
        let (clock, _) = clock();
        let n = bare(&t.db, clock, "a").await;
        let log: Log = Arc::default();
        n.register_operations(
            "test",
            vec![
                logging("test.one", &log),
                logging("test.two", &log),
                failing("test.three", &log),
                logging("test.undo_one", &log),
                logging("test.undo_two", &log),
            ],
        )
        .expect("ops");
        let p = def(json!({"name": "t.comp", "steps": [
            {"name": "one", "operation": "test.one", "compensate": {"operation": "test.undo_one", "input": {"of": "$.steps.one.id"}}},
            {"name": "two", "operation": "test.two", "input": {"after": "$.steps.one.id"},
             "compensate": {"operation": "test.undo_two", "input": {"of": "$.steps.two.id"}}},
            {"name": "three", "operation": "test.three", "input": {"after": "$.steps.two.id"}},
            {"name": "four", "operation": "test.one", "input": {"after": "$.steps.three.id"}}
        ]}));
        n.register_pattern(&Caller::system(), p)
            .await
            .expect("register");
        let (run, created) = n
            .start(&Caller::system(), "t.comp", StartRun::default())
            .await
            .expect("start");
        assert!(created);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(n.drain().await.expect("drain"), 1);
        assert_eq!(
            *log.lock().expect("log"),
            [
                "test.one",
                "test.two",
                "test.three",
                "test.undo_two",
                "test.undo_one"
            ]
        );
        let run = run_of(&n, &run.id).await;
        assert_eq!(run.status, RunStatus::Compensated);
        assert!(run.error.as_deref().is_some_and(|e| e.contains("three")));
        let status: Vec<(String, StepStatus)> = run
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status))
            .collect();
        assert_eq!(
            status,
            [
                ("one".to_owned(), StepStatus::Compensated),
                ("two".to_owned(), StepStatus::Compensated),
                ("three".to_owned(), StepStatus::Failed),
                ("four".to_owned(), StepStatus::Skipped),
            ]
        );
        assert_eq!(run.steps[1].input, Some(json!({"after": "test.one"})));
        // Nothing runs again.
        assert_eq!(n.drain().await.expect("drain"), 0);
        assert_eq!(log.lock().expect("log").len(), 5);
        t.finish().await;
    }
}

#[tokio::test]
async fn failures_that_may_pass_are_retried_after_a_durable_back_off() {
    for t in common::databases("nexus_retry").await {
        let (clock, now) = clock();
        let n = bare(&t.db, clock, "a").await;
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let flaky = Operation::new(
            "test.flaky",
            "test",
            "fails twice",
            (json!({}), json!({})),
            true,
            move |_c, ctx, _| {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(ServiceError::Unavailable(sqlx::Error::PoolTimedOut))
                    } else {
                        Ok(json!({"attempt": ctx.attempt, "key": ctx.idempotency_key}))
                    }
                }
            },
        );
        let never = Operation::new(
            "test.never",
            "test",
            "always unavailable",
            (json!({}), json!({})),
            true,
            |_c, _ctx, _| async {
                Err::<Value, _>(ServiceError::Unavailable(sqlx::Error::PoolTimedOut))
            },
        );
        n.register_operations("test", vec![flaky, never])
            .expect("ops");
        n.register_pattern(&Caller::system(), def(json!({"name": "t.retry", "steps": [
            {"name": "flaky", "operation": "test.flaky", "retry": {"max_attempts": 3, "backoff_ms": 1000}}]})))
            .await
            .expect("register");
        let (run, _) = n
            .start(&Caller::system(), "t.retry", StartRun::default())
            .await
            .expect("start");
        assert_eq!(n.drain().await.expect("drain"), 1);
        let r = run_of(&n, &run.id).await;
        assert_eq!(
            (r.status, r.steps[0].status, r.steps[0].attempts),
            (RunStatus::Running, StepStatus::Pending, 1)
        );
        assert!(r.steps[0].error.is_some());
        assert_eq!(
            n.drain().await.expect("not due yet"),
            0,
            "the back-off holds"
        );
        now.fetch_add(1000, Ordering::SeqCst);
        assert_eq!(n.drain().await.expect("drain"), 1);
        assert_eq!(n.drain().await.expect("not due: 2 s now"), 0);
        now.fetch_add(2000, Ordering::SeqCst);
        assert_eq!(n.drain().await.expect("drain"), 1);
        let r = run_of(&n, &run.id).await;
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(r.steps[0].attempts, 3);
        let out = r.output.expect("output");
        assert_eq!(out["flaky"]["attempt"], 3);
        assert_eq!(out["flaky"]["key"], format!("nexus:{}:flaky", run.id));

        // Out of attempts: failed (nothing to undo).
        n.register_pattern(&Caller::system(), def(json!({"name": "t.never", "steps": [
            {"name": "never", "operation": "test.never", "retry": {"max_attempts": 2, "backoff_ms": 10}}]})))
            .await
            .expect("register");
        let (run, _) = n
            .start(&Caller::system(), "t.never", StartRun::default())
            .await
            .expect("start");
        n.drain().await.expect("drain");
        now.fetch_add(10, Ordering::SeqCst);
        n.drain().await.expect("drain");
        let r = run_of(&n, &run.id).await;
        assert_eq!(
            (r.status, r.steps[0].status, r.steps[0].attempts),
            (RunStatus::Failed, StepStatus::Failed, 2)
        );
        t.finish().await;
    }
}

/// Ops shared by two nodes: `test.first`, `test.hang` (its first call never returns unless
/// released), `test.last`; counts calls.
struct Hang {
    first: AtomicUsize,
    hang: AtomicUsize,
    last: AtomicUsize,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

fn hang_ops(h: &Arc<Hang>) -> Vec<Operation> {
    let (a, b, c) = (h.clone(), h.clone(), h.clone());
    vec![
        Operation::new(
            "test.first",
            "test",
            "",
            (json!({}), json!({})),
            true,
            move |_c, _ctx, _| {
                let h = a.clone();
                async move {
                    h.first.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({}))
                }
            },
        ),
        Operation::new(
            "test.hang",
            "test",
            "",
            (json!({}), json!({})),
            true,
            move |_c, ctx, _| {
                let h = b.clone();
                async move {
                    if h.hang.fetch_add(1, Ordering::SeqCst) == 0 {
                        h.entered.notify_one();
                        h.release.notified().await;
                    }
                    Ok(json!({"attempt": ctx.attempt}))
                }
            },
        ),
        Operation::new(
            "test.last",
            "test",
            "",
            (json!({}), json!({})),
            true,
            move |_c, _ctx, _| {
                let h = c.clone();
                async move {
                    h.last.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({}))
                }
            },
        ),
    ]
}

fn hang_pattern() -> PatternDef {
    def(json!({"name": "t.hang", "steps": [
        {"name": "first", "operation": "test.first"},
        {"name": "hang", "operation": "test.hang", "input": {"x": "$.steps.first"}},
        {"name": "last", "operation": "test.last", "input": {"x": "$.steps.hang"}}]}))
}

fn new_hang() -> Arc<Hang> {
    Arc::new(Hang {
        first: AtomicUsize::new(0),
        hang: AtomicUsize::new(0),
        last: AtomicUsize::new(0),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    })
}

#[tokio::test]
async fn a_run_whose_node_stopped_is_resumed_by_another_node_and_finishes_once() {
    for t in common::databases("nexus_resume").await {
        let (clock, now) = clock();
        let h = new_hang();
        let a = bare(&t.db, clock.clone(), "node-a").await;
        let b = bare(&t.db, clock, "node-b").await;
        a.register_operations("test", hang_ops(&h)).expect("ops");
        b.register_operations("test", hang_ops(&h)).expect("ops");
        a.register_pattern(&Caller::system(), hang_pattern())
            .await
            .expect("register");
        let (run, _) = a
            .start(&Caller::system(), "t.hang", StartRun::default())
            .await
            .expect("start");
        let worker = a.spawn_worker();
        tokio::time::timeout(Duration::from_secs(10), h.entered.notified())
            .await
            .expect("node a reaches the second step");
        let r = run_of(&a, &run.id).await;
        assert_eq!(r.claimed_by.as_deref(), Some("node-a"));
        assert_eq!(r.steps[1].status, StepStatus::Running);
        // Node a stops mid-step.
        worker.abort();
        let _ = worker.await;
        assert_eq!(
            b.drain().await.expect("lease still held"),
            0,
            "b waits for a's lease"
        );
        now.fetch_add(6_000, Ordering::SeqCst);
        assert_eq!(b.drain().await.expect("drain"), 1);
        let r = run_of(&b, &run.id).await;
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(
            (
                h.first.load(Ordering::SeqCst),
                h.hang.load(Ordering::SeqCst),
                h.last.load(Ordering::SeqCst)
            ),
            (1, 2, 1),
            "the completed step is not run again; the interrupted one is tried once more"
        );
        assert_eq!(r.steps[1].attempts, 2);
        assert_eq!(r.claimed_by, None);
        assert_eq!(b.drain().await.expect("drain"), 0);
        t.finish().await;
    }
}

#[tokio::test]
async fn a_node_that_lost_its_lease_writes_nothing_when_it_wakes_up() {
    for t in common::databases("nexus_fence").await {
        let (clock, now) = clock();
        let h = new_hang();
        let a = bare(&t.db, clock.clone(), "node-a").await;
        let b = bare(&t.db, clock, "node-b").await;
        a.register_operations("test", hang_ops(&h)).expect("ops");
        b.register_operations("test", hang_ops(&h)).expect("ops");
        a.register_pattern(&Caller::system(), hang_pattern())
            .await
            .expect("register");
        // A pattern registered on one node starts on another.
        let (run, _) = b
            .start(&Caller::system(), "t.hang", StartRun::default())
            .await
            .expect("start");
        let worker = a.spawn_worker();
        tokio::time::timeout(Duration::from_secs(10), h.entered.notified())
            .await
            .expect("node a reaches the second step");
        // a hangs past its lease; b takes the run over and finishes it.
        now.fetch_add(6_000, Ordering::SeqCst);
        assert_eq!(b.drain().await.expect("drain"), 1);
        // a wakes up: its writes are refused, nothing runs twice.
        h.release.notify_one();
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.abort();
        let r = run_of(&a, &run.id).await;
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(h.last.load(Ordering::SeqCst), 1);
        assert_eq!(r.steps[1].attempts, 2);
        t.finish().await;
    }
}

#[tokio::test]
async fn a_run_started_twice_with_one_key_is_one_run() {
    for t in common::databases("nexus_key").await {
        let (clock, _) = clock();
        let n = bare(&t.db, clock, "a").await;
        let log: Log = Arc::default();
        n.register_operations("test", vec![logging("test.one", &log)])
            .expect("ops");
        n.register_pattern(
            &Caller::system(),
            def(json!({"name": "t.key", "steps": [{"name": "one", "operation": "test.one"}]})),
        )
        .await
        .expect("register");
        let caller = Caller::user("u1", vec![Role::User]);
        let req = |input: Value| StartRun {
            input: Some(input),
            idempotency_key: Some("k-1".to_owned()),
        };
        let starts = (0..8).map(|_| n.start(&caller, "t.key", req(json!({"a": 1}))));
        let results = futures_util::future::join_all(starts).await;
        let ids: std::collections::BTreeSet<String> = results
            .iter()
            .map(|r| r.as_ref().expect("start").0.id.clone())
            .collect();
        assert_eq!(ids.len(), 1, "one run");
        assert_eq!(
            results
                .iter()
                .filter(|r| r.as_ref().is_ok_and(|(_, c)| *c))
                .count(),
            1
        );
        match n.start(&caller, "t.key", req(json!({"a": 2}))).await {
            Err(ServiceError::Conflict { message }) => assert!(message.contains("k-1")),
            other => panic!("another input with the key: {other:?}"),
        }
        // Keys are per caller: another user's k-1 is another run.
        let other = Caller::user("u2", vec![Role::User]);
        let (r2, created) = n
            .start(&other, "t.key", req(json!({"a": 1})))
            .await
            .expect("start");
        assert!(created && !ids.contains(&r2.id));
        n.drain().await.expect("drain");
        assert_eq!(log.lock().expect("log").len(), 2);
        // Bad input.
        for (req, field) in [
            (
                StartRun {
                    input: Some(json!([1])),
                    idempotency_key: None,
                },
                "input",
            ),
            (
                StartRun {
                    input: None,
                    idempotency_key: Some(String::new()),
                },
                "idempotency_key",
            ),
        ] {
            match n.start(&caller, "t.key", req).await {
                Err(ServiceError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(
            n.start(&caller, "t.none", StartRun::default()).await,
            Err(ServiceError::NotFound { .. })
        ));
        t.finish().await;
    }
}

#[tokio::test]
async fn rules_who_registers_runs_and_reads() {
    for t in common::databases("nexus_rbac").await {
        let p = common::provider(&t.db).await;
        let user = Caller::user("u1", vec![Role::User]);
        let other = Caller::user("u2", vec![Role::User]);
        let manager = Caller::user("m1", vec![Role::CampaignManager]);
        let admin = Caller::user("a1", vec![Role::Admin]);
        let simple = def(
            json!({"name": "t.rbac", "steps": [{"name": "c", "operation": "campaign.end", "input": {"campaign": "$.input.c"}}]}),
        );
        assert!(matches!(
            p.nexus.register_pattern(&user, simple.clone()).await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(matches!(
            p.nexus.register_pattern(&manager, simple.clone()).await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(matches!(
            p.nexus
                .register_pattern(&Caller::anonymous(), simple.clone())
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        let (pattern, new) = p
            .nexus
            .register_pattern(&admin, simple.clone())
            .await
            .expect("admin registers");
        assert!(new && pattern.version == 1);
        let (same, new) = p
            .nexus
            .register_pattern(&admin, simple)
            .await
            .expect("again");
        assert!(
            !new && same.version == 1,
            "the same definition is the same version"
        );
        let audit = p
            .audit
            .query(
                &Caller::system(),
                &services::security::AuditFilter {
                    action: Some("nexus.pattern.register".to_owned()),
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
        assert_eq!(audit.items.len(), 1);
        // A user starts a run; the step runs as the user and is refused by the campaign
        // service: the run fails.
        let (run, _) = p
            .nexus
            .start(
                &user,
                "t.rbac",
                StartRun {
                    input: Some(json!({"c": "x"})),
                    idempotency_key: None,
                },
            )
            .await
            .expect("start");
        p.nexus.drain().await.expect("drain");
        let r = p.nexus.run(&user, &run.id).await.expect("own run");
        assert_eq!(r.status, RunStatus::Failed);
        assert!(
            r.steps[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("do not allow delete on campaign")),
            "{:?}",
            r.steps[0].error
        );
        assert!(matches!(
            p.nexus.run(&other, &run.id).await,
            Err(ServiceError::NotFound { .. })
        ));
        assert_eq!(
            p.nexus
                .run(&manager, &run.id)
                .await
                .expect("manager reads")
                .id,
            run.id
        );
        let mine = p
            .nexus
            .runs(&other, RunFilter::default(), None, None)
            .await
            .expect("list");
        assert!(mine.items.is_empty(), "another user's runs are not listed");
        let all = p
            .nexus
            .runs(&manager, RunFilter::default(), None, None)
            .await
            .expect("list");
        assert_eq!(all.items.len(), 1);
        assert!(matches!(
            p.nexus.operations(&user),
            Err(ServiceError::Forbidden { .. })
        ));
        let ops: Vec<String> = p
            .nexus
            .operations(&manager)
            .expect("ops")
            .into_iter()
            .map(|o| o.name)
            .collect();
        for name in [
            "campaign.create",
            "notification.send",
            "referral.credit",
            "talent.book",
            "commerce.cancel_order",
        ] {
            assert!(ops.iter().any(|o| o == name), "{name} in {ops:?}");
        }
        // Validation through the service names the field.
        let bad = def(
            json!({"name": "t.bad", "steps": [{"name": "c", "operation": "campaign.create", "input": {"nme": "x"}}]}),
        );
        match p.nexus.register_pattern(&admin, bad).await {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "steps[0].input.nme"),
            other => panic!("{other:?}"),
        }
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}

#[tokio::test]
async fn a_service_event_starts_each_listening_pattern_once() {
    for t in common::databases("nexus_event").await {
        let p = common::provider(&t.db).await;
        let log: Log = Arc::default();
        p.nexus
            .register_operations("test", vec![logging("test.seen", &log)])
            .expect("ops");
        p.nexus
            .register_pattern(&Caller::system(), def(json!({"name": "t.on_content",
                "triggers": {"events": ["content.created"]},
                "steps": [{"name": "seen", "operation": "test.seen", "input": {"author": "$.input.author_id", "id": "$.input.id"}}]})))
            .await
            .expect("register");
        let unknown = def(
            json!({"name": "t.on_nothing", "triggers": {"events": ["content.exploded"]},
            "steps": [{"name": "seen", "operation": "test.seen"}]}),
        );
        match p.nexus.register_pattern(&Caller::system(), unknown).await {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "triggers.events[0]"),
            other => panic!("{other:?}"),
        }
        let author = Caller::user("author-1", vec![Role::User]);
        let c = p
            .content
            .create(
                &author,
                serde_json::from_value(json!({"kind": "micro", "title": "", "body": "hello"}))
                    .expect("new content"),
            )
            .await
            .expect("content");
        // The run is started in a task after the commit.
        let mut runs = Vec::new();
        for _ in 0..100 {
            runs = p
                .nexus
                .runs(&Caller::system(), RunFilter::default(), None, None)
                .await
                .expect("runs")
                .items;
            if !runs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(runs.len(), 1, "one run of the listening pattern");
        assert_eq!(runs[0].trigger, "event:content.created");
        // The same event again is the same run.
        p.nexus
            .on_event(&Event {
                name: "content.created",
                id: format!("{}@{}", c.id, c.updated_at),
                payload: json!({"id": c.id}),
            })
            .await;
        p.nexus.drain().await.expect("drain");
        let runs = p
            .nexus
            .runs(&Caller::system(), RunFilter::default(), None, None)
            .await
            .expect("runs")
            .items;
        assert_eq!(runs.len(), 1);
        let r = p
            .nexus
            .run(&Caller::system(), &runs[0].id)
            .await
            .expect("run");
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(
            r.steps[0].input,
            Some(json!({"author": "author-1", "id": c.id}))
        );
        assert_eq!(log.lock().expect("log").len(), 1);
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}

#[tokio::test]
async fn a_scheduled_pattern_is_a_scheduler_job_and_each_occurrence_one_run() {
    for t in common::databases("nexus_cron").await {
        let p = common::provider(&t.db).await;
        let log: Log = Arc::default();
        p.nexus
            .register_operations("test", vec![logging("test.tick", &log)])
            .expect("ops");
        let cron = def(
            json!({"name": "t.cron", "triggers": {"cron": "*/5 * * * *", "timezone": "Europe/Paris", "scheduled_input": {}},
            "steps": [{"name": "tick", "operation": "test.tick"}]}),
        );
        p.nexus
            .register_pattern(&Caller::system(), cron)
            .await
            .expect("register");
        let owner = Owner {
            entity_type: "nexus_pattern".to_owned(),
            entity_id: "t.cron".to_owned(),
        };
        let jobs = p
            .scheduler
            .entity_jobs(&Caller::system(), &owner)
            .await
            .expect("jobs");
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].kind.as_str(), jobs[0].cron.as_deref()),
            ("nexus.run", Some("*/5 * * * *"))
        );
        p.nexus.run_scheduled(&jobs[0]).await.expect("run");
        p.nexus
            .run_scheduled(&jobs[0])
            .await
            .expect("the same occurrence");
        p.nexus.drain().await.expect("drain");
        assert_eq!(log.lock().expect("log").len(), 1);
        // A bad cron is refused naming the trigger.
        let bad = def(
            json!({"name": "t.badcron", "triggers": {"cron": "every day"}, "steps": [{"name": "tick", "operation": "test.tick"}]}),
        );
        match p.nexus.register_pattern(&Caller::system(), bad).await {
            Err(ServiceError::Invalid { field, .. }) => {
                assert!(field.starts_with("triggers.cron"), "{field}")
            }
            other => panic!("{other:?}"),
        }
        // Without the cron, the job goes.
        let plain =
            def(json!({"name": "t.cron", "steps": [{"name": "tick", "operation": "test.tick"}]}));
        let (v2, _) = p
            .nexus
            .register_pattern(&Caller::system(), plain)
            .await
            .expect("v2");
        assert_eq!(v2.version, 2);
        assert!(
            p.scheduler
                .entity_jobs(&Caller::system(), &owner)
                .await
                .expect("jobs")
                .is_empty()
        );
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}

async fn register(p: &services::Provider, name: &str) -> String {
    let u = p
        .users
        .register(
            &Caller::anonymous().from_addr("127.0.0.1:1"),
            NewUser {
                username: name.to_owned(),
                email: format!("{name}@example.org"),
                password: "correct horse battery".to_owned(),
                ..NewUser::default()
            },
        )
        .await
        .expect("register");
    u.id
}

#[tokio::test]
async fn campaign_launch_creates_schedules_and_tells_followers_or_undoes_itself() {
    for t in common::databases("nexus_launch").await {
        let p = common::provider(&t.db).await;
        let follower = register(&p, "follower").await;
        let manager = Caller::user("m1", vec![Role::CampaignManager]);
        let starts = services::time::rfc3339(services::time::now_ms() + 86_400_000);
        let input = json!({"name": "Launch day", "slug": "launch-day", "starts_at": starts, "followers": [follower]});
        let (run, _) = p
            .nexus
            .start(
                &manager,
                "campaign.launch",
                StartRun {
                    input: Some(input),
                    idempotency_key: Some("launch-1".into()),
                },
            )
            .await
            .expect("start");
        p.nexus.drain().await.expect("drain");
        let r = p.nexus.run(&manager, &run.id).await.expect("run");
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        let c = p
            .campaigns
            .get(&manager, "launch-day")
            .await
            .expect("campaign");
        assert_eq!(c.status.as_str(), "draft");
        assert_eq!(c.starts_at.as_deref(), Some(starts.as_str()));
        let owner = Owner {
            entity_type: "campaign".to_owned(),
            entity_id: c.id.clone(),
        };
        let jobs = p
            .scheduler
            .entity_jobs(&Caller::system(), &owner)
            .await
            .expect("jobs");
        assert!(jobs.iter().any(|j| j.kind == "campaign.start"), "{jobs:?}");
        let inbox = p
            .notifications
            .inbox(
                &Caller::user(&follower, vec![Role::User]),
                services::notification::InboxFilter {
                    unread_only: false,
                    limit: None,
                    cursor: None,
                },
            )
            .await
            .expect("inbox");
        assert!(
            inbox
                .items
                .iter()
                .any(|n| n.template == "campaign.launched"),
            "{:?}",
            inbox.items
        );

        // A follower that does not exist: the notification fails for good, the schedule and
        // the campaign are undone.
        let input = json!({"name": "Doomed", "slug": "doomed", "starts_at": starts, "followers": ["nobody"]});
        let (run, _) = p
            .nexus
            .start(
                &manager,
                "campaign.launch",
                StartRun {
                    input: Some(input),
                    idempotency_key: None,
                },
            )
            .await
            .expect("start");
        p.nexus.drain().await.expect("drain");
        let r = p.nexus.run(&manager, &run.id).await.expect("run");
        assert_eq!(r.status, RunStatus::Compensated, "{r:?}");
        let order: Vec<(&str, StepStatus)> = r
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.status))
            .collect();
        assert_eq!(
            order,
            [
                ("create", StepStatus::Compensated),
                ("schedule", StepStatus::Compensated),
                ("notify", StepStatus::Failed)
            ]
        );
        let c = p.campaigns.get(&manager, "doomed").await.expect("campaign");
        assert_eq!(c.status.as_str(), "ended");
        assert_eq!(c.starts_at, None);
        // Bad input is refused before anything runs.
        match p
            .nexus
            .start(
                &manager,
                "campaign.launch",
                StartRun {
                    input: Some(json!({"name": "x"})),
                    idempotency_key: None,
                },
            )
            .await
        {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "input.starts_at"),
            other => panic!("{other:?}"),
        }
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}

/// `test.slow_idem` / `test.slow_once` sleep 2 s: past the step's budget.
fn slow(idempotent: bool, calls: &Arc<AtomicUsize>) -> Operation {
    let calls = calls.clone();
    let name = if idempotent {
        "test.slow_idem"
    } else {
        "test.slow_once"
    };
    Operation::new(
        name,
        "test",
        "slow",
        (json!({}), json!({})),
        idempotent,
        move |_c, _ctx, _| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(json!({}))
            }
        },
    )
}

/// `test.hang` that is not idempotent: counts its calls, signals, waits for `release`.
fn hang_once(h: &Arc<Hang>) -> Operation {
    let h = h.clone();
    Operation::new(
        "test.hang",
        "test",
        "",
        (json!({}), json!({})),
        false,
        move |_c, _ctx, _| {
            let h = h.clone();
            async move {
                h.hang.fetch_add(1, Ordering::SeqCst);
                h.entered.notify_one();
                h.release.notified().await;
                Ok(json!({}))
            }
        },
    )
}

#[tokio::test]
async fn an_attempt_whose_outcome_is_unknown_is_retried_only_when_idempotent() {
    for t in common::databases("nexus_doubt").await {
        let (clock, now) = clock();
        let policies = Policies::load(t.db.clone()).await.expect("policies");
        let config = NexusConfig {
            node: "a".to_owned(),
            lease: Duration::from_secs(5),
            step_timeout: Duration::from_millis(100),
            poll: Duration::from_millis(20),
            concurrency: 4,
        };
        let n = NexusService::with_clock(t.db.clone(), policies, config, None, clock.clone());
        let (idem, once) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        n.register_operations("test", vec![slow(true, &idem), slow(false, &once)])
            .expect("ops");
        for (name, op) in [("t.idem", "test.slow_idem"), ("t.once", "test.slow_once")] {
            let p = def(json!({"name": name, "steps": [
                {"name": "s", "operation": op, "retry": {"max_attempts": 2, "backoff_ms": 10}}]}));
            n.register_pattern(&Caller::system(), p)
                .await
                .expect("register");
        }
        let (a, _) = n
            .start(&Caller::system(), "t.idem", StartRun::default())
            .await
            .expect("start");
        let (b, _) = n
            .start(&Caller::system(), "t.once", StartRun::default())
            .await
            .expect("start");
        n.drain().await.expect("drain");
        now.fetch_add(10, Ordering::SeqCst);
        n.drain().await.expect("drain");
        let a = run_of(&n, &a.id).await;
        assert_eq!(
            (a.status, a.steps[0].attempts),
            (RunStatus::Failed, 2),
            "timed out twice"
        );
        let b = run_of(&n, &b.id).await;
        assert_eq!(
            (b.status, b.steps[0].attempts),
            (RunStatus::Failed, 1),
            "not tried again"
        );
        assert!(
            b.steps[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("longer than")),
            "{b:?}"
        );
        assert_eq!(
            (idem.load(Ordering::SeqCst), once.load(Ordering::SeqCst)),
            (2, 1)
        );

        // A node stopped mid-attempt of an operation that is not idempotent: the node that
        // resumes the run does not run that step again.
        let h = new_hang();
        let mut ops = hang_ops(&h);
        ops.retain(|o| o.name != "test.hang");
        ops.push(hang_once(&h));
        let stopped = bare(&t.db, clock.clone(), "b").await;
        stopped.register_operations("test", ops).expect("ops");
        let mut ops = hang_ops(&h);
        ops.retain(|o| o.name != "test.hang");
        ops.push(hang_once(&h));
        let taker = bare(&t.db, clock.clone(), "c").await;
        taker.register_operations("test", ops).expect("ops");
        let mut p = hang_pattern();
        p.name = "t.hang_once".into();
        stopped
            .register_pattern(&Caller::system(), p)
            .await
            .expect("register");
        let (run, _) = stopped
            .start(&Caller::system(), "t.hang_once", StartRun::default())
            .await
            .expect("start");
        let worker = stopped.spawn_worker();
        tokio::time::timeout(Duration::from_secs(10), h.entered.notified())
            .await
            .expect("entered");
        worker.abort();
        let _ = worker.await;
        now.fetch_add(6_000, Ordering::SeqCst);
        assert_eq!(taker.drain().await.expect("drain"), 1);
        let r = run_of(&taker, &run.id).await;
        assert_eq!(r.status, RunStatus::Failed, "{r:?}");
        assert!(
            r.steps[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not idempotent")),
            "{r:?}"
        );
        assert_eq!(h.hang.load(Ordering::SeqCst), 1, "not run again");
        assert_eq!(h.last.load(Ordering::SeqCst), 0);
        t.finish().await;
    }
}

#[tokio::test]
async fn shipped_names_anonymous_starts_and_bad_schedules_are_refused() {
    for t in common::databases("nexus_refuse").await {
        let p = common::provider(&t.db).await;
        let admin = Caller::user("a1", vec![Role::Admin]);
        let shipped = def(json!({"name": "campaign.launch", "steps": [
            {"name": "c", "operation": "campaign.end", "input": {"campaign": "$.input.c"}}]}));
        assert!(matches!(
            p.nexus.register_pattern(&admin, shipped).await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(matches!(
            p.nexus
                .start(&Caller::anonymous(), "campaign.launch", StartRun::default())
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        let bad = def(
            json!({"name": "t.badcron", "triggers": {"cron": "61 * * * *"},
            "steps": [{"name": "c", "operation": "campaign.end", "input": {"campaign": "$.input.c"}}]}),
        );
        match p.nexus.register_pattern(&admin, bad).await {
            Err(ServiceError::Invalid { field, .. }) => {
                assert!(field.starts_with("triggers.cron"), "{field}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(
                p.nexus.pattern(&admin, "t.badcron", None).await,
                Err(ServiceError::NotFound { .. })
            ),
            "nothing stored"
        );
        p.close(Duration::from_secs(1)).await;
        t.finish().await;
    }
}
