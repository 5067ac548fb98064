//! Where a server name leads.
//!
//! - [`table`]: the immutable [`RouteTable`] and its O(1) lookup.
//! - [`file`]: the TOML routes file, parsed and validated into a table, with
//!   errors that name the file, the line and the reason.
//! - [`watcher`]: re-reads the file when it changes (or on SIGHUP, or now and
//!   then as a backstop) and swaps the whole table atomically.
//!
//! Sessions take a snapshot of the table (an `Arc`) when they route; a swap
//! never touches a session that has already routed.

pub mod file;
pub mod table;
pub mod watcher;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use file::{load, parse, LoadError, RoutesError};
pub use table::{Resolved, RouteTable};

/// The table in force, shared by every session and swapped whole on reload.
pub type SharedTable = Arc<ArcSwap<RouteTable>>;
