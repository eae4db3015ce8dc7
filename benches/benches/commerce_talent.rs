//! Commerce and talent through their services' methods on a current-thread Tokio runtime:
//! * `orders/paid_sqlite` and `orders/paid_postgres`: one order per iteration placed (one
//!   line priced by Babel), paid through the `manual` provider under a fresh
//!   `Idempotency-Key`, and confirmed by a manager (the ledger movement and the invoice number
//!   written in the confirmation's transaction, the buyer's in-app message after it): three
//!   transactions and the notification's, one order after the other, so orders/s is 1 / the
//!   time; the `_8` variants keep eight clients' orders in flight at once. SQLite is
//!   a WAL file in a temporary folder; Postgres runs when `OVASABI_TEST_DATABASE_URL` is set,
//!   in a schema of its own that is dropped at the end.
//! * `talent/slots_month`: the free 30-minute slots of a talent over 31 days (weekdays
//!   09:00–17:00 and a Saturday morning in Europe/Paris, across the October daylight-saving
//!   change, with 40 requested bookings to leave out), as `TalentService::free_slots`
//!   answers them from SQLite: the profile and the bookings read, the schedule expanded.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures_util::future::BoxFuture;
use serde_json::json;
use serde_json::value::RawValue;
use services::Database;
use services::babel::{BabelConfig, BabelService};
use services::commerce::{
    CommerceConfig, CommerceService, ConfirmPayment, NewLine, NewOrder, NewPayment, NewProduct,
};
use services::localization::{LocalizationConfig, LocalizationService};
use services::notification::{DeliveryConfig, NotificationService, RealtimeSink};
use services::security::{Caller, Policies, Role};
use services::talent::{NewBooking, NewProfile, SlotQuery, TalentService, Visibility};

struct NullSink;

impl RealtimeSink for NullSink {
    fn push(&self, _: &str, _: Box<RawValue>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A user row (no password: nobody signs in).
async fn add_user(db: &Database, id: &str) {
    let sql = "INSERT INTO service_user_master \
               (id, username, email, password_hash, display_name, disabled, created_at, updated_at) \
               VALUES ($1, $1, $1 || '@example.org', 'x', $1, FALSE, 0, 0)";
    match db {
        Database::Sqlite(p) => sqlx::query(sql).bind(id).execute(p).await.map(drop),
        Database::Postgres(p) => sqlx::query(sql).bind(id).execute(p).await.map(drop),
    }
    .expect("user row");
}

/// A commerce service on `db` with market `eu` (FR, EUR) and product `tee`.
async fn shop(db: &Database) -> CommerceService {
    db.migrate().await.expect("migrate");
    let policies = Policies::load(db.clone()).await.expect("policies");
    let babel = BabelService::new(db.clone(), policies.clone(), BabelConfig::default());
    let l10n =
        LocalizationService::new(db.clone(), policies.clone(), LocalizationConfig::default())
            .expect("localization");
    let notifications = NotificationService::new(
        db.clone(),
        policies.clone(),
        l10n,
        Arc::new(NullSink),
        DeliveryConfig::default(),
    )
    .expect("notifications");
    let sys = Caller::system();
    let market = serde_json::from_value(json!({
        "code": "eu", "name": "Europe", "currency": "EUR", "locale": "fr-FR", "countries": ["FR"]
    }))
    .expect("market");
    babel.create_market(&sys, market).await.expect("market");
    let svc = CommerceService::new(
        db.clone(),
        policies,
        babel,
        notifications,
        CommerceConfig::default(),
    );
    svc.create_product(
        &sys,
        NewProduct {
            sku: "tee".into(),
            name: "T-shirt".into(),
            base_amount: 2500,
            currency: "EUR".into(),
            active: true,
        },
    )
    .await
    .expect("product");
    add_user(db, "buyer").await;
    svc
}

/// Places, pays and confirms one order of the buyer.
async fn paid_order(svc: &CommerceService, n: u64) {
    let buyer = Caller::user("buyer", vec![Role::User]);
    let manager = Caller::user("manager", vec![Role::CampaignManager]);
    let order = svc
        .place_order(
            &buyer,
            NewOrder {
                country: "FR".into(),
                lines: vec![NewLine {
                    sku: "tee".into(),
                    quantity: 2,
                }],
                user_id: None,
            },
        )
        .await
        .expect("order");
    let payment = svc
        .pay(
            &buyer,
            &order.id,
            &format!("bench-{n}"),
            NewPayment {
                provider: "manual".into(),
                reference: None,
            },
        )
        .await
        .expect("pay")
        .payment;
    let paid = svc
        .confirm_payment(&manager, &payment.id, ConfirmPayment::default())
        .await
        .expect("confirm");
    black_box(paid);
}

/// Clients placing orders at once in the `_8` variants.
const CLIENTS: u64 = 8;

/// `orders/<name>` (one client) and `orders/<name>_8` (eight at once, on the one thread):
/// the time per paid order.
fn bench_orders(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: &CommerceService,
) {
    let n = std::cell::Cell::new(0u64);
    let next = || {
        n.set(n.get() + 1);
        n.get()
    };
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    paid_order(svc, next()).await;
                }
            });
            start.elapsed()
        });
    });
    g.bench_function(format!("{name}_{CLIENTS}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                let mut left = iters;
                while left > 0 {
                    let k = left.min(CLIENTS);
                    futures_util::future::join_all((0..k).map(|_| paid_order(svc, next()))).await;
                    left -= k;
                }
            });
            start.elapsed()
        });
    });
}

