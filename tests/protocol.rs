//! The broker's start-up protocol, byte for byte, with scripted clients and
//! backends on loopback. (The same paths against real PostgreSQL servers and
//! real clients are in `tests/postgres_e2e.rs`.)

mod common;

use std::time::Duration;

use common::broker::{routes_toml, Broker};
use common::hello::raw_hello;
use common::wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The same hello re-split into records of at most `size` payload bytes.
fn split_into_records(hello: &[u8], size: usize) -> Vec<u8> {
    let payload = &hello[5..];
    let mut out = Vec::new();
    for chunk in payload.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A port on which nothing listens.
fn closed_port_address() -> String {
    format!("127.0.0.1:{}", common::free_port())
}

#[tokio::test]
async fn bytes_after_s_reach_the_backend_untouched_both_ways() {
    tap(&[]).await;
}

// The kernel data path must keep the same promise. It needs the right to
// load BPF programs (root here); where it cannot load, the broker says so
// and forwards in user space, which the log shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_s_reach_the_backend_untouched_through_the_kernel_path() {
    let log = tap(&["--kernel-forwarding"]).await;
    assert!(
        log.contains("kernel forwarding enabled"),
        "the kernel path did not load here:\n{log}"
    );
}

/// Sends a hello and half a megabyte through the broker in awkward pieces,
/// half-closes, and checks both directions byte for byte. Returns the log.
async fn tap(extra: &[&str]) -> String {
    let reply = noise(300_000, 7);
    let mut backend = FakeBackend::start(b'S', reply.clone()).await;
    let broker = Broker::start_with(
        &routes_toml(&[("alpha.db.example.com", &backend.address)]),
        extra,
    );

    let mut client = connect(&broker).await;
    client.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");

    // The hello arrives in awkward segments, followed by a stream of bytes.
    let mut sent = client_hello(Some("Alpha.DB.example.com"), &[b"postgresql"]);
    sent.extend_from_slice(&noise(500_000, 3));
    let mut offset = 0;
    for (i, size) in [1usize, 4, 2, 50, 3].into_iter().cycle().enumerate() {
        if offset >= sent.len() {
            break;
        }
        let size = if i < 30 { size } else { 65_536 };
        let end = (offset + size).min(sent.len());
        client.write_all(&sent[offset..end]).await.unwrap();
        if i < 30 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        offset = end;
    }
    // Half-close: the backend replies only after it has seen our EOF.
    client.shutdown().await.unwrap();

    let seen = backend.next().await;
    assert_eq!(
        seen.request, SSL_REQUEST,
        "the backend gets its own SSLRequest"
    );
    assert!(
        seen.after_s == sent,
        "the backend must receive exactly what the client sent after its S"
    );
    let received = read_to_end(&mut client).await;
    assert!(
        received == reply,
        "the client must receive exactly what the backend sent"
    );

    let routed = r#"pgsni_connections_total{outcome="routed"}"#;
    broker.wait_for_metric(routed, 1.0, Duration::from_secs(5));
    let upstream = r#"pgsni_forwarded_bytes_total{route="alpha.db.example.com",direction="client_to_backend",mode="passthrough"}"#;
    broker.wait_for_metric(upstream, sent.len() as f64, Duration::from_secs(5));
    let downstream = r#"pgsni_forwarded_bytes_total{route="alpha.db.example.com",direction="backend_to_client",mode="passthrough"}"#;
    broker.wait_for_metric(downstream, reply.len() as f64, Duration::from_secs(5));
    broker.log()
}

#[tokio::test]
async fn multi_record_hello_is_routed_and_replayed_exactly() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    let hello = split_into_records(&client_hello(Some("alpha.db.example.com"), &[]), 37);

    let mut client = connect(&broker).await;
    client.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    for record in hello.chunks(41) {
        client.write_all(record).await.unwrap();
    }
    client.shutdown().await.unwrap();
    let seen = backend.next().await;
    assert_eq!(seen.after_s, hello);
}

