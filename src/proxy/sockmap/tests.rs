//! Tests of both data paths.
//!
//! Tests named `kernel_path_*` splice real loopback pairs through the map.
//! Where this process may not load BPF programs they cannot run: each then
//! asserts that the reason is an expected one, prints `kernel path NOT
//! tested` with the reason, and returns, so their passing says nothing about
//! the kernel path there. Tests named `fallback_path_*` check that refused
//! or unavailable splicing leaves the sockets to the user-space forwarder.

use std::collections::HashSet;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{LoadError, Sockmap};
use crate::proxy::forward::{self, Forwarded};

/// Loads a map for one test, or says why the kernel path cannot be tested
/// here (after checking that the reason is one the fallback expects).
fn kernel(test: &str) -> Option<Sockmap> {
    kernel_with_capacity(test, 64)
}

/// Set by `scripts/test.sh` (and so in CI): a kernel-path test that cannot
/// run fails instead of passing untested.
const REQUIRE_KERNEL_PATH: &str = "PGSNI_REQUIRE_KERNEL_PATH";

fn kernel_with_capacity(test: &str, pairs: u32) -> Option<Sockmap> {
    match Sockmap::with_capacity(pairs) {
        Ok(sockmap) => Some(sockmap),
        Err(error) => {
            assert_unavailable(&error);
            assert!(
                std::env::var_os(REQUIRE_KERNEL_PATH).is_none(),
                "{test}: the kernel path cannot load here ({error}), and {REQUIRE_KERNEL_PATH} is set"
            );
            eprintln!("{test}: kernel path NOT tested: {error}");
            None
        }
    }
}

fn assert_unavailable(error: &LoadError) {
    assert!(
        error.is_unavailable(),
        "the kernel path failed for an unexpected reason: {error}"
    );
}

/// A connected pair of loopback sockets: (connected, accepted).
async fn socket_pair_on(ip: &str) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let connect = TcpStream::connect(listener.local_addr().unwrap());
    let (connected, accepted) = tokio::join!(connect, listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

/// The four sockets of a proxied session: the client's end, pgsni's client
/// and backend sockets, and the backend's end.
struct Sockets {
    client: TcpStream,
    client_side: TcpStream,
    backend_side: TcpStream,
    backend: TcpStream,
}

async fn sockets_on(ip: &str) -> Sockets {
    let (client, client_side) = socket_pair_on(ip).await;
    let (backend_side, backend) = socket_pair_on(ip).await;
    Sockets {
        client,
        client_side,
        backend_side,
        backend,
    }
}

async fn sockets() -> Sockets {
    sockets_on("127.0.0.1").await
}

/// Splices pgsni's two sockets, replays `hello` to the backend, and checks
/// that it arrives there first. Returns the session and the two ends.
async fn splice(
    sockmap: &Sockmap,
    sockets: Sockets,
    hello: &[u8],
) -> (
    tokio::task::JoinHandle<std::io::Result<Forwarded>>,
    TcpStream,
    TcpStream,
) {
    let Sockets {
        client,
        client_side,
        backend_side,
        mut backend,
    } = sockets;
    let mut spliced = sockmap
        .insert(client_side, backend_side)
        .unwrap_or_else(|error| panic!("{error}"));
    spliced.replay(hello).await.unwrap();
    let session = tokio::spawn(spliced.finished("test"));
    let mut got = vec![0u8; hello.len()];
    backend.read_exact(&mut got).await.unwrap();
    assert_eq!(got, hello);
    (session, client, backend)
}

/// A small deterministic generator, for segment sizes and contents.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Writes `data` in segments of random sizes (1 byte to 64 KiB), then
/// half-closes.
async fn write_in_segments(stream: &mut (impl AsyncWrite + Unpin), data: &[u8], seed: u64) {
    let mut rng = XorShift(seed);
    let mut offset = 0;
    while offset < data.len() {
        let len = (1 + rng.below(64 * 1024)).min(data.len() - offset);
        stream.write_all(&data[offset..offset + len]).await.unwrap();
        offset += len;
        if rng.below(8) == 0 {
            tokio::task::yield_now().await;
        }
    }
    stream.shutdown().await.unwrap();
}

/// Reads to EOF in reads of random sizes.
async fn read_in_pieces(stream: &mut (impl AsyncRead + Unpin), seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed);
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let len = 1 + rng.below(chunk.len());
        match stream.read(&mut chunk[..len]).await.unwrap() {
            0 => return received,
            n => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits (bounded) for a session to end.
async fn ended(
    session: tokio::task::JoinHandle<std::io::Result<Forwarded>>,
) -> std::io::Result<Forwarded> {
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session must end promptly")
        .expect("the session task must not panic")
}

async fn eventually_empty(sockmap: &Sockmap) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = sockmap.sockets_in_map().unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} sockets left in the map");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn handles_can_move_between_tasks() {
    fn shared<T: Send + Sync>() {}
    fn sent<T: Send>() {}
    shared::<Sockmap>();
    sent::<super::Spliced>();
    shared::<LoadError>();
    sent::<super::InsertError>();
}

