//! A throw-away PKI for integration tests: one self-signed CA and leaf
//! certificates issued by it, written as PEM files into a temporary directory.
//!
//! When the tests run as root, the directory is made traversable and the
//! leaf files are handed to the `postgres` OS user (key mode 0600), so that a
//! PostgreSQL server started under that user can read them in place.
//! [`super::postgres::PgCluster`] copies them into its own data directory
//! anyway, so any [`LeafFiles`] works there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tempfile::TempDir;

use super::os;

/// A test certificate authority living in a temporary directory that is
/// removed when the `TestPki` is dropped.
pub struct TestPki {
    dir: TempDir,
    ca_path: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    counter: AtomicUsize,
}

/// A leaf certificate and its private key, both as PEM files on disk and as
/// PEM text.
#[derive(Clone, Debug)]
pub struct LeafFiles {
    /// Path of the PEM certificate (leaf only, no chain).
    pub cert_path: PathBuf,
    /// Path of the PEM (PKCS#8) private key.
    pub key_path: PathBuf,
    /// The certificate as PEM text.
    pub cert_pem: String,
    /// The private key as PEM text.
    pub key_pem: String,
}

impl TestPki {
    /// Creates a new CA (ECDSA P-256, self-signed) and writes its certificate
    /// to `ca.crt` in a fresh temporary directory.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("pgsni-pki-")
            .tempdir()
            .expect("create PKI temp dir");
        if os::is_root() {
            // Let the `postgres` user traverse the directory.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                .expect("chmod PKI dir");
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        // A unique name per CA, so that a leaf from another TestPki fails as
        // "unknown issuer" rather than as a bad signature.
        static NEXT_CA: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        dn.push(
            DnType::CommonName,
            format!(
                "pgsni test CA {}-{}-{nanos}",
                std::process::id(),
                NEXT_CA.fetch_add(1, Ordering::Relaxed)
            ),
        );
        dn.push(DnType::OrganizationName, "pgsni tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_pem = cert.pem();
        let ca_path = dir.path().join("ca.crt");
        fs::write(&ca_path, &ca_pem).expect("write CA cert");
        fs::set_permissions(&ca_path, fs::Permissions::from_mode(0o644)).expect("chmod CA cert");

        TestPki {
            dir,
            ca_path,
            ca_pem,
            issuer: Issuer::new(params, key),
            counter: AtomicUsize::new(0),
        }
    }

    /// Issues a leaf certificate for `dns_name` (SAN = that name, EKU
    /// serverAuth), signed by this CA.
    pub fn issue(&self, dns_name: &str) -> LeafFiles {
        self.issue_for(&[dns_name])
    }

    /// Issues a leaf certificate whose SAN holds every name in `dns_names`
    /// (the first one is also the subject CN). Wildcards like
    /// `*.db.example.com` are allowed.
    pub fn issue_for(&self, dns_names: &[&str]) -> LeafFiles {
        assert!(!dns_names.is_empty(), "a leaf needs at least one name");
        let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, dns_names[0]);
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");

        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let stem: String = dns_names[0]
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert_path = self.dir.path().join(format!("{stem}-{n}.crt"));
        let key_path = self.dir.path().join(format!("{stem}-{n}.key"));
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        write_private(&cert_path, &cert_pem, 0o644);
        write_private(&key_path, &key_pem, 0o600);
        LeafFiles {
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        }
    }

    /// Path of the CA certificate (PEM), usable as libpq's `sslrootcert`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The temporary directory holding every file of this PKI.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A rustls root store trusting only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        root_store_from_pem(self.ca_pem.as_bytes())
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// Builds a rustls root store from every certificate found in `pem`.
///
/// Panics if `pem` holds no usable certificate.
pub fn root_store_from_pem(pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.expect("parse CA PEM");
        roots.add(cert).expect("add CA to root store");
    }
    assert!(!roots.is_empty(), "no certificate in the CA PEM");
    roots
}

/// Writes `contents` to `path` with `mode`; when running as root, hands the
/// file to the `postgres` user so the server can read it.
fn write_private(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if os::is_root() {
        if let Some((uid, gid)) = os::postgres_ids() {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}
