//! A campaign's start, end and scheduled notifications run as scheduler jobs, through the
//! [`Provider`] the node builds (its real handlers), on SQLite and, when
//! `OVASABI_TEST_DATABASE_URL` is set, on Postgres: a draft starts and ends at its times
//! (once, with two nodes' workers racing for each campaign); moving a time moves its job,
//! activating a draft cancels its start, ending removes the jobs; bad job declarations are
//! refused naming the campaign's field; a scheduled notification reaches its recipient's
//! inbox with the campaign's facts; a start due while no node ran happens once when one
//! starts.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use services::ServiceError;
use services::campaign::{
    BatchEvent, BoxFuture, BroadcastError, Broadcaster, Campaign, LiveCampaign, NewCampaign, Status,
};
use services::notification::{Category, DeliveryConfig, InboxFilter, RealtimeSink, TemplateInput};
use services::provider::{Provider, ProviderConfig};
use services::scheduler::{Job, JobFilter, JobStatus, SchedulerConfig};
use services::security::audit::AuditFilter;
use services::security::{Caller, Role};
use services::time::{now_ms, rfc3339};

static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);
static ADMIN: LazyLock<Caller> = LazyLock::new(|| Caller::user("boss", vec![Role::Admin]));

/// Counts what reaches the engine, per campaign.
#[derive(Default)]
struct Engine {
    upserts: Mutex<HashMap<String, u32>>,
    ends: Mutex<HashMap<String, u32>>,
}

