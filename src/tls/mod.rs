//! The little of TLS that pgsni reads and writes, without ever decrypting.
//!
//! A client's first flight is a ClientHello, in the clear. pgsni buffers it,
//! reads the server name and ALPN offer from it to choose a backend, then
//! forwards the very same bytes and steps out of the way.
//!
//! - [`client_hello`]: record-layer reassembly and ClientHello parsing, as
//!   pure, non-allocating functions over `&[u8]`.
//! - [`server_name`]: validation and normalisation of the requested name.
//! - [`alert`]: the plaintext fatal alerts pgsni sends when it refuses a
//!   client.
//!
//! The usual path, once per read from the client:
//!
//! ```
//! use pgsni::tls::{read_client_hello, HostName};
//!
//! # fn route(_: &HostName) {}
//! # fn refuse(_: pgsni::tls::AlertDescription) {}
//! # let buffered: &[u8] = &[];
//! let mut scratch = Vec::new();
//! match read_client_hello(buffered, &mut scratch) {
//!     Ok(None) => { /* read more, unless MAX_CLIENT_HELLO_BYTES are buffered */ }
//!     Ok(Some(hello)) => {
//!         if let Some(Ok(name)) = hello.server_name().map(HostName::parse) {
//!             route(&name);
//!         }
//!     }
//!     Err(err) => refuse(err.alert()),
//! }
//! ```

pub mod alert;
pub mod client_hello;
pub mod server_name;

#[cfg(test)]
mod test_util;

pub use alert::{fatal_alert, AlertDescription};
pub use client_hello::{
    locate, read_client_hello, ClientHello, Fragments, HelloError, Located, Protocols,
    MAX_CLIENT_HELLO_BYTES,
};
pub use server_name::{is_valid_label, HostName, NameError};
