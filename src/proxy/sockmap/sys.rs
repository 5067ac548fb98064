//! The system calls the kernel data path needs and neither std nor socket2
//! offers: `bpf(2)`, epoll, eventfd, and a few TCP counters.
//!
//! This is the one module of the crate where `unsafe` is allowed, because
//! these calls exist only as raw syscalls taking pointers. Every block hands
//! the kernel pointers to memory borrowed for the duration of the call and
//! nothing else; each says why the memory is valid. The rest of the data
//! path builds on the safe functions here.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::program::Insn;

// `enum bpf_cmd`, `enum bpf_map_type`, `enum bpf_prog_type` and
// `enum bpf_attach_type` values (include/uapi/linux/bpf.h, a stable ABI).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;

/// `BPF_MAP_TYPE_SOCKHASH`.
pub(super) const MAP_TYPE_SOCKHASH: u32 = 18;
/// `BPF_PROG_TYPE_SK_SKB`.
pub(super) const PROG_TYPE_SK_SKB: u32 = 14;
/// `BPF_SK_SKB_VERDICT` (Linux 5.13): a verdict program without a stream
/// parser, run on each received skb.
pub(super) const ATTACH_SK_SKB_VERDICT: u32 = 38;
/// `BPF_SK_SKB_STREAM_VERDICT`: the older attach point for the same program.
pub(super) const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;
/// `BPF_NOEXIST`: a map update that must not replace an entry.
pub(super) const BPF_NOEXIST: u64 = 1;

/// The `BPF_MAP_CREATE` prefix of `union bpf_attr`.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `BPF_PROG_LOAD` prefix of `union bpf_attr`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` prefix of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The `BPF_MAP_*_ELEM` prefix of `union bpf_attr`; `value` doubles as
/// `next_key`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Object names are at most 15 bytes and NUL-terminated.
fn object_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let len = name.len().min(15);
    out[..len].copy_from_slice(&name.as_bytes()[..len]);
    out
}

/// Calls `bpf(cmd, attr, size_of::<T>())`.
///
/// # Safety
///
/// `T` must be the `#[repr(C)]` prefix of `union bpf_attr` that `cmd` reads,
/// and every pointer stored in it must be valid for what `cmd` does with it
/// (read or written, for the sizes the map or the attribute says) until the
/// call returns.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusive borrow of `size_of::<T>()` bytes;
    // the caller vouches for the pointers inside it. The kernel zero-extends
    // a shorter `bpf_attr`, so a prefix of the union is a valid argument.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor the kernel has just returned.
fn owned_fd(raw: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(raw)
        .map_err(|_| io::Error::other("the kernel returned an out-of-range file descriptor"))?;
    // SAFETY: `fd` was just created by a successful syscall and nothing else
    // in this process knows it, so it is open and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Turns a raw descriptor into the `u32` that `bpf_attr` fields take.
fn attr_fd(fd: BorrowedFd<'_>) -> u32 {
    // A borrowed descriptor is never negative.
    fd.as_raw_fd() as u32
}

/// `BPF_MAP_CREATE`: a map with 8-byte keys.
pub(super) fn map_create(
    map_type: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: mem::size_of::<u64>() as u32,
        value_size,
        max_entries,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: object_name(name),
    };
    // SAFETY: `MapCreateAttr` is the BPF_MAP_CREATE prefix and holds no
    // pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr)? };
    owned_fd(fd)
}

/// `BPF_PROG_LOAD`. When `log` is given, the verifier writes its report
/// into it (NUL-terminated), which is what explains a refusal.
pub(super) fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: object_name(name),
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `insns` (8-byte `#[repr(C)]` instructions, `insn_cnt` of
    // them) and the NUL-terminated `license` are borrowed for the call and
    // only read; `log_buf` is an exclusive borrow of `log_size` bytes, which
    // the kernel writes at most.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
    owned_fd(fd)
}

/// `BPF_PROG_ATTACH` of `prog` to the map `target`.
pub(super) fn prog_attach(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: attr_fd(target),
        attach_bpf_fd: attr_fd(prog),
        attach_type,
        attach_flags: 0,
    };
    // SAFETY: `ProgAttachAttr` is the BPF_PROG_ATTACH prefix and holds no
    // pointers; the descriptors are borrowed, so open, for the call.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr)? };
    Ok(())
}

/// `BPF_MAP_UPDATE_ELEM` of a socket map: stores the socket `socket` under
/// `key`.
pub(super) fn map_insert_socket(
    map: BorrowedFd<'_>,
    key: u64,
    socket: BorrowedFd<'_>,
    flags: u64,
) -> io::Result<()> {
    let value: u32 = attr_fd(socket);
    let mut attr = MapElemAttr {
        map_fd: attr_fd(map),
        _pad: 0,
        key: &key as *const u64 as u64,
        value: &value as *const u32 as u64,
        flags,
    };
    // SAFETY: the map was created with 8-byte keys and 4-byte values;
    // `key` and `value` are locals of exactly those sizes that outlive the
    // call, and the kernel only reads them.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr)? };
    Ok(())
}