#[test]
fn kernel_path_loads_or_reports_an_expected_reason() {
    match Sockmap::load() {
        Ok(sockmap) => {
            assert_eq!(sockmap.sockets_in_map().unwrap(), 0);
            eprintln!("kernel path available: program loaded and attached");
        }
        Err(error) => {
            assert_unavailable(&error);
            eprintln!("kernel path NOT available here ({error}); sessions fall back");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_moves_megabytes_both_ways_exactly() {
    let Some(sockmap) = kernel("kernel_path_moves_megabytes_both_ways_exactly") else {
        return;
    };
    let hello = XorShift(7).bytes(517);
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, &hello).await;

    let upstream = XorShift(1).bytes(6 << 20);
    let downstream = XorShift(2).bytes(6 << 20);
    let (mut client_read, mut client_write) = client.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let ((), (), got_up, got_down) = tokio::join!(
        write_in_segments(&mut client_write, &upstream, 3),
        write_in_segments(&mut backend_write, &downstream, 4),
        read_in_pieces(&mut backend_read, 5),
        read_in_pieces(&mut client_read, 6),
    );
    assert!(got_up == upstream, "client-to-backend bytes differ");
    assert!(got_down == downstream, "backend-to-client bytes differ");

    let totals = ended(session).await.unwrap();
    assert_eq!(
        totals,
        Forwarded {
            client_to_backend: (hello.len() + upstream.len()) as u64,
            backend_to_client: downstream.len() as u64,
        }
    );
    eventually_empty(&sockmap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_half_close_passes_through_and_the_other_way_keeps_flowing() {
    let Some(sockmap) =
        kernel("kernel_path_half_close_passes_through_and_the_other_way_keeps_flowing")
    else {
        return;
    };
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;

    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");

    // Well after the half-close, the other direction still carries a lot.
    let reply = XorShift(9).bytes(3 << 20);
    let (mut client_read, _client_write) = client.split();
    let send = async {
        write_in_segments(&mut backend, &reply, 10).await;
        drop(backend);
    };
    let ((), got) = tokio::join!(send, read_in_pieces(&mut client_read, 11));
    assert!(got == reply, "bytes after the half-close differ");

    let totals = ended(session).await.unwrap();
    assert_eq!(totals.client_to_backend, (b"hello".len() + 10) as u64);
    assert_eq!(totals.backend_to_client, reply.len() as u64);
    eventually_empty(&sockmap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_a_fin_behind_a_backlog_waits_for_it() {
    let Some(sockmap) = kernel("kernel_path_a_fin_behind_a_backlog_waits_for_it") else {
        return;
    };
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;
    // Far more than the socket buffers hold, then the FIN, while the backend
    // is not reading: the FIN must not be passed on (which would lose what
    // is still queued in the kernel) until the backend has taken the rest.
    let upstream = XorShift(12).bytes(8 << 20);
    let send = async {
        write_in_segments(&mut client, &upstream, 13).await;
    };
    let receive = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            match backend.read(&mut chunk).await.unwrap() {
                0 => return received,
                n => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let ((), got) = tokio::join!(send, receive);
    assert!(got == upstream, "bytes behind the FIN differ");
    drop((client, backend));
    let totals = ended(session).await.unwrap();
    assert_eq!(totals.client_to_backend, (5 + upstream.len()) as u64);
}

/// Sends `data` and a FIN in one TCP segment: corked, the data waits until
/// `shutdown` appends the FIN to it and pushes both.
fn send_with_fin(stream: &TcpStream, data: &[u8]) {
    let socket = SockRef::from(stream);
    socket.set_tcp_cork(true).unwrap();
    assert_eq!(socket.send(data).unwrap(), data.len());
    socket.shutdown(Shutdown::Write).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_data_with_fin_after_the_other_side_closed_arrives() {
    let Some(sockmap) = kernel("kernel_path_data_with_fin_after_the_other_side_closed_arrives")
    else {
        return;
    };
    // The backend finishes first; then the client's last bytes share a
    // segment with its FIN, arriving at a socket pgsni has half-closed
    // (FIN_WAIT2), which that segment moves on to TIME_WAIT.
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;
    backend.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
    send_with_fin(&client, b"close_notify and FIN in one segment");
    backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"close_notify and FIN in one segment");
    ended(session).await.unwrap();

    // The same the other way round.
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
    send_with_fin(&backend, b"the last reply, with the FIN");
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"the last reply, with the FIN");
    ended(session).await.unwrap();
    eventually_empty(&sockmap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_reset_ends_the_session_promptly() {
    let Some(sockmap) = kernel("kernel_path_reset_ends_the_session_promptly") else {
        return;
    };
    let (session, client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;
    // Linger 0 makes close send RST. The backend stays open and silent, so
    // only the reset can end the session.
    SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let started = Instant::now();
    let outcome = ended(session).await;
    assert!(outcome.is_err(), "a reset is reported as an error");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The backend is closed in turn.
    let mut rest = Vec::new();
    let _ = backend.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    eventually_empty(&sockmap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_ipv6_pairs_are_spliced_too() {
    let Some(sockmap) = kernel("kernel_path_ipv6_pairs_are_spliced_too") else {
        return;
    };
    if TcpListener::bind("[::1]:0").await.is_err() {
        assert!(
            std::env::var_os(REQUIRE_KERNEL_PATH).is_none(),
            "no IPv6 loopback here, and {REQUIRE_KERNEL_PATH} is set"
        );
        eprintln!("kernel_path_ipv6_pairs_are_spliced_too: no IPv6 loopback, NOT tested");
        return;
    }
    let (session, mut client, mut backend) =
        splice(&sockmap, sockets_on("::1").await, b"hello").await;
    client.write_all(b"ping").await.unwrap();
    let mut ping = [0u8; 4];
    backend.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"ping");
    backend.write_all(b"pong").await.unwrap();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    drop((client, backend));
    let totals = ended(session).await.unwrap();
    assert_eq!(totals.client_to_backend, 9);
    assert_eq!(totals.backend_to_client, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_dropping_a_pair_before_it_is_awaited_closes_both() {
    let Some(sockmap) = kernel("kernel_path_dropping_a_pair_before_it_is_awaited_closes_both")
    else {
        return;
    };
    let Sockets {
        mut client,
        client_side,
        backend_side,
        mut backend,
    } = sockets().await;
    let spliced = sockmap.insert(client_side, backend_side).unwrap();
    assert_eq!(sockmap.sockets_in_map().unwrap(), 2);
    drop(spliced);
    assert_eq!(sockmap.sockets_in_map().unwrap(), 0);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    backend.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_cancelling_the_wait_closes_both() {
    let Some(sockmap) = kernel("kernel_path_cancelling_the_wait_closes_both") else {
        return;
    };
    let (session, mut client, mut backend) = splice(&sockmap, sockets().await, b"hello").await;
    session.abort();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("the client side is closed")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), backend.read_to_end(&mut rest))
        .await
        .expect("the backend side is closed")
        .unwrap();
    assert!(rest.is_empty());
    eventually_empty(&sockmap).await;
}

/// The socket inodes this process holds, from `/proc/self/fd`.
fn open_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn socket_inode(stream: &TcpStream) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", stream.as_raw_fd())).unwrap();
    let link = link.to_str().unwrap();
    link.strip_prefix("socket:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse().ok())
        .unwrap_or_else(|| panic!("not a socket: {link}"))
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_path_a_thousand_pairs_leave_no_map_entries_or_descriptors() {
    let Some(sockmap) = kernel_with_capacity(
        "kernel_path_a_thousand_pairs_leave_no_map_entries_or_descriptors",
        128,
    ) else {
        return;
    };
    let fds_before = open_fd_count();
    let mut spliced_inodes = HashSet::new();
    // In batches, so that the map (128 pairs) must be reused.
    for _ in 0..10 {
        let mut sessions = Vec::new();
        for _ in 0..100 {
            let sockets = sockets().await;
            spliced_inodes.insert(socket_inode(&sockets.client_side));
            spliced_inodes.insert(socket_inode(&sockets.backend_side));
            sessions.push(splice(&sockmap, sockets, b"hi").await);
        }
        for (session, mut client, mut backend) in sessions {
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            backend.read_exact(&mut byte).await.unwrap();
            drop(client);
            drop(backend);
            let totals = ended(session).await.unwrap();
            assert_eq!(totals.client_to_backend, 3);
        }
    }
    assert_eq!(sockmap.sockets_in_map().unwrap(), 0);
    let still_open: Vec<_> = open_socket_inodes()
        .intersection(&spliced_inodes)
        .copied()
        .collect();
    assert!(
        still_open.is_empty(),
        "spliced sockets still open: {still_open:?}"
    );
    // Other tests run alongside and open descriptors of their own, so the
    // count is only a coarse check on top of the exact one above.
    let fds_after = open_fd_count();
    assert!(
        fds_after < fds_before + 100,
        "descriptors grew from {fds_before} to {fds_after}"
    );
}

/// Forwards one small exchange with a half-close through the user-space
/// path, as a session does after falling back.
async fn forward_in_user_space(
    mut client: TcpStream,
    client_side: TcpStream,
    backend_side: TcpStream,
    mut backend: TcpStream,
) {
    let session =
        tokio::spawn(async move { forward::forward(client_side, backend_side, "test", 0).await });
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping");
    backend.write_all(b"pong").await.unwrap();
    drop(backend);
    got.clear();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"pong");
    let totals = ended(session).await.unwrap();
    assert_eq!(totals.client_to_backend, 4);
    assert_eq!(totals.backend_to_client, 4);
}

#[test]
fn fallback_path_without_privileges_load_fails_and_forwarding_works() {
    // Capabilities are per thread on Linux: only this thread loses them.
    let outcome = std::thread::spawn(|| {
        super::sys::drop_thread_capabilities().unwrap();
        let error = match Sockmap::load() {
            Ok(_) => panic!("loaded without any capability"),
            Err(error) => error,
        };
        // EPERM from a plain kernel; a sandbox may say ENOSYS instead.
        assert_unavailable(&error);
        eprintln!("fallback path: without capabilities: {error}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let Sockets {
                client,
                client_side,
                backend_side,
                backend,
            } = sockets().await;
            forward_in_user_space(client, client_side, backend_side, backend).await;
        });
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_path_a_full_map_hands_the_sockets_back() {
    let Some(sockmap) = kernel_with_capacity("fallback_path_a_full_map_hands_the_sockets_back", 1)
    else {
        return;
    };
    let first = sockets().await;
    let _spliced = sockmap
        .insert(first.client_side, first.backend_side)
        .unwrap();
    let Sockets {
        client,
        client_side,
        backend_side,
        backend,
    } = sockets().await;
    let refused = match sockmap.insert(client_side, backend_side) {
        Ok(_) => panic!("a map for one pair took two"),
        Err(refused) => refused,
    };
    eprintln!("fallback path: {refused}");
    assert_eq!(sockmap.sockets_in_map().unwrap(), 2);
    let (client_side, backend_side) = refused.into_sockets();
    forward_in_user_space(client, client_side, backend_side, backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_path_a_client_gone_before_insert_is_refused_with_its_sockets() {
    let Some(sockmap) =
        kernel("fallback_path_a_client_gone_before_insert_is_refused_with_its_sockets")
    else {
        return;
    };
    let Sockets {
        mut client,
        client_side,
        backend_side,
        backend,
    } = sockets().await;
    // The client half-closes before the pair is inserted: its socket is no
    // longer established, which the map does not accept.
    client.shutdown().await.unwrap();
    client_side.readable().await.unwrap();
    let refused = match sockmap.insert(client_side, backend_side) {
        Ok(_) => panic!("a half-closed socket was accepted"),
        Err(refused) => refused,
    };
    eprintln!("fallback path: {refused}");
    assert_eq!(sockmap.sockets_in_map().unwrap(), 0);
    let (client_side, backend_side) = refused.into_sockets();
    let session =
        tokio::spawn(async move { forward::forward(client_side, backend_side, "test", 0).await });
    let mut backend = backend;
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty(), "the client's EOF is passed on");
    backend.write_all(b"still heard").await.unwrap();
    drop(backend);
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still heard");
    ended(session).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_path_bytes_already_waiting_are_refused_with_the_sockets() {
    let Some(sockmap) = kernel("fallback_path_bytes_already_waiting_are_refused_with_the_sockets")
    else {
        return;
    };
    let Sockets {
        mut client,
        client_side,
        backend_side,
        mut backend,
    } = sockets().await;
    // The client sends before the pair is inserted; the map would leave
    // these bytes queued.
    client.write_all(b"early").await.unwrap();
    client_side.readable().await.unwrap();
    let refused = match sockmap.insert(client_side, backend_side) {
        Ok(_) => panic!("a socket with unread bytes was accepted"),
        Err(refused) => refused,
    };
    eprintln!("fallback path: {refused}");
    assert_eq!(sockmap.sockets_in_map().unwrap(), 0);
    let (client_side, backend_side) = refused.into_sockets();
    let session =
        tokio::spawn(async move { forward::forward(client_side, backend_side, "test", 0).await });
    let mut early = [0u8; 5];
    backend.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");
    drop((client, backend));
    let _ = ended(session).await;
}

/// CPU time (user + system) in clock ticks, from a `/proc/.../stat` line.
fn stat_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap();
    // "pid (comm) state ...": comm may contain spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU ticks of the supervisor thread, the whole process and the machine.
fn cpu_ticks() -> [u64; 3] {
    let supervisor = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "pgsni-sockmap")
        })
        .map(|task| stat_ticks(&task.path().join("stat").to_string_lossy()))
        .sum();
    let process = stat_ticks("/proc/self/stat");
    let machine = {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        // user nice system idle iowait irq softirq steal: all but idle and
        // iowait are busy.
        let values: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|value| value.parse().unwrap())
            .collect();
        values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    };
    [supervisor, process, machine]
}

/// `pairs` sessions forwarded, by `sockmap` if given and by
/// `forward::forward` otherwise, on a thread of their own: the client and
/// backend ends, in blocking mode, and the thread, which returns the
/// sessions' totals and its own CPU ticks once they have all ended.
#[allow(clippy::type_complexity)]
fn forwarded_pairs(
    sockmap: Option<&Sockmap>,
    pairs: usize,
) -> (
    Vec<(std::net::TcpStream, std::net::TcpStream)>,
    std::thread::JoinHandle<(Vec<Forwarded>, u64)>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let mut ends = Vec::new();
    let mut middles = Vec::new();
    for _ in 0..pairs {
        let client = std::net::TcpStream::connect(address).unwrap();
        let client_side = listener.accept().unwrap().0;
        let backend_side = std::net::TcpStream::connect(address).unwrap();
        let backend = listener.accept().unwrap().0;
        for socket in [&client, &client_side, &backend_side, &backend] {
            // As pgsni and libpq do.
            socket.set_nodelay(true).unwrap();
        }
        for socket in [&client_side, &backend_side] {
            socket.set_nonblocking(true).unwrap();
        }
        ends.push((client, backend));
        middles.push((client_side, backend_side));
    }
    let sockmap = sockmap.cloned();
    // As in a session, the client sends only once the pair is spliced: bytes
    // queued before the insert would not be redirected.
    let (ready, spliced) = std::sync::mpsc::channel();
    let forwarder = std::thread::Builder::new()
        .name("bench-forward".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut sessions = Vec::new();
                for (client_side, backend_side) in middles {
                    let client_side = TcpStream::from_std(client_side).unwrap();
                    let backend_side = TcpStream::from_std(backend_side).unwrap();
                    sessions.push(match &sockmap {
                        Some(sockmap) => {
                            let spliced = sockmap.insert(client_side, backend_side).unwrap();
                            tokio::spawn(spliced.finished("bench"))
                        }
                        None => tokio::spawn(async move {
                            forward::forward(client_side, backend_side, "bench", 0).await
                        }),
                    });
                }
                let started = stat_ticks("/proc/thread-self/stat");
                ready.send(()).unwrap();
                let mut totals = Vec::new();
                for session in sessions {
                    totals.push(session.await.unwrap().unwrap());
                }
                (totals, stat_ticks("/proc/thread-self/stat") - started)
            })
        })
        .unwrap();
    spliced.recv().unwrap();
    (ends, forwarder)
}

/// What one measurement took: wall time, and CPU ticks of the forwarding
/// thread, the supervisor thread, the whole process and the machine.
struct Cost {
    elapsed: Duration,
    forwarder: u64,
    supervisor: u64,
    process: u64,
    machine: u64,
}

/// Runs `work` on the ends of `pairs` forwarded sessions, closes them, and
/// says what it cost.
fn measure(
    sockmap: Option<&Sockmap>,
    pairs: usize,
    work: impl Fn(std::net::TcpStream, std::net::TcpStream) + Send + Sync + 'static,
) -> (Cost, Vec<Forwarded>) {
    let (ends, forwarder) = forwarded_pairs(sockmap, pairs);
    let work = std::sync::Arc::new(work);
    let before = cpu_ticks();
    let started = Instant::now();
    let workers: Vec<_> = ends
        .into_iter()
        .map(|(client, backend)| {
            let work = std::sync::Arc::clone(&work);
            std::thread::spawn(move || work(client, backend))
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let elapsed = started.elapsed();
    let (totals, forwarder_ticks) = forwarder.join().unwrap();
    let after = cpu_ticks();
    let cost = Cost {
        elapsed,
        forwarder: forwarder_ticks,
        supervisor: after[0] - before[0],
        process: after[1] - before[1],
        machine: after[2] - before[2],
    };
    (cost, totals)
}

/// Sends `total` bytes from the client to the backend, then closes both.
fn bulk(total: u64) -> impl Fn(std::net::TcpStream, std::net::TcpStream) + Send + Sync {
    move |mut client, backend| {
        let reader = std::thread::spawn(move || {
            let mut backend = backend;
            let mut buf = vec![0u8; 256 * 1024];
            let mut received = 0u64;
            loop {
                match std::io::Read::read(&mut backend, &mut buf).unwrap() {
                    0 => return received,
                    n => received += n as u64,
                }
            }
        });
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0u64;
        while sent < total {
            let len = chunk.len().min((total - sent) as usize);
            std::io::Write::write_all(&mut client, &chunk[..len]).unwrap();
            sent += len as u64;
        }
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(reader.join().unwrap(), total);
    }
}

/// `rounds` exchanges of a 64-byte request and a 512-byte reply, the shape
/// of a short query, then closes both.
fn ping_pong(rounds: u32) -> impl Fn(std::net::TcpStream, std::net::TcpStream) + Send + Sync {
    use std::io::{Read, Write};
    move |mut client, mut backend| {
        let request = [1u8; 64];
        let reply = [2u8; 512];
        let mut buf = [0u8; 512];
        for _ in 0..rounds {
            client.write_all(&request).unwrap();
            backend.read_exact(&mut buf[..64]).unwrap();
            backend.write_all(&reply).unwrap();
            client.read_exact(&mut buf).unwrap();
        }
    }
}

/// Measurements to run by hand:
///
/// ```text
/// cargo test --release --lib -- --ignored --nocapture throughput
/// ```
#[test]
#[ignore = "a measurement, run by hand"]
fn throughput_user_space_vs_kernel_path() {
    const BULK: u64 = 1 << 30;
    const PAIRS: usize = 8;
    const ROUNDS: u32 = 20_000;
    let sockmap = match Sockmap::load() {
        Ok(sockmap) => Some(sockmap),
        Err(error) => {
            assert_unavailable(&error);
            eprintln!("kernel path NOT measured: {error}");
            None
        }
    };
    let ticks = |ticks: u64| ticks as f64 / 100.0; // USER_HZ
    let show = |path: &str, what: String, cost: &Cost| {
        eprintln!(
            "{path:>10}: {what}; CPU seconds: forwarder {:.2} + supervisor {:.2}, \
             process {:.2}, machine {:.2}",
            ticks(cost.forwarder),
            ticks(cost.supervisor),
            ticks(cost.process),
            ticks(cost.machine),
        );
    };
    for (path, sockmap) in [("user space", None), ("kernel", sockmap.as_ref())] {
        if path == "kernel" && sockmap.is_none() {
            continue;
        }
        let (cost, totals) = measure(sockmap, 1, bulk(BULK));
        assert_eq!(totals[0].client_to_backend, BULK);
        let secs = cost.elapsed.as_secs_f64();
        let what = format!(
            "1 GiB, one pair, in {secs:.2} s = {:.0} MB/s",
            BULK as f64 / secs / 1e6
        );
        show(path, what, &cost);

        let (cost, totals) = measure(sockmap, PAIRS, ping_pong(ROUNDS));
        assert!(totals
            .iter()
            .all(|totals| totals.backend_to_client == u64::from(ROUNDS) * 512));
        let secs = cost.elapsed.as_secs_f64();
        let what = format!(
            "{PAIRS} pairs x {ROUNDS} round trips (64 B / 512 B) in {secs:.2} s = {:.0} per s",
            f64::from(ROUNDS) * PAIRS as f64 / secs
        );
        show(path, what, &cost);
    }
}