impl Engine {
    fn upserts(&self, id: &str) -> u32 {
        self.upserts
            .lock()
            .expect("lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }
    fn ends(&self, id: &str) -> u32 {
        self.ends
            .lock()
            .expect("lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

impl Broadcaster for Engine {
    fn upsert(&self, c: LiveCampaign) -> BoxFuture<'_, Result<(), BroadcastError>> {
        *self.upserts.lock().expect("lock").entry(c.id).or_default() += 1;
        Box::pin(async { Ok(()) })
    }
    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), BroadcastError>> {
        *self
            .ends
            .lock()
            .expect("lock")
            .entry(id.to_owned())
            .or_default() += 1;
        Box::pin(async { Ok(()) })
    }
    fn state(&self, _: &str, _: Box<RawValue>) -> BoxFuture<'_, Result<(), BroadcastError>> {
        Box::pin(async { Ok(()) })
    }
    fn publish(
        &self,
        _: &str,
        _: &str,
        _: Box<RawValue>,
        _: bool,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        Box::pin(async { Ok(1) })
    }
    fn publish_batch(
        &self,
        _: &str,
        events: Vec<BatchEvent>,
    ) -> BoxFuture<'_, Result<std::ops::RangeInclusive<u64>, BroadcastError>> {
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        Box::pin(async move { Ok(1..=n) })
    }
    fn running(&self) -> Vec<String> {
        Vec::new()
    }
    fn message(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Box<RawValue>,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>> {
        Box::pin(async { Ok(1) })
    }
}

struct NoSessions;

impl RealtimeSink for NoSessions {
    fn push(&self, _: &str, _: Box<RawValue>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

async fn provider(db: &services::Database, engine: Arc<Engine>) -> Provider {
    Provider::new(ProviderConfig {
        db: db.clone(),
        broadcaster: engine,
        cache: None,
        tokens: services::user::TokenConfig {
            secret: vec![9; 32],
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(120),
        },
        localization: services::localization::LocalizationConfig::default(),
        babel: services::babel::BabelConfig::default(),
        realtime: Arc::new(NoSessions),
        notification: DeliveryConfig::default(),
        scheduler: SchedulerConfig {
            lease: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(1),
            ..SchedulerConfig::default()
        },
        commerce: services::commerce::CommerceConfig::default(),
        nexus: services::nexus::NexusConfig::default(),
    })
    .await
    .expect("provider")
}

/// A worker of node `node` on `p`, running until the returned sender is dropped or sent to.
fn worker(p: &Provider, node: &str) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let w = p.scheduler.worker(node, p.job_handlers()).expect("worker");
    tokio::spawn(w.run(async move {
        let _ = stopped.await;
    }));
    stop
}

fn new(body: Value) -> NewCampaign {
    serde_json::from_value(body).expect("valid create body")
}

fn at(ms: i64) -> String {
    rfc3339(ms)
}

async fn jobs_of(p: &Provider, id: &str) -> Vec<Job> {
    p.scheduler
        .list(
            &ADMIN,
            JobFilter {
                entity_type: Some("campaign".to_owned()),
                entity_id: Some(id.to_owned()),
                ..JobFilter::default()
            },
            None,
            None,
        )
        .await
        .expect("jobs")
        .items
}

async fn actions(p: &Provider, id: &str) -> Vec<String> {
    let page = p
        .audit
        .query(
            &ADMIN,
            &AuditFilter {
                entity_id: Some(id.to_owned()),
                ..AuditFilter::default()
            },
            Some(100),
            None,
        )
        .await
        .expect("audit");
    // Oldest first.
    page.items.into_iter().map(|r| r.action).collect()
}

async fn wait_for(p: &Provider, id: &str, status: Status, within: Duration) -> Campaign {
    let deadline = Instant::now() + within;
    loop {
        let c = p.campaigns.get(&SYS, id).await.expect("get");
        if c.status == status {
            return c;
        }
        assert!(Instant::now() < deadline, "still {:?}: {c:?}", c.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) {
    match r {
        Err(ServiceError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "{message}");
        }
        other => panic!("expected a 400 naming {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_draft_starts_and_ends_at_its_times_once_with_two_nodes_racing() {
    for home in common::databases("cjobs").await {
        let engine = Arc::new(Engine::default());
        let p = provider(&home.db, engine.clone()).await;
        let now = now_ms();
        let mut ids = Vec::new();
        for i in 0..12 {
            let c = p
                .campaigns
                .create(
                    &ADMIN,
                    new(json!({"name": format!("Timed {i}"), "status": "draft",
                        "starts_at": at(now + 700), "ends_at": at(now + 1_400)})),
                )
                .await
                .expect("create");
            ids.push(c.id);
        }
        let jobs = jobs_of(&p, &ids[0]).await;
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names.len(), 2, "{jobs:?}");
        assert!(names.contains(&"campaign.start") && names.contains(&"campaign.end"));
        let start = jobs
            .iter()
            .find(|j| j.name == "campaign.start")
            .expect("start");
        assert_eq!(start.at.as_deref(), Some(at(now + 700).as_str()));
        // Two nodes' workers (and a second provider: another process) race for every job.
        let other = provider(&home.db, engine.clone()).await;
        let a = worker(&p, "node-a");
        let b = worker(&other, "node-b");
        for id in &ids {
            wait_for(&p, id, Status::Ended, Duration::from_secs(15)).await;
        }
        // The end job completes after the status changes: wait for it to be done.
        let deadline = Instant::now() + Duration::from_secs(10);
        for id in &ids {
            loop {
                let jobs = jobs_of(&p, id).await;
                if jobs.len() == 1 && jobs[0].status == JobStatus::Done {
                    assert_eq!(jobs[0].name, "campaign.end");
                    break;
                }
                assert!(Instant::now() < deadline, "{jobs:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        drop((a, b));
        for id in &ids {
            assert_eq!(engine.upserts(id), 1, "started once: {id}");
            assert_eq!(engine.ends(id), 1, "ended once: {id}");
            let acts = actions(&p, id).await;
            let count = |a: &str| acts.iter().filter(|x| x.as_str() == a).count();
            assert_eq!(
                (count("campaign.start"), count("campaign.end")),
                (1, 1),
                "{acts:?}"
            );
        }
        for p in [p, other] {
            p.close(Duration::from_secs(1)).await;
        }
        home.finish().await;
    }
}

#[tokio::test]
async fn moving_a_time_moves_its_job_activating_cancels_the_start_and_ending_removes_jobs() {
    for home in common::databases("cjobs-move").await {
        let p = provider(&home.db, Arc::new(Engine::default())).await;
        let now = now_ms();
        let c = p
            .campaigns
            .create(
                &ADMIN,
                new(json!({"name": "Later", "status": "draft",
                    "starts_at": at(now + 3_600_000),
                    "metadata": {"scheduling": {"jobs": [
                        {"name": "digest", "kind": "notification.send", "cron": "0 9 * * MON",
                         "timezone": "Europe/Paris",
                         "payload": {"template": "digest", "channels": ["in_app"],
                                     "recipients": {"role": "user"}}}]}}})),
            )
            .await
            .expect("create");
        let jobs = jobs_of(&p, &c.id).await;
        let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["campaign.start", "digest"]);
        let start_id = jobs
            .iter()
            .find(|j| j.name == "campaign.start")
            .expect("start")
            .id
            .clone();

        let later = at(now + 7_200_000);
        p.campaigns
            .update(&ADMIN, &c.id, &json!({"starts_at": later}))
            .await
            .expect("move");
        let start = p.scheduler.get(&ADMIN, &start_id).await.expect("same job");
        assert_eq!(start.at.as_deref(), Some(later.as_str()));
        assert_eq!(start.next_run_at.as_deref(), Some(later.as_str()));

        p.campaigns
            .update(&ADMIN, &c.id, &json!({"status": "active"}))
            .await
            .expect("activate");
        let names: Vec<String> = jobs_of(&p, &c.id)
            .await
            .into_iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(names, ["digest"]);

        p.campaigns.end(&ADMIN, &c.id).await.expect("end");
        assert!(jobs_of(&p, &c.id).await.is_empty());
        let acts = actions(&p, &c.id).await;
        assert!(acts.contains(&"scheduler.register".to_owned()), "{acts:?}");
        assert_eq!(acts.last().map(String::as_str), Some("scheduler.remove"));
        p.close(Duration::from_secs(1)).await;
        home.finish().await;
    }
}

#[tokio::test]
async fn bad_job_declarations_are_refused_naming_the_campaigns_field() {
    for home in common::databases("cjobs-bad").await {
        let p = provider(&home.db, Arc::new(Engine::default())).await;
        let send = json!({"template": "t", "channels": ["in_app"], "recipients": {"role": "user"}});
        let create = |jobs: Value| {
            new(json!({"name": "Bad", "status": "draft",
                "starts_at": at(now_ms() + 3_600_000),
                "metadata": {"scheduling": {"jobs": jobs}}}))
        };
        for (jobs, field) in [
            (
                json!([{"name": "a", "kind": "notification.send", "cron": "61 * * * *", "payload": send}]),
                "metadata.scheduling.jobs[0].cron",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "cron": "0 9 * * *",
                        "timezone": "Mars/Olympus", "payload": send}]),
                "metadata.scheduling.jobs[0].timezone",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "at": "2020-01-01T00:00:00Z", "payload": send},]),
                "metadata.scheduling.jobs[0].at",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "at": at(now_ms() + 60_000), "payload": send},
                       {"name": "b", "kind": "campaign.start", "at": at(now_ms() + 60_000)}]),
                "metadata.scheduling.jobs[1].kind",
            ),
            (
                json!([{"name": "campaign.end", "kind": "notification.send", "at": at(now_ms() + 60_000), "payload": send}]),
                "metadata.scheduling.jobs[0].name",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "at": at(now_ms() + 60_000),
                        "payload": {"template": "t"}}]),
                "metadata.scheduling.jobs[0].payload",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "field": "ends_at", "payload": send}]),
                "metadata.scheduling.jobs[0].field",
            ),
            (
                json!([{"name": "a", "kind": "notification.send", "at": at(now_ms() + 60_000),
                        "payload": send, "every": "day"}]),
                "metadata.scheduling.jobs[0].every",
            ),
        ] {
            assert_invalid(p.campaigns.create(&ADMIN, create(jobs)).await, field);
        }
        // Nothing was stored.
        let page = p
            .campaigns
            .list(&ADMIN, &Default::default(), None, None)
            .await
            .expect("list");
        assert!(page.items.is_empty(), "{:?}", page.items);
        // An update with a bad job changes nothing either.
        let c = p
            .campaigns
            .create(&ADMIN, new(json!({"name": "Good"})))
            .await
            .expect("good");
        assert_invalid(
            p.campaigns
                .update(
                    &ADMIN,
                    &c.id,
                    &json!({"metadata": {"scheduling": {"jobs": [
                        {"name": "a", "kind": "notification.send", "cron": "nope", "payload": send}]}}}),
                )
                .await,
            "metadata.scheduling.jobs[0].cron",
        );
        assert_eq!(
            p.campaigns.get(&SYS, &c.id).await.expect("get").metadata,
            json!({})
        );
        p.close(Duration::from_secs(1)).await;
        home.finish().await;
    }
}

