//! `make fuzz`: [`brook_fuzz::registry_request`] on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::registry_request(data));
