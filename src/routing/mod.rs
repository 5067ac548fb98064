//! Where a server name leads.
//!
//! - [`table`]: the immutable [`RouteTable`] and its O(1) lookup.
//! - [`file`](mod@file): the TOML routes file, parsed and validated into a table, with
//!   errors that name the file, the line and the reason.
//! - [`literal`]: which hosts are IP addresses in disguise (`127.1`,
//!   `0x7f000001`), so that a captured label cannot form one.
//! - [`watcher`]: re-reads the file when it changes (or on SIGHUP, or now and
//!   then as a backstop) and swaps the whole table atomically.
//!
//! Sessions take a snapshot of the table (an `Arc`) when they route; a swap
//! never touches a session that has already routed.

pub mod file;
pub mod literal;
pub mod table;
pub mod watcher;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

pub use file::{load, parse, LoadError, RoutesError};
pub use table::{Resolved, RouteTable};

/// The table in force, shared by every session and swapped whole on reload.
#[derive(Debug)]
pub struct Routes {
    table: ArcSwap<RouteTable>,
    /// Bumped on every swap, for sessions that watch their route.
    generation: watch::Sender<u64>,
}

impl Routes {
    /// Puts `table` in force.
    pub fn new(table: RouteTable) -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(table),
            generation: watch::Sender::new(0),
        })
    }

    /// A snapshot of the table in force: cheap, lock-free, and unaffected
    /// by later swaps.
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Swaps in a new table.
    pub fn store(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// A receiver that changes whenever a new table is swapped in.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The routes, as shared by the watcher and every session.
pub type SharedTable = Arc<Routes>;
