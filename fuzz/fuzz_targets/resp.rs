//! libFuzzer entry point of `ovasabi_fuzz::resp` (see `docs/fuzzing.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ovasabi_fuzz::resp::run(data);
});
