//! The plaintext Postgres start-up phase.
//!
//! Everything a client may send before TLS begins is parsed by
//! [`startup::classify`]; everything pgsni says back before TLS (the one-byte
//! answers and the refusals) is encoded by [`reply`] with pgwire's message
//! layer. A terminated route reads and replays the StartupMessage with
//! [`startup_message`].

pub mod proxy_header;
pub mod reply;
pub mod startup;
pub mod startup_message;

pub use startup::{classify, StartupError, StartupPacket};
