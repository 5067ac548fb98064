//! The certificate authority: creating it, loading it back, and issuing
//! tenant and client certificates with it.
//!
//! Every key is ECDSA P-256, which every Postgres client's TLS library
//! accepts and which signs quickly. The CA has the shape of a cluster-wide
//! self-signed issuer: a self-signed certificate with `CA:TRUE` and no path
//! length limit, allowed to sign certificates and CRLs.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use super::names::{ClientUser, TenantNames};

/// Default validity of a CA: ten years.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default validity of a leaf: 397 days, the longest that browsers' root
/// programs allow, and a common ceiling for server certificates anywhere.
pub const DEFAULT_LEAF_DAYS: u32 = 397;
/// How far `notBefore` is set in the past, so that a certificate is already
/// valid for a peer whose clock is somewhat behind.
const BACKDATE: Duration = Duration::hours(1);

/// Why a certificate could not be made or the CA could not be used.
#[derive(Debug, Error)]
pub enum AuthorityError {
    /// Key generation or signing failed.
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA certificate is not a usable PEM certificate.
    #[error("the CA certificate is not valid: {0}")]
    BadCertificate(String),
    /// The CA key is not a usable PEM private key.
    #[error("the CA key is not a PKCS#8 private key that can sign: {0}")]
    BadKey(String),
    /// The CA key and certificate are from different pairs.
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
}

/// The subject of a new CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSubject {
    /// The CA's common name (CN).
    pub common_name: String,
    /// Its organization (O), if any.
    pub organization: Option<String>,
    /// Its organizational unit (OU), if any.
    pub unit: Option<String>,
}

/// A certificate and its new private key, as PEM text.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (the leaf alone, without the CA: Postgres's
    /// `ssl_cert_file` may hold just that, and clients trust the CA itself).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// When the certificate expires.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Issued {
    /// Leaves the private key out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A CA able to issue certificates.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates a new self-signed CA valid for `days` days from now.
    pub fn generate(subject: &CaSubject, days: u32) -> Result<(Self, Issued), AuthorityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(organization) = &subject.organization {
            dn.push(DnType::OrganizationName, organization.as_str());
        }
        if let Some(unit) = &subject.unit {
            dn.push(DnType::OrganizationalUnitName, unit.as_str());
        }
        dn.push(DnType::CommonName, subject.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let not_after = set_validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        };
        let authority = Self {
            cert_pem: issued.cert_pem.clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((authority, issued))
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) key, checking
    /// that the two belong together: leaves signed by a key other than the
    /// certificate's would be rejected by every client, long after the fact.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, AuthorityError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| AuthorityError::BadCertificate(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| AuthorityError::BadKey(e.to_string()))?;
        let key = KeyPair::try_from(&key).map_err(|e| AuthorityError::BadKey(e.to_string()))?;

        // Parsed as an end-entity certificate only to read its public key.
        let parsed = webpki::EndEntityCert::try_from(&cert)
            .map_err(|e| AuthorityError::BadCertificate(format!("{e:?}")))?;
        if parsed.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
            return Err(AuthorityError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| AuthorityError::BadCertificate(e.to_string()))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate as PEM text.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a tenant's server certificate: every name of
    /// [`TenantNames::dns_names`] as a DNS subject alternative name, the
    /// public name as common name, extended key usage serverAuth.
    pub fn issue_server(&self, names: &TenantNames, days: u32) -> Result<Issued, AuthorityError> {
        let mut params = CertificateParams::new(names.dns_names())?;
        params.distinguished_name = common_name(&names.host_name());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params, days)
    }

    /// Issues a client certificate for Postgres role `user` (its common
    /// name, which `clientcert=verify-full` and `cert` authentication match
    /// against the role), extended key usage clientAuth.
    pub fn issue_client(&self, user: &ClientUser, days: u32) -> Result<Issued, AuthorityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(user.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params, days)
    }

    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        days: u32,
    ) -> Result<Issued, AuthorityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys sign; they never encipher keys.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Lets clients pick the right issuer certificate when a CA is rolled
        // over and two with the same name are trusted at once.
        params.use_authority_key_identifier_extension = true;
        let not_after = set_validity(&mut params, days);
        // rcgen derives the serial number from the new key, so every
        // certificate gets its own.
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// A subject with only a common name.
fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Makes `params` valid from shortly before now for `days` days; returns
/// the end of validity.
fn set_validity(params: &mut CertificateParams, days: u32) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    params.not_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> CaSubject {
        CaSubject {
            common_name: "test CA".into(),
            organization: Some("pgsni".into()),
            unit: None,
        }
    }

    #[test]
    fn a_loaded_ca_issues_like_a_new_one() {
        let (_, ca) = Authority::generate(&subject(), 10).unwrap();
        let loaded = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem);
        let names = TenantNames::new("alpha", "example.com", None).unwrap();
        let leaf = loaded.issue_server(&names, 1).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let (_, one) = Authority::generate(&subject(), 10).unwrap();
        let (_, two) = Authority::generate(&subject(), 10).unwrap();
        assert!(matches!(
            Authority::from_pem(&one.cert_pem, &two.key_pem),
            Err(AuthorityError::KeyMismatch)
        ));
        assert!(matches!(
            Authority::from_pem(&one.key_pem, &one.key_pem),
            Err(AuthorityError::BadCertificate(_))
        ));
        assert!(matches!(
            Authority::from_pem(&one.cert_pem, &one.cert_pem),
            Err(AuthorityError::BadKey(_))
        ));
    }
}
