//! `pgsni demo`: the broker in front of two TLS tenants, on this machine,
//! with nothing to install.
//!
//! In a fresh temporary directory the demo creates a CA and a certificate
//! for each tenant ([`crate::certs`]), starts the tenants, writes a routes
//! file, and runs the real broker ([`crate::cli::serve`]) on
//! `127.0.0.1:6432`. It then prints the psql commands that reach each
//! tenant through the broker with full certificate verification, and one
//! that shows a plaintext session being refused, and serves until Ctrl-C.
//!
//! The tenants are embedded ([`tenant`]): small servers that terminate TLS
//! with their own certificate and answer a few queries. With `--postgres`
//! they are two real PostgreSQL clusters instead ([`postgres`]).
//!
//! As everywhere, the broker never sees a tenant's key or plaintext: it
//! reads the server name from the ClientHello and forwards the bytes.

pub mod postgres;
pub mod tenant;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser};
use tokio::sync::watch;

use crate::certs::{self, Authority, CaSubject, Issued, TenantNames};
use crate::cli::ServeArgs;

/// The tenants, in the order they are shown.
const TENANTS: [&str; 2] = ["alpha", "beta"];
/// The domain the tenants are named under. `.test` is reserved (RFC 2606):
/// these names can never resolve to anything real.
pub const DOMAIN: &str = "demo.pgsni.test";
/// The user the printed commands log in as; every tenant trusts it.
pub const USER: &str = "demo";
/// Validity of the demo's certificates. Their files go when the demo stops;
/// a month outlasts any demo left running.
const CERT_DAYS: u32 = 30;
/// How long sessions may go on after Ctrl-C before they are closed.
const DRAIN_TIMEOUT: &str = "2s";

/// Options of `pgsni demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port for the broker, on 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = 6432,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Also serve the broker's metrics and health endpoints on
    /// 127.0.0.1:PORT.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_port: Option<u16>,

    /// Use two real PostgreSQL clusters as the tenants instead of the
    /// embedded ones (needs the PostgreSQL server binaries).
    #[arg(long)]
    pub postgres: bool,
}

/// Runs the demo on its own runtime until `shutdown` completes; prints
/// errors and turns them into the exit code.
pub fn main(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgsni: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgsni demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the tenants and the broker, prints how to connect, and serves
/// until `shutdown` completes. Everything is removed on return.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Watch for Ctrl-C from the very start, so that one pressed during
    // set-up still leads to an orderly stop rather than to orphaned servers.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let metrics = args
        .metrics_port
        .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    for addr in std::iter::once(listen).chain(metrics) {
        ensure_free(addr)?;
    }
    let installation = if args.postgres {
        Some(tokio::task::spawn_blocking(postgres::Installation::find).await??)
    } else {
        None
    };

    let dir = tempfile::Builder::new()
        .prefix("pgsni-demo-")
        .tempdir()
        .context("cannot create the demo's directory")?;
    if installation
        .as_ref()
        .is_some_and(postgres::Installation::runs_as_other_user)
    {
        // The server user must reach its clusters' directories; the CA's key
        // stays private by its own mode.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("cannot open the demo's directory to the postgres user")?;
    }
    let pki = Pki::create(dir.path())?;

    let backends = match &installation {
        None => Backends::embedded(&pki).await?,
        Some(installation) => Backends::postgres(installation.clone(), dir.path(), &pki).await?,
    };
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, routes_toml(&backends.addrs()))
        .with_context(|| format!("cannot write {}", routes.display()))?;

    let broker_args = broker_args(listen, &routes, metrics)?;
    let serve = crate::cli::serve(broker_args, stopped(stop_rx));
    tokio::pin!(serve);
    let early = tokio::select! {
        // A stop during set-up, or a broker that failed to start.
        result = &mut serve => Some(result),
        () = wait_listening(listen) => None,
    };
    let result = match early {
        Some(result) => result,
        None => {
            let postgres = installation.is_some();
            print!(
                "{}",
                instructions(listen, metrics, &pki.ca_path, &routes, postgres)
            );
            serve.await
        }
    };

    // The broker has stopped; now the tenants can go.
    backends.stop().await;
    result?;
    let path = dir.path().to_owned();
    dir.close()
        .with_context(|| format!("cannot remove {}", path.display()))?;
    println!("pgsni demo: stopped; {} removed", path.display());
    Ok(())
}

/// Completes once a stop was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Fails with a clear message if something already listens on `addr`.
///
/// The broker's own sockets use `SO_REUSEPORT`, so a second broker would
/// silently share the port with the first instead of failing; a plain bind
/// here does fail.
fn ensure_free(addr: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("cannot use {addr}; choose another port (--port, --metrics-port)"))
}

