//! The client matrix: real clients through pgsni to real PostgreSQL tenants,
//! each with `verify-full` against the tenants' CA and the tenant's own name.
//!
//! | client | negotiation | tenant | cancel path |
//! |---|---|---|---|
//! | psql / libpq 15 | classic | PG15 | Ctrl-C: plaintext CancelRequest, forwarded by client address |
//! | psycopg 3 (bundled libpq 17+) | classic | PG15 | `cancel_safe()`: encrypted, with SNI; `cancel()`: plaintext |
//! | psycopg 3 (bundled libpq 17+) | direct | PG18 | `cancel_safe()`: direct TLS, with SNI |
//! | tokio-postgres + rustls | classic and direct | PG15 | `CancelToken::cancel_query`: encrypted, with SNI |
//!
//! Each runs a query that says which tenant answered, a rolled-back and a
//! committed transaction, a COPY out and a COPY in of about 4 MB (compared
//! byte for byte, and row by row on the server), and a cancel of a running
//! `pg_sleep(30)`. Which path a cancel took is read from pgsni's metrics: an
//! encrypted cancel is one more routed connection, a plaintext one counts in
//! `pgsni_cancel_requests_total`.
//!
//! Also: what psql prints for every refusal, and the one documented
//! limitation, psycopg (libpq 17+) with direct TLS to a PostgreSQL 15 tenant,
//! which libpq itself refuses for want of ALPN.
//!
//! psycopg runs in `tests/clients/psycopg_matrix.py` (needs `python3` with
//! psycopg; PostgreSQL 18 comes from the test cache, see `common::pg18`;
//! both are set up by `scripts/install-test-deps.sh`).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::pin::pin;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use common::broker::{routes_toml, Broker};
use common::pg18::pg18_bindir;
use common::tenants::{backend, Tenants, ALPHA, BETA};
use common::{
    free_port, rustls_client_config, tenant_conninfo, tokio_pg_connect, PgCluster, TestPki,
    PG_PASSWORD,
};

const DELTA: &str = "delta.db.example.com";

/// Rows of the COPY payload (about 4 MB of text).
const COPY_ROWS: u64 = 40_000;

/// Produces exactly [`copy_payload`] on the server.
fn copy_out_sql() -> String {
    format!(
        "COPY (SELECT g, repeat(chr(65 + g % 26), 90) || g \
         FROM generate_series(1, {COPY_ROWS}) g) TO STDOUT"
    )
}

/// The table COPY FROM STDIN fills.
const COPY_TABLE_SQL: &str =
    "DROP TABLE IF EXISTS matrix_copy; CREATE TABLE matrix_copy (g int, t text)";

const COPY_IN_SQL: &str = "COPY matrix_copy (g, t) FROM STDIN";

/// Row count, sum of `g`, and whether every row is what the generator makes.
const COPY_VERIFY_SQL: &str = "SELECT count(*) || ' ' || sum(g) || ' ' \
                               || bool_and(t = repeat(chr(65 + g % 26), 90) || g) \
                               FROM matrix_copy";

/// What [`COPY_VERIFY_SQL`] returns after a complete COPY in.
fn copy_verified() -> String {
    format!("{COPY_ROWS} {} true", COPY_ROWS * (COPY_ROWS + 1) / 2)
}

/// The COPY text format rows `g TAB <90 times one letter><g>`, g = 1 to
/// [`COPY_ROWS`]; the same rows `tests/clients/psycopg_matrix.py` generates.
fn copy_payload() -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 << 20);
    for g in 1..=COPY_ROWS {
        let letter = char::from(b'A' + (g % 26) as u8);
        writeln!(payload, "{g}\t{}{g}", letter.to_string().repeat(90)).unwrap();
    }
    payload
}

/// Which cluster answered, on which port, and whether the session is TLS.
const WHO: &str = "SELECT current_setting('cluster_name') || ' ' || inet_server_port() || ' ' \
                   || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

/// The cancelled statement must return within this of the cancel: generous
/// for a loaded machine, far below the 30 s an ignored cancel would leave.
const CANCEL_DEADLINE: Duration = Duration::from_secs(5);

