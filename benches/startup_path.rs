//! The start-up path of one connection, in-process, against routing tables
//! of 10, 10 000 and 100 000 routes.
//!
//! - `startup_path`: what the proxy does before it dials a backend: classify
//!   the SSLRequest, read the ClientHello, validate the server name, take the
//!   table in force and look the name up.
//! - `route_lookup`: the lookup alone, from a validated name.
//!
//! Half the routes are exact names, half one-label wildcards. Each benchmark
//! cycles through 1024 different names spread over the whole table, so that
//! a large table is not measured through a single warm cache line. Lookup
//! must cost the same whatever the size of the table.
//!
//! After the measurements, a table of the medians is printed. Run with
//! `cargo bench --bench startup_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion};
use pgsni::routing::table::{BackendTemplate, Pattern, Route};
use pgsni::routing::{Resolved, RouteTable};
use pgsni::tls::{read_client_hello, HostName};
use pgsni::wire::startup::{classify, StartupPacket, SSL_REQUEST};
use rustls::pki_types::ServerName;

#[path = "support/summary.rs"]
mod summary;

const SIZES: [usize; 3] = [10, 10_000, 100_000];
const KINDS: [&str; 2] = ["exact", "wildcard"];
/// How many different names each benchmark cycles through.
const NAMES: usize = 1024;

/// `n` routes: exact `tenant-I.db.example.com` for even I, wildcard
/// `*.cell-I.example.com` for odd I.
fn table(n: usize) -> RouteTable {
    let routes = (0..n)
        .map(|i| {
            let (pattern, backend) = if i % 2 == 0 {
                (
                    format!("tenant-{i}.db.example.com"),
                    format!("10.{}.{}.{}:5432", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff),
                )
            } else {
                (
                    format!("*.cell-{i}.example.com"),
                    format!("{{1}}-rw.{{1}}.cell-{i}.svc.cluster.local:5432"),
                )
            };
            let pattern = Pattern::parse(&pattern).expect("valid pattern");
            let wildcard = matches!(pattern, Pattern::Wildcard { .. });
            let backend = BackendTemplate::parse(&backend, wildcard).expect("valid backend");
            Route::new(pattern, vec![backend]).expect("one backend")
        })
        .collect();
    RouteTable::new(routes).expect("distinct patterns")
}

/// [`NAMES`] names of `kind` that the table of `n` routes routes, spread
/// over the whole table.
fn names(n: usize, kind: &str) -> Vec<String> {
    (0..NAMES)
        .map(|j| {
            // A route of the right parity, stepping through the table by a
            // large prime so neighbouring names land far apart.
            let i = (j * 7919 % n) & !1;
            match kind {
                "exact" => format!("tenant-{i}.db.example.com"),
                _ => format!("app-{j}.cell-{}.example.com", (i + 1) % n),
            }
        })
        .collect()
}

/// What a client sends after `S`: a rustls ClientHello for `name`, offering
/// ALPN `postgresql`.
fn client_hello(config: &Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_owned()).expect("valid name");
    let mut client = rustls::ClientConnection::new(config.clone(), name).expect("client starts");
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Arc::new(config)
}

/// The table in force, swapped whole on reload, as the proxy holds it.
type InForce = ArcSwap<RouteTable>;

/// The proxy's start-up path, from the first bytes to a routing decision.
fn start_up(ssl_request: &[u8], hello: &[u8], table: &InForce, scratch: &mut Vec<u8>) -> Resolved {
    let Ok(Some((StartupPacket::SslRequest, _))) = classify(ssl_request) else {
        panic!("not an SSLRequest");
    };
    let hello = read_client_hello(hello, scratch)
        .expect("valid hello")
        .expect("complete hello");
    let name = HostName::parse(hello.server_name().expect("has SNI")).expect("valid name");
    table.load().lookup(&name).expect("routed")
}

/// One table size, with what the benchmarks feed it.
struct Setup {
    routes: usize,
    table: InForce,
    /// For each kind, the names, and each name's ClientHello.
    names: [Vec<HostName>; 2],
    hellos: [Vec<Vec<u8>>; 2],
}

impl Setup {
    fn new(routes: usize, config: &Arc<rustls::ClientConfig>) -> Self {
        let names = KINDS.map(|kind| names(routes, kind));
        let setup = Self {
            routes,
            table: ArcSwap::from_pointee(table(routes)),
            hellos: names.clone().map(|names| {
                names
                    .iter()
                    .map(|name| client_hello(config, name))
                    .collect()
            }),
            names: names.map(|names| {
                names
                    .iter()
                    .map(|name| name.parse().expect("valid"))
                    .collect()
            }),
        };
        let mut scratch = Vec::new();
        for hello in setup.hellos.iter().flatten() {
            start_up(&SSL_REQUEST, hello, &setup.table, &mut scratch);
        }
        setup
    }

