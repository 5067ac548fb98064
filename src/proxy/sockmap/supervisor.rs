//! The supervisor: one thread that watches every spliced pair for its end.
//!
//! While a pair is in the map the kernel moves its bytes; what is left for
//! user space is noticing when a side finishes and passing that on. The
//! supervisor owns the sockets of every pair it was handed and its own epoll
//! set, in which each socket is registered for `EPOLLRDHUP` only (error and
//! hang-up are always reported), edge-triggered. Readability is deliberately
//! not watched: the kernel wakes readers of a socket in the map each time it
//! moves a segment, which would make the supervisor as busy as a copy loop.
//!
//! A FIN from one side cannot be passed on at once: the bytes that came just
//! before it may still be on their way through the kernel (the redirect is
//! finished by a kernel worker), and a `shutdown(SHUT_WR)` on the peer would
//! make that worker's send fail and lose them. So the direction first
//! *drains*: the supervisor compares what the source received (from
//! `TCP_INFO`) with what has been written into the peer (bytes acknowledged
//! plus `SIOCOUTQ`), re-checking on a short backoff, and half-closes the peer
//! only when they match. Once both directions are done, or on an error on
//! either side, the pair leaves the map and both sockets are closed.
//!
//! The thread owns all of its state; sessions reach it over a channel whose
//! arrival is signalled through an eventfd in the same epoll set.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::sys::{self, Epoll, Event, EventFd};
use crate::proxy::forward::Forwarded;

/// Index of the client in a pair.
pub(super) const CLIENT: usize = 0;
/// Index of the backend in a pair.
pub(super) const BACKEND: usize = 1;

/// Token of the eventfd in the epoll set; sessions use `id << 1 | side`,
/// and ids never reach 2^63.
const WAKE_TOKEN: u64 = u64::MAX;

