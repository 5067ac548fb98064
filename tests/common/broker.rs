//! The real `pgsni` binary, started for one test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The log filter tests run the broker with: every refusal is logged.
const DEBUG_LOG: &str = "pgsni=debug";

/// A running `pgsni serve`, killed on drop. Its log goes to a file that tests
/// may read.
pub struct Broker {
    child: Child,
    /// Where Postgres clients connect.
    pub port: u16,
    /// Where `GET /metrics` is served.
    pub metrics_port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Writes `routes` to a fresh routes file and starts the broker on it.
    pub fn start(routes: &str) -> Broker {
        Self::start_with(routes, &[])
    }

    /// Like [`Broker::start`], with extra `serve` arguments.
    pub fn start_with(routes: &str, extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let routes_path = dir.path().join("routes.toml");
        std::fs::write(&routes_path, routes).expect("write routes file");
        Self::spawn(dir, &routes_path, extra)
    }

    /// Like [`Broker::start_with`], logging with the `RUST_LOG` filter
    /// `filter` instead of `pgsni=debug` (what an operator would run).
    pub fn start_logging(routes: &str, extra: &[&str], filter: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let routes_path = dir.path().join("routes.toml");
        std::fs::write(&routes_path, routes).expect("write routes file");
        Self::launch_as(None, None, dir, &routes_path, extra, filter)
    }

    /// Like [`Broker::start_with`], but when the tests run as root the broker
    /// runs as an unprivileged user (uid and gid 65534), which can read none
    /// of the test PKI's keys (mode 0600, owned by `postgres`).
    pub fn start_unprivileged(routes: &str, extra: &[&str]) -> Broker {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let routes_path = dir.path().join("routes.toml");
        std::fs::write(&routes_path, routes).expect("write routes file");
        let readable = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("make the routes file readable")
        };
        readable(dir.path(), 0o755);
        readable(&routes_path, 0o644);
        let wrapper = super::os::is_root().then_some(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ][..],
        );
        Self::launch_as(wrapper, None, dir, &routes_path, extra, DEBUG_LOG)
    }

    /// Starts the broker on an existing routes file path inside `dir`.
    pub fn spawn(dir: tempfile::TempDir, routes_path: &Path, extra: &[&str]) -> Broker {
        Self::launch(None, dir, routes_path, extra)
    }

    /// Like [`Broker::spawn`], on a given client port (which another broker
    /// may share through `SO_REUSEPORT`).
    pub fn spawn_on(
        port: u16,
        dir: tempfile::TempDir,
        routes_path: &Path,
        extra: &[&str],
    ) -> Broker {
        Self::launch(Some(port), dir, routes_path, extra)
    }

    fn launch(
        port: Option<u16>,
        dir: tempfile::TempDir,
        routes_path: &Path,
        extra: &[&str],
    ) -> Broker {
        Self::launch_as(None, port, dir, routes_path, extra, DEBUG_LOG)
    }

    /// Starts the broker, through `wrapper` (a command that runs its last
    /// argument, such as `setpriv ... --`) when given.
    fn launch_as(
        wrapper: Option<&[&str]>,
        port: Option<u16>,
        dir: tempfile::TempDir,
        routes_path: &Path,
        extra: &[&str],
        log_filter: &str,
    ) -> Broker {
        // The broker picks its own free ports (port 0) and the test reads
        // them from its log: ports found free beforehand could be taken by a
        // parallel test, and with SO_REUSEPORT two brokers would then share
        // one silently.
        let log_path = dir.path().join("pgsni.log");
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut command = match wrapper {
            Some([program, args @ ..]) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_pgsni"));
                command
            }
            _ => Command::new(env!("CARGO_BIN_EXE_pgsni")),
        };
        let mut child = command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", port.unwrap_or(0))])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .arg("--routes")
            .arg(routes_path)
            .args(extra)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the pgsni binary");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("poll pgsni") {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("pgsni exited early with {status}:\n{log}");
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let ports = (
                logged_port(&log, "accepting Postgres clients"),
                logged_port(&log, "metrics and health endpoint listening"),
            );
            if let (Some(port), Some(metrics_port)) = ports {
                if probe(metrics_port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                    return Broker {
                        child,
                        port,
                        metrics_port,
                        dir,
                    };
                }
            }
            assert!(
                Instant::now() < deadline,
                "pgsni did not become ready:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The routes file the broker watches.
    pub fn routes_path(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// The broker's working directory (holds the routes file and the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client address to connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgsni.log")).unwrap_or_default()
    }

    /// The Prometheus exposition text.
    pub fn metrics(&self) -> String {
        let response = self.http_get("/metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The whole HTTP response to `GET path` on the metrics port.
    pub fn http_get(&self, path: &str) -> String {
        probe(self.metrics_port, path).expect("the metrics endpoint answers")
    }

    /// Waits for the process to exit on its own and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll pgsni") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pgsni did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of the sample named exactly `series` (name and labels as
    /// rendered, e.g. `pgsni_connections_total{outcome="routed"}`), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().expect("numeric sample"))
            })
            .unwrap_or(0.0)
    }

    /// Polls until `series` reaches at least `value`, or panics after `within`.
    pub fn wait_for_metric(&self, series: &str, value: f64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(series) < value {
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {value}:\n{}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the broker process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pgsni log ---\n{}", self.log());
        }
    }
}

/// The port in the `addr` field of the first JSON log line whose message is
/// `message`.
fn logged_port(log: &str, message: &str) -> Option<u16> {
    let line = log
        .lines()
        .find(|line| line.contains(&format!("\"message\":\"{message}\"")))?;
    let addr = line.split("\"addr\":\"").nth(1)?.split('"').next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

/// `GET path` on 127.0.0.1:`port`, or `None` if nothing answers.
fn probe(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: pgsni\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// A routes file with one exact route per `(server_name, backend)` pair.
pub fn routes_toml(routes: &[(&str, &str)]) -> String {
    routes
        .iter()
        .map(|(name, backend)| {
            format!("[[route]]\nserver_name = \"{name}\"\nbackends = [\"{backend}\"]\n\n")
        })
        .collect()
}
