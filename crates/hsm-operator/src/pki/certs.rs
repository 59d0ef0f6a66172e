//! The certificates themselves, with no I/O: issuing the CA and the two leaves with rcgen,
//! and reading back what a Secret holds (validity, key match, chain) with x509-parser, so
//! the decisions in `plan` are plain functions of parsed values.

use super::keys::{self, KeyError};
use chrono::{DateTime, Months, Utc};
use hsm_api::names::{APP_NAME, mtls};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The CA's lifetime: ten years, as the Go operator's CA. It is never rotated.
const CA_YEARS: u32 = 10;
/// Certificates start a minute in the past, so a peer whose clock is slightly behind
/// accepts them at once.
const BACKDATE: chrono::Duration = chrono::Duration::minutes(1);

/// Why a certificate or key could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not PEM, or no `CERTIFICATE` block.
    #[error("not a PEM certificate")]
    Pem(#[source] pem::PemError),
    /// The DER is not an X.509 certificate.
    #[error("malformed X.509 certificate")]
    X509(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The private key is unusable.
    #[error("private key")]
    Key(#[source] KeyError),
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// rcgen could not build or sign the certificate.
    #[error("signing")]
    Sign(#[source] rcgen::Error),
    /// A date outside what certificates can hold.
    #[error("validity period out of range")]
    Date,
}

/// Which leaf: the agents' server certificate or the manager's client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// `hsm-agent`, serverAuth.
    Server,
    /// `hsm-manager`, clientAuth.
    Client,
}

impl LeafKind {
    /// The CN and only DNS SAN.
    pub fn name(self) -> &'static str {
        match self {
            LeafKind::Server => mtls::AGENT_SERVER_NAME,
            LeafKind::Client => mtls::MANAGER_CLIENT_NAME,
        }
    }

    fn usage(self) -> ExtendedKeyUsagePurpose {
        match self {
            LeafKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
            LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// A certificate and its key, both PEM (the key as `EC PRIVATE KEY`).
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// The private key. Never logged.
    pub key: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// What the manager needs to know about a certificate it holds.
#[derive(Debug, Clone)]
pub struct CertInfo {
    der: Vec<u8>,
    /// The end of its validity.
    pub not_after: DateTime<Utc>,
}

impl CertInfo {
    /// Parses the first certificate of a PEM text.
    pub fn parse(pem: &str) -> Result<Self, CertError> {
        let block = pem::parse_many(pem)
            .map_err(CertError::Pem)?
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or(CertError::Pem(pem::PemError::MissingData))?;
        let der = block.into_contents();
        let (_, cert) = X509Certificate::from_der(&der).map_err(CertError::X509)?;
        let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
            .ok_or(CertError::Date)?;
        Ok(CertInfo { der, not_after })
    }

    fn x509(&self) -> X509Certificate<'_> {
        X509Certificate::from_der(&self.der)
            .expect("parsed once in CertInfo::parse")
            .1
    }

    /// Whether `key` is this certificate's private key.
    pub fn matches(&self, key: &KeyPair) -> bool {
        self.x509().public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    }

    /// Whether this certificate was issued by `ca`: issuer name and signature.
    pub fn chains_to(&self, ca: &CertInfo) -> bool {
        let (leaf, ca) = (self.x509(), ca.x509());
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Parses a certificate and its key and checks that they belong together.
pub fn parse_pair(cert: &str, key: &str) -> Result<(CertInfo, KeyPair), CertError> {
    let info = CertInfo::parse(cert)?;
    let key = keys::parse(key).map_err(CertError::Key)?;
    if !info.matches(&key) {
        return Err(CertError::KeyMismatch);
    }
    Ok((info, key))
}

fn to_time(at: DateTime<Utc>) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).map_err(|_| CertError::Date)
}

/// A random serial of 16 bytes as written: the first byte is kept in 0x40..=0x7f, so the
/// DER integer is positive and never shortened by a leading zero (126 random bits).
fn serial() -> SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn new_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::Sign)
}

/// A new self-signed CA: ECDSA P-256, CN `hsm-mtls-ca`, O `hsm-secrets-operator`, path
/// length 0 (it signs leaves only), valid ten years from `now` (backdated a minute).
pub fn issue_ca(now: DateTime<Utc>) -> Result<Issued, CertError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, mtls::CA_SECRET);
    name.push(DnType::OrganizationName, APP_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial());
    params.not_before = to_time(now - BACKDATE)?;
    let end = now
        .checked_add_months(Months::new(12 * CA_YEARS))
        .ok_or(CertError::Date)?;
    params.not_after = to_time(end)?;
    let key = new_key()?;
    let cert = params.self_signed(&key).map_err(CertError::Sign)?;
    Ok(Issued {
        cert: cert.pem(),
        key: keys::to_sec1_pem(&key).map_err(CertError::Key)?,
    })
}

/// A new leaf of `kind` signed by the CA (`ca_cert`, `ca_key`), valid `validity` from `now`
/// (backdated a minute): ECDSA P-256, CN and DNS SAN the kind's name, digitalSignature and
/// keyEncipherment, the kind's extended usage.
pub fn issue_leaf(
    kind: LeafKind,
    ca_cert: &str,
    ca_key: KeyPair,
    now: DateTime<Utc>,
    validity: std::time::Duration,
) -> Result<Issued, CertError> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(CertError::Sign)?;
    let mut params =
        CertificateParams::new(vec![kind.name().to_owned()]).map_err(CertError::Sign)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, kind.name());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![kind.usage()];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial());
    params.not_before = to_time(now - BACKDATE)?;
    let validity = chrono::Duration::from_std(validity).map_err(|_| CertError::Date)?;
    params.not_after = to_time(now.checked_add_signed(validity).ok_or(CertError::Date)?)?;
    let key = new_key()?;
    let cert = params.signed_by(&key, &issuer).map_err(CertError::Sign)?;
    Ok(Issued {
        cert: cert.pem(),
        key: keys::to_sec1_pem(&key).map_err(CertError::Key)?,
    })
}
