//! Command-line interface: `pgsni serve` and `pgsni check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::info;

use crate::net::Networks;
use crate::proxy::cancel::CancelRegistry;
use crate::proxy::dial::Dialer;
use crate::proxy::fallback::Fallback;
use crate::proxy::lifecycle::Lifecycle;
use crate::proxy::limits::{LimitConfig, Limits};
use crate::proxy::resolve::Resolver;
use crate::proxy::sockmap::Sockmap;
use crate::proxy::terminate::identity::{self, IdentityStore};
use crate::proxy::terminate::StartupRouting;
use crate::proxy::{listener, Context, ProxyProtocol, SocketOptions, Timeouts};
use crate::routing::{self, watcher, Routes};

/// pgsni: a PostgreSQL edge listener that routes TLS sessions by server name
/// (SNI) to each tenant's own Postgres, without decrypting them (unless a
/// route says `tls = "terminate"`).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    // Boxed: the options are large, the other commands small.
    Serve(Box<ServeArgs>),
    /// Validate a routes file; exit 0 if it is valid, 1 with the reason if not.
    Check {
        /// The routes file.
        file: PathBuf,
        /// Also load the certificates, keys and CAs that terminated routes
        /// name, as `serve` would (off by default, so that a file can be
        /// checked where its keys are not, such as in CI).
        #[arg(long)]
        load_keys: bool,
    },
    /// Create a CA and issue tenant certificates with it (in certs/ by default).
    Certs(crate::certs::CertsArgs),
    /// Run the broker in front of two TLS tenants on 127.0.0.1, with nothing
    /// to install, and print how to connect.
    Demo(crate::demo::DemoArgs),
}