#[tokio::test]
async fn direct_tls_is_converted_to_an_ssl_request() {
    let mut backend = FakeBackend::start(b'S', b"server bytes".to_vec()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    let hello = client_hello(Some("alpha.db.example.com"), &[b"postgresql"]);

    let mut client = connect(&broker).await;
    client.write_all(&hello).await.unwrap();
    client.shutdown().await.unwrap();
    let seen = backend.next().await;
    assert_eq!(seen.request, SSL_REQUEST);
    assert_eq!(seen.after_s, hello);
    assert_eq!(read_to_end(&mut client).await, b"server bytes");
}

#[tokio::test]
async fn direct_tls_without_postgresql_alpn_gets_no_application_protocol() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    for alpn in [&[][..], &[&b"h2"[..], b"http/1.1"][..]] {
        let mut client = connect(&broker).await;
        client
            .write_all(&client_hello(Some("alpha.db.example.com"), alpn))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut client).await, alert(120));
    }
    assert!(backend.saw_nothing());
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="no_application_protocol"}"#,
        2.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn plaintext_startup_is_refused_with_28000() {
    let broker = Broker::start("");
    let mut startup = Vec::new();
    let body = b"\x00\x03\x00\x00user\0alice\0database\0app\0\0";
    startup.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    startup.extend_from_slice(body);

    let mut client = connect(&broker).await;
    client.write_all(&startup).await.unwrap();
    let (code, message, hint) = error_response(&read_to_end(&mut client).await);
    assert_eq!(code, "28000");
    assert!(message.contains("only TLS"), "{message}");
    assert!(hint.unwrap().contains("sslmode=require"));
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="plaintext_refused"}"#,
        1.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn data_behind_the_ssl_request_is_refused_and_never_forwarded() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    let mut packet = SSL_REQUEST.to_vec();
    packet.extend_from_slice(&client_hello(Some("alpha.db.example.com"), &[]));

    let mut client = connect(&broker).await;
    client.write_all(&packet).await.unwrap();
    let (code, message, _) = error_response(&read_to_end(&mut client).await);
    assert_eq!(code, "08P01");
    assert_eq!(message, "received unencrypted data after SSL request");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.saw_nothing());
}

#[tokio::test]
async fn gssenc_request_gets_n_then_ssl_proceeds() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    let mut client = connect(&broker).await;
    client.write_all(&GSSENC_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    client.write_all(&SSL_REQUEST).await.unwrap();
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    client.write_all(&hello).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(backend.next().await.after_s, hello);
}

#[tokio::test]
async fn garbage_gets_a_protocol_violation() {
    let broker = Broker::start("");
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0, 0, 0, 4][..],
        &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x99][..],
        &[0x7f, 0xff, 0xff, 0xff][..],
    ] {
        let mut client = connect(&broker).await;
        client.write_all(garbage).await.unwrap();
        let (code, _, _) = error_response(&read_to_end(&mut client).await);
        assert_eq!(code, "08P01", "for {garbage:?}");
    }
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="bad_request"}"#,
        4.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn unknown_or_missing_server_name_gets_unrecognized_name() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend.address)]));
    let unknown = client_hello(Some("gamma.db.example.com"), &[]);
    assert_eq!(tls_refusal(&broker, &unknown).await, alert(112));
    let nameless = client_hello(None, &[]);
    assert_eq!(tls_refusal(&broker, &nameless).await, alert(112));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.saw_nothing(), "nothing may reach a backend");
    let metrics = broker.metrics();
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="unknown_server_name"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="no_server_name"} 1"#),
        "{metrics}"
    );
    assert!(
        broker.log().contains("gamma.db.example.com"),
        "the log names the server name"
    );
}

#[tokio::test]
async fn malformed_hello_gets_an_alert() {
    let broker = Broker::start("");
    let mut hello = client_hello(Some("alpha.db.example.com"), &[]);
    hello[5] = 2; // a ServerHello where a ClientHello must be
    let refusal = tls_refusal(&broker, &hello).await;
    assert_eq!(&refusal[..6], &alert(0)[..6], "a fatal alert: {refusal:?}");
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="bad_client_hello"}"#,
        1.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn backends_are_tried_in_order() {
    let mut refusing = FakeBackend::start(b'N', Vec::new()).await;
    let mut good = FakeBackend::start(b'S', Vec::new()).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\", \"{}\", \"{}\"]\n",
        closed_port_address(),
        refusing.address,
        good.address
    );
    let broker = Broker::start(&routes);
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    let mut client = connect(&broker).await;
    client.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    client.write_all(&hello).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(
        refusing.next().await.after_s,
        b"",
        "the refusing backend gets no hello"
    );
    assert_eq!(good.next().await.after_s, hello);
}

