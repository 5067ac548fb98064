//! Real PostgreSQL tenants for `pgsni demo --postgres`.
//!
//! Each tenant is a throw-away cluster in the demo's directory: `initdb`
//! with trust authentication, TLS on with the tenant's certificate, a
//! `pg_hba.conf` that admits only TLS sessions from 127.0.0.1, no Unix
//! socket, and a database named after the tenant. PostgreSQL refuses to run
//! as root, so when the demo runs as root the server commands run as the
//! `postgres` user (through `runuser`) on files handed to that user.
//!
//! The postmaster is a child of the demo (not daemonised by `pg_ctl`), so
//! that it is reaped when it exits, in its own process group, so that a
//! Ctrl-C at the terminal reaches the demo alone: the demo stops the broker
//! first, then each cluster (fast shutdown) when its [`Cluster`] is dropped.
//!
//! A demo killed outright (SIGKILL) cannot stop its clusters; they then
//! run on until stopped by hand (`kill -INT` on the pid in each
//! `data/postmaster.pid`).
//!
//! Everything here blocks; the demo runs it on the blocking thread pool.

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// How long a cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the cluster is shut down
/// immediately.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a PostgreSQL tenant could not be started.
#[derive(Debug, Error)]
pub enum PostgresError {
    /// No server binaries were found.
    #[error(
        "--postgres needs the PostgreSQL server binaries (initdb, postgres), \
         found neither in /usr/lib/postgresql/*/bin nor via `pg_config --bindir`; \
         install them, or run the demo without --postgres"
    )]
    NotInstalled,
    /// Running as root, but there is no user to run the server as.
    #[error("running as root, but there is no `postgres` user to run the server as")]
    NoServerUser,
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        /// The command.
        what: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed.
        output: String,
    },
    /// The server did not come up.
    #[error("PostgreSQL for tenant {name} did not start: {reason}\nserver log:\n{log}")]
    NotReady {
        /// The tenant.
        name: String,
        /// Why it is considered failed.
        reason: String,
        /// The server's log.
        log: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let what = what.into();
    move |source| PostgresError::Io { what, source }
}

/// The PostgreSQL server binaries and the user that runs them.
#[derive(Clone, Debug)]
pub struct Installation {
    bindir: PathBuf,
    /// The `postgres` user's uid and gid, when running as root.
    run_as: Option<(u32, u32)>,
}

impl Installation {
    /// Finds the server binaries: the newest `/usr/lib/postgresql/*/bin`
    /// (Debian's layout), else `pg_config --bindir`.
    pub fn find() -> Result<Self, PostgresError> {
        let has_server =
            |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_server(bin))
            .collect();
        versions.sort();
        let bindir = match versions.pop() {
            Some((_, bin)) => bin,
            None => Command::new("pg_config")
                .arg("--bindir")
                .stdin(Stdio::null())
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
                .filter(|dir| has_server(dir))
                .ok_or(PostgresError::NotInstalled)?,
        };
        let run_as = if effective_uid() == Some(0) {
            Some(postgres_user().ok_or(PostgresError::NoServerUser)?)
        } else {
            None
        };
        Ok(Self { bindir, run_as })
    }

    /// Where the binaries are.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Whether directories the server must enter need to be opened up to
    /// another user.
    pub fn runs_as_other_user(&self) -> bool {
        self.run_as.is_some()
    }

    /// A command running server program `program` as the server user.
    fn server_command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        let mut command = if self.run_as.is_some() {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(exe);
            runuser
        } else {
            Command::new(exe)
        };
        // A working directory the server user may enter, and messages
        // that do not depend on the caller's locale.
        command
            .current_dir("/")
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        command
    }

    /// Hands `path` to the server user (when running as root) with `mode`.
    fn give(&self, path: &Path, mode: u32) -> Result<(), PostgresError> {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(format!(
            "cannot set the mode of {}",
            path.display()
        )))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error(format!(
                "cannot hand {} to postgres",
                path.display()
            )))?;
        }
        Ok(())
    }

    /// Writes a file the server reads.
    fn write(&self, path: &Path, contents: &str, mode: u32) -> Result<(), PostgresError> {
        fs::write(path, contents).map_err(io_error(format!("cannot write {}", path.display())))?;
        self.give(path, mode)
    }
}

/// A running tenant cluster; stopped when dropped.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    port: u16,
    base: PathBuf,
    postmaster: Option<Child>,
}

