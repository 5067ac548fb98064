use super::*;
use crate::tls::server_name::{HostName, NameError};
use crate::tls::test_util::*;

/// Made once from rustls by `regenerate_testdata` (below): SNI
/// `alpha.db.example.com`, ALPN `postgresql`, one record.
const CAPTURED_ALPN: &[u8] = include_bytes!("testdata/rustls_alpn.bin");
/// SNI `beta.db.example.com`, no ALPN, one record.
const CAPTURED_NO_ALPN: &[u8] = include_bytes!("testdata/rustls_no_alpn.bin");
/// The same hello as `CAPTURED_ALPN`, re-split into records carrying 2, 3,
/// 1, 64 and then the rest of the message bytes: the first split falls
/// inside the handshake header.
const CAPTURED_FRAGMENTED: &[u8] = include_bytes!("testdata/rustls_fragmented.bin");

/// Where the hellos live; `testdata/README.md` says where each comes from.
const TESTDATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata");

/// Every hello in `testdata/`: its file, the server name and ALPN offer in
/// it, and how many records carry it.
const TESTDATA: &[(&str, &str, &[&[u8]], usize)] = &[
    ("psql15_openssl30.bin", SERVER_NAME, &[], 1),
    (
        "psycopg_libpq18_openssl35.bin",
        SERVER_NAME,
        &[POSTGRESQL],
        1,
    ),
    (
        "psycopg_libpq18_openssl35_direct.bin",
        SERVER_NAME,
        &[POSTGRESQL],
        1,
    ),
    ("tokio_postgres_rustls.bin", SERVER_NAME, &[POSTGRESQL], 1),
    (
        "tokio_postgres_rustls_direct.bin",
        SERVER_NAME,
        &[POSTGRESQL],
        1,
    ),
    ("s_client_openssl30.bin", SERVER_NAME, &[], 1),
    ("s_client_openssl30_alpn.bin", SERVER_NAME, &[POSTGRESQL], 1),
    ("rustls_alpn.bin", SERVER_NAME, &[POSTGRESQL], 1),
    ("rustls_no_alpn.bin", "beta.db.example.com", &[], 1),
    ("rustls_fragmented.bin", SERVER_NAME, &[POSTGRESQL], 5),
    ("multi_record_pq.bin", SERVER_NAME, &[POSTGRESQL], 4),
    ("grease_ech.bin", "public.db.example.com", &[POSTGRESQL], 1),
];

/// Rewrites the hellos made in-process: the rustls ones, the GREASE and ECH
/// one, and the multi-record one re-framed from a capture. Run by hand, then
/// review the diff (and regenerate the fuzz seeds, see `tests/fuzz_seeds.rs`):
/// `cargo test --lib regenerate_testdata -- --ignored`.
#[test]
#[ignore = "rewrites src/tls/testdata"]
fn regenerate_testdata() {
    let alpn = rustls_hello(SERVER_NAME, &[POSTGRESQL]);
    let fragmented = records_split_at(&handshake_message(&alpn), &[2, 3, 1, 64]);
    let no_alpn = rustls_hello("beta.db.example.com", &[]);
    // A client with a 512-byte maximum fragment length sends its
    // post-quantum hello in four records.
    let pq = std::fs::read(format!("{TESTDATA_DIR}/psycopg_libpq18_openssl35.bin")).unwrap();
    let multi_record = records_of(&handshake_message(&pq), 512);
    for (name, bytes) in [
        ("rustls_alpn.bin", alpn),
        ("rustls_no_alpn.bin", no_alpn),
        ("rustls_fragmented.bin", fragmented),
        ("multi_record_pq.bin", multi_record),
        ("grease_ech.bin", grease_ech_hello()),
    ] {
        std::fs::write(format!("{TESTDATA_DIR}/{name}"), bytes).unwrap();
    }
}

/// An owned summary of what we read, to compare across inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    server_name: Option<Vec<u8>>,
    alpn: Option<Vec<Vec<u8>>>,
    consumed: usize,
}

fn summarise(input: &[u8]) -> Result<Option<Summary>, HelloError> {
    let mut scratch = Vec::new();
    let Some(consumed) = locate(input)?.consumed() else {
        return Ok(None);
    };
    let hello = read_client_hello(input, &mut scratch)?.expect("located, so complete");
    Ok(Some(Summary {
        server_name: hello.server_name().map(<[u8]>::to_vec),
        alpn: hello
            .has_alpn()
            .then(|| hello.alpn_protocols().map(<[u8]>::to_vec).collect()),
        consumed,
    }))
}

fn complete(input: &[u8]) -> Summary {
    summarise(input)
        .expect("valid hello")
        .expect("complete hello")
}

/// The normal form of a name rustls reports, for comparison with ours.
fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Asserts we read exactly what rustls's Acceptor reads from `input`.
fn assert_agrees_with_rustls(input: &[u8]) {
    let Oracle::Accepted { server_name, alpn } = rustls_accept(input) else {
        panic!("rustls did not accept: {:?}", rustls_accept(input));
    };
    let ours = complete(input);
    let our_name = ours
        .server_name
        .map(|raw| HostName::parse(&raw).unwrap().to_string());
    assert_eq!(our_name, server_name.as_deref().map(normalise));
    assert_eq!(ours.alpn, alpn);
}

