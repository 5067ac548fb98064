//! `pgsni demo`: run it as a user would, then follow its printed
//! instructions with psql, connect with tokio-postgres too, and stop it with
//! Ctrl-C (SIGINT).

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use common::{free_port, rustls_client_config};

/// The printed line that ends the instructions.
const READY_LINE: &str = "Press Ctrl-C to stop.";

/// A running `pgsni demo`, killed on drop if still running.
struct Demo {
    child: Child,
    port: u16,
    metrics_port: u16,
    /// Every line printed on stdout so far.
    stdout: mpsc::Receiver<String>,
    /// What was printed before the ready line (the instructions).
    instructions: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Demo {
    fn start(extra: &[&str], within: Duration) -> Demo {
        let port = free_port();
        let metrics_port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgsni"))
            .args(["demo", "--port", &port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(extra)
            .env("RUST_LOG", "pgsni=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgsni demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Drained all along, so that the demo never blocks on a full pipe.
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut demo = Demo {
            child,
            port,
            metrics_port,
            stdout: receiver,
            instructions: Vec::new(),
            stderr,
        };
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match demo.stdout.recv_timeout(left) {
                Ok(line) if line == READY_LINE => return demo,
                Ok(line) => demo.instructions.push(line),
                Err(_) => {
                    demo.stop();
                    panic!(
                        "the demo printed no {READY_LINE:?} within {within:?}; stdout:\n{}\nstderr:\n{}",
                        demo.instructions.join("\n"),
                        demo.take_stderr()
                    );
                }
            }
        }
    }

    /// The printed psql commands that contain `needle`.
    fn psql_commands(&self, needle: &str) -> Vec<String> {
        self.instructions
            .iter()
            .map(|line| line.trim())
            .filter(|line| line.starts_with("psql ") && line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// The CA file the printed commands name.
    fn ca_path(&self) -> PathBuf {
        let command = &self.psql_commands("sslrootcert=")[0];
        let path = command
            .split("sslrootcert=")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("sslrootcert in the printed command");
        PathBuf::from(path)
    }

    /// Sends SIGINT, as Ctrl-C at a terminal does, and waits for the exit.
    fn interrupt(&mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the demo") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {within:?} of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of stream, after the last line.
        let rest = self.stdout.iter().collect();
        (status, rest)
    }

    /// Stops the demo if it still runs: SIGINT first, so that it stops the
    /// servers it started (SIGKILL would leave them running), then SIGKILL.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn take_stderr(&mut self) -> String {
        let handle = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        handle.join().unwrap_or_default()
    }

    fn metrics(&self) -> String {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to the metrics endpoint");
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: demo\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- demo stderr ---\n{}", self.take_stderr());
        }
    }
}

/// Runs a printed shell command line, with `extra` appended.
fn run_printed(command: &str, extra: &str) -> Output {
    let mut shell = Command::new("sh");
    common::postgres::without_libpq_env(&mut shell)
        .args(["-c", &format!("{command} {extra}")])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// A printed psql command with its `-c` query replaced by `sql`.
fn with_query(command: &str, sql: &str) -> String {
    let (connect, _) = command.rsplit_once(" -c ").expect("a printed query");
    format!("{connect} -c '{sql}'")
}

/// Processes whose command line mentions `path`.
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

async fn tokio_pg(
    demo: &Demo,
    tenant: &str,
    ca_pem: &[u8],
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(format!("{tenant}.demo.pgsni.test"))
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(demo.port)
        .user("demo")
        .dbname(tenant)
        // rustls verifies the certificate and the name regardless.
        .ssl_mode(SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    let tls = MakeRustlsConnect::new(rustls_client_config(ca_pem));
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("tokio-postgres connection ended: {error}");
        }
    });
    Ok(client)
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[test]
fn the_demo_works_as_printed() {
    let mut demo = Demo::start(&[], Duration::from_secs(30));
    let ca = demo.ca_path();
    let dir = ca
        .parent()
        .expect("the CA is in the demo's directory")
        .to_owned();
    assert!(ca.is_file(), "{}", ca.display());

    // The commands for both tenants, exactly as printed.
    for tenant in ["alpha", "beta"] {
        let commands = demo.psql_commands(&format!("host={tenant}.demo.pgsni.test"));
        assert_eq!(commands.len(), 1, "{:#?}", demo.instructions);
        let command = &commands[0];
        for part in [
            "hostaddr=127.0.0.1",
            &format!("port={}", demo.port),
            "sslmode=verify-full",
            "sslrootcert=",
            "-c 'SHOW tenant'",
        ] {
            assert!(command.contains(part), "{command} lacks {part}");
        }
        let out = run_printed(command, "-X -A -t");
        assert!(
            out.status.success(),
            "{command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tenant);

        let out = run_printed(
            &with_query(command, "SELECT current_database()"),
            "-X -A -t",
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tenant);
    }

    // The plaintext command is refused by the broker itself.
    let plaintext = demo.psql_commands("sslmode=disable");
    assert_eq!(plaintext.len(), 1, "{:#?}", demo.instructions);
    let out = run_printed(&plaintext[0], "-X");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL:  this server accepts only TLS connections"),
        "{stderr}"
    );

    // tokio-postgres over rustls: the simple protocol, and the extended one.
    let ca_pem = std::fs::read(&ca).expect("read the CA");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for tenant in ["alpha", "beta"] {
            let client = tokio_pg(&demo, tenant, &ca_pem).await.expect("connect");
            let rows = client
                .simple_query("SHOW tenant")
                .await
                .expect("SHOW tenant");
            assert_eq!(simple_rows(&rows), [tenant]);
            let rows = client
                .simple_query("SELECT 1; SELECT current_user")
                .await
                .unwrap();
            assert_eq!(simple_rows(&rows), ["1", "demo"]);

            let row = client.query_one("SHOW tenant", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), tenant);
            let row = client
                .query_one("SELECT current_database()", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), tenant);
            let row = client.query_one("SELECT 1", &[]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 1);

            // Anything else is an error, and the session goes on.
            let error = client.simple_query("SELECT now()").await.unwrap_err();
            let error = error.as_db_error().expect("an error from the tenant");
            assert_eq!(error.code().code(), "0A000");
            assert!(
                error.message().contains("the demo tenant only answers"),
                "{error}"
            );
            let error = client.query("DROP TABLE x", &[]).await.unwrap_err();
            assert!(error.as_db_error().is_some(), "{error:?}");
            let row = client.query_one("SELECT 1", &[]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 1);
        }
        // A name the CA did not certify is never reached.
        assert!(tokio_pg(&demo, "gamma", &ca_pem).await.is_err());
    });

    let metrics = demo.metrics();
    assert!(metrics.contains("pgsni_connections_total{outcome=\"routed\"}"));
    assert!(metrics.contains("pgsni_connections_total{outcome=\"plaintext_refused\"} 1"));

    let (status, rest) = demo.interrupt(Duration::from_secs(15));
    assert!(status.success(), "the demo exited with {status}");
    assert!(
        rest.iter().any(|line| line.contains("stopped")),
        "{rest:#?}"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
}

