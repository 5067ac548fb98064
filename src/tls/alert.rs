//! TLS alerts pgsni sends itself.
//!
//! pgsni never holds keys, so the only alerts it can send are plaintext ones,
//! written before any encrypted record, when it refuses a connection on the
//! strength of the ClientHello. RFC 8446 §6 makes every such alert fatal.

use std::fmt;

/// The `AlertDescription` values pgsni may send (RFC 8446 §6, RFC 7301 §3.2).
///
/// Only the alerts pgsni has a reason to send are listed; the discriminant is
/// the value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AlertDescription {
    /// A record or handshake message arrived that is not allowed here, such as
    /// a non-handshake record or a handshake message other than ClientHello.
    UnexpectedMessage = 10,
    /// A record longer than 2^14 bytes, or a ClientHello larger than pgsni is
    /// willing to buffer.
    RecordOverflow = 22,
    /// No acceptable backend could be found for otherwise valid parameters.
    HandshakeFailure = 40,
    /// A field was well-formed but its value is not allowed, such as a
    /// duplicated extension.
    IllegalParameter = 47,
    /// A message could not be parsed: a length runs past its container, a list
    /// that must not be empty is empty, and so on.
    DecodeError = 50,
    /// pgsni itself failed, through no fault of the peer.
    InternalError = 80,
    /// The server name the client asked for is not routed here (RFC 6066 §3).
    UnrecognizedName = 112,
    /// None of the ALPN protocols the client offered is acceptable
    /// (RFC 7301 §3.2).
    NoApplicationProtocol = 120,
}

impl AlertDescription {
    /// The name RFC 8446 gives this alert, in `snake_case`, for logs and
    /// metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnexpectedMessage => "unexpected_message",
            Self::RecordOverflow => "record_overflow",
            Self::HandshakeFailure => "handshake_failure",
            Self::IllegalParameter => "illegal_parameter",
            Self::DecodeError => "decode_error",
            Self::InternalError => "internal_error",
            Self::UnrecognizedName => "unrecognized_name",
            Self::NoApplicationProtocol => "no_application_protocol",
        }
    }

    /// The value of this alert on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for AlertDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<AlertDescription> for u8 {
    fn from(desc: AlertDescription) -> Self {
        desc.code()
    }
}

/// A complete plaintext TLS record carrying one fatal alert.
///
/// The record is `15 03 03 00 02 02 <desc>`: content type alert (21), legacy
/// record version TLS 1.2 (which RFC 8446 §5.1 asks TLS 1.3 peers to use as
/// well, and which every TLS 1.2 peer accepts), a two-byte body, level fatal
/// (2), then the description.
pub const fn fatal_alert(desc: AlertDescription) -> [u8; 7] {
    const CONTENT_TYPE_ALERT: u8 = 21;
    const LEVEL_FATAL: u8 = 2;
    [
        CONTENT_TYPE_ALERT,
        0x03,
        0x03,
        0x00,
        0x02,
        LEVEL_FATAL,
        desc.code(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [AlertDescription; 8] = [
        AlertDescription::UnexpectedMessage,
        AlertDescription::RecordOverflow,
        AlertDescription::HandshakeFailure,
        AlertDescription::IllegalParameter,
        AlertDescription::DecodeError,
        AlertDescription::InternalError,
        AlertDescription::UnrecognizedName,
        AlertDescription::NoApplicationProtocol,
    ];

    #[test]
    fn fatal_alert_record_layout() {
        assert_eq!(
            fatal_alert(AlertDescription::UnrecognizedName),
            [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112]
        );
        assert_eq!(
            fatal_alert(AlertDescription::DecodeError),
            [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50]
        );
    }

    #[test]
    fn codes_match_the_registry() {
        let codes: Vec<u8> = ALL.iter().map(|a| a.code()).collect();
        assert_eq!(codes, [10, 22, 40, 47, 50, 80, 112, 120]);
    }

    /// rustls is the reference for names and codes: its `Debug` output is the
    /// CamelCase form of the same IANA name, in British spelling.
    #[test]
    fn names_agree_with_rustls() {
        for alert in ALL {
            let theirs = rustls::AlertDescription::from(alert.code());
            let camel: String = alert.name().split('_').map(capitalise).collect();
            let british = camel.replace("Unrecognized", "Unrecognised");
            assert_eq!(format!("{theirs:?}"), british, "{alert}");
            assert_eq!(alert.to_string(), alert.name());
        }
    }

    fn capitalise(word: &str) -> String {
        let mut chars = word.chars();
        chars
            .next()
            .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }

    /// rustls accepts the record as a fatal alert with the right description.
    #[test]
    fn rustls_reads_our_alert() {
        use std::sync::Arc;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), "example.com".try_into().unwrap())
                .unwrap();
        let mut sink = Vec::new();
        client.write_tls(&mut sink).unwrap();

        let record = fatal_alert(AlertDescription::UnrecognizedName);
        client.read_tls(&mut &record[..]).unwrap();
        let err = client.process_new_packets().unwrap_err();
        assert_eq!(
            err,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName)
        );
    }
}