/// What each socket is watched for. Error and hang-up need not be asked for.
const WATCHED: u32 = (libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// First and longest pause between checks of a draining direction. Draining
/// normally takes one pass of a kernel worker, well under a millisecond; it
/// takes longer only when the receiving peer is slow to read.
const DRAIN_FIRST_RECHECK: Duration = Duration::from_millis(1);
const DRAIN_MAX_RECHECK: Duration = Duration::from_millis(50);

/// How long a draining direction may make no progress, with nothing queued
/// in the peer socket, before the bytes are taken to be lost in the kernel.
/// A peer that is merely slow to read keeps bytes queued, so this does not
/// fire for backpressure.
const DRAIN_STALL_LIMIT: Duration = Duration::from_secs(10);

/// Events taken per wait.
const EVENTS_PER_WAIT: usize = 256;

/// A socket's counters when its pair entered the map; everything the
/// supervisor reports is counted from here.
#[derive(Clone, Copy, Debug)]
pub(super) struct Baseline {
    /// The socket's cookie: the key under which its *peer* is in the map.
    pub(super) cookie: u64,
    /// `tcpi_bytes_received` at insertion.
    pub(super) received: u64,
    /// Bytes written into the socket (acknowledged plus queued) at insertion.
    pub(super) written: u64,
}

impl Baseline {
    /// Reads the baseline of `socket`.
    pub(super) fn of(socket: &impl AsFd, cookie: u64) -> io::Result<Self> {
        Ok(Self {
            cookie,
            received: sys::tcp_counters(socket.as_fd())?.bytes_received,
            written: written_total(socket)?,
        })
    }
}

/// Everything ever written into `socket`, in sequence space: what the peer
/// acknowledged plus what is still queued.
///
/// The two numbers come from two calls, and an acknowledgement in between
/// moves bytes from one to the other. Reading the counter again after the
/// queue tells whether that happened, and the read is repeated until it did
/// not: a baseline that came out too small would let a drain end early.
fn written_total(socket: &impl AsFd) -> io::Result<u64> {
    let fd = socket.as_fd();
    let mut acked = sys::tcp_counters(fd)?.bytes_acked;
    loop {
        let unacked = sys::unacked(fd)?;
        let acked_after = sys::tcp_counters(fd)?.bytes_acked;
        if acked_after == acked {
            return Ok(acked + unacked);
        }
        acked = acked_after;
    }
}

/// What the supervisor says when a session ends.
#[derive(Debug)]
pub(super) struct Report {
    /// Bytes taken from each side while spliced, plus the replayed bytes.
    pub(super) totals: Forwarded,
    /// Whether the session ended cleanly (both directions finished).
    pub(super) result: io::Result<()>,
}

/// A pair handed to the supervisor.
pub(super) struct Session {
    id: u64,
    ends: [End; 2],
    /// Client bytes written to the backend by user space after insertion.
    replayed: u64,
    done: oneshot::Sender<Report>,
}

impl Session {
    /// A pair whose sockets are `[client, backend]`, with their baselines.
    pub(super) fn new(
        id: u64,
        sockets: [TcpStream; 2],
        baselines: [Baseline; 2],
        replayed: u64,
        done: oneshot::Sender<Report>,
    ) -> Self {
        let [client, backend] = sockets;
        let [client_base, backend_base] = baselines;
        Self {
            id,
            ends: [
                End::new(client, client_base),
                End::new(backend, backend_base),
            ],
            replayed,
            done,
        }
    }

    /// The totals so far: what each side has sent since insertion (and the
    /// replayed bytes). Best effort: a socket whose counters cannot be read
    /// any more counts nothing.
    fn totals(&self) -> Forwarded {
        let received = |end: &End| match end.inbound {
            Flow::Draining { received, .. } | Flow::Done { received } => received,
            Flow::Open => sys::tcp_counters(end.socket.as_fd())
                .map(|counters| counters.bytes_received.saturating_sub(end.base.received))
                .unwrap_or(0),
        };
        Forwarded {
            client_to_backend: self.replayed + received(&self.ends[CLIENT]),
            backend_to_client: received(&self.ends[BACKEND]),
        }
    }

    /// Bytes written by user space into the peer of `side` since insertion,
    /// ahead of what `side` sends: the replayed hello, into the backend.
    fn written_by_user_space_into_peer_of(&self, side: usize) -> u64 {
        if side == CLIENT {
            self.replayed
        } else {
            0
        }
    }
}

/// One socket of a pair.
struct End {
    socket: TcpStream,
    base: Baseline,
    /// The direction *from* this socket to its peer.
    inbound: Flow,
}

impl End {
    fn new(socket: TcpStream, base: Baseline) -> Self {
        Self {
            socket,
            base,
            inbound: Flow::Open,
        }
    }
}

/// The state of one direction.
#[derive(Clone, Copy, Debug)]
enum Flow {
    /// Bytes flow; no FIN yet.
    Open,
    /// The source sent its FIN after `received` bytes; waiting until the
    /// peer has been written `target` bytes since insertion.
    Draining {
        received: u64,
        target: u64,
        /// Written into the peer at the last check, and when that changed.
        last_written: u64,
        progress_at: Instant,
        next_check: Instant,
        backoff: Duration,
    },
    /// Everything reached the peer and the peer was half-closed.
    Done { received: u64 },
}

/// What the rest of the module sends the supervisor.
pub(super) enum Command {
    /// Watch this pair until it ends.
    Add(Box<Session>),
    /// The caller stopped waiting for this session: close it now.
    Abort(u64),
    /// The [`Sockmap`](super::Sockmap) is gone: close everything and stop.
    Shutdown,
}

/// The handle through which the rest of the module talks to the thread.
#[derive(Debug)]
pub(super) struct Handle {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
}

impl Handle {
    /// Starts the supervisor thread for the map `map`.
    pub(super) fn spawn(map: Arc<OwnedFd>) -> io::Result<Self> {
        let epoll = Epoll::new(EVENTS_PER_WAIT)?;
        let wake = Arc::new(EventFd::new()?);
        epoll.add(wake.as_fd(), libc::EPOLLIN as u32, WAKE_TOKEN)?;
        let (commands, receiver) = mpsc::channel();
        let supervisor = Supervisor {
            map,
            epoll,
            wake: Arc::clone(&wake),
            commands: receiver,
            sessions: HashMap::new(),
            draining: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("pgsni-sockmap".to_owned())
            .spawn(move || supervisor.run())?;
        Ok(Self { commands, wake })
    }

    /// Sends a command and wakes the thread. Fails, handing the command
    /// back, only if the thread is gone.
    pub(super) fn send(&self, command: Command) -> Result<(), Command> {
        self.commands.send(command).map_err(|error| error.0)?;
        self.wake.notify();
        Ok(())
    }
}

struct Supervisor {
    map: Arc<OwnedFd>,
    epoll: Epoll,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    sessions: HashMap<u64, Session>,
    /// The directions (session id, source side) in [`Flow::Draining`]:
    /// few and short-lived, so that timers never scan every session.
    draining: HashSet<(u64, usize)>,
}

impl Supervisor {
    fn run(mut self) {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(error) = self.epoll.wait(&mut events, timeout) {
                // Cannot happen with a valid epoll descriptor; if it does,
                // end every session rather than leave them unwatched.
                self.close_all(&error);
                return;
            }
            for Event {
                events: bits,
                token,
            } in events.drain(..)
            {
                if token == WAKE_TOKEN {
                    self.wake.drain();
                    if !self.take_commands() {
                        return;
                    }
                } else {
                    self.on_socket_event(token >> 1, (token & 1) as usize, bits);
                }
            }
            self.check_drains(Instant::now());
        }
    }

    /// Handles queued commands; false once the thread should stop.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(session)) => self.add(*session),
                Ok(Command::Abort(id)) => {
                    if let Some(session) = self.sessions.remove(&id) {
                        self.end(session, Err(io::Error::other("abandoned by its caller")));
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.close_all(&io::Error::other("the sockmap was dropped"));
                    return false;
                }
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, session: Session) {
        let id = session.id;
        for (side, end) in session.ends.iter().enumerate() {
            if let Err(error) = self
                .epoll
                .add(end.socket.as_fd(), WATCHED, id << 1 | side as u64)
            {
                let error = io::Error::new(error.kind(), format!("watching the sockets: {error}"));
                self.end(session, Err(error));
                return;
            }
        }
        // Level conditions present at registration (a FIN that arrived
        // before the pair was handed over) are reported by the first wait.
        self.sessions.insert(id, session);
    }

    fn on_socket_event(&mut self, id: u64, side: usize, bits: u32) {
        let Some(session) = self.sessions.get_mut(&id) else {
            // An event queued before its session ended.
            return;
        };
        let end = &mut session.ends[side];
        if bits & libc::EPOLLERR as u32 != 0 {
            let error = match end.socket.take_error() {
                Ok(Some(error)) => Some(error),
                Ok(None) => None,
                Err(error) => Some(error),
            };
            if let Some(error) = error {
                let error = io::Error::new(error.kind(), format!("{}: {error}", side_name(side)));
                self.fail(id, error);
                return;
            }
        }
        // A hang-up always comes with RDHUP; a repeated report is harmless.
        if bits & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0
            && matches!(end.inbound, Flow::Open)
        {
            let counters = match sys::tcp_counters(end.socket.as_fd()) {
                Ok(counters) => counters,
                Err(error) => return self.fail(id, context(side, "reading TCP_INFO", error)),
            };
            // The FIN takes one unit of sequence space: it is not a byte.
            let received = counters
                .bytes_received
                .saturating_sub(end.base.received)
                .saturating_sub(1);
            let target = received + session.written_by_user_space_into_peer_of(side);
            let now = Instant::now();
            session.ends[side].inbound = Flow::Draining {
                received,
                target,
                last_written: 0,
                progress_at: now,
                next_check: now,
                backoff: DRAIN_FIRST_RECHECK,
            };
            self.draining.insert((id, side));
            self.check_drain(id, side, now);
        }
    }

    /// The epoll timeout until the next drain check is due, in milliseconds
    /// (rounded up), or -1 when nothing drains.
    fn next_timeout(&self, now: Instant) -> i32 {
        let next = self
            .draining
            .iter()
            .filter_map(
                |(id, side)| match self.sessions.get(id)?.ends[*side].inbound {
                    Flow::Draining { next_check, .. } => Some(next_check),
                    _ => None,
                },
            )
            .min();
        match next {
            None => -1,
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                // Round up, so that a wait never ends just before it is due.
                let ms = wait.as_micros().div_ceil(1000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }

    /// Checks every draining direction that is due.
    fn check_drains(&mut self, now: Instant) {
        if self.draining.is_empty() {
            return;
        }
        let due: Vec<(u64, usize)> = self
            .draining
            .iter()
            .copied()
            .filter(|(id, side)| {
                self.sessions.get(id).is_some_and(|session| {
                    matches!(session.ends[*side].inbound,
                        Flow::Draining { next_check, .. } if next_check <= now)
                })
            })
            .collect();
        for (id, side) in due {
            self.check_drain(id, side, now);
        }
    }

    /// Has everything from `side` reached its peer? If so, half-closes the
    /// peer; if not, schedules the next check.
    fn check_drain(&mut self, id: u64, side: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Flow::Draining {
            received,
            target,
            last_written,
            progress_at,
            backoff,
            ..
        } = session.ends[side].inbound
        else {
            return;
        };
        let peer = &session.ends[1 - side];
        let written = match written_total(&peer.socket) {
            Ok(total) => total.saturating_sub(peer.base.written),
            Err(error) => return self.fail(id, context(1 - side, "reading its counters", error)),
        };
        if written >= target {
            // The peer may be gone already; its own events report that.
            let _ = peer.socket.shutdown(Shutdown::Write);
            session.ends[side].inbound = Flow::Done { received };
            self.draining.remove(&(id, side));
            if session
                .ends
                .iter()
                .all(|end| matches!(end.inbound, Flow::Done { .. }))
            {
                if let Some(session) = self.sessions.remove(&id) {
                    self.end(session, Ok(()));
                }
            }
            return;
        }
        let progress_at = if written != last_written {
            now
        } else {
            progress_at
        };
        if now.duration_since(progress_at) >= DRAIN_STALL_LIMIT
            && sys::unacked(peer.socket.as_fd()).unwrap_or(0) == 0
        {
            let error = io::Error::other(format!(
                "{} bytes from the {} never reached the {}",
                target - written,
                side_name(side),
                side_name(1 - side),
            ));
            return self.fail(id, error);
        }
        session.ends[side].inbound = Flow::Draining {
            received,
            target,
            last_written: written,
            progress_at,
            next_check: now + backoff,
            backoff: (backoff * 2).min(DRAIN_MAX_RECHECK),
        };
    }

    fn fail(&mut self, id: u64, error: io::Error) {
        if let Some(session) = self.sessions.remove(&id) {
            self.end(session, Err(error));
        }
    }

    /// Takes a pair out of the map, closes it, and reports.
    fn end(&mut self, session: Session, result: io::Result<()>) {
        let totals = session.totals();
        for side in [CLIENT, BACKEND] {
            self.draining.remove(&(session.id, side));
        }
        for end in &session.ends {
            // Closing would do both as well; doing it first keeps the map
            // and the epoll set exact even if a descriptor were duplicated.
            let _ = self.epoll.delete(end.socket.as_fd());
            let _ = sys::map_delete(self.map.as_fd(), end.base.cookie);
        }
        let Session { ends, done, .. } = session;
        drop(ends);
        // The caller may have stopped waiting.
        let _ = done.send(Report { totals, result });
    }

    fn close_all(&mut self, reason: &io::Error) {
        for (_, session) in std::mem::take(&mut self.sessions) {
            let error = io::Error::new(reason.kind(), reason.to_string());
            self.end(session, Err(error));
        }
    }
}

fn side_name(side: usize) -> &'static str {
    if side == CLIENT {
        "client"
    } else {
        "backend"
    }
}

fn context(side: usize, doing: &str, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{} {doing}: {error}", side_name(side)),
    )
}
