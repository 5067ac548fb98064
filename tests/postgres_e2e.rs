//! pgsni in front of two real PostgreSQL 15 tenants with TLS, driven by real
//! clients: psql/libpq, tokio-postgres with rustls, and pgbench.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::broker::{routes_toml, Broker};
use common::tenants::{backend, Tenants, ALPHA, BETA};
use common::{interrupt_psql, psql, start_sleeping_psql, tokio_pg_connect};

/// Which cluster answered, on which port, and whether the session is TLS.
const WHO: &str = "SELECT current_setting('cluster_name') || ' ' || inet_server_port() || ' ' \
                   || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

fn psql_ok(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn psql_err(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(!out.status.success(), "psql should have failed");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn psql_verify_full_reaches_each_tenant() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    for (name, cluster) in [(ALPHA, &tenants.alpha), (BETA, &tenants.beta)] {
        let who = psql_ok(&tenants.conninfo(name, &broker, "verify-full"), WHO);
        assert_eq!(who, format!("{} {} true", cluster.name(), cluster.port()));
    }
    // Upper case and a trailing dot name the same tenant.
    let who = psql_ok(
        &tenants.conninfo("ALPHA.db.example.com", &broker, "verify-full"),
        "SHOW cluster_name",
    );
    assert_eq!(who, "alpha");
}

#[test]
fn the_client_verifies_the_tenants_own_certificate() {
    // A table that sends alpha's name to beta: verify-full must notice,
    // because pgsni never presents a certificate of its own.
    let tenants = Tenants::start();
    let broker = Broker::start(&routes_toml(&[(ALPHA, &backend(&tenants.beta))]));
    let stderr = psql_err(&tenants.conninfo(ALPHA, &broker, "verify-full"), "SELECT 1");
    assert!(
        stderr.contains("does not match host name"),
        "expected a certificate name mismatch: {stderr}"
    );
}

#[test]
fn plaintext_is_refused_and_prefer_connects_encrypted() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    let stderr = psql_err(&tenants.conninfo(ALPHA, &broker, "disable"), "SELECT 1");
    assert!(
        stderr.contains("FATAL:  this server accepts only TLS connections"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT:  connect with sslmode=require"),
        "{stderr}"
    );

    let who = psql_ok(&tenants.conninfo(ALPHA, &broker, "prefer"), WHO);
    assert_eq!(who, format!("alpha {} true", tenants.alpha.port()));
}

#[test]
fn unknown_server_name_is_refused_before_any_backend() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    let before = tenants.connections_received();
    let stderr = psql_err(
        &tenants.conninfo("gamma.db.example.com", &broker, "require"),
        "SELECT 1",
    );
    assert!(stderr.contains("unrecognized name"), "{stderr}");
    // A connection to 127.0.0.1 by address sends no SNI at all.
    let nameless = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        broker.port
    );
    let stderr = psql_err(&nameless, "SELECT 1");
    assert!(stderr.contains("unrecognized name"), "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tenants.connections_received(),
        before,
        "no backend was contacted"
    );
    let metrics = broker.metrics();
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="unknown_server_name"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pgsni_connections_total{outcome="no_server_name"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_classic_and_direct() {
    let tenants = tokio::task::spawn_blocking(Tenants::start).await.unwrap();
    let broker = Broker::start(&tenants.routes());
    let ca = tenants.pki.ca_pem().as_bytes().to_vec();
    for direct in [false, true] {
        for (name, expected) in [(ALPHA, "alpha"), (BETA, "beta")] {
            let client = tokio_pg_connect(name, broker.port, &ca, direct)
                .await
                .unwrap_or_else(|e| panic!("{name} (direct: {direct}): {e}"));
            let row = client.query_one("SHOW cluster_name", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), expected, "direct: {direct}");
        }
    }
    let routed = r#"pgsni_connections_total{outcome="routed"}"#;
    assert_eq!(broker.metric(routed), 4.0);
    drop(tenants);
}