/// `BPF_MAP_DELETE_ELEM`.
pub(super) fn map_delete(map: BorrowedFd<'_>, key: u64) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: attr_fd(map),
        _pad: 0,
        key: &key as *const u64 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the map has 8-byte keys and `key` is a local `u64` that
    // outlives the call, only read by the kernel.
    unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr)? };
    Ok(())
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first key for `None`),
/// or `None` at the end.
pub(super) fn map_next_key(map: BorrowedFd<'_>, key: Option<u64>) -> io::Result<Option<u64>> {
    let current = key.unwrap_or(0);
    let mut next = 0u64;
    let mut attr = MapElemAttr {
        map_fd: attr_fd(map),
        _pad: 0,
        key: match key {
            Some(_) => &current as *const u64 as u64,
            None => 0,
        },
        value: &mut next as *mut u64 as u64,
        flags: 0,
    };
    // SAFETY: the map has 8-byte keys; `current` (read) and `next`
    // (written) are local `u64`s that outlive the call.
    match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
        Ok(_) => Ok(Some(next)),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Counters from `TCP_INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TcpCounters {
    /// `tcpi_bytes_received`: sequence space received, including a FIN.
    pub(super) bytes_received: u64,
    /// `tcpi_bytes_acked`: sequence space the peer acknowledged, including
    /// the SYN (and a FIN).
    pub(super) bytes_acked: u64,
}

/// Reads [`TcpCounters`] of a TCP socket (Linux 4.1 or later).
pub(super) fn tcp_counters(socket: BorrowedFd<'_>) -> io::Result<TcpCounters> {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is an exclusive borrow of `len` bytes, and `len` tells
    // the kernel so; it writes at most that many and stores the count in
    // `len`.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel fills only the fields it knows; these two came in 4.1 and
    // 4.2, after 120 bytes of older fields.
    let needed = mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + mem::size_of::<u64>();
    if (len as usize) < needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_INFO lacks byte counters",
        ));
    }
    Ok(TcpCounters {
        bytes_received: info.tcpi_bytes_received,
        bytes_acked: info.tcpi_bytes_acked,
    })
}

/// `SIOCINQ` (`FIONREAD`): bytes received on a TCP socket and not yet read.
/// Meaningful before the socket enters a map, which changes what it counts.
pub(super) fn unread(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one `int` through its argument, which points
    // to the local `count`.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut count) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(count).map_err(|_| io::Error::other("negative SIOCINQ"))
}

/// `SIOCOUTQ`: bytes written to a TCP socket and not yet acknowledged.
pub(super) fn unacked(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (numerically TIOCOUTQ) writes one `int` through its
    // argument, which points to the local `count`.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut count) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(count).map_err(|_| io::Error::other("negative SIOCOUTQ"))
}

/// An epoll instance, with room for the events of one wait.
pub(super) struct Epoll {
    fd: OwnedFd,
    buffer: Vec<libc::epoll_event>,
}

/// What one readiness event said.
#[derive(Clone, Copy, Debug)]
pub(super) struct Event {
    /// The `EPOLL*` bits.
    pub(super) events: u32,
    /// The token given when the descriptor was added.
    pub(super) token: u64,
}

impl Epoll {
    /// A new instance that reports up to `capacity` events per wait.
    pub(super) fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd: owned_fd(fd.into())?,
            buffer: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a local the kernel reads during the call (and
        // ignores for EPOLL_CTL_DEL); both descriptors are open.
        let ret = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut event) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Watches `fd` for `events` (`EPOLL*` bits), reported with `token`.
    pub(super) fn add(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub(super) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: for ever) and appends what happened to
    /// `out`. An interrupted wait returns no events.
    pub(super) fn wait(&mut self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        let raw = &mut self.buffer;
        // SAFETY: `raw` is an exclusive borrow of `raw.len()` events and the
        // kernel writes at most that many.
        let ret = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                raw.as_mut_ptr(),
                raw.len().min(libc::c_int::MAX as usize) as libc::c_int,
                timeout_ms,
            )
        };
        if ret < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(error),
            };
        }
        out.extend(raw[..ret as usize].iter().map(|event| Event {
            events: event.events,
            token: event.u64,
        }));
        Ok(())
    }
}

/// An eventfd, to wake a thread blocked in [`Epoll::wait`].
#[derive(Debug)]
pub(super) struct EventFd(OwnedFd);

impl EventFd {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        owned_fd(fd.into()).map(Self)
    }

    /// Makes the eventfd readable. Never blocks; the counter would have to
    /// reach 2^64 - 1 to refuse, which only means it is readable already.
    pub(super) fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes the 8 bytes of a local array.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Resets the eventfd to not readable.
    pub(super) fn drain(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local array of 8; with
        // EFD_NONBLOCK an unset counter returns EAGAIN, which is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Drops every capability of the calling thread (and only of it: Linux
/// keeps capabilities per thread), so that a test can see what an
/// unprivileged process sees.
#[cfg(test)]
pub(super) fn drop_thread_capabilities() -> io::Result<()> {
    /// `struct __user_cap_header_struct`.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    /// `struct __user_cap_data_struct`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: version 3 takes one header and two data structs, all locals
    // that the kernel only reads; pid 0 means the calling thread.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
