//! Reading a ClientHello allocates nothing.
//!
//! This is its own test binary because it replaces the global allocator with
//! one that counts. Counts are per thread, so tests running in parallel on
//! other threads do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use pgsni::tls::{
    locate, read_client_hello, ClientHello, HelloError, HostName, Located, MAX_CLIENT_HELLO_BYTES,
};

const SINGLE_RECORD: &[u8] = include_bytes!("../src/tls/testdata/rustls_alpn.bin");
const FRAGMENTED: &[u8] = include_bytes!("../src/tls/testdata/rustls_fragmented.bin");
/// Real clients' hellos in one record: psql 15, and libpq 18's post-quantum
/// one.
const CAPTURED: [&[u8]; 2] = [
    include_bytes!("../src/tls/testdata/psql15_openssl30.bin"),
    include_bytes!("../src/tls/testdata/psycopg_libpq18_openssl35.bin"),
];
/// The post-quantum hello in four records.
const MULTI_RECORD: &[u8] = include_bytes!("../src/tls/testdata/multi_record_pq.bin");

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct CountingAllocator;

impl CountingAllocator {
    fn count() {
        // `try_with`: the allocator may be called while the thread-local is
        // being torn down.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting touches only a
// const-initialised thread-local, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Everything the proxy reads from a hello, kept alive through `black_box`.
fn read_everything(hello: &ClientHello<'_>) {
    black_box(hello.legacy_version());
    black_box(hello.offers_alpn(b"postgresql"));
    for protocol in hello.alpn_protocols() {
        black_box(protocol);
    }
    let name = HostName::parse(hello.server_name().unwrap()).unwrap();
    black_box(name.as_str());
    black_box(name.parent());
}

#[test]
fn the_counter_counts() {
    assert!(allocations_in(|| drop(black_box(vec![0u8; 16]))) >= 1);
    let mut scratch = Vec::new();
    assert!(
        allocations_in(|| {
            read_client_hello(black_box(FRAGMENTED), &mut scratch).unwrap();
        }) >= 1
    );
}

#[test]
fn single_record_hello_allocates_nothing() {
    for input in [SINGLE_RECORD, CAPTURED[0], CAPTURED[1]] {
        let allocations = allocations_in(|| {
            let Ok(Located::Contiguous { message, .. }) = locate(black_box(input)) else {
                panic!("expected a single-record hello");
            };
            read_everything(&ClientHello::parse(message).unwrap());
        });
        assert_eq!(allocations, 0);

        let mut scratch = Vec::new();
        let allocations = allocations_in(|| {
            let hello = read_client_hello(black_box(input), &mut scratch)
                .unwrap()
                .unwrap();
            read_everything(&hello);
        });
        assert_eq!(allocations, 0);
        assert_eq!(scratch.capacity(), 0, "scratch untouched");
    }
}

#[test]
fn fragmented_hello_allocates_nothing_given_a_buffer() {
    let allocations = allocations_in(|| {
        let Ok(Located::Fragmented(fragments)) = locate(black_box(FRAGMENTED)) else {
            panic!("expected a fragmented hello");
        };
        let mut buffer = [0; MAX_CLIENT_HELLO_BYTES];
        let message = fragments.reassemble(&mut buffer).unwrap();
        read_everything(&ClientHello::parse(message).unwrap());
    });
    assert_eq!(allocations, 0);

    // A scratch `Vec` with room to spare is reused as is.
    let mut scratch = Vec::with_capacity(MAX_CLIENT_HELLO_BYTES);
    for input in [FRAGMENTED, MULTI_RECORD] {
        let allocations = allocations_in(|| {
            let hello = read_client_hello(black_box(input), &mut scratch)
                .unwrap()
                .unwrap();
            read_everything(&hello);
        });
        assert_eq!(allocations, 0);
    }
}

#[test]
fn prefixes_and_errors_allocate_nothing() {
    // A session id length of 33, after record header (5), handshake header
    // (4), version (2) and random (32).
    let mut garbage = SINGLE_RECORD.to_vec();
    garbage[43] = 33;
    let allocations = allocations_in(|| {
        for end in 0..SINGLE_RECORD.len() {
            assert_eq!(
                locate(black_box(&SINGLE_RECORD[..end])),
                Ok(Located::Incomplete)
            );
        }
        assert_eq!(
            read_client_hello(black_box(&garbage), &mut Vec::new()),
            Err(HelloError::BadSessionId)
        );
        assert_eq!(
            locate(black_box(b"GET / HTTP/1.1\r\n")),
            Err(HelloError::NotHandshake)
        );
        assert!(HostName::parse(black_box(b"bad name")).is_err());
    });
    assert_eq!(allocations, 0);
}
