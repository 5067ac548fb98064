//! The routes file: TOML in, a validated [`RouteTable`] out.
//!
//! ```toml
//! [[route]]
//! server_name = "alpha.db.example.com"        # exact match, case-insensitive
//! backends = ["10.0.1.5:5432"]                # tried in order
//!
//! [[route]]
//! server_name = "*.data-1.use1.example.com"   # '*' matches one leftmost label
//! backends = ["{1}-rw.{1}.svc.cluster.local:5432"]
//!
//! [[route]]
//! server_name = "legacy.db.example.com"
//! backends = ["10.0.9.1:5432"]
//! default = true                              # hellos without SNI land here
//! proxy_protocol = "v2"                       # backend reads a PROXY v2 header
//! max_connections = 500                       # sessions this route may hold
//!
//! [[route]]
//! server_name = "beta.db.example.com"
//! backends = ["unix:/run/postgresql/.s.PGSQL.5432"]
//! tls = "terminate"                           # pgsni completes TLS itself
//! certificate = "/etc/pgsni/beta.pem"         # with this certificate chain
//! private_key = "/etc/pgsni/beta.key"         # and key (re-read on change)
//! backend_tls = "disable"                     # or "require", "verify-full"
//! # backend_ca = "/etc/pgsni/backend-ca.pem"  # for verify-full
//! ```
//!
//! Every error carries the line it was found on, so that an operator can fix
//! a rejected file without guessing. Parsing is pure: the files a terminated
//! route names are not read here (relative paths are taken from the routes
//! file's directory), so a table of passthrough routes never touches a key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::table::{
    BackendTemplate, BackendTls, IdentityFiles, Pattern, Route, RouteError, RouteTable,
    Termination, TlsMode,
};

/// The largest routes file pgsni reads: far above 100 000 routes, and a bound
/// on what a mistaken path (a device, a log) can make it load.
pub const MAX_ROUTES_FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: Vec<Spanned<RouteEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    server_name: Spanned<String>,
    backends: Spanned<Vec<Spanned<String>>>,
    /// The route for hellos without a server name; at most one.
    #[serde(default)]
    default: Option<Spanned<bool>>,
    /// `"v2"` to prefix backend connections with a PROXY v2 header.
    #[serde(default)]
    proxy_protocol: Option<Spanned<String>>,
    /// The most sessions the route may hold at once.
    #[serde(default)]
    max_connections: Option<Spanned<u32>>,
    /// `"passthrough"` (the default) or `"terminate"`.
    #[serde(default)]
    tls: Option<Spanned<String>>,
    /// A terminated route's certificate chain (PEM).
    #[serde(default)]
    certificate: Option<Spanned<String>>,
    /// A terminated route's private key (PEM).
    #[serde(default)]
    private_key: Option<Spanned<String>>,
    /// A terminated route's backend protection: `"disable"`, `"require"` or
    /// `"verify-full"`.
    #[serde(default)]
    backend_tls: Option<Spanned<String>>,
    /// The CA file for `backend_tls = "verify-full"`.
    #[serde(default)]
    backend_ca: Option<Spanned<String>>,
}

/// The keys only a terminated route may have, with their names for errors.
fn termination_keys(entry: &RouteEntry) -> [(&'static str, Option<&Spanned<String>>); 4] {
    [
        ("certificate", entry.certificate.as_ref()),
        ("private_key", entry.private_key.as_ref()),
        ("backend_tls", entry.backend_tls.as_ref()),
        ("backend_ca", entry.backend_ca.as_ref()),
    ]
}

/// A routes file that does not describe a valid table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesError {
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub reason: String,
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for RoutesError {}

/// A routes file that could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_ROUTES_FILE_BYTES`].
    #[error("{}: larger than {MAX_ROUTES_FILE_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file was read but is not a valid routes file.
    #[error("{}:{}", path.display(), located(error))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where and why.
        error: RoutesError,
    },
}

fn located(error: &RoutesError) -> String {
    match error.line {
        Some(line) => format!("{line}: {}", error.reason),
        None => format!(" {}", error.reason),
    }
}

