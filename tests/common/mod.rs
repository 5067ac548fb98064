//! Shared harness for pgsni's integration tests.
//!
//! - [`certs`]: a throw-away CA ([`TestPki`]) issuing leaf certificates.
//! - [`postgres`]: real PostgreSQL 15 tenant servers ([`PgCluster`]) with TLS
//!   on, plus client helpers (`psql`, tokio-postgres over rustls).
//! - [`broker`]: the real `pgsni` binary started for one test.
//! - [`wire`]: scripted clients and backends speaking the start-up
//!   protocol byte for byte.
//! - [`pg18`]: where the PostgreSQL 18 server binaries are (direct-TLS
//!   clients with libpq 17+ need a server that negotiates ALPN).
//!
//! Every integration-test binary includes this with `mod common;`; not every
//! binary uses every helper, hence the module-wide `dead_code` allowance.
//!
//! Requirements on the machine: see `scripts/install-test-deps.sh`.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod certs;
pub mod hello;
pub mod pg18;
pub mod postgres;
pub mod tenants;
pub mod wire;

pub use certs::{root_store_from_pem, LeafFiles, TestPki};
pub use postgres::{
    free_port, interrupt_psql, pg_bin, psql, rustls_client_config, start_sleeping_psql,
    tenant_conninfo, tokio_pg_config, tokio_pg_connect, wait_for_running_query, PgCluster,
    PG_PASSWORD, PG_USER,
};

/// Small OS helpers (effective uid, the `postgres` user's ids) that avoid a
/// `libc` dependency.
pub(crate) mod os {
    use std::process::Command;
    use std::sync::OnceLock;

    /// Whether the test process runs with effective uid 0.
    pub fn is_root() -> bool {
        static ROOT: OnceLock<bool> = OnceLock::new();
        *ROOT.get_or_init(|| effective_uid() == 0)
    }

    /// The effective uid of this process (from `/proc/self/status`, falling
    /// back to `id -u`).
    pub fn effective_uid() -> u32 {
        static EUID: OnceLock<u32> = OnceLock::new();
        *EUID.get_or_init(|| {
            if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
                for line in status.lines() {
                    if let Some(rest) = line.strip_prefix("Uid:") {
                        // Fields: real, effective, saved, filesystem.
                        if let Some(euid) = rest.split_whitespace().nth(1) {
                            if let Ok(euid) = euid.parse() {
                                return euid;
                            }
                        }
                    }
                }
            }
            id_number(&["-u"]).expect("cannot determine the effective uid")
        })
    }

    /// The uid and gid of the `postgres` OS user, if it exists.
    pub fn postgres_ids() -> Option<(u32, u32)> {
        static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
        *IDS.get_or_init(|| {
            if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
                for line in passwd.lines() {
                    let fields: Vec<&str> = line.split(':').collect();
                    if fields.len() >= 4 && fields[0] == "postgres" {
                        if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                            return Some((uid, gid));
                        }
                    }
                }
            }
            Some((
                id_number(&["-u", "postgres"])?,
                id_number(&["-g", "postgres"])?,
            ))
        })
    }

    /// Runs `id ARGS` and parses the number it prints.
    fn id_number(args: &[&str]) -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}
