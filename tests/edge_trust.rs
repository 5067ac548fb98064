//! Trust at the edge, tried from the attacker's side against the broker
//! binary: forged PROXY headers, limits that must cost the broker less than
//! the attacker, cancels, logs and IPv6 budgets. Each test fails on a broker
//! that believes what it is told.
//!
//! Loopback is a whole /8 on Linux, so one test plays both a trusted load
//! balancer (127.0.0.2) and an untrusted client (127.0.0.3).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::hello::raw_hello;
use common::tenants::{Tenants, ALPHA};
use common::wire::*;
use common::{interrupt_psql, start_sleeping_psql, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BALANCER: [u8; 4] = [127, 0, 0, 2];
const ATTACKER: [u8; 4] = [127, 0, 0, 3];
const CANCEL: [u8; 16] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 1, 2, 3, 4];

/// A v1 PROXY header announcing `source` (any text a client may forge).
fn proxy_v1(family: &str, source: &str, destination: &str) -> Vec<u8> {
    format!("PROXY {family} {source} {destination} 40000 5432\r\n").into_bytes()
}

/// Asserts that the broker closes `stream` without sending a byte: an EOF,
/// or a reset when it closed without reading what was sent.
async fn assert_closed_unanswered(stream: &mut tokio::net::TcpStream) {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the broker should close the connection");
    match read {
        Ok(_) => assert_eq!(out, b""),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

fn routes_with_proxy_v2(backend: &FakeBackend) -> String {
    format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\"]\nproxy_protocol = \"v2\"\n",
        backend.address
    )
}

/// Opens a session on `stream` after `opening` (a header, or nothing),
/// then half-closes it: the backend reports it. Returns the hello sent.
async fn session(stream: tokio::net::TcpStream, opening: &[u8]) -> Vec<u8> {
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    let mut stream = begin_tls(stream, opening, &hello).await;
    stream.shutdown().await.unwrap();
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_proxy_headers_are_refused_from_untrusted_peers() {
    let mut backend = FakeBackend::start_with(b'S', Vec::new(), true).await;
    let broker = Broker::start_with(
        &routes_with_proxy_v2(&backend),
        &[
            "--proxy-protocol",
            "optional",
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    );

    // An attacker outside the trusted network forges a v1 and a v2 header:
    // closed without a word, and nothing reaches the backend.
    for forged in [
        proxy_v1("TCP4", "10.1.2.3", "127.0.0.1"),
        proxy_v2([10, 1, 2, 3], 40000),
    ] {
        let mut attacker = connect_from(&broker, ATTACKER).await;
        let mut bytes = forged;
        bytes.extend_from_slice(&SSL_REQUEST);
        attacker.write_all(&bytes).await.unwrap();
        assert_eq!(read_to_end(&mut attacker).await, b"", "no S, no error");
    }
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="untrusted_proxy_header"}"#,
        2.0,
        Duration::from_secs(5),
    );
    assert!(backend.saw_nothing(), "a forged header reached a backend");

    // Without a header, the attacker is what it is: its own address.
    session(connect_from(&broker, ATTACKER).await, b"").await;
    let seen = backend.next().await;
    assert_eq!(&seen.proxy[16..20], &ATTACKER, "announced as the TCP peer");

    // The trusted balancer's header is believed.
    let opening = proxy_v2([10, 1, 2, 3], 41000);
    session(connect_from(&broker, BALANCER).await, &opening).await;
    let seen = backend.next().await;
    assert_eq!(&seen.proxy[16..20], &[10, 1, 2, 3], "the balancer's client");

    assert!(
        broker.log().contains("untrusted_proxy_header"),
        "a refusal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_address_cannot_send_cancels_for_its_victim() {
    let mut backend = FakeBackend::start_with(b'S', Vec::new(), true).await;
    let broker = Broker::start_with(
        &routes_with_proxy_v2(&backend),
        &[
            "--proxy-protocol",
            "required",
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    );
    // The victim, 203.0.113.7, has a session through the balancer.
    let victim = begin_tls(
        connect_from(&broker, BALANCER).await,
        &proxy_v2([203, 0, 113, 7], 41000),
        &client_hello(Some("alpha.db.example.com"), &[]),
    )
    .await;
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="routed"}"#,
        1.0,
        Duration::from_secs(5),
    );

    // The attacker claims to be the victim, in both header versions: on a
    // listener that requires a header, an untrusted peer is closed unread.
    for forged in [
        proxy_v2([203, 0, 113, 7], 41001),
        proxy_v1("TCP4", "203.0.113.7", "127.0.0.1"),
    ] {
        let mut attacker = connect_from(&broker, ATTACKER).await;
        let mut packet = forged;
        packet.extend_from_slice(&CANCEL);
        let _ = attacker.write_all(&packet).await;
        assert_closed_unanswered(&mut attacker).await;
    }
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="untrusted_proxy_header"}"#,
        2.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        broker.metric(r#"pgsni_cancel_requests_total{result="forwarded"}"#),
        0.0
    );

    // The same cancel through the balancer does reach the backend.
    let mut genuine = connect_from(&broker, BALANCER).await;
    let mut packet = proxy_v2([203, 0, 113, 7], 41002);
    packet.extend_from_slice(&CANCEL);
    genuine.write_all(&packet).await.unwrap();
    assert_eq!(read_to_end(&mut genuine).await, b"");
    broker.wait_for_metric(
        r#"pgsni_cancel_requests_total{result="forwarded"}"#,
        1.0,
        Duration::from_secs(5),
    );
    let cancelled = backend.next().await;
    assert_eq!(&cancelled.proxy[16..20], &[203, 0, 113, 7]);
    assert_eq!(cancelled.request, CANCEL[..8]);
    drop(victim);
}

