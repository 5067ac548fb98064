//! Validation and normalisation of the server name a client asked for.
//!
//! The ClientHello parser hands out the SNI `host_name` as raw bytes, exactly
//! as the client sent them. Before those bytes go near a routing table, a log
//! line or a metric label they pass through [`HostName::parse`], which accepts
//! only plain DNS names and gives them one canonical spelling, so that
//! `Alpha.DB.example.com.` and `alpha.db.example.com` route, log and count the
//! same.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// The longest name accepted, in bytes, without the trailing dot: the
/// 255-byte wire limit of RFC 1035 §2.3.4 less the length octets of the first
/// label and of the root.
pub const MAX_NAME_LEN: usize = 253;

/// The longest label accepted, in bytes (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a server name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NameError {
    /// The name is empty (or was a lone `.`).
    #[error("server name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("server name is longer than 253 bytes")]
    TooLong,
    /// The name has an empty label: a leading dot, two dots in a row, or more
    /// than one trailing dot.
    #[error("server name has an empty label")]
    EmptyLabel,
    /// A label is longer than [`MAX_LABEL_LEN`] bytes.
    #[error("server name has a label longer than 63 bytes")]
    LabelTooLong,
    /// The name contains a byte other than an ASCII letter, digit, `-`, `_`
    /// or the `.` separating labels.
    #[error("server name contains a character not allowed in a DNS name")]
    BadCharacter,
}

impl NameError {
    /// A short, fixed, `snake_case` description for logs and metric labels.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::EmptyLabel => "empty_label",
            Self::LabelTooLong => "label_too_long",
            Self::BadCharacter => "bad_character",
        }
    }
}

/// Whether `label` is one DNS label as pgsni accepts it: 1 to 63 ASCII
/// letters (either case), digits, `-` or `_`.
///
/// This is the rule [`HostName::parse`] applies to every label after
/// lowercasing, exported so the routing table holds its names to the same
/// rule. Hyphens are allowed anywhere and all-numeric labels are allowed:
/// pgsni only matches names against its own table, so the finer points of
/// RFC 952/1123 host-name syntax would refuse clients without protecting
/// anything. Underscores are allowed because real service names use them.
pub fn is_valid_label(label: &[u8]) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len()) && label.iter().copied().all(is_label_byte)
}

fn is_label_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// A validated, normalised DNS name, stored inline (no heap allocation).
///
/// Normal form: at most one trailing dot removed, ASCII lowercase, 1 to 253
/// bytes, made of labels accepted by [`is_valid_label`]. Equality, ordering
/// and hashing all use the normal form, and hashing agrees with `str` so a
/// `HashMap<HostName, _>` can be queried with a `&str`.
#[derive(Clone)]
pub struct HostName {
    /// Bytes past `len` are always zero; nothing reads them.
    bytes: [u8; MAX_NAME_LEN],
    /// At most [`MAX_NAME_LEN`], which fits in a `u8`.
    len: u8,
}

impl HostName {
    /// Validates and normalises a server name.
    ///
    /// `raw` is taken as the client sent it: one trailing dot (the absolute
    /// form, which RFC 6066 §3 forbids in SNI but which clients do send) is
    /// removed, ASCII letters are lowercased, and the result must then be 1 to
    /// 253 bytes of labels accepted by [`is_valid_label`], separated by single
    /// dots. Anything else is refused: IP-literal punctuation (`:`), paths,
    /// user info, percent-encoding, whitespace, control bytes and any byte
    /// outside ASCII (internationalised names must arrive as A-labels,
    /// `xn--…`).
    pub fn parse(raw: &[u8]) -> Result<Self, NameError> {
        let name = raw.strip_suffix(b".").unwrap_or(raw);
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for label in name.split(|&byte| byte == b'.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong);
            }
            if !label.iter().copied().all(is_label_byte) {
                return Err(NameError::BadCharacter);
            }
        }

        let mut bytes = [0; MAX_NAME_LEN];
        let Some(dest) = bytes.get_mut(..name.len()) else {
            return Err(NameError::TooLong);
        };
        dest.copy_from_slice(name);
        dest.make_ascii_lowercase();
        let len = u8::try_from(name.len()).map_err(|_| NameError::TooLong)?;
        Ok(Self { bytes, len })
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes())
            .expect("HostName holds only ASCII: HostName::parse admits nothing else")
    }

    /// The normalised name as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // `len` never exceeds the array length; `get` keeps that unchecked
        // invariant from ever becoming a panic.
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The labels of the name, left to right.
    pub fn labels(&self) -> std::str::Split<'_, char> {
        self.as_str().split('.')
    }

    /// The leftmost label: `alpha` for `alpha.db.example.com`.
    pub fn first_label(&self) -> &str {
        self.parts().0
    }

    /// Everything after the leftmost label: `db.example.com` for
    /// `alpha.db.example.com`, `None` for a single-label name.
    ///
    /// A routing entry `*.db.example.com` matches exactly the names whose
    /// parent is `db.example.com`.
    pub fn parent(&self) -> Option<&str> {
        self.parts().1
    }

    fn parts(&self) -> (&str, Option<&str>) {
        match self.as_str().split_once('.') {
            Some((first, parent)) => (first, Some(parent)),
            None => (self.as_str(), None),
        }
    }
}

