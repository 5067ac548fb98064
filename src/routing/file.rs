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
//! ```
//!
//! Every error carries the line it was found on, so that an operator can fix
//! a rejected file without guessing.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::table::{BackendTemplate, Pattern, Route, RouteError, RouteTable};

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
    let table = parse_bytes(&bytes).map_err(|error| LoadError::Invalid {
        path: path.to_owned(),
        error,
    })?;
    Ok((table, bytes))
}

/// Parses routes-file bytes (which must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<RouteTable, RoutesError> {
    let text = std::str::from_utf8(bytes).map_err(|e| RoutesError {
        line: Some(line_of(bytes, e.valid_up_to())),
        reason: "the file is not valid UTF-8".into(),
    })?;
    parse(text)
}

/// Parses the text of a routes file into a table.
pub fn parse(text: &str) -> Result<RouteTable, RoutesError> {
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
        let pattern = Pattern::parse(entry.server_name.get_ref())
            .map_err(|e| at(entry.server_name.span(), e.to_string()))?;
        let wildcard = matches!(pattern, Pattern::Wildcard { .. });
        let backends_span = entry.backends.span();
        let backends = entry
            .backends
            .into_inner()
            .into_iter()
            .map(|b| {
                BackendTemplate::parse(b.get_ref(), wildcard)
                    .map_err(|e| at(b.span(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut route =
            Route::new(pattern, backends).map_err(|e| at(backends_span, e.to_string()))?;
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
        routes.push(route);
        spans.push(entry_span);
    }
    RouteTable::new(routes)
        .map_err(|(index, error): (usize, RouteError)| at(spans[index].clone(), error.to_string()))
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