/// Asserts that no prefix of `input` contradicts the answer for the whole:
/// each prefix is Incomplete or gets the very same answer.
fn assert_prefixes_consistent(input: &[u8]) {
    let whole = locate(input);
    for end in 0..input.len() {
        match locate(&input[..end]) {
            Ok(Located::Incomplete) => {}
            part => assert_eq!(part, whole, "prefix of {end} bytes"),
        }
    }
}

/// Asserts that every prefix of a valid `input` too short to hold the hello
/// is Incomplete, and every longer one finds the same hello.
fn assert_prefixes_incomplete(input: &[u8]) {
    let consumed = locate(input).unwrap().consumed().unwrap();
    for end in 0..input.len() {
        let answer = locate(&input[..end]);
        if end < consumed {
            assert_eq!(answer, Ok(Located::Incomplete), "prefix of {end} bytes");
        } else {
            assert_eq!(answer, locate(input), "prefix of {end} bytes");
        }
    }
}

#[test]
fn reads_sni_and_alpn_from_a_rustls_hello() {
    let input = rustls_hello(SERVER_NAME, &[POSTGRESQL]);
    let Ok(Located::Contiguous { message, consumed }) = locate(&input) else {
        panic!("expected one record: {:?}", locate(&input));
    };
    assert_eq!(consumed, input.len());
    assert_eq!(message, &input[5..]);

    let hello = ClientHello::parse(message).unwrap();
    assert_eq!(hello.server_name(), Some(SERVER_NAME.as_bytes()));
    assert!(hello.has_alpn());
    assert_eq!(hello.alpn_protocols().collect::<Vec<_>>(), [POSTGRESQL]);
    assert!(hello.offers_alpn(POSTGRESQL));
    assert!(!hello.offers_alpn(b"postgres"));
    assert_eq!(hello.legacy_version(), 0x0303);
    assert!(!hello.offers_ech());
    assert_agrees_with_rustls(&input);
}

