//! `pgsni certs`: the CA and the certificates it issues, checked with the
//! same verifier clients use (rustls/webpki), field by field, and served by
//! a real PostgreSQL to psql with `sslmode=verify-full`.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use common::{psql, root_store_from_pem, tenant_conninfo, LeafFiles, PgCluster};

/// The names `issue alpha --domain db.example.com --namespace tenants`
/// must produce, and nothing else.
const ALPHA_NAMES: [&str; 10] = [
    "alpha.db.example.com",
    "alpha-rw",
    "alpha-rw.tenants",
    "alpha-rw.tenants.svc",
    "alpha-r",
    "alpha-r.tenants",
    "alpha-r.tenants.svc",
    "alpha-ro",
    "alpha-ro.tenants",
    "alpha-ro.tenants.svc",
];

/// Runs `pgsni certs --dir DIR ARGS…`.
fn certs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsni"))
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run pgsni")
}

/// Like [`certs`], and the command must succeed.
fn certs_ok(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(
        out.status.success(),
        "pgsni certs {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Like [`certs`], and the command must fail (1, or 2 for a usage error);
/// returns its stderr.
fn certs_err(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "pgsni certs {args:?} did not fail: {}",
        out.status
    );
    String::from_utf8(out.stderr).expect("UTF-8 output")
}

/// A directory with a CA and the alpha tenant's certificate.
fn issued() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    certs_ok(
        dir.path(),
        &["init", "--organization", "Example", "--unit", "Databases"],
    );
    certs_ok(
        dir.path(),
        &[
            "issue",
            "alpha",
            "--domain",
            "db.example.com",
            "--namespace",
            "tenants",
        ],
    );
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_verifier(ca: &Path) -> Arc<WebPkiServerVerifier> {
    let roots = Arc::new(root_store_from_pem(read(ca).as_bytes()));
    WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .expect("server verifier")
}

#[test]
fn the_leaf_verifies_for_each_name_and_no_other() {
    let dir = issued();
    let verifier = server_verifier(&dir.path().join("ca.pem"));
    let leaf = cert_der(&dir.path().join("alpha.pem"));
    let verify = |name: &str| {
        let name = ServerName::try_from(name.to_owned()).expect("a valid name");
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
    };
    for name in ALPHA_NAMES {
        verify(name).unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
    }
    for wrong in [
        "beta.db.example.com",
        "db.example.com",
        "x.alpha.db.example.com",
        "alpha",
        "alpha-rw.other",
        "alpha-rw.tenants.svc.cluster.local",
    ] {
        assert!(verify(wrong).is_err(), "{wrong} verifies but must not");
    }

    // Another CA does not vouch for it.
    let other = tempfile::tempdir().unwrap();
    certs_ok(other.path(), &["init"]);
    let name = ServerName::try_from("alpha.db.example.com").unwrap();
    assert!(server_verifier(&other.path().join("ca.pem"))
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .is_err());
}

#[test]
fn certificates_have_the_documented_shape() {
    let dir = issued();
    let ca_der = cert_der(&dir.path().join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("parse CA");
    let attribute = |cert: &X509Certificate<'_>, oid: &str| -> Vec<String> {
        cert.subject()
            .iter_attributes()
            .filter(|a| a.attr_type().to_id_string() == oid)
            .map(|a| a.as_str().expect("string attribute").to_owned())
            .collect()
    };
    assert_eq!(attribute(&ca, "2.5.4.3"), ["pgsni CA"]);
    assert_eq!(attribute(&ca, "2.5.4.10"), ["Example"]);
    assert_eq!(attribute(&ca, "2.5.4.11"), ["Databases"]);
    assert_eq!(ca.subject(), ca.issuer(), "the CA is self-signed");
    let constraints = ca.basic_constraints().unwrap().expect("basic constraints");
    assert!(constraints.value.ca);
    assert!(constraints.value.path_len_constraint.is_none());
    assert!(ca
        .key_usage()
        .unwrap()
        .expect("key usage")
        .value
        .key_cert_sign());
    let ca_days =
        (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
    assert!((3650..=3651).contains(&ca_days), "CA valid {ca_days} days");
    assert_eq!(
        ca.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "an EC key"
    );

    let leaf_der = cert_der(&dir.path().join("alpha.pem"));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("parse leaf");
    assert_eq!(attribute(&leaf, "2.5.4.3"), ["alpha.db.example.com"]);
    assert_eq!(leaf.issuer(), ca.subject());
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("subject alternative names")
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => dns.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(sans, ALPHA_NAMES);
    assert!(sans.iter().all(|name| !name.contains('*')));
    let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!leaf.is_ca());
    let leaf_days =
        (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert!(
        (397..=398).contains(&leaf_days),
        "leaf valid {leaf_days} days"
    );
    // The leaf alone: one certificate in the file.
    assert_eq!(
        CertificateDer::pem_file_iter(dir.path().join("alpha.pem"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn keys_are_private_and_nothing_is_overwritten_without_force() {
    let dir = issued();
    for key in ["ca.key", "alpha.key"] {
        assert_eq!(mode(&dir.path().join(key)), 0o600, "{key}");
    }
    for cert in ["ca.pem", "alpha.pem"] {
        assert_eq!(mode(&dir.path().join(cert)), 0o644, "{cert}");
    }
    let ca_before = read(&dir.path().join("ca.pem"));
    let leaf_before = read(&dir.path().join("alpha.pem"));

    let stderr = certs_err(dir.path(), &["init"]);
    assert!(stderr.contains("ca.key already exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    let stderr = certs_err(
        dir.path(),
        &["issue", "alpha", "--domain", "db.example.com"],
    );
    assert!(stderr.contains("alpha.key already exists"), "{stderr}");
    assert_eq!(read(&dir.path().join("ca.pem")), ca_before);
    assert_eq!(read(&dir.path().join("alpha.pem")), leaf_before);

    certs_ok(
        dir.path(),
        &["issue", "alpha", "--domain", "db.example.com", "--force"],
    );
    assert_ne!(read(&dir.path().join("alpha.pem")), leaf_before);
    assert_eq!(mode(&dir.path().join("alpha.key")), 0o600);
    certs_ok(dir.path(), &["init", "--force"]);
    assert_ne!(read(&dir.path().join("ca.pem")), ca_before);
    // No temporary files are left behind.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["alpha.key", "alpha.pem", "ca.key", "ca.pem"]);
}

#[test]
fn a_client_certificate_for_streaming_replica() {
    let dir = issued();
    let out = certs_ok(dir.path(), &["issue", "--client", "streaming_replica"]);
    assert!(out.contains("streaming_replica.pem"), "{out}");
    assert_eq!(mode(&dir.path().join("streaming_replica.key")), 0o600);

    let der = cert_der(&dir.path().join("streaming_replica.pem"));
    let (_, cert) = X509Certificate::from_der(&der).expect("parse client cert");
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["streaming_replica"]);
    let eku = cert.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.client_auth && !eku.server_auth);

    // What a server that asks for client certificates checks.
    let roots = Arc::new(root_store_from_pem(
        read(&dir.path().join("ca.pem")).as_bytes(),
    ));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .expect("client verifier");
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .expect("the client certificate verifies");
    // The server certificate is no client certificate.
    assert!(verifier
        .verify_client_cert(
            &cert_der(&dir.path().join("alpha.pem")),
            &[],
            UnixTime::now()
        )
        .is_err());

    let stderr = certs_err(
        dir.path(),
        &[
            "issue",
            "--client",
            "streaming_replica",
            "--domain",
            "x.com",
        ],
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn invalid_requests_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = certs_err(dir.path(), &["issue", "alpha", "--domain", "example.com"]);
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert!(stderr.contains("pgsni certs init"), "{stderr}");

    certs_ok(dir.path(), &["init"]);
    for (args, reason) in [
        (&["issue", "*", "--domain", "example.com"][..], "wildcards"),
        (&["issue", "Alpha", "--domain", "example.com"], "lowercase"),
        (&["issue", "a", "--domain", "*.example.com"], "wildcards"),
        (&["issue", "a", "--domain", "ex ample.com"], "lowercase"),
        (
            &[
                "issue",
                "a",
                "--domain",
                "example.com",
                "--namespace",
                "a.b",
            ],
            "namespace",
        ),
        (
            &["issue", "../a", "--domain", "example.com"],
            "cluster name",
        ),
        (&["issue", "--client", "../x"], "client user"),
        (
            &["issue", "ca", "--domain", "example.com"],
            "CA's own files",
        ),
        (&["issue", "a"], "--domain"),
    ] {
        let stderr = certs_err(dir.path(), args);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }

    // A key that does not belong to the certificate.
    let other = tempfile::tempdir().unwrap();
    certs_ok(other.path(), &["init"]);
    std::fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    let stderr = certs_err(dir.path(), &["issue", "a", "--domain", "example.com"]);
    assert!(stderr.contains("does not belong"), "{stderr}");
}

#[test]
fn postgres_serves_the_issued_leaf_to_psql_with_verify_full() {
    let dir = issued();
    let leaf = LeafFiles {
        cert_path: dir.path().join("alpha.pem"),
        key_path: dir.path().join("alpha.key"),
        cert_pem: read(&dir.path().join("alpha.pem")),
        key_pem: read(&dir.path().join("alpha.key")),
    };
    let cluster = PgCluster::start("certs", &leaf);
    let ca = dir.path().join("ca.pem");
    for name in ["alpha.db.example.com", "alpha-rw.tenants.svc", "alpha-ro"] {
        let out = psql(
            &tenant_conninfo(name, cluster.port(), &ca, "verify-full"),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        assert!(
            out.status.success(),
            "psql to {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }
    let out = psql(
        &tenant_conninfo("beta.db.example.com", cluster.port(), &ca, "verify-full"),
        "SELECT 1",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not match host name"),
        "unexpected psql error: {stderr}"
    );
}
