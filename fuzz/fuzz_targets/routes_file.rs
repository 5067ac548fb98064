//! Arbitrary routes files through the parser, and lookups in the tables it
//! builds; see `properties::routes_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::routes_file(data));
