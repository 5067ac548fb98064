//! What pgsni says to a client before TLS: the one-byte answers to SSLRequest
//! and GSSENCRequest, and FATAL ErrorResponses that psql prints verbatim.
//!
//! Messages are encoded with pgwire's message layer so that their framing is
//! the same code that real Postgres clients and servers are tested against.

use std::borrow::Cow;

use bytes::BytesMut;
use pgwire::messages::response::{ErrorResponse, GssEncResponse, SslResponse};
use pgwire::messages::startup::SslRequest;
use pgwire::messages::Message;

/// A SQLSTATE code, with the refusals pgsni can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    /// `28000` invalid_authorization_specification: what Postgres sends when
    /// pg_hba refuses a plaintext session.
    pub const INVALID_AUTHORIZATION: Self = Self("28000");
    /// `08P01` protocol_violation.
    pub const PROTOCOL_VIOLATION: Self = Self("08P01");
    /// `53300` too_many_connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self("53300");
    /// `08004` sqlserver_rejected_establishment_of_sqlconnection.
    pub const REJECTED_ESTABLISHMENT: Self = Self("08004");
    /// `57P03` cannot_connect_now.
    pub const CANNOT_CONNECT_NOW: Self = Self("57P03");
}

/// A FATAL error that ends a session: sent in plaintext before TLS, or inside
/// the broker's own TLS session where one is configured for refusals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The SQLSTATE a client can match on.
    pub code: SqlState,
    /// The primary message (`M`), shown as `FATAL: <message>`.
    pub message: Cow<'static, str>,
    /// An optional hint (`H`) telling the user what to do instead.
    pub hint: Option<Cow<'static, str>>,
}

impl Refusal {
    /// A plaintext StartupMessage: users may never connect unencrypted.
    pub const PLAINTEXT: Self = Self {
        code: SqlState::INVALID_AUTHORIZATION,
        message: Cow::Borrowed("this server accepts only TLS connections"),
        hint: Some(Cow::Borrowed(
            "connect with sslmode=require or stronger (verify-full recommended)",
        )),
    };

    /// Bytes arrived behind the SSLRequest before the `S` was sent: they were
    /// sent in the clear and may have been injected (CVE-2021-23214).
    pub const DATA_AFTER_SSL_REQUEST: Self = Self {
        code: SqlState::PROTOCOL_VIOLATION,
        message: Cow::Borrowed("received unencrypted data after SSL request"),
        hint: None,
    };

    /// A start-up packet that is not valid Postgres.
    pub const INVALID_STARTUP_PACKET: Self = Self {
        code: SqlState::PROTOCOL_VIOLATION,
        message: Cow::Borrowed("invalid start-up packet"),
        hint: None,
    };

    /// A connection limit is reached; `message` says which.
    pub const fn too_many_connections(message: &'static str) -> Self {
        Self {
            code: SqlState::TOO_MANY_CONNECTIONS,
            message: Cow::Borrowed(message),
            hint: None,
        }
    }

    /// No route serves the server name the client asked for.
    pub fn unknown_server_name(name: &str) -> Self {
        Self {
            code: SqlState::REJECTED_ESTABLISHMENT,
            message: Cow::Owned(format!("no database is served under the name \"{name}\"")),
            hint: Some(Cow::Borrowed(
                "check the host name in the connection string",
            )),
        }
    }

    /// The client sent no server name, and no route is the default.
    pub const NO_SERVER_NAME: Self = Self {
        code: SqlState::REJECTED_ESTABLISHMENT,
        message: Cow::Borrowed("the client sent no server name (SNI)"),
        hint: Some(Cow::Borrowed(
            "connect by host name (libpq 14 or later sends it); give a numeric address with hostaddr=",
        )),
    };

