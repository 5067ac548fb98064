//! Replays the fuzz seeds and every past crash through the fuzz targets'
//! properties, on stable Rust.
//!
//! `fuzz/properties.rs` holds what each target checks; this test includes the
//! same file and runs every input in `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through it, so the committed corpus guards
//! against regressions in an ordinary `cargo test`, fuzzer or not.
//!
//! The seeds are derived from the ClientHellos in `src/tls/testdata/` and the
//! inputs listed below by `regenerate_seeds`; run it by hand after changing
//! either, then review the diff:
//! `cargo test --test fuzz_seeds regenerate_seeds -- --ignored`.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/properties.rs"]
mod properties;

// The hand-made hellos among the seeds come from the unit tests' builder.
#[allow(dead_code)]
#[path = "../src/tls/test_util.rs"]
mod test_util;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
const TESTDATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata");

/// The files of a seed or regression directory, in name order, leaving out
/// dot files and READMEs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            path.is_file() && !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    files
}

/// Runs every seed and regression of `target` through its property and
/// reports all the inputs that fail, not just the first.
fn replay(target: &str) {
    let (_, property) = properties::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no property for target {target}"));
    let seeds = inputs(&Path::new(FUZZ_DIR).join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let regressions = inputs(&Path::new(FUZZ_DIR).join("regressions").join(target));

    let failed: Vec<String> = seeds
        .iter()
        .chain(&regressions)
        .filter_map(|path| {
            let input = std::fs::read(path).expect("readable input");
            catch_unwind(AssertUnwindSafe(|| property(&input)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target} fails on:\n{}",
        failed.join("\n")
    );
    eprintln!(
        "{target}: {} seeds, {} regressions",
        seeds.len(),
        regressions.len()
    );
}

/// Runs `target`'s property over a cheap deterministic sweep of its seeds
/// with bytes changed, dropped and added (the fuzzer covers the rest), on
/// every `cargo test`. `seed` starts the sequence.
fn sweep(target: &str, seed: u64) {
    let (_, property) = properties::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no property for target {target}"));
    let seeds: Vec<Vec<u8>> = inputs(&Path::new(FUZZ_DIR).join("seeds").join(target))
        .iter()
        .map(|path| std::fs::read(path).expect("readable seed"))
        .collect();
    let mut state = seed;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..6_000 {
        let mut input = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next() % 3 {
            let r = next();
            let at = (r >> 8) as usize % (input.len() + 1);
            // Bytes that matter to the grammars (separators, line ends,
            // digits, the small numbers lengths and codes hold) more often
            // than chance.
            let byte = match r % 8 {
                0 => b' ',
                1 => b'\r',
                2 => b'\n',
                3 => b'0' + (r >> 40) as u8 % 10,
                4 => (r >> 32) as u8 % 40,
                _ => (r >> 32) as u8,
            };
            match (r >> 4) % 4 {
                0 if at < input.len() => input[at] = byte,
                1 if at < input.len() => drop(input.remove(at)),
                // A run long enough to cross a text line's bound.
                2 => input
                    .splice(at..at, vec![byte; 40 + (r >> 48) as usize % 60])
                    .for_each(drop),
                _ => input.insert(at, byte),
            }
        }
        if catch_unwind(AssertUnwindSafe(|| property(&input))).is_err() {
            panic!("{target} fails on the mutated input {input:?}");
        }
    }
}

#[test]
fn client_hello() {
    replay("client_hello");
}

#[test]
fn client_hello_rustls() {
    replay("client_hello_rustls");
}

#[test]
fn startup() {
    replay("startup");
    sweep("startup", 0x2545_f491_4f6c_dd1d);
    // A StartupMessage as long as allowed, and one byte longer.
    let max = pgsni::wire::startup::MAX_STARTUP_PACKET_LEN;
    for len in [max, max + 1] {
        let mut input = u32::try_from(len).unwrap().to_be_bytes().to_vec();
        input.extend_from_slice(&0x0003_0000u32.to_be_bytes());
        input.resize(len, b'a');
        properties::startup(&input);
    }
}

#[test]
fn startup_message() {
    replay("startup_message");
}

#[test]
fn proxy_header() {
    replay("proxy_header");
    sweep("proxy_header", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn routes_file() {
    replay("routes_file");
}

#[test]
fn route_lookup() {
    replay("route_lookup");
}

/// A target added to `fuzz/` without a property, seeds, or a test above
/// would never be replayed: catch that here.
#[test]
fn every_fuzz_target_is_replayed() {
    let files = |dir: &str, strip: &str| -> BTreeSet<String> {
        std::fs::read_dir(Path::new(FUZZ_DIR).join(dir))
            .expect("fuzz directory")
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| name.strip_suffix(strip).map(str::to_owned))
            .collect()
    };
    let targets = files("fuzz_targets", ".rs");
    let properties: BTreeSet<String> = properties::TARGETS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(targets, properties);
    assert_eq!(files("seeds", ""), targets);
    assert_eq!(
        files("regressions", ""),
        targets
            .iter()
            .cloned()
            .chain(["README.md".into()])
            .collect()
    );
    let this_file = include_str!("fuzz_seeds.rs");
    for target in &targets {
        assert!(
            this_file.contains(&format!("replay(\"{target}\")")),
            "no test replays {target}"
        );
    }
}

// ---------------------------------------------------------------------------
// Making the seeds
// ---------------------------------------------------------------------------

/// Start-up packets, named: what clients send first, and what they must not.
fn startup_packets() -> Vec<(&'static str, Vec<u8>)> {
    let ssl_request = pgsni::wire::startup::SSL_REQUEST.to_vec();
    let cancel = |key: &[u8]| {
        let len = u32::try_from(12 + key.len()).unwrap();
        [
            &len.to_be_bytes()[..],
            &[0x04, 0xd2, 0x16, 0x2e],
            &12345_u32.to_be_bytes(),
            key,
        ]
        .concat()
    };
    let direct = std::fs::read(format!(
        "{TESTDATA_DIR}/psycopg_libpq18_openssl35_direct.bin"
    ))
    .unwrap();
    vec![
        ("ssl_request", ssl_request.clone()),
        // Bytes pipelined behind an SSLRequest (CVE-2021-23214).
        (
            "ssl_request_injected",
            [&ssl_request[..], b"Q\0\0\0\x0dSELECT 1\0"].concat(),
        ),
        ("gssenc_request", vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]),
        ("cancel_request_v3_0", cancel(&[1, 2, 3, 4])),
        ("cancel_request_v3_2", cancel(&[0xa5; 32])),
        // As psql 15 sends it with sslmode=disable (captured with
        // examples/capture_client_hello.rs).
        (
            "startup_psql15",
            b"\0\0\0\x3a\0\x03\0\0user\0postgres\0database\0app\0application_name\0psql\0\0"
                .to_vec(),
        ),
        ("startup_v3_2_empty", vec![0, 0, 0, 9, 0, 3, 0, 2, 0]),
        ("direct_tls_psycopg", direct[..64].to_vec()),
        ("unknown_request", vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31]),
        (
            "ssl_request_bad_length",
            vec![0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0],
        ),
        ("too_short", vec![0, 0, 0, 7, 0, 3, 0, 0]),
        ("too_long", vec![0, 0, 0x27, 0x11, 0, 3, 0, 0]),
        ("http", b"GET / HTTP/1.1\r\nHost: db\r\n\r\n".to_vec()),
        ("tls_alert", vec![21, 3, 3, 0, 2, 2, 40]),
    ]
}

/// StartupMessages, named: as clients send them, and broken ones.
fn startup_messages() -> Vec<(&'static str, Vec<u8>)> {
    let packet = |version: u32, body: &[u8]| {
        let len = u32::try_from(8 + body.len()).unwrap();
        [&len.to_be_bytes()[..], &version.to_be_bytes(), body].concat()
    };
    let v3_0 = 0x0003_0000;
    vec![
        // As psql 15 sends it (captured with examples/capture_client_hello.rs).
        (
            "psql15",
            packet(
                v3_0,
                b"user\0postgres\0database\0app\0application_name\0psql\0\0",
            ),
        ),
        // libpq with options and a client encoding, as psycopg sends them.
        (
            "psycopg_options",
            packet(
                v3_0,
                b"user\0app\0database\0t/app\0options\0-c pgsni.server_name=alpha.db.example.com -c search_path=a\\ b\0client_encoding\0UTF8\0\0",
            ),
        ),
        // pgjdbc's set of parameters.
        (
            "pgjdbc",
            packet(
                v3_0,
                b"user\0app\0database\0app\0client_encoding\0UTF8\0DateStyle\0ISO\0TimeZone\0UTC\0extra_float_digits\x002\0\0",
            ),
        ),
        // Protocol 3.2 (PG18) with a protocol extension.
        (
            "v3_2_protocol_extension",
            packet(0x0003_0002, b"user\0app\0_pq_.test\0on\0\0"),
        ),
        ("duplicate_user", packet(v3_0, b"user\0a\0user\0b\0\0")),
        ("empty_value", packet(v3_0, b"user\0a\0database\0\0\0")),
        ("no_parameters", packet(v3_0, b"\0")),
        ("version_2", packet(0x0002_0000, b"user\0a\0\0")),
        ("missing_terminator", packet(v3_0, b"user\0a\0")),
        ("odd_strings", packet(v3_0, b"user\0a\0database\0\0")),
        ("trailing_bytes", packet(v3_0, b"user\0a\0\0x")),
        (
            "length_mismatch",
            [&packet(v3_0, b"user\0a\0\0")[..], b"\0"].concat(),
        ),
        ("ssl_request", pgsni::wire::startup::SSL_REQUEST.to_vec()),
    ]
}

/// First bytes behind a load balancer, named: PROXY headers of both
/// versions and every kind, each followed by an SSLRequest as on the wire,
/// and the inputs where pgsni and the `ppp` crate part on purpose.
fn proxy_headers() -> Vec<(&'static str, Vec<u8>)> {
    use pgsni::wire::proxy_header::{encode_v2, V2_SIGNATURE};
    let v2 = |command: u8, family: u8, payload: &[u8]| {
        let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
        [&V2_SIGNATURE[..], &[command, family], &len, payload].concat()
    };
    let tlv = |kind: u8, value: &[u8]| {
        let len = u16::try_from(value.len()).unwrap().to_be_bytes();
        [&[kind][..], &len, value].concat()
    };
    let addresses_v4 = encode_v2(
        "192.0.2.1:56324".parse().unwrap(),
        "198.51.100.2:5432".parse().unwrap(),
    )[16..]
        .to_vec();
    let addresses_v6 = encode_v2(
        "[2001:db8::1]:4000".parse().unwrap(),
        "[2001:db8::2]:5432".parse().unwrap(),
    )[16..]
        .to_vec();
    // TLVs as load balancers add them: AWS's VPC endpoint id (0xEA, with a
    // subtype), a unique id, a CRC32C, a NOOP, and the SSL TLV with its
    // version and common name.
    let tlvs = [
        tlv(0xea, &[&[1][..], b"vpce-08d2bf15fac5001c9"].concat()),
        tlv(0x05, &[7; 16]),
        tlv(0x03, &[0xde, 0xad, 0xbe, 0xef]),
        tlv(0x04, &[0; 3]),
        tlv(
            0x20,
            &[
                &[0x07, 0, 0, 0, 0][..],
                &tlv(0x21, b"TLSv1.3"),
                &tlv(0x22, b"client.example.com"),
            ]
            .concat(),
        ),
    ]
    .concat();
    let mut inputs = vec![
        (
            "v1_tcp4",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 5432\r\n".to_vec(),
        ),
        (
            "v1_tcp6",
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.9 0 65535\r\n".to_vec(),
        ),
        ("v1_unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        // The longest v1 header the specification allows: 107 bytes.
        (
            "v1_unknown_longest",
            format!(
                "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
                ["ffff"; 8].join(":")
            )
            .into_bytes(),
        ),
        ("v1_too_long", [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat()),
        (
            "v1_leading_zero_port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
        ),
        ("v2_tcp4", v2(0x21, 0x11, &addresses_v4)),
        ("v2_tcp6", v2(0x21, 0x21, &addresses_v6)),
        (
            "v2_tcp4_tlvs",
            v2(0x21, 0x11, &[&addresses_v4[..], &tlvs].concat()),
        ),
        (
            "v2_tcp6_tlvs",
            v2(0x21, 0x21, &[&addresses_v6[..], &tlvs].concat()),
        ),
        ("v2_local", v2(0x20, 0x00, &[])),
        ("v2_local_tlvs", v2(0x20, 0x00, &tlvs)),
        ("v2_unspec", v2(0x21, 0x00, &[])),
        ("v2_udp4", v2(0x21, 0x12, &addresses_v4)),
        ("v2_unix", v2(0x21, 0x31, &[b'/'; 216])),
        ("v2_tcp4_short", v2(0x21, 0x11, &addresses_v4[..8])),
        ("v2_version_1", v2(0x11, 0x11, &addresses_v4)),
        ("v2_family_0x41", v2(0x21, 0x41, &addresses_v4)),
        ("v2_protocol_0x13", v2(0x21, 0x13, &addresses_v4)),
        // Where pgsni and ppp part on purpose; see properties::proxy_header.
        (
            "v2_payload_over_1024",
            v2(
                0x21,
                0x11,
                &[&addresses_v4[..], &tlv(0x04, &[0; 1100])].concat(),
            ),
        ),
        ("v2_family_0x10", v2(0x21, 0x10, &addresses_v4)),
        ("v2_local_family_tcp4_short", v2(0x20, 0x11, &[1, 2, 3])),
        (
            "v1_plus_port",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +56324 5432\r\n".to_vec(),
        ),
        ("v1_unknown_with_cr", b"PROXY UNKNOWN a\rb\r\n".to_vec()),
    ];
    for (_, input) in &mut inputs {
        input.extend_from_slice(&pgsni::wire::startup::SSL_REQUEST);
    }
    inputs.push(("no_header", pgsni::wire::startup::SSL_REQUEST.to_vec()));
    inputs.push(("direct_tls", vec![0x16, 3, 1, 0, 200]));
    inputs
}

/// Routes files, named: valid ones of several shapes, and broken ones.
fn routes_files() -> Vec<(&'static str, String)> {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes.toml"))
            .unwrap();
    let many: String = (0..20)
        .map(|i| {
            format!(
                "[[route]]\nserver_name = \"t{i}.db.example.com\"\nbackends = [\"10.0.0.{i}:5432\"]\n\n\
                 [[route]]\nserver_name = \"*.cell-{i}.example.com\"\n\
                 backends = [\"{{1}}-rw.{{1}}.svc:5432\", \"[::1]:{}\"]\n\n",
                6000 + i
            )
        })
        .collect();
    let route = |name: &str, backends: &str| {
        format!("[[route]]\nserver_name = \"{name}\"\nbackends = [{backends}]\n")
    };
    vec![
        ("example", example),
        ("many", many),
        ("empty", String::new()),
        (
            "exact_and_wildcard",
            route("a.example.com", "\"127.0.0.1:1\"") + &route("*.example.com", "\"{1}.b:2\""),
        ),
        (
            "absolute_and_upper_case",
            route("Alpha.DB.Example.COM.", "\"db.internal:5432\""),
        ),
        ("bad_name", route("a..example.com", "\"127.0.0.1:1\"")),
        ("bad_backend", route("*.example.com", "\"{2}.b:2\"")),
        (
            "placeholder_in_exact",
            route("a.example.com", "\"{1}.b:2\""),
        ),
        ("no_backends", route("a.example.com", "")),
        (
            "duplicate",
            route("a.example.com", "\"x:1\"") + &route("A.example.com.", "\"y:1\""),
        ),
        ("unknown_key", "[[route]]\nserver_nam = \"a.b\"\n".into()),
        ("syntax_error", "[[route]\nserver_name = \"a.b\n".into()),
    ]
}

/// Route lookups, named: route patterns, one a line, then the name asked for.
fn route_lookups() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "exact_wins",
            "*.data-1.use1.example.com\nspecial.data-1.use1.example.com\nSPECIAL.data-1.use1.example.com.",
        ),
        (
            "wildcard",
            "alpha.db.example.com\n*.data-1.use1.example.com\ntenant-7.data-1.use1.example.com",
        ),
        (
            "one_label_only",
            "*.example.com\na.b.example.com",
        ),
        ("suffix_itself", "*.example.com\nexample.com"),
        ("duplicates", "a.example\nA.EXAMPLE.\n*.example\n*.EXAMPLE\nb.example"),
        ("bad_patterns", "*\n*.\na.*.b\n**.x\na b\n*.x\ny.x"),
        ("bad_name", "*.example.com\nuser@db.example.com"),
        ("empty", ""),
    ]
}

/// A ClientHello naming `name`, for the names where pgsni and rustls part.
fn hello_naming(name: &[u8]) -> Vec<u8> {
    test_util::HelloBuilder::default()
        .tls13()
        .sni(name)
        .alpn(&[b"postgresql"])
        .record()
}

/// Rewrites `fuzz/seeds/` from the testdata and the lists above.
#[test]
#[ignore = "rewrites fuzz/seeds"]
fn regenerate_seeds() {
    let seeds = Path::new(FUZZ_DIR).join("seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for (target, _) in properties::TARGETS {
        let _ = std::fs::remove_dir_all(seeds.join(target));
    }

    for path in inputs(Path::new(TESTDATA_DIR)) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".bin") else {
            continue;
        };
        let hello = std::fs::read(&path).unwrap();
        // Cut in the middle of the stream, and inside the message: a
        // record-layer wait, and a message whose lengths run out.
        let cut = &hello[..hello.len() / 2];
        let short_message = truncated_message(&hello);
        // The `client_hello` selector: split in the middle.
        for (suffix, input) in [("", &hello[..]), ("_cut", cut), ("_short", &short_message)] {
            let file = format!("{stem}{suffix}.bin");
            write("client_hello", &file, &[&[0x80][..], input].concat());
            write("client_hello_rustls", &file, input);
        }
    }

    // Where pgsni and rustls part, on purpose.
    for (name, input) in [
        ("sni_hyphen_edge", hello_naming(b"-alpha.db.example.com")),
        ("sni_numeric_tld", hello_naming(b"alpha.db.123")),
        ("sni_ipv4", hello_naming(b"192.0.2.1")),
        ("sni_ipv6", hello_naming(b"2001:db8::1")),
        (
            "sni_bad_character",
            hello_naming(b"alpha.db.example.com:5432"),
        ),
        ("sni_long_absolute", hello_naming(&long_absolute_name())),
        ("record_over_2_pow_14", padded_record(16_385)),
    ] {
        write("client_hello_rustls", &format!("{name}.bin"), &input);
        write(
            "client_hello",
            &format!("{name}.bin"),
            &[&[0x80][..], &input].concat(),
        );
    }

    for (name, packet) in startup_packets() {
        write("startup", &format!("{name}.bin"), &packet);
    }
    for (name, packet) in startup_messages() {
        write("startup_message", &format!("{name}.bin"), &packet);
    }
    for (name, input) in proxy_headers() {
        write("proxy_header", &format!("{name}.bin"), &input);
    }
    for (name, text) in routes_files() {
        write("routes_file", &format!("{name}.toml"), text.as_bytes());
    }
    for (name, text) in route_lookups() {
        write("route_lookup", &format!("{name}.txt"), text.as_bytes());
    }
}

/// The first record of `hello` with the handshake message cut short by 10
/// bytes and its lengths adjusted to match: complete, but truncated inside.
fn truncated_message(hello: &[u8]) -> Vec<u8> {
    let message = test_util::handshake_message(hello);
    let body = &message[4..message.len() - 10];
    test_util::record(22, &test_util::handshake_message_of(1, body))
}

/// A 253-byte name with its trailing dot: 254 bytes in SNI.
fn long_absolute_name() -> Vec<u8> {
    let mut name = [&b"a".repeat(63)[..], b"."].concat().repeat(4);
    name.truncate(253);
    name.push(b'.');
    name
}

/// A hello in one record of `len` bytes, padded with a padding extension.
fn padded_record(len: usize) -> Vec<u8> {
    let base = test_util::HelloBuilder::default()
        .tls13()
        .sni(b"alpha.db.example.com");
    let unpadded = base.clone().extension(21, &[]).message().len();
    let message = base.extension(21, &vec![0; len - unpadded]).message();
    test_util::record(22, &message)
}
