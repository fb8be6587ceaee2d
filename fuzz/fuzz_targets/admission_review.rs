#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| threadline_fuzz::admission_review(data));