    /// The client sent no server name, and its StartupMessage names no
    /// route either (where the broker reads it: see
    /// [`crate::proxy::terminate`]).
    pub const NO_ROUTE_NAMED: Self = Self {
        code: SqlState::REJECTED_ESTABLISHMENT,
        message: Cow::Borrowed("the client sent no server name (SNI)"),
        hint: Some(Cow::Borrowed(
            "connect by host name (libpq 14 or later sends it), or name the database's host in options='-c pgsni.server_name=NAME'",
        )),
    };

    /// A client without a server name named a passthrough route in its
    /// StartupMessage; only the server name reaches such a route, since its
    /// TLS session ends at the tenant's own server.
    pub fn server_name_required(route: &str) -> Self {
        Self {
            code: SqlState::REJECTED_ESTABLISHMENT,
            message: Cow::Owned(format!(
                "the database \"{route}\" can only be reached by its server name (SNI): its TLS session ends at the database itself"
            )),
            hint: Some(Cow::Borrowed(
                "connect by host name (libpq 14 or later sends it); give a numeric address with hostaddr=",
            )),
        }
    }

    /// The server name is not a valid DNS name.
    pub const INVALID_SERVER_NAME: Self = Self {
        code: SqlState::REJECTED_ESTABLISHMENT,
        message: Cow::Borrowed("the server name the client sent is not a valid DNS name"),
        hint: None,
    };

    /// Every backend of the route is down or refused TLS.
    pub fn backend_unavailable(route: &str) -> Self {
        Self {
            code: SqlState::CANNOT_CONNECT_NOW,
            message: Cow::Owned(format!(
                "the database \"{route}\" is not available right now"
            )),
            hint: Some(Cow::Borrowed("try again in a moment")),
        }
    }

    /// Encodes this refusal as a FATAL ErrorResponse.
    pub fn encode(&self) -> BytesMut {
        let mut fields = vec![
            (b'S', "FATAL".to_owned()),
            (b'V', "FATAL".to_owned()),
            (b'C', self.code.0.to_owned()),
            (b'M', self.message.to_string()),
        ];
        if let Some(hint) = &self.hint {
            fields.push((b'H', hint.to_string()));
        }
        encode(&ErrorResponse::new(fields))
    }
}

/// The answer to an SSLRequest that pgsni accepts: `S`.
pub fn ssl_accept() -> BytesMut {
    encode(&SslResponse::Accept)
}

/// The answer to a GSSENCRequest: `N`, so that `gssencmode=prefer` clients
/// fall back to their next request on the same connection.
pub fn gssenc_refuse() -> BytesMut {
    encode(&GssEncResponse::Refuse)
}

/// The SSLRequest pgsni sends to a backend before the ClientHello.
pub fn ssl_request() -> BytesMut {
    encode(&SslRequest::new())
}

fn encode(message: &impl Message) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    message
        .encode(&mut buf)
        .expect("encoding a fixed-size message into a growable buffer cannot fail");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::startup::SSL_REQUEST;

    #[test]
    fn one_byte_answers() {
        assert_eq!(&ssl_accept()[..], b"S");
        assert_eq!(&gssenc_refuse()[..], b"N");
    }

    #[test]
    fn backend_ssl_request_is_byte_exact() {
        assert_eq!(&ssl_request()[..], &SSL_REQUEST);
    }

    #[test]
    fn plaintext_refusal_layout() {
        let bytes = Refusal::PLAINTEXT.encode();
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, bytes.len());
        let body = &bytes[5..];
        let expected = b"SFATAL\0VFATAL\0C28000\0Mthis server accepts only TLS connections\0\
Hconnect with sslmode=require or stronger (verify-full recommended)\0\0";
        assert_eq!(body, &expected[..]);
    }

    #[test]
    fn refusal_without_hint_has_no_hint_field() {
        let bytes = Refusal::DATA_AFTER_SSL_REQUEST.encode();
        assert!(bytes.ends_with(b"Mreceived unencrypted data after SSL request\0\0"));
        assert!(!bytes.windows(2).any(|w| w == b"\0H"));
    }
}
