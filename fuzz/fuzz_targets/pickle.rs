//! libFuzzer entry for [`coca_fuzz::pickle`]; scripts/fuzz.sh builds and runs it.
#![no_main]

mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| coca_fuzz::pickle(data));