/// Waits until the broker accepts connections on `addr`.
async fn wait_listening(addr: SocketAddr) {
    // A connection opened and closed at once: the broker counts it as
    // `client_closed` and goes on.
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The demo's certificate material, in its directory.
struct Pki {
    ca_path: PathBuf,
    leaves: Vec<Leaf>,
}

/// One tenant's certificate, in memory and on disk.
struct Leaf {
    names: TenantNames,
    issued: Issued,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Pki {
    /// A CA and one server certificate per tenant, written as `pgsni certs`
    /// would write them.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let subject = CaSubject {
            common_name: "pgsni demo CA".to_owned(),
            organization: Some("pgsni".to_owned()),
            unit: Some("demo".to_owned()),
        };
        let (authority, ca) = Authority::generate(&subject, CERT_DAYS)?;
        let (ca_path, _) = certs::write_pair(dir, certs::CA_STEM, &ca, false)?;
        let mut leaves = Vec::with_capacity(TENANTS.len());
        for name in TENANTS {
            let names = TenantNames::new(name, DOMAIN, None)?;
            let issued = authority.issue_server(&names, CERT_DAYS)?;
            let (cert_path, key_path) = certs::write_pair(dir, name, &issued, false)?;
            leaves.push(Leaf {
                names,
                issued,
                cert_path,
                key_path,
            });
        }
        Ok(Self { ca_path, leaves })
    }
}

/// The running tenants.
enum Backends {
    /// Embedded tenants: their addresses, and the tasks serving them
    /// (aborted when the set is dropped).
    Embedded(Vec<(String, SocketAddr)>, tokio::task::JoinSet<()>),
    /// PostgreSQL clusters, stopped when dropped.
    Postgres(Vec<(String, postgres::Cluster)>),
}

impl Backends {
    async fn embedded(pki: &Pki) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for leaf in &pki.leaves {
            let names = &leaf.names;
            let tenant = Arc::new(tenant::Tenant::new(
                names.name(),
                &leaf.cert_path,
                &leaf.key_path,
            )?);
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("cannot listen for a demo tenant")?;
            addrs.push((names.host_name(), listener.local_addr()?));
            tasks.spawn(tenant.serve(listener));
        }
        Ok(Self::Embedded(addrs, tasks))
    }

    async fn postgres(
        installation: postgres::Installation,
        dir: &Path,
        pki: &Pki,
    ) -> anyhow::Result<Self> {
        println!(
            "pgsni demo: starting two PostgreSQL clusters ({})…",
            installation.bindir().display()
        );
        let specs: Vec<(String, PathBuf, Issued)> = pki
            .leaves
            .iter()
            .map(|leaf| {
                let name = leaf.names.name();
                (name.to_owned(), dir.join(name), leaf.issued.clone())
            })
            .collect();
        let ca_file = pki.ca_path.clone();
        let hosts: Vec<String> = pki.leaves.iter().map(|l| l.names.host_name()).collect();
        let clusters = tokio::task::spawn_blocking(move || {
            // Side by side: initdb is most of the wait.
            std::thread::scope(|scope| {
                let starting: Vec<_> = specs
                    .iter()
                    .map(|(name, base, issued)| {
                        let spec = postgres::ClusterSpec {
                            name,
                            user: USER,
                            cert_pem: &issued.cert_pem,
                            key_pem: &issued.key_pem,
                            ca_file: &ca_file,
                        };
                        let installation = &installation;
                        scope.spawn(move || postgres::Cluster::start(installation, base, spec))
                    })
                    .collect();
                // Join every thread before failing, so that clusters that did
                // start are dropped (stopped) here too.
                let results: Vec<_> = starting
                    .into_iter()
                    .map(|thread| match thread.join() {
                        Ok(result) => result.map_err(anyhow::Error::from),
                        Err(_) => Err(anyhow::anyhow!("starting a cluster panicked")),
                    })
                    .collect();
                results.into_iter().collect::<anyhow::Result<Vec<_>>>()
            })
        })
        .await??;
        Ok(Self::Postgres(hosts.into_iter().zip(clusters).collect()))
    }

    /// Each tenant's server name and backend address.
    fn addrs(&self) -> Vec<(String, SocketAddr)> {
        match self {
            Self::Embedded(addrs, _) => addrs.clone(),
            Self::Postgres(clusters) => clusters
                .iter()
                .map(|(host, cluster)| {
                    (
                        host.clone(),
                        SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port())),
                    )
                })
                .collect(),
        }
    }

    async fn stop(self) {
        match self {
            Self::Embedded(_, mut tasks) => tasks.shutdown().await,
            Self::Postgres(clusters) => {
                // Stopping waits for the servers to exit.
                let _ = tokio::task::spawn_blocking(move || drop(clusters)).await;
            }
        }
    }
}

