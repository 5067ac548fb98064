//! Real PostgreSQL tenant servers for integration tests, and client helpers.
//!
//! # Binaries
//!
//! Server binaries come from `$PGSNI_PG_BINDIR` if set, else
//! `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`;
//! [`PgCluster::start_with_bindir`] takes another server's bindir (e.g. a
//! PostgreSQL 18 next to the suite's 15). The `psql` client used by [`psql`]
//! is the one on `PATH`.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root, so when the tests run with euid 0 every
//! server-side command (`initdb`, `postgres`) runs as the `postgres` OS user
//! via `runuser`, in directories owned by that user.
//!
//! # Template cache
//!
//! `initdb` takes a second or two, so it runs at most once per machine and
//! configuration: the initialised data directory is kept at
//! `$TMPDIR/pgsni-pg-template-<hash>/data`, where the hash covers the server
//! version, the bindir, the `initdb` options, the password and the owner uid
//! (so servers from different bindirs get different templates).
//! It is built in a private staging directory and published with an atomic
//! `rename`, so concurrent test processes either reuse a complete template or
//! race to publish identical ones (the loser discards its copy). A template
//! that fails validation (e.g. half-removed by a tmp cleaner) is moved aside
//! and rebuilt. Within one process each bindir's template is resolved once.
//! Each [`PgCluster`] then copies it with `cp -a` and writes its own
//! `postgresql.conf` additions, `pg_hba.conf`, certificate and key.
//! `rm -rf $TMPDIR/pgsni-pg-template-*` clears the cache.
//!
//! # Clean-up
//!
//! The postmaster is a child of the test process (directly, or under
//! `runuser`), not daemonised by `pg_ctl`, so it is reaped and leaves no
//! zombie behind (this machine's PID 1 does not reap orphans). [`PgCluster`]
//! stops it (`SIGQUIT` = immediate shutdown, then `SIGKILL` if needed) and
//! removes its directory on drop, which also runs when a test panics. A detached watchdog shell per cluster covers the cases where drop
//! never runs (the test process is killed or aborts): once the test process is
//! gone it sends the postmaster `SIGQUIT` and removes the directory.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::config::{SslMode, SslNegotiation};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::certs::{root_store_from_pem, LeafFiles};
use super::os;

/// The superuser every tenant cluster has.
pub const PG_USER: &str = "postgres";
/// The password of [`PG_USER`] on every tenant cluster.
pub const PG_PASSWORD: &str = "pgsni-test";

/// Bumped whenever the template's contents change in a way the hash below
/// does not capture.
const TEMPLATE_FORMAT: u32 = 1;

/// Options given to `initdb` for the template.
const INITDB_ARGS: &[&str] = &[
    "--encoding=UTF8",
    "--locale=C",
    "--username=postgres",
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "--no-sync",
];

/// How long to wait for a server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server in its own directory, listening on 127.0.0.1
/// at a free port, with TLS on (or off: [`PgCluster::start_plaintext`]).
///
/// Stopped (immediate mode) and deleted on drop.
pub struct PgCluster {
    name: String,
    port: u16,
    /// The directory of the server binaries this cluster runs.
    bindir: PathBuf,
    base: PathBuf,
    postmaster: Option<Child>,
    watchdog: Option<Child>,
}

impl PgCluster {
    /// Starts a cluster named `name` (ASCII letters, digits, `_` and `-`)
    /// serving `leaf` as its TLS certificate.
    ///
    /// The server has `cluster_name = '<name>'`, a database called `<name>`,
    /// superuser [`PG_USER`] with password [`PG_PASSWORD`], and a `pg_hba.conf`
    /// allowing only TLS (scram-sha-256) over TCP and trust over its unix
    /// socket. Panics with the server log if it does not come up.
    pub fn start(name: &str, leaf: &LeafFiles) -> PgCluster {
        Self::start_with_bindir(name, leaf, bindir())
    }

    /// Like [`PgCluster::start`], running the server binaries (`initdb`,
    /// `postgres`) found in `bindir` instead of the suite's default ones.
    /// [`PgCluster::psql_local`] still uses the default bindir's `psql`,
    /// which talks to newer servers over the unix socket just as well.
    pub fn start_with_bindir(name: &str, leaf: &LeafFiles, bindir: &Path) -> PgCluster {
        Self::start_inner(name, Some(leaf), bindir)
    }

