//! `pgsni certs`: a small certificate authority for tenant clusters.
//!
//! pgsni itself holds no certificate: each tenant's own Postgres presents
//! one, for the name clients dial. These commands make that material:
//!
//! ```text
//! pgsni certs init                                    # certs/ca.pem, certs/ca.key
//! pgsni certs issue alpha --domain db.example.com \
//!     --namespace tenants                             # certs/alpha.pem, certs/alpha.key
//! pgsni certs issue --client streaming_replica        # certs/streaming_replica.{pem,key}
//! ```
//!
//! - [`names`]: the DNS names of a tenant cluster, validated.
//! - [`authority`]: the CA, and issuing certificates with it.
//! - [`files`]: writing keys and certificates safely.
//!
//! A tenant's Postgres takes `NAME.pem` as `ssl_cert_file` and `NAME.key` as
//! `ssl_key_file`; clients take `ca.pem` as `sslrootcert`.

pub mod authority;
pub mod files;
pub mod names;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

pub use authority::{Authority, AuthorityError, CaSubject, Issued};
pub use files::{Output, WriteError, CERT_MODE, KEY_MODE};
pub use names::{ClientUser, NameError, TenantNames};

/// The stem of the CA's files, `ca.pem` and `ca.key`.
pub const CA_STEM: &str = "ca";

/// Options of `pgsni certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory of the CA and the certificates issued with it.
    #[arg(long, value_name = "DIR", default_value = "certs", global = true)]
    pub dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// The `pgsni certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a self-signed CA (ECDSA P-256): ca.pem and ca.key.
    Init(InitArgs),
    /// Issue a tenant's server certificate (NAME.pem, NAME.key) signed by the
    /// CA, or with --client a client certificate.
    Issue(IssueArgs),
}

/// Options of `pgsni certs init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The CA's organization (O).
    #[arg(long, value_name = "O", default_value = "pgsni")]
    pub organization: String,

    /// The CA's organizational unit (OU); none by default.
    #[arg(long, value_name = "OU")]
    pub unit: Option<String>,

    /// The CA's common name (CN).
    #[arg(long, value_name = "CN", default_value = "pgsni CA")]
    pub common_name: String,

    /// How many days the CA is valid.
    #[arg(long, value_name = "N", default_value_t = authority::DEFAULT_CA_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,

    /// Replace an existing CA. Certificates it issued no longer verify
    /// against the new one.
    #[arg(long)]
    pub force: bool,
}

/// Options of `pgsni certs issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The tenant cluster's name (one DNS label); names the files too.
    #[arg(value_name = "NAME", required_unless_present = "client")]
    pub name: Option<String>,

    /// The public domain under which the tenant is reached as NAME.DOMAIN.
    #[arg(long, value_name = "DOMAIN", required_unless_present = "client")]
    pub domain: Option<String>,

    /// The tenant's Kubernetes namespace: adds NAME-rw, NAME-r and NAME-ro,
    /// each also as .NS and .NS.svc.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Issue a client certificate for this Postgres role instead (its common
    /// name, extended key usage clientAuth), e.g. streaming_replica.
    #[arg(long, value_name = "USER", conflicts_with_all = ["name", "domain", "namespace"])]
    pub client: Option<String>,

    /// How many days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = authority::DEFAULT_LEAF_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,

    /// Replace existing files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Runs `pgsni certs`; an error is printed and exits 1.
pub fn main(args: &CertsArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgsni certs: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `pgsni certs`, printing what was written.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    match &args.command {
        CertsCommand::Init(init) => {
            let subject = CaSubject {
                common_name: init.common_name.clone(),
                organization: Some(init.organization.clone()).filter(|o| !o.is_empty()),
                unit: init.unit.clone().filter(|u| !u.is_empty()),
            };
            let (_, ca) = Authority::generate(&subject, init.days)?;
            let (cert, key) = write_pair(&args.dir, CA_STEM, &ca, init.force)?;
            println!(
                "wrote {} (CA {:?}, valid until {})",
                cert.display(),
                init.common_name,
                ca.not_after.date()
            );
            println!("wrote {} (private, mode 0600)", key.display());
        }
        CertsCommand::Issue(issue) => {
            // Validate before touching the CA.
            let subject = match (&issue.client, &issue.name, &issue.domain) {
                (Some(user), _, _) => Subject::Client(ClientUser::new(user)?),
                (None, Some(name), Some(domain)) => {
                    Subject::Server(TenantNames::new(name, domain, issue.namespace.as_deref())?)
                }
                // clap requires NAME and --domain unless --client is given.
                _ => anyhow::bail!("give NAME and --domain, or --client USER"),
            };
            let stem = match &subject {
                Subject::Client(user) => user.as_str(),
                Subject::Server(names) => names.name(),
            };
            // Not even --force may put a leaf where the CA lives.
            if stem == CA_STEM {
                anyhow::bail!("the name \"ca\" is taken by the CA's own files (ca.pem, ca.key)");
            }
            let ca = load_authority(&args.dir)?;
            let (issued, what) = match &subject {
                Subject::Client(user) => (
                    ca.issue_client(user, issue.days)?,
                    format!("client certificate for role {}", user.as_str()),
                ),
                Subject::Server(names) => (
                    ca.issue_server(names, issue.days)?,
                    format!("for {}", names.dns_names().join(", ")),
                ),
            };
            let (cert, key) = write_pair(&args.dir, stem, &issued, issue.force)?;
            println!(
                "wrote {} ({what}; valid until {})",
                cert.display(),
                issued.not_after.date()
            );
            println!("wrote {} (private, mode 0600)", key.display());
        }
    }
    Ok(())
}

/// Who an issued certificate is for.
enum Subject {
    /// A Postgres role, with a client certificate.
    Client(ClientUser),
    /// A tenant cluster, with a server certificate.
    Server(TenantNames),
}

/// Loads the CA kept in `dir`.
pub fn load_authority(dir: &Path) -> anyhow::Result<Authority> {
    let cert_path = dir.join(format!("{CA_STEM}.pem"));
    let key_path = dir.join(format!("{CA_STEM}.key"));
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (create a CA first with `pgsni certs init`)",
                path.display()
            )
        })
    };
    let (cert, key) = (read(&cert_path)?, read(&key_path)?);
    Authority::from_pem(&cert, &key).with_context(|| {
        format!(
            "cannot use the CA in {} and {}",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// Writes `issued` as `DIR/STEM.pem` and `DIR/STEM.key` (mode 0600); returns
/// both paths.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    issued: &Issued,
    force: bool,
) -> Result<(PathBuf, PathBuf), WriteError> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    files::write_all(
        &[
            // The key first: a certificate is never on disk without its key.
            Output {
                path: &key,
                contents: &issued.key_pem,
                mode: KEY_MODE,
            },
            Output {
                path: &cert,
                contents: &issued.cert_pem,
                mode: CERT_MODE,
            },
        ],
        force,
    )?;
    Ok((cert, key))
}
