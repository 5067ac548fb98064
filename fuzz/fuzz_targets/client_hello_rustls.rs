//! The ClientHello reader against rustls's `Acceptor`; see
//! `properties::client_hello_rustls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::client_hello_rustls(data));
