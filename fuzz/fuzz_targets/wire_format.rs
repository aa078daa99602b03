//! `make fuzz`: [`brook_fuzz::wire_format`] on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_fuzz::wire_format(data));