impl FromStr for HostName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

impl TryFrom<&[u8]> for HostName {
    type Error = NameError;

    fn try_from(raw: &[u8]) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for HostName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HostName {}

impl PartialOrd for HostName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for HostName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Hash as `str` does, as `Borrow<str>` requires.
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for HostName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HostName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HostName").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn parse(raw: &str) -> Result<HostName, NameError> {
        HostName::parse(raw.as_bytes())
    }

    #[test]
    fn normalises_case_and_one_trailing_dot() {
        let name = parse("Alpha.DB.Example.COM.").unwrap();
        assert_eq!(name.as_str(), "alpha.db.example.com");
        assert_eq!(name, parse("alpha.db.example.com").unwrap());
        assert_eq!(name.to_string(), "alpha.db.example.com");
        assert_eq!(format!("{name:?}"), r#"HostName("alpha.db.example.com")"#);
    }

    #[test]
    fn labels_first_label_and_parent() {
        let name = parse("alpha.db.example.com").unwrap();
        assert_eq!(
            name.labels().collect::<Vec<_>>(),
            ["alpha", "db", "example", "com"]
        );
        assert_eq!(name.labels().next_back(), Some("com"));
        assert_eq!(name.first_label(), "alpha");
        assert_eq!(name.parent(), Some("db.example.com"));

        let single = parse("localhost").unwrap();
        assert_eq!(single.first_label(), "localhost");
        assert_eq!(single.parent(), None);
    }

    #[test]
    fn accepts_underscores_digits_and_hyphens() {
        for ok in [
            "_pg._tcp.example.com",
            "db-1.example.com",
            "10.0.0.1",
            "a",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert!(parse(&label63).is_ok());
        assert_eq!(parse(&label64), Err(NameError::LabelTooLong));
        assert_eq!(
            parse(&format!("x.{label64}.com")),
            Err(NameError::LabelTooLong)
        );

        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253.
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(parse(&name253).unwrap().as_str(), name253);
        // The trailing dot does not count against the limit.
        assert_eq!(parse(&format!("{name253}.")).unwrap().as_str(), name253);

        let name254 = format!("{name253}b");
        assert_eq!(parse(&name254), Err(NameError::TooLong));
        assert_eq!(HostName::parse(&[b'a'; 4096]), Err(NameError::TooLong));
    }

    #[test]
    fn empty_names_and_labels() {
        assert_eq!(parse(""), Err(NameError::Empty));
        assert_eq!(parse("."), Err(NameError::Empty));
        for bad in ["..", "a..", "a..b", ".a", "a.b..", "..a"] {
            assert_eq!(parse(bad), Err(NameError::EmptyLabel), "{bad:?}");
        }
    }

    #[test]
    fn refuses_everything_but_letters_digits_hyphen_underscore() {
        for bad in [
            "db.example.com:5432",
            "[::1]",
            "db/evil",
            "user@db.example.com",
            "db%2eexample.com",
            "db example.com",
            "db\0.example.com",
            "db\t.example.com",
            "db\n",
            "*.example.com",
            "bücher.example",
            "db\u{7f}.example.com",
        ] {
            assert_eq!(parse(bad), Err(NameError::BadCharacter), "{bad:?}");
        }
        assert_eq!(
            HostName::parse(b"db\xff.example.com"),
            Err(NameError::BadCharacter)
        );
    }

    #[test]
    fn every_byte_value() {
        for byte in 0..=u8::MAX {
            let raw = [b'a', byte, b'b'];
            let expected = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
            assert_eq!(is_valid_label(&raw), expected, "{byte:#04x}");
            if byte != b'.' {
                assert_eq!(HostName::parse(&raw).is_ok(), expected, "{byte:#04x}");
            }
        }
    }

    #[test]
    fn is_valid_label_rule() {
        assert!(is_valid_label(b"Alpha-1_x"));
        assert!(is_valid_label(&[b'a'; 63]));
        assert!(!is_valid_label(&[b'a'; 64]));
        assert!(!is_valid_label(b""));
        assert!(!is_valid_label(b"a.b"));
        assert!(!is_valid_label(b"*"));
    }

    #[test]
    fn hash_and_borrow_agree_with_str() {
        let set: HashSet<HostName> = ["a.example", "B.example."]
            .into_iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(set.contains("a.example"));
        assert!(set.contains("b.example"));
        assert!(!set.contains("B.example."));
        assert_eq!(set.len(), 2);
        assert!(parse("a").unwrap() < parse("b").unwrap());
        assert_eq!(parse("A").unwrap(), "a");
    }

    #[test]
    fn errors_have_reasons() {
        assert_eq!(NameError::BadCharacter.reason(), "bad_character");
        assert_eq!(
            NameError::LabelTooLong.to_string(),
            "server name has a label longer than 63 bytes"
        );
    }
}