    /// A cluster with TLS off, as a backend on a private network would be:
    /// like [`PgCluster::start`], but its `pg_hba.conf` takes plaintext
    /// (`host`, scram-sha-256) connections from 127.0.0.1, and trust over
    /// its unix socket ([`PgCluster::unix_socket`]).
    pub fn start_plaintext(name: &str) -> PgCluster {
        Self::start_inner(name, None, bindir())
    }

    fn start_inner(name: &str, leaf: Option<&LeafFiles>, bindir: &Path) -> PgCluster {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "invalid cluster name {name:?}"
        );
        assert!(
            bindir.join("postgres").is_file() && bindir.join("initdb").is_file(),
            "{} has no postgres/initdb binaries",
            bindir.display()
        );
        let template = template_data_dir(bindir);

        // Keep the path short: the socket path must fit in 107 bytes.
        let short: String = name.chars().take(16).collect();
        let base = tempfile::Builder::new()
            .prefix(&format!("pgsni-test-{short}-"))
            .tempdir()
            .expect("create cluster dir")
            .keep();
        // From here on, a panic drops `cluster`, which cleans up.
        let mut cluster = PgCluster {
            name: name.to_string(),
            port: 0,
            bindir: bindir.to_path_buf(),
            base,
            postmaster: None,
            watchdog: None,
        };
        give_to_server_user(&cluster.base, 0o755);
        cluster.watchdog = spawn_watchdog(&cluster.base);

        let data = cluster.data_dir();
        let out = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("run cp");
        check(&out, "cp -a template data dir");

        let sock = cluster.socket_dir();
        fs::create_dir(&sock).expect("create socket dir");
        give_to_server_user(&sock, 0o755);

        let (hba, ssl) = match leaf {
            Some(leaf) => {
                write_server_file(&data.join("server.crt"), &leaf.cert_pem, 0o644);
                write_server_file(&data.join("server.key"), &leaf.key_pem, 0o600);
                (
                    "hostssl all  all  127.0.0.1/32   scram-sha-256\n\
                     host    all  all  127.0.0.1/32   reject\n",
                    "ssl = on\n\
                     ssl_cert_file = 'server.crt'\n\
                     ssl_key_file = 'server.key'\n\
                     ssl_min_protocol_version = 'TLSv1.2'\n",
                )
            }
            None => (
                "host    all  all  127.0.0.1/32   scram-sha-256\n",
                "ssl = off\n",
            ),
        };
        write_server_file(
            &data.join("pg_hba.conf"),
            &format!(
                "# written by the pgsni test harness\n\
                 local   all  all                 trust\n{hba}"
            ),
            0o600,
        );
        let conf = format!(
            "\n# added by the pgsni test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 100\n\
             shared_buffers = 16MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             autovacuum = off\n\
             {ssl}\
             password_encryption = 'scram-sha-256'\n\
             cluster_name = '{name}'\n\
             lc_messages = 'C'\n\
             log_connections = on\n\
             logging_collector = off\n",
            sock = conf_escape(&sock.to_string_lossy()),
        );
        append(&data.join("postgresql.conf"), &conf);

