//! libFuzzer entry point of `ovasabi_fuzz::client_frame` (see `docs/fuzzing.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ovasabi_fuzz::client_frame::run(data);
});
