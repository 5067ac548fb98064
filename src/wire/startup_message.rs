//! The StartupMessage's parameters, read and rewritten.
//!
//! A terminated route reads the client's StartupMessage inside its own TLS
//! session and replays it to the backend; a client that sent no server name
//! may carry its route in it (see [`crate::proxy::terminate`]). Parameters
//! are kept as raw bytes, in their order and with any duplicates, so that a
//! message nobody changed is replayed byte for byte, and one that lost a
//! routing key differs in that key only. (pgwire's `Startup` keeps them in a
//! map of UTF-8 strings, which would reorder, deduplicate and re-encode
//! them.)
//!
//! The bounds are Postgres's own: at most [`MAX_STARTUP_PACKET_LEN`] bytes,
//! protocol major version 3, NUL-terminated names and values, and a final
//! NUL.

use std::borrow::Cow;

use thiserror::Error;

use super::startup::{MAX_STARTUP_PACKET_LEN, MIN_STARTUP_PACKET_LEN};

/// Why a StartupMessage cannot be used.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum StartupMessageError {
    /// The length field does not match the packet, or is out of bounds.
    #[error("invalid StartupMessage length")]
    Length,
    /// A protocol major version other than 3.
    #[error("unsupported frontend protocol {0}.{1}")]
    Version(u16, u16),
    /// The parameters are not NUL-terminated pairs followed by a NUL.
    #[error("invalid StartupMessage layout")]
    Layout,
}

/// A parsed StartupMessage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    /// The whole packet as received, replayed as is while unchanged.
    raw: Vec<u8>,
    /// The protocol version code (major << 16 | minor).
    version: u32,
    /// Name and value of each parameter, in order.
    parameters: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether `parameters` no longer match `raw`.
    changed: bool,
}

impl StartupMessage {
    /// Parses a complete packet, length field included.
    pub fn parse(packet: &[u8]) -> Result<Self, StartupMessageError> {
        let (len, rest) = packet
            .split_first_chunk::<4>()
            .ok_or(StartupMessageError::Length)?;
        let len = u32::from_be_bytes(*len) as usize;
        if len != packet.len() || !(MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN).contains(&len)
        {
            return Err(StartupMessageError::Length);
        }
        let (version, mut body) = rest
            .split_first_chunk::<4>()
            .ok_or(StartupMessageError::Length)?;
        let version = u32::from_be_bytes(*version);
        let (major, minor) = ((version >> 16) as u16, version as u16);
        if major != 3 {
            return Err(StartupMessageError::Version(major, minor));
        }
        let mut parameters = Vec::new();
        loop {
            let (name, rest) = split_cstring(body)?;
            if name.is_empty() {
                // The terminator must be the packet's last byte.
                if !rest.is_empty() {
                    return Err(StartupMessageError::Layout);
                }
                break;
            }
            let (value, rest) = split_cstring(rest)?;
            parameters.push((name.to_vec(), value.to_vec()));
            body = rest;
        }
        Ok(Self {
            raw: packet.to_vec(),
            version,
            parameters,
            changed: false,
        })
    }

    /// The value of parameter `name` (its last occurrence, which is the one
    /// Postgres keeps).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.parameters
            .iter()
            .rev()
            .find(|(key, _)| key == name.as_bytes())
            .map(|(_, value)| value.as_slice())
    }

    /// Sets every occurrence of parameter `name` to `value`, or removes them
    /// all when `value` is `None`. Does nothing if `name` is absent.
    pub fn replace(&mut self, name: &str, value: Option<&[u8]>) {
        let before = self.parameters.len();
        match value {
            Some(value) => {
                for (key, old) in &mut self.parameters {
                    if key == name.as_bytes() && old != value {
                        *old = value.to_vec();
                        self.changed = true;
                    }
                }
            }
            None => self.parameters.retain(|(key, _)| key != name.as_bytes()),
        }
        self.changed |= self.parameters.len() != before;
    }

    /// The packet to send on: the bytes received, unless a parameter was
    /// changed.
    pub fn encode(&self) -> Cow<'_, [u8]> {
        if !self.changed {
            return Cow::Borrowed(&self.raw);
        }
        let mut packet = vec![0; 4];
        packet.extend_from_slice(&self.version.to_be_bytes());
        for (name, value) in &self.parameters {
            packet.extend_from_slice(name);
            packet.push(0);
            packet.extend_from_slice(value);
            packet.push(0);
        }
        packet.push(0);
        let len = packet.len() as u32;
        packet[..4].copy_from_slice(&len.to_be_bytes());
        Cow::Owned(packet)
    }
}

