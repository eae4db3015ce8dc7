//! The engine's hot paths, parameterised by fan-out (1 / 100 / 1,000 / 10,000 sessions):
//! * `tick/json`: one tick of 10 events encoded once and offered to every session's queue
//!   (the queues are emptied between iterations, outside the timing);
//! * `tick/deflate`: the same with every session on `compress=deflate` (one compression);
//! * `tick/full_queues`: offers to queues that are all full (the drop path);
//! * `churn`: a session joining and leaving while another thread ticks the same campaign.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::Fixture;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const FANOUT: [usize; 4] = [1, 100, 1_000, 10_000];
const EVENTS_PER_TICK: usize = 10;
const PAYLOAD: usize = 100;

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    for n in FANOUT {
        g.throughput(Throughput::Elements(n as u64));
        for (name, compress) in [("json", false), ("deflate", true)] {
            let mut f = Fixture::new(n, compress, 256, PAYLOAD);
            // Timed: queueing the tick's events and the tick; not timed: emptying the queues
            // (the writers' side), which keeps them from filling up.
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        f.publish(EVENTS_PER_TICK);
                        f.tick();
                        spent += start.elapsed();
                        black_box(f.drain());
                    }
                    spent
                });
            });
        }
        let mut f = Fixture::new(n, false, 4, PAYLOAD);
        f.fill();
        g.bench_with_input(BenchmarkId::new("full_queues", n), &n, |b, _| {
            b.iter(|| {
                f.publish(EVENTS_PER_TICK);
                f.tick();
            });
        });
    }
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    for n in FANOUT {
        let mut f = Fixture::new(n, false, 256, PAYLOAD);
        let mut churner = f.churner();
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    f.publish(1);
                    f.tick();
                    f.drain();
                }
            })
        };
        g.bench_with_input(
            BenchmarkId::new("join_leave_while_ticking", n),
            &n,
            |b, _| {
                b.iter(|| churner.join_leave());
            },
        );
        stop.store(true, Ordering::Relaxed);
        let _ = ticker.join();
    }
    g.finish();
}

criterion_group!(benches, tick, churn);
criterion_main!(benches);
