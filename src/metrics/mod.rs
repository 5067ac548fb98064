//! Prometheus metrics: their names, their descriptions, and the recorder.
//!
//! Events are recorded where they happen, with the `metrics` facade and the
//! names below; labels always come from closed enums (`as_str()`) or from the
//! routing table's patterns, so their cardinality is bounded by construction.

pub mod endpoint;

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Connections by how their start-up ended (label `outcome`).
pub const CONNECTIONS_TOTAL: &str = "pgsni_connections_total";
/// Sessions currently forwarding, by route and TLS mode (labels `route`,
/// `mode`).
pub const ACTIVE_CONNECTIONS: &str = "pgsni_active_connections";
/// Bytes forwarded, by route, direction and TLS mode (labels `route`,
/// `direction`, `mode`).
pub const FORWARDED_BYTES_TOTAL: &str = "pgsni_forwarded_bytes_total";
/// Seconds from accept to the first byte forwarded to the backend.
pub const HANDSHAKE_SECONDS: &str = "pgsni_handshake_seconds";
/// Routing-table reloads by result (label `result`).
pub const ROUTES_RELOAD_TOTAL: &str = "pgsni_routes_reload_total";
/// Routes in the table in force.
pub const ROUTES: &str = "pgsni_routes";
/// Plaintext CancelRequests by how they were handled (label `result`).
pub const CANCEL_REQUESTS_TOTAL: &str = "pgsni_cancel_requests_total";
/// Errors from `accept(2)` by kind (label `kind`).
pub const ACCEPT_ERRORS_TOTAL: &str = "pgsni_accept_errors_total";
/// Re-reads of terminated routes' certificates, keys and backend CAs that
/// found a change, by result (label `result`).
pub const CERTIFICATE_RELOADS_TOTAL: &str = "pgsni_certificate_reloads_total";

/// Connections to the metrics endpoint closed at once because it already
/// served as many as it allows.
pub const METRICS_CONNECTIONS_REFUSED_TOTAL: &str = "pgsni_metrics_connections_refused_total";

/// Lookups of backend host names, by result (label `result`: `ok`,
/// `not_found`, `error`), cached answers included.
pub const DNS_LOOKUPS_TOTAL: &str = "pgsni_dns_lookups_total";

/// Client connections the broker holds, whether in start-up or forwarding;
/// sampled at each scrape.
pub const OPEN_CONNECTIONS: &str = "pgsni_open_connections";
/// Tasks alive in the runtime: one per connection, plus a few of the
/// broker's own; sampled at each scrape.
pub const RUNTIME_TASKS: &str = "pgsni_runtime_tasks";
/// File descriptors the process has open (Linux); sampled at each scrape,
/// under the name the standard process collector uses.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The process's limit on open file descriptors (Linux); sampled at each
/// scrape.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";

/// Buckets for [`HANDSHAKE_SECONDS`]: loopback handshakes take a few
/// milliseconds, remote backends tens, and the deadline bounds the rest.
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histograms are drained; the exporter needs it for memory bounds.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process-wide recorder (once) and
/// returns the handle that renders the exposition text.
///
/// Idempotent, so that tests running several brokers in one process share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HANDSHAKE_SECONDS.to_owned()),
                    HANDSHAKE_BUCKETS,
                )
                .expect("the bucket list is a non-empty constant")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            describe();
            handle
        })
        .clone()
}

/// Sets the gauges that are sampled rather than kept up to date, just before
/// a scrape: `open_connections` from the broker, the rest from the runtime
/// and the operating system. Leaks of tasks or descriptors show here.
pub fn sample(open_connections: usize) {
    ::metrics::gauge!(OPEN_CONNECTIONS).set(open_connections as f64);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        ::metrics::gauge!(RUNTIME_TASKS).set(runtime.metrics().num_alive_tasks() as f64);
    }
    if let Some(open) = open_fds() {
        ::metrics::gauge!(PROCESS_OPEN_FDS).set(open as f64);
    }
    if let Some(max) = max_fds() {
        ::metrics::gauge!(PROCESS_MAX_FDS).set(max as f64);
    }
}

/// Descriptors open in this process, from `/proc` (Linux only).
fn open_fds() -> Option<usize> {
    // The directory's own descriptor is counted too, as the standard
    // process collector does.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// The soft limit on open descriptors, from `/proc` (Linux only).
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the periodic upkeep that keeps histogram memory bounded, forever.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_gauge!(
        OPEN_CONNECTIONS,
        "Client connections the broker holds, in start-up or forwarding"
    );
    describe_gauge!(
        RUNTIME_TASKS,
        "Tasks alive in the runtime: one per connection plus a few of the broker's own"
    );
    describe_gauge!(PROCESS_OPEN_FDS, "Open file descriptors");
    describe_gauge!(PROCESS_MAX_FDS, "Limit on open file descriptors");
    describe_counter!(
        CONNECTIONS_TOTAL,
        "Client connections by how their start-up ended (routed or the refusal reason)"
    );
    describe_gauge!(
        ACTIVE_CONNECTIONS,
        "Sessions currently forwarding, by route and mode (passthrough, terminate)"
    );
    describe_counter!(
        FORWARDED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes forwarded, by route, direction (client_to_backend, backend_to_client) and mode"
    );
    describe_histogram!(
        HANDSHAKE_SECONDS,
        Unit::Seconds,
        "Time from accept to the first byte forwarded to the backend"
    );
    describe_counter!(
        ROUTES_RELOAD_TOTAL,
        "Routing-table reloads by result (ok, error)"
    );
    describe_gauge!(ROUTES, "Routes in the routing table in force");
    describe_counter!(
        CANCEL_REQUESTS_TOTAL,
        "Plaintext CancelRequests by result (forwarded, truncated, no_session, rate_limited, failed)"
    );
    describe_counter!(ACCEPT_ERRORS_TOTAL, "Errors from accept(2), by kind");
    describe_counter!(
        CERTIFICATE_RELOADS_TOTAL,
        "Changed certificate, key or backend CA files of terminated routes re-read, by result (ok, error)"
    );
    describe_counter!(
        METRICS_CONNECTIONS_REFUSED_TOTAL,
        "Connections to the metrics endpoint closed at once because it was at its connection limit"
    );
    describe_counter!(
        DNS_LOOKUPS_TOTAL,
        "Lookups of backend host names, cached answers included, by result (ok, not_found, error)"
    );
}