#[test]
fn a_taken_port_is_refused_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsni"))
        .args(["demo", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run pgsni demo");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot use 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("--port"), "{stderr}");
}

#[test]
fn the_demo_with_real_postgres() {
    let mut demo = Demo::start(&["--postgres"], Duration::from_secs(120));
    let ca = demo.ca_path();
    let dir = ca.parent().unwrap().to_owned();
    for tenant in ["alpha", "beta"] {
        let commands = demo.psql_commands(&format!("host={tenant}.demo.pgsni.test"));
        assert_eq!(commands.len(), 1, "{:#?}", demo.instructions);
        assert!(commands[0].ends_with("-c 'SHOW cluster_name'"));
        let out = run_printed(&commands[0], "-X -A -t");
        assert!(
            out.status.success(),
            "{}\n{}",
            commands[0],
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tenant);
        let ssl = with_query(
            &commands[0],
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        let out = run_printed(&ssl, "-X -A -t");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }
    let plaintext = demo.psql_commands("sslmode=disable");
    let out = run_printed(&plaintext[0], "-X");
    assert!(String::from_utf8_lossy(&out.stderr).contains("accepts only TLS connections"));
    assert!(!processes_mentioning(&dir).is_empty(), "the clusters run");

    let (status, _) = demo.interrupt(Duration::from_secs(60));
    assert!(status.success(), "the demo exited with {status}");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
}
