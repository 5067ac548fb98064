//! Arbitrary first bytes through the PROXY header parser, against the `ppp`
//! crate; see `properties::proxy_header` for the differences allowed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::proxy_header(data));