#[test]
fn agrees_with_rustls_acceptor_across_client_configs() {
    use rustls::version::{TLS12, TLS13};

    let names = [
        SERVER_NAME,
        "UPPER.Example.COM",
        "x",
        "_pg._tcp.example.net",
        "trailing.dot.example.",
        // rustls sends no SNI for IP addresses.
        "192.0.2.1",
    ];
    let alpn_offers: [&[&[u8]]; 3] = [&[], &[POSTGRESQL], &[b"h2", b"http/1.1", POSTGRESQL]];
    let versions: [&[&'static rustls::SupportedProtocolVersion]; 3] =
        [&[&TLS13], &[&TLS12], &[&TLS13, &TLS12]];

    for alpn in alpn_offers {
        for versions in versions {
            let config = client_config(alpn, versions);
            for name in names {
                let input = rustls_hello_with(config.clone(), name);
                let message = handshake_message(&input);
                for framed in [
                    input.clone(),
                    records_of(&message, 3),
                    records_split_at(&message, &[2]),
                    records_split_at(&message, &[1, 1, 1, 1]),
                ] {
                    assert_agrees_with_rustls(&framed);
                    let ours = complete(&framed);
                    assert_eq!(ours.consumed, framed.len());
                    assert_eq!(ours.alpn.is_some(), !alpn.is_empty());
                }
            }
        }
    }
}

#[test]
fn captured_hellos() {
    let alpn = complete(CAPTURED_ALPN);
    assert_eq!(alpn.server_name.as_deref(), Some(SERVER_NAME.as_bytes()));
    assert_eq!(alpn.alpn, Some(vec![POSTGRESQL.to_vec()]));
    assert_agrees_with_rustls(CAPTURED_ALPN);

    let no_alpn = complete(CAPTURED_NO_ALPN);
    assert_eq!(
        no_alpn.server_name.as_deref(),
        Some(&b"beta.db.example.com"[..])
    );
    assert_eq!(no_alpn.alpn, None);
    assert_agrees_with_rustls(CAPTURED_NO_ALPN);

    assert!(matches!(
        locate(CAPTURED_FRAGMENTED),
        Ok(Located::Fragmented(_))
    ));
    assert_eq!(handshake_message(CAPTURED_FRAGMENTED), &CAPTURED_ALPN[5..]);
    assert_eq!(
        complete(CAPTURED_FRAGMENTED),
        Summary {
            consumed: CAPTURED_FRAGMENTED.len(),
            ..alpn
        }
    );
    assert_agrees_with_rustls(CAPTURED_FRAGMENTED);
}

/// Every hello in `testdata/`, the real clients' included: read as listed in
/// `TESTDATA`, as rustls reads it, with every prefix Incomplete, and the same
/// in whatever records the message comes.
#[test]
fn testdata_hellos() {
    let mut files: Vec<String> = std::fs::read_dir(TESTDATA_DIR)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".bin"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = TESTDATA.iter().map(|(file, ..)| *file).collect();
    listed.sort();
    assert_eq!(files, listed, "every capture is listed in TESTDATA");

    for &(file, server_name, alpn, records) in TESTDATA {
        let input = std::fs::read(format!("{TESTDATA_DIR}/{file}")).unwrap();
        let summary = complete(&input);
        assert_eq!(summary.consumed, input.len(), "{file}");
        assert_eq!(
            summary.server_name.as_deref(),
            Some(server_name.as_bytes()),
            "{file}"
        );
        let alpn = (!alpn.is_empty()).then(|| alpn.iter().map(|p| p.to_vec()).collect());
        assert_eq!(summary.alpn, alpn, "{file}");
        assert_eq!(fragments_in(&input), records, "{file}");
        assert_agrees_with_rustls(&input);
        assert_prefixes_incomplete(&input);

        let message = handshake_message(&input);
        for chunk in [1, 2, 7, 100, 512] {
            let reframed = records_of(&message, chunk);
            if reframed.len() > MAX_CLIENT_HELLO_BYTES {
                assert_eq!(locate(&reframed), Err(HelloError::TooLarge), "{file}");
                continue;
            }
            let expected = Summary {
                consumed: reframed.len(),
                ..summary.clone()
            };
            assert_eq!(
                complete(&reframed),
                expected,
                "{file} in {chunk}-byte records"
            );
        }
    }
}

/// How many records `input` holds.
fn fragments_in(mut input: &[u8]) -> usize {
    let mut count = 0;
    while let [_, _, _, hi, lo, rest @ ..] = input {
        input = &rest[usize::from(u16::from_be_bytes([*hi, *lo]))..];
        count += 1;
    }
    count
}

#[test]
fn post_quantum_hello_is_the_real_thing() {
    // psycopg's bundled OpenSSL 3.5 offers X25519MLKEM768 (group 0x11ec)
    // with its 1216-byte key share, then X25519.
    let input = std::fs::read(format!("{TESTDATA_DIR}/psycopg_libpq18_openssl35.bin")).unwrap();
    assert!(input.windows(4).any(|w| w == [0x11, 0xec, 0x04, 0xc0]));
    assert!(input.len() > 1500);
    // The same message in the multi-record hello.
    let multi = std::fs::read(format!("{TESTDATA_DIR}/multi_record_pq.bin")).unwrap();
    assert_eq!(handshake_message(&multi), handshake_message(&input));
}

#[test]
fn grease_and_ech_outer_hello() {
    let input = std::fs::read(format!("{TESTDATA_DIR}/grease_ech.bin")).unwrap();
    assert_eq!(input, grease_ech_hello());
    let mut scratch = Vec::new();
    let hello = read_client_hello(&input, &mut scratch).unwrap().unwrap();
    assert!(hello.offers_ech());
    assert_eq!(hello.server_name(), Some(&b"public.db.example.com"[..]));
    for other in ["psql15_openssl30.bin", "psycopg_libpq18_openssl35.bin"] {
        let input = std::fs::read(format!("{TESTDATA_DIR}/{other}")).unwrap();
        let hello = read_client_hello(&input, &mut scratch).unwrap().unwrap();
        assert!(!hello.offers_ech(), "{other}");
    }
}

#[test]
fn every_prefix_of_a_valid_input_is_incomplete() {
    let single = rustls_hello(SERVER_NAME, &[POSTGRESQL]);
    let message = handshake_message(&single);
    for input in [
        single.clone(),
        records_of(&message, 3),
        records_of(&message, 1),
        records_split_at(&message, &[2]),
        CAPTURED_FRAGMENTED.to_vec(),
    ] {
        assert_prefixes_incomplete(&input);
    }
}

#[test]
fn every_split_point_reassembles_to_the_same_hello() {
    let single = rustls_hello(SERVER_NAME, &[POSTGRESQL]);
    let message = handshake_message(&single);
    let expected = complete(&single);
    for split in 1..message.len() {
        let input = records_split_at(&message, &[split]);
        let Ok(Located::Fragmented(fragments)) = locate(&input) else {
            panic!("split at {split}: {:?}", locate(&input));
        };
        let mut out = [0; MAX_CLIENT_HELLO_BYTES];
        assert_eq!(fragments.reassemble(&mut out), Some(&message[..]));
        assert_eq!(
            complete(&input),
            Summary {
                consumed: input.len(),
                ..expected.clone()
            }
        );
        assert_prefixes_incomplete(&input);
    }
}

#[test]
fn reassemble_needs_room_for_the_message() {
    let Ok(Located::Fragmented(fragments)) = locate(CAPTURED_FRAGMENTED) else {
        panic!("expected fragments");
    };
    let message = handshake_message(CAPTURED_FRAGMENTED);
    assert_eq!(fragments.message_len(), message.len());
    assert_eq!(fragments.consumed(), CAPTURED_FRAGMENTED.len());

    let mut short = vec![0; message.len() - 1];
    assert_eq!(fragments.reassemble(&mut short), None);
    let mut exact = vec![0; message.len()];
    assert_eq!(fragments.reassemble(&mut exact), Some(&message[..]));
    let mut roomy = vec![0xaa; message.len() + 10];
    assert_eq!(fragments.reassemble(&mut roomy), Some(&message[..]));
}

#[test]
fn scratch_is_used_only_for_fragmented_hellos() {
    let mut scratch = Vec::new();
    let hello = read_client_hello(CAPTURED_ALPN, &mut scratch)
        .unwrap()
        .unwrap();
    assert_eq!(hello.server_name(), Some(SERVER_NAME.as_bytes()));
    assert_eq!(scratch.capacity(), 0);

    let mut scratch = Vec::new();
    let hello = read_client_hello(CAPTURED_FRAGMENTED, &mut scratch)
        .unwrap()
        .unwrap();
    assert_eq!(hello.server_name(), Some(SERVER_NAME.as_bytes()));
    assert_eq!(scratch, &CAPTURED_ALPN[5..]);

    let mut scratch = Vec::new();
    assert_eq!(
        read_client_hello(&CAPTURED_FRAGMENTED[..20], &mut scratch),
        Ok(None)
    );
}

#[test]
fn bytes_after_the_hello_are_left_alone() {
    let mut input = CAPTURED_ALPN.to_vec();
    // Early data, or garbage: either way it is the backend's business.
    input.extend(record(23, b"early data"));
    input.extend_from_slice(b"\x00\xff junk");
    let summary = complete(&input);
    assert_eq!(summary.consumed, CAPTURED_ALPN.len());
    assert_prefixes_consistent(&input);

    let mut input = CAPTURED_FRAGMENTED.to_vec();
    input.extend_from_slice(&[0x16, 0x03]);
    assert_eq!(complete(&input).consumed, CAPTURED_FRAGMENTED.len());

    // Inside the hello's last record, after the message: ignored too.
    let mut message = handshake_message(CAPTURED_ALPN);
    message.extend_from_slice(b"extra");
    let input = records_split_at(&message, &[100]);
    assert_eq!(complete(&input).consumed, input.len());
}

#[test]
fn other_records_before_the_hello_is_complete_are_refused() {
    let message = handshake_message(CAPTURED_ALPN);
    let (head, tail) = message.split_at(50);
    for (content_type, fragment) in [(20, &[1][..]), (21, &[1, 0][..]), (23, &b"data"[..])] {
        let mut input = record(22, head);
        input.extend(record(content_type, fragment));
        input.extend(record(22, tail));
        assert_eq!(locate(&input), Err(HelloError::UnexpectedRecord));
        // Known as soon as the content type arrives.
        assert_eq!(
            locate(&input[..head.len() + 6]),
            Err(HelloError::UnexpectedRecord)
        );
        assert_prefixes_consistent(&input);
        assert_eq!(rustls_accept(&input), Oracle::Rejected);
    }
}

#[test]
fn refuses_what_is_not_a_handshake_record() {
    // An alert, a Postgres StartupMessage, plain HTTP, SSL 2: refused on the
    // first byte.
    for input in [
        &[21, 3, 3, 0, 2, 2, 40][..],
        &[0, 0, 0, 8, 4, 210, 22, 47],
        b"GET / HTTP/1.1\r\n",
        &[0x80, 0x2e, 0x01, 0x00, 0x02],
    ] {
        assert_eq!(locate(input), Err(HelloError::NotHandshake));
        assert_eq!(locate(&input[..1]), Err(HelloError::NotHandshake));
        assert_eq!(
            HelloError::NotHandshake.alert(),
            AlertDescription::UnexpectedMessage
        );
    }
    assert_eq!(locate(&[]), Ok(Located::Incomplete));
    assert_eq!(locate(&[22]), Ok(Located::Incomplete));
}

#[test]
fn refuses_bad_record_headers() {
    assert_eq!(locate(&[22, 2]), Err(HelloError::BadRecordVersion));
    assert_eq!(locate(&[22, 0xfe, 0xfd]), Err(HelloError::BadRecordVersion));
    // Any 3.x will do, as for rustls.
    assert_eq!(locate(&[22, 3, 0x7f, 0, 1]), Ok(Located::Incomplete));
    assert_eq!(locate(&[22, 3, 1, 0, 0]), Err(HelloError::EmptyRecord));
    assert_eq!(
        locate(&[22, 3, 1, 0, 0, 1, 0]),
        Err(HelloError::EmptyRecord)
    );

    // An empty record later on is refused just the same.
    let mut input = record(22, &[1, 0]);
    input.extend_from_slice(&[22, 3, 1, 0, 0]);
    assert_eq!(locate(&input), Err(HelloError::EmptyRecord));
}

#[test]
fn refuses_records_over_2_pow_14() {
    for len in [0x4001_u16, 0x4800, 0xffff] {
        let [hi, lo] = len.to_be_bytes();
        assert_eq!(locate(&[22, 3, 1, hi, lo]), Err(HelloError::RecordOverflow));
        assert_eq!(
            HelloError::RecordOverflow.alert(),
            AlertDescription::RecordOverflow
        );
    }
    // 2^14 itself is a legal record, but with its header it exceeds the cap.
    assert_eq!(locate(&[22, 3, 1, 0x40, 0x00]), Err(HelloError::TooLarge));
}

#[test]
fn refuses_other_handshake_messages() {
    // ServerHello, Certificate, HelloRequest: known from the first byte.
    for msg_type in [2, 11, 0] {
        assert_eq!(
            locate(&[22, 3, 1, 0, 50, msg_type]),
            Err(HelloError::NotClientHello)
        );
    }
    let message = handshake_message_of(2, &HelloBuilder::default().body());
    assert_eq!(
        ClientHello::parse(&message),
        Err(HelloError::NotClientHello)
    );
}

/// A hello with a padding extension (type 21) sized so its message is
/// exactly `message_len` bytes.
fn padded_message(message_len: usize) -> Vec<u8> {
    let base = HelloBuilder::default().tls13().sni(SERVER_NAME.as_bytes());
    let unpadded = base.clone().extension(21, &[]).message().len();
    let message = base
        .extension(21, &vec![0; message_len - unpadded])
        .message();
    assert_eq!(message.len(), message_len);
    message
}

#[test]
fn accepts_a_hello_of_exactly_the_cap() {
    // One record: 5 + 16379 bytes.
    let input = record(22, &padded_message(MAX_CLIENT_HELLO_BYTES - 5));
    assert_eq!(input.len(), MAX_CLIENT_HELLO_BYTES);
    assert_eq!(complete(&input).consumed, MAX_CLIENT_HELLO_BYTES);
    assert_prefixes_incomplete(&input);

    // Three records: 15 + 16369 bytes.
    let input = records_split_at(&padded_message(MAX_CLIENT_HELLO_BYTES - 15), &[3, 8000]);
    assert_eq!(input.len(), MAX_CLIENT_HELLO_BYTES);
    assert_eq!(complete(&input).consumed, MAX_CLIENT_HELLO_BYTES);
    assert_agrees_with_rustls(&input);
    assert_prefixes_incomplete(&input);
}

#[test]
fn refuses_a_hello_one_byte_over_the_cap() {
    let input = record(22, &padded_message(MAX_CLIENT_HELLO_BYTES - 4));
    assert_eq!(locate(&input), Err(HelloError::TooLarge));
    // Known from the record header alone.
    assert_eq!(locate(&input[..5]), Err(HelloError::TooLarge));
    assert_prefixes_consistent(&input);

    // Split after 100 message bytes: the first record is fine, but once the
    // handshake length is known no split can make the rest fit.
    let input = records_split_at(&padded_message(MAX_CLIENT_HELLO_BYTES - 9), &[100]);
    assert_eq!(input.len(), MAX_CLIENT_HELLO_BYTES + 1);
    assert_eq!(locate(&input[..8]), Ok(Located::Incomplete));
    assert_eq!(locate(&input[..9]), Err(HelloError::TooLarge));
    assert_eq!(locate(&input), Err(HelloError::TooLarge));
    assert_prefixes_consistent(&input);

    // The same when the cap is crossed by a later record header.
    let input = records_split_at(&padded_message(MAX_CLIENT_HELLO_BYTES - 14), &[100, 100]);
    assert_eq!(input.len(), MAX_CLIENT_HELLO_BYTES + 1);
    assert_eq!(locate(&input), Err(HelloError::TooLarge));
    assert_prefixes_consistent(&input);
}

#[test]
fn refuses_a_huge_declared_length_early() {
    // Record of 256 bytes, ClientHello of 2^16 bytes or more: the first
    // length byte settles it.
    assert_eq!(locate(&[22, 3, 1, 1, 0, 1]), Ok(Located::Incomplete));
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, 0x01]),
        Err(HelloError::TooLarge)
    );
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, 0xff]),
        Err(HelloError::TooLarge)
    );
    // 0x40xx bytes cannot fit in what is left either.
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, 0, 0x40]),
        Err(HelloError::TooLarge)
    );
    // But 0x3fxx might, so it is too early to tell.
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, 0, 0x3f]),
        Ok(Located::Incomplete)
    );
    // The largest length that fits a 256-byte first record then one more.
    let fits = MAX_CLIENT_HELLO_BYTES - 5 - 5 - 4;
    let [_, a, b, c] = u32::try_from(fits).unwrap().to_be_bytes();
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, a, b, c]),
        Ok(Located::Incomplete)
    );
    let [_, a, b, c] = u32::try_from(fits + 1).unwrap().to_be_bytes();
    assert_eq!(
        locate(&[22, 3, 1, 1, 0, 1, a, b, c]),
        Err(HelloError::TooLarge)
    );
}