#[test]
fn serve_refuses_a_proxy_listener_that_trusts_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "").unwrap();
    for mode in ["optional", "required"] {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_pgsni"))
            .args(["serve", "--listen", "127.0.0.1:0", "--proxy-protocol", mode])
            .arg("--routes")
            .arg(&routes)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = serve.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                serve.kill().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = serve.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            status.is_some_and(|status| !status.success()),
            "serve with {mode} and no trusted proxy did not refuse to start: {stderr}"
        );
        assert!(stderr.contains("--trusted-proxies"), "{stderr}");
    }
    // Trusting everyone is possible, and warned about.
    let broker = Broker::start_with(
        "",
        &[
            "--proxy-protocol",
            "optional",
            "--trusted-proxies",
            "0.0.0.0/0,::/0",
        ],
    );
    assert!(
        broker.log().contains("every address of a family"),
        "{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_header_is_short_and_held_against_the_balancer() {
    let broker = Broker::start_with(
        "",
        &[
            "--proxy-protocol",
            "required",
            "--trusted-proxies",
            "127.0.0.2/32",
            "--proxy-header-timeout",
            "1s",
            "--max-handshakes-per-source",
            "2",
        ],
    );
    // Two silent connections from the balancer's address hold its two
    // handshakes; a third is closed at once.
    let opened = Instant::now();
    let mut silent = [
        connect_from(&broker, BALANCER).await,
        connect_from(&broker, BALANCER).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from(&broker, BALANCER).await;
    assert_eq!(read_to_end(&mut third).await, b"");
    assert_eq!(
        broker.metric(r#"pgsni_connections_total{outcome="limit_source_handshakes"}"#),
        1.0
    );
    // The silent ones are closed at the header deadline, long before the
    // 10 s handshake deadline.
    for stream in &mut silent {
        assert_eq!(read_to_end(stream).await, b"");
    }
    let held = opened.elapsed();
    assert!(held < Duration::from_secs(5), "held for {held:?}");
    assert_eq!(
        broker.metric(r#"pgsni_connections_total{outcome="bad_proxy_header"}"#),
        2.0
    );
}

/// A broker with the broker's own certificate for readable refusals.
fn broker_with_fallback(routes: &str, extra: &[&str]) -> (Broker, TestPki) {
    let pki = TestPki::new();
    let edge = pki.issue("edge.example.net");
    let mut args = vec![
        "--fallback-cert".to_owned(),
        edge.cert_path.to_str().unwrap().to_owned(),
        "--fallback-key".to_owned(),
        edge.key_path.to_str().unwrap().to_owned(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Broker::start_with(routes, &args), pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_a_limit_costs_no_handshake() {
    let mut backend = FakeBackend::start(b'S', Vec::new()).await;
    let routes = format!(
        "[[route]]\nserver_name = \"alpha.db.example.com\"\nbackends = [\"{}\"]\nmax_connections = 1\n",
        backend.address
    );
    let (broker, _pki) = broker_with_fallback(&routes, &["--max-handshakes-per-source", "1"]);
    let direct_hello = client_hello(Some("alpha.db.example.com"), &[b"postgresql"]);

    // Over the per-address limit, a direct-TLS client gets a bare alert,
    // not a ServerHello from the broker's certificate.
    let silent = connect(&broker).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut direct = connect(&broker).await;
    direct.write_all(&direct_hello).await.unwrap();
    assert_eq!(read_to_end(&mut direct).await, alert(80));
    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Over the route's limit, after the hello: the alert again.
    let hello = client_hello(Some("alpha.db.example.com"), &[]);
    let mut first = begin_tls(connect(&broker).await, b"", &hello).await;
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="routed"}"#,
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(tls_refusal(&broker, &hello).await, alert(80));
    first.shutdown().await.unwrap();
    assert_eq!(backend.next().await.after_s, hello);

    let metrics = broker.metrics();
    for outcome in ["limit_source_handshakes", "limit_route"] {
        assert!(
            metrics.contains(&format!(
                "pgsni_connections_total{{outcome=\"{outcome}\"}} 1"
            )),
            "{outcome}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_refusal_is_a_handshake_under_the_deadline() {
    let (broker, _pki) = broker_with_fallback(
        "",
        &[
            "--max-handshakes-per-source",
            "1",
            "--handshake-timeout",
            "2s",
        ],
    );
    // An unknown name gets the broker's own TLS session to be told in:
    // the client reads the ServerHello, then stalls.
    let started = Instant::now();
    let mut stalled = connect(&broker).await;
    stalled.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    stalled.read_exact(&mut answer).await.unwrap();
    stalled
        .write_all(&client_hello(Some("gamma.db.example.com"), &[]))
        .await
        .unwrap();
    let mut record = [0u8; 1];
    stalled.read_exact(&mut record).await.unwrap();
    assert_eq!(record[0], 0x16, "a handshake record from the broker");

    // While it stalls it holds its address's handshake.
    let mut second = connect(&broker).await;
    second.write_all(&SSL_REQUEST).await.unwrap();
    let (code, message) = {
        let reply = read_to_end(&mut second).await;
        let (code, message, _) = error_response(&reply);
        (code, message)
    };
    assert_eq!(code, "53300");
    assert!(message.contains("connection attempts"), "{message}");

    // And it is closed at the handshake deadline (2 s), not later.
    read_to_end(&mut stalled).await;
    let held = started.elapsed();
    assert!(held < Duration::from_millis(3500), "held for {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_go_to_the_most_recent_sessions_and_cuts_are_counted() {
    let mut backends = Vec::new();
    let mut routes = String::new();
    for name in ["a", "b", "c"] {
        let backend = FakeBackend::start(b'S', Vec::new()).await;
        routes.push_str(&format!(
            "[[route]]\nserver_name = \"{name}.db.example.com\"\nbackends = [\"{}\"]\n\n",
            backend.address
        ));
        backends.push(backend);
    }
    let broker = Broker::start_with(&routes, &["--cancel-max-targets", "1"]);
    let mut sessions = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let hello = client_hello(Some(&format!("{name}.db.example.com")), &[]);
        let client = begin_tls(connect(&broker).await, b"", &hello).await;
        broker.wait_for_metric(
            r#"pgsni_connections_total{outcome="routed"}"#,
            (i + 1) as f64,
            Duration::from_secs(5),
        );
        sessions.push(client);
    }
    let mut canceller = connect(&broker).await;
    canceller.write_all(&CANCEL).await.unwrap();
    assert_eq!(read_to_end(&mut canceller).await, b"");
    broker.wait_for_metric(
        r#"pgsni_cancel_requests_total{result="truncated"}"#,
        1.0,
        Duration::from_secs(5),
    );
    let [a, b, c] = &mut backends[..] else {
        unreachable!()
    };
    assert_eq!(c.next().await.request, CANCEL[..8], "the newest session's");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        a.saw_nothing() && b.saw_nothing(),
        "older sessions' backends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_strings_are_cut_in_logs_and_refusal_lines_rate_limited() {
    let broker = Broker::start("");
    let before = broker.log().len();
    let name = vec![b'a'; 15_000];
    let hello = raw_hello(&name);
    let started = Instant::now();
    let refusals = 60;
    for _ in 0..refusals {
        assert_eq!(tls_refusal(&broker, &hello).await, alert(112));
    }
    let elapsed = started.elapsed();
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="invalid_server_name"}"#,
        refusals as f64,
        Duration::from_secs(5),
    );
    let log = broker.log();
    let written = &log[before..];
    assert!(
        written.contains("…(15000 bytes)"),
        "the name is cut and measured"
    );
    let longest = written.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a log line of {longest} bytes");
    let lines = written
        .lines()
        .filter(|line| line.contains(r#""outcome":"invalid_server_name""#))
        .count();
    let windows = elapsed.as_secs() as usize + 2;
    assert!(
        lines <= 10 * windows && lines < refusals,
        "{lines} refusal lines for {refusals} refusals in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_of_one_prefix_share_one_budget() {
    let announced = |i: usize| proxy_v1("TCP6", &format!("2001:db8:1:2::{i:x}"), "::1");
    let opened = |broker: &Broker| {
        let broker_addr = broker.addr();
        async move {
            let mut answered = 0;
            for i in 1..=6 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(std::net::SocketAddr::from((BALANCER, 0)))
                    .unwrap();
                let mut stream = socket.connect(broker_addr).await.unwrap();
                let mut bytes = announced(i);
                bytes.extend_from_slice(&SSL_REQUEST);
                stream.write_all(&bytes).await.unwrap();
                let mut first = [0u8; 1];
                stream.read_exact(&mut first).await.unwrap();
                answered += usize::from(first == *b"S");
            }
            answered
        }
    };
    let args = |prefix: &'static str| {
        [
            "--proxy-protocol",
            "required",
            "--trusted-proxies",
            "127.0.0.2/32",
            "--max-connection-rate-per-source",
            "2",
            "--ipv6-source-prefix",
            prefix,
        ]
    };
    let grouped = Broker::start_with("", &args("64"));
    let answered = opened(&grouped).await;
    assert!(
        answered <= 3,
        "{answered} of 6 addresses of one /64 admitted"
    );
    let per_address = Broker::start_with("", &args("128"));
    assert_eq!(opened(&per_address).await, 6);
}

#[test]
fn a_forged_cancel_never_reaches_a_real_postgres() {
    let tenants = Tenants::start();
    let broker = Broker::start_with(
        &tenants.routes(),
        &[
            "--proxy-protocol",
            "optional",
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    );
    // The victim connects straight from 127.0.0.1, as the broker sees it.
    let (sleeper, backend_pid) = start_sleeping_psql(
        &tenants.conninfo(ALPHA, &broker, "verify-full"),
        &tenants.alpha,
    );

    // The attacker claims the victim's address in a header of its own.
    let before = tenants.connections_received();
    let attacker =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    attacker
        .bind(&std::net::SocketAddr::from((ATTACKER, 0)).into())
        .unwrap();
    attacker.connect(&broker.addr().into()).unwrap();
    let mut attacker: std::net::TcpStream = attacker.into();
    let mut packet = proxy_v1("TCP4", "127.0.0.1", "127.0.0.1");
    packet.extend_from_slice(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
    packet.extend_from_slice(&backend_pid.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0]);
    std::io::Write::write_all(&mut attacker, &packet).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut attacker, &mut rest).unwrap();
    assert!(rest.is_empty());
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="untrusted_proxy_header"}"#,
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        tenants.connections_received(),
        before,
        "the forged cancel reached the tenant's Postgres"
    );

    // The victim's own Ctrl-C still works.
    let (exit, stderr, _) = interrupt_psql(sleeper);
    assert!(!exit.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
}
