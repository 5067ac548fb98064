//! Health probes, draining on SIGTERM, and upgrades without downtime.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::broker::{routes_toml, Broker};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A backend that answers `S` and echoes everything back, forever.
fn echo_backend() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 8];
                if stream.read_exact(&mut request).is_err() {
                    return;
                }
                stream.write_all(b"S").unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// A minimal ClientHello naming `name` (enough for the broker to route).
fn hello(name: &str) -> Vec<u8> {
    common::hello::raw_hello(name.as_bytes())
}

/// Opens a session through the broker and checks that it echoes.
fn open_session(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&SSL_REQUEST).unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    let hello = hello("alpha.db.example.com");
    stream.write_all(&hello).unwrap();
    let mut echoed = vec![0u8; hello.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, hello);
    stream
}

fn assert_echoes(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
    let mut echoed = vec![0u8; bytes.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, bytes);
}

#[test]
fn health_probes() {
    let broker = Broker::start("");
    assert!(broker.http_get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(broker.http_get("/readyz").starts_with("HTTP/1.1 200"));
    assert!(broker.http_get("/nothing").starts_with("HTTP/1.1 404"));
}

/// An attacker holding every slot of the metrics endpoint with idle
/// connections gets the next one turned away at once and counted, not left
/// waiting; once the idle ones go, scrapes are served again.
#[test]
fn metrics_connections_over_the_cap_are_refused_at_once_and_counted() {
    use pgsni::metrics::{endpoint::MAX_CONNECTIONS, METRICS_CONNECTIONS_REFUSED_TOTAL};
    let broker = Broker::start("");
    let addr = ("127.0.0.1", broker.metrics_port);
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).expect("connect an idle client"))
        .collect();

    let start = Instant::now();
    let mut excess = TcpStream::connect(addr).expect("connect one more");
    excess
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("set a read timeout");
    let mut answer = String::new();
    excess
        .read_to_string(&mut answer)
        .expect("the connection over the cap is closed at once");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.http_get("/healthz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "scrapes not served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.metric(METRICS_CONNECTIONS_REFUSED_TOTAL) >= 1.0);
}

/// Polls until `series` is exactly `value`, or panics after `within`.
fn wait_for_exact(broker: &Broker, series: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while broker.metric(series) != value {
        assert!(
            Instant::now() < deadline,
            "{series} did not come to {value}:\n{}",
            broker.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_tasks_and_descriptors_are_sampled_and_return_to_their_baseline() {
    let backend = echo_backend();
    let routes = routes_toml(&[("alpha.db.example.com", &backend)]);
    let broker = Broker::start_with(&routes, &["--handshake-timeout", "1s"]);
    let port = broker.addr().port();
    wait_for_exact(
        &broker,
        "pgsni_open_connections",
        0.0,
        Duration::from_secs(5),
    );
    // The least of a few samples: a previous scrape's task and socket may
    // still be closing when the next one samples.
    let baseline = |series| {
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                broker.metric(series)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let tasks = baseline("pgsni_runtime_tasks");
    let fds = baseline("process_open_fds");
    assert!(tasks > 0.0, "{}", broker.metrics());
    assert!(fds > 0.0, "{}", broker.metrics());
    assert!(broker.metric("process_max_fds") >= fds);

    // Three forwarding sessions (two descriptors each) and two silent
    // clients (one each, until the deadline).
    let mut sessions: Vec<_> = (0..3).map(|_| open_session(port)).collect();
    let mut silent: Vec<_> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    wait_for_exact(
        &broker,
        "pgsni_open_connections",
        5.0,
        Duration::from_secs(5),
    );
    wait_for_exact(
        &broker,
        "pgsni_runtime_tasks",
        tasks + 5.0,
        Duration::from_secs(5),
    );
    wait_for_exact(
        &broker,
        "process_open_fds",
        fds + 8.0,
        Duration::from_secs(5),
    );

    // The deadline closes the silent ones; the sessions go on.
    for stream in &mut silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 0, "closed at the deadline");
    }
    wait_for_exact(
        &broker,
        "pgsni_open_connections",
        3.0,
        Duration::from_secs(5),
    );
    for session in &mut sessions {
        assert_echoes(session, b"still forwarding");
    }

    drop(sessions);
    wait_for_exact(
        &broker,
        "pgsni_open_connections",
        0.0,
        Duration::from_secs(5),
    );
    wait_for_exact(
        &broker,
        "pgsni_runtime_tasks",
        tasks,
        Duration::from_secs(5),
    );
    wait_for_exact(&broker, "process_open_fds", fds, Duration::from_secs(5));
}

#[test]
fn sigterm_drains_live_sessions_then_exits() {
    let backend = echo_backend();
    let mut broker = Broker::start(&routes_toml(&[("alpha.db.example.com", &backend)]));
    let mut session = open_session(broker.port);

    broker.signal("TERM");
    // Not ready, and no longer accepting...
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.http_get("/readyz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", broker.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...but the live session goes on until it ends by itself.
    std::thread::sleep(Duration::from_millis(300));
    assert_echoes(&mut session, b"still here");
    drop(session);
    let status = broker.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
}

#[test]
fn sessions_left_at_the_drain_timeout_are_closed() {
    let backend = echo_backend();
    let mut broker = Broker::start_with(
        &routes_toml(&[("alpha.db.example.com", &backend)]),
        &["--drain-timeout", "1s"],
    );
    let mut session = open_session(broker.port);
    let started = Instant::now();
    broker.signal("TERM");
    let status = broker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "exited after {waited:?}"
    );
    let mut rest = Vec::new();
    let end = session.read_to_end(&mut rest);
    assert!(
        matches!(end, Ok(0)) || end.is_err(),
        "the session is closed: {end:?}"
    );
}

#[test]
fn a_second_broker_can_share_the_port() {
    let backend = echo_backend();
    let routes = routes_toml(&[("alpha.db.example.com", &backend)]);
    let mut old = Broker::start(&routes);
    let mut session = open_session(old.port);

    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.toml");
    std::fs::write(&routes_path, &routes).unwrap();
    let new = Broker::spawn_on(old.port, dir, &routes_path, &[]);
    old.signal("TERM");
    // New sessions land on the new broker while the old one drains.
    for _ in 0..20 {
        let mut fresh = open_session(new.port);
        assert_echoes(&mut fresh, b"new");
    }
    assert_echoes(&mut session, b"old session still served");
    drop(session);
    assert!(old.wait_exit(Duration::from_secs(5)).success());
    assert_echoes(&mut open_session(new.port), b"after the old one left");
}

#[test]
fn sessions_of_a_removed_route_close_after_the_grace_period() {
    let backend = echo_backend();
    let routes = routes_toml(&[
        ("alpha.db.example.com", &backend),
        ("beta.db.example.com", &backend),
    ]);
    let broker = Broker::start_with(&routes, &["--close-removed-after", "500ms"]);
    let mut removed = open_session(broker.port);

    // Rewrite the table without alpha.
    let staged = broker.dir().join("routes.staged");
    std::fs::write(&staged, routes_toml(&[("beta.db.example.com", &backend)])).unwrap();
    std::fs::rename(&staged, broker.routes_path()).unwrap();
    broker.wait_for_metric(
        r#"pgsni_routes_reload_total{result="ok"}"#,
        1.0,
        Duration::from_secs(5),
    );
    let reloaded = Instant::now();
    // Still served during the grace period...
    assert_echoes(&mut removed, b"grace");
    // ...then closed.
    let mut rest = Vec::new();
    let end = removed.read_to_end(&mut rest);
    let waited = reloaded.elapsed();
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed {waited:?} after the reload"
    );
}