#[test]
fn refuses_a_declared_length_too_short_for_any_hello() {
    assert_eq!(
        locate(&[22, 3, 1, 0, 9, 1, 0, 0, 40]),
        Err(HelloError::Truncated)
    );
    assert_eq!(
        locate(&[22, 3, 1, 0, 9, 1, 0, 0, 0]),
        Err(HelloError::Truncated)
    );
    assert_eq!(
        locate(&[22, 3, 1, 0, 9, 1, 0, 0, 41]),
        Ok(Located::Incomplete)
    );
    // The minimal hand-made hello is exactly the minimum.
    let minimal = HelloBuilder {
        cipher_suites: vec![0x13, 0x01],
        ..HelloBuilder::default()
    };
    assert_eq!(minimal.message().len(), MIN_MESSAGE_LEN);
    assert!(complete(&minimal.record()).server_name.is_none());
}

#[test]
fn minimal_hand_made_hello() {
    let input = HelloBuilder::default().record();
    let mut scratch = Vec::new();
    let hello = read_client_hello(&input, &mut scratch).unwrap().unwrap();
    assert_eq!(hello.server_name(), None);
    assert!(!hello.has_alpn());
    assert_eq!(hello.alpn_protocols().next(), None);
    assert!(!hello.offers_alpn(POSTGRESQL));
    assert_eq!(hello.legacy_version(), 0x0303);

    // rustls agrees there is nothing to read, once it has the extensions
    // a TLS 1.3 hello needs.
    assert_agrees_with_rustls(&HelloBuilder::default().tls13().record());
    assert_agrees_with_rustls(
        &HelloBuilder::default()
            .tls13()
            .sni(b"Hand.Made.")
            .alpn(&[b"x", POSTGRESQL])
            .record(),
    );
}