/// Splits a NUL-terminated string off `input`.
fn split_cstring(input: &[u8]) -> Result<(&[u8], &[u8]), StartupMessageError> {
    let end = input
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupMessageError::Layout)?;
    let (string, rest) = input
        .split_at_checked(end)
        .ok_or(StartupMessageError::Layout)?;
    Ok((string, rest.get(1..).unwrap_or_default()))
}

/// Splits the `options` parameter into arguments the way the server does
/// (`pg_split_opts`): separated by whitespace, where a backslash takes the
/// next byte literally.
pub fn split_options(options: &[u8]) -> Vec<Vec<u8>> {
    let mut arguments = Vec::new();
    let mut bytes = options.iter().copied().peekable();
    loop {
        while bytes.next_if(u8::is_ascii_whitespace).is_some() {}
        if bytes.peek().is_none() {
            return arguments;
        }
        let mut argument = Vec::new();
        while let Some(byte) = bytes.next_if(|b| !b.is_ascii_whitespace()) {
            match byte {
                b'\\' => argument.extend(bytes.next()),
                byte => argument.push(byte),
            }
        }
        arguments.push(argument);
    }
}

/// Joins arguments into an `options` value that [`split_options`] splits
/// back into the same arguments, less any empty ones: the syntax can write
/// an empty argument only as a lone backslash at the very end, and an empty
/// argument means nothing to the server.
pub fn join_options(arguments: &[Vec<u8>]) -> Vec<u8> {
    let mut options = Vec::new();
    for argument in arguments {
        if !options.is_empty() {
            options.push(b' ');
        }
        for &byte in argument {
            if byte == b'\\' || byte.is_ascii_whitespace() {
                options.push(b'\\');
            }
            options.push(byte);
        }
    }
    options
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A StartupMessage packet with `version` and `parameters`, in order;
    /// shared with the terminated-route tests.
    pub(crate) fn packet(version: u32, parameters: &[(&str, &str)]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        for (name, value) in parameters {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn an_unchanged_message_is_replayed_byte_for_byte() {
        let raw = packet(
            0x0003_0000,
            &[("user", "alice"), ("database", "app"), ("user", "bob")],
        );
        let message = StartupMessage::parse(&raw).unwrap();
        assert_eq!(message.get("user"), Some(&b"bob"[..]), "the last one wins");
        assert_eq!(message.get("database"), Some(&b"app"[..]));
        assert_eq!(message.get("options"), None);
        assert!(matches!(message.encode(), Cow::Borrowed(bytes) if bytes == raw));
    }

    #[test]
    fn a_changed_message_differs_in_that_parameter_only() {
        let raw = packet(
            0x0003_0002,
            &[
                ("user", "alice"),
                ("database", "t/app"),
                ("options", "-c x=1"),
            ],
        );
        let mut message = StartupMessage::parse(&raw).unwrap();
        message.replace("database", Some(b"app"));
        message.replace("options", None);
        message.replace("absent", None);
        assert_eq!(
            message.encode().into_owned(),
            packet(0x0003_0002, &[("user", "alice"), ("database", "app")])
        );
        let mut same = StartupMessage::parse(&raw).unwrap();
        same.replace("user", Some(b"alice"));
        assert!(matches!(same.encode(), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = packet(0x0003_0000, &[("user", "alice")]);
        let mut short = good.clone();
        short.pop();
        assert_eq!(
            StartupMessage::parse(&short),
            Err(StartupMessageError::Length)
        );
        let mut unterminated = good[..good.len() - 1].to_vec();
        unterminated[3] -= 1;
        assert_eq!(
            StartupMessage::parse(&unterminated),
            Err(StartupMessageError::Layout)
        );
        let mut trailing = good.clone();
        trailing.push(b'x');
        trailing[3] += 1;
        assert_eq!(
            StartupMessage::parse(&trailing),
            Err(StartupMessageError::Layout)
        );
        assert_eq!(
            StartupMessage::parse(&packet(0x0002_0000, &[])),
            Err(StartupMessageError::Version(2, 0))
        );
        assert!(StartupMessage::parse(&[0, 0, 0, 4]).is_err());
        assert!(StartupMessage::parse(&[]).is_err());
    }

    #[test]
    fn options_split_like_the_server_and_join_back() {
        let split = split_options(br"  -c a=1  --b=two\ words -c\ c=\\x ");
        assert_eq!(split, [&b"-c"[..], b"a=1", b"--b=two words", b"-c c=\\x"]);
        assert_eq!(split_options(&join_options(&split)), split);
        assert!(split_options(b" \t ").is_empty());
        assert_eq!(split_options(b"trailing\\"), [b"trailing"]);
        let with_empty = split_options(b"-c a=1 \\");
        assert_eq!(with_empty, [&b"-c"[..], b"a=1", b""]);
        assert_eq!(split_options(&join_options(&with_empty)), with_empty[..2]);
    }
}
