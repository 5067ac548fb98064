//! The key material of terminated routes: each route's certificate and key,
//! and the CAs that `backend_tls = "verify-full"` checks backends against.
//!
//! Files are read when a routes table that names them is about to be put in
//! force ([`IdentityStore::prepare`]): a table whose files cannot be loaded
//! is refused and the last good one stays, like a table that does not parse.
//! A table with only passthrough routes names no file, so nothing is read.
//! Files already loaded are kept as they are across table reloads (they are
//! keyed by their paths), and let go once no table in force names them.
//!
//! Issuers rotate certificates, so files are re-read when they change
//! ([`watch`]): the directories holding them are watched (editors, `mv` and
//! Kubernetes' `..data` symlink swaps replace files rather than write them),
//! with a periodic re-read as a backstop. A changed pair is swapped in at
//! once for new handshakes, through an [`ArcSwap`] behind the rustls
//! certificate resolver; sessions already established keep the keys they
//! negotiated and are not disturbed. A pair that does not load (a key that
//! does not match its certificate, a half-written file) keeps the previous
//! pair in force, is logged, and counts as
//! `pgsni_certificate_reloads_total{result="error"}`.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use notify::{RecursiveMode, Watcher};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;
use tokio::sync::{mpsc, watch as channel};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use crate::metrics::CERTIFICATE_RELOADS_TOTAL;
use crate::proxy::session::ALPN_POSTGRESQL;
use crate::routing::table::{BackendTls, IdentityFiles, RouteTable};