/// Replaces `path` the way editors and `mv` do: a new inode renamed over it.
fn replace_by_rename(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// Polls until a new psql session to `name` lands on `expected`.
fn wait_for_route(tenants: &Tenants, broker: &Broker, name: &str, expected: &str) -> Duration {
    let started = Instant::now();
    loop {
        let out = psql(
            &tenants.conninfo(name, broker, "require"),
            "SHOW cluster_name",
        );
        if String::from_utf8_lossy(&out.stdout).trim() == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} never routed to {expected}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_follow_the_file_and_spare_open_sessions() {
    let tenants = tokio::task::spawn_blocking(Tenants::start).await.unwrap();
    let broker = Broker::start(&tenants.routes());
    let path = broker.routes_path();
    let ca = tenants.pki.ca_pem().as_bytes().to_vec();
    let open = tokio_pg_connect(ALPHA, broker.port, &ca, false)
        .await
        .unwrap();

    // 1. Rename: alpha's name now leads to the beta cluster (require: the
    //    certificate name is beta's, which is the point of the exercise).
    replace_by_rename(&path, &routes_toml(&[(ALPHA, &backend(&tenants.beta))]));
    let took = tokio::task::block_in_place(|| wait_for_route(&tenants, &broker, ALPHA, "beta"));
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    let row = open.query_one("SHOW cluster_name", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "alpha",
        "the open session is untouched"
    );

    // 2. An invalid file changes nothing and counts as a failed reload.
    replace_by_rename(
        &path,
        "[[route]]\nserver_name = \"bad name\"\nbackends = []\n",
    );
    broker.wait_for_metric(
        r#"pgsni_routes_reload_total{result="error"}"#,
        1.0,
        Duration::from_secs(5),
    );
    tokio::task::block_in_place(|| wait_for_route(&tenants, &broker, ALPHA, "beta"));
    assert!(
        broker.log().contains("routes.toml:2: "),
        "the refusal names the file and line"
    );

    // 3. A Kubernetes-style ConfigMap: routes.toml -> ..data/routes.toml,
    //    where ..data is a symlink swapped atomically to a new directory.
    let dir = broker.dir().join("configmap");
    std::fs::create_dir(&dir).unwrap();
    let version = |n: u32, text: &str| {
        let versioned = dir.join(format!("..v{n}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("routes.toml"), text).unwrap();
        let link = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &link).unwrap();
        std::fs::rename(&link, dir.join("..data")).unwrap();
    };
    version(1, &tenants.routes());
    std::os::unix::fs::symlink("..data/routes.toml", dir.join("routes.toml")).unwrap();
    let mapped = Broker::spawn(tempfile::tempdir().unwrap(), &dir.join("routes.toml"), &[]);
    tokio::task::block_in_place(|| wait_for_route(&tenants, &mapped, ALPHA, "alpha"));
    version(2, &routes_toml(&[(ALPHA, &backend(&tenants.beta))]));
    let took = tokio::task::block_in_place(|| wait_for_route(&tenants, &mapped, ALPHA, "beta"));
    assert!(took < Duration::from_secs(1), "symlink swap took {took:?}");
    let row = open.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(
        mapped.metric(r#"pgsni_routes_reload_total{result="ok"}"#),
        1.0
    );
}

/// pgbench against `name` through `port`, verifying the tenant's certificate.
fn pgbench(tenants: &Tenants, name: &str, port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(common::postgres::pg_bin("pgbench"));
    command
        .args(args)
        .env("PGPASSWORD", common::PG_PASSWORD)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", tenants.pki.ca_path())
        .env("PGHOSTADDR", "127.0.0.1")
        .args([
            "-h",
            name,
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ]);
    command
}

/// Checks a pgbench run: success, some transactions, none failed. Returns
/// the number processed.
fn assert_pgbench_clean(output: &std::process::Output) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{stdout}"));
    assert!(processed > 100, "only {processed} transactions:\n{stdout}");
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "failed transactions:\n{stdout}"
    );
    assert!(
        !stderr.contains("connection to server"),
        "connection errors:\n{stderr}"
    );
    processed
}

/// Initialises pgbench's tables on `name` through the broker.
fn pgbench_init(tenants: &Tenants, name: &str, port: u16) {
    let init = pgbench(tenants, name, port, &["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

#[test]
fn pgbench_through_the_broker_has_no_failed_transactions() {
    pgbench_through(&[]);
}

#[test]
fn pgbench_through_the_kernel_path_has_no_failed_transactions() {
    let log = pgbench_through(&["--kernel-forwarding"]);
    assert!(log.contains("kernel forwarding enabled"), "{log}");
}

/// A short pgbench run through a broker started with `extra`; returns its
/// log.
fn pgbench_through(extra: &[&str]) -> String {
    let tenants = Tenants::start();
    let broker = Broker::start_with(&tenants.routes(), extra);
    pgbench_init(&tenants, ALPHA, broker.port);
    let run = pgbench(
        &tenants,
        ALPHA,
        broker.port,
        &["-S", "-c", "8", "-j", "2", "-T", "4", "-n"],
    )
    .output()
    .unwrap();
    assert_pgbench_clean(&run);
    // Every session is released once pgbench has disconnected.
    let active = r#"pgsni_active_connections{route="alpha.db.example.com",mode="passthrough"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.metric(active) != 0.0 {
        assert!(Instant::now() < deadline, "{}", broker.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.log()
}

#[test]
fn upgrade_without_downtime_under_pgbench() {
    // Connections still queued on the old broker's socket when it closes
    // must move to the new one rather than be reset (see README).
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").unwrap();
    assert_eq!(
        migrate.trim(),
        "1",
        "net.ipv4.tcp_migrate_req must be 1 (scripts/test.sh sets it)"
    );
    let tenants = Tenants::start();
    let mut old = Broker::start(&tenants.routes());
    pgbench_init(&tenants, ALPHA, old.port);

    // One pgbench with a new TLS connection per transaction (every accept
    // matters), one with persistent sessions (they must be drained, not cut).
    let per_transaction = pgbench(
        &tenants,
        ALPHA,
        old.port,
        &["-S", "-C", "-c", "4", "-j", "2", "-T", "6", "-n"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let persistent = pgbench(
        &tenants,
        ALPHA,
        old.port,
        &["-S", "-c", "2", "-j", "1", "-T", "6", "-n"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.toml");
    std::fs::write(&routes_path, tenants.routes()).unwrap();
    let new = Broker::spawn_on(old.port, dir, &routes_path, &[]);
    old.signal("TERM");

    assert_pgbench_clean(&per_transaction.wait_with_output().unwrap());
    assert_pgbench_clean(&persistent.wait_with_output().unwrap());
    assert!(old.wait_exit(Duration::from_secs(10)).success());
    assert!(
        new.metric(r#"pgsni_connections_total{outcome="routed"}"#) > 0.0,
        "the new broker took over"
    );
}

#[test]
fn psql_ctrl_c_cancels_through_the_broker() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    let (sleeper, backend_pid) = start_sleeping_psql(
        &tenants.conninfo(ALPHA, &broker, "verify-full"),
        &tenants.alpha,
    );

    // A cancel from an address with no session through pgsni reaches nothing,
    // even with the right pid.
    let before = tenants.connections_received();
    let stranger =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stranger
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    stranger.connect(&broker.addr().into()).unwrap();
    let mut stranger: std::net::TcpStream = stranger.into();
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&backend_pid.to_be_bytes());
    cancel.extend_from_slice(&[0, 0, 0, 0]);
    std::io::Write::write_all(&mut stranger, &cancel).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stranger, &mut rest).unwrap();
    assert!(rest.is_empty(), "a CancelRequest gets no answer");
    broker.wait_for_metric(
        r#"pgsni_cancel_requests_total{result="no_session"}"#,
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        tenants.connections_received(),
        before,
        "no backend was contacted"
    );

    // psql's Ctrl-C: a plaintext CancelRequest without a server name.
    let (exit, stderr, took) = interrupt_psql(sleeper);
    assert!(!exit.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    assert_eq!(
        broker.metric(r#"pgsni_cancel_requests_total{result="forwarded"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_session_is_seen_promptly_and_freed() {
    let tenants = tokio::task::spawn_blocking(Tenants::start).await.unwrap();
    let broker = Broker::start(&tenants.routes());
    let ca = tenants.pki.ca_pem().as_bytes().to_vec();
    let client = tokio_pg_connect(ALPHA, broker.port, &ca, false)
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let active = r#"pgsni_active_connections{route="alpha.db.example.com",mode="passthrough"}"#;
    assert_eq!(broker.metric(active), 1.0);

    // The tenant's backend process dies without a goodbye.
    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = tokio::time::timeout(Duration::from_secs(5), client.query_one("SELECT 1", &[]))
        .await
        .expect("the client must see the close promptly, not hang");
    assert!(result.is_err(), "the session is gone");
    assert!(killed.elapsed() < Duration::from_secs(5));
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.metric(active) != 0.0 {
        assert!(Instant::now() < deadline, "the session was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tenants);
}
