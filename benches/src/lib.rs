//! Criterion benchmarks of the engine's hot paths live in `benches/hot_paths.rs`; run them
//! with `make bench` (`cargo bench -p benches`). This library only re-exports the fixtures.

pub use engine::bench::{Churner, Fixture};
