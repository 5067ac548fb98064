//! Arbitrary bytes through the ClientHello reader.
//!
//! The first byte of the fuzz input picks a split point; the rest is what a
//! client sent. Beyond "no panics", this checks the reader's contract:
//!
//! - fed in two pieces, the input gets the same answer as fed whole: the
//!   first piece is either Incomplete or already the final answer;
//! - `read_client_hello` agrees with `locate`;
//! - whatever server name comes out, `HostName::parse` copes with it, and
//!   its normal form is a fixed point.
//!
//! Seeds are in `seeds/client_hello`: captured rustls hellos behind a split
//! byte. Run with `cargo +nightly fuzz run client_hello seeds/client_hello`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsni::tls::{is_valid_label, locate, read_client_hello, ClientHello, HostName, Located};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let whole = locate(input);

    let split = input.len() * usize::from(selector) / usize::from(u8::MAX);
    match locate(&input[..split]) {
        Ok(Located::Incomplete) => {}
        early => assert_eq!(early, whole, "answer for the first {split} bytes"),
    }

    let mut scratch = Vec::new();
    let read = read_client_hello(input, &mut scratch);
    match whole {
        Ok(Located::Incomplete) => assert_eq!(read, Ok(None)),
        Err(err) => assert_eq!(read, Err(err)),
        Ok(_) => {}
    }

    if let Ok(Some(hello)) = read {
        if let Some(Ok(name)) = hello.server_name().map(HostName::parse) {
            assert_eq!(HostName::parse(name.as_bytes()).as_ref(), Ok(&name));
            assert!(name.labels().all(|label| is_valid_label(label.as_bytes())));
        }
        assert!(hello.alpn_protocols().all(|protocol| !protocol.is_empty()));
    }

    // The message parser on its own, without the record layer in front.
    let _ = ClientHello::parse(input);
});