        cluster.boot();
        cluster.psql_local(&format!("CREATE DATABASE \"{name}\""));
        cluster
    }

    /// Picks a free port and starts the server, retrying a few times when
    /// another process grabbed the port in between.
    fn boot(&mut self) {
        let conf = self.data_dir().join("postgresql.conf");
        for _attempt in 0..5 {
            self.port = free_port();
            append(&conf, &format!("port = {}\n", self.port));
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open server log");
            give_to_server_user(&self.log_path(), 0o644);
            let child = pg_cmd(&self.bindir, "postgres")
                .arg("-D")
                .arg(self.data_dir())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            self.postmaster = Some(child);
            let Err(reason) = self.wait_ready() else {
                return;
            };
            let log = self.log_contents();
            // Make sure nothing half-started stays around before retrying.
            self.stop();
            let port_taken =
                log.contains("could not bind") || log.contains("Address already in use");
            if !port_taken {
                panic!(
                    "PostgreSQL cluster {:?} failed to start on port {}: {reason}\n\
                     server log ({}):\n{log}",
                    self.name,
                    self.port,
                    self.log_path().display(),
                );
            }
        }
        panic!(
            "PostgreSQL cluster {:?} could not get a free port after 5 attempts\n\
             server log:\n{}",
            self.name,
            self.log_contents()
        );
    }

    /// Waits until the postmaster reports `ready` in its pid file (what
    /// `pg_ctl -w` checks), failing early if it exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.postmaster.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the server exited ({status})"));
                }
            }
            let pidfile = fs::read_to_string(self.data_dir().join("postmaster.pid"));
            // Line 8 is the postmaster status (LOCK_FILE_LINE_PM_STATUS).
            if pidfile.is_ok_and(|text| text.lines().nth(7).map(str::trim) == Some("ready")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's name (its `cluster_name` setting and extra database).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.base.join("sock")
    }

    /// The server's unix socket itself (in [`PgCluster::socket_dir`]).
    pub fn unix_socket(&self) -> PathBuf {
        self.socket_dir().join(format!(".s.PGSQL.{}", self.port))
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    /// The path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.base.join("postgres.log")
    }

    /// Everything the server has logged so far (empty if nothing yet).
    pub fn log_contents(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs `sql` with psql over the unix socket as [`PG_USER`] in database
    /// `postgres`; returns trimmed stdout (unaligned, tuples only). Panics with
    /// stderr on failure.
    pub fn psql_local(&self, sql: &str) -> String {
        self.psql_local_in("postgres", sql)
    }

    /// Like [`PgCluster::psql_local`], in database `dbname`.
    pub fn psql_local_in(&self, dbname: &str, sql: &str) -> String {
        let mut cmd = Command::new(bindir().join("psql"));
        without_libpq_env(&mut cmd);
        let out = cmd
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", PG_USER, "-d", dbname])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if !out.status.success() {
            panic!(
                "psql over the unix socket of {:?} failed for {sql:?}\nstderr:\n{}\nstdout:\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether the postmaster is currently running.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// Stops the server at once (`SIGQUIT`, i.e. immediate shutdown, then
    /// `SIGKILL` if it is still there after 10 s) and reaps it. Idempotent;
    /// the directory stays until drop.
    pub fn stop(&mut self) {
        if let Some(pid) = self.postmaster_pid().filter(|&pid| process_alive(pid)) {
            signal(pid, "QUIT");
            if !wait_gone(pid, Duration::from_secs(10)) {
                signal(pid, "KILL");
                if !wait_gone(pid, Duration::from_secs(5)) {
                    eprintln!(
                        "pgsni harness: postmaster {pid} of {:?} won't die",
                        self.name
                    );
                }
            }
        }
        if let Some(mut child) = self.postmaster.take() {
            // `child` is the postmaster itself, or `runuser` waiting for it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.data_dir().join("postmaster.pid"));
    }

    /// The postmaster's pid, from `postmaster.pid` (`None` when stopped).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Err(e) = fs::remove_dir_all(&self.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("pgsni harness: cannot remove {}: {e}", self.base.display());
            }
        }
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port
/// 0, read back, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Removes every `PG*` variable of this process's environment from `cmd`'s
/// (libpq's `PGHOST`, `PGSSLMODE`, `PGPASSFILE`, …), so that a client does
/// only what its command line says.
pub fn without_libpq_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs the `psql` client from `PATH` with `-X -A -t -c sql` against
/// `conninfo`, with `PGPASSWORD` = [`PG_PASSWORD`] and `PGCONNECT_TIMEOUT=10`,
/// and returns its raw output for the test to assert on.
pub fn psql(conninfo: &str, sql: &str) -> Output {
    let mut cmd = Command::new("psql");
    without_libpq_env(&mut cmd);
    cmd.env("PGPASSWORD", PG_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-A", "-t", "-c", sql, "-d", conninfo])
        .stdin(Stdio::null())
        .output()
        .expect("run psql (is the PostgreSQL client installed?)")
}

/// A libpq conninfo string that connects to 127.0.0.1:`port` while naming
/// `host_name` (used for SNI and certificate verification), as [`PG_USER`] to
/// database `postgres`, with `sslmode` and the CA file `ca`.
pub fn tenant_conninfo(host_name: &str, port: u16, ca: &Path, sslmode: &str) -> String {
    format!(
        "host={} hostaddr=127.0.0.1 port={port} user={PG_USER} dbname=postgres sslmode={} sslrootcert={}",
        conninfo_quote(host_name),
        conninfo_quote(sslmode),
        conninfo_quote(&ca.to_string_lossy()),
    )
}

/// A rustls client configuration (ring provider) trusting only the CAs in
/// `ca_pem`, with ALPN `postgresql` (required for direct TLS).
pub fn rustls_client_config(ca_pem: &[u8]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(root_store_from_pem(ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    config
}

/// A tokio-postgres configuration for 127.0.0.1:`port` naming `host_name`,
/// as [`PG_USER`]/[`PG_PASSWORD`] to database `postgres`, `sslmode=require`
/// (the certificate is still verified by rustls), and direct TLS negotiation
/// when `direct`.
pub fn tokio_pg_config(host_name: &str, port: u16, direct: bool) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host_name)
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(port)
        .user(PG_USER)
        .password(PG_PASSWORD)
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    if direct {
        config.ssl_negotiation(SslNegotiation::Direct);
    }
    config
}

/// Connects with tokio-postgres over rustls (see [`tokio_pg_config`] and
/// [`rustls_client_config`]); the server certificate must chain to `ca_pem`
/// and match `host_name`. The connection task is spawned on the current
/// tokio runtime.
pub async fn tokio_pg_connect(
    host_name: &str,
    port: u16,
    ca_pem: &[u8],
    direct: bool,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = MakeRustlsConnect::new(rustls_client_config(ca_pem));
    let (client, connection) = tokio_pg_config(host_name, port, direct)
        .connect(tls)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("pgsni harness: tokio-postgres connection ended with: {e}");
        }
    });
    Ok(client)
}