/// Parses a hand-made hello, and checks rustls refuses it whenever we do.
fn parse_built(builder: &HelloBuilder) -> Result<Summary, HelloError> {
    let input = builder.clone().tls13().record();
    let ours = summarise(&input).map(|s| s.expect("complete"));
    if ours.is_err() {
        assert_eq!(rustls_accept(&input), Oracle::Rejected, "{ours:?}");
    }
    ours
}

#[test]
fn refuses_bad_fixed_fields() {
    let ok = HelloBuilder::default();
    assert!(parse_built(&ok).is_ok());

    let cases = [
        (
            HelloBuilder {
                session_id: vec![0; 33],
                ..ok.clone()
            },
            HelloError::BadSessionId,
        ),
        (
            HelloBuilder {
                cipher_suites: vec![],
                ..ok.clone()
            },
            HelloError::BadCipherSuites,
        ),
        (
            HelloBuilder {
                cipher_suites: vec![0x13, 0x01, 0x13],
                ..ok.clone()
            },
            HelloError::BadCipherSuites,
        ),
        (
            HelloBuilder {
                compression_methods: vec![],
                ..ok.clone()
            },
            HelloError::BadCompressionMethods,
        ),
    ];
    for (builder, error) in cases {
        assert_eq!(parse_built(&builder), Err(error));
        assert_eq!(error.alert(), AlertDescription::DecodeError);
    }

    let session_id_32 = HelloBuilder {
        session_id: vec![0x5a; 32],
        ..ok.clone()
    };
    assert!(parse_built(&session_id_32).is_ok());
}

