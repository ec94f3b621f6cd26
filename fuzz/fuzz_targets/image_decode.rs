//! libFuzzer entry for [`coca_fuzz::image_decode`]; scripts/fuzz.sh builds and runs it.
#![no_main]

mod alloc_limit;

libfuzzer_sys::fuzz_target!(|data: &[u8]| coca_fuzz::image_decode(data));