    /// A whole start-up per call, cycling through the hellos of `kind`.
    fn start_ups(&self, kind: usize) -> impl FnMut() -> Resolved + '_ {
        let mut hellos = self.hellos[kind].iter().cycle();
        let mut scratch = Vec::new();
        move || {
            let hello = hellos.next().expect("endless");
            start_up(
                black_box(&SSL_REQUEST),
                black_box(hello),
                &self.table,
                &mut scratch,
            )
        }
    }

    /// A lookup per call, cycling through the first `spread` names of
    /// `kind`.
    fn lookups(&self, kind: usize, spread: usize) -> impl FnMut() -> Option<Resolved> + '_ {
        let table = self.table.load_full();
        let mut names = self.names[kind][..spread].iter().cycle();
        move || table.lookup(black_box(names.next().expect("endless")))
    }
}

fn benchmarks(c: &mut Criterion, setups: &[Setup]) {
    let mut path = c.benchmark_group("startup_path");
    for setup in setups {
        for (kind, label) in KINDS.iter().enumerate() {
            let mut start_up = setup.start_ups(kind);
            path.bench_function(BenchmarkId::new(*label, setup.routes), |b| {
                b.iter(&mut start_up)
            });
        }
    }
    path.finish();

    let mut lookup = c.benchmark_group("route_lookup");
    for setup in setups {
        for (kind, label) in KINDS.iter().enumerate() {
            let mut lookup_one = setup.lookups(kind, NAMES);
            lookup.bench_function(BenchmarkId::new(*label, setup.routes), |b| {
                b.iter(&mut lookup_one)
            });
        }
    }
    lookup.finish();
}

/// Criterion's medians, and how the lookup time of each table size compares
/// with the smallest table's, in interleaved rounds (see
/// `support/summary.rs`): over the 1024 names spread over the table as in
/// the benchmarks, where a large table no longer fits the caches, and over
/// one name asked again and again, which leaves the lookup's own work.
fn print_summary(medians: &summary::Medians, setups: &[Setup]) {
    use summary::cell;

    let growth = |kind: usize, spread: usize| -> Vec<f64> {
        let mut lookups: Vec<_> = setups
            .iter()
            .map(|setup| {
                let mut lookup = setup.lookups(kind, spread);
                move || drop(black_box(lookup()))
            })
            .collect();
        let mut contenders: Vec<&mut dyn FnMut()> = lookups
            .iter_mut()
            .map(|lookup| lookup as &mut dyn FnMut())
            .collect();
        summary::paired(&mut contenders, 51, Duration::from_millis(5))
            .into_iter()
            .map(|(_, ratio)| ratio)
            .collect()
    };
    let spread = [growth(0, NAMES), growth(1, NAMES)];
    let one = [growth(0, 1), growth(1, 1)];

    println!("\nStart-up path (SSLRequest + ClientHello + route lookup) and route lookup alone: criterion's median per connection; lookup time relative to 10 routes, median over 51 interleaved rounds, for {NAMES} names spread over the table and for one name\n");
    println!("| routes | path, exact | path, wildcard | lookup, exact | lookup, wildcard | vs 10 routes, {NAMES} names, exact / wildcard | vs 10 routes, one name, exact / wildcard |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (index, setup) in setups.iter().enumerate() {
        let routes = setup.routes.to_string();
        let get = |group, kind| cell(medians.get(group, kind, &routes));
        println!(
            "| {routes} | {} | {} | {} | {} | {:.2}× / {:.2}× | {:.2}× / {:.2}× |",
            get("startup_path", "exact"),
            get("startup_path", "wildcard"),
            get("route_lookup", "exact"),
            get("route_lookup", "wildcard"),
            spread[0][index],
            spread[1][index],
            one[0][index],
            one[1][index],
        );
    }
}

fn main() {
    let medians = summary::Medians::start();
    let mut c = summary::criterion();
    let config = client_config();
    let setups: Vec<Setup> = SIZES.iter().map(|&n| Setup::new(n, &config)).collect();
    benchmarks(&mut c, &setups);
    c.final_summary();
    if summary::benchmarking() {
        print_summary(&medians, &setups);
    }
}