#[test]
fn message_and_extension_lengths_must_add_up() {
    let body = HelloBuilder::default().sni(b"a.example").body();

    // An extensions block declared shorter than what follows it...
    let message = handshake_message_of(1, &[&body[..], &[0]].concat());
    assert_eq!(ClientHello::parse(&message), Err(HelloError::TrailingData));
    // ...or longer.
    let message = handshake_message_of(1, &body[..body.len() - 1]);
    assert_eq!(ClientHello::parse(&message), Err(HelloError::Truncated));

    // Bytes after the message itself.
    let mut message = handshake_message_of(1, &body);
    message.push(0);
    assert_eq!(ClientHello::parse(&message), Err(HelloError::TrailingData));

    // A one-byte extensions block: not even a length.
    let mut message = handshake_message_of(1, &HelloBuilder::default().body());
    message.push(0);
    message[3] += 1;
    assert_eq!(ClientHello::parse(&message), Err(HelloError::Truncated));

    // An extension whose body runs past the block.
    let builder = HelloBuilder {
        extensions: Some(vec![0x00, 0x15, 0x00, 0x05, 0, 0]),
        ..HelloBuilder::default()
    };
    assert_eq!(
        ClientHello::parse(&builder.message()),
        Err(HelloError::Truncated)
    );

    // An empty extensions block is fine.
    let builder = HelloBuilder {
        extensions: Some(vec![]),
        ..HelloBuilder::default()
    };
    assert!(ClientHello::parse(&builder.message()).is_ok());

    for truncated in 0..HelloBuilder::default().message().len() {
        let message = HelloBuilder::default().message();
        assert!(ClientHello::parse(&message[..truncated]).is_err());
    }
}

#[test]
fn refuses_duplicate_extensions() {
    let twice_sni = HelloBuilder::default().sni(b"a.example").sni(b"b.example");
    assert_eq!(parse_built(&twice_sni), Err(HelloError::DuplicateExtension));
    assert_eq!(
        HelloError::DuplicateExtension.alert(),
        AlertDescription::IllegalParameter
    );

    let twice_alpn = HelloBuilder::default().alpn(&[b"a"]).alpn(&[b"b"]);
    assert_eq!(
        parse_built(&twice_alpn),
        Err(HelloError::DuplicateExtension)
    );

    // Unknown and GREASE types too, as rustls does.
    let twice_grease = HelloBuilder::default()
        .extension(0x0a0a, &[])
        .extension(0x0a0a, &[1]);
    assert_eq!(
        parse_built(&twice_grease),
        Err(HelloError::DuplicateExtension)
    );
    let twice_max = HelloBuilder::default()
        .extension(0xffff, &[])
        .extension(0xffff, &[]);
    assert_eq!(parse_built(&twice_max), Err(HelloError::DuplicateExtension));

    // Two different GREASE values are two different extensions.
    let grease = HelloBuilder::default()
        .extension(0x0a0a, &[])
        .sni(b"a.example")
        .extension(0xfafa, &[0])
        .extension(0xffff, &[]);
    assert_eq!(
        parse_built(&grease).unwrap().server_name.as_deref(),
        Some(&b"a.example"[..])
    );
}

#[test]
fn duplicates_are_found_among_many_extensions() {
    // Past 32 extensions the duplicate check changes representation: check
    // both sides of the change, and a duplicate spanning it.
    let many = |types: &[u16]| {
        types.iter().fold(HelloBuilder::default(), |builder, &t| {
            builder.extension(t, &[])
        })
    };
    let distinct: Vec<u16> = (100..4100).collect();
    for count in [31, 32, 33, 34, 100, 4000] {
        let types = &distinct[..count];
        assert!(parse_built(&many(types)).is_ok(), "{count}");
        for (first, second) in [(0, count - 1), (count - 2, count - 1), (count / 2, 0)] {
            let mut types = types.to_vec();
            types[second] = types[first];
            if first != second {
                assert_eq!(
                    parse_built(&many(&types)),
                    Err(HelloError::DuplicateExtension),
                    "{count}: {first} and {second}"
                );
            }
        }
    }
    let input = many(&distinct[..3000]).tls13().sni(b"a.example").record();
    assert_agrees_with_rustls(&input);
}

