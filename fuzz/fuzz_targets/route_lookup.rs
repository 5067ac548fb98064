//! The server-name matcher against a linear scan of the routes; see
//! `properties::route_lookup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::route_lookup(data));
