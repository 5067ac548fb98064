//! The kernel data path on Linux: loading, inserting pairs, and waiting for
//! their end. See the parent module for the design.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::supervisor::{self, Baseline, Command, Session};
use super::{program, sys, InsertError, LoadError, DEFAULT_CAPACITY};
use crate::proxy::forward::{Forwarded, SessionMetrics};
use crate::routing::table::TlsMode;

/// License declared to the kernel. None of the helpers the program calls is
/// restricted to GPL programs.
const LICENSE: &CStr = c"Apache-2.0";

/// Size of the buffer for the verifier's report when a load is refused.
const VERIFIER_LOG_LEN: usize = 64 * 1024;

/// The kernel data path of one process: the verdict program, its map, and
/// the thread that watches spliced pairs for their end. Cheap to clone; the
/// program and the thread go away with the last clone and the last session.
#[derive(Clone, Debug)]
pub struct Sockmap {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The SOCKHASH: each socket stored under its peer's cookie.
    map: Arc<OwnedFd>,
    /// The attached program; the map keeps it alive too, this makes the
    /// ownership explicit.
    _program: OwnedFd,
    supervisor: supervisor::Handle,
    next_id: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every session's handle holds a clone of `Shared`, so none is
        // waiting any more; the thread closes what is left and exits.
        let _ = self.supervisor.send(Command::Shutdown);
    }
}

