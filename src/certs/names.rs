//! The names that go into certificates, checked before anything is signed.
//!
//! A tenant certificate is for one cluster, `NAME`, reached from outside as
//! `NAME.DOMAIN` (the name clients put in SNI and verify) and, inside a
//! Kubernetes namespace `NS`, through the services an operator such as
//! CloudNativePG creates for it: `NAME-rw` (the primary), `NAME-ro` (the
//! replicas) and `NAME-r` (any instance), each also as `.NS` and `.NS.svc`.
//!
//! Names are held to the strict hostname rules (RFC 1123 labels: lowercase
//! letters, digits and `-`), which every TLS client accepts. Wildcards are
//! never issued: a tenant's certificate names that tenant and nothing else.

use thiserror::Error;

/// The longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;
/// The longest DNS name, without a trailing dot (RFC 1035).
const MAX_NAME_LEN: usize = 253;
/// The service suffixes added to a cluster's name, primary first.
const SERVICE_SUFFIXES: [&str; 3] = ["-rw", "-r", "-ro"];
/// The longest of [`SERVICE_SUFFIXES`]: a cluster name leaves room for it
/// within one label.
const LONGEST_SUFFIX_LEN: usize = 3;
/// The longest Postgres identifier (`NAMEDATALEN - 1`).
const MAX_ROLE_LEN: usize = 63;

/// A name that cannot go into a certificate, and why.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    /// What the name was for: "cluster name", "domain", …
    pub what: &'static str,
    /// The name as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl NameError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            what,
            value: value.to_owned(),
            reason,
        }
    }
}

/// Checks one DNS label against the hostname rules, allowing at most
/// `max_len` bytes.
fn check_label(what: &'static str, label: &str, max_len: usize) -> Result<(), NameError> {
    let error = |reason| Err(NameError::new(what, label, reason));
    if label.is_empty() {
        return error("a DNS label cannot be empty");
    }
    if label.contains('*') {
        return error("wildcards are not issued: name each tenant");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return error("use lowercase letters, digits and '-' only");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return error("must start and end with a letter or a digit");
    }
    if label.len() > max_len {
        return Err(NameError::new(
            what,
            label,
            if max_len == MAX_LABEL_LEN {
                "a DNS label has at most 63 characters"
            } else {
                "at most 60 characters, so that NAME-rw and NAME-ro stay valid labels"
            },
        ));
    }
    Ok(())
}

/// The DNS names of one tenant cluster, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNames {
    name: String,
    domain: String,
    namespace: Option<String>,
}

impl TenantNames {
    /// Validates a cluster `name` (one label), the public `domain` it is
    /// reached under, and optionally its Kubernetes `namespace` (one label).
    /// One trailing dot on `domain` is dropped.
    pub fn new(name: &str, domain: &str, namespace: Option<&str>) -> Result<Self, NameError> {
        check_label("cluster name", name, MAX_LABEL_LEN - LONGEST_SUFFIX_LEN)?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() {
            return Err(NameError::new("domain", domain, "cannot be empty"));
        }
        for label in domain.split('.') {
            check_label("domain", label, MAX_LABEL_LEN)
                .map_err(|e| NameError::new("domain", domain, e.reason))?;
        }
        if name.len() + 1 + domain.len() > MAX_NAME_LEN {
            return Err(NameError::new(
                "domain",
                domain,
                "NAME.DOMAIN would be longer than 253 characters",
            ));
        }
        if let Some(namespace) = namespace {
            check_label("namespace", namespace, MAX_LABEL_LEN)?;
        }
        Ok(Self {
            name: name.to_owned(),
            domain: domain.to_owned(),
            namespace: namespace.map(str::to_owned),
        })
    }

    /// The cluster's name, which also names its files.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAME.DOMAIN`: the name clients dial and verify, and the certificate's
    /// common name.
    pub fn host_name(&self) -> String {
        format!("{}.{}", self.name, self.domain)
    }

    /// Every name the certificate is for: [`TenantNames::host_name`] first,
    /// then, with a namespace, each service as `SVC`, `SVC.NS` and
    /// `SVC.NS.svc`.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = vec![self.host_name()];
        if let Some(namespace) = &self.namespace {
            for suffix in SERVICE_SUFFIXES {
                let service = format!("{}{suffix}", self.name);
                let in_namespace = format!("{service}.{namespace}");
                let svc = format!("{in_namespace}.svc");
                names.extend([service, in_namespace, svc]);
            }
        }
        names
    }
}

/// A Postgres role that authenticates with a client certificate (its
/// common name), e.g. `streaming_replica`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUser(String);

impl ClientUser {
    /// Validates a role name: 1 to 63 ASCII letters, digits, `_` or `-`, not
    /// starting with `-`. Stricter than Postgres, because the name also
    /// names the certificate's files.
    pub fn new(user: &str) -> Result<Self, NameError> {
        let error = |reason| Err(NameError::new("client user", user, reason));
        if user.is_empty() {
            return error("cannot be empty");
        }
        if user.len() > MAX_ROLE_LEN {
            return error("a Postgres role name has at most 63 characters");
        }
        if !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return error("use letters, digits, '_' and '-' only");
        }
        if user.starts_with('-') {
            return error("cannot start with '-'");
        }
        Ok(Self(user.to_owned()))
    }

    /// The role name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_tenant_in_a_namespace() {
        let names = TenantNames::new("alpha", "db.example.com.", Some("tenants")).unwrap();
        assert_eq!(names.host_name(), "alpha.db.example.com");
        assert_eq!(
            names.dns_names(),
            [
                "alpha.db.example.com",
                "alpha-rw",
                "alpha-rw.tenants",
                "alpha-rw.tenants.svc",
                "alpha-r",
                "alpha-r.tenants",
                "alpha-r.tenants.svc",
                "alpha-ro",
                "alpha-ro.tenants",
                "alpha-ro.tenants.svc",
            ]
        );
        let bare = TenantNames::new("alpha", "db.example.com", None).unwrap();
        assert_eq!(bare.dns_names(), ["alpha.db.example.com"]);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let cases = [
            ("*", "example.com", None, "wildcards"),
            ("Alpha", "example.com", None, "lowercase"),
            ("-a", "example.com", None, "start and end"),
            ("a_b", "example.com", None, "lowercase letters"),
            ("a.b", "example.com", None, "lowercase letters"),
            ("", "example.com", None, "empty"),
            ("a", "", None, "empty"),
            ("a", "example..com", None, "empty"),
            ("a", "*.example.com", None, "wildcards"),
            ("a", "example.com", Some("ns.x"), "lowercase letters"),
        ];
        for (name, domain, namespace, reason) in cases {
            let error = TenantNames::new(name, domain, namespace).unwrap_err();
            assert!(
                error.to_string().contains(reason),
                "{name:?} {domain:?} {namespace:?}: {error}"
            );
        }
        assert!(TenantNames::new(&"a".repeat(60), "example.com", None).is_ok());
        let long = TenantNames::new(&"a".repeat(61), "example.com", None).unwrap_err();
        assert!(long.reason.contains("NAME-rw"), "{long}");
        let domain = vec!["a".repeat(63); 4].join(".");
        assert!(TenantNames::new("a", &domain, None).is_err());
    }

    #[test]
    fn client_users() {
        assert_eq!(
            ClientUser::new("streaming_replica").unwrap().as_str(),
            "streaming_replica"
        );
        for bad in ["", "-x", "a b", "../x", "a/b", &"a".repeat(64)] {
            assert!(ClientUser::new(bad).is_err(), "{bad:?}");
        }
    }
}
