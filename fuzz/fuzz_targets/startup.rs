//! Arbitrary first bytes of a connection through the start-up packet
//! classifier; see `properties::startup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::startup(data));
