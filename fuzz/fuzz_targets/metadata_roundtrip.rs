//! libFuzzer entry point of `ovasabi_fuzz::metadata` (see `docs/fuzzing.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ovasabi_fuzz::metadata::run(data);
});