#[tokio::test]
async fn no_backend_available_gets_internal_error() {
    let mut refusing = FakeBackend::start(b'N', Vec::new()).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\", \"{}\"]\n",
        closed_port_address(),
        refusing.address
    );
    let broker = Broker::start(&routes);
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    assert_eq!(tls_refusal(&broker, &hello).await, alert(80));
    refusing.next().await;
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="backend_unavailable"}"#,
        1.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn silent_clients_are_closed_at_the_handshake_deadline() {
    let broker = Broker::start_with("", &["--handshake-timeout", "1s"]);
    let started = std::time::Instant::now();
    let mut silent = connect(&broker).await;
    let mut stalled = connect(&broker).await;
    stalled.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    stalled.read_exact(&mut answer).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // a hello that never completes
    assert_eq!(read_to_end(&mut silent).await, b"");
    assert_eq!(read_to_end(&mut stalled).await, b"");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="handshake_timeout"}"#,
        2.0,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn nameless_hellos_go_to_the_default_route() {
    let mut named = FakeBackend::start(b'S', Vec::new()).await;
    let mut fallback = FakeBackend::start(b'S', Vec::new()).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\"]\n\n\
         [[route]]\nserver_name = \"legacy.db.example.com\"\nbackends = [\"{}\"]\ndefault = true\n",
        named.address, fallback.address
    );
    let broker = Broker::start(&routes);
    for (hello, backend) in [
        (client_hello(None, &[]), &mut fallback),
        (client_hello(Some("alpha.db.example.com"), &[]), &mut named),
    ] {
        let mut client = connect(&broker).await;
        client.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        client.write_all(&hello).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(backend.next().await.after_s, hello);
    }
    // An unknown name is still refused: the default is only for no name.
    let unknown = client_hello(Some("gamma.db.example.com"), &[]);
    assert_eq!(tls_refusal(&broker, &unknown).await, alert(112));
    assert!(fallback.saw_nothing() && named.saw_nothing());
}

// Multi-threaded: the blocking metric polls must not starve the fake backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_carries_the_client_address_to_backends_and_cancels() {
    let mut backend = FakeBackend::start_with(b'S', Vec::new(), true).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\"]\nproxy_protocol = \"v2\"\n",
        backend.address
    );
    let broker = Broker::start_with(
        &routes,
        &[
            "--proxy-protocol",
            "required",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );

    // A session from 203.0.113.7, as the load balancer says.
    let mut session = connect(&broker).await;
    let mut opening = proxy_v2([203, 0, 113, 7], 41000);
    opening.extend_from_slice(&SSL_REQUEST);
    session.write_all(&opening).await.unwrap();
    let mut answer = [0u8; 1];
    session.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    session.write_all(&hello).await.unwrap();
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="routed"}"#,
        1.0,
        Duration::from_secs(5),
    );

    // A plaintext cancel from the same client address reaches the backend,
    // with a header of its own; from another address it reaches nothing.
    let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 1, 2, 3, 4];
    for (source, expected) in [
        ([198, 51, 100, 9], "no_session"),
        ([203, 0, 113, 7], "forwarded"),
    ] {
        let mut canceller = connect(&broker).await;
        let mut packet = proxy_v2(source, 41001);
        packet.extend_from_slice(&cancel);
        canceller.write_all(&packet).await.unwrap();
        assert_eq!(read_to_end(&mut canceller).await, b"");
        broker.wait_for_metric(
            &format!(r#"pgsni_cancel_requests_total{{result="{expected}"}}"#),
            1.0,
            Duration::from_secs(5),
        );
    }
    let cancelled = backend.next().await;
    assert_eq!(
        &cancelled.proxy[16..20],
        &[203, 0, 113, 7],
        "the cancel carries the client address"
    );
    assert_eq!(cancelled.request, cancel[..8]);

    session.shutdown().await.unwrap();
    let seen = backend.next().await;
    assert_eq!(&seen.proxy[16..20], &[203, 0, 113, 7]);
    assert_eq!(u16::from_be_bytes([seen.proxy[24], seen.proxy[25]]), 41000);
    assert_eq!(seen.request, SSL_REQUEST);
    assert_eq!(seen.after_s, hello);
}

