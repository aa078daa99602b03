//! `make fuzz`: [`brook_fuzz::key_codecs`] on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::key_codecs(data));
