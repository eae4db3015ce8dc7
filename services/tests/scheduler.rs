//! The scheduler service on a real SQLite database (a fresh file per test) and, when
//! `OVASABI_TEST_DATABASE_URL` is set, on Postgres (a schema of its own per run): registering,
//! replacing and removing an entity's jobs; schedules refused with the field named; cron
//! occurrences in a time zone across a daylight saving change; exactly one run when two nodes
//! race for a due job; retries with back-off until `failed`; an expired lease taken over and
//! the stale completion fenced off; missed runs run once or skipped; pause, resume, trigger,
//! RBAC and audit rows. Time is a clock of the test's own, moved by hand.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use services::ServiceError;
use services::scheduler::{
    Clock, Completion, Handlers, Job, JobFilter, JobHandler, JobRun, JobStatus, Owner,
    Registration, RunOutcome, SchedulerConfig, SchedulerService, Worker,
};
use services::security::audit::{AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::time::{parse_rfc3339, rfc3339};

static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);
static ANON: LazyLock<Caller> = LazyLock::new(Caller::anonymous);
static USER: LazyLock<Caller> = LazyLock::new(|| Caller::user("u1", vec![Role::User]));
static MANAGER: LazyLock<Caller> =
    LazyLock::new(|| Caller::user("cm", vec![Role::User, Role::CampaignManager]));
static ADMIN: LazyLock<Caller> = LazyLock::new(|| Caller::user("boss", vec![Role::Admin]));

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

fn ms(s: &str) -> i64 {
    parse_rfc3339("t", s).expect("time")
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        lease: Duration::from_secs(10),
        handler_timeout: Duration::from_millis(300),
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(8),
        missed_after: Duration::from_secs(60),
        batch: 32,
        poll_interval: Duration::from_millis(10),
    }
}

/// Runs jobs of kind `test.run`: counts them per job id; fails while the job has fewer
/// failed attempts than its payload's `fail`; sleeps `sleep_ms` first; panics if `panic`.
#[derive(Clone, Default)]
struct Recorder {
    runs: Arc<Mutex<HashMap<String, u32>>>,
}

impl Recorder {
    fn count(&self, job_id: &str) -> u32 {
        self.runs
            .lock()
            .expect("lock")
            .get(job_id)
            .copied()
            .unwrap_or(0)
    }
}

impl JobHandler for Recorder {
    fn run<'a>(
        &'a self,
        job: &'a Job,
    ) -> services::campaign::BoxFuture<'a, Result<(), services::scheduler::HandlerError>> {
        Box::pin(async move {
            *self
                .runs
                .lock()
                .expect("lock")
                .entry(job.id.clone())
                .or_default() += 1;
            if let Some(ms) = job.payload.get("sleep_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if job.payload.get("panic").is_some() {
                panic!("the handler of {} panics", job.name);
            }
            let fail = job.payload.get("fail").and_then(Value::as_u64).unwrap_or(0);
            if u64::from(job.attempts) < fail {
                return Err(format!(
                    "attempt {} of {} failed on purpose",
                    job.attempts + 1,
                    job.name
                )
                .into());
            }
            Ok(())
        })
    }
}

struct Fixture {
    svc: SchedulerService,
    /// The same database through a second service, as another node would have.
    other: SchedulerService,
    recorder: Recorder,
    log: AuditLog,
    now: Arc<AtomicI64>,
    home: common::TestDb,
}

async fn fixtures(tag: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases(tag).await {
        let db = home.db.clone();
        let policies = Policies::load(db.clone()).await.expect("policies");
        let now = Arc::new(AtomicI64::new(ms("2026-12-01T00:00:00Z")));
        let clock = {
            let now = now.clone();
            Clock::from_fn(move || now.load(Ordering::SeqCst))
        };
        let service = |p: Policies| {
            SchedulerService::new(db.clone(), p, config())
                .expect("service")
                .with_clock(clock.clone())
        };
        out.push(Fixture {
            svc: service(policies.clone()),
            other: service(Policies::load(db.clone()).await.expect("policies")),
            recorder: Recorder::default(),
            log: AuditLog::new(db.clone(), policies),
            now,
            home,
        });
    }
    out
}

