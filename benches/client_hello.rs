//! ClientHello parsing: pgsni against rustls's `Acceptor` and tls-parser.
//!
//! Each contender reads the server name and the ALPN offer from the same
//! bytes, produced by a real rustls client:
//!
//! - `single`: a classical (X25519) TLS 1.2 + 1.3 ClientHello in one record;
//! - `fragmented`: the same message re-split into records of 2, 3, 1 and 64
//!   bytes and the rest, as anti-censorship clients send it.
//!
//! Run with `cargo bench --bench client_hello`.

use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgsni::tls::{read_client_hello, HostName};
use rustls::pki_types::ServerName;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_plaintext,
    parse_tls_raw_record, TlsExtension, TlsMessage, TlsMessageHandshake,
};

const POSTGRESQL: &[u8] = b"postgresql";

/// A rustls client's first flight: one record carrying its ClientHello.
fn rustls_client_hello() -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config.alpn_protocols = vec![POSTGRESQL.to_vec()];
    let name = ServerName::try_from("alpha.db.example.com").expect("valid name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client starts");
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

/// The handshake message of a single-record hello, re-framed as handshake
/// records with the given fragment lengths, then one for the rest.
fn refragment(single: &[u8], lengths: &[usize]) -> Vec<u8> {
    let mut message = &single[5..];
    let mut out = Vec::new();
    for &len in lengths.iter().chain([&usize::MAX]) {
        let (fragment, rest) = message.split_at(len.min(message.len()));
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
        message = rest;
    }
    out
}

fn pgsni(input: &[u8], scratch: &mut Vec<u8>) -> bool {
    let hello = read_client_hello(input, scratch)
        .expect("valid hello")
        .expect("complete hello");
    let name = HostName::parse(hello.server_name().expect("has SNI")).expect("valid name");
    black_box(name);
    hello.offers_alpn(POSTGRESQL)
}

fn rustls_acceptor(mut input: &[u8]) -> bool {
    let mut acceptor = rustls::server::Acceptor::default();
    while !input.is_empty() {
        acceptor
            .read_tls(&mut input as &mut dyn Read)
            .expect("buffer space");
    }
    let accepted = acceptor
        .accept()
        .map_err(|(err, _)| err)
        .expect("valid hello")
        .expect("complete hello");
    let hello = accepted.client_hello();
    black_box(hello.server_name().expect("has SNI"));
    hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == POSTGRESQL))
}

fn tls_parser(input: &[u8]) -> bool {
    // tls-parser reads one record at a time; a fragmented message has to be
    // put back together by hand before it can be parsed.
    let reassembled;
    let hello = match parse_tls_plaintext(input) {
        Ok((_, record)) if record.msg.len() == 1 => record.msg.into_iter().next(),
        _ => {
            let mut message = Vec::new();
            let mut rest = input;
            while let Ok((tail, record)) = parse_tls_raw_record(rest) {
                message.extend_from_slice(record.data);
                rest = tail;
            }
            reassembled = message;
            parse_tls_message_handshake(&reassembled)
                .ok()
                .map(|(_, message)| message)
        }
    };
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))) = hello else {
        panic!("not a ClientHello");
    };
    let (_, extensions) =
        parse_tls_client_hello_extensions(hello.ext.expect("has extensions")).expect("valid");
    let mut offers = false;
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                black_box(names);
            }
            TlsExtension::ALPN(protocols) => offers = protocols.contains(&POSTGRESQL),
            _ => {}
        }
    }
    offers
}

fn client_hello(c: &mut Criterion) {
    let single = rustls_client_hello();
    let fragmented = refragment(&single, &[2, 3, 1, 64]);

    let mut group = c.benchmark_group("client_hello");
    for (label, input) in [("single", &single), ("fragmented", &fragmented)] {
        group.throughput(Throughput::Bytes(input.len() as u64));

        // The scratch buffer lives as long as a connection; reusing it here
        // leaves out one allocation per fragmented connection.
        let mut scratch = Vec::new();
        assert!(pgsni(input, &mut scratch));
        group.bench_with_input(BenchmarkId::new("pgsni", label), input, |b, input| {
            b.iter(|| pgsni(black_box(input), &mut scratch));
        });

        assert!(rustls_acceptor(input));
        group.bench_with_input(
            BenchmarkId::new("rustls_acceptor", label),
            input,
            |b, input| {
                b.iter(|| rustls_acceptor(black_box(input)));
            },
        );

        assert!(tls_parser(input));
        group.bench_with_input(BenchmarkId::new("tls_parser", label), input, |b, input| {
            b.iter(|| tls_parser(black_box(input)));
        });
    }
    group.finish();
}

criterion_group!(benches, client_hello);
criterion_main!(benches);