// ---------------------------------------------------------------------------
// Binaries and commands
// ---------------------------------------------------------------------------

/// The path of PostgreSQL binary `name` (e.g. `pgbench`, `pg_ctl`) in the
/// server's bindir (see the module docs for how it is found).
pub fn pg_bin(name: &str) -> PathBuf {
    bindir().join(name)
}

/// The directory of the PostgreSQL server binaries.
fn bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PGSNI_PG_BINDIR").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("postgres").is_file(),
                "PGSNI_PG_BINDIR={} has no postgres binary",
                dir.display()
            );
            return dir;
        }
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").is_file() {
            return debian;
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && dir.join("postgres").is_file() {
                return dir;
            }
        }
        panic!(
            "PostgreSQL server binaries not found (tried $PGSNI_PG_BINDIR, \
             /usr/lib/postgresql/15/bin, pg_config --bindir); \
             run scripts/install-test-deps.sh"
        );
    })
}

/// A command running server binary `program` from `bindir`, as the
/// `postgres` user when the tests run as root.
fn pg_cmd(bindir: &Path, program: &str) -> Command {
    let exe = bindir.join(program);
    let mut cmd = if os::is_root() {
        assert!(
            os::postgres_ids().is_some(),
            "running as root but there is no `postgres` OS user; run scripts/install-test-deps.sh"
        );
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // A working directory the server user can enter, and C messages.
    cmd.current_dir(std::env::temp_dir())
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    cmd
}

/// Panics with the command's output unless it succeeded.
fn check(out: &Output, what: &str) {
    if !out.status.success() {
        panic!(
            "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// Template data directory
// ---------------------------------------------------------------------------

/// The shared, initdb'd template data directory for the server in `bindir`
/// (built on first use).
fn template_data_dir(bindir: &Path) -> PathBuf {
    static TEMPLATES: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held while building, so that one process builds each template once.
    let mut templates = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
    templates
        .entry(bindir.to_path_buf())
        .or_insert_with(|| build_or_reuse_template(bindir))
        .clone()
}

/// The uid that owns server files: `postgres` when root, else ourselves.
fn server_uid() -> u32 {
    if os::is_root() {
        os::postgres_ids().map_or(0, |(uid, _)| uid)
    } else {
        os::effective_uid()
    }
}

fn build_or_reuse_template(bindir: &Path) -> PathBuf {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .expect("run postgres --version");
    check(&out, "postgres --version");
    let mut hasher = DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    out.stdout.hash(&mut hasher);
    bindir.hash(&mut hasher);
    INITDB_ARGS.hash(&mut hasher);
    PG_PASSWORD.hash(&mut hasher);
    server_uid().hash(&mut hasher);
    let name = format!("pgsni-pg-template-{:016x}", hasher.finish());
    let tmp = std::env::temp_dir();
    let published = tmp.join(&name);

    for attempt in 0..5 {
        if template_ok(&published) {
            return published.join("data");
        }
        if published.exists() {
            // Broken or foreign: move it aside (atomically) and rebuild.
            let trash = tmp.join(format!("{name}.broken-{}-{attempt}", std::process::id()));
            if fs::rename(&published, &trash).is_ok() {
                let _ = fs::remove_dir_all(&trash);
            }
            continue;
        }

        let staging = tempfile::Builder::new()
            .prefix(&format!("{name}.staging-"))
            .tempdir_in(&tmp)
            .expect("create template staging dir");
        give_to_server_user(staging.path(), 0o755);
        let pwfile = staging.path().join("pwfile");
        write_server_file(&pwfile, &format!("{PG_PASSWORD}\n"), 0o600);
        let out = pg_cmd(bindir, "initdb")
            .arg("-D")
            .arg(staging.path().join("data"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(INITDB_ARGS)
            .output()
            .expect("run initdb");
        check(&out, "initdb");
        fs::remove_file(&pwfile).expect("remove pwfile");
        fs::write(staging.path().join("complete"), "ok\n").expect("write template marker");

        if fs::rename(staging.path(), &published).is_ok() {
            let _ = staging.keep();
            return published.join("data");
        }
        // Another process published first; drop ours and use theirs.
    }
    panic!(
        "could not build or reuse the PostgreSQL template at {}",
        published.display()
    );
}

/// Whether `dir` holds a complete template owned by the server user.
fn template_ok(dir: &Path) -> bool {
    let owned = fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == server_uid());
    owned
        && dir.join("complete").is_file()
        && dir.join("data/PG_VERSION").is_file()
        && dir.join("data/global/pg_control").is_file()
        && dir.join("data/postgresql.conf").is_file()
        && dir.join("data/pg_hba.conf").is_file()
        && !dir.join("data/postmaster.pid").exists()
}

// ---------------------------------------------------------------------------
// Files, processes
// ---------------------------------------------------------------------------

/// Sets `mode` on `path` and, when root, hands it to the `postgres` user.
fn give_to_server_user(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if os::is_root() {
        let (uid, gid) = os::postgres_ids().expect(
            "running as root but there is no `postgres` OS user; run scripts/install-test-deps.sh",
        );
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Writes a file the server will read, with `mode`, owned by the server user.
fn write_server_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    give_to_server_user(path, mode);
}

/// Appends `text` to the file at `path` (ownership unchanged).
fn append(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn conf_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Quotes a conninfo value when it needs it.
fn conninfo_quote(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '\t', '\n']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Sends `SIG<name>` to `pid` with kill(1), ignoring failures.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live (non-zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits up to `timeout` for `pid` to exit; returns whether it did.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Starts a detached shell that, once this test process is gone, stops the
/// cluster's postmaster (SIGQUIT = immediate shutdown, then SIGKILL) and
/// removes `base`. Killed by [`PgCluster`]'s drop in the normal case.
fn spawn_watchdog(base: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pidfile="$2/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    if [ -n "$pid" ]; then
        kill -QUIT "$pid" 2>/dev/null
        i=0
        while [ "$i" -lt 100 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null
    fi
fi
rm -rf "$2"
"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "pgsni-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group: a Ctrl-C aimed at `cargo test` must not kill it.
        .process_group(0)
        .spawn()
        .map_err(|e| eprintln!("pgsni harness: no watchdog for {}: {e}", base.display()))
        .ok()
}

/// Waits until `cluster` runs a query containing `needle`; returns its pid.
pub fn wait_for_running_query(cluster: &PgCluster, needle: &str) -> i32 {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{needle}%' \
         AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(pid) = cluster.psql_local(&sql).parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "{needle} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts psql running `SELECT pg_sleep(30)` through `conninfo` and waits
/// until `cluster` runs it: the psql process, and the query's backend pid.
pub fn start_sleeping_psql(conninfo: &str, cluster: &PgCluster) -> (Child, i32) {
    let sleeper = Command::new("psql")
        .args(["-X", "-c", "SELECT pg_sleep(30)", "-d", conninfo])
        .env("PGPASSWORD", PG_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start psql");
    let pid = wait_for_running_query(cluster, "pg_sleep(30)");
    (sleeper, pid)
}

/// Presses Ctrl-C in `psql` (SIGINT: it sends a plaintext CancelRequest)
/// and waits up to 5 s for it to exit: its status, its stderr, and how
/// long the cancel took.
pub fn interrupt_psql(mut psql: Child) -> (std::process::ExitStatus, String, Duration) {
    let interrupted = Instant::now();
    signal(psql.id(), "INT");
    let exit = loop {
        if let Some(exit) = psql.try_wait().expect("poll psql") {
            break exit;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(5),
            "psql still running after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = interrupted.elapsed();
    let mut stderr = String::new();
    if let Some(mut pipe) = psql.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read psql's stderr");
    }
    (exit, stderr, took)
}
