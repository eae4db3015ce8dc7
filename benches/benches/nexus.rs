//! Nexus's own cost per run, through `NexusService` on a current-thread Tokio runtime: a
//! pattern of three steps whose operations do nothing (`bench.noop`), so what is measured is
//! the run's bookkeeping — the run, its steps and its audit row inserted in one transaction,
//! the claim (a select and a conditional update), then per step a save before the attempt
//! (the lease renewed) and one after it, and the run's final save: 9 transactions per run.
//! * `nexus/run_3_steps_sqlite` (`_postgres`): start one run, drain it, one after the other;
//! * `..._16`: start 16 runs, then drain them (claims of up to 16 at a time).
//!
//! SQLite is a WAL file in a temporary folder; Postgres runs when `OVASABI_TEST_DATABASE_URL`
//! is set, in a schema of its own that is dropped at the end.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::json;
use services::Database;
use services::nexus::{NexusConfig, NexusService, Operation, StartRun};
use services::scheduler::Clock;
use services::security::{Caller, Policies};

const BATCH: u64 = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn nexus(db: &Database) -> NexusService {
    db.migrate().await.expect("migrate");
    let policies = Policies::load(db.clone()).await.expect("policies");
    let n = NexusService::with_clock(
        db.clone(),
        policies,
        NexusConfig::default(),
        None,
        Clock::system(),
    );
    let noop = Operation::new(
        "bench.noop",
        "bench",
        "does nothing",
        (json!({}), json!({})),
        true,
        |_c, ctx, _input| async move { Ok(json!({"step": ctx.step})) },
    );
    n.register_operations("bench", vec![noop]).expect("ops");
    let def = serde_json::from_value(json!({"name": "bench.three", "steps": [
        {"name": "a", "operation": "bench.noop"},
        {"name": "b", "operation": "bench.noop", "input": {"after": "$.steps.a.step"}},
        {"name": "c", "operation": "bench.noop", "input": {"after": "$.steps.b.step"}}
    ]}))
    .expect("pattern");
    n.register_pattern(&Caller::system(), def)
        .await
        .expect("register");
    n
}

async fn start(n: &NexusService) {
    n.start(&Caller::system(), "bench.three", StartRun::default())
        .await
        .expect("start");
}

fn bench_runs(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: &NexusService,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    start(n).await;
                    assert_eq!(n.drain().await.expect("drain"), 1);
                }
            });
            t.elapsed()
        });
    });
    g.bench_function(format!("{name}_{BATCH}"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            rt.block_on(async {
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    for _ in 0..k {
                        start(n).await;
                    }
                    assert_eq!(n.drain().await.expect("drain") as u64, k);
                    left -= k;
                }
            });
            t.elapsed()
        });
    });
}

fn runs(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("nexus");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));

    let dir = std::env::temp_dir().join(format!("ovasabi-bench-nexus-{}", std::process::id()));
    let sqlite = rt.block_on(async {
        Database::connect(&format!("sqlite://{}/bench.db", dir.display()))
            .await
            .expect("sqlite")
    });
    let n = rt.block_on(nexus(&sqlite));
    bench_runs(&mut g, &rt, "run_3_steps_sqlite", &n);
    rt.block_on(sqlite.close());
    let _ = std::fs::remove_dir_all(&dir);

    match std::env::var("OVASABI_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("ovasabi_bench_nexus_{}", std::process::id());
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
            let n = rt.block_on(nexus(&pg));
            bench_runs(&mut g, &rt, "run_3_steps_postgres", &n);
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
        Err(_) => {
            eprintln!("SKIPPED nexus/run_3_steps_postgres: OVASABI_TEST_DATABASE_URL is not set")
        }
    }
    g.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);
