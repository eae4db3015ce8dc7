//! Every fuzz target, on stable Rust: its saved failures and corpus, then mutations for a
//! bounded time (`OVASABI_FUZZ_SECS`, default a few seconds; see `ovasabi_fuzz::runner`).
//! One test per target, so that they run in parallel and fail separately.

use ovasabi_fuzz::runner::{self, Config};

fn fuzz(name: &str) {
    let target = ovasabi_fuzz::target(name).expect("a known target");
    let config = Config::from_env().unwrap_or_else(|e| panic!("{e}"));
    match runner::run(target, &config) {
        Ok(report) => eprintln!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn client_frame() {
    fuzz("client_frame");
}

#[test]
fn merge_patch() {
    fuzz("merge_patch");
}

#[test]
fn metadata_roundtrip() {
    fuzz("metadata_roundtrip");
}

#[test]
fn resp() {
    fuzz("resp");
}