#[tokio::test]
async fn proxy_protocol_required_optional_and_health_checks() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let routes = routes_toml(&[("alpha.db.example.com", &backend.address)]);
    let required = Broker::start_with(
        &routes,
        &[
            "--proxy-protocol",
            "required",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );

    // Without a header: closed without a word.
    let mut bare = connect(&required).await;
    bare.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(read_to_end(&mut bare).await, b"");
    // A LOCAL health check: closed.
    let mut check = connect(&required).await;
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    check.write_all(&local).await.unwrap();
    assert_eq!(read_to_end(&mut check).await, b"");
    let metrics = required.metrics();
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="bad_proxy_header"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="health_check"} 1"#),
        "{metrics}"
    );

    // Optional: with a v1 header and without one.
    let optional = Broker::start_with(
        &routes,
        &[
            "--proxy-protocol",
            "optional",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    for header in [&b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 5432\r\n"[..], b""] {
        let mut client = connect(&optional).await;
        let mut opening = header.to_vec();
        opening.extend_from_slice(&SSL_REQUEST);
        client.write_all(&opening).await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        client.write_all(&hello).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(backend.next().await.after_s, hello);
    }
    drop(optional);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_in_the_clients_language() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\"]\nmax_connections = 1\n",
        backend.address
    );
    let broker = Broker::start_with(&routes, &["--max-handshakes-per-source", "2"]);

    // Two silent connections use up this address's handshakes...
    let _silent = [connect(&broker).await, connect(&broker).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the third is refused: in Postgres terms while plaintext,
    let mut plaintext = connect(&broker).await;
    plaintext.write_all(&SSL_REQUEST).await.unwrap();
    let (code, message, _) = error_response(&read_to_end(&mut plaintext).await);
    assert_eq!(code, "53300");
    assert!(
        message.contains("too many connection attempts"),
        "{message}"
    );
    // and with an alert for direct TLS.
    let mut direct = connect(&broker).await;
    direct
        .write_all(&client_hello(
            Some("alpha.db.example.com"),
            &[b"postgresql"],
        ))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut direct).await, alert(80));
    drop(_silent);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The route holds one session at most: a second one is refused after TLS
    // has begun, so with an alert.
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    let mut first = connect(&broker).await;
    first.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    first.read_exact(&mut answer).await.unwrap();
    first.write_all(&hello).await.unwrap();
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="routed"}"#,
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(tls_refusal(&broker, &hello).await, alert(80));
    first.shutdown().await.unwrap();
    assert_eq!(backend.next().await.after_s, hello);

    let metrics = broker.metrics();
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="limit_source_handshakes"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="limit_route"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_rate_limits() {
    let broker = Broker::start_with(
        "",
        &[
            "--max-connections",
            "1",
            "--max-connection-rate-per-source",
            "1000",
        ],
    );
    let _held = connect(&broker).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect(&broker).await;
    refused.write_all(&SSL_REQUEST).await.unwrap();
    let (code, message, _) = error_response(&read_to_end(&mut refused).await);
    assert_eq!(code, "53300");
    assert!(message.contains("server's connection limit"), "{message}");
    drop(_held);

    let limited = Broker::start_with("", &["--max-connection-rate-per-source", "3"]);
    let mut refusals = 0;
    for _ in 0..10 {
        let mut client = connect(&limited).await;
        client.write_all(&SSL_REQUEST).await.unwrap();
        let mut first = [0u8; 1];
        client.read_exact(&mut first).await.unwrap();
        if first == *b"E" {
            let mut reply = first.to_vec();
            reply.extend(read_to_end(&mut client).await);
            let (code, message, _) = error_response(&reply);
            assert_eq!(code, "53300");
            assert!(message.contains("per second"), "{message}");
            refusals += 1;
        } else {
            assert_eq!(first, *b"S");
        }
    }
    assert!(
        refusals >= 5,
        "only {refusals} of 10 rapid connections refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_names_never_become_addresses() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let port = backend.address.rsplit_once(':').unwrap().1.to_owned();
    // The template could be abused if the captured label were not checked:
    // "{1}" lands in the middle of an address. (`*.localhost` is loopback.)
    let label = "a".repeat(63);
    let tail = format!("{label}.{label}.{label}.example.org");
    let long_name = format!("{}.{tail}", "b".repeat(253 - tail.len() - 1));
    assert_eq!(long_name.len(), 253);
    let routes = format!(
        "[[route]]\nserver_name = \"*.example.com\"\nbackends = [\"{{1}}.localhost:{port}\"]\n\n\
         [[route]]\nserver_name = \"{long_name}\"\nbackends = [\"{}\"]\n",
        backend.address
    );
    let broker = Broker::start(&routes);

    // Names that are valid (after normalisation) are routed.
    for name in [
        &b"1.example.com"[..],
        b"1.EXAMPLE.com.",
        long_name.as_bytes(),
    ] {
        let mut client = connect(&broker).await;
        client.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        let hello = raw_hello(name);
        client.write_all(&hello).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(
            backend.next().await.after_s,
            hello,
            "{}",
            name.escape_ascii()
        );
    }

    // Everything else is refused with unrecognized_name, reaching nothing.
    let too_long = format!("c{long_name}");
    let hostile: Vec<&[u8]> = vec![
        b"1:6379.example.com",
        b"1/etc.example.com",
        b"user@1.example.com",
        b"%31.example.com",
        b"1 .example.com",
        b"1\0.example.com",
        "\u{e9}.example.com".as_bytes(),
        b"..example.com",
        b"1..example.com",
        too_long.as_bytes(),
    ];
    for name in &hostile {
        let refusal = tls_refusal(&broker, &raw_hello(name)).await;
        assert_eq!(refusal, alert(112), "{}", name.escape_ascii());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.saw_nothing(), "a hostile name reached a backend");
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="invalid_server_name"}"#,
        hostile.len() as f64,
        Duration::from_secs(5),
    );
}