/// pgsni's counters that tell the two cancel paths apart.
const ROUTED: &str = r#"pgsni_connections_total{outcome="routed"}"#;
const PLAINTEXT_CANCELS: &str = r#"pgsni_connections_total{outcome="cancel_request"}"#;
const CANCELS_FORWARDED: &str = r#"pgsni_cancel_requests_total{result="forwarded"}"#;

/// A snapshot of the counters in [`ROUTED`], [`PLAINTEXT_CANCELS`] and
/// [`CANCELS_FORWARDED`], to assert what one step added.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    routed: f64,
    plaintext_cancels: f64,
    forwarded: f64,
}

impl Counters {
    fn read(broker: &Broker) -> Counters {
        Counters {
            routed: broker.metric(ROUTED),
            plaintext_cancels: broker.metric(PLAINTEXT_CANCELS),
            forwarded: broker.metric(CANCELS_FORWARDED),
        }
    }

    /// Asserts that, since `self`, pgsni routed `routed` more TLS
    /// connections and received `plaintext` more plaintext CancelRequests,
    /// each forwarded. Polls for a while first: a plaintext cancel is counted
    /// once its forwarding task is done, which may be after the client saw
    /// the effect.
    fn assert_added(self, broker: &Broker, routed: u32, plaintext: u32, what: &str) {
        let expected = Counters {
            routed: routed.into(),
            plaintext_cancels: plaintext.into(),
            forwarded: plaintext.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = Counters::read(broker);
            let added = Counters {
                routed: now.routed - self.routed,
                plaintext_cancels: now.plaintext_cancels - self.plaintext_cancels,
                forwarded: now.forwarded - self.forwarded,
            };
            if added == expected || Instant::now() >= deadline {
                assert_eq!(added, expected, "{what}:\n{}", broker.metrics());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until `cluster` runs a statement containing `needle`, so that a
/// cancel sent now has something to cancel.
fn wait_for_running_query(cluster: &PgCluster, needle: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE '%{needle}%' AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.psql_local(&sql) != "1" {
        assert!(Instant::now() < deadline, "{needle} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// psql / libpq 15
// ---------------------------------------------------------------------------

/// A psql 15 (from `PATH`) command against `conninfo`, quiet, unaligned,
/// tuples only, stopping at the first error; the password comes from the
/// environment and no other `PG*` variable reaches it.
fn psql_cmd(conninfo: &str) -> Command {
    let mut cmd = Command::new("psql");
    common::postgres::without_libpq_env(&mut cmd);
    cmd.env("PGPASSWORD", PG_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
        ]);
    cmd
}

/// Runs `cmd` with `input` on its standard input; returns its output.
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql (is the PostgreSQL client installed?)");
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: psql may answer before reading it all.
    std::thread::scope(|scope| {
        scope.spawn(move || stdin.write_all(input));
        child.wait_with_output().expect("wait for psql")
    })
}

/// Runs `sql` (several statements allowed) in one psql session; panics
/// unless psql succeeds; returns its trimmed standard output.
fn psql_ok(conninfo: &str, sql: &str) -> String {
    let mut cmd = psql_cmd(conninfo);
    cmd.args(["-c", sql]);
    let out = run_with_input(cmd, b"");
    assert!(
        out.status.success(),
        "psql failed for {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `SELECT 1` with psql; panics unless psql fails; returns what it
/// printed on standard error, i.e. what the user sees.
fn psql_refused(conninfo: &str) -> String {
    let mut cmd = psql_cmd(conninfo);
    cmd.args(["-c", "SELECT 1"]);
    let out = run_with_input(cmd, b"");
    assert!(!out.status.success(), "psql should have failed: {conninfo}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    println!("psql, {conninfo}:\n{stderr}");
    stderr
}

#[test]
fn psql_15_query_transaction_copy_and_ctrl_c() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    let alpha = tenants.conninfo(ALPHA, &broker, "verify-full");

    // Query: each name reaches its own tenant, over TLS.
    for (name, cluster) in [(ALPHA, &tenants.alpha), (BETA, &tenants.beta)] {
        let who = psql_ok(&tenants.conninfo(name, &broker, "verify-full"), WHO);
        assert_eq!(who, format!("{} {} true", cluster.name(), cluster.port()));
    }

    // Transaction: one session, statement by statement as typed, rolls one
    // back and commits another; a new session sees the committed row only.
    let mut script = psql_cmd(&alpha);
    script.args(["-f", "-"]);
    let out = run_with_input(
        script,
        b"CREATE TABLE matrix_tx (v text);\n\
          BEGIN;\nINSERT INTO matrix_tx VALUES ('rolled back');\nROLLBACK;\n\
          BEGIN;\nINSERT INTO matrix_tx VALUES ('committed');\nCOMMIT;\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(psql_ok(&alpha, "SELECT v FROM matrix_tx"), "committed");

    // COPY out: psql writes the data to its standard output.
    let payload = copy_payload();
    let mut out = psql_cmd(&alpha);
    out.args(["-c", &copy_out_sql()]);
    let out = run_with_input(out, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == payload,
        "COPY TO STDOUT: {} bytes differ from the {} expected",
        out.stdout.len(),
        payload.len()
    );

    // COPY in: psql reads the data from its standard input.
    psql_ok(&alpha, COPY_TABLE_SQL);
    let mut copy_in = psql_cmd(&alpha);
    copy_in.args(["-c", COPY_IN_SQL]);
    let out = run_with_input(copy_in, &payload);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(psql_ok(&alpha, COPY_VERIFY_SQL), copy_verified());

    // Cancel: Ctrl-C makes libpq 15 send a plaintext CancelRequest, which
    // carries no name; pgsni forwards it to this address's backends.
    let before = Counters::read(&broker);
    let mut sleeper = psql_cmd(&alpha)
        .args(["-c", "SELECT pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_running_query(&tenants.alpha, "pg_sleep(30)");
    let interrupted = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &sleeper.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_child(&mut sleeper, CANCEL_DEADLINE, "psql after SIGINT");
    let took = interrupted.elapsed();
    let mut stderr = String::new();
    sleeper
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!exit.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    println!("psql Ctrl-C cancelled pg_sleep(30) after {took:?}");
    before.assert_added(&broker, 1, 1, "psql: one session, one plaintext cancel");
}

/// Waits up to `within` for `child` to exit.
fn wait_child(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn psql_15_prints_why_each_refused_connection_failed() {
    // No tenant server is needed: every refusal happens in pgsni. alpha's
    // backend is a port nobody listens on.
    let pki = TestPki::new();
    let down = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&routes_toml(&[(ALPHA, &down)]));
    let port = broker.port;
    let named = |name: &str, sslmode: &str| tenant_conninfo(name, port, pki.ca_path(), sslmode);
    // libpq 15 names the address it dialled, then the reason.
    let failed = |reason: &str| {
        format!(
            "psql: error: connection to server at \"127.0.0.1\", port {port} failed: {reason}\n"
        )
    };

    // Plaintext: a Postgres FATAL with a hint, as a server would send.
    assert_eq!(
        psql_refused(&named(ALPHA, "disable")),
        failed(
            "FATAL:  this server accepts only TLS connections\n\
             HINT:  connect with sslmode=require or stronger (verify-full recommended)"
        )
    );

    // Unknown name: TLS alert unrecognized_name (112).
    assert_eq!(
        psql_refused(&named("gamma.db.example.com", "verify-full")),
        failed("SSL error: tlsv1 unrecognized name")
    );

    // No name: libpq sends no SNI for an IP-literal host.
    let nameless =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require");
    assert_eq!(
        psql_refused(&nameless),
        failed("SSL error: tlsv1 unrecognized name")
    );

    // Backend down: TLS alert internal_error (80).
    assert_eq!(
        psql_refused(&named(ALPHA, "verify-full")),
        failed("SSL error: tlsv1 alert internal error")
    );

    for outcome in [
        "plaintext_refused",
        "unknown_server_name",
        "no_server_name",
        "backend_unavailable",
    ] {
        let series = format!("pgsni_connections_total{{outcome=\"{outcome}\"}}");
        assert_eq!(broker.metric(&series), 1.0, "{series}");
    }
}

// ---------------------------------------------------------------------------
// psycopg 3 (its bundled libpq)
// ---------------------------------------------------------------------------

/// Runs `tests/clients/psycopg_matrix.py` with `checks` against tenant
/// `name` through `broker`, expecting cluster `cluster`; panics with its
/// output unless every check passed. Returns its standard output.
fn psycopg(
    broker: &Broker,
    ca: &Path,
    name: &str,
    cluster: &str,
    negotiation: &str,
    checks: &[&str],
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/psycopg_matrix.py");
    let mut cmd = Command::new("python3");
    common::postgres::without_libpq_env(&mut cmd);
    let out = cmd
        .arg(&script)
        .args(["--host", name, "--port", &broker.port.to_string(), "--ca"])
        .arg(ca)
        .args(["--cluster", cluster, "--negotiation", negotiation])
        .args(checks)
        .env("PGPASSWORD", PG_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 (scripts/install-test-deps.sh sets it up)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", stdout.trim_end());
    assert!(
        out.status.success(),
        "psycopg_matrix.py {checks:?} against {name} ({negotiation}) failed \
         ({}):\n{stdout}{stderr}",
        out.status
    );
    for check in checks {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok {check}: "))),
            "no result for {check}:\n{stdout}{stderr}"
        );
    }
    stdout
}

#[test]
fn psycopg_classic_query_transaction_copy_and_cancels() {
    let tenants = Tenants::start();
    let broker = Broker::start(&tenants.routes());
    let ca = tenants.pki.ca_path();
    let run =
        |name, cluster, checks: &[&str]| psycopg(&broker, ca, name, cluster, "postgres", checks);

    run(ALPHA, "alpha", &["query", "transaction", "copy"]);
    run(BETA, "beta", &["query"]);

    // cancel_safe(): libpq 17+'s PQcancelCreate opens a TLS connection with
    // SNI, which pgsni routes like a session. Routed: the session, the
    // script's monitoring session and the cancel; no plaintext cancel.
    let before = Counters::read(&broker);
    run(BETA, "beta", &["cancel-safe"]);
    before.assert_added(&broker, 3, 0, "cancel_safe() must be an encrypted cancel");

    // cancel(): PQcancel's plaintext CancelRequest, forwarded by address.
    let before = Counters::read(&broker);
    run(ALPHA, "alpha", &["cancel-legacy"]);
    before.assert_added(&broker, 2, 1, "cancel() must be a plaintext cancel");
}

#[test]
fn psycopg_direct_tls_to_a_postgres_18_tenant() {
    let bindir = pg18_bindir();
    let pki = TestPki::new();
    let delta = PgCluster::start_with_bindir("delta", &pki.issue(DELTA), &bindir);
    let broker = Broker::start(&routes_toml(&[(DELTA, &backend(&delta))]));
    let run = |negotiation, checks: &[&str]| {
        psycopg(&broker, pki.ca_path(), DELTA, "delta", negotiation, checks)
    };

    let out = run("direct", &["query", "transaction", "copy"]);
    assert!(
        out.contains(", server 18"),
        "not a PostgreSQL 18 tenant:\n{out}"
    );

    // A direct-TLS cancel: no SSLRequest, ALPN and SNI in the hello.
    let before = Counters::read(&broker);
    run("direct", &["cancel-safe"]);
    before.assert_added(&broker, 3, 0, "cancel_safe() must be an encrypted cancel");

    // The same tenant with classic negotiation, for comparison.
    run("postgres", &["query"]);
}

#[test]
fn psycopg_direct_tls_to_a_postgres_15_tenant_is_refused_by_libpq_for_want_of_alpn() {
    // A documented limitation: libpq 17+ requires the server to negotiate
    // ALPN `postgresql` on a direct TLS connection. PostgreSQL 15 does not,
    // and pgsni cannot add it since it never terminates TLS. (tokio-postgres
    // does not check, see below; classic negotiation works.)
    let pki = TestPki::new();
    let alpha = PgCluster::start("alpha", &pki.issue(ALPHA));
    let broker = Broker::start(&routes_toml(&[(ALPHA, &backend(&alpha))]));
    let out = psycopg(
        &broker,
        pki.ca_path(),
        ALPHA,
        "alpha",
        "direct",
        &["refused-no-alpn"],
    );
    assert!(
        out.contains(
            "direct SSL connection was established without ALPN protocol negotiation extension"
        ),
        "{out}"
    );
    // pgsni did its part: the hello carried ALPN `postgresql` and was routed.
    assert_eq!(broker.metric(ROUTED), 1.0, "{}", broker.metrics());
}

// ---------------------------------------------------------------------------
// tokio-postgres + rustls
// ---------------------------------------------------------------------------

/// The whole matrix for tokio-postgres, classic or `direct` TLS negotiation.
async fn tokio_postgres_cell(tenants: &Tenants, broker: &Broker, direct: bool) {
    let ca = tenants.pki.ca_pem().as_bytes();
    let connect = |name| async move {
        tokio_pg_connect(name, broker.port, ca, direct)
            .await
            .unwrap_or_else(|e| panic!("{name} (direct: {direct}): {e}"))
    };

    // Query: each name reaches its own tenant, over TLS.
    for (name, cluster) in [(ALPHA, &tenants.alpha), (BETA, &tenants.beta)] {
        let client = connect(name).await;
        let who: String = client.query_one(WHO, &[]).await.unwrap().get(0);
        assert_eq!(who, format!("{} {} true", cluster.name(), cluster.port()));
    }

    // Transaction.
    let mut client = connect(ALPHA).await;
    client
        .batch_execute("DROP TABLE IF EXISTS matrix_tx; CREATE TABLE matrix_tx (v text)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO matrix_tx VALUES ('rolled back')", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO matrix_tx VALUES ('committed')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = connect(ALPHA)
        .await
        .query("SELECT v FROM matrix_tx", &[])
        .await
        .unwrap();
    let values: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, ["committed"]);

    // COPY out.
    let payload = copy_payload();
    let mut stream = pin!(client.copy_out(&copy_out_sql()).await.unwrap());
    let mut received = Vec::with_capacity(payload.len());
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        received == payload,
        "COPY TO STDOUT: {} bytes differ from the {} expected",
        received.len(),
        payload.len()
    );

    // COPY in.
    client.batch_execute(COPY_TABLE_SQL).await.unwrap();
    let mut sink = pin!(client.copy_in::<_, Bytes>(COPY_IN_SQL).await.unwrap());
    for chunk in payload.chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), COPY_ROWS);
    let verified: String = client.query_one(COPY_VERIFY_SQL, &[]).await.unwrap().get(0);
    assert_eq!(verified, copy_verified());

    // Cancel: CancelToken::cancel_query connects like the client did (same
    // TLS mode and negotiation, server name for SNI) and sends the cancel
    // inside TLS, so pgsni routes it by name: one routed connection and no
    // plaintext CancelRequest.
    let before = Counters::read(broker);
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let started = Instant::now();
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result, started.elapsed(), client)
    });
    tokio::task::block_in_place(|| wait_for_running_query(&tenants.alpha, "pg_sleep(30)"));
    let cancelled = Instant::now();
    token
        .cancel_query(MakeRustlsConnect::new(rustls_client_config(ca)))
        .await
        .unwrap_or_else(|e| panic!("cancel (direct: {direct}): {e}"));
    let (result, slept, client) = tokio::time::timeout(Duration::from_secs(40), sleeper)
        .await
        .expect("pg_sleep(30) outlived its own length")
        .unwrap();
    let took = cancelled.elapsed();
    let error = result.expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    assert!(
        took < CANCEL_DEADLINE,
        "the cancel took {took:?} (slept {slept:?})"
    );
    println!("tokio-postgres (direct: {direct}) cancelled pg_sleep(30) after {took:?}");
    before.assert_added(broker, 1, 0, "cancel_query must be an encrypted cancel");
    // The session itself survives.
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_rustls_classic_and_direct() {
    let tenants = tokio::task::spawn_blocking(Tenants::start).await.unwrap();
    let broker = Broker::start(&tenants.routes());
    // Direct TLS reaches the PG15 tenants too: pgsni replays the hello after
    // its own SSLRequest to the backend, and tokio-postgres, unlike libpq
    // 17+, does not insist on the server answering ALPN.
    for direct in [false, true] {
        tokio_postgres_cell(&tenants, &broker, direct).await;
    }
}