/// Reads and parses the routes file at `path`, returning the table and the
/// bytes it was built from (so that a watcher can tell real changes apart).
pub fn load(path: &Path) -> Result<(RouteTable, Vec<u8>), LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > MAX_ROUTES_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let directory = path.parent().unwrap_or(Path::new(""));
    let table = parse_bytes_in(&bytes, Some(directory)).map_err(|error| LoadError::Invalid {
        path: path.to_owned(),
        error,
    })?;
    Ok((table, bytes))
}

/// Parses routes-file bytes (which must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<RouteTable, RoutesError> {
    parse_bytes_in(bytes, None)
}

/// Parses routes-file bytes, taking relative file paths from `directory`
/// (the routes file's own) when given, else as written.
fn parse_bytes_in(bytes: &[u8], directory: Option<&Path>) -> Result<RouteTable, RoutesError> {
    let text = std::str::from_utf8(bytes).map_err(|e| RoutesError {
        line: Some(line_of(bytes, e.valid_up_to())),
        reason: "the file is not valid UTF-8".into(),
    })?;
    parse_in(text, directory)
}

/// Parses the text of a routes file into a table. File paths of terminated
/// routes are kept as written.
pub fn parse(text: &str) -> Result<RouteTable, RoutesError> {
    parse_in(text, None)
}

