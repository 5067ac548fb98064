//! Handing established pairs to the kernel: an optional data path in which
//! forwarded bytes never cross into user space.
//!
//! Once a session is routed, pgsni only moves opaque bytes. Linux can do
//! that itself: an `sk_skb` verdict program attached to a socket map sees
//! every segment a socket in the map receives and may redirect it to another
//! socket in the map, to be sent as if written there. [`Sockmap`] loads such
//! a program (thirteen hand-assembled instructions, see `program.rs`) and one
//! SOCKHASH map; [`Sockmap::insert`] puts a client and its backend into the
//! map, each under the other's socket cookie, and from then on the kernel
//! forwards both directions. No copy loop runs, no buffer is held, and the
//! process is not woken for data at all.
//!
//! # Using it
//!
//! ```no_run
//! # use pgsni::proxy::sockmap::Sockmap;
//! # async fn session(sockmap: &Sockmap, client: tokio::net::TcpStream,
//! #     backend: tokio::net::TcpStream, hello: &[u8]) -> std::io::Result<()> {
//! match sockmap.insert(client, backend) {
//!     Ok(mut spliced) => {
//!         // The backend answers the hello straight to the client.
//!         spliced.replay(hello).await?;
//!         let totals = spliced.finished("route").await?;
//!     }
//!     Err(refused) => {
//!         // The kernel would not take the pair: forward in user space.
//!         let (client, backend) = refused.into_sockets();
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The kernel redirects what a socket receives once it is in the map; bytes
//! queued before would wait there until more arrived. So a pair is inserted
//! *before* the ClientHello is replayed to the backend: until the backend
//! answers the hello neither side sends anything, and the answer then finds
//! both sockets in the map. (`insert` refuses a socket with unread bytes.)
//!
//! # When it is not available
//!
//! [`Sockmap::load`] fails where the process may not load BPF programs
//! (it needs `CAP_BPF` and `CAP_NET_ADMIN`, or root), where the kernel lacks
//! what the program needs, and on systems other than Linux.
//! [`LoadError::is_unavailable`] tells those expected cases from surprising
//! ones; either way the caller keeps using
//! [`forward`](super::forward::forward). A pair the map refuses (full, or a
//! socket no longer established, unread bytes) comes back in an
//! [`InsertError`] with both sockets intact, for the same fallback.
//!
//! # Half-closes, errors and counts
//!
//! A FIN from one side is passed on as `shutdown(SHUT_WR)` of the other once
//! every byte before it has been written into the other, while the opposite
//! direction keeps flowing, as in the user-space path. An error or reset on
//! either side ends the session and closes both sockets. The totals in
//! [`Forwarded`](super::forward::Forwarded) come from the sockets' own counters (`TCP_INFO`): the bytes
//! each side sent while spliced, plus the replayed hello. They are added to
//! `pgsni_forwarded_bytes_total` when the session ends, not while it runs.
//!
//! # Limits
//!
//! - Linux only; developed and tested on Linux 6.18. The program is attached
//!   as a parser-less verdict program (`BPF_SK_SKB_VERDICT`, Linux 5.13),
//!   or else at the stream-verdict attach point; older kernels have not been
//!   tried. Some older kernels also took a socket out of the map as soon as
//!   it reached `CLOSE`, which could strand a segment carrying both data and
//!   a FIN after the other direction had closed; the supervisor would report
//!   such a loss as an error after a stall rather than hang.
//! - IPv4 and IPv6 alike: the map is keyed by socket cookies, not addresses.
//! - Capacity is fixed when loading ([`Sockmap::with_capacity`]); a full map
//!   refuses pairs, which then take the user-space path.
//! - Only the end of a session is observed: the byte counters move when it
//!   ends, and there is no per-session idle timeout (there is none in the
//!   user-space path either).
//!
//! # Cost
//!
//! The copying does not disappear, it moves: the kernel runs the program in
//! the receive path and sends the redirected bytes from a kernel worker.
//! pgsni's own threads then use no CPU for a forwarding session and hold no
//! buffer for it, but whether the machine as a whole moves bytes faster than
//! with the user-space path depends on the kernel and the machine; compare
//! with the ignored `throughput_user_space_vs_kernel_path` test before
//! turning it on.

#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
mod program;
#[cfg(target_os = "linux")]
mod supervisor;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(all(test, target_os = "linux"))]
mod tests;
#[cfg(not(target_os = "linux"))]
mod unsupported;

use std::fmt;
use std::io;

use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
pub use self::kernel::{Sockmap, Spliced};
#[cfg(not(target_os = "linux"))]
pub use self::unsupported::{Sockmap, Spliced};

/// Pairs a map holds when loaded with [`Sockmap::load`]. Memory is taken per
/// pair in use, apart from a hash table of about 16 bytes per slot.
pub const DEFAULT_CAPACITY: u32 = 65_536;

/// Error numbers that mean the kernel path is not available here, as
/// opposed to something going wrong: no permission (`EPERM`, `EACCES`), no
/// `bpf(2)` (`ENOSYS`), or a kernel that does not know the program, map or
/// attach type (`EINVAL`, `EOPNOTSUPP`).
#[cfg(target_os = "linux")]
const UNAVAILABLE_ERRNOS: &[i32] = &[
    libc::EPERM,
    libc::EACCES,
    libc::ENOSYS,
    libc::EINVAL,
    libc::EOPNOTSUPP,
];
#[cfg(not(target_os = "linux"))]
const UNAVAILABLE_ERRNOS: &[i32] = &[];

/// Why [`Sockmap::load`] failed: the step, the system's error, and for a
/// refused program the verifier's report.
#[derive(Debug)]
pub struct LoadError {
    step: &'static str,
    source: io::Error,
    verifier_log: Option<String>,
}

impl LoadError {
    fn new(step: &'static str, source: io::Error) -> Self {
        Self {
            step,
            source,
            verifier_log: None,
        }
    }

    /// The OS error number, if the failure came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// Whether this is an expected reason for the kernel path to be
    /// unavailable (no permission, a kernel without the features, not
    /// Linux), after which falling back is routine. Anything else deserves
    /// a warning.
    pub fn is_unavailable(&self) -> bool {
        match self.raw_os_error() {
            Some(errno) => UNAVAILABLE_ERRNOS.contains(&errno),
            None => self.source.kind() == io::ErrorKind::Unsupported,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.source)?;
        if let Some(log) = &self.verifier_log {
            write!(f, "; verifier log: {log}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<LoadError> for io::Error {
    fn from(error: LoadError) -> Self {
        io::Error::new(error.source.kind(), error)
    }
}

/// A pair the map refused, with both sockets, unchanged, for the
/// user-space path.
#[derive(Debug)]
pub struct InsertError {
    error: io::Error,
    client: TcpStream,
    backend: TcpStream,
}

impl InsertError {
    /// Why the pair was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The sockets, as they were given to [`Sockmap::insert`]:
    /// `(client, backend)`.
    pub fn into_sockets(self) -> (TcpStream, TcpStream) {
        (self.client, self.backend)
    }
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the socket map refused the pair: {}", self.error)
    }
}

impl std::error::Error for InsertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