/// A routes file with one exact route per tenant.
fn routes_toml(backends: &[(String, SocketAddr)]) -> String {
    let mut toml = String::from("# Written by `pgsni demo`: one route per tenant.\n");
    for (server_name, addr) in backends {
        let _ = write!(
            toml,
            "\n[[route]]\nserver_name = \"{server_name}\"\nbackends = [\"{addr}\"]\n"
        );
    }
    toml
}

/// The broker's options, parsed like `pgsni serve`'s command line so that
/// everything not given here has its usual default.
fn broker_args(
    listen: SocketAddr,
    routes: &Path,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<ServeArgs> {
    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }
    let mut argv: Vec<OsString> = vec![
        "--listen".into(),
        listen.to_string().into(),
        "--routes".into(),
        routes.into(),
        "--drain-timeout".into(),
        DRAIN_TIMEOUT.into(),
    ];
    if let Some(metrics) = metrics {
        argv.extend(["--metrics-listen".into(), metrics.to_string().into()]);
    }
    Ok(Serve::try_parse_from(argv)?.args)
}

/// What the demo prints once the broker listens.
fn instructions(
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    ca: &Path,
    routes: &Path,
    postgres: bool,
) -> String {
    let (kind, query) = if postgres {
        ("PostgreSQL clusters", "SHOW cluster_name")
    } else {
        ("embedded tenants", "SHOW tenant")
    };
    let port = listen.port();
    let ca = conninfo_value(&ca.to_string_lossy());
    let mut text = format!(
        "\npgsni demo: the broker listens on {listen}, in front of two {kind}\n\
         that each terminate TLS with their own certificate. It routes each session\n\
         by its TLS server name and never decrypts it.\n\
         \nReach each tenant through the broker, verifying its certificate:\n\n"
    );
    for tenant in TENANTS {
        let conninfo = format!(
            "host={tenant}.{DOMAIN} hostaddr=127.0.0.1 port={port} user={USER} dbname={tenant} \
             sslmode=verify-full sslrootcert={ca}"
        );
        let _ = writeln!(text, "  psql {} -c '{query}'", shell_quote(&conninfo));
    }
    let _ = write!(
        text,
        "\nA plaintext session is refused by the broker itself:\n\n  psql {}\n\n",
        shell_quote(&format!(
            "host=127.0.0.1 port={port} user={USER} sslmode=disable"
        ))
    );
    let _ = writeln!(
        text,
        "The broker runs as: pgsni serve --listen {listen} --routes {}",
        routes.display()
    );
    if let Some(metrics) = metrics {
        let _ = writeln!(text, "Metrics: curl http://{metrics}/metrics");
    }
    text.push_str("Press Ctrl-C to stop.\n");
    text
}

/// A libpq conninfo value, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `text` as one shell word: in double quotes when that is safe, else in
/// single quotes.
fn shell_quote(text: &str) -> String {
    if text.contains(['"', '\\', '$', '`', '!']) {
        format!("'{}'", text.replace('\'', r"'\''"))
    } else {
        format!("\"{text}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conninfo_value("/tmp/x/ca.pem"), "/tmp/x/ca.pem");
        assert_eq!(conninfo_value("/tmp/a b/ca.pem"), "'/tmp/a b/ca.pem'");
        assert_eq!(conninfo_value("it's"), r"'it\'s'");
        assert_eq!(shell_quote("host=a port=1"), "\"host=a port=1\"");
        assert_eq!(shell_quote("a$b 'c'"), r"'a$b '\''c'\'''");
    }

    #[test]
    fn the_broker_gets_the_usual_defaults() {
        let listen: SocketAddr = "127.0.0.1:6432".parse().unwrap();
        let args = broker_args(listen, Path::new("/tmp/routes.toml"), None).unwrap();
        assert_eq!(args.listen[0].addr, listen);
        assert_eq!(args.routes, Path::new("/tmp/routes.toml"));
        assert_eq!(args.drain_timeout, Duration::from_secs(2));
        assert_eq!(args.connect_timeout, Duration::from_secs(3));
        assert!(args.metrics_listen.is_none());
    }

    #[test]
    fn routes_file_is_valid() {
        let routes = routes_toml(&[
            (
                "alpha.demo.pgsni.test".into(),
                "127.0.0.1:5001".parse().unwrap(),
            ),
            (
                "beta.demo.pgsni.test".into(),
                "127.0.0.1:5002".parse().unwrap(),
            ),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, routes).unwrap();
        let (table, _) = crate::routing::load(&path).unwrap();
        assert_eq!(table.len(), 2);
    }
}