fn orders(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("orders");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));

    let dir = std::env::temp_dir().join(format!("ovasabi-bench-commerce-{}", std::process::id()));
    let sqlite = rt.block_on(async {
        Database::connect(&format!("sqlite://{}/bench.db", dir.display()))
            .await
            .expect("sqlite")
    });
    let svc = rt.block_on(shop(&sqlite));
    bench_orders(&mut g, &rt, "paid_sqlite", &svc);
    rt.block_on(sqlite.close());
    let _ = std::fs::remove_dir_all(&dir);

    match std::env::var("OVASABI_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("ovasabi_bench_commerce_{}", std::process::id());
            let admin = rt.block_on(Database::connect(&url)).expect("postgres");
            let Database::Postgres(admin_pool) = &admin else {
                panic!("OVASABI_TEST_DATABASE_URL is not a Postgres URL");
            };
            rt.block_on(
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                    .execute(admin_pool),
            )
            .expect("create schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            let pg = rt
                .block_on(Database::connect(&format!(
                    "{url}{sep}options=-csearch_path%3D{schema}"
                )))
                .expect("postgres schema");
            let svc = rt.block_on(shop(&pg));
            bench_orders(&mut g, &rt, "paid_postgres", &svc);
            rt.block_on(pg.close());
            rt.block_on(
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA \"{schema}\" CASCADE"
                )))
                .execute(admin_pool),
            )
            .expect("drop schema");
            rt.block_on(admin.close());
        }
        Err(_) => eprintln!("SKIPPED orders/paid_postgres: OVASABI_TEST_DATABASE_URL is not set"),
    }
    g.finish();
}

fn slots(c: &mut Criterion) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("ovasabi-bench-talent-{}", std::process::id()));
    let (svc, profile, from, to) = rt.block_on(async {
        let db = Database::connect(&format!("sqlite://{}/bench.db", dir.display()))
            .await
            .expect("sqlite");
        db.migrate().await.expect("migrate");
        let policies = Policies::load(db.clone()).await.expect("policies");
        for id in ["talent", "client"] {
            add_user(&db, id).await;
        }
        let svc = TalentService::new(db, policies);
        let talent = Caller::user("talent", vec![Role::User]);
        let p = svc
            .create_profile(
                &talent,
                NewProfile {
                    user_id: None,
                    headline: "Rust consultant".into(),
                    bio: String::new(),
                    skills: vec!["rust".into()],
                    hourly_rate_sku: None,
                    timezone: "Europe/Paris".into(),
                    visibility: Visibility::Public,
                },
            )
            .await
            .expect("profile");
        let mut rules: Vec<_> = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"}))
            .collect();
        rules.push(json!({"weekday": "sat", "start": "09:00", "end": "12:00"}));
        let availability = serde_json::from_value(json!({"rules": rules, "exceptions": []}))
            .expect("availability");
        svc.set_availability(&talent, &p.id, availability)
            .await
            .expect("set availability");
        // The next 31 days from tomorrow, and 40 one-hour bookings among the free slots.
        const DAY: i64 = 86_400_000;
        let start = (services::time::now_ms() / DAY + 1) * DAY;
        let (from, to) = (
            services::time::rfc3339(start),
            services::time::rfc3339(start + 31 * DAY),
        );
        let free = svc
            .free_slots(
                &talent,
                &p.id,
                &SlotQuery {
                    from: from.clone(),
                    to: to.clone(),
                    duration_minutes: 60,
                },
            )
            .await
            .expect("slots");
        let client = Caller::user("client", vec![Role::User]);
        for s in free.iter().step_by(4).take(40) {
            svc.book(
                &client,
                &p.id,
                NewBooking {
                    start: s.start.clone(),
                    end: s.end.clone(),
                    note: None,
                    country: None,
                },
            )
            .await
            .expect("book");
        }
        (svc, p.id, from, to)
    });
    let query = SlotQuery {
        from,
        to,
        duration_minutes: 30,
    };
    let anyone = Caller::anonymous();
    let mut g = c.benchmark_group("talent");
    g.throughput(Throughput::Elements(1));
    g.bench_function("slots_month", |b| {
        b.iter(|| {
            let slots = rt
                .block_on(svc.free_slots(&anyone, &profile, &query))
                .expect("slots");
            assert!(slots.len() > 200, "{}", slots.len());
            black_box(slots)
        });
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, orders, slots);
criterion_main!(benches);
