//! Who chooses where a session goes: the routes file, never the client's
//! server name; and, with `--backend-networks`, never outside the networks
//! the operator named. Each test is written from the attacker's side first:
//! a client that tries to reach a backend it should not.
//!
//! Against the real `pgsni` binary and a real PostgreSQL 15 with TLS.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::broker::{routes_toml, Broker};
use common::{psql, tenant_conninfo, PgCluster, TestPki};

/// A server name under the wildcard routes of these tests.
const WILD: &str = "wild.test";

fn pgsni(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgsni"))
        .args(args)
        .output()
        .expect("run pgsni")
}

/// How many TCP connections `cluster` has logged (log_connections is on).
fn connections(cluster: &PgCluster) -> usize {
    cluster
        .log_contents()
        .matches("connection received")
        .count()
}

/// `SHOW cluster_name` through the broker for `name`, which must succeed.
/// (Without channel binding, which a terminated route to a TLS backend
/// cannot carry: see the README's Known limits.)
fn reaches(broker: &Broker, ca: &Path, name: &str) -> String {
    let conninfo = tenant_conninfo(name, broker.port, ca, "require") + " channel_binding=disable";
    let out = psql(&conninfo, "SHOW cluster_name");
    assert!(
        out.status.success(),
        "{name} should have been routed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Connects through the broker for `name`, which must be refused; returns
/// psql's complaint.
fn refused(broker: &Broker, ca: &Path, name: &str) -> String {
    let out = psql(
        &tenant_conninfo(name, broker.port, ca, "require"),
        "SELECT 1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{name} reached a backend it must not: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn wildcard_route(backend: &str) -> String {
    format!("[[route]]\nserver_name = \"*.{WILD}\"\nbackends = [\"{backend}\"]\n\n")
}

/// A template whose host is the captured label (or ends in it) lets the
/// client name any host: `pgsni check` and `serve` refuse the file, naming
/// the line.
#[test]
fn templates_whose_host_the_client_chooses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for template in ["{1}:5432", "db-{1}:5432", "10.1.2.{1}:5432"] {
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            format!(
                "[[route]]\nserver_name = \"ok.test\"\nbackends = [\"127.0.0.1:1\"]\n\n\
                 [[route]]\nserver_name = \"*.{WILD}\"\nbackends = [\"{template}\"]\n"
            ),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let check = pgsni(&["check", file]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{template}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{file}:7: ")) && stderr.contains("fixed domain"),
            "{template}: {stderr}"
        );
        let serve = pgsni(&["serve", "--listen", "127.0.0.1:0", "--routes", file]);
        let stderr = String::from_utf8_lossy(&serve.stderr);
        assert_eq!(serve.status.code(), Some(1), "{template}: {stderr}");
        assert!(
            stderr.contains(&format!("{file}:7: ")),
            "{template}: {stderr}"
        );
    }
}

/// A template with a fixed part after the label can still expand to an IP
/// address (`{1}.0.0.1` with `127`, `0x7f` or `0177`, `{1}.1` with `127`:
/// all 127.0.0.1 to getaddrinfo): such an expansion is refused before
/// anything is dialled.
#[test]
fn labels_that_spell_an_address_reach_nothing() {
    let pki = TestPki::new();
    let cluster = PgCluster::start("spelled", &pki.issue("fixed.test"));
    let port = cluster.port();
    let routes = [
        wildcard_route(&format!("{{1}}.0.0.1:{port}")),
        // Shortened: `127.1` is 127.0.0.1.
        format!("[[route]]\nserver_name = \"*.short.test\"\nbackends = [\"{{1}}.1:{port}\"]\n\n"),
        routes_toml(&[("fixed.test", &format!("127.0.0.1:{port}"))]),
    ]
    .concat();
    let broker = Broker::start(&routes);
    // The same cluster is reachable where the routes file says so.
    assert_eq!(reaches(&broker, pki.ca_path(), "fixed.test"), "spelled");

    let before = connections(&cluster);
    let spelled = [
        format!("127.{WILD}"),
        format!("0x7f.{WILD}"),
        format!("0177.{WILD}"),
        "127.short.test".to_owned(),
        "0x7f.short.test".to_owned(),
    ];
    for name in &spelled {
        let stderr = refused(&broker, pki.ca_path(), name);
        println!("--- psql, {name}:\n{}", stderr.trim_end());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        connections(&cluster),
        before,
        "a spelled address was dialled"
    );
    broker.wait_for_metric(
        r#"pgsni_connections_total{outcome="backend_not_allowed"}"#,
        spelled.len() as f64,
        Duration::from_secs(5),
    );
    let log = broker.log();
    assert!(
        log.contains("the client's server name made the backend host an IP address"),
        "{log}"
    );
}

/// With `--backend-networks`, an address outside is never dialled, however
/// the route names it (an address, a name that resolves to it) and whatever
/// the route's mode; inside, everything works as before.
#[test]
fn backend_networks_bound_every_backend_connection() {
    let pki = TestPki::new();
    let cluster = PgCluster::start("bounded", &pki.issue("by-ip.test"));
    let port = cluster.port();
    let term = pki.issue("term.test");
    let routes = [
        routes_toml(&[
            ("by-ip.test", &format!("127.0.0.1:{port}")),
            ("by-name.test", &format!("localhost:{port}")),
        ]),
        wildcard_route(&format!("{{1}}.localhost:{port}")),
        format!(
            "[[route]]\nserver_name = \"term.test\"\nbackends = [\"127.0.0.1:{port}\"]\n\
             tls = \"terminate\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             backend_tls = \"require\"\n",
            term.cert_path.display(),
            term.key_path.display()
        ),
    ]
    .concat();
    let names = [
        "by-ip.test",
        "by-name.test",
        "tenant.wild.test",
        "term.test",
    ];

    // The attacker's side: the backends are on loopback, which the
    // operator did not allow.
    let outside = Broker::start_with(&routes, &["--backend-networks", "10.0.0.0/8"]);
    let before = connections(&cluster);
    for name in names {
        let stderr = refused(&outside, pki.ca_path(), name);
        println!("--- psql, {name}:\n{}", stderr.trim_end());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        connections(&cluster),
        before,
        "a backend outside was dialled"
    );
    outside.wait_for_metric(
        r#"pgsni_connections_total{outcome="backend_not_allowed"}"#,
        names.len() as f64,
        Duration::from_secs(5),
    );
    drop(outside);

    // Loopback allowed (the flag repeats; its values add up).
    let inside = Broker::start_with(
        &routes,
        &[
            "--backend-networks",
            "10.0.0.0/8,127.0.0.0/8",
            "--backend-networks",
            "::1",
        ],
    );
    for name in names {
        assert_eq!(reaches(&inside, pki.ca_path(), name), "bounded", "{name}");
    }
    assert_eq!(
        inside.metric(r#"pgsni_connections_total{outcome="backend_not_allowed"}"#),
        0.0
    );
}

/// Backend names are resolved by pgsni's own resolver (with `/etc/hosts`
/// and the special-use names: `*.localhost` is loopback, `*.invalid` does
/// not exist), and every lookup is counted by result.
#[test]
fn backend_names_are_resolved_and_counted() {
    let pki = TestPki::new();
    let cluster = PgCluster::start("resolved", &pki.issue("x.test"));
    let port = cluster.port();
    let routes = [
        wildcard_route(&format!("{{1}}.localhost:{port}")),
        format!(
            "[[route]]\nserver_name = \"*.gone.test\"\nbackends = [\"{{1}}.invalid:{port}\"]\n\n"
        ),
    ]
    .concat();
    let broker = Broker::start(&routes);
    for tenant in ["t1", "t2", "t1"] {
        assert_eq!(
            reaches(&broker, pki.ca_path(), &format!("{tenant}.{WILD}")),
            "resolved"
        );
    }
    for tenant in ["a", "b", "a"] {
        refused(&broker, pki.ca_path(), &format!("{tenant}.gone.test"));
    }
    broker.wait_for_metric(
        r#"pgsni_dns_lookups_total{result="ok"}"#,
        3.0,
        Duration::from_secs(5),
    );
    broker.wait_for_metric(
        r#"pgsni_dns_lookups_total{result="not_found"}"#,
        3.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        broker.metric(r#"pgsni_connections_total{outcome="backend_unavailable"}"#),
        3.0
    );
}
