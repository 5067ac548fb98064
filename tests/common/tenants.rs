//! Two PostgreSQL 15 tenants behind one test CA: the fixture most end-to-end
//! tests start from.

use super::broker::{routes_toml, Broker};
use super::certs::TestPki;
use super::postgres::{tenant_conninfo, PgCluster};

/// The first tenant's server name.
pub const ALPHA: &str = "alpha.db.example.com";
/// The second tenant's server name.
pub const BETA: &str = "beta.db.example.com";

/// Two tenants, each with its own certificate from one CA.
pub struct Tenants {
    /// The CA and the tenants' certificates.
    pub pki: TestPki,
    /// The cluster serving [`ALPHA`] (`cluster_name` alpha).
    pub alpha: PgCluster,
    /// The cluster serving [`BETA`] (`cluster_name` beta).
    pub beta: PgCluster,
}

impl Tenants {
    /// Starts both clusters.
    pub fn start() -> Tenants {
        let pki = TestPki::new();
        let alpha = PgCluster::start("alpha", &pki.issue(ALPHA));
        let beta = PgCluster::start("beta", &pki.issue(BETA));
        Tenants { pki, alpha, beta }
    }

    /// alpha → the alpha cluster, beta → the beta cluster.
    pub fn routes(&self) -> String {
        routes_toml(&[(ALPHA, &backend(&self.alpha)), (BETA, &backend(&self.beta))])
    }

    /// A libpq conninfo for `name` through `broker`, trusting the test CA.
    pub fn conninfo(&self, name: &str, broker: &Broker, sslmode: &str) -> String {
        tenant_conninfo(name, broker.port, self.pki.ca_path(), sslmode)
    }

    /// TCP connections both clusters have logged (log_connections is on).
    pub fn connections_received(&self) -> usize {
        [&self.alpha, &self.beta]
            .iter()
            .map(|c| c.log_contents().matches("connection received").count())
            .sum()
    }
}

/// A cluster's address as a routes-file backend.
pub fn backend(cluster: &PgCluster) -> String {
    format!("127.0.0.1:{}", cluster.port())
}
