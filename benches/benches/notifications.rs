//! The notification service's write and delivery paths, on a SQLite database (the embedded
//! default, WAL) in a temporary folder, through the service's methods on a current-thread
//! Tokio runtime (RBAC check, recipient resolution, template rendering, one transaction per
//! send, the outbox worker's claims and outcomes):
//! * `in_app/one_user`: a send of a one-variable template to one named user on `in_app`
//!   (one notification per iteration);
//! * `fan_out/role_10000`: the same template sent to a role held by 10,000 users on `in_app`
//!   (10,000 notifications per iteration, written in the send's one transaction);
//! * `webhook_drain/batch_32` and `batch_128`: 1,000 users with one webhook each on a local
//!   HTTP receiver (axum, answering 204, on its own thread and runtime); each iteration sends
//!   one notification to them on `webhook` (not timed) and times `deliver_due` until the
//!   outbox is empty (1,000 signed POSTs and their recorded outcomes per iteration), with
//!   `DeliveryConfig::default()` (batch 32) and with `batch: 128`.
//!
//! The users are seeded with SQL (no password hashing: nobody signs in); the realtime sink
//! accepts everything (no realtime delivery is measured here).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::{Map, json};
use services::Database;
use services::localization::{LocalizationConfig, LocalizationService};
use services::notification::{
    Category, Channel, DeliveryConfig, NewWebhook, NotificationService, RealtimeSink, Recipients,
    SendRequest, TemplateInput,
};
use services::security::{Caller, Policies, Role};

/// Users a role send reaches.
const FAN_OUT: usize = 10_000;
/// Users with a webhook each.
const WEBHOOK_USERS: usize = 1_000;
const TEMPLATE: &str = "bench.news";

/// Accepts every push.
struct NullSink;

impl RealtimeSink for NullSink {
    fn push(&self, _user: &str, _notification: Box<RawValue>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A webhook receiver on 127.0.0.1 answering 204 to every POST, on a thread of its own.
struct Receiver {
    port: u16,
    hits: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("receiver address").port();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("receiver listener");
                let app = axum::Router::new().route(
                    "/hook/{user}",
                    axum::routing::post(move || {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            });
        });
        Self { port, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    db: Database,
    policies: Policies,
    l10n: LocalizationService,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!(
            "ovasabi-bench-notifications-{}",
            std::process::id()
        ));
        let (db, policies) = rt.block_on(async {
            let db = Database::connect(&format!("sqlite://{}/bench.db", dir.display()))
                .await
                .expect("sqlite");
            db.migrate().await.expect("migrate");
            let policies = Policies::load(db.clone()).await.expect("policies");
            (db, policies)
        });
        let l10n =
            LocalizationService::new(db.clone(), policies.clone(), LocalizationConfig::default())
                .expect("localization");
        Self {
            rt,
            db,
            policies,
            l10n,
            dir,
        }
    }

    fn service(&self, config: DeliveryConfig) -> NotificationService {
        NotificationService::new(
            self.db.clone(),
            self.policies.clone(),
            self.l10n.clone(),
            Arc::new(NullSink),
            config,
        )
        .expect("notification service")
    }

