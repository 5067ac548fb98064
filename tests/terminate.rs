//! Terminated routes: pgsni completes TLS with the route's own certificate,
//! reads the StartupMessage and opens its own connection to the backend
//! (plaintext over TCP or a unix socket, or TLS), next to passthrough routes
//! in the same table. Clients without a server name name their route in the
//! StartupMessage. Certificates rotate under load.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::broker::{routes_toml, Broker};
use common::{psql, tenant_conninfo, LeafFiles, PgCluster, TestPki, PG_PASSWORD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Terminated, to a plaintext backend over TCP.
const ALPHA: &str = "alpha.db.example.com";
/// Terminated, to a TLS backend verified against the test CA, presenting
/// the backend's own certificate (so SCRAM channel binding holds).
const BETA: &str = "beta.db.example.com";
/// Terminated, to a plaintext backend over its unix socket.
const GAMMA: &str = "gamma.db.example.com";
/// Passthrough, to the TLS backend (whose certificate names it too).
const DELTA: &str = "delta.db.example.com";
/// Terminated, to the TLS backend verified against another CA: refused.
const EPSILON: &str = "epsilon.db.example.com";
/// Terminated, to the TLS backend, encrypted without verification, with a
/// certificate of its own (so SCRAM channel binding cannot hold).
const ZETA: &str = "zeta.db.example.com";
/// Terminated, to a backend that is down.
const DOWN: &str = "down.db.example.com";
/// The broker's own certificate, for clients without a server name.
const EDGE: &str = "edge.example.net";

/// A terminated route; `backend_ca` for `verify-full`.
fn terminated(
    name: &str,
    leaf: &LeafFiles,
    backend: &str,
    backend_tls: &str,
    backend_ca: Option<&Path>,
) -> String {
    let mut route = format!(
        "[[route]]\nserver_name = \"{name}\"\nbackends = [\"{backend}\"]\ntls = \"terminate\"\n\
         certificate = \"{}\"\nprivate_key = \"{}\"\nbackend_tls = \"{backend_tls}\"\n",
        leaf.cert_path.display(),
        leaf.key_path.display(),
    );
    if let Some(ca) = backend_ca {
        route.push_str(&format!("backend_ca = \"{}\"\n", ca.display()));
    }
    route + "\n"
}

/// psql's output for `sql`, which must succeed.
fn psql_ok(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(
        out.status.success(),
        "psql failed for {conninfo}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What psql prints when its connection is refused; printed here too, so
/// that the test's output shows every refusal as a user sees it.
fn psql_refused(what: &str, conninfo: &str) -> String {
    let out = psql(conninfo, "SELECT 1");
    assert!(
        !out.status.success(),
        "psql should have been refused: {what}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("--- psql, {what}:\n{}", stderr.trim_end());
    stderr
}

/// The cluster a session reached, over what, and whether the backend sees
/// TLS.
const WHERE: &str = "SELECT current_setting('cluster_name') || ' ' || \
    CASE WHEN inet_server_port() IS NULL THEN 'unix' ELSE 'tcp' END || ' ' || \
    (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

/// A conninfo for a client that sends no server name (an IP-literal host).
fn nameless(broker: &Broker, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres sslmode=require {extra}",
        broker.port
    )
}

#[test]
fn terminated_and_passthrough_routes_in_one_table() {
    let pki = TestPki::new();
    let other_pki = TestPki::new();
    let plain = PgCluster::start_plaintext("plain");
    // The backend's certificate names the host pgsni dials (verify-full),
    // the passthrough route's name, and the terminated route that presents
    // this same certificate.
    let secure_leaf = pki.issue_for(&["localhost", DELTA, BETA]);
    let secure = PgCluster::start("secure", &secure_leaf);
    let edge = pki.issue(EDGE);
    let down = format!("127.0.0.1:{}", common::free_port());
    let plain_tcp = format!("127.0.0.1:{}", plain.port());
    let unix = format!("unix:{}", plain.unix_socket().display());
    let secure_by_name = format!("localhost:{}", secure.port());
    let secure_by_ip = format!("127.0.0.1:{}", secure.port());
    let routes = [
        terminated(ALPHA, &pki.issue(ALPHA), &plain_tcp, "disable", None),
        terminated(
            BETA,
            &secure_leaf,
            &secure_by_name,
            "verify-full",
            Some(pki.ca_path()),
        ),
        terminated(GAMMA, &pki.issue(GAMMA), &unix, "disable", None),
        routes_toml(&[(DELTA, &secure_by_ip)]),
        terminated(
            EPSILON,
            &pki.issue(EPSILON),
            &secure_by_name,
            "verify-full",
            Some(other_pki.ca_path()),
        ),
        terminated(ZETA, &pki.issue(ZETA), &secure_by_ip, "require", None),
        terminated(DOWN, &pki.issue(DOWN), &down, "disable", None),
    ]
    .concat();
    let broker = Broker::start_with(
        &routes,
        &[
            "--fallback-cert",
            edge.cert_path.to_str().unwrap(),
            "--fallback-key",
            edge.key_path.to_str().unwrap(),
            "--database-route-separator",
            "/",
        ],
    );
    let verified = |name: &str| tenant_conninfo(name, broker.port, pki.ca_path(), "verify-full");

    // psql verifies each route's own certificate (issued for the route's
    // name), and lands where the route says, encrypted or not behind it.
    for (name, expected) in [
        (ALPHA, "plain tcp false"),
        (BETA, "secure tcp true"),
        (GAMMA, "plain unix false"),
        (DELTA, "secure tcp true"),
    ] {
        assert_eq!(psql_ok(&verified(name), WHERE), expected, "{name}");
    }
    // SCRAM channel binding (libpq's default with TLS) hashes the server
    // certificate each side sees: through a route with a certificate other
    // than the backend's, the backend refuses it, as it would any other
    // party in the middle. Without channel binding, the route works.
    let stderr = psql_refused(
        "channel binding through a route whose certificate is not the backend's",
        &verified(ZETA),
    );
    assert!(
        stderr.contains("FATAL:  SCRAM channel binding check failed"),
        "{stderr}"
    );
    assert_eq!(
        psql_ok(
            &format!("{} channel_binding=disable", verified(ZETA)),
            WHERE
        ),
        "secure tcp true"
    );
    // The passthrough route's certificate is the tenant's own.
    let stderr = psql_refused(
        "a passthrough route's tenant certificate does not name the client's host",
        &tenant_conninfo(DELTA, broker.port, other_pki.ca_path(), "verify-full"),
    );
    assert!(stderr.contains("certificate verify failed"), "{stderr}");

    tokio_postgres_and_psycopg(&broker, &pki);
    clients_without_a_server_name(&broker);
    refusals(&broker, &verified);
    metrics_carry_the_mode(&broker, &verified);
}

/// tokio-postgres (rustls) with classic and direct negotiation, and psycopg
/// (libpq 18) with direct TLS to a PostgreSQL 15 backend, which only works
/// because pgsni negotiates ALPN itself; its encrypted and plaintext cancels
/// reach the terminated session's backend.
fn tokio_postgres_and_psycopg(broker: &Broker, pki: &TestPki) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for direct in [false, true] {
            for (name, expected) in [(ALPHA, "plain"), (BETA, "secure")] {
                let client =
                    common::tokio_pg_connect(name, broker.port, pki.ca_pem().as_bytes(), direct)
                        .await
                        .unwrap_or_else(|e| panic!("{name}, direct {direct}: {e}"));
                let row = client.query_one("SHOW cluster_name", &[]).await.unwrap();
                assert_eq!(row.get::<_, String>(0), expected, "{name}, direct {direct}");
            }
        }
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/psycopg_matrix.py");
    let mut command = Command::new("python3");
    common::postgres::without_libpq_env(&mut command);
    let out = command
        .arg(&script)
        .args(["--host", BETA, "--port", &broker.port.to_string(), "--ca"])
        .arg(pki.ca_path())
        .args(["--cluster", "secure", "--negotiation", "direct"])
        .args(["query", "cancel-safe", "cancel-legacy"])
        .env("PGPASSWORD", PG_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 (scripts/install-test-deps.sh sets it up)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{}", stdout.trim_end());
    assert!(
        out.status.success(),
        "psycopg through a terminated route:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok query: cluster secure"), "{stdout}");
}

/// A client that sends no server name names its route in the
/// StartupMessage; the backend sees the rest of it unchanged.
fn clients_without_a_server_name(broker: &Broker) {
    let by_option = nameless(
        broker,
        &format!("dbname=postgres options='-c pgsni.server_name={ALPHA} -c search_path=app'"),
    );
    assert_eq!(
        psql_ok(
            &by_option,
            "SELECT current_setting('cluster_name') || ' ' || current_database() || ' ' || current_setting('search_path')"
        ),
        "plain postgres app",
        "the routing option is taken out, the client's own option kept"
    );
    let by_database = nameless(broker, &format!("dbname={GAMMA}/postgres"));
    assert_eq!(
        psql_ok(
            &by_database,
            "SELECT current_setting('cluster_name') || ' ' || current_database()"
        ),
        "plain postgres"
    );

    let stderr = psql_refused(
        "no server name anywhere",
        &nameless(broker, "dbname=postgres"),
    );
    assert!(
        stderr.contains("FATAL:  the client sent no server name (SNI)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("options='-c pgsni.server_name=NAME'"),
        "{stderr}"
    );
    let stderr = psql_refused(
        "a passthrough route named in the options",
        &nameless(
            broker,
            &format!("dbname=postgres options='-c pgsni.server_name={DELTA}'"),
        ),
    );
    assert!(
        stderr.contains(&format!(
            "FATAL:  the database \"{DELTA}\" can only be reached by its server name (SNI)"
        )),
        "{stderr}"
    );
    let stderr = psql_refused(
        "an unknown route named in the database name",
        &nameless(broker, "dbname=nosuch.db.example.com/postgres"),
    );
    assert!(
        stderr.contains("FATAL:  no database is served under the name \"nosuch.db.example.com\""),
        "{stderr}"
    );
}

/// Refusals after a terminated handshake are Postgres errors inside the
/// route's own TLS session, which verify-full clients accept.
fn refusals(broker: &Broker, verified: &dyn Fn(&str) -> String) {
    let stderr = psql_refused("the route's backend is down", &verified(DOWN));
    assert!(
        stderr.contains(&format!(
            "FATAL:  the database \"{DOWN}\" is not available right now"
        )),
        "{stderr}"
    );
    let stderr = psql_refused(
        "the backend's certificate is not from backend_ca",
        &verified(EPSILON),
    );
    assert!(
        stderr.contains(&format!(
            "FATAL:  the database \"{EPSILON}\" is not available right now"
        )),
        "{stderr}"
    );
    assert!(
        broker.log().contains("TLS handshake failed"),
        "the broker says why:\n{}",
        broker.log()
    );
}

/// Sessions and bytes are counted under their route and mode.
fn metrics_carry_the_mode(broker: &Broker, verified: &dyn Fn(&str) -> String) {
    let mut holders: Vec<_> = [ALPHA, DELTA]
        .into_iter()
        .map(|name| {
            Command::new("psql")
                .args(["-X", "-c", "SELECT pg_sleep(3)", "-d", &verified(name)])
                .env("PGPASSWORD", PG_PASSWORD)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for (route, mode) in [(ALPHA, "terminate"), (DELTA, "passthrough")] {
        broker.wait_for_metric(
            &format!(r#"pgsni_active_connections{{route="{route}",mode="{mode}"}}"#),
            1.0,
            Duration::from_secs(10),
        );
    }
    for holder in &mut holders {
        assert!(holder.wait().unwrap().success());
    }
    for (route, mode) in [(ALPHA, "terminate"), (DELTA, "passthrough")] {
        for direction in ["client_to_backend", "backend_to_client"] {
            let series = format!(
                r#"pgsni_forwarded_bytes_total{{route="{route}",direction="{direction}",mode="{mode}"}}"#
            );
            assert!(
                broker.metric(&series) > 0.0,
                "{series}:\n{}",
                broker.metrics()
            );
        }
    }
    let metrics = broker.metrics();
    for outcome in [
        "server_name_required",
        "backend_unavailable",
        "no_server_name",
    ] {
        assert!(
            metrics.contains(&format!("pgsni_connections_total{{outcome=\"{outcome}\"}}")),
            "{outcome} not counted:\n{metrics}"
        );
    }
}

/// Writes a certificate and key where a terminated route reads them,
/// replacing the files by rename as issuers and Kubernetes do.
fn install(dir: &Path, cert_pem: &str, key_pem: &str) {
    for (name, contents) in [("tls.key", key_pem), ("tls.crt", cert_pem)] {
        let staged = dir.join(format!(".{name}.tmp"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
}

/// The leaf certificate a new TLS handshake with `name` through the broker
/// presents (classic negotiation, verified against `ca_pem`).
fn served_certificate(port: u16, name: &str, ca_pem: &[u8]) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let config = common::rustls_client_config(ca_pem);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    })
}

fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// pgbench through `broker` to `ALPHA`, verifying the route's certificate.
fn pgbench(broker: &Broker, pki: &TestPki, args: &[&str]) -> Command {
    let mut command = Command::new(common::pg_bin("pgbench"));
    command
        .args(args)
        .env("PGPASSWORD", PG_PASSWORD)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", pki.ca_path())
        .env("PGHOSTADDR", "127.0.0.1")
        .args([
            "-h",
            ALPHA,
            "-p",
            &broker.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg("postgres")
        .stdin(Stdio::null());
    command
}

/// A pgbench run that succeeded with transactions and not one failure.
fn assert_pgbench_clean(what: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- pgbench, {what}:\n{}", stdout.trim_end());
    assert!(output.status.success(), "{what}: {stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{what}: failed transactions:\n{stdout}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{stdout}"));
    assert!(processed > 10, "{what}: only {processed} transactions");
}

#[test]
fn certificates_rotate_under_pgbench() {
    let pki = TestPki::new();
    let plain = PgCluster::start_plaintext("plain");
    let files = tempfile::tempdir().unwrap();
    let first = pki.issue(ALPHA);
    install(files.path(), &first.cert_pem, &first.key_pem);
    let routes = format!(
        "[[route]]\nserver_name = \"{ALPHA}\"\nbackends = [\"127.0.0.1:{}\"]\n\
         tls = \"terminate\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\nbackend_tls = \"disable\"\n",
        plain.port(),
        files.path().join("tls.crt").display(),
        files.path().join("tls.key").display(),
    );
    let broker = Broker::start(&routes);
    let ca = pki.ca_pem().as_bytes();
    assert_eq!(
        served_certificate(broker.port, ALPHA, ca),
        der(&first.cert_pem)
    );

    let init = pgbench(&broker, &pki, &["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Sessions that span the rotation, and a new handshake per transaction.
    let persistent = pgbench(&broker, &pki, &["-c", "2", "-j", "1", "-T", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reconnecting = pgbench(&broker, &pki, &["-C", "-c", "2", "-j", "1", "-T", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    std::thread::sleep(Duration::from_secs(2));
    let second = pki.issue(ALPHA);
    assert_ne!(der(&second.cert_pem), der(&first.cert_pem));
    install(files.path(), &second.cert_pem, &second.key_pem);
    broker.wait_for_metric(
        r#"pgsni_certificate_reloads_total{result="ok"}"#,
        1.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        served_certificate(broker.port, ALPHA, ca),
        der(&second.cert_pem),
        "the next handshake presents the new certificate"
    );

    assert_pgbench_clean(
        "persistent sessions",
        &persistent.wait_with_output().unwrap(),
    );
    assert_pgbench_clean(
        "a connection per transaction",
        &reconnecting.wait_with_output().unwrap(),
    );

    // A certificate with a key that is not its own keeps the pair in force.
    let errors = r#"pgsni_certificate_reloads_total{result="error"}"#;
    let before = broker.metric(errors);
    let third = pki.issue(ALPHA);
    install(files.path(), &third.cert_pem, &second.key_pem);
    broker.wait_for_metric(errors, before + 1.0, Duration::from_secs(10));
    assert_eq!(
        served_certificate(broker.port, ALPHA, ca),
        der(&second.cert_pem)
    );
    let conninfo = tenant_conninfo(ALPHA, broker.port, pki.ca_path(), "verify-full");
    assert_eq!(psql_ok(&conninfo, "SHOW cluster_name"), "plain");
    assert!(
        broker
            .log()
            .contains("not reloaded; the previous one stays in force"),
        "{}",
        broker.log()
    );
}

#[test]
fn a_passthrough_table_needs_no_key() {
    let pki = TestPki::new();
    let leaf = pki.issue(DELTA);
    let tenant = PgCluster::start("delta", &leaf);
    let routes = routes_toml(&[(DELTA, &format!("127.0.0.1:{}", tenant.port()))]);
    // No --fallback-key, and (as root) a user that cannot read any key.
    let broker = Broker::start_unprivileged(&routes, &[]);
    if common::os::is_root() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|id| id == "65534"),
            "{uid}"
        );
        let read = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&leaf.key_path)
            .output()
            .unwrap();
        assert!(
            !read.status.success(),
            "the broker's user can read the tenant's key"
        );
    }
    let conninfo = tenant_conninfo(DELTA, broker.port, pki.ca_path(), "verify-full");
    assert_eq!(psql_ok(&conninfo, WHERE), "delta tcp true");

    // The parser refuses a key on a passthrough route.
    let dir = tempfile::tempdir().unwrap();
    let check = |routes: &str, args: &[&str]| {
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, routes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pgsni"))
            .arg("check")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (
            out.status.success(),
            text.replace(&path.display().to_string(), "FILE"),
        )
    };
    let keyed = format!("{routes}certificate = \"{}\"\n", leaf.cert_path.display());
    let (ok, text) = check(&keyed, &[]);
    assert!(!ok);
    assert!(
        text.starts_with("FILE:5: certificate is only for routes with tls = \"terminate\""),
        "{text}"
    );

    // `check` reads a terminated route's files only when asked to.
    let missing = terminated(
        ALPHA,
        &LeafFiles {
            cert_path: dir.path().join("missing.crt"),
            key_path: dir.path().join("missing.key"),
            cert_pem: String::new(),
            key_pem: String::new(),
        },
        "10.0.0.1:5432",
        "disable",
        None,
    );
    assert!(check(&missing, &[]).0);
    let (ok, text) = check(&missing, &["--load-keys"]);
    assert!(!ok && text.contains("missing.crt"), "{text}");
}
