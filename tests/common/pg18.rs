//! PostgreSQL 18 server binaries, for the clients that need a server newer
//! than the suite's PostgreSQL 15.
//!
//! libpq 17 and later, asked for `sslnegotiation=direct`, refuse a server
//! that does not negotiate ALPN `postgresql`; only PostgreSQL 17+ servers do,
//! and pgsni forwards the TLS session untouched, so it cannot add ALPN. The
//! direct-TLS cases of such clients therefore run against a PostgreSQL 18
//! tenant.
//!
//! `scripts/install-test-deps.sh` unpacks the binaries into a cache
//! directory outside the repository; this module finds them there, or at
//! `$PGSNI_PG18_BINDIR`.

use std::path::PathBuf;
use std::process::Command;

use super::os;

/// The directory holding PostgreSQL 18's `postgres` and `initdb`, for
/// [`super::PgCluster::start_with_bindir`].
///
/// Looks at `$PGSNI_PG18_BINDIR`, else at `pg18/bin` in the test cache
/// (`$PGSNI_TEST_CACHE`, else `/var/cache/pgsni-test` when root, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/pgsni-test`), the places the install
/// script uses. Panics with instructions when no PostgreSQL 18 is there: a
/// test that needs it must fail, not pass without having run.
pub fn pg18_bindir() -> PathBuf {
    let dir = match std::env::var_os("PGSNI_PG18_BINDIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => test_cache_dir().join("pg18/bin"),
    };
    let version = Command::new(dir.join("postgres")).arg("--version").output();
    match version {
        Ok(out)
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" 18.") =>
        {
            dir
        }
        Ok(out) => panic!(
            "{}/postgres is not PostgreSQL 18 ({}{}); \
             run scripts/install-test-deps.sh or set PGSNI_PG18_BINDIR",
            dir.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
        ),
        Err(e) => panic!(
            "no PostgreSQL 18 server binaries at {} ({e}); they are needed because libpq 17+ \
             with sslnegotiation=direct requires ALPN, which only PostgreSQL 17+ servers \
             negotiate. Run scripts/install-test-deps.sh or set PGSNI_PG18_BINDIR",
            dir.display()
        ),
    }
}

/// The cache directory the install script fills (see [`pg18_bindir`]).
fn test_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGSNI_TEST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if os::is_root() {
        // Readable by the `postgres` user, who runs the servers under root.
        return PathBuf::from("/var/cache/pgsni-test");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set");
    cache.join("pgsni-test")
}