    /// Inserts `n` users `{prefix}-00000`… holding `role` (and only it), in one transaction;
    /// returns their ids.
    fn seed_users(&self, prefix: &str, n: usize, role: Role) -> Vec<String> {
        let Database::Sqlite(pool) = &self.db else {
            panic!("the bench runs on SQLite");
        };
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
        self.rt.block_on(async {
            let mut tx = pool.begin().await.expect("begin");
            for id in &ids {
                sqlx::query(
                    "INSERT INTO service_user_master \
                     (id, username, email, password_hash, display_name, disabled, created_at, updated_at) \
                     VALUES (?1, ?1, ?2, 'not a hash: nobody signs in', ?3, 0, 0, 0)",
                )
                .bind(id)
                .bind(format!("{id}@example.org"))
                .bind(format!("User {id}"))
                .execute(&mut *tx)
                .await
                .expect("insert user");
                sqlx::query("INSERT INTO service_user_role (user_id, role) VALUES (?1, ?2)")
                    .bind(id)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await
                    .expect("insert role");
            }
            tx.commit().await.expect("commit");
        });
        ids
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn request(channels: &[Channel], recipients: Recipients) -> SendRequest {
    let mut variables = Map::new();
    variables.insert("name".into(), json!("Summer sale"));
    SendRequest {
        template: TEMPLATE.into(),
        variables,
        channels: channels.to_vec(),
        recipients,
        campaign_id: None,
    }
}

fn by_role(role: Role) -> Recipients {
    Recipients {
        user_ids: None,
        role: Some(role.as_str().into()),
    }
}

fn notifications(c: &mut Criterion) {
    let f = Fixture::new();
    let sys = Caller::system();
    let one = f.seed_users("one", 1, Role::User);
    f.seed_users("fan", FAN_OUT, Role::CampaignManager);
    let hooked = f.seed_users("hook", WEBHOOK_USERS, Role::LocalizationManager);
    let receiver = Receiver::start();

    let svc = f.service(DeliveryConfig::default());
    f.rt.block_on(async {
        svc.put_template(
            &sys,
            TEMPLATE,
            "en",
            TemplateInput {
                category: Category::Transactional,
                subject: "News: {{ name }}".into(),
                text: "{{ name }} has started. Have a look!".into(),
                html: None,
            },
        )
        .await
        .expect("template");
        for id in &hooked {
            let caller = Caller::user(id.clone(), vec![Role::User]);
            svc.create_webhook(
                &caller,
                NewWebhook {
                    url: format!("http://127.0.0.1:{}/hook/{id}", receiver.port),
                    campaign_id: None,
                },
            )
            .await
            .expect("webhook");
        }
    });

    // 1. One user, in-app.
    let mut g = c.benchmark_group("in_app");
    g.throughput(Throughput::Elements(1));
    let single = request(
        &[Channel::InApp],
        Recipients {
            user_ids: Some(one.clone()),
            role: None,
        },
    );
    g.bench_function("one_user", |b| {
        b.iter(|| {
            let r = f.rt.block_on(svc.send(&sys, single.clone())).expect("send");
            assert_eq!(r.notifications, 1);
            black_box(r)
        });
    });
    g.finish();

    // 2. A role of 10,000 users, in-app: one send per iteration.
    let mut g = c.benchmark_group("fan_out");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(FAN_OUT as u64));
    let fan = request(&[Channel::InApp], by_role(Role::CampaignManager));
    g.bench_function("role_10000", |b| {
        b.iter(|| {
            let r = f.rt.block_on(svc.send(&sys, fan.clone())).expect("send");
            assert_eq!(r.notifications, FAN_OUT as u64);
            black_box(r)
        });
    });
    g.finish();

    // 3. 1,000 webhooks drained from the outbox: the send is not timed, the drain is.
    let mut g = c.benchmark_group("webhook_drain");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(WEBHOOK_USERS as u64));
    let hooks = request(&[Channel::Webhook], by_role(Role::LocalizationManager));
    for batch in [32, 128] {
        let worker = f.service(DeliveryConfig {
            batch,
            ..DeliveryConfig::default()
        });
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    f.rt.block_on(async {
                        let r = worker.send(&sys, hooks.clone()).await.expect("send");
                        assert_eq!(r.deliveries, WEBHOOK_USERS as u64);
                        let before = receiver.hits();
                        let start = Instant::now();
                        while worker.deliver_due("bench").await.expect("deliver") > 0 {}
                        total += start.elapsed();
                        assert_eq!(worker.outbox_depth().await.expect("depth"), 0);
                        assert_eq!(receiver.hits() - before, WEBHOOK_USERS as u64);
                    });
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, notifications);
criterion_main!(benches);
