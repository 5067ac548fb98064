//! Arbitrary bytes through the ClientHello reader, whole, cut into TCP
//! segments and re-framed in other TLS records; see
//! `properties::client_hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::client_hello(data));
