//! Arbitrary StartupMessages through the reader of terminated routes; see
//! `properties::startup_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::startup_message(data));