#[test]
fn server_name_extension_edge_cases() {
    let with_sni_body = |body: &[u8]| parse_built(&HelloBuilder::default().extension(0, body));

    // Malformed: refused, by rustls too.
    for body in [
        sni_body(&[]),
        sni_body(&[(0, b"")]),
        sni_body(&[(0, b"a.example"), (0, b"b.example")]),
        sni_body(&[(0, b"a.example"), (0, b"")]),
        vec![],
        vec![0],
        vec![0, 4, 0, 0, 9, b'a'],
        [sni_body(&[(0, b"a.example")]), vec![0]].concat(),
    ] {
        assert_eq!(
            with_sni_body(&body),
            Err(HelloError::BadServerName),
            "{body:?}"
        );
    }

    // A server_name extension with an empty body (as servers send back)
    // is malformed in a ClientHello.
    assert_eq!(with_sni_body(&[]), Err(HelloError::BadServerName));

    // Unknown name types end the list, keeping any host_name before them;
    // a list with no host_name is refused, as rustls refuses it.
    let name = |body: &[u8]| with_sni_body(body).unwrap().server_name;
    assert_eq!(
        name(&sni_body(&[(0, b"a.example"), (7, b"whatever")])),
        Some(b"a.example".to_vec())
    );
    assert_eq!(
        name(&sni_body(&[(0, b"a.example"), (7, b"")])),
        Some(b"a.example".to_vec())
    );
    // What follows an unknown type is not read: its length is unknowable.
    assert_eq!(
        name(&u16_prefixed(
            &[&[0, 0, 1, b'a', 1][..], &[0xff; 3]].concat()
        )),
        Some(b"a".to_vec())
    );
    assert_agrees_with_rustls(
        &HelloBuilder::default()
            .tls13()
            .extension(0, &sni_body(&[(0, b"a.example"), (7, b"whatever")]))
            .record(),
    );
    for body in [
        sni_body(&[(1, b"a.example")]),
        sni_body(&[(1, b"x"), (0, b"a.example")]),
        sni_body(&[(0xff, b"")]),
    ] {
        assert_eq!(
            with_sni_body(&body),
            Err(HelloError::NoHostName),
            "{body:?}"
        );
    }
    assert_eq!(
        HelloError::NoHostName.alert(),
        AlertDescription::IllegalParameter
    );
}

#[test]
fn server_names_are_validated_by_host_name() {
    let raw_name = |name: &[u8]| {
        let input = HelloBuilder::default().sni(name).record();
        complete(&input).server_name.unwrap()
    };
    // The parser hands out whatever the client sent; HostName judges it.
    let cases: [(&[u8], NameError); 11] = [
        (b"db.example.com:5432", NameError::BadCharacter),
        (b"db/x", NameError::BadCharacter),
        (b"user@db", NameError::BadCharacter),
        (b"db%2e", NameError::BadCharacter),
        (b"db example", NameError::BadCharacter),
        (b"db\0.example", NameError::BadCharacter),
        ("bücher.example".as_bytes(), NameError::BadCharacter),
        (b"a..example", NameError::EmptyLabel),
        (b".example", NameError::EmptyLabel),
        (&[b'a'; 64], NameError::LabelTooLong),
        (&[b'a'; 254], NameError::TooLong),
    ];
    for (name, error) in cases {
        assert_eq!(raw_name(name), name);
        assert_eq!(HostName::parse(&raw_name(name)), Err(error));
    }
    let name = HostName::parse(&raw_name(b"Alpha.DB.example.com.")).unwrap();
    assert_eq!(name.as_str(), SERVER_NAME);
}

#[test]
fn alpn_extension_edge_cases() {
    let with_alpn_body = |body: &[u8]| parse_built(&HelloBuilder::default().extension(16, body));

    for body in [
        alpn_body(&[]),
        alpn_body(&[b""]),
        alpn_body(&[b"h2", b""]),
        vec![],
        vec![0],
        vec![0, 4, 2, b'h', b'2'],
        vec![0, 3, 3, b'h', b'2'],
        [alpn_body(&[b"h2"]), vec![0]].concat(),
    ] {
        assert_eq!(with_alpn_body(&body), Err(HelloError::BadAlpn), "{body:?}");
    }

    let offers = with_alpn_body(&alpn_body(&[b"h2", &[0xff; 255], POSTGRESQL])).unwrap();
    assert_eq!(
        offers.alpn.unwrap(),
        [b"h2".to_vec(), vec![0xff; 255], POSTGRESQL.to_vec()]
    );

    let input = HelloBuilder::default().alpn(&[b"h2", POSTGRESQL]).record();
    let mut scratch = Vec::new();
    let hello = read_client_hello(&input, &mut scratch).unwrap().unwrap();
    assert!(hello.has_alpn());
    assert!(hello.offers_alpn(POSTGRESQL));
    assert!(hello.offers_alpn(b"h2"));
    assert!(!hello.offers_alpn(b"h"));
    assert!(!hello.offers_alpn(b""));
    let mut protocols = hello.alpn_protocols();
    assert_eq!(protocols.next(), Some(&b"h2"[..]));
    assert_eq!(protocols.next(), Some(POSTGRESQL));
    assert_eq!(protocols.next(), None);
    assert_eq!(protocols.next(), None);
}

#[test]
fn ech_outer_hello_uses_the_outer_name() {
    let input = HelloBuilder::default()
        .sni(b"public.example")
        .extension(0xfe0d, &[0, 0, 1, 0, 1, 7, 0, 0, 0, 0])
        .record();
    let mut scratch = Vec::new();
    let hello = read_client_hello(&input, &mut scratch).unwrap().unwrap();
    assert!(hello.offers_ech());
    assert_eq!(hello.server_name(), Some(&b"public.example"[..]));
}

