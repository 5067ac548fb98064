//! Systems other than Linux: the same API, where loading always fails with
//! [`io::ErrorKind::Unsupported`], so that callers need no `cfg` of their
//! own.

use std::convert::Infallible;
use std::io;

use tokio::net::TcpStream;

use super::{InsertError, LoadError};
use crate::proxy::forward::Forwarded;

/// The kernel data path; never available on this system.
#[derive(Clone, Debug)]
pub struct Sockmap {
    never: Infallible,
}

impl Sockmap {
    /// Always fails: socket maps are a Linux feature.
    pub fn load() -> Result<Self, LoadError> {
        Self::with_capacity(super::DEFAULT_CAPACITY)
    }

    /// Always fails: socket maps are a Linux feature.
    pub fn with_capacity(_pairs: u32) -> Result<Self, LoadError> {
        Err(LoadError::new(
            "loading the kernel data path",
            io::Error::new(
                io::ErrorKind::Unsupported,
                "socket maps exist only on Linux",
            ),
        ))
    }

    /// Never called: no `Sockmap` exists on this system.
    pub fn insert(&self, _client: TcpStream, _backend: TcpStream) -> Result<Spliced, InsertError> {
        match self.never {}
    }

    /// Never called: no `Sockmap` exists on this system.
    pub fn sockets_in_map(&self) -> io::Result<usize> {
        match self.never {}
    }
}

/// A spliced pair; never exists on this system.
#[derive(Debug)]
pub struct Spliced {
    never: Infallible,
}

impl Spliced {
    /// Never called: no `Spliced` exists on this system.
    pub async fn replay(&mut self, _bytes: &[u8]) -> io::Result<()> {
        match self.never {}
    }

    /// Never called: no `Spliced` exists on this system.
    pub fn client(&self) -> &TcpStream {
        match self.never {}
    }

    /// Never called: no `Spliced` exists on this system.
    pub fn backend(&self) -> &TcpStream {
        match self.never {}
    }

    /// Never called: no `Spliced` exists on this system.
    pub async fn finished(self, _route: &str) -> io::Result<Forwarded> {
        match self.never {}
    }
}
