//! ClientHello parsing: pgsni against rustls's `Acceptor` and tls-parser.
//!
//! Each contender reads the server name and the ALPN offer from the same
//! bytes, captured from real clients (see `src/tls/testdata/README.md`):
//!
//! - `classical`: psql 15 (OpenSSL 3.0), an X25519 key share, one record;
//! - `post_quantum`: psycopg's libpq 18 (OpenSSL 3.5), an X25519MLKEM768 key
//!   share of 1216 bytes beside the X25519 one, one record;
//! - `multi_record`: the post-quantum hello in records of 512 bytes, as a
//!   client limited to 512-byte fragments sends it.
//!
//! After the measurements, a table of criterion's medians is printed, with
//! the ratios between contenders measured in interleaved rounds, which a
//! shared machine's changing load does not skew. Run with
//! `cargo bench --bench client_hello`.

use std::hint::black_box;
use std::io::Read;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use pgsni::tls::{read_client_hello, HostName};
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_plaintext,
    parse_tls_raw_record, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake,
};

#[path = "support/summary.rs"]
mod summary;

const POSTGRESQL: &[u8] = b"postgresql";
const GROUP: &str = "client_hello";

/// The inputs, by benchmark parameter.
const INPUTS: [(&str, &[u8]); 3] = [
    (
        "classical",
        include_bytes!("../src/tls/testdata/psql15_openssl30.bin"),
    ),
    (
        "post_quantum",
        include_bytes!("../src/tls/testdata/psycopg_libpq18_openssl35.bin"),
    ),
    (
        "multi_record",
        include_bytes!("../src/tls/testdata/multi_record_pq.bin"),
    ),
];

/// Every contender finds the server name and whether `postgresql` is among
/// the ALPN protocols, and hands them to `read`: in the benchmarks that only
/// keeps them alive, before the benchmarks it checks that all agree.
fn pgsni<R>(input: &[u8], scratch: &mut Vec<u8>, read: impl FnOnce(&[u8], bool) -> R) -> R {
    let hello = read_client_hello(input, scratch)
        .expect("valid hello")
        .expect("complete hello");
    let raw = hello.server_name().expect("has SNI");
    let name = HostName::parse(raw).expect("valid name");
    read(name.as_bytes(), hello.offers_alpn(POSTGRESQL))
}

fn rustls_acceptor<R>(mut input: &[u8], read: impl FnOnce(&[u8], bool) -> R) -> R {
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
    let offers = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == POSTGRESQL));
    read(hello.server_name().expect("has SNI").as_bytes(), offers)
}

fn tls_parser<R>(input: &[u8], read: impl FnOnce(&[u8], bool) -> R) -> R {
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
    let (mut name, mut offers) = (None, false);
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                name = names
                    .into_iter()
                    .find(|(name_type, _)| *name_type == SNIType::HostName)
                    .map(|(_, host)| host);
            }
            TlsExtension::ALPN(protocols) => offers = protocols.contains(&POSTGRESQL),
            _ => {}
        }
    }
    read(name.expect("has SNI"), offers)
}

/// For the benchmarks: keep the name alive, return the ALPN answer.
fn keep(name: &[u8], offers: bool) -> bool {
    black_box(name);
    offers
}

/// For the check: an owned copy of what was read.
fn owned(name: &[u8], offers: bool) -> (Vec<u8>, bool) {
    (name.to_vec(), offers)
}

fn client_hello(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (label, input) in INPUTS {
        group.throughput(Throughput::Bytes(input.len() as u64));

        // The scratch buffer lives as long as a connection; reusing it here
        // leaves out one allocation per fragmented connection.
        let mut scratch = Vec::new();
        let ours = pgsni(input, &mut scratch, owned);
        assert_eq!(rustls_acceptor(input, owned), ours, "rustls on {label}");
        assert_eq!(tls_parser(input, owned), ours, "tls-parser on {label}");

        group.bench_with_input(BenchmarkId::new("pgsni", label), input, |b, input| {
            b.iter(|| pgsni(black_box(input), &mut scratch, keep));
        });
        group.bench_with_input(
            BenchmarkId::new("rustls_acceptor", label),
            input,
            |b, input| b.iter(|| rustls_acceptor(black_box(input), keep)),
        );
        group.bench_with_input(BenchmarkId::new("tls_parser", label), input, |b, input| {
            b.iter(|| tls_parser(black_box(input), keep))
        });
    }
    group.finish();
}

/// Medians from criterion, and the ratios from interleaved rounds (see
/// `support/summary.rs`), for every input measured in this run.
fn print_summary(medians: &summary::Medians) {
    use summary::cell;

    println!("\nClientHello, SNI + ALPN: criterion's median per hello, and the median ratio over 51 interleaved rounds\n");
    println!("| input | bytes | pgsni | rustls Acceptor | tls-parser | rustls / pgsni | tls-parser / pgsni |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, input) in INPUTS {
        let [ours, theirs, nom] =
            ["pgsni", "rustls_acceptor", "tls_parser"].map(|f| medians.get(GROUP, f, label));
        if ours.is_none() {
            continue;
        }
        let mut scratch = Vec::new();
        let ratios = summary::paired(
            &mut [
                &mut || {
                    pgsni(black_box(input), &mut scratch, keep);
                },
                &mut || {
                    rustls_acceptor(black_box(input), keep);
                },
                &mut || {
                    tls_parser(black_box(input), keep);
                },
            ],
            51,
            Duration::from_millis(5),
        );
        println!(
            "| {label} | {} | {} | {} | {} | {:.1}× | {:.1}× |",
            input.len(),
            cell(ours),
            cell(theirs),
            cell(nom),
            ratios[1].1,
            ratios[2].1,
        );
    }
}

fn main() {
    let medians = summary::Medians::start();
    let mut c = summary::criterion();
    client_hello(&mut c);
    c.final_summary();
    if summary::benchmarking() {
        print_summary(&medians);
    }
}