/// Options of `pgsni serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to accept Postgres clients on; repeat for several (IPv6 too,
    /// e.g. `[::]:5432`). `ADDR,proxy-protocol=MODE` overrides --proxy-protocol
    /// for that listener, and `,trusted=CIDR;CIDR` its trusted proxies.
    #[arg(long = "listen", value_name = "ADDR", default_value = "0.0.0.0:5432", value_parser = parse_listen)]
    pub listen: Vec<ListenSpec>,

    /// Whether listeners expect a PROXY protocol header (v1 or v2) from a load
    /// balancer: off, optional, or required.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProxyProtocol::Off)]
    pub proxy_protocol: ProxyProtocol,

    /// The load balancers whose PROXY headers are believed, as
    /// CIDR[,CIDR…] (repeatable). A header from any other peer closes the
    /// connection; with --proxy-protocol optional or required this is
    /// mandatory. `0.0.0.0/0,::/0` trusts everyone: only where nothing but
    /// the balancer can reach the listener.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub trusted_proxies: Vec<Networks>,

    /// Bound on a trusted load balancer's PROXY header, from accept.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub proxy_header_timeout: Duration,

    /// The prefix length that IPv6 clients are grouped by for per-source
    /// limits and cancel affinity (one holder of a /64 is one source).
    #[arg(long, value_name = "BITS", default_value_t = crate::net::DEFAULT_IPV6_SOURCE_PREFIX,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_source_prefix: u8,

    /// The routes file (TOML); re-read when it changes and on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub routes: PathBuf,

    /// Address for the HTTP metrics endpoint (GET /metrics); off when unset.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Bound on a connection's start-up: first packet, ClientHello, routed backend.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Bound on each backend attempt (TCP connect and its answer to SSLRequest).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Networks backends may be in (`CIDR[,CIDR…]`, repeatable): every
    /// backend connection (fixed or templated, passthrough or terminated,
    /// and plaintext cancels) is checked against the address it resolved
    /// to, and refused outside them. Defence in depth for wildcard routes.
    /// Unix-socket backends are not affected. Default: any address.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub backend_networks: Vec<Networks>,

    /// How often the routes file is re-read even without a change event.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// The most backends one plaintext CancelRequest is forwarded to: those
    /// the sending address has live sessions with.
    #[arg(long, value_name = "N", default_value_t = crate::proxy::cancel::DEFAULT_MAX_TARGETS)]
    pub cancel_max_targets: usize,

    /// The most sessions the broker holds at once (handshaking or
    /// forwarding); 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections: usize,

    /// The most handshakes one client address may have in flight; 0 for no
    /// limit. Bounds what slow or silent clients from one place can hold.
    /// Off by default: behind a load balancer without the PROXY protocol
    /// every client shares one address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_handshakes_per_source: usize,

    /// The most new connections one client address may open per second
    /// (bursts of as many are allowed); 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connection_rate_per_source: u32,

    /// TCP keepalive idle time on client and backend sockets, or `off`.
    #[arg(long, value_name = "DURATION|off", default_value = "60s", value_parser = parse_keepalive)]
    pub tcp_keepalive: Keepalive,

    /// The broker's own certificate (PEM), used only to tell clients refused
    /// after TLS has begun what happened, in a Postgres error; without it
    /// they get a TLS alert. Needs --fallback-key.
    #[arg(long, value_name = "FILE", requires = "fallback_key")]
    pub fallback_cert: Option<PathBuf>,

    /// The private key (PEM) of --fallback-cert.
    #[arg(long, value_name = "FILE", requires = "fallback_cert")]
    pub fallback_key: Option<PathBuf>,

    /// With --fallback-cert, a client that sends no server name may name a
    /// terminated route in its database name as `NAME<SEP>DBNAME` (e.g. with
    /// `/`: dbname=alpha.db.example.com/app); the backend sees `DBNAME`.
    /// (`options=-c pgsni.server_name=NAME` works without this.)
    #[arg(long, value_name = "SEP", requires = "fallback_cert", value_parser = parse_route_separator)]
    pub database_route_separator: Option<String>,

    /// Hand routed passthrough sessions to the kernel (an eBPF socket map
    /// redirecting each socket's data to its peer), so that forwarded bytes
    /// never cross into user space. Needs CAP_BPF and CAP_NET_ADMIN (or
    /// root) on Linux; where it cannot load, sessions are forwarded in user
    /// space as usual. Faster for request/response traffic, slower for bulk
    /// transfers: measure before enabling.
    #[arg(long)]
    pub kernel_forwarding: bool,

    /// Close sessions whose route a reload removed, this long after the
    /// reload; by default they go on until they end by themselves.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub close_removed_after: Option<Duration>,

    /// On SIGTERM/SIGINT: how long live sessions may go on before the rest
    /// are closed and the process exits.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Runtime worker threads; 0 means one per CPU. On a machine shared with
    /// the database itself, fewer workers can mean fewer wake-ups.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub worker_threads: usize,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One `--listen` value: an address and, optionally, its own PROXY mode
/// and trusted proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Where to listen.
    pub addr: SocketAddr,
    /// This listener's PROXY protocol mode, if set apart from the default.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// This listener's trusted proxies, if set apart from the default.
    pub trusted_proxies: Option<Networks>,
}

/// Parses `ADDR[,proxy-protocol=MODE][,trusted=CIDR;CIDR…]`.
pub fn parse_listen(text: &str) -> Result<ListenSpec, String> {
    let mut parts = text.split(',');
    let addr = parts.next().unwrap_or_default();
    let mut spec = ListenSpec {
        addr: addr
            .parse()
            .map_err(|e| format!("invalid listen address {addr:?}: {e}"))?,
        proxy_protocol: None,
        trusted_proxies: None,
    };
    for option in parts {
        if let Some(mode) = option.strip_prefix("proxy-protocol=") {
            let mode = ProxyProtocol::from_str(mode, true).map_err(|_| {
                format!("proxy-protocol must be off, optional or required, not {mode:?}")
            })?;
            spec.proxy_protocol = Some(mode);
        } else if let Some(networks) = option.strip_prefix("trusted=") {
            spec.trusted_proxies = Some(Networks::parse_list(networks, ';')?);
        } else {
            return Err(format!("unknown listener option {option:?}"));
        }
    }
    Ok(spec)
}