/// A deterministic miniature of the fuzz target: flip bits of real inputs
/// at every position and check that (1) no prefix contradicts the whole,
/// (2) nothing panics, and (3) whatever rustls accepts, we read the same way.
#[test]
fn mutations_never_contradict_prefixes_or_rustls() {
    for original in [CAPTURED_ALPN, CAPTURED_NO_ALPN, CAPTURED_FRAGMENTED] {
        for position in 0..original.len() {
            for flip in [0x01, 0x20, 0x80, 0xff] {
                let mut input = original.to_vec();
                input[position] ^= flip;
                assert_prefixes_consistent(&input);

                let ours = summarise(&input);
                if let Ok(Some(Summary {
                    server_name: Some(raw),
                    ..
                })) = &ours
                {
                    let _ = HostName::parse(raw);
                }
                let Oracle::Accepted { server_name, alpn } = rustls_accept(&input) else {
                    continue;
                };
                let ours = ours
                    .unwrap_or_else(|e| panic!("rustls accepted, we refused ({e}): {input:?}"))
                    .expect("rustls accepted, we wanted more");
                assert_eq!(ours.alpn, alpn, "{input:?}");
                if let Some(name) = server_name {
                    let raw = ours.server_name.expect("rustls found a name");
                    assert_eq!(
                        HostName::parse(&raw).map(|n| n.to_string()),
                        Ok(normalise(&name))
                    );
                }
            }
        }
    }
}

#[test]
fn errors_map_to_alerts_and_distinct_reasons() {
    use std::collections::HashSet;
    let all = [
        HelloError::NotHandshake,
        HelloError::BadRecordVersion,
        HelloError::EmptyRecord,
        HelloError::RecordOverflow,
        HelloError::TooLarge,
        HelloError::UnexpectedRecord,
        HelloError::NotClientHello,
        HelloError::Truncated,
        HelloError::TrailingData,
        HelloError::BadSessionId,
        HelloError::BadCipherSuites,
        HelloError::BadCompressionMethods,
        HelloError::DuplicateExtension,
        HelloError::BadServerName,
        HelloError::NoHostName,
        HelloError::BadAlpn,
    ];
    let reasons: HashSet<_> = all.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons.len(), all.len());
    assert_eq!(
        HelloError::TooLarge.alert(),
        AlertDescription::RecordOverflow
    );
    assert_eq!(
        HelloError::NotClientHello.alert(),
        AlertDescription::UnexpectedMessage
    );
    assert_eq!(
        HelloError::BadServerName.alert(),
        AlertDescription::DecodeError
    );
    assert_eq!(
        HelloError::TooLarge.to_string(),
        "ClientHello exceeds 16384 bytes"
    );
}

/// The record-layer differences from rustls listed in the module docs, pinned
/// so that they stay deliberate.
#[test]
fn documented_deviations_from_rustls() {
    let padded_record = |len: usize| record(22, &padded_message(len));

    // rustls takes plaintext records up to 2^14 + 2047 bytes.
    for len in [16_385, 18_431] {
        let input = padded_record(len);
        assert!(matches!(rustls_accept(&input), Oracle::Accepted { .. }));
        assert_eq!(locate(&input), Err(HelloError::RecordOverflow));
    }
    assert_eq!(rustls_accept(&padded_record(18_432)), Oracle::Rejected);

    // A legal 2^14-byte record exceeds our cap once its header is counted.
    let input = padded_record(16_384);
    assert!(matches!(rustls_accept(&input), Oracle::Accepted { .. }));
    assert_eq!(locate(&input), Err(HelloError::TooLarge));

    // rustls ignores an IP address in SNI; we hand it out and HostName
    // accepts it, to match no route.
    let input = HelloBuilder::default().tls13().sni(b"192.0.2.1").record();
    assert_eq!(
        rustls_accept(&input),
        Oracle::Accepted {
            server_name: None,
            alpn: None
        }
    );
    let raw = complete(&input).server_name.unwrap();
    assert_eq!(HostName::parse(&raw).unwrap().as_str(), "192.0.2.1");

    // An IPv6 address: ignored by rustls too, refused by HostName.
    let input = HelloBuilder::default().tls13().sni(b"2001:db8::1").record();
    assert_eq!(
        rustls_accept(&input),
        Oracle::Accepted {
            server_name: None,
            alpn: None
        }
    );
    let raw = complete(&input).server_name.unwrap();
    assert_eq!(HostName::parse(&raw), Err(NameError::BadCharacter));

    // Names rustls refuses and HostName accepts: hyphens at the edge of a
    // label, a number as the last label, a 253-byte name with its dot.
    let mut long_absolute = [&[b'a'; 63][..], b"."].concat().repeat(4);
    long_absolute.truncate(253);
    long_absolute.push(b'.');
    for name in [
        &b"-alpha.db.example.com"[..],
        b"alpha-.db.example.com",
        b"db.123",
        b"db.0x1f",
        &long_absolute,
    ] {
        let input = HelloBuilder::default().tls13().sni(name).record();
        assert_eq!(rustls_accept(&input), Oracle::Rejected, "{name:?}");
        assert!(HostName::parse(&complete(&input).server_name.unwrap()).is_ok());
    }
}
