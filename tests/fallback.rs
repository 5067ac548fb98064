//! Refusals a person can read: with a fallback certificate, clients refused
//! after TLS has begun get a Postgres FATAL inside the broker's own TLS
//! session instead of a bare alert.

mod common;

use std::time::Duration;

use common::broker::Broker;
use common::{psql, tenant_conninfo, PgCluster, TestPki};

const ALPHA: &str = "alpha.db.example.com";
const FALLBACK: &str = "edge.example.net";

fn stderr_of(conninfo: &str) -> String {
    let out = psql(conninfo, "SELECT 1");
    assert!(!out.status.success(), "psql should have been refused");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn refused_clients_read_why() {
    let pki = TestPki::new();
    let alpha = PgCluster::start("alpha", &pki.issue(ALPHA));
    let edge = pki.issue(FALLBACK);
    let down = format!("127.0.0.1:{}", common::free_port());
    let routes = format!(
        "[[route]]\nserver_name = \"{ALPHA}\"\nbackends = [\"127.0.0.1:{}\"]\nmax_connections = 1\n\n\
         [[route]]\nserver_name = \"down.db.example.com\"\nbackends = [\"{down}\"]\n",
        alpha.port()
    );
    let broker = Broker::start_with(
        &routes,
        &[
            "--fallback-cert",
            edge.cert_path.to_str().unwrap(),
            "--fallback-key",
            edge.key_path.to_str().unwrap(),
        ],
    );
    let conninfo =
        |name: &str, sslmode: &str| tenant_conninfo(name, broker.port, pki.ca_path(), sslmode);

    // Routed sessions are untouched: the tenant's own certificate verifies.
    let out = psql(&conninfo(ALPHA, "verify-full"), "SHOW cluster_name");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stderr = stderr_of(&conninfo("gamma.db.example.com", "require"));
    assert!(
        stderr.contains("FATAL:  no database is served under the name \"gamma.db.example.com\""),
        "{stderr}"
    );
    assert!(stderr.contains("HINT:  check the host name"), "{stderr}");

    let stderr = stderr_of(&conninfo("down.db.example.com", "require"));
    assert!(
        stderr.contains("FATAL:  the database \"down.db.example.com\" is not available right now"),
        "{stderr}"
    );

    let nameless = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        broker.port
    );
    let stderr = stderr_of(&nameless);
    assert!(
        stderr.contains("FATAL:  the client sent no server name (SNI)"),
        "{stderr}"
    );

    // A client that verifies sees that the certificate is not the tenant's.
    let stderr = stderr_of(&conninfo("gamma.db.example.com", "verify-full"));
    assert!(
        stderr.contains(&format!(
            "server certificate for \"{FALLBACK}\" does not match host name"
        )),
        "{stderr}"
    );

    // The route's limit: one session open, a second is refused. A refusal
    // for a limit costs the broker no handshake, so it is a bare alert.
    let mut holder = std::process::Command::new("psql")
        .args([
            "-X",
            "-c",
            "SELECT pg_sleep(3)",
            "-d",
            &conninfo(ALPHA, "require"),
        ])
        .env("PGPASSWORD", common::PG_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    broker.wait_for_metric(
        r#"pgsni_active_connections{route="alpha.db.example.com",mode="passthrough"}"#,
        1.0,
        Duration::from_secs(10),
    );
    let stderr = stderr_of(&conninfo(ALPHA, "require"));
    assert!(stderr.contains("alert internal error"), "{stderr}");
    holder.wait().unwrap();

    let metrics = broker.metrics();
    for outcome in [
        "unknown_server_name",
        "backend_unavailable",
        "no_server_name",
        "limit_route",
    ] {
        assert!(
            metrics.contains(&format!("pgsni_connections_total{{outcome=\"{outcome}\"}}")),
            "{outcome} not counted:\n{metrics}"
        );
    }
}