/// What one listener believes: its PROXY mode and trusted proxies, from its
/// own `--listen` options or the defaults. Refuses a listener that would
/// take PROXY headers from no one, or (unless told) from everyone.
fn listener_trust(
    spec: &ListenSpec,
    default_mode: ProxyProtocol,
    default_trusted: &Networks,
) -> anyhow::Result<(ProxyProtocol, Networks)> {
    let mode = spec.proxy_protocol.unwrap_or(default_mode);
    let trusted = spec
        .trusted_proxies
        .clone()
        .unwrap_or_else(|| default_trusted.clone());
    if mode == ProxyProtocol::Off {
        return Ok((mode, Networks::none()));
    }
    anyhow::ensure!(
        !trusted.is_empty(),
        "{}: the PROXY protocol is {} but no proxy is trusted: name the load balancers' networks with --trusted-proxies CIDR[,CIDR…] (or trusted=CIDR;CIDR in --listen); a header from anyone else is refused",
        spec.addr,
        if mode == ProxyProtocol::Required { "required" } else { "optional" },
    );
    if trusted.covers_a_whole_family() {
        tracing::warn!(
            listen = %spec.addr,
            trusted_proxies = %trusted,
            "PROXY headers are believed from every address of a family: any client that reaches this listener directly can claim any address"
        );
    }
    Ok((mode, trusted))
}

/// A `--tcp-keepalive` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive(pub Option<Duration>);