/// What a tenant cluster is made of.
#[derive(Clone, Copy, Debug)]
pub struct ClusterSpec<'a> {
    /// The tenant's name: its `cluster_name` and its database.
    pub name: &'a str,
    /// The superuser, which every client may log in as (trust).
    pub user: &'a str,
    /// The tenant's certificate (PEM).
    pub cert_pem: &'a str,
    /// The tenant's private key (PEM).
    pub key_pem: &'a str,
    /// The CA certificate, which the demo's own client (`createdb`)
    /// verifies the server against.
    pub ca_file: &'a Path,
}

impl Cluster {
    /// Creates and starts a cluster under `base` (which must not exist yet).
    pub fn start(
        installation: &Installation,
        base: &Path,
        spec: ClusterSpec<'_>,
    ) -> Result<Self, PostgresError> {
        fs::create_dir(base).map_err(io_error(format!("cannot create {}", base.display())))?;
        installation.give(base, 0o700)?;
        let data = base.join("data");
        let out = installation
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["--username", spec.user, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync"])
            .output()
            .map_err(io_error("cannot run initdb"))?;
        check(&out, "initdb")?;

        installation.write(&data.join("server.crt"), spec.cert_pem, 0o644)?;
        installation.write(&data.join("server.key"), spec.key_pem, 0o600)?;
        installation.write(
            &data.join("pg_hba.conf"),
            "# TLS sessions from this machine only; the demo trusts every user.\n\
             hostssl all all 127.0.0.1/32 trust\n",
            0o600,
        )?;
        let port = free_port()?;
        let conf = format!(
            "\n# pgsni demo tenant\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = ''\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             cluster_name = '{name}'\n\
             max_connections = 20\n\
             shared_buffers = 16MB\n\
             fsync = off\n\
             logging_collector = off\n",
            name = spec.name,
        );
        let conf_path = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .map_err(io_error(format!("cannot write {}", conf_path.display())))?;

        let log_path = base.join("postgres.log");
        let log = fs::File::create(&log_path)
            .map_err(io_error(format!("cannot create {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("cannot duplicate the log file"))?;
        let postmaster = installation
            .server_command("postgres")
            .arg("-D")
            .arg(&data)
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(io_error("cannot start postgres"))?;
        // From here on, dropping `cluster` stops the server.
        let mut cluster = Self {
            name: spec.name.to_owned(),
            port,
            base: base.to_owned(),
            postmaster: Some(postmaster),
        };
        cluster.wait_ready()?;

        let out = Command::new(installation.bindir().join("createdb"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--username", spec.user, spec.name])
            .env("PGSSLMODE", "verify-ca")
            .env("PGSSLROOTCERT", spec.ca_file)
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("cannot run createdb"))?;
        check(&out, "createdb")?;
        Ok(cluster)
    }

    /// The port the cluster listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn pid_file(&self) -> PathBuf {
        self.base.join("data/postmaster.pid")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.base.join("postgres.log")).unwrap_or_default()
    }

    /// Waits until the postmaster reports itself ready in its pid file
    /// (what `pg_ctl -w` checks), or fails if it exits first.
    fn wait_ready(&mut self) -> Result<(), PostgresError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.postmaster.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("the server exited ({status})")),
                Some(Err(error)) => Some(error.to_string()),
                None => Some("the server is not running".to_owned()),
            };
            let reason = if let Some(reason) = exited {
                reason
            } else if fs::read_to_string(self.pid_file())
                // Line 8 is the postmaster's status.
                .is_ok_and(|text| text.lines().nth(7).map(str::trim) == Some("ready"))
            {
                return Ok(());
            } else if Instant::now() >= deadline {
                format!("not ready after {START_TIMEOUT:?}")
            } else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            return Err(PostgresError::NotReady {
                name: self.name.clone(),
                reason,
                log: self.log(),
            });
        }
    }

    /// Stops the server: a fast shutdown (clients are disconnected), then an
    /// immediate one if that takes too long. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        // `child` is the postmaster, or `runuser` waiting for it; the
        // postmaster's own pid is in its pid file.
        let pid = fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        for signal in ["INT", "QUIT"] {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            if let Some(pid) = pid {
                let _ = Command::new("kill")
                    .args([&format!("-{signal}"), &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails with the command's output unless it succeeded.
fn check(out: &Output, what: &str) -> Result<(), PostgresError> {
    if out.status.success() {
        return Ok(());
    }
    Err(PostgresError::Command {
        what: what.to_owned(),
        status: out.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, PostgresError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("cannot find a free port"))
}

/// This process's effective uid, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    // Real, effective, saved, file system.
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}