#[tokio::test]
async fn a_scheduled_notification_reaches_its_recipients_inbox_with_the_campaigns_facts() {
    for home in common::databases("cjobs-send").await {
        let p = provider(&home.db, Arc::new(Engine::default())).await;
        let user = p
            .users
            .register(
                &Caller::anonymous(),
                serde_json::from_value(json!({"username": "ada", "email": "ada@example.com",
                    "password": "correct horse battery"}))
                .expect("new user"),
            )
            .await
            .expect("register");
        p.notifications
            .put_template(
                &ADMIN,
                "campaign.reminder",
                "en",
                TemplateInput {
                    category: Category::Transactional,
                    subject: "{{ campaign.name }} starts soon".to_owned(),
                    text: "{{ campaign.name }} starts at {{ campaign.starts_at }}, {{ user.username }}."
                        .to_owned(),
                    html: None,
                },
            )
            .await
            .expect("template");
        let starts = now_ms() + 3_600_000;
        let c = p
            .campaigns
            .create(
                &ADMIN,
                new(
                    json!({"name": "Launch", "status": "draft", "starts_at": at(starts),
                    "metadata": {"scheduling": {"jobs": [
                        {"name": "reminder", "kind": "notification.send",
                         "field": "starts_at", "before": "59m 59s",
                         "payload": {"template": "campaign.reminder", "channels": ["in_app"],
                                     "recipients": {"user_ids": [user.id]}}}]}}}),
                ),
            )
            .await
            .expect("create");
        let stop = worker(&p, "node-a");
        let me = Caller::user(user.id.clone(), vec![Role::User]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let n = loop {
            let inbox = p
                .notifications
                .inbox(&me, InboxFilter::default())
                .await
                .expect("inbox");
            if let Some(n) = inbox.items.into_iter().next() {
                break n;
            }
            assert!(Instant::now() < deadline, "no notification");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(n.subject, "Launch starts soon");
        assert_eq!(
            n.text,
            format!(
                "Launch starts at {}, ada.",
                c.starts_at.as_deref().expect("starts_at")
            )
        );
        assert_eq!(n.campaign_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(n.created_by, "system");
        // The job completes after the send it ran.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reminder = jobs_of(&p, &c.id)
                .await
                .into_iter()
                .find(|j| j.name == "reminder")
                .expect("reminder");
            if reminder.status == JobStatus::Done {
                break;
            }
            assert!(Instant::now() < deadline, "{reminder:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(stop);
        // Still a draft: the start is an hour away.
        assert_eq!(
            p.campaigns.get(&SYS, &c.id).await.expect("get").status,
            Status::Draft
        );
        p.close(Duration::from_secs(1)).await;
        home.finish().await;
    }
}

#[tokio::test]
async fn a_start_due_while_no_node_ran_happens_once_when_a_node_starts() {
    for home in common::databases("cjobs-restart").await {
        let engine = Arc::new(Engine::default());
        let first = provider(&home.db, engine.clone()).await;
        let c = first
            .campaigns
            .create(
                &ADMIN,
                new(json!({"name": "Overnight", "status": "draft", "starts_at": at(now_ms() + 300)})),
            )
            .await
            .expect("create");
        // The node stops before the start is due, and nothing runs while it is.
        first.close(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let engine2 = Arc::new(Engine::default());
        let second = provider(&home.db, engine2.clone()).await;
        assert_eq!(
            second.campaigns.get(&SYS, &c.id).await.expect("get").status,
            Status::Draft
        );
        // As the node does at start: re-register (keeps the job's state), then run.
        second.campaigns.sync_all_jobs().await.expect("sync");
        let stop = worker(&second, "node-b");
        wait_for(&second, &c.id, Status::Active, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stop);
        assert_eq!(engine2.upserts(&c.id), 1);
        let acts = actions(&second, &c.id).await;
        assert_eq!(
            acts.iter()
                .filter(|a| a.as_str() == "campaign.start")
                .count(),
            1,
            "{acts:?}"
        );
        let start = jobs_of(&second, &c.id).await;
        assert_eq!(start.len(), 1, "{start:?}");
        assert_eq!(start[0].status, JobStatus::Done);
        second.close(Duration::from_secs(1)).await;
        home.finish().await;
    }
}

#[tokio::test]
async fn a_campaign_names_a_market_that_exists() {
    for home in common::databases("cjobs-market").await {
        let p = provider(&home.db, Arc::new(Engine::default())).await;
        let market = |code: &str| json!({"service_specific": {"babel": {"market": code}}});
        assert_invalid(
            p.campaigns
                .create(&ADMIN, new(json!({"name": "Fr", "metadata": market("eu")})))
                .await,
            "metadata.service_specific.babel.market",
        );
        assert_invalid(
            p.campaigns
                .create(
                    &ADMIN,
                    new(json!({"name": "Fr", "metadata": market("EU!")})),
                )
                .await,
            "metadata.service_specific.babel.market",
        );
        assert_invalid(
            p.campaigns
                .create(
                    &ADMIN,
                    new(json!({"name": "Fr", "metadata": {"service_specific": {"babel": {"market": 7}}}})),
                )
                .await,
            "metadata.service_specific.babel.market",
        );
        p.babel
            .create_market(
                &ADMIN,
                serde_json::from_value(json!({"code": "eu", "name": "Eurozone", "currency": "EUR",
                    "locale": "fr-FR", "countries": ["FR", "DE"]}))
                .expect("market"),
            )
            .await
            .expect("create market");
        let c = p
            .campaigns
            .create(&ADMIN, new(json!({"name": "Fr", "metadata": market("eu")})))
            .await
            .expect("named market");
        assert_eq!(c.market(), Some("eu"));
        assert_invalid(
            p.campaigns
                .update(&ADMIN, &c.id, &json!({"metadata": market("jp")}))
                .await,
            "metadata.service_specific.babel.market",
        );
        assert_eq!(
            p.campaigns.get(&SYS, &c.id).await.expect("get").market(),
            Some("eu")
        );
        // Unknown countries are no ISO 3166-1 codes of a market either.
        assert_invalid(
            p.babel
                .create_market(
                    &ADMIN,
                    serde_json::from_value(
                        json!({"code": "xx", "name": "Nowhere", "currency": "EUR",
                        "locale": "en", "countries": ["ZZ"]}),
                    )
                    .expect("market"),
                )
                .await,
            "countries",
        );
        p.close(Duration::from_secs(1)).await;
        home.finish().await;
    }
}