impl Fixture {
    async fn finish(self) {
        self.home.finish().await;
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn set(&self, t: i64) {
        self.now.store(t, Ordering::SeqCst);
    }

    fn advance(&self, by: i64) {
        self.now.fetch_add(by, Ordering::SeqCst);
    }

    fn worker(&self, node: &str) -> Worker {
        self.svc
            .worker(
                node,
                Handlers::new().with("test.run", self.recorder.clone()),
            )
            .expect("worker")
    }

    fn other_worker(&self, node: &str) -> Worker {
        self.other
            .worker(
                node,
                Handlers::new().with("test.run", self.recorder.clone()),
            )
            .expect("worker")
    }

    /// Registers `jobs` for `campaign/<id>` (relative jobs read `entity`).
    async fn register(
        &self,
        id: &str,
        jobs: Value,
        entity: Value,
        on: Registration,
    ) -> Result<services::scheduler::RegisterResult, ServiceError> {
        self.svc
            .register_entity_jobs(
                &SYS,
                &Owner::new("campaign", id),
                &json!({ "frequency": 1, "jobs": jobs }),
                &entity,
                on,
            )
            .await
    }

    /// Registers one job on create and returns it.
    async fn one(&self, id: &str, job: Value) -> Job {
        let mut r = self
            .register(id, json!([job]), json!({}), Registration::Create)
            .await
            .unwrap_or_else(|e| panic!("register {id}: {e}"));
        assert_eq!(r.jobs.len(), 1);
        r.jobs.remove(0)
    }

    async fn job(&self, id: &str) -> Job {
        self.svc.get(&ADMIN, id).await.expect("job")
    }

    /// The job's runs, oldest first.
    async fn runs(&self, id: &str) -> Vec<JobRun> {
        let mut runs = self
            .svc
            .runs(&ADMIN, id, Some(500), None)
            .await
            .expect("runs")
            .items;
        runs.reverse();
        runs
    }

    async fn outcomes(&self, id: &str) -> Vec<RunOutcome> {
        self.runs(id).await.into_iter().map(|r| r.outcome).collect()
    }

    async fn audit(&self, entity_id: &str) -> Vec<String> {
        let filter = AuditFilter {
            entity_id: Some(entity_id.to_owned()),
            ..AuditFilter::default()
        };
        self.log
            .query(&SYS, &filter, Some(500), None)
            .await
            .expect("audit")
            .items
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) {
    match r {
        Err(ServiceError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "wrong field (message: {message})");
        }
        other => panic!("expected Invalid({field}), got {other:?}"),
    }
}

fn next_ms(job: &Job) -> i64 {
    ms(job.next_run_at.as_deref().expect("next_run_at"))
}

#[tokio::test]
async fn registering_replaces_an_entitys_jobs_and_deleting_it_removes_them() {
    for f in fixtures("sched_register").await {
        let entity = json!({"starts_at": "2026-12-24T18:00:00Z"});
        let r = f
            .register(
                "c1",
                json!([
                    {"name": "start", "kind": "campaign.start", "at": "2026-12-24T18:00:00Z"},
                    {"name": "reminder", "kind": "notification.send", "field": "starts_at",
                     "before": "15m", "payload": {"audience": "followers"}},
                    {"name": "digest", "kind": "notification.digest", "cron": "0 9 * * MON",
                     "timezone": "Europe/Paris", "skip_missed": true},
                ]),
                entity,
                Registration::Create,
            )
            .await
            .expect("register");
        assert_eq!((r.created, r.updated, r.unchanged, r.deleted), (3, 0, 0, 0));
        let by_name: HashMap<String, Job> =
            r.jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
        assert_eq!(next_ms(&by_name["start"]), ms("2026-12-24T18:00:00Z"));
        assert_eq!(next_ms(&by_name["reminder"]), ms("2026-12-24T17:45:00Z"));
        assert_eq!(
            by_name["reminder"].payload,
            json!({"audience": "followers"})
        );
        // Monday 7 December, 09:00 in Paris.
        assert_eq!(next_ms(&by_name["digest"]), ms("2026-12-07T08:00:00Z"));
        assert_eq!(by_name["digest"].timezone.as_deref(), Some("Europe/Paris"));
        assert!(by_name.values().all(|j| j.status == JobStatus::Active));

        // The campaign moves a day later, drops the digest and gains an end.
        let moved = json!({"starts_at": "2026-12-25T18:00:00Z"});
        let r = f
            .register(
                "c1",
                json!([
                    {"name": "start", "kind": "campaign.start", "at": "2026-12-24T18:00:00Z"},
                    {"name": "reminder", "kind": "notification.send", "field": "starts_at",
                     "before": "15m", "payload": {"audience": "followers"}},
                    {"name": "end", "kind": "campaign.end", "at": "2026-12-31T00:00:00Z"},
                ]),
                moved.clone(),
                Registration::Update,
            )
            .await
            .expect("replace");
        assert_eq!((r.created, r.updated, r.unchanged, r.deleted), (1, 1, 1, 1));
        let after: HashMap<String, Job> = r.jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
        assert_eq!(
            after
                .keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["end", "reminder", "start"].into_iter().collect()
        );
        assert_eq!(
            after["start"].id, by_name["start"].id,
            "a job that stays keeps its id"
        );
        assert_eq!(after["reminder"].id, by_name["reminder"].id);
        assert_eq!(next_ms(&after["reminder"]), ms("2026-12-25T17:45:00Z"));
        assert!(matches!(
            f.svc.get(&ADMIN, &by_name["digest"].id).await,
            Err(ServiceError::NotFound { .. })
        ));

        // The same declaration again changes nothing (and writes no audit row).
        let r = f
            .register(
                "c1",
                json!([
                    {"name": "start", "kind": "campaign.start", "at": "2026-12-24T18:00:00Z"},
                    {"name": "reminder", "kind": "notification.send", "field": "starts_at",
                     "before": "15m", "payload": {"audience": "followers"}},
                    {"name": "end", "kind": "campaign.end", "at": "2026-12-31T00:00:00Z"},
                ]),
                moved,
                Registration::Update,
            )
            .await
            .expect("again");
        assert_eq!((r.created, r.updated, r.unchanged, r.deleted), (0, 0, 3, 0));

        // Lists: by entity, by kind, by status, paginated.
        f.one(
            "c2",
            json!({"name": "start", "kind": "campaign.start", "at": "2027-01-01T00:00:00Z"}),
        )
        .await;
        let all = f
            .svc
            .list(&MANAGER, JobFilter::default(), Some(2), None)
            .await
            .expect("list");
        assert_eq!(all.items.len(), 2);
        let rest = f
            .svc
            .list(
                &MANAGER,
                JobFilter::default(),
                Some(2),
                all.next_cursor.as_deref(),
            )
            .await
            .expect("page 2");
        assert_eq!(rest.items.len(), 2);
        assert!(rest.next_cursor.is_none());
        let starts = f
            .svc
            .list(
                &MANAGER,
                JobFilter {
                    kind: Some("campaign.start".into()),
                    ..JobFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("by kind");
        assert_eq!(starts.items.len(), 2);
        let c1 = f
            .svc
            .entity_jobs(&MANAGER, &Owner::new("campaign", "c1"))
            .await
            .expect("c1");
        assert_eq!(c1.len(), 3);

        // Deleting the campaign removes its jobs.
        let removed = f
            .svc
            .remove_entity_jobs(&SYS, &Owner::new("campaign", "c1"))
            .await
            .expect("remove");
        assert_eq!(removed, 3);
        let left = f
            .svc
            .list(
                &ADMIN,
                JobFilter {
                    entity_id: Some("c1".into()),
                    ..JobFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("left");
        assert!(left.items.is_empty());
        assert_eq!(
            f.svc
                .remove_entity_jobs(&SYS, &Owner::new("campaign", "c1"))
                .await
                .expect("again"),
            0
        );
        assert_eq!(
            f.audit("c1").await,
            [
                "scheduler.register",
                "scheduler.register",
                "scheduler.remove"
            ]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn invalid_schedules_are_refused_naming_the_field() {
    for f in fixtures("sched_invalid").await {
        let cases = [
            (
                json!([{"name": "a", "kind": "k", "cron": "0 25 * * *"}]),
                "jobs[0].cron",
            ),
            (
                json!([{"name": "a", "kind": "k", "cron": "every day"}]),
                "jobs[0].cron",
            ),
            (
                json!([{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z"},
                       {"name": "b", "kind": "k", "cron": "0 9 * * *", "timezone": "Europe/Atlantis"}]),
                "jobs[1].timezone",
            ),
            (
                json!([{"name": "a", "kind": "k", "at": "2026-11-30T23:59:59Z"}]),
                "jobs[0].at",
            ),
            (
                json!([{"name": "a", "kind": "k", "at": "next tuesday"}]),
                "jobs[0].at",
            ),
            (
                json!([{"name": "a", "kind": "k", "at": "2027-01-01T00:00:00Z", "repeat": true}]),
                "jobs[0].repeat",
            ),
            (
                json!([{"name": "a", "kind": "k", "field": "starts_at", "before": "1h"}]),
                "jobs[0].field",
            ),
            (
                json!([{"name": "a", "at": "2027-01-01T00:00:00Z"}]),
                "jobs[0].kind",
            ),
            (json!({"name": "a"}), "jobs"),
        ];
        for (jobs, field) in cases {
            let r = f
                .register("bad", jobs.clone(), json!({}), Registration::Create)
                .await;
            assert_invalid(r, field);
            assert_invalid(
                f.svc
                    .validate(&json!({"jobs": jobs}), &json!({}), Registration::Create),
                field,
            );
        }
        // A past time is due at once on an update (a missed job), not refused.
        let r = f
            .register(
                "late",
                json!([{"name": "a", "kind": "k", "at": "2026-11-30T23:59:59Z"}]),
                json!({}),
                Registration::Update,
            )
            .await
            .expect("update");
        assert_eq!(next_ms(&r.jobs[0]), ms("2026-11-30T23:59:59Z"));
        let r = f
            .svc
            .register_entity_jobs(
                &SYS,
                &Owner::new("Campaign", "x"),
                &json!({}),
                &json!({}),
                Registration::Create,
            )
            .await;
        assert_invalid(r, "entity_type");
        // The JSON shape is the documented one: a declaration deserialises strictly too.
        let strict: Result<services::scheduler::JobSpec, _> = serde_json::from_value(
            json!({"name": "a", "kind": "k", "cron": "@daily", "tz": "UTC"}),
        );
        assert!(strict.is_err());
        let none = f
            .svc
            .list(
                &ADMIN,
                JobFilter {
                    entity_id: Some("bad".into()),
                    ..JobFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("list");
        assert!(none.items.is_empty(), "nothing stored");
        f.finish().await;
    }
}

#[tokio::test]
async fn cron_jobs_run_on_their_time_zones_wall_clock_across_a_daylight_saving_change() {
    for f in fixtures("sched_dst").await {
        let w = f.worker("n1");
        // Saturday 24 October 2026, 09:30 in Paris (CEST, UTC+2); the clocks go back to CET
        // (UTC+1) on the night of the 25th.
        f.set(ms("2026-10-24T07:30:00Z"));
        let paris = f
            .one(
                "dst",
                json!({"name": "daily", "kind": "test.run", "cron": "0 9 * * *",
                               "timezone": "Europe/Paris"}),
            )
            .await;
        // Sunday 09:00 CET: 25 hours after Saturday's 09:00 CEST, not 24.
        assert_eq!(next_ms(&paris), ms("2026-10-25T08:00:00Z"));
        f.set(ms("2026-10-25T08:00:00Z"));
        let tick = w.tick().await.expect("tick");
        assert_eq!((tick.claimed, tick.succeeded), (1, 1), "{tick:?}");
        let paris = f.job(&paris.id).await;
        assert_eq!(next_ms(&paris), ms("2026-10-26T08:00:00Z"));
        assert_eq!(paris.status, JobStatus::Active);
        assert_eq!(paris.last_outcome, Some(RunOutcome::Succeeded));
        assert_eq!(
            paris.last_run_at.as_deref(),
            Some(rfc3339(ms("2026-10-25T08:00:00Z")).as_str())
        );
        assert_eq!(f.recorder.count(&paris.id), 1);
        f.svc
            .remove_entity_jobs(&SYS, &Owner::new("campaign", "dst"))
            .await
            .expect("remove");

        // New York goes back on 1 November: 01:30 happens twice (EDT, then EST). A job at
        // 01:30 runs once that night, then at 01:30 EST the next night.
        f.set(ms("2026-10-31T06:00:00Z"));
        let ny = f
            .one(
                "dst-ny",
                json!({"name": "night", "kind": "test.run", "cron": "30 1 * * *",
                                  "timezone": "America/New_York"}),
            )
            .await;
        assert_eq!(next_ms(&ny), ms("2026-11-01T05:30:00Z"));
        f.set(ms("2026-11-01T05:30:00Z"));
        let tick = w.tick().await.expect("tick");
        assert_eq!((tick.claimed, tick.succeeded), (1, 1), "{tick:?}");
        assert_eq!(next_ms(&f.job(&ny.id).await), ms("2026-11-02T06:30:00Z"));
        f.set(ms("2026-11-01T06:30:00Z"));
        let tick = w.tick().await.expect("tick");
        assert_eq!(
            tick.claimed, 0,
            "the repeated 01:30 is no second occurrence: {tick:?}"
        );
        assert_eq!(f.recorder.count(&ny.id), 1);
        f.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_job_runs_exactly_once_when_two_nodes_race_for_it() {
    for f in fixtures("sched_race").await {
        let (a, b) = (f.worker("node-a"), f.other_worker("node-b"));
        for i in 0..50 {
            let job = f
                .one(
                    &format!("race-{i}"),
                    json!({"name": "start", "kind": "test.run",
                           "at": rfc3339(f.now() + SECOND)}),
                )
                .await;
            f.advance(2 * SECOND);
            let (ta, tb) = (a.clone(), b.clone());
            let (ra, rb) = tokio::join!(
                tokio::spawn(async move { ta.tick().await }),
                tokio::spawn(async move { tb.tick().await })
            );
            let (ra, rb) = (
                ra.expect("join a").expect("tick a"),
                rb.expect("join b").expect("tick b"),
            );
            assert_eq!(ra.claimed + rb.claimed, 1, "round {i}: {ra:?} {rb:?}");
            assert_eq!(ra.succeeded + rb.succeeded, 1, "round {i}");
            assert_eq!(
                f.recorder.count(&job.id),
                1,
                "round {i}: the handler ran once"
            );
            assert_eq!(
                f.outcomes(&job.id).await,
                [RunOutcome::Succeeded],
                "round {i}"
            );
            let job = f.job(&job.id).await;
            assert_eq!(job.status, JobStatus::Done, "round {i}");
            assert!(
                job.lease_owner.is_none() && job.next_run_at.is_none(),
                "{job:?}"
            );
        }
        // Nothing is left to run on either node.
        assert_eq!(a.tick().await.expect("tick").claimed, 0);
        assert_eq!(b.tick().await.expect("tick").claimed, 0);
        f.finish().await;
    }
}

#[tokio::test]
async fn failed_runs_are_retried_with_back_off_until_max_attempts_then_the_job_fails() {
    for f in fixtures("sched_retry").await {
        let w = f.worker("n1");
        let job = f
            .one(
                "retry",
                json!({"name": "flaky", "kind": "test.run", "at": rfc3339(f.now() + MINUTE),
                                 "max_attempts": 3, "payload": {"fail": 99}}),
            )
            .await;
        f.advance(MINUTE);
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            let before = f.now();
            let tick = w.tick().await.expect("tick");
            assert_eq!(
                (tick.claimed, tick.failed),
                (1, 1),
                "attempt {attempt}: {tick:?}"
            );
            let j = f.job(&job.id).await;
            assert_eq!(j.last_outcome, Some(RunOutcome::Failed));
            assert_eq!(
                j.last_error.as_deref(),
                Some(format!("attempt {attempt} of flaky failed on purpose").as_str())
            );
            if attempt < 3 {
                assert_eq!(j.status, JobStatus::Active);
                assert_eq!(j.attempts, attempt);
                let wait = next_ms(&j) - before;
                waits.push(wait);
                // Not due again before its back-off has passed.
                f.set(next_ms(&j) - 1);
                assert_eq!(w.tick().await.expect("early").claimed, 0);
                f.set(next_ms(&j));
            } else {
                assert_eq!(j.status, JobStatus::Failed);
                assert_eq!(j.attempts, 3);
                assert!(j.next_run_at.is_none());
            }
        }
        // retry_min 1 s, doubling, up to half taken off at random.
        assert!((500..=1_000).contains(&waits[0]), "{waits:?}");
        assert!((1_000..=2_000).contains(&waits[1]), "{waits:?}");
        let runs = f.runs(&job.id).await;
        assert_eq!(
            runs.iter()
                .map(|r| (r.attempt, r.outcome))
                .collect::<Vec<_>>(),
            [
                (1, RunOutcome::Failed),
                (2, RunOutcome::Failed),
                (3, RunOutcome::Failed)
            ]
        );
        assert!(
            runs.iter()
                .all(|r| r.finished_at.is_some() && r.node == "n1")
        );
        f.advance(HOUR);
        assert_eq!(
            w.tick().await.expect("tick").claimed,
            0,
            "a failed job stays failed"
        );
        assert_eq!(f.recorder.count(&job.id), 3);

        // Resume retries it from its first attempt.
        let resumed = f.svc.resume(&ADMIN, &job.id).await.expect("resume");
        assert_eq!((resumed.status, resumed.attempts), (JobStatus::Active, 0));
        assert_eq!(w.tick().await.expect("tick").failed, 1);
        assert_eq!(f.job(&job.id).await.attempts, 1);
        f.svc
            .remove_entity_jobs(&SYS, &Owner::new("campaign", "retry"))
            .await
            .expect("remove");

        // A job that fails once succeeds on its second attempt.
        let once = f
            .one(
                "retry-once",
                json!({"name": "flaky", "kind": "test.run", "at": rfc3339(f.now() + SECOND),
                                      "payload": {"fail": 1}}),
            )
            .await;
        f.advance(SECOND);
        assert_eq!(w.tick().await.expect("tick").failed, 1);
        f.set(next_ms(&f.job(&once.id).await));
        assert_eq!(w.tick().await.expect("tick").succeeded, 1);
        let once = f.job(&once.id).await;
        assert_eq!((once.status, once.attempts), (JobStatus::Done, 0));
        assert!(once.last_error.is_none());
        assert_eq!(
            f.outcomes(&once.id).await,
            [RunOutcome::Failed, RunOutcome::Succeeded]
        );

        // Handlers that time out, panic, or are missing fail the attempt with that error.
        for (name, job, error) in [
            (
                "slow",
                json!({"payload": {"sleep_ms": 2_000}}),
                "timed out after 300ms",
            ),
            (
                "panics",
                json!({"payload": {"panic": true}}),
                "the handler panicked",
            ),
            (
                "unknown",
                json!({"kind": "test.nobody"}),
                "no handler for kind \"test.nobody\"",
            ),
        ] {
            let mut spec = json!({"name": name, "kind": "test.run", "max_attempts": 1,
                                  "at": rfc3339(f.now() + SECOND)});
            if let (Some(spec), Some(extra)) = (spec.as_object_mut(), job.as_object()) {
                spec.extend(extra.clone());
            }
            let j = f.one(&format!("bad-{name}"), spec).await;
            f.advance(SECOND);
            assert_eq!(w.tick().await.expect("tick").failed, 1, "{name}");
            let j = f.job(&j.id).await;
            assert_eq!(j.status, JobStatus::Failed, "{name}");
            let e = j.last_error.unwrap_or_default();
            assert!(e.starts_with(error), "{name}: {e}");
        }
        f.finish().await;
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_once_and_the_stale_completion_is_fenced_off() {
    for f in fixtures("sched_lease").await {
        let (dead, live) = (f.worker("dead-node"), f.other_worker("live-node"));
        let job = f
            .one(
                "lease",
                json!({"name": "start", "kind": "test.run", "at": rfc3339(f.now() + SECOND)}),
            )
            .await;
        f.advance(SECOND);
        // The first node claims the job and then stops answering mid-run.
        let claimed = dead.claim().await.expect("claim");
        assert_eq!(claimed.claims.len(), 1);
        let stale = claimed.claims.into_iter().next().expect("claim");
        assert_eq!((stale.attempt, stale.node.as_str()), (1, "dead-node"));
        let held = f.job(&job.id).await;
        assert_eq!(held.lease_owner.as_deref(), Some("dead-node"));
        // While its lease holds, nobody else takes the job, and it cannot be triggered.
        f.advance(9 * SECOND);
        assert_eq!(live.tick().await.expect("tick").claimed, 0);
        assert!(matches!(
            f.svc.trigger(&ADMIN, &job.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        // Past the lease (10 s) the other node takes it over and runs it once.
        f.advance(2 * SECOND);
        let tick = live.tick().await.expect("tick");
        assert_eq!(
            (tick.expired, tick.claimed, tick.succeeded),
            (1, 1, 1),
            "{tick:?} {:?}",
            f.job(&job.id).await
        );
        assert_eq!(f.recorder.count(&job.id), 1);
        // The first node comes back and reports: refused, nothing overwritten.
        let late = dead
            .complete(&stale, Err("came back".into()))
            .await
            .expect("complete");
        assert_eq!(late, Completion::Fenced);
        let done = f.job(&job.id).await;
        assert_eq!(done.status, JobStatus::Done);
        assert_eq!(done.last_outcome, Some(RunOutcome::Succeeded));
        assert!(done.lease_owner.is_none());
        let runs = f.runs(&job.id).await;
        assert_eq!(
            runs.iter()
                .map(|r| (r.node.as_str(), r.attempt, r.outcome))
                .collect::<Vec<_>>(),
            [
                ("dead-node", 1, RunOutcome::Failed),
                ("live-node", 2, RunOutcome::Succeeded)
            ]
        );
        assert!(
            runs[0]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("lease of node dead-node expired")
        );

        // A node that dies on the last allowed attempt leaves the job failed.
        let last = f
            .one(
                "lease-last",
                json!({"name": "start", "kind": "test.run", "max_attempts": 1,
                                      "at": rfc3339(f.now() + SECOND)}),
            )
            .await;
        f.advance(SECOND);
        let stale = dead.claim().await.expect("claim").claims.remove(0);
        f.advance(11 * SECOND);
        let tick = live.tick().await.expect("tick");
        assert_eq!((tick.expired, tick.claimed), (1, 0), "{tick:?}");
        let last = f.job(&last.id).await;
        assert_eq!(last.status, JobStatus::Failed);
        assert_eq!(
            dead.complete(&stale, Ok(())).await.expect("complete"),
            Completion::Fenced
        );
        assert_eq!(f.recorder.count(&last.id), 0);
        f.finish().await;
    }
}

#[tokio::test]
async fn a_job_due_while_no_node_ran_runs_once_when_one_starts_unless_it_skips_missed_runs() {
    for f in fixtures("sched_missed").await {
        let cron = |name: &str, skip: bool| json!({"name": name, "kind": "test.run", "cron": "*/10 * * * *", "skip_missed": skip});
        let at = |name: &str, skip: bool| json!({"name": name, "kind": "test.run", "at": "2026-12-01T00:01:00Z", "skip_missed": skip});
        let r = f
            .register(
                "missed",
                json!([
                    cron("cron-run", false),
                    cron("cron-skip", true),
                    at("once-run", false),
                    at("once-skip", true)
                ]),
                json!({}),
                Registration::Create,
            )
            .await
            .expect("register");
        let id: HashMap<String, String> = r
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.id.clone()))
            .collect();
        // Every node was down for an hour and a half: six occurrences of the cron jobs went by.
        f.set(ms("2026-12-01T01:35:00Z"));
        let w = f.worker("n1");
        let tick = w.tick().await.expect("tick");
        assert_eq!(
            (tick.claimed, tick.succeeded, tick.skipped),
            (2, 2, 2),
            "{tick:?}"
        );
        assert_eq!(
            f.recorder.count(&id["cron-run"]),
            1,
            "once, not once per missed occurrence"
        );
        assert_eq!(f.recorder.count(&id["once-run"]), 1);
        assert_eq!(f.recorder.count(&id["cron-skip"]), 0);
        assert_eq!(f.recorder.count(&id["once-skip"]), 0);
        for name in ["cron-run", "cron-skip"] {
            let j = f.job(&id[name]).await;
            assert_eq!(
                next_ms(&j),
                ms("2026-12-01T01:40:00Z"),
                "{name}: the next future occurrence"
            );
            assert_eq!(j.status, JobStatus::Active);
        }
        assert_eq!(f.outcomes(&id["cron-skip"]).await, [RunOutcome::Skipped]);
        assert_eq!(f.outcomes(&id["once-skip"]).await, [RunOutcome::Skipped]);
        let skipped = f.job(&id["once-skip"]).await;
        assert_eq!(
            (skipped.status, skipped.last_outcome),
            (JobStatus::Done, Some(RunOutcome::Skipped))
        );
        assert!(
            skipped.last_run_at.is_none(),
            "a skipped occurrence is no run"
        );
        assert_eq!(f.job(&id["once-run"]).await.status, JobStatus::Done);

        // Late but before its next occurrence, a skip_missed job still runs.
        f.set(ms("2026-12-01T01:49:00Z"));
        let tick = w.tick().await.expect("tick");
        assert_eq!((tick.claimed, tick.skipped), (2, 0), "{tick:?}");
        assert_eq!(f.recorder.count(&id["cron-skip"]), 1);
        f.finish().await;
    }
}

#[tokio::test]
async fn admins_pause_resume_and_trigger_jobs_and_others_are_refused() {
    for f in fixtures("sched_admin").await {
        let w = f.worker("n1");
        let job = f
            .one(
                "admin",
                json!({"name": "digest", "kind": "test.run", "cron": "0 9 * * *"}),
            )
            .await;
        assert_eq!(next_ms(&job), ms("2026-12-01T09:00:00Z"));

        // RBAC: reading needs admin or campaign manager, changing needs admin.
        assert!(matches!(
            f.svc.list(&ANON, JobFilter::default(), None, None).await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.svc.get(&USER, &job.id).await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert_eq!(
            f.svc
                .get(&MANAGER, &job.id)
                .await
                .expect("manager reads")
                .id,
            job.id
        );
        for who in [&*MANAGER, &*USER] {
            assert!(matches!(
                f.svc.pause(who, &job.id).await,
                Err(ServiceError::Forbidden { .. })
            ));
            assert!(matches!(
                f.svc.resume(who, &job.id).await,
                Err(ServiceError::Forbidden { .. })
            ));
            assert!(matches!(
                f.svc.trigger(who, &job.id).await,
                Err(ServiceError::Forbidden { .. })
            ));
        }
        assert!(matches!(
            f.svc.trigger(&ANON, &job.id).await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.svc
                .register_entity_jobs(
                    &USER,
                    &Owner::new("campaign", "x"),
                    &json!({}),
                    &json!({}),
                    Registration::Create
                )
                .await,
            Err(ServiceError::Forbidden { .. })
        ));
        assert!(matches!(
            f.svc
                .remove_entity_jobs(&ANON, &Owner::new("campaign", "admin"))
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.svc.pause(&ADMIN, "no-such-job").await,
            Err(ServiceError::NotFound { .. })
        ));

        // Paused: kept, not claimed when due.
        let paused = f.svc.pause(&ADMIN, &job.id).await.expect("pause");
        assert_eq!(paused.status, JobStatus::Paused);
        assert_eq!(paused.next_run_at, job.next_run_at);
        assert!(matches!(
            f.svc.pause(&ADMIN, &job.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(matches!(
            f.svc.trigger(&ADMIN, &job.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        f.set(ms("2026-12-01T09:00:00Z"));
        assert_eq!(w.tick().await.expect("tick").claimed, 0);
        let listed = f
            .svc
            .list(
                &ADMIN,
                JobFilter {
                    status: Some(JobStatus::Paused),
                    ..JobFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("paused list");
        assert_eq!(listed.items.len(), 1);

        // Resumed: due as it was.
        let resumed = f.svc.resume(&ADMIN, &job.id).await.expect("resume");
        assert_eq!(resumed.status, JobStatus::Active);
        assert!(matches!(
            f.svc.resume(&ADMIN, &job.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        let tick = w.tick().await.expect("tick");
        let ran = f.job(&job.id).await;
        assert_eq!(tick.succeeded, 1, "{tick:?} {ran:?}");
        assert_eq!(next_ms(&ran), ms("2026-12-02T09:00:00Z"));

        // Triggered: due now, runs once, then back on its schedule.
        f.advance(HOUR);
        let triggered = f.svc.trigger(&ADMIN, &job.id).await.expect("trigger");
        assert_eq!(next_ms(&triggered), f.now());
        let tick = w.tick().await.expect("tick");
        assert_eq!(tick.succeeded, 1);
        assert_eq!(f.recorder.count(&job.id), 2);
        assert_eq!(next_ms(&f.job(&job.id).await), ms("2026-12-02T09:00:00Z"));

        // A done one-off job can be triggered to run again, not paused.
        let once = f
            .one(
                "admin-once",
                json!({"name": "start", "kind": "test.run", "at": rfc3339(f.now() + SECOND)}),
            )
            .await;
        f.advance(SECOND);
        w.tick().await.expect("tick");
        assert!(matches!(
            f.svc.pause(&ADMIN, &once.id).await,
            Err(ServiceError::Conflict { .. })
        ));
        f.svc.trigger(&ADMIN, &once.id).await.expect("trigger done");
        assert_eq!(w.tick().await.expect("tick").succeeded, 1);
        assert_eq!(f.recorder.count(&once.id), 2);

        assert_eq!(
            f.audit(&job.id).await,
            ["scheduler.pause", "scheduler.resume", "scheduler.trigger"]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn a_running_worker_picks_up_due_jobs_and_stops_when_told() {
    for f in fixtures("sched_worker").await {
        let job = f
            .one(
                "loop",
                json!({"name": "start", "kind": "test.run", "at": rfc3339(f.now() + SECOND)}),
            )
            .await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = f.worker("n1");
        let task = tokio::spawn(worker.run(async move {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.recorder.count(&job.id), 0, "not due yet");
        f.advance(SECOND);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while f.job(&job.id).await.status != JobStatus::Done {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not run the job"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(f.recorder.count(&job.id), 1);
        stop_tx.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the worker stops")
            .expect("join");
        f.finish().await;
    }
}
