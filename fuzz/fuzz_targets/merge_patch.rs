//! libFuzzer entry point of `ovasabi_fuzz::merge_patch` (see `docs/fuzzing.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ovasabi_fuzz::merge_patch::run(data);
});