impl Sockmap {
    /// Loads the program and its map, sized for [`DEFAULT_CAPACITY`] pairs,
    /// and starts the supervisor thread.
    ///
    /// Fails where BPF is not allowed or not supported; the error says which
    /// step failed and why, for the log.
    pub fn load() -> Result<Self, LoadError> {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// Like [`load`](Self::load), with room for `pairs` spliced pairs at a
    /// time.
    pub fn with_capacity(pairs: u32) -> Result<Self, LoadError> {
        let entries = pairs.checked_mul(2).filter(|&entries| entries > 0);
        let Some(entries) = entries else {
            return Err(LoadError::new(
                "sizing the map",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "capacity must be 1 to 2^31 - 1 pairs",
                ),
            ));
        };
        let map = sys::map_create(
            sys::MAP_TYPE_SOCKHASH,
            std::mem::size_of::<u32>() as u32,
            entries,
            "pgsni_peers",
        )
        .map_err(|error| LoadError::new("creating the SOCKHASH map", error))?;
        let program = load_program(&map)?;
        attach(&program, &map)?;
        let map = Arc::new(map);
        let supervisor = supervisor::Handle::spawn(Arc::clone(&map))
            .map_err(|error| LoadError::new("starting the supervisor thread", error))?;
        Ok(Self {
            shared: Arc::new(Shared {
                map,
                _program: program,
                supervisor,
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// Puts `client` and `backend` into the map: from now on, bytes either
    /// of them receives go straight to the other.
    ///
    /// Call this before anything more is written to the backend (see the
    /// module documentation), then [`Spliced::replay`] the ClientHello and
    /// await [`Spliced::finished`]. If the map refuses the pair, both
    /// sockets come back unchanged in the error, to be forwarded in user
    /// space.
    pub fn insert(&self, client: TcpStream, backend: TcpStream) -> Result<Spliced, InsertError> {
        match self.link(&client, &backend) {
            Ok(baselines) => Ok(Spliced {
                link: Link {
                    shared: Arc::clone(&self.shared),
                    baselines,
                    armed: true,
                },
                client,
                backend,
                replayed: 0,
            }),
            Err(error) => Err(InsertError {
                error,
                client,
                backend,
            }),
        }
    }

    /// Reads both baselines, then inserts the backend under the client's
    /// cookie and the client under the backend's. Undoes a half-done insert.
    ///
    /// Refuses sockets with unread bytes: the kernel redirects only what
    /// arrives after the insert, so such bytes would wait until more came,
    /// and if none came, for ever. (A peer that sends in the moment between
    /// this check and the insert is served by its next segment, which takes
    /// the queued bytes along; in a session neither peer sends then.)
    fn link(&self, client: &TcpStream, backend: &TcpStream) -> io::Result<[Baseline; 2]> {
        let baseline = |socket: &TcpStream, side: &str| -> io::Result<Baseline> {
            let context =
                |error: io::Error| io::Error::new(error.kind(), format!("{side} socket: {error}"));
            let unread = sys::unread(socket.as_fd()).map_err(context)?;
            if unread > 0 {
                return Err(io::Error::other(format!(
                    "{unread} bytes are waiting to be read on the {side} socket"
                )));
            }
            socket2::SockRef::from(socket)
                .cookie()
                .and_then(|cookie| Baseline::of(socket, cookie))
                .map_err(context)
        };
        let client_base = baseline(client, "client")?;
        let backend_base = baseline(backend, "backend")?;
        let map = self.shared.map.as_fd();
        sys::map_insert_socket(map, client_base.cookie, backend.as_fd(), sys::BPF_NOEXIST)
            .map_err(|error| {
                io::Error::new(error.kind(), format!("inserting the backend: {error}"))
            })?;
        if let Err(error) =
            sys::map_insert_socket(map, backend_base.cookie, client.as_fd(), sys::BPF_NOEXIST)
        {
            let _ = sys::map_delete(map, client_base.cookie);
            return Err(io::Error::new(
                error.kind(),
                format!("inserting the client: {error}"),
            ));
        }
        // In the order of `supervisor::CLIENT` and `supervisor::BACKEND`.
        Ok([client_base, backend_base])
    }

    /// Number of sockets in the map (two per spliced pair). Walks the map:
    /// for tests and diagnostics, not for a hot path.
    pub fn sockets_in_map(&self) -> io::Result<usize> {
        let map = self.shared.map.as_fd();
        let mut count = 0;
        let mut key = None;
        while let Some(next) = sys::map_next_key(map, key)? {
            count += 1;
            key = Some(next);
        }
        Ok(count)
    }
}

/// Loads the verdict program; on refusal, loads it again with a log buffer
/// so that the error carries the verifier's explanation.
fn load_program(map: &OwnedFd) -> Result<OwnedFd, LoadError> {
    let insns = program::verdict(map.as_raw_fd());
    let load = |log: Option<&mut [u8]>| {
        sys::prog_load(sys::PROG_TYPE_SK_SKB, &insns, LICENSE, "pgsni_verdict", log)
    };
    load(None).map_err(|error| {
        let mut log = vec![0u8; VERIFIER_LOG_LEN];
        let verifier_log = match error.raw_os_error() {
            Some(libc::EACCES | libc::EINVAL) if load(Some(&mut log)).is_err() => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).trim().to_owned();
                (!text.is_empty()).then_some(text)
            }
            _ => None,
        };
        LoadError {
            verifier_log,
            ..LoadError::new("loading the sk_skb verdict program", error)
        }
    })
}

/// Attaches the program to the map as a parser-less verdict program, or as
/// a stream verdict on kernels that do not know the former.
fn attach(program: &OwnedFd, map: &OwnedFd) -> Result<(), LoadError> {
    match sys::prog_attach(program.as_fd(), map.as_fd(), sys::ATTACH_SK_SKB_VERDICT) {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => sys::prog_attach(
            program.as_fd(),
            map.as_fd(),
            sys::ATTACH_SK_SKB_STREAM_VERDICT,
        ),
        other => other,
    }
    .map_err(|error| LoadError::new("attaching the verdict program to the map", error))
}

/// A client and its backend in the map. Owns both sockets; dropping it
/// takes them out of the map and closes them.
///
/// Await [`finished`](Self::finished) right after the replay: until then
/// the kernel forwards, but nothing watches for the end of the session.
#[derive(Debug)]
pub struct Spliced {
    // Declared first so that, when dropped, the pair leaves the map before
    // the sockets close.
    link: Link,
    client: TcpStream,
    backend: TcpStream,
    replayed: u64,
}

impl Spliced {
    /// Writes `bytes` (the ClientHello, exactly as the client sent it) to
    /// the backend, counting them as client-to-backend bytes. Whatever the
    /// backend sends in answer already goes straight to the client.
    pub async fn replay(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.backend.write_all(bytes).await?;
        self.replayed += bytes.len() as u64;
        Ok(())
    }

    /// The client socket, e.g. for its address.
    pub fn client(&self) -> &TcpStream {
        &self.client
    }

    /// The backend socket, e.g. for its address.
    pub fn backend(&self) -> &TcpStream {
        &self.backend
    }

    /// Completes when both directions have finished (or either side
    /// failed); the pair has then left the map and both sockets are closed.
    /// Counts the session under `route` like
    /// [`forward`](crate::proxy::forward::forward) does (as a passthrough
    /// session: a spliced pair carries the client's own TLS), except that
    /// the bytes are counted when it ends.
    ///
    /// Dropping the future before it completes closes both sockets, which is
    /// also the way to end a session early.
    pub async fn finished(self, route: &str) -> io::Result<Forwarded> {
        let metrics = SessionMetrics::new(route, TlsMode::Passthrough.label());
        let Spliced {
            link,
            client,
            backend,
            replayed,
        } = self;
        // From here on only the supervisor watches the sockets; leaving
        // them registered with the runtime would wake it for every segment
        // the kernel moves.
        let sockets = [client.into_std()?, backend.into_std()?];
        let id = link.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, report) = oneshot::channel();
        let session = Box::new(Session::new(id, sockets, link.baselines, replayed, done));
        let shared = link.disarm();
        if shared.supervisor.send(Command::Add(session)).is_err() {
            // The returned session was dropped, closing both sockets, which
            // also takes them out of the map.
            return Err(io::Error::other("the sockmap supervisor has stopped"));
        }
        let abort = AbortOnDrop {
            shared: &shared,
            id: Some(id),
        };
        let report = report.await;
        abort.disarm();
        let report =
            report.map_err(|_| io::Error::other("the sockmap supervisor stopped mid-session"))?;
        metrics
            .client_to_backend
            .increment(report.totals.client_to_backend);
        metrics
            .backend_to_client
            .increment(report.totals.backend_to_client);
        report.result.map(|()| report.totals)
    }
}

/// A pair's place in the map, removed on drop unless handed on.
#[derive(Debug)]
struct Link {
    shared: Arc<Shared>,
    baselines: [Baseline; 2],
    /// Whether dropping removes the entries (until the supervisor owns
    /// them).
    armed: bool,
}

impl Link {
    /// Hands responsibility for the map entries to the supervisor.
    fn disarm(mut self) -> Arc<Shared> {
        self.armed = false;
        Arc::clone(&self.shared)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.armed {
            for baseline in &self.baselines {
                let _ = sys::map_delete(self.shared.map.as_fd(), baseline.cookie);
            }
        }
    }
}

/// Tells the supervisor to close a session whose caller stopped waiting.
struct AbortOnDrop<'a> {
    shared: &'a Shared,
    id: Option<u64>,
}

impl AbortOnDrop<'_> {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.shared.supervisor.send(Command::Abort(id));
        }
    }
}