fn parse_in(text: &str, directory: Option<&Path>) -> Result<RouteTable, RoutesError> {
    let at = |span: Range<usize>, reason: String| RoutesError {
        line: Some(line_of(text.as_bytes(), span.start)),
        reason,
    };
    let file: RoutesFile = toml::from_str(text).map_err(|e| RoutesError {
        line: e.span().map(|span| line_of(text.as_bytes(), span.start)),
        reason: e.message().trim_end().to_owned(),
    })?;

    let mut routes = Vec::with_capacity(file.route.len());
    let mut spans = Vec::with_capacity(file.route.len());
    for entry in file.route {
        let entry_span = entry.span();
        let entry = entry.into_inner();
        let mode = tls_mode(&entry, directory).map_err(|(span, reason)| at(span, reason))?;
        let pattern = Pattern::parse(entry.server_name.get_ref())
            .map_err(|e| at(entry.server_name.span(), e.to_string()))?;
        let wildcard = matches!(pattern, Pattern::Wildcard { .. });
        let backends_span = entry.backends.span();
        let backend_spans: Vec<_> = entry.backends.get_ref().iter().map(Spanned::span).collect();
        let backends = entry
            .backends
            .into_inner()
            .into_iter()
            .map(|b| {
                BackendTemplate::parse(b.get_ref(), wildcard)
                    .map_err(|e| at(b.span(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut route = Route::new(pattern, backends)
            .map_err(|e| at(backends_span, e.to_string()))?
            .with_mode(mode);
        if let Some(version) = entry.proxy_protocol {
            match version.get_ref().as_str() {
                "v2" => route = route.with_proxy_protocol(),
                "none" => {}
                other => {
                    return Err(at(
                        version.span(),
                        format!("proxy_protocol must be \"v2\" or \"none\", not {other:?}"),
                    ))
                }
            }
        }
        if let Some(max) = entry.max_connections {
            if *max.get_ref() == 0 {
                return Err(at(max.span(), "max_connections must be at least 1".into()));
            }
            route = route.with_max_connections(*max.get_ref() as usize);
        }
        if let Some(default) = entry.default.filter(|d| *d.get_ref()) {
            route = route
                .into_default()
                .map_err(|e| at(default.span(), e.to_string()))?;
        }
        // Checked here too (the table checks again) to point at the backend.
        route
            .check_backends()
            .map_err(|(index, e)| at(backend_spans[index].clone(), e.to_string()))?;
        routes.push(route);
        spans.push(entry_span);
    }
    RouteTable::new(routes)
        .map_err(|(index, error): (usize, RouteError)| at(spans[index].clone(), error.to_string()))
}

/// Reads a route's `tls` key and the keys that go with it. Errors come with
/// the span of the key at fault.
fn tls_mode(
    entry: &RouteEntry,
    directory: Option<&Path>,
) -> Result<TlsMode, (Range<usize>, String)> {
    let terminate = match &entry.tls {
        None => false,
        Some(tls) => match tls.get_ref().as_str() {
            "passthrough" => false,
            "terminate" => true,
            other => {
                return Err((
                    tls.span(),
                    format!("tls must be \"passthrough\" or \"terminate\", not {other:?}"),
                ))
            }
        },
    };
    if !terminate {
        // A passthrough route's TLS belongs to the tenant: it has no key here.
        if let Some((key, value)) = termination_keys(entry)
            .into_iter()
            .find_map(|(key, value)| Some((key, value?)))
        {
            return Err((
                value.span(),
                format!(
                    "{key} is only for routes with tls = \"terminate\"; \
                     a passthrough route's TLS ends at its backend, which holds the key"
                ),
            ));
        }
        return Ok(TlsMode::Passthrough);
    }
    let tls_span = entry.tls.as_ref().map(Spanned::span).unwrap_or_default();
    // A file path: required (blaming `needed_by` when missing), non-empty,
    // and relative to the routes file's directory unless absolute.
    let path = |key: &str, value: Option<&Spanned<String>>, needed_by: (&str, Range<usize>)| {
        let (why, span) = needed_by;
        let value = value.ok_or_else(|| (span, format!("{why} needs {key}")))?;
        if value.get_ref().is_empty() {
            return Err((value.span(), format!("{key} cannot be empty")));
        }
        let written = Path::new(value.get_ref());
        Ok(match directory {
            Some(directory) => directory.join(written),
            None => written.to_path_buf(),
        })
    };
    let terminated = ("tls = \"terminate\"", tls_span);
    let identity = IdentityFiles {
        certificate: path(
            "certificate",
            entry.certificate.as_ref(),
            terminated.clone(),
        )?,
        private_key: path(
            "private_key",
            entry.private_key.as_ref(),
            terminated.clone(),
        )?,
    };
    let backend_tls = entry.backend_tls.as_ref().ok_or_else(|| {
        let (why, span) = terminated.clone();
        (
            span,
            format!("{why} needs backend_tls: \"disable\", \"require\" or \"verify-full\""),
        )
    })?;
    let backend_tls = match backend_tls.get_ref().as_str() {
        "disable" => BackendTls::Disable,
        "require" => BackendTls::Require,
        "verify-full" => BackendTls::VerifyFull {
            ca: path(
                "backend_ca",
                entry.backend_ca.as_ref(),
                ("backend_tls = \"verify-full\"", backend_tls.span()),
            )?,
        },
        other => {
            return Err((
                backend_tls.span(),
                format!(
                    "backend_tls must be \"disable\", \"require\" or \"verify-full\", not {other:?}"
                ),
            ))
        }
    };
    if let (Some(ca), false) = (
        &entry.backend_ca,
        matches!(backend_tls, BackendTls::VerifyFull { .. }),
    ) {
        return Err((
            ca.span(),
            "backend_ca is only used with backend_tls = \"verify-full\"".into(),
        ));
    }
    Ok(TlsMode::Terminate(std::sync::Arc::new(Termination {
        identity,
        backend_tls,
    })))
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text[..end].iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let table = parse(
            r#"
[[route]]
server_name = "alpha.db.example.com"
backends = ["10.0.1.5:5432"]

[[route]]
server_name = "*.data-1.use1.example.com"
backends = ["{1}-rw.{1}.svc.cluster.local:5432"]
"#,
        )
        .unwrap();
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn empty_file_is_an_empty_table() {
        assert!(parse("").unwrap().is_empty());
    }

    fn error_of(text: &str) -> RoutesError {
        parse(text).expect_err("the file should be refused")
    }

    #[test]
    fn templates_whose_host_the_client_chooses_name_their_line() {
        for template in ["{1}", "{1}:5432", "db-{1}:5432"] {
            let error = error_of(&format!(
                "[[route]]\nserver_name = \"*.wild.example.com\"\n\nbackends = [\"{template}\"]\n"
            ));
            assert_eq!(error.line, Some(4), "{error}");
        }
        let error = error_of(
            "[[route]]\nserver_name = \"*.wild.example.com\"\nbackends = [\"{1}:5432\"]\n",
        );
        assert!(error.reason.contains("fixed domain"), "{error}");
    }

    #[test]
    fn errors_name_the_line() {
        let error = error_of(
            "[[route]]\nserver_name = \"ok.example.com\"\nbackends = [\"127.0.0.1:1\"]\n\n\
             [[route]]\nserver_name = \"bad name\"\nbackends = [\"127.0.0.1:1\"]\n",
        );
        assert_eq!(error.line, Some(6), "{error}");
        assert!(error.reason.contains("bad name"), "{error}");

        let error = error_of(
            "[[route]]\nserver_name = \"ok.example.com\"\nbackends = [\n  \"127.0.0.1:1\",\n  \"nope\",\n]\n",
        );
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("host:port"), "{error}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys() {
        assert_eq!(error_of("[[route]\n").line, Some(1));
        let error = error_of("[[route]]\nserver_name = \"a.b\"\nbackend = [\"1.2.3.4:5\"]\n");
        assert!(error.reason.contains("backend"), "{error}");
        assert!(error_of("[[route]]\nserver_name = \"a.b\"\n")
            .reason
            .contains("backends"));
    }

    #[test]
    fn default_route() {
        let table =
            parse("[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\ndefault = true\n")
                .unwrap();
        assert!(table.lookup_default().is_some());
        let error = error_of(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\ndefault = true\n\
             [[route]]\nserver_name = \"c.d\"\nbackends = [\"1.2.3.4:6\"]\ndefault = true\n",
        );
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("default"), "{error}");
    }

    #[test]
    fn proxy_protocol_per_route() {
        let table = parse(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\nproxy_protocol = \"v2\"\n",
        )
        .unwrap();
        let name = crate::tls::HostName::parse(b"a.b").unwrap();
        assert!(table.lookup(&name).unwrap().proxy_protocol);
        let error = error_of(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\nproxy_protocol = \"v1\"\n",
        );
        assert_eq!(error.line, Some(4), "{error}");
    }

    #[test]
    fn empty_backends_and_duplicates() {
        let error = error_of("[[route]]\nserver_name = \"a.b\"\nbackends = []\n");
        assert_eq!(error.line, Some(3));
        let error = error_of(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\n\
             [[route]]\nserver_name = \"A.B.\"\nbackends = [\"1.2.3.4:5\"]\n",
        );
        assert_eq!(error.line, Some(4), "{error}");
        assert!(error.reason.contains("more than one"), "{error}");
    }

    const TERMINATED: &str = "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\n\
                              tls = \"terminate\"\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\n";

    #[test]
    fn terminated_routes() {
        let table = parse(&format!("{TERMINATED}backend_tls = \"disable\"\n")).unwrap();
        let name = crate::tls::HostName::parse(b"a.b").unwrap();
        let resolved = table.lookup(&name).unwrap();
        let termination = resolved.mode.termination().expect("terminated");
        assert_eq!(termination.identity.certificate, Path::new("a.pem"));
        assert_eq!(termination.identity.private_key, Path::new("a.key"));
        assert_eq!(termination.backend_tls, BackendTls::Disable);
        assert_eq!(resolved.mode.label(), "terminate");

        let table = parse(&format!(
            "{TERMINATED}backend_tls = \"verify-full\"\nbackend_ca = \"/ca.pem\"\n"
        ))
        .unwrap();
        let termination = table.terminations().next().unwrap();
        assert_eq!(
            termination.backend_tls,
            BackendTls::VerifyFull {
                ca: "/ca.pem".into()
            }
        );

        // Passthrough is the default, and may be spelled out.
        let table = parse(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\ntls = \"passthrough\"\n",
        )
        .unwrap();
        assert_eq!(table.lookup(&name).unwrap().mode, TlsMode::Passthrough);
        assert_eq!(table.terminations().count(), 0);
    }

    #[test]
    fn terminated_route_errors_name_the_line() {
        let error = error_of(&format!("{TERMINATED}backend_tls = \"prefer\"\n"));
        assert_eq!(error.line, Some(7), "{error}");
        let error = error_of(TERMINATED);
        assert_eq!(error.line, Some(4), "{error}");
        assert!(error.reason.contains("needs backend_tls"), "{error}");
        let error = error_of(&format!("{TERMINATED}backend_tls = \"verify-full\"\n"));
        assert_eq!(error.line, Some(7), "{error}");
        assert!(error.reason.contains("needs backend_ca"), "{error}");
        let error = error_of(&format!(
            "{TERMINATED}backend_tls = \"require\"\nbackend_ca = \"ca.pem\"\n"
        ));
        assert_eq!(error.line, Some(8), "{error}");
        let error = error_of(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\ntls = \"terminate\"\n\
             private_key = \"a.key\"\nbackend_tls = \"disable\"\n",
        );
        assert_eq!(error.line, Some(4), "{error}");
        assert!(error.reason.contains("needs certificate"), "{error}");
        let error = error_of(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\ntls = \"decrypt\"\n",
        );
        assert_eq!(error.line, Some(4), "{error}");
    }

    #[test]
    fn a_passthrough_route_names_no_key() {
        for key in [
            "certificate = \"a.pem\"",
            "private_key = \"a.key\"",
            "backend_tls = \"disable\"",
            "backend_ca = \"ca.pem\"",
        ] {
            let error = error_of(&format!(
                "[[route]]\nserver_name = \"a.b\"\nbackends = [\"1.2.3.4:5\"]\n{key}\n"
            ));
            assert_eq!(error.line, Some(4), "{error}");
            assert!(error.reason.contains("only for routes with tls"), "{error}");
        }
    }

    #[test]
    fn unix_socket_backends_need_a_plaintext_terminated_route() {
        let unix = "[[route]]\nserver_name = \"a.b\"\nbackends = [\n  \"1.2.3.4:5\",\n  \"unix:/run/pg/.s.PGSQL.5432\",\n]\n";
        let error = error_of(unix);
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("tls = \"terminate\""), "{error}");

        let terminated = format!(
            "{unix}tls = \"terminate\"\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\n"
        );
        let table = parse(&format!("{terminated}backend_tls = \"disable\"\n")).unwrap();
        let name = crate::tls::HostName::parse(b"a.b").unwrap();
        assert_eq!(
            table.lookup(&name).unwrap().backends,
            ["1.2.3.4:5", "unix:/run/pg/.s.PGSQL.5432"]
        );
        let error = error_of(&format!("{terminated}backend_tls = \"require\"\n"));
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("backend_tls"), "{error}");
        let error = error_of(&format!(
            "{terminated}backend_tls = \"disable\"\nproxy_protocol = \"v2\"\n"
        ));
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("PROXY"), "{error}");

        let error = error_of(&format!(
            "[[route]]\nserver_name = \"a.b\"\nbackends = [\"unix:run/pg\"]\n{}backend_tls = \"disable\"\n",
            &terminated[terminated.find("tls").unwrap()..]
        ));
        assert!(error.reason.contains("absolute"), "{error}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_routes_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            format!("{TERMINATED}backend_tls = \"verify-full\"\nbackend_ca = \"/etc/ca.pem\"\n"),
        )
        .unwrap();
        let (table, _) = load(&path).unwrap();
        let termination = table.terminations().next().unwrap();
        assert_eq!(termination.identity.certificate, dir.path().join("a.pem"));
        assert_eq!(termination.identity.private_key, dir.path().join("a.key"));
        assert_eq!(
            termination.backend_tls,
            BackendTls::VerifyFull {
                ca: "/etc/ca.pem".into()
            }
        );
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            "[[route]]\nserver_name = \"a..b\"\nbackends = [\"1.2.3.4:5\"]\n",
        )
        .unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:2: ", path.display())),
            "{message}"
        );
        let missing = load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(missing, LoadError::Read { .. }));
    }
}