/// The largest PEM file read: a long chain is a few tens of KiB, and this
/// bounds what a wrong path (a device, a log) can make pgsni load.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How long to wait after a change event for the writer to finish: a
/// rotation renames two files, and a symlink swap makes several events.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why key material could not be loaded.
#[derive(Debug, Error)]
pub enum MaterialError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than any PEM file pgsni expects.
    #[error("{}: larger than {MAX_PEM_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM, or holds no item of the kind needed.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the material: an unsupported key type, a key that
    /// does not match the certificate, an unusable CA certificate.
    #[error("{}: {source}", path.display())]
    Refused {
        /// The file at fault (the key, for a mismatched pair).
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// A rotation-aware identity: the certified key new handshakes use.
#[derive(Debug)]
struct CurrentKey(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentKey {
    // The route was chosen by the server name already; every hello that
    // reaches this identity gets its current pair.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// What a set of watched files holds, to tell a change from a re-read.
/// Only ever compared, never trusted for anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint(u64);

impl Fingerprint {
    /// Stands for files that could not be read.
    const UNREADABLE: Self = Self(0);

    fn of(contents: &impl Hash) -> Self {
        let mut hasher = DefaultHasher::new();
        contents.hash(&mut hasher);
        Self(hasher.finish().max(1))
    }
}

/// Reads one PEM file, bounded by [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, MaterialError> {
    let mut contents = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES + 1).read_to_end(&mut contents))
        .map_err(|source| MaterialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if contents.len() as u64 > MAX_PEM_BYTES {
        return Err(MaterialError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(contents)
}

/// Builds a certified key from a certificate chain and its private key.
fn certified_key(
    files: &IdentityFiles,
    (cert, key): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, MaterialError> {
    let pem = |path: &Path, what: String| MaterialError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.certificate, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(&files.certificate, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| pem(&files.private_key, e.to_string()))?;
    // Checks that the key is the certificate's: a mismatched pair would fail
    // every handshake, so it must never replace a working one.
    CertifiedKey::from_der(chain, key, provider).map_err(|source| MaterialError::Refused {
        path: files.private_key.clone(),
        source,
    })
}

/// Builds the client configuration of `verify-full` backends from CA
/// certificates.
fn ca_config(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<ClientConfig, MaterialError> {
    let refused = |source| MaterialError::Refused {
        path: path.to_path_buf(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| MaterialError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        roots.add(cert).map_err(refused)?;
    }
    if roots.is_empty() {
        return Err(MaterialError::Pem {
            path: path.to_path_buf(),
            what: "no certificate in the file".into(),
        });
    }
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}

/// One re-read of a set of files: `None` if their contents are the ones
/// last seen, else whether the new contents were built and installed. Bad
/// contents are reported once, not at every re-read.
fn reload<C: Hash, B>(
    what: &dyn fmt::Display,
    seen: &Mutex<Fingerprint>,
    contents: Result<C, MaterialError>,
    build: impl FnOnce(&C) -> Result<B, MaterialError>,
    install: impl FnOnce(B),
) -> Option<bool> {
    let fingerprint = contents
        .as_ref()
        .map_or(Fingerprint::UNREADABLE, Fingerprint::of);
    {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == fingerprint {
            return None;
        }
        *seen = fingerprint;
    }
    let result = match contents.and_then(|contents| build(&contents)) {
        Ok(built) => {
            install(built);
            info!(files = %what, "reloaded; new handshakes use it");
            "ok"
        }
        Err(error) => {
            warn!(files = %what, %error, "not reloaded; the previous one stays in force");
            "error"
        }
    };
    ::metrics::counter!(CERTIFICATE_RELOADS_TOTAL, "result" => result).increment(1);
    Some(result == "ok")
}

/// A terminated route's certificate and key, and the TLS acceptor that
/// presents them.
pub struct Identity {
    files: IdentityFiles,
    current: Arc<CurrentKey>,
    acceptor: TlsAcceptor,
    seen: Mutex<Fingerprint>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn load(files: IdentityFiles, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError> {
        let contents = Self::read(&files)?;
        let key = certified_key(&files, &contents, provider)?;
        let current = Arc::new(CurrentKey(ArcSwap::from_pointee(key)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| MaterialError::Refused {
                path: files.certificate.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // Offered to every client and required of direct-TLS ones, as PG17
        // servers do; classic clients that offer no ALPN still connect.
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Self {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            seen: Mutex::new(Fingerprint::of(&contents)),
        })
    }

    fn read(files: &IdentityFiles) -> Result<(Vec<u8>, Vec<u8>), MaterialError> {
        Ok((read_pem(&files.certificate)?, read_pem(&files.private_key)?))
    }

    fn refresh(&self, provider: &CryptoProvider) -> Option<bool> {
        let what = format_args!(
            "certificate {} and key {}",
            self.files.certificate.display(),
            self.files.private_key.display()
        );
        reload(
            &what,
            &self.seen,
            Self::read(&self.files),
            |contents| certified_key(&self.files, contents, provider),
            |key| self.current.0.store(Arc::new(key)),
        )
    }

    /// The acceptor presenting this identity's current pair.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The certificate chain new handshakes present.
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.0.load().cert.clone()
    }
}

/// The CA a `verify-full` backend's certificate must chain to, as a rustls
/// client configuration.
struct BackendCa {
    path: PathBuf,
    config: ArcSwap<ClientConfig>,
    seen: Mutex<Fingerprint>,
}

impl BackendCa {
    fn load(path: PathBuf, provider: &Arc<CryptoProvider>) -> Result<Self, MaterialError> {
        let contents = read_pem(&path)?;
        let config = ca_config(&path, &contents, provider)?;
        Ok(Self {
            path,
            config: ArcSwap::from_pointee(config),
            seen: Mutex::new(Fingerprint::of(&contents)),
        })
    }

    fn refresh(&self, provider: &Arc<CryptoProvider>) -> Option<bool> {
        reload(
            &format_args!("backend CA {}", self.path.display()),
            &self.seen,
            read_pem(&self.path),
            |contents| ca_config(&self.path, contents, provider),
            |config| self.config.store(Arc::new(config)),
        )
    }
}

/// `backend_tls = "require"`: encryption without authentication, as libpq's
/// `sslmode=require`. Any certificate is accepted, but the handshake
/// signature is still checked against the certificate presented, so the
/// session keys are bound to that certificate's key: a passive eavesdropper
/// learns nothing, while an active impersonator is not detected (that is
/// what `verify-full` is for).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How to talk to a terminated route's backend.
#[derive(Clone)]
pub enum BackendSecurity {
    /// Plaintext.
    Plain,
    /// TLS, after the SSLRequest exchange.
    Tls(TlsConnector),
}

/// The loaded identities and backend CAs of every terminated route in force.
pub struct IdentityStore {
    provider: Arc<CryptoProvider>,
    identities: DashMap<IdentityFiles, Arc<Identity>>,
    cas: DashMap<PathBuf, Arc<BackendCa>>,
    encrypt_only: TlsConnector,
    /// Bumped whenever the set of files changes, so that the watcher
    /// follows.
    files: channel::Sender<u64>,
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityStore")
            .field("identities", &self.identities.len())
            .field("backend_cas", &self.cas.len())
            .finish_non_exhaustive()
    }
}

impl IdentityStore {
    /// An empty store.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut encrypt_only = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly {
                provider: provider.clone(),
            }))
            .with_no_client_auth();
        encrypt_only.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Arc::new(Self {
            provider,
            identities: DashMap::new(),
            cas: DashMap::new(),
            encrypt_only: TlsConnector::from(Arc::new(encrypt_only)),
            files: channel::Sender::new(0),
        }))
    }

    /// Loads what `table`'s terminated routes need and the store lacks.
    /// Nothing is added unless everything loads; what is loaded already is
    /// not read again (the watcher keeps it current).
    pub fn prepare(&self, table: &RouteTable) -> Result<(), MaterialError> {
        let mut identities = Vec::new();
        let mut cas = Vec::new();
        for termination in table.terminations() {
            let files = &termination.identity;
            if !self.identities.contains_key(files) && !identities.iter().any(|(f, _)| f == files) {
                let identity = Identity::load(files.clone(), &self.provider)?;
                identities.push((files.clone(), Arc::new(identity)));
            }
            if let BackendTls::VerifyFull { ca } = &termination.backend_tls {
                if !self.cas.contains_key(ca) && !cas.iter().any(|(p, _)| p == ca) {
                    let loaded = BackendCa::load(ca.clone(), &self.provider)?;
                    cas.push((ca.clone(), Arc::new(loaded)));
                }
            }
        }
        if identities.is_empty() && cas.is_empty() {
            return Ok(());
        }
        for (files, identity) in identities {
            debug!(certificate = %files.certificate.display(), "identity loaded");
            self.identities.insert(files, identity);
        }
        for (path, ca) in cas {
            self.cas.insert(path, ca);
        }
        self.files.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Lets go of what no route of `table` (now in force) names. Sessions
    /// that hold an identity keep it until they end.
    pub fn retain(&self, table: &RouteTable) {
        let before = (self.identities.len(), self.cas.len());
        let named: Vec<_> = table.terminations().collect();
        self.identities
            .retain(|files, _| named.iter().any(|t| &t.identity == files));
        self.cas.retain(|path, _| {
            named
                .iter()
                .any(|t| matches!(&t.backend_tls, BackendTls::VerifyFull { ca } if ca == path))
        });
        if (self.identities.len(), self.cas.len()) != before {
            self.files.send_modify(|generation| *generation += 1);
        }
    }

    /// The identity loaded from `files`, if a table in force names them.
    pub fn identity(&self, files: &IdentityFiles) -> Option<Arc<Identity>> {
        self.identities
            .get(files)
            .map(|entry| entry.value().clone())
    }

    /// How to reach a backend with `backend_tls`; `None` if its CA is not
    /// loaded (only between a table's preparation and its removal).
    pub fn backend_security(&self, backend_tls: &BackendTls) -> Option<BackendSecurity> {
        Some(match backend_tls {
            BackendTls::Disable => BackendSecurity::Plain,
            BackendTls::Require => BackendSecurity::Tls(self.encrypt_only.clone()),
            BackendTls::VerifyFull { ca } => {
                let config = self.cas.get(ca)?.config.load_full();
                BackendSecurity::Tls(TlsConnector::from(config))
            }
        })
    }

    /// Re-reads every file and swaps in what changed and loads; returns how
    /// many were reloaded and how many refused. Blocking file IO.
    pub fn refresh(&self) -> (usize, usize) {
        let identities: Vec<_> = self.identities.iter().map(|e| e.value().clone()).collect();
        let cas: Vec<_> = self.cas.iter().map(|e| e.value().clone()).collect();
        let mut totals = (0, 0);
        let mut count = |result: Option<bool>| match result {
            Some(true) => totals.0 += 1,
            Some(false) => totals.1 += 1,
            None => {}
        };
        for identity in identities {
            count(identity.refresh(&self.provider));
        }
        for ca in cas {
            count(ca.refresh(&self.provider));
        }
        totals
    }

    /// The directories holding the files in use.
    fn directories(&self) -> BTreeSet<PathBuf> {
        let identities = self.identities.iter().flat_map(|entry| {
            let files = entry.key();
            [parent(&files.certificate), parent(&files.private_key)]
        });
        let cas = self.cas.iter().map(|entry| parent(entry.key()));
        identities.chain(cas).collect()
    }
}

impl crate::routing::watcher::Prepare for IdentityStore {
    fn prepare(&self, table: &RouteTable) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        IdentityStore::prepare(self, table).map_err(Into::into)
    }

    fn committed(&self, table: &RouteTable) {
        self.retain(table);
    }
}

/// The directory holding `path` (the current directory for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Keeps the store's files current: re-reads them when their directories
/// see an event (after a short debounce), and every `backstop`. Follows the
/// set of files as tables come and go. Runs until the task is dropped; if
/// directories cannot be watched, that is logged and the backstop remains.
pub async fn watch(store: Arc<IdentityStore>, backstop: Duration) {
    let (events, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already holds a pending re-read: coalesce.
            let _ = events.try_send(());
        }
    })
    .map_err(|error| warn!(%error, "cannot watch certificate files; relying on periodic re-reads"))
    .ok();
    let mut watched = BTreeSet::new();
    let mut files = store.files.subscribe();
    let mut tick = tokio::time::interval(backstop);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        if let Some(watcher) = &mut watcher {
            follow(watcher, &mut watched, store.directories());
        }
        tokio::select! {
            Some(()) = changed.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while changed.try_recv().is_ok() {}
            }
            // New files were just loaded: only the watches need updating.
            Ok(()) = files.changed() => continue,
            _ = tick.tick() => {}
        }
        let refreshing = store.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || refreshing.refresh()).await {
            warn!(%error, "certificate re-read failed");
        }
    }
}

