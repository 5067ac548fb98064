//! Proves the integration-test harness itself, without pgsni in the path: a
//! real PostgreSQL tenant with a certificate from the test CA, reached
//! directly with psql and with tokio-postgres over rustls.

mod common;

use common::postgres::process_alive;
use common::{psql, tenant_conninfo, tokio_pg_connect, PgCluster, TestPki};

const HOST: &str = "alpha.db.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_accepts_verified_tls_and_refuses_plaintext() {
    let pki = TestPki::new();
    let leaf = pki.issue(HOST);
    let cluster = PgCluster::start("alpha", &leaf);

    // The extra database named after the cluster exists.
    assert_eq!(
        cluster.psql_local("SELECT datname FROM pg_database WHERE datname = 'alpha'"),
        "alpha"
    );

    // verify-full: the chain and the host name are both checked by libpq.
    let out = psql(
        &tenant_conninfo(HOST, cluster.port(), pki.ca_path(), "verify-full"),
        "SHOW cluster_name",
    );
    assert!(
        out.status.success(),
        "verify-full psql failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_contents()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alpha");

    // Over TLS indeed.
    let out = psql(
        &tenant_conninfo(HOST, cluster.port(), pki.ca_path(), "verify-full"),
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");

    // A name the certificate does not cover fails verify-full.
    let out = psql(
        &tenant_conninfo(
            "beta.db.example.com",
            cluster.port(),
            pki.ca_path(),
            "verify-full",
        ),
        "SELECT 1",
    );
    assert!(!out.status.success(), "wrong host name must not verify");

    // Plaintext TCP is refused by the tenant itself (pg_hba `host ... reject`).
    let out = psql(
        &tenant_conninfo(HOST, cluster.port(), pki.ca_path(), "disable"),
        "SELECT 1",
    );
    assert!(!out.status.success(), "sslmode=disable must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pg_hba.conf rejects connection"),
        "unexpected error: {stderr}"
    );

    // tokio-postgres over rustls (SSLRequest negotiation; PG15 has no direct TLS).
    let client = tokio_pg_connect(HOST, cluster.port(), pki.ca_pem().as_bytes(), false)
        .await
        .expect("tokio-postgres connect");
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .expect("SELECT 1");
    assert_eq!(row.get::<_, i32>(0), 1);
    let row = client
        .query_one("SHOW cluster_name", &[])
        .await
        .expect("SHOW cluster_name");
    assert_eq!(row.get::<_, String>(0), "alpha");

    // A CA that did not sign the server certificate is rejected by rustls.
    let other = TestPki::new();
    let err = tokio_pg_connect(HOST, cluster.port(), other.ca_pem().as_bytes(), false)
        .await
        .expect_err("an unknown CA must fail");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "unexpected error: {err:?}"
    );
}

#[test]
fn clusters_are_independent_and_cleaned_up() {
    let pki = TestPki::new();
    let (dir, pid) = {
        let mut one = PgCluster::start("one", &pki.issue("one.db.example.com"));
        let two = PgCluster::start("two", &pki.issue("two.db.example.com"));
        assert_ne!(one.port(), two.port());
        assert_eq!(one.psql_local("SHOW cluster_name"), "one");
        assert_eq!(two.psql_local("SHOW cluster_name"), "two");
        assert_eq!(two.psql_local_in("two", "SELECT current_database()"), "two");
        assert!(one.is_running());
        one.stop();
        assert!(!one.is_running());
        assert!(two.is_running());
        let pid = two.postmaster_pid().expect("postmaster pid");
        (two.data_dir(), pid)
    };
    assert!(!dir.exists(), "cluster directory must be removed on drop");
    assert!(!process_alive(pid), "server must be stopped on drop");
}
