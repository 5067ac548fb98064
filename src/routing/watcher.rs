//! Keeps the table in force in step with the routes file.
//!
//! The parent directory is watched rather than the file: editors and `mv`
//! replace the file's inode, and Kubernetes swaps a `..data` symlink beside
//! it, so the file itself often sees no event at all. Any event in the
//! directory starts a short debounce, then the file is re-read and compared
//! with the bytes in force; only a real change that parses is swapped in. A
//! file that does not parse leaves the last good table in force. SIGHUP and a
//! periodic backstop re-read as well, covering watchers that miss events
//! (network filesystems, a directory that is itself replaced).
//!
//! A table may need more than parsing before it can serve: the keys its
//! terminated routes name ([`Prepare`]). A table whose keys do not load is
//! refused like one that does not parse, but retried at every re-read, since
//! the keys may appear later than the route (an issuer that has not issued
//! yet); the refusal is reported again only if its reason changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{file, RouteTable, SharedTable};
use crate::metrics::{ROUTES, ROUTES_RELOAD_TOTAL};

/// What a table needs ready, beyond being valid, before it is put in force.
pub trait Prepare: Send + Sync {
    /// Gets ready what `table` needs; an error keeps the previous table in
    /// force.
    fn prepare(&self, table: &RouteTable) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Called once `table` is in force, to let go of what only the tables
    /// before it needed.
    fn committed(&self, table: &RouteTable);
}

/// How long to wait after an event for the writer to finish: a rename or a
/// symlink swap produces several events in a burst.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How a reload attempt ended (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new table is in force.
    Ok,
    /// The file's bytes are the ones in force already, or the ones last
    /// refused.
    Unchanged,
    /// The file could not be read or is invalid; the old table stays.
    Error,
}

impl ReloadResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unchanged => "unchanged",
            Self::Error => "error",
        }
    }
}

/// Re-reads one routes file into one shared table.
pub struct Reloader {
    path: PathBuf,
    table: SharedTable,
    /// The bytes the table in force was built from.
    current: Vec<u8>,
    /// The bytes last refused, so that a bad file is reported once, not at
    /// every event or backstop tick until it is fixed.
    refused: Option<Vec<u8>>,
    /// What a new table must have ready before it is put in force.
    prepare: Option<Arc<dyn Prepare>>,
    /// A valid file whose table could not be prepared, with the reason:
    /// retried at every re-read, reported when the reason changes.
    unprepared: Option<(Vec<u8>, String)>,
}

impl Reloader {
    /// Starts from the table built from `current`.
    pub fn new(path: PathBuf, table: SharedTable, current: Vec<u8>) -> Self {
        ::metrics::gauge!(ROUTES).set(table.load().len() as f64);
        Self {
            path,
            table,
            current,
            refused: None,
            prepare: None,
            unprepared: None,
        }
    }

    /// Has every new table prepared by `prepare` before it is put in force.
    /// (The table given to [`Reloader::new`] must be prepared already.)
    pub fn with_prepare(mut self, prepare: Arc<dyn Prepare>) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// Re-reads the file and swaps the table if it changed and is valid.
    pub fn reload(&mut self) -> ReloadResult {
        let result = match std::fs::read(&self.path) {
            Ok(bytes) if bytes == self.current => ReloadResult::Unchanged,
            Ok(bytes) if self.refused.as_ref() == Some(&bytes) => ReloadResult::Unchanged,
            Ok(bytes) => match file::load(&self.path) {
                Ok((table, bytes)) => self.put_in_force(table, bytes),
                Err(error) => {
                    warn!(%error, "routes file refused; the previous table stays in force");
                    self.refused = Some(bytes);
                    ReloadResult::Error
                }
            },
            Err(error) => {
                warn!(path = %self.path.display(), %error, "routes file unreadable; the previous table stays in force");
                ReloadResult::Error
            }
        };
        if result != ReloadResult::Unchanged {
            ::metrics::counter!(ROUTES_RELOAD_TOTAL, "result" => result.as_str()).increment(1);
        }
        result
    }

    /// Prepares `table` (built from `bytes`) and swaps it in.
    fn put_in_force(&mut self, table: RouteTable, bytes: Vec<u8>) -> ReloadResult {
        if let Some(prepare) = &self.prepare {
            if let Err(error) = prepare.prepare(&table) {
                let refusal = (bytes, error.to_string());
                if self.unprepared.as_ref() == Some(&refusal) {
                    return ReloadResult::Unchanged;
                }
                warn!(path = %self.path.display(), error = %refusal.1, "routes file refused: its keys do not load; the previous table stays in force");
                self.unprepared = Some(refusal);
                return ReloadResult::Error;
            }
        }
        info!(path = %self.path.display(), routes = table.len(), "routes reloaded");
        ::metrics::gauge!(ROUTES).set(table.len() as f64);
        self.table.store(table);
        self.current = bytes;
        self.unprepared = None;
        if let Some(prepare) = &self.prepare {
            prepare.committed(&self.table.load());
        }
        ReloadResult::Ok
    }
}