/// Watches exactly the directories in `wanted`.
fn follow(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) {
    for gone in watched.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    watched.retain(|directory| wanted.contains(directory));
    for directory in wanted {
        if watched.contains(&directory) {
            continue;
        }
        match watcher.watch(&directory, RecursiveMode::NonRecursive) {
            Ok(()) => {
                debug!(directory = %directory.display(), "watching certificate directory");
                watched.insert(directory);
            }
            // Retried at the next change of the file set; the backstop
            // covers it meanwhile.
            Err(error) => {
                warn!(directory = %directory.display(), %error, "cannot watch certificate directory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::{BackendTemplate, Pattern, Route, Termination, TlsMode};

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write_pair(dir: &Path, (cert, key): &(String, String)) -> IdentityFiles {
        let files = IdentityFiles {
            certificate: dir.join("tls.crt"),
            private_key: dir.join("tls.key"),
        };
        // Replaced by rename, as issuers and Kubernetes do.
        for (path, contents) in [(&files.certificate, cert), (&files.private_key, key)] {
            let staged = path.with_extension("tmp");
            std::fs::write(&staged, contents).unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        files
    }

    fn table(routes: &[(&str, Option<&IdentityFiles>)]) -> RouteTable {
        let routes = routes
            .iter()
            .map(|(name, files)| {
                let route = Route::new(
                    Pattern::parse(name).unwrap(),
                    vec![BackendTemplate::parse("127.0.0.1:1", false).unwrap()],
                )
                .unwrap();
                match files {
                    None => route,
                    Some(files) => route.with_mode(TlsMode::Terminate(Arc::new(Termination {
                        identity: (*files).clone(),
                        backend_tls: BackendTls::Disable,
                    }))),
                }
            })
            .collect();
        RouteTable::new(routes).unwrap()
    }

    /// The leaf certificate new handshakes with `files` present.
    fn served(store: &IdentityStore, files: &IdentityFiles) -> Vec<u8> {
        store.identity(files).unwrap().certificate_chain()[0].to_vec()
    }

    fn der_of(cert_pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_passthrough_table_reads_no_file() {
        let store = IdentityStore::new().unwrap();
        store
            .prepare(&table(&[("a.example.com", None), ("b.example.com", None)]))
            .unwrap();
        assert_eq!(store.identities.len(), 0);
        assert_eq!(store.cas.len(), 0);
        assert!(store.directories().is_empty());
        assert_eq!(store.refresh(), (0, 0));
    }

    #[test]
    fn a_table_whose_keys_do_not_load_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), &pair("a.example.com"));
        let missing = IdentityFiles {
            certificate: dir.path().join("missing.crt"),
            private_key: dir.path().join("missing.key"),
        };
        let store = IdentityStore::new().unwrap();
        let error = store
            .prepare(&table(&[
                ("a.example.com", Some(&good)),
                ("b.example.com", Some(&missing)),
            ]))
            .unwrap_err();
        assert!(error.to_string().contains("missing.crt"), "{error}");
        assert_eq!(
            store.identities.len(),
            0,
            "nothing of a refused table stays"
        );

        let mismatched = IdentityFiles {
            certificate: good.certificate.clone(),
            private_key: dir.path().join("other.key"),
        };
        std::fs::write(&mismatched.private_key, pair("x").1).unwrap();
        let error = store
            .prepare(&table(&[("a.example.com", Some(&mismatched))]))
            .unwrap_err();
        assert!(matches!(error, MaterialError::Refused { .. }), "{error}");
    }

    #[test]
    fn rotation_swaps_the_pair_and_a_bad_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair("a.example.com");
        let files = write_pair(dir.path(), &first);
        let store = IdentityStore::new().unwrap();
        let routes = table(&[
            ("a.example.com", Some(&files)),
            ("b.example.com", Some(&files)),
        ]);
        store.prepare(&routes).unwrap();
        assert_eq!(store.identities.len(), 1, "shared by both routes");
        assert_eq!(served(&store, &files), der_of(&first.0));
        assert_eq!(store.refresh(), (0, 0), "unchanged files are not reloaded");

        let second = pair("a.example.com");
        write_pair(dir.path(), &second);
        assert_eq!(store.refresh(), (1, 0));
        assert_eq!(served(&store, &files), der_of(&second.0));

        // A key that is not the certificate's: refused, once.
        let (third_cert, _) = pair("a.example.com");
        write_pair(dir.path(), &(third_cert, second.1.clone()));
        assert_eq!(store.refresh(), (0, 1));
        assert_eq!(store.refresh(), (0, 0), "reported once");
        assert_eq!(served(&store, &files), der_of(&second.0));

        // Reloading the same table reads nothing; a table without the
        // route lets the identity go.
        store.prepare(&routes).unwrap();
        assert_eq!(served(&store, &files), der_of(&second.0));
        let passthrough = table(&[("a.example.com", None)]);
        store.prepare(&passthrough).unwrap();
        store.retain(&passthrough);
        assert!(store.identity(&files).is_none());
    }

    #[tokio::test]
    async fn the_watcher_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &pair("a.example.com"));
        let store = IdentityStore::new().unwrap();
        store
            .prepare(&table(&[("a.example.com", Some(&files))]))
            .unwrap();
        let task = tokio::spawn(watch(store.clone(), Duration::from_secs(3600)));
        tokio::time::sleep(Duration::from_millis(200)).await;

        let next = pair("a.example.com");
        write_pair(dir.path(), &next);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while served(&store, &files) != der_of(&next.0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rotation not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
