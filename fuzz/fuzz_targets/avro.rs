//! `make fuzz`: [`brook_fuzz::avro`] on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::avro(data));