/// Watches `reloader`'s file and reloads on change, on SIGHUP, and every
/// `backstop`. Runs until the task is dropped. If the directory cannot be
/// watched, that is logged and SIGHUP and the backstop still work.
pub async fn watch(mut reloader: Reloader, backstop: Duration) {
    let (events, mut changed) = mpsc::channel::<()>(1);
    let directory = watched_directory(&reloader.path);
    // Kept alive for as long as this task runs; dropping it stops watching.
    let _watcher = match watch_directory(&directory, events) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            warn!(directory = %directory.display(), %error, "cannot watch the routes directory; relying on SIGHUP and periodic re-reads");
            None
        }
    };

    let mut hangup = hangup_signals();
    let mut tick = tokio::time::interval(backstop);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            Some(()) = changed.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while changed.try_recv().is_ok() {}
            }
            Some(()) = recv_hangup(&mut hangup) => info!("SIGHUP: re-reading routes"),
            _ = tick.tick() => {}
        }
        reloader.reload();
    }
}

fn watch_directory(
    directory: &Path,
    events: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already holds a pending reload: coalesce.
            let _ = events.try_send(());
        }
    })?;
    watcher.watch(directory, RecursiveMode::NonRecursive)?;
    debug!(directory = %directory.display(), "watching routes directory");
    Ok(watcher)
}

/// The directory holding `path` (the current directory for a bare name).
fn watched_directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|error| warn!(%error, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{RouteTable, Routes};

    const ONE: &str = "[[route]]\nserver_name = \"a.example.com\"\nbackends = [\"127.0.0.1:1\"]\n";
    const TWO: &str = "[[route]]\nserver_name = \"a.example.com\"\nbackends = [\"127.0.0.1:1\"]\n\
                       [[route]]\nserver_name = \"b.example.com\"\nbackends = [\"127.0.0.1:2\"]\n";

    #[test]
    fn reload_swaps_only_valid_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, ONE).unwrap();
        let (table, bytes) = file::load(&path).unwrap();
        let shared: SharedTable = Routes::new(table);
        let mut reloader = Reloader::new(path.clone(), shared.clone(), bytes);

        assert_eq!(reloader.reload(), ReloadResult::Unchanged);
        std::fs::write(&path, TWO).unwrap();
        assert_eq!(reloader.reload(), ReloadResult::Ok);
        assert_eq!(shared.load().len(), 2);

        std::fs::write(&path, "[[route]]\nserver_name = 1\n").unwrap();
        assert_eq!(reloader.reload(), ReloadResult::Error);
        assert_eq!(
            shared.load().len(),
            2,
            "a bad file keeps the last good table"
        );

        std::fs::remove_file(&path).unwrap();
        assert_eq!(reloader.reload(), ReloadResult::Error);
        assert_eq!(shared.load().len(), 2);
    }

    /// Keys that are missing until `ready` is set.
    #[derive(Default)]
    struct Keys {
        ready: std::sync::atomic::AtomicBool,
        committed: std::sync::atomic::AtomicUsize,
    }

    impl Prepare for Keys {
        fn prepare(
            &self,
            _table: &RouteTable,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("tls.key: No such file or directory".into())
            }
        }

        fn committed(&self, _table: &RouteTable) {
            self.committed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_table_whose_keys_are_missing_is_retried_until_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, ONE).unwrap();
        let (table, bytes) = file::load(&path).unwrap();
        let shared: SharedTable = Routes::new(table);
        let keys = Arc::new(Keys::default());
        let mut reloader =
            Reloader::new(path.clone(), shared.clone(), bytes).with_prepare(keys.clone());

        std::fs::write(&path, TWO).unwrap();
        assert_eq!(reloader.reload(), ReloadResult::Error);
        assert_eq!(shared.load().len(), 1, "the previous table stays");
        assert_eq!(reloader.reload(), ReloadResult::Unchanged, "reported once");
        keys.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            reloader.reload(),
            ReloadResult::Ok,
            "retried, not remembered as bad"
        );
        assert_eq!(shared.load().len(), 2);
        assert_eq!(keys.committed.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn watcher_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, ONE).unwrap();
        let (table, bytes) = file::load(&path).unwrap();
        let shared: SharedTable = Routes::new(table);
        let reloader = Reloader::new(path.clone(), shared.clone(), bytes);
        let task = tokio::spawn(watch(reloader, Duration::from_secs(3600)));
        // Give the watcher a moment to register before the change.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let staged = dir.path().join(".routes.toml.tmp");
        std::fs::write(&staged, TWO).unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while shared.load().len() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rename not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _: &RouteTable = &shared.load();
    }
}