/// Parses `off` or a duration.
pub fn parse_keepalive(text: &str) -> Result<Keepalive, String> {
    match text {
        "off" => Ok(Keepalive(None)),
        _ => parse_duration(text).map(|idle| Keepalive(Some(idle))),
    }
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 10s, 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(format!("invalid duration unit {unit:?}: use ms, s or m")),
    };
    if duration.is_zero() {
        return Err("a duration must be positive".into());
    }
    Ok(duration)
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file, load_keys } => check(&file, load_keys),
        Command::Certs(args) => crate::certs::main(&args),
        Command::Demo(args) => {
            init_tracing(LogFormat::Text);
            crate::demo::main(args, shutdown_signal())
        }
        Command::Serve(args) => {
            init_tracing(args.log_format);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if args.worker_threads > 0 {
                builder.worker_threads(args.worker_threads);
            }
            let runtime = builder
                .enable_all()
                .build()
                .expect("the tokio runtime starts on any supported platform");
            match runtime.block_on(serve(*args, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("pgsni: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(file: &std::path::Path, load_keys: bool) -> ExitCode {
    let table = match routing::load(file) {
        Ok((table, _)) => table,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if load_keys {
        let loaded = IdentityStore::new().and_then(|store| Ok(store.prepare(&table)?));
        if let Err(error) = loaded {
            eprintln!("{}: {error:#}", file.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{}: ok, {} routes", file.display(), table.len());
    ExitCode::SUCCESS
}

/// Parses a `--database-route-separator`: a few characters that cannot
/// occur in a server name, so that the split is never ambiguous.
pub fn parse_route_separator(text: &str) -> Result<String, String> {
    let usable = |c: char| c.is_ascii_graphic() && !c.is_ascii_alphanumeric() && !"-_.".contains(c);
    if text.is_empty() || text.len() > 8 || !text.chars().all(usable) {
        return Err(format!(
            "invalid separator {text:?}: use 1 to 8 printable ASCII characters that cannot occur in a server name, such as / or :"
        ));
    }
    Ok(text.to_owned())
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, not for the journal or
    // a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the broker until `shutdown` completes.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (table, bytes) = routing::load(&args.routes).context("cannot load the routes file")?;
    // Terminated routes' keys are loaded before anything listens; a table of
    // passthrough routes loads none.
    let identities = IdentityStore::new()?;
    identities
        .prepare(&table)
        .context("cannot load the keys of the terminated routes")?;
    info!(path = %args.routes.display(), routes = table.len(), "routes loaded");
    let table = Routes::new(table);
    let fallback = match (&args.fallback_cert, &args.fallback_key) {
        (Some(cert), Some(key)) => Some(Fallback::load(cert, key)?),
        _ => None,
    };

    let lifecycle = Lifecycle::new();
    let nonzero = |n: usize| (n > 0).then_some(n);
    let limits = Limits::new(LimitConfig {
        max_connections: nonzero(args.max_connections),
        max_handshakes_per_source: nonzero(args.max_handshakes_per_source),
        max_connection_rate_per_source: (args.max_connection_rate_per_source > 0)
            .then_some(args.max_connection_rate_per_source),
        ipv6_source_prefix: args.ipv6_source_prefix,
    });
    let trusted_proxies: Networks = args.trusted_proxies.iter().collect();
    // Checked before anything listens: a listener that would believe
    // anyone, or no one, is a configuration error.
    let trust = args
        .listen
        .iter()
        .map(|spec| listener_trust(spec, args.proxy_protocol, &trusted_proxies))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let handle = crate::metrics::install();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::metrics::upkeep(handle.clone()));
    if let Some(addr) = args.metrics_listen {
        let listener = crate::metrics::endpoint::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        info!(addr = %listener.local_addr()?, "metrics and health endpoint listening");
        let (ready, open) = (lifecycle.clone(), lifecycle.clone());
        let probes = crate::metrics::endpoint::Probes {
            ready: Arc::new(move || ready.is_ready()),
            sample: Arc::new(move || crate::metrics::sample(open.active())),
        };
        tasks.spawn(crate::metrics::endpoint::serve(listener, handle, probes));
    }

    let sweeping = limits.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            sweeping.sweep();
        }
    });

    let reloader = watcher::Reloader::new(args.routes.clone(), table.clone(), bytes)
        .with_prepare(identities.clone());
    tasks.spawn(watcher::watch(reloader, args.reload_interval));
    tasks.spawn(identity::watch(identities.clone(), args.reload_interval));

    let backend_networks: Networks = args.backend_networks.iter().collect();
    if !backend_networks.is_empty() {
        info!(networks = %backend_networks, "backends restricted to --backend-networks");
    }
    let dialer = Arc::new(Dialer::new(
        Resolver::from_system().context("cannot set up the resolver for backend names")?,
        backend_networks.clone(),
    ));
    let context = Context {
        routes: table,
        timeouts: Timeouts {
            handshake: args.handshake_timeout,
            connect: args.connect_timeout,
            proxy_header: args.proxy_header_timeout,
        },
        cancels: Arc::new(
            CancelRegistry::new(args.cancel_max_targets, args.ipv6_source_prefix)
                .with_backend_networks(backend_networks),
        ),
        proxy_protocol: args.proxy_protocol,
        trusted_proxies: Networks::none(),
        sockets: SocketOptions {
            keepalive: args.tcp_keepalive.0,
        },
        lifecycle: lifecycle.clone(),
        limits: limits.clone(),
        close_removed_after: args.close_removed_after,
        fallback,
        identities,
        startup_routing: StartupRouting {
            database_separator: args.database_route_separator.clone(),
        },
        sockmap: args.kernel_forwarding.then(load_sockmap).flatten(),
        dialer,
    };
    let mut accepting = tokio::task::JoinSet::new();
    for (spec, (proxy_protocol, trusted_proxies)) in args.listen.iter().zip(trust) {
        let socket =
            listener::bind(spec.addr).with_context(|| format!("cannot listen on {}", spec.addr))?;
        let context = Context {
            proxy_protocol,
            trusted_proxies,
            ..context.clone()
        };
        info!(addr = %socket.local_addr()?, proxy_protocol = ?context.proxy_protocol, trusted_proxies = %context.trusted_proxies, "accepting Postgres clients");
        accepting.spawn(listener::serve(socket, Arc::new(context)));
    }
    lifecycle.set_listening();

    shutdown.await;
    // Stop accepting first: the listening sockets close, and a successor
    // bound with SO_REUSEPORT takes the new connections from here on.
    lifecycle.start_draining();
    accepting.shutdown().await;
    let sessions = lifecycle.active();
    info!(sessions, timeout = ?args.drain_timeout, "draining");
    if !lifecycle.wait_idle(args.drain_timeout).await {
        info!(
            sessions = lifecycle.active(),
            "drain timeout reached; closing the remaining sessions"
        );
        lifecycle.close_all();
        lifecycle.wait_idle(Duration::from_secs(5)).await;
    }
    info!("stopped");
    tasks.shutdown().await;
    Ok(())
}

/// Loads the kernel data path, or explains why sessions stay in user space.
fn load_sockmap() -> Option<Sockmap> {
    match Sockmap::load() {
        Ok(sockmap) => {
            info!("kernel forwarding enabled: routed passthrough sessions are spliced by a socket map");
            Some(sockmap)
        }
        Err(error) if error.is_unavailable() => {
            info!(%error, "kernel forwarding unavailable here; forwarding in user space");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "kernel forwarding failed to load; forwarding in user space");
            None
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_keepalive("off"), Ok(Keepalive(None)));
        assert_eq!(
            parse_keepalive("30s"),
            Ok(Keepalive(Some(Duration::from_secs(30))))
        );
    }

    #[test]
    fn listen_specs() {
        assert_eq!(
            parse_listen("127.0.0.1:5432"),
            Ok(ListenSpec {
                addr: "127.0.0.1:5432".parse().unwrap(),
                proxy_protocol: None,
                trusted_proxies: None,
            })
        );
        let spec =
            parse_listen("[::]:5433,trusted=10.0.0.0/8;2001:db8::/32,proxy-protocol=required")
                .unwrap();
        assert_eq!(spec.proxy_protocol, Some(ProxyProtocol::Required));
        assert_eq!(
            spec.trusted_proxies,
            Some("10.0.0.0/8,2001:db8::/32".parse().unwrap())
        );
        assert!(parse_listen("[::]:5433,trusted=10.0.0.1/8").is_err());
        assert_eq!(
            parse_listen("[::]:5433,proxy-protocol=required")
                .unwrap()
                .proxy_protocol,
            Some(ProxyProtocol::Required)
        );
        assert!(parse_listen("[::]:5433,proxy-protocol=maybe").is_err());
        assert!(parse_listen("[::]:5433,other=1").is_err());
        assert!(parse_listen("localhost:5432").is_err());
    }

    #[test]
    fn a_proxy_listener_must_trust_someone() {
        let spec = |text| parse_listen(text).unwrap();
        let none = Networks::none();
        let lan: Networks = "10.0.0.0/8".parse().unwrap();
        let refused = listener_trust(&spec("0.0.0.0:5432"), ProxyProtocol::Optional, &none)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--trusted-proxies"), "{refused}");
        assert!(listener_trust(
            &spec("0.0.0.0:5432,proxy-protocol=required"),
            ProxyProtocol::Off,
            &none
        )
        .is_err());
        assert_eq!(
            listener_trust(&spec("0.0.0.0:5432"), ProxyProtocol::Required, &lan).unwrap(),
            (ProxyProtocol::Required, lan.clone())
        );
        assert_eq!(
            listener_trust(&spec("0.0.0.0:5432"), ProxyProtocol::Off, &lan).unwrap(),
            (ProxyProtocol::Off, Networks::none()),
            "without the protocol, nobody's header is believed"
        );
        let own = spec("0.0.0.0:5432,proxy-protocol=optional,trusted=192.0.2.0/24");
        assert_eq!(
            listener_trust(&own, ProxyProtocol::Off, &lan).unwrap().1,
            "192.0.2.0/24".parse().unwrap()
        );
    }

    #[test]
    fn route_separators() {
        assert_eq!(parse_route_separator("/"), Ok("/".to_owned()));
        assert_eq!(parse_route_separator("::"), Ok("::".to_owned()));
        for bad in ["", ".", "a", "-", "_", " ", "/x", "/////////"] {
            assert!(parse_route_separator(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
